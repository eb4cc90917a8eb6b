//! Reading the clusters: one sweep over the input that summarises every cluster the mesh
//! plans (its versions, whether it is done, failed, part-way or backing out) and indexes them
//! by name and tier.
//!
//! Owns: [`Summary`], [`Clusters`] and [`read`]. May use: `types` (the input), `versions`,
//! `plan::validate` (the mesh index). Decides nothing: every later stage reads its output.

use crate::api::{
    ClusterPhase, Direction, MeshSpec, MeshStrategyType, StepAction, TaskState, UpgradeStrategy,
};
use crate::plan::validate::{ClusterRef, MeshIndex, same_str};

use super::types::{MeshClusterView, MeshInput};
use super::versions::{NONE, VersionTable};

/// What one cluster's summary says, computed once per pass (linear in members). Kept small:
/// on a large mesh the memory a decision touches is most of its cost.
#[derive(Clone, Copy)]
pub(super) struct Summary<'a> {
    /// The cluster: its name, and what only the capacity check and the preconditions read
    /// (left out of the sweep over every cluster).
    pub(super) view: &'a MeshClusterView<'a>,
    /// Position in the input's cluster list.
    pub(super) pos: u32,
    pub(super) tier: u32,
    /// The role's number in the index (`NONE`: no role).
    pub(super) role: u32,
    /// Lowest and highest version id the members run (the first of equals), and their ranks
    /// (`NONE`: no member version known).
    pub(super) lo: u32,
    pub(super) hi: u32,
    lo_rank: u32,
    hi_rank: u32,
    /// Until ranked: the member version ids in `Reader::member_ids`, the target's id, and the
    /// version id the status says Ready for (with no step in flight).
    members: (u32, u32),
    target_id: u32,
    ready_for: u32,
    pub(super) done: bool,
    /// Until ranked: the status waits for the mesh's CA rotation with nothing in flight (done
    /// with the rollout once every member runs the target).
    waits_for_rotation: bool,
    /// Until ranked: nothing but the mesh's tasks keeps the cluster from Ready (a task step
    /// in flight, a task backing off or failed): done with the rollout once every member runs
    /// the target, as a task runs only on a cluster whose tier is done or has not started.
    busy_with_tasks: bool,
    pub(super) failed: bool,
    /// Its health after the rollout is worse than its baseline and nobody accepted it
    /// (`upgrade.health`): its tier admits no more clusters.
    pub(super) health_failed: bool,
    /// Mixed versions or steps in flight: the cluster is part-way, whatever its admission.
    pub(super) in_motion: bool,
    /// Some member runs a newer version than the target.
    pub(super) backout: bool,
    /// Some member runs an older version than the target.
    pub(super) behind: bool,
}

impl<'a> Summary<'a> {
    pub(super) fn name(&self) -> &'a str {
        self.view.name
    }

    /// The version the cluster is to run: its own, else the mesh's. Read again where needed
    /// rather than kept: a summary is copied once per cluster, and on a large mesh the bytes
    /// a decision touches are most of its cost.
    pub(super) fn target<'s>(&'s self, mesh: &'s MeshSpec) -> &'s str {
        self.view.spec.version.as_deref().unwrap_or(&mesh.version)
    }

    pub(super) fn lo_rank(&self) -> Option<u32> {
        (self.lo_rank != NONE).then_some(self.lo_rank)
    }

    pub(super) fn hi_rank(&self) -> Option<u32> {
        (self.hi_rank != NONE).then_some(self.hi_rank)
    }

    /// No member version is known yet (no status, or no member reported one).
    pub(super) fn unreported(&self) -> bool {
        self.hi == NONE
    }

    /// Moving this cluster takes its service down (no member can take over): spare or not,
    /// a single member cannot be relieved.
    pub(super) fn outage(&self, mesh: &MeshSpec) -> bool {
        let spec = self.view.spec;
        spec.members.len() <= 1
            || spec.upgrade.strategy == UpgradeStrategy::InPlace
            || mesh.strategy.type_ == MeshStrategyType::Offline
    }

    pub(super) fn load(&self) -> u64 {
        self.view.spec.load.unwrap_or(0)
    }

    pub(super) fn backup_peers(&self) -> &'a [String] {
        &self.view.spec.backup_peers
    }

    /// Replication backlog and conflicts over the members.
    pub(super) fn backlog(&self) -> (u64, u64) {
        self.view.status.map_or((0, 0), |st| {
            st.members
                .iter()
                .fold((0, 0), |(b, c), m| (b + m.backlog, c + m.conflicts))
        })
    }

    pub(super) fn direction(&self) -> Direction {
        if self.backout {
            Direction::Backout
        } else {
            Direction::Upgrade
        }
    }
}

/// The clusters of one decision, summarised and indexed.
pub(super) struct Clusters<'a> {
    /// Name, labels and spec of every input cluster, by position (what validation reads).
    pub(super) refs: Vec<ClusterRef<'a>>,
    pub(super) index: MeshIndex<'a>,
    /// One summary per cluster name in a tier (the last cluster of a name stands for it), in
    /// a stable order: by tier, as listed in the tier, then by name for selected ones.
    pub(super) sums: Vec<Summary<'a>>,
    pub(super) versions: VersionTable<'a>,
    /// Per input position: its summary's place in `sums` (`usize::MAX`: none).
    sum_at: Vec<u32>,
}

impl<'a> Clusters<'a> {
    /// The summary of the cluster called `name`, if the mesh plans it.
    pub(super) fn find(&self, name: &str) -> Option<&Summary<'a>> {
        let &p = self.index.by_name.get(name)?;
        self.sums
            .get(*self.sum_at.get(self.index.canon(p))? as usize)
    }

    pub(super) fn done_count(&self) -> u32 {
        self.sums.iter().filter(|s| s.done).count() as u32
    }
}

/// Read every cluster once, during the index's sweep; ranks and tiers come after.
pub(super) fn read<'a>(input: &MeshInput<'a>) -> Clusters<'a> {
    let (spec, clusters) = (input.mesh.spec, input.clusters);
    let refs: Vec<ClusterRef<'a>> = clusters
        .iter()
        .map(|c| ClusterRef::new(c.name, c.labels, c.spec))
        .collect();
    let mut reader = Reader {
        versions: VersionTable::default(),
        member_ids: Vec::with_capacity(refs.len() * 3),
        raws: Vec::with_capacity(refs.len()),
    };
    let index = MeshIndex::new_visiting(spec, &refs, |i| {
        reader.read(&clusters[i], i, spec);
    });
    let (sums, versions) = reader.summaries(&index.in_tier_order(&refs), &index);
    let mut sum_at: Vec<u32> = vec![u32::MAX; clusters.len()];
    for (k, s) in sums.iter().enumerate() {
        sum_at[s.pos as usize] = k as u32;
    }
    Clusters {
        refs,
        index,
        sums,
        versions,
        sum_at,
    }
}

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
            waits_for_rotation: c.status.is_some_and(|s| {
                s.phase == ClusterPhase::Waiting
                    && s.steps.is_empty()
                    && s.certificates
                        .as_ref()
                        .and_then(|x| x.phase.as_deref())
                        .and_then(crate::api::RotationPhase::parse)
                        .is_some()
            }),
            busy_with_tasks: c.status.is_some_and(|s| {
                s.tasks.iter().any(|t| t.state != TaskState::Succeeded)
                    && s.steps.iter().all(|x| x.action == StepAction::Task)
                    && !matches!(s.phase, ClusterPhase::RolledBack | ClusterPhase::Paused)
            }),
            failed: c.status.is_some_and(|s| {
                matches!(s.phase, ClusterPhase::Stalled | ClusterPhase::RolledBack)
            }),
            // Only for the cluster's current target: worse health after an upgrade does not
            // hold its backout (the remedy).
            health_failed: c.status.is_some_and(|s| {
                s.health.as_ref().is_some_and(|h| {
                    !h.findings.is_empty()
                        && !h.accepted
                        && s.target_version.as_deref() == Some(h.version.as_str())
                })
            }),
            // Steps of a membership change, a mesh task or media staged ahead (or removed
            // after) alone do not put the cluster in motion.
            in_motion: c.status.is_some_and(|s| {
                s.steps.iter().any(|x| {
                    !matches!(
                        x.action,
                        StepAction::Task
                            | StepAction::StageMedia
                            | StepAction::RemoveMedia
                            | StepAction::Prepare
                    ) && !crate::plan::cluster::membership_step(s, x)
                })
            }),
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
            let Some(tier) = index.tier_at(k) else {
                continue;
            };
            let mut s = self.raws[k];
            s.tier = tier as u32;
            s.role = index.roles.of(k).unwrap_or(NONE);
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
            // Ready for the target; or, waiting for the CA rotation, every member on it (a
            // cluster waiting for its rotation is not Ready, and done with the rollout).
            s.done = (s.ready_for != NONE && rank[s.ready_for as usize] == target)
                || ((s.waits_for_rotation || s.busy_with_tasks)
                    && s.lo != NONE
                    && s.lo_rank == target
                    && s.hi_rank == target);
            let mixed = s.lo != NONE && s.lo_rank != s.hi_rank;
            s.in_motion = !s.done && (mixed || s.in_motion);
            s.backout = s.hi != NONE && s.hi_rank > target;
            s.behind = s.lo != NONE && s.lo_rank < target;
            sums.push(s);
        }
        (sums, self.versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterPhase;
    use crate::fixtures::mesh::{ClusterBuilder, Scene, cluster, mesh};

    /// The summary of a cluster `c` alone in a mesh to 2.0.0.
    fn summary_of<R>(c: ClusterBuilder, f: impl FnOnce(&Summary<'_>) -> R) -> R {
        let scene = Scene::new(mesh("2.0.0").tier("t", &["c"]).build()).with(c);
        scene.with_input(|input| f(read(input).find("c").expect("planned")))
    }

    #[test]
    fn done_means_ready_for_the_target_with_nothing_in_flight() {
        assert!(summary_of(cluster("c").ready("2.0.0"), |s| s.done));
        assert!(
            summary_of(cluster("c").ready("2.0"), |s| s.done),
            "2.0 is 2.0.0"
        );
        assert!(!summary_of(cluster("c").ready("1.0.0"), |s| s.done));
        assert!(
            !summary_of(cluster("c").runs("2.0.0"), |s| s.done),
            "not Ready"
        );
        let busy = cluster("c")
            .ready("2.0.0")
            .step_in_flight()
            .phase(ClusterPhase::Ready);
        assert!(!summary_of(busy, |s| s.done));
        // A pinned version is the cluster's own target.
        assert!(summary_of(cluster("c").pin("1.0.0").ready("1.0.0"), |s| s.done));
    }

    #[test]
    fn a_summary_knows_its_bounds_and_which_way_it_moves() {
        let mixed = cluster("c").members_run(&["1.0.0", "3.0.0", "2.0.0"]);
        summary_of(mixed, |s| {
            assert!(s.in_motion && s.backout && s.behind);
            assert_eq!(s.direction(), Direction::Backout);
            assert!(s.lo_rank() < s.hi_rank());
        });
        summary_of(cluster("c").runs("1.0.0"), |s| {
            assert!(!s.in_motion && !s.backout && s.behind && !s.unreported());
        });
        summary_of(cluster("c").runs("1.0.0").step_in_flight(), |s| {
            assert!(s.in_motion)
        });
        // Media staged ahead of the cluster's turn is no move: the cluster is not part-way
        // (a part-way cluster is admitted beyond maxParallel; the soak found two moving).
        summary_of(cluster("c").runs("1.0.0").staging_media(), |s| {
            assert!(!s.in_motion && !s.done)
        });
        summary_of(cluster("c"), |s| {
            assert!(s.unreported() && s.lo_rank().is_none())
        });
        summary_of(cluster("c").runs("1.0.0").stalled(), |s| assert!(s.failed));
    }

    #[test]
    fn the_member_records_say_what_the_running_summary_says() {
        for c in [
            cluster("c").members_run(&["1.0.0", "2.0.0"]),
            cluster("c").ready("2.0.0"),
            cluster("c").runs("3.0.0"),
        ] {
            let said = |s: &Summary<'_>| {
                (
                    s.lo_rank(),
                    s.hi_rank(),
                    s.done,
                    s.in_motion,
                    s.backout,
                    s.behind,
                )
            };
            let with = summary_of(c.clone(), said);
            let without = summary_of(c.without_summary(), said);
            assert_eq!(with, without);
        }
    }

    #[test]
    fn clusters_are_found_by_name_in_tier_order() {
        let scene = mesh("2.0.0")
            .tier("first", &["b", "a"])
            .tier_selecting("second", &[("kind", "edge")])
            .scene()
            .with(cluster("z").label("kind", "edge"))
            .with(cluster("a"))
            .with(cluster("y").label("kind", "edge"))
            .with(cluster("b"))
            .with(cluster("loner"));
        scene.with_input(|input| {
            let c = read(input);
            let order: Vec<&str> = c.sums.iter().map(|s| s.name()).collect();
            assert_eq!(order, ["b", "a", "y", "z"], "listed order, then by name");
            assert_eq!(c.find("z").map(|s| s.tier), Some(1));
            assert!(c.find("loner").is_none(), "in no tier");
        });
    }
}
