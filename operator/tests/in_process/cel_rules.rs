//! The CEL rules in the CRDs, evaluated client-side with the same engine family the API
//! server uses: a bad manifest is rejected, a good one passes.

use baton::api::*;
use kube::core::ObjectMeta;

fn member(name: &str) -> MemberSpec {
    MemberSpec {
        name: name.into(),
        endpoint: format!("{name}.example:9443"),
        ..Default::default()
    }
}

fn cluster(spec: ClusterSpec) -> Cluster {
    Cluster {
        metadata: ObjectMeta {
            name: Some("c".into()),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

#[test]
fn valid_cluster_passes_cel() {
    let c = cluster(ClusterSpec {
        version: Some("1.0.0".into()),
        members: vec![member("a"), member("b")],
        ..Default::default()
    });
    c.validate_cel().expect("valid cluster");
}

/// Unique names are a list type (`x-kubernetes-list-type: map`), which the API server checks
/// for free, not a CEL rule, which costs the square of the list: `plan::validate` repeats the
/// check for hosts without an API server.
#[test]
fn duplicate_members_are_a_list_map_and_all_spares_are_rejected_by_cel() {
    let spec = ClusterSpec {
        members: vec![member("a"), member("a")],
        ..Default::default()
    };
    cluster(spec.clone())
        .validate_cel()
        .expect("uniqueness is not a CEL rule");
    let problems = baton::plan::validate::validate_cluster(&spec);
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("duplicate member name \"a\"")),
        "{problems:?}"
    );

    let mut s = member("a");
    s.spare = true;
    let c = cluster(ClusterSpec {
        members: vec![s],
        ..Default::default()
    });
    let e = format!("{:?}", c.validate_cel().expect_err("only spares"));
    assert!(e.contains("at least one member must not be a spare"), "{e}");
}

#[test]
fn in_place_without_outage_permission_is_rejected_by_cel() {
    let mut spec = ClusterSpec {
        members: vec![member("a")],
        ..Default::default()
    };
    spec.upgrade.strategy = UpgradeStrategy::InPlace;
    let e = format!(
        "{:?}",
        cluster(spec.clone())
            .validate_cel()
            .expect_err("needs allowOutage")
    );
    assert!(e.contains("requires allowOutage"), "{e}");
    spec.upgrade.allow_outage = true;
    cluster(spec).validate_cel().expect("allowed");
}

#[test]
fn bad_endpoint_is_rejected_by_cel() {
    let mut m = member("a");
    m.endpoint = "not an endpoint".into();
    let e = format!(
        "{:?}",
        cluster(ClusterSpec {
            members: vec![m],
            ..Default::default()
        })
        .validate_cel()
        .expect_err("bad endpoint")
    );
    assert!(e.contains("endpoint must be host:port"), "{e}");
}

#[test]
fn mesh_rules_reject_self_compatibility_and_empty_tiers() {
    let tier = |name: &str, clusters: &[&str]| TierSpec {
        name: name.into(),
        clusters: clusters.iter().map(|s| s.to_string()).collect(),
        max_parallel: 1,
        ..Default::default()
    };
    let mk = |spec: MeshSpec| Mesh {
        metadata: ObjectMeta {
            name: Some("m".into()),
            ..Default::default()
        },
        spec,
        status: None,
    };
    let ok = MeshSpec {
        version: "2.0".into(),
        tiers: vec![tier("a", &["x"])],
        ..Default::default()
    };
    mk(ok.clone()).validate_cel().expect("valid mesh");

    let mut bad = ok.clone();
    bad.compatibility = vec![CompatibilityRule {
        role: "w".into(),
        not_newer_than: "w".into(),
    }];
    let e = format!("{:?}", mk(bad).validate_cel().expect_err("self rule"));
    assert!(e.contains("two different roles"), "{e}");

    let mut bad = ok.clone();
    bad.tiers = vec![tier("a", &[]), tier("a", &["y"])];
    let e = format!(
        "{:?}",
        mk(bad)
            .validate_cel()
            .expect_err("empty tier and duplicate names")
    );
    assert!(e.contains("a tier names clusters or has a selector"), "{e}");
    assert!(!e.contains("unique"), "uniqueness is a list type: {e}");
}
