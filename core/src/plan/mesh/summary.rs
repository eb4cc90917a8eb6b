//! The summary written to status: phase, message, progress, the kstatus conditions (through
//! the `Stall` enum), `Degraded`, `MixedVersion`, `PreconditionsMet`, and the wake.
//!
//! Owns: how the outcome of a pass reads. May use: `read`, `plan::conditions`, `plan::stall`.
//! Decides nothing: every input is an earlier stage's result.

use std::collections::BTreeSet;

use crate::api::{MeshPhase, MeshStatus, Timestamp, condition as cond};
use crate::plan::conditions::{Kstatus, announce_stall, set_condition, set_flag, set_kstatus};
use crate::plan::observe::{PlanEvent, Wake};
use crate::plan::stall::Stall;

use super::read::Clusters;

/// The outcome of a pass, as the earlier stages left it.
pub(super) struct Outcome<'x> {
    /// The CA rotation runs (what it does or waits for): no rollout moves meanwhile.
    pub(super) rotating: Option<&'x str>,
    pub(super) stalled: Option<&'x Stall>,
    pub(super) paused: bool,
    /// Clusters the mesh claims (readable or not) and those done.
    pub(super) total: u32,
    pub(super) done: u32,
    /// Failed clusters of the active tier.
    pub(super) failed: &'x [String],
    pub(super) waiting: &'x [String],
    /// Preconditions that failed the start of the rollout (joined).
    pub(super) unmet: Option<&'x str>,
    /// A once-per-mesh task of the rollout has not succeeded.
    pub(super) tasks_owed: bool,
    /// On an upgrade whose other tiers are done: the deferred tiers behind.
    pub(super) lagging: Option<&'x str>,
    /// A cluster of a deferred tier is admitted or part-way.
    pub(super) deferred_moving: bool,
}

impl Outcome<'_> {
    /// Done, or done but for deferred tiers that wait for their trigger: the mesh works with
    /// them behind. A deferred tier that moves is a rollout under way.
    fn ready(&self) -> bool {
        // Deferred tiers behind do not keep the mesh from Ready; a cluster of theirs that
        // failed does (the mesh is Degraded, as for any failed cluster).
        (self.done == self.total
            || (self.lagging.is_some() && !self.deferred_moving && self.failed.is_empty()))
            && self.stalled.is_none()
            && self.rotating.is_none()
            && !self.tasks_owed
    }

    fn phase(&self, st: &MeshStatus) -> MeshPhase {
        if self.stalled.is_some() {
            MeshPhase::Stalled
        } else if self.ready() {
            MeshPhase::Ready
        } else if self.paused {
            MeshPhase::Paused
        } else if self.rotating.is_some() && !self.failed.is_empty() {
            MeshPhase::Degraded
        } else if self.rotating.is_some() {
            let granted = st
                .certificates
                .as_ref()
                .is_some_and(|c| !c.rotating.is_empty());
            if granted {
                MeshPhase::Progressing
            } else {
                MeshPhase::Waiting
            }
        } else if !self.failed.is_empty() {
            MeshPhase::Degraded
        } else if !st.admitted.is_empty()
            || st
                .tasks
                .iter()
                .any(|t| t.state == crate::api::TaskState::Running)
        {
            MeshPhase::Progressing
        } else {
            MeshPhase::Waiting
        }
    }

    fn message(&self, st: &MeshStatus) -> Option<String> {
        if let Some(stall) = self.stalled {
            Some(stall.message())
        } else if let Some(rotation) = self.rotating {
            Some(rotation.to_string())
        } else if !self.failed.is_empty() {
            Some(format!(
                "clusters failed and hold their slots: {}",
                self.failed.join(", ")
            ))
        } else if self.ready() {
            self.lagging.map(|behind| {
                let why = self
                    .waiting
                    .first()
                    .map_or(String::new(), |w| format!(" ({w})"));
                format!("deferred tiers behind: {behind}{why}")
            })
        } else if !st.admitted.is_empty() {
            Some(format!(
                "moving: {}",
                st.admitted
                    .iter()
                    .map(|a| a.cluster.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            self.waiting.first().cloned()
        }
    }
}

/// Distinct version strings running: the lowest and highest of each cluster.
fn running_versions<'a>(clusters: &Clusters<'a>) -> BTreeSet<&'a str> {
    let strs = &clusters.versions.strs;
    let mut running = vec![false; strs.len()];
    for s in &clusters.sums {
        for id in [s.lo, s.hi] {
            if let Some(r) = running.get_mut(id as usize) {
                *r = true;
            }
        }
    }
    strs.iter()
        .zip(&running)
        .filter(|(_, r)| **r)
        .map(|(v, _)| *v)
        .collect()
}

/// Write progress, phase, message and conditions; a stall new since the last status is
/// announced by a warning event.
pub(super) fn write(
    st: &mut MeshStatus,
    o: &Outcome<'_>,
    clusters: &Clusters<'_>,
    events: &mut Vec<PlanEvent>,
    g: Option<i64>,
    now: Timestamp,
) {
    let total = o.total;
    st.progress = Some(format!("{}/{total}", o.done));
    st.lagging = o.lagging.map(str::to_string);
    st.phase = o.phase(st);
    st.message = o.message(st);
    let reconciling = st.message.clone().unwrap_or_default();
    announce_stall(&st.conditions, o.stalled, events);
    let conds = &mut st.conditions;
    set_kstatus(
        conds,
        Kstatus {
            stalled: o.stalled,
            ready: o.ready().then(|| match o.lagging {
                None => format!("all {total} clusters run their target"),
                Some(behind) => format!(
                    "{} of {total} clusters run their target; deferred tiers behind: {behind}",
                    o.done
                ),
            }),
            paused: o.paused,
            reconciling: (
                if o.rotating.is_some() {
                    "RotationInProgress"
                } else {
                    "RolloutInProgress"
                },
                reconciling,
            ),
        },
        g,
        now,
    );
    let degraded = !o.failed.is_empty();
    let (on, off) = ("ClustersFailed", "AsExpected");
    set_flag(
        conds,
        cond::DEGRADED,
        degraded,
        on,
        off,
        || o.failed.join(", "),
        g,
        now,
    );
    let versions = running_versions(clusters);
    let mixed = versions.len() > 1;
    let list = || versions.iter().copied().collect::<Vec<_>>().join(",");
    let (on, off) = ("MixedVersion", "SingleVersion");
    set_flag(conds, cond::MIXED_VERSION, mixed, on, off, list, g, now);
    let met = o.unmet.is_none();
    set_condition(
        conds,
        cond::PRECONDITIONS,
        met,
        if met {
            "Satisfied"
        } else {
            "PreconditionFailed"
        },
        o.unmet.unwrap_or_default(),
        g,
        now,
    );
}

/// Something admitted keeps the mesh busy; otherwise the earlier stages' wake stands.
pub(super) fn wake(st: &MeshStatus, wake: Wake) -> Wake {
    let rotating = st
        .certificates
        .as_ref()
        .is_some_and(|c| !c.rotating.is_empty());
    if st.admitted.is_empty() && !rotating {
        wake
    } else {
        Wake::Busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Admitted, Direction};
    use crate::fixtures::mesh::{NOW, Scene, cluster};
    use crate::plan::conditions::condition_true;
    use crate::plan::mesh::read;

    fn outcome<'x>(stalled: Option<&'x Stall>, failed: &'x [String]) -> Outcome<'x> {
        Outcome {
            rotating: None,
            stalled,
            paused: false,
            total: 2,
            done: 1,
            failed,
            waiting: &[],
            unmet: None,
            tasks_owed: false,
            lagging: None,
            deferred_moving: false,
        }
    }

    fn written(o: &Outcome<'_>, st: &mut MeshStatus) -> Vec<PlanEvent> {
        let scene = Scene::one_tier(
            "2.0.0",
            [cluster("a").ready("2.0.0"), cluster("b").runs("1.0.0")],
        );
        let mut events = Vec::new();
        scene.with_input(|input| write(st, o, &read::read(input), &mut events, Some(3), NOW));
        events
    }

    #[test]
    fn a_stall_wins_over_everything_and_is_announced_once() {
        let stall = Stall::Blocked(vec!["b: waits".into()]);
        let failed = ["b".to_string()];
        let mut st = MeshStatus::default();
        let events = written(&outcome(Some(&stall), &failed), &mut st);
        assert_eq!(st.phase, MeshPhase::Stalled);
        assert_eq!(st.message.as_deref(), Some("b: waits"));
        assert!(condition_true(&st.conditions, cond::STALLED));
        assert!(condition_true(&st.conditions, cond::DEGRADED));
        assert_eq!(events.len(), 1);
        assert!(events[0].warning && events[0].reason == "Blocked");
        let again = written(&outcome(Some(&stall), &failed), &mut st);
        assert!(again.is_empty(), "the same stall is not announced twice");
    }

    #[test]
    fn phase_message_and_conditions_follow_the_outcome() {
        let mut st = MeshStatus::default();
        written(&outcome(None, &["b".into()]), &mut st);
        assert_eq!(st.phase, MeshPhase::Degraded);
        assert_eq!(
            st.message.as_deref(),
            Some("clusters failed and hold their slots: b")
        );
        assert_eq!(st.progress.as_deref(), Some("1/2"));
        assert!(
            condition_true(&st.conditions, cond::MIXED_VERSION),
            "1.0.0 and 2.0.0 run"
        );
        assert!(condition_true(&st.conditions, cond::PRECONDITIONS));
        let mut st = MeshStatus {
            admitted: vec![Admitted {
                cluster: "b".into(),
                version: "2.0.0".into(),
                direction: Direction::Upgrade,
                since: NOW,
            }],
            ..Default::default()
        };
        let o = Outcome {
            unmet: Some("backlog"),
            ..outcome(None, &[])
        };
        written(&o, &mut st);
        assert_eq!(st.phase, MeshPhase::Progressing);
        assert_eq!(st.message.as_deref(), Some("moving: b"));
        assert!(condition_true(&st.conditions, cond::RECONCILING));
        assert!(!condition_true(&st.conditions, cond::PRECONDITIONS));
        assert_eq!(wake(&st, Wake::Idle), Wake::Busy);
        let mut st = MeshStatus::default();
        written(
            &Outcome {
                done: 2,
                ..outcome(None, &[])
            },
            &mut st,
        );
        assert_eq!((st.phase, st.message.as_deref()), (MeshPhase::Ready, None));
        assert!(condition_true(&st.conditions, cond::READY));
        let mut st = MeshStatus::default();
        written(
            &Outcome {
                paused: true,
                ..outcome(None, &[])
            },
            &mut st,
        );
        assert_eq!(st.phase, MeshPhase::Paused);
        assert!(condition_true(&st.conditions, cond::PAUSED));
        assert_eq!(wake(&st, Wake::Idle), Wake::Idle);
    }
}
