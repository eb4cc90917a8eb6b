//! The control API refuses what it must: unauthenticated clients, and every malformed or
//! out-of-order request, always with a machine-readable 4xx and no change of state.

use crate::common;

use std::time::Duration;

use baton_agent::api::{ErrorBody, Faults, OperationKind, OperationRequest, OperationState};
use baton_agent::client::{AgentClient, ClientError, ClientTls};
use baton_agent::http_client::Target;
use baton_agent::pki::{CertAuthority, CertSpec, IssuedCert, Validity};
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

fn raw(pki: &Pki, addr: &str) -> TestResult<Target> {
    Ok(Target::new(addr, Some(pki.control_client_config()?))?)
}

async fn call(
    t: &Target,
    method: Method,
    path: &str,
    body: &[u8],
) -> TestResult<(StatusCode, ErrorBody)> {
    let body = (!body.is_empty()).then(|| Bytes::copy_from_slice(body));
    let (status, bytes) = t
        .call(method, path, body, Duration::from_secs(30), 1 << 20)
        .await?;
    let parsed: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "{status}: not an error body ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    Ok((status, parsed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_rejects_strangers() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let pki = &fx.pki;
    let quick = baton_agent::client::CallPolicy {
        timeout: Duration::from_secs(20),
        retries: 0,
        ..Default::default()
    };

    // No client certificate at all.
    let no_cert =
        baton_agent::tls::client_config(pki.control_ca.cert_pem().as_bytes(), None, "test")?;
    let t = Target::new(&m1.control, Some(no_cert))?;
    let r = t
        .call(
            Method::GET,
            "/v1/status",
            None,
            Duration::from_secs(20),
            1 << 20,
        )
        .await;
    assert!(r.is_err(), "no client certificate must be refused: {r:?}");

    // A client trusting the agent's CA and presenting `cert`.
    let presenting = |cert: &IssuedCert| -> TestResult<AgentClient> {
        let tls = ClientTls::mtls(pki.control_ca.cert_pem(), &cert.cert_pem, &cert.key_pem);
        Ok(AgentClient::new(&m1.control, tls)?.with_policy(quick))
    };

    // A certificate from another CA.
    let other_ca = CertAuthority::generate("intruder CA")?;
    let other = other_ca.issue(&CertSpec::client("intruder"))?;
    let c = presenting(&other)?;
    let e = refused(c.status(), "other CA accepted").await?;
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");

    // An expired certificate from the right CA.
    let expired = pki
        .control_ca
        .issue(&CertSpec::client("old-operator").with_validity(Validity::Expired))?;
    let c = presenting(&expired)?;
    let e = refused(c.status(), "expired certificate accepted").await?;
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    let e = refused(
        c.submit(&OperationRequest::new("sneaky", OperationKind::Demote)),
        "expired certificate could submit",
    )
    .await?;
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");

    // Plain HTTP against the TLS port.
    let plain = AgentClient::new(&format!("http://{}", m1.control), ClientTls::Insecure)?
        .with_policy(quick);
    assert!(plain.status().await.is_err());

    // The operator's certificate works, and nothing above changed anything.
    let s = m1.status().await?;
    assert_eq!(s.role, baton_agent::api::Role::Active);
    assert!(m1.client.operations().await?.is_empty());
    // The data port also demands a certificate of the mesh CA: the control client is refused.
    let d = baton_agent::data::DataClient::new(&m1.data, pki.client_tls())?;
    assert!(d.put("k", "v").await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_machine_readable_errors_and_change_nothing() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&["--upgrade-seconds", "60"]).await?;
    let pki = &fx.pki;
    let t = raw(pki, &m1.control)?;
    let before = m1.status().await?;

    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            b"{\"id\": \"x\", ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "not an object",
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "oversized",
            vec![b' '; 2 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "unknown kind",
            br#"{"id":"a","kind":"reboot-the-world"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_kind",
        ),
        (
            "missing kind",
            br#"{"id":"a"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_param",
        ),
        (
            "missing id",
            br#"{"kind":"promote"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_param",
        ),
        (
            "bad id",
            br#"{"id":"no spaces allowed","kind":"promote"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "long id",
            format!(r#"{{"id":"{}","kind":"promote"}}"#, "x".repeat(129)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "upgrade without version",
            br#"{"id":"a","kind":"upgrade"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_param",
        ),
        (
            "sync-config without source",
            br#"{"id":"a","kind":"sync-config"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_param",
        ),
        (
            "install-trust without PEM",
            br#"{"id":"a","kind":"install-trust"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_param",
        ),
        (
            "install-trust garbage",
            br#"{"id":"a","kind":"install-trust","trustPem":"nope"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "install-trust: PEM framing around garbage",
            br#"{"id":"a","kind":"install-trust","trustPem":"-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "id of the wrong type",
            br#"{"id":17,"kind":"promote"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "duplicate key",
            br#"{"id":"a","kind":"backup","kind":"promote"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "duplicate id",
            br#"{"id":"a","id":"b","kind":"promote"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "bad version",
            br#"{"id":"a","kind":"upgrade","version":"1.0; rm -rf /"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "bad source",
            br#"{"id":"a","kind":"demote","source":"nowhere"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "bad role",
            br#"{"id":"a","kind":"demote","role":"emperor"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "stray param",
            br#"{"id":"a","kind":"promote","version":"2"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unexpected_param",
        ),
        (
            "unknown field",
            br#"{"id":"a","kind":"promote","force":true}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown component",
            br#"{"id":"a","kind":"upgrade","version":"2","component":"kernel"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_component",
        ),
        (
            "own endpoint as source",
            format!(r#"{{"id":"a","kind":"demote","source":"{}"}}"#, m1.data).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
    ];
    for (what, body, status, code) in &cases {
        let (got_status, e) = call(&t, Method::POST, "/v1/operations", body).await?;
        assert_eq!(
            (got_status, e.error.as_str()),
            (*status, *code),
            "{what}: {}",
            e.message
        );
        assert!(!e.message.is_empty());
    }

    // Routing errors.
    let (s, e) = call(&t, Method::GET, "/v1/nothing", b"").await?;
    assert_eq!((s, e.error.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (s, e) = call(&t, Method::DELETE, "/v1/status", b"").await?;
    assert_eq!(
        (s, e.error.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, e) = call(&t, Method::GET, "/v1/operations/nope", b"").await?;
    assert_eq!((s, e.error.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (s, e) = call(&t, Method::GET, "/v1/operations/bad%20id", b"").await?;
    assert_eq!(
        (s, e.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_id")
    );
    let (s, e) = call(&t, Method::PUT, "/v1/faults", br#"{"hangUpgrades":true}"#).await?;
    assert_eq!(
        (s, e.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (s, e) = call(
        &t,
        Method::PUT,
        "/v1/faults",
        br#"{"hangUpgrade":true,"hangUpgrade":false}"#,
    )
    .await?;
    assert_eq!(
        (s, e.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{}",
        e.message
    );
    let (s, e) = call(&t, Method::PUT, "/v1/faults", br#"{"upgradeSeconds":-1}"#).await?;
    assert_eq!(
        (s, e.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_param")
    );

    // Nothing was recorded or changed.
    assert!(m1.client.operations().await?.is_empty());
    assert_eq!(m1.client.faults().await?, Faults::default());
    let after = m1.status().await?;
    assert_eq!(
        (after.role, &after.version, after.serving),
        (before.role, &before.version, before.serving)
    );

    // Idempotency: the same request twice is one operation; a different body under the same
    // id is refused; another operation while one runs is refused, naming the running one.
    let up = OperationRequest::new("up-1", OperationKind::Upgrade).with_version("2.0.0");
    let first = m1.client.submit(&up).await?;
    assert_eq!(first.state, OperationState::Running);
    let again = m1.client.submit(&up).await?;
    assert_eq!(
        (again.id.as_str(), again.started_at),
        ("up-1", first.started_at)
    );
    let (s, e) = call(
        &t,
        Method::POST,
        "/v1/operations",
        br#"{"id":"up-1","kind":"upgrade","version":"3.0.0"}"#,
    )
    .await?;
    assert_eq!((s, e.error.as_str()), (StatusCode::CONFLICT, "id_conflict"));
    let e = refused(
        m1.client
            .submit(&OperationRequest::new("backup-1", OperationKind::Backup)),
        "second operation accepted while one runs",
    )
    .await?;
    assert_eq!(e.code(), Some("operation_running"));
    assert!(e.to_string().contains("up-1"), "{e}");
    let ops = m1.client.operations().await?;
    assert_eq!(ops.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_leak_into_records_status_or_logs() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let pki = &fx.pki;
    let fresh = pki.mesh_ca.issue(&CertSpec::member("m1-renewed"))?;
    let req = OperationRequest::new("cert-1", OperationKind::InstallCertificate)
        .with_certificate(&fresh.cert_pem, &fresh.key_pem);
    let rec = m1.run_ok(&req).await?;
    assert_eq!(
        rec.params.certificate_fingerprint.as_deref(),
        Some(fresh.fingerprint.as_str())
    );
    let status = m1.status().await?;
    assert_eq!(
        status.certificate.map(|c| c.fingerprint),
        Some(fresh.fingerprint.clone())
    );
    // Same id, same request: the existing record comes back.
    let again = m1.client.submit(&req).await?;
    assert_eq!(again.finished_at, rec.finished_at);

    let key_body: Vec<&str> = fresh
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let status_json = serde_json::to_string(&m1.status().await?)?;
    let ops_json = serde_json::to_string(&m1.client.operations().await?)?;
    let journal = std::fs::read_to_string(m1.data_dir.join("operations.json"))?;
    let log = m1.log_text();
    for (what, text) in [
        ("status", &status_json),
        ("operations", &ops_json),
        ("journal", &journal),
        ("log", &log),
    ] {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} mentions a private key"
        );
        for line in &key_body {
            assert!(!text.contains(line), "{what} contains key material");
        }
    }
    Ok(())
}
