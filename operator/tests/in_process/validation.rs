//! Semantic validation: what the schema and CEL cannot say is caught before any action, with
//! the field path and a human message.

use std::collections::BTreeMap;

use baton::api::*;
use baton::plan::validate::{ClusterRef, validate_cluster, validate_mesh};
use baton::sim::topology::member;

fn spec(n: usize) -> ClusterSpec {
    ClusterSpec {
        version: Some("1.0.0".into()),
        members: (0..n).map(|i| member(&format!("m{i}"), "c")).collect(),
        ..Default::default()
    }
}

/// A two-member cluster spec of `role`, its agents' endpoints its own (one agent cannot be in
/// two clusters of a mesh).
fn with_role(role: &str) -> ClusterSpec {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ClusterSpec {
        role: Some(role.into()),
        members: (0..2)
            .map(|i| member(&format!("m{i}"), &format!("{role}{n}")))
            .collect(),
        ..spec(2)
    }
}

fn cluster_ref<'a>(
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    spec: &'a ClusterSpec,
) -> ClusterRef<'a> {
    ClusterRef { name, labels, spec }
}

fn rule(role: &str, not_newer_than: &str) -> CompatibilityRule {
    CompatibilityRule {
        role: role.into(),
        not_newer_than: not_newer_than.into(),
    }
}

fn messages(p: &[baton::plan::validate::Problem]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_valid_cluster_has_no_problems() {
    assert!(validate_cluster(&spec(3)).is_empty());
}

#[test]
fn cluster_problems_name_the_field() {
    let mut s = spec(2);
    s.version = Some("1..0".into());
    s.members[1].name = "m0".into();
    s.members[0].endpoint = "nohost".into();
    s.upgrade.max_unavailable = 0;
    s.upgrade.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "7pm".into(),
        duration: "1h".parse().unwrap(),
    }];
    s.components = vec![ComponentSpec {
        name: "app".into(),
        after: vec!["os".into()],
        ..Default::default()
    }];
    s.members[0].components = vec!["db".into()];
    let m = messages(&validate_cluster(&s));
    for needle in [
        "spec.version: invalid version \"1..0\"",
        "spec.members[1].name: duplicate member name \"m0\"",
        "spec.members[0].endpoint: \"nohost\" must be host:port",
        "spec.upgrade.maxUnavailable: must be at least 1",
        "spec.upgrade.maintenanceWindows[0].start: \"7pm\" is not HH:MM",
        "spec.components[0].after: unknown prerequisite \"os\"",
        "spec.members[0].components: unknown component \"db\"",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in:\n{m}");
    }
}

/// Two members cannot be one agent: the same address, with or without its scheme, in
/// another case or with a trailing slash, is refused (a semantic rule: as a CEL rule it would
/// be quadratic in the members). Issue 15's bad input: a new member duplicating an endpoint.
#[test]
fn two_members_may_not_share_an_endpoint() {
    let mut s = spec(3);
    assert!(validate_cluster(&s).is_empty());
    for dup in ["m0.sim:9443", "https://M0.sim:9443/", "http://m0.sim:9443"] {
        s.members[0].endpoint = "m0.sim:9443".into();
        s.members[2].endpoint = dup.into();
        let m = messages(&validate_cluster(&s));
        assert!(
            m.contains("spec.members[2].endpoint: member endpoints must be unique")
                && m.contains("is m0's"),
            "{dup}: {m}"
        );
    }
    s.members[2].endpoint = "m0.sim:9444".into();
    assert!(
        validate_cluster(&s).is_empty(),
        "another port is another agent"
    );
}

/// One agent cannot be a member of two clusters of a mesh (issue 15's bad input: a member
/// added to two clusters); a cluster outside the mesh's tiers is not the mesh's to judge.
#[test]
fn a_mesh_refuses_one_agent_in_two_of_its_clusters() {
    let labels = BTreeMap::new();
    let a = spec(2);
    let mut b = spec(2);
    for (i, m) in b.members.iter_mut().enumerate() {
        m.endpoint = format!("b-m{i}.sim:9443");
    }
    let mesh = |names: &[&str]| MeshSpec {
        version: "1.0.0".into(),
        tiers: vec![TierSpec {
            name: "t".into(),
            clusters: names.iter().map(|n| n.to_string()).collect(),
            selector: None,
            max_parallel: 1,
            stagger: Default::default(),
            drain_before: None,
            deferred: None,
        }],
        ..Default::default()
    };
    let refs = |b: &ClusterSpec| -> Vec<String> {
        let cs = [
            ClusterRef::new("a", &labels, &a),
            ClusterRef::new("b", &labels, b),
        ];
        messages(&validate_mesh(&mesh(&["a", "b"]), &cs))
            .lines()
            .map(String::from)
            .collect()
    };
    assert!(refs(&b).is_empty(), "{:?}", refs(&b));
    b.members[1].endpoint = format!("https://{}/", a.members[0].endpoint);
    let m = refs(&b).join("\n");
    assert!(
        m.contains("clusters \"a\" and \"b\" both have the agent at")
            && m.contains("one agent cannot be a member of two clusters"),
        "{m}"
    );
    let cs = [
        ClusterRef::new("a", &labels, &a),
        ClusterRef::new("b", &labels, &b),
    ];
    assert!(
        validate_mesh(&mesh(&["a"]), &cs).is_empty(),
        "b is not in the mesh"
    );
}

#[test]
fn requires_primary_active_needs_a_primary_member() {
    let mut s = spec(2);
    s.components = vec![ComponentSpec {
        name: "ha".into(),
        verify: VerifyPolicy {
            requires_primary_active: true,
            ..Default::default()
        },
        ..Default::default()
    }];
    assert!(messages(&validate_cluster(&s)).contains("needs a member marked primary"));
    s.members[0].primary = true;
    assert!(validate_cluster(&s).is_empty());
}

fn mesh(tiers: Vec<TierSpec>, compat: Vec<CompatibilityRule>) -> MeshSpec {
    MeshSpec {
        version: "2.0.0".into(),
        tiers,
        compatibility: compat,
        ..Default::default()
    }
}

fn tier(name: &str, clusters: &[&str]) -> TierSpec {
    TierSpec {
        name: name.into(),
        clusters: clusters.iter().map(|s| s.to_string()).collect(),
        max_parallel: 1,
        ..Default::default()
    }
}

#[test]
fn mesh_problems_unknown_cluster_double_tier_and_cycles() {
    let labels = BTreeMap::from([("tier".to_string(), "w".to_string())]);
    let none = BTreeMap::new();
    let ra = with_role("x");
    let rb = with_role("y");
    let clusters = [cluster_ref("a", &none, &ra), cluster_ref("b", &labels, &rb)];
    let mut t2 = tier("t2", &[]);
    t2.selector = Some(LabelSelector {
        match_labels: labels.clone(),
    });
    let m = mesh(
        vec![tier("t1", &["a", "b", "ghost"]), t2],
        vec![rule("x", "y"), rule("y", "x")],
    );
    let msg = messages(&validate_mesh(&m, &clusters));
    assert!(
        msg.contains("spec.tiers[0].clusters: unknown cluster \"ghost\""),
        "{msg}"
    );
    assert!(
        msg.contains("cluster \"b\" is in tiers \"t1\" and \"t2\""),
        "{msg}"
    );
    assert!(msg.contains("rules form a cycle (x -> y -> x)"), "{msg}");
}

#[test]
fn a_good_mesh_has_no_problems() {
    let none = BTreeMap::new();
    let mgmt = with_role("management");
    let work = with_role("worker");
    let clusters = [
        cluster_ref("m", &none, &mgmt),
        cluster_ref("w", &none, &work),
    ];
    let m = mesh(
        vec![tier("a", &["m"]), tier("b", &["w"])],
        vec![rule("worker", "management")],
    );
    assert!(validate_mesh(&m, &clusters).is_empty());
}

#[test]
fn a_mesh_task_names_a_tier_a_cluster_and_a_member_of_the_mesh() {
    let none = BTreeMap::new();
    let src = with_role("core");
    let dst = with_role("core");
    let clusters = [
        cluster_ref("src", &none, &src),
        cluster_ref("dst", &none, &dst),
    ];
    let task = |name: &str, cluster: &str, after: &str, member: Option<&str>| MeshTaskSpec {
        name: name.into(),
        task: None,
        cluster: cluster.into(),
        member: member.map(str::to_string),
        after: after.into(),
        on: TaskRollouts::Upgrade,
    };
    let mut m = mesh(
        vec![tier("source", &["src"]), tier("dest", &["dst"])],
        vec![],
    );
    m.tasks = vec![task("upload", "src", "source", Some("m0"))];
    assert!(validate_mesh(&m, &clusters).is_empty());
    m.tasks = vec![
        task("upload", "ghost", "source", None),
        task("upload", "src", "nowhere", None),
        task("index", "dst", "dest", Some("m9")),
        task("Bad_Name", "src", "source", None),
    ];
    let msg = messages(&validate_mesh(&m, &clusters));
    for want in [
        "spec.tasks[0].cluster: \"ghost\" is not a cluster of the mesh",
        "spec.tasks[1].name: duplicate task \"upload\"",
        "spec.tasks[1].after: \"nowhere\" is not a tier of the mesh",
        "spec.tasks[2].member: \"m9\" is not a member of cluster \"dst\"",
        "spec.tasks[3].name: \"Bad_Name\" must be a DNS label",
    ] {
        assert!(msg.contains(want), "{want}\n{msg}");
    }
}

#[test]
fn only_the_last_tiers_may_be_deferred_and_no_upgrade_task_waits_for_one() {
    let none = BTreeMap::new();
    let core = with_role("core");
    let sat = with_role("satellite");
    let far = with_role("satellite");
    let clusters = [
        cluster_ref("c", &none, &core),
        cluster_ref("s", &none, &sat),
        cluster_ref("t", &none, &far),
    ];
    let deferred = |mut t: TierSpec| {
        t.deferred = Some(DeferredSpec::default());
        t
    };
    let mut m = mesh(
        vec![
            tier("core", &["c"]),
            deferred(tier("sat", &["s"])),
            deferred(tier("far", &["t"])),
        ],
        vec![],
    );
    assert_eq!(messages(&validate_mesh(&m, &clusters)), "");
    m.tiers.swap(0, 1);
    m.tiers[2].deferred = None;
    m.tiers[1].deferred = Some(DeferredSpec {
        approval: false,
        windows: vec![MaintenanceWindow {
            days: vec![],
            start: "9:00".into(),
            duration: Duration(0),
        }],
    });
    m.tasks = vec![MeshTaskSpec {
        name: "upload".into(),
        task: None,
        cluster: "c".into(),
        member: None,
        after: "sat".into(),
        on: TaskRollouts::Both,
    }];
    let msg = messages(&validate_mesh(&m, &clusters));
    for want in [
        "spec.tiers[0].deferred: the first tier cannot be deferred",
        "spec.tiers[2]: tier \"far\" follows the deferred tier \"sat\": only the last tiers may be deferred",
        "spec.tiers[1].deferred.windows[0].start: \"9:00\" is not HH:MM",
        "spec.tiers[1].deferred.windows[0].duration: must be positive",
        "spec.tasks[0].after: tier \"sat\" is deferred",
    ] {
        assert!(msg.contains(want), "{want}\n{msg}");
    }
    // A backout task after a deferred tier is fine: a backout never defers.
    m.tasks[0].on = TaskRollouts::Backout;
    assert!(!messages(&validate_mesh(&m, &clusters)).contains("spec.tasks"));
}
