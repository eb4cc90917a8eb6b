//! What an unauthenticated or misbehaving client can no longer do to the control API: exhaust
//! its descriptors, hold connections with unfinished requests, or make it echo (and log)
//! unbounded input.

use crate::common;

use std::time::{Duration, Instant};

use baton_agent::api::ErrorBody;
use baton_agent::client::{AgentClient, CallPolicy};
use baton_agent::http_client::Target;
use baton_agent::http_util::MAX_MESSAGE;
use common::*;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fresh client that tries once, within `timeout`.
fn fresh_client(agent: &Agent, pki: &Pki, timeout: Duration) -> TestResult<AgentClient> {
    Ok(
        AgentClient::new(&agent.control, pki.client_tls())?.with_policy(CallPolicy {
            timeout,
            retries: 0,
            ..Default::default()
        }),
    )
}

/// An authenticated TLS connection on which the test writes raw bytes.
async fn raw_tls(pki: &Pki, addr: &str) -> TestResult<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(pki.control_client_config()?);
    Ok(connector
        .connect(baton_agent::tls::server_name("127.0.0.1")?, tcp)
        .await?)
}

/// Reads until the server closes or `timeout` passes; returns what arrived and whether the
/// server closed.
async fn read_until_close<S: AsyncRead + Unpin>(s: &mut S, timeout: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn send_raw<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> TestResult {
    s.write_all(bytes).await?;
    s.flush().await?;
    Ok(())
}

/// The reported failure: with a 1,024 descriptor limit, 1,100 idle connections made the agent
/// fail `accept` until the 10 s handshake timeout closed them, so the operator could not get
/// in. Now the oldest idle (unauthenticated) ones are shed and the operator is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_descriptor_limit_do_not_lock_the_operator_out() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let pki = &fx.pki;
    let m1 = fx
        .start_with_nofile("m1", &["--role", "active"], Some(1024))
        .await?;
    m1.status().await?;

    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..1100 {
        // Connects complete in the kernel's accept queue even when the agent cannot accept.
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&m1.control)).await {
            Ok(Ok(mut s)) => {
                // Half send one byte (the start of a TLS record) and stop: those reach
                // `accept` at once and must be shed; the silent half are held back by
                // TCP_DEFER_ACCEPT.
                if i % 2 == 0 {
                    s.write_all(&[0x16]).await?;
                }
                idle.push(s)
            }
            Ok(Err(e)) => return Err(err(format!("connect {}: {e}", idle.len()))),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 1050, "only {} connections opened", idle.len());
    // Let the agent accept what it can.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new operator connection (the client opens one per call) gets in at once, well before
    // the flood's handshake timeout would have freed anything.
    let t0 = Instant::now();
    let status = fresh_client(&m1, pki, Duration::from_secs(4))?
        .status()
        .await;
    let took = t0.elapsed();
    println!(
        "{} idle connections opened in {:?}; a fresh operator status took {took:?}",
        idle.len(),
        started.elapsed()
    );
    let status = status.map_err(|e| err(format!("operator locked out after {took:?}: {e}")))?;
    assert_eq!(status.member, "m1");
    // The one-byte half exceeded every limit of a 1,024-descriptor agent: they were shed.
    let report = wait_until(
        "the agent's shedding report",
        Duration::from_secs(8),
        || async {
            m1.log_text()
                .lines()
                .find(|l| l.contains("control API: connection limits: shed"))
                .map(str::to_string)
        },
    )
    .await?;
    println!("{report}");
    drop(idle);
    Ok(())
}

/// What `send_unfinished` saw.
struct Unfinished {
    m1: Agent,
    /// What the agent answered.
    answer: String,
    /// Whether the agent closed the connection.
    closed: bool,
    /// How long the answer (or the wait) took from the send.
    took: Duration,
    /// Dropped after `m1`: it holds the agent's files.
    _fx: Fixture,
}

/// Starts `m1` Active with `extra`, sends it the unfinished request `partial` over the
/// operator's TLS and reads until the agent closes the connection or `wait` passes.
async fn send_unfinished(extra: &[&str], partial: &[u8], wait: Duration) -> TestResult<Unfinished> {
    let (fx, m1) = Fixture::active_m1(extra).await?;
    let mut s = raw_tls(&fx.pki, &m1.control).await?;
    let t0 = Instant::now();
    send_raw(&mut s, partial).await?;
    let (answer, closed) = read_until_close(&mut s, wait).await;
    Ok(Unfinished {
        m1,
        answer,
        closed,
        took: t0.elapsed(),
        _fx: fx,
    })
}

/// A client that declares a body and sends part of it is answered 408 and disconnected by the
/// body deadline; before, it held the connection for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_body_is_cut_by_the_body_deadline() -> TestResult {
    let u = send_unfinished(
        &["--body-timeout-seconds", "1"],
        b"POST /v1/operations HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"id\":",
        Duration::from_secs(8),
    )
    .await?;
    let (answer, took) = (&u.answer, u.took);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {took:?}: {answer:?}"
    );
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(u.closed, "the connection stayed open after the 408");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Nothing was recorded.
    assert!(u.m1.client.operations().await?.is_empty());
    Ok(())
}

/// A declared Content-Length above the limit is refused before any of the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_content_length_is_refused_up_front() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let pki = &fx.pki;
    for path in ["/v1/operations", "/v1/faults"] {
        let method = if path == "/v1/faults" { "PUT" } else { "POST" };
        let mut s = raw_tls(pki, &m1.control).await?;
        let t0 = Instant::now();
        send_raw(
            &mut s,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: 10000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        // The answer comes at once, without a byte of the body; the connection is closed
        // after a short lingering read.
        let mut first = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut first))
            .await
            .map_err(|_| err(format!("{method} {path}: no answer within 2 s")))??;
        let answer = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{method} {path} after {:?}: {answer:?}",
            t0.elapsed()
        );
        let (rest, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            format!("{answer}{rest}").contains("body_too_large"),
            "{answer}{rest}"
        );
        assert!(closed, "{method} {path}: connection kept open");
    }
    Ok(())
}

/// Headers that never finish are cut by the header timeout (hyper's, with a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_cut_by_the_header_timeout() -> TestResult {
    let u = send_unfinished(
        &["--header-timeout-seconds", "1"],
        b"GET /v1/status HTTP/1.1\r\nHost: agent\r\nX-Slow: ",
        Duration::from_secs(6),
    )
    .await?;
    assert!(u.closed, "half-sent headers kept the connection for 6 s");
    assert!(u.took < Duration::from_secs(4), "{:?}", u.took);
    Ok(())
}

/// What, method, path, body, expected status and code.
type Case = (
    &'static str,
    Method,
    String,
    Vec<u8>,
    StatusCode,
    &'static str,
);

/// Error messages and log lines quote client input only in bounded excerpts that say how long
/// the original was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_logs_quote_input_in_bounded_excerpts() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let pki = &fx.pki;
    let t = Target::new(&m1.control, Some(pki.control_client_config()?))?;
    let call = |method: Method, path: String, body: Vec<u8>| {
        let t = t.clone();
        async move {
            let body = (!body.is_empty()).then(|| bytes::Bytes::from(body));
            let (status, bytes) = t
                .call(method, &path, body, Duration::from_secs(30), 1 << 22)
                .await?;
            let e: ErrorBody = serde_json::from_slice(&bytes)?;
            TestResult::Ok((status, e, bytes.len()))
        }
    };
    let huge = "k".repeat(900_000);
    let cases: Vec<Case> = vec![
        (
            "900 KB unknown kind",
            Method::POST,
            "/v1/operations".into(),
            format!(r#"{{"id":"a","kind":"{huge}"}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown_kind",
        ),
        (
            "900 KB version",
            Method::POST,
            "/v1/operations".into(),
            format!(r#"{{"id":"a","kind":"upgrade","version":"{huge}"}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "900 KB source",
            Method::POST,
            "/v1/operations".into(),
            format!(r#"{{"id":"a","kind":"demote","source":"{huge}"}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_param",
        ),
        (
            "900 KB unknown field",
            Method::POST,
            "/v1/operations".into(),
            format!(r#"{{"id":"a","kind":"promote","{huge}":1}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "900 KB bad role",
            Method::POST,
            "/v1/operations".into(),
            format!(r#"{{"id":"a","kind":"demote","role":"{huge}"}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "900 KB unknown fault",
            Method::PUT,
            "/v1/faults".into(),
            format!(r#"{{"{huge}":1}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "60 KB path",
            Method::GET,
            format!("/v1/{}", "p".repeat(60_000)),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "60 KB path, wrong method",
            Method::DELETE,
            format!("/v1/operations/{}", "p".repeat(60_000)),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (what, method, path, body, status, code) in cases {
        let (got, e, len) = call(method, path, body).await?;
        assert_eq!(
            (got, e.error.as_str()),
            (status, code),
            "{what}: {}",
            e.message
        );
        assert!(
            e.message.len() <= MAX_MESSAGE && len < 2 * MAX_MESSAGE,
            "{what}: a {} byte message",
            e.message.len()
        );
        // Anything cut says so, with the original length.
        if e.message.contains('…') {
            assert!(e.message.contains("bytes)"), "{what}: {}", e.message);
        }
        println!("{what}: {} bytes: {}", e.message.len(), e.message);
    }
    // One short log line per refused request, however big the request.
    let log = m1.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 2 * MAX_MESSAGE,
        "a {longest} byte log line in {}",
        m1.log.display()
    );
    assert!(log.contains("(900022 bytes)") || log.contains("bytes)"));
    Ok(())
}
