//! A switchover step in flight, in three observed phases: hold the old active in forced
//! standby (it stops taking writes and follows the target), wait until the target has applied
//! every entry the old active wrote, promote. A failed switchover that leaves nobody active is
//! switched back at once (by `outcome`); a switchover whose target no longer runs the cluster's
//! target (a backout decided mid-way) is cancelled before the old active steps down, or
//! reversed after it did.
//!
//! Owns: the demote and promote operations (ids `<step>.demote`, `<step>.promote`) and their
//! phase log entries; the split-brain stall found while switching.
//!
//! May use: `state`, `view`, `log`, `outcome`. Used by `start`.

use crate::api::{LogResult, MemberRole, StepRecord};
use crate::plan::observe::{Action, AgentView, OpKind, OpRequest, OpState};
use crate::plan::stall::Stall;

use super::log;
use super::outcome;
use super::state::{Advanced, NewStep, Pass};
use super::view;

/// The two members of a switchover as observed, and its operation ids.
struct Pair<'s, 'a> {
    s: &'s StepRecord,
    to: &'s str,
    from: &'s str,
    ta: &'a AgentView,
    fa: &'a AgentView,
    demote_id: String,
    promote_id: String,
}

pub(super) fn advance(p: &mut Pass<'_>, s: &StepRecord) -> Advanced {
    let to = s.member.as_str();
    let Some(from) = s.from.as_deref() else {
        return outcome::failed_then(p, s, "switchover without a source member");
    };
    let (Some(ta), Some(fa)) = (p.agent(to), p.agent(from)) else {
        p.wait(format!(
            "switchover {from} -> {to} waits for both members to be reachable"
        ));
        return Advanced::Keep;
    };
    let x = Pair {
        s,
        to,
        from,
        ta,
        fa,
        demote_id: format!("{}.demote", s.id),
        promote_id: format!("{}.promote", s.id),
    };
    if stale(p, &x)
        && let Some(done) = drop_stale(p, &x)
    {
        return done;
    }
    if ta.role == MemberRole::Active {
        return promoted(p, &x);
    }
    if let Some(failed) = failed_phase(p, &x) {
        return failed;
    }
    if fa.role == MemberRole::Active {
        demote(p, &x);
        return Advanced::Keep;
    }
    // Neither is active: the old active stepped down. Promote once the target holds every
    // entry the old active wrote.
    log::close_phases(p, s, Some("demote"), LogResult::Succeeded, "");
    promote_when_caught_up(p, &x)
}

/// The target changed while switching over (a backout mid-way): never promote a member that
/// no longer runs the target. Once the promote was sent it may land at any moment: the
/// switchover finishes rather than risk two actives; the backout then moves traffic back the
/// normal way. A CA rotation's switchover is not about versions (it hands over between
/// members on the same software, before a rollout that waits for it): never stale.
///
/// Nor is the hand-over of an active that is being removed, to a member on its own software.
fn stale(p: &Pass<'_>, x: &Pair<'_, '_>) -> bool {
    let handing_over = p.topo.is_leaving(x.from)
        && matches!(
            (
                p.member_spec(x.to).and_then(|m| view::software_of(p, m)),
                p.member_spec(x.from).and_then(|m| view::software_of(p, m)),
            ),
            (Some(a), Some(b)) if crate::plan::software::same_software(&a, &b)
        );
    !x.s.rollback
        && !handing_over
        && x.s.trust.is_none()
        && x.ta.role != MemberRole::Active
        && p.lookup_op(x.to, &x.promote_id).is_none()
        && p.member_spec(x.to)
            .and_then(|m| view::moves(p, m))
            .is_some_and(|v| !v.is_empty())
}

/// A stale switchover: before the old active steps down, drop the step (or wait for a demote
/// already running); after, bring the old active back. `None`: carry on as usual.
fn drop_stale(p: &mut Pass<'_>, x: &Pair<'_, '_>) -> Option<Advanced> {
    let (to, from) = (x.to, x.from);
    if x.fa.role == MemberRole::Active {
        return match p.lookup_op(from, &x.demote_id) {
            Some(op) if op.state == OpState::Running => Some(Advanced::Keep),
            None => {
                outcome::cancelled(p, x.s, "target changed before the switchover started");
                Some(Advanced::Done)
            }
            Some(_) => None,
        };
    }
    let why = format!("target changed: {to} no longer runs it; switching back to {from}");
    outcome::cancelled(p, x.s, &why);
    let why = format!("switch back to {from}: the target changed during the switchover");
    Some(Advanced::Then(Box::new(NewStep::switch_back(
        from, to, why,
    ))))
}

/// The target is active: done, unless the old active still says so too.
fn promoted(p: &mut Pass<'_>, x: &Pair<'_, '_>) -> Advanced {
    if x.fa.role == MemberRole::Active {
        let (from, to) = (x.from, x.to);
        p.found.stalled = Some(Stall::SplitBrain(format!(
            "both {from} and {to} report Active"
        )));
        return Advanced::Keep;
    }
    outcome::succeeded(p, x.s);
    Advanced::Done
}

/// A demote or promote operation that failed fails the step.
fn failed_phase(p: &mut Pass<'_>, x: &Pair<'_, '_>) -> Option<Advanced> {
    if let Some(op) = p.lookup_op(x.from, &x.demote_id)
        && op.state == OpState::Failed
    {
        let msg = format!("demoting {} failed: {}", x.from, op.message);
        return Some(outcome::failed_then(p, x.s, &msg));
    }
    if let Some(op) = p.lookup_op(x.to, &x.promote_id)
        && op.state == OpState::Failed
    {
        let msg = format!("promoting {} failed: {}", x.to, op.message);
        return Some(outcome::failed_then(p, x.s, &msg));
    }
    None
}

/// Phase one: the old active stops taking writes and follows the target.
fn demote(p: &mut Pass<'_>, x: &Pair<'_, '_>) {
    if p.lookup_op(x.from, &x.demote_id).is_some() {
        return;
    }
    let source = x.ta.data_endpoint.clone();
    // An upgrade holds the old active out of failover until it runs the new version; a CA
    // rotation's old active runs the same version and only waits for its restart: a plain
    // standby.
    let kind = if x.s.trust.is_some() {
        OpKind::Demote
    } else {
        OpKind::ForceStandby
    };
    start_phase(p, x, "demote", x.from, &x.demote_id, kind, source);
}

/// Open the log entry of one phase and ask `member` for its operation `id`.
fn start_phase(
    p: &mut Pass<'_>,
    x: &Pair<'_, '_>,
    phase: &str,
    member: &str,
    id: &str,
    kind: OpKind,
    source: Option<String>,
) {
    log::open_phase(p, x.s, phase, member);
    p.actions.push(Action {
        member: member.to_string(),
        request: OpRequest {
            source,
            ..OpRequest::new(id, kind)
        },
    });
}

/// Phases two and three: promote once the target applied every entry; fail after
/// `syncTimeout`.
fn promote_when_caught_up(p: &mut Pass<'_>, x: &Pair<'_, '_>) -> Advanced {
    let caught_up = x.ta.applied_index >= x.fa.applied_index && x.ta.lag_entries == 0;
    if caught_up {
        if p.lookup_op(x.to, &x.promote_id).is_none() {
            start_phase(p, x, "promote", x.to, &x.promote_id, OpKind::Promote, None);
        }
        return Advanced::Keep;
    }
    let timeout = p.spec().upgrade.sync_timeout;
    if p.now().since(x.s.started_at) >= timeout {
        let msg = format!("{} did not catch up with {} within {timeout}", x.to, x.from);
        return outcome::failed_then(p, x.s, &msg);
    }
    Advanced::Keep
}

#[cfg(test)]
mod tests {
    use super::super::testing::recorded;
    use super::*;
    use crate::api::{StepAction, Timestamp};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, Observed, observed, step};

    /// A switchover from `a` (old active, 1.0.0) to `b` (upgraded, 2.0.0) in flight.
    fn switching(
        a: Observed,
        b: Observed,
        now: Timestamp,
    ) -> crate::fixtures::cluster::ClusterCase {
        ClusterBuilder::pair("2.0.0")
            .observe(a)
            .observe(b)
            .now(now)
            .build()
    }

    fn the_step() -> StepRecord {
        let mut s = step(StepAction::Switchover, "b", NOW);
        s.from = Some("a".into());
        s
    }

    fn b_upgraded() -> Observed {
        observed("b")
            .version("2.0.0")
            .role(MemberRole::ForcedStandby)
    }

    #[test]
    fn phase_one_the_old_active_is_held_in_forced_standby_following_the_target() {
        let case = switching(observed("a").active(), b_upgraded(), NOW);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Keep));
        let [a] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(a.member, "a");
        assert_eq!(a.request.kind, OpKind::ForceStandby);
        assert_eq!(a.request.id, "switchover-b.demote");
        assert_eq!(a.request.source.as_deref(), Some("b:7000"));
        assert!(p.st.log.iter().any(|e| e.action == "demote"));
    }

    #[test]
    fn phase_two_the_target_must_catch_up_before_it_is_promoted() {
        let a = observed("a")
            .role(MemberRole::ForcedStandby)
            .applied(100, 0);
        let behind = b_upgraded().applied(90, 10);
        let case = switching(a.clone(), behind.clone(), NOW);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Keep));
        assert!(p.actions.is_empty(), "no promote before it caught up");
        // Still behind after syncTimeout: the step fails.
        let late = Timestamp(NOW.millis() + 600_000);
        let case = switching(a, behind, late);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!matches!(advance(&mut p, &the_step()), Advanced::Keep));
        assert_eq!(p.record("b").unwrap().failures, 1);
    }

    #[test]
    fn phase_three_a_caught_up_target_is_promoted_and_then_the_step_succeeds() {
        let a = observed("a").role(MemberRole::ForcedStandby);
        let case = switching(a.clone(), b_upgraded(), NOW);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Keep));
        let [x] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!((x.member.as_str(), x.request.kind), ("b", OpKind::Promote));
        // b reports Active: done, and the traffic check follows this switchover.
        let case = switching(a, b_upgraded().active(), NOW);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Done));
        let sw = p.st.switchover.as_ref().expect("a switchover record");
        assert_eq!((sw.from.as_str(), sw.to.as_str()), ("a", "b"));
        assert!(!sw.verified);
    }

    #[test]
    fn two_actives_during_a_switchover_stall_on_split_brain() {
        let case = switching(observed("a").active(), b_upgraded().active(), NOW);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Keep));
        assert!(matches!(p.found.stalled, Some(Stall::SplitBrain(_))));
    }

    #[test]
    fn a_target_that_no_longer_runs_the_target_is_not_promoted() {
        // The target changed back to 1.0.0: b (on 2.0.0) must not take over.
        let stale = |a: Observed| {
            ClusterBuilder::pair("1.0.0")
                .observe(a)
                .observe(b_upgraded())
                .build()
        };
        // Before a stepped down: the step is dropped.
        let case = stale(observed("a").active());
        let input = case.input();
        let mut p = recorded(&input);
        assert!(matches!(advance(&mut p, &the_step()), Advanced::Done));
        assert!(p.actions.is_empty());
        // After: a is brought back.
        let case = stale(observed("a").role(MemberRole::ForcedStandby));
        let input = case.input();
        let mut p = recorded(&input);
        let Advanced::Then(back) = advance(&mut p, &the_step()) else {
            panic!("a switch back")
        };
        assert_eq!(
            (back.member.as_str(), back.from.as_deref()),
            ("a", Some("b"))
        );
    }
}
