//! The rollout's entries in the upgrade log: the cluster-level `upgrade`/`backout` entry that
//! parents every step entry of a rollout, and the `demote`/`promote` phase entries of a
//! switchover step; and the cluster-level entries that are over when written (`retry`, a
//! skipped `verify`).
//!
//! Owns: `status.log` entries of those kinds (opening and closing them; the log itself is
//! `plan::conditions::Log`).
//!
//! May use: `state`. Used by `record`, `outcome`, `switchover`, `start`, `flight`, `converge`
//! and `summary`.

use crate::api::{
    LogEntry, LogMode, LogResult, LogScope, Membership, StepRecord, values::cmp_versions,
};

use super::state::Pass;

/// The open cluster-level entry of the rollout to the current target: the parent of its step
/// entries. Opened with the first step of the rollout (`open`), closed when the cluster
/// converges, rolls back or gets another target.
pub(super) fn rollout(p: &mut Pass<'_>, open: bool) -> Option<u64> {
    let target = p.target.version.as_str();
    let found =
        p.st.log
            .iter()
            .rev()
            .find(|e| is_rollout_entry(e) && e.version.as_deref() == Some(target))
            .map(|e| e.id);
    if found.is_some() || !open || target.is_empty() {
        return found;
    }
    let back = p.st.members.iter().any(|m| {
        m.version
            .as_deref()
            .is_some_and(|v| cmp_versions(v, target).is_gt())
    });
    let (action, what) = if back {
        ("backout", "back out")
    } else {
        ("upgrade", "upgrade")
    };
    let (name, now) = (p.inp.cluster.name, p.now());
    let target = p.target.version.clone();
    let message = format!("{what} {name} to {target}");
    let id = p.log().open(
        None,
        action,
        LogScope::Cluster,
        name,
        Some(&target),
        LogMode::Automatic,
        message,
        now,
    );
    Some(id)
}

/// The open cluster-level entry of the CA rotation to `status.certificates.targetCa`: the
/// parent of the rotation's step entries (`open`: opened with its first step). A rotation to
/// another CA closes it as superseded.
pub(super) fn rotation(p: &mut Pass<'_>, open: bool) -> Option<u64> {
    let target = p.st.certificates.as_ref()?.target_ca.clone()?;
    let mut found = None;
    let mut stale = Vec::new();
    for e in &p.st.log {
        if e.scope == LogScope::Cluster && is_running(e) && e.action == ROTATION {
            if e.message.ends_with(&target) {
                found = Some(e.id);
            } else {
                stale.push(e.id);
            }
        }
    }
    let now = p.now();
    for id in stale {
        p.log()
            .close(id, LogResult::Cancelled, "superseded by another CA", now);
    }
    if found.is_some() || !open {
        return found;
    }
    let name = p.inp.cluster.name;
    let message = format!("rotate the CA of {name} to {target}");
    Some(p.log().open(
        None,
        ROTATION,
        LogScope::Cluster,
        name,
        None,
        LogMode::Automatic,
        message,
        now,
    ))
}

/// The action of a rotation's cluster-level entry.
const ROTATION: &str = "rotate-ca";

/// The action of a membership change's entry.
fn membership_action(m: Membership) -> &'static str {
    match m {
        Membership::Joining => "add-member",
        Membership::Leaving => "remove-member",
    }
}

fn membership_entry(p: &Pass<'_>, m: Membership, member: &str) -> Option<u64> {
    let action = membership_action(m);
    p.st.log
        .iter()
        .rev()
        .find(|e| {
            e.parent.is_none()
                && e.scope == LogScope::Member
                && is_running(e)
                && e.action == action
                && e.target == member
        })
        .map(|e| e.id)
}

/// The open entry of a membership change of `member` (`add-member`, `remove-member`): the
/// parent of its steps' entries, opened with its first step, closed when the change ends.
pub(super) fn membership(p: &mut Pass<'_>, m: Membership, member: &str) -> u64 {
    if let Some(id) = membership_entry(p, m, member) {
        return id;
    }
    let (cluster, now) = (p.inp.cluster.name, p.now());
    let message = match m {
        Membership::Joining => format!("add {member} to {cluster}"),
        Membership::Leaving => format!("remove {member} from {cluster}"),
    };
    p.log().open(
        None,
        membership_action(m),
        LogScope::Member,
        member,
        None,
        LogMode::Automatic,
        message,
        now,
    )
}

const KEY_CLIENTS: &str = "key-clients";

fn clients_entry(p: &Pass<'_>) -> Option<u64> {
    p.st.log
        .iter()
        .rev()
        .find(|e| e.scope == LogScope::Cluster && is_running(e) && e.action == KEY_CLIENTS)
        .map(|e| e.id)
}

/// The open cluster-level `key-clients` entry: the parent of the steps that give settled
/// members' identities to managed clients (a client added, or one that was unreachable).
pub(super) fn clients(p: &mut Pass<'_>) -> u64 {
    if let Some(id) = clients_entry(p) {
        return id;
    }
    let (cluster, now) = (p.inp.cluster.name, p.now());
    let message = format!("give the managed clients of {cluster} every member's identity");
    p.log().open(
        None,
        KEY_CLIENTS,
        LogScope::Cluster,
        cluster,
        None,
        LogMode::Automatic,
        message,
        now,
    )
}

/// Close the `key-clients` entry once every client holds every member's identity.
pub(super) fn close_clients(p: &mut Pass<'_>) {
    if let Some(id) = clients_entry(p) {
        let now = p.now();
        p.log().close(
            id,
            LogResult::Succeeded,
            "every managed client holds every member's identity",
            now,
        );
    }
}

/// Close the entry of a membership change, if one is open.
pub(super) fn close_membership(
    p: &mut Pass<'_>,
    m: Membership,
    member: &str,
    result: LogResult,
    msg: &str,
) {
    if let Some(id) = membership_entry(p, m, member) {
        let now = p.now();
        p.log().close(id, result, msg, now);
    }
}

/// A new target ends the rollout to the old one.
pub(super) fn close_superseded(p: &mut Pass<'_>) {
    let target = p.target.version.clone();
    let old: Vec<u64> =
        p.st.log
            .iter()
            .filter(|e| is_rollout_entry(e) && e.version.as_deref() != Some(target.as_str()))
            .map(|e| e.id)
            .collect();
    let now = p.now();
    for id in old {
        let msg = format!("superseded by target {target}");
        p.log().close(id, LogResult::Cancelled, msg, now);
    }
}

/// The running entry of one phase of a switchover step (`demote`, `promote`), opened under
/// the switchover's entry when its operation is first asked for.
pub(super) fn open_phase(p: &mut Pass<'_>, s: &StepRecord, phase: &str, member: &str) {
    let open =
        p.st.log
            .iter()
            .any(|e| e.parent == Some(s.log_id) && e.action == phase && is_running(e));
    if open {
        return;
    }
    let now = p.now();
    let message = match phase {
        "demote" => format!("{member} stops taking writes and follows {}", s.member),
        _ => format!("{member} takes over as active"),
    };
    p.log().open(
        Some(s.log_id),
        phase,
        LogScope::Member,
        member,
        None,
        LogMode::Automatic,
        message,
        now,
    );
}

/// Close the running phase entries of a switchover step (`phase` None: all of them).
pub(super) fn close_phases(
    p: &mut Pass<'_>,
    s: &StepRecord,
    phase: Option<&str>,
    result: LogResult,
    msg: &str,
) {
    let ids: Vec<u64> =
        p.st.log
            .iter()
            .filter(|e| e.parent == Some(s.log_id) && is_running(e))
            .filter(|e| phase.is_none_or(|ph| e.action == ph))
            .map(|e| e.id)
            .collect();
    let now = p.now();
    for id in ids {
        p.log().close(id, result, msg, now);
    }
}

/// Close a step's entry and its phase entries with one result.
pub(super) fn close_step(p: &mut Pass<'_>, s: &StepRecord, result: LogResult, msg: &str) {
    let now = p.now();
    close_phases(p, s, None, result, msg);
    p.log().close(s.log_id, result, msg, now);
}

/// A cluster-level entry over as soon as it is written (a retry, a skipped verification):
/// opened with `message` under the open rollout entry, if any, and closed with `result`.
pub(super) fn record_done(
    p: &mut Pass<'_>,
    action: &str,
    mode: LogMode,
    message: &str,
    result: LogResult,
    closing: &str,
) {
    let (name, now) = (p.inp.cluster.name, p.now());
    let parent = rollout(p, false);
    let id = p.log().open(
        parent,
        action,
        LogScope::Cluster,
        name,
        None,
        mode,
        message,
        now,
    );
    p.log().close(id, result, closing, now);
}

/// A cluster-level rollout entry still open (`upgrade` or `backout` of the whole cluster).
fn is_rollout_entry(e: &LogEntry) -> bool {
    e.scope == LogScope::Cluster
        && is_running(e)
        && matches!(e.action.as_str(), "upgrade" | "backout")
}

fn is_running(e: &LogEntry) -> bool {
    e.result == LogResult::Running
}
