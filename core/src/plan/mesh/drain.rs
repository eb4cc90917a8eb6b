//! Replication drained before a tier (`tiers[].drainBefore`). The mesh procedure starts the
//! destination cores only once every transaction the upgraded source generated has been
//! received by every other core: a tier that declares it waits, before its first cluster
//! moves, until no cluster of the mesh reports a replication backlog.
//!
//! Owns: [`gate`], the tier's `status.tiers[].drain` (when the wait began, when it drained,
//! the backlog left per cluster), its `drain` log entry under the tier's, the
//! `DrainWaiting`/`TierDrained`/`DrainForced` events and `Stalled/DrainTimeout`. May use:
//! `read` (the backlog), `rollout` (the tier's log entry), `plan::stall`.

use crate::api::{
    ClusterBacklog, Direction, Duration, LogMode, LogResult, LogScope, MeshStatus, TierDrainStatus,
    TierStatus,
};
use crate::plan::observe::PlanEvent;
use crate::plan::stall::Stall;

use crate::api::{MeshSpec, Timestamp};

use super::read::Summary;
use super::rollout::{log, tier_entry};

/// Clusters named in the status and in messages while a tier waits; the rest are counted.
const LISTED: usize = 20;

/// Whether the active tier may admit clusters now.
#[derive(Debug, PartialEq)]
pub(super) enum Drain {
    /// No wait declared, the tier already started, or the backlog drained.
    Open,
    /// Backlog left, within the timeout: what the tier waits for.
    Waiting(String),
    /// Backlog left past the timeout.
    TimedOut(Stall),
}

/// What the gate reads of the pass.
pub(super) struct Pass<'x, 'a> {
    pub(super) spec: &'a MeshSpec,
    pub(super) sums: &'x [Summary<'a>],
    pub(super) direction: Direction,
    pub(super) now: Timestamp,
    /// The force intent's token, acknowledged or not.
    pub(super) force: Option<&'x str>,
}

/// The gate of tier `ti` for this pass. A tier waits only on an upgrade (a backout is an
/// emergency, as for the preconditions), only before its first cluster moves (its own
/// upgrades generate backlog that must not hold the rest of it), and once per rollout.
pub(super) fn gate(
    pass: &Pass<'_, '_>,
    st: &mut MeshStatus,
    tiers: &mut [TierStatus],
    ti: usize,
    events: &mut Vec<PlanEvent>,
) -> Drain {
    let Pass {
        spec,
        sums,
        direction,
        now,
        force,
    } = *pass;
    let (Some(tier), Some(status)) = (spec.tiers.get(ti), tiers.get_mut(ti)) else {
        return Drain::Open;
    };
    let Some(want) = &tier.drain_before else {
        status.drain = None;
        return Drain::Open;
    };
    let Some(started) = st.rollout.as_ref().map(|r| r.started_at) else {
        return Drain::Open;
    };
    // A wait recorded for an earlier rollout is over.
    if status.drain.as_ref().is_some_and(|d| d.since < started) {
        status.drain = None;
    }
    if status
        .drain
        .as_ref()
        .is_some_and(|d| d.drained_at.is_some())
    {
        return Drain::Open;
    }
    let tier_started = sums.iter().any(|s| {
        s.tier as usize == ti && (s.in_motion || st.admitted.iter().any(|a| a.cluster == s.name()))
    });
    if direction != Direction::Upgrade || (tier_started && status.drain.is_none()) {
        return Drain::Open;
    }
    let backlog = backlog_of(sums);
    let first = status.drain.is_none();
    let drain = status.drain.get_or_insert_with(|| TierDrainStatus {
        since: now,
        ..Default::default()
    });
    let waited = now.since(drain.since);
    let forced = force.filter(|t| !st.acknowledged.contains(&format!("force:{t}")));
    if backlog.is_empty() || forced.is_some() {
        drain.drained_at = Some(now);
        drain.backlog.clear();
        // A force is spent (acknowledged, warned of) only when it overrode a backlog.
        let by_force = forced.filter(|_| !backlog.is_empty());
        let message = if by_force.is_some() {
            format!(
                "tier {}: started by force with replication backlog on {}",
                tier.name,
                listed(&backlog)
            )
        } else if first {
            format!("tier {}: no replication backlog in the mesh", tier.name)
        } else {
            format!(
                "tier {}: replication drained after {}",
                tier.name,
                secs(waited)
            )
        };
        if let Some(t) = by_force {
            st.acknowledged.push(format!("force:{t}"));
        }
        events.push(PlanEvent {
            warning: by_force.is_some(),
            reason: if by_force.is_some() {
                "DrainForced"
            } else {
                "TierDrained"
            }
            .into(),
            message: message.clone(),
        });
        if let Some(id) = open_drain_entry(st, &tier.name) {
            log(st).close(id, LogResult::Succeeded, message, now);
        }
        return Drain::Open;
    }
    drain.backlog = backlog.iter().take(LISTED).cloned().collect();
    // No elapsed time in it: the message is status, and a status that changes on every pass
    // would be written on every pass.
    let message = format!(
        "tier {} waits for the replication backlog to drain (since {}, timeout {}): {}",
        tier.name,
        drain.since,
        want.timeout,
        listed(&backlog)
    );
    if first {
        events.push(PlanEvent {
            warning: false,
            reason: "DrainWaiting".into(),
            message: message.clone(),
        });
        let parent = tier_entry(st, spec, tier, direction, now);
        log(st).open(
            parent,
            "drain",
            LogScope::Mesh,
            &tier.name,
            Some(&spec.version),
            LogMode::Automatic,
            format!("replication backlog on {}", listed(&backlog)),
            now,
        );
    }
    if waited.millis() >= want.timeout.millis() {
        return Drain::TimedOut(Stall::DrainTimeout {
            tier: tier.name.clone(),
            timeout: want.timeout.to_string(),
            backlog: listed(&backlog),
        });
    }
    Drain::Waiting(message)
}

/// Whole seconds, as a duration prints them (`1m30s`).
fn secs(d: Duration) -> Duration {
    Duration::from_secs(d.millis() / 1000)
}

/// Every cluster with a backlog, largest first (then by name).
fn backlog_of(sums: &[Summary<'_>]) -> Vec<ClusterBacklog> {
    let mut out: Vec<ClusterBacklog> = sums
        .iter()
        .filter_map(|s| {
            let entries = s.backlog().0;
            (entries > 0).then(|| ClusterBacklog {
                cluster: s.name().to_string(),
                entries,
            })
        })
        .collect();
    out.sort_by(|a, b| b.entries.cmp(&a.entries).then(a.cluster.cmp(&b.cluster)));
    out
}

/// `a (5), b (2)`, the first [`LISTED`] of them, and how many more.
fn listed(backlog: &[ClusterBacklog]) -> String {
    let mut s: Vec<String> = backlog
        .iter()
        .take(LISTED)
        .map(|b| format!("{} ({})", b.cluster, b.entries))
        .collect();
    if backlog.len() > LISTED {
        s.push(format!("{} more", backlog.len() - LISTED));
    }
    s.join(", ")
}

/// The tier's open `drain` entry.
fn open_drain_entry(st: &MeshStatus, tier: &str) -> Option<u64> {
    st.log
        .iter()
        .rev()
        .find(|e| e.action == "drain" && e.target == tier && e.result == LogResult::Running)
        .map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use crate::api::{Duration, LogResult, MeshPhase};
    use crate::fixtures::mesh::{NOW, Scene, admitted, cluster, mesh};
    use crate::plan::mesh::MeshPlan;
    use crate::plan::stall::Stall;

    /// The mesh procedure's shape: a source tier, then destinations that wait for the drain.
    fn source_then_destinations(timeout: Duration) -> Scene {
        mesh("2.0.0")
            .tier("source", &["src"])
            .tier("dest", &["d1", "d2"])
            .max_parallel(2)
            .drain_before(timeout)
            .scene()
            .with(cluster("src").ready("1.0.0"))
            .with(cluster("d1").ready("1.0.0"))
            .with(cluster("d2").ready("1.0.0"))
    }

    fn reasons(plan: &MeshPlan) -> Vec<&str> {
        plan.events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn reason(plan: &MeshPlan) -> Option<&str> {
        plan.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
            .map(|c| c.reason.as_str())
    }

    #[test]
    fn a_drain_tier_starts_only_once_no_cluster_has_a_backlog() {
        let mut scene = source_then_destinations(Duration::from_secs(600));
        assert_eq!(admitted(&scene.step()), ["src"]);
        // The source is done, but what it generated has not reached everyone.
        scene.set(cluster("src").ready("2.0.0").backlog(40));
        scene.set(cluster("d2").ready("1.0.0").backlog(3));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty(), "{:?}", plan.status.admitted);
        assert_eq!(reasons(&plan), ["TierComplete", "DrainWaiting"]);
        let drain = plan.status.tiers[1].drain.clone().expect("drain status");
        let left: Vec<(&str, u64)> = drain
            .backlog
            .iter()
            .map(|b| (b.cluster.as_str(), b.entries))
            .collect();
        assert_eq!(left, [("src", 40), ("d2", 3)], "largest first");
        assert_eq!((drain.since, drain.drained_at), (NOW, None));
        let msg = plan.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("tier dest waits for the replication backlog to drain")
                && msg.contains("src (40), d2 (3)"),
            "{msg}"
        );
        assert_eq!(
            reason(&plan),
            None,
            "waiting within the timeout is not stalled"
        );
        // Still draining a minute later: still waiting, announced once.
        scene.now = NOW.plus(Duration::from_secs(60));
        scene.set(cluster("src").ready("2.0.0").backlog(1));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        assert!(reasons(&plan).is_empty(), "{:?}", reasons(&plan));
        // Drained: the tier starts, and its log shows the wait under the tier.
        scene.now = NOW.plus(Duration::from_secs(90));
        scene.set(cluster("src").ready("2.0.0"));
        scene.set(cluster("d2").ready("1.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1", "d2"]);
        assert!(
            reasons(&plan).contains(&"TierDrained"),
            "{:?}",
            reasons(&plan)
        );
        let drain = plan.status.tiers[1].drain.clone().expect("drain status");
        assert_eq!(drain.drained_at, Some(scene.now));
        assert!(drain.backlog.is_empty());
        let log = &plan.status.log;
        let entry = log
            .iter()
            .find(|e| e.action == "drain")
            .expect("drain entry");
        assert_eq!(entry.result, LogResult::Succeeded);
        assert!(
            entry.message.contains("drained after 1m30s"),
            "{}",
            entry.message
        );
        let tier = log
            .iter()
            .find(|e| Some(e.id) == entry.parent)
            .expect("parent");
        assert_eq!(
            (tier.action.as_str(), tier.target.as_str()),
            ("tier", "dest")
        );
        // The tier's own moves make backlog: that never holds the rest of it.
        scene.set(cluster("d1").runs("2.0.0").step_in_flight().backlog(9));
        scene.set(cluster("d2").ready("2.0.0").backlog(9));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1"]);
    }

    #[test]
    fn a_drain_past_its_timeout_stalls_naming_the_backlog_and_goes_on_once_drained() {
        let mut scene = source_then_destinations(Duration::from_secs(300));
        scene.step();
        scene.set(cluster("src").ready("2.0.0").backlog(7));
        scene.step();
        scene.now = NOW.plus(Duration::from_secs(300));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        assert_eq!(reason(&plan), Some("DrainTimeout"));
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        assert_eq!(
            plan.status.message.as_deref(),
            Some(
                Stall::DrainTimeout {
                    tier: "dest".into(),
                    timeout: "5m".into(),
                    backlog: "src (7)".into(),
                }
                .message()
                .as_str()
            )
        );
        scene.now = NOW.plus(Duration::from_secs(400));
        scene.set(cluster("src").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1", "d2"]);
        assert_eq!(reason(&plan), None);
    }

    #[test]
    fn a_force_starts_a_draining_tier_once_with_a_warning() {
        let mut scene = source_then_destinations(Duration::from_secs(600));
        scene.step();
        scene.set(cluster("src").ready("2.0.0").backlog(7));
        scene.step();
        scene.intents.force = Some("t1".into());
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1", "d2"]);
        let forced = plan
            .events
            .iter()
            .find(|e| e.reason == "DrainForced")
            .expect("DrainForced");
        assert!(
            forced.warning && forced.message.contains("src (7)"),
            "{forced:?}"
        );
        assert!(plan.status.acknowledged.contains(&"force:t1".to_string()));
        // A force already given when the tier's turn comes names the backlog it overrides.
        let mut scene = source_then_destinations(Duration::from_secs(600));
        scene.step();
        scene.intents.force = Some("t2".into());
        scene.set(cluster("src").ready("2.0.0").backlog(5));
        let plan = scene.step();
        let forced = plan
            .events
            .iter()
            .find(|e| e.reason == "DrainForced")
            .expect("DrainForced");
        assert!(forced.message.ends_with("backlog on src (5)"), "{forced:?}");
    }

    #[test]
    fn no_wait_without_drain_before_on_a_backout_or_once_the_tier_moves() {
        // Without drainBefore: the backlog holds only a rollout starting from rest.
        let mut scene = mesh("2.0.0")
            .tier("source", &["src"])
            .tier("dest", &["d1"])
            .scene()
            .with(cluster("src").ready("1.0.0"))
            .with(cluster("d1").ready("1.0.0"));
        scene.step();
        scene.set(cluster("src").ready("2.0.0").backlog(7));
        assert_eq!(admitted(&scene.step()), ["d1"]);
        // A backout into a drain tier does not wait (an emergency, as for preconditions).
        let mut scene = mesh("1.0.0")
            .tier("source", &["src"])
            .tier("dest", &["d1"])
            .drain_before(Duration::from_secs(600))
            .scene()
            .with(cluster("src").ready("1.0.0").backlog(7))
            .with(cluster("d1").runs("2.0.0"));
        assert_eq!(admitted(&scene.step()), ["d1"]);
        // A tier already moving when the mesh lost its status is not held again (the
        // rollout-start precondition off, or it would hold the restarted rollout itself).
        let mut scene = mesh("2.0.0")
            .preconditions(false, true)
            .tier("source", &["src"])
            .tier("dest", &["d1", "d2"])
            .max_parallel(2)
            .drain_before(Duration::from_secs(600))
            .scene()
            .with(cluster("src").ready("2.0.0").backlog(7))
            .with(cluster("d2").ready("1.0.0"));
        scene.set(cluster("d1").members_run(&["2.0.0", "1.0.0"]));
        let plan = scene.step();
        assert!(admitted(&plan).contains(&"d1"), "{:?}", admitted(&plan));
        assert!(plan.status.tiers[1].drain.is_none());
    }
}
