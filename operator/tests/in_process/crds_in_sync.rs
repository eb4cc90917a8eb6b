//! The CRD YAML in `crds/` must be exactly what the Rust types generate, and the schema
//! must carry the validation users rely on.

use std::path::Path;

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let stale = baton::crds::write_crds(&dir, true).expect("generate CRDs");
    assert!(
        stale.is_empty(),
        "crds/ is stale; run `{}`: {stale:?}",
        baton::api::REGENERATE
    );
}

#[test]
fn chart_crd_templates_match_the_rust_types() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/baton");
    assert!(
        chart.join("Chart.yaml").exists(),
        "the Helm chart is missing at {}",
        chart.display()
    );
    let stale = baton::crds::write_chart_crds(&chart, true).expect("generate chart CRDs");
    assert!(
        stale.is_empty(),
        "charts/baton/{} is stale; run `{}`: {stale:?}",
        baton::api::CHART_CRD_DIR,
        baton::api::REGENERATE
    );
}

/// Helm's own `crds/` directory is installed once and never upgraded: the chart must not use it.
#[test]
fn chart_does_not_use_the_helm_crds_directory() {
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/baton/crds");
    assert!(
        !legacy.exists(),
        "{} exists; CRDs belong in templates/crds/ so upgrades apply them",
        legacy.display()
    );
}

/// The chart's CRDs are the plain CRDs plus the keep annotation, a label and the install guard:
/// nothing else differs, so a user who installs `crds/` by hand gets the same schema.
#[test]
fn chart_crds_are_the_plain_crds_guarded_and_kept() {
    let plain = baton::api::crd_files().expect("generate");
    let chart = baton::api::chart_crd_files().expect("generate chart");
    assert_eq!(plain.len(), chart.len());
    for ((pn, pb), (cn, cb)) in plain.iter().zip(&chart) {
        assert_eq!(pn, cn);
        let body = cb
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let inner = body
            .strip_prefix("{{- if .Values.crds.install }}\n")
            .and_then(|b| b.strip_suffix("\n{{- end }}"))
            .unwrap_or_else(|| panic!("{cn}: not wrapped in the crds.install guard"));
        assert!(
            !inner.contains("{{"),
            "{cn}: template syntax inside the CRD body"
        );
        let mut chart_doc: serde_yaml::Value = serde_yaml::from_str(inner).expect("chart yaml");
        let plain_doc: serde_yaml::Value = serde_yaml::from_str(pb).expect("plain yaml");
        let meta = chart_doc
            .get_mut("metadata")
            .and_then(|m| m.as_mapping_mut())
            .expect("metadata");
        let annotations = meta.remove("annotations").expect("annotations");
        assert_eq!(
            annotations
                .get("helm.sh/resource-policy")
                .and_then(|v| v.as_str()),
            Some("keep"),
            "{cn}: CRDs must survive helm uninstall"
        );
        let labels = meta.remove("labels").expect("labels");
        assert_eq!(
            labels
                .get("app.kubernetes.io/part-of")
                .and_then(|v| v.as_str()),
            Some("baton")
        );
        assert_eq!(chart_doc, plain_doc, "{cn}: differs from crds/{pn}");
    }
}

/// The generated CRD whose file name contains `plural`.
fn crd<'a>(files: &'a [(String, String)], plural: &str) -> &'a str {
    &files
        .iter()
        .find(|(n, _)| n.contains(plural))
        .unwrap_or_else(|| panic!("no {plural} crd"))
        .1
}

#[test]
fn crd_schema_carries_validation_and_printer_columns() {
    let files = baton::api::crd_files().expect("generate");
    let cluster = crd(&files, "clusters");
    for needle in [
        "x-kubernetes-list-map-keys:\n                - name",
        "at least one member must not be a spare",
        "pattern: ^v?[0-9]+",
        "maxItems: 16",
        "jsonPath: .status.targetVersion",
        "jsonPath: .status.activeMember",
        "subresources",
    ] {
        assert!(cluster.contains(needle), "cluster CRD lacks {needle:?}");
    }
    let mesh = crd(&files, "meshes");
    for needle in [
        "x-kubernetes-list-type: set",
        "jsonPath: .status.progress",
        "a compatibility rule must relate two different roles",
    ] {
        assert!(mesh.contains(needle), "mesh CRD lacks {needle:?}");
    }
}

/// The generator brings a directory to exactly the generated files: a changed file and a file
/// of a kind that no longer exists are both reported by `--check` and fixed by a write.
#[test]
fn generator_rewrites_changed_files_and_removes_leftovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = tmp.path();
    let written = baton::crds::write_chart_crds(chart, false).expect("write");
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        baton::crds::write_chart_crds(chart, true)
            .expect("check")
            .is_empty()
    );

    let dir = chart.join(baton::api::CHART_CRD_DIR);
    std::fs::write(dir.join("baton.dev_widgets.yaml"), "kind: Leftover\n").expect("write");
    std::fs::write(dir.join("notes.txt"), "not a manifest\n").expect("write");
    let cluster = dir.join("baton.dev_clusters.yaml");
    let edited = std::fs::read_to_string(&cluster).expect("read") + "# hand edit\n";
    std::fs::write(&cluster, edited).expect("write");

    let stale = baton::crds::write_chart_crds(chart, true).expect("check");
    assert_eq!(stale.len(), 2, "{stale:?}");
    assert!(stale.iter().any(|s| s.ends_with("baton.dev_widgets.yaml")));
    assert!(stale.iter().any(|s| s.ends_with("baton.dev_clusters.yaml")));
    assert!(
        dir.join("baton.dev_widgets.yaml").exists(),
        "check must not change files"
    );

    baton::crds::write_chart_crds(chart, false).expect("write");
    assert!(!dir.join("baton.dev_widgets.yaml").exists());
    assert!(
        dir.join("notes.txt").exists(),
        "only *.yaml files are managed"
    );
    assert!(
        baton::crds::write_chart_crds(chart, true)
            .expect("check")
            .is_empty()
    );
}
