//! The Argo CD health checks in `gitops/argocd/baton.dev/<Kind>/health.lua` give, for every
//! object in `testdata/`, the status and message `health_test.yaml` expects (the layout and test
//! format of Argo CD's own resource customizations). The scripts run in Lua 5.1, the dialect of
//! Argo CD's gopher-lua, with only the base, table, string and math libraries. Every testdata
//! object must also be a valid `Cluster` / `Mesh` of the Rust API, so the scripts are tested
//! against the real status shape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib};
use serde::Deserialize;

const KINDS: [&str; 2] = ["Cluster", "Mesh"];
const STATUSES: [&str; 4] = ["Healthy", "Progressing", "Degraded", "Suspended"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct HealthStatus {
    status: String,
    message: String,
}

fn kind_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gitops/argocd/baton.dev")
        .join(kind)
}

/// One script serves both kinds (it reads `obj.kind`); each kind keeps its own
/// `health_test.yaml` and `testdata/` in Argo CD's layout.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops/argocd/baton.dev/health.lua")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs a health script on an object the way Argo CD does: the object as the global `obj`,
/// the script's returned table read for `status` and `message`.
fn run_health(
    script: &str,
    script_name: &str,
    object: &serde_json::Value,
) -> Result<HealthStatus, String> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )
    .map_err(|e| format!("creating the Lua state: {e}"))?;
    // JSON null and missing fields are both nil for Argo CD's scripts; arrays are plain tables.
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let obj = lua
        .to_value_with(object, options)
        .map_err(|e| format!("converting the object: {e}"))?;
    lua.globals()
        .set("obj", obj)
        .map_err(|e| format!("setting obj: {e}"))?;
    let hs: mlua::Table = lua
        .load(script)
        .set_name(script_name)
        .eval()
        .map_err(|e| format!("running {script_name}: {e}"))?;
    let status: String = hs.get("status").map_err(|e| format!("hs.status: {e}"))?;
    let message: String = hs.get("message").map_err(|e| format!("hs.message: {e}"))?;
    Ok(HealthStatus { status, message })
}

/// Every field of `doc` exists in `typed` with the same value (the typed copy may add defaults).
fn assert_subset(
    doc: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    use serde_json::Value;
    match (doc, typed) {
        (Value::Object(d), Value::Object(t)) => {
            for (k, v) in d {
                match t.get(k) {
                    Some(tv) => assert_subset(v, tv, &format!("{path}.{k}"), errors),
                    None => errors.push(format!("{path}.{k}: not a field of the Rust type")),
                }
            }
        }
        (Value::Array(d), Value::Array(t)) if d.len() == t.len() => {
            for (i, (dv, tv)) in d.iter().zip(t).enumerate() {
                assert_subset(dv, tv, &format!("{path}[{i}]"), errors);
            }
        }
        (Value::Number(d), Value::Number(t)) if d.as_f64() == t.as_f64() => {}
        (d, t) if d == t => {}
        (d, t) => errors.push(format!("{path}: {d} reads back as {t}")),
    }
}

/// The object is what the Rust API accepts: it deserializes into the kind's type and every
/// field it sets survives the round trip (no misspelt or invented field, no bad enum value).
fn check_real_shape(kind: &str, doc: &serde_json::Value) -> Result<(), String> {
    let typed = match kind {
        "Cluster" => serde_json::from_value::<baton::api::Cluster>(doc.clone())
            .and_then(serde_json::to_value),
        "Mesh" => {
            serde_json::from_value::<baton::api::Mesh>(doc.clone()).and_then(serde_json::to_value)
        }
        other => panic!("unknown kind {other}"),
    }
    .map_err(|e| format!("not a valid {kind}: {e}"))?;
    if doc.get("apiVersion").and_then(|v| v.as_str()) != Some("baton.dev/v1alpha1")
        || doc.get("kind").and_then(|v| v.as_str()) != Some(kind)
    {
        return Err(format!("apiVersion/kind must be baton.dev/v1alpha1 {kind}"));
    }
    let mut errors = Vec::new();
    for part in ["spec", "status"] {
        if let Some(d) = doc.get(part) {
            assert_subset(d, &typed[part], part, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn health_checks_match_health_test_yaml() {
    let mut failures = Vec::new();
    for kind in KINDS {
        let dir = kind_dir(kind);
        let script_path = script_path();
        let script = read(&script_path);
        let tests: HealthTests = serde_yaml::from_str(&read(&dir.join("health_test.yaml")))
            .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"));
        let mut covered = BTreeSet::new();
        let mut referenced = BTreeSet::new();
        for t in &tests.tests {
            let input = dir.join(&t.input_path);
            referenced.insert(input.clone());
            let doc: serde_json::Value = match serde_yaml::from_str(&read(&input)) {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("{kind}/{}: {e}", t.input_path));
                    continue;
                }
            };
            if let Err(e) = check_real_shape(kind, &doc) {
                failures.push(format!("{kind}/{}: {e}", t.input_path));
            }
            match run_health(&script, &script_path.display().to_string(), &doc) {
                Ok(got) if got == t.health_status => {
                    covered.insert(got.status);
                }
                Ok(got) => failures.push(format!(
                    "{kind}/{}: expected {:?}, got {got:?}",
                    t.input_path, t.health_status
                )),
                Err(e) => failures.push(format!("{kind}/{}: {e}", t.input_path)),
            }
        }
        for status in STATUSES {
            if !covered.contains(status) {
                failures.push(format!("{kind}: no passing test expects {status}"));
            }
        }
        let testdata = std::fs::read_dir(dir.join("testdata"))
            .unwrap_or_else(|e| panic!("{kind}/testdata: {e}"));
        for entry in testdata {
            let path = entry.expect("testdata entry").path();
            if !referenced.contains(&path) {
                failures.push(format!(
                    "{}: not referenced by health_test.yaml",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whatever an object holds (a half-written status, odd types from a newer operator), the
/// script answers one of Argo CD's statuses instead of failing, which Argo CD would show as an
/// error on the resource.
#[test]
fn health_checks_survive_odd_objects() {
    let odd: Vec<serde_json::Value> = [
        r#"{}"#,
        r#"{"metadata": {}}"#,
        r#"{"metadata": {"generation": 1}, "status": {}}"#,
        r#"{"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}"#,
        r#"{"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "phase": "Ready"}}"#,
        r#"{"status": {"conditions": []}}"#,
        r#"{"status": {"conditions": "nonsense"}}"#,
        r#"{"status": {"conditions": [null, 3, "x", {"type": "Ready"}]}}"#,
        r#"{"status": {"conditions": [{"type": "Stalled", "status": "True"}]}}"#,
        r#"{"status": {"conditions": [{"type": "Paused", "status": "True"}], "message": 5}}"#,
        r#"{"status": {"conditions": [{"type": "AwaitingApproval", "status": "True"}]}}"#,
        r#"{"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "True"}]}}"#,
        r#"{"status": {"phase": "RolledBack"}}"#,
        r#"{"status": {"phase": "Paused", "progress": "1/2"}}"#,
        r#"{"status": {"phase": "Degraded"}}"#,
        r#"{"status": {"phase": "SomethingNew", "message": "from a newer operator"}}"#,
        r#"{"status": "not an object"}"#,
    ]
    .iter()
    .map(|s| serde_json::from_str(s).expect("test json"))
    .collect();
    let mut failures = Vec::new();
    for kind in KINDS {
        let script_path = script_path();
        let script = read(&script_path);
        for doc in &odd {
            // The odd documents, as each kind: the script branches on `obj.kind`.
            let mut doc = doc.clone();
            if let Some(o) = doc.as_object_mut() {
                o.insert("kind".into(), serde_json::Value::from(kind));
            }
            let doc = &doc;
            match run_health(&script, &script_path.display().to_string(), doc) {
                Ok(hs) if STATUSES.contains(&hs.status.as_str()) && !hs.message.is_empty() => {}
                Ok(hs) => failures.push(format!("{kind} on {doc}: {hs:?}")),
                Err(e) => failures.push(format!("{kind} on {doc}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The scripts are Lua 5.1 (Argo CD's gopher-lua): nothing from later versions.
#[test]
fn health_checks_use_lua_5_1_only() {
    {
        let script = read(&script_path());
        for (needle, what) in [
            ("//", "integer division (5.3)"),
            ("goto ", "goto (5.2)"),
            ("<const>", "attributes (5.4)"),
            ("<close>", "attributes (5.4)"),
            ("utf8.", "the utf8 library (5.3)"),
            ("table.unpack", "table.unpack (5.2)"),
            ("os.", "the os library (not loaded by Argo CD)"),
            ("io.", "the io library (not loaded by Argo CD)"),
        ] {
            let code: String = script
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!code.contains(needle), "health.lua uses {what}");
        }
    }
}
