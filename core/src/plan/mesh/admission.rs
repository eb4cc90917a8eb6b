//! Admission: which clusters of the active tier may move now.
//!
//! Owns: the active tier (tiers strictly in order, reversed for a backout), admissions kept
//! across passes, `maxParallel` (part-way clusters hold a slot; a failed cluster keeps its
//! slot, so the failure budget is the parallelism), `stagger` and the wake at the next slot,
//! and `Stalled/Blocked` when nothing moves and nothing will. May use: `read`, `compat`,
//! `capacity`, `rollout` (admission log entries), `plan::stall`.

use crate::api::{Admitted, Direction, MeshSpec, MeshStatus, TierStatus, Timestamp};
use crate::plan::observe::{PlanEvent, Wake};
use crate::plan::stall::Stall;

use super::capacity::capacity_refusal;
use super::compat::RoleVersions;
use super::deferred::{self, Trigger};
use super::drain::{self, Drain};
use super::read::{Clusters, Summary};
use super::rollout::{dir_word, log_admission};

/// What admission reads: the mesh, its clusters and where the rollout goes.
pub(super) struct Turn<'x, 'a> {
    pub(super) spec: &'a MeshSpec,
    pub(super) clusters: &'x Clusters<'a>,
    pub(super) direction: Direction,
    pub(super) paused: bool,
    pub(super) now: Timestamp,
    /// The force intent's token (acknowledged or not: the gates that honour it check).
    pub(super) force: Option<&'x str>,
    /// Tiers at or past this position in the rollout's order wait for a once-per-mesh task
    /// (see `tasks`).
    pub(super) held_by_tasks: Option<usize>,
    /// The mesh's name (a deferred tier's approval carries it) and the approvals given.
    pub(super) mesh: &'x str,
    pub(super) approve: &'x [String],
}

/// What admission found besides the admissions (written to `status.admitted`).
#[derive(Debug, PartialEq)]
pub(super) struct Admissions {
    /// Failed clusters of the active tier (holding their slots).
    pub(super) failed: Vec<String>,
    /// What the clusters that were not admitted wait for.
    pub(super) waiting: Vec<String>,
    /// The next stagger slot, if one is waited for.
    pub(super) wake: Wake,
    /// Nothing moves and nothing will: a rule or the capacity check blocks the tier.
    pub(super) blocked: Option<Stall>,
    /// The tier's wait for the replication backlog to drain ran past its timeout.
    pub(super) timed_out: Option<Stall>,
    /// The active tier is deferred and waits for its trigger (a human or a clock: not a
    /// blocked mesh).
    pub(super) deferred: bool,
}

/// The tier that moves: the first with an unfinished cluster, the last for a backout.
pub(super) fn active_tier(sums: &[Summary<'_>], direction: Direction) -> Option<usize> {
    let unfinished = sums.iter().filter(|s| !s.done).map(|s| s.tier);
    match direction {
        Direction::Upgrade => unfinished.min(),
        Direction::Backout => unfinished.max(),
    }
    .map(|t| t as usize)
}

/// Admit what may move now into `st.admitted`, record each admission in the log and in
/// `tiers` (last start, moving clusters).
pub(super) fn admit(
    turn: &Turn<'_, '_>,
    st: &mut MeshStatus,
    tiers: &mut [TierStatus],
    events: &mut Vec<PlanEvent>,
) -> Admissions {
    let Turn {
        spec,
        clusters,
        direction,
        paused,
        now,
        ..
    } = *turn;
    let sums = &clusters.sums;
    let mut out = Admissions {
        failed: Vec::new(),
        waiting: Vec::new(),
        wake: Wake::Idle,
        blocked: None,
        timed_out: None,
        deferred: false,
    };
    let active_tier = active_tier(sums, direction);
    keep_admissions(spec, clusters, st, active_tier, direction);
    if let Some(ti) = active_tier {
        let tier = &spec.tiers[ti];
        let role_versions = RoleVersions::of(spec, sums, &clusters.index, &clusters.versions);
        // Part-way clusters occupy a slot even when not admitted (after a reversal, or a
        // restart that lost the mesh status), and they are admitted first.
        let mut moving = st.admitted.len() as u32
            + sums
                .iter()
                .filter(|s| {
                    s.tier as usize == ti
                        && s.in_motion
                        && !st.admitted.iter().any(|a| a.cluster == s.name())
                })
                .count() as u32;
        let mut candidates: Vec<&Summary<'_>> = sums
            .iter()
            .filter(|s| s.tier as usize == ti && !s.done)
            .collect();
        candidates.sort_by_key(|s| !s.in_motion);
        for s in sums
            .iter()
            .filter(|s| s.tier as usize == ti && s.failed && !s.done)
        {
            out.failed.push(s.name().to_string());
        }
        if paused {
            out.waiting
                .push("paused: no new cluster is admitted".into());
        }
        let held = turn
            .held_by_tasks
            .is_some_and(|h| super::tasks::position(ti, spec.tiers.len(), direction) >= h);
        let trigger_pass = deferred::Pass {
            mesh: turn.mesh,
            spec,
            direction,
            now,
            approve: turn.approve,
            reconcile: st.rollout.as_ref().is_some_and(|r| r.reconcile),
        };
        // A deferred tier's trigger comes before its drain: the drain's timeout counts from
        // when the tier may start.
        let trigger = if paused || held {
            Trigger::Open
        } else {
            deferred::gate(&trigger_pass, st, tiers, ti, events)
        };
        let drain = if paused {
            Drain::Open
        } else if held {
            // The task says what is waited for; the drain is looked at once it succeeded.
            out.wake = Wake::Busy;
            Drain::Waiting(format!("tier {} waits for the tasks before it", tier.name))
        } else if let Trigger::Waiting(why, wake) = &trigger {
            // Only clusters part-way go on: a cluster started finishes.
            out.waiting.push(why.clone());
            out.wake = out.wake.min(*wake);
            out.deferred = true;
            Drain::Open
        } else {
            let pass = drain::Pass {
                spec,
                sums,
                direction,
                now,
                force: turn.force,
            };
            drain::gate(&pass, st, tiers, ti, events)
        };
        // A cluster whose health got worse stops its tier: no new cluster goes the same way.
        let regressed: Vec<&str> = sums
            .iter()
            .filter(|s| s.tier as usize == ti && s.health_failed)
            .map(|s| s.name())
            .collect();
        if !regressed.is_empty() {
            out.waiting.push(format!(
                "tier {} stopped: the health of {} got worse after the upgrade (see its status; \
                 a retry of the cluster accepts it)",
                tier.name,
                regressed.join(", ")
            ));
        }
        let candidates = match drain {
            Drain::Open if out.deferred || !regressed.is_empty() => {
                candidates.into_iter().filter(|s| s.in_motion).collect()
            }
            Drain::Open => candidates,
            Drain::Waiting(why) => {
                out.waiting.push(why);
                out.wake = Wake::Busy;
                Vec::new()
            }
            Drain::TimedOut(stall) => {
                out.wake = Wake::Busy;
                out.timed_out = Some(stall);
                Vec::new()
            }
        };
        for s in candidates {
            if st.admitted.iter().any(|a| a.cluster == s.name()) {
                continue;
            }
            // A part-way cluster already holds its slot; a new one needs a free one.
            if paused || (!s.in_motion && moving >= tier.max_parallel) {
                break;
            }
            // Only admissions of this rollout count: a stagger never carries over from
            // an earlier rollout (it delayed the first admission of the next one).
            let this_rollout = st.rollout.as_ref().map(|r| r.started_at);
            if let Some(last) = tiers[ti].last_start_at
                && this_rollout.is_some_and(|start| last >= start)
                && tier.stagger.millis() > 0
                && now < last.plus(tier.stagger)
            {
                let at = last.plus(tier.stagger);
                out.wake = out.wake.min(Wake::At(at));
                out.waiting.push(format!(
                    "tier {}: next start at {at} (stagger {})",
                    tier.name, tier.stagger
                ));
                break;
            }
            let why = role_versions
                .incompatible(spec, s, direction, &clusters.index.roles)
                .or_else(|| capacity_refusal(spec, clusters, &st.admitted, s));
            if let Some(why) = why {
                out.waiting.push(format!("{}: {why}", s.name()));
                continue;
            }
            st.admitted.push(Admitted {
                cluster: s.name().to_string(),
                version: s.target(spec).to_string(),
                direction,
                since: now,
            });
            if !s.in_motion {
                moving += 1;
            }
            tiers[ti].last_start_at = Some(now);
            log_admission(st, spec, tier, s, direction, moving, now);
            events.push(PlanEvent {
                warning: false,
                reason: "ClusterAdmitted".into(),
                message: format!(
                    "{} may {} to {} (tier {})",
                    s.name(),
                    dir_word(direction),
                    s.target(spec),
                    tier.name
                ),
            });
        }
        if st.admitted.is_empty()
            && !paused
            && !out.waiting.is_empty()
            && out.failed.is_empty()
            && out.wake == Wake::Idle
            && !out.deferred
        {
            out.blocked = Some(Stall::Blocked(out.waiting.clone()));
        }
    }
    list_moving(spec, clusters, st, tiers);
    out
}

/// Keep admissions of clusters still moving in the active tier toward the same target.
fn keep_admissions(
    spec: &MeshSpec,
    clusters: &Clusters<'_>,
    st: &mut MeshStatus,
    active_tier: Option<usize>,
    direction: Direction,
) {
    let before = std::mem::take(&mut st.admitted);
    for a in before {
        if let Some(s) = clusters.find(a.cluster.as_str())
            && !s.done
            && Some(s.tier as usize) == active_tier
        {
            // A reversal keeps the clusters part-way admitted, now in the new direction.
            st.admitted.push(Admitted {
                version: s.target(spec).to_string(),
                direction,
                ..a
            });
        }
    }
}

/// Each tier's `moving`: its admitted clusters.
fn list_moving(
    spec: &MeshSpec,
    clusters: &Clusters<'_>,
    st: &MeshStatus,
    tiers: &mut [TierStatus],
) {
    for t in tiers.iter_mut() {
        t.moving = st
            .admitted
            .iter()
            .filter(|a| {
                clusters
                    .index
                    .tier_of(&a.cluster)
                    .is_some_and(|i| spec.tiers[i].name == t.name)
            })
            .map(|a| a.cluster.clone())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::values::Duration;
    use crate::api::{Admitted, RolloutStatus};
    use crate::fixtures::mesh::{NOW, Scene, cluster, mesh};
    use crate::plan::mesh::{read, rollout};

    /// One admission pass over `scene` from `st`: what it returns, and `st` after it.
    fn admit_in(
        scene: &Scene,
        direction: Direction,
        mut st: MeshStatus,
    ) -> (Admissions, MeshStatus, Vec<TierStatus>) {
        scene.with_input(|input| {
            let clusters = read::read(input);
            let mut tiers = rollout::tier_statuses(input.mesh.spec, &st.tiers, &clusters.sums);
            let turn = Turn {
                spec: input.mesh.spec,
                clusters: &clusters,
                direction,
                paused: input.mesh.spec.paused,
                now: input.now,
                force: None,
                held_by_tasks: None,
                mesh: "mesh",
                approve: &[],
            };
            let out = admit(&turn, &mut st, &mut tiers, &mut Vec::new());
            (out, st, tiers)
        })
    }

    fn admitted(st: &MeshStatus) -> Vec<&str> {
        st.admitted.iter().map(|a| a.cluster.as_str()).collect()
    }

    fn two_tiers() -> Scene {
        Scene::new(
            mesh("2.0.0")
                .tier("first", &["a"])
                .tier("second", &["b"])
                .build(),
        )
    }

    #[test]
    fn tiers_move_strictly_in_order_and_in_reverse_for_a_backout() {
        let scene = two_tiers()
            .with(cluster("a").runs("1.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let (_, st, _) = admit_in(&scene, Direction::Upgrade, MeshStatus::default());
        assert_eq!(admitted(&st), ["a"], "the first tier first");
        let (_, st, _) = admit_in(&scene, Direction::Backout, MeshStatus::default());
        assert_eq!(admitted(&st), ["b"], "a backout starts from the last tier");
        // The second tier waits until every cluster of the first is done.
        let scene = two_tiers()
            .with(cluster("a").ready("2.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let (_, st, _) = admit_in(&scene, Direction::Upgrade, MeshStatus::default());
        assert_eq!(admitted(&st), ["b"]);
    }

    #[test]
    fn at_most_max_parallel_clusters_are_admitted_and_part_way_ones_first() {
        let spec = mesh("2.0.0")
            .tier("t", &["a", "b", "c", "d"])
            .max_parallel(2)
            .build();
        let scene = Scene::new(spec.clone())
            .with(cluster("a").runs("1.0.0"))
            .with(cluster("b").runs("1.0.0"))
            .with(cluster("c").runs("1.0.0"))
            .with(cluster("d").members_run(&["2.0.0", "1.0.0"]));
        let (_, st, tiers) = admit_in(&scene, Direction::Upgrade, MeshStatus::default());
        assert_eq!(
            admitted(&st),
            ["d", "a"],
            "the part-way cluster, then one more"
        );
        assert_eq!(tiers[0].moving, ["d", "a"]);
        // A second pass keeps them and admits nobody else.
        let (_, st, _) = admit_in(&scene, Direction::Upgrade, st);
        assert_eq!(admitted(&st), ["d", "a"]);
    }

    #[test]
    fn a_cluster_whose_health_got_worse_stops_its_tier() {
        let scene = mesh("2.0.0")
            .tier("t", &["a", "b", "c", "d"])
            .max_parallel(3)
            .scene()
            .with(cluster("a").ready("2.0.0").health_worse("2.0.0"))
            .with(cluster("b").members_run(&["2.0.0", "1.0.0"]))
            .with(cluster("c").runs("1.0.0"))
            .with(cluster("d").runs("1.0.0"));
        let (out, st, _) = admit_in(&scene, Direction::Upgrade, MeshStatus::default());
        // The part-way cluster finishes; nobody new starts, though slots are free.
        assert_eq!(admitted(&st), ["b"]);
        let why = out.waiting.join("; ");
        assert!(
            why.contains("tier t stopped: the health of a got worse"),
            "{why}"
        );
        // Accepted (a retry of the cluster): the tier goes on.
        let accepted = mesh("2.0.0")
            .tier("t", &["a", "b", "c", "d"])
            .max_parallel(3)
            .scene()
            .with(cluster("a").ready("2.0.0"))
            .with(cluster("b").members_run(&["2.0.0", "1.0.0"]))
            .with(cluster("c").runs("1.0.0"))
            .with(cluster("d").runs("1.0.0"));
        let (_, st, _) = admit_in(&accepted, Direction::Upgrade, MeshStatus::default());
        assert_eq!(admitted(&st), ["b", "c", "d"]);
        // Backing out (the remedy) is not held by the upgrade's worse health.
        let backout = mesh("1.0.0")
            .tier("t", &["a", "b", "c", "d"])
            .max_parallel(3)
            .scene()
            .with(
                cluster("a")
                    .ready("2.0.0")
                    .health_worse("2.0.0")
                    .last_target("1.0.0"),
            )
            .with(cluster("b").runs("2.0.0"))
            .with(cluster("c").runs("2.0.0"))
            .with(cluster("d").runs("1.0.0"));
        let (out, st, _) = admit_in(&backout, Direction::Backout, MeshStatus::default());
        assert!(
            !out.waiting.join("; ").contains("stopped"),
            "{:?}",
            out.waiting
        );
        assert_eq!(admitted(&st), ["a", "b", "c"], "a itself backs out too");
    }

    #[test]
    fn stagger_spaces_admissions_and_wakes_at_the_next_slot() {
        let scene = mesh("2.0.0")
            .tier("t", &["a", "b"])
            .max_parallel(2)
            .stagger(Duration::from_secs(60))
            .scene()
            .with(cluster("a").runs("1.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let started = NOW.plus(Duration(0));
        let st = MeshStatus {
            rollout: Some(RolloutStatus {
                version: "2.0.0".into(),
                direction: Direction::Upgrade,
                started_at: started,
                log_id: 0,
                reconcile: false,
            }),
            ..Default::default()
        };
        let (out, st, tiers) = admit_in(&scene, Direction::Upgrade, st);
        assert_eq!(admitted(&st), ["a"], "one start, then the stagger");
        let next = NOW.plus(Duration::from_secs(60));
        assert_eq!(out.wake, Wake::At(next));
        assert!(
            out.waiting[0].contains("next start at"),
            "{:?}",
            out.waiting
        );
        assert_eq!(tiers[0].last_start_at, Some(NOW));
        assert_eq!(out.blocked, None, "a stagger is not a stall");
        let st = MeshStatus { tiers, ..st };
        let (out, after, _) = admit_in(&scene.clone().at(next), Direction::Upgrade, st.clone());
        assert_eq!(admitted(&after), ["a", "b"], "the next slot");
        assert_eq!(out.wake, Wake::Idle);
        // A start of an earlier rollout does not delay this one's first admission.
        let mut earlier = st;
        earlier.admitted.clear();
        earlier.rollout.as_mut().unwrap().started_at = NOW.plus(Duration(1));
        let (_, after, _) = admit_in(&scene, Direction::Upgrade, earlier);
        assert_eq!(admitted(&after), ["a", "b"]);
    }

    #[test]
    fn a_failed_cluster_keeps_its_slot() {
        let failed = |c| cluster(c).runs("1.0.0").stalled();
        let mut scene =
            mesh("2.0.0").one_tier([failed("a"), failed("b"), cluster("c").runs("1.0.0")]);
        scene.mesh.spec.tiers[0].max_parallel = 2;
        let earlier = Timestamp(NOW.0 - 3_600_000);
        let st = MeshStatus {
            admitted: ["a", "b"]
                .map(|c| Admitted {
                    cluster: c.into(),
                    version: "2.0.0".into(),
                    direction: Direction::Upgrade,
                    since: earlier,
                })
                .into(),
            ..Default::default()
        };
        let (out, st, _) = admit_in(&scene, Direction::Upgrade, st);
        assert_eq!(admitted(&st), ["a", "b"], "c waits: the budget is spent");
        assert!(
            st.admitted.iter().all(|a| a.since == earlier),
            "kept, not admitted again"
        );
        assert_eq!(out.failed, ["a", "b"]);
        assert_eq!(
            out.blocked, None,
            "failed clusters are Degraded, not Blocked"
        );
    }

    #[test]
    fn a_tier_that_nothing_can_move_is_blocked() {
        let scene = mesh("2.0.0")
            .tier("peers", &["p1", "p2"])
            .tier("core", &["core"])
            .max_takeover_load_factor(3.0)
            .scene()
            .with(cluster("p1").load(500).ready("2.0.0"))
            .with(cluster("p2").load(500).ready("2.0.0"))
            .with(cluster("core").members(1).load(10_000).runs("1.0.0"));
        let (out, st, _) = admit_in(&scene, Direction::Upgrade, MeshStatus::default());
        assert!(st.admitted.is_empty());
        let Some(Stall::Blocked(why)) = out.blocked else {
            panic!("{:?}", out.blocked)
        };
        assert!(why[0].starts_with("core: taking core down"), "{why:?}");
    }
}
