//! `--data-advertise-host`: an agent bound to one address (0.0.0.0 in a pod) reports a data
//! endpoint its peers can dial, and that endpoint works as a replication source over the
//! member PKI, as the operator uses it in a switchover.

use crate::common;

use baton_agent::api::{OperationKind, OperationRequest};
use common::*;

fn port(addr: &str) -> TestResult<&str> {
    addr.rsplit_once(':')
        .map(|(_, p)| p)
        .ok_or_else(|| err(format!("no port in {addr:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_endpoint_is_reported_and_serves_a_switchover() -> TestResult {
    let fx = Fixture::new(&["a", "b"])?;
    let pki = &fx.pki;
    // The member certificates name `localhost` (and 127.0.0.1); the agents bind 127.0.0.1.
    let a = fx
        .start(
            "a",
            &["--role", "active", "--data-advertise-host", "localhost"],
        )
        .await?;
    let a_endpoint = a.status().await?.data_endpoint;
    assert_eq!(a_endpoint, format!("localhost:{}", port(&a.data)?));
    assert_ne!(a_endpoint, a.data, "the bound address must not be reported");

    let b = fx
        .start(
            "b",
            &[
                "--role",
                "standby",
                "--source",
                &a_endpoint,
                "--data-advertise-host",
                "localhost",
            ],
        )
        .await?;
    let b_endpoint = b.status().await?.data_endpoint;
    assert_eq!(b_endpoint, format!("localhost:{}", port(&b.data)?));

    // b follows a through the advertised name, over mutual TLS.
    let writer = a.data_client(pki.data_tls("a")?)?;
    writer.put("before", "switchover").await?;
    wait_caught_up(&b, &a).await?;

    // The switchover the operator performs: the old active follows the new one at the data
    // endpoint the new one reports.
    a.run_ok(&OperationRequest::new("adv-demote", OperationKind::Demote).with_source(&b_endpoint))
        .await?;
    b.run_ok(&OperationRequest::new(
        "adv-promote",
        OperationKind::Promote,
    ))
    .await?;
    let writer = b.data_client(pki.data_tls("b")?)?;
    writer.put("after", "switchover").await?;
    wait_caught_up(&a, &b).await?;
    let reader = a.data_client(pki.data_tls("a")?)?;
    assert_eq!(reader.get("after").await?.as_deref(), Some("switchover"));
    assert_eq!(reader.get("before").await?.as_deref(), Some("switchover"));
    let a_status = a.status().await?;
    assert_eq!(
        a_status.replication.source.as_deref(),
        Some(b_endpoint.as_str())
    );

    // The advertised endpoint is the member's own: naming it as a source is refused.
    let own = b
        .client
        .submit(&OperationRequest::new("adv-self", OperationKind::Demote).with_source(&b_endpoint))
        .await
        .expect_err("a member cannot follow itself");
    assert_eq!(own.code(), Some("invalid_param"), "{own}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_advertised_host_is_refused_at_startup() -> TestResult {
    let tmp = tempdir()?;
    for bad in ["demo host", "host:7444", ""] {
        let out = tokio::process::Command::new(binary())
            .args([
                "--member",
                "m1",
                "--data-dir",
                &tmp.path().join("m1").display().to_string(),
                "--insecure-http",
                "--data-advertise-host",
                bad,
            ])
            .output()
            .await?;
        assert!(!out.status.success(), "{bad:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--data-advertise-host"),
            "{bad:?}: error does not name the flag: {stderr}"
        );
        assert!(
            !tmp.path().join("m1").join("ready.json").exists(),
            "{bad:?}: the agent started"
        );
    }
    Ok(())
}
