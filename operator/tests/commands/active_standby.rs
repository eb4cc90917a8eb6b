//! `examples/active-standby` end to end against its demo agents (`examples/agents.sh`, with
//! the example's `agent-flags`: the agents refuse an upgrade whose media is not staged): `baton
//! run` takes the five clusters from 12.6.0 to 12.7.0 with the example's own manifest. What the
//! procedure demands of the media is read from the agents' operation records: every server
//! holds the media of 12.7.0 before it goes down, at most one server per site copies media at a
//! time, the workers' media is copied while the management clusters still upgrade (ahead of
//! their turn), and each server's old media is removed once its cluster runs 12.7.0. Its
//! health rules too: once `mpe-1` has its baseline, its agent starts counting errors; the
//! comparison after its upgrade stalls it (`HealthCheckFailed`), the workers' tier admits
//! nobody else, and the run stops blocked until `baton retry cluster/mpe-1` accepts it.

use crate::support;

use std::path::Path;
use std::time::Duration;

use baton_agent::api::{OperationKind as K, OperationRecord, OperationRequest, OperationState};
use baton_agent::client::{AgentClient, ClientTls};
use support::*;

/// (cluster, member, control port, site) as `agents.tsv` and the manifest give them.
const MEMBERS: [(&str, &str, u16, &str); 11] = [
    ("cmp-primary", "a", 7201, "primary"),
    ("cmp-primary", "b", 7202, "primary"),
    ("cmp-primary", "c", 7203, "primary"),
    ("cmp-secondary", "a", 7211, "secondary"),
    ("cmp-secondary", "b", 7212, "secondary"),
    ("mpe-1", "a", 7221, "-"),
    ("mpe-1", "b", 7222, "-"),
    ("mpe-2", "a", 7231, "-"),
    ("mpe-2", "b", 7232, "-"),
    ("mra-1", "a", 7241, "-"),
    ("mra-1", "b", 7242, "-"),
];

struct Member {
    cluster: &'static str,
    name: &'static str,
    site: &'static str,
    client: AgentClient,
}

fn clients(certs: &Path) -> TestResult<Vec<Member>> {
    let read = |f: &str| std::fs::read_to_string(certs.join(f));
    let tls = ClientTls::mtls(read("ca.crt")?, read("client.crt")?, read("client.key")?).share()?;
    let mut out = vec![];
    for (cluster, name, port, site) in MEMBERS {
        out.push(Member {
            cluster,
            name,
            site,
            client: AgentClient::with_shared(&format!("https://127.0.0.1:{port}"), &tls)?,
        });
    }
    Ok(out)
}

fn of(records: &[OperationRecord], kind: K) -> Vec<&OperationRecord> {
    records.iter().filter(|r| r.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_stages_media_ahead_and_stops_the_tier_when_health_gets_worse() -> TestResult {
    let tmp = tempfile::Builder::new()
        .prefix("baton-active-standby")
        .tempdir()?;
    let agents = start_example(tmp.path(), "active-standby")?;
    let dir = agents.dir.clone();
    let certs = dir.join(".run/certs");
    let members = clients(&certs)?;
    // The servers hold the media they were installed from; and without its media an upgrade
    // is refused (the example's agent-flags).
    for m in &members {
        let id = format!("install-media-{}-{}", m.cluster, m.name);
        let req = OperationRequest::new(id.clone(), K::StageMedia).with_version("12.6.0");
        m.client.submit(&req).await?;
        let done = m
            .client
            .wait(&id, Duration::from_secs(20), Duration::from_millis(100))
            .await?;
        assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
    }
    let refused = members[0]
        .client
        .submit(&OperationRequest::new("too-early", K::Upgrade).with_version("12.7.0"))
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.code() == Some("media_not_staged")),
        "{refused:?}"
    );

    let state = tmp.path().join("state.json");
    let mut args = run_args(&[&dir.join("deployment.yaml")], &state, &certs);
    args.extend(["--until-settled".into(), "--timeout".into(), "240s".into()]);
    let run = move || baton().args(&args).output();
    let first = tokio::task::spawn_blocking(run.clone());
    // Once mpe-1 has its health baseline, its active counts errors.
    let mpe1 = members
        .iter()
        .find(|m| m.cluster == "mpe-1" && m.name == "a")
        .ok_or("no mpe-1/a")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(200);
    loop {
        let saved: Option<serde_json::Value> = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let baseline = saved
            .as_ref()
            .is_some_and(|s| !s["clusters"]["mpe-1"]["status"]["health"]["before"].is_null());
        if baseline {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mpe-1 never took its baseline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let faults = baton_agent::api::Faults {
        kpi_offsets: [("errorCount".to_string(), 3.0)].into(),
        ..Default::default()
    };
    mpe1.client.set_faults(&faults).await?;
    let out = first.await??;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "baton run: {shown}");
    assert!(
        shown.contains("blocked: Cluster/mpe-1: health worse after the upgrade to 12.7.0")
            && shown.contains("errorCount 0 → 3"),
        "{shown}"
    );
    // The tier stopped: the other workers did not go down.
    for m in members
        .iter()
        .filter(|m| m.cluster == "mpe-2" || m.cluster == "mra-1")
    {
        let ups = of(&m.client.operations().await?, K::Upgrade).len();
        assert_eq!(
            ups, 0,
            "{}/{} upgraded past a worse cluster",
            m.cluster, m.name
        );
    }
    let retry = baton()
        .args(["retry", "cluster/mpe-1", "--state"])
        .arg(&state)
        .output()?;
    assert!(retry.status.success(), "{}", text(&retry));
    let out = tokio::task::spawn_blocking(run).await??;
    assert!(out.status.success(), "baton run: {}", text(&out));

    let mut recs = vec![];
    for m in &members {
        recs.push(m.client.operations().await?);
    }
    let mut last_upgrade_end: std::collections::BTreeMap<&str, jiff::Timestamp> =
        Default::default();
    for (m, rs) in members.iter().zip(&recs) {
        let who = format!("{}/{}", m.cluster, m.name);
        let up = of(rs, K::Upgrade);
        assert_eq!(up.len(), 1, "{who}: {up:?}");
        assert_eq!(up[0].state, OperationState::Succeeded, "{who}: {up:?}");
        let stage: Vec<&OperationRecord> = of(rs, K::StageMedia)
            .into_iter()
            .filter(|r| r.params.version.as_deref() == Some("12.7.0"))
            .collect();
        assert_eq!(stage.len(), 1, "{who}: staged once: {stage:?}");
        let (_, staged) = span(stage[0]);
        // Nothing disruptive (nor the forced standby before it) before the media is there.
        for r in rs
            .iter()
            .filter(|r| matches!(r.kind, K::Upgrade | K::ForceStandby | K::Promote))
        {
            assert!(
                staged <= r.started_at,
                "{who}: {:?} before its media was staged",
                r.kind
            );
        }
        let end = span(up[0]).1;
        let e = last_upgrade_end.entry(m.cluster).or_insert(end);
        *e = (*e).max(end);
    }
    // The old media goes once the cluster runs the new version; the new media stays.
    for (m, rs) in members.iter().zip(&recs) {
        let who = format!("{}/{}", m.cluster, m.name);
        let removed = of(rs, K::RemoveMedia);
        assert_eq!(removed.len(), 1, "{who}: {removed:?}");
        assert_eq!(removed[0].params.version.as_deref(), Some("12.6.0"));
        assert!(
            removed[0].started_at >= last_upgrade_end[m.cluster],
            "{who}: old media removed before its cluster was done"
        );
        let st = m.client.status().await?;
        assert_eq!(st.media, ["12.7.0"], "{who}");
    }
    // One server of a site copies media at a time (members without a site share one, per
    // cluster).
    for (i, a) in members.iter().enumerate() {
        for (j, b) in members.iter().enumerate().skip(i + 1) {
            if a.cluster != b.cluster || a.site != b.site {
                continue;
            }
            let sa = span(
                of(&recs[i], K::StageMedia)
                    .last()
                    .copied()
                    .ok_or("no staging")?,
            );
            let sb = span(
                of(&recs[j], K::StageMedia)
                    .last()
                    .copied()
                    .ok_or("no staging")?,
            );
            assert!(
                sa.1 <= sb.0 || sb.1 <= sa.0,
                "{}: {} and {} staged at once at site {}",
                a.cluster,
                a.name,
                b.name,
                a.site
            );
        }
    }
    // Ahead of their turn: a worker's media was copied while the management clusters upgraded.
    let worker_staged = members
        .iter()
        .zip(&recs)
        .filter(|(m, _)| m.cluster.starts_with("m") && m.cluster != "cmp-primary")
        .filter_map(|(_, rs)| of(rs, K::StageMedia).last().map(|r| span(r).0))
        .min()
        .ok_or("no worker staged")?;
    assert!(
        worker_staged < last_upgrade_end["cmp-secondary"],
        "the workers' media waited for their turn"
    );
    let status = baton().arg("status").arg("--state").arg(&state).output()?;
    let shown = text(&status);
    assert!(
        shown.contains("MEDIA") && shown.contains("12.7.0"),
        "{shown}"
    );
    assert!(
        shown.contains("health: worse for 12.7.0, accepted: errorCount 0 → 3"),
        "{shown}"
    );
    // The health of every cluster, before and after, in the mesh's log.
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    let report = saved["meshes"]["policy"]["status"]["log"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["action"] == "health"))
        .and_then(|e| e["message"].as_str())
        .ok_or("no health report in the mesh log")?
        .to_string();
    for c in ["cmp-primary", "cmp-secondary", "mpe-2", "mra-1"] {
        assert!(report.contains(&format!("{c} passed")), "{report}");
    }
    assert!(report.contains("mpe-1 worse, accepted"), "{report}");
    Ok(())
}
