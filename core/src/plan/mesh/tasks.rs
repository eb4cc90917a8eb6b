//! Once-per-mesh steps (`spec.tasks`): content uploaded once per mesh, not per core. A task
//! runs once per rollout (of the directions it names), on one member of its cluster, once
//! every cluster of its `after` tier is done; the next tier in the rollout's order starts only
//! once it succeeded, and after the last tier the rollout completes only then.
//!
//! The mesh asks the cluster through its admission (`admission_for`: the tasks of
//! `status.tasks` started and not succeeded); the cluster records the step before sending it,
//! retries it with its `upgrade.retries` and reports in its `status.tasks`, which this stage
//! mirrors. The task's id is `<mesh>.<task>.r<rollout log id>`: stable across operator
//! restarts (it is in the status) and new for every rollout.
//!
//! Owns: `status.tasks`, their log entries (under the rollout's), the
//! `TaskStarted`/`TaskSucceeded`/`TaskFailed` events, `Stalled/TaskFailed`, and the gate tasks
//! put on admissions and on completion. May use: `read`, `rollout`, `plan::stall`.

use crate::api::{
    Direction, LogMode, LogResult, LogScope, MeshSpec, MeshStatus, MeshTaskStatus, TaskState,
    Timestamp,
};
use crate::plan::observe::PlanEvent;
use crate::plan::stall::Stall;

use super::read::Clusters;
use super::rollout::{log, open_version};

/// What the tasks let the rest of the pass do.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tasks {
    /// Tiers at or past this position in the rollout's order admit nobody: a task after an
    /// earlier tier has not succeeded.
    pub(super) hold_from: Option<usize>,
    /// Some task of the rollout has not succeeded (the rollout is not complete).
    pub(super) owed: bool,
    /// What the rollout waits for, one line per task started and not done.
    pub(super) waiting: Vec<String>,
    /// A task failed every attempt.
    pub(super) stall: Option<Stall>,
}

/// The mesh's id of `task` in the rollout whose log entry is `rollout`.
pub fn task_id(mesh: &str, task: &str, rollout: u64) -> String {
    format!("{mesh}.{task}.r{rollout}")
}

/// The position of tier `ti` in the rollout's order.
pub(super) fn position(ti: usize, tiers: usize, direction: Direction) -> usize {
    match direction {
        Direction::Upgrade => ti,
        Direction::Backout => tiers.saturating_sub(ti + 1),
    }
}

/// What one pass reads.
pub(super) struct Pass<'x, 'a> {
    pub(super) mesh: &'a str,
    pub(super) spec: &'a MeshSpec,
    pub(super) clusters: &'x Clusters<'a>,
    pub(super) direction: Direction,
    /// No new task starts while the mesh is paused (those started go on).
    pub(super) paused: bool,
    pub(super) now: Timestamp,
}

/// Bring `status.tasks` up to date for the open rollout and say what they hold.
pub(super) fn run(pass: &Pass<'_, '_>, st: &mut MeshStatus, events: &mut Vec<PlanEvent>) -> Tasks {
    let mut out = Tasks::default();
    let Some(rollout) = st.rollout.clone() else {
        return out;
    };
    if (pass.spec.tasks.is_empty() && st.tasks.is_empty())
        || open_version(st).is_none()
        || rollout.reconcile
    {
        // No task at all (the sweep below is not made on every pass of a large mesh), the
        // rollout is over (its tasks are history), or no cluster changes version in it (a
        // member joins or leaves): no task is owed.
        return out;
    }
    let Pass {
        mesh,
        spec,
        clusters,
        direction,
        paused,
        now,
    } = *pass;
    let n = spec.tiers.len();
    let mut tier_done = vec![true; n];
    for s in clusters.sums.iter().filter(|s| !s.done) {
        if let Some(d) = tier_done.get_mut(s.tier as usize) {
            *d = false;
        }
    }
    let before = std::mem::take(&mut st.tasks);
    // Tasks of an earlier rollout that never finished end with it.
    for old in &before {
        if old.id != task_id(mesh, &old.name, rollout.log_id)
            && let Some(id) = old.log_id
            && st
                .log
                .iter()
                .any(|e| e.id == id && e.result == LogResult::Running)
        {
            log(st).close(id, LogResult::Cancelled, "superseded by a new rollout", now);
        }
    }
    for t in spec.tasks.iter().filter(|t| t.on.runs_on(direction)) {
        // An unknown tier is an invalid spec, held before this stage.
        let Some(ti) = spec.tiers.iter().position(|x| x.name == t.after) else {
            continue;
        };
        let id = task_id(mesh, &t.name, rollout.log_id);
        let mut ts = before
            .iter()
            .find(|x| x.id == id)
            .cloned()
            .unwrap_or_else(|| MeshTaskStatus {
                name: t.name.clone(),
                id: id.clone(),
                cluster: t.cluster.clone(),
                ..Default::default()
            });
        let home = clusters.find(&t.cluster);
        let reported = home
            .and_then(|s| s.view.status)
            .and_then(|s| s.tasks.iter().find(|r| r.id == id));
        if ts.state != TaskState::Succeeded {
            if ts.started_at.is_none() && tier_done[ti] && !paused {
                start(st, spec, t, &mut ts, rollout.log_id, events, now);
            }
            if ts.started_at.is_some()
                && let Some(r) = reported
            {
                mirror(st, &mut ts, r, events, now);
            }
        }
        if ts.state != TaskState::Succeeded {
            out.owed = true;
            let pos = position(ti, n, direction);
            out.hold_from = Some(out.hold_from.map_or(pos + 1, |h| h.min(pos + 1)));
            if ts.started_at.is_some() {
                out.waiting.push(waiting_line(&ts));
            }
            if ts.state == TaskState::Failed && out.stall.is_none() {
                out.stall = Some(Stall::TaskFailed {
                    task: ts.name.clone(),
                    cluster: ts.cluster.clone(),
                    member: ts.member.clone(),
                    failures: ts.failures,
                    error: ts.last_error.clone().unwrap_or_default(),
                });
            }
            // Due, not running, and its cluster stopped for another reason (a Zombie member,
            // a rollback): nothing runs it until a human fixes the cluster.
            if ts.started_at.is_some()
                && ts.state == TaskState::Pending
                && out.stall.is_none()
                && let Some(h) = home.filter(|h| h.failed)
            {
                // Its phase only: the mesh is planned again when a cluster's phase changes,
                // not when its message does.
                out.stall = Some(Stall::TaskBlocked {
                    task: ts.name.clone(),
                    cluster: ts.cluster.clone(),
                    phase: format!("{:?}", h.view.status.map(|s| s.phase).unwrap_or_default()),
                });
            }
        }
        st.tasks.push(ts);
    }
    out
}

/// The task's tier is done: ask its cluster (the admission carries it from now on).
fn start(
    st: &mut MeshStatus,
    spec: &MeshSpec,
    t: &crate::api::MeshTaskSpec,
    ts: &mut MeshTaskStatus,
    rollout: u64,
    events: &mut Vec<PlanEvent>,
    now: Timestamp,
) {
    ts.started_at = Some(now);
    ts.state = TaskState::Pending;
    let on = match &t.member {
        Some(m) => format!("{} member {m}", t.cluster),
        None => format!("{}'s active member", t.cluster),
    };
    let message = format!(
        "task {} ({}) on {on}, after tier {}",
        t.name,
        t.task_name(),
        t.after
    );
    ts.log_id = Some(log(st).open(
        Some(rollout),
        "task",
        LogScope::Cluster,
        &t.cluster,
        Some(&spec.version),
        LogMode::Automatic,
        message.clone(),
        now,
    ));
    events.push(PlanEvent {
        warning: false,
        reason: "TaskStarted".into(),
        message,
    });
}

/// The cluster's record of the task, copied into the mesh's; its end closes the log entry.
fn mirror(
    st: &mut MeshStatus,
    ts: &mut MeshTaskStatus,
    r: &crate::api::ClusterTaskStatus,
    events: &mut Vec<PlanEvent>,
    now: Timestamp,
) {
    let was = ts.state;
    ts.member = r.member.clone().or(ts.member.take());
    ts.failures = r.failures;
    ts.last_error = r.last_error.clone();
    ts.state = r.state;
    let at = format!(
        "cluster {}, member {}",
        ts.cluster,
        ts.member.as_deref().unwrap_or("?")
    );
    match r.state {
        TaskState::Succeeded => {
            ts.finished_at = Some(r.finished_at.unwrap_or(now));
            let message = format!("task {} succeeded on {at}", ts.name);
            if let Some(id) = ts.log_id {
                log(st).close(id, LogResult::Succeeded, message.clone(), now);
            }
            events.push(PlanEvent {
                warning: false,
                reason: "TaskSucceeded".into(),
                message,
            });
        }
        TaskState::Failed if was != TaskState::Failed => events.push(PlanEvent {
            warning: true,
            reason: "TaskFailed".into(),
            message: format!(
                "task {} failed {} times on {at}: {}",
                ts.name,
                ts.failures,
                ts.last_error.as_deref().unwrap_or_default()
            ),
        }),
        _ => {}
    }
}

/// One line on a task started and not done. No time in it: it is status, written only when
/// it changes.
fn waiting_line(ts: &MeshTaskStatus) -> String {
    let state = match ts.state {
        TaskState::Running => format!("runs on {}", ts.member.as_deref().unwrap_or(&ts.cluster)),
        TaskState::Failed => "failed".to_string(),
        _ if ts.failures > 0 => format!(
            "retries after {} failures (last: {})",
            ts.failures,
            ts.last_error.as_deref().unwrap_or_default()
        ),
        _ => format!("waits for cluster {}", ts.cluster),
    };
    format!("task {} {state}", ts.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ClusterTaskStatus, MeshPhase, MeshTaskSpec, StepAction, TaskRollouts, condition as cond,
    };
    use crate::fixtures::mesh::{Scene, admitted, cluster, mesh};
    use crate::plan::mesh::admission_for;

    fn upload(after: &str, cluster: &str) -> MeshTaskSpec {
        MeshTaskSpec {
            name: "upload".into(),
            task: Some("upload-content".into()),
            cluster: cluster.into(),
            member: None,
            after: after.into(),
            on: TaskRollouts::Upgrade,
        }
    }

    /// Source `src`, destinations `d1` and `d2`; `upload` after the source tier, on `src`.
    fn source_and_destinations() -> Scene {
        let mut spec = mesh("2.0.0")
            .tier("source", &["src"])
            .tier("destinations", &["d1", "d2"])
            .max_parallel(2)
            .build();
        spec.tasks.push(upload("source", "src"));
        Scene::new(spec)
            .with(cluster("src").ready("1.0.0"))
            .with(cluster("d1").ready("1.0.0"))
            .with(cluster("d2").ready("1.0.0"))
    }

    /// `c`'s status reports the task `id` in `state` (after `failures` failures).
    fn reports(scene: &mut Scene, c: &str, id: &str, state: TaskState, failures: u32) {
        let st = scene
            .clusters
            .iter_mut()
            .find(|x| x.name == c)
            .and_then(|x| x.status.as_mut())
            .expect("a status");
        st.tasks = vec![ClusterTaskStatus {
            id: id.into(),
            name: "upload".into(),
            state,
            member: Some(format!("{c}-0")),
            attempts: failures + 1,
            failures,
            last_error: (failures > 0).then(|| "exit 2".to_string()),
            ..Default::default()
        }];
        // As the cluster planner reports it: busy with the step, Ready while backing off,
        // Stalled once it failed for good.
        st.steps.clear();
        st.phase = match state {
            TaskState::Failed => crate::api::ClusterPhase::Stalled,
            _ => crate::api::ClusterPhase::Ready,
        };
        if state == TaskState::Running {
            st.phase = crate::api::ClusterPhase::Progressing;
            let mut s =
                crate::fixtures::cluster::step(StepAction::Task, &format!("{c}-0"), scene.now);
            s.task = Some(crate::api::TaskParams {
                id: id.into(),
                task: "upload-content".into(),
            });
            st.steps = vec![s];
        }
    }

    fn reasons(plan: &crate::plan::mesh::MeshPlan) -> Vec<&str> {
        plan.events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_task_runs_once_after_its_tier_and_holds_the_next_tier_until_it_succeeded() {
        let mut scene = source_and_destinations();
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["src"], "the source first");
        assert_eq!(plan.status.tasks[0].state, TaskState::Pending);
        assert!(plan.status.tasks[0].started_at.is_none(), "not due yet");
        let grant = admission_for("mesh", &scene.mesh.spec, Some(&plan.status), "src");
        assert!(
            grant.tasks.is_empty(),
            "nothing asked before the tier is done"
        );

        // The source is done: the task starts, the destinations wait for it.
        scene.set(cluster("src").ready("2.0.0"));
        let plan = scene.step();
        assert!(admitted(&plan).is_empty(), "{:?}", plan.status.admitted);
        assert!(reasons(&plan).contains(&"TaskStarted"), "{:?}", plan.events);
        let id = plan.status.tasks[0].id.clone();
        assert!(id.starts_with("mesh.upload.r"), "{id}");
        let grant = admission_for("mesh", &scene.mesh.spec, Some(&plan.status), "src");
        assert_eq!(grant.tasks.len(), 1);
        assert_eq!(grant.tasks[0].task, "upload-content");
        assert_eq!(grant.tasks[0].version, "2.0.0");
        assert!(
            admission_for("mesh", &scene.mesh.spec, Some(&plan.status), "d1")
                .tasks
                .is_empty()
        );
        assert_eq!(plan.status.phase, MeshPhase::Waiting);
        assert!(
            plan.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("task upload")),
            "{:?}",
            plan.status.message
        );

        // Running on the source (its cluster is busy with it, still done with the rollout).
        reports(&mut scene, "src", &id, TaskState::Running, 0);
        let plan = scene.step();
        assert!(admitted(&plan).is_empty());
        assert_eq!(plan.status.tasks[0].state, TaskState::Running);
        assert_eq!(
            plan.status.tiers[0].done, 1,
            "the task does not undo the tier"
        );

        // Succeeded: the destinations start, and it is never asked again.
        reports(&mut scene, "src", &id, TaskState::Succeeded, 0);
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1", "d2"]);
        assert!(reasons(&plan).contains(&"TaskSucceeded"));
        let grant = admission_for("mesh", &scene.mesh.spec, Some(&plan.status), "src");
        assert!(grant.tasks.is_empty());
        let entry = plan
            .status
            .log
            .iter()
            .find(|e| e.action == "task")
            .expect("a log entry");
        assert_eq!(entry.result, LogResult::Succeeded);
        assert_eq!(entry.parent, plan.status.rollout.as_ref().map(|r| r.log_id));
        // Later passes change nothing about it.
        let again = scene.step();
        assert_eq!(again.status.tasks, plan.status.tasks);
        assert!(!reasons(&again).contains(&"TaskStarted"));
    }

    #[test]
    fn a_task_after_the_last_tier_holds_the_rollout_s_completion() {
        let mut spec = mesh("2.0.0").tier("only", &["a"]).build();
        spec.tasks.push(upload("only", "a"));
        let mut scene = Scene::new(spec).with(cluster("a").ready("1.0.0"));
        scene.step();
        scene.set(cluster("a").ready("2.0.0"));
        let plan = scene.step();
        assert_ne!(plan.status.phase, MeshPhase::Ready, "the task is owed");
        assert!(!reasons(&plan).contains(&"RolloutComplete"));
        let id = plan.status.tasks[0].id.clone();
        reports(&mut scene, "a", &id, TaskState::Succeeded, 0);
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Ready);
        assert!(reasons(&plan).contains(&"RolloutComplete"));
    }

    #[test]
    fn a_task_that_failed_every_attempt_stalls_the_mesh_with_its_error() {
        let mut scene = source_and_destinations();
        scene.step();
        scene.set(cluster("src").ready("2.0.0"));
        let plan = scene.step();
        let id = plan.status.tasks[0].id.clone();
        reports(&mut scene, "src", &id, TaskState::Pending, 1);
        let plan = scene.step();
        assert!(
            plan.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("retries after 1 failures")),
            "{:?}",
            plan.status.message
        );
        reports(&mut scene, "src", &id, TaskState::Failed, 3);
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        let stalled = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == cond::STALLED)
            .expect("Stalled");
        assert_eq!(stalled.reason, "TaskFailed");
        assert!(stalled.message.contains("exit 2") && stalled.message.contains("cluster src"));
        assert!(admitted(&plan).is_empty(), "the destinations wait");
        assert_eq!(
            reasons(&plan)
                .iter()
                .filter(|r| **r == "TaskFailed")
                .count(),
            1
        );
        // Still asked of the cluster: a retry there runs it again.
        let grant = admission_for("mesh", &scene.mesh.spec, Some(&plan.status), "src");
        assert_eq!(grant.tasks.len(), 1);
    }

    #[test]
    fn a_task_runs_only_on_the_rollouts_it_names_and_a_backout_reverses_the_order() {
        // Upgrade only: a backout skips it.
        let mut scene = source_and_destinations();
        for c in ["src", "d1", "d2"] {
            scene.set(cluster(c).ready("3.0.0"));
        }
        let plan = scene.step();
        assert_eq!(
            plan.status.rollout.as_ref().map(|r| r.direction),
            Some(Direction::Backout)
        );
        assert!(plan.status.tasks.is_empty());
        // Both: after the source tier, which a backout reaches last, so it holds completion.
        let mut scene = source_and_destinations();
        scene.mesh.spec.tasks[0].on = TaskRollouts::Both;
        for c in ["src", "d1", "d2"] {
            scene.set(cluster(c).ready("3.0.0"));
        }
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1", "d2"], "the destinations first");
        assert_eq!(plan.status.tasks.len(), 1);
        for c in ["src", "d1", "d2"] {
            scene.set(cluster(c).ready("2.0.0"));
        }
        let plan = scene.step();
        assert!(plan.status.tasks[0].started_at.is_some());
        assert_ne!(plan.status.phase, MeshPhase::Ready);
    }

    #[test]
    fn a_cluster_admitted_before_the_task_was_due_finishes_and_no_other_starts() {
        // A reversal or an earlier pass left d1 part-way and admitted: it finishes (a backout
        // is not held back), while d2 waits for the task.
        let mut scene = source_and_destinations();
        scene.step();
        scene.set(cluster("src").ready("2.0.0"));
        scene.set(cluster("d1").members(2).members_run(&["2.0.0", "1.0.0"]));
        let earlier = crate::api::Timestamp(scene.now.0 - 60_000);
        if let Some(st) = scene.mesh.status.as_mut() {
            st.admitted = vec![crate::api::Admitted {
                cluster: "d1".into(),
                version: "2.0.0".into(),
                direction: Direction::Upgrade,
                since: earlier,
            }];
        }
        let plan = scene.step();
        assert_eq!(admitted(&plan), ["d1"], "kept, and d2 not admitted");
        assert!(plan.status.tasks[0].started_at.is_some());
    }

    #[test]
    fn a_task_that_failed_leaves_no_stale_admission() {
        // The last tier is done and its task failed: nobody stays admitted.
        let mut spec = mesh("2.0.0").tier("only", &["a"]).build();
        spec.tasks.push(upload("only", "a"));
        let mut scene = Scene::new(spec).with(cluster("a").ready("1.0.0"));
        scene.step();
        scene.set(cluster("a").ready("2.0.0"));
        let plan = scene.step();
        let id = plan.status.tasks[0].id.clone();
        reports(&mut scene, "a", &id, TaskState::Failed, 2);
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        assert!(
            plan.status.admitted.is_empty(),
            "{:?}",
            plan.status.admitted
        );
    }

    #[test]
    fn a_rollout_that_changes_no_version_runs_no_task() {
        // Every cluster runs the mesh's version; src is not Ready (a member joins it).
        let mut spec = mesh("1.0.0")
            .tier("source", &["src"])
            .tier("destinations", &["d1"])
            .build();
        spec.tasks.push(upload("source", "src"));
        let mut scene = Scene::new(spec)
            .with(cluster("src").runs("1.0.0"))
            .with(cluster("d1").ready("1.0.0"));
        let plan = scene.step();
        assert!(plan.status.rollout.as_ref().is_some_and(|r| r.reconcile));
        scene.set(cluster("src").ready("1.0.0"));
        let plan = scene.step();
        assert!(plan.status.tasks.is_empty(), "{:?}", plan.status.tasks);
        assert_eq!(plan.status.phase, MeshPhase::Ready);
    }

    #[test]
    fn a_task_whose_cluster_is_stopped_stalls_the_mesh_with_the_cluster_s_reason() {
        let mut scene = source_and_destinations();
        scene.step();
        scene.set(cluster("src").ready("2.0.0"));
        scene.step();
        // src stops for another reason (a Zombie member) before it runs the task.
        scene.set(cluster("src").ready("2.0.0").stalled());
        let plan = scene.step();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        let stalled = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == cond::STALLED)
            .expect("Stalled");
        assert_eq!(stalled.reason, "TaskBlocked");
        assert!(
            stalled.message.contains("cluster src is Stalled"),
            "{}",
            stalled.message
        );
        assert_eq!(admitted(&plan), ["src"], "no destination starts");
    }

    #[test]
    fn a_paused_mesh_starts_no_task() {
        let mut scene = source_and_destinations();
        scene.step();
        scene.set(cluster("src").ready("2.0.0"));
        scene.mesh.spec.paused = true;
        let plan = scene.step();
        assert!(plan.status.tasks[0].started_at.is_none());
        scene.mesh.spec.paused = false;
        let plan = scene.step();
        assert!(plan.status.tasks[0].started_at.is_some());
    }
}
