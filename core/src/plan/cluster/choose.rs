//! Choosing the next steps, in the order of the procedure: nothing new while a switchover or
//! its traffic check is pending, a member is Zombie or unreachable, or no single member is
//! active; then hold anyone not on the active's software in forced standby (mixed version);
//! phase A the standbys (regular members but the active); phase B the active (a switchover
//! to an upgraded standby, or in place when allowed); phase B' the old active; phase C the
//! spares (first instead, when they are the only possible switchover targets); then the end
//! of the rollout.
//!
//! Owns: the order of the phases, the stalls found there (MemberZombie, SplitBrain,
//! OutageNotAllowed), the unavailability of members reported OutOfService.
//!
//! May use: `state`, `view`, `gates`, `start`, `member`, `handover`, `converge`,
//! `plan::software`. Used by the pipeline (`super`) only.

use crate::api::{MemberRole, MemberSpec, StepAction};
use crate::plan::observe::Wake;
use crate::plan::software::same_software;
use crate::plan::stall::Stall;

use super::member::member_phase;
use super::state::{NewStep, Pass};
use super::{converge, gates, handover, rotation, start, topology, view};

pub(super) fn choose_next(p: &mut Pass<'_>) {
    let Some(active) = ready_to_choose(p) else {
        return;
    };
    p.unavailable += out_of_service(p);
    // A CA rotation due now runs instead of new upgrade steps (see `rotation`), and holds
    // membership changes (a member bootstrapped mid-rotation would trust one CA of two).
    if !rotation::rotate(p, active) {
        topology::wait_for_rotation(p);
        return;
    }
    // Membership changes; a leaving active hands over before anything else.
    if !topology::advance(p, active) {
        return;
    }
    hold_mixed_versions(p, active);
    run_phases(p, active);
    // Converged on the version, but not while a membership change or a client's keys are owed.
    if p.converged && topology::pending(p) {
        p.converged = false;
    }
}

/// The active member, once nothing stands in the way of new steps.
fn ready_to_choose<'a>(p: &mut Pass<'a>) -> Option<&'a str> {
    if p.has_step(StepAction::Switchover) || p.st.switchover.as_ref().is_some_and(|s| !s.verified) {
        return None;
    }
    let zombies: Vec<(String, String)> =
        p.st.members
            .iter()
            .filter(|m| m.role == MemberRole::Zombie)
            .map(|m| (m.name.clone(), m.last_error.clone().unwrap_or_default()))
            .collect();
    if !zombies.is_empty() {
        p.found.stalled = Some(Stall::MemberZombie(zombies));
        return None;
    }
    // A member already retired (or forced out) while it leaves is not waited for; one joining
    // that may already replicate is (it could come back in a plain role beside a new active).
    let unreachable: Vec<&str> = p
        .spec()
        .members
        .iter()
        .filter(|m| p.agent(&m.name).is_none() && !topology::gone(p, &m.name))
        .map(|m| m.name.as_str())
        .chain(topology::unreachable_in_group(p))
        .collect();
    if !unreachable.is_empty() {
        // Never act on a member whose state is unknown, nor around it.
        let names = unreachable.join(", ");
        p.found.degraded.push(format!("unreachable: {names}"));
        p.wait(format!("waiting for {names} to be reachable"));
        p.wake = p.wake.min(Wake::Busy);
        return None;
    }
    match view::active(p) {
        Err(e) => {
            p.found.stalled = Some(Stall::SplitBrain(e));
            None
        }
        Ok(None) => {
            if p.st.steps.is_empty() {
                p.found.degraded.push("no active member".into());
                p.wait("no member is active; waiting for the HA system to elect one".into());
            }
            None
        }
        Ok(Some(active)) => Some(active),
    }
}

/// Idle members that report OutOfService count against `maxUnavailable`.
fn out_of_service(p: &Pass<'_>) -> u32 {
    p.spec()
        .members
        .iter()
        .filter(|m| {
            !p.busy(&m.name)
                && p.agent(&m.name)
                    .is_some_and(|a| a.role == MemberRole::OutOfService)
        })
        .count() as u32
}

/// Mixed version: anyone in a plain standby role not on the active's software is held in
/// forced standby, so a plain failover never changes the version that serves.
fn hold_mixed_versions(p: &mut Pass<'_>, active: &str) {
    let Some(active_sw) = p.member_spec(active).and_then(|m| view::software_of(p, m)) else {
        return;
    };
    // Joining members that already replicate are covered too.
    for m in p.in_group() {
        if m.name == active || p.busy(&m.name) {
            continue;
        }
        let Some(a) = p.agent(&m.name) else {
            continue;
        };
        let differs = view::software_of(p, m).is_some_and(|s| !same_software(&s, &active_sw));
        if matches!(a.role, MemberRole::Standby | MemberRole::Spare) && differs {
            let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
            n.source = p.agent(active).and_then(|x| x.data_endpoint.clone());
            n.message = format!("{} runs another version than the active {active}", m.name);
            start::start(p, n);
        }
    }
}

/// Start what each member in `group` needs next; true when none needs anything more. Every
/// member is looked at (not only up to the first that is not done).
fn all_done(p: &mut Pass<'_>, group: &[&MemberSpec], active: &str) -> bool {
    let mut done = true;
    for m in group {
        if !member_phase(p, m, active) {
            done = false;
        }
    }
    done
}

/// Phases A, B, B' and C, each only once the one before is done.
fn run_phases(p: &mut Pass<'_>, active: &str) {
    // Members that leave are not upgraded (an active that leaves has handed over first).
    // The active is never among them, even when declared a spare (a spare took over when no
    // standby could: upgrading it as a spare would take the service down).
    let (spares, regular): (Vec<&MemberSpec>, Vec<&MemberSpec>) = p
        .settled()
        .filter(|m| m.name != active)
        .partition(|m| m.spare);
    let others = regular;
    // Phase A: the non-spare members other than the active, standby first.
    if !all_done(p, &others, active) {
        return;
    }
    // With no regular peer at all, spares are the only possible switchover targets.
    let spares_first = others.is_empty() && !spares.is_empty();
    if spares_first && !all_done(p, &spares, active) {
        return;
    }
    // Phase B: the active.
    let Some(active_m) = p.member_spec(active) else {
        return;
    };
    if !view::moves(p, active_m).unwrap_or_default().is_empty() {
        let alone = others.is_empty() && spares.is_empty();
        // A member joining will take over: upgrading the active alone in place now would
        // change what serves under a standby joining on the old software.
        if alone && !gates::in_place(p) && !p.topo.joining.is_empty() {
            p.wait(format!(
                "{active} is upgraded once {} has joined (standby first)",
                p.topo.joining.join(", ")
            ));
            return;
        }
        if gates::in_place(p) || alone {
            if !gates::allow_outage(p) {
                let active = active.to_string();
                p.found.stalled = Some(Stall::OutageNotAllowed { active });
                return;
            }
            member_phase(p, active_m, active);
            return;
        }
        handover::plan_switchover(p, active, &others, &spares);
        return;
    }
    // The active at its target: what it still owes (its verifications).
    if !member_phase(p, active_m, active) {
        return;
    }
    // Phase C: spares last.
    if !spares_first && !all_done(p, &spares, active) {
        return;
    }
    converge::finish_rollout(p, active);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{recorded, steps};
    use super::*;
    use crate::fixtures::cluster::{ClusterBuilder, observed};

    /// Target 2.0.0, every member on 1.0.0 (the first active), no preflight.
    fn cluster() -> ClusterBuilder {
        ClusterBuilder::new("c")
            .members(["a", "b"])
            .spare("s")
            .version("2.0.0")
            .running("1.0.0")
            .upgrade(|u| u.preflight = false)
    }

    fn chosen(b: ClusterBuilder) -> Vec<(StepAction, String)> {
        let case = b.build();
        let input = case.input();
        let mut p = recorded(&input);
        choose_next(&mut p);
        steps(&p)
    }

    #[test]
    fn standbys_go_first_and_spares_wait_for_them() {
        let got = chosen(cluster());
        assert_eq!(got, [(StepAction::ForceStandby, "b".to_string())]);
    }

    #[test]
    fn spares_go_last_after_the_active() {
        // b and a upgraded (a a forced standby after the switchover), s held: its turn.
        let got = chosen(
            cluster()
                .observe(observed("b").version("2.0.0").active())
                .observe(observed("a").version("2.0.0").held())
                .observe(observed("s").held()),
        );
        assert_eq!(got, [(StepAction::Upgrade, "s".to_string())]);
    }

    #[test]
    fn an_active_declared_spare_is_never_upgraded_as_one_of_the_spares() {
        // A spare took over (no standby could): s is active beside the spare t, and the one
        // regular member j is still joining. s is upgraded after a switchover, never in place
        // as one of the spares (it was: the spares included the active).
        let case = || {
            ClusterBuilder::new("c")
                .spare("s")
                .spare("t")
                .members(["j"])
                .version("2.0.0")
                .upgrade(|u| u.preflight = false)
                .recorded(["s", "t"])
                .observe(observed("s").version("1.0.0").active())
                .observe(observed("t").version("1.0.0"))
                .observe(observed("j").version("1.0.0"))
        };
        let on_s = |plan: &crate::plan::ClusterPlan| {
            plan.actions
                .iter()
                .filter(|a| a.member == "s")
                .map(|a| a.request.kind)
                .collect::<Vec<_>>()
        };
        let plan = case().build().plan();
        assert!(
            !on_s(&plan).iter().any(|k| matches!(
                k,
                crate::plan::OpKind::Upgrade | crate::plan::OpKind::Rollback
            )),
            "the active s is not upgraded: {:?}",
            plan.actions
        );
        // t, the other spare, goes first (held on the old version, then upgraded).
        assert!(
            plan.actions.iter().any(|a| a.member == "t"),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn the_active_goes_last_through_a_switchover_to_an_upgraded_standby() {
        let got = chosen(cluster().observe(observed("b").version("2.0.0").held()));
        // First the spare, on the old version, is held: it would not run the new active's.
        assert!(
            got.contains(&(StepAction::ForceStandby, "s".to_string())),
            "{got:?}"
        );
        assert!(!got.iter().any(|(a, _)| *a == StepAction::Switchover));
        // Once the spare is held, the switchover to b.
        let got = chosen(
            cluster()
                .observe(observed("b").version("2.0.0").held())
                .observe(observed("s").held()),
        );
        assert_eq!(got, [(StepAction::Switchover, "b".to_string())]);
    }

    #[test]
    fn a_member_on_another_version_than_the_active_is_forced_standby_first() {
        // b already runs the target but a plain failover to it would change what serves.
        let got = chosen(cluster().observe(observed("b").version("2.0.0")));
        assert!(
            got.contains(&(StepAction::ForceStandby, "b".to_string())),
            "{got:?}"
        );
    }

    #[test]
    fn a_lone_member_needs_allow_outage() {
        let lone = || {
            ClusterBuilder::new("c")
                .members(["a"])
                .version("2.0.0")
                .running("1.0.0")
                .upgrade(|u| u.preflight = false)
        };
        let case = lone().build();
        let input = case.input();
        let mut p = recorded(&input);
        choose_next(&mut p);
        assert!(matches!(
            p.found.stalled,
            Some(Stall::OutageNotAllowed { .. })
        ));
        let got = chosen(lone().upgrade(|u| u.allow_outage = true));
        assert_eq!(got, [(StepAction::Upgrade, "a".to_string())]);
    }

    #[test]
    fn nothing_is_chosen_around_an_unreachable_or_zombie_member() {
        assert!(chosen(cluster().unreachable("b")).is_empty());
        let case = cluster()
            .with_status(|st| {
                st.members = vec![crate::api::MemberStatus {
                    name: "b".into(),
                    failures: 3,
                    ..Default::default()
                }]
            })
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        choose_next(&mut p);
        assert!(p.st.steps.is_empty());
        assert!(matches!(p.found.stalled, Some(Stall::MemberZombie(_))));
    }
}
