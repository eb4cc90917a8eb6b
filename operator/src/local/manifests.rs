//! Loading Cluster and Mesh manifests from YAML files, with errors that name the file, the
//! object and the field. Everything the API server would reject (schema, CEL rules) and
//! everything the planner would report as `Stalled` is an error here, before anything is
//! contacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::ResourceExt;

use crate::api::{Cluster, GROUP, Mesh};
use crate::plan::validate::{ClusterRef, validate_cluster, validate_mesh};

const API_VERSION: &str = "baton.dev/v1alpha1";

/// One problem with one manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// `Cluster/web` or `document 2` when the object has no usable name.
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, so a user fixes them in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl std::fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// The objects of a manifest set, each with the file it came from.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub clusters: Vec<(PathBuf, Cluster)>,
    pub meshes: Vec<(PathBuf, Mesh)>,
}

impl Manifests {
    /// The clusters as the mesh validation and tier membership see them.
    pub fn cluster_refs(&self) -> Vec<ClusterRef<'_>> {
        self.clusters
            .iter()
            .map(|(_, c)| ClusterRef {
                name: c.metadata.name.as_deref().unwrap_or_default(),
                labels: c.metadata.labels.as_ref().unwrap_or(&EMPTY),
                spec: &c.spec,
            })
            .collect()
    }
}

/// Read and validate the files (a directory means its `*.yaml`/`*.yml` files, sorted).
pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestErrors> {
    let mut errors = Vec::new();
    let mut out = Manifests::default();
    for path in expand(paths, &mut errors) {
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_into(&path, &text, &mut out, &mut errors),
            Err(e) => errors.push(err(&path, None, None, format!("cannot read: {e}"))),
        }
    }
    check_set(&out, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ManifestErrors(errors))
    }
}

fn expand(paths: &[PathBuf], errors: &mut Vec<ManifestError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                        })
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(err(p, None, None, "directory holds no .yaml files".into()));
                    }
                    files.extend(found);
                }
                Err(e) => errors.push(err(p, None, None, format!("cannot read directory: {e}"))),
            }
        } else {
            files.push(p.clone());
        }
    }
    files
}

fn err(
    file: &Path,
    object: Option<String>,
    field: Option<String>,
    message: String,
) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        object,
        field,
        message,
    }
}

/// Parse the YAML documents of one file (exposed for tests and `baton plan -f -`).
pub fn parse_into(path: &Path, text: &str, out: &mut Manifests, errors: &mut Vec<ManifestError>) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", i + 1);
        let value = match <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                // The parser cannot resynchronise after a syntax error (it would yield the
                // same error forever): report it and stop reading this file.
                errors.push(err(path, Some(label), None, format!("invalid YAML: {e}")));
                break;
            }
        };
        if value.is_null() {
            continue; // an empty document (`---` at the end)
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string);
        let object = Some(match (&name, kind.is_empty()) {
            (Some(n), false) => format!("{kind}/{n}"),
            _ => label.clone(),
        });
        let api = value
            .get("apiVersion")
            .and_then(|a| a.as_str())
            .unwrap_or("");
        if api != API_VERSION {
            errors.push(err(
                path,
                object,
                Some("apiVersion".into()),
                format!("expected {API_VERSION:?}, found {api:?}"),
            ));
            continue;
        }
        if name.as_deref().is_none_or(|n| !is_dns_subdomain(n)) {
            errors.push(err(
                path,
                object,
                Some("metadata.name".into()),
                "a name (a DNS subdomain) is required".into(),
            ));
            continue;
        }
        match kind {
            "Cluster" => {
                if let Some(c) = typed::<Cluster>(path, &object, value, errors) {
                    check_cluster(path, &object, &c, errors);
                    out.clusters.push((path.to_path_buf(), c));
                }
            }
            "Mesh" => {
                if let Some(m) = typed::<Mesh>(path, &object, value, errors) {
                    cel(path, &object, m.validate_cel(), errors);
                    out.meshes.push((path.to_path_buf(), m));
                }
            }
            other => errors.push(err(
                path,
                object,
                Some("kind".into()),
                format!("expected Cluster or Mesh ({GROUP}), found {other:?}"),
            )),
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    path: &Path,
    object: &Option<String>,
    value: serde_yaml::Value,
    errors: &mut Vec<ManifestError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let field = e.path().to_string();
            errors.push(err(
                path,
                object.clone(),
                (field != ".").then_some(field),
                e.into_inner().to_string(),
            ));
            None
        }
    }
}

fn cel<E: std::fmt::Display>(
    path: &Path,
    object: &Option<String>,
    result: Result<(), E>,
    errors: &mut Vec<ManifestError>,
) {
    if let Err(e) = result {
        // One line per failed rule; the first line of the report is a count.
        for line in e
            .to_string()
            .lines()
            .filter(|l| l.trim_start().starts_with("- "))
        {
            let line = line.trim_start().trim_start_matches("- ");
            let (field, msg) = match line.split_once(": ") {
                Some((f, m)) if !f.contains(' ') => (Some(f.to_string()), m.to_string()),
                _ => (None, line.to_string()),
            };
            errors.push(err(path, object.clone(), field, msg));
        }
    }
}

fn check_cluster(
    path: &Path,
    object: &Option<String>,
    c: &Cluster,
    errors: &mut Vec<ManifestError>,
) {
    let before = errors.len();
    cel(path, object, c.validate_cel(), errors);
    if errors.len() > before {
        return; // the schema problems explain it; semantic checks would repeat them
    }
    for p in validate_cluster(&c.spec) {
        errors.push(err(path, object.clone(), Some(p.field), p.message));
    }
}

/// Checks across objects: unique names, meshes against the clusters they name.
fn check_set(m: &Manifests, errors: &mut Vec<ManifestError>) {
    let mut seen: BTreeMap<(String, String), &Path> = BTreeMap::new();
    let names = m
        .clusters
        .iter()
        .map(|(p, c)| ("Cluster", p, c.name_any()))
        .chain(m.meshes.iter().map(|(p, x)| ("Mesh", p, x.name_any())));
    for (kind, path, name) in names {
        if let Some(first) = seen.insert((kind.to_string(), name.clone()), path) {
            errors.push(err(
                path,
                Some(format!("{kind}/{name}")),
                Some("metadata.name".into()),
                format!("defined twice (also in {})", first.display()),
            ));
        }
    }
    let refs = m.cluster_refs();
    for (path, mesh) in &m.meshes {
        for p in validate_mesh(&mesh.spec, &refs) {
            errors.push(err(
                path,
                Some(format!("Mesh/{}", mesh.name_any())),
                Some(p.field),
                p.message,
            ));
        }
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}
