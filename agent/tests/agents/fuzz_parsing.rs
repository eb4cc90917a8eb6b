//! Property-based fuzzing of what the control API parses before anything else happens:
//! operation bodies (`ops::parse_request`, then `ops::validate_request`), fault bodies,
//! routes and operation ids in paths, and query strings. Whatever the input: no panic, and
//! either a value or a 4xx `ApiError` whose message is bounded.
//!
//! `BATON_FUZZ_CASES` sets the cases per property (default 300, a few seconds). A longer run:
//! `BATON_FUZZ_CASES=200000 cargo nextest run -p baton-agent --test agents fuzz_parsing:: --no-capture`.

use std::time::Instant;

use baton_agent::api::OperationKind;
use baton_agent::http_util::{ApiError, EXCERPT_CHARS, MAX_MESSAGE, excerpt, query_params};
use baton_agent::ops::{parse_request, validate_request};
use baton_agent::server::{parse_faults, resolve};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[path = "../common/fuzz.rs"]
mod fuzz;

/// Cases per property unless `BATON_FUZZ_CASES` sets them.
const DEFAULT_CASES: u32 = 300;

fn check_err(e: &ApiError, input_len: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        e.status.is_client_error(),
        "{} ({}) for a {input_len} byte input: {}",
        e.status,
        e.code,
        e.message
    );
    prop_assert!(!e.code.is_empty());
    prop_assert!(!e.message.is_empty());
    prop_assert!(
        e.message.len() <= MAX_MESSAGE,
        "{} byte message ({}) for a {input_len} byte input",
        e.message.len(),
        e.code
    );
    Ok(())
}

/// The whole pipeline a body goes through before an operation is recorded.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_request(body) {
        Ok(req) => {
            if let Err(e) = validate_request(&req) {
                check_err(&e, body.len())?;
            }
        }
        Err(e) => check_err(&e, body.len())?,
    }
    if let Err(e) = parse_faults(body) {
        check_err(&e, body.len())?;
    }
    Ok(())
}

const FIELDS: &[&str] = &[
    "id",
    "kind",
    "version",
    "component",
    "source",
    "role",
    "trustPem",
    "certificatePem",
    "keyPem",
    "hangUpgrade",
    "upgradeSeconds",
    "failUpgradeTo",
    "task",
    "failTasks",
    "failStageMedia",
    "kpiOffsets",
    "checks",
    "prepareFindings",
    "failPrepare",
];

fn kinds() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(OperationKind::ALL.to_vec()).prop_map(|k| k.as_str().to_string()),
        "[a-z-]{0,20}",
    ]
}

/// JSON values of every type, including long and odd strings and some nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        kinds().prop_map(serde_json::Value::from),
        "[0-9a-z.:-]{0,20}".prop_map(serde_json::Value::from),
        (1usize..100_000).prop_map(|n| serde_json::Value::from("x".repeat(n))),
        Just(serde_json::Value::from(
            "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
        )),
        Just(serde_json::Value::from(
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n"
        )),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Request-shaped objects: known field names (sometimes repeated, which a map cannot hold,
/// so they are written out by hand) with values of any type.
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
        1 => ".{0,12}",
    ];
    prop::collection::vec((field, json_value()), 0..8).prop_map(|fields| {
        let parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v))
            .collect();
        format!("{{{}}}", parts.join(",")).into_bytes()
    })
}

/// Valid requests, then damaged: bytes flipped, inserted, removed, truncated, or a field
/// repeated.
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    let seeds = vec![
        br#"{"id":"up-1","kind":"upgrade","version":"2.0.0","component":"os"}"#.to_vec(),
        br#"{"id":"d","kind":"demote","source":"127.0.0.1:7001","role":"spare"}"#.to_vec(),
        br#"{"id":"s","kind":"sync-config","source":"[::1]:7001"}"#.to_vec(),
        br#"{"id":"p","kind":"promote"}"#.to_vec(),
        br#"{"id":"u","kind":"task","task":"upload-content","version":"2.0.0"}"#.to_vec(),
        br#"{"id":"m","kind":"stage-media","version":"2.0.0"}"#.to_vec(),
        br#"{"id":"r","kind":"remove-media","version":"2.0.0"}"#.to_vec(),
        br#"{"id":"p","kind":"prepare","version":"2.0.0","checks":["installConfig","scheduledJobs"]}"#.to_vec(),
        br#"{"id":"t","kind":"install-trust","trustPem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}"#.to_vec(),
        br#"{"failUpgradeTo":["3.0.0"],"hangUpgrade":false,"upgradeSeconds":0.5,"load":4,"failTasks":["x"],"failStageMedia":["2.0.0"],"kpiOffsets":{"errorCount":3,"latencyMs":-1.5}}"#.to_vec(),
        br#"{"prepareFindings":[{"check":"gateways","severity":"Blocking","code":"GatewayDown","message":"gw-1"}],"failPrepare":false}"#.to_vec(),
    ];
    let mutation = prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| (0u8, i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| (1u8, i, b)),
        any::<prop::sample::Index>().prop_map(|i| (2u8, i, 0)),
        any::<prop::sample::Index>().prop_map(|i| (3u8, i, 0)),
        any::<prop::sample::Index>().prop_map(|i| (4u8, i, 0)),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation, 1..6),
    )
        .prop_map(|(mut body, muts)| {
            for (op, i, b) in muts {
                if body.is_empty() {
                    body.push(b);
                    continue;
                }
                let at = i.index(body.len());
                match op {
                    0 => body[at] = b,
                    1 => body.insert(at, b),
                    2 => {
                        body.remove(at);
                    }
                    3 => body.truncate(at),
                    _ => {
                        // Repeat the first field: `{"a":1,...}` -> `{"a":1,"a":1,...}`.
                        if let Some(comma) = body.iter().position(|c| *c == b',') {
                            let first: Vec<u8> = body[1..comma].to_vec();
                            let mut out = vec![b'{'];
                            out.extend_from_slice(&first);
                            out.push(b',');
                            out.extend_from_slice(&body[1..]);
                            body = out;
                        }
                    }
                }
            }
            body
        })
}

/// Runs `test` on `strategy` for the configured cases, prints how long that took and panics
/// with the failure, if any.
fn run_property<S: Strategy>(
    what: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let t0 = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(fuzz::config(DEFAULT_CASES));
    let result = runner.run(&strategy, test);
    println!(
        "fuzz {what}: {} cases in {:?}",
        fuzz::cases(DEFAULT_CASES),
        t0.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn operation_and_fault_bodies_never_panic_and_fail_with_bounded_4xx() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        request_body(),
        mutated_body(),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ];
    run_property("bodies", strategy, |body| check_body(&body));
}

fn methods() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        "[A-Z]{1,10}".prop_filter_map("method", |m| Method::from_bytes(m.as_bytes()).ok()),
    ]
}

fn paths() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/v1/status",
            "/v1/operations",
            "/v1/faults",
            "/v1/operations/",
            "/v1/operations/up-1",
        ])
        .prop_map(str::to_string),
        "/v1/operations/.{0,200}",
        "/.{0,64}",
        (1usize..70_000).prop_map(|n| format!("/v1/operations/{}", "p".repeat(n))),
        (1usize..70_000).prop_map(|n| format!("/{}", "q".repeat(n))),
    ]
}

#[test]
fn routes_ids_and_queries_never_panic_and_fail_with_bounded_4xx() {
    run_property(
        "routes",
        (methods(), paths(), prop::option::of(".{0,300}")),
        |(method, path, query)| {
            match resolve(&method, &path) {
                Ok(_) => {}
                Err(e) => check_err(&e, path.len())?,
            }
            let params = query_params(query.as_deref());
            prop_assert!(params.len() <= query.as_deref().map_or(0, str::len) + 1);
            let quoted = excerpt(&path);
            prop_assert!(quoted.chars().count() <= EXCERPT_CHARS + 40, "{quoted}");
            Ok(())
        },
    );
}

/// What a `kpisCommand` printed: lines of words and numbers, JSON objects, noise. Either KPIs
/// that pass `check_kpis`, or a short reason.
#[test]
fn kpis_outputs_never_panic_and_are_valid_or_refused_briefly() {
    let word = prop_oneof![
        "[a-zA-Z][a-zA-Z0-9_.-]{0,70}",
        ".{0,20}",
        any::<f64>().prop_map(|f| f.to_string()),
        Just("inf".to_string()),
        Just("NaN".to_string()),
        (1usize..20_000).prop_map(|n| "k".repeat(n)),
    ];
    let line = prop::collection::vec(word, 0..4).prop_map(|w| w.join(" "));
    let strategy = prop_oneof![
        prop::collection::vec(line, 0..40).prop_map(|l| l.join("\n")),
        json_value().prop_map(|v| v.to_string()),
        prop::collection::btree_map("[a-zA-Z0-9_. -]{0,70}", any::<f64>(), 0..40)
            .prop_map(|m| serde_json::json!(m).to_string()),
        ".{0,512}",
    ];
    run_property("kpis outputs", strategy, |output| {
        match baton_agent::exec::parse_kpis(&output) {
            Ok(kpis) => prop_assert_eq!(baton_agent::api::check_kpis(&kpis), Ok(())),
            Err(e) => prop_assert!(!e.is_empty() && e.len() <= MAX_MESSAGE, "{} bytes", e.len()),
        }
        Ok(())
    });
}

/// What a `prepare` command printed: lines of words, JSON arrays of finding-shaped objects,
/// noise. Either findings that pass `check_finding` with bounded messages, or a short reason.
#[test]
fn findings_outputs_never_panic_and_are_valid_or_refused_briefly() {
    let word = prop_oneof![
        Just("blocking".to_string()),
        Just("Warning".to_string()),
        "[a-zA-Z][a-zA-Z0-9-]{0,70}",
        "[A-Z][a-zA-Z0-9]{0,70}",
        ".{0,20}",
        Just("#".to_string()),
        (1usize..20_000).prop_map(|n| "m".repeat(n)),
    ];
    let line = prop::collection::vec(word.clone(), 0..6).prop_map(|w| w.join(" "));
    let finding = (word.clone(), word.clone(), word.clone(), word).prop_map(
        |(check, severity, code, message)| {
            serde_json::json!({"check": check, "severity": severity, "code": code,
                "message": message})
        },
    );
    let strategy = prop_oneof![
        prop::collection::vec(line, 0..40).prop_map(|l| l.join("\n")),
        prop::collection::vec(finding, 0..40).prop_map(|f| serde_json::json!(f).to_string()),
        json_value().prop_map(|v| v.to_string()),
        ".{0,512}",
    ];
    run_property("findings outputs", strategy, |output| {
        match baton_agent::exec::parse_findings(&output) {
            Ok(findings) => {
                for f in &findings {
                    prop_assert_eq!(baton_agent::api::check_finding(f), Ok(()));
                    prop_assert!(
                        f.message.chars().count() <= baton_agent::api::MAX_FINDING_MESSAGE
                    );
                }
            }
            Err(e) => prop_assert!(!e.is_empty() && e.len() <= MAX_MESSAGE, "{} bytes", e.len()),
        }
        Ok(())
    });
}
