//! Planning a switchover (phase B): pick the member to hand the active role to (an upgraded,
//! in-sync standby; a spare only when no standby qualifies), hold in forced standby everyone
//! who would then run another version than the new active (and wait until those holds
//! applied), then request the switchover through its gates.
//!
//! Owns: the choice of switchover target, the holds before it, and the switchover step.
//!
//! May use: `state`, `view`, `gates`, `start`, `plan::software`. Used by `converge`,
//! `choose`.

use crate::api::{MemberRole, MemberSpec, Membership, StepAction};
use crate::plan::software::same_software;

use super::gates;
use super::start;
use super::state::{NewStep, Pass, TopologyEntry};
use super::view;

/// Hand the active role from `active` to an upgraded member of `others`, or else of `spares`.
pub(super) fn plan_switchover<'a>(
    p: &mut Pass<'a>,
    active: &str,
    others: &[&'a MemberSpec],
    spares: &[&'a MemberSpec],
) {
    let Some(to) = pick_target(p, others).or_else(|| pick_target(p, spares)) else {
        p.wait(format!(
            "no upgraded, in-sync member to switch {active} over to"
        ));
        return;
    };
    if hold_others(p, active, to) {
        return;
    }
    request_switchover(p, active, to, "switch traffic to the upgraded member");
}

/// The first idle member of `pool` that runs its target, in a standby role, in sync.
fn pick_target<'a>(p: &Pass<'a>, pool: &[&'a MemberSpec]) -> Option<&'a str> {
    pool.iter()
        .find(|m| view::at_target(p, m) && may_take_over(p, m))
        .map(|m| m.name.as_str())
}

/// `m` could take the active role now, whatever it runs: idle, in a standby role, in sync,
/// and accepted by every peer that enforces a list.
pub(super) fn may_take_over(p: &Pass<'_>, m: &MemberSpec) -> bool {
    !p.busy(&m.name)
        && p.agent(&m.name).is_some_and(|a| {
            matches!(
                a.role,
                MemberRole::Standby | MemberRole::ForcedStandby | MemberRole::Spare
            )
        })
        && view::in_sync(p, &m.name)
        && view::known_to_peers(p, &m.name)
}

/// After the switchover the version that serves changes: whoever does not run the new
/// active's version must already be held in forced standby. True while a hold is started or
/// still in flight.
pub(super) fn hold_others(p: &mut Pass<'_>, active: &str, to: &str) -> bool {
    let to_sw = p.member_spec(to).and_then(|m| view::software_of(p, m));
    let mut holding = false;
    for m in p.in_group() {
        if m.name == active || m.name == to {
            continue;
        }
        if p.busy(&m.name) {
            // A hold still in flight holds the switchover too: if the member restarts before
            // it applies, it would come back in its plain role on the old version beside the
            // new active. So does a member joining the group as a plain standby, and one in a
            // plain role on other software than the new active, busy with another step (it is
            // held once that ends).
            let plain_differs = p
                .agent(&m.name)
                .is_some_and(|a| matches!(a.role, MemberRole::Standby | MemberRole::Spare))
                && match (view::software_of(p, m), to_sw.as_ref()) {
                    (Some(s), Some(t)) => !same_software(&s, t),
                    _ => false,
                };
            holding |= plain_differs
                || p.st.steps.iter().any(|s| {
                    s.member == m.name
                        && matches!(s.action, StepAction::ForceStandby | StepAction::Join)
                });
            continue;
        }
        let differs = match (view::software_of(p, m), to_sw.as_ref()) {
            (Some(s), Some(t)) => !same_software(&s, t),
            _ => false,
        };
        let plain = p
            .agent(&m.name)
            .is_some_and(|a| matches!(a.role, MemberRole::Standby | MemberRole::Spare));
        if differs && plain {
            let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
            n.source = p.agent(active).and_then(|x| x.data_endpoint.clone());
            n.message = format!("hold {} in forced standby before {to} takes over", m.name);
            start::start(p, n);
            holding = true;
        }
    }
    holding
}

/// Start the switchover `from -> to` once its gates let it.
pub(super) fn request_switchover(p: &mut Pass<'_>, from: &str, to: &str, why: &str) {
    request_switchover_with(p, from, to, why, None);
}

/// [`request_switchover`] for a CA rotation (`trust`: the rotation's CA, which makes the step
/// one of the rotation's).
pub(super) fn request_switchover_with(
    p: &mut Pass<'_>,
    from: &str,
    to: &str,
    why: &str,
    trust: Option<crate::api::TrustParams>,
) {
    request(p, from, to, why, trust, None);
}

/// [`request_switchover`] handing the role over from an active being removed: the step is
/// the first of its removal, logged under that (no rollout runs, and none is to be reported).
pub(super) fn request_hand_over(p: &mut Pass<'_>, from: &str, to: &str, why: &str) {
    let removal = TopologyEntry::Member(Membership::Leaving, from.to_string());
    request(p, from, to, why, None, Some(removal));
}

fn request(
    p: &mut Pass<'_>,
    from: &str,
    to: &str,
    why: &str,
    trust: Option<crate::api::TrustParams>,
    topology: Option<TopologyEntry>,
) {
    if view::peer_lists_changing(p) {
        p.wait(format!(
            "switchover {from} -> {to} waits for the peer-identity steps in flight"
        ));
        return;
    }
    let Some(mode) = gates::switchover_allowed(p, to) else {
        return;
    };
    let mut n = NewStep::on(StepAction::Switchover, to);
    n.from = Some(from.to_string());
    n.mode = mode;
    n.message = format!("{why}: {from} -> {to}");
    n.trust = trust;
    n.topology = topology;
    start::start(p, n);
}
