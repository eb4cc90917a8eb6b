//! The purity of the core is a property of its dependency graph, checked here rather than left
//! to review: neither `baton-core` nor `baton-api` may reach, through normal (non-dev)
//! dependencies, an async runtime, a network or TLS stack, the kube client or runtime, or a
//! source of randomness. Time and seeds are inputs of the planner and the simulator.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

/// Crates whose presence would mean I/O, a clock-driven runtime or randomness in the core.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "h2",
    "tower",
    "reqwest",
    "axum",
    "kube",
    "kube-client",
    "kube-runtime",
    "rustls",
    "tokio-rustls",
    "native-tls",
    "openssl",
    "rand",
    "getrandom",
    "futures-executor",
    "tracing-subscriber",
];

/// Names of every package `root` reaches through normal dependencies on this platform.
fn closure(root: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", env!("BATON_TARGET")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root_id = names
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .expect("root package in metadata");
    let (mut seen, mut todo) = (BTreeSet::new(), vec![root_id]);
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if normal && let Some(pkg) = dep["pkg"].as_str() {
                todo.push(pkg);
            }
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn the_core_and_the_api_reach_no_runtime_network_kube_client_or_randomness() {
    for root in ["baton-core", "baton-api"] {
        let deps = closure(root);
        // The walk itself works: what the crate is built on is found.
        for expected in ["serde", "baton-api", "kube-core"] {
            assert!(
                deps.contains(expected),
                "{root} should reach {expected}: {deps:?}"
            );
        }
        let bad: Vec<&str> = FORBIDDEN
            .iter()
            .copied()
            .filter(|f| deps.contains(*f))
            .collect();
        assert!(bad.is_empty(), "{root} depends on {bad:?}");
    }
}

#[test]
fn the_operator_does_reach_the_crates_the_core_may_not() {
    // The check can fail: the crate that does I/O is seen doing it.
    let deps = closure("baton");
    for io in ["tokio", "kube-client", "kube-runtime", "hyper"] {
        assert!(deps.contains(io), "baton should reach {io}");
    }
}
