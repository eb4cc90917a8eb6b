//! Preconditions: no replication backlog, no conflicts, checked when a rollout starts from
//! rest; a force intent overrides a failure once.
//!
//! Owns: [`gate`] (hold or go for a new rollout) and the force intent's acknowledgement and
//! warning event. May use: `types` (the intents), `read`. The caller starts the rollout.

use crate::api::{Direction, MeshSpec, MeshStatus};
use crate::plan::observe::PlanEvent;
use crate::plan::stall::Stall;

use super::read::Summary;
use super::types::MeshIntents;

/// Whether a new rollout may start.
#[derive(Debug, PartialEq)]
pub(super) enum Gate {
    /// Preconditions fail (the failures, joined): nothing is admitted.
    Hold { failures: String },
    /// Start; `forced` when a force intent not acknowledged yet was given (the rollout is
    /// then a manual one, whether or not it overrode anything).
    Go { forced: bool },
}

impl Gate {
    pub(super) fn stall(spec: &MeshSpec, failures: &str) -> Stall {
        Stall::PreconditionFailed {
            version: spec.version.clone(),
            failures: failures.to_string(),
        }
    }
}

/// Preconditions guard the start of a rollout from rest; a backout in the middle of a rollout
/// is an emergency and is not held back by a replication backlog. A force intent overrides a
/// failure once: its token is acknowledged, with a warning event.
pub(super) fn gate(
    spec: &MeshSpec,
    intents: &MeshIntents,
    st: &mut MeshStatus,
    sums: &[Summary<'_>],
    direction: Direction,
    events: &mut Vec<PlanEvent>,
) -> Gate {
    let forced = intents
        .force
        .as_ref()
        .filter(|t| !st.acknowledged.contains(&format!("force:{t}")));
    let moving = !st.admitted.is_empty();
    let check = !moving && direction == Direction::Upgrade;
    let failures = if check {
        precondition_failures(spec, sums)
    } else {
        Vec::new()
    };
    if !failures.is_empty() && forced.is_none() {
        return Gate::Hold {
            failures: failures.join("; "),
        };
    }
    if let Some(t) = forced
        && !failures.is_empty()
    {
        st.acknowledged.push(format!("force:{t}"));
        events.push(PlanEvent {
            warning: true,
            reason: "PreconditionForced".into(),
            message: format!("rollout forced despite: {}", failures.join("; ")),
        });
    }
    Gate::Go {
        forced: forced.is_some(),
    }
}

fn precondition_failures(spec: &MeshSpec, sums: &[Summary<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    // Each precondition: whether it is on, what it counts per cluster and its name.
    type Count = fn(&Summary<'_>) -> u64;
    let counted: [(bool, Count, &str); 2] = [
        (spec.preconditions.no_backlog, |s| s.backlog().0, "backlog"),
        (
            spec.preconditions.no_conflicts,
            |s| s.backlog().1,
            "conflicts",
        ),
    ];
    for (on, count, what) in counted {
        if !on {
            continue;
        }
        let b: Vec<String> = sums
            .iter()
            .filter_map(|s| Some((s.name(), count(s))).filter(|x| x.1 > 0))
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        if !b.is_empty() {
            out.push(format!("replication {what} on {}", b.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Admitted;
    use crate::fixtures::mesh::{NOW, Scene, cluster};
    use crate::plan::mesh::read;

    fn scene() -> Scene {
        Scene::one_tier(
            "2.0.0",
            [
                cluster("a").runs("1.0.0").backlog(5),
                cluster("b").runs("1.0.0").conflicts(2),
            ],
        )
    }

    fn gate_in(scene: &Scene, st: &mut MeshStatus, d: Direction) -> (Gate, Vec<PlanEvent>) {
        let mut events = Vec::new();
        let gate = scene.with_input(|input| {
            let c = read::read(input);
            gate(input.mesh.spec, input.intents, st, &c.sums, d, &mut events)
        });
        (gate, events)
    }

    #[test]
    fn a_rollout_from_rest_is_held_by_backlog_and_conflicts() {
        let (g, events) = gate_in(&scene(), &mut MeshStatus::default(), Direction::Upgrade);
        assert_eq!(
            g,
            Gate::Hold {
                failures: "replication backlog on a (5); replication conflicts on b (2)".into()
            }
        );
        assert!(events.is_empty());
        let mut unchecked = scene();
        unchecked.mesh.spec.preconditions.no_backlog = false;
        unchecked.mesh.spec.preconditions.no_conflicts = false;
        let (g, _) = gate_in(&unchecked, &mut MeshStatus::default(), Direction::Upgrade);
        assert_eq!(g, Gate::Go { forced: false });
    }

    #[test]
    fn preconditions_hold_only_a_rollout_from_rest() {
        // A backout is an emergency.
        let (g, _) = gate_in(&scene(), &mut MeshStatus::default(), Direction::Backout);
        assert_eq!(g, Gate::Go { forced: false });
        // A new target while clusters move is not a start from rest.
        let mut moving = MeshStatus {
            admitted: vec![Admitted {
                cluster: "a".into(),
                version: "1.5.0".into(),
                direction: Direction::Upgrade,
                since: NOW,
            }],
            ..Default::default()
        };
        let (g, _) = gate_in(&scene(), &mut moving, Direction::Upgrade);
        assert_eq!(g, Gate::Go { forced: false });
    }

    #[test]
    fn a_force_intent_overrides_a_failure_once() {
        let forced = scene().forced("t1");
        let mut st = MeshStatus::default();
        let (g, events) = gate_in(&forced, &mut st, Direction::Upgrade);
        assert_eq!(g, Gate::Go { forced: true });
        assert_eq!(st.acknowledged, ["force:t1"]);
        assert_eq!(events.len(), 1);
        assert!(events[0].warning && events[0].reason == "PreconditionForced");
        // The same token again is spent.
        let (g, events) = gate_in(&forced, &mut st, Direction::Upgrade);
        assert!(matches!(g, Gate::Hold { .. }), "{g:?}");
        assert!(events.is_empty());
        assert_eq!(st.acknowledged, ["force:t1"]);
    }
}
