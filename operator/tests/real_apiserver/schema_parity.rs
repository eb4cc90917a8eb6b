//! The local runner validates exactly what the API server does. One table of bad manifests
//! (`bad_manifests/`) goes through the local loader here and, when `BATON_E2E_KUBECONFIG`
//! names a cluster (`tests/e2e/apiserver.sh` starts a real kube-apiserver), through
//! `kubectl apply --dry-run=server`; both must give the table's verdict. Semantic rules are
//! the only local refusals the API server does not share, and each says why.

use crate::bad_manifests;

use std::path::{Path, PathBuf};
use std::process::Command;

use bad_manifests::{Case, Verdict, cases, deep, render};
use baton::local::{Level, load};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NS: &str = "team-a";
const NS2: &str = "team-b";

fn write_case(dir: &Path, case: &Case, ns: &str, ns2: &str) -> TestResult<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for (name, text) in &case.files {
        let p = dir.join(name);
        std::fs::write(&p, render(text, ns, ns2))?;
        paths.push(p);
    }
    Ok(paths)
}

/// The local verdict of one case, or why it disagrees with the table.
fn local(case: &Case) -> TestResult<Result<(), String>> {
    let dir = tempfile::tempdir()?;
    let paths = write_case(dir.path(), case, NS, NS2)?;
    let expect = render(case.expect, NS, NS2);
    let result = load(&paths);
    let verdict = match &result {
        Ok(_) => Verdict::Accepted,
        Err(e) if e.0.iter().all(|x| x.level == Level::Semantic) => Verdict::Semantic,
        Err(_) => Verdict::Refused,
    };
    let text = match &result {
        Ok(_) => String::new(),
        Err(e) => {
            e.0.iter()
                .map(|x| format!("{x} [{:?}]", x.level))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    // Paths are shown relative to the case's directory.
    let text = text.replace(&format!("{}/", dir.path().display()), "");
    if verdict != case.verdict {
        return Ok(Err(format!(
            "{}: local verdict {verdict:?}, table {:?}:\n{text}",
            case.name, case.verdict
        )));
    }
    if !text.contains(&expect) {
        return Ok(Err(format!(
            "{}: expected {expect:?} in:\n{text}",
            case.name
        )));
    }
    if let Err(e) = &result
        && let Some(bad) = e.0.iter().find(|x| !paths.contains(&x.file))
    {
        return Ok(Err(format!("{}: error without its file: {bad}", case.name)));
    }
    Ok(Ok(()))
}

#[test]
fn the_local_validator_gives_every_case_its_verdict() -> TestResult {
    let mut wrong = Vec::new();
    for case in cases() {
        if let Err(e) = local(&case)? {
            wrong.push(e);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    Ok(())
}

/// Refused manifests never reach the runner: `baton run` exits non-zero, writes no state file
/// and contacts no agent (the endpoints do not exist; a contact would hang or fail later).
#[test]
fn baton_run_refuses_before_writing_state() -> TestResult {
    for case in cases().iter().filter(|c| c.verdict != Verdict::Accepted) {
        let dir = tempfile::tempdir()?;
        let paths = write_case(dir.path(), case, NS, NS2)?;
        let state = dir.path().join("state.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.arg("run").arg("--once").arg("--insecure-http");
        cmd.arg("--state").arg(&state);
        for p in &paths {
            cmd.arg("-f").arg(p);
        }
        let out = cmd.env("RUST_LOG", "warn").output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: exit 0\n{stderr}", case.name);
        assert!(!state.exists(), "{}: a state file was written", case.name);
        assert!(
            stderr.contains(&render(case.expect, NS, NS2)) || case.expect.is_empty(),
            "{}: {stderr}",
            case.name
        );
    }
    Ok(())
}

/// 100,000 levels took 28 s to be refused by the parser; the depth bound refuses it without
/// parsing, naming the depth and where it was crossed.
#[test]
fn a_deeply_nested_document_is_refused_without_being_parsed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("deep.yaml");
    std::fs::write(&p, deep(100_000))?;
    let e = load(std::slice::from_ref(&p))
        .err()
        .ok_or("deep document accepted")?;
    let text = e.to_string();
    assert!(
        text.contains("nested deeper than 1000 levels at line 5 column 4007; not parsed"),
        "{text}"
    );
    assert_eq!(e.0.len(), 1, "{text}");
    Ok(())
}

fn kubectl() -> String {
    std::env::var("BATON_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn run(kubeconfig: &Path, args: &[&str]) -> TestResult<std::process::Output> {
    Ok(Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?)
}

fn must(kubeconfig: &Path, args: &[&str]) -> TestResult {
    let out = run(kubeconfig, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

#[test]
fn the_api_server_gives_every_case_the_same_verdict() -> TestResult {
    let kubeconfig = match std::env::var("BATON_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            println!(
                "the_api_server_gives_every_case_the_same_verdict: skipped: set \
                 BATON_E2E_KUBECONFIG=/path/to/kubeconfig (tests/e2e/apiserver.sh does)"
            );
            return Ok(());
        }
    };
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let crds = crds.to_str().ok_or("crds path is not UTF-8")?;
    must(
        &kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", crds],
    )?;
    must(
        &kubeconfig,
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            "crd/clusters.baton.dev",
            "crd/meshes.baton.dev",
        ],
    )?;
    let id = std::process::id();
    let (ns, ns2) = (format!("parity-{id}-a"), format!("parity-{id}-b"));
    for n in [&ns, &ns2] {
        must(&kubeconfig, &["create", "namespace", n])?;
    }
    let mut wrong = Vec::new();
    let mut summary = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir()?;
        let paths = write_case(dir.path(), &case, &ns, &ns2)?;
        let mut args = vec!["apply", "--dry-run=server"];
        let has_ns = case.files.iter().any(|(_, t)| t.contains("namespace:"));
        if !has_ns {
            args.extend(["-n", ns.as_str()]);
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        for n in &names {
            args.extend(["-f", n.as_str()]);
        }
        let out = run(&kubeconfig, &args)?;
        let accepted = out.status.success();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The first two lines hold the verdict and, for a list of causes, the first cause.
        let first = stderr
            .lines()
            .filter(|l| !l.contains("version difference") && !l.trim().is_empty())
            .take(2)
            .collect::<Vec<_>>()
            .join(" | ");
        summary.push(format!(
            "{:<60} {}",
            case.name,
            if accepted {
                "accepted".into()
            } else {
                first.clone()
            }
        ));
        let want = case.verdict != Verdict::Refused;
        if accepted != want {
            wrong.push(format!(
                "{}: API server {}, table {:?}\n{stderr}",
                case.name,
                if accepted { "accepted" } else { "refused" },
                case.verdict
            ));
        }
    }
    for n in [&ns, &ns2] {
        let _ = run(&kubeconfig, &["delete", "namespace", n, "--wait=false"]);
    }
    println!("{}", summary.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    Ok(())
}
