//! Loading Cluster and Mesh manifests from YAML files, with errors that name the file, the
//! object and the field. Everything the API server would reject (schema, CEL rules) and
//! everything the planner would report as `Stalled` is an error here, before anything is
//! contacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::ResourceExt;

use crate::api::schema_check::check_object;
use crate::api::{Cluster, GROUP, Mesh};
use crate::plan::validate::{ClusterRef, tier_membership, validate_cluster, validate_mesh};

use super::yaml_depth::{MAX_FLOW_DEPTH, too_deep};

const API_VERSION: &str = "baton.dev/v1alpha1";

/// Which check found a problem. Everything but `Semantic` is refused by the API server too
/// (`kubectl apply` fails); `Semantic` problems are accepted there and reported by the
/// operator as `Stalled/InvalidSpec`, so the local runner refuses them before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The file: unreadable, not YAML, a document that is not an object, no object at all.
    File,
    /// The structural schema of the CRD, `apiVersion`, `kind` and `ObjectMeta`.
    Schema,
    /// The CRD's CEL rules.
    Cel,
    /// `plan::validate` and the checks across objects.
    Semantic,
}

/// One problem with one manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub level: Level,
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
    /// `v1` Secrets: the CA Secrets `spec.certificates` names, read from the same files the
    /// way the operator reads them from the API server.
    pub secrets: Vec<(PathBuf, SecretDoc)>,
}

/// A `v1` Secret of the manifests: `data` (base64) and `stringData` merged as the API server
/// merges them (`stringData` wins).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretDoc {
    pub name: String,
    pub namespace: Option<String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

// Hand-written: a Secret's values never reach a `{:?}`.
impl std::fmt::Debug for SecretDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretDoc")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The API server's limit on a Secret's data.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A Secret as the API server validates it: a DNS-subdomain name, keys of `[-._a-zA-Z0-9]`,
/// `data` values in base64, at most 1 MiB in all.
fn secret_doc(value: serde_json::Value) -> Result<SecretDoc, (String, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let s: Secret = serde_json::from_value(value).map_err(|e| (String::new(), e.to_string()))?;
    let name = s.metadata.name.clone().unwrap_or_default();
    if !crate::api::schema_check::is_dns_subdomain(&name) {
        return Err((
            "metadata.name".into(),
            format!("{name:?} is not a valid name (a lowercase DNS subdomain)"),
        ));
    }
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    for k in data.keys() {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !ok {
            return Err((
                format!("data[{k}]"),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                    .into(),
            ));
        }
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err((
            "data".into(),
            format!("Too long: must have at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(SecretDoc {
        name,
        namespace: s.metadata.namespace,
        data,
    })
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
    if errors.is_empty() && out.clusters.is_empty() && out.meshes.is_empty() {
        // `kubectl apply` refuses this too ("no objects passed to apply"): a run over nothing
        // is a mistake (a wrong path, an empty file), not a fleet that is converged.
        for p in paths {
            errors.push(err(p, None, None, "no Cluster or Mesh object found".into()));
        }
    }
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
    err_at(Level::File, file, object, field, message)
}

fn err_at(
    level: Level,
    file: &Path,
    object: Option<String>,
    field: Option<String>,
    message: String,
) -> ManifestError {
    ManifestError {
        level,
        file: file.to_path_buf(),
        object,
        field,
        message,
    }
}

/// Parse the YAML documents of one file (exposed for tests and `baton plan -f -`).
pub fn parse_into(path: &Path, text: &str, out: &mut Manifests, errors: &mut Vec<ManifestError>) {
    if let Some((line, column)) = too_deep(text, MAX_FLOW_DEPTH) {
        errors.push(err_at(
            Level::File,
            path,
            None,
            None,
            format!(
                "invalid YAML: nested deeper than {MAX_FLOW_DEPTH} levels at line {line} column {column}; not parsed"
            ),
        ));
        return;
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", i + 1);
        let value = match <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                // The parser cannot resynchronise after a syntax error (it would yield the
                // same error forever): report it and stop reading this file.
                errors.push(err_at(
                    Level::File,
                    path,
                    Some(label),
                    None,
                    format!("invalid YAML: {e}"),
                ));
                break;
            }
        };
        let shape = match &value {
            serde_yaml::Value::Null => continue, // an empty document (`---` at the end)
            serde_yaml::Value::Mapping(_) => None,
            serde_yaml::Value::Sequence(_) => Some("a list (sequence)"),
            serde_yaml::Value::Tagged(_) => Some("a tagged value"),
            _ => Some("a scalar"),
        };
        if let Some(shape) = shape {
            errors.push(err_at(
                Level::File,
                path,
                Some(label),
                None,
                format!("{shape}, expected a mapping with apiVersion and kind"),
            ));
            continue;
        }
        let mut value = match yaml_to_json(value, "") {
            Ok(v) => v,
            Err((field, message)) => {
                errors.push(err_at(
                    Level::Schema,
                    path,
                    Some(label),
                    (!field.is_empty()).then_some(field),
                    message,
                ));
                continue;
            }
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
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
        // A schema error of this object at a field (`None`: the whole object).
        let schema_error = |field: Option<String>, message: String| {
            err_at(Level::Schema, path, object.clone(), field, message)
        };
        if kind == "Secret" && api == "v1" {
            match secret_doc(value) {
                Ok(doc) => out.secrets.push((path.to_path_buf(), doc)),
                Err((field, message)) => {
                    errors.push(schema_error((!field.is_empty()).then_some(field), message));
                }
            }
            continue;
        }
        if api != API_VERSION {
            let message = format!("expected {API_VERSION:?}, found {api:?}");
            errors.push(schema_error(Some("apiVersion".into()), message));
            continue;
        }
        if !matches!(kind.as_str(), "Cluster" | "Mesh") {
            let message = format!("expected Cluster or Mesh ({GROUP}), found {kind:?}");
            errors.push(schema_error(Some("kind".into()), message));
            continue;
        }
        let structural = check_object(&kind, &mut value);
        if !structural.is_empty() {
            for e in structural {
                let field = (!e.field.is_empty()).then_some(e.field);
                errors.push(schema_error(field, e.message));
            }
            continue;
        }
        if name.is_none() {
            // Only generateName: `kubectl apply` refuses it too (it cannot find the object
            // again), and the state file keys objects by name.
            let message = "a name is required: generateName cannot be used with apply";
            errors.push(schema_error(Some("metadata.name".into()), message.into()));
            continue;
        }
        if kind == "Cluster" {
            if let Some(c) = typed::<Cluster>(path, &object, value, errors) {
                check_cluster(path, &object, &c, errors);
                out.clusters.push((path.to_path_buf(), c));
            }
        } else if let Some(m) = typed::<Mesh>(path, &object, value, errors) {
            cel(path, &object, m.validate_cel(), errors);
            out.meshes.push((path.to_path_buf(), m));
        }
    }
}

/// YAML as kubectl sends it, JSON: keys become strings (`1: x` is `"1": x`), whole floats
/// integers, tags are refused, and numbers must be finite.
fn yaml_to_json(v: serde_yaml::Value, path: &str) -> Result<serde_json::Value, (String, String)> {
    use serde_json::Value as J;
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Go writes a whole float64 as an integer (`2.0` is sent as `2`).
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    return Ok(J::from(f as i64));
                }
                match serde_json::Number::from_f64(f) {
                    Some(x) => J::Number(x),
                    None => return Err((path.into(), format!("{f} is not a JSON number"))),
                }
            }
        }
        Y::String(s) => J::String(s),
        Y::Sequence(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, x)| yaml_to_json(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".into(),
                    _ => return Err((path.into(), "a mapping key must be a scalar".into())),
                };
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let x = yaml_to_json(x, &p)?;
                out.insert(key, x);
            }
            J::Object(out)
        }
        Y::Tagged(t) => {
            return Err((path.into(), format!("YAML tag {} is not supported", t.tag)));
        }
    })
}

fn typed<T: serde::de::DeserializeOwned>(
    path: &Path,
    object: &Option<String>,
    value: serde_json::Value,
    errors: &mut Vec<ManifestError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let field = e.path().to_string();
            errors.push(err_at(
                Level::Schema,
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
            errors.push(err_at(Level::Cel, path, object.clone(), field, msg));
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
        errors.push(err_at(
            Level::Semantic,
            path,
            object.clone(),
            Some(p.field),
            p.message,
        ));
    }
}

/// Checks across objects: unique names, one namespace, meshes against the clusters they
/// name, each cluster claimed by at most one mesh.
fn check_set(m: &Manifests, errors: &mut Vec<ManifestError>) {
    let semantic = |path: &Path, object: String, field: &str, message: String| {
        err_at(
            Level::Semantic,
            path,
            Some(object),
            Some(field.into()),
            message,
        )
    };
    let mut seen: BTreeMap<(String, String), &Path> = BTreeMap::new();
    let objects = m
        .clusters
        .iter()
        .map(|(p, c)| ("Cluster", p, c.name_any(), c.namespace()))
        .chain(
            m.meshes
                .iter()
                .map(|(p, x)| ("Mesh", p, x.name_any(), x.namespace())),
        )
        .chain(
            m.secrets
                .iter()
                .map(|(p, s)| ("Secret", p, s.name.clone(), s.namespace.clone())),
        );
    let mut first_ns: Option<(String, String)> = None;
    for (kind, path, name, ns) in objects {
        let object = format!("{kind}/{name}");
        if let Some(first) = seen.insert((kind.to_string(), name.clone()), path) {
            errors.push(semantic(
                path,
                object.clone(),
                "metadata.name",
                format!("defined twice (also in {})", first.display()),
            ));
        }
        // The operator only lets a Mesh drive Clusters of its own namespace; the state file
        // keys objects by name, so the local runner holds one namespace.
        let ns = ns.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        match &first_ns {
            None => first_ns = Some((ns, object)),
            Some((want, by)) if *want != ns => errors.push(semantic(
                path,
                object,
                "metadata.namespace",
                format!(
                    "namespace {ns:?} differs from {want:?} of {by}: a run holds the objects of \
                     one namespace (a Mesh only drives Clusters of its own)"
                ),
            )),
            Some(_) => {}
        }
    }
    let refs = m.cluster_refs();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (path, mesh) in &m.meshes {
        let object = format!("Mesh/{}", mesh.name_any());
        for p in validate_mesh(&mesh.spec, &refs) {
            errors.push(semantic(path, object.clone(), &p.field, p.message));
        }
        let mut claimed: Vec<String> = tier_membership(&mesh.spec, &refs).into_keys().collect();
        claimed.sort();
        for cluster in claimed {
            match owner.get(&cluster) {
                Some(other) => errors.push(semantic(
                    path,
                    object.clone(),
                    "spec.tiers",
                    format!(
                        "cluster {cluster:?} is already claimed by {other}; a cluster belongs \
                         to one mesh"
                    ),
                )),
                None => {
                    owner.insert(cluster, object.clone());
                }
            }
        }
    }
}

/// Where an object without `metadata.namespace` lives, as `kubectl apply` puts it.
pub const DEFAULT_NAMESPACE: &str = "default";

static EMPTY: BTreeMap<String, String> = BTreeMap::new();
