//! Prometheus metrics (`/metrics`, OpenMetrics text).
//!
//! Counters and the duration histogram are updated by the reconcilers; the gauges describing
//! the fleet (members by role and version, mesh progress, leadership) are recomputed from the
//! caches at every scrape, so they never keep series of objects that are gone.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ClusterStatus, LogEntry, LogMode, LogResult, LogScope, MeshStatus};
use crate::reconcile::MetricLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub role: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeshLabels {
    pub namespace: String,
    pub mesh: String,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
    steps: Family<StepLabels, Counter>,
    members: Family<MemberLabels, Gauge>,
    progress: Family<MeshLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    kube_requests: super::requests::RequestCounter,
    status_writes: Family<KindLabels, Counter>,
    /// Serializes refresh-and-encode so two scrapes never interleave their gauge rebuilds.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms … ~20 s: a pass observes every member over the network.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let steps = Family::<StepLabels, Counter>::default();
        let members = Family::<MemberLabels, Gauge>::default();
        let progress = Family::<MeshLabels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        let kube_requests = super::requests::RequestCounter::default();
        let status_writes = Family::<KindLabels, Counter>::default();
        registry.register(
            "baton_kube_requests",
            "Requests this operator made to the Kubernetes API, by verb, resource and HTTP code",
            kube_requests.clone(),
        );
        registry.register(
            "baton_status_writes",
            "Status writes (server-side apply) accepted by the API server, by kind",
            status_writes.clone(),
        );
        registry.register(
            "baton_reconciles",
            "Reconcile passes by kind (Cluster, Mesh)",
            reconciles.clone(),
        );
        registry.register(
            "baton_reconcile_errors",
            "Reconcile passes that failed, by kind and reason",
            errors.clone(),
        );
        registry.register(
            "baton_reconcile_duration_seconds",
            "Duration of reconcile passes by kind",
            duration.clone(),
        );
        registry.register(
            "baton_steps",
            "Member steps by action and result (started, succeeded, failed, cancelled)",
            steps.clone(),
        );
        registry.register(
            "baton_members",
            "Members of all Clusters by observed role and version",
            members.clone(),
        );
        registry.register(
            "baton_mesh_rollout_progress",
            "Fraction of a Mesh's clusters running its target (0 to 1)",
            progress.clone(),
        );
        registry.register(
            "baton_leader",
            "1 when this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            steps,
            members,
            progress,
            leader,
            kube_requests,
            status_writes,
            scrape: Mutex::new(()),
        }
    }

    /// Start timing one reconcile of `kind`: the pass is counted and its duration observed
    /// when the returned guard is dropped, however the reconcile ends (see [`ReconcileTimer`]).
    pub fn start(&self, kind: &str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            kind: kind.to_string(),
            started: Instant::now(),
        }
    }

    /// The counter the API client wrapper (`requests::counted`) increments.
    pub fn kube_requests(&self) -> super::requests::RequestCounter {
        self.kube_requests.clone()
    }

    /// One accepted status write of `kind`.
    pub fn status_written(&self, kind: &str) {
        self.status_writes
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// One failed reconcile of `kind`; the `reason` label is the error's [`MetricLabel`].
    pub fn error(&self, kind: &str, error: &impl MetricLabel) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: error.metric_label().into(),
            })
            .inc();
    }

    /// Count the member steps a status write started and finished, from the upgrade log.
    pub fn count_steps(&self, before: Option<&ClusterStatus>, after: &ClusterStatus) {
        for (action, result) in step_transitions(before.map(|s| s.log.as_slice()), &after.log) {
            self.steps
                .get_or_create(&StepLabels { action, result })
                .inc();
        }
    }

    /// Rebuild the fleet gauges and encode everything.
    pub fn render<'a>(
        &self,
        clusters: impl Iterator<Item = &'a ClusterStatus>,
        meshes: impl Iterator<Item = (String, String, &'a MeshStatus)>,
        leader: bool,
    ) -> String {
        let _guard = self.scrape.lock();
        self.members.clear();
        for st in clusters {
            for m in &st.members {
                self.members
                    .get_or_create(&MemberLabels {
                        role: format!("{:?}", m.role),
                        version: m.version.clone().unwrap_or_default(),
                    })
                    .inc();
            }
        }
        self.progress.clear();
        for (namespace, mesh, st) in meshes {
            if let Some(f) = st.progress.as_deref().and_then(fraction) {
                self.progress
                    .get_or_create(&MeshLabels { namespace, mesh })
                    .set(f);
            }
        }
        self.leader.set(i64::from(leader));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Times one reconcile, as a drop guard (like kube-rs `controller-rs`'s `ReconcileMeasurer`):
/// created when the pass starts, it counts the pass (`baton_reconciles_total`) and observes
/// its duration (`baton_reconcile_duration_seconds`) exactly once, when dropped, so every way
/// out of the reconcile (an early return, `?` on an error, a cancelled future) is measured.
/// Bind it to a named variable (`let _timer = …`): `let _ = …` drops it at once.
#[must_use = "the reconcile is measured when this guard is dropped"]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: String,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let labels = KindLabels {
            kind: std::mem::take(&mut self.kind),
        };
        self.metrics.reconciles.get_or_create(&labels).inc();
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// `"3/5"` → 0.6.
fn fraction(progress: &str) -> Option<f64> {
    let (done, total) = progress.split_once('/')?;
    let done: f64 = done.trim().parse().ok()?;
    let total: f64 = total.trim().parse().ok()?;
    Some(if total > 0.0 { done / total } else { 1.0 })
}

/// A log entry for one step: a member step, or a cluster-wide step inside a rollout (the
/// cluster verification). Rollout entries (no parent) and manual intents (`retry`) are not
/// steps.
fn is_step(e: &LogEntry) -> bool {
    match e.scope {
        LogScope::Member => true,
        LogScope::Cluster => e.parent.is_some() && e.mode == LogMode::Automatic,
        LogScope::Mesh => false,
    }
}

/// `(action, result)` for each step log entry that started or ended between two logs.
fn step_transitions(before: Option<&[LogEntry]>, after: &[LogEntry]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in after.iter().filter(|e| is_step(e)) {
        let prev = before.and_then(|b| b.iter().find(|p| p.id == e.id));
        let was_running = match prev {
            None => {
                out.push((e.action.clone(), "started".to_string()));
                true
            }
            Some(p) => p.result == LogResult::Running,
        };
        if was_running && e.result != LogResult::Running {
            let r = match e.result {
                LogResult::Succeeded => "succeeded",
                LogResult::Failed => "failed",
                LogResult::Cancelled => "cancelled",
                LogResult::Running => "running",
            };
            out.push((e.action.clone(), r.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberRole, MemberStatus, Timestamp};

    fn entry(id: u64, action: &str, result: LogResult) -> LogEntry {
        LogEntry {
            id,
            parent: None,
            action: action.into(),
            scope: LogScope::Member,
            target: "m1".into(),
            version: None,
            start: Timestamp(0),
            end: None,
            result,
            mode: LogMode::Automatic,
            message: String::new(),
        }
    }

    #[test]
    fn steps_are_counted_once_when_they_start_and_once_when_they_end() {
        let a = vec![entry(1, "upgrade", LogResult::Running)];
        assert_eq!(
            step_transitions(Some(&[]), &a),
            vec![("upgrade".into(), "started".into())]
        );
        let b = vec![entry(1, "upgrade", LogResult::Failed)];
        assert_eq!(
            step_transitions(Some(&a), &b),
            vec![("upgrade".into(), "failed".into())]
        );
        assert!(step_transitions(Some(&b), &b).is_empty());
    }

    /// The cluster verification is a cluster-scoped step inside the rollout: counted. The
    /// rollout entry itself and a manual retry are not steps.
    #[test]
    fn the_cluster_verification_is_a_step_and_the_rollout_is_not() {
        let rollout = LogEntry {
            scope: LogScope::Cluster,
            target: "web".into(),
            ..entry(1, "upgrade", LogResult::Running)
        };
        let verify = LogEntry {
            parent: Some(1),
            ..rollout.clone()
        };
        let verify = LogEntry {
            id: 2,
            action: "verify".into(),
            ..verify
        };
        let retry = LogEntry {
            id: 3,
            action: "retry".into(),
            mode: LogMode::Manual,
            ..verify.clone()
        };
        assert_eq!(
            step_transitions(Some(&[]), &[rollout, verify, retry]),
            vec![("verify".into(), "started".into())]
        );
    }

    #[test]
    fn render_exposes_the_documented_names() {
        let m = Metrics::new();
        drop(m.start("Cluster"));
        m.error(
            "Cluster",
            &super::super::context::Error::StatusWrite {
                kind: "Cluster",
                namespace: "ns".into(),
                name: "web".into(),
                source: kube::Error::Service("test".into()),
            },
        );
        m.status_written("Cluster");
        m.count_steps(
            None,
            &ClusterStatus {
                log: vec![entry(1, "preflight", LogResult::Succeeded)],
                ..Default::default()
            },
        );
        let st = ClusterStatus {
            members: vec![
                MemberStatus {
                    name: "a".into(),
                    role: MemberRole::Active,
                    version: Some("1.0.0".into()),
                    ..Default::default()
                },
                MemberStatus {
                    name: "b".into(),
                    role: MemberRole::Standby,
                    version: Some("1.0.0".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mesh = MeshStatus {
            progress: Some("1/4".into()),
            ..Default::default()
        };
        let text = m.render(
            [&st].into_iter(),
            [("ns".to_string(), "prod".to_string(), &mesh)].into_iter(),
            true,
        );
        for needle in [
            "baton_reconciles_total{kind=\"Cluster\"} 1",
            "baton_reconcile_errors_total{kind=\"Cluster\",reason=\"StatusWrite\"} 1",
            "baton_reconcile_duration_seconds_count{kind=\"Cluster\"} 1",
            "baton_steps_total{action=\"preflight\",result=\"started\"} 1",
            "baton_steps_total{action=\"preflight\",result=\"succeeded\"} 1",
            "baton_members{role=\"Active\",version=\"1.0.0\"} 1",
            "baton_members{role=\"Standby\",version=\"1.0.0\"} 1",
            "baton_mesh_rollout_progress{namespace=\"ns\",mesh=\"prod\"} 0.25",
            "baton_leader 1",
            "baton_status_writes_total{kind=\"Cluster\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        // Gauges follow the caches: a second scrape without the cluster drops its series.
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert!(!text.contains("baton_members{"), "{text}");
        assert!(text.contains("baton_leader 0"), "{text}");
    }

    fn count(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The guard observes once when dropped, on every way out of a reconcile.
    #[test]
    fn the_reconcile_timer_observes_once_on_every_way_out() {
        fn reconcile(m: &Metrics, fail: bool) -> Result<(), &'static str> {
            let _timer = m.start("Mesh");
            if fail {
                Err("early")?;
            }
            Ok(())
        }
        let m = Metrics::new();
        let dur = "baton_reconcile_duration_seconds_count{kind=\"Mesh\"}";
        let total = "baton_reconciles_total{kind=\"Mesh\"}";
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!(count(&text, dur), None, "nothing before a reconcile");

        assert!(reconcile(&m, false).is_ok());
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!((count(&text, dur), count(&text, total)), (Some(1), Some(1)));

        assert!(reconcile(&m, true).is_err(), "the error path");
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!((count(&text, dur), count(&text, total)), (Some(2), Some(2)));

        // Still running: not observed yet.
        let running = m.start("Mesh");
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!(count(&text, dur), Some(2));
        drop(running);
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!(count(&text, dur), Some(3));
    }

    /// A cancelled reconcile (its future dropped mid-pass) is measured too.
    #[tokio::test]
    async fn a_cancelled_reconcile_is_measured() {
        let m = Metrics::new();
        let pass = async {
            let _timer = m.start("Cluster");
            std::future::pending::<()>().await;
        };
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), pass).await;
        assert!(timed_out.is_err());
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!(
            count(
                &text,
                "baton_reconcile_duration_seconds_count{kind=\"Cluster\"}"
            ),
            Some(1)
        );
    }

    /// Every error kind reaches the metric as its own label.
    #[test]
    fn error_metrics_are_labelled_by_the_error_kind() {
        use super::super::context::Error;
        let m = Metrics::new();
        let read = Error::Read {
            kind: "Mesh",
            namespace: "ns".into(),
            name: "prod".into(),
            source: kube::Error::Service("test".into()),
        };
        m.error("Mesh", &read);
        m.error("Mesh", &read);
        let text = m.render(std::iter::empty(), std::iter::empty(), false);
        assert_eq!(
            count(
                &text,
                "baton_reconcile_errors_total{kind=\"Mesh\",reason=\"Read\"}"
            ),
            Some(2),
            "{text}"
        );
    }
}
