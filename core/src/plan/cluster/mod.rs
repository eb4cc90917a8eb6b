//! The cluster planner: (spec, last status, observation, admission, intents, now) → the next
//! steps, the status to write and when to look again. Pure: no I/O, no clock, no randomness.
//!
//! Everything that can be derived from observation is derived again on every pass; the status
//! only remembers what cannot be observed (steps in flight, failures and backoff, the pending
//! traffic check, an automatic rollback, passed preflights/verifications, the log).
//!
//! A pass is a pipeline of stages over one working state ([`state::Pass`]), run in this order
//! by [`plan_cluster_from`]:
//!
//! 1. `target` — validate, pick the target version;
//! 2. `record` — what is recorded: supersede an old rollout, a retry intent, member records
//!    from observation, the first-apply rule;
//! 3. `flight` — steps in flight, then the traffic check;
//! 4. `choose` — the next steps (through `member`, `handover`, `converge`, `gates`), after
//!    `rotation`, the CA rotation of `spec.certificates` (which, while it runs, stands in for
//!    new upgrade steps; an unusable CA stalls the pass before `choose`);
//! 5. `summary` — phase, conditions, message, wake.
//!
//! The modules form layers; each uses only modules listed before it (and the plain input
//! types of this module), never one after it:
//!
//! ```text
//! state → view → log → target, record → health → outcome → op, switchover → start → flight
//!       → gates → media → member, handover → converge → rotation → choose → summary
//! ```
//!
//! A step asked for while advancing another (the switch back after a failed switchover) is
//! returned to `start` ([`state::Advanced::Then`]), which starts it: advancing never calls
//! back up into starting.

mod choose;
mod converge;
mod flight;
mod gates;
mod handover;
mod health;
mod log;
mod media;
mod member;
mod op;
mod outcome;
mod prepare;
mod record;
mod rotation;
mod start;
mod state;
mod summary;
mod switchover;
mod target;
mod task;
#[cfg(test)]
mod testing;
mod topology;
mod view;

use crate::api::{CertificatesSpec, ClusterSpec, ClusterStatus, RotationPhase, Timestamp};

use super::object::ObjectView;
use super::observe::{Action, ClusterObservation, PlanEvent, Wake};

pub use prepare::{
    acknowledgement as preparation_acknowledgement,
    parse_acknowledgement as parse_preparation_acknowledgement,
};
pub use record::expected_alarm;
pub use rotation::phase_approval_name as rotation_phase_name;
pub use state::switchover_step_name;
pub use topology::{agents as cluster_agents, membership_step, removal_force_name};

/// What the mesh (if any) allows this cluster to do.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Admission {
    /// The mesh target version, used when the cluster does not pin one.
    pub mesh_version: Option<String>,
    /// May start new steps. Standalone clusters are always admitted.
    pub admitted: bool,
    /// The mesh runs the offline strategy: members upgrade in place, outage allowed.
    pub offline: bool,
    /// Why the cluster is not admitted (shown in status).
    pub reason: Option<String>,
    /// Name of the mesh, for messages.
    pub mesh: Option<String>,
    /// The mesh declares `spec.certificates`: its clusters rotate together, phase by phase.
    pub rotation: Option<RotationGrant>,
    /// Once-per-mesh steps the mesh asks this cluster to run now (their tier is done).
    pub tasks: Vec<TaskGrant>,
}

/// A once-per-mesh step (a Mesh's `spec.tasks[]`) the mesh asks a cluster to run.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskGrant {
    /// The mesh's id of the task in its rollout; attempt N's operation is `<id>.<N>`.
    pub id: String,
    /// Its name in the mesh's spec.
    pub name: String,
    /// The agent's task.
    pub task: String,
    /// The rollout's version, passed to the agent.
    pub version: String,
    /// The member that runs it (None: the active one).
    pub member: Option<String>,
}

impl Admission {
    pub fn standalone() -> Self {
        Admission {
            admitted: true,
            ..Default::default()
        }
    }

    /// The certificates a cluster rotates to: its mesh's when the mesh declares them (a
    /// cluster of such a mesh declares none of its own), else its own `spec.certificates`.
    /// Hosts read the CA Secret these name.
    pub fn certificates<'a>(
        &'a self,
        own: Option<&'a CertificatesSpec>,
    ) -> Option<&'a CertificatesSpec> {
        match &self.rotation {
            Some(g) => Some(&g.certificates),
            None => own,
        }
    }
}

/// What a mesh that declares `spec.certificates` lets one of its clusters do about the
/// rotation (from the mesh's `status.certificates`).
#[derive(Clone, Debug, PartialEq)]
pub struct RotationGrant {
    /// The mesh's `spec.certificates`.
    pub certificates: CertificatesSpec,
    /// The CA the mesh rotates to (None until the mesh has read its CA).
    pub target: Option<String>,
    /// The mesh's phase: the cluster runs steps of this phase only (None: the mesh is done,
    /// or has not decided).
    pub phase: Option<RotationPhase>,
    /// Why the cluster may not start rotation steps now (shown in its status); None: it may.
    pub waiting: Option<String>,
}

/// Imperative intent from annotations or CLI commands. Each is acted on once: the status
/// records what was acknowledged.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Intents {
    /// Step names approved (e.g. `switchover/web/m2@2.0.0`).
    pub approve: Vec<String>,
    /// A retry request token: clears failures, Zombie members and an automatic rollback.
    pub retry: Option<String>,
    /// Pause without changing the spec.
    pub pause: bool,
    /// Rotation phases to run before the phase before them is complete, by the phase's name
    /// (`rotation/<cluster>/<phase>@<ca>`); each acknowledged once.
    pub force: Vec<String>,
}

/// Everything one cluster decision reads. The planner has no clock and does no I/O: the same
/// input gives the same plan.
pub struct ClusterInput<'a> {
    /// The Cluster: its name, generation, spec and the status the last pass wrote (the steps
    /// in flight and the log).
    pub cluster: ObjectView<'a, ClusterSpec, ClusterStatus>,
    /// What the agents reported just before this pass, by member.
    pub observed: &'a ClusterObservation,
    /// What the cluster's mesh allows it (a standalone cluster: everything).
    pub admission: &'a Admission,
    pub intents: &'a Intents,
    /// The CA `spec.certificates` names, as the host read it (None without
    /// `spec.certificates`, or when the host has not read it).
    pub ca: Option<&'a crate::plan::trust::CaInput>,
    /// The instant of the decision: windows, stagger, backoff and timeouts are measured from it.
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPlan {
    pub status: ClusterStatus,
    /// Agent operations to submit, after `status` is persisted.
    pub actions: Vec<Action>,
    pub events: Vec<PlanEvent>,
    pub wake: Wake,
}

/// Plan one pass for one cluster.
pub fn plan_cluster(input: &ClusterInput<'_>) -> ClusterPlan {
    plan_cluster_from(input, input.cluster.status.cloned())
}

/// `plan_cluster` for a caller that owns the last status and replaces it with the plan's
/// anyway: `last` stands for `input.cluster.status` (which is not read) and is not copied. On a long
/// rollout that copy (the log, the member records) is a good part of a pass.
pub fn plan_cluster_from(input: &ClusterInput<'_>, last: Option<ClusterStatus>) -> ClusterPlan {
    let declared = input.cluster.spec;
    let topo = topology::Topology::classify(declared, last.as_ref());
    // While members join or leave, the stages read the members as they are (the joined ones
    // and those leaving), not as declared: see `topology`.
    let effective = topo.effective_spec(declared, last.as_ref());
    let shifted;
    let inp = match &effective {
        Some(spec) => {
            shifted = ClusterInput {
                cluster: ObjectView {
                    spec,
                    ..input.cluster
                },
                observed: input.observed,
                admission: input.admission,
                intents: input.intents,
                ca: input.ca,
                now: input.now,
            };
            &shifted
        }
        None => input,
    };
    let mut p = state::Pass::with_topology(inp, last.unwrap_or_default(), topo, declared);
    run(&mut p);
    summary::summarize(&mut p);
    ClusterPlan {
        status: p.st,
        actions: p.actions,
        events: p.events,
        wake: p.wake,
    }
}

/// The stages before the summary, in order.
fn run(p: &mut state::Pass<'_>) {
    if let Err(stall) = target::resolve(p) {
        record::refresh_members(p);
        topology::mark(p);
        p.found.stalled = Some(stall);
        return;
    }
    record::supersede(p);
    record::apply_retry_intent(p);
    record::refresh_members(p);
    topology::mark(p);
    record::adopt_converged(p);
    flight::advance_steps(p);
    flight::check_traffic(p);
    topology::force_unreachable(p);
    if !rotation::check_ca(p) {
        return;
    }
    // Paused or not admitted: plan as usual (so convergence is still known) but start nothing.
    p.may_start = gates::may_start(p);
    task::run(p);
    // Staging is not disruptive: it runs unadmitted and outside windows (see `media`).
    media::stage(p);
    prepare::run(p);
    choose::choose_next(p);
}
