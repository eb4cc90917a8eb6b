//! `prepare` on demo members: the preparation checks before an upgrade, their findings from
//! `--prepare-finding`, `--scheduled-job` and the `prepareFindings` fault, and the
//! `failPrepare` fault. A prepare changes nothing on the member.

use crate::common;

use baton_agent::api::{
    Faults, Finding, FindingSeverity, OperationKind as K, OperationRecord, OperationRequest as Req,
    OperationState, Role,
};
use common::*;

/// How often a test polls an operation it waits for.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn warning(check: &str, code: &str, message: &str) -> Finding {
    Finding::new(check, FindingSeverity::Warning, code, message)
}

fn blocking(check: &str, code: &str, message: &str) -> Finding {
    Finding::new(check, FindingSeverity::Blocking, code, message)
}

fn prepare(id: &str, checks: &[&str]) -> Req {
    Req::new(id, K::Prepare)
        .with_version("2.0.0")
        .with_checks(checks.iter().copied())
}

fn job_dropped(job: &str) -> Finding {
    warning(
        "scheduledJobs",
        "ScheduledJobDropped",
        &format!(
            "scheduled job {job} is dropped by the upgrade to 2.0.0; it must be recreated after the upgrade"
        ),
    )
}

/// A prepare on the Active member runs `--prepare-seconds` while the member keeps its role,
/// version and serving (it takes writes meanwhile), and succeeds with the findings of the
/// checks asked for only, in their order: scheduled-job warnings, the flags' findings, the
/// faults'. A blocking finding is data: the prepare still succeeds. Idempotent by id: the
/// same id again is the recorded operation with the same findings, run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_reports_the_findings_of_its_checks_while_the_member_keeps_serving() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[
        "--prepare-seconds",
        "1.5",
        "--prepare-finding",
        "blocking:gateways:GatewayUnreachable:gw-1 at 10.0.0.1:443 does not answer",
        "--prepare-finding",
        "Warning:installConfig:ConfigDrift:max_connections is 200 here, 100 in the install config",
        "--scheduled-job",
        "nightly-report",
        "--scheduled-job",
        "purge sessions",
    ])
    .await?;
    let w = m1.data_client(fx.pki.data_tls("m1")?)?;
    let before = m1.status().await?;

    let req = prepare("prep-2.0.0", &["installConfig", "scheduledJobs"]);
    let first = m1.client.submit(&req).await?;
    assert_eq!(
        first.state,
        OperationState::Running,
        "a 1.5 s prepare is answered 202 Running"
    );
    assert!(first.findings.is_empty(), "{:?}", first.findings);
    let during = wait_until("m1's prepare under way", CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        let op = s.operation.clone()?;
        (op.id == req.id && op.state == OperationState::Running && op.progress >= 10).then_some(s)
    })
    .await?;
    assert_eq!(
        (during.role, during.serving, during.version.as_str()),
        (Role::Active, true, "1.0.0")
    );
    assert!(during.alarms.is_empty(), "{:?}", during.alarms);
    w.put("during-prepare", "accepted").await?;

    let rec = m1.client.wait(&req.id, CONVERGE, POLL).await?;
    assert_eq!(rec.state, OperationState::Succeeded, "{}", rec.message);
    assert_eq!(
        rec.findings,
        [
            warning(
                "installConfig",
                "ConfigDrift",
                "max_connections is 200 here, 100 in the install config"
            ),
            job_dropped("nightly-report"),
            job_dropped("purge sessions"),
        ],
        "the gateways finding is not asked for"
    );
    assert_eq!(rec.params.checks, ["installConfig", "scheduledJobs"]);
    assert_eq!(
        (rec.params.version.as_deref(), rec.version_after.as_deref()),
        (Some("2.0.0"), Some("1.0.0")),
        "a prepare changes no version"
    );
    assert!(
        rec.message
            .contains("3 finding(s): 0 blocking, 3 warning(s)"),
        "{}",
        rec.message
    );
    let took = rec.finished_at.map(|f| f.duration_since(rec.started_at));
    assert!(
        took.is_some_and(|d| d.as_secs_f64() >= 1.4),
        "a prepare takes --prepare-seconds: {took:?}"
    );
    let s = m1.status().await?;
    assert_eq!(
        (s.role, s.serving, s.version.as_str(), s.health),
        (Role::Active, true, "1.0.0", before.health)
    );
    assert!(s.replication.applied_index > before.replication.applied_index);
    assert_eq!(s.operation.map(|o| o.findings), Some(rec.findings.clone()));
    assert_eq!(w.get("during-prepare").await?.as_deref(), Some("accepted"));

    // The same id again: the record, findings and all; nothing runs a second time.
    let again = m1.client.submit(&req).await?;
    assert_eq!(again, rec);
    assert_eq!(m1.client.operation(&req.id).await?, rec);
    let count = |ops: &[OperationRecord]| ops.iter().filter(|r| r.kind == K::Prepare).count();
    assert_eq!(count(&m1.client.operations().await?), 1);

    // A blocking finding is data, not a failure.
    let gw = m1.run_ok(&prepare("prep-gw", &["gateways"])).await?;
    assert_eq!(
        gw.findings,
        [blocking(
            "gateways",
            "GatewayUnreachable",
            "gw-1 at 10.0.0.1:443 does not answer"
        )]
    );
    assert!(gw.message.contains("1 blocking"), "{}", gw.message);
    let s = m1.status().await?;
    assert!(!has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    assert_eq!((s.role, s.serving), (Role::Active, true));
    // Checks the member knows nothing of find nothing.
    let none = m1.run_ok(&prepare("prep-none", &["diskSpace"])).await?;
    assert!(none.findings.is_empty(), "{:?}", none.findings);
    assert!(none.message.contains("no findings"), "{}", none.message);
    Ok(())
}

/// `prepareFindings` (PUT /v1/faults) adds to the flags' findings, after them per check;
/// `failPrepare` fails every prepare with no findings; a PUT replaces the whole set, and the
/// flags' findings stay. More than 32 findings keep 31 and a FindingsTruncated warning, and
/// long messages are cut to 256 characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_faults_add_findings_or_fail_the_checks() -> TestResult {
    let (_fx, m1) = Fixture::active_m1(&[
        "--prepare-seconds",
        "0.2",
        "--prepare-finding",
        "blocking:gateways:GatewayUnreachable:gw-1 does not answer",
        "--scheduled-job",
        "nightly-report",
    ])
    .await?;
    assert_eq!(m1.client.faults().await?, Faults::default());
    let faults = Faults {
        prepare_findings: vec![
            warning("gateways", "GatewaySlow", "gw-2 answers in 900 ms"),
            blocking("diskSpace", "DiskLow", "/var has 1 GiB free, 4 GiB needed"),
            warning("scheduledJobs", "JobRunning", "nightly-report runs now"),
        ],
        ..Faults::default()
    };
    assert_eq!(m1.client.set_faults(&faults).await?, faults);
    assert_eq!(m1.client.faults().await?, faults);
    let rec = m1
        .run_ok(&prepare(
            "prep-faults",
            &["diskSpace", "gateways", "scheduledJobs"],
        ))
        .await?;
    assert_eq!(
        rec.findings,
        [
            blocking("diskSpace", "DiskLow", "/var has 1 GiB free, 4 GiB needed"),
            blocking("gateways", "GatewayUnreachable", "gw-1 does not answer"),
            warning("gateways", "GatewaySlow", "gw-2 answers in 900 ms"),
            job_dropped("nightly-report"),
            warning("scheduledJobs", "JobRunning", "nightly-report runs now"),
        ]
    );

    // failPrepare: the checks could not run. A PUT replaces the set: no fault findings now.
    let fail = Faults {
        fail_prepare: true,
        ..Faults::default()
    };
    m1.client.set_faults(&fail).await?;
    assert_eq!(m1.client.faults().await?, fail);
    let failed = m1.run(&prepare("prep-fail", &["gateways"])).await?;
    assert_eq!(failed.state, OperationState::Failed);
    assert_eq!(
        failed.message,
        "preparation checks could not run: injected fault failPrepare is set"
    );
    assert!(failed.findings.is_empty(), "{:?}", failed.findings);
    let s = m1.status().await?;
    assert!(has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    assert_eq!(
        (s.role, s.serving, s.version.as_str()),
        (Role::Active, true, "1.0.0")
    );
    // The failed id stays failed; without the fault a new id runs, with the flags' findings.
    m1.client.set_faults(&Faults::default()).await?;
    let again = m1
        .client
        .submit(&prepare("prep-fail", &["gateways"]))
        .await?;
    assert_eq!(again, failed);
    let ok = m1.run_ok(&prepare("prep-after", &["gateways"])).await?;
    assert_eq!(
        ok.findings,
        [blocking(
            "gateways",
            "GatewayUnreachable",
            "gw-1 does not answer"
        )]
    );

    // 40 findings: 31 kept, then the truncation warning; messages cut to 256 characters.
    let long = "é".repeat(300);
    let many = Faults {
        prepare_findings: (0..40)
            .map(|i| {
                let severity = if i % 10 == 9 {
                    FindingSeverity::Blocking
                } else {
                    FindingSeverity::Warning
                };
                Finding::new("bulk", severity, format!("Finding{i}"), long.clone())
            })
            .collect(),
        ..Faults::default()
    };
    let stored = m1.client.set_faults(&many).await?;
    assert!(
        stored
            .prepare_findings
            .iter()
            .all(|f| f.message.chars().count() == 256),
        "a fault's long message is cut as a record's is"
    );
    let bulk = m1.run_ok(&prepare("prep-bulk", &["bulk"])).await?;
    assert_eq!(bulk.findings.len(), 32);
    let codes: Vec<&str> = bulk.findings[..31]
        .iter()
        .map(|f| f.code.as_str())
        .collect();
    let want: Vec<String> = (0..31).map(|i| format!("Finding{i}")).collect();
    assert_eq!(codes, want);
    let last = &bulk.findings[31];
    assert_eq!(
        (last.check.as_str(), last.severity, last.code.as_str()),
        ("prepare", FindingSeverity::Warning, "FindingsTruncated")
    );
    // Findings 31 to 39 were left out, of them 39 blocking.
    assert!(
        last.message
            .starts_with("9 more findings were not listed (1 of them blocking"),
        "{}",
        last.message
    );
    for f in &bulk.findings[..31] {
        assert_eq!(f.message.chars().count(), 256);
        assert!(f.message.ends_with('…'), "{}", f.message);
    }
    assert_eq!(m1.client.operation("prep-bulk").await?, bulk);
    Ok(())
}

/// A bad `--prepare-finding` or `--scheduled-job`, or either with the exec backend, stops the
/// agent at startup with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prepare_flags_stop_the_agent_with_their_reason() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let exec_cfg = fx.path().join("exec.yaml");
    std::fs::write(&exec_cfg, "operations: {}\n")?;
    let exec_cfg = exec_cfg.display().to_string();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--prepare-finding", "fatal:gateways:Down:gw-1"],
            "severity \"fatal\" must be blocking or warning",
        ),
        (
            &["--prepare-finding", "blocking:gateways:Down"],
            "must be SEVERITY:CHECK:CODE:MESSAGE",
        ),
        (
            &["--prepare-finding", "warning:gate_ways:Down:gw-1"],
            "check \"gate_ways\"",
        ),
        (
            &["--prepare-finding", "warning:gateways:Gateway-Down:gw-1"],
            "code \"Gateway-Down\"",
        ),
        (&["--scheduled-job", ""], "--scheduled-job \"\""),
        (
            &[
                "--backend",
                "exec",
                "--exec-config",
                &exec_cfg,
                "--scheduled-job",
                "nightly",
            ],
            "apply to the demo backend",
        ),
    ];
    for (flags, want) in cases {
        let e = fx
            .start("m1", flags)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("exited before listening"), "{flags:?}: {e}");
        let log = std::fs::read_to_string(fx.path().join("m1.log"))?;
        assert!(log.contains(want), "{flags:?}: {log}");
    }
    Ok(())
}
