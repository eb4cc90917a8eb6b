//! Client of a demo member's data port: key-value writes and reads, for demo write loads and
//! tests that count acknowledged writes.
//!
//! The data port requires mutual TLS with the *member* PKI: the server is verified against
//! the members' trust bundle and the client must present a certificate issued by a CA in
//! that bundle (a member certificate works; so does any client certificate of that CA). The
//! control-API client certificate is not accepted unless its CA is in the members' trust.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::sync::Mutex;

use crate::api::{DataHead, WriteAck};
use crate::client::{ClientError, ClientTls, decode_answer, transport_error};
use crate::http_client::{Sender, Target, send, split_endpoint};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The member is not Active (503 `not_active`): send the write elsewhere.
    #[error("member at {endpoint} does not accept writes: {message}")]
    NotActive { endpoint: String, message: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A connection-reusing client of one member's data port.
pub struct DataClient {
    endpoint: String,
    target: Target,
    timeout: Duration,
    conn: Mutex<Option<Sender>>,
}

crate::debug_shows_only!(DataClient, endpoint);

const MAX_RESPONSE: usize = 1024 * 1024;

impl DataClient {
    /// `tls` holds the members' trust bundle as `ca_pem` and a certificate issued by one of
    /// its CAs, or is [`ClientTls::Insecure`] for members serving plain TCP.
    pub fn new(endpoint: &str, tls: ClientTls) -> Result<DataClient, ClientError> {
        let config_err = |message: String| ClientError::Config {
            agent: endpoint.to_string(),
            message,
        };
        let (addr, _) = split_endpoint(endpoint).map_err(|e| config_err(e.to_string()))?;
        let config = tls
            .rustls_config("data client")
            .map_err(|e| config_err(e.to_string()))?;
        let target = Target::new(&addr, config).map_err(|e| config_err(e.to_string()))?;
        Ok(DataClient {
            endpoint: addr,
            target,
            timeout: Duration::from_secs(5),
            conn: Mutex::new(None),
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Writes `value` under `key`; `Ok(index)` means the member stored it durably.
    pub async fn put(&self, key: &str, value: &str) -> Result<u64, DataError> {
        let path = format!("/kv/{key}");
        let (status, body) = self
            .exchange(Method::PUT, &path, Some(Bytes::from(value.to_string())))
            .await?;
        if status == StatusCode::SERVICE_UNAVAILABLE
            && let Ok(err) = serde_json::from_slice::<crate::api::ErrorBody>(&body)
            && err.error == "not_active"
        {
            return Err(DataError::NotActive {
                endpoint: self.endpoint.clone(),
                message: err.message,
            });
        }
        let ack: WriteAck = decode_answer(&self.endpoint, &format!("put {key}"), status, &body)?;
        Ok(ack.index)
    }

    /// Reads `key`; `Ok(None)` when the member has no value for it.
    pub async fn get(&self, key: &str) -> Result<Option<String>, DataError> {
        let path = format!("/kv/{key}");
        let (status, body) = self.exchange(Method::GET, &path, None).await?;
        match status {
            StatusCode::OK => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(
                decode_answer::<()>(&self.endpoint, &format!("get {key}"), status, &body)
                    .err()
                    .map(DataError::Client)
                    .unwrap_or_else(|| {
                        DataError::Client(ClientError::Protocol {
                            agent: self.endpoint.clone(),
                            what: format!("get {key}"),
                            message: format!("unexpected status {status}"),
                        })
                    }),
            ),
        }
    }

    /// The member's role, version and log head as seen on the data port.
    pub async fn head(&self) -> Result<DataHead, DataError> {
        let (status, body) = self.exchange(Method::GET, "/v1/head", None).await?;
        Ok(decode_answer(&self.endpoint, "head", status, &body)?)
    }

    /// One request, on the kept connection when there is one. A kept connection may have
    /// been closed by the server meanwhile, so a failure on it is retried once on a fresh one.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut guard = self.conn.lock().await;
        let reused = guard.as_ref().is_some_and(|s| !s.is_closed());
        if !reused {
            *guard = None;
        }
        for attempt in 0..2 {
            let mut sender = match guard.take() {
                Some(s) => s,
                None => self
                    .target
                    .connect(self.timeout)
                    .await
                    .map_err(|e| transport_error(&self.endpoint, path, e))?,
            };
            let req = self.target.request(method.clone(), path, body.clone());
            let result =
                tokio::time::timeout(self.timeout, send(&mut sender, req, MAX_RESPONSE)).await;
            match result {
                Ok(Ok(answer)) => {
                    *guard = Some(sender);
                    return Ok(answer);
                }
                Ok(Err(e)) if attempt == 0 && reused && e.is_transient() => continue,
                Ok(Err(e)) => return Err(transport_error(&self.endpoint, path, e)),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        agent: self.endpoint.clone(),
                        what: format!("{method} {path}"),
                        after: self.timeout,
                    });
                }
            }
        }
        Err(ClientError::Protocol {
            agent: self.endpoint.clone(),
            what: format!("{method} {path}"),
            message: "connection failed twice".into(),
        })
    }
}
