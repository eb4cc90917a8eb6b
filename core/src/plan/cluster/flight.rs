//! Steps in flight: advance every recorded step (a step ends before anything new is chosen, so
//! an upgrade and a backout never overlap), then the post-switchover traffic check and, on its
//! timeout, the automatic rollback.
//!
//! Owns: the pass over `status.steps`, the unavailability of the disruptive steps still in
//! flight, `status.switchover.verified`, `status.rolledBack` (set) and the traffic-check log
//! entries.
//!
//! May use: `state`, `log`, `start`. Used by the pipeline (`super`) only.

use crate::api::{LogMode, LogResult, LogScope, MemberRole, RolledBack, StepAction};
use crate::plan::observe::Wake;
use crate::plan::stall::Stall;

use super::log;
use super::start;
use super::state::{NewStep, Pass};

/// Advance each step in flight, in the order recorded.
pub(super) fn advance_steps(p: &mut Pass<'_>) {
    let steps = std::mem::take(&mut p.st.steps);
    for s in steps {
        if let Some(s) = start::advance(p, s) {
            if s.action.disruptive() && s.action != StepAction::Switchover {
                p.unavailable += 1;
            }
            p.st.steps.push(s);
        }
    }
    if !p.st.steps.is_empty() {
        p.wake = Wake::Busy;
    }
}

/// The post-switchover traffic check; on timeout, the automatic rollback (or a stall when
/// `trafficCheck.rollback` is off).
pub(super) fn check_traffic(p: &mut Pass<'_>) {
    let Some(sw) = p.st.switchover.as_ref().filter(|s| !s.verified) else {
        return;
    };
    let (to, from, at, version) = (sw.to.clone(), sw.from.clone(), sw.at, sw.version.clone());
    let ok = p
        .agent(&to)
        .is_some_and(|a| a.role == MemberRole::Active && a.serving && a.healthy());
    let now = p.now();
    let tc = &p.spec().upgrade.traffic_check;
    // The check belongs to the switchover it follows (closed at the instant it recorded).
    let parent =
        p.st.log
            .iter()
            .rev()
            .find(|e| e.action == "switchover" && e.target == to && e.end == Some(at))
            .map(|e| e.id)
            .or_else(|| log::rollout(p, false));
    let record = |p: &mut Pass<'_>, result: LogResult, message: String| {
        let id = p.log().open(
            parent,
            "traffic-check",
            LogScope::Member,
            &to,
            Some(&version),
            LogMode::Automatic,
            "",
            now,
        );
        p.log().close(id, result, message, now);
    };
    if ok {
        if let Some(x) = p.st.switchover.as_mut() {
            x.verified = true;
        }
        record(p, LogResult::Succeeded, format!("{to} serves traffic"));
        p.event(
            false,
            "TrafficCheckPassed",
            format!("{to} serves traffic after switchover"),
        );
        return;
    }
    let deadline = at.plus(tc.timeout);
    if now < deadline {
        p.wake_at(deadline);
        p.wait(format!("traffic check of {to} until {deadline}"));
        return;
    }
    let reason = format!(
        "{to} did not serve traffic within {} of the switchover",
        tc.timeout
    );
    record(p, LogResult::Failed, reason.clone());
    p.st.switchover = None;
    if !tc.rollback {
        p.found.stalled = Some(Stall::TrafficCheckFailed(reason.clone()));
        p.event(true, "TrafficCheckFailed", reason);
        return;
    }
    let restored = p.agent(&from).map(|a| a.version.clone());
    p.st.rolled_back = Some(RolledBack {
        version: p.target.version.clone(),
        restored,
        reason: reason.clone(),
        at: now,
    });
    p.event(
        true,
        "AutomaticRollback",
        format!("{reason}; switching back to {from}"),
    );
    let why = format!("automatic rollback: {reason}");
    start::start(p, NewStep::switch_back(&from, &to, why));
}
