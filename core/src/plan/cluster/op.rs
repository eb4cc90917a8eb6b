//! Steps in flight that are one agent operation (everything but a switchover), and the wait
//! for replication (`await-sync`, no operation): ask for the operation if the agent does not
//! know it, finish the step when it is done.
//!
//! Owns: the agent requests of those steps (`OpRequest` from a `StepRecord`).
//!
//! May use: `state`, `view`, `outcome`. Used by `start`.

use crate::api::{StepAction, StepRecord};
use crate::plan::observe::{Action, OpKind, OpRequest, OpState};

use super::outcome;
use super::state::{Advanced, Pass, action_name};
use super::view;

/// A one-operation step: submit it if the agent does not know it, finish it when done.
pub(super) fn advance_op(p: &mut Pass<'_>, s: &StepRecord) -> Advanced {
    if p.agent(&s.member).is_none() {
        let why = format!("{} unreachable during {}", s.member, action_name(s.action));
        p.wait(why);
        return Advanced::Keep;
    }
    match p.lookup_op(&s.member, &s.id) {
        None => {
            if let Some(request) = request_for(p, s) {
                p.actions.push(Action {
                    member: s.member.clone(),
                    request,
                });
            }
            Advanced::Keep
        }
        Some(op) if op.state == OpState::Running => Advanced::Keep,
        Some(op) if op.state == OpState::Succeeded => {
            if s.action == StepAction::Prepare {
                outcome::prepared(p, s, &op.findings);
            }
            outcome::succeeded(p, s);
            Advanced::Done
        }
        Some(op) => {
            let msg = if op.message.is_empty() {
                "operation failed"
            } else {
                op.message.as_str()
            };
            outcome::failed_then(p, s, msg)
        }
    }
}

/// Wait until the member replicates within `maxReplicationLag`; fail after `syncTimeout`.
pub(super) fn advance_await(p: &mut Pass<'_>, s: &StepRecord) -> Advanced {
    if view::in_sync(p, &s.member) {
        outcome::succeeded(p, s);
        return Advanced::Done;
    }
    let timeout = p.spec().upgrade.sync_timeout;
    if p.now().since(s.started_at) >= timeout {
        let lag = p
            .agent(&s.member)
            .map(|a| a.lag_seconds)
            .unwrap_or(f64::NAN);
        let msg = format!("not in sync within {timeout} (lag {lag:.1}s)");
        return outcome::failed_then(p, s, &msg);
    }
    p.wake_at(s.started_at.plus(timeout));
    Advanced::Keep
}

/// The agent operation of a one-operation step.
fn request_for(p: &Pass<'_>, s: &StepRecord) -> Option<OpRequest> {
    let kind = match s.action {
        StepAction::Preflight => OpKind::Preflight,
        StepAction::ForceStandby => OpKind::ForceStandby,
        StepAction::Upgrade => OpKind::Upgrade,
        StepAction::Rollback => OpKind::Rollback,
        StepAction::Release => OpKind::Demote,
        StepAction::Backup => OpKind::Backup,
        StepAction::Verify => OpKind::Verify,
        StepAction::SyncConfig => OpKind::SyncConfig,
        StepAction::InstallTrust => OpKind::InstallTrust,
        StepAction::InstallCertificate => OpKind::InstallCertificate,
        StepAction::Restart => OpKind::Restart,
        StepAction::ResignData => OpKind::ResignData,
        StepAction::AddPeer => OpKind::AddPeer,
        StepAction::RemovePeer => OpKind::RemovePeer,
        StepAction::Join => OpKind::Demote,
        StepAction::Retire => OpKind::Retire,
        StepAction::Task => OpKind::Task,
        StepAction::StageMedia => OpKind::StageMedia,
        StepAction::RemoveMedia => OpKind::RemoveMedia,
        StepAction::Prepare => OpKind::Prepare,
        StepAction::AwaitSync | StepAction::Switchover => return None,
    };
    let role = matches!(s.action, StepAction::Release | StepAction::Join).then(|| {
        // A joining member is not among the members yet: its declaration says.
        let m = p
            .member_spec(&s.member)
            .or_else(|| p.declared().members.iter().find(|m| m.name == s.member));
        if m.is_some_and(|m| m.spare) {
            "spare"
        } else {
            "standby"
        }
        .to_string()
    });
    Some(OpRequest {
        id: s.id.clone(),
        kind,
        version: s.version.clone(),
        component: s.component.clone(),
        source: s.source.clone(),
        role,
        trust: s.trust.clone(),
        peer: s.peer.clone(),
        task: s.task.as_ref().map(|t| t.task.clone()),
        checks: match s.action {
            StepAction::Prepare => p
                .spec()
                .upgrade
                .prepare
                .as_ref()
                .map(|x| x.checks.clone())
                .unwrap_or_default(),
            _ => vec![],
        },
    })
}
