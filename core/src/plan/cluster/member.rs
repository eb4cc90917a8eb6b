//! One member's pipeline: force-standby (out of failover while it changes version) → preflight
//! (once per target) → owed layer verifications → upgrade or roll back one component at a time
//! → re-apply configuration (optional) → verifications owed at the end → wait for replication.
//! A member in backoff waits; an upgrade never starts while a backout runs, nor the reverse.
//!
//! Owns: which step a member needs next ([`next_for_member`]) and starting it through the
//! gates ([`member_phase`]).
//!
//! May use: `state`, `view`, `gates`, `start`, `plan::software`. Used by `choose`.

use crate::api::{MemberRole, MemberSpec, StepAction, values::same_version};
use crate::plan::software::{Software, hosted};

use super::gates;
use super::start;
use super::state::{NewStep, Pass, StepVersion, action_name, describe, verify_token};
use super::view;

/// What a member needs next.
pub(super) enum Next {
    Step(Box<NewStep>),
    Wait(String),
    Done,
}

/// Start what member `m` needs next; true when it needs nothing more.
pub(super) fn member_phase(p: &mut Pass<'_>, m: &MemberSpec, active: &str) -> bool {
    if p.busy(&m.name) || in_backoff(p, &m.name) {
        return false;
    }
    match next_for_member(p, m, active) {
        Next::Done => true,
        Next::Wait(why) => {
            p.wait(why);
            false
        }
        Next::Step(n) => {
            let n = *n;
            if let Some(why) = opposite_in_flight(p, &n) {
                p.wait(why);
                return false;
            }
            if n.action.disruptive() && !gates::disruption_allowed(p, true) {
                return false;
            }
            start::start(p, n);
            false
        }
    }
}

/// Waiting for its retry; wakes at that instant.
pub(super) fn in_backoff(p: &mut Pass<'_>, member: &str) -> bool {
    let now = p.now();
    match p.record(member).and_then(|m| m.next_attempt_at) {
        Some(t) if t > now => {
            p.wake_at(t);
            p.wait(format!("{member} retries at {t}"));
            true
        }
        _ => false,
    }
}

/// Never an upgrade and a backout at once: the one in flight finishes first.
pub(super) fn opposite_in_flight(p: &Pass<'_>, n: &NewStep) -> Option<String> {
    let opposite = match n.action {
        StepAction::Upgrade => StepAction::Rollback,
        StepAction::Rollback => StepAction::Upgrade,
        _ => return None,
    };
    let s = p.st.steps.iter().find(|s| s.action == opposite)?;
    Some(format!(
        "{} waits for {} to finish",
        action_name(n.action),
        describe(s)
    ))
}

/// The next step of `m`'s pipeline toward its target, given the active member.
pub(super) fn next_for_member(p: &Pass<'_>, m: &MemberSpec, active: &str) -> Next {
    let (Some(a), Some(moves)) = (p.agent(&m.name), view::moves(p, m)) else {
        return Next::Wait(format!("{} unreachable", m.name));
    };
    let target = view::member_target(p, m);
    let key = target.key();
    let ms = p.record(&m.name);
    let is_active = m.name == active;
    let active_source = || p.agent(active).and_then(|x| x.data_endpoint.clone());
    if let Some(mv) = moves.first() {
        // Nothing toward an upgrade (not even its forced standby) before its media is there.
        if !mv.down
            && let Some(why) = super::media::missing(p, m, &mv.version)
        {
            return Next::Wait(why);
        }
        // Nor before every member ran its preparation checks and they hold nothing back.
        if !mv.down
            && let Some(why) = super::prepare::missing(p, m)
        {
            return Next::Wait(why);
        }
        if !is_active && matches!(a.role, MemberRole::Standby | MemberRole::Spare) {
            let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
            n.source = active_source();
            n.message = format!("hold {} out of failover while it changes version", m.name);
            return Next::Step(Box::new(n));
        }
        if p.spec().upgrade.preflight && ms.and_then(|x| x.preflight_passed.as_ref()) != Some(&key)
        {
            let mut n = NewStep::on(StepAction::Preflight, &m.name);
            n.version = Some(StepVersion::whole(&mv.version));
            n.message = format!("narrow checks before moving {} to {}", m.name, key);
            return Next::Step(Box::new(n));
        }
        // Verify each finished layer before the next one starts, unless deferrable.
        if let Some(v) = pending_verify(p, m, &target, false) {
            return Next::Step(Box::new(v));
        }
        let (action, verb) = if mv.down {
            (StepAction::Rollback, "roll back")
        } else {
            (StepAction::Upgrade, "upgrade")
        };
        let mut n = NewStep::on(action, &m.name);
        n.version = Some(StepVersion {
            version: mv.version.clone(),
            component: mv.component.clone(),
        });
        n.message = match &mv.component {
            Some(c) => format!("{verb} {c} on {} to {}", m.name, mv.version),
            None => format!("{verb} {} to {}", m.name, mv.version),
        };
        return Next::Step(Box::new(n));
    }
    if p.spec().upgrade.reapply_config
        && !is_active
        && ms.and_then(|x| x.config_synced.as_ref()) != Some(&key)
    {
        let mut n = NewStep::on(StepAction::SyncConfig, &m.name);
        n.source = active_source();
        n.message = format!("re-apply configuration on {} from {active}", m.name);
        return Next::Step(Box::new(n));
    }
    if let Some(v) = pending_verify(p, m, &target, true) {
        return Next::Step(Box::new(v));
    }
    if !is_active && !view::in_sync(p, &m.name) {
        let mut n = NewStep::on(StepAction::AwaitSync, &m.name);
        n.message = format!(
            "wait until {} replicates within {}",
            m.name,
            p.spec().upgrade.max_replication_lag
        );
        return Next::Step(Box::new(n));
    }
    Next::Done
}

/// A layer verification still owed on `m`. Between layers (`all == false`) deferrable ones
/// wait; at the end every owed verification runs. HA-pair checks (primary active) belong to
/// the cluster-wide verification.
fn pending_verify(p: &Pass<'_>, m: &MemberSpec, target: &Software, all: bool) -> Option<NewStep> {
    let a = p.agent(&m.name)?;
    let ms = p.record(&m.name)?;
    for name in hosted(p.spec(), m, &p.target.order) {
        let c = p.spec().components.iter().find(|c| c.name == name)?;
        if c.verify.skip || c.verify.requires_primary_active || (!all && c.verify.deferrable) {
            continue;
        }
        let want = target.components.get(name)?;
        let at_target = a
            .components
            .get(name)
            .is_some_and(|v| same_version(v, want));
        if !at_target {
            continue;
        }
        let token = verify_token(Some(name), want);
        if !ms.verified.contains(&token) {
            let mut n = NewStep::on(StepAction::Verify, &m.name);
            n.version = Some(StepVersion {
                version: want.clone(),
                component: Some(name.to_string()),
            });
            n.message = format!("verify {name} {want} on {}", m.name);
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::recorded;
    use super::*;
    use crate::api::{MemberStatus, Timestamp};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, observed};

    /// What `b` needs next, with `b` observed as given and its record as given.
    fn next(
        b: crate::fixtures::cluster::Observed,
        record: MemberStatus,
    ) -> (Option<StepAction>, Vec<String>) {
        let case = ClusterBuilder::pair("2.0.0")
            .running("1.0.0")
            .observe(b)
            .with_status(|st| st.members = vec![record])
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        let b = p.member_spec("b").unwrap();
        member_phase(&mut p, b, "a");
        (
            p.st.steps.first().map(|s| s.action),
            p.found.waiting.clone(),
        )
    }

    fn b_record() -> MemberStatus {
        MemberStatus {
            name: "b".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_standby_is_held_then_checked_then_upgraded_then_waited_for() {
        let held = || observed("b").role(MemberRole::ForcedStandby);
        assert_eq!(
            next(observed("b"), b_record()).0,
            Some(StepAction::ForceStandby)
        );
        assert_eq!(next(held(), b_record()).0, Some(StepAction::Preflight));
        let passed = MemberStatus {
            preflight_passed: Some("2.0.0".into()),
            ..b_record()
        };
        assert_eq!(next(held(), passed).0, Some(StepAction::Upgrade));
        let upgraded = held().version("2.0.0").lag(30.0);
        assert_eq!(next(upgraded, b_record()).0, Some(StepAction::AwaitSync));
    }

    #[test]
    fn a_member_in_backoff_waits_until_its_retry() {
        let at = Timestamp(NOW.millis() + 20_000);
        let backing_off = MemberStatus {
            failures: 1,
            next_attempt_at: Some(at),
            ..b_record()
        };
        let (step, waiting) = next(observed("b"), backing_off);
        assert_eq!(step, None);
        assert_eq!(waiting, [format!("b retries at {at}")]);
    }
}
