//! The working state of one pass, at the bottom of the pipeline: what the stages read (the
//! input, the status being written) and what they add to (actions, events, the wake hint, the
//! waits, the stall, degraded notes, the approval awaited, the unavailability count).
//!
//! Owns: [`Pass`] and its tiny accessors, [`Target`] (what the pass moves toward), [`Findings`]
//! (what the summary reports), [`NewStep`] (a step about to be recorded, with its
//! [`StepVersion`]), [`Advanced`] (what advancing a step left), and the names a step goes by
//! (`action_name`, `describe`, `step_id`, `verify_token`).
//!
//! May use: the types of `super` (`ClusterInput`), the API types and `plan::{observe,
//! conditions, stall}`. Every other module of the cluster planner may use this one; this one
//! uses none of them.

use crate::api::{
    CertificatesSpec, ClusterSpec, ClusterStatus, LogMode, MemberSpec, MemberStatus, StepAction,
    StepRecord, Timestamp,
};
use crate::plan::conditions::Log;
use crate::plan::observe::{Action, AgentView, MemberObservation, OpView, PlanEvent, Wake};
use crate::plan::stall::Stall;

use super::ClusterInput;

/// One planning pass: the input, the status being built from the last one, and what the
/// stages found so far.
pub(super) struct Pass<'a> {
    pub inp: &'a ClusterInput<'a>,
    /// The status this pass writes, started from the last one.
    pub st: ClusterStatus,
    /// Agent operations to send once `st` is persisted.
    pub actions: Vec<Action>,
    /// One Event per step started, finished or refused.
    pub events: Vec<PlanEvent>,
    /// When the host should look again.
    pub wake: Wake,
    /// What stops or holds the cluster, for the summary to report.
    pub found: Findings,
    /// What the pass moves the cluster to, set by the first stage.
    pub target: Target,
    /// Members out of service (disruptive step in flight, or reported OutOfService).
    pub unavailable: u32,
    /// Every member runs the target and nothing is in flight.
    pub converged: bool,
    /// New steps may start (not paused, admitted by the mesh). Emergency steps ignore it.
    pub may_start: bool,
    /// A step would have started but `may_start` forbade it.
    pub held: bool,
    /// Members joining and leaving (see `topology`); the spec the stages read (`inp`'s) holds
    /// the members only, and the leaving ones, while [`Pass::declared`] is what the user wrote.
    pub topo: super::topology::Topology,
    declared: &'a ClusterSpec,
}

impl<'a> Pass<'a> {
    pub fn new(inp: &'a ClusterInput<'a>, st: ClusterStatus) -> Self {
        Pass {
            inp,
            st,
            actions: Vec::new(),
            events: Vec::new(),
            wake: Wake::Idle,
            found: Findings::default(),
            target: Target::default(),
            unavailable: 0,
            converged: false,
            may_start: true,
            held: false,
            topo: Default::default(),
            declared: inp.cluster.spec,
        }
    }
    /// A pass over `inp`, whose spec is the effective one of `topo`, for the `declared` spec.
    pub fn with_topology(
        inp: &'a ClusterInput<'a>,
        st: ClusterStatus,
        topo: super::topology::Topology,
        declared: &'a ClusterSpec,
    ) -> Self {
        let mut p = Pass::new(inp, st);
        p.topo = topo;
        p.declared = declared;
        p
    }
    /// The spec as declared: every member the user lists (joining ones too), none leaving.
    pub fn declared(&self) -> &'a ClusterSpec {
        self.declared
    }
    /// The members the mixed-version rule covers: every member the stages read, and the
    /// joining ones that replicate or are starting to (a failover could reach them).
    pub fn in_group(&self) -> Vec<&'a MemberSpec> {
        let mut out: Vec<&'a MemberSpec> = self.spec().members.iter().collect();
        for name in &self.topo.joining {
            let replicating = self
                .agent(name)
                .is_some_and(|a| a.membership.source.is_some())
                || self
                    .st
                    .steps
                    .iter()
                    .any(|s| &s.member == name && s.action == StepAction::Join);
            if replicating && let Some(m) = self.declared.members.iter().find(|m| &m.name == name) {
                out.push(m);
            }
        }
        out
    }
    /// The members that stay: those of the spec the stages read but the leaving ones.
    pub fn settled(&self) -> impl Iterator<Item = &'a MemberSpec> + '_ {
        let spec: &'a ClusterSpec = self.spec();
        spec.members
            .iter()
            .filter(move |m| !self.topo.is_leaving(&m.name))
    }
    pub fn spec(&self) -> &'a ClusterSpec {
        self.inp.cluster.spec
    }
    /// The certificates the cluster rotates to: its mesh's, or its own.
    pub fn certificates(&self) -> Option<&'a CertificatesSpec> {
        self.inp
            .admission
            .certificates(self.inp.cluster.spec.certificates.as_ref())
    }
    pub fn now(&self) -> Timestamp {
        self.inp.now
    }
    pub fn obs(&self, member: &str) -> Option<&'a MemberObservation> {
        self.inp.observed.get(member)
    }
    pub fn agent(&self, member: &str) -> Option<&'a AgentView> {
        self.obs(member).and_then(|o| o.agent.as_ref())
    }
    pub fn member_spec(&self, member: &str) -> Option<&'a MemberSpec> {
        self.spec().members.iter().find(|m| m.name == member)
    }
    /// The member's record in the status being written.
    pub fn record(&self, member: &str) -> Option<&MemberStatus> {
        self.st.members.iter().find(|m| m.name == member)
    }
    pub fn record_mut(&mut self, member: &str) -> Option<&mut MemberStatus> {
        self.st.members.iter_mut().find(|m| m.name == member)
    }
    /// The operation `id` on `member`: looked up by id, or the agent's current one.
    pub fn lookup_op(&self, member: &str, id: &str) -> Option<&'a OpView> {
        let o = self.obs(member)?;
        o.ops.get(id).or_else(|| {
            o.agent
                .as_ref()?
                .operation
                .as_ref()
                .filter(|op| op.id == id)
        })
    }
    pub fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push(PlanEvent {
            warning,
            reason: reason.to_string(),
            message,
        });
    }
    pub fn wake_at(&mut self, t: Timestamp) {
        self.wake = self.wake.min(Wake::At(t));
    }
    pub fn wait(&mut self, why: String) {
        self.found.waiting.push(why);
    }
    pub fn log(&mut self) -> Log<'_> {
        Log {
            entries: &mut self.st.log,
            next_id: &mut self.st.next_log_id,
        }
    }
    /// A member with a step in flight (as its subject or as a switchover's source).
    pub fn busy(&self, member: &str) -> bool {
        self.st
            .steps
            .iter()
            .any(|s| s.member == member || s.from.as_deref() == Some(member))
    }
    pub fn has_step(&self, action: StepAction) -> bool {
        self.st.steps.iter().any(|s| s.action == action)
    }
}

/// The target of a pass: what the first stage resolves and every later one moves toward.
#[derive(Default)]
pub(super) struct Target {
    /// The version this pass moves the cluster to (or holds it at).
    pub version: String,
    /// Component indices in prerequisite order.
    pub order: Vec<usize>,
}

/// What the stages found that stops, holds or impairs the cluster: the summary turns it into
/// the message and the Stalled, Degraded and AwaitingApproval conditions.
#[derive(Default)]
pub(super) struct Findings {
    /// What the cluster waits for, first one first (the message when nothing runs).
    pub waiting: Vec<String>,
    /// The stop a human must act on; turned into the condition by the summary only.
    pub stalled: Option<Stall>,
    /// Why the cluster serves with less than it should (one line each; the Degraded condition).
    pub degraded: Vec<String>,
    /// The switchover step name awaiting approval.
    pub awaiting: Option<String>,
    /// A rotation phase forced early, and what it breaks (the RotationForced condition).
    pub forced: Option<String>,
}

/// A step about to be recorded.
pub(super) struct NewStep {
    pub action: StepAction,
    /// The member acted on (the target of a switchover).
    pub member: String,
    /// A switchover's source, the active being replaced.
    pub from: Option<String>,
    /// The version to install, return to or verify (None: the step has none of its own).
    pub version: Option<StepVersion>,
    /// Data endpoint to replicate from, resolved now so a re-sent request is the same.
    pub source: Option<String>,
    /// An emergency step (switching back): allowed while paused or not admitted.
    pub rollback: bool,
    /// How the log entry says it started: automatically, approved or forced.
    pub mode: LogMode,
    /// The log line.
    pub message: String,
    /// A rotation step's CA material, by fingerprint.
    pub trust: Option<crate::api::TrustParams>,
    /// A peer-identity step's identity.
    pub peer: Option<crate::api::PeerParams>,
    /// A step of a membership change: the log entry it belongs to.
    pub topology: Option<TopologyEntry>,
    /// A mesh task's step: the task, and the attempt (its operation id is the mesh's id of
    /// the task and the attempt, so a repeat is the same operation).
    pub task: Option<(crate::api::TaskParams, u32)>,
}

impl NewStep {
    pub fn on(action: StepAction, member: &str) -> Self {
        NewStep {
            action,
            member: member.to_string(),
            from: None,
            version: None,
            source: None,
            rollback: false,
            mode: LogMode::Automatic,
            message: String::new(),
            trust: None,
            peer: None,
            topology: None,
            task: None,
        }
    }
    /// The switchover back to `to` from `from` that undoes a failed or stale one.
    pub fn switch_back(to: &str, from: &str, message: String) -> Self {
        let mut n = NewStep::on(StepAction::Switchover, to);
        n.from = Some(from.to_string());
        n.rollback = true;
        n.message = message;
        n
    }
}

/// The log entry of a membership change's step.
pub(super) enum TopologyEntry {
    /// A member's `add-member` or `remove-member` entry.
    Member(crate::api::Membership, String),
    /// The cluster's `key-clients` entry: settled members' identities given to clients.
    Clients,
}

/// The version a step installs or checks: of one component, or of the member's whole software.
pub(super) struct StepVersion {
    /// The version to install, return to or verify.
    pub version: String,
    /// The component, on a layered stack (None: the whole software).
    pub component: Option<String>,
}

impl StepVersion {
    /// `version` of the member's whole software.
    pub fn whole(version: &str) -> Self {
        StepVersion {
            version: version.to_string(),
            component: None,
        }
    }
}

/// What advancing a recorded step left.
pub(super) enum Advanced {
    /// Still in flight: stays in `status.steps`.
    Keep,
    /// Finished (succeeded, failed or cancelled) and recorded.
    Done,
    /// Finished, and this step must start at once (the switch back after a failed
    /// switchover); the caller starts it.
    Then(Box<NewStep>),
}

pub(super) fn action_name(a: StepAction) -> &'static str {
    match a {
        StepAction::Preflight => "preflight",
        StepAction::ForceStandby => "force-standby",
        StepAction::Upgrade => "upgrade",
        StepAction::Rollback => "rollback",
        StepAction::AwaitSync => "await-sync",
        StepAction::Switchover => "switchover",
        StepAction::Release => "release",
        StepAction::Backup => "backup",
        StepAction::Verify => "verify",
        StepAction::SyncConfig => "sync-config",
        StepAction::InstallTrust => "install-trust",
        StepAction::InstallCertificate => "install-certificate",
        StepAction::Restart => "restart",
        StepAction::ResignData => "resign-data",
        StepAction::AddPeer => "add-peer",
        StepAction::RemovePeer => "remove-peer",
        StepAction::Join => "join",
        StepAction::Retire => "retire",
        StepAction::Task => "task",
        StepAction::StageMedia => "stage-media",
        StepAction::RemoveMedia => "remove-media",
        StepAction::Prepare => "prepare",
    }
}

/// Deterministic, agent-safe operation id for a step: unique per status history (the log id)
/// and per creation instant, so a later rollout never reuses an earlier operation's id.
pub(super) fn step_id(
    cluster: &str,
    log_id: u64,
    action: StepAction,
    member: &str,
    now: Timestamp,
) -> String {
    bounded_id(format!(
        "{cluster}.{log_id}.{}.{member}.{:x}",
        action_name(action),
        now.millis()
    ))
}

/// The operation id of attempt `attempt` of a mesh task: the mesh's id of the task in its
/// rollout and the attempt, nothing of this cluster's status, so a step recorded again after
/// a lost status asks for the same operation.
pub(super) fn task_step_id(task_id: &str, attempt: u32) -> String {
    bounded_id(format!("{task_id}.{attempt}"))
}

/// `raw`, or when longer than 120 bytes its first 100 and a hash of the whole.
fn bounded_id(raw: String) -> String {
    if raw.len() <= 120 {
        return raw;
    }
    // FNV-1a keeps long names deterministic and short.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in raw.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut cut = 100;
    while !raw.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}.{h:016x}", &raw[..cut])
}

pub(super) fn verify_token(component: Option<&str>, version: &str) -> String {
    format!("{}@{version}", component.unwrap_or(""))
}

/// One line on a step: `upgrade app m1 to 2.0.0`, `switchover m0 -> m1 to 2.0.0`.
pub(super) fn describe(s: &StepRecord) -> String {
    let mut out = action_name(s.action).to_string();
    if let Some(c) = &s.component {
        out.push(' ');
        out.push_str(c);
    }
    match (s.action, &s.from, &s.peer) {
        (StepAction::Task, _, _) => {
            let task = s.task.as_ref().map(|t| t.task.as_str()).unwrap_or_default();
            out.push_str(&format!(" {task} on {}", s.member));
        }
        (StepAction::Switchover, Some(f), _) => out.push_str(&format!(" {f} -> {}", s.member)),
        (_, _, Some(peer)) => out.push_str(&format!(" {} on {}", peer.peer, s.member)),
        _ => out.push_str(&format!(" {}", s.member)),
    }
    if let Some(v) = &s.version {
        out.push_str(&format!(" to {v}"));
    }
    out
}

/// The steps in flight, one line each.
pub(super) fn describe_steps(steps: &[StepRecord]) -> String {
    steps.iter().map(describe).collect::<Vec<_>>().join("; ")
}

/// The approval name of a switchover step.
pub fn switchover_step_name(cluster: &str, to: &str, version: &str) -> String {
    format!("switchover/{cluster}/{to}@{version}")
}
