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
use crate::ops::{Begin, Ended, OpsStore, Progress, validate_request};

/// How long `POST /v1/operations` waits for a quick operation to finish before answering
/// 202 with a Running record.
const SUBMIT_WAIT: Duration = Duration::from_millis(500);

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

    async fn execute(&self, req: OperationRequest, progress: Progress) -> Ended {
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
        // Recording the operation and starting it happen in a task of their own: the caller's
        // future is dropped when its client disconnects (an operator killed mid-request), and
        // a record left Running without its worker would hold the member busy forever.
        let (ops, backend, member) = (self.ops.clone(), self.backend.clone(), self.member.clone());
        let record = tokio::spawn(start(ops, backend, member, req))
            .await
            .map_err(|e| ApiError::internal(format!("operation start task ended: {e}")))??;
        let record = match record {
            Begin::Existing(rec) => return Ok((StatusCode::OK, rec)),
            Begin::Created(rec) => rec,
        };
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

/// Records a new operation and starts its worker (or returns the record of a repeat).
async fn start(
    ops: Arc<OpsStore>,
    backend: Backend,
    member: String,
    req: OperationRequest,
) -> Result<Begin, ApiError> {
    let version_before = backend.version().await;
    let record = match ops.begin(&req, &member, version_before).await? {
        Begin::Existing(rec) => return Ok(Begin::Existing(rec)),
        Begin::Created(rec) => rec,
    };
    tracing::info!(
        "operation {:?} ({}) started{}",
        record.id,
        record.kind,
        describe_params(&record)
    );
    let id = record.id.clone();
    let progress = Progress::new(ops.clone(), id.clone());
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
    Ok(Begin::Created(record))
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
    if let Some(n) = &p.peer {
        parts.push(format!("peer={n}"));
    }
    if let Some(f) = &p.fingerprint {
        parts.push(format!("fingerprint={f}"));
    }
    if let Some(n) = &p.copy_from {
        parts.push(format!("copyFrom={n}"));
    }
    if let Some(t) = &p.task {
        parts.push(format!("task={t}"));
    }
    if !p.checks.is_empty() {
        parts.push(format!("checks={}", p.checks.join(",")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" with {}", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{OperationKind, Role};
    use crate::demo::{DemoConfig, MemberTlsFlags};

    /// An engine over a demo backend in `dir` (tasks take no time).
    async fn demo_engine(dir: &std::path::Path) -> Engine {
        let ops = OpsStore::load(dir.join("operations.json"))
            .await
            .expect("journal");
        let demo = DemoBackend::start(demo_config(dir, 0.0))
            .await
            .expect("demo backend");
        Engine {
            member: "m0".into(),
            ops,
            backend: Backend::Demo(Arc::new(demo)),
        }
    }

    fn demo_config(dir: &std::path::Path, task_seconds: f64) -> DemoConfig {
        DemoConfig {
            member: "m0".into(),
            data_dir: dir.join("data"),
            data_listen: "127.0.0.1:0".parse().expect("address"),
            data_advertise_host: None,
            version: "1.0.0".into(),
            role: Role::Standby,
            source: None,
            components: BTreeMap::new(),
            tls: MemberTlsFlags {
                allow_plain: true,
                ..Default::default()
            },
            upgrade_seconds: 0.1,
            restart_seconds: 0.0,
            task_seconds,
            stage_seconds: 0.0,
            require_staged_media: false,
            prepare_seconds: 0.0,
            prepare_findings: Vec::new(),
            scheduled_jobs: Vec::new(),
            load: None,
            faults: Faults::default(),
            conn_limits: Default::default(),
        }
    }

    /// A client that disconnects while its operation is being recorded (the operator killed
    /// mid-request) drops the request handler's future at whatever await it had reached. The
    /// operation must still run to its end, not stay Running with no worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_submission_dropped_mid_way_still_runs_its_operation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = demo_engine(dir.path()).await;
        for i in 0..5 {
            let id = format!("up-{i}");
            let version = format!("2.0.{i}");
            let req = OperationRequest::new(&id, OperationKind::Upgrade).with_version(&version);
            // Polled once (it stops at the journal write), then dropped.
            let dropped = tokio::time::timeout(Duration::ZERO, engine.submit(req)).await;
            assert!(dropped.is_err(), "the submission finished in one poll");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let rec = engine.ops.get(&id);
                if rec.as_ref().is_some_and(|r| r.state.is_finished()) {
                    assert_eq!(rec.map(|r| r.state), Some(OperationState::Succeeded));
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "operation {id} stuck: {rec:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(engine.backend.version().await.as_deref(), Some(&*version));
        }
    }

    /// A demo member keeps the last `MAX_TASK_RUNS` task runs, newest last, and a new backend
    /// on the same data directory (an agent restart) reads them back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_runs_are_bounded_and_persisted() {
        use crate::api::MAX_TASK_RUNS;
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = demo_engine(dir.path()).await;
        let runs = MAX_TASK_RUNS + 2;
        for i in 0..runs {
            let req = OperationRequest::new(format!("t-{i}"), OperationKind::Task)
                .with_task(format!("job-{}", i % 3));
            let (_, rec) = engine.submit(req).await.expect("accepted");
            let rec = engine
                .ops
                .wait_finished(&rec.id, Duration::from_secs(10))
                .await
                .expect("recorded");
            assert_eq!(rec.state, OperationState::Succeeded, "{rec:?}");
        }
        let tasks = engine.status().await.tasks;
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let want: Vec<String> = (runs - MAX_TASK_RUNS..runs)
            .map(|i| format!("t-{i}"))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(tasks.last().map(|t| t.task.as_str()), Some("job-0"));
        for t in &tasks {
            let at: jiff::Timestamp = t.at.parse().expect("RFC 3339");
            assert!(at <= jiff::Timestamp::now());
        }
        let again = DemoBackend::start(demo_config(dir.path(), 0.0))
            .await
            .expect("demo backend again");
        assert_eq!(again.status().tasks, tasks);
    }

    /// A demo member stages at most `MAX_MEDIA` versions: one more fails with "media store
    /// full" and changes nothing, a version already staged still succeeds (at once), and
    /// after a removal there is room again. A new backend on the same data directory (an
    /// agent restart) reads the staged versions back, oldest first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_media_is_bounded_and_persisted() {
        use crate::api::MAX_MEDIA;
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = demo_engine(dir.path()).await;
        let run = |id: String, kind: OperationKind, version: String| {
            let engine = &engine;
            async move {
                let req = OperationRequest::new(id, kind).with_version(version);
                let (_, rec) = engine.submit(req).await.expect("accepted");
                engine
                    .ops
                    .wait_finished(&rec.id, Duration::from_secs(10))
                    .await
                    .expect("recorded")
            }
        };
        let versions: Vec<String> = (0..MAX_MEDIA).map(|i| format!("2.{i}.0")).collect();
        for (i, v) in versions.iter().enumerate() {
            let rec = run(format!("stage-{i}"), OperationKind::StageMedia, v.clone()).await;
            assert_eq!(rec.state, OperationState::Succeeded, "{rec:?}");
        }
        assert_eq!(engine.status().await.media, versions);
        let state_file = dir.path().join("data").join("state.json");
        let on_disk = std::fs::read_to_string(&state_file).expect("state.json");

        let full = run(
            "stage-full".into(),
            OperationKind::StageMedia,
            "3.0.0".into(),
        )
        .await;
        assert_eq!(full.state, OperationState::Failed, "{full:?}");
        assert_eq!(
            full.message,
            format!("media store full: {MAX_MEDIA} versions staged (remove some first)")
        );
        assert_eq!(engine.status().await.media, versions, "nothing changed");
        assert_eq!(
            std::fs::read_to_string(&state_file).expect("state.json"),
            on_disk,
            "nothing persisted"
        );
        // Already staged: nothing to copy, so a full store does not refuse it.
        let again = run(
            "stage-again".into(),
            OperationKind::StageMedia,
            versions[3].clone(),
        )
        .await;
        assert_eq!(again.state, OperationState::Succeeded, "{again:?}");
        assert!(
            again.message.contains("already staged"),
            "{}",
            again.message
        );
        assert_eq!(engine.status().await.media, versions);

        let removed = run(
            "rm-0".into(),
            OperationKind::RemoveMedia,
            versions[0].clone(),
        )
        .await;
        assert_eq!(removed.state, OperationState::Succeeded, "{removed:?}");
        let now = run(
            "stage-after-rm".into(),
            OperationKind::StageMedia,
            "3.0.0".into(),
        )
        .await;
        assert_eq!(now.state, OperationState::Succeeded, "{now:?}");
        let mut want: Vec<String> = versions[1..].to_vec();
        want.push("3.0.0".into());
        let media = engine.status().await.media;
        assert_eq!(media, want, "oldest first, the newest last");
        assert_eq!(media.len(), MAX_MEDIA);

        let again = DemoBackend::start(demo_config(dir.path(), 0.0))
            .await
            .expect("demo backend again");
        assert_eq!(again.status().media, want);
    }
}
