//! Kubernetes Events (`events.k8s.io/v1`) for what the planner and the controllers did: steps
//! started, finished and failed, approvals, retries, pauses, forced phases, acknowledged
//! intents, agent submission failures and invalid objects.
//!
//! The recorder aggregates repeats of the same event into a series. Its key holds the reason
//! and `action` but not the message, so `action` carries a digest of the message: two steps of
//! the same kind stay two events, and one warning repeated every poll stays one series.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::{ClusterStatus, Condition, MeshStatus, condition as cond};
use crate::plan::PlanEvent;
use crate::plan::conditions::{bounded, condition_true};
use crate::reconcile::ActOutcome;

use super::annotations::annotation_of;

/// The reporting controller named in every event.
pub const REPORTER: &str = "baton-operator";

#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
}

impl EventSink {
    pub fn new(client: kube::Client, instance: &str) -> Self {
        EventSink {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: REPORTER.into(),
                    instance: Some(instance.to_string()),
                },
            ),
        }
    }

    /// Publish events about one object; failures are logged, never fatal to a reconcile.
    pub async fn publish(&self, regarding: &ObjectReference, events: &[PlanEvent]) {
        for e in events {
            let ev = Event {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: bounded(&e.reason, 128),
                note: Some(bounded(&e.message, 1024)),
                action: action_for(e),
                secondary: None,
            };
            if let Err(err) = self.recorder.publish(&ev, regarding).await {
                tracing::warn!(
                    error = %err,
                    object = ?regarding.name,
                    reason = %e.reason,
                    "publishing an event failed"
                );
            }
        }
    }
}

/// A reference without `resourceVersion`, so repeats about one object form one series.
pub fn reference<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

fn action_for(e: &PlanEvent) -> String {
    let verb = match e.reason.as_str() {
        "IntentAcknowledged" | "Approved" | "RetryRequested" | "PreconditionForced" => {
            "Acknowledge"
        }
        "AgentUnreachable" | "OperationRefused" | "OperationDeferred" => "Submit",
        "InvalidObject" => "Validate",
        "Paused" | "Resumed" => "Pause",
        _ => "Plan",
    };
    // FNV-1a of the message.
    let mut h: u32 = 0x811c_9dc5;
    for b in e.message.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{verb}-{h:08x}")
}

/// Events the host derives from two statuses: intents newly acknowledged, pause flips.
pub fn derived(
    before_ack: &[String],
    after_ack: &[String],
    was_paused: Option<bool>,
    paused: bool,
) -> Vec<PlanEvent> {
    let mut out = Vec::new();
    for token in after_ack.iter().filter(|t| !before_ack.contains(t)) {
        let message = match annotation_of(token) {
            Some((key, value)) => format!("{key}={value} acknowledged"),
            None => format!("intent {token} acknowledged"),
        };
        out.push(PlanEvent {
            warning: false,
            reason: "IntentAcknowledged".into(),
            message,
        });
    }
    if let Some(was) = was_paused
        && was != paused
    {
        out.push(PlanEvent {
            warning: false,
            reason: if paused { "Paused" } else { "Resumed" }.into(),
            message: if paused {
                "paused: no new step starts; steps in flight finish".into()
            } else {
                "resumed".into()
            },
        });
    }
    out
}

pub fn cluster_derived(before: Option<&ClusterStatus>, after: &ClusterStatus) -> Vec<PlanEvent> {
    derived_between(
        before.map(|s| (s.acknowledged.as_slice(), s.conditions.as_slice())),
        (&after.acknowledged, &after.conditions),
    )
}

pub fn mesh_derived(before: Option<&MeshStatus>, after: &MeshStatus) -> Vec<PlanEvent> {
    derived_between(
        before.map(|s| (s.acknowledged.as_slice(), s.conditions.as_slice())),
        (&after.acknowledged, &after.conditions),
    )
}

/// [`derived`] between two statuses, each as its acknowledged tokens and its conditions.
fn derived_between(
    before: Option<(&[String], &[Condition])>,
    (after_ack, after_conditions): (&[String], &[Condition]),
) -> Vec<PlanEvent> {
    derived(
        before.map(|(ack, _)| ack).unwrap_or_default(),
        after_ack,
        before.map(|(_, c)| condition_true(c, cond::PAUSED)),
        condition_true(after_conditions, cond::PAUSED),
    )
}

/// An event for each operation an agent did not accept.
pub fn submission_failures(outcomes: &[ActOutcome]) -> Vec<PlanEvent> {
    outcomes
        .iter()
        .filter_map(ActOutcome::failure_event)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_acknowledgements_and_pause_flips_become_events() {
        let ev = derived(
            &["retry:a".into()],
            &["retry:a".into(), "approve:switchover/web/m2@2.0.0".into()],
            Some(false),
            true,
        );
        let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["IntentAcknowledged", "Paused"]);
        assert_eq!(
            ev[0].message,
            "baton.dev/approve=switchover/web/m2@2.0.0 acknowledged"
        );
        // The first status ever written reports no pause flip.
        assert!(derived(&[], &[], None, true).is_empty());
    }

    #[test]
    fn distinct_messages_get_distinct_actions() {
        let a = PlanEvent {
            warning: false,
            reason: "StepStarted".into(),
            message: "upgrade m1".into(),
        };
        let b = PlanEvent {
            message: "upgrade m2".into(),
            ..a.clone()
        };
        assert_ne!(action_for(&a), action_for(&b));
        assert_eq!(action_for(&a), action_for(&a.clone()));
        assert!(action_for(&a).starts_with("Plan-"));
        assert!(action_for(&a).len() <= 128);
    }
}
