//! Deferred tiers (`tiers[].deferred`). The mesh procedure upgrades the cores and lets the
//! satellites follow later: the mesh works with them behind. On an upgrade a deferred tier
//! does not hold the rollout from completing, and it starts its clusters only when its own
//! trigger allows (an approval of the tier for the target, a window, or both).
//!
//! Owns: which clusters are the rollout's "core" (those of tiers not deferred), the lag
//! (`status.lagging`), the trigger [`gate`] with `status.tiers[].deferred`, the approval's name,
//! its acknowledgement, log entry and `TierApproved` event, and the `DeferredWaiting` event.
//! May use: `read`, `rollout` (the tier's log entry), `plan::window`.

use crate::api::{
    DeferredWait, Direction, LogMode, LogResult, LogScope, MeshSpec, MeshStatus,
    TierDeferredStatus, TierStatus, Timestamp,
};
use crate::plan::observe::{PlanEvent, Wake};
use crate::plan::window::{WindowState, window_state};

use super::read::Summary;
use super::rollout::{log, tier_entry};

/// Acknowledged intents kept in the mesh status (the oldest go first).
const ACKNOWLEDGED: usize = 32;

/// The name an approval of a deferred tier carries on the Mesh's `baton.dev/approve`.
pub fn approval_name(mesh: &str, tier: &str, version: &str) -> String {
    format!("tier/{mesh}/{tier}@{version}")
}

fn deferred(spec: &MeshSpec, tier: u32) -> bool {
    spec.tiers
        .get(tier as usize)
        .is_some_and(|t| t.deferred.is_some())
}

/// Every cluster of the tiers that are not deferred is done (the rollout proper is).
pub(super) fn core_done(spec: &MeshSpec, sums: &[Summary<'_>]) -> bool {
    sums.iter().all(|s| s.done || deferred(spec, s.tier))
}

/// A deferred cluster is admitted or part-way: the deferred tier moves now.
pub(super) fn moving(spec: &MeshSpec, sums: &[Summary<'_>], st: &MeshStatus) -> bool {
    sums.iter().any(|s| {
        deferred(spec, s.tier)
            && !s.done
            && (s.in_motion || st.admitted.iter().any(|a| a.cluster == s.name()))
    })
}

/// The deferred tiers still behind (`tier done/total`), for `status.lagging`.
pub(super) fn lagging(spec: &MeshSpec, tiers: &[TierStatus]) -> Option<String> {
    let behind: Vec<String> = spec
        .tiers
        .iter()
        .zip(tiers)
        .filter(|(t, s)| t.deferred.is_some() && s.done < s.total)
        .map(|(_, s)| format!("{} {}/{}", s.name, s.done, s.total))
        .collect();
    (!behind.is_empty()).then(|| behind.join(", "))
}

/// Whether the active tier may admit new clusters now.
#[derive(Debug, PartialEq)]
pub(super) enum Trigger {
    /// Not deferred, a backout, or the trigger allows it.
    Open,
    /// What the tier waits for, and when to look again (an approval wakes the mesh by itself).
    Waiting(String, Wake),
}

/// What the gate reads of the pass.
pub(super) struct Pass<'x> {
    pub(super) mesh: &'x str,
    pub(super) spec: &'x MeshSpec,
    pub(super) direction: Direction,
    pub(super) now: Timestamp,
    /// Approvals given on the Mesh (acknowledged or not).
    pub(super) approve: &'x [String],
    /// The rollout changes no version (members rejoining): no tier lags, nothing waits.
    pub(super) reconcile: bool,
}

impl Pass<'_> {
    /// A version upgrade: the only rollout a deferred tier's trigger holds.
    fn upgrade(&self) -> bool {
        self.direction == Direction::Upgrade && !self.reconcile
    }
}

/// The status of every deferred tier that is not active: on an upgrade, what it will wait
/// for once the tiers before it are done (the approval's name shows ahead, and an approval
/// given early counts); cleared on a backout, which never waits for a trigger.
pub(super) fn describe(pass: &Pass<'_>, tiers: &mut [TierStatus], active: Option<usize>) {
    for (ti, (t, status)) in pass.spec.tiers.iter().zip(tiers.iter_mut()).enumerate() {
        if Some(ti) == active {
            continue;
        }
        let Some(d) = &t.deferred else {
            status.deferred = None;
            continue;
        };
        if !pass.upgrade() || status.done == status.total {
            // Done (or not moving this way): only a given approval stays on record.
            status.deferred = status
                .deferred
                .take()
                .and_then(|x| x.approved)
                .filter(|_| pass.direction == Direction::Upgrade)
                .map(|approved| TierDeferredStatus {
                    approved: Some(approved),
                    ..Default::default()
                });
            continue;
        }
        let ds = status.deferred.get_or_insert_with(Default::default);
        ds.waiting_for = Some(DeferredWait::EarlierTiers);
        ds.approval = d
            .approval
            .then(|| approval_name(pass.mesh, &t.name, &pass.spec.version));
        ds.next_window_at = None;
    }
}

/// The trigger of the active tier `ti` on this pass. Only new admissions wait: a cluster
/// admitted, or part-way, finishes.
pub(super) fn gate(
    pass: &Pass<'_>,
    st: &mut MeshStatus,
    tiers: &mut [TierStatus],
    ti: usize,
    events: &mut Vec<PlanEvent>,
) -> Trigger {
    let (Some(tier), Some(status)) = (pass.spec.tiers.get(ti), tiers.get_mut(ti)) else {
        return Trigger::Open;
    };
    let Some(d) = &tier.deferred else {
        status.deferred = None;
        return Trigger::Open;
    };
    if !pass.upgrade() {
        // A backout is an emergency: the tier goes back first, without its trigger; a
        // rollout that changes no version (a member rejoining) waits for none either.
        status.deferred = None;
        return Trigger::Open;
    }
    let name = approval_name(pass.mesh, &tier.name, &pass.spec.version);
    let mut ds = status.deferred.take().unwrap_or_default();
    ds.approval = d.approval.then(|| name.clone());
    if ds.approved.as_deref().is_some_and(|a| a != name) {
        // Given for another target.
        ds.approved = None;
    }
    let was_waiting = ds.waiting_for;
    let mut newly_approved = false;
    if d.approval && ds.approved.is_none() && pass.approve.iter().any(|a| a == &name) {
        ds.approved = Some(name.clone());
        newly_approved = true;
    }
    let trigger = if d.approval && ds.approved.is_none() {
        ds.waiting_for = Some(DeferredWait::Approval);
        ds.next_window_at = None;
        Trigger::Waiting(
            format!(
                "deferred tier {} waits for its approval: approve {name}",
                tier.name
            ),
            Wake::Idle,
        )
    } else {
        match window_state(&d.windows, pass.now) {
            WindowState::Always | WindowState::Open { .. } => {
                ds.waiting_for = None;
                ds.next_window_at = None;
                Trigger::Open
            }
            WindowState::Closed { next } => {
                ds.waiting_for = Some(DeferredWait::Window);
                ds.next_window_at = next;
                let (why, wake) = match next {
                    Some(at) => (format!("next opens at {at}"), Wake::At(at)),
                    None => ("no window can open".to_string(), Wake::Idle),
                };
                Trigger::Waiting(
                    format!("deferred tier {} waits for its window ({why})", tier.name),
                    wake,
                )
            }
        }
    };
    status.deferred = Some(ds);
    if newly_approved {
        acknowledge(st, format!("approve:{name}"));
        if let Some(parent) = tier_entry(st, pass.spec, tier, pass.direction, pass.now) {
            let mut log = log(st);
            let id = log.open(
                Some(parent),
                "approve",
                LogScope::Mesh,
                &tier.name,
                Some(&pass.spec.version),
                LogMode::Manual,
                format!("deferred tier {} approved", tier.name),
                pass.now,
            );
            log.close(id, LogResult::Succeeded, "", pass.now);
        }
        events.push(PlanEvent {
            warning: false,
            reason: "TierApproved".into(),
            message: format!("deferred tier {} approved ({name})", tier.name),
        });
    }
    let waiting_for = tiers[ti].deferred.as_ref().and_then(|d| d.waiting_for);
    if let Trigger::Waiting(why, _) = &trigger
        && waiting_for != was_waiting
    {
        events.push(PlanEvent {
            warning: false,
            reason: "DeferredWaiting".into(),
            message: why.clone(),
        });
    }
    trigger
}

/// Record an acted-on intent, keeping the last [`ACKNOWLEDGED`].
fn acknowledge(st: &mut MeshStatus, token: String) {
    st.acknowledged.push(token);
    let n = st.acknowledged.len();
    if n > ACKNOWLEDGED {
        st.acknowledged.drain(..n - ACKNOWLEDGED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Duration, MaintenanceWindow, MeshPhase, condition as cond};
    use crate::fixtures::mesh::{NOW, Scene, admitted, cluster, mesh};
    use crate::plan::mesh::MeshPlan;

    fn reasons(plan: &MeshPlan) -> Vec<&str> {
        plan.events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn condition<'p>(plan: &'p MeshPlan, type_: &str) -> (&'p str, &'p str) {
        let c = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.as_str(), c.message.as_str())
    }

    /// Every day from `start` for `hours` (UTC). `NOW` is 08:00 UTC.
    fn daily(start: &str, hours: u64) -> Vec<MaintenanceWindow> {
        vec![MaintenanceWindow {
            days: vec![],
            start: start.into(),
            duration: Duration::from_secs(hours * 3600),
        }]
    }

    /// Core `c1`, then the deferred tier `sat` (`s1`, `s2`, one at a time), from 1.0.0 to 2.0.0.
    fn core_and_satellites(approval: bool, windows: Vec<MaintenanceWindow>) -> Scene {
        mesh("2.0.0")
            .tier("core", &["c1"])
            .tier("sat", &["s1", "s2"])
            .deferred(approval, windows)
            .scene()
            .with(cluster("c1").ready("1.0.0"))
            .with(cluster("s1").ready("1.0.0"))
            .with(cluster("s2").ready("1.0.0"))
    }

    #[test]
    fn a_failed_cluster_of_a_deferred_tier_keeps_the_mesh_from_ready() {
        // The rollout proper is done; a satellite failed on its way: Degraded, not Ready (the
        // soak found such a mesh Ready while its tier held the failed cluster's slot).
        let mut scene = core_and_satellites(false, vec![])
            .with(cluster("c1").ready("2.0.0"))
            .with(cluster("s1").runs("1.0.0").stalled())
            .with(cluster("s2").ready("1.0.0"));
        let plan = scene.step();
        assert_eq!(
            plan.status.phase,
            MeshPhase::Degraded,
            "{:?}",
            plan.status.message
        );
        assert_eq!(condition(&plan, cond::READY).0, "False");
        assert_eq!(plan.status.lagging.as_deref(), Some("sat 0/2"));
    }

    #[test]
    fn a_rollout_that_changes_no_version_waits_for_no_trigger() {
        // Everyone runs the target; s1 moves again (a member rejoining): a reconcile rollout.
        let mut scene = core_and_satellites(true, vec![])
            .with(cluster("c1").ready("2.0.0"))
            .with(cluster("s1").runs("2.0.0"))
            .with(cluster("s2").ready("2.0.0"));
        let plan = scene.step();
        assert!(plan.status.rollout.as_ref().is_some_and(|r| r.reconcile));
        assert_eq!(admitted(&plan), ["s1"], "no approval asked for");
        assert_eq!(plan.status.lagging, None);
        assert!(
            plan.status.tiers[1]
                .deferred
                .as_ref()
                .is_none_or(|d| d.waiting_for.is_none()),
            "{:?}",
            plan.status.tiers[1].deferred
        );
        assert!(!reasons(&plan).contains(&"DeferredWaiting"));
    }

    #[test]
    fn a_deferred_tier_does_not_hold_the_rollout_and_waits_for_its_approval() {
        let mut scene = core_and_satellites(true, vec![]);
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["c1"]);
        // While the core moves, the deferred tier shows what it will wait for.
        let ds = plan.status.tiers[1]
            .deferred
            .clone()
            .expect("deferred status");
        assert_eq!(ds.waiting_for, Some(DeferredWait::EarlierTiers));
        assert_eq!(ds.approval.as_deref(), Some("tier/mesh/sat@2.0.0"));
        assert_eq!(plan.status.lagging, None);
        scene.set(cluster("c1").ready("2.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        assert_eq!(plan.status.lagging.as_deref(), Some("sat 0/2"));
        assert_eq!(plan.status.progress.as_deref(), Some("1/3"));
        let (ready, why) = condition(&plan, cond::READY);
        assert_eq!(ready, "True");
        assert!(why.contains("deferred tiers behind: sat 0/2"), "{why}");
        assert_eq!(condition(&plan, cond::MIXED_VERSION).0, "True");
        assert_eq!(condition(&plan, cond::RECONCILING).0, "False");
        let msg = plan.status.message.clone().unwrap_or_default();
        assert!(msg.contains("approve tier/mesh/sat@2.0.0"), "{msg}");
        let rollout = &plan.status.log[0];
        assert_eq!(rollout.result, crate::api::LogResult::Succeeded);
        assert!(rollout.message.contains("deferred tiers behind: sat 0/2"));
        assert!(reasons(&plan).contains(&"RolloutComplete"));
        assert!(reasons(&plan).contains(&"DeferredWaiting"));
        let ds = plan.status.tiers[1]
            .deferred
            .clone()
            .expect("deferred status");
        assert_eq!(ds.waiting_for, Some(DeferredWait::Approval));
        assert_eq!(plan.wake, Wake::Idle, "an approval wakes the mesh itself");
        // Waiting again announces nothing and writes the same status.
        let again = scene.step();
        assert!(again.events.is_empty(), "{:?}", again.events);
        assert_eq!(again.status, plan.status);
        // The approval: the tier moves, under its own top-level log entry.
        scene.intents.approve = vec!["tier/mesh/sat@2.0.0".into()];
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["s1"]);
        assert!(reasons(&plan).contains(&"TierApproved"));
        assert!(
            plan.status
                .acknowledged
                .contains(&"approve:tier/mesh/sat@2.0.0".to_string())
        );
        assert_eq!(plan.status.phase, MeshPhase::Progressing);
        assert_eq!(condition(&plan, cond::READY).0, "False");
        let tier = plan
            .status
            .log
            .iter()
            .find(|e| e.action == "tier" && e.target == "sat")
            .expect("the deferred tier's entry");
        assert_eq!(tier.parent, None, "not under the finished rollout");
        assert!(
            plan.status
                .log
                .iter()
                .any(|e| e.action == "approve" && e.parent == Some(tier.id))
        );
        // The approval stays given for the rollout, whatever the annotation does.
        scene.intents.approve.clear();
        scene.set(cluster("s1").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["s2"]);
        scene.set(cluster("s2").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        assert_eq!(plan.status.lagging, None);
        assert_eq!(condition(&plan, cond::MIXED_VERSION).0, "False");
        assert_eq!(
            reasons(&plan),
            ["TierComplete"],
            "no second RolloutComplete"
        );
    }

    #[test]
    fn an_approval_given_early_counts_and_one_for_another_target_does_not() {
        let mut scene = core_and_satellites(true, vec![]);
        scene.intents.approve = vec!["tier/mesh/sat@2.0.0".into()];
        scene.step();
        scene.set(cluster("c1").ready("2.0.0"));
        assert_eq!(admitted(&scene.step()), ["s1"]);
        // A later target needs its own approval.
        scene.mesh.spec.version = "3.0.0".into();
        scene.set(cluster("s1").ready("2.0.0"));
        scene.step();
        scene.set(cluster("c1").ready("3.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty(), "{:?}", admitted(&plan));
        let ds = plan.status.tiers[1]
            .deferred
            .clone()
            .expect("deferred status");
        assert_eq!(ds.approval.as_deref(), Some("tier/mesh/sat@3.0.0"));
        assert_eq!(ds.approved, None);
    }

    #[test]
    fn a_deferred_tier_starts_clusters_only_inside_its_window_and_finishes_a_started_one() {
        // A window from 10:00 to 11:00 every day; NOW is 08:00.
        let mut scene = core_and_satellites(false, daily("10:00", 1));
        scene.step();
        scene.set(cluster("c1").ready("2.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        let opens = NOW.plus(Duration::from_secs(2 * 3600));
        assert_eq!(plan.wake, Wake::At(opens));
        let ds = plan.status.tiers[1]
            .deferred
            .clone()
            .expect("deferred status");
        assert_eq!(ds.waiting_for, Some(DeferredWait::Window));
        assert_eq!(ds.next_window_at, Some(opens));
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        scene.now = opens.plus(Duration::from_secs(50 * 60));
        assert_eq!(admitted(&scene.step()), ["s1"]);
        // The window closes with s1 part-way: it finishes; s2 waits for the next window.
        scene.now = opens.plus(Duration::from_secs(70 * 60));
        scene.set(cluster("s1").members_run(&["2.0.0", "1.0.0"]));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["s1"]);
        assert_eq!(plan.status.phase, MeshPhase::Progressing);
        scene.set(cluster("s1").ready("2.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        assert_eq!(plan.status.lagging.as_deref(), Some("sat 1/2"));
        assert_eq!(plan.wake, Wake::At(opens.plus(Duration::from_secs(86_400))));
        assert_eq!(plan.status.phase, MeshPhase::Ready);
    }

    #[test]
    fn a_backout_does_not_wait_for_a_deferred_tier_and_it_goes_first() {
        let mut scene = mesh("1.0.0")
            .tier("core", &["c1"])
            .tier("sat", &["s1"])
            .deferred(true, daily("10:00", 1))
            .scene()
            .with(cluster("c1").ready("2.0.0"))
            .with(cluster("s1").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["s1"]);
        assert_eq!(plan.status.tiers[1].deferred, None);
        assert_eq!(plan.status.lagging, None);
    }

    #[test]
    fn a_deferred_tier_still_obeys_the_compatibility_rules() {
        // The core pins an older version: satellites may not run newer than the core.
        let mut scene = mesh("2.0.0")
            .tier("core", &["c1"])
            .tier("sat", &["s1"])
            .deferred(false, vec![])
            .rule("satellite", "core")
            .scene()
            .with(cluster("c1").role("core").pin("1.5.0").ready("1.5.0"))
            .with(cluster("s1").role("satellite").ready("1.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty(), "{:?}", admitted(&plan));
        let msg = plan.status.message.clone().unwrap_or_default();
        assert!(msg.contains("s1"), "{msg}");
    }
}
