//! The mesh-wide CA rotation of the Mesh's `spec.certificates`: which clusters may run
//! rotation steps now. Every cluster of the mesh shares one trust, and members of different
//! clusters talk to each other, so the phases are mesh-wide: no cluster presents a certificate
//! of the new CA before every cluster trusts it, and none drops the old CA before every
//! cluster presents the new one.
//!
//! Where the rotation stands is read from the clusters' own `status.certificates` (each
//! derived from what its members report), never counted here: the mesh's phase is the lowest
//! of its clusters', and a cluster that has not reported a phase for the target counts as the
//! first phase. A cluster may run the steps of the mesh's phase only, and only while no other
//! rotating cluster uses one of its sites (the procedure's one job per site at a time, across
//! the mesh; members without a site are their cluster's own).
//!
//! A rotation and a version rollout of the mesh never run at once: the clusters part-way in a
//! rollout under way finish their upgrade first (a cluster at rest would not start one: with
//! a rotation due, it waits for its rotation grant); then the rotation runs, and the rollout
//! goes on once it is done. From rest the rotation goes first (a CA nearing expiry is a
//! deadline, a version is not), and the mesh starts no rollout until it is done.
//!
//! Owns: `status.certificates`, the rotation's events, the CA stall of the mesh. May use:
//! `read`, `plan::trust`, `plan::stall`.

use std::collections::BTreeSet;

use crate::api::{MeshCertificatesStatus, MeshStatus, RotationPhase, StepRecord};
use crate::plan::observe::PlanEvent;
use crate::plan::stall::Stall;
use crate::plan::trust::{CaInput, short_id as short};

use super::read::{Clusters, Summary};

/// What the rotation leaves for the rest of the pass.
#[derive(Debug, PartialEq)]
pub(super) enum Rotation {
    /// No `spec.certificates`, or every cluster is on the target CA.
    Idle,
    /// Due, but clusters are part-way in a version rollout: it goes on, the rotation waits.
    WaitsForRollout,
    /// Due and running (or waiting at its start, `waiting` says why): the version rollout
    /// stands still, no rollout starts and nobody is admitted for one. `failed`: clusters
    /// Stalled or RolledBack short of the target, which hold the rotation (the mesh is
    /// Degraded while they do).
    Running {
        waiting: Option<String>,
        failed: Vec<String>,
    },
    /// The CA cannot be used: the mesh is stalled.
    Stalled(Stall),
}

/// A cluster's stage in the rotation to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// No phase reported for the target yet (counts as the first phase).
    Unknown,
    Phase(RotationPhase),
    Done,
}

impl Stage {
    fn of(s: &Summary<'_>, target: &str) -> Stage {
        let Some(c) = s.view.status.and_then(|st| st.certificates.as_ref()) else {
            return Stage::Unknown;
        };
        if c.target_ca.as_deref() != Some(target) {
            return Stage::Unknown;
        }
        match c.phase.as_deref() {
            Some("Done") => Stage::Done,
            Some(p) => RotationPhase::parse(p).map_or(Stage::Unknown, Stage::Phase),
            None => Stage::Unknown,
        }
    }

    /// The phase this stage stands in for in the mesh's minimum.
    fn phase(self) -> Option<RotationPhase> {
        match self {
            Stage::Unknown => Some(RotationPhase::AddTrust),
            Stage::Phase(p) => Some(p),
            Stage::Done => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Stage::Unknown => "Unknown",
            Stage::Phase(p) => p.as_str(),
            Stage::Done => "Done",
        }
    }
}

/// What the rotation stage reads besides the clusters.
pub(super) struct Situation<'x> {
    pub(super) ca: Option<&'x CaInput>,
    /// A version rollout is under way (its log entry is open): its version.
    pub(super) rollout_open: Option<String>,
    pub(super) paused: bool,
}

/// Decide the rotation's part of this pass and write `status.certificates`.
pub(super) fn run(
    has_certificates: bool,
    sit: &Situation<'_>,
    clusters: &Clusters<'_>,
    st: &mut MeshStatus,
    events: &mut Vec<PlanEvent>,
) -> Rotation {
    if !has_certificates {
        st.certificates = None;
        return Rotation::Idle;
    }
    let ca = match sit.ca {
        Some(CaInput::Ready(ca)) => ca,
        Some(CaInput::Unusable { reason, message }) => {
            return invalid(st, reason, message.clone());
        }
        None => {
            return invalid(
                st,
                "CASecretNotRead",
                "the CA Secret has not been read yet".into(),
            );
        }
    };
    let target = ca.id();
    let cs = st.certificates.get_or_insert_with(Default::default);
    if cs.target_ca.as_deref() != Some(target.as_str()) {
        *cs = MeshCertificatesStatus {
            target_ca: Some(target.clone()),
            ..Default::default()
        };
    }
    let stages: Vec<(&Summary<'_>, Stage)> = clusters
        .sums
        .iter()
        .map(|s| (s, Stage::of(s, &target)))
        .collect();
    cs.clusters = stages
        .iter()
        .map(|(s, stage)| (s.name().to_string(), stage.as_str().to_string()))
        .collect();
    let lowest = stages.iter().filter_map(|(_, st)| st.phase()).min();
    let phase = lowest.map_or("Done", RotationPhase::as_str);
    if cs.phase.as_deref() != Some(phase) {
        let short = short(&target);
        events.push(PlanEvent {
            warning: false,
            reason: "RotationPhase".into(),
            message: match lowest {
                Some(p) => format!(
                    "CA rotation to {short}: phase {} across the mesh",
                    p.as_str()
                ),
                None => format!("CA rotation to {short} complete on every cluster"),
            },
        });
        cs.phase = Some(phase.to_string());
        cs.failed.clear();
    }
    let Some(mesh_phase) = lowest else {
        // Done everywhere: renewals (same CA) go one job per site across the mesh too.
        cs.failed.clear();
        cs.waiting = sit
            .paused
            .then(|| "paused: no cluster starts rotation steps".to_string());
        cs.rotating = if sit.paused {
            Vec::new()
        } else {
            grant(&stages, &cs.failed, &cs.rotating, |s, _| renewal_due(s))
        };
        return Rotation::Idle;
    };
    // Failed in the mesh's phase, now or before and still in it (without a grant a cluster
    // only waits, so its failure would be forgotten and it would take its site back each
    // pass); the Degraded message names those and the clusters failed in another phase.
    let in_phase = |s: &Summary<'_>, stage: &Stage| {
        stage.phase() == Some(mesh_phase) && (s.failed || cs.failed.iter().any(|f| f == s.name()))
    };
    let failed: Vec<String> = stages
        .iter()
        .filter(|(s, stage)| *stage != Stage::Done && (s.failed || in_phase(s, stage)))
        .map(|(s, _)| s.name().to_string())
        .collect();
    let mut remembered: Vec<String> = stages
        .iter()
        .filter(|(s, stage)| in_phase(s, stage))
        .map(|(s, _)| s.name().to_string())
        .collect();
    remembered.sort();
    cs.failed = remembered;
    let upgrading = stages.iter().any(|(s, _)| part_way(s));
    let waiting = if upgrading {
        let to = sit
            .rollout_open
            .as_ref()
            .map(|v| format!(" to {v}"))
            .unwrap_or_default();
        Some(format!(
            "the CA rotation waits for the clusters part-way in the rollout{to} to finish their upgrade"
        ))
    } else if sit.paused {
        Some("paused: no cluster starts rotation steps".into())
    } else if !under_way(&stages, mesh_phase) {
        conflicted(&stages).map(|names| {
            format!("the CA rotation does not start while {names} report replication conflicts")
        })
    } else {
        None
    };
    if let Some(why) = waiting {
        cs.rotating.clear();
        cs.waiting = Some(why.clone());
        return if upgrading {
            Rotation::WaitsForRollout
        } else {
            Rotation::Running {
                waiting: Some(why),
                failed,
            }
        };
    }
    cs.rotating = grant(&stages, &cs.failed, &cs.rotating, |s, stage| {
        matches!(stage.phase(), Some(p) if p == mesh_phase) || forcing(s, stage)
    });
    cs.waiting = None;
    Rotation::Running {
        waiting: None,
        failed,
    }
}

fn invalid(st: &mut MeshStatus, reason: &'static str, message: String) -> Rotation {
    let cs = st.certificates.get_or_insert_with(Default::default);
    cs.phase = Some("Invalid".into());
    cs.rotating.clear();
    cs.waiting = None;
    Rotation::Stalled(Stall::CaUnusable { reason, message })
}

/// The cluster is part-way in a version rollout: not done, with mixed versions or upgrade
/// steps in flight. It finishes its upgrade before any cluster rotates (a cluster at rest
/// waits for the rotation instead: from rest, the rotation goes first).
fn part_way(s: &Summary<'_>) -> bool {
    (s.in_motion
        && (s.lo_rank() != s.hi_rank()
            || s.view
                .status
                .is_some_and(|st| st.steps.iter().any(|x| !x.is_rotation()))))
        || (!s.failed && layers_differ(s))
}

/// Two members of the cluster run different versions of a component both host: a layered
/// rollout part-way, even between two steps and with every member on the same effective
/// version (which is all the mesh's version summary shows). A rotation started there would
/// hand over between members on different software (rotation soak seeds 13061, 13229).
fn layers_differ(s: &Summary<'_>) -> bool {
    let Some(st) = s.view.status else {
        return false;
    };
    let ms = &st.members;
    ms.iter().enumerate().any(|(i, a)| {
        ms[i + 1..].iter().any(|b| {
            a.components
                .iter()
                .any(|(k, v)| b.components.get(k).is_some_and(|w| w != v))
        })
    })
}

/// Rotation steps in flight on the cluster.
fn rotating_now(s: &Summary<'_>) -> bool {
    s.view
        .status
        .is_some_and(|st| st.steps.iter().any(StepRecord::is_rotation))
}

/// The rotation has started somewhere: a cluster past the first phase, a rotation step in
/// flight, or a member that already trusts the target (a site counted done).
fn under_way(stages: &[(&Summary<'_>, Stage)], mesh_phase: RotationPhase) -> bool {
    mesh_phase > RotationPhase::AddTrust
        || stages.iter().any(|(s, stage)| {
            rotating_now(s)
                || matches!(stage, Stage::Phase(p) if *p > RotationPhase::AddTrust)
                || (*stage == Stage::Phase(RotationPhase::AddTrust)
                    && s.view
                        .status
                        .and_then(|st| st.certificates.as_ref())
                        .is_some_and(|c| c.sites.values().any(|v| !v.starts_with("0/"))))
        })
}

/// Clusters whose members report replication conflicts (joined), if any.
fn conflicted(stages: &[(&Summary<'_>, Stage)]) -> Option<String> {
    let names: Vec<&str> = stages
        .iter()
        .filter(|(s, _)| s.backlog().1 > 0)
        .map(|(s, _)| s.name())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The cluster, done with the rotation, has members due for renewal (its
/// `status.certificates.renewalDue`).
fn renewal_due(s: &Summary<'_>) -> bool {
    s.view
        .status
        .and_then(|st| st.certificates.as_ref())
        .is_some_and(|c| !c.renewal_due.is_empty())
}

/// A force intent runs a later phase on the cluster now (its `status.certificates.forcing`):
/// it may rotate ahead of the mesh's phase, and its `PhaseForced` event says what breaks.
fn forcing(s: &Summary<'_>, stage: &Stage) -> bool {
    matches!(stage, Stage::Phase(_))
        && s.view
            .status
            .and_then(|st| st.certificates.as_ref())
            .is_some_and(|c| c.forcing.is_some())
}

/// The sites a cluster's members stand in (members without a site are the cluster's own).
fn sites<'a>(s: &Summary<'a>) -> BTreeSet<&'a str> {
    s.view
        .spec
        .members
        .iter()
        .filter_map(|m| m.site.as_deref())
        .filter(|site| !site.is_empty())
        .collect()
}

/// The clusters that may run rotation steps now: first those with rotation steps in flight
/// (they hold their sites), then, in tier order, those `wants` picks (in the mesh's phase or
/// forcing a later one; once every cluster is done, those due for renewal) whose sites are
/// free; a cluster that failed in this phase (`failed`) only after the others (it must not
/// hold a site others need), and among those the one that held its sites (`held`) keeps them:
/// failed clusters sharing a site would otherwise take it from each other on every pass.
fn grant(
    stages: &[(&Summary<'_>, Stage)],
    failed: &[String],
    held: &[String],
    wants: impl Fn(&Summary<'_>, &Stage) -> bool,
) -> Vec<String> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut out: Vec<String> = Vec::new();
    for (s, _) in stages.iter().filter(|(s, _)| rotating_now(s)) {
        used.extend(sites(s));
        out.push(s.name().to_string());
    }
    let mut candidates: Vec<&Summary<'_>> = stages
        .iter()
        .filter(|(s, stage)| !rotating_now(s) && wants(s, stage))
        .map(|(s, _)| *s)
        .collect();
    let has = |list: &[String], s: &Summary<'_>| list.iter().any(|x| x == s.name());
    candidates.sort_by_key(|s| (has(failed, s), !has(held, s)));
    for s in candidates {
        let own = sites(s);
        if own.iter().any(|site| used.contains(site)) {
            continue;
        }
        used.extend(own);
        out.push(s.name().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::api::{MeshPhase, RotationPhase, condition as cond};
    use crate::fixtures::cluster::root_ca;
    use crate::fixtures::mesh::{ClusterBuilder, Scene, cluster, mesh};
    use crate::fixtures::{NEW_CA as NEW, OLD_CA as OLD, assert_says, in_a_year};
    use crate::plan::conditions::condition_true;
    use crate::plan::mesh::{MeshPlan, admission_for};
    use crate::plan::trust::CaInput;

    fn ca() -> CaInput {
        root_ca(NEW, in_a_year())
    }

    /// Cluster `name` on 1.0.0 in `sites`, reporting `phase` for the CA `target` with `done`
    /// members of each site past it.
    fn at(name: &str, sites: &[&str], target: &str, phase: &str, done: u32) -> ClusterBuilder {
        cluster(name)
            .ready("1.0.0")
            .sites(sites)
            .rotation(target, phase, done)
    }

    /// Mesh to 1.0.0 with certificates; a and b share sites x and y, c stands in z alone.
    fn scene(a: &str, b: &str, c: &str) -> Scene {
        let at = |name: &str, phase: &str, sites: &[&str]| {
            let b = cluster(name).ready("1.0.0").sites(sites);
            if phase.is_empty() {
                b
            } else {
                b.rotation(NEW, phase, 0)
            }
        };
        mesh("1.0.0")
            .tier("t", &["a", "b", "c"])
            .certificates()
            .scene()
            .with(at("a", a, &["x", "y"]))
            .with(at("b", b, &["x", "y"]))
            .with(at("c", c, &["z"]))
            .with_ca(ca())
    }

    fn rotating(plan: &MeshPlan) -> Vec<&str> {
        plan.status
            .certificates
            .as_ref()
            .map(|c| c.rotating.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn phase(plan: &MeshPlan) -> Option<&str> {
        plan.status.certificates.as_ref()?.phase.as_deref()
    }

    #[test]
    fn the_mesh_phase_is_the_lowest_and_only_clusters_in_it_rotate() {
        let plan = scene("Reissue", "AddTrust", "Reissue").plan();
        assert_eq!(phase(&plan), Some("AddTrust"));
        assert_eq!(
            rotating(&plan),
            ["b"],
            "a and c wait for b to trust the new CA"
        );
        let c = plan.status.certificates.as_ref().expect("written");
        assert_eq!(c.target_ca.as_deref(), Some(NEW));
        assert_eq!(c.clusters.get("a").map(String::as_str), Some("Reissue"));
        assert_eq!(plan.status.phase, MeshPhase::Progressing);
        assert!(condition_true(&plan.status.conditions, cond::RECONCILING));
        assert!(!condition_true(&plan.status.conditions, cond::READY));
        assert!(
            plan.events.iter().any(|e| e.reason == "RotationPhase"),
            "the phase is announced"
        );
        // Everyone past AddTrust: the next phase, and the first free sites go first.
        let plan = scene("Reissue", "Reissue", "Reissue").plan();
        assert_eq!(phase(&plan), Some("Reissue"));
        assert_eq!(rotating(&plan), ["a", "c"], "b shares a's sites");
    }

    #[test]
    fn a_cluster_that_has_not_reported_holds_the_mesh_in_the_first_phase() {
        let plan = scene("Reissue", "", "Reissue").plan();
        assert_eq!(phase(&plan), Some("AddTrust"));
        assert_eq!(rotating(&plan), ["b"]);
        let c = plan.status.certificates.as_ref().expect("written");
        assert_eq!(c.clusters.get("b").map(String::as_str), Some("Unknown"));
        // A status for another CA is no report for this one.
        let mut s = scene("Reissue", "Reissue", "Reissue");
        s.set(at("c", &["z"], OLD, "Done", 3));
        assert_eq!(phase(&s.plan()), Some("AddTrust"));
    }

    #[test]
    fn a_cluster_with_rotation_steps_in_flight_keeps_its_sites() {
        let mut s = scene("Reissue", "Reissue", "Reissue");
        s.set(at("b", &["x", "y"], NEW, "Reissue", 1).rotation_step_in_flight(NEW));
        assert_eq!(rotating(&s.plan()), ["b", "c"]);
        // A failed cluster goes after the healthy ones.
        let mut s = scene("Reissue", "Reissue", "Reissue");
        s.set(at("a", &["x", "y"], NEW, "Reissue", 0).stalled());
        assert_eq!(rotating(&s.plan()), ["b", "c"]);
    }

    /// Two failed clusters sharing sites (lone members that may not restart, say): the one
    /// without the grant only waits and no longer looks failed. Without the mesh remembering
    /// that it failed, it took the sites back on every pass and the two changed places for
    /// ever (a status write per pass; soak `CleanRotation` seed 4 never settled).
    #[test]
    fn failed_clusters_sharing_sites_do_not_take_them_from_each_other() {
        let mut s = scene("Reissue", "Reissue", "Done");
        s.set(at("a", &["x", "y"], NEW, "Reissue", 0).stalled());
        let plan = s.step();
        assert_eq!(rotating(&plan), ["b"], "b gets its turn before failed a");
        let cs = plan.status.certificates.as_ref().expect("certificates");
        assert_eq!(cs.failed, ["a"]);
        // b fails too; a, without its grant, only waits now.
        s.set(at("a", &["x", "y"], NEW, "Reissue", 0));
        s.set(at("b", &["x", "y"], NEW, "Reissue", 0).stalled());
        for pass in 0..3 {
            let plan = s.step();
            assert_eq!(rotating(&plan), ["b"], "pass {pass}: b keeps its sites");
            let cs = plan.status.certificates.as_ref().expect("certificates");
            assert_eq!(cs.failed, ["a", "b"], "pass {pass}");
            assert_eq!(plan.status.phase, MeshPhase::Degraded, "pass {pass}");
        }
        // b gets through the phase (fixed by hand): a, still remembered, takes the sites.
        s.set(at("b", &["x", "y"], NEW, "RemoveOldTrust", 0));
        let plan = s.step();
        assert_eq!(rotating(&plan), ["a"]);
        let cs = plan.status.certificates.as_ref().expect("certificates");
        assert_eq!(cs.failed, ["a"]);
        // Once the mesh's phase changes, nobody is remembered as failed.
        s.set(at("a", &["x", "y"], NEW, "RemoveOldTrust", 0));
        let plan = s.step();
        assert_eq!(phase(&plan), Some("RemoveOldTrust"));
        let cs = plan.status.certificates.as_ref().expect("certificates");
        assert!(cs.failed.is_empty(), "{cs:?}");
    }

    /// A cluster whose force intent runs a later phase (it says so in its status) is granted
    /// the rotation ahead of the mesh's phase, sites permitting; without it, it waits.
    #[test]
    fn a_cluster_forcing_a_later_phase_is_granted_ahead_of_the_mesh() {
        let s = scene("AddTrust", "Reissue", "Reissue");
        assert_eq!(rotating(&s.plan()), ["a"], "b and c wait for a");
        let mut s = scene("AddTrust", "Reissue", "Reissue");
        s.set(at("c", &["z"], NEW, "Reissue", 0).forcing("Reissue"));
        let plan = s.plan();
        assert_eq!(phase(&plan), Some("AddTrust"));
        assert_eq!(rotating(&plan), ["a", "c"]);
        let grant = admission_for("m", &s.mesh.spec, Some(&plan.status), "c").rotation;
        assert!(grant.is_some_and(|g| g.waiting.is_none()));
        // b shares a's sites: forcing, it still waits for them.
        let mut s = scene("AddTrust", "Reissue", "Reissue");
        s.set(at("b", &["x", "y"], NEW, "Reissue", 0).forcing("Reissue"));
        assert_eq!(rotating(&s.plan()), ["a"]);
    }

    /// Every cluster done: those whose members are due for renewal are granted by free sites
    /// (a and b share theirs: one at a time), renewal steps in flight keep theirs; a pause
    /// grants nobody.
    #[test]
    fn renewals_go_one_job_per_site_across_the_mesh() {
        let due = |b: ClusterBuilder| b.renewal_due("m0");
        let mut s = scene("Done", "Done", "Done");
        s.set(due(at("a", &["x", "y"], NEW, "Done", 1)));
        s.set(due(at("b", &["x", "y"], NEW, "Done", 1)));
        s.set(due(at("c", &["z"], NEW, "Done", 1)));
        let plan = s.plan();
        assert_eq!(phase(&plan), Some("Done"));
        assert_eq!(rotating(&plan), ["a", "c"]);
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        s.set(due(
            at("b", &["x", "y"], NEW, "Done", 1).rotation_step_in_flight(NEW)
        ));
        assert_eq!(rotating(&s.plan()), ["b", "c"]);
        let s = scene("Done", "Done", "Done");
        assert!(rotating(&s.plan()).is_empty(), "nothing due");
    }

    #[test]
    fn members_without_a_site_share_none() {
        let s = mesh("1.0.0")
            .tier("t", &["a", "b"])
            .certificates()
            .scene()
            .with(cluster("a").ready("1.0.0").rotation(NEW, "AddTrust", 0))
            .with(cluster("b").ready("1.0.0").rotation(NEW, "AddTrust", 0))
            .with_ca(ca());
        assert_eq!(rotating(&s.plan()), ["a", "b"]);
    }

    #[test]
    fn from_rest_the_rotation_goes_first_and_no_rollout_starts() {
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.mesh.spec.version = "2.0.0".into();
        let plan = s.plan();
        assert!(plan.status.rollout.is_none(), "no rollout while rotating");
        assert!(plan.status.admitted.is_empty());
        assert_eq!(rotating(&plan), ["a", "c"]);
        assert_says(
            plan.status.message.as_deref(),
            "rotating the CA to 4e44e44e44e4: phase AddTrust",
        );
        // Once every cluster is on the new CA, the rollout starts.
        let mut s = scene("Done", "Done", "Done");
        s.mesh.spec.version = "2.0.0".into();
        let plan = s.plan();
        assert_eq!(phase(&plan), Some("Done"));
        assert!(rotating(&plan).is_empty());
        assert!(plan.status.rollout.is_some());
        assert!(!plan.status.admitted.is_empty());
    }

    #[test]
    fn a_rollout_under_way_finishes_first() {
        // Start a rollout to 2.0.0 with every cluster on the new CA.
        let mut s = scene("Done", "Done", "Done");
        s.mesh.spec.version = "2.0.0".into();
        let plan = s.step();
        assert!(!plan.status.admitted.is_empty());
        // The CA changes under it while b is part-way: the rollout goes on, nobody rotates.
        s.set(
            cluster("a")
                .ready("1.0.0")
                .sites(&["x", "y"])
                .rotation(NEW, "AddTrust", 0),
        );
        s.set(
            cluster("b")
                .members_run(&["2.0.0", "1.0.0"])
                .sites(&["x", "y"])
                .rotation(NEW, "Done", 0),
        );
        let plan = s.step();
        assert!(rotating(&plan).is_empty());
        assert!(!plan.status.admitted.is_empty(), "the rollout keeps moving");
        let c = plan.status.certificates.as_ref().expect("written");
        let why = "the CA rotation waits for the clusters part-way in the rollout to 2.0.0 to finish their upgrade";
        assert_eq!(c.waiting.as_deref(), Some(why));
        let grant = admission_for("mesh", &s.mesh.spec, Some(&plan.status), "a")
            .rotation
            .expect("the mesh declares certificates");
        assert_eq!(grant.waiting, Some(format!("mesh mesh: {why}")));
    }

    /// A layered cluster part-way (its standby on os 2.0.0, its active on 1.0.0) between two
    /// steps, every member on the same effective version: still part-way, so the rotation
    /// waits for its upgrade (it started, and handed over between members on different
    /// software: soak seeds 13061, 13229). Components each member hosts alone do not count.
    #[test]
    fn a_layered_cluster_part_way_between_steps_finishes_its_upgrade_first() {
        let layered = |standby_os: &str| {
            cluster("b")
                .members_run(&["1.0.0"])
                .sites(&["x", "y"])
                .rotation(NEW, "AddTrust", 0)
                .component(0, "os", "1.0.0")
                .component(1, "os", standby_os)
                .component(1, "agent", "9.0.0")
        };
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.mesh.spec.version = "2.0.0".into();
        s.set(layered("2.0.0"));
        let plan = s.plan();
        assert!(rotating(&plan).is_empty(), "{:?}", rotating(&plan));
        let c = plan.status.certificates.as_ref().expect("written");
        assert_says(
            c.waiting.as_deref(),
            "the CA rotation waits for the clusters part-way in the rollout",
        );
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.mesh.spec.version = "2.0.0".into();
        s.set(layered("1.0.0"));
        assert!(!rotating(&s.plan()).is_empty(), "same layers: at rest");
    }

    /// A rollout open with nobody part-way: a cluster at rest would wait for the rotation (its
    /// rotation goes first from rest) and the mesh for the rollout, for ever. The rotation
    /// goes first and the rollout goes on after it.
    #[test]
    fn a_rollout_open_with_nobody_part_way_lets_the_rotation_go_first() {
        let mut s = scene("Done", "Done", "Done");
        s.mesh.spec.version = "2.0.0".into();
        let plan = s.step();
        assert!(!plan.status.admitted.is_empty(), "the rollout started");
        // Every cluster reports `phase` for the new CA.
        let all_in = |s: &mut Scene, phase: &str| {
            for (name, sites) in [("a", &["x", "y"][..]), ("b", &["x", "y"]), ("c", &["z"])] {
                s.set(at(name, sites, NEW, phase, 0));
            }
        };
        all_in(&mut s, "AddTrust");
        let plan = s.step();
        assert_eq!(rotating(&plan), ["a", "c"]);
        assert!(
            plan.status.admitted.is_empty(),
            "nobody moves for the rollout"
        );
        assert!(plan.status.rollout.is_some(), "the rollout stays open");
        // Done everywhere: the rollout goes on.
        all_in(&mut s, "Done");
        let plan = s.step();
        assert!(rotating(&plan).is_empty());
        assert!(!plan.status.admitted.is_empty());
    }

    /// Soak (RotationDuringRollout, seed 102): tier t0 was done when the CA changed; its
    /// clusters, on the target, then waited for the rotation, so they were no longer Ready and
    /// the mesh took t0 for unfinished again, re-admitting them and dropping b of t1, which was
    /// part-way: b could not finish, the rotation waited for it, for ever. A cluster on the
    /// target with nothing in flight that waits for the rotation is done with the rollout.
    #[test]
    fn a_cluster_on_the_target_waiting_for_the_rotation_is_done_with_the_rollout() {
        use crate::api::ClusterPhase;
        // a waits for the rotation on `a_runs`, b is part-way to 2.0.0.
        let two_tiers = |a_runs: &str| {
            mesh("2.0.0")
                .tier("t0", &["a"])
                .tier("t1", &["b"])
                .certificates()
                .scene()
                .with(
                    cluster("a")
                        .ready(a_runs)
                        .phase(ClusterPhase::Waiting)
                        .rotation(NEW, "AddTrust", 0),
                )
                .with(
                    cluster("b")
                        .members_run(&["2.0.0", "1.0.0"])
                        .rotation(NEW, "AddTrust", 0),
                )
                .with_ca(ca())
        };
        let mut s = two_tiers("2.0.0");
        let plan = s.step();
        assert!(plan.status.rollout.is_some(), "the rollout starts");
        let admitted: Vec<&str> = plan
            .status
            .admitted
            .iter()
            .map(|a| a.cluster.as_str())
            .collect();
        assert_eq!(admitted, ["b"], "b finishes its upgrade");
        assert!(rotating(&plan).is_empty(), "the rotation waits for b");
        // b done too: the rollout is complete and the rotation runs.
        s.set(
            cluster("b")
                .ready("2.0.0")
                .phase(ClusterPhase::Waiting)
                .rotation(NEW, "AddTrust", 0),
        );
        let plan = s.step();
        assert!(plan.status.admitted.is_empty());
        assert_eq!(rotating(&plan), ["a", "b"]);
        // A cluster waiting for the rotation on the old version is not done.
        assert_eq!(
            two_tiers("1.0.0").plan().status.progress.as_deref(),
            Some("0/2")
        );
    }

    #[test]
    fn conflicts_hold_the_start_but_not_a_rotation_under_way() {
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.set(at("c", &["z"], NEW, "AddTrust", 0).conflicts(2));
        let plan = s.plan();
        assert!(rotating(&plan).is_empty());
        assert_eq!(plan.status.phase, MeshPhase::Waiting);
        assert_eq!(
            plan.status.message.as_deref(),
            Some("the CA rotation does not start while c report replication conflicts")
        );
        // Once a site has a member on the new CA, the rotation is under way.
        s.set(at("a", &["x", "y"], NEW, "AddTrust", 1));
        assert_eq!(rotating(&s.plan()), ["a", "c"]);
    }

    #[test]
    fn an_unusable_ca_stalls_the_mesh_and_rotates_nobody() {
        let s = scene("AddTrust", "AddTrust", "AddTrust").with_ca(CaInput::Unusable {
            reason: "CAExpired",
            message: "the CA expired".into(),
        });
        let plan = s.plan();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        assert!(condition_true(&plan.status.conditions, cond::STALLED));
        assert_eq!(phase(&plan), Some("Invalid"));
        assert!(rotating(&plan).is_empty());
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.ca = None;
        assert_eq!(phase(&s.plan()), Some("Invalid"), "not read yet");
    }

    /// A cluster that stalls in the rotation (a lone member that may not restart, say) holds
    /// the mesh in its phase for good: the mesh is Degraded and names it (not Progressing
    /// forever), while the others finish the phase.
    #[test]
    fn a_failed_cluster_holding_the_phase_degrades_the_mesh() {
        let mut s = scene("Reissue", "Reissue", "RemoveOldTrust");
        s.set(
            cluster("a")
                .ready("1.0.0")
                .sites(&["x", "y"])
                .rotation(NEW, "Reissue", 0)
                .stalled(),
        );
        let plan = s.plan();
        assert_eq!(phase(&plan), Some("Reissue"));
        assert_eq!(
            rotating(&plan),
            ["b"],
            "b finishes the phase (a waits for its sites)"
        );
        assert_eq!(plan.status.phase, MeshPhase::Degraded);
        assert!(condition_true(&plan.status.conditions, cond::DEGRADED));
        assert!(
            plan.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("failed clusters hold the rotation: a")),
            "{:?}",
            plan.status.message
        );
        // A failed cluster already on the target holds nothing.
        let mut s = scene("Reissue", "Reissue", "Reissue");
        s.set(
            cluster("c")
                .ready("1.0.0")
                .sites(&["z"])
                .rotation(NEW, "Done", 0)
                .stalled(),
        );
        let plan = s.plan();
        assert_eq!(plan.status.phase, MeshPhase::Progressing);
        assert!(!condition_true(&plan.status.conditions, cond::DEGRADED));
    }

    #[test]
    fn done_everywhere_is_ready_and_a_paused_mesh_rotates_nobody() {
        let plan = scene("Done", "Done", "Done").plan();
        assert_eq!(phase(&plan), Some("Done"));
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        let mut s = scene("AddTrust", "AddTrust", "AddTrust");
        s.mesh.spec.paused = true;
        let plan = s.plan();
        assert!(rotating(&plan).is_empty());
        assert_eq!(plan.status.phase, MeshPhase::Paused);
    }

    #[test]
    fn each_cluster_learns_its_grant_and_why_it_waits() {
        let mut s = scene("Reissue", "Reissue", "AddTrust");
        let plan = s.step();
        let grant = |name: &str| {
            admission_for("mesh", &s.mesh.spec, Some(&plan.status), name)
                .rotation
                .expect("the mesh declares certificates")
        };
        let c = grant("c");
        assert!(c.waiting.is_none());
        assert_eq!(c.phase, Some(RotationPhase::AddTrust));
        assert_eq!(c.target.as_deref(), Some(NEW));
        assert_eq!(
            grant("a").waiting.as_deref(),
            Some(
                "mesh mesh: phase AddTrust runs on the other clusters first (every cluster completes a phase before any starts the next)"
            )
        );
        let plan = scene("Reissue", "Reissue", "Reissue").plan();
        let b = admission_for("mesh", &s.mesh.spec, Some(&plan.status), "b")
            .rotation
            .expect("declared");
        let why = b.waiting.unwrap_or_default();
        assert!(
            why.contains("waiting for a site that a rotating cluster uses"),
            "{why}"
        );
        s.mesh.spec.certificates = None;
        assert!(
            admission_for("mesh", &s.mesh.spec, Some(&plan.status), "b")
                .rotation
                .is_none()
        );
    }
}
