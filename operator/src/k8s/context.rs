//! What every reconcile of the Kubernetes host shares: the API client, the member access,
//! the caches, events, leadership, metrics and the triggers between the two controllers.

use std::sync::Arc;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::runtime::reflector::ObjectRef;

use crate::reconcile::{Members, MetricLabel, Timing};

use super::events::EventSink;
use super::leader::Leadership;
use super::metrics::Metrics;
use super::relations::Relations;
use super::slots::Slots;
use super::stores::{GuardedCluster, GuardedMesh, Stores};

/// Why a reconcile failed (the controller retries it after a delay).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    StatusWrite {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {namespace}/{name}: {source}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The `reason` of `baton_reconcile_errors_total` (documented in `docs/operator.md`).
impl MetricLabel for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite { .. } => "StatusWrite",
            Error::Read { .. } => "Read",
        }
    }
}

/// Ask the other controller (or the same one) to look at an object soon.
#[derive(Clone)]
pub struct Triggers {
    clusters: UnboundedSender<ObjectRef<GuardedCluster>>,
    meshes: UnboundedSender<ObjectRef<GuardedMesh>>,
}

/// The receiving ends, fed to `Controller::reconcile_on`.
pub struct TriggerStreams {
    pub clusters: UnboundedReceiver<ObjectRef<GuardedCluster>>,
    pub meshes: UnboundedReceiver<ObjectRef<GuardedMesh>>,
}

impl Triggers {
    pub fn new() -> (Triggers, TriggerStreams) {
        let (ct, cr) = unbounded();
        let (mt, mr) = unbounded();
        (
            Triggers {
                clusters: ct,
                meshes: mt,
            },
            TriggerStreams {
                clusters: cr,
                meshes: mr,
            },
        )
    }

    pub fn cluster(&self, namespace: &str, name: &str) {
        // A closed channel means the controller is shutting down: nothing to wake.
        let _ = self
            .clusters
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }

    pub fn mesh(&self, namespace: &str, name: &str) {
        let _ = self
            .meshes
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }
}

pub struct Context<M: Members> {
    pub client: kube::Client,
    pub members: M,
    pub stores: Stores,
    pub events: EventSink,
    pub leader: Leadership,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub triggers: Triggers,
    /// Wakes Clusters whose admission changed (remembers what each was last woken for).
    pub relations: Arc<Relations>,
    /// Cluster passes at once, busy clusters first (see `slots`).
    pub slots: Slots,
    /// Clusters whose last pass asked to be looked at again soon (busy polling).
    pub hot: std::sync::Mutex<std::collections::HashSet<super::stores::Key>>,
    /// How often an object with `spec.certificates` reads its CA Secret again at the latest.
    pub ca_recheck: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_controller_error_has_its_metric_label() {
        let e = |write: bool| {
            let (kind, namespace, name) = ("Cluster", "ns".to_string(), "web".to_string());
            let source = kube::Error::Service("boom".into());
            if write {
                Error::StatusWrite {
                    kind,
                    namespace,
                    name,
                    source,
                }
            } else {
                Error::Read {
                    kind,
                    namespace,
                    name,
                    source,
                }
            }
        };
        assert_eq!(e(true).metric_label(), "StatusWrite");
        assert_eq!(e(false).metric_label(), "Read");
        assert!(
            e(true)
                .to_string()
                .starts_with("writing the status of Cluster ns/web: "),
            "{}",
            e(true)
        );
        assert!(e(false).to_string().starts_with("reading Cluster ns/web: "));
    }
}
