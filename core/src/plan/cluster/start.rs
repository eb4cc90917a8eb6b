//! Starting a step: record it (intent first: the step record and its log entry are in the
//! status this pass writes) and ask for its first operation at once; the loop persists the
//! status before sending. A step that is not an emergency is held while new steps may not
//! start (paused, or not admitted by the mesh).
//!
//! Also the one place a recorded step is advanced ([`advance`]): the in-flight stage and a
//! newly started step both go through it, and it starts the switch back a failed or stale
//! switchover asks for.
//!
//! Owns: `status.steps` (appending), the step's log entry and `StepStarted` event, the
//! unavailability count of new disruptive steps.
//!
//! May use: `state`, `log`, `op`, `switchover`. Used by `flight`, `gates`, `member`,
//! `handover`, `converge`, `choose`.

use crate::api::{LogScope, StepAction, StepRecord};
use crate::plan::observe::Wake;

use super::log;
use super::state::{
    Advanced, NewStep, Pass, TopologyEntry, action_name, describe, step_id, task_step_id,
};
use super::{op, switchover};

/// Advance a recorded step; `Some` while it stays in flight.
pub(super) fn advance(p: &mut Pass<'_>, s: StepRecord) -> Option<StepRecord> {
    let advanced = match s.action {
        StepAction::AwaitSync => op::advance_await(p, &s),
        StepAction::Switchover => switchover::advance(p, &s),
        _ => op::advance_op(p, &s),
    };
    match advanced {
        Advanced::Keep => Some(s),
        Advanced::Done => None,
        Advanced::Then(n) => {
            start(p, *n);
            None
        }
    }
}

/// Record a new step (intent first) and ask for its first operation.
pub(super) fn start(p: &mut Pass<'_>, n: NewStep) {
    // A mesh task runs when its mesh asks, admitted or not, and media is staged or removed,
    // and the preparation checks run, ahead of the window (their stages hold them while the
    // cluster is paused).
    let unadmitted = n.task.is_some()
        || matches!(
            n.action,
            StepAction::StageMedia | StepAction::RemoveMedia | StepAction::Prepare
        );
    if !p.may_start && !n.rollback && !unadmitted {
        p.held = true;
        return;
    }
    // The rollout's first disruptive step: its health baseline first (`upgrade.health`).
    if n.action.disruptive() && !n.rollback {
        super::health::baseline(p);
    }
    let now = p.now();
    let scope = if n.from.as_deref() == Some("cluster") {
        LogScope::Cluster
    } else {
        LogScope::Member
    };
    let (version, component) = match n.version {
        Some(v) => (Some(v.version), v.component),
        None => (None, None),
    };
    // A switchover has no version of its own; its log entry names the target's.
    let logged = version
        .clone()
        .or_else(|| (n.action == StepAction::Switchover).then(|| p.target.version.clone()));
    let target = if scope == LogScope::Cluster {
        p.inp.cluster.name
    } else {
        n.member.as_str()
    };
    // A membership change's steps belong to its entry; a rotation's steps (its switchover
    // too) to the rotation's.
    let parent = if let Some(t) = &n.topology {
        Some(match t {
            TopologyEntry::Member(membership, who) => log::membership(p, *membership, who),
            TopologyEntry::Clients => log::clients(p),
        })
    } else if n.trust.is_some() {
        log::rotation(p, true)
    } else if n.task.is_some() {
        // Its own entry: a mesh task is no part of this cluster's rollout.
        None
    } else {
        log::rollout(p, true)
    };
    let log_id = p.log().open(
        parent,
        action_name(n.action),
        scope,
        target,
        logged.as_deref(),
        n.mode,
        n.message.as_str(),
        now,
    );
    let (task, attempt, id) = match n.task {
        Some((t, attempt)) => {
            let id = task_step_id(&t.id, attempt);
            (Some(t), attempt, id)
        }
        None => (
            None,
            p.record(&n.member).map(|m| m.failures + 1).unwrap_or(1),
            step_id(p.inp.cluster.name, log_id, n.action, &n.member, now),
        ),
    };
    let rec = StepRecord {
        id,
        action: n.action,
        member: n.member,
        from: n.from,
        version,
        component,
        attempt,
        started_at: now,
        log_id,
        source: n.source,
        rollback: n.rollback,
        trust: n.trust,
        peer: n.peer,
        task,
    };
    let started = format!("{}: {}", describe(&rec), n.message);
    p.event(false, "StepStarted", started);
    if rec.action.disruptive() && rec.action != StepAction::Switchover {
        p.unavailable += 1;
    }
    // Ask for the first operation at once; the loop persists the status before sending it.
    if let Some(r) = advance(p, rec) {
        p.st.steps.push(r);
        p.wake = Wake::Busy;
    }
}
