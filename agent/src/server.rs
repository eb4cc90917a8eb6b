//! The control API (`/v1`), served over mutual TLS to the operator.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::Faults;
use crate::conn_limits::ConnLimits;
use crate::http_util::{
    self, ApiError, ConnInfo, Handler, RespBody, excerpt, json_response, read_body,
};
use crate::ops::{parse_json_strict, validate_id};
use crate::ops_engine::Engine;
use crate::tls::ReloadableServerTls;

/// Bodies above this are refused with 413 before they are parsed.
pub const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
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
                        // The message quotes client input only through `excerpt`, and is
                        // bounded as a whole: one request, one short line.
                        tracing::info!("control API: {} from {}: {}", e.code, info.peer, e.message);
                    }
                    e.into_response()
                }
            }
        })
    });
    http_util::serve("control API", listener, tls, cut, limits, handler, None).await;
    // Dropping the sender earlier would look like a cut to every connection.
    drop(keep);
}

/// What a control API request asks for, decided from its method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Status,
    ListOperations,
    Submit,
    GetFaults,
    PutFaults,
    GetOperation(String),
}

/// Routes a request; unknown paths, wrong methods and malformed operation ids are refused
/// here, before anything is read or looked up.
pub fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
    match (method.clone(), path) {
        (Method::GET, "/v1/status") => Ok(Route::Status),
        (Method::GET, "/v1/operations") => Ok(Route::ListOperations),
        (Method::POST, "/v1/operations") => Ok(Route::Submit),
        (Method::GET, "/v1/faults") => Ok(Route::GetFaults),
        (Method::PUT, "/v1/faults") => Ok(Route::PutFaults),
        (Method::GET, p) if p.starts_with("/v1/operations/") => {
            let id = &p["/v1/operations/".len()..];
            validate_id(id)?;
            Ok(Route::GetOperation(id.to_string()))
        }
        (_, "/v1/status" | "/v1/operations" | "/v1/faults") => {
            Err(ApiError::method_not_allowed(method, path))
        }
        (_, p) if p.starts_with("/v1/operations/") => {
            Err(ApiError::method_not_allowed(method, path))
        }
        _ => Err(ApiError::not_found(format!(
            "no route for {method} {}",
            excerpt(path)
        ))),
    }
}

/// Parses and checks a `PUT /v1/faults` body.
pub fn parse_faults(body: &[u8]) -> Result<Faults, ApiError> {
    let faults: Faults = parse_json_strict(body, "faults")?;
    if let Some(s) = faults.upgrade_seconds
        && !(s.is_finite() && (0.0..=86_400.0).contains(&s))
    {
        return Err(ApiError::bad_request(
            "invalid_param",
            "upgradeSeconds must be between 0 and 86400",
        ));
    }
    crate::api::check_kpi_offsets(&faults.kpi_offsets)
        .map_err(|e| ApiError::bad_request("invalid_param", format!("kpiOffsets: {e}")))?;
    let mut faults = faults;
    for (i, f) in faults.prepare_findings.iter_mut().enumerate() {
        crate::api::check_finding(f).map_err(|e| {
            ApiError::bad_request("invalid_param", format!("prepareFindings[{i}]: {e}"))
        })?;
        // Kept as a record shows it: a long message is cut, not refused.
        f.message = crate::api::bound_message(&f.message);
    }
    Ok(faults)
}

async fn route(
    engine: &Engine,
    req: Request<Incoming>,
    info: &ConnInfo,
) -> Result<Response<RespBody>, ApiError> {
    match resolve(req.method(), req.uri().path())? {
        Route::Status => Ok(json_response(StatusCode::OK, &engine.status().await)),
        Route::ListOperations => Ok(json_response(StatusCode::OK, &engine.ops.list())),
        Route::Submit => {
            let body = read_body(req.into_body(), MAX_BODY, info.body_timeout).await?;
            let request = crate::ops::parse_request(&body)?;
            let (status, record) = engine.submit(request).await?;
            Ok(json_response(status, &record))
        }
        Route::GetFaults => Ok(json_response(StatusCode::OK, &engine.backend.faults())),
        Route::PutFaults => {
            let body = read_body(req.into_body(), MAX_BODY, info.body_timeout).await?;
            let faults = parse_faults(&body)?;
            tracing::warn!(
                "fault injection changed: {}",
                http_util::clip(&format!("{faults:?}"), http_util::MAX_MESSAGE)
            );
            engine.backend.set_faults(faults.clone());
            Ok(json_response(StatusCode::OK, &faults))
        }
        Route::GetOperation(id) => match engine.ops.get(&id) {
            Some(rec) => Ok(json_response(StatusCode::OK, &rec)),
            None => Err(ApiError::not_found(format!("no operation with id {id:?}"))),
        },
    }
}
