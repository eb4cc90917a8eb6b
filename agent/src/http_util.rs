//! Small HTTP/1.1 server plumbing shared by the control API and the data port: JSON answers,
//! bounded body reading, a streaming body, bounded quoting of client input, and an accept
//! loop over optional TLS that keeps its connections within [`ConnLimits`].

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body as _, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::api::ErrorBody;
use crate::conn_limits::{ConnLimits, ConnSlot, ConnTracker};
use crate::handshakes::HandshakeCounter;
use crate::pki::fingerprint_der;
use crate::tls::ReloadableServerTls;

pub type RespBody = BoxBody<Bytes, std::io::Error>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>;
pub type Handler = Arc<dyn Fn(Request<Incoming>, ConnInfo) -> HandlerFuture + Send + Sync>;

/// What the accept loop knows about the peer of a request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// SHA-256 of the client certificate, when TLS with client auth was used.
    pub client_fingerprint: Option<String>,
    /// Deadline for reading a whole request body ([`read_body`]).
    pub body_timeout: Duration,
}

/// Most characters of client input quoted in one error message or log line.
pub const EXCERPT_CHARS: usize = 128;
/// Longest error message the agent sends or logs. Every quoted fragment is an [`excerpt`];
/// this is the backstop for texts that embed input themselves (serde's errors).
pub const MAX_MESSAGE: usize = 1024;

/// Client input quoted for an error message or a log line: escaped like `{:?}`, at most
/// [`EXCERPT_CHARS`] escaped characters, and when cut, an ellipsis and the original length.
/// Escaping stops at the bound, so a huge input costs no more than a small one.
pub fn excerpt(s: &str) -> String {
    let mut out = String::with_capacity(EXCERPT_CHARS + 32);
    out.push('"');
    let mut used = 0usize;
    let mut taken = 0usize;
    for c in s.chars() {
        let escaped: String = if c == '\'' {
            c.to_string()
        } else {
            c.escape_debug().collect()
        };
        let n = escaped.chars().count();
        if used + n > EXCERPT_CHARS {
            break;
        }
        used += n;
        taken += c.len_utf8();
        out.push_str(&escaped);
    }
    out.push('"');
    if taken < s.len() {
        let _ = write!(out, "… ({} bytes)", s.len());
    }
    out
}

/// `text` cut to at most `max` bytes (on a character boundary), with an ellipsis and the
/// original length when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub(32).min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

pub fn full_body(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<RespBody> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            let mut resp = Response::new(full_body(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ApiError::internal(format!("cannot encode response: {e}")).into_response(),
    }
}

pub fn text_response(status: StatusCode, text: String) -> Response<RespBody> {
    let mut resp = Response::new(full_body(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An error answer: a status and the `{"error", "message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            status,
            code: code.to_string(),
            message: if message.len() > MAX_MESSAGE {
                clip(&message, MAX_MESSAGE)
            } else {
                message
            },
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {}", excerpt(path)),
        )
    }

    pub fn into_response(self) -> Response<RespBody> {
        // After these the request body was not read to its end: the connection cannot carry
        // another request, and the client should not wait for one more answer on it.
        let close = matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        );
        let mut resp = json_response(
            self.status,
            &ErrorBody {
                error: self.code,
                message: self.message,
            },
        );
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// What a refused body may still be read (and discarded) after the answer was sent.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Discards a bounded part of a refused body. Closing a socket with unread data makes the
/// kernel reset the connection, and a client still writing its body would then see "broken
/// pipe" instead of the 413 (the lingering close of web servers). The body is never stored.
async fn linger(mut body: Incoming) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while seen < LINGER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds {limit} bytes"),
    )
}

/// Reads a request body of at most `limit` bytes within `timeout`. A declared
/// `Content-Length` above the limit is refused before anything is read.
pub async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    // hyper's size hint is the declared Content-Length (exact) or a lower bound for chunked
    // bodies.
    if body.size_hint().lower() > limit as u64 {
        tokio::spawn(linger(body));
        return Err(too_large(limit));
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("request body not received within {timeout:?}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("cannot read request body: {}", clip(&e.to_string(), 256)),
        )),
    }
}

/// A response body fed from a channel, for long-lived streams (replication).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelBody { rx }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Binds a listener with a long accept queue: under a connection flood the operator's
/// connection must wait in the queue, not have its SYN dropped (a second's retransmission).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn.
    let listener = socket.listen(4096)?;
    defer_accept(&listener);
    Ok(listener)
}

/// Seconds a connection that has sent nothing is held by the kernel before it is handed to
/// `accept` anyway (then the handshake timeout and shedding apply as usual).
const DEFER_ACCEPT_SECS: libc::c_int = 5;

/// TCP_DEFER_ACCEPT: every client of the agent speaks first (TLS ClientHello, HTTP request),
/// so a connection that has sent no byte need not occupy a descriptor or a place in the
/// accept queue. An idle-connection flood then costs the kernel a mini socket each, and the
/// operator's connections, which send at once, are not queued behind it.
#[cfg(target_os = "linux")]
fn defer_accept(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = DEFER_ACCEPT_SECS;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        warn!(
            "cannot set TCP_DEFER_ACCEPT: {}; idle connections will be accepted",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_listener: &TcpListener) {}

/// How often the accept loop reports what its limits did (one line, not one per connection:
/// a flood must not turn into a flood of log lines).
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Per-connection lines (refused handshakes) allowed per report period; the rest are counted.
const CONN_LOG_BUDGET: u64 = 20;

/// Accepts connections forever. Each connection is served with the TLS configuration current
/// at accept time (plain TCP when there is none). When `cut` changes, every open connection
/// is dropped: that is how a data-service restart forces peers to reconnect and re-handshake.
/// Connections are kept within `limits` (see [`crate::conn_limits`]). Handshakes refused over
/// certificates or trust are counted in `failures`, when given.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<ReloadableServerTls>,
    cut: watch::Receiver<u64>,
    limits: ConnLimits,
    handler: Handler,
    failures: Option<Arc<HandshakeCounter>>,
) {
    let tracker = ConnTracker::new(limits);
    let log_budget = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(report(name, Arc::downgrade(&tracker), log_budget.clone()));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => {
                backoff = Duration::from_millis(5);
                conn
            }
            Err(e) => {
                let out_of_descriptors = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if out_of_descriptors {
                    // Free a descriptor by closing the oldest unauthenticated connection,
                    // and give its task a moment to actually close it rather than spinning
                    // on an accept that keeps failing.
                    let shed = tracker.shed_for_descriptor();
                    if log_budget.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        < CONN_LOG_BUDGET
                    {
                        warn!(
                            "{name}: accept failed: {e}; {}backing off {backoff:?}",
                            if shed {
                                "closed the oldest unauthenticated connection, "
                            } else {
                                ""
                            }
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                } else {
                    // Per-connection failures (ECONNABORTED...): the next accept is fine.
                    debug!("{name}: accept failed: {e}");
                    tokio::task::yield_now().await;
                }
                continue;
            }
        };
        let Some((slot, shed)) = tracker.admit(peer.ip()) else {
            // Every place is held by an established connection: close this one at once.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls_config = tls.get();
        let handler = handler.clone();
        let mut cut = cut.clone();
        let limits = *tracker.limits();
        let log_budget = log_budget.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            cut.borrow_and_update();
            let conn = async {
                match tls_config {
                    Some(config) => {
                        let acceptor = TlsAcceptor::from(config);
                        let stream = match tokio::time::timeout(
                            limits.handshake_timeout,
                            acceptor.accept(tcp),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                if let Some(f) = &failures
                                    && crate::handshakes::io_is_trust_failure(&e)
                                {
                                    f.inbound(peer.ip());
                                }
                                if log_budget.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                                    < CONN_LOG_BUDGET
                                {
                                    info!("{name}: TLS handshake with {peer} refused: {e}");
                                }
                                return;
                            }
                            Err(_) => {
                                debug!("{name}: TLS handshake with {peer} timed out");
                                return;
                            }
                        };
                        if !slot.establish() {
                            return;
                        }
                        let peer_certs = stream.get_ref().1.peer_certificates();
                        let client_fingerprint = peer_certs
                            .and_then(|c| c.first())
                            .map(|c| fingerprint_der(c));
                        // Held for as long as the connection is served.
                        let _presented = match (&failures, peer_certs) {
                            (Some(f), Some(chain)) => f.presented(chain),
                            _ => None,
                        };
                        let info = ConnInfo {
                            peer,
                            client_fingerprint,
                            body_timeout: limits.body_timeout,
                        };
                        serve_connection(name, TokioIo::new(stream), handler, info, &limits, None)
                            .await;
                    }
                    None => {
                        let info = ConnInfo {
                            peer,
                            client_fingerprint: None,
                            body_timeout: limits.body_timeout,
                        };
                        // Without TLS nothing proves who the client is; a connection that
                        // has sent a request is at least not an idle descriptor hog.
                        serve_connection(
                            name,
                            TokioIo::new(tcp),
                            handler,
                            info,
                            &limits,
                            Some(slot.clone()),
                        )
                        .await;
                    }
                }
            };
            tokio::select! {
                _ = conn => {}
                _ = cut.changed() => debug!("{name}: connection from {peer} closed by restart"),
                // Err (sender dropped) means established: the branch is disabled.
                Ok(()) = shed => debug!("{name}: unauthenticated connection from {peer} shed"),
            }
            drop(slot);
        });
    }
}

/// Logs what the limits did in the last period, when they did anything.
async fn report(
    name: &'static str,
    tracker: std::sync::Weak<ConnTracker>,
    log_budget: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut last = (0u64, 0u64);
    loop {
        tokio::time::sleep(REPORT_EVERY).await;
        let Some(tracker) = tracker.upgrade() else {
            return;
        };
        let lines = log_budget.swap(0, std::sync::atomic::Ordering::Relaxed);
        let (shed, refused) = tracker.totals();
        if (shed, refused) != last {
            let c = tracker.counts();
            warn!(
                "{name}: connection limits: shed {} unauthenticated connections (total {shed}), \
                 refused {} (total {refused}) in the last {REPORT_EVERY:?}; open: {} pending, \
                 {} established; admitted since start: {}",
                shed - last.0,
                refused - last.1,
                c.pending,
                c.established,
                tracker.admitted()
            );
            last = (shed, refused);
        }
        if lines > CONN_LOG_BUDGET {
            warn!(
                "{name}: {} connection errors in the last {REPORT_EVERY:?} were not logged \
                 one by one",
                lines - CONN_LOG_BUDGET
            );
        }
    }
}

async fn serve_connection<I>(
    name: &'static str,
    io: I,
    handler: Handler,
    info: ConnInfo,
    limits: &ConnLimits,
    establish_on_request: Option<Arc<ConnSlot>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |req| {
        if let Some(slot) = &establish_on_request {
            slot.establish();
        }
        let fut = handler(req, info.clone());
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        debug!("{name}: connection with {peer} ended: {e}");
    }
}

/// Splits `a=1&b=2` query strings. Values are used verbatim: every parameter Baton accepts is
/// restricted to characters that need no percent-encoding.
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}
