//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Liveness says the process serves. Readiness says the caches hold a complete list of
//! Clusters and Meshes and both CRDs are Established (checked periodically); a replica that
//! is not the leader is still ready: it takes over the moment it wins the Lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, ResourceExt};

use super::leader::Leadership;
use super::metrics::Metrics;
use super::stores::Stores;

/// Names of the CRDs readiness waits for.
pub const CRD_NAMES: [&str; 2] = ["clusters.baton.dev", "meshes.baton.dev"];

/// Why the operator is not ready (the body of a 503 from `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("caches of Clusters and Meshes not listed yet")]
    CachesNotListed,
    #[error("CRDs not checked yet")]
    CrdsNotChecked,
    #[error("reading CRD {name}: {error}")]
    CrdUnreadable { name: &'static str, error: String },
    #[error("CRD {name} is not installed (kubectl apply -f crds/)")]
    CrdMissing { name: &'static str },
    #[error("CRD {name} is not Established yet")]
    CrdNotEstablished { name: &'static str },
}

pub struct HttpState {
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub leader: Leadership,
    pub crds_established: AtomicBool,
    pub crd_problem: std::sync::Mutex<NotReady>,
}

impl HttpState {
    pub fn new(stores: Stores, metrics: Arc<Metrics>, leader: Leadership) -> Self {
        HttpState {
            stores,
            metrics,
            leader,
            crds_established: AtomicBool::new(false),
            crd_problem: std::sync::Mutex::new(NotReady::CrdsNotChecked),
        }
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if !self.stores.synced() {
            return Err(NotReady::CachesNotListed);
        }
        if !self.crds_established.load(Ordering::Acquire) {
            return Err(self
                .crd_problem
                .lock()
                .map(|s| s.clone())
                .unwrap_or(NotReady::CrdsNotChecked));
        }
        Ok(())
    }

    pub fn set_crds(&self, result: Result<(), NotReady>) {
        self.crds_established
            .store(result.is_ok(), Ordering::Release);
        if let (Err(why), Ok(mut p)) = (result, self.crd_problem.lock()) {
            *p = why;
        }
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(st): State<Arc<HttpState>>) -> Response {
    match st.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<Arc<HttpState>>) -> Response {
    let clusters = st.stores.clusters.state();
    let meshes = st.stores.meshes.state();
    let body = st.metrics.render(
        clusters
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter_map(|c| c.status.as_ref()),
        meshes
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter_map(|m| {
                m.status
                    .as_ref()
                    .map(|s| (m.namespace().unwrap_or_default(), m.name_any(), s))
            }),
        st.leader.is_leader(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Whether both CRDs exist and are Established.
pub async fn check_crds(client: &kube::Client) -> Result<(), NotReady> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRD_NAMES {
        let crd = api
            .get_opt(name)
            .await
            .map_err(|e| NotReady::CrdUnreadable {
                name,
                error: e.to_string(),
            })?
            .ok_or(NotReady::CrdMissing { name })?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            return Err(NotReady::CrdNotEstablished { name });
        }
    }
    Ok(())
}

/// Re-check the CRDs every `period` until `stop` resolves.
pub async fn watch_crds(
    client: kube::Client,
    state: Arc<HttpState>,
    period: StdDuration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let r = check_crds(&client).await;
        if let Err(why) = &r {
            tracing::warn!("not ready: {why}");
        }
        state.set_crds(r);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return,
        }
    }
}

/// Serve on a bound listener until `stop` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| anyhow::anyhow!("HTTP endpoint {addr:?}: {e}"))
}
