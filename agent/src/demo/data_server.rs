//! The data port: key-value reads and writes, the replication stream, and the small member
//! configuration that `sync-config` copies between peers.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::{CONFIG_FILE, Shared};
use crate::api::{DataHead, WriteAck};
use crate::conn_limits::ConnLimits;
use crate::demo::store::StoreError;
use crate::http_util::{
    self, ApiError, ConnInfo, Handler, RespBody, excerpt, json_response, read_body, text_response,
};
use crate::persist;

pub const MAX_VALUE: usize = 64 * 1024;
const MAX_CONFIG: usize = 64 * 1024;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, limits: ConnLimits) {
    let tls = shared.tls.server.clone();
    let failures = Some(shared.handshakes.clone());
    let cut = shared.subscribe_cut();
    let handler: Handler = Arc::new(move |req, info| {
        let shared = shared.clone();
        Box::pin(async move {
            match route(&shared, req, info).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        })
    });
    http_util::serve("data port", listener, tls, cut, limits, handler, failures).await;
}

pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    info: ConnInfo,
) -> Result<Response<RespBody>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(key) = path.strip_prefix("/kv/") {
        if !valid_key(key) {
            return Err(ApiError::bad_request(
                "invalid_key",
                "keys are 1 to 200 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let key = key.to_string();
        return match method {
            Method::GET => match shared.store.get(&key) {
                Some(v) => Ok(text_response(StatusCode::OK, v)),
                None => Err(ApiError::not_found(format!("no value for key {key:?}"))),
            },
            Method::PUT => {
                // KPIs: a write the member does not store counts as refused (a malformed
                // request, which no member would store, does not); one the log failed to
                // store is an internal error too.
                if !shared.store.accepting() {
                    shared.kpis.write_refused();
                    return Err(not_active(shared));
                }
                let body = read_body(req.into_body(), MAX_VALUE, info.body_timeout).await?;
                let value = String::from_utf8(body.to_vec()).map_err(|_| {
                    ApiError::bad_request("invalid_value", "values must be UTF-8 text")
                })?;
                match shared.store.write(key, value).await {
                    Ok(index) => {
                        shared.kpis.write_accepted();
                        Ok(json_response(StatusCode::OK, &WriteAck { index }))
                    }
                    Err(StoreError::NotAccepting) => {
                        shared.kpis.write_refused();
                        Err(not_active(shared))
                    }
                    Err(e) => {
                        shared.kpis.write_refused();
                        shared.kpis.internal_error();
                        Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "write_failed",
                            format!("write not stored: {e}"),
                        ))
                    }
                }
            }
            _ => Err(ApiError::method_not_allowed(&method, &path)),
        };
    }
    match (path.as_str(), &method) {
        ("/v1/head", &Method::GET) => {
            let st = shared.state();
            Ok(json_response(
                StatusCode::OK,
                &DataHead {
                    member: shared.member.clone(),
                    role: shared.effective_role(),
                    version: st.version,
                    head: shared.store.head(),
                    accepting_writes: shared.store.accepting(),
                },
            ))
        }
        ("/v1/replicate", &Method::GET) => {
            super::replication::serve_stream(shared, req.uri().query())
        }
        ("/v1/config", &Method::GET) => {
            let config: Option<serde_json::Value> =
                persist::read_json(&shared.data_dir.join(CONFIG_FILE))
                    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            Ok(json_response(
                StatusCode::OK,
                &config.unwrap_or_else(|| serde_json::json!({})),
            ))
        }
        ("/v1/config", &Method::PUT) => {
            let body = read_body(req.into_body(), MAX_CONFIG, info.body_timeout).await?;
            let value = crate::ops::parse_json_value_strict(&body)?;
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "config must be a JSON object",
                ));
            }
            shared
                .write_config(&value)
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            Ok(json_response(StatusCode::OK, &value))
        }
        ("/v1/head" | "/v1/replicate", _) => Err(ApiError::method_not_allowed(&method, &path)),
        ("/v1/config", _) => Err(ApiError::method_not_allowed(&method, &path)),
        _ => Err(ApiError::not_found(format!(
            "no route for {}",
            excerpt(&path)
        ))),
    }
}

fn not_active(shared: &Shared) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_active",
        format!(
            "member {} is {} and does not accept writes; send writes to the Active member",
            shared.member,
            shared.effective_role()
        ),
    )
}
