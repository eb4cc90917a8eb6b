//! `examples/multi-master` end to end against its demo agents (`examples/agents.sh`): `baton
//! run` takes the four cores from 10.2.0 to 10.3.0 with the example's own manifest. What the
//! procedure demands is read from the agents' operation records: the source core first, the
//! destinations one at a time after it, and the content uploaded once per mesh (the
//! `upload-content` task, on core-a's server, after core-a upgraded and before any destination
//! went down), never again when the run is repeated; the mesh log and `baton status` say so.
//! The deferred satellites do not hold the rollout: the run stops blocked on their approval
//! with the cores done, and they move only once `baton approve` gives it.
//!
//! Every server runs its preparation checks (`prepare`) before anything else of its cluster:
//! core-c's gateway is down (a fault), so core-c stalls on `PreparationFailed` and holds the
//! destinations' slot until the gateway answers again and `baton retry` runs its checks anew;
//! the dropped scheduled job every server reports is recorded on the cores and waits for an
//! acknowledgement on each satellite.

use crate::support;

use std::path::Path;

use baton_agent::api::{
    Faults, Finding, FindingSeverity, OperationKind as K, OperationRecord, OperationState,
};
use baton_agent::client::{AgentClient, ClientTls};
use support::*;

const CORES: [(&str, u16); 4] = [
    ("core-a", 7301),
    ("core-b", 7311),
    ("core-c", 7321),
    ("core-d", 7331),
];

/// The deferred tier: it moves only once approved.
const SATELLITES: [(&str, u16); 2] = [("sat-north", 7341), ("sat-south", 7351)];

fn client(certs: &Path, port: u16) -> TestResult<AgentClient> {
    let read = |f: &str| std::fs::read_to_string(certs.join(f));
    let tls = ClientTls::mtls(read("ca.crt")?, read("client.crt")?, read("client.key")?).share()?;
    Ok(AgentClient::with_shared(
        &format!("https://127.0.0.1:{port}"),
        &tls,
    )?)
}

/// Every operation record of each cluster's server (the cores, then the satellites).
async fn records(certs: &Path) -> TestResult<Vec<(&'static str, Vec<OperationRecord>)>> {
    let read = |f: &str| std::fs::read_to_string(certs.join(f));
    let tls = ClientTls::mtls(read("ca.crt")?, read("client.crt")?, read("client.key")?).share()?;
    let mut out = vec![];
    for (core, port) in CORES.into_iter().chain(SATELLITES) {
        let client = AgentClient::with_shared(&format!("https://127.0.0.1:{port}"), &tls)?;
        out.push((core, client.operations().await?));
    }
    Ok(out)
}

fn of<'r>(
    records: &'r [(&str, Vec<OperationRecord>)],
    core: &str,
    kind: K,
) -> Vec<&'r OperationRecord> {
    records
        .iter()
        .filter(|(c, _)| *c == core)
        .flat_map(|(_, r)| r.iter())
        .filter(|r| r.kind == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_upgrades_the_mesh_source_first_and_uploads_the_content_once() -> TestResult {
    // A private copy: agents.sh writes certificates, pids and logs under the example's .run/.
    let tmp = tempfile::Builder::new()
        .prefix("baton-multi-master")
        .tempdir()?;
    let agents = start_example(tmp.path(), "multi-master")?;
    let dir = agents.dir.clone();
    let certs = dir.join(".run/certs");
    let state = tmp.path().join("state.json");
    let manifest = dir.join("mesh.yaml");
    let mut args = run_args(&[&manifest], &state, &certs);
    args.extend(["--until-settled".into(), "--timeout".into(), "180s".into()]);
    let run = move || baton().args(&args).output();
    // core-c's gateway does not answer: its preparation checks find it.
    let core_c = client(&certs, 7321)?;
    let down = Faults {
        prepare_findings: vec![Finding::new(
            "gateways",
            FindingSeverity::Blocking,
            "GatewayDown",
            "gateway gw-c2 does not answer",
        )],
        ..Faults::default()
    };
    core_c.set_faults(&down).await?;
    let out = tokio::task::spawn_blocking(run.clone()).await??;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "baton run: {shown}");
    assert!(
        shown.contains(
            "blocked: Cluster/core-c: the preparation checks for 10.3.0 found 1 blocking: \
             server gateways GatewayDown: gateway gw-c2 does not answer"
        ),
        "{shown}"
    );
    let stopped = records(&certs).await?;
    assert!(
        of(&stopped, "core-c", K::Upgrade).is_empty()
            && of(&stopped, "core-c", K::Preflight).is_empty(),
        "core-c moved with its gateway down"
    );
    assert!(
        of(&stopped, "core-d", K::Upgrade).is_empty(),
        "core-d went while core-c holds the destinations' slot"
    );
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    let prep = &saved["clusters"]["core-c"]["status"]["preparation"];
    assert_eq!(prep["findings"][0]["code"], "GatewayDown", "{prep}");
    assert_eq!(prep["findings"][0]["severity"], "Blocking", "{prep}");
    // The gateway answers again; a retry runs the checks again and the cores finish. The
    // deferred satellites wait for their approval, which only a person gives: the run stops
    // there, blocked, and says what to approve.
    core_c.set_faults(&Faults::default()).await?;
    let retry = baton()
        .args(["retry", "cluster/core-c", "--state"])
        .arg(&state)
        .output()?;
    assert!(retry.status.success(), "baton retry: {}", text(&retry));
    let out = tokio::task::spawn_blocking(run.clone()).await??;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "baton run: {shown}");
    assert!(
        shown.contains("blocked: Mesh/cores:")
            && shown.contains("approve tier/cores/satellites@10.3.0"),
        "{shown}"
    );
    let early = records(&certs).await?;
    for (sat, _) in SATELLITES {
        assert!(
            of(&early, sat, K::Upgrade).is_empty(),
            "{sat} moved unapproved"
        );
    }
    let status = baton().arg("status").arg("--state").arg(&state).output()?;
    let shown = text(&status);
    assert!(
        shown.contains("LAGGING")
            && shown.contains("Ready")
            && shown.contains("deferred tiers behind: satellites 0/2")
            && shown.contains(
                "Mesh cores deferred tier satellites (0/2 done): waits for its approval \
                 (approve tier/cores/satellites@10.3.0)"
            ),
        "{shown}"
    );
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    let mesh = &saved["meshes"]["cores"]["status"];
    assert_eq!(mesh["phase"], "Ready", "{mesh}");
    assert_eq!(mesh["lagging"], "satellites 0/2", "{mesh}");
    // A tier that does not exist, or a malformed approval, is refused and changes nothing.
    let bad = baton()
        .args(["approve", "tier/cores/moons@10.3.0", "--state"])
        .arg(&state)
        .output()?;
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        text(&bad).contains("has no tier \"moons\""),
        "{}",
        text(&bad)
    );
    // Each satellite waits for the acknowledgement of the scheduled job it drops, named by
    // the digest its status gives; a malformed one is refused.
    let mut acks = vec![];
    for (sat, _) in SATELLITES {
        let prep = &saved["clusters"][sat]["status"]["preparation"];
        assert_eq!(prep["findings"][0]["code"], "ScheduledJobDropped", "{prep}");
        assert_eq!(prep["acknowledged"], serde_json::Value::Null, "{prep}");
        let digest = prep["digest"].as_str().unwrap_or_default();
        let ack = format!("prepare/{sat}@10.3.0#{digest}");
        assert!(
            shown.contains(&format!("preparation: 1 warning for 10.3.0 await {ack}")),
            "{shown}"
        );
        acks.push(ack);
    }
    let bad = baton()
        .args(["approve", "prepare/sat-north@10.3.0#beef", "--state"])
        .arg(&state)
        .output()?;
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(text(&bad).contains("12-digit digest"), "{}", text(&bad));
    for step in acks
        .iter()
        .map(String::as_str)
        .chain(["tier/cores/satellites@10.3.0"])
    {
        let approve = baton()
            .args(["approve", step, "--state"])
            .arg(&state)
            .output()?;
        assert!(
            approve.status.success(),
            "baton approve {step}: {}",
            text(&approve)
        );
    }
    let out = tokio::task::spawn_blocking(run.clone()).await??;
    assert!(out.status.success(), "baton run: {}", text(&out));

    let recs = records(&certs).await?;
    for (core, rs) in &recs {
        let failed: Vec<&OperationRecord> = rs
            .iter()
            .filter(|r| r.state != OperationState::Succeeded)
            .collect();
        assert!(failed.is_empty(), "{core}: {failed:?}");
        let up = of(&recs, core, K::Upgrade);
        assert_eq!(up.len(), 1, "{core}: {up:?}");
        assert_eq!(up[0].params.version.as_deref(), Some("10.3.0"));
        // The checks ran first (twice on core-c: before and after the retry), every time for
        // the target, the last one finding nothing that blocks.
        let checks = of(&recs, core, K::Prepare);
        let runs = if *core == "core-c" { 2 } else { 1 };
        assert_eq!(checks.len(), runs, "{core}: {checks:?}");
        let (first_move, _) = rs
            .iter()
            .filter(|r| r.kind != K::Prepare)
            .map(span)
            .min()
            .ok_or("no move")?;
        for c in &checks {
            assert_eq!(c.params.version.as_deref(), Some("10.3.0"));
            assert_eq!(c.params.checks, ["config", "gateways", "scheduledJobs"]);
            assert!(
                span(c).1 <= first_move,
                "{core}: moved before its checks ended"
            );
        }
        let last = checks
            .iter()
            .max_by_key(|c| c.started_at)
            .ok_or("no check")?;
        assert!(
            last.findings
                .iter()
                .all(|f| f.severity == FindingSeverity::Warning && f.code == "ScheduledJobDropped"),
            "{core}: {:?}",
            last.findings
        );
    }
    // The content once, on the source core's server, once it runs the new version.
    let tasks: Vec<&OperationRecord> = CORES
        .iter()
        .flat_map(|(c, _)| of(&recs, c, K::Task))
        .collect();
    assert_eq!(tasks.len(), 1, "once per mesh: {tasks:?}");
    let task = tasks[0];
    assert_eq!(of(&recs, "core-a", K::Task).len(), 1, "on the source core");
    assert_eq!(task.params.task.as_deref(), Some("upload-content"));
    assert_eq!(task.params.version.as_deref(), Some("10.3.0"));
    let (_, source_up) = span(of(&recs, "core-a", K::Upgrade)[0]);
    let (task_start, task_end) = span(task);
    assert!(
        source_up <= task_start,
        "the task before the source upgraded"
    );
    // The destinations after it, one at a time.
    let mut dest: Vec<(jiff::Timestamp, jiff::Timestamp)> = ["core-b", "core-c", "core-d"]
        .iter()
        .map(|c| span(of(&recs, c, K::Upgrade)[0]))
        .collect();
    dest.sort();
    assert!(
        task_end <= dest[0].0,
        "a destination went down before the content was uploaded"
    );
    for pair in dest.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two destinations down at once: {dest:?}"
        );
    }
    // The satellites after every core (and after the approval), together.
    let last_core = dest.iter().map(|d| d.1).max();
    for (sat, _) in SATELLITES {
        let (start, _) = span(of(&recs, sat, K::Upgrade)[0]);
        assert!(Some(start) >= last_core, "{sat} before the cores were done");
    }

    // The mesh log and the status say so.
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    let text_of = saved.to_string();
    assert!(
        text_of.contains("task upload-content succeeded on cluster core-a, member server"),
        "{text_of}"
    );
    assert!(
        text_of.contains("deferred tier satellites approved"),
        "{text_of}"
    );
    for (sat, _) in SATELLITES {
        let prep = &saved["clusters"][sat]["status"]["preparation"];
        assert_eq!(prep["acknowledged"], true, "{sat}: {prep}");
        assert!(
            text_of.contains(&format!("prepare/{sat}@10.3.0#"))
                && text_of.contains("1 warning acknowledged"),
            "{text_of}"
        );
    }
    let core_a = &saved["clusters"]["core-a"]["status"];
    assert_eq!(core_a["preparation"]["acknowledged"], true, "{core_a}");
    assert!(
        core_a
            .to_string()
            .contains("warnings recorded: server scheduledJobs ScheduledJobDropped"),
        "{core_a}"
    );
    assert_eq!(
        saved["meshes"]["cores"]["status"]["lagging"],
        serde_json::Value::Null
    );
    let status = baton().arg("status").arg("--state").arg(&state).output()?;
    let shown = text(&status);
    assert!(
        shown.contains("Mesh cores task upload-content on core-a: Succeeded on server"),
        "{shown}"
    );

    // Running again (an operator restarted on the same state) runs nothing more.
    let again = tokio::task::spawn_blocking(run).await??;
    assert!(again.status.success(), "baton run again: {}", text(&again));
    let after = records(&certs).await?;
    let n: usize = after.iter().map(|(_, r)| r.len()).sum();
    let before: usize = recs.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(n, before, "a settled mesh runs no operation again");
    Ok(())
}
