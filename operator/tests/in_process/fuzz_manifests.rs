//! Property-based fuzzing of manifest validation (YAML → structural schema → CEL →
//! semantic checks), the path every local run takes before anything is contacted. Generated
//! valid Clusters must load; each mutation (an unknown field, a string over its bound, a
//! wrong type) must be refused with the mutated field named; deep nesting and random text
//! must be refused or loaded without a panic and within a time bound.
//!
//! `BATON_FUZZ_CASES` sets the cases per property (default 200, about 10 s in a debug build).
//! A longer run:
//! `BATON_FUZZ_CASES=20000 cargo nextest run -p baton --test in_process fuzz_manifests:: --no-capture`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton::local::{Level, ManifestError, Manifests, manifests::parse_into};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};

#[path = "../../../agent/tests/common/fuzz.rs"]
mod fuzz;

/// Cases per property unless `BATON_FUZZ_CASES` sets them.
const DEFAULT_CASES: u32 = 200;

/// Far above what any case takes (milliseconds): a case this slow is a complexity bug.
const CASE_BOUND: Duration = Duration::from_secs(5);

/// What one property measured.
struct Figures {
    property: &'static str,
    cases: u64,
    total: Duration,
    longest: Duration,
    longest_bytes: usize,
}

static FIGURES: Mutex<Vec<Figures>> = Mutex::new(Vec::new());

fn record(property: &'static str, took: Duration, size: usize) {
    if let Ok(mut all) = FIGURES.lock() {
        match all.iter_mut().find(|x| x.property == property) {
            Some(x) => {
                x.cases += 1;
                x.total += took;
                if took > x.longest {
                    x.longest = took;
                    x.longest_bytes = size;
                }
            }
            None => all.push(Figures {
                property,
                cases: 1,
                total: took,
                longest: took,
                longest_bytes: size,
            }),
        }
    }
}

fn report(property: &'static str) {
    if let Ok(all) = FIGURES.lock()
        && let Some(f) = all.iter().find(|x| x.property == property)
    {
        println!(
            "{property}: {} cases in {:.2?} ({:.0} cases/s), longest {:.2?} ({} bytes)",
            f.cases,
            f.total,
            f.cases as f64 / f.total.as_secs_f64().max(1e-9),
            f.longest,
            f.longest_bytes
        );
    }
}

fn validate(
    property: &'static str,
    text: &str,
) -> Result<(Manifests, Vec<ManifestError>), TestCaseError> {
    let start = Instant::now();
    let mut out = Manifests::default();
    let mut errors = Vec::new();
    parse_into(Path::new("f.yaml"), text, &mut out, &mut errors);
    let took = start.elapsed();
    record(property, took, text.len());
    prop_assert!(took < CASE_BOUND, "{took:?} for {} bytes", text.len());
    for e in &errors {
        prop_assert_eq!(e.file.as_path(), Path::new("f.yaml"));
        prop_assert!(!e.message.is_empty());
    }
    Ok((out, errors))
}

fn shown(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn member() -> impl Strategy<Value = (String, String, bool, Option<String>)> {
    (
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        "[a-z][a-z0-9]{0,12}(\\.[a-z]{2,6}){0,2}",
        1u32..=65535,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of("[a-z]{1,20}"),
    )
        .prop_map(|(name, host, port, https, spare, site)| {
            let scheme = if https { "https://" } else { "" };
            (name, format!("{scheme}{host}:{port}"), spare, site)
        })
}

/// A Cluster the schema, CEL and semantic checks all accept, as JSON.
fn valid_cluster() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        prop::collection::vec(member(), 1..=16),
        (0u32..100, 0u32..100, 0u32..100),
        proptest::option::of("[a-z]{1,12}"),
        1u32..=16,
        1u32..=100,
        any::<bool>(),
        prop::sample::select(vec!["Automatic", "Approval"]),
    )
        .prop_map(
            |(name, members, (a, b, c), role, max_unavailable, limit, paused, supervision)| {
                let mut seen = std::collections::BTreeSet::new();
                let mut list: Vec<Value> = Vec::new();
                for (i, (n, endpoint, spare, site)) in members.into_iter().enumerate() {
                    if !seen.insert(n.clone()) {
                        continue;
                    }
                    // The first member is never a spare: one must not be.
                    let mut m = json!({"name": n, "endpoint": endpoint, "spare": spare && i > 0});
                    if let Some(s) = site {
                        m["site"] = json!(s);
                    }
                    list.push(m);
                }
                let mut spec = json!({
                    "version": format!("{a}.{b}.{c}"),
                    "members": list,
                    "paused": paused,
                    "upgrade": {"maxUnavailable": max_unavailable,
                                "retries": {"limit": limit},
                                "supervision": supervision},
                });
                if let Some(r) = role {
                    spec["role"] = json!(r);
                }
                json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
                       "metadata": {"name": name}, "spec": spec})
            },
        )
}

/// A valid Cluster, an index (to pick a place in it) and a text matching `pattern`.
fn cluster_index_text(
    pattern: &'static str,
) -> impl Strategy<Value = (Value, prop::sample::Index, String)> {
    (valid_cluster(), any::<prop::sample::Index>(), pattern)
}

fn yaml(v: &Value) -> Result<String, TestCaseError> {
    serde_yaml::to_string(v).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Paths (as JSON pointers and as field paths) of the objects of a spec a user writes.
fn object_paths(v: &Value) -> Vec<(String, String)> {
    let mut out = vec![
        ("/spec".to_string(), "spec".to_string()),
        ("/spec/upgrade".into(), "spec.upgrade".into()),
        (
            "/spec/upgrade/retries".into(),
            "spec.upgrade.retries".into(),
        ),
        ("/metadata".into(), "metadata".into()),
        ("".into(), "".into()),
    ];
    let n = v["spec"]["members"].as_array().map_or(0, Vec::len);
    for i in 0..n {
        out.push((format!("/spec/members/{i}"), format!("spec.members[{i}]")));
    }
    out
}

/// Run one property with `fuzz::config` and print its figures (each test is its own process
/// under nextest, so the figures are printed where they were measured).
fn check<S: Strategy>(
    property: &'static str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(fuzz::config(DEFAULT_CASES));
    let result = runner.run(&strategy, test);
    report(property);
    if let Err(e) = result {
        panic!("{property}: {e}");
    }
}

#[test]
fn generated_valid_clusters_load() {
    check("valid", valid_cluster(), |c| {
        let text = yaml(&c)?;
        let (m, errors) = validate("valid", &text)?;
        prop_assert!(errors.is_empty(), "{}\n{text}", shown(&errors));
        prop_assert_eq!(m.clusters.len(), 1);
        Ok(())
    });
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    let strategy = cluster_index_text("zz[a-zA-Z]{1,10}");
    check("unknown field", strategy, |(mut c, pick, key)| {
        let paths = object_paths(&c);
        let (pointer, field) = &paths[pick.index(paths.len())];
        let target = c
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| TestCaseError::fail(format!("no object at {pointer}")))?;
        target.insert(key.clone(), json!(1));
        let full = if field.is_empty() {
            key.clone()
        } else {
            format!("{field}.{key}")
        };
        let (_, errors) = validate("unknown field", &yaml(&c)?)?;
        prop_assert!(
            errors.iter().any(|e| e.level == Level::Schema
                && e.field.as_deref() == Some(full.as_str())
                && e.message == format!("unknown field {full:?}")),
            "{full}: {}",
            shown(&errors)
        );
        Ok(())
    });
}

#[test]
fn a_string_over_its_bound_is_refused_by_name() {
    let strategy = (valid_cluster(), 0usize..4, 1usize..5000);
    check("over a bound", strategy, |(mut c, which, over)| {
        let (parent, leaf, field, max) = [
            ("/spec", "role", "spec.role", 63),
            ("/spec", "version", "spec.version", 64),
            ("/spec/members/0", "site", "spec.members[0].site", 63),
            (
                "/spec/members/0",
                "endpoint",
                "spec.members[0].endpoint",
                253,
            ),
        ][which];
        let obj = c
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| TestCaseError::fail(format!("no object at {parent}")))?;
        obj.insert(leaf.to_string(), json!("1".repeat(max + over)));
        let (_, errors) = validate("over a bound", &yaml(&c)?)?;
        let want = format!("Too long: may not be more than {max} characters");
        prop_assert!(
            errors
                .iter()
                .any(|e| e.field.as_deref() == Some(field) && e.message.starts_with(&want)),
            "{field}: {}",
            shown(&errors)
        );
        Ok(())
    });
}

#[test]
fn a_wrong_type_is_refused_by_name() {
    check(
        "wrong type",
        (valid_cluster(), 0usize..5),
        |(mut c, which)| {
            let (pointer, field, value) = [
                ("/spec/paused", "spec.paused", json!(3)),
                ("/spec/members", "spec.members", json!("a:1")),
                (
                    "/spec/upgrade/maxUnavailable",
                    "spec.upgrade.maxUnavailable",
                    json!("one"),
                ),
                (
                    "/spec/members/0/spare",
                    "spec.members[0].spare",
                    json!([true]),
                ),
                ("/spec/version", "spec.version", json!({"major": 1})),
            ][which]
                .clone();
            let slot = c
                .pointer_mut(pointer)
                .ok_or_else(|| TestCaseError::fail(format!("no value at {pointer}")))?;
            *slot = value;
            let (_, errors) = validate("wrong type", &yaml(&c)?)?;
            prop_assert!(
                errors.iter().any(|e| e.level == Level::Schema
                    && e.field.as_deref() == Some(field)
                    && e.message.contains("must be of type")),
                "{field}: {}",
                shown(&errors)
            );
            Ok(())
        },
    );
}

#[test]
fn deep_nesting_is_refused_in_bounded_time() {
    let strategy = (
        valid_cluster(),
        1usize..20_000,
        prop::sample::select(vec!["[", "{a: ", "- "]),
    );
    check("deep", strategy, |(c, depth, open)| {
        let text = yaml(&c)?;
        let close = match open {
            "[" => "]",
            "{a: " => "}",
            _ => "",
        };
        let nested = format!("{}x{}", open.repeat(depth), close.repeat(depth));
        let text = if open == "- " {
            format!("{text}spex:\n  {nested}\n")
        } else {
            text.replacen("spec:\n", &format!("spec:\n  role: {nested}\n"), 1)
        };
        let (_, errors) = validate("deep", &text)?;
        prop_assert!(
            !errors.is_empty(),
            "a {depth} deep {open:?} document loaded"
        );
        Ok(())
    });
}

#[test]
fn random_text_and_truncations_never_panic() {
    let strategy = cluster_index_text("[\\PC\\n\\t:\\-\\[\\]{}'\"#&*!|>%@`]{0,200}");
    check("random", strategy, |(c, cut, noise)| {
        let text = yaml(&c)?;
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let spliced = format!("{}{noise}{}", &text[..at], &text[at..]);
        validate("random", &spliced)?;
        validate("random", &noise)?;
        Ok(())
    });
}
