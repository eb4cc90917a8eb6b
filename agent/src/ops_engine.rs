//! Runs operations: validation, recording in the journal, asynchronous execution on the
//! backend, and the final record.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::api::{
    Alarm, Faults, Health, MemberStatus, OperationRecord, OperationRequest, OperationState,
    alarm_codes,
};
use crate::demo::DemoBackend;
use crate::exec::ExecBackend;
use crate::http_util::ApiError;
use crate::ops::{Begin, OpsStore, validate_request};

/// How long `POST /v1/operations` waits for a quick operation to finish before answering
/// 202 with a Running record.
const SUBMIT_WAIT: Duration = Duration::from_millis(500);

/// Lets a running operation report progress.
#[derive(Clone)]
pub struct Progress {
    ops: Arc<OpsStore>,
    id: String,
}

impl Progress {
    pub fn set(&self, percent: u8, message: &str) {
        self.ops.progress(&self.id, percent, message);
    }
}

#[derive(Clone)]
pub enum Backend {
    Demo(Arc<DemoBackend>),
    Exec(Arc<ExecBackend>),
}

impl Backend {
    async fn status(&self) -> MemberStatus {
        match self {
            Backend::Demo(d) => d.status(),
            Backend::Exec(e) => e.status().await,
        }
    }

    async fn version(&self) -> Option<String> {
        match self {
            Backend::Demo(d) => Some(d.version()),
            Backend::Exec(e) => e.version().await,
        }
    }

    fn validate(&self, req: &OperationRequest) -> Result<(), ApiError> {
        match self {
            Backend::Demo(d) => d.validate(req),
            Backend::Exec(e) => e.validate(req),
        }
    }

    async fn execute(&self, req: OperationRequest, progress: Progress) -> Result<String, String> {
        match self {
            Backend::Demo(d) => d.execute(req, progress).await,
            Backend::Exec(e) => e.execute(req, progress).await,
        }
    }

    pub fn faults(&self) -> Faults {
        match self {
            Backend::Demo(d) => d.faults(),
            Backend::Exec(e) => e.faults(),
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        match self {
            Backend::Demo(d) => d.set_faults(faults),
            Backend::Exec(e) => e.set_faults(faults),
        }
    }
}

pub struct Engine {
    pub member: String,
    pub ops: Arc<OpsStore>,
    pub backend: Backend,
}

impl Engine {
    /// Status with the current operation and the alarm of a failed last operation.
    pub async fn status(&self) -> MemberStatus {
        let mut status = self.backend.status().await;
        status.operation = self.ops.current();
        if let Some(last) = self.ops.last_finished()
            && last.state == OperationState::Failed
        {
            status.alarms.push(Alarm {
                code: alarm_codes::OPERATION_FAILED,
                severity: Health::Minor,
                name: "OperationFailed".to_string(),
                since: last.finished_at.unwrap_or(last.started_at),
                message: Some(format!(
                    "{} {:?} failed: {}",
                    last.kind, last.id, last.message
                )),
            });
            status.health = status.health.max(Health::Minor);
        }
        status
    }

    /// Handles `POST /v1/operations`: 200 for a repeated request, 201 when the new operation
    /// finished within a short wait, 202 while it is still running.
    pub async fn submit(
        &self,
        req: OperationRequest,
    ) -> Result<(StatusCode, OperationRecord), ApiError> {
        validate_request(&req)?;
        // A repeat of a known request must answer with its record even if the member's
        // state has moved on since, so look it up before state-dependent checks.
        if let Some(existing) = self.ops.get(&req.id) {
            return match self.ops.begin(&req, &self.member, None).await? {
                Begin::Existing(rec) => Ok((StatusCode::OK, rec)),
                Begin::Created(rec) => Err(ApiError::internal(format!(
                    "operation {} vanished while being looked up ({:?})",
                    existing.id, rec.state
                ))),
            };
        }
        self.ops.check_idle(&req)?;
        self.backend.validate(&req)?;
        let version_before = self.backend.version().await;
        let record = match self.ops.begin(&req, &self.member, version_before).await? {
            Begin::Existing(rec) => return Ok((StatusCode::OK, rec)),
            Begin::Created(rec) => rec,
        };
        tracing::info!(
            "operation {:?} ({}) started{}",
            record.id,
            record.kind,
            describe_params(&record)
        );
        let id = record.id.clone();
        let ops = self.ops.clone();
        let backend = self.backend.clone();
        let progress = Progress {
            ops: ops.clone(),
            id: id.clone(),
        };
        tokio::spawn(async move {
            let task = tokio::spawn({
                let backend = backend.clone();
                async move { backend.execute(req, progress).await }
            });
            let (state, message) = match task.await {
                Ok(Ok(msg)) => (OperationState::Succeeded, msg),
                Ok(Err(msg)) => (OperationState::Failed, msg),
                Err(e) => (
                    OperationState::Failed,
                    format!("internal error: operation task ended: {e}"),
                ),
            };
            let version_after = backend.version().await;
            match state {
                OperationState::Succeeded => {
                    tracing::info!("operation {id:?} succeeded: {message}")
                }
                _ => tracing::warn!("operation {id:?} failed: {message}"),
            }
            ops.finish(&id, state, message, version_after).await;
        });
        let rec = self
            .ops
            .wait_finished(&record.id, SUBMIT_WAIT)
            .await
            .unwrap_or(record);
        let status = if rec.state.is_finished() {
            StatusCode::CREATED
        } else {
            StatusCode::ACCEPTED
        };
        Ok((status, rec))
    }
}

fn describe_params(rec: &OperationRecord) -> String {
    let p = &rec.params;
    let mut parts = Vec::new();
    if let Some(v) = &p.version {
        parts.push(format!("version={v}"));
    }
    if let Some(c) = &p.component {
        parts.push(format!("component={c}"));
    }
    if let Some(s) = &p.source {
        parts.push(format!("source={s}"));
    }
    if let Some(r) = &p.role {
        parts.push(format!("role={r:?}"));
    }
    if !p.trust_fingerprints.is_empty() {
        parts.push(format!("trust={}", p.trust_fingerprints.join(",")));
    }
    if let Some(f) = &p.certificate_fingerprint {
        parts.push(format!("certificate={f}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" with {}", parts.join(" "))
    }
}
