//! Low-level HTTP/1.1 client over TCP or rustls, shared by the agent client, the data client
//! and the replication follower. One connection per call unless the caller keeps the sender.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// An open HTTP/1.1 connection. Keeps the connection task's own error: when a server
/// rejects the client certificate after a TLS 1.3 handshake, the request only sees "channel
/// closed" while the connection saw the TLS alert that explains it.
pub struct Sender {
    inner: SendRequest<Full<Bytes>>,
    conn_error: Option<oneshot::Receiver<TransportError>>,
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    async fn explain(&mut self, fallback: TransportError) -> TransportError {
        match self.conn_error.take() {
            Some(rx) => match tokio::time::timeout(Duration::from_millis(200), rx).await {
                Ok(Ok(e)) => e,
                _ => fallback,
            },
            None => fallback,
        }
    }
}

/// Where to connect and how.
#[derive(Clone)]
pub struct Target {
    /// `host:port`, without scheme.
    pub addr: String,
    host: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS failure: {0}")]
    Tls(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Protocol(String),
    #[error("response body exceeds {0} bytes")]
    BodyTooLarge(usize),
}

impl TransportError {
    /// Worth retrying: the request may not have reached the server, or the server was busy.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_) | TransportError::Timeout(_) | TransportError::Protocol(_)
        )
    }
}

/// Splits `https://host:port`, `http://host:port` or `host:port`. Returns the address and
/// whether the scheme asked for plain HTTP.
pub fn split_endpoint(endpoint: &str) -> Result<(String, Option<bool>), TransportError> {
    let (rest, plain) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, Some(false))
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, Some(true))
    } else {
        (endpoint, None)
    };
    let addr = rest.trim_end_matches('/').to_string();
    if host_of(&addr).is_none() {
        return Err(TransportError::Endpoint {
            endpoint: endpoint.to_string(),
            message: "expected host:port".to_string(),
        });
    }
    Ok((addr, plain))
}

/// The host part of `host:port` (IPv6 in brackets allowed), if the port is numeric.
pub fn host_of(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(host.to_string())
}

impl Target {
    pub fn new(addr: &str, tls: Option<Arc<ClientConfig>>) -> Result<Target, TransportError> {
        let (addr, _) = split_endpoint(addr)?;
        let host = host_of(&addr).ok_or_else(|| TransportError::Endpoint {
            endpoint: addr.clone(),
            message: "expected host:port".to_string(),
        })?;
        let tls = match tls {
            Some(config) => {
                let name =
                    crate::tls::server_name(&host).map_err(|e| TransportError::Endpoint {
                        endpoint: addr.clone(),
                        message: e.to_string(),
                    })?;
                Some((config, name))
            }
            None => None,
        };
        Ok(Target { addr, host, tls })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection and performs the HTTP/1.1 handshake.
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, TransportError> {
        tokio::time::timeout(timeout, self.connect_inner())
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn connect_inner(&self) -> Result<Sender, TransportError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(TransportError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((config, name)) => {
                let connector = TlsConnector::from(config.clone());
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| TransportError::Tls(describe(&e)))?;
                handshake(TokioIo::new(stream)).await
            }
            None => handshake(TokioIo::new(tcp)).await,
        }
    }

    pub fn request(&self, method: Method, path: &str, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body.clone().unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = match path.parse() {
            Ok(uri) => uri,
            // Paths are built by this crate from validated pieces; fall back to `/` so the
            // server answers 404 rather than the client panicking.
            Err(_) => http::Uri::from_static("/"),
        };
        if let Ok(v) = HeaderValue::from_str(&self.addr) {
            req.headers_mut().insert(header::HOST, v);
        }
        if body.is_some() {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        req
    }

    /// One request on a fresh connection, bounded by `timeout` overall.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), TransportError> {
        let req = self.request(method, path, body);
        tokio::time::timeout(timeout, async {
            let mut sender = self.connect_inner().await?;
            send(&mut sender, req, limit).await
        })
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

async fn handshake<I>(io: I) -> Result<Sender, TransportError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (inner, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| classify(&e))?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            let _ = tx.send(classify(&e));
        }
    });
    Ok(Sender {
        inner,
        conn_error: Some(rx),
    })
}

/// Sends a request on an open connection and reads the whole body (at most `limit` bytes).
pub async fn send(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(StatusCode, Bytes), TransportError> {
    let resp = send_streaming(sender, req).await?;
    let status = resp.status();
    let body = read_limited(resp.into_body(), limit).await?;
    Ok((status, body))
}

/// Sends a request and returns the response with its body still streaming.
pub async fn send_streaming(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, TransportError> {
    if let Err(e) = sender.inner.ready().await {
        return Err(sender.explain(classify(&e)).await);
    }
    match sender.inner.send_request(req).await {
        Ok(resp) => Ok(resp),
        Err(e) => Err(sender.explain(classify(&e)).await),
    }
}

pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, TransportError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(TransportError::BodyTooLarge(limit))
        }
        Err(e) => Err(classify(e.as_ref())),
    }
}

/// A TLS alert from the server (for example a rejected client certificate, which TLS 1.3
/// reports only after the handshake) is a TLS failure, not a protocol one.
fn classify(e: &(dyn StdError + 'static)) -> TransportError {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return TransportError::Tls(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return TransportError::Tls(tls.to_string());
        }
        cur = err.source();
    }
    TransportError::Protocol(describe(e))
}

/// The error and its causes on one line.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}
