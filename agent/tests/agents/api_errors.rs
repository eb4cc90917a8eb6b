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

/// Method, path and body (none when empty) of a request.
type Request<'a> = (Method, &'a str, &'a [u8]);

/// Status and error code of a refusal.
type Refusal<'a> = (StatusCode, &'a str);

/// `call`, expecting the refusal `want` with a message.
async fn expect_error(
    t: &Target,
    what: &str,
    (method, path, body): Request<'_>,
    want: Refusal<'_>,
) -> TestResult {
    let (status, e) = call(t, method, path, body).await?;
    assert_eq!((status, e.error.as_str()), want, "{what}: {}", e.message);
    assert!(!e.message.is_empty(), "{what}: no message");
    Ok(())
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

    // The one refusal that is not a 400: a body over the limit.
    expect_error(
        &t,
        "oversized",
        (Method::POST, "/v1/operations", &vec![b' '; 2 * 1024 * 1024]),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    )
    .await?;

    // Everything else malformed is a 400 naming what is wrong.
    let long_id = format!(r#"{{"id":"{}","kind":"promote"}}"#, "x".repeat(129));
    let own_source = format!(r#"{{"id":"a","kind":"demote","source":"{}"}}"#, m1.data);
    let ca = baton_agent::pki::CertAuthority::generate("keep-trust test CA")?;
    let keep = |fps: Vec<String>| {
        serde_json::json!({"id": "a", "kind": "install-trust", "trustPem": ca.cert_pem(), "keepTrust": fps})
            .to_string()
    };
    let keep_short = keep(vec!["abc".into()]);
    let keep_upper = keep(vec!["A".repeat(64)]);
    let keep_many = keep((0..17).map(|i| format!("{i:064x}")).collect());
    let long_task = format!(r#"{{"id":"a","kind":"task","task":"{}"}}"#, "t".repeat(64));
    let long_media = format!(
        r#"{{"id":"a","kind":"stage-media","version":"{}"}}"#,
        "9".repeat(65)
    );
    let checks = |names: Vec<String>| {
        serde_json::json!({"id": "a", "kind": "prepare", "version": "2.0.0", "checks": names})
            .to_string()
    };
    let checks_many = checks((0..17).map(|i| format!("check{i}")).collect());
    let checks_long = checks(vec!["c".repeat(64)]);
    // One row a case: what, the body, the error code.
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], &str)] = &[
        ("malformed JSON", b"{\"id\": \"x\", ", "malformed_json"),
        ("not an object", b"[1,2]", "invalid_request"),
        ("unknown kind", br#"{"id":"a","kind":"reboot-the-world"}"#, "unknown_kind"),
        ("missing kind", br#"{"id":"a"}"#, "missing_param"),
        ("missing id", br#"{"kind":"promote"}"#, "missing_param"),
        ("bad id", br#"{"id":"no spaces allowed","kind":"promote"}"#, "invalid_id"),
        ("long id", long_id.as_bytes(), "invalid_id"),
        ("upgrade without version", br#"{"id":"a","kind":"upgrade"}"#, "missing_param"),
        ("sync-config without source", br#"{"id":"a","kind":"sync-config"}"#, "missing_param"),
        ("install-trust without PEM", br#"{"id":"a","kind":"install-trust"}"#, "missing_param"),
        ("install-trust garbage", br#"{"id":"a","kind":"install-trust","trustPem":"nope"}"#, "invalid_param"),
        ("install-trust: PEM framing around garbage", br#"{"id":"a","kind":"install-trust","trustPem":"-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"}"#, "invalid_param"),
        ("id of the wrong type", br#"{"id":17,"kind":"promote"}"#, "invalid_request"),
        ("duplicate key", br#"{"id":"a","kind":"backup","kind":"promote"}"#, "invalid_request"),
        ("duplicate id", br#"{"id":"a","id":"b","kind":"promote"}"#, "invalid_request"),
        ("bad version", br#"{"id":"a","kind":"upgrade","version":"1.0; rm -rf /"}"#, "invalid_param"),
        ("bad source", br#"{"id":"a","kind":"demote","source":"nowhere"}"#, "invalid_param"),
        ("bad role", br#"{"id":"a","kind":"demote","role":"emperor"}"#, "invalid_request"),
        ("stray param", br#"{"id":"a","kind":"promote","version":"2"}"#, "unexpected_param"),
        ("unknown field", br#"{"id":"a","kind":"promote","force":true}"#, "invalid_request"),
        ("unknown component", br#"{"id":"a","kind":"upgrade","version":"2","component":"kernel"}"#, "unknown_component"),
        ("own endpoint as source", own_source.as_bytes(), "invalid_param"),
        ("keepTrust not a fingerprint", keep_short.as_bytes(), "invalid_param"),
        ("keepTrust in upper case", keep_upper.as_bytes(), "invalid_param"),
        ("keepTrust too long", keep_many.as_bytes(), "invalid_param"),
        ("keepTrust on another kind", br#"{"id":"a","kind":"restart","keepTrust":["00"]}"#, "unexpected_param"),
        ("task without its name", br#"{"id":"a","kind":"task","version":"2.0.0"}"#, "missing_param"),
        ("task with an empty name", br#"{"id":"a","kind":"task","task":""}"#, "missing_param"),
        ("task name not a DNS label", br#"{"id":"a","kind":"task","task":"Upload_Content"}"#, "invalid_param"),
        ("task name too long", long_task.as_bytes(), "invalid_param"),
        ("task name of the wrong type", br#"{"id":"a","kind":"task","task":["x"]}"#, "invalid_request"),
        ("task with a bad version", br#"{"id":"a","kind":"task","task":"x","version":"1 2"}"#, "invalid_param"),
        ("task with a component", br#"{"id":"a","kind":"task","task":"x","component":"os"}"#, "unexpected_param"),
        ("task on another kind", br#"{"id":"a","kind":"backup","task":"x"}"#, "unexpected_param"),
        ("stage-media without a version", br#"{"id":"a","kind":"stage-media"}"#, "missing_param"),
        ("stage-media with an empty version", br#"{"id":"a","kind":"stage-media","version":""}"#, "missing_param"),
        ("stage-media with a bad version", br#"{"id":"a","kind":"stage-media","version":"2.0.0; rm -rf /"}"#, "invalid_param"),
        ("stage-media with a long version", long_media.as_bytes(), "invalid_param"),
        ("stage-media version of the wrong type", br#"{"id":"a","kind":"stage-media","version":2}"#, "invalid_request"),
        ("stage-media with a peer", br#"{"id":"a","kind":"stage-media","version":"2.0.0","peer":"m2"}"#, "unexpected_param"),
        ("stage-media with a task", br#"{"id":"a","kind":"stage-media","version":"2.0.0","task":"x"}"#, "unexpected_param"),
        ("stage-media with a component", br#"{"id":"a","kind":"stage-media","version":"2.0.0","component":"os"}"#, "unexpected_param"),
        ("stage-media with an unknown field", br#"{"id":"a","kind":"stage-media","version":"2.0.0","media":"x"}"#, "invalid_request"),
        ("remove-media without a version", br#"{"id":"a","kind":"remove-media"}"#, "missing_param"),
        ("remove-media with a bad version", br#"{"id":"a","kind":"remove-media","version":"../2.0.0"}"#, "invalid_param"),
        ("remove-media with a source", br#"{"id":"a","kind":"remove-media","version":"2.0.0","source":"127.0.0.1:7001"}"#, "unexpected_param"),
        ("remove-media with a task", br#"{"id":"a","kind":"remove-media","version":"2.0.0","task":"x"}"#, "unexpected_param"),
        ("media kind in snake case", br#"{"id":"a","kind":"stage_media","version":"2.0.0"}"#, "unknown_kind"),
        ("prepare without a version", br#"{"id":"a","kind":"prepare","checks":["gateways"]}"#, "missing_param"),
        ("prepare with an empty version", br#"{"id":"a","kind":"prepare","version":"","checks":["gateways"]}"#, "missing_param"),
        ("prepare with a bad version", br#"{"id":"a","kind":"prepare","version":"2.0.0 now","checks":["gateways"]}"#, "invalid_param"),
        ("prepare without checks", br#"{"id":"a","kind":"prepare","version":"2.0.0"}"#, "missing_param"),
        ("prepare with empty checks", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":[]}"#, "missing_param"),
        ("prepare with 17 checks", checks_many.as_bytes(), "invalid_param"),
        ("prepare with a check twice", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["gateways","jobs","gateways"]}"#, "invalid_param"),
        ("prepare with a bad check name", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["install_config"]}"#, "invalid_param"),
        ("prepare with a check name of a digit first", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["1st"]}"#, "invalid_param"),
        ("prepare with an empty check name", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":[""]}"#, "invalid_param"),
        ("prepare with a long check name", checks_long.as_bytes(), "invalid_param"),
        ("prepare checks of the wrong type", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":"gateways"}"#, "invalid_request"),
        ("prepare check of the wrong type", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":[1]}"#, "invalid_request"),
        ("prepare with a task", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["gateways"],"task":"x"}"#, "unexpected_param"),
        ("prepare with a component", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["gateways"],"component":"os"}"#, "unexpected_param"),
        ("prepare with findings", br#"{"id":"a","kind":"prepare","version":"2.0.0","checks":["gateways"],"findings":[]}"#, "invalid_request"),
        ("checks on stage-media", br#"{"id":"a","kind":"stage-media","version":"2.0.0","checks":["gateways"]}"#, "unexpected_param"),
        ("checks on preflight", br#"{"id":"a","kind":"preflight","version":"2.0.0","checks":["gateways"]}"#, "unexpected_param"),
        ("checks on backup", br#"{"id":"a","kind":"backup","checks":["gateways"]}"#, "unexpected_param"),
        ("prepare kind capitalised", br#"{"id":"a","kind":"Prepare","version":"2.0.0","checks":["gateways"]}"#, "unknown_kind"),
    ];
    for (what, body, code) in cases {
        let request = (Method::POST, "/v1/operations", *body);
        expect_error(&t, what, request, (StatusCode::BAD_REQUEST, code)).await?;
    }
    // A malformed task name is quoted as an excerpt, in a message naming the field.
    let huge_task = format!(
        r#"{{"id":"a","kind":"task","task":"{}"}}"#,
        "X".repeat(100_000)
    );
    let (status, e) = call(&t, Method::POST, "/v1/operations", huge_task.as_bytes()).await?;
    assert_eq!(
        (status, e.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_param")
    );
    assert!(
        e.message.starts_with("task ") && e.message.contains("DNS label") && e.message.len() < 512,
        "{}",
        e.message
    );

    // Routing and fault-body errors.
    let routing: [(Request, Refusal); 17] = [
        (
            (Method::GET, "/v1/nothing", b""),
            (StatusCode::NOT_FOUND, "not_found"),
        ),
        (
            (Method::DELETE, "/v1/status", b""),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        (
            (Method::GET, "/v1/operations/nope", b""),
            (StatusCode::NOT_FOUND, "not_found"),
        ),
        (
            (Method::GET, "/v1/operations/bad%20id", b""),
            (StatusCode::BAD_REQUEST, "invalid_id"),
        ),
        (
            (Method::PUT, "/v1/faults", br#"{"hangUpgrades":true}"#),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"hangUpgrade":true,"hangUpgrade":false}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (Method::PUT, "/v1/faults", br#"{"upgradeSeconds":-1}"#),
            (StatusCode::BAD_REQUEST, "invalid_param"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"kpiOffsets":{"bad name":1}}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_param"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"kpiOffsets":{"writeRate":"1"}}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"kpiOffsets":{"writeRate":1e999}}"#,
            ),
            (StatusCode::BAD_REQUEST, "malformed_json"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"kpiOffsets":["writeRate",1]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"prepareFindings":[{"check":"bad check","severity":"Warning","code":"C","message":"m"}]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_param"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"prepareFindings":[{"check":"c","severity":"Warning","code":"Not-Camel","message":"m"}]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_param"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"prepareFindings":[{"check":"c","severity":"Warning","code":"C","message":""}]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_param"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"prepareFindings":[{"check":"c","severity":"warning","code":"C","message":"m"}]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (
                Method::PUT,
                "/v1/faults",
                br#"{"prepareFindings":[{"check":"c","severity":"Warning","code":"C"}]}"#,
            ),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
        (
            (Method::PUT, "/v1/faults", br#"{"failPrepare":"yes"}"#),
            (StatusCode::BAD_REQUEST, "invalid_request"),
        ),
    ];
    for ((method, path, body), want) in routing {
        let what = format!("{method} {path} {}", String::from_utf8_lossy(body));
        expect_error(&t, &what, (method, path, body), want).await?;
    }

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
    expect_error(
        &t,
        "another body under id up-1",
        (
            Method::POST,
            "/v1/operations",
            br#"{"id":"up-1","kind":"upgrade","version":"3.0.0"}"#,
        ),
        (StatusCode::CONFLICT, "id_conflict"),
    )
    .await?;
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
    // Staged until the restart applies it; then presented.
    let before = m1.status().await?.certificate.map(|c| c.fingerprint);
    assert_ne!(before.as_deref(), Some(fresh.fingerprint.as_str()));
    m1.run_ok(&OperationRequest::new("restart-1", OperationKind::Restart))
        .await?;
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
