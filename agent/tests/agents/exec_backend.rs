//! The exec backend runs configured commands: success, failure and timeout.

use crate::common;

use std::time::Duration;

use baton_agent::api::{Health, OperationKind as K, OperationRequest as Req, OperationState, Role};
use baton_agent::pki::CertSpec;
use common::*;

fn script(dir: &std::path::Path, name: &str, body: &str) -> TestResult<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_backend_runs_commands_and_reports_outcomes() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let pki = &fx.pki;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("version"), "1.0.0")?;
    let h = host.display().to_string();
    let status = script(
        &host,
        "status.sh",
        &format!(
            r#"printf '{{"version":"%s","role":"Active","serving":true}}' "$(cat {h}/version)""#
        ),
    )?;
    let upgrade = script(
        &host,
        "upgrade.sh",
        &format!(r#"echo "upgrading to $1"; printf %s "$1" > {h}/version"#),
    )?;
    let fail = script(&host, "fail.sh", r#"echo "disk full on /var" >&2; exit 3"#)?;
    let slow = script(
        &host,
        "slow.sh",
        &format!("echo $$ > {h}/slow.pid; sleep 30 & wait"),
    )?;
    let trust = script(
        &host,
        "trust.sh",
        &format!("cp \"$1\" {h}/trust.pem; cat \"$2\""),
    )?;
    let config = format!(
        r#"
defaultTimeoutSeconds: 30
statusCommand:
  command: ["{status}"]
status:
  dataEndpoint: "10.0.0.1:7001"
  load: 12
operations:
  upgrade:
    command: ["{upgrade}", "{{version}}"]
  rollback:
    command: ["{fail}"]
  restart:
    command: ["{slow}"]
    timeoutSeconds: 1
  install-certificate:
    command: ["{trust}", "{{cert_path}}", "{{key_path}}"]
  sync-config:
    command: ["{upgrade}", "{{version}}"]
"#
    );
    let cfg_path = fx.path().join("exec.yaml");
    std::fs::write(&cfg_path, config)?;
    let cfg = cfg_path.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;

    let s = m1.status().await?;
    assert_eq!(
        (s.version.as_str(), s.role, s.serving, s.health),
        ("1.0.0", Role::Active, true, Health::Ok)
    );
    assert_eq!(
        (s.data_endpoint.as_str(), s.load),
        ("10.0.0.1:7001", Some(12))
    );

    let up = m1
        .run_ok(&Req::new("up", K::Upgrade).with_version("2.0.0"))
        .await?;
    assert!(up.message.contains("upgrading to 2.0.0"), "{}", up.message);
    assert_eq!(
        (up.version_before.as_deref(), up.version_after.as_deref()),
        (Some("1.0.0"), Some("2.0.0"))
    );

    let rb = m1
        .run(&Req::new("rb", K::Rollback).with_version("1.0.0"))
        .await?;
    assert_eq!(rb.state, OperationState::Failed);
    assert!(
        rb.message.contains("exit code 3") && rb.message.contains("disk full"),
        "{}",
        rb.message
    );

    let started = std::time::Instant::now();
    let rs = m1.run(&Req::new("rs", K::Restart)).await?;
    assert_eq!(rs.state, OperationState::Failed);
    assert!(rs.message.contains("timed out"), "{}", rs.message);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the timeout cut the 30 s command short"
    );
    let pid = std::fs::read_to_string(host.join("slow.pid"))?
        .trim()
        .to_string();
    wait_until(
        "the timed-out command's process group to be gone",
        CONVERGE,
        || async { (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
    )
    .await?;

    // Secrets are written to files for the command and never echoed back.
    let cert = pki.mesh_ca.issue(&CertSpec::member("m1"))?;
    let ic = m1
        .run_ok(
            &Req::new("cert", K::InstallCertificate)
                .with_certificate(&cert.cert_pem, &cert.key_pem),
        )
        .await?;
    assert!(!ic.message.contains("PRIVATE KEY"), "{}", ic.message);
    assert!(ic.message.contains("redacted"), "{}", ic.message);
    assert_eq!(
        std::fs::read_to_string(host.join("trust.pem"))?,
        cert.cert_pem
    );

    // Kinds without a command, and templates without values, are refused up front.
    let e = refused(m1.client.submit(&Req::new("pr", K::Promote)), "accepted").await?;
    assert_eq!(e.code(), Some("unsupported_operation"));
    let e = refused(
        m1.client
            .submit(&Req::new("sc", K::SyncConfig).with_source("127.0.0.1:9")),
        "accepted",
    )
    .await?;
    assert_eq!(e.code(), Some("missing_param"), "{e}");

    // A broken status command is reported, not hidden.
    std::fs::write(host.join("version"), "bad\"json")?;
    let s = wait_until("status to report the broken command", CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        (s.health == Health::Critical).then_some(s)
    })
    .await?;
    assert!(has_alarm(&s, "StatusUnavailable"), "{:?}", s.alarms);
    Ok(())
}
