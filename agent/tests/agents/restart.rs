//! Agents killed mid-operation come back reporting the truth, with their data intact.

use crate::common;

use baton_agent::api::{Faults, OperationKind, OperationRequest, OperationState, Role};
use baton_agent::ops::INTERRUPTED;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_upgrade_is_reported_as_interrupted_and_data_survives() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let pki = &fx.pki;
    let mut m1 = fx
        .start("m1", &["--role", "active", "--upgrade-seconds", "1"])
        .await?;
    let writer = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..50 {
        writer.put(&format!("k{i}"), &format!("v{i}")).await?;
    }
    m1.client
        .set_faults(&Faults {
            crash_mid_upgrade: true,
            ..Faults::default()
        })
        .await?;
    m1.client
        .submit(&OperationRequest::new("up-2", OperationKind::Upgrade).with_version("2.0.0"))
        .await?;
    let code = m1.wait_exit(CONVERGE).await?;
    assert_eq!(code, Some(70), "the injected crash exits abruptly");

    // Flags say otherwise, but persisted state wins.
    m1.restart(&["--version", "9.9.9", "--role", "standby"])
        .await?;
    let rec = m1.client.operation("up-2").await?;
    assert_eq!(rec.state, OperationState::Failed);
    assert_eq!(rec.message, INTERRUPTED);
    assert!(rec.finished_at.is_some());
    let s = m1.status().await?;
    assert_eq!(
        s.version, "1.0.0",
        "an interrupted upgrade does not change the version"
    );
    assert_eq!(s.role, Role::Active);
    assert!(s.serving);
    assert_eq!(s.replication.applied_index, 50);
    assert!(has_alarm(&s, "OperationFailed"));
    let reader = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..50 {
        assert_eq!(
            reader.get(&format!("k{i}")).await?.as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    m1.run_ok(&OperationRequest::new("verify", OperationKind::Verify))
        .await?;
    // Faults are not persisted: the retried upgrade completes.
    let rec = m1
        .run_ok(&OperationRequest::new("up-2-retry", OperationKind::Upgrade).with_version("2.0.0"))
        .await?;
    assert_eq!(rec.version_before.as_deref(), Some("1.0.0"));
    assert_eq!(rec.version_after.as_deref(), Some("2.0.0"));
    let s = m1.status().await?;
    assert_eq!(
        (s.version.as_str(), s.previous_version.as_deref()),
        ("2.0.0", Some("1.0.0"))
    );
    assert!(!has_alarm(&s, "OperationFailed"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_slow_upgrade_of_a_standby() -> TestResult {
    let fx = Fixture::new(&["m1", "m2"])?;
    let pki = &fx.pki;
    let (m1, mut m2) = fx
        .active_standby(
            &[],
            &["--upgrade-seconds", "30", "--components", "os=8.4,app=2.1"],
        )
        .await?;
    let writer = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..20 {
        writer.put(&format!("k{i}"), "v").await?;
    }
    wait_caught_up(&m2, &m1).await?;
    m2.client
        .submit(
            &OperationRequest::new("os-up", OperationKind::Upgrade)
                .with_version("8.6")
                .with_component("os"),
        )
        .await?;
    wait_until("the upgrade to make progress", CONVERGE, || async {
        let s = m2.client.status().await.ok()?;
        (s.role == Role::OutOfService && s.operation.as_ref()?.progress >= 10).then_some(())
    })
    .await?;
    m2.kill().await?;
    for i in 20..40 {
        writer.put(&format!("k{i}"), "v").await?;
    }
    m2.restart(&[]).await?;
    let rec = m2.client.operation("os-up").await?;
    assert_eq!(
        (rec.state, rec.message.as_str()),
        (OperationState::Failed, INTERRUPTED)
    );
    let s = m2.status().await?;
    assert_eq!(
        s.role,
        Role::Standby,
        "back to its persisted role, not stuck out of service"
    );
    assert_eq!(s.components.get("os").map(String::as_str), Some("8.4"));
    // It resumes replication from where it was.
    wait_caught_up(&m2, &m1).await?;
    assert_eq!(m2.status().await?.replication.applied_index, 40);
    Ok(())
}

/// A demo member's task runs are persisted: after a restart they are still listed, and the
/// same operation id is still answered from the journal rather than run again. A task cut
/// short by the restart is reported interrupted and never listed. The `--fail-tasks` flag
/// sets the fault from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_survive_a_restart_and_an_interrupted_one_is_not_listed() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let mut m1 = fx
        .start(
            "m1",
            &[
                "--role",
                "active",
                "--task-seconds",
                "0.2",
                "--fail-tasks",
                "broken,other",
            ],
        )
        .await?;
    assert_eq!(m1.client.faults().await?.fail_tasks, ["broken", "other"]);
    let broken = m1
        .run(&OperationRequest::new("broken-1", OperationKind::Task).with_task("broken"))
        .await?;
    assert_eq!(broken.state, OperationState::Failed);
    let req = OperationRequest::new("upload-1", OperationKind::Task)
        .with_task("upload-content")
        .with_version("1.0.0");
    let rec = m1.run_ok(&req).await?;
    let before = m1.status().await?.tasks;
    assert_eq!(before.len(), 1, "{before:?}");

    // A slow task, killed while it runs.
    m1.restart(&["--task-seconds", "30"]).await?;
    assert_eq!(
        m1.status().await?.tasks,
        before,
        "listed across the restart"
    );
    m1.client
        .submit(&OperationRequest::new("slow-1", OperationKind::Task).with_task("slow"))
        .await?;
    wait_until("the slow task to make progress", CONVERGE, || async {
        let op = m1.client.status().await.ok()?.operation?;
        (op.id == "slow-1" && op.progress >= 5).then_some(())
    })
    .await?;
    m1.restart(&[]).await?;
    let slow = m1.client.operation("slow-1").await?;
    assert_eq!(
        (slow.state, slow.message.as_str()),
        (OperationState::Failed, INTERRUPTED)
    );
    let s = m1.status().await?;
    assert_eq!(s.tasks, before, "{:?}", s.tasks);
    // The same id again: the journal's record, no second run.
    let again = m1.client.submit(&req).await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Succeeded, rec.finished_at)
    );
    assert_eq!(m1.status().await?.tasks, before);
    Ok(())
}

/// A demo member's staged media is persisted: after a restart it is still listed (and still
/// lets a `--require-staged-media` upgrade through), and the same operation id is answered
/// from the journal rather than run again. A staging cut short by the restart is reported
/// interrupted and its version is never listed. `--fail-stage-media` sets the fault from the
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_media_survives_a_restart_and_an_interrupted_staging_is_not_listed() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let mut m1 = fx
        .start(
            "m1",
            &[
                "--role",
                "active",
                "--upgrade-seconds",
                "0.2",
                "--stage-seconds",
                "0.2",
                "--fail-stage-media",
                "9.0.0,9.1.0",
            ],
        )
        .await?;
    assert_eq!(
        m1.client.faults().await?.fail_stage_media,
        ["9.0.0", "9.1.0"]
    );
    let broken = m1
        .run(&OperationRequest::new("stage-9", OperationKind::StageMedia).with_version("9.0.0"))
        .await?;
    assert_eq!(broken.state, OperationState::Failed);
    let req = OperationRequest::new("stage-2", OperationKind::StageMedia).with_version("2.0.0");
    let rec = m1.run_ok(&req).await?;
    assert_eq!(m1.status().await?.media, ["2.0.0"]);

    // A slow staging, killed while it copies.
    m1.restart(&["--stage-seconds", "30"]).await?;
    assert_eq!(
        m1.status().await?.media,
        ["2.0.0"],
        "listed across the restart"
    );
    assert_eq!(
        m1.client.faults().await?.fail_stage_media,
        ["9.0.0", "9.1.0"],
        "the flag sets the fault again"
    );
    m1.client
        .submit(&OperationRequest::new("stage-3", OperationKind::StageMedia).with_version("3.0.0"))
        .await?;
    wait_until("the slow staging to make progress", CONVERGE, || async {
        let op = m1.client.status().await.ok()?.operation?;
        (op.id == "stage-3" && op.progress >= 5).then_some(())
    })
    .await?;
    m1.restart(&["--require-staged-media"]).await?;
    let slow = m1.client.operation("stage-3").await?;
    assert_eq!(
        (slow.state, slow.message.as_str()),
        (OperationState::Failed, INTERRUPTED)
    );
    assert_eq!(m1.status().await?.media, ["2.0.0"]);
    // The same ids again: the journal's records, nothing runs.
    let again = m1.client.submit(&req).await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Succeeded, rec.finished_at)
    );
    let again = m1
        .client
        .submit(&OperationRequest::new("stage-3", OperationKind::StageMedia).with_version("3.0.0"))
        .await?;
    assert_eq!(
        (again.state, again.finished_at),
        (OperationState::Failed, slow.finished_at)
    );
    assert_eq!(m1.status().await?.media, ["2.0.0"]);
    // What the store holds after the restart is what an upgrade is checked against.
    let e = refused(
        m1.client
            .submit(&OperationRequest::new("up-3", OperationKind::Upgrade).with_version("3.0.0")),
        "an upgrade to a version whose staging was interrupted",
    )
    .await?;
    assert_eq!(
        (e.status(), e.code()),
        (Some(409), Some("media_not_staged")),
        "{e}"
    );
    m1.run_ok(&OperationRequest::new("up-2", OperationKind::Upgrade).with_version("2.0.0"))
        .await?;
    let s = m1.status().await?;
    assert_eq!(
        (s.version.as_str(), s.media.as_slice()),
        ("2.0.0", &["2.0.0".to_string()][..])
    );
    Ok(())
}

/// A prepare's findings are in the journal: after a restart the record (and its findings) is
/// answered by id and nothing runs again. A prepare cut short by the restart is reported
/// interrupted, with no findings. `--fail-prepare` sets the fault again from the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_findings_survive_a_restart_and_an_interrupted_prepare_has_none() -> TestResult {
    use baton_agent::api::FindingSeverity;
    let fx = Fixture::new(&["m1"])?;
    let mut m1 = fx
        .start(
            "m1",
            &[
                "--role",
                "active",
                "--prepare-seconds",
                "0.2",
                "--prepare-finding",
                "blocking:installConfig:ConfigDrift:ulimit -n is 1024, 65536 in the install config",
                "--scheduled-job",
                "nightly-report",
                "--fail-prepare",
            ],
        )
        .await?;
    assert!(m1.client.faults().await?.fail_prepare);
    let prepare = |id: &str| {
        OperationRequest::new(id, OperationKind::Prepare)
            .with_version("2.0.0")
            .with_checks(["scheduledJobs", "installConfig"])
    };
    let broken = m1.run(&prepare("prep-broken")).await?;
    assert_eq!(broken.state, OperationState::Failed);
    m1.client.set_faults(&Faults::default()).await?;
    let req = prepare("prep-2.0.0");
    let rec = m1.run_ok(&req).await?;
    let codes: Vec<(&str, FindingSeverity)> = rec
        .findings
        .iter()
        .map(|f| (f.code.as_str(), f.severity))
        .collect();
    assert_eq!(
        codes,
        [
            ("ScheduledJobDropped", FindingSeverity::Warning),
            ("ConfigDrift", FindingSeverity::Blocking)
        ]
    );

    // A slow prepare, killed while it checks.
    m1.restart(&["--prepare-seconds", "30"]).await?;
    assert_eq!(
        m1.client.operation(&req.id).await?,
        rec,
        "the record and its findings across the restart"
    );
    assert!(
        m1.client.faults().await?.fail_prepare,
        "the flag sets the fault again"
    );
    m1.client.set_faults(&Faults::default()).await?;
    m1.client.submit(&prepare("prep-slow")).await?;
    wait_until("the slow prepare to make progress", CONVERGE, || async {
        let op = m1.client.status().await.ok()?.operation?;
        (op.id == "prep-slow" && op.progress >= 5).then_some(())
    })
    .await?;
    m1.restart(&[]).await?;
    let slow = m1.client.operation("prep-slow").await?;
    assert_eq!(
        (slow.state, slow.message.as_str()),
        (OperationState::Failed, INTERRUPTED)
    );
    assert!(slow.findings.is_empty(), "{:?}", slow.findings);
    // The same ids again: the journal's records, nothing runs.
    assert_eq!(m1.client.submit(&req).await?, rec);
    assert_eq!(m1.client.submit(&prepare("prep-slow")).await?, slow);
    assert_eq!(m1.client.submit(&prepare("prep-broken")).await?, broken);
    let s = m1.status().await?;
    assert_eq!(
        (s.role, s.serving, s.version.as_str()),
        (Role::Active, true, "1.0.0")
    );
    Ok(())
}
