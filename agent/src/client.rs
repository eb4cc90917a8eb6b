//! Typed async client of the agent's control API, used by the operator.
//!
//! Every call has a timeout. Idempotent calls (all GETs, and `submit`, which is idempotent by
//! operation id) are retried with exponential backoff on transport failures and 5xx answers;
//! 4xx answers are returned at once because repeating them cannot help.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, Faults, MemberStatus, OperationRecord, OperationRequest};
use crate::http_client::{Target, TransportError, split_endpoint};

/// How the client authenticates to agents.
#[derive(Clone)]
pub enum ClientTls {
    /// Mutual TLS: verify the agent against `ca_pem`, present `cert_pem`/`key_pem`.
    Mtls {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    },
    /// Plain HTTP, for agents started with `--insecure-http`.
    Insecure,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientTls::Mtls { .. } => f.write_str("ClientTls::Mtls { .. }"),
            ClientTls::Insecure => f.write_str("ClientTls::Insecure"),
        }
    }
}

/// Client TLS settings parsed once, shareable by many [`AgentClient`]s.
#[derive(Clone)]
pub struct SharedTls {
    config: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for SharedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTls")
            .field("mtls", &self.config.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Parses the certificates and key once (errors name the bad PEM).
    pub fn share(&self) -> Result<SharedTls, ClientError> {
        let config = self
            .rustls_config("agent client")
            .map_err(|e| ClientError::Config {
                agent: "(all agents)".to_string(),
                message: e.to_string(),
            })?;
        Ok(SharedTls { config })
    }

    pub fn mtls(
        ca_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        ClientTls::Mtls {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    pub(crate) fn rustls_config(
        &self,
        what: &str,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        match self {
            ClientTls::Mtls {
                ca_pem,
                cert_pem,
                key_pem,
            } => crate::tls::client_config(
                ca_pem.as_bytes(),
                Some((cert_pem.as_bytes(), key_pem.as_bytes())),
                what,
            )
            .map(Some),
            ClientTls::Insecure => Ok(None),
        }
    }
}

/// What went wrong talking to an agent. Every variant names the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent {agent}: invalid client configuration: {message}")]
    Config { agent: String, message: String },
    #[error("agent {agent}: cannot connect: {source}")]
    Connect {
        agent: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent {agent}: TLS failure: {message}")]
    Tls { agent: String, message: String },
    #[error("agent {agent}: {what} timed out after {after:?}")]
    Timeout {
        agent: String,
        what: String,
        after: Duration,
    },
    #[error("agent {agent}: {what}: HTTP {status} {code}: {message}")]
    Http {
        agent: String,
        what: String,
        status: u16,
        /// The agent's machine-readable error code (`operation_running`, `id_conflict`, ...).
        code: String,
        message: String,
    },
    #[error("agent {agent}: {what}: cannot decode the answer: {message}")]
    Decode {
        agent: String,
        what: String,
        message: String,
    },
    #[error("agent {agent}: {what}: {message}")]
    Protocol {
        agent: String,
        what: String,
        message: String,
    },
}

impl ClientError {
    /// The agent's error code for HTTP errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Http { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Transport failures and 5xx answers; the call may succeed if repeated.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Protocol { .. } => true,
            ClientError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Retry and timeout policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPolicy {
    /// Bound on one attempt (connect, TLS, request, response).
    pub timeout: Duration,
    /// Attempts after the first, for idempotent calls.
    pub retries: u32,
    /// First backoff; doubles each retry up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Client of one agent.
#[derive(Clone)]
pub struct AgentClient {
    agent: String,
    target: Target,
    policy: CallPolicy,
}

crate::debug_shows_only!(AgentClient, agent);

const MAX_RESPONSE: usize = 64 * 1024 * 1024;

impl AgentClient {
    /// `endpoint` is `host:port`, `https://host:port` or (with [`ClientTls::Insecure`])
    /// `http://host:port`.
    pub fn new(endpoint: &str, tls: ClientTls) -> Result<AgentClient, ClientError> {
        let shared = tls.share().map_err(|e| match e {
            ClientError::Config { message, .. } => ClientError::Config {
                agent: endpoint.to_string(),
                message,
            },
            other => other,
        })?;
        AgentClient::with_shared(endpoint, &shared)
    }

    /// Like [`AgentClient::new`], reusing TLS material parsed once: an operator talking to
    /// thousands of members keeps one TLS configuration, not one per member.
    pub fn with_shared(endpoint: &str, tls: &SharedTls) -> Result<AgentClient, ClientError> {
        let config_err = |message: String| ClientError::Config {
            agent: endpoint.to_string(),
            message,
        };
        let (addr, plain) = split_endpoint(endpoint).map_err(|e| config_err(e.to_string()))?;
        match (&tls.config, plain) {
            (Some(_), Some(true)) => {
                return Err(config_err(
                    "http:// endpoint given with mutual TLS settings".into(),
                ));
            }
            (None, Some(false)) => {
                return Err(config_err(
                    "https:// endpoint given without TLS settings".into(),
                ));
            }
            _ => {}
        }
        let target =
            Target::new(&addr, tls.config.clone()).map_err(|e| config_err(e.to_string()))?;
        Ok(AgentClient {
            agent: addr,
            target,
            policy: CallPolicy::default(),
        })
    }

    /// Names the member in error messages: `agent m1 (127.0.0.1:7000)`.
    pub fn with_member(mut self, member: &str) -> Self {
        self.agent = format!("{member} ({})", self.target.addr);
        self
    }

    pub fn with_policy(mut self, policy: CallPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.target.addr
    }

    /// A request body, as JSON.
    fn encode(&self, value: &impl serde::Serialize, what: &str) -> Result<Bytes, ClientError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| ClientError::Config {
                agent: self.agent.clone(),
                message: format!("cannot encode {what}: {e}"),
            })
    }

    pub async fn status(&self) -> Result<MemberStatus, ClientError> {
        self.call(Method::GET, "/v1/status", None, "status", true)
            .await
    }

    /// Starts an operation, or returns the existing record when this id was already
    /// submitted with the same request.
    pub async fn submit(&self, req: &OperationRequest) -> Result<OperationRecord, ClientError> {
        let body = self.encode(req, "request")?;
        let what = format!("submit {} {:?}", req.kind, req.id);
        self.call(Method::POST, "/v1/operations", Some(body), &what, true)
            .await
    }

    pub async fn operation(&self, id: &str) -> Result<OperationRecord, ClientError> {
        crate::ops::validate_id(id).map_err(|e| ClientError::Config {
            agent: self.agent.clone(),
            message: e.message,
        })?;
        let path = format!("/v1/operations/{id}");
        self.call(Method::GET, &path, None, &format!("operation {id:?}"), true)
            .await
    }

    /// Every operation record the agent keeps, oldest first.
    pub async fn operations(&self) -> Result<Vec<OperationRecord>, ClientError> {
        self.call(Method::GET, "/v1/operations", None, "operations", true)
            .await
    }

    pub async fn faults(&self) -> Result<Faults, ClientError> {
        self.call(Method::GET, "/v1/faults", None, "faults", true)
            .await
    }

    /// Replaces the fault-injection settings (PUT is idempotent, so it is retried too).
    pub async fn set_faults(&self, faults: &Faults) -> Result<Faults, ClientError> {
        let body = self.encode(faults, "faults")?;
        self.call(Method::PUT, "/v1/faults", Some(body), "set faults", true)
            .await
    }

    /// Polls an operation until it is finished or `timeout` passes.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<OperationRecord, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.operation(id).await?;
            if rec.state.is_finished() {
                return Ok(rec);
            }
            if tokio::time::Instant::now() + poll > deadline {
                return Err(ClientError::Timeout {
                    agent: self.agent.clone(),
                    what: format!(
                        "waiting for operation {id:?} ({}% {})",
                        rec.progress, rec.message
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
        idempotent: bool,
    ) -> Result<T, ClientError> {
        let attempts = if idempotent {
            self.policy.retries + 1
        } else {
            1
        };
        let mut backoff = self.policy.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(method.clone(), path, body.clone(), what).await;
            match result {
                Err(e) if e.is_transient() && attempt < attempts => {
                    tracing::debug!("{e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                other => return other,
            }
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self
            .target
            .call(method, path, body, self.policy.timeout, MAX_RESPONSE)
            .await
            .map_err(|e| transport_error(&self.agent, what, e))?;
        decode_answer(&self.agent, what, status, &bytes)
    }
}

pub(crate) fn transport_error(agent: &str, what: &str, e: TransportError) -> ClientError {
    let agent = agent.to_string();
    match e {
        TransportError::Connect(source) => ClientError::Connect { agent, source },
        TransportError::Tls(message) => ClientError::Tls { agent, message },
        TransportError::Timeout(after) => ClientError::Timeout {
            agent,
            what: what.to_string(),
            after,
        },
        TransportError::Endpoint { .. } => ClientError::Config {
            agent,
            message: e.to_string(),
        },
        TransportError::Protocol(message) => ClientError::Protocol {
            agent,
            what: what.to_string(),
            message,
        },
        TransportError::BodyTooLarge(_) => ClientError::Decode {
            agent,
            what: what.to_string(),
            message: e.to_string(),
        },
    }
}

pub(crate) fn decode_answer<T: DeserializeOwned>(
    agent: &str,
    what: &str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<T, ClientError> {
    if !status.is_success() {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(e) => (e.error, e.message),
            Err(_) => (
                "unknown".to_string(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            ),
        };
        return Err(ClientError::Http {
            agent: agent.to_string(),
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        agent: agent.to_string(),
        what: what.to_string(),
        message: e.to_string(),
    })
}
