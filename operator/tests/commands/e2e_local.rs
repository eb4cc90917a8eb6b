//! End-to-end tests of `baton run` against real `baton-agent` processes on 127.0.0.1: the
//! order of what happened is read from the agents' own operation records, not from Baton's
//! view of itself.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton_agent::api::{OperationKind, OperationRecord, OperationState, Role};
use support::*;

const OLD: &str = "1.0.0";
const NEW: &str = "2.0.0";

/// The backlog precondition is off: under a continuous write load a member always has a
/// write or two not yet sent to its follower, so the rollout would wait for a quiet instant.
fn mesh_yaml(version: &str, max_parallel: u32) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: demo\nspec:\n  version: {version}\n  tiers:\n  - name: management\n    clusters: [mgmt]\n  - name: workers\n    clusters: [w1, w2, w3]\n    maxParallel: {max_parallel}\n  compatibility:\n  - role: worker\n    notNewerThan: management\n  preconditions:\n    noBacklog: false\n"
    )
}

const POLICY: &str = "  upgrade:\n    maxReplicationLag: 2s\n    syncTimeout: 30s\n    trafficCheck:\n      timeout: 3s\n      rollback: true\n    retries:\n      limit: 3\n      backoff: 500ms\n      maxBackoff: 2s\n";

async fn two_tier_fleet() -> TestResult<Fleet> {
    Fleet::start(
        &[
            ClusterDef::new("mgmt", "management", 2),
            ClusterDef::new("w1", "worker", 2),
            ClusterDef::new("w2", "worker", 2),
            ClusterDef::new("w3", "worker", 2),
        ],
        OLD,
        0.6,
    )
    .await
}

fn write_mesh(f: &Fleet, version: &str) -> TestResult<std::path::PathBuf> {
    let mut all = mesh_yaml(version, 2);
    all.push_str("---\n");
    all.push_str(&f.cluster_yaml("mgmt", "management", POLICY));
    for w in ["w1", "w2", "w3"] {
        all.push_str(&f.cluster_yaml(w, "worker", POLICY));
    }
    f.write("mesh.yaml", &all)
}

fn run_baton(args: &[String], timeout: &str) -> TestResult<std::process::Output> {
    let mut full = args.to_vec();
    full.extend(["--until-settled".into(), "--timeout".into(), timeout.into()]);
    Ok(baton().args(&full).output()?)
}

/// What the state file says (the status tree and the upgrade log), for a failure message.
fn state_report(state: &Path) -> String {
    ["status", "log"]
        .iter()
        .map(
            |cmd| match baton().arg(cmd).arg("--state").arg(state).output() {
                Ok(o) => format!("baton {cmd}:\n{}", text(&o)),
                Err(e) => format!("baton {cmd}: {e}"),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// Moves (upgrade/rollback) to `version`, by cluster: (start of first, end of last).
fn cluster_spans(
    recs: &BTreeMap<(String, String), Vec<OperationRecord>>,
    version: &str,
) -> BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> {
    let mut out: BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> = BTreeMap::new();
    for ((c, _), rs) in recs {
        for r in rs
            .iter()
            .filter(|r| is_move(r) && r.params.version.as_deref() == Some(version))
        {
            let (s, e) = span(r);
            let entry = out.entry(c.clone()).or_insert((s, e));
            entry.0 = entry.0.min(s);
            entry.1 = entry.1.max(e);
        }
    }
    out
}

/// The largest number of spans open at one instant.
fn max_overlap(spans: &[(jiff::Timestamp, jiff::Timestamp)]) -> usize {
    let mut edges: Vec<(jiff::Timestamp, i32)> = Vec::new();
    for (s, e) in spans {
        edges.push((*s, 1));
        edges.push((*e, -1));
    }
    // Ends before starts at the same instant: touching spans do not overlap.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut max) = (0, 0);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tier_mesh_upgrade_under_write_load_keeps_every_order_and_write() -> TestResult {
    let fleet = two_tier_fleet().await?;
    let file = write_mesh(&fleet, NEW)?;
    let loads: Vec<(String, WriteLoad)> = ["mgmt", "w1", "w2", "w3"]
        .iter()
        .map(|c| Ok((c.to_string(), fleet.write_load(c)?)))
        .collect::<TestResult<_>>()?;
    for (_, l) in &loads {
        l.wait_acked(20).await?;
    }
    let state = fleet.path("state.json");
    let out = run_baton(&run_args(&[&file], &state, &fleet.pki.dir), "180s")?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("converged"),
        "{}",
        text(&out)
    );

    let mut lost = 0;
    for (c, l) in loads {
        let report = l.stop().await?;
        assert!(report.acked.len() >= 20, "{c}: too few writes");
        lost += fleet.lost_writes(&c, &report).await?;
    }
    assert_eq!(lost, 0, "acknowledged writes lost");

    // Every member on the new version, one active per cluster.
    for (c, members) in fleet.roles().await? {
        assert!(members.iter().all(|(_, v)| v == NEW), "{c}: {members:?}");
        let actives = members.iter().filter(|(r, _)| *r == Role::Active).count();
        assert_eq!(actives, 1, "{c}: {members:?}");
    }

    let recs = fleet.records().await?;
    // Tier order: no worker moves before the management cluster has finished moving.
    let spans = cluster_spans(&recs, NEW);
    let mgmt_end = spans["mgmt"].1;
    for w in ["w1", "w2", "w3"] {
        assert!(
            spans[w].0 >= mgmt_end,
            "{w} started {} before management finished {mgmt_end}",
            spans[w].0
        );
    }
    // maxParallel 2 among workers.
    let workers: Vec<_> = ["w1", "w2", "w3"].iter().map(|w| spans[*w]).collect();
    assert!(
        max_overlap(&workers) <= 2,
        "more than 2 workers moved at once: {workers:?}"
    );
    // Standby first: m1 (the standby) upgraded before m0 (the active), which moved only after
    // m1 was promoted; each member upgraded exactly once.
    for c in ["mgmt", "w1", "w2", "w3"] {
        let ups = |m: &str| -> Vec<&OperationRecord> {
            recs[&(c.to_string(), m.to_string())]
                .iter()
                .filter(|r| is_move(r) && r.state == OperationState::Succeeded)
                .collect()
        };
        let (m0, m1) = (ups("m0"), ups("m1"));
        assert_eq!(
            (m0.len(), m1.len()),
            (1, 1),
            "{c}: each member upgrades once"
        );
        let promote = recs[&(c.to_string(), "m1".to_string())]
            .iter()
            .find(|r| r.kind == OperationKind::Promote && r.state == OperationState::Succeeded)
            .unwrap_or_else(|| panic!("{c}: m1 never promoted"));
        assert!(
            span(m1[0]).1 <= span(promote).0,
            "{c}: promoted before its upgrade ended"
        );
        assert!(
            span(promote).1 <= span(m0[0]).0,
            "{c}: old active moved before the promote"
        );
    }

    // A converged system: once the load stopped and one pass recorded the quiet members,
    // another pass writes nothing and starts nothing.
    let mut once = run_args(&[&file], &state, &fleet.pki.dir);
    once.push("--once".into());
    let out = baton().args(&once).output()?;
    assert!(out.status.success(), "{}", text(&out));
    let before = std::fs::read_to_string(&state)?;
    let ops_before: usize = fleet.records().await?.values().map(Vec::len).sum();
    let out = baton().args(&once).output()?;
    assert!(out.status.success(), "{}", text(&out));
    let after = std::fs::read_to_string(&state)?;
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .take(10)
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "converged pass changed the state: {changed:#?}"
    );
    let ops_after: usize = fleet.records().await?.values().map(Vec::len).sum();
    assert_eq!(ops_before, ops_after, "converged pass started operations");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backout_walks_tiers_in_reverse() -> TestResult {
    let fleet = two_tier_fleet().await?;
    let state = fleet.path("state.json");
    let up = write_mesh(&fleet, NEW)?;
    let out = run_baton(&run_args(&[&up], &state, &fleet.pki.dir), "180s")?;
    assert!(out.status.success(), "upgrade: {}", text(&out));
    let down = write_mesh(&fleet, OLD)?;
    let out = run_baton(&run_args(&[&down], &state, &fleet.pki.dir), "180s")?;
    assert!(out.status.success(), "backout: {}", text(&out));
    for (c, members) in fleet.roles().await? {
        assert!(members.iter().all(|(_, v)| v == OLD), "{c}: {members:?}");
    }
    let spans = cluster_spans(&fleet.records().await?, OLD);
    let workers_end = ["w1", "w2", "w3"].iter().map(|w| spans[*w].1).max();
    let workers_end = workers_end.ok_or_else(|| err("no worker moved back"))?;
    assert!(
        spans["mgmt"].0 >= workers_end,
        "management moved back at {} before the workers finished at {workers_end}",
        spans["mgmt"].0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_and_a_failed_traffic_check_rolls_back_one_cluster()
-> TestResult {
    // Standalone clusters: a failure in one must not touch the others.
    let fleet = Fleet::start(
        &[
            // The standby upgrades fine but serves no traffic once promoted on the new version.
            ClusterDef::new("w1", "worker", 2).with(1, &["--no-traffic-after-promote-on", NEW]),
            // The standby's upgrade to the new version always fails.
            ClusterDef::new("w2", "worker", 2).with(1, &["--fail-upgrade-to", NEW]),
            ClusterDef::new("w3", "worker", 2),
        ],
        OLD,
        0.4,
    )
    .await?;
    let mut all = String::new();
    for w in ["w1", "w2", "w3"] {
        let spec = format!("  version: {NEW}\n{POLICY}");
        all.push_str(&fleet.cluster_yaml(w, "worker", &spec));
    }
    let file = fleet.write("clusters.yaml", &all)?;
    let state = fleet.path("state.json");
    let out = run_baton(&run_args(&[&file], &state, &fleet.pki.dir), "180s")?;
    // Blocked on humans: w1 rolled back, w2 stalled; exit 1 names both.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("blocked: Cluster/w1"), "{}", text(&out));
    assert!(stdout.contains("blocked: Cluster/w2"), "{}", text(&out));

    let status = baton()
        .args(["status", "-o", "json", "--state"])
        .arg(&state)
        .output()?;
    assert!(status.status.success(), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let phase = |c: &str| -> String {
        v["clusters"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == c))
            .and_then(|x| x["status"]["phase"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(phase("w1"), "RolledBack");
    assert_eq!(phase("w2"), "Stalled");
    assert_eq!(phase("w3"), "Ready");

    let roles = fleet.roles().await?;
    // w1 serves from the old version again; w3 fully upgraded.
    let w1_active = roles["w1"].iter().find(|(r, _)| *r == Role::Active);
    assert_eq!(
        w1_active.map(|(_, v)| v.as_str()),
        Some(OLD),
        "{:?}",
        roles["w1"]
    );
    assert!(
        roles["w3"].iter().all(|(_, v)| v == NEW),
        "{:?}",
        roles["w3"]
    );
    // w2's active never moved; its standby was tried 3 times (the limit counts attempts), with growing gaps.
    assert!(roles["w2"].iter().all(|(_, v)| v == OLD));
    let recs = fleet.records().await?;
    let tries: Vec<&OperationRecord> = recs[&("w2".to_string(), "m1".to_string())]
        .iter()
        .filter(|r| r.kind == OperationKind::Upgrade)
        .collect();
    assert_eq!(tries.len(), 3, "attempts: {tries:?}");
    assert!(tries.iter().all(|r| r.state == OperationState::Failed));
    let gap = |a: &OperationRecord, b: &OperationRecord| {
        let end = a.finished_at.unwrap_or(a.started_at);
        b.started_at.duration_since(end).as_secs_f64()
    };
    let (g1, g2) = (gap(tries[0], tries[1]), gap(tries[1], tries[2]));
    assert!(g1 >= 0.45, "first retry after {g1}s, backoff is 500ms");
    assert!(
        g2 >= 0.95,
        "second retry after {g2}s, backoff doubles to 1s"
    );
    assert!(
        recs[&("w2".to_string(), "m0".to_string())]
            .iter()
            .all(|r| !is_move(r)),
        "the active of a failing cluster was touched"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_baton_run_mid_upgrade_resumes_without_doing_anything_twice() -> TestResult {
    let fleet = two_tier_fleet().await?;
    let file = write_mesh(&fleet, NEW)?;
    let state = fleet.path("state.json");
    let loads: Vec<(String, WriteLoad)> = ["mgmt", "w1", "w2", "w3"]
        .iter()
        .map(|c| Ok((c.to_string(), fleet.write_load(c)?)))
        .collect::<TestResult<_>>()?;
    // Kill -9 at several points of the rollout, then let it finish.
    for delay_ms in [700u64, 1300, 400, 1900, 900, 1600] {
        let mut child = baton()
            .args(run_args(&[&file], &state, &fleet.pki.dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    let out = run_baton(&run_args(&[&file], &state, &fleet.pki.dir), "180s")?;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        state_report(&state)
    );

    let mut lost = 0;
    for (c, l) in loads {
        let report = l.stop().await?;
        lost += fleet.lost_writes(&c, &report).await?;
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    for (c, members) in fleet.roles().await? {
        assert!(members.iter().all(|(_, v)| v == NEW), "{c}: {members:?}");
        assert_eq!(
            members.iter().filter(|(r, _)| *r == Role::Active).count(),
            1
        );
    }
    // Nothing that matters happened twice: each member moved to the new version once, and
    // each cluster switched over once.
    for ((c, m), rs) in fleet.records().await? {
        let moved = rs
            .iter()
            .filter(|r| is_move(r) && r.state == OperationState::Succeeded)
            .count();
        assert_eq!(moved, 1, "{c}/{m} moved {moved} times: {rs:?}");
        let promotes = rs
            .iter()
            .filter(|r| r.kind == OperationKind::Promote && r.state == OperationState::Succeeded)
            .count();
        assert!(promotes <= 1, "{c}/{m} promoted {promotes} times");
    }
    Ok(())
}

/// Each bad manifest: exit 2, a message naming the file, the object and the field; no
/// connection to the (listening) agent endpoint, no state file.
#[test]
fn bad_manifests_are_rejected_before_anything_is_contacted() -> TestResult {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let ep = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    let cluster = |spec: &str| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: web\nspec:\n{spec}"
        )
    };
    let members =
        format!("  members:\n  - name: a\n    endpoint: {ep}\n  - name: b\n    endpoint: {ep}\n");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "syntax.yaml",
            "kind: Cluster\nmetadata: [unclosed\n".into(),
            vec!["syntax.yaml", "invalid YAML"],
        ),
        (
            "apiversion.yaml",
            cluster(&members).replace("baton.dev/v1alpha1", "baton.dev/v9"),
            vec!["apiversion.yaml", "Cluster/web", "apiVersion"],
        ),
        (
            "version.yaml",
            cluster(&format!("  version: banana\n{members}")),
            vec!["version.yaml", "Cluster/web", "spec.version"],
        ),
        (
            "duplicate.yaml",
            cluster(&members.replace("name: b", "name: a")),
            vec![
                "duplicate.yaml",
                "Cluster/web",
                // A list map keyed by name: the API server's own message.
                "spec.members[1]: Duplicate value: {\"name\":\"a\"}",
            ],
        ),
        (
            "type.yaml",
            cluster(&format!("{members}  upgrade:\n    maxUnavailable: lots\n")),
            vec!["type.yaml", "Cluster/web", "spec.upgrade.maxUnavailable"],
        ),
        (
            "cycle.yaml",
            cluster(&format!(
                "{members}  components:\n  - name: os\n    after: [app]\n  - name: app\n    after: [os]\n"
            )),
            vec!["cycle.yaml", "Cluster/web", "spec.components"],
        ),
        (
            "tier.yaml",
            format!(
                "{}---\napiVersion: baton.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec:\n  version: 1.0.0\n  tiers:\n  - name: t\n    clusters: [web, nosuch]\n",
                cluster(&members)
            ),
            vec!["tier.yaml", "Mesh/m", "nosuch"],
        ),
        (
            "kind.yaml",
            cluster(&members).replace("kind: Cluster", "kind: Pod"),
            vec!["kind.yaml", "kind"],
        ),
    ];
    for (file, body, needles) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, body)?;
        let state = dir.path().join(format!("{file}.state"));
        for args in [
            vec![
                "run".to_string(),
                "--once".into(),
                "--insecure-http".into(),
                "--state".into(),
                state.display().to_string(),
            ],
            vec!["plan".to_string(), "--from".into(), "1.0.0".into()],
        ] {
            let out = baton().args(&args).arg("-f").arg(&path).output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{file} {}: {}",
                args[0],
                text(&out)
            );
            for n in &needles {
                assert!(
                    stderr.contains(n),
                    "{file} {}: {n:?} missing in {stderr}",
                    args[0]
                );
            }
        }
        assert!(!state.exists(), "{file}: a state file was written");
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{file}: the agent endpoint was contacted"
        );
    }
    let _ = Path::new("");
    Ok(())
}

/// Two `baton run` on one state file would each record the same step under its own id and
/// both send it: the second is refused at once, naming the first (pid, host, start), and the
/// state file stays the first's. Once the first is gone (even by SIGKILL) a runner starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_on_the_same_state_file_is_refused_naming_the_first() -> TestResult {
    let fleet = Fleet::start(&[ClusterDef::new("w1", "worker", 2)], OLD, 0.4).await?;
    let file = fleet.write("w1.yaml", &fleet.cluster_yaml("w1", "worker", POLICY))?;
    let state = fleet.path("state.json");
    let lock = baton::local::RunnerLock::path_for(&state);
    let mut first = baton()
        .args(run_args(&[&file], &state, &fleet.pki.dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let holder = format!("pid {} on host", first.id());
    let held = wait_until("the first runner to take the lock", CONVERGE, || async {
        std::fs::read_to_string(&lock)
            .ok()
            .filter(|t| t.contains(&holder))
    })
    .await;
    let second = baton()
        .args(run_args(&[&file], &state, &fleet.pki.dir))
        .arg("--once")
        .output();
    first.kill()?; // SIGKILL: the kernel releases the lock.
    first.wait()?;
    let held = held?;
    let second = second?;
    assert!(!second.status.success(), "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already running"), "{}", text(&second));
    assert!(
        stderr.contains(held.trim()),
        "holder not named: {}",
        text(&second)
    );

    let third = baton()
        .args(run_args(&[&file], &state, &fleet.pki.dir))
        .arg("--once")
        .output()?;
    assert!(third.status.success(), "{}", text(&third));
    Ok(())
}
