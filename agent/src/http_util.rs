//! Small HTTP/1.1 server plumbing shared by the control API and the data port: JSON answers,
//! bounded body reading, a streaming body, and an accept loop over optional TLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::api::ErrorBody;
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
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
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
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn into_response(self) -> Response<RespBody> {
        json_response(
            self.status,
            &ErrorBody {
                error: self.code,
                message: self.message,
            },
        )
    }
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("cannot read request body: {e}"),
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

/// Accepts connections forever. Each connection is served with the TLS configuration current
/// at accept time (plain TCP when there is none). When `cut` changes, every open connection
/// is dropped: that is how a data-service restart forces peers to reconnect and re-handshake.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<ReloadableServerTls>,
    cut: watch::Receiver<u64>,
    handler: Handler,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                warn!("{name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls_config = tls.get();
        let handler = handler.clone();
        let mut cut = cut.clone();
        tokio::spawn(async move {
            cut.borrow_and_update();
            let conn = async {
                match tls_config {
                    Some(config) => {
                        let acceptor = TlsAcceptor::from(config);
                        let stream = match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(tcp),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                info!("{name}: TLS handshake with {peer} refused: {e}");
                                return;
                            }
                            Err(_) => {
                                info!("{name}: TLS handshake with {peer} timed out");
                                return;
                            }
                        };
                        let client_fingerprint = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|c| fingerprint_der(c));
                        let info = ConnInfo {
                            peer,
                            client_fingerprint,
                        };
                        serve_connection(name, TokioIo::new(stream), handler, info).await;
                    }
                    None => {
                        let info = ConnInfo {
                            peer,
                            client_fingerprint: None,
                        };
                        serve_connection(name, TokioIo::new(tcp), handler, info).await;
                    }
                }
            };
            tokio::select! {
                _ = conn => {}
                _ = cut.changed() => debug!("{name}: connection from {peer} closed by restart"),
            }
        });
    }
}

async fn serve_connection<I>(name: &'static str, io: I, handler: Handler, info: ConnInfo)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |req| {
        let fut = handler(req, info.clone());
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60))
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
