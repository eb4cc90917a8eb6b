//! The API server's structural validation of a custom resource, done locally against the
//! schema the CRDs are generated from (`for_api_server`), so the local runner cannot drift
//! from what `kubectl apply` enforces: types, `required`, unknown fields (strict field
//! validation), string, array, map and number bounds, `pattern`, `enum`, list types and the
//! metadata rules of `ObjectMeta`. CEL rules are evaluated separately (`validate_cel`).
//!
//! Messages follow the API server's wording where a user would compare them; each names the
//! field path (`spec.members[2].endpoint`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// One structural problem: the field path and the API server's kind of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    pub field: String,
    pub message: String,
    /// A wrong type: the API server does not evaluate CEL rules over such an object.
    pub blocking: bool,
}

/// The `openAPIV3Schema` of a kind (`Cluster`, `Mesh`) exactly as the CRD carries it.
pub fn schema_of(kind: &str) -> Option<&'static Value> {
    static SCHEMAS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SCHEMAS
        .get_or_init(super::schemas_by_kind)
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, s)| s)
}

/// Validate a whole object (`apiVersion`, `kind`, `metadata`, `spec`, `status`) of `kind`.
/// Like the API server, nulls of non-nullable fields are dropped first (they mean "absent",
/// so a default applies) and `status` is only checked for unknown fields: the status
/// subresource drops it on create. `value` is left as the API server would store it.
pub fn check_object(kind: &str, value: &mut Value) -> Vec<SchemaError> {
    let mut out = Vec::new();
    let Some(schema) = schema_of(kind) else {
        out.push(error("kind", format!("no schema for kind {kind:?}")));
        return out;
    };
    let Some(obj) = value.as_object_mut() else {
        out.push(type_error("", "object", value));
        return out;
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            out.push(unknown(key));
        }
    }
    match obj.get("metadata") {
        Some(meta) => check_metadata(meta, &mut out),
        None => check_metadata(&Value::Object(Map::new()), &mut out),
    }
    let props = schema.get("properties");
    // `spec: null` is pruned like any non-nullable null (and is then a missing `spec`).
    obj.retain(|k, v| !(v.is_null() && matches!(k.as_str(), "spec" | "status" | "metadata")));
    if let Some(spec) = obj.get_mut("spec") {
        match props.and_then(|p| p.get("spec")) {
            Some(s) => walk(s, spec, "spec", Mode::Full, &mut out),
            None => out.push(unknown("spec")),
        }
    }
    if let Some(status) = obj.get_mut("status") {
        match props.and_then(|p| p.get("status")) {
            Some(s) => walk(s, status, "status", Mode::UnknownFieldsOnly, &mut out),
            None => out.push(unknown("status")),
        }
    }
    obj.remove("status");
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.push(error(r, "Required value".into()));
            }
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    /// Strict decoding only: the status subresource ignores the rest.
    UnknownFieldsOnly,
}

fn error(field: &str, message: String) -> SchemaError {
    SchemaError {
        field: field.to_string(),
        message,
        blocking: false,
    }
}

fn unknown(path: &str) -> SchemaError {
    // The API server's strict decoding names the whole path in the message.
    error(path, format!("unknown field {path:?}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, want: &str, v: &Value) -> SchemaError {
    SchemaError {
        field: path.to_string(),
        message: format!(
            "Invalid value: \"{}\": {path} in body must be of type {want}",
            type_name(v)
        ),
        blocking: true,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// kubectl turns YAML into JSON numbers the way Go does: `3.0` is the integer 3.
fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
}

fn type_matches(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

fn walk(schema: &Value, value: &mut Value, path: &str, mode: Mode, out: &mut Vec<SchemaError>) {
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if value.is_null() {
        if !nullable && mode == Mode::Full {
            out.push(type_error(
                path,
                schema_type(schema).unwrap_or("object"),
                value,
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
        && (value.is_string() || value.as_number().is_some_and(is_integer));
    if let Some(want) = schema_type(schema)
        && !int_or_string
        && !type_matches(want, value)
    {
        if mode == Mode::Full {
            out.push(type_error(path, want, value));
        }
        return;
    }
    match value {
        Value::Object(map) => walk_object(schema, map, path, mode, out),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), mode, out);
                }
            }
            if mode == Mode::Full {
                check_array(schema, items, path, out);
            }
        }
        Value::String(s) if mode == Mode::Full => check_string(schema, s, path, out),
        Value::Number(n) if mode == Mode::Full => check_number(schema, n, path, out),
        _ => {}
    }
    if mode == Mode::Full {
        check_enum(schema, value, path, out);
    }
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn walk_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    mode: Mode,
    out: &mut Vec<SchemaError>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    // Nulls of non-nullable fields are pruned before defaulting and validation.
    map.retain(|k, v| {
        let s = props.and_then(|p| p.get(k)).or(additional);
        !(v.is_null()
            && s.is_some_and(|s| s.get("nullable").and_then(Value::as_bool) != Some(true)))
    });
    for (key, v) in map.iter_mut() {
        let p = child(path, key);
        match props.and_then(|ps| ps.get(key)).or(additional) {
            Some(s) => walk(s, v, &p, mode, out),
            None if preserve => {}
            None => out.push(unknown(&p)),
        }
    }
    if mode != Mode::Full {
        return;
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                out.push(error(&child(path, r), "Required value".into()));
            }
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        out.push(error(
            path,
            format!("Too many: {}: must have at most {max} items", map.len()),
        ));
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, out: &mut Vec<SchemaError>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        out.push(error(
            path,
            format!("Too many: {}: must have at most {max} items", items.len()),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        out.push(error(
            path,
            format!(
                "Invalid value: {}: {path} in body should have at least {min} items",
                items.len()
            ),
        ));
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    out.push(error(
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: {item}"),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(key.clone()) {
                    let shown: Vec<String> = keys
                        .iter()
                        .zip(&key)
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    out.push(error(
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: {{{}}}", shown.join(",")),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, path: &str, out: &mut Vec<SchemaError>) {
    // The API server counts characters (runes), not bytes.
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(error(
            path,
            format!("Too long: may not be more than {max} characters (found {len})"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(error(
            path,
            format!(
                "Invalid value: {}: {path} in body should be at least {min} chars long",
                quote(s)
            ),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match pattern(p) {
            Some(re) if !re.is_match(s) => out.push(error(
                path,
                format!(
                    "Invalid value: {}: {path} in body should match '{p}'",
                    quote(s)
                ),
            )),
            Some(_) => {}
            None => out.push(error(
                path,
                format!("the schema's pattern '{p}' does not compile"),
            )),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && s.parse::<jiff::Timestamp>().is_err()
    {
        out.push(error(
            path,
            format!(
                "Invalid value: {}: {path} in body must be of type date-time",
                quote(s)
            ),
        ));
    }
}

/// A value as it appears in a message: short enough to read when it is the over-long one.
fn quote(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.chars().count() > SHOWN {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head:?}...")
    } else {
        format!("{s:?}")
    }
}

/// Compiled patterns, kept: there are a handful in the schema and manifests repeat them.
fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, regex::Regex)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().ok()?;
    if let Some((_, re)) = guard.iter().find(|(k, _)| k == p) {
        return Some(re.clone());
    }
    let re = regex::Regex::new(p).ok()?;
    guard.push((p.to_string(), re.clone()));
    Some(re)
}

fn check_number(schema: &Value, n: &serde_json::Number, path: &str, out: &mut Vec<SchemaError>) {
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && x < min
    {
        out.push(error(
            path,
            format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}"),
        ));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && x > max
    {
        out.push(error(
            path,
            format!("Invalid value: {n}: {path} in body should be less than or equal to {max}"),
        ));
    }
}

fn check_enum(schema: &Value, v: &Value, path: &str, out: &mut Vec<SchemaError>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(error(
            path,
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
}

/// `ObjectMeta` fields a manifest may carry (the rest are unknown to strict decoding).
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The API server's limit on all annotations of an object together.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn check_metadata(meta: &Value, out: &mut Vec<SchemaError>) {
    let Some(m) = meta.as_object() else {
        out.push(type_error("metadata", "object", meta));
        return;
    };
    for key in m.keys() {
        if !META_FIELDS.contains(&key.as_str()) {
            out.push(unknown(&format!("metadata.{key}")));
        }
    }
    let present = |f: &str| m.get(f).is_some_and(|v| !v.is_null());
    if !present("name") && !present("generateName") {
        out.push(error(
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    }
    for (field, check, what) in [
        (
            "name",
            is_dns_subdomain as fn(&str) -> bool,
            "a lowercase RFC 1123 subdomain",
        ),
        ("namespace", is_dns_label, "a lowercase RFC 1123 label"),
    ] {
        match m.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if check(s) => {}
            Some(Value::String(s)) => out.push(error(
                &format!("metadata.{field}"),
                format!("Invalid value: {}: must be {what}", quote(s)),
            )),
            Some(v) => out.push(type_error(&format!("metadata.{field}"), "string", v)),
        }
    }
    for field in ["labels", "annotations"] {
        let path = format!("metadata.{field}");
        let Some(v) = m.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(map) = v.as_object() else {
            out.push(type_error(&path, "object", v));
            continue;
        };
        let mut total = 0;
        for (k, v) in map {
            let Some(s) = v.as_str() else {
                out.push(type_error(&format!("{path}.{k}"), "string", v));
                continue;
            };
            total += k.len() + s.len();
            if let Err(why) = qualified_name(k) {
                out.push(error(&path, format!("Invalid value: {}: {why}", quote(k))));
            }
            if field == "labels" && !is_label_value(s) {
                out.push(error(
                    &format!("{path}.{k}"),
                    format!(
                        "Invalid value: {}: a label value must be at most 63 characters of \
                         alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric",
                        quote(s)
                    ),
                ));
            }
        }
        if field == "annotations" && total > ANNOTATIONS_MAX_BYTES {
            out.push(error(
                &path,
                format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
            ));
        }
    }
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
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

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name part.
fn qualified_name(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err("prefix part must be a lowercase RFC 1123 subdomain");
    }
    if !is_name_part(name) {
        return Err(
            "name part must be at most 63 characters of alphanumerics, '-', '_' or '.', \
             beginning and ending with an alphanumeric",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(spec: Value) -> Value {
        json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "c"}, "spec": spec})
    }

    fn messages(mut v: Value) -> Vec<String> {
        check_object("Cluster", &mut v)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn a_valid_cluster_has_no_structural_errors() {
        let m = messages(cluster(json!({"version": "1.0", "members": [
            {"name": "a", "endpoint": "a:1"}, {"name": "b", "endpoint": "b:1", "spare": true}]})));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn unknown_fields_are_named_by_path() {
        let m = messages(cluster(json!({"verison": "1.0", "members": [
            {"name": "a", "endpoint": "a:1", "spaer": true}]})));
        assert!(
            m.contains(&"spec.verison: unknown field \"spec.verison\"".into()),
            "{m:?}"
        );
        assert!(
            m.iter().any(|e| e.contains("\"spec.members[0].spaer\"")),
            "{m:?}"
        );
    }

    #[test]
    fn nulls_of_non_nullable_fields_mean_absent() {
        let mut v = cluster(json!({"paused": null, "version": null,
            "members": [{"name": "a", "endpoint": "a:1"}]}));
        assert!(check_object("Cluster", &mut v).is_empty());
        assert!(v["spec"].get("paused").is_none(), "{v}");
        assert!(v["spec"].get("version").is_some(), "nullable: kept");
    }

    #[test]
    fn bounds_list_types_and_metadata() {
        let long = "x".repeat(300);
        let m = messages(
            json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "Bad", "labels": {"a/b/c": "v"}},
            "spec": {"role": long, "members": [
                {"name": "a", "endpoint": "a:1"}, {"name": "a", "endpoint": "b:1"}],
                "upgrade": {"maxUnavailable": 0, "strategy": "Sideways"},
                "backupPeers": ["p", "p"]}}),
        );
        for needle in [
            "spec.role: Too long: may not be more than 63 characters (found 300)",
            "spec.members[1]: Duplicate value: {\"name\":\"a\"}",
            "spec.backupPeers[1]: Duplicate value: \"p\"",
            "spec.upgrade.maxUnavailable: Invalid value: 0:",
            "spec.upgrade.strategy: Unsupported value: \"Sideways\"",
            "metadata.namespace: Invalid value: \"Bad\"",
            "metadata.labels: Invalid value: \"a/b/c\"",
        ] {
            assert!(
                m.iter().any(|e| e.starts_with(needle)),
                "{needle:?} not in {m:?}"
            );
        }
    }

    #[test]
    fn status_is_only_checked_for_unknown_fields_and_dropped() {
        let mut v = cluster(json!({"members": [{"name": "a", "endpoint": "a:1"}]}));
        v["status"] = json!({"phase": 7});
        assert!(check_object("Cluster", &mut v).is_empty());
        assert!(v.get("status").is_none());
        v["status"] = json!({"phaze": "Ready"});
        assert_eq!(
            check_object("Cluster", &mut v)[0].message,
            "unknown field \"status.phaze\""
        );
    }
}
