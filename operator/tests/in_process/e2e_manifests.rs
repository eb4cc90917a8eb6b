//! The manifests the kind harness applies (`tests/e2e/manifests/`) are accepted by every level
//! of validation the API server and the operator apply: they deserialize into the API types
//! without unknown fields, pass the CRDs' CEL rules and `plan::validate`; so do the shipped
//! examples' (`examples/*/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton::api::{Cluster, Mesh};
use baton::plan::validate::{ClusterRef, validate_cluster, validate_mesh};
use kube::core::CustomResourceExt;
use kube::core::cel::validate_cel;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Every field set in `doc` reads back from the typed value (no misspelt field is dropped).
fn unknown_fields(
    doc: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    if let (Some(d), Some(t)) = (doc.as_object(), typed.as_object()) {
        for (k, v) in d {
            match t.get(k) {
                Some(tv) => unknown_fields(v, tv, &format!("{path}.{k}"), out),
                None => out.push(format!("{path}.{k}")),
            }
        }
    } else if let (Some(d), Some(t)) = (doc.as_array(), typed.as_array()) {
        for (i, (dv, tv)) in d.iter().zip(t).enumerate() {
            unknown_fields(dv, tv, &format!("{path}[{i}]"), out);
        }
    }
}

/// `doc` (a `kind` from `file`) read as the API type `T`, which must pass the CRD's CEL rules,
/// and the value `T` serializes back to.
fn typed_passing_cel<T>(doc: &serde_json::Value, kind: &str, file: &Path) -> (T, serde_json::Value)
where
    T: DeserializeOwned + Serialize + CustomResourceExt,
{
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{}: {kind}: {e}", file.display()));
    validate_cel(&t).unwrap_or_else(|e| panic!("{}: CEL: {e:?}", file.display()));
    let v = serde_json::to_value(&t).expect("serialize");
    (t, v)
}

/// The `.yaml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn e2e_manifests_pass_schema_cel_and_planner_validation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/manifests");
    let files = yaml_files(&dir);
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let (clusters, meshes) = check(&files);
    assert!(!clusters.is_empty() && !meshes.is_empty());
}

/// Every shipped example (each directory of `examples/`) passes the same checks; their other
/// YAML files (an exec backend's configuration, a Secret) are not Baton objects and are left
/// out.
#[test]
fn example_manifests_pass_schema_cel_and_planner_validation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.iter().any(|d| d.ends_with("member-addition")),
        "{dirs:?}"
    );
    for dir in dirs {
        let (clusters, _) = check(&yaml_files(&dir));
        assert!(!clusters.is_empty(), "no Cluster in {}", dir.display());
    }
}

/// The Clusters and Meshes of `files`, each checked: deserialized without unknown fields,
/// passing the CEL rules, `validate_cluster` and (against those Clusters) `validate_mesh`.
fn check(files: &[PathBuf]) -> (Vec<Cluster>, Vec<Mesh>) {
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut meshes: Vec<Mesh> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read manifest");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let typed = match kind.as_str() {
                "Cluster" => {
                    let (c, v) = typed_passing_cel::<Cluster>(&doc, &kind, file);
                    clusters.push(c);
                    v
                }
                "Mesh" => {
                    let (m, v) = typed_passing_cel::<Mesh>(&doc, &kind, file);
                    meshes.push(m);
                    v
                }
                _ => continue,
            };
            let mut unknown = Vec::new();
            unknown_fields(&doc["spec"], &typed["spec"], "spec", &mut unknown);
            assert!(
                unknown.is_empty(),
                "{}: {kind}: unknown fields {unknown:?}",
                file.display()
            );
        }
    }
    let empty = BTreeMap::new();
    for c in &clusters {
        let problems = validate_cluster(&c.spec);
        assert!(
            problems.is_empty(),
            "Cluster {:?}: {problems:?}",
            c.metadata.name
        );
    }
    let refs: Vec<ClusterRef<'_>> = clusters
        .iter()
        .map(|c| ClusterRef {
            name: c.metadata.name.as_deref().unwrap_or_default(),
            labels: c.metadata.labels.as_ref().unwrap_or(&empty),
            spec: &c.spec,
        })
        .collect();
    for m in &meshes {
        let problems = validate_mesh(&m.spec, &refs);
        assert!(
            problems.is_empty(),
            "Mesh {:?}: {problems:?}",
            m.metadata.name
        );
    }
    (clusters, meshes)
}
