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
use super::conditions::{Kstatus, Log, announce_stall, set_condition, set_flag, set_kstatus};
use super::observe::{PlanEvent, Wake};
use super::stall::Stall;
use super::validate::{ClusterRef, FastMap, MeshIndex, Roles, same_str, validate_mesh_indexed};

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
    /// Clusters of the namespace that exist but are not this mesh's to plan: unreadable ones
    /// (which the mesh may claim: it cannot know their version) and ones another mesh owns.
    pub outside: &'a [OutsideCluster<'a>],
    pub intents: &'a MeshIntents,
    pub now: Timestamp,
}

/// A cluster of the mesh's namespace that the mesh sees but does not plan.
#[derive(Clone, Copy, Debug)]
pub struct OutsideCluster<'a> {
    pub name: &'a str,
    /// Labels from its metadata (readable even when the spec is not).
    pub labels: &'a BTreeMap<String, String>,
    pub why: Outside<'a>,
}

/// Why a cluster is outside the mesh's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside<'a> {
    /// Its object does not deserialize (the error says why): its version is unknown.
    Unreadable { error: &'a str },
    /// Another mesh, first by name, claims it.
    OwnedBy { mesh: &'a str },
}

impl OutsideCluster<'_> {
    /// The mesh names it in a tier or selects it by its labels.
    fn claimed_by(&self, spec: &MeshSpec) -> bool {
        spec.tiers.iter().any(|t| {
            t.clusters.iter().any(|c| c == self.name)
                || t.selector.as_ref().is_some_and(|s| s.matches(self.labels))
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MeshPlan {
    pub status: MeshStatus,
    pub events: Vec<PlanEvent>,
    pub wake: Wake,
}

/// What one cluster's summary says, computed once per pass (linear in members). Kept small:
/// on a large mesh the memory a decision touches is most of its cost.
#[derive(Clone, Copy)]
struct Summary<'a> {
    /// The cluster: its name, and what only the capacity check and the preconditions read
    /// (left out of the sweep over every cluster).
    view: &'a MeshClusterView<'a>,
    target: &'a str,
    /// Position in the input's cluster list.
    pos: u32,
    tier: u32,
    /// The role's number in the index (`NONE`: no role).
    role: u32,
    /// Lowest and highest version id the members run (the first of equals), and their ranks
    /// (`NONE`: no member version known).
    lo: u32,
    hi: u32,
    lo_rank: u32,
    hi_rank: u32,
    /// Until ranked: the member version ids in `Reader::member_ids`, the target's id, and the
    /// version id the status says Ready for (with no step in flight).
    members: (u32, u32),
    target_id: u32,
    ready_for: u32,
    done: bool,
    failed: bool,
    /// Mixed versions or steps in flight: the cluster is part-way, whatever its admission.
    in_motion: bool,
    /// Some member runs a newer version than the target.
    backout: bool,
    /// Some member runs an older version than the target.
    behind: bool,
}

const NONE: u32 = u32::MAX;

impl<'a> Summary<'a> {
    fn name(&self) -> &'a str {
        self.view.name
    }

    fn lo_rank(&self) -> Option<u32> {
        (self.lo_rank != NONE).then_some(self.lo_rank)
    }

    fn hi_rank(&self) -> Option<u32> {
        (self.hi_rank != NONE).then_some(self.hi_rank)
    }

    /// Moving this cluster takes its service down (no member can take over): spare or not,
    /// a single member cannot be relieved.
    fn outage(&self, mesh: &MeshSpec) -> bool {
        let spec = self.view.spec;
        spec.members.len() <= 1
            || spec.upgrade.strategy == UpgradeStrategy::InPlace
            || mesh.strategy.type_ == MeshStrategyType::Offline
    }

    fn load(&self) -> u64 {
        self.view.spec.load.unwrap_or(0)
    }

    fn backup_peers(&self) -> &'a [String] {
        &self.view.spec.backup_peers
    }

    /// Replication backlog and conflicts over the members.
    fn backlog(&self) -> (u64, u64) {
        self.view.status.map_or((0, 0), |st| {
            st.members
                .iter()
                .fold((0, 0), |(b, c), m| (b + m.backlog, c + m.conflicts))
        })
    }

    fn direction(&self) -> Direction {
        if self.backout {
            Direction::Backout
        } else {
            Direction::Upgrade
        }
    }
}

/// Versions met in one decision, each distinct string parsed and compared once: a large mesh
/// reports tens of thousands of member versions and a handful of distinct strings.
#[derive(Default)]
struct VersionTable<'a> {
    ids: FastMap<&'a str, u32>,
    strs: Vec<&'a str>,
    /// The two ids found last: neighbouring members mostly run the same version, and the
    /// targets of neighbouring clusters are mostly the same string.
    recent: [u32; 2],
}

impl<'a> VersionTable<'a> {
    fn id(&mut self, v: &'a str) -> u32 {
        for &i in &self.recent {
            if let Some(s) = self.strs.get(i as usize)
                && same_str(s, v)
            {
                return i;
            }
        }
        let i = match self.ids.get(v) {
            Some(&i) => i,
            None => {
                let i = self.strs.len() as u32;
                self.strs.push(v);
                self.ids.insert(v, i);
                i
            }
        };
        self.recent = [i, self.recent[0]];
        i
    }

    /// The rank of each id in version order; versions that compare equal (`1.2`, `1.2.0`)
    /// share a rank, so comparing ranks is comparing with `cmp_versions`.
    fn ranks(&self) -> Vec<u32> {
        let cmp = |a: u32, b: u32| cmp_versions(self.strs[a as usize], self.strs[b as usize]);
        let mut order: Vec<u32> = (0..self.strs.len() as u32).collect();
        order.sort_by(|&a, &b| cmp(a, b));
        let mut rank = vec![0; self.strs.len()];
        let mut r = 0;
        for (i, &id) in order.iter().enumerate() {
            if i > 0 && !cmp(order[i - 1], id).is_eq() {
                r += 1;
            }
            rank[id as usize] = r;
        }
        rank
    }
}

/// Reads each cluster once, during the index's sweep; ranks and tiers come after.
struct Reader<'a> {
    versions: VersionTable<'a>,
    member_ids: Vec<u32>,
    /// One summary per position, not yet ranked.
    raws: Vec<Summary<'a>>,
}

impl<'a> Reader<'a> {
    fn read(&mut self, c: &'a MeshClusterView<'a>, pos: usize, mesh: &'a MeshSpec) {
        let target = c.spec.version.as_deref().unwrap_or(&mesh.version);
        let start = self.member_ids.len();
        if let Some(versions) = c.status.and_then(|s| s.running_versions.as_deref()) {
            // The cluster planner's summary of its members' versions (distinct, sorted): one
            // short string instead of every member's record, which on a large mesh is most of
            // the memory a decision would touch.
            for v in versions.split(',').filter(|v| !v.is_empty()) {
                self.member_ids.push(self.versions.id(v));
            }
        } else if let Some(st) = c.status {
            // Members of a cluster mostly run one version: look up each distinct one once.
            let mut prev: Option<(&str, u32)> = None;
            for m in &st.members {
                let id = match (m.version.as_deref(), prev) {
                    (None, _) => NONE,
                    (Some(v), Some((p, id))) if same_str(v, p) => id,
                    (Some(v), _) => {
                        let id = self.versions.id(v);
                        prev = Some((v, id));
                        id
                    }
                };
                self.member_ids.push(id);
            }
        }
        let ready_for = c
            .status
            .filter(|s| s.phase == ClusterPhase::Ready && s.steps.is_empty())
            .and_then(|s| s.target_version.as_deref())
            .map_or(NONE, |t| self.versions.id(t));
        self.raws.push(Summary {
            view: c,
            target,
            pos: pos as u32,
            tier: 0,
            role: NONE,
            lo: NONE,
            hi: NONE,
            lo_rank: NONE,
            hi_rank: NONE,
            members: (start as u32, (self.member_ids.len() - start) as u32),
            target_id: self.versions.id(target),
            ready_for,
            done: false,
            failed: c.status.is_some_and(|s| {
                matches!(s.phase, ClusterPhase::Stalled | ClusterPhase::RolledBack)
            }),
            in_motion: c.status.is_some_and(|s| !s.steps.is_empty()),
            backout: false,
            behind: false,
        });
    }

    /// The summaries of the clusters at `order` (standing positions with a tier), with every
    /// version comparison derived from ranks.
    fn summaries(
        self,
        order: &[usize],
        index: &MeshIndex<'_>,
    ) -> (Vec<Summary<'a>>, VersionTable<'a>) {
        let rank = self.versions.ranks();
        let mut sums = Vec::with_capacity(order.len());
        for &k in order {
            let Some(tier) = index.tier[k] else { continue };
            let mut s = self.raws[k];
            s.tier = tier as u32;
            s.role = index.roles.of[k].unwrap_or(NONE);
            let (start, len) = (s.members.0 as usize, s.members.1 as usize);
            for &id in &self.member_ids[start..start + len] {
                if id == NONE {
                    continue;
                }
                // Strict comparisons: the first of equal versions stands for them.
                if s.lo == NONE || rank[id as usize] < rank[s.lo as usize] {
                    s.lo = id;
                }
                if s.hi == NONE || rank[id as usize] > rank[s.hi as usize] {
                    s.hi = id;
                }
            }
            let target = rank[s.target_id as usize];
            if s.lo != NONE {
                s.lo_rank = rank[s.lo as usize];
                s.hi_rank = rank[s.hi as usize];
            }
            s.done = s.ready_for != NONE && rank[s.ready_for as usize] == target;
            let mixed = s.lo != NONE && s.lo_rank != s.hi_rank;
            s.in_motion = !s.done && (mixed || s.in_motion);
            s.backout = s.hi != NONE && s.hi_rank > target;
            s.behind = s.lo != NONE && s.lo_rank < target;
            sums.push(s);
        }
        (sums, self.versions)
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
        // The reason is what the cluster planner shows, and an admission that changes wakes
        // the cluster (and rewrites its status). It must therefore change only when this
        // cluster's situation does: the mesh's own message ("moving: a, b, ...") changes with
        // every admission elsewhere and, quoted here, woke and rewrote every waiting cluster
        // of a 200-cluster mesh on each admission. The phase changes a few times per rollout.
        reason: (!admitted).then(|| {
            let why = match status.map(|s| s.phase) {
                Some(MeshPhase::Paused) => "paused",
                Some(MeshPhase::Stalled) => "stalled (see its Stalled condition)",
                _ => "waiting for its turn (see its status)",
            };
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
    let mut stalled: Option<Stall> = None;
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
    let mut reader = Reader {
        versions: VersionTable::default(),
        member_ids: Vec::with_capacity(refs.len() * 3),
        raws: Vec::with_capacity(refs.len()),
    };
    let index = MeshIndex::new_visiting(spec, &refs, |i| {
        reader.read(&input.clusters[i], i, spec);
    });
    let problems = validate_mesh_indexed(spec, &refs, &index, |name| {
        input
            .outside
            .iter()
            .find(|o| o.name == name)
            .map(|o| match o.why {
                Outside::Unreadable { .. } => None,
                Outside::OwnedBy { mesh } => Some(format!(
                    "cluster {name:?} belongs to mesh {mesh:?} (a cluster belongs to the first \
                 mesh, by name, that claims it)"
                )),
            })
    });
    // Claimed clusters whose object cannot be read: their version is unknown, so the mesh
    // can neither count them done nor check a compatibility rule against them.
    let unreadable: Vec<(&str, &str)> = input
        .outside
        .iter()
        .filter_map(|o| match o.why {
            Outside::Unreadable { error } if o.claimed_by(spec) => Some((o.name, error)),
            _ => None,
        })
        .collect();
    // One summary per cluster name in a tier (the last cluster of a name stands for it), in
    // a stable order: by tier, as listed in the tier, then by name for selected ones.
    let (sums, version_table) = reader.summaries(&index.in_tier_order(&refs), &index);
    let vstr = |id: u32| version_table.strs.get(id as usize).copied();
    // Summary of each cluster position, for lookups by name through the index.
    let mut sum_at: Vec<usize> = vec![usize::MAX; input.clusters.len()];
    for (k, s) in sums.iter().enumerate() {
        sum_at[s.pos as usize] = k;
    }
    let find = |name: &str| -> Option<&Summary<'_>> {
        let &p = index.by_name.get(name)?;
        sums.get(*sum_at.get(index.canon[p])?)
    };

    let total = (sums.len() + unreadable.len()) as u32;
    let done_count = sums.iter().filter(|s| s.done).count() as u32;
    st.progress = Some(format!("{done_count}/{total}"));

    if !problems.is_empty() {
        stalled = Some(Stall::InvalidSpec(problems.clone()));
        st.admitted.clear();
    } else if !unreadable.is_empty() {
        // Hold: admit nothing new (clusters already admitted finish their rollout) until the
        // object is fixed; never call the rollout done without it.
        let clusters = unreadable
            .iter()
            .map(|(n, e)| (n.to_string(), e.to_string()))
            .collect();
        stalled = Some(Stall::ClusterUnreadable(clusters));
    }

    let direction = if sums
        .iter()
        .any(|s| !s.done && s.direction() == Direction::Backout)
    {
        Direction::Backout
    } else if keeps_backing_out(st.rollout.as_ref(), &st.log, spec, &sums) {
        // The last clusters of a backout run the old version before they report Ready: the
        // rollout stays a backout (same log entry, reverse tier order) rather than turning
        // into an "upgrade" of clusters that are only finishing.
        Direction::Backout
    } else {
        Direction::Upgrade
    };
    let all_done = done_count == total;

    let unknown: Vec<&str> = sums
        .iter()
        .filter(|s| s.hi == NONE)
        .map(|s| s.name())
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
                stalled = Some(Stall::PreconditionFailed {
                    version: spec.version.clone(),
                    failures: precondition_msg.clone(),
                });
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
                    let why = format!("superseded by {} {}", dir_word(direction), spec.version);
                    // Its tiers end with it.
                    for id in open_tier_entries(log.entries, prev.log_id) {
                        log.close(id, LogResult::Cancelled, why.clone(), now);
                    }
                    log.close(prev.log_id, LogResult::Cancelled, why, now);
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
            && rollout_open(&st.log, r)
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
        if let Some(t) = tiers.get_mut(s.tier as usize) {
            t.total += 1;
            if s.done {
                t.done += 1;
            }
        }
    }
    // A tier's entry (under the rollout's) closes when every cluster of the tier is done.
    if let Some(r) = &st.rollout {
        let mut log = Log {
            entries: &mut st.log,
            next_id: &mut st.next_log_id,
        };
        for id in open_tier_entries(log.entries, r.log_id) {
            let tier = log
                .entries
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.target.clone());
            if let Some(t) = tiers.iter().find(|t| Some(&t.name) == tier.as_ref())
                && t.total > 0
                && t.done == t.total
            {
                let msg = format!("all {} clusters of tier {} done", t.total, t.name);
                log.close(id, LogResult::Succeeded, msg.clone(), now);
                events.push(PlanEvent {
                    warning: false,
                    reason: "TierComplete".into(),
                    message: msg,
                });
            }
        }
    }

    let mut failed: Vec<String> = Vec::new();
    if stalled.is_none() && !all_done && !blind {
        let active_tier = match direction {
            Direction::Upgrade => sums.iter().filter(|s| !s.done).map(|s| s.tier).min(),
            Direction::Backout => sums.iter().filter(|s| !s.done).map(|s| s.tier).max(),
        }
        .map(|t| t as usize);
        // Keep admissions of clusters still moving in the active tier toward the same target.
        let before = std::mem::take(&mut st.admitted);
        for a in before {
            if let Some(s) = find(a.cluster.as_str())
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
            let role_versions = RoleVersions::of(spec, &sums, &index, vstr);
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
                failed.push(s.name().to_string());
            }
            if paused {
                waiting.push("paused: no new cluster is admitted".into());
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
                    wake = wake.min(Wake::At(at));
                    waiting.push(format!(
                        "tier {}: next start at {at} (stagger {})",
                        tier.name, tier.stagger
                    ));
                    break;
                }
                if let Some(why) = role_versions.incompatible(spec, s, direction, &index.roles) {
                    waiting.push(format!("{}: {why}", s.name()));
                    continue;
                }
                if let Some(why) = capacity_refusal(spec, &sums, &find, &st.admitted, s) {
                    waiting.push(format!("{}: {why}", s.name()));
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
                let rollout = st.rollout.as_ref().map(|r| r.log_id);
                let mut log = Log {
                    entries: &mut st.log,
                    next_id: &mut st.next_log_id,
                };
                // Admissions are entries of their tier's entry, itself under the rollout's.
                let parent = match rollout {
                    Some(r) => Some(
                        open_tier_entries(log.entries, r)
                            .into_iter()
                            .find(|&id| {
                                log.entries
                                    .iter()
                                    .any(|e| e.id == id && e.target == tier.name)
                            })
                            .unwrap_or_else(|| {
                                log.open(
                                    Some(r),
                                    "tier",
                                    LogScope::Mesh,
                                    &tier.name,
                                    Some(&spec.version),
                                    LogMode::Automatic,
                                    format!("{} tier {}", dir_word(direction), tier.name),
                                    now,
                                )
                            }),
                    ),
                    None => None,
                };
                let id = log.open(
                    parent,
                    "admit",
                    LogScope::Cluster,
                    s.name(),
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
                        s.name(),
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
                stalled = Some(Stall::Blocked(waiting.clone()));
            }
        }
        for t in &mut tiers {
            t.moving = st
                .admitted
                .iter()
                .filter(|a| {
                    index
                        .tier_of(&a.cluster)
                        .is_some_and(|i| spec.tiers[i].name == t.name)
                })
                .map(|a| a.cluster.clone())
                .collect();
        }
    }
    st.tiers = tiers;

    // Conditions and phase.
    // Distinct version strings running, lowest and highest of each cluster.
    let mut running = vec![false; version_table.strs.len()];
    for s in &sums {
        for id in [s.lo, s.hi] {
            if let Some(r) = running.get_mut(id as usize) {
                *r = true;
            }
        }
    }
    let versions: BTreeSet<&str> = version_table
        .strs
        .iter()
        .zip(&running)
        .filter(|(_, r)| **r)
        .map(|(v, _)| *v)
        .collect();
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
    st.message = if let Some(stall) = &stalled {
        Some(stall.message())
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
    let reconciling = st.message.clone().unwrap_or_default();
    announce_stall(&st.conditions, stalled.as_ref(), &mut events);
    let conds = &mut st.conditions;
    set_kstatus(
        conds,
        Kstatus {
            stalled: stalled.as_ref(),
            ready: ready.then(|| format!("all {total} clusters run their target")),
            paused,
            reconciling: ("RolloutInProgress", reconciling),
        },
        g,
        now,
    );
    let (on, off) = ("ClustersFailed", "AsExpected");
    set_flag(
        conds,
        cond::DEGRADED,
        degraded,
        on,
        off,
        || failed.join(", "),
        g,
        now,
    );
    let mixed = versions.len() > 1;
    let list = || versions.iter().copied().collect::<Vec<_>>().join(",");
    let (on, off) = ("MixedVersion", "SingleVersion");
    set_flag(conds, cond::MIXED_VERSION, mixed, on, off, list, g, now);
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

/// A backout rollout toward the current target, still open, with no cluster behind the target
/// (which would need an upgrade, a new rollout).
fn keeps_backing_out(
    rollout: Option<&RolloutStatus>,
    log: &[crate::api::LogEntry],
    spec: &MeshSpec,
    sums: &[Summary<'_>],
) -> bool {
    rollout.is_some_and(|r| {
        r.direction == Direction::Backout
            && cmp_versions(&r.version, &spec.version).is_eq()
            && rollout_open(log, r)
            && !sums.iter().any(|s| !s.done && s.behind)
    })
}

/// The rollout's log entry is still running (not closed as done or superseded).
fn rollout_open(log: &[crate::api::LogEntry], r: &RolloutStatus) -> bool {
    log.iter()
        .any(|e| e.id == r.log_id && e.result == LogResult::Running)
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
            .filter_map(|s| Some((s.name(), s.backlog().0)).filter(|x| x.1 > 0))
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        if !b.is_empty() {
            out.push(format!("replication backlog on {}", b.join(", ")));
        }
    }
    if spec.preconditions.no_conflicts {
        let c: Vec<String> = sums
            .iter()
            .filter_map(|s| Some((s.name(), s.backlog().1)).filter(|x| x.1 > 0))
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        if !c.is_empty() {
            out.push(format!("replication conflicts on {}", c.join(", ")));
        }
    }
    out
}

/// Lowest and highest version running per role, for compatibility rules.
struct RoleVersions<'a> {
    min: FastMap<&'a str, Option<&'a str>>,
    max: FastMap<&'a str, Option<&'a str>>,
}

impl<'a> RoleVersions<'a> {
    fn of(
        spec: &MeshSpec,
        sums: &[Summary<'a>],
        index: &MeshIndex<'a>,
        vstr: impl Fn(u32) -> Option<&'a str>,
    ) -> Self {
        type Bound<'a> = Option<(u32, &'a str)>;
        // Per role id: its name, lowest and highest bound.
        let mut bounds: Vec<Option<(&'a str, Bound<'a>, Bound<'a>)>> =
            vec![None; index.roles.len()];
        // Only rules read these bounds.
        let sums = if spec.compatibility.is_empty() {
            &[]
        } else {
            sums
        };
        for s in sums {
            let Some(r) = index.roles.name(s.role) else {
                continue;
            };
            let lo = s.lo_rank().zip(vstr(s.lo));
            let hi = s.hi_rank().zip(vstr(s.hi));
            let e = bounds[s.role as usize].get_or_insert((r, lo, hi));
            // A cluster without observed versions makes the role's bound unknown (None); of
            // equal versions the first stays.
            e.1 = match (e.1, lo) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                _ => None,
            };
            e.2 = match (e.2, hi) {
                (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
                _ => None,
            };
        }
        let bounds = bounds.into_iter().flatten();
        RoleVersions {
            min: bounds.clone().map(|b| (b.0, b.1.map(|(_, v)| v))).collect(),
            max: bounds.map(|b| (b.0, b.2.map(|(_, v)| v))).collect(),
        }
    }

    /// Why moving `s` to its target would break a rule, if it would.
    fn incompatible(
        &self,
        spec: &MeshSpec,
        s: &Summary<'_>,
        direction: Direction,
        roles: &Roles<'_>,
    ) -> Option<String> {
        let role = roles.name(s.role)?;
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
fn capacity_refusal<'s>(
    spec: &MeshSpec,
    sums: &[Summary<'_>],
    by: &impl Fn(&str) -> Option<&'s Summary<'s>>,
    admitted: &[Admitted],
    cand: &Summary<'_>,
) -> Option<String> {
    let limit = spec.strategy.max_takeover_load_factor?;
    if spec.strategy.type_ != MeshStrategyType::Rolling || !cand.outage(spec) {
        return None;
    }
    let mut down: Vec<&Summary<'_>> = admitted
        .iter()
        .filter_map(|a| by(a.cluster.as_str()))
        .filter(|s| s.outage(spec) && !s.done)
        .collect();
    down.push(cand);
    let down_names: BTreeSet<&str> = down.iter().map(|s| s.name()).collect();
    let mut extra: BTreeMap<&str, f64> = BTreeMap::new();
    for d in &down {
        if d.load() == 0 {
            continue;
        }
        let peers: Vec<&str> = if d.backup_peers().is_empty() {
            sums.iter()
                .map(|s| s.name())
                .filter(|n| !down_names.contains(n))
                .collect()
        } else {
            d.backup_peers()
                .iter()
                .map(String::as_str)
                .filter(|n| !down_names.contains(n) && by(n).is_some())
                .collect()
        };
        if peers.is_empty() {
            return Some(format!(
                "no peer is up to take over the load of {}",
                d.name()
            ));
        }
        let share = d.load() as f64 / peers.len() as f64;
        for p in peers {
            *extra.entry(p).or_default() += share;
        }
    }
    let mut worst: Option<(&str, f64)> = None;
    for (p, e) in extra {
        let own = by(p).map(|s| s.load()).unwrap_or(0) as f64;
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
            cand.name()
        )),
        _ => None,
    }
}

/// Ids of the tier entries still open under a rollout entry.
fn open_tier_entries(log: &[crate::api::LogEntry], rollout: u64) -> Vec<u64> {
    log.iter()
        .filter(|e| {
            e.parent == Some(rollout) && e.action == "tier" && e.result == LogResult::Running
        })
        .map(|e| e.id)
        .collect()
}
