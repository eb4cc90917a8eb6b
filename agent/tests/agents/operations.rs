//! What each operation does on a demo member.

use crate::common;

use baton_agent::api::{
    Faults, Health, OperationKind as K, OperationRequest as Req, OperationState, Role,
};
use baton_agent::pki::{CertAuthority, CertSpec};
use common::*;

/// How often a test polls an operation it waits for.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A fixture of `m1` Active and `m2` its caught-up standby, both with quick upgrades; `m2`
/// also has components and `extra2`.
async fn pair(extra2: &[&str]) -> TestResult<(Fixture, Agent, Agent)> {
    let m2_args = [
        &["--upgrade-seconds", "0.4", "--components", "os=8.4,app=2.1"],
        extra2,
    ]
    .concat();
    Fixture::new_caught_up_pair(&["--upgrade-seconds", "0.4"], &m2_args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_rollbacks_and_roles() -> TestResult {
    let (_fx, m1, m2) = pair(&["--reject-versions", "9.0.0"]).await?;

    // Preflight checks and changes nothing.
    let ok = m2
        .run_ok(&Req::new("pf-1", K::Preflight).with_version("2.0.0"))
        .await?;
    assert!(ok.message.contains("passed"), "{}", ok.message);
    let bad = m2
        .run(&Req::new("pf-2", K::Preflight).with_version("9.0.0"))
        .await?;
    assert_eq!(bad.state, OperationState::Failed);
    assert!(
        bad.message.contains("not a supported upgrade path"),
        "{}",
        bad.message
    );
    assert_eq!(m2.status().await?.version, "1.0.0");

    // A standby held in forced standby stays there across its upgrade.
    m2.run_ok(&Req::new("fs", K::ForceStandby)).await?;
    let s = m2.status().await?;
    assert_eq!(s.role, Role::ForcedStandby);
    assert!(has_alarm(&s, "ForcedStandby"));
    let up = m2
        .run_ok(&Req::new("up", K::Upgrade).with_version("2.0.0"))
        .await?;
    assert_eq!(
        (up.version_before.as_deref(), up.version_after.as_deref()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    let s = wait_until("m2 back on its source", CONVERGE, || async {
        let s = m2.client.status().await.ok()?;
        s.replication.connected.then_some(s)
    })
    .await?;
    assert_eq!(s.role, Role::ForcedStandby);
    assert!(has_alarm(&s, "MixedVersion"), "{:?}", s.alarms);

    // Component upgrade and rollback leave the member version alone.
    m2.run_ok(
        &Req::new("os-up", K::Upgrade)
            .with_version("8.6")
            .with_component("os"),
    )
    .await?;
    assert_eq!(
        m2.status().await?.components.get("os").map(String::as_str),
        Some("8.6")
    );
    m2.run_ok(
        &Req::new("os-back", K::Rollback)
            .with_version("8.4")
            .with_component("os"),
    )
    .await?;
    let s = m2.status().await?;
    assert_eq!(s.components.get("os").map(String::as_str), Some("8.4"));
    assert_eq!(s.version, "2.0.0");

    // A failing upgrade fails after some progress and keeps the version.
    m2.client
        .set_faults(&Faults {
            fail_upgrade_to: vec!["3.0.0".into()],
            ..Faults::default()
        })
        .await?;
    let failed = m2
        .run(&Req::new("up-3", K::Upgrade).with_version("3.0.0"))
        .await?;
    assert_eq!(failed.state, OperationState::Failed);
    assert!(failed.progress > 0 && failed.progress < 100, "{failed:?}");
    let s = m2.status().await?;
    assert_eq!(s.version, "2.0.0");
    assert!(has_alarm(&s, "OperationFailed"));
    let back = m2
        .run_ok(&Req::new("rb", K::Rollback).with_version("1.0.0"))
        .await?;
    assert_eq!(back.version_after.as_deref(), Some("1.0.0"));

    // Demote to spare, then back to standby with a source.
    m2.run_ok(&Req::new("spare", K::Demote).with_role(baton_agent::api::DemoteRole::Spare))
        .await?;
    assert_eq!(m2.status().await?.role, Role::Spare);
    m2.run_ok(&Req::new("standby", K::Demote).with_source(&m1.data))
        .await?;
    let s = m2.status().await?;
    assert_eq!(s.role, Role::Standby);
    assert!(!has_alarm(&s, "ForcedStandby"));

    // Promote on an Active member is a no-op success.
    let p = m1.run_ok(&Req::new("p", K::Promote)).await?;
    assert!(p.message.contains("already Active"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_traffic_check_after_promote() -> TestResult {
    let (fx, m1, m2) = pair(&["--no-traffic-after-promote-on", "2.0.0"]).await?;
    let pki = &fx.pki;
    m2.run_ok(&Req::new("up", K::Upgrade).with_version("2.0.0"))
        .await?;
    switchover(&m1, &m2, "sw").await?;
    let s = m2.status().await?;
    assert_eq!(s.role, Role::Active);
    assert!(!s.serving);
    assert_eq!(s.health, Health::Major);
    assert!(has_alarm(&s, "TrafficCheckFailed"));
    let w = m2.data_client(pki.data_tls("m2")?)?;
    assert!(
        w.put("k", "v").await.is_err(),
        "a member failing its traffic check takes no writes"
    );
    // Roll back: switch back to m1.
    switchover(&m2, &m1, "back").await?;
    let s = m2.status().await?;
    assert_eq!(
        s.health,
        Health::Minor,
        "only MixedVersion remains: {:?}",
        s.alarms
    );
    assert!(m1.status().await?.serving);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_and_resign() -> TestResult {
    let (fx, m1, _m2) = pair(&[]).await?;
    let pki = &fx.pki;
    let w = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..10 {
        w.put(&format!("k{i}"), &format!("v{i}")).await?;
    }
    let b = m1.run_ok(&Req::new("backup", K::Backup)).await?;
    assert!(b.message.contains("10 log entries"), "{}", b.message);
    let backups: Vec<_> =
        std::fs::read_dir(m1.data_dir.join("backups"))?.collect::<Result<_, _>>()?;
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(backups[0].path())?.lines().count(),
        10
    );
    m1.run_ok(&Req::new("verify-1", K::Verify)).await?;

    // Damage the log on disk: verify fails and the member reports it.
    let log = m1.data_dir.join("data").join("log.jsonl");
    let text = std::fs::read_to_string(&log)?;
    std::fs::write(&log, text.replace("\"v\":\"v3\"", "\"v\":\"tampered\""))?;
    let v = m1.run(&Req::new("verify-2", K::Verify)).await?;
    assert_eq!(v.state, OperationState::Failed);
    assert!(v.message.contains("index 4"), "{}", v.message);
    let s = m1.status().await?;
    assert_eq!(s.health, Health::Critical);
    assert!(has_alarm(&s, "DataIntegrity"));
    let pf = m1
        .run(&Req::new("pf", K::Preflight).with_version("2.0.0"))
        .await?;
    assert_eq!(pf.state, OperationState::Failed);

    m1.run_ok(&Req::new("resign", K::ResignData)).await?;
    m1.run_ok(&Req::new("verify-3", K::Verify)).await?;
    assert!(!has_alarm(&m1.status().await?, "DataIntegrity"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_mistakes_break_replication_visibly_and_rotation_repairs_it() -> TestResult {
    let (fx, m1, m2) = pair(&[]).await?;
    let pki = &fx.pki;
    let new_ca = CertAuthority::generate("new mesh CA")?;

    // m2 trusts only the new CA: it can no longer verify m1.
    m2.run_ok(&Req::new("t1", K::InstallTrust).with_trust_pem(new_ca.cert_pem()))
        .await?;
    assert_eq!(
        m2.status().await?.trust,
        vec![new_ca.fingerprint().to_string()]
    );
    let s = wait_until("m2 to alarm on replication", CONVERGE, || async {
        let s = m2.client.status().await.ok()?;
        s.alarms
            .iter()
            .any(|a| a.name == "ReplicationFailure")
            .then_some(s)
    })
    .await?;
    assert_eq!(s.health, Health::Major);
    assert!(!s.replication.connected);
    // Both sides count the refused handshakes: m2 toward its source, m1 from m2's address.
    let m1_endpoint = m1.status().await?.data_endpoint;
    let refused_out = s.handshake_failures.outbound.get(&m1_endpoint).copied();
    assert!(refused_out > Some(0), "{:?}", s.handshake_failures);
    let m1_in = m1.status().await?.handshake_failures;
    assert!(m1_in.inbound.get("127.0.0.1") > Some(&0), "{m1_in:?}");
    assert!(m1_in.outbound.is_empty(), "m1 follows nobody: {m1_in:?}");

    // The phased way: both trust old + new, then certificates from the new CA, restart.
    // m1 keeps the old CA it trusts by fingerprint (the operator may not hold its PEM);
    // m2 lost it, so it gets both certificates.
    let old_fp = pki.mesh_ca.fingerprint().to_string();
    m1.run_ok(
        &Req::new("trust-both-a", K::InstallTrust)
            .with_trust_pem(new_ca.cert_pem())
            .with_keep_trust(vec![old_fp.clone()]),
    )
    .await?;
    let both = format!("{}{}", pki.mesh_ca.cert_pem(), new_ca.cert_pem());
    m2.run_ok(&Req::new("trust-both-b", K::InstallTrust).with_trust_pem(&both))
        .await?;
    for agent in [&m1, &m2] {
        assert_eq!(
            agent.status().await?.trust,
            vec![old_fp.clone(), new_ca.fingerprint().to_string()]
        );
    }
    wait_caught_up(&m2, &m1).await?;
    // From here on the rotation is done in order: not one more handshake may fail.
    let failures = |s: &baton_agent::api::MemberStatus| s.handshake_failures.total();
    let before = [failures(&m1.status().await?), failures(&m2.status().await?)];
    for agent in [&m1, &m2] {
        let cert = new_ca.issue(&CertSpec::member(&agent.name))?;
        agent
            .run_ok(
                &Req::new("new-cert", K::InstallCertificate)
                    .with_certificate(&cert.cert_pem, &cert.key_pem),
            )
            .await?;
        agent.run_ok(&Req::new("restart", K::Restart)).await?;
        let s = agent.status().await?;
        let info = s.certificate.ok_or_else(|| err("no certificate info"))?;
        assert_eq!(info.fingerprint, cert.fingerprint);
        assert_eq!(
            info.issuer_fingerprint.as_deref(),
            Some(new_ca.fingerprint())
        );
    }
    // m2 replicates from m1 on its new certificate: m1 sees the new CA presented, and
    // nothing of the old one on an open connection.
    let fresh = wait_until(
        "m2 to reconnect on its new certificate",
        CONVERGE,
        || async {
            let p = m1.status().await.ok()?.presented_issuers;
            p.get(new_ca.fingerprint())
                .is_some_and(|e| e.open > 0)
                .then_some(p)
        },
    )
    .await?;
    let old_open = fresh.get(pki.mesh_ca.fingerprint()).map_or(0, |e| e.open);
    assert_eq!(old_open, 0, "{fresh:?}");
    // Drop the old CA everywhere; replication keeps working on the new chain.
    for (agent, tag) in [(&m1, "a"), (&m2, "b")] {
        agent
            .run_ok(
                &Req::new(format!("trust-new-{tag}"), K::InstallTrust)
                    .with_trust_pem(new_ca.cert_pem())
                    .with_keep_trust(vec![new_ca.fingerprint().to_string()]),
            )
            .await?;
        agent
            .run_ok(&Req::new(format!("restart-2-{tag}"), K::Restart))
            .await?;
    }
    let w = m1
        .data_client(baton_agent::client::ClientTls::mtls(
            new_ca.cert_pem(),
            new_ca.issue(&CertSpec::member("writer"))?.cert_pem,
            "",
        ))
        .err();
    assert!(
        w.is_some(),
        "a certificate without its key is a configuration error"
    );
    let writer_cert = new_ca.issue(&CertSpec::member("writer"))?;
    let w = m1.data_client(baton_agent::client::ClientTls::mtls(
        new_ca.cert_pem(),
        &writer_cert.cert_pem,
        &writer_cert.key_pem,
    ))?;
    w.put("after-rotation", "ok").await?;
    wait_caught_up(&m2, &m1).await?;
    assert_eq!(m2.status().await?.health, Health::Ok);
    let after = [failures(&m1.status().await?), failures(&m2.status().await?)];
    assert_eq!(
        after, before,
        "handshake failures during the phased rotation"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_config_copies_from_a_peer() -> TestResult {
    let (_fx, m1, m2) = pair(&[]).await?;
    let config = serde_json::json!({"revision": 7, "settings": {"gateway": "on"}});
    std::fs::write(
        m1.data_dir.join("config.json"),
        serde_json::to_vec(&config)?,
    )?;
    let rec = m2
        .run_ok(&Req::new("sync", K::SyncConfig).with_source(&m1.data))
        .await?;
    assert!(rec.message.contains("revision 7"), "{}", rec.message);
    let copied: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m2.data_dir.join("config.json"))?)?;
    assert_eq!(copied, config);
    Ok(())
}

/// `task`: a named job run once per operation id (a once-per-mesh step), listed in the
/// member's `tasks`; the `failTasks` fault fails it and leaves it unlisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_once_per_operation_id_and_are_listed_in_the_status() -> TestResult {
    let (_fx, m1) = Fixture::active_m1(&["--task-seconds", "0.3"]).await?;
    assert!(m1.status().await?.tasks.is_empty());
    let req = Req::new("upload-2.0.0", K::Task)
        .with_task("upload-content")
        .with_version("2.0.0");
    let rec = m1.run_ok(&req).await?;
    assert_eq!(rec.kind, K::Task);
    assert_eq!(
        (rec.params.task.as_deref(), rec.params.version.as_deref()),
        (Some("upload-content"), Some("2.0.0"))
    );
    assert!(rec.message.contains("upload-content"), "{}", rec.message);
    let took = rec.finished_at.map(|f| f.duration_since(rec.started_at));
    assert!(
        took.is_some_and(|d| d.as_secs_f64() >= 0.25),
        "the task takes --task-seconds: {took:?}"
    );
    let s = m1.status().await?;
    assert_eq!(s.tasks.len(), 1, "{:?}", s.tasks);
    let run = &s.tasks[0];
    assert_eq!(
        (run.id.as_str(), run.task.as_str(), run.version.as_deref()),
        ("upload-2.0.0", "upload-content", Some("2.0.0"))
    );
    let at: jiff::Timestamp = run.at.parse()?;
    assert!(at >= rec.started_at && Some(at) <= rec.finished_at, "{at}");

    // The same id again is the same operation, answered from the journal: no second run.
    let again = m1.client.submit(&req).await?;
    assert_eq!(
        (again.state, again.started_at, again.finished_at),
        (OperationState::Succeeded, rec.started_at, rec.finished_at)
    );
    assert_eq!(m1.status().await?.tasks, s.tasks);
    let task_records = |ops: &[baton_agent::api::OperationRecord]| {
        ops.iter().filter(|r| r.kind == K::Task).count()
    };
    assert_eq!(task_records(&m1.client.operations().await?), 1);

    // Another id with the same task name runs it again, listed after the first.
    let second = m1
        .run_ok(&Req::new("upload-again", K::Task).with_task("upload-content"))
        .await?;
    let s = m1.status().await?;
    let listed: Vec<(&str, &str, Option<&str>)> = s
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.task.as_str(), t.version.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            ("upload-2.0.0", "upload-content", Some("2.0.0")),
            ("upload-again", "upload-content", None)
        ]
    );
    assert_eq!(second.params.version, None);

    // A task named in failTasks fails, is not listed, and raises OperationFailed.
    m1.client
        .set_faults(&Faults {
            fail_tasks: vec!["flaky-job".into()],
            ..Faults::default()
        })
        .await?;
    assert_eq!(m1.client.faults().await?.fail_tasks, ["flaky-job"]);
    let failed = m1
        .run(&Req::new("flaky-1", K::Task).with_task("flaky-job"))
        .await?;
    assert_eq!(failed.state, OperationState::Failed);
    assert_eq!(failed.message, "task flaky-job failed (injected fault)");
    let s = m1.status().await?;
    assert_eq!(s.tasks.len(), 2, "{:?}", s.tasks);
    assert!(s.tasks.iter().all(|t| t.id != "flaky-1"), "{:?}", s.tasks);
    assert!(has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    // Re-posting the failed id returns the failure; it does not run again.
    m1.client.set_faults(&Faults::default()).await?;
    let again = m1
        .client
        .submit(&Req::new("flaky-1", K::Task).with_task("flaky-job"))
        .await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Failed, failed.finished_at)
    );
    assert_eq!(m1.status().await?.tasks.len(), 2);
    // Without the fault, a new id of that task succeeds.
    m1.run_ok(&Req::new("flaky-2", K::Task).with_task("flaky-job"))
        .await?;
    let s = m1.status().await?;
    assert_eq!(
        s.tasks.last().map(|t| (t.id.as_str(), t.task.as_str())),
        Some(("flaky-2", "flaky-job"))
    );
    assert!(!has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    Ok(())
}

/// `stage-media`: the version is listed in `media` once its copy finished, not before; the
/// member keeps its role and keeps serving (an Active member takes writes, a standby keeps
/// replicating) meanwhile. Idempotent by id; a version already staged succeeds at once; the
/// `failStageMedia` fault fails it halfway. `remove-media` removes a version, idempotent by
/// id, and succeeds on a version that is not staged. Without `--require-staged-media` an
/// upgrade needs no media, and no upgrade removes any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_listed_once_staged_while_the_member_keeps_serving() -> TestResult {
    let staging = ["--stage-seconds", "2"];
    let (fx, m1, m2) = Fixture::new_caught_up_pair(
        &[&staging[..], &["--upgrade-seconds", "0.2"]].concat(),
        &staging,
    )
    .await?;
    let w = m1.data_client(fx.pki.data_tls("m1")?)?;
    assert!(m1.status().await?.media.is_empty());

    let req = Req::new("stage-2.0.0", K::StageMedia).with_version("2.0.0");
    let first = m1.client.submit(&req).await?;
    assert_eq!(
        first.state,
        OperationState::Running,
        "a 2 s staging is answered 202 Running"
    );
    let during = wait_until("m1's staging under way", CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        let op = s.operation.clone()?;
        (op.id == req.id && op.state == OperationState::Running && op.progress >= 10).then_some(s)
    })
    .await?;
    assert!(during.media.is_empty(), "listed before its copy finished");
    assert_eq!((during.role, during.serving), (Role::Active, true));
    assert!(
        !has_alarm(&during, "UpgradeInProgress"),
        "{:?}",
        during.alarms
    );
    w.put("during-staging", "accepted").await?;
    let rec = m1.client.wait(&req.id, CONVERGE, POLL).await?;
    assert_eq!(rec.state, OperationState::Succeeded, "{}", rec.message);
    assert_eq!(
        (rec.params.version.as_deref(), rec.version_after.as_deref()),
        (Some("2.0.0"), Some("1.0.0")),
        "staging changes no version"
    );
    assert!(rec.message.contains("2.0.0"), "{}", rec.message);
    let took = rec.finished_at.map(|f| f.duration_since(rec.started_at));
    assert!(
        took.is_some_and(|d| d.as_secs_f64() >= 1.9),
        "staging takes --stage-seconds: {took:?}"
    );
    let s = m1.status().await?;
    assert_eq!(s.media, ["2.0.0"]);
    assert_eq!((s.role, s.serving), (Role::Active, true));

    // A standby keeps following its source while it stages.
    m2.client.submit(&req).await?;
    let during = m2.status().await?;
    assert_eq!(
        during.operation.as_ref().map(|o| (o.id.as_str(), o.state)),
        Some((req.id.as_str(), OperationState::Running))
    );
    assert_eq!(during.role, Role::Standby);
    assert!(during.replication.connected, "{:?}", during.replication);
    assert!(during.media.is_empty());
    w.put("while-m2-stages", "replicated").await?;
    wait_caught_up(&m2, &m1).await?;
    m2.client.wait(&req.id, CONVERGE, POLL).await?;
    let s = m2.status().await?;
    assert_eq!(
        (s.media.as_slice(), s.role),
        (&["2.0.0".to_string()][..], Role::Standby)
    );

    // The same id again is the same operation: no second copy.
    let again = m1.client.submit(&req).await?;
    assert_eq!(
        (again.state, again.started_at, again.finished_at),
        (OperationState::Succeeded, rec.started_at, rec.finished_at)
    );
    let count = |ops: &[baton_agent::api::OperationRecord], kind: K| {
        ops.iter().filter(|r| r.kind == kind).count()
    };
    assert_eq!(count(&m1.client.operations().await?, K::StageMedia), 1);
    // Another id for a staged version: nothing to copy, done at once.
    let quick = m1
        .run_ok(&Req::new("stage-2.0.0-again", K::StageMedia).with_version("2.0.0"))
        .await?;
    let took = quick
        .finished_at
        .map(|f| f.duration_since(quick.started_at));
    assert!(
        took.is_some_and(|d| d.as_secs_f64() < 1.0),
        "already staged: {took:?}"
    );
    assert!(
        quick.message.contains("already staged"),
        "{}",
        quick.message
    );
    assert_eq!(m1.status().await?.media, ["2.0.0"]);

    // failStageMedia: fails halfway, the version is not listed.
    m1.client
        .set_faults(&Faults {
            fail_stage_media: vec!["3.0.0".into()],
            ..Faults::default()
        })
        .await?;
    assert_eq!(m1.client.faults().await?.fail_stage_media, ["3.0.0"]);
    let bad = Req::new("stage-3.0.0", K::StageMedia).with_version("3.0.0");
    let failed = m1.run(&bad).await?;
    assert_eq!(failed.state, OperationState::Failed);
    assert_eq!(
        failed.message,
        "staging media of 3.0.0 failed (injected fault)"
    );
    assert!(failed.progress > 0 && failed.progress < 100, "{failed:?}");
    let s = m1.status().await?;
    assert_eq!(s.media, ["2.0.0"]);
    assert!(has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    // Without the fault the failed id is still its failure; a new id stages.
    m1.client.set_faults(&Faults::default()).await?;
    let again = m1.client.submit(&bad).await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Failed, failed.finished_at)
    );
    assert_eq!(m1.status().await?.media, ["2.0.0"]);
    m1.run_ok(&Req::new("stage-3.0.0-retry", K::StageMedia).with_version("3.0.0"))
        .await?;
    assert_eq!(m1.status().await?.media, ["2.0.0", "3.0.0"]);

    // remove-media, quick, and idempotent by id: the same id after a new staging of that
    // version is its record, and removes nothing.
    let rm = Req::new("rm-2.0.0", K::RemoveMedia).with_version("2.0.0");
    let removed = m1.client.submit(&rm).await?;
    assert_eq!(removed.state, OperationState::Succeeded, "answered at once");
    assert!(removed.message.contains("removed"), "{}", removed.message);
    assert_eq!(m1.status().await?.media, ["3.0.0"]);
    m1.run_ok(&Req::new("restage-2.0.0", K::StageMedia).with_version("2.0.0"))
        .await?;
    assert_eq!(m1.status().await?.media, ["3.0.0", "2.0.0"], "oldest first");
    let again = m1.client.submit(&rm).await?;
    assert_eq!(again.finished_at, removed.finished_at);
    assert_eq!(m1.status().await?.media, ["3.0.0", "2.0.0"]);
    let none = m1
        .run_ok(&Req::new("rm-9.9.9", K::RemoveMedia).with_version("9.9.9"))
        .await?;
    assert!(none.message.contains("not staged"), "{}", none.message);
    assert_eq!(m1.status().await?.media, ["3.0.0", "2.0.0"]);
    assert_eq!(count(&m1.client.operations().await?, K::RemoveMedia), 2);

    // Without --require-staged-media an upgrade needs no media; it removes none.
    m1.run_ok(&Req::new("up-4", K::Upgrade).with_version("4.0.0"))
        .await?;
    let s = m1.status().await?;
    assert_eq!((s.version.as_str(), s.media.len()), ("4.0.0", 2));
    Ok(())
}

/// With `--require-staged-media`, an upgrade to a version whose media is not staged is
/// refused at submission (409 `media_not_staged`, nothing recorded) and accepted once it is;
/// a rollback or a preflight is not held. An upgrade keeps the media. The store holds
/// `MAX_MEDIA` versions: one more fails and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_staged_media_holds_an_upgrade_until_its_media_is_staged() -> TestResult {
    use baton_agent::api::MAX_MEDIA;
    use baton_agent::client::ClientError;
    let (_fx, m1) = Fixture::active_m1(&[
        "--require-staged-media",
        "--stage-seconds",
        "0",
        "--upgrade-seconds",
        "0.2",
        "--components",
        "os=8.4",
    ])
    .await?;
    let not_staged = |e: &ClientError, version: &str| -> TestResult {
        let ClientError::Http {
            status,
            code,
            message,
            ..
        } = e
        else {
            return Err(err(format!("not an HTTP refusal: {e}")));
        };
        assert_eq!((*status, code.as_str()), (409, "media_not_staged"), "{e}");
        assert_eq!(
            message,
            &format!("upgrade to {version} needs its media staged first (stage-media)")
        );
        Ok(())
    };
    let up = Req::new("up-2", K::Upgrade).with_version("2.0.0");
    let e = refused(m1.client.submit(&up), "an unstaged upgrade was accepted").await?;
    not_staged(&e, "2.0.0")?;
    let os = Req::new("os-8.6", K::Upgrade)
        .with_version("8.6")
        .with_component("os");
    let e = refused(m1.client.submit(&os), "an unstaged component upgrade").await?;
    not_staged(&e, "8.6")?;
    assert!(m1.client.operations().await?.is_empty(), "nothing recorded");
    let s = m1.status().await?;
    assert_eq!(
        (s.version.as_str(), s.role, s.serving),
        ("1.0.0", Role::Active, true)
    );

    // Only an upgrade is held.
    m1.run_ok(&Req::new("pf-2", K::Preflight).with_version("2.0.0"))
        .await?;
    m1.run_ok(&Req::new("rb-0.9", K::Rollback).with_version("0.9.0"))
        .await?;
    assert_eq!(m1.status().await?.version, "0.9.0");

    m1.run_ok(&Req::new("stage-2", K::StageMedia).with_version("2.0.0"))
        .await?;
    let rec = m1.run_ok(&up).await?;
    assert_eq!(rec.version_after.as_deref(), Some("2.0.0"));
    let s = m1.status().await?;
    assert_eq!(
        (s.version.as_str(), s.media.as_slice()),
        ("2.0.0", &["2.0.0".to_string()][..])
    );

    // Once removed, the recorded upgrade is still answered by id; a new one is held again.
    m1.run_ok(&Req::new("rm-2", K::RemoveMedia).with_version("2.0.0"))
        .await?;
    assert!(m1.status().await?.media.is_empty());
    let again = m1.client.submit(&up).await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Succeeded, rec.finished_at)
    );
    let e = refused(
        m1.client
            .submit(&Req::new("up-2-again", K::Upgrade).with_version("2.0.0")),
        "an upgrade after its media was removed",
    )
    .await?;
    not_staged(&e, "2.0.0")?;

    // A full store refuses one more version and keeps what it holds.
    let versions: Vec<String> = (0..MAX_MEDIA).map(|i| format!("3.{i}.0")).collect();
    for v in &versions {
        m1.run_ok(&Req::new(format!("stage-{v}"), K::StageMedia).with_version(v))
            .await?;
    }
    assert_eq!(m1.status().await?.media, versions);
    let full = m1
        .run(&Req::new("stage-4.0.0", K::StageMedia).with_version("4.0.0"))
        .await?;
    assert_eq!(full.state, OperationState::Failed);
    assert_eq!(
        full.message,
        format!("media store full: {MAX_MEDIA} versions staged (remove some first)")
    );
    assert_eq!(m1.status().await?.media, versions);
    let e = refused(
        m1.client
            .submit(&Req::new("up-4", K::Upgrade).with_version("4.0.0")),
        "an upgrade whose staging failed",
    )
    .await?;
    not_staged(&e, "4.0.0")?;
    m1.run_ok(&Req::new("up-3.7", K::Upgrade).with_version("3.7.0"))
        .await?;
    Ok(())
}
