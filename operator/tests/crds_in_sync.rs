//! The CRD YAML in `crds/` must be exactly what the Rust types generate, and the schema
//! must carry the validation users rely on.

use std::path::Path;

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let stale = baton::api::write_crds(&dir, true).expect("generate CRDs");
    assert!(
        stale.is_empty(),
        "crds/ is stale; run `cargo run -p baton -- crds --out crds`: {stale:?}"
    );
}

#[test]
fn chart_crds_match_when_the_chart_ships_them() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/baton/crds");
    if !chart.exists() {
        return; // the chart is added by the packaging work; crds/ is checked above
    }
    let stale = baton::api::write_crds(&chart, true).expect("generate CRDs");
    assert!(stale.is_empty(), "charts/baton/crds is stale: {stale:?}");
}

#[test]
fn crd_schema_carries_validation_and_printer_columns() {
    let files = baton::api::crd_files().expect("generate");
    let cluster = &files
        .iter()
        .find(|(n, _)| n.contains("clusters"))
        .expect("cluster crd")
        .1;
    for needle in [
        "member names must be unique",
        "pattern: ^v?[0-9]+",
        "maxItems: 16",
        "jsonPath: .status.targetVersion",
        "jsonPath: .status.activeMember",
        "subresources",
    ] {
        assert!(cluster.contains(needle), "cluster CRD lacks {needle:?}");
    }
    let mesh = &files
        .iter()
        .find(|(n, _)| n.contains("meshes"))
        .expect("mesh crd")
        .1;
    for needle in [
        "tier names must be unique",
        "jsonPath: .status.progress",
        "a compatibility rule must relate two different roles",
    ] {
        assert!(mesh.contains(needle), "mesh CRD lacks {needle:?}");
    }
}
