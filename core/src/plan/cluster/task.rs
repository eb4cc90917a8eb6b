//! Once-per-mesh steps (a Mesh's `spec.tasks`) the mesh asks this cluster to run: one agent
//! `task` operation on one member (the declared one, else the active), recorded before it is
//! sent. Its operation id comes from the mesh's id of the task and the attempt, never from this
//! cluster's status, so a step recorded again after a lost status is the same operation and
//! the agent runs it once. A failed attempt backs off with `upgrade.retries` like a member
//! step; after `retries.limit` attempts the task is `Failed` and the cluster
//! `Stalled/TaskFailed` until a retry intent.
//!
//! Owns: `status.tasks` (the records of granted tasks and the last succeeded ones), starting
//! `Task` steps. May use: `state`, `view`, `gates`, `start`. Used by the pipeline (`super`)
//! only; a task step's end is recorded by `outcome`.

use crate::api::{ClusterTaskStatus, MemberRole, StepAction, TaskParams, TaskState};
use crate::plan::observe::Wake;
use crate::plan::stall::Stall;

use super::TaskGrant;
use super::gates;
use super::start;
use super::state::{NewStep, Pass};
use super::view;

/// Succeeded tasks the status remembers once their mesh no longer asks for them.
const KEPT: usize = 16;

/// Start what the granted tasks need; record where each stands.
pub(super) fn run(p: &mut Pass<'_>) {
    let grants = &p.inp.admission.tasks;
    prune(p, grants);
    for g in grants {
        if !p.st.tasks.iter().any(|r| r.id == g.id) {
            p.st.tasks.push(ClusterTaskStatus {
                id: g.id.clone(),
                name: g.name.clone(),
                ..Default::default()
            });
        }
        advance(p, g);
    }
}

/// One granted task: nothing once it succeeded, the stall once it failed for good, else its
/// next attempt when its member can take it.
fn advance(p: &mut Pass<'_>, g: &TaskGrant) {
    let in_flight =
        p.st.steps
            .iter()
            .find(|s| s.task.as_ref().is_some_and(|t| t.id == g.id))
            .map(|s| s.member.clone());
    let now = p.now();
    let Some(rec) = p.st.tasks.iter_mut().find(|r| r.id == g.id) else {
        return;
    };
    if let Some(member) = in_flight {
        rec.state = TaskState::Running;
        rec.member = Some(member);
        return;
    }
    match rec.state {
        TaskState::Succeeded => return,
        TaskState::Failed => {
            let stall = Stall::TaskFailed {
                task: g.name.clone(),
                cluster: p.inp.cluster.name.to_string(),
                member: rec.member.clone(),
                failures: rec.failures,
                error: rec.last_error.clone().unwrap_or_default(),
            };
            p.found.stalled.get_or_insert(stall);
            return;
        }
        // Recorded as running with no step: the step's end was recorded and its state
        // written by `outcome`, or the status was lost mid-way: look again.
        TaskState::Running | TaskState::Pending => rec.state = TaskState::Pending,
    }
    if let Some(at) = rec.next_attempt_at
        && now < at
    {
        let why = format!(
            "task {} retries at {at} (failed {}: {})",
            g.name,
            rec.failures,
            rec.last_error.as_deref().unwrap_or_default()
        );
        p.wake_at(at);
        p.wait(why);
        return;
    }
    // Attempts count on across a retry: attempt N's operation must be new to the agent.
    let attempt = rec.attempts.saturating_add(1);
    let member = match &g.member {
        Some(m) => m.as_str(),
        None => match view::active(p) {
            Ok(Some(a)) => a,
            _ => {
                p.wait(format!("task {} waits for an active member", g.name));
                return;
            }
        },
    };
    if let Some(why) = unavailable(p, member) {
        p.wait(format!("task {} waits: {member} {why}", g.name));
        p.wake = p.wake.min(Wake::Busy);
        return;
    }
    if gates::paused(p) {
        p.held = true;
        p.wait(format!("task {}: the cluster is paused", g.name));
        return;
    }
    let mut n = NewStep::on(StepAction::Task, member);
    n.version = Some(super::state::StepVersion::whole(&g.version));
    n.message = format!(
        "task {} of mesh {} (attempt {attempt})",
        g.name,
        p.inp.admission.mesh.as_deref().unwrap_or("?")
    );
    n.task = Some((
        TaskParams {
            id: g.id.clone(),
            task: g.task.clone(),
        },
        attempt,
    ));
    if let Some(rec) = p.st.tasks.iter_mut().find(|r| r.id == g.id) {
        rec.state = TaskState::Running;
        rec.attempts = attempt;
        rec.member = Some(member.to_string());
    }
    start::start(p, n);
}

/// Why `member` cannot take a task now, if it cannot.
fn unavailable(p: &Pass<'_>, member: &str) -> Option<&'static str> {
    if p.member_spec(member).is_none() {
        return Some("is not a member of the cluster");
    }
    if p.agent(member).is_none() {
        return Some("is unreachable");
    }
    if p.busy(member) {
        return Some("is busy with another step");
    }
    if p.record(member)
        .is_some_and(|r| r.role == MemberRole::Zombie)
    {
        return Some("is Zombie");
    }
    None
}

/// Keep the records of granted tasks and of tasks still in flight; of the others, the last
/// [`KEPT`] that succeeded (a task the mesh stopped asking for is over).
fn prune(p: &mut Pass<'_>, grants: &[TaskGrant]) {
    let steps = &p.st.steps;
    let live = |r: &ClusterTaskStatus| {
        grants.iter().any(|g| g.id == r.id)
            || steps
                .iter()
                .any(|s| s.task.as_ref().is_some_and(|t| t.id == r.id))
    };
    let mut kept_done = 0;
    let mut keep: Vec<bool> = vec![false; p.st.tasks.len()];
    for (i, r) in p.st.tasks.iter().enumerate().rev() {
        if live(r) {
            keep[i] = true;
        } else if r.state == TaskState::Succeeded && kept_done < KEPT {
            kept_done += 1;
            keep[i] = true;
        }
    }
    let mut it = keep.into_iter();
    p.st.tasks.retain(|_| it.next().unwrap_or(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterPhase, ClusterStatus, LogResult, StepRecord};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, observed};
    use crate::plan::cluster::{Admission, ClusterPlan};
    use crate::plan::observe::{OpKind, OpState};

    fn grant(member: Option<&str>) -> TaskGrant {
        TaskGrant {
            id: "mesh.upload.r3".into(),
            name: "upload".into(),
            task: "upload-content".into(),
            version: "2.0.0".into(),
            member: member.map(str::to_string),
        }
    }

    /// A mesh cluster not admitted (its tier is done), asked to run `tasks`.
    fn admission(tasks: Vec<TaskGrant>) -> Admission {
        Admission {
            mesh_version: Some("2.0.0".into()),
            admitted: false,
            mesh: Some("mesh".into()),
            tasks,
            ..Default::default()
        }
    }

    /// Cluster `c` converged at 2.0.0 (`a` active, `b` standby), from status `last`.
    fn converged(tasks: Vec<TaskGrant>, last: ClusterStatus) -> ClusterBuilder {
        ClusterBuilder::pair("2.0.0")
            .running("2.0.0")
            .admission(admission(tasks))
            .status(last)
    }

    /// `a`, active at 2.0.0, knowing operation `id` in `state`.
    fn a_with_op(id: &str, state: OpState, message: &str) -> crate::fixtures::cluster::Observed {
        observed("a")
            .version("2.0.0")
            .active()
            .op(id, state, message)
    }

    fn task_step(plan: &ClusterPlan) -> StepRecord {
        plan.status
            .steps
            .iter()
            .find(|s| s.action == StepAction::Task)
            .cloned()
            .expect("a task step")
    }

    #[test]
    fn a_granted_task_runs_once_on_the_active_member_with_the_mesh_s_id() {
        let plan = converged(vec![grant(None)], ClusterStatus::default())
            .build()
            .plan();
        let s = task_step(&plan);
        assert_eq!(s.member, "a", "the active member by default");
        assert_eq!(s.id, "mesh.upload.r3.1", "the mesh's id and the attempt");
        let [action] = plan.actions.as_slice() else {
            panic!("{:?}", plan.actions)
        };
        assert_eq!(action.request.kind, OpKind::Task);
        assert_eq!(action.request.task.as_deref(), Some("upload-content"));
        assert_eq!(action.request.version.as_deref(), Some("2.0.0"));
        assert_eq!(plan.status.tasks[0].state, TaskState::Running);
        assert_ne!(plan.status.phase, ClusterPhase::Ready, "a step runs");
        // While the agent runs it, nothing is asked twice.
        let again = converged(vec![grant(None)], plan.status)
            .observe(a_with_op(&s.id, OpState::Running, ""))
            .build()
            .plan();
        assert!(again.actions.is_empty(), "{:?}", again.actions);
        // Done: recorded as succeeded, and never started again while the mesh asks.
        let after = converged(vec![grant(None)], again.status)
            .observe(a_with_op(&s.id, OpState::Succeeded, ""))
            .build()
            .plan();
        assert_eq!(after.status.tasks[0].state, TaskState::Succeeded);
        assert!(after.status.steps.is_empty());
        let later = converged(vec![grant(None)], after.status).build().plan();
        assert!(later.actions.is_empty() && later.status.steps.is_empty());
        assert_eq!(later.status.phase, ClusterPhase::Ready);
        let entries: Vec<LogResult> = later
            .status
            .log
            .iter()
            .filter(|e| e.action == "task")
            .map(|e| e.result)
            .collect();
        assert_eq!(entries, [LogResult::Succeeded]);
        // The mesh no longer asks: the success is remembered.
        let done = converged(vec![], later.status).build().plan();
        assert_eq!(done.status.tasks.len(), 1);
    }

    #[test]
    fn a_task_runs_on_its_declared_member_and_waits_while_it_is_unreachable() {
        let plan = converged(vec![grant(Some("b"))], ClusterStatus::default())
            .build()
            .plan();
        assert_eq!(task_step(&plan).member, "b");
        let plan = converged(vec![grant(Some("b"))], ClusterStatus::default())
            .unreachable("b")
            .build()
            .plan();
        assert!(
            plan.status
                .steps
                .iter()
                .all(|s| s.action != StepAction::Task)
        );
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn a_lost_status_asks_for_the_same_operation_again() {
        let first = converged(vec![grant(None)], ClusterStatus::default())
            .build()
            .plan();
        let lost = converged(vec![grant(None)], ClusterStatus::default())
            .build()
            .plan();
        assert_eq!(
            first.actions, lost.actions,
            "the same id: the agent runs it once"
        );
    }

    #[test]
    fn failed_attempts_back_off_then_the_task_stalls_until_a_retry() {
        let limit = ClusterBuilder::pair("2.0.0")
            .build()
            .cluster
            .spec
            .upgrade
            .retries
            .limit;
        let mut st = ClusterStatus::default();
        let mut ids = Vec::new();
        for n in 1..=limit {
            let plan = converged(vec![grant(None)], st).build().plan();
            let s = task_step(&plan);
            ids.push(s.id.clone());
            let after = converged(vec![grant(None)], plan.status)
                .observe(a_with_op(&s.id, OpState::Failed, "exit 2"))
                .build()
                .plan();
            let rec = &after.status.tasks[0];
            assert_eq!(rec.failures, n);
            assert!(
                after.status.members.iter().all(|m| m.failures == 0),
                "a task's failure is not the member's"
            );
            st = after.status.clone();
            if n < limit {
                assert_eq!(rec.state, TaskState::Pending);
                assert!(rec.next_attempt_at.is_some_and(|at| at > NOW));
                let waiting = converged(vec![grant(None)], st.clone()).build().plan();
                assert!(waiting.actions.is_empty(), "it backs off");
                // The test's clock does not move: wait the backoff out by hand.
                st.tasks[0].next_attempt_at = None;
            } else {
                assert_eq!(rec.state, TaskState::Failed);
                assert_eq!(after.status.phase, ClusterPhase::Stalled);
                let stalled = after
                    .status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled")
                    .expect("Stalled");
                assert_eq!(stalled.reason, "TaskFailed");
                assert!(stalled.message.contains("exit 2"), "{}", stalled.message);
            }
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "each attempt is a new operation");
        // Nothing more without a human; a retry starts a new attempt.
        let plan = converged(vec![grant(None)], st.clone()).build().plan();
        assert!(plan.actions.is_empty());
        let plan = converged(vec![grant(None)], st).retry("t1").build().plan();
        assert_eq!(task_step(&plan).id, format!("mesh.upload.r3.{}", limit + 1));
    }

    #[test]
    fn a_paused_cluster_holds_its_task_and_a_withdrawn_one_is_forgotten() {
        let plan = converged(vec![grant(None)], ClusterStatus::default())
            .paused()
            .build()
            .plan();
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.tasks[0].state, TaskState::Pending);
        let plan = converged(vec![], plan.status).build().plan();
        assert!(
            plan.status.tasks.is_empty(),
            "a pending task the mesh withdrew"
        );
    }
}
