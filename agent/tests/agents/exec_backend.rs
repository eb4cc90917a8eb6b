//! The exec backend runs configured commands: success, failure and timeout.

use crate::common;

use std::collections::BTreeMap;
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
  install-trust:
    command: ["{trust}", "{{trust_path}}", "/dev/null"]
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

    // keepTrust needs the application's bundle (trustFile) to keep CAs from: without it the
    // operation fails before the command runs, and the command's files are untouched.
    let kt = m1
        .run(
            &Req::new("kt", K::InstallTrust)
                .with_trust_pem(pki.mesh_ca.cert_pem())
                .with_keep_trust(vec![pki.mesh_ca.fingerprint().to_string()]),
        )
        .await?;
    assert_eq!(kt.state, OperationState::Failed);
    assert!(kt.message.contains("trustFile"), "{}", kt.message);
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

/// `examples/recertification`: the trust operations as user commands on files, the status read
/// from those files. Each phase shows in `/v1/status` only once the application has it on disk,
/// and a new certificate only after the restart that applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_trust_operations_of_the_recertification_example_show_in_the_status() -> TestResult {
    use baton_agent::pki::CertAuthority;
    let fx = Fixture::new(&["m1"])?;
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/recertification");
    let app = fx.path().join("app");
    std::fs::create_dir_all(app.join("bin"))?;
    std::fs::create_dir_all(app.join("tls"))?;
    for script in ["trust.sh", "certificate.sh", "restart.sh"] {
        let to = app.join("bin").join(script);
        std::fs::copy(example.join("bin").join(script), &to)?;
    }
    let config = std::fs::read_to_string(example.join("exec.yaml"))?
        .replace("workDir: /opt/app", &format!("workDir: {}", app.display()));
    assert!(
        config.contains(&app.display().to_string()),
        "the example sets workDir"
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    // The application starts on the old CA.
    let (old, new) = (
        CertAuthority::generate("old CA")?,
        CertAuthority::generate("new CA")?,
    );
    let leaf = old.issue(&CertSpec::member("m1"))?;
    std::fs::write(app.join("tls/trust.pem"), old.cert_pem())?;
    std::fs::write(app.join("tls/cert.pem"), &leaf.cert_pem)?;
    let cfg = cfg.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;
    let issuer = |s: &baton_agent::api::MemberStatus| {
        s.certificate
            .as_ref()
            .and_then(|c| c.issuer_fingerprint.clone())
    };
    let s = m1.status().await?;
    assert_eq!(s.trust, [old.fingerprint()]);
    assert_eq!(issuer(&s).as_deref(), Some(old.fingerprint()));
    assert_eq!(s.health, Health::Ok);

    // Trust old + new: the old CA kept by fingerprint, from the application's trustFile.
    m1.run_ok(
        &Req::new("trust-both", K::InstallTrust)
            .with_trust_pem(new.cert_pem())
            .with_keep_trust(vec![old.fingerprint().to_string()]),
    )
    .await?;
    let s = wait_until("both CAs trusted", Duration::from_secs(5), || async {
        let s = m1.status().await.ok()?;
        (s.trust.len() == 2).then_some(s)
    })
    .await?;
    assert_eq!(s.trust, [old.fingerprint(), new.fingerprint()]);
    // A new certificate is staged, not presented, until the restart.
    let next = new.issue(&CertSpec::member("m1"))?;
    m1.run_ok(
        &Req::new("cert", K::InstallCertificate).with_certificate(&next.cert_pem, &next.key_pem),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the status cache
    assert_eq!(
        issuer(&m1.status().await?).as_deref(),
        Some(old.fingerprint()),
        "restart pending"
    );
    m1.run_ok(&Req::new("restart", K::Restart)).await?;
    let s = wait_until(
        "the new certificate presented",
        Duration::from_secs(5),
        || async {
            let s = m1.status().await.ok()?;
            (issuer(&s).as_deref() == Some(new.fingerprint())).then_some(s)
        },
    )
    .await?;
    assert_eq!(
        s.certificate.map(|c| c.fingerprint),
        Some(next.fingerprint.clone())
    );
    // Stop trusting the old CA.
    m1.run_ok(
        &Req::new("trust-new", K::InstallTrust)
            .with_trust_pem(new.cert_pem())
            .with_keep_trust(vec![new.fingerprint().to_string()]),
    )
    .await?;
    wait_until(
        "only the new CA trusted",
        Duration::from_secs(5),
        || async {
            let s = m1.status().await.ok()?;
            (s.trust == [new.fingerprint()]).then_some(())
        },
    )
    .await?;
    // A trust file that disappears is a status problem, not "trusts nothing" in silence.
    std::fs::remove_file(app.join("tls/trust.pem"))?;
    let s = wait_until(
        "the missing trust file alarmed",
        Duration::from_secs(5),
        || async {
            let s = m1.status().await.ok()?;
            has_alarm(&s, "StatusUnavailable").then_some(s)
        },
    )
    .await?;
    assert_eq!(s.health, Health::Critical);
    let alarm = s.alarms.iter().find(|a| a.name == "StatusUnavailable");
    let message = alarm.and_then(|a| a.message.clone()).unwrap_or_default();
    assert!(message.contains("trustFile"), "{message}");
    Ok(())
}

/// The membership kinds run user commands with `{peer}`, `{fingerprint}` and `{copy_from}`,
/// and the status command (or the static `status:`) reports `identity`, `peers`,
/// `configDigest` and `retired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_membership_operations_run_commands_and_report_peers() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    // The application's peer store: "NAME FINGERPRINT" lines.
    let peer = script(
        &host,
        "peer.sh",
        &r#"cd HOST; echo "$*" >> ops.log
case "$1" in
  add) grep -v "^$2 " peers.txt > peers.new 2>/dev/null; echo "$2 $3" >> peers.new; mv peers.new peers.txt ;;
  copy) fp=$(grep "^$3 " peers.txt 2>/dev/null | cut -d' ' -f2)
        if [ -z "$fp" ]; then echo "no peer $3 to copy" >&2; exit 4; fi
        echo "$2 $fp" >> peers.txt ;;
  remove) grep -v "^$2 " peers.txt > peers.new 2>/dev/null; mv peers.new peers.txt ;;
  retire) touch retired ;;
esac"#
            .replace("HOST", &h),
    )?;
    let status = script(
        &host,
        "status.sh",
        &r#"cd HOST
peers=$(awk 'BEGIN { ORS = "" } { if (NR > 1) print ","; printf "\"%s\":\"%s\"", $1, $2 }' peers.txt 2>/dev/null)
retired=false; [ -f retired ] && retired=true
printf '{"version":"1.0.0","peers":{%s},"retired":%s,"configDigest":"DIGEST"}' "$peers" "$retired""#
            .replace("HOST", &h)
            .replace("DIGEST", &"cd".repeat(32)),
    )?;
    let identity = "ee".repeat(32);
    let config = |add: &str| {
        format!(
            r#"
statusCommand:
  command: ["{status}"]
status:
  identity: "{identity}"
operations:
  add-peer: {{command: ["{peer}", {add}]}}
  remove-peer: {{command: ["{peer}", "remove", "{{peer}}"]}}
  retire: {{command: ["{peer}", "retire", "{{member}}"]}}
"#
        )
    };
    let by_fingerprint = fx.path().join("exec.yaml");
    std::fs::write(
        &by_fingerprint,
        config(r#""add", "{peer}", "{fingerprint}""#),
    )?;
    let by_copy = fx.path().join("exec-copy.yaml");
    std::fs::write(&by_copy, config(r#""copy", "{peer}", "{copy_from}""#))?;
    let cfg = by_fingerprint.display().to_string();
    let mut m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;

    let s = m1.status().await?;
    assert_eq!(s.identity.as_deref(), Some(identity.as_str()), "static");
    assert_eq!(s.config_digest, Some("cd".repeat(32)));
    assert!(s.peers.is_empty() && !s.retired, "{s:?}");

    let (fa, fb) = ("a1".repeat(32), "b2".repeat(32));
    let add = |id: &str, name: &str, fp: &str| {
        Req::new(id, K::AddPeer)
            .with_peer(name)
            .with_fingerprint(fp)
    };
    m1.run_ok(&add("add-m2", "m2", &fa)).await?;
    m1.run_ok(&add("add-m4", "m4", &fb)).await?;
    m1.run_ok(&Req::new("rm-m4", K::RemovePeer).with_peer("m4"))
        .await?;
    let s = m1.status().await?;
    assert_eq!(s.peers.len(), 1, "{:?}", s.peers);
    assert_eq!(s.peers.get("m2"), Some(&fa));
    // This configuration's add-peer needs {fingerprint}: a copyFrom request is refused.
    let e = refused(
        m1.client.submit(
            &Req::new("cp", K::AddPeer)
                .with_peer("m3")
                .with_copy_from("m2"),
        ),
        "accepted",
    )
    .await?;
    assert_eq!(e.code(), Some("missing_param"), "{e}");
    m1.run_ok(&Req::new("retire", K::Retire)).await?;
    assert!(m1.status().await?.retired);

    // Another configuration copies entries: {copy_from}.
    let cfg = by_copy.display().to_string();
    m1.restart(&["--exec-config", &cfg]).await?;
    m1.run_ok(
        &Req::new("cp", K::AddPeer)
            .with_peer("m3")
            .with_copy_from("m2"),
    )
    .await?;
    let s = m1.status().await?;
    assert_eq!(s.peers.get("m3"), Some(&fa), "{:?}", s.peers);
    let unknown = m1
        .run(
            &Req::new("cp-m9", K::AddPeer)
                .with_peer("m5")
                .with_copy_from("m9"),
        )
        .await?;
    assert_eq!(unknown.state, OperationState::Failed);
    assert!(
        unknown.message.contains("exit code 4") && unknown.message.contains("no peer m9"),
        "{}",
        unknown.message
    );
    let e = refused(m1.client.submit(&add("add-m6", "m6", &fb)), "accepted").await?;
    assert_eq!(e.code(), Some("missing_param"), "{e}");

    let log = std::fs::read_to_string(host.join("ops.log"))?;
    let want = [
        format!("add m2 {fa}"),
        format!("add m4 {fb}"),
        "remove m4".to_string(),
        "retire m1".to_string(),
        "copy m3 m2".to_string(),
        "copy m5 m9".to_string(),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), want);
    Ok(())
}

/// Every request value reaches the command as `BATON_<NAME>` (so one command serves both forms
/// of `add-peer` without a template that would refuse the other), and only the values the
/// request has: the others are unset, even when the agent's own environment or the config's
/// `env` holds a variable of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_commands_get_the_request_parameters_in_their_environment() -> TestResult {
    use baton_agent::api::DemoteRole;
    use std::collections::BTreeMap;
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    // Each operation leaves its environment in <id>.env, one VAR=value per line.
    let dump = script(&host, "env.sh", r#"env > "$BATON_OPERATION_ID.env""#)?;
    let config = format!(
        r#"
workDir: {host}
env: {{APP_HOME: /opt/app, BATON_COPY_FROM: from-the-config}}
operations:
  add-peer: {{command: ["{dump}"]}}
  demote: {{command: ["{dump}"]}}
  install-certificate: {{command: ["{dump}"]}}
  upgrade: {{command: ["{dump}"]}}
  task: {{command: ["{dump}"]}}
  stage-media: {{command: ["{dump}"]}}
  remove-media: {{command: ["{dump}"]}}
  prepare: {{command: ["{dump}"]}}
"#,
        host = host.display()
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    let mut args = fx.pki.args("m1");
    args.extend(["--backend".into(), "exec".into(), "--exec-config".into()]);
    args.push(cfg.display().to_string());
    let data_dir = fx.path().join("m1");
    let m1 = Agent::start_with_env(
        "m1",
        &data_dir,
        fx.pki.client_tls(),
        args,
        &[
            ("BATON_FINGERPRINT", "from-the-agent"),
            ("BATON_VERSION", "from-the-agent"),
        ],
    )
    .await?;
    // What the agent sets: the fixed variables and one per request value. Other BATON_*
    // variables the test itself inherited (a CI script's) pass through untouched, as any
    // variable of the agent's environment does, and are not this test's business.
    let ours = |k: &str| {
        k.strip_prefix("BATON_").is_some_and(|n| {
            let n = n.to_ascii_lowercase();
            baton_agent::exec::PLACEHOLDERS.contains(&n.as_str())
                || ["operation_id", "operation_kind"].contains(&n.as_str())
        })
    };
    let env_of = |id: &str| -> TestResult<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(host.join(format!("{id}.env")))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| ours(k) || *k == "APP_HOME")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    };
    let dd = data_dir.display().to_string();
    let expect = |id: &str, kind: &str, more: &[(&str, &str)]| -> BTreeMap<String, String> {
        let m: BTreeMap<String, String> = [
            ("APP_HOME", "/opt/app"),
            ("BATON_MEMBER", "m1"),
            ("BATON_DATA_DIR", dd.as_str()),
            ("BATON_OPERATION_ID", id),
            ("BATON_OPERATION_KIND", kind),
        ]
        .iter()
        .chain(more)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        m
    };

    // The fingerprint form: no BATON_COPY_FROM (the config's is removed), and the fingerprint
    // the request gives, not the agent's.
    let fp = "a1".repeat(32);
    m1.run_ok(
        &Req::new("by-fingerprint", K::AddPeer)
            .with_peer("m2")
            .with_fingerprint(&fp),
    )
    .await?;
    assert_eq!(
        env_of("by-fingerprint")?,
        expect(
            "by-fingerprint",
            "add-peer",
            &[("BATON_PEER", "m2"), ("BATON_FINGERPRINT", &fp)]
        )
    );
    // The copyFrom form: no BATON_FINGERPRINT (the agent's own is removed).
    m1.run_ok(
        &Req::new("by-copy", K::AddPeer)
            .with_peer("m3")
            .with_copy_from("m2"),
    )
    .await?;
    assert_eq!(
        env_of("by-copy")?,
        expect(
            "by-copy",
            "add-peer",
            &[("BATON_PEER", "m3"), ("BATON_COPY_FROM", "m2")]
        )
    );
    m1.run_ok(
        &Req::new("demote", K::Demote)
            .with_source("127.0.0.1:7001")
            .with_role(DemoteRole::Spare),
    )
    .await?;
    assert_eq!(
        env_of("demote")?,
        expect(
            "demote",
            "demote",
            &[("BATON_SOURCE", "127.0.0.1:7001"), ("BATON_ROLE", "spare")]
        )
    );
    m1.run_ok(
        &Req::new("upgrade", K::Upgrade)
            .with_version("2.0.0")
            .with_component("app"),
    )
    .await?;
    assert_eq!(
        env_of("upgrade")?,
        expect(
            "upgrade",
            "upgrade",
            &[("BATON_VERSION", "2.0.0"), ("BATON_COMPONENT", "app")]
        )
    );
    m1.run_ok(
        &Req::new("task", K::Task)
            .with_task("upload-content")
            .with_version("2.0.0"),
    )
    .await?;
    assert_eq!(
        env_of("task")?,
        expect(
            "task",
            "task",
            &[("BATON_TASK", "upload-content"), ("BATON_VERSION", "2.0.0")]
        )
    );
    // The media kinds get their version and nothing else (BATON_VERSION is the request's,
    // not the agent's).
    for (id, kind) in [("stage", K::StageMedia), ("unstage", K::RemoveMedia)] {
        m1.run_ok(&Req::new(id, kind).with_version("3.1.0")).await?;
        assert_eq!(
            env_of(id)?,
            expect(id, kind.as_str(), &[("BATON_VERSION", "3.1.0")])
        );
    }
    // A prepare gets its version and its checks, joined with commas (its empty stdout: no
    // findings).
    let rec = m1
        .run_ok(
            &Req::new("prepare", K::Prepare)
                .with_version("3.1.0")
                .with_checks(["installConfig", "scheduledJobs", "gateways"]),
        )
        .await?;
    assert!(rec.findings.is_empty(), "{:?}", rec.findings);
    assert_eq!(
        env_of("prepare")?,
        expect(
            "prepare",
            "prepare",
            &[
                ("BATON_VERSION", "3.1.0"),
                ("BATON_CHECKS", "installConfig,scheduledJobs,gateways")
            ]
        )
    );
    // Paths of the files the agent wrote, the key's among them; never a trust path unasked.
    let cert = fx.pki.mesh_ca.issue(&CertSpec::member("m1"))?;
    m1.run_ok(
        &Req::new("cert", K::InstallCertificate).with_certificate(&cert.cert_pem, &cert.key_pem),
    )
    .await?;
    let env = env_of("cert")?;
    let (cert_path, key_path) = (
        data_dir.join("exec/cert.pem").display().to_string(),
        data_dir.join("exec/key.pem").display().to_string(),
    );
    assert_eq!(
        env,
        expect(
            "cert",
            "install-certificate",
            &[
                ("BATON_CERT_PATH", &cert_path),
                ("BATON_KEY_PATH", &key_path)
            ]
        )
    );
    assert_eq!(std::fs::read_to_string(&cert_path)?, cert.cert_pem);
    Ok(())
}

/// `task` runs its configured command with `{task}` (and `{version}`) in its argv and
/// `BATON_TASK` in its environment, once per operation id; the status command may report the
/// tasks the application ran as `tasks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_task_runs_its_command_once_per_id_and_the_status_reports_tasks() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    let task = script(
        &host,
        "task.sh",
        &r#"cd HOST; echo "$1 $2 $BATON_TASK" >> ops.log
printf '{"id":"%s","task":"%s","version":"%s","at":"2026-01-01T10:00:00Z"}\n' "$BATON_OPERATION_ID" "$1" "$2" >> tasks.jsonl"#
            .replace("HOST", &h),
    )?;
    let status = script(
        &host,
        "status.sh",
        &r#"cd HOST; printf '{"version":"1.0.0","tasks":[%s]}' "$(paste -sd, tasks.jsonl 2>/dev/null)""#
            .replace("HOST", &h),
    )?;
    let config = format!(
        r#"
statusCommand:
  command: ["{status}"]
operations:
  task: {{command: ["{task}", "{{task}}", "{{version}}"]}}
"#
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    let cfg = cfg.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;
    assert!(m1.status().await?.tasks.is_empty());

    let req = Req::new("upload-2.0.0", K::Task)
        .with_task("upload-content")
        .with_version("2.0.0");
    let rec = m1.run_ok(&req).await?;
    assert_eq!(rec.params.task.as_deref(), Some("upload-content"));
    let s = m1.status().await?;
    let listed: Vec<(&str, &str, Option<&str>, &str)> = s
        .tasks
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.task.as_str(),
                t.version.as_deref(),
                t.at.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(
            "upload-2.0.0",
            "upload-content",
            Some("2.0.0"),
            "2026-01-01T10:00:00Z"
        )]
    );
    // The same id again: the recorded operation, the command is not run a second time.
    let again = m1.client.submit(&req).await?;
    assert_eq!(again.finished_at, rec.finished_at);
    // This template needs {version}: a task without one is refused before anything runs.
    let e = refused(
        m1.client
            .submit(&Req::new("no-version", K::Task).with_task("upload-content")),
        "accepted",
    )
    .await?;
    assert_eq!(e.code(), Some("missing_param"), "{e}");
    m1.run_ok(
        &Req::new("upload-3.0.0", K::Task)
            .with_task("upload-content")
            .with_version("3.0.0"),
    )
    .await?;
    let log = std::fs::read_to_string(host.join("ops.log"))?;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "upload-content 2.0.0 upload-content",
            "upload-content 3.0.0 upload-content"
        ]
    );
    let s = m1.status().await?;
    let ids: Vec<&str> = s.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["upload-2.0.0", "upload-3.0.0"]);
    Ok(())
}

/// `stage-media` and `remove-media` run their configured commands with `{version}` (and
/// `BATON_VERSION`), once per operation id; the status command reports the staged versions as
/// `media`. A `media` the agent cannot trust (an entry that is no version, one listed twice,
/// more than `MAX_MEDIA`, the wrong type) raises StatusUnavailable and reports nothing staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_media_commands_get_the_version_and_the_status_reports_media() -> TestResult {
    use baton_agent::api::MAX_MEDIA;
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    // media.txt: the staged versions, one a line, oldest first.
    let stage = script(
        &host,
        "stage.sh",
        &r#"cd HOST; echo "stage $1 $BATON_VERSION" >> ops.log
grep -qx "$1" media.txt 2>/dev/null || echo "$1" >> media.txt"#
            .replace("HOST", &h),
    )?;
    let remove = script(
        &host,
        "remove.sh",
        &r#"cd HOST; echo "remove $1 $BATON_VERSION" >> ops.log; touch media.txt
grep -vx "$1" media.txt > media.new; mv media.new media.txt"#
            .replace("HOST", &h),
    )?;
    // override.json, when present, is the whole status.
    let status = script(
        &host,
        "status.sh",
        &r#"cd HOST; if [ -f override.json ]; then cat override.json; exit 0; fi
printf '{"version":"1.0.0","media":[%s]}' "$(sed 's/.*/"&"/' media.txt 2>/dev/null | paste -sd, -)""#
            .replace("HOST", &h),
    )?;
    let config = format!(
        r#"
statusCommand:
  command: ["{status}"]
operations:
  stage-media: {{command: ["{stage}", "{{version}}"]}}
  remove-media: {{command: ["{remove}", "{{version}}"]}}
"#
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    let cfg = cfg.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;
    let s = m1.status().await?;
    assert!(s.media.is_empty(), "{:?}", s.media);
    assert!(!has_alarm(&s, "StatusUnavailable"), "{:?}", s.alarms);

    let req = Req::new("stage-2.0.0", K::StageMedia).with_version("2.0.0");
    let rec = m1.run_ok(&req).await?;
    assert_eq!(rec.params.version.as_deref(), Some("2.0.0"));
    assert_eq!(m1.status().await?.media, ["2.0.0"]);
    // The same id again: the recorded operation; the command does not run a second time.
    let again = m1.client.submit(&req).await?;
    assert_eq!(again.finished_at, rec.finished_at);
    m1.run_ok(&Req::new("stage-2.1.0", K::StageMedia).with_version("2.1.0"))
        .await?;
    assert_eq!(m1.status().await?.media, ["2.0.0", "2.1.0"]);
    m1.run_ok(&Req::new("rm-2.0.0", K::RemoveMedia).with_version("2.0.0"))
        .await?;
    assert_eq!(m1.status().await?.media, ["2.1.0"]);
    let log = std::fs::read_to_string(host.join("ops.log"))?;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "stage 2.0.0 2.0.0",
            "stage 2.1.0 2.1.0",
            "remove 2.0.0 2.0.0"
        ]
    );

    // What the status command reports is checked: one bad entry and nothing is trusted.
    let nine: Vec<String> = (0..=MAX_MEDIA).map(|i| format!("2.{i}.0")).collect();
    let bad: [(serde_json::Value, &str); 5] = [
        (
            serde_json::json!(["2.1.0", "not a version"]),
            "status media: version",
        ),
        (serde_json::json!(["2.1.0", ""]), "status media: version"),
        (serde_json::json!(["2.1.0", "2.1.0"]), "lists 2.1.0 twice"),
        (serde_json::json!(nine), "at most 8"),
        (serde_json::json!("2.1.0"), "invalid JSON"),
    ];
    for (media, want) in bad {
        let body = serde_json::json!({"version": "1.0.0", "media": media});
        std::fs::write(host.join("override.json"), body.to_string())?;
        let s = wait_until(
            &format!("StatusUnavailable for {media}"),
            CONVERGE,
            || async {
                let s = m1.client.status().await.ok()?;
                let alarm = s.alarms.iter().find(|a| a.name == "StatusUnavailable")?;
                let message = alarm.message.clone().unwrap_or_default();
                message.contains(want).then_some((s, message))
            },
        )
        .await?;
        let (s, message) = s;
        assert!(s.media.is_empty(), "{media}: {:?}", s.media);
        assert_eq!(s.health, Health::Critical, "{media}");
        assert!(message.len() < 1024, "{message}");
    }
    std::fs::remove_file(host.join("override.json"))?;
    let s = wait_until("the status command trusted again", CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        (!has_alarm(&s, "StatusUnavailable")).then_some(s)
    })
    .await?;
    assert_eq!(s.media, ["2.1.0"]);
    Ok(())
}

/// The status `m1` reports once its StatusUnavailable alarm names `want` (the KPIs are cached
/// with the status for 0.5 s, so a changed output shows a moment later), with that message.
async fn unavailable_with(
    m1: &Agent,
    want: &str,
) -> TestResult<(baton_agent::api::MemberStatus, String)> {
    wait_until(
        &format!("StatusUnavailable naming {want:?}"),
        CONVERGE,
        || async {
            let s = m1.client.status().await.ok()?;
            let alarm = s.alarms.iter().find(|a| a.name == "StatusUnavailable")?;
            let message = alarm.message.clone().unwrap_or_default();
            message.contains(want).then_some((s, message))
        },
    )
    .await
}

/// The KPIs `m1` reports once they are `want` and no StatusUnavailable is raised.
async fn kpis_become(
    m1: &Agent,
    want: &BTreeMap<String, f64>,
) -> TestResult<baton_agent::api::MemberStatus> {
    wait_until(&format!("KPIs {want:?}"), CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        (s.kpis == *want && !has_alarm(&s, "StatusUnavailable")).then_some(s)
    })
    .await
}

fn kpis_of(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `kpisCommand` prints the application's KPIs as a JSON object or as `name value` lines;
/// they are the member's KPIs (the status command's `kpis` is then not used). An output the
/// agent refuses (a bad name, a value that is no finite number, a name twice, more than
/// `MAX_KPIS`, too much output) or a failing command reports no KPI at all and raises
/// StatusUnavailable naming the problem; a valid output clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_kpis_command_reports_kpis_and_refuses_invalid_output() -> TestResult {
    use baton_agent::api::MAX_KPIS;
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    // kpis.out is what the command prints; with a file `fail`, it fails.
    let kpis = script(
        &host,
        "kpis.sh",
        &r#"cd HOST; if [ -f fail ]; then echo "no metrics backend" >&2; exit 3; fi; cat kpis.out"#
            .replace("HOST", &h),
    )?;
    let status = script(
        &host,
        "status.sh",
        r#"printf '{"version":"1.0.0","role":"Active","serving":true,"kpis":{"fromStatus":1}}'"#,
    )?;
    let config = format!(
        r#"
statusCommand:
  command: ["{status}"]
kpisCommand:
  command: ["{kpis}"]
  timeoutSeconds: 10
"#
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    std::fs::write(
        host.join("kpis.out"),
        r#"{"writeRate": 120.5, "errorCount": 0}"#,
    )?;
    let cfg = cfg.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;

    // JSON: the command's KPIs, not the status command's.
    let s = kpis_become(&m1, &kpis_of(&[("writeRate", 120.5), ("errorCount", 0.0)])).await?;
    assert_eq!(s.version, "1.0.0");
    assert!(!s.kpis.contains_key("fromStatus"), "{:?}", s.kpis);
    // Lines.
    std::fs::write(
        host.join("kpis.out"),
        "writeRate 99\n\nlatency.p99_ms\t12.25\nerrorCount -0\n",
    )?;
    kpis_become(
        &m1,
        &kpis_of(&[
            ("writeRate", 99.0),
            ("latency.p99_ms", 12.25),
            ("errorCount", 0.0),
        ]),
    )
    .await?;
    // MAX_KPIS of them, with the longest names (about 2.5 KiB of output).
    let many: BTreeMap<String, f64> = (0..MAX_KPIS)
        .map(|i| (format!("k{i:02}{}", "x".repeat(60)), i as f64 + 0.5))
        .collect();
    let lines: String = many.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(host.join("kpis.out"), &lines)?;
    kpis_become(&m1, &many).await?;

    let over: String = (0..=MAX_KPIS).map(|i| format!("k{i} 1\n")).collect();
    let too_big = format!("writeRate 1\n{}", "# padding\n".repeat(2_000));
    let bad: [(&str, &str); 9] = [
        ("writeRate 1\n9lives 2\n", "KPI name \"9lives\""),
        (
            r#"{"writeRate": 1, "bad/name": 2}"#,
            "KPI name \"bad/name\"",
        ),
        ("writeRate fast\n", "not a number"),
        (r#"{"writeRate": "12"}"#, "not a number"),
        ("writeRate inf\n", "not a finite number"),
        ("writeRate 1\nwriteRate 2\n", "twice"),
        ("writeRate 1 2\n", "not `name value`"),
        (&over, "33 KPIs; at most 32"),
        (&too_big, "printed more than 16384 bytes"),
    ];
    for (output, want) in bad {
        std::fs::write(host.join("kpis.out"), output)?;
        let (s, message) = unavailable_with(&m1, want).await?;
        assert!(s.kpis.is_empty(), "{want}: {:?}", s.kpis);
        assert_eq!(s.health, Health::Critical, "{want}");
        assert!(message.starts_with("kpis command"), "{message}");
        assert!(message.len() < 1024, "{} bytes", message.len());
        // The rest of the status is still the status command's.
        assert_eq!((s.version.as_str(), s.role), ("1.0.0", Role::Active));
    }
    std::fs::write(host.join("kpis.out"), "writeRate 3\n")?;
    kpis_become(&m1, &kpis_of(&[("writeRate", 3.0)])).await?;
    // A failing command: no KPIs, its exit code and stderr in the alarm.
    std::fs::write(host.join("fail"), "")?;
    let (s, message) = unavailable_with(&m1, "kpis command failed (exit Some(3))").await?;
    assert!(s.kpis.is_empty(), "{:?}", s.kpis);
    assert!(message.contains("no metrics backend"), "{message}");
    std::fs::remove_file(host.join("fail"))?;
    kpis_become(&m1, &kpis_of(&[("writeRate", 3.0)])).await?;
    Ok(())
}

/// Without a `kpisCommand`, the status command's `kpis` (else `status.kpis` of the config)
/// are the member's, checked the same way. A status of more than 2 KiB (32 KPIs with long
/// names) is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_status_command_may_report_kpis() -> TestResult {
    use baton_agent::api::MAX_KPIS;
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    let status = script(
        &host,
        "status.sh",
        &r#"cd HOST; if [ -f status.json ]; then cat status.json; else printf '{"version":"1.0.0"}'; fi"#
            .replace("HOST", &h),
    )?;
    let config = format!(
        r#"
statusCommand:
  command: ["{status}"]
status:
  kpis: {{fixedKpi: 7}}
"#
    );
    let cfg = fx.path().join("exec.yaml");
    std::fs::write(&cfg, config)?;
    let cfg = cfg.display().to_string();
    let m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg])
        .await?;
    // The status command says nothing of KPIs: the fixed ones.
    kpis_become(&m1, &kpis_of(&[("fixedKpi", 7.0)])).await?;

    let write_status = |kpis: serde_json::Value| {
        let body = serde_json::json!({"version": "1.0.0", "kpis": kpis});
        std::fs::write(host.join("status.json"), body.to_string())
    };
    write_status(serde_json::json!({"writeRate": 5, "replicationLag": 0.25}))?;
    kpis_become(
        &m1,
        &kpis_of(&[("writeRate", 5.0), ("replicationLag", 0.25)]),
    )
    .await?;
    let many: BTreeMap<String, f64> = (0..MAX_KPIS)
        .map(|i| (format!("k{i:02}{}", "y".repeat(60)), -(i as f64)))
        .collect();
    write_status(serde_json::json!(many))?;
    assert!(std::fs::metadata(host.join("status.json"))?.len() > 2048);
    kpis_become(&m1, &many).await?;

    let over: BTreeMap<String, f64> = (0..=MAX_KPIS).map(|i| (format!("k{i}"), 1.0)).collect();
    // One bad entry and none is reported. A status that is no valid JSON at all is no
    // status: every field falls back to `status:`, the KPIs as well.
    let fixed = kpis_of(&[("fixedKpi", 7.0)]);
    let none = BTreeMap::new();
    let bad: [(serde_json::Value, &str, &BTreeMap<String, f64>); 3] = [
        (
            serde_json::json!({"writeRate": 1, "9lives": 2}),
            "status kpis: KPI name \"9lives\"",
            &none,
        ),
        (
            serde_json::json!(over),
            "status kpis: 33 KPIs; at most 32",
            &none,
        ),
        (
            serde_json::json!({"writeRate": "fast"}),
            "status command printed invalid JSON",
            &fixed,
        ),
    ];
    for (kpis, want, reported) in bad {
        write_status(kpis)?;
        let (s, _) = unavailable_with(&m1, want).await?;
        assert_eq!(s.kpis, *reported, "{want}");
        assert_eq!(s.health, Health::Critical, "{want}");
    }
    // A status command's output is bounded too.
    let huge = serde_json::json!({"version": "1.0.0", "padding": "p".repeat(70_000)});
    std::fs::write(host.join("status.json"), huge.to_string())?;
    let (s, message) =
        unavailable_with(&m1, "status command printed more than 65536 bytes").await?;
    assert_eq!((s.version.as_str(), &s.kpis), ("unknown", &fixed));
    assert!(message.len() < 1024, "{} bytes", message.len());
    std::fs::remove_file(host.join("status.json"))?;
    kpis_become(&m1, &kpis_of(&[("fixedKpi", 7.0)])).await?;
    Ok(())
}

/// `prepare` runs `operations.prepare` with `{version}`/`{checks}` (and `BATON_VERSION`,
/// `BATON_CHECKS`), once per id. Exit 0: stdout is the findings, a JSON array or lines, empty
/// for none, at most 32 recorded; blocking findings still succeed. Output that does not
/// parse, too much of it, or a non-zero exit fails the operation with a bounded message and
/// no findings. Without `operations.prepare`, a prepare is refused like any unconfigured kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prepare_records_the_findings_its_command_prints() -> TestResult {
    use baton_agent::api::{Finding, FindingSeverity};
    let fx = Fixture::new(&["m1"])?;
    let host = fx.path().join("host");
    std::fs::create_dir_all(&host)?;
    let h = host.display().to_string();
    // Prints out.txt, err.txt on stderr, exits with the code in exit.txt (0 without one).
    let prepare = script(
        &host,
        "prepare.sh",
        &r#"cd HOST; echo "$1 $2 $BATON_VERSION $BATON_CHECKS" >> args.log
cat out.txt 2>/dev/null; cat err.txt >&2 2>/dev/null; exit "$(cat exit.txt 2>/dev/null || echo 0)""#
            .replace("HOST", &h),
    )?;
    let status = script(
        &host,
        "status.sh",
        r#"echo '{"version":"1.0.0","role":"Active","serving":true}'"#,
    )?;
    let cfg = fx.path().join("exec.yaml");
    let without = format!(
        "statusCommand: {{command: [\"{status}\"]}}\noperations:\n  backup: {{command: [\"true\"]}}\n"
    );
    std::fs::write(&cfg, &without)?;
    let cfg_arg = cfg.display().to_string();
    let mut m1 = fx
        .start("m1", &["--backend", "exec", "--exec-config", &cfg_arg])
        .await?;
    let req = |id: &str| {
        Req::new(id, K::Prepare)
            .with_version("2.0.0")
            .with_checks(["installConfig", "gateways"])
    };
    let e = refused(
        m1.client.submit(&req("unconfigured")),
        "a prepare without a command",
    )
    .await?;
    assert_eq!(
        (e.status(), e.code()),
        (Some(400), Some("unsupported_operation")),
        "{e}"
    );
    assert!(m1.client.operations().await?.is_empty());

    std::fs::write(
        &cfg,
        format!(
            "{without}  prepare: {{command: [\"{prepare}\", \"{{version}}\", \"{{checks}}\"]}}\n"
        ),
    )?;
    m1.restart(&[]).await?;
    let out = |text: &str| std::fs::write(host.join("out.txt"), text);

    // JSON, severities in either case.
    out(
        r#"[{"check": "installConfig", "severity": "Blocking", "code": "ConfigDrift",
             "message": "max_connections is 200 here, 100 in the install config"},
            {"check": "gateways", "severity": "warning", "code": "GatewaySlow",
             "message": "gw-2 answers in 900 ms"}]"#,
    )?;
    let json = m1.run_ok(&req("prep-json")).await?;
    let want = vec![
        Finding::new(
            "installConfig",
            FindingSeverity::Blocking,
            "ConfigDrift",
            "max_connections is 200 here, 100 in the install config",
        ),
        Finding::new(
            "gateways",
            FindingSeverity::Warning,
            "GatewaySlow",
            "gw-2 answers in 900 ms",
        ),
    ];
    assert_eq!(json.findings, want);
    assert!(
        json.message
            .contains("2 finding(s): 1 blocking, 1 warning(s)"),
        "{}",
        json.message
    );
    assert_eq!(json.params.checks, ["installConfig", "gateways"]);
    // Once per id: the same id is its record, the command does not run again.
    assert_eq!(m1.client.submit(&req("prep-json")).await?, json);
    let log = std::fs::read_to_string(host.join("args.log"))?;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["2.0.0 installConfig,gateways 2.0.0 installConfig,gateways"]
    );

    // Lines, comments and blank lines ignored, the message the rest of the line.
    out(
        "# preparation checks of 2.0.0\n\nblocking installConfig ConfigDrift max_connections is 200 here, 100 in the install config\nWarning gateways GatewaySlow gw-2 answers in 900 ms\n",
    )?;
    let lines = m1.run_ok(&req("prep-lines")).await?;
    assert_eq!(lines.findings, want);
    // Nothing printed: no findings.
    out("")?;
    let none = m1.run_ok(&req("prep-none")).await?;
    assert!(none.findings.is_empty(), "{:?}", none.findings);
    assert!(none.message.contains("no findings"), "{}", none.message);
    // 40 lines: 31 recorded and the truncation warning; long messages cut.
    let many: String = (0..40)
        .map(|i| format!("warning gateways Gateway{i}Slow {}\n", "x".repeat(400)))
        .collect();
    out(&many)?;
    let bulk = m1.run_ok(&req("prep-bulk")).await?;
    assert_eq!(bulk.findings.len(), 32);
    assert_eq!(bulk.findings[30].code, "Gateway30Slow");
    assert_eq!(bulk.findings[31].code, "FindingsTruncated");
    assert!(
        bulk.findings
            .iter()
            .all(|f| f.message.chars().count() <= 256)
    );
    assert_eq!(bulk.findings[0].message.chars().count(), 256);

    // Output that is not findings fails the operation, naming the line; no findings.
    let huge = "y".repeat(30_000);
    let bad: [(String, &str); 6] = [
        (
            "warning gateways GatewaySlow slow\nblocking gateways\n".into(),
            "line 2 \"blocking gateways\" is not `SEVERITY CHECK CODE MESSAGE`",
        ),
        (
            "fatal gateways GatewayDown gw-1".into(),
            "line 1: severity \"fatal\" must be blocking or warning",
        ),
        (
            "\nwarning gate_ways GatewaySlow slow".into(),
            "line 2: check \"gate_ways\"",
        ),
        (
            "warning gateways Gateway-Slow slow".into(),
            "line 1: code \"Gateway-Slow\"",
        ),
        (
            r#"[{"check": "gateways", "severity": "Fatal", "code": "C", "message": "m"}]"#.into(),
            "finding 1: severity \"Fatal\"",
        ),
        (format!("warning gateways {huge} m"), "line 1: code \"yyy"),
    ];
    for (i, (output, want)) in bad.iter().enumerate() {
        out(output)?;
        let rec = m1.run(&req(&format!("prep-bad-{i}"))).await?;
        assert_eq!(rec.state, OperationState::Failed, "{want}");
        assert!(
            rec.message
                .starts_with("prepare printed findings that do not parse: "),
            "{}",
            rec.message
        );
        assert!(rec.message.contains(want), "{want}: {}", rec.message);
        assert!(rec.message.len() < 1024, "{} bytes", rec.message.len());
        assert!(rec.findings.is_empty(), "{:?}", rec.findings);
    }
    // More than 64 KiB on stdout.
    out(&"warning gateways GatewaySlow slow\n".repeat(3000))?;
    let rec = m1.run(&req("prep-too-much")).await?;
    assert_eq!(rec.state, OperationState::Failed);
    assert!(
        rec.message.contains("printed more than 65536 bytes"),
        "{}",
        rec.message
    );
    assert!(rec.findings.is_empty());

    // A non-zero exit: the checks could not run; the tail of stderr says why.
    out("warning gateways GatewaySlow slow\n")?;
    std::fs::write(
        host.join("err.txt"),
        format!(
            "{}\ncannot reach the gateway registry\n",
            "z".repeat(10_000)
        ),
    )?;
    std::fs::write(host.join("exit.txt"), "4")?;
    let rec = m1.run(&req("prep-exit")).await?;
    assert_eq!(rec.state, OperationState::Failed);
    assert!(
        rec.message.starts_with("prepare failed with exit code 4"),
        "{}",
        rec.message
    );
    assert!(
        rec.message.contains("cannot reach the gateway registry"),
        "{}",
        rec.message
    );
    assert!(rec.message.len() < 5000, "{} bytes", rec.message.len());
    assert!(rec.findings.is_empty(), "{:?}", rec.findings);
    let s = m1.status().await?;
    assert!(has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    // The records keep their findings across a restart.
    m1.restart(&[]).await?;
    assert_eq!(m1.client.operation("prep-json").await?, json);
    assert_eq!(m1.client.operation("prep-bulk").await?, bulk);
    Ok(())
}
