//! The mesh planner: which clusters may move now. Pure, like the cluster planner.
//!
//! The mesh never talks to members: it reads the Clusters' specs and statuses and writes the
//! list of admitted clusters, which the cluster planner obeys. Tier order, `maxParallel`,
//! stagger, compatibility rules, preconditions and the takeover-capacity check live here.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{
    Admitted, ClusterPhase, ClusterSpec, ClusterStatus, Direction, LogMode, LogResult, LogScope,
    MeshPhase, MeshSpec, MeshStatus, MeshStrategyType, RolloutStatus, TierStatus, Timestamp,
    UpgradeStrategy, condition as cond, values::cmp_versions,
};

use super::cluster::Admission;
use super::conditions::{Log, set_condition};
use super::observe::{PlanEvent, Wake};
use super::validate::{ClusterRef, FastMap, summarize, tier_membership, validate_mesh_with};

/// A cluster as the mesh planner sees it.
pub struct MeshClusterView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ClusterSpec,
    pub status: Option<&'a ClusterStatus>,
}

/// Imperative intent for a mesh.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MeshIntents {
    /// Start the rollout even though preconditions fail (token, acknowledged once).
    pub force: Option<String>,
    pub pause: bool,
}

pub struct MeshInput<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a MeshSpec,
    pub status: Option<&'a MeshStatus>,
    pub clusters: &'a [MeshClusterView<'a>],
    pub intents: &'a MeshIntents,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MeshPlan {
    pub status: MeshStatus,
    pub events: Vec<PlanEvent>,
    pub wake: Wake,
}

/// What one cluster's summary says, computed once per pass (linear in members).
struct Summary<'a> {
    name: &'a str,
    tier: usize,
    role: Option<&'a str>,
    target: &'a str,
    min_v: Option<&'a str>,
    max_v: Option<&'a str>,
    done: bool,
    failed: bool,
    /// Mixed versions or steps in flight: the cluster is part-way, whatever its admission.
    in_motion: bool,
    /// Moving this cluster takes its service down (no member can take over).
    outage: bool,
    load: u64,
    backup_peers: &'a [String],
    backlog: u64,
    conflicts: u64,
}

impl Summary<'_> {
    fn direction(&self) -> Direction {
        match self.max_v {
            Some(v) if cmp_versions(v, self.target).is_gt() => Direction::Backout,
            _ => Direction::Upgrade,
        }
    }
}

fn summarize_cluster<'a>(
    c: &'a MeshClusterView<'a>,
    tier: usize,
    mesh: &'a MeshSpec,
) -> Summary<'a> {
    let target = c.spec.version.as_deref().unwrap_or(&mesh.version);
    let mut min_v: Option<&str> = None;
    let mut max_v: Option<&str> = None;
    let mut backlog = 0;
    let mut conflicts = 0;
    if let Some(st) = c.status {
        for m in &st.members {
            if let Some(v) = m.version.as_deref() {
                if min_v.is_none_or(|x| cmp_versions(v, x).is_lt()) {
                    min_v = Some(v);
                }
                if max_v.is_none_or(|x| cmp_versions(v, x).is_gt()) {
                    max_v = Some(v);
                }
            }
            backlog += m.backlog;
            conflicts += m.conflicts;
        }
    }
    let done = c.status.is_some_and(|s| {
        s.phase == ClusterPhase::Ready
            && s.target_version
                .as_deref()
                .is_some_and(|t| cmp_versions(t, target).is_eq())
            && s.steps.is_empty()
    });
    let failed = c
        .status
        .is_some_and(|s| matches!(s.phase, ClusterPhase::Stalled | ClusterPhase::RolledBack));
    let mixed = matches!((min_v, max_v), (Some(a), Some(b)) if !cmp_versions(a, b).is_eq());
    let in_motion = !done && (mixed || c.status.is_some_and(|s| !s.steps.is_empty()));
    let regular = c.spec.members.iter().filter(|m| !m.spare).count();
    let outage = regular + c.spec.members.iter().filter(|m| m.spare).count() <= 1
        || c.spec.upgrade.strategy == UpgradeStrategy::InPlace
        || mesh.strategy.type_ == MeshStrategyType::Offline;
    Summary {
        name: c.name,
        tier,
        role: c.spec.role.as_deref(),
        target,
        min_v,
        max_v,
        done,
        failed,
        in_motion,
        outage,
        load: c.spec.load.unwrap_or(0),
        backup_peers: &c.spec.backup_peers,
        backlog,
        conflicts,
    }
}

/// The admission a cluster gets from a mesh status (what the Cluster controller reads).
pub fn admission_for(
    mesh_name: &str,
    mesh: &MeshSpec,
    status: Option<&MeshStatus>,
    cluster: &str,
) -> Admission {
    let admitted = status.is_some_and(|s| s.admitted.iter().any(|a| a.cluster == cluster));
    Admission {
        mesh_version: Some(mesh.version.clone()),
        admitted,
        offline: mesh.strategy.type_ == MeshStrategyType::Offline,
        reason: (!admitted).then(|| {
            let why = status
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "waiting for its tier".into());
            format!("mesh {mesh_name}: {why}")
        }),
        mesh: Some(mesh_name.to_string()),
    }
}

pub fn plan_mesh(input: &MeshInput<'_>) -> MeshPlan {
    plan_mesh_from(input, input.status.cloned())
}

/// `plan_mesh` for a caller that owns the last status and replaces it with the plan's anyway:
/// `last` stands for `input.status` (which is not read) and is not copied.
pub fn plan_mesh_from(input: &MeshInput<'_>, last: Option<MeshStatus>) -> MeshPlan {
    let spec = input.spec;
    let now = input.now;
    let g = input.generation;
    let mut st = last.unwrap_or_default();
    st.observed_generation = g;
    let mut events = Vec::new();
    let mut wake = Wake::Idle;
    let mut waiting: Vec<String> = Vec::new();
    let mut stalled: Option<(String, String)> = None;
    let mut preconditions_ok = true;
    let mut precondition_msg = String::new();
    let paused = spec.paused || input.intents.pause;

    let refs: Vec<ClusterRef<'_>> = input
        .clusters
        .iter()
        .map(|c| ClusterRef {
            name: c.name,
            labels: c.labels,
            spec: c.spec,
        })
        .collect();
    let membership = tier_membership(spec, &refs);
    let problems = validate_mesh_with(spec, &refs, &membership);
    let by_name: FastMap<&str, &MeshClusterView<'_>> =
        input.clusters.iter().map(|c| (c.name, c)).collect();
    let mut sums: Vec<Summary<'_>> = Vec::with_capacity(membership.len());
    for (name, &tier) in &membership {
        if let Some(c) = by_name.get(name.as_str()) {
            sums.push(summarize_cluster(c, tier, spec));
        }
    }
    // Stable order inside a tier: as listed in the tier, then by name for selected ones.
    let listed: FastMap<&str, usize> = spec
        .tiers
        .iter()
        .flat_map(|t| t.clusters.iter().enumerate().map(|(i, n)| (n.as_str(), i)))
        .collect();
    sums.sort_by_cached_key(|s| {
        (
            s.tier,
            listed.get(s.name).copied().unwrap_or(usize::MAX),
            s.name,
        )
    });

    let total = sums.len() as u32;
    let done_count = sums.iter().filter(|s| s.done).count() as u32;
    st.progress = Some(format!("{done_count}/{total}"));

    if !problems.is_empty() {
        stalled = Some(("InvalidSpec".into(), summarize(&problems)));
        st.admitted.clear();
    }

    let direction = if sums
        .iter()
        .any(|s| !s.done && s.direction() == Direction::Backout)
    {
        Direction::Backout
    } else {
        Direction::Upgrade
    };
    let all_done = done_count == total;

    let unknown: Vec<&str> = sums
        .iter()
        .filter(|s| s.max_v.is_none())
        .map(|s| s.name)
        .collect();
    let blind = !unknown.is_empty() && st.admitted.is_empty();
    if stalled.is_none() && !all_done && blind {
        // Never decide on clusters whose state is not known yet.
        waiting.push(format!(
            "waiting for the first status of {}",
            unknown.join(", ")
        ));
        wake = Wake::Busy;
    } else if stalled.is_none() && !all_done {
        // A new rollout: a new target or direction.
        let new_rollout = st.rollout.as_ref().is_none_or(|r| {
            !cmp_versions(&r.version, &spec.version).is_eq() || r.direction != direction
        });
        if new_rollout {
            let forced = input
                .intents
                .force
                .as_ref()
                .filter(|t| !st.acknowledged.contains(&format!("force:{t}")));
            let moving = !st.admitted.is_empty();
            // Preconditions guard the start of a rollout from rest; a backout in the middle of a
            // rollout is an emergency and is not held back by a replication backlog.
            let check = !moving && direction == Direction::Upgrade;
            let failures = if check {
                precondition_failures(spec, &sums)
            } else {
                Vec::new()
            };
            if !failures.is_empty() && forced.is_none() {
                preconditions_ok = false;
                precondition_msg = failures.join("; ");
                stalled = Some((
                    "PreconditionFailed".into(),
                    format!(
                        "rollout to {} not started: {precondition_msg}",
                        spec.version
                    ),
                ));
                st.admitted.clear();
            } else {
                if let Some(t) = forced
                    && !failures.is_empty()
                {
                    let token = format!("force:{t}");
                    st.acknowledged.push(token);
                    events.push(PlanEvent {
                        warning: true,
                        reason: "PreconditionForced".into(),
                        message: format!("rollout forced despite: {}", failures.join("; ")),
                    });
                }
                let mut log = Log {
                    entries: &mut st.log,
                    next_id: &mut st.next_log_id,
                };
                if let Some(prev) = st.rollout.as_ref() {
                    log.close(
                        prev.log_id,
                        LogResult::Cancelled,
                        format!("superseded by {} {}", dir_word(direction), spec.version),
                        now,
                    );
                }
                let id = log.open(
                    None,
                    dir_word(direction),
                    LogScope::Mesh,
                    input.name,
                    Some(&spec.version),
                    if forced.is_some() {
                        LogMode::Manual
                    } else {
                        LogMode::Automatic
                    },
                    format!(
                        "{} {total} clusters to {}",
                        dir_word(direction),
                        spec.version
                    ),
                    now,
                );
                st.rollout = Some(RolloutStatus {
                    version: spec.version.clone(),
                    direction,
                    started_at: now,
                    log_id: id,
                });
                events.push(PlanEvent {
                    warning: false,
                    reason: "RolloutStarted".into(),
                    message: format!("{} to {}", dir_word(direction), spec.version),
                });
            }
        }
    }
    if all_done && stalled.is_none() {
        if let Some(r) = &st.rollout
            && st
                .log
                .iter()
                .any(|e| e.id == r.log_id && e.result == LogResult::Running)
        {
            let id = r.log_id;
            let mut log = Log {
                entries: &mut st.log,
                next_id: &mut st.next_log_id,
            };
            log.close(
                id,
                LogResult::Succeeded,
                format!("all {total} clusters run {}", spec.version),
                now,
            );
            events.push(PlanEvent {
                warning: false,
                reason: "RolloutComplete".into(),
                message: format!("all clusters run {}", spec.version),
            });
        }
        st.admitted.clear();
    }

    // Tier statuses.
    let mut tiers: Vec<TierStatus> = spec
        .tiers
        .iter()
        .map(|t| {
            let prev = st.tiers.iter().find(|x| x.name == t.name);
            TierStatus {
                name: t.name.clone(),
                done: 0,
                total: 0,
                moving: vec![],
                last_start_at: prev.and_then(|p| p.last_start_at),
            }
        })
        .collect();
    for s in &sums {
        if let Some(t) = tiers.get_mut(s.tier) {
            t.total += 1;
            if s.done {
                t.done += 1;
            }
        }
    }

    let mut failed: Vec<String> = Vec::new();
    if stalled.is_none() && !all_done && !blind {
        let active_tier = match direction {
            Direction::Upgrade => sums.iter().filter(|s| !s.done).map(|s| s.tier).min(),
            Direction::Backout => sums.iter().filter(|s| !s.done).map(|s| s.tier).max(),
        };
        let by: FastMap<&str, &Summary<'_>> = sums.iter().map(|s| (s.name, s)).collect();
        // Keep admissions of clusters still moving in the active tier toward the same target.
        let before = std::mem::take(&mut st.admitted);
        for a in before {
            if let Some(s) = by.get(a.cluster.as_str())
                && !s.done
                && Some(s.tier) == active_tier
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
            let role_versions = RoleVersions::of(&sums);
            // Part-way clusters occupy a slot even when not admitted (after a reversal, or a
            // restart that lost the mesh status), and they are admitted first.
            let mut moving = st.admitted.len() as u32
                + sums
                    .iter()
                    .filter(|s| {
                        s.tier == ti
                            && s.in_motion
                            && !st.admitted.iter().any(|a| a.cluster == s.name)
                    })
                    .count() as u32;
            let mut candidates: Vec<&Summary<'_>> =
                sums.iter().filter(|s| s.tier == ti && !s.done).collect();
            candidates.sort_by_key(|s| !s.in_motion);
            for s in sums.iter().filter(|s| s.tier == ti && s.failed && !s.done) {
                failed.push(s.name.to_string());
            }
            if paused {
                waiting.push("paused: no new cluster is admitted".into());
            }
            for s in candidates {
                if st.admitted.iter().any(|a| a.cluster == s.name) {
                    continue;
                }
                // A part-way cluster already holds its slot; a new one needs a free one.
                if paused || (!s.in_motion && moving >= tier.max_parallel) {
                    break;
                }
                if let Some(last) = tiers[ti].last_start_at
                    && tier.stagger.millis() > 0
                    && now < last.plus(tier.stagger)
                {
                    let at = last.plus(tier.stagger);
                    wake = wake.min(Wake::At(at));
                    waiting.push(format!(
                        "tier {}: next start at {at} (stagger {})",
                        tier.name, tier.stagger
                    ));
                    break;
                }
                if let Some(why) = role_versions.incompatible(spec, s, direction) {
                    waiting.push(format!("{}: {why}", s.name));
                    continue;
                }
                if let Some(why) = capacity_refusal(spec, &sums, &st.admitted, s) {
                    waiting.push(format!("{}: {why}", s.name));
                    continue;
                }
                st.admitted.push(Admitted {
                    cluster: s.name.to_string(),
                    version: s.target.to_string(),
                    direction,
                    since: now,
                });
                if !s.in_motion {
                    moving += 1;
                }
                tiers[ti].last_start_at = Some(now);
                let parent = st.rollout.as_ref().map(|r| r.log_id);
                let mut log = Log {
                    entries: &mut st.log,
                    next_id: &mut st.next_log_id,
                };
                let id = log.open(
                    parent,
                    "admit",
                    LogScope::Cluster,
                    s.name,
                    Some(s.target),
                    LogMode::Automatic,
                    format!(
                        "tier {} ({}/{} moving)",
                        tier.name, moving, tier.max_parallel
                    ),
                    now,
                );
                log.close(id, LogResult::Succeeded, "", now);
                events.push(PlanEvent {
                    warning: false,
                    reason: "ClusterAdmitted".into(),
                    message: format!(
                        "{} may {} to {} (tier {})",
                        s.name,
                        dir_word(direction),
                        s.target,
                        tier.name
                    ),
                });
            }
            if st.admitted.is_empty()
                && !paused
                && !waiting.is_empty()
                && failed.is_empty()
                && wake == Wake::Idle
            {
                // Nothing moves, nothing will: a rule or the capacity check blocks the tier.
                stalled = Some(("Blocked".into(), waiting.join("; ")));
            }
        }
        for t in &mut tiers {
            t.moving = st
                .admitted
                .iter()
                .filter(|a| {
                    membership
                        .get(&a.cluster)
                        .is_some_and(|&i| spec.tiers[i].name == t.name)
                })
                .map(|a| a.cluster.clone())
                .collect();
        }
    }
    st.tiers = tiers;

    // Conditions and phase.
    let mut versions: BTreeSet<&str> = BTreeSet::new();
    for s in &sums {
        if let Some(v) = s.min_v {
            versions.insert(v);
        }
        if let Some(v) = s.max_v {
            versions.insert(v);
        }
    }
    let degraded = !failed.is_empty();
    let ready = all_done && stalled.is_none();
    let phase = if stalled.is_some() {
        MeshPhase::Stalled
    } else if ready {
        MeshPhase::Ready
    } else if paused {
        MeshPhase::Paused
    } else if degraded {
        MeshPhase::Degraded
    } else if !st.admitted.is_empty() {
        MeshPhase::Progressing
    } else {
        MeshPhase::Waiting
    };
    st.phase = phase;
    st.message = if let Some((_, m)) = &stalled {
        Some(m.clone())
    } else if degraded {
        Some(format!(
            "clusters failed and hold their slots: {}",
            failed.join(", ")
        ))
    } else if ready {
        None
    } else if !st.admitted.is_empty() {
        Some(format!(
            "moving: {}",
            st.admitted
                .iter()
                .map(|a| a.cluster.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        waiting.first().cloned()
    };
    let conds = &mut st.conditions;
    match &stalled {
        Some((r, m)) => set_condition(conds, cond::STALLED, true, r, m.clone(), g, now),
        None => set_condition(conds, cond::STALLED, false, "Progressing", "", g, now),
    }
    set_condition(
        conds,
        cond::READY,
        ready,
        if ready { "Converged" } else { "NotConverged" },
        if ready {
            format!("all {total} clusters run their target")
        } else {
            String::new()
        },
        g,
        now,
    );
    let reconciling = !ready && stalled.is_none() && !paused;
    set_condition(
        conds,
        cond::RECONCILING,
        reconciling,
        if reconciling {
            "RolloutInProgress"
        } else {
            "Idle"
        },
        if reconciling {
            st.message.clone().unwrap_or_default()
        } else {
            String::new()
        },
        g,
        now,
    );
    set_condition(
        conds,
        cond::DEGRADED,
        degraded,
        if degraded {
            "ClustersFailed"
        } else {
            "AsExpected"
        },
        if degraded {
            failed.join(", ")
        } else {
            String::new()
        },
        g,
        now,
    );
    let mixed = versions.len() > 1;
    set_condition(
        conds,
        cond::MIXED_VERSION,
        mixed,
        if mixed {
            "MixedVersion"
        } else {
            "SingleVersion"
        },
        if mixed {
            versions.iter().copied().collect::<Vec<_>>().join(",")
        } else {
            String::new()
        },
        g,
        now,
    );
    set_condition(
        conds,
        cond::PAUSED,
        paused,
        if paused { "Paused" } else { "NotPaused" },
        "",
        g,
        now,
    );
    set_condition(
        conds,
        cond::PRECONDITIONS,
        preconditions_ok,
        if preconditions_ok {
            "Satisfied"
        } else {
            "PreconditionFailed"
        },
        precondition_msg,
        g,
        now,
    );
    if !st.admitted.is_empty() {
        wake = Wake::Busy;
    }
    MeshPlan {
        status: st,
        events,
        wake,
    }
}

fn dir_word(d: Direction) -> &'static str {
    match d {
        Direction::Upgrade => "upgrade",
        Direction::Backout => "backout",
    }
}

fn precondition_failures(spec: &MeshSpec, sums: &[Summary<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    if spec.preconditions.no_backlog {
        let b: Vec<String> = sums
            .iter()
            .filter(|s| s.backlog > 0)
            .map(|s| format!("{} ({})", s.name, s.backlog))
            .collect();
        if !b.is_empty() {
            out.push(format!("replication backlog on {}", b.join(", ")));
        }
    }
    if spec.preconditions.no_conflicts {
        let c: Vec<String> = sums
            .iter()
            .filter(|s| s.conflicts > 0)
            .map(|s| format!("{} ({})", s.name, s.conflicts))
            .collect();
        if !c.is_empty() {
            out.push(format!("replication conflicts on {}", c.join(", ")));
        }
    }
    out
}

/// Lowest and highest version running per role, for compatibility rules.
struct RoleVersions<'a> {
    min: BTreeMap<&'a str, Option<&'a str>>,
    max: BTreeMap<&'a str, Option<&'a str>>,
}

impl<'a> RoleVersions<'a> {
    fn of(sums: &'a [Summary<'a>]) -> Self {
        let mut min: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut max: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for s in sums {
            let Some(r) = s.role else { continue };
            // A cluster without observed versions makes the role's bound unknown (None).
            let e = min.entry(r).or_insert(s.min_v);
            *e = match (*e, s.min_v) {
                (Some(a), Some(b)) => Some(if cmp_versions(b, a).is_lt() { b } else { a }),
                _ => None,
            };
            let e = max.entry(r).or_insert(s.max_v);
            *e = match (*e, s.max_v) {
                (Some(a), Some(b)) => Some(if cmp_versions(b, a).is_gt() { b } else { a }),
                _ => None,
            };
        }
        RoleVersions { min, max }
    }

    /// Why moving `s` to its target would break a rule, if it would.
    fn incompatible(
        &self,
        spec: &MeshSpec,
        s: &Summary<'_>,
        direction: Direction,
    ) -> Option<String> {
        let role = s.role?;
        for r in &spec.compatibility {
            match direction {
                Direction::Upgrade if r.role == role => {
                    // Every `notNewerThan` cluster must already run at least the target.
                    if let Some(bound) = self.min.get(r.not_newer_than.as_str()) {
                        match bound {
                            Some(v) if !cmp_versions(v, s.target).is_lt() => {}
                            Some(v) => {
                                return Some(format!(
                                    "{} clusters may not run a newer version than {} clusters, which still run {v}",
                                    r.role, r.not_newer_than
                                ));
                            }
                            None => {
                                return Some(format!(
                                    "versions of {} clusters are not known yet",
                                    r.not_newer_than
                                ));
                            }
                        }
                    }
                }
                Direction::Backout if r.not_newer_than == role => {
                    // No `role` cluster may still run something newer than the backout target.
                    if let Some(bound) = self.max.get(r.role.as_str()) {
                        match bound {
                            Some(v) if !cmp_versions(v, s.target).is_gt() => {}
                            Some(v) => {
                                return Some(format!(
                                    "{} clusters still run {v}, newer than {}; they back out first",
                                    r.role, s.target
                                ));
                            }
                            None => {
                                return Some(format!(
                                    "versions of {} clusters are not known yet",
                                    r.role
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Rolling meshes: refuse to take `cand` down when a peer would carry more than the allowed
/// multiple of its own load (the 10,000-agent core whose two 500-agent peers jump to 11x).
fn capacity_refusal(
    spec: &MeshSpec,
    sums: &[Summary<'_>],
    admitted: &[Admitted],
    cand: &Summary<'_>,
) -> Option<String> {
    let limit = spec.strategy.max_takeover_load_factor?;
    if spec.strategy.type_ != MeshStrategyType::Rolling || !cand.outage {
        return None;
    }
    let by: FastMap<&str, &Summary<'_>> = sums.iter().map(|s| (s.name, s)).collect();
    let mut down: Vec<&Summary<'_>> = admitted
        .iter()
        .filter_map(|a| by.get(a.cluster.as_str()).copied())
        .filter(|s| s.outage && !s.done)
        .collect();
    down.push(cand);
    let down_names: BTreeSet<&str> = down.iter().map(|s| s.name).collect();
    let mut extra: BTreeMap<&str, f64> = BTreeMap::new();
    for d in &down {
        if d.load == 0 {
            continue;
        }
        let peers: Vec<&str> = if d.backup_peers.is_empty() {
            sums.iter()
                .map(|s| s.name)
                .filter(|n| !down_names.contains(n))
                .collect()
        } else {
            d.backup_peers
                .iter()
                .map(String::as_str)
                .filter(|n| !down_names.contains(n) && by.contains_key(n))
                .collect()
        };
        if peers.is_empty() {
            return Some(format!("no peer is up to take over the load of {}", d.name));
        }
        let share = d.load as f64 / peers.len() as f64;
        for p in peers {
            *extra.entry(p).or_default() += share;
        }
    }
    let mut worst: Option<(&str, f64)> = None;
    for (p, e) in extra {
        let own = by.get(p).map(|s| s.load).unwrap_or(0) as f64;
        let factor = if own == 0.0 {
            f64::INFINITY
        } else {
            (own + e) / own
        };
        if worst.is_none_or(|(_, w)| factor > w) {
            worst = Some((p, factor));
        }
    }
    match worst {
        Some((p, f)) if f > limit => Some(format!(
            "taking {} down would put {p} at {f:.1}x its own load (maxTakeoverLoadFactor {limit})",
            cand.name
        )),
        _ => None,
    }
}
