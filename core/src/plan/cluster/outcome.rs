//! How a step ends: succeeded (what it passed is remembered so it is not repeated), failed
//! (the member backs off `backoff · 2^(n-1)` capped at `maxBackoff`, and after `retries.limit`
//! failures is Zombie), or cancelled.
//!
//! Owns: `status.members[].{failures, nextAttemptAt, lastError, preflightPassed,
//! configSynced, verified}` and the Zombie role on failure, `verifiedTarget`, `lastBackup`,
//! `switchover` (the record a traffic check follows), and the step's log entry result.
//!
//! May use: `state`, `view`, `log`. Used by `op`, `switchover`.

use crate::api::{
    BackupRecord, LogResult, MemberRole, RetryPolicy, StepAction, StepRecord, SwitchoverRecord,
    values::Duration,
};

use super::log;
use super::state::{Advanced, NewStep, Pass, describe, verify_token};
use super::view;

/// The delay before attempt `failures + 1`: `backoff · 2^(failures-1)`, at most `maxBackoff`.
pub(super) fn backoff(policy: &RetryPolicy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let ms = policy.backoff.millis().saturating_mul(1u64 << exp);
    Duration(ms.min(policy.max_backoff.millis()))
}

pub(super) fn succeeded(p: &mut Pass<'_>, s: &StepRecord) {
    let now = p.now();
    log::close_step(p, s, LogResult::Succeeded, "");
    let key = view::target_key(p, &s.member);
    p.event(false, "StepSucceeded", format!("{} succeeded", describe(s)));
    if let Some(ms) = p.record_mut(&s.member) {
        ms.failures = 0;
        ms.next_attempt_at = None;
        ms.last_error = None;
    }
    match s.action {
        StepAction::Preflight => {
            if let Some(ms) = p.record_mut(&s.member) {
                ms.preflight_passed = key;
            }
        }
        StepAction::SyncConfig => {
            if let Some(ms) = p.record_mut(&s.member) {
                ms.config_synced = key;
            }
        }
        StepAction::Verify => {
            let token = verify_token(s.component.as_deref(), s.version.as_deref().unwrap_or(""));
            if s.component.is_none() && s.from.as_deref() == Some("cluster") {
                p.st.verified_target = key;
            } else if let Some(ms) = p.record_mut(&s.member)
                && !ms.verified.contains(&token)
            {
                ms.verified.push(token);
            }
        }
        // The last backup of the window to finish records it.
        StepAction::Backup if !p.has_step(StepAction::Backup) => {
            p.st.last_backup = Some(BackupRecord {
                version: p.target_version.clone(),
                window: view::backup_window(p),
                at: now,
            });
        }
        StepAction::Switchover if !s.rollback => {
            p.st.switchover = Some(SwitchoverRecord {
                from: s.from.clone().unwrap_or_default(),
                to: s.member.clone(),
                version: p
                    .agent(&s.member)
                    .map(|a| a.version.clone())
                    .unwrap_or_default(),
                at: now,
                verified: false,
            });
        }
        _ => {}
    }
}

pub(super) fn cancelled(p: &mut Pass<'_>, s: &StepRecord, msg: &str) {
    log::close_step(p, s, LogResult::Cancelled, msg);
    p.event(
        false,
        "StepCancelled",
        format!("{} cancelled: {msg}", describe(s)),
    );
}

/// Record the failure; a switchover that left nobody active returns the switch back to start
/// at once (the old active comes back).
pub(super) fn failed(p: &mut Pass<'_>, s: &StepRecord, msg: &str) -> Option<NewStep> {
    let now = p.now();
    log::close_step(p, s, LogResult::Failed, msg);
    p.event(true, "StepFailed", format!("{} failed: {msg}", describe(s)));
    let policy = &p.spec().upgrade.retries;
    let mut zombie = false;
    if let Some(ms) = p.record_mut(&s.member) {
        ms.failures += 1;
        ms.last_error = Some(msg.to_string());
        if ms.failures >= policy.limit {
            ms.role = MemberRole::Zombie;
            ms.next_attempt_at = None;
            zombie = true;
        } else {
            ms.next_attempt_at = Some(now.plus(backoff(policy, ms.failures)));
        }
    }
    if zombie {
        let why = format!(
            "{} failed {} times and needs a human: {msg}",
            s.member, policy.limit
        );
        p.event(true, "MemberZombie", why);
    }
    let from = s.from.as_deref()?;
    (s.action == StepAction::Switchover && !s.rollback && matches!(view::active(p), Ok(None))).then(
        || {
            let why = format!("switch back to {from} after failed switchover");
            NewStep::switch_back(from, &s.member, why)
        },
    )
}

/// A failed step as the end of its advance: the follow-up, if any, or done.
pub(super) fn failed_then(p: &mut Pass<'_>, s: &StepRecord, msg: &str) -> Advanced {
    match failed(p, s, msg) {
        Some(n) => Advanced::Then(n),
        None => Advanced::Done,
    }
}

