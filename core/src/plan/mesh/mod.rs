//! The mesh planner: which clusters may move now. Pure, like the cluster planner.
//!
//! The mesh never talks to members: it reads the Clusters' specs and statuses and writes the
//! list of admitted clusters, which the cluster planner obeys. Tier order, `maxParallel`,
//! stagger, compatibility rules, preconditions and the takeover-capacity check live here.
//!
//! One pass is a pipeline of stages, each a module that only uses the ones listed before it
//! (and `types`, the input and output data):
//!
//! 1. [`read`] (with [`versions`]): summarise and index the clusters;
//! 2. [`holds`]: an invalid spec, an unreadable cluster, clusters not reported yet;
//! 3. [`rollout`]: the direction, and the rollout, tier and admission log entries;
//! 4. [`rotation`]: the mesh-wide CA rotation of `spec.certificates` (while it runs, no
//!    rollout starts and nobody is admitted for one; a rollout under way makes it wait);
//! 5. [`preconditions`]: backlog and conflicts at rest, the force intent;
//! 6. [`admission`] (with [`compat`] and [`capacity`]): tiers, slots, stagger, rules;
//! 7. [`summary`]: phase, message, conditions and wake.
//!
//! This module owns the public entry points and calls the stages in that order.

mod admission;
mod capacity;
mod compat;
mod deferred;
mod drain;
mod holds;
mod preconditions;
mod read;
mod rollout;
mod rotation;
mod summary;
mod tasks;
mod types;
mod versions;

pub use deferred::approval_name;
pub use tasks::task_id;
pub use types::{MeshClusterView, MeshInput, MeshIntents, MeshPlan, Outside, OutsideCluster};

use crate::api::{Direction, MeshPhase, MeshSpec, MeshStatus, MeshStrategyType, RotationPhase};
use crate::plan::observe::PlanEvent;
use crate::plan::observe::Wake;
use crate::plan::{Admission, RotationGrant, TaskGrant};

use admission::{Turn, admit};
use preconditions::Gate;

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
        rotation: mesh
            .certificates
            .as_ref()
            .map(|certs| rotation_grant(mesh_name, certs, status, cluster)),
        tasks: task_grants(mesh, status, cluster),
    }
}

/// The mesh's tasks `cluster` is to run now: started (their tier is done) and not succeeded.
fn task_grants(mesh: &MeshSpec, status: Option<&MeshStatus>, cluster: &str) -> Vec<TaskGrant> {
    let Some(st) = status else {
        return Vec::new();
    };
    let version = st.rollout.as_ref().map(|r| r.version.as_str());
    st.tasks
        .iter()
        .filter(|t| {
            t.cluster == cluster
                && t.started_at.is_some()
                && t.state != crate::api::TaskState::Succeeded
        })
        .filter_map(|t| {
            let spec = mesh.tasks.iter().find(|s| s.name == t.name)?;
            Some(TaskGrant {
                id: t.id.clone(),
                name: t.name.clone(),
                task: spec.task_name().to_string(),
                version: version.unwrap_or(&mesh.version).to_string(),
                member: spec.member.clone(),
            })
        })
        .collect()
}

/// What the mesh's `status.certificates` lets `cluster` do about the rotation. The reason
/// changes only with this cluster's situation (see `admission_for`).
fn rotation_grant(
    mesh_name: &str,
    certs: &crate::api::CertificatesSpec,
    status: Option<&MeshStatus>,
    cluster: &str,
) -> RotationGrant {
    let cs = status.and_then(|s| s.certificates.as_ref());
    let phase = cs
        .and_then(|c| c.phase.as_deref())
        .and_then(RotationPhase::parse);
    let admitted = cs.is_some_and(|c| c.rotating.iter().any(|r| r == cluster));
    let waiting = (!admitted).then(|| {
        let why = match cs {
            None => "has not read its CA yet".to_string(),
            Some(c) => match (&c.waiting, phase) {
                (Some(w), _) => w.clone(),
                (None, None) => "rotates no cluster now".to_string(),
                (None, Some(p)) => {
                    let mine = c.clusters.get(cluster).map(String::as_str);
                    if mine.and_then(RotationPhase::parse) == Some(p) || mine == Some("Unknown") {
                        format!(
                            "phase {}: waiting for a site that a rotating cluster uses (one rotation job per site across the mesh)",
                            p.as_str()
                        )
                    } else {
                        format!(
                            "phase {} runs on the other clusters first (every cluster completes a phase before any starts the next)",
                            p.as_str()
                        )
                    }
                }
            },
        };
        format!("mesh {mesh_name}: {why}")
    });
    RotationGrant {
        certificates: certs.clone(),
        target: cs.and_then(|c| c.target_ca.clone()),
        phase,
        waiting,
    }
}

pub fn plan_mesh(input: &MeshInput<'_>) -> MeshPlan {
    plan_mesh_from(input, input.mesh.status.cloned())
}

/// `plan_mesh` for a caller that owns the last status and replaces it with the plan's anyway:
/// `last` stands for `input.mesh.status` (which is not read) and is not copied.
pub fn plan_mesh_from(input: &MeshInput<'_>, last: Option<MeshStatus>) -> MeshPlan {
    let (spec, now) = (input.mesh.spec, input.now);
    let mut st = last.unwrap_or_default();
    st.observed_generation = input.mesh.generation;
    let mut events = Vec::new();
    let mut wake = Wake::Idle;
    let mut waiting: Vec<String> = Vec::new();
    let paused = spec.paused || input.intents.pause;

    // 1. Read the clusters.
    let clusters = read::read(input);
    // 2. Holds: nothing is decided past an invalid spec or an unreadable cluster.
    let holds = holds::check(input, &clusters);
    let total = (clusters.sums.len() + holds.unreadable.len()) as u32;
    let done = clusters.done_count();
    let all_done = done == total;
    let mut stalled = holds.stall(&mut st);
    // 3. Direction; 5. a new rollout passes the preconditions first.
    let direction = rollout::direction(&st, spec, &clusters.sums);
    let unreported = holds::unreported(&clusters, &st);
    // 4. The CA rotation: decided before a rollout may start (from rest it goes first).
    let mut failed: Vec<String> = Vec::new();
    let rotating = rotate(
        input,
        &clusters,
        &mut st,
        &mut stalled,
        paused,
        &mut events,
        &mut failed,
    );
    let mut unmet: Option<String> = None;
    if stalled.is_none() && !all_done && rotating.is_none() {
        if let Some(why) = &unreported {
            waiting.push(why.clone());
            wake = Wake::Busy;
        } else if rollout::is_new(&st, spec, direction) {
            let intents = input.intents;
            match preconditions::gate(
                spec,
                intents,
                &mut st,
                &clusters.sums,
                direction,
                &mut events,
            ) {
                Gate::Hold { failures } => {
                    stalled = Some(Gate::stall(spec, &failures));
                    unmet = Some(failures);
                    st.admitted.clear();
                }
                Gate::Go { forced } => {
                    rollout::start(
                        &mut st,
                        input.mesh.name,
                        spec,
                        direction,
                        rollout::Scope::of(&clusters.sums, total),
                        forced,
                        &mut events,
                        now,
                    );
                }
            }
        }
    }
    // 5b. The once-per-mesh tasks of the rollout: what is due starts, what is owed holds.
    let owed = if stalled.is_none() && unreported.is_none() && rotating.is_none() {
        let pass = tasks::Pass {
            mesh: input.mesh.name,
            spec,
            clusters: &clusters,
            direction,
            paused,
            now,
        };
        tasks::run(&pass, &mut st, &mut events)
    } else {
        tasks::Tasks::default()
    };
    waiting.extend(owed.waiting.iter().cloned());
    if !owed.waiting.is_empty() {
        wake = wake.min(Wake::Busy);
    }
    let mut tiers = rollout::tier_statuses(spec, &st.tiers, &clusters.sums);
    // Only deferred tiers are behind on an upgrade: the rollout proper is done.
    let reconcile = st.rollout.as_ref().is_some_and(|r| r.reconcile);
    let lag = (direction == Direction::Upgrade
        && !reconcile
        && !all_done
        && holds.unreadable.is_empty()
        && deferred::core_done(spec, &clusters.sums))
    .then(|| deferred::lagging(spec, &tiers))
    .flatten();
    if (all_done || lag.is_some()) && stalled.is_none() && !owed.owed {
        rollout::health_report(&mut st, spec, input.mesh.name, &clusters.sums, now);
        rollout::finish(&mut st, spec, total, lag.as_deref(), &mut events, now);
    }
    if all_done {
        // Nobody moves any more, whatever the tasks still owe.
        st.admitted.clear();
    }
    rollout::close_done_tiers(&mut st, &tiers, &mut events, now);
    let trigger_pass = deferred::Pass {
        mesh: input.mesh.name,
        spec,
        direction,
        now,
        approve: &input.intents.approve,
        reconcile: st.rollout.as_ref().is_some_and(|r| r.reconcile),
    };
    deferred::describe(
        &trigger_pass,
        &mut tiers,
        admission::active_tier(&clusters.sums, direction),
    );

    // 6. Admission.
    if rotating.is_some() {
        st.admitted.clear();
    }
    if stalled.is_none() && !all_done && unreported.is_none() && rotating.is_none() {
        let turn = Turn {
            spec,
            clusters: &clusters,
            direction,
            paused,
            now,
            force: input.intents.force.as_deref(),
            held_by_tasks: owed.hold_from,
            mesh: input.mesh.name,
            approve: &input.intents.approve,
        };
        let out = admit(&turn, &mut st, &mut tiers, &mut events);
        failed = out.failed;
        waiting.extend(out.waiting);
        wake = wake.min(out.wake);
        stalled = out.timed_out.or(out.blocked);
    }
    // A task that failed for good stalls the mesh; admission ran (the clusters it keeps are
    // those part-way, and no later tier starts), so the admissions are not stale.
    if stalled.is_none() {
        stalled = owed.stall.clone();
    }
    st.tiers = tiers;

    // 7. The summary.
    let outcome = summary::Outcome {
        rotating: rotating.as_deref(),
        stalled: stalled.as_ref(),
        paused,
        total,
        done,
        failed: &failed,
        waiting: &waiting,
        unmet: unmet.as_deref(),
        tasks_owed: owed.owed,
        lagging: lag.as_deref(),
        deferred_moving: deferred::moving(spec, &clusters.sums, &st),
    };
    summary::write(
        &mut st,
        &outcome,
        &clusters,
        &mut events,
        input.mesh.generation,
        now,
    );
    let wake = summary::wake(&st, wake);
    MeshPlan {
        status: st,
        events,
        wake,
    }
}

/// The rotation's stage (see [`rotation`]). `Some(message)` while it runs: the version
/// rollout stands still; a CA that cannot be used stalls the mesh. `failed` gets the clusters
/// that failed short of the target and so hold the rotation (the mesh is Degraded).
fn rotate(
    input: &MeshInput<'_>,
    clusters: &read::Clusters<'_>,
    st: &mut MeshStatus,
    stalled: &mut Option<crate::plan::stall::Stall>,
    paused: bool,
    events: &mut Vec<PlanEvent>,
    failed: &mut Vec<String>,
) -> Option<String> {
    let spec = input.mesh.spec;
    if stalled.is_some() {
        // Nothing is decided past a hold: nobody starts rotation steps either.
        if let Some(c) = st.certificates.as_mut() {
            c.rotating.clear();
        }
        return None;
    }
    let sit = rotation::Situation {
        ca: input.ca,
        rollout_open: rollout::open_version(st).map(str::to_string),
        paused,
    };
    match rotation::run(spec.certificates.is_some(), &sit, clusters, st, events) {
        rotation::Rotation::Idle | rotation::Rotation::WaitsForRollout => None,
        rotation::Rotation::Stalled(stall) => {
            *stalled = Some(stall);
            None
        }
        rotation::Rotation::Running {
            waiting,
            failed: held,
        } => {
            let msg = waiting.unwrap_or_else(|| {
                let c = st.certificates.as_ref();
                let phase = c.and_then(|c| c.phase.as_deref()).unwrap_or_default();
                let target = c
                    .and_then(|c| c.target_ca.as_deref())
                    .map(crate::plan::trust::short_id)
                    .unwrap_or_default();
                let moving = c.map(|c| c.rotating.join(", ")).unwrap_or_default();
                format!("rotating the CA to {target}: phase {phase} (rotating: {moving})")
            });
            let msg = if held.is_empty() {
                msg
            } else {
                format!(
                    "{msg}; failed clusters hold the rotation: {}",
                    held.join(", ")
                )
            };
            *failed = held;
            Some(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Direction;
    use crate::fixtures::mesh::{Scene, admitted, cluster, mesh};

    #[test]
    fn a_rollout_with_no_version_to_change_says_so() {
        // Every cluster runs the mesh's version; one is not Ready (a member joins it): the
        // mesh reconciles it, and neither the log nor the event announces an upgrade.
        let spec = mesh("1.0.0").tier("t", &["a", "b"]).build();
        let mut scene = Scene::new(spec)
            .with(cluster("a").ready("1.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let plan = scene.step();
        let started: Vec<&str> = plan
            .events
            .iter()
            .filter(|e| e.reason == "RolloutStarted")
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(started, ["reconcile at 1.0.0: no cluster changes version"]);
        assert_eq!(
            plan.status.log[0].message,
            "reconcile 2 clusters at 1.0.0 (no version changes)"
        );
        // A cluster behind the target makes it an upgrade again.
        let spec = mesh("2.0.0").tier("t", &["a", "b"]).build();
        let mut scene = Scene::new(spec)
            .with(cluster("a").ready("2.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let plan = scene.step();
        assert!(
            plan.events
                .iter()
                .any(|e| e.reason == "RolloutStarted" && e.message == "upgrade to 2.0.0"),
            "{:?}",
            plan.events
        );
    }

    #[test]
    fn a_rollout_runs_tier_by_tier_to_ready() {
        let spec = mesh("2.0.0")
            .tier("mgmt", &["m"])
            .tier("workers", &["w1", "w2"])
            .max_parallel(2)
            .rule("worker", "mgmt")
            .build();
        let mut scene = Scene::new(spec)
            .with(cluster("m").role("mgmt").ready("1.0.0"))
            .with(cluster("w1").role("worker").ready("1.0.0"))
            .with(cluster("w2").role("worker").ready("1.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["m"]);
        let reasons: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["RolloutStarted", "ClusterAdmitted"]);
        assert_eq!(plan.wake, Wake::Busy);
        scene.set(cluster("m").role("mgmt").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["w1", "w2"]);
        assert_eq!(plan.status.progress.as_deref(), Some("1/3"));
        scene.set(cluster("w1").role("worker").ready("2.0.0"));
        scene.set(cluster("w2").role("worker").ready("2.0.0"));
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        assert!(plan.status.admitted.is_empty());
        assert_eq!(plan.wake, Wake::Idle);
        let reasons: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["RolloutComplete", "TierComplete"]);
        // Converged: the next pass changes nothing.
        assert_eq!(scene.plan().status, plan.status);
    }

    #[test]
    fn a_held_precondition_stalls_and_a_force_starts_the_rollout() {
        let scene = mesh("2.0.0")
            .tier("t", &["a"])
            .scene()
            .with(cluster("a").ready("1.0.0").backlog(3));
        let plan = scene.plan();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        assert!(plan.status.rollout.is_none() && plan.status.admitted.is_empty());
        let forced = scene.forced("now").plan();
        assert_eq!(admitted(&forced), ["a"]);
        assert_eq!(
            forced.status.rollout.map(|r| r.direction),
            Some(Direction::Upgrade)
        );
    }

    #[test]
    fn the_summary_and_the_member_records_decide_the_same() {
        // b is part-way (mixed versions) and is admitted first, before c listed ahead of it.
        let with = mesh("2.0.0")
            .tier("t", &["a", "c", "b"])
            .scene()
            .with(cluster("a").ready("2.0.0"))
            .with(cluster("b").members_run(&["2.0.0", "1.0.0"]))
            .with(cluster("c").runs("1.0.0"));
        let mut without = with.clone();
        for c in &mut without.clusters {
            if let Some(st) = &mut c.status {
                st.running_versions = None;
            }
        }
        let plan = with.plan();
        assert_eq!(admitted(&plan), ["b"]);
        assert_eq!(plan, without.plan());
    }

    #[test]
    fn admission_follows_the_mesh_status() {
        let scene = Scene::one_tier(
            "2.0.0",
            [cluster("a").runs("1.0.0"), cluster("b").runs("1.0.0")],
        );
        let (plan, spec) = (scene.plan(), &scene.mesh.spec);
        let a = admission_for("mesh", spec, Some(&plan.status), "a");
        assert!(a.admitted && a.reason.is_none());
        let b = admission_for("mesh", spec, Some(&plan.status), "b");
        assert!(!b.admitted);
        assert_eq!(
            b.reason.as_deref(),
            Some("mesh mesh: waiting for its turn (see its status)")
        );
    }
}
