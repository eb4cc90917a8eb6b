//! How a step ends: succeeded (what it passed is remembered so it is not repeated), failed
//! (the member backs off `backoff · 2^(n-1)` capped at `maxBackoff`, and after `retries.limit`
//! failures is Zombie), or cancelled.
//!
//! Owns: `status.members[].{failures, nextAttemptAt, lastError, preflightPassed,
//! configSynced, verified}` and the Zombie role on failure, a mesh task's end in
//! `status.tasks[]` (state, failures, backoff), `verifiedTarget`, `lastBackup`,
//! `switchover` (the record a traffic check follows), a member's preparation findings in
//! `status.preparation` (and the `PreparationChecked` event), and the step's log entry result.
//!
//! May use: `state`, `view`, `log`. Used by `op`, `switchover`.

use crate::api::{
    BackupRecord, LogResult, MemberRole, RetryPolicy, StepAction, StepRecord, SwitchoverRecord,
    TaskState, values::Duration,
};

use crate::api::{FindingSeverity, PreparationFinding};
use crate::plan::conditions::bounded;
use crate::plan::observe::FindingView;

use super::log;
use super::state::{Advanced, NewStep, Pass, describe, verify_token};
use super::view;

/// Findings of the preparation checks kept in the status (the rest are counted in `omitted`).
const MAX_FINDINGS: usize = 64;

/// A `Prepare` step succeeded: keep what the member's checks found (`upgrade.prepare`; the
/// `prepare` stage judges them once every member ran its checks).
pub(super) fn prepared(p: &mut Pass<'_>, s: &StepRecord, findings: &[FindingView]) {
    let Some(st) = p.st.preparation.as_mut() else {
        return;
    };
    if s.version.as_deref() != Some(st.version.as_str()) || st.prepared.contains(&s.member) {
        return;
    }
    st.prepared.push(s.member.clone());
    // A result after the verdict (a member that was unreachable, or joined since): the verdict
    // is taken again, and its acknowledgement holds only if the warnings did not change.
    st.digest = None;
    st.acknowledged = false;
    for f in findings {
        if st.findings.len() >= MAX_FINDINGS {
            st.omitted += 1;
            continue;
        }
        st.findings.push(PreparationFinding {
            member: s.member.clone(),
            check: bounded(&f.check, 63),
            severity: f.severity,
            code: bounded(&f.code, 63),
            message: bounded(&f.message, 300),
        });
    }
    let mine: Vec<&FindingView> = findings.iter().collect();
    let msg = format!(
        "{}: preparation checks for {}: {}",
        s.member,
        st.version,
        count(&mine)
    );
    p.event(false, "PreparationChecked", bounded(&msg, 1000));
}

/// `1 blocking, 2 warnings` (or `nothing found`).
fn count(findings: &[&FindingView]) -> String {
    let b = findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Blocking)
        .count();
    let w = findings.len() - b;
    match (b, w) {
        (0, 0) => "nothing found".into(),
        (b, 0) => format!("{b} blocking"),
        (0, w) => format!("{w} warning{}", if w == 1 { "" } else { "s" }),
        (b, w) => format!("{b} blocking, {w} warning{}", if w == 1 { "" } else { "s" }),
    }
}

/// The delay before attempt `failures + 1`: `backoff · 2^(failures-1)`, at most `maxBackoff`.
pub(super) fn backoff(policy: &RetryPolicy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let ms = policy.backoff.millis().saturating_mul(1u64 << exp);
    Duration(ms.min(policy.max_backoff.millis()))
}

pub(super) fn succeeded(p: &mut Pass<'_>, s: &StepRecord) {
    let now = p.now();
    log::close_step(p, s, LogResult::Succeeded, "");
    p.event(false, "StepSucceeded", format!("{} succeeded", describe(s)));
    // A mesh task's success is the task's, not the member's: it clears no member failure.
    if let Some(t) = &s.task {
        if let Some(rec) = p.st.tasks.iter_mut().find(|r| r.id == t.id) {
            rec.state = TaskState::Succeeded;
            rec.next_attempt_at = None;
            rec.last_error = None;
            rec.finished_at = Some(now);
        }
        return;
    }
    let key = view::target_key(p, &s.member);
    if let Some(ms) = p.record_mut(&s.member) {
        ms.failures = 0;
        ms.next_attempt_at = None;
        ms.last_error = None;
    }
    if let Some(c) = client_record(p, &s.member) {
        c.failures = 0;
        c.next_attempt_at = None;
        c.last_error = None;
    }
    match s.action {
        StepAction::Preflight => {
            if let Some(ms) = p.record_mut(&s.member) {
                ms.preflight_passed = key;
            }
        }
        StepAction::SyncConfig => {
            // A joining member has no target yet: remember that it was configured.
            let key = key.or_else(|| Some("joined".to_string()));
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
                version: p.target.version.clone(),
                window: view::backup_window(p),
                at: now,
            });
        }
        // A staged certificate waits for its restart; a restart presents it; re-signed data
        // is not re-signed again (see `rotation`).
        StepAction::InstallCertificate | StepAction::Restart | StepAction::ResignData => {
            record_rotation(p, s)
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

fn record_rotation(p: &mut Pass<'_>, s: &StepRecord) {
    let Some(st) = p.st.certificates.as_mut() else {
        return;
    };
    let member = s.member.clone();
    let add = |list: &mut Vec<String>| {
        if !list.contains(&member) {
            list.push(member.clone());
        }
    };
    match s.action {
        StepAction::InstallCertificate => add(&mut st.restart_pending),
        StepAction::Restart => st.restart_pending.retain(|m| m != &s.member),
        StepAction::ResignData => add(&mut st.resigned),
        _ => {}
    }
}

/// The status of the managed client an observation key names.
fn client_record<'p>(p: &'p mut Pass<'_>, key: &str) -> Option<&'p mut crate::api::ClientStatus> {
    let name = crate::plan::observe::client_of(key)?;
    p.st.clients.iter_mut().find(|c| c.name == name)
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
    if let Some(t) = &s.task {
        task_failed(p, &t.id, msg);
        return None;
    }
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
    // A managed client backs off the same way, without ever being Zombie: it holds no
    // member's data, and an unreachable or failing client only delays its own keys.
    if let Some(c) = client_record(p, &s.member) {
        c.failures = c.failures.saturating_add(1);
        c.last_error = Some(msg.to_string());
        c.next_attempt_at = Some(now.plus(backoff(policy, c.failures)));
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
            let mut back = NewStep::switch_back(from, &s.member, why);
            // The switch back belongs to what the switchover was for: a rotation's hand-over
            // is recovered as a rotation step (in the rotation's log entry, and never taken
            // for an upgrade step beside another cluster's rotation).
            back.trust = s.trust.clone();
            back
        },
    )
}

/// A mesh task's attempt failed: it backs off like a member step, and after `retries.limit`
/// attempts it is `Failed` (the member is not Zombie: the task failed, not the server).
fn task_failed(p: &mut Pass<'_>, id: &str, msg: &str) {
    let now = p.now();
    let policy = &p.spec().upgrade.retries;
    let Some(rec) = p.st.tasks.iter_mut().find(|r| r.id == id) else {
        return;
    };
    rec.failures = rec.failures.saturating_add(1);
    rec.last_error = Some(crate::plan::conditions::bounded(msg, 400));
    if rec.failures >= policy.limit {
        rec.state = TaskState::Failed;
        rec.next_attempt_at = None;
        let why = format!(
            "task {} failed {} times and needs a human: {msg}",
            rec.name, rec.failures
        );
        p.event(true, "TaskFailed", why);
    } else {
        rec.state = TaskState::Pending;
        rec.next_attempt_at = Some(now.plus(backoff(policy, rec.failures)));
    }
}

/// A failed step as the end of its advance: the follow-up, if any, or done.
pub(super) fn failed_then(p: &mut Pass<'_>, s: &StepRecord, msg: &str) -> Advanced {
    match failed(p, s, msg) {
        Some(n) => Advanced::Then(Box::new(n)),
        None => Advanced::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::recorded;
    use super::*;
    use crate::api::{StepAction, Timestamp};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, observed, step};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_with_each_failure_up_to_the_cap() {
        let policy = RetryPolicy {
            limit: 10,
            backoff: secs(10),
            max_backoff: secs(60),
        };
        let delays: Vec<Duration> = (1..=5).map(|n| backoff(&policy, n)).collect();
        assert_eq!(delays, [secs(10), secs(20), secs(40), secs(60), secs(60)]);
        assert_eq!(backoff(&policy, 200), secs(60), "no overflow");
    }

    #[test]
    fn a_failed_step_backs_off_and_after_the_limit_the_member_is_zombie() {
        let case = ClusterBuilder::pair("2.0.0")
            .running("1.0.0")
            .upgrade(|u| {
                u.retries = RetryPolicy {
                    limit: 3,
                    backoff: secs(10),
                    max_backoff: secs(300),
                }
            })
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        let s = step(StepAction::Upgrade, "b", NOW);
        let at = |secs: i64| Some(Timestamp(NOW.millis() + secs * 1000));
        assert!(failed(&mut p, &s, "disk full").is_none());
        let b = p.record("b").unwrap();
        assert_eq!((b.failures, b.next_attempt_at), (1, at(10)));
        failed(&mut p, &s, "disk full");
        assert_eq!(p.record("b").unwrap().next_attempt_at, at(20));
        assert!(p.events.iter().all(|e| e.reason != "MemberZombie"));
        failed(&mut p, &s, "disk full");
        let b = p.record("b").unwrap();
        assert_eq!(b.role, MemberRole::Zombie);
        assert_eq!(b.next_attempt_at, None);
        assert_eq!(b.last_error.as_deref(), Some("disk full"));
        assert!(p.events.iter().any(|e| e.reason == "MemberZombie"));
    }

    #[test]
    fn a_switchover_that_failed_with_nobody_active_switches_back() {
        let case = ClusterBuilder::pair("2.0.0")
            .observe(observed("a").role(MemberRole::ForcedStandby))
            .observe(observed("b").version("2.0.0"))
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        let mut s = step(StepAction::Switchover, "b", NOW);
        s.from = Some("a".into());
        let back = failed(&mut p, &s, "promote failed").expect("a switch back");
        assert_eq!(back.action, StepAction::Switchover);
        assert_eq!(
            (back.member.as_str(), back.from.as_deref()),
            ("a", Some("b"))
        );
        assert!(back.rollback, "an emergency step");
        assert!(
            back.trust.is_none(),
            "an upgrade's switch back is an upgrade step"
        );
        // A rotation's hand-over (it carries the CA) is switched back as a rotation step
        // (rotation soak seed 3536: logged as "upgrade c3 to 1.0.0", and taken for an upgrade
        // step beside another cluster's rotation).
        let mut r = s.clone();
        r.trust = Some(crate::api::TrustParams {
            anchor: "new".into(),
            issuer: "new".into(),
            keep: Vec::new(),
        });
        let back = failed(&mut p, &r, "promote failed").expect("a switch back");
        assert_eq!(back.trust, r.trust);
        // With an active left, nothing to undo.
        let case = ClusterBuilder::pair("2.0.0").running("1.0.0").build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(failed(&mut p, &s, "demote failed").is_none());
    }

    #[test]
    fn a_passed_preflight_is_remembered_for_the_target_and_clears_failures() {
        let case = ClusterBuilder::pair("2.0.0")
            .running("1.0.0")
            .with_status(|st| {
                st.members = vec![crate::api::MemberStatus {
                    name: "b".into(),
                    failures: 1,
                    last_error: Some("x".into()),
                    ..Default::default()
                }]
            })
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        succeeded(&mut p, &step(StepAction::Preflight, "b", NOW));
        let b = p.record("b").unwrap();
        assert_eq!(b.preflight_passed.as_deref(), Some("2.0.0"));
        assert_eq!((b.failures, b.last_error.as_deref()), (0, None));
    }
}
