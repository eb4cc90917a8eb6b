//! What the observation says, derived: read-only questions every later stage asks (which
//! member is active, what a member should run and what it still has to move, whether it is in
//! sync, which maintenance window a backup belongs to).
//!
//! Owns: nothing of the status; these functions only read the [`Pass`].
//!
//! May use: `state`, `plan::{software, window, observe}`. Used by every stage above it.

use crate::api::{MemberRole, MemberSpec, StepAction, Timestamp};
use crate::plan::software::{Move, Software, hosted, pending_moves, running, spec_target};
use crate::plan::window::{WindowState, window_state};

use super::state::Pass;

/// The member currently Active (per agent), if exactly one; two or more is an error.
pub(super) fn active<'a>(p: &Pass<'a>) -> Result<Option<&'a str>, String> {
    let actives: Vec<&'a str> = p
        .spec()
        .members
        .iter()
        .filter(|m| {
            p.agent(&m.name)
                .is_some_and(|a| a.role == MemberRole::Active)
        })
        .map(|m| m.name.as_str())
        .collect();
    match actives.len() {
        0 => Ok(None),
        1 => Ok(Some(actives[0])),
        _ => Err(format!(
            "more than one active member: {}",
            actives.join(", ")
        )),
    }
}

/// What `m` should run: the spec's target, or after an automatic rollback what the
/// (switched-back) active runs.
pub(super) fn member_target(p: &Pass<'_>, m: &MemberSpec) -> Software {
    if p.st.rolled_back.is_some()
        && let Ok(Some(active)) = active(p)
        && let Some(a) = p.agent(active)
    {
        let spec_t = spec_target(p.spec(), m, &p.target.order, &p.target.version);
        let mut t = running(a, &spec_t);
        t.components
            .retain(|k, _| spec_t.components.contains_key(k));
        return t;
    }
    spec_target(p.spec(), m, &p.target.order, &p.target.version)
}

/// The key of what `member` should run (recorded when a step for that target passed).
pub(super) fn target_key(p: &Pass<'_>, member: &str) -> Option<String> {
    p.member_spec(member).map(|m| member_target(p, m).key())
}

/// The moves between what `m` runs and its target; `None` while unreachable.
pub(super) fn moves(p: &Pass<'_>, m: &MemberSpec) -> Option<Vec<Move>> {
    let a = p.agent(&m.name)?;
    let t = member_target(p, m);
    let cur = running(a, &t);
    let names = hosted(p.spec(), m, &p.target.order);
    Some(pending_moves(&cur, &t, &names))
}

/// Runs its target already (reachable, nothing to move).
pub(super) fn at_target(p: &Pass<'_>, m: &MemberSpec) -> bool {
    moves(p, m).is_some_and(|v| v.is_empty())
}

/// What `m` runs, restricted to the components of its spec target.
pub(super) fn software_of(p: &Pass<'_>, m: &MemberSpec) -> Option<Software> {
    let a = p.agent(&m.name)?;
    Some(running(
        a,
        &spec_target(p.spec(), m, &p.target.order, &p.target.version),
    ))
}

/// A member's accepted peers are changing: an `add-peer` or `remove-peer` step runs on a
/// member (managed clients aside). A switchover waits for it to end, and such a step for a
/// switchover: the first peer a member learns turns its checks on, and a target it does not
/// list yet would be refused.
pub(super) fn peer_lists_changing(p: &Pass<'_>) -> bool {
    p.st.steps.iter().any(|s| {
        matches!(s.action, StepAction::AddPeer | StepAction::RemovePeer)
            && crate::plan::observe::client_of(&s.member).is_none()
    })
}

/// Healthy and replicating within `maxReplicationLag`.
pub(super) fn in_sync(p: &Pass<'_>, member: &str) -> bool {
    p.agent(member).is_some_and(|a| {
        a.healthy() && a.lag_seconds <= p.spec().upgrade.max_replication_lag.as_secs_f64()
    })
}

/// The start of the maintenance window open now (the instant 0 without windows): a backup
/// counts for the window it was taken in.
pub(super) fn backup_window(p: &Pass<'_>) -> Timestamp {
    match window_state(&p.spec().upgrade.maintenance_windows, p.now()) {
        WindowState::Open { start, .. } => start,
        _ => Timestamp(0),
    }
}

/// `to` may take the active role as far as its peers are concerned: each member that
/// enforces an accepted-peer list (a non-empty one) lists `to`'s identity. A member that
/// reports no identity is judged by the other rules only.
pub(super) fn known_to_peers(p: &Pass<'_>, to: &str) -> bool {
    let Some(identity) = p.agent(to).and_then(|a| a.membership.identity.as_deref()) else {
        return true;
    };
    p.spec().members.iter().all(|m| {
        m.name == to
            || p.agent(&m.name).is_none_or(|a| {
                a.membership.peers.is_empty()
                    || a.membership.peers.get(to).map(String::as_str) == Some(identity)
            })
    })
}
