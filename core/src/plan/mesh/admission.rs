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
use super::read::{Clusters, Summary};
use super::rollout::{dir_word, log_admission};

/// What admission reads: the mesh, its clusters and where the rollout goes.
pub(super) struct Turn<'x, 'a> {
    pub(super) spec: &'a MeshSpec,
    pub(super) clusters: &'x Clusters<'a>,
    pub(super) direction: Direction,
    pub(super) paused: bool,
    pub(super) now: Timestamp,
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
    } = *turn;
    let sums = &clusters.sums;
    let mut out = Admissions {
        failed: Vec::new(),
        waiting: Vec::new(),
        wake: Wake::Idle,
        blocked: None,
    };
    let active_tier = active_tier(sums, direction);
    // Keep admissions of clusters still moving in the active tier toward the same target.
    let before = std::mem::take(&mut st.admitted);
    for a in before {
        if let Some(s) = clusters.find(a.cluster.as_str())
            && !s.done
            && Some(s.tier as usize) == active_tier
        {
            // A reversal keeps the clusters part-way admitted, now in the new direction.
            st.admitted.push(Admitted {
                version: s.target.to_string(),
                direction,
                ..a
            });
        }
    }
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
                version: s.target.to_string(),
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
                    s.target,
                    tier.name
                ),
            });
        }
        if st.admitted.is_empty()
            && !paused
            && !out.waiting.is_empty()
            && out.failed.is_empty()
            && out.wake == Wake::Idle
        {
            out.blocked = Some(Stall::Blocked(out.waiting.clone()));
        }
    }
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
    out
}
