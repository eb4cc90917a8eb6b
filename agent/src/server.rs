//! The control API (`/v1`), served over mutual TLS to the operator.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::Faults;
use crate::http_util::{self, ApiError, ConnInfo, Handler, RespBody, json_response, read_body};
use crate::ops::validate_id;
use crate::ops_engine::Engine;
use crate::tls::ReloadableServerTls;

/// Bodies above this are refused with 413 before they are parsed.
pub const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = Arc::new(ReloadableServerTls::new(tls));
    // The control API is never cut: only the data service restarts.
    let (keep, cut) = watch::channel(0u64);
    let handler: Handler = Arc::new(move |req, info| {
        let engine = engine.clone();
        Box::pin(async move {
            match route(&engine, req, &info).await {
                Ok(resp) => resp,
                Err(e) => {
                    if e.status.is_client_error() {
                        tracing::info!("control API: {} from {}: {}", e.code, info.peer, e.message);
                    }
                    e.into_response()
                }
            }
        })
    });
    http_util::serve("control API", listener, tls, cut, handler).await;
    // Dropping the sender earlier would look like a cut to every connection.
    drop(keep);
}

async fn route(
    engine: &Engine,
    req: Request<Incoming>,
    _info: &ConnInfo,
) -> Result<Response<RespBody>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/v1/status") => Ok(json_response(StatusCode::OK, &engine.status().await)),
        (Method::GET, "/v1/operations") => Ok(json_response(StatusCode::OK, &engine.ops.list())),
        (Method::POST, "/v1/operations") => {
            let body = read_body(req.into_body(), MAX_BODY).await?;
            let request = crate::ops::parse_request(&body)?;
            let (status, record) = engine.submit(request).await?;
            Ok(json_response(status, &record))
        }
        (Method::GET, "/v1/faults") => Ok(json_response(StatusCode::OK, &engine.backend.faults())),
        (Method::PUT, "/v1/faults") => {
            let body = read_body(req.into_body(), MAX_BODY).await?;
            let faults: Faults = serde_json::from_slice(&body).map_err(|e| {
                let code = if e.is_syntax() || e.is_eof() {
                    "malformed_json"
                } else {
                    "invalid_request"
                };
                ApiError::bad_request(code, format!("invalid faults: {e}"))
            })?;
            if let Some(s) = faults.upgrade_seconds
                && !(s.is_finite() && (0.0..=86_400.0).contains(&s))
            {
                return Err(ApiError::bad_request(
                    "invalid_param",
                    "upgradeSeconds must be between 0 and 86400",
                ));
            }
            tracing::warn!("fault injection changed: {faults:?}");
            engine.backend.set_faults(faults.clone());
            Ok(json_response(StatusCode::OK, &faults))
        }
        (Method::GET, p) if p.starts_with("/v1/operations/") => {
            let id = &p["/v1/operations/".len()..];
            validate_id(id)?;
            match engine.ops.get(id) {
                Some(rec) => Ok(json_response(StatusCode::OK, &rec)),
                None => Err(ApiError::not_found(format!("no operation with id {id:?}"))),
            }
        }
        (_, "/v1/status" | "/v1/operations" | "/v1/faults") => {
            Err(ApiError::method_not_allowed(&method, &path))
        }
        (_, p) if p.starts_with("/v1/operations/") => {
            Err(ApiError::method_not_allowed(&method, &path))
        }
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    }
}
