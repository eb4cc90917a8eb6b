//! The cluster planner: (spec, last status, observation, admission, intents, now) → the next
//! steps, the status to write and when to look again. Pure: no I/O, no clock, no randomness.
//!
//! Everything that can be derived from observation is derived again on every pass; the status
//! only remembers what cannot be observed (steps in flight, failures and backoff, the pending
//! traffic check, an automatic rollback, passed preflights/verifications, the log).

use crate::api::{
    ClusterPhase, ClusterSpec, ClusterStatus, Health, LogMode, LogResult, LogScope, MemberRole,
    MemberSpec, MemberStatus, OperationStatus, RolledBack, StepAction, StepRecord, Supervision,
    SwitchoverRecord, Timestamp, UpgradeStrategy, Version, condition as cond, values::Duration,
};

use super::conditions::{Kstatus, Log, announce_stall, set_flag, set_kstatus};
use super::observe::{
    Action, AgentView, ClusterObservation, MemberObservation, OpKind, OpRequest, OpState, OpView,
    PlanEvent, Wake,
};
use super::software::{
    Move, Software, effective_version, hosted, pending_moves, running, same_software, spec_target,
};
use super::stall::Stall;
use super::validate::{component_order, validate_cluster};
use super::window::{WindowState, window_state};

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
}

impl Admission {
    pub fn standalone() -> Self {
        Admission {
            admitted: true,
            ..Default::default()
        }
    }
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
}

pub struct ClusterInput<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a ClusterSpec,
    pub status: Option<&'a ClusterStatus>,
    pub observed: &'a ClusterObservation,
    pub admission: &'a Admission,
    pub intents: &'a Intents,
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
    plan_cluster_from(input, input.status.cloned())
}

/// `plan_cluster` for a caller that owns the last status and replaces it with the plan's
/// anyway: `last` stands for `input.status` (which is not read) and is not copied. On a long
/// rollout that copy (the log, the member records) is a good part of a pass.
pub fn plan_cluster_from(input: &ClusterInput<'_>, last: Option<ClusterStatus>) -> ClusterPlan {
    let mut p = Planner {
        inp: input,
        st: last.unwrap_or_default(),
        actions: Vec::new(),
        events: Vec::new(),
        wake: Wake::Idle,
        waiting: Vec::new(),
        stalled: None,
        degraded: Vec::new(),
        awaiting: None,
        order: Vec::new(),
        target_version: String::new(),
        unavailable: 0,
        converged: false,
        may_start: true,
        held: false,
    };
    p.run();
    p.finish()
}

/// The approval name of a switchover step.
pub fn switchover_step_name(cluster: &str, to: &str, version: &str) -> String {
    format!("switchover/{cluster}/{to}@{version}")
}

struct Planner<'a> {
    inp: &'a ClusterInput<'a>,
    st: ClusterStatus,
    actions: Vec<Action>,
    events: Vec<PlanEvent>,
    wake: Wake,
    waiting: Vec<String>,
    stalled: Option<Stall>,
    degraded: Vec<String>,
    awaiting: Option<String>,
    order: Vec<usize>,
    target_version: String,
    /// Members out of service (disruptive step in flight, or reported OutOfService).
    unavailable: u32,
    converged: bool,
    /// New steps may start (not paused, admitted by the mesh). Emergency steps ignore it.
    may_start: bool,
    /// A step would have started but `may_start` forbade it.
    held: bool,
}

/// A step about to be recorded.
struct NewStep {
    action: StepAction,
    member: String,
    from: Option<String>,
    version: Option<String>,
    component: Option<String>,
    source: Option<String>,
    rollback: bool,
    mode: LogMode,
    message: String,
}

impl NewStep {
    fn on(action: StepAction, member: &str) -> Self {
        NewStep {
            action,
            member: member.to_string(),
            from: None,
            version: None,
            component: None,
            source: None,
            rollback: false,
            mode: LogMode::Automatic,
            message: String::new(),
        }
    }
}

/// What a member needs next.
enum Next {
    Step(NewStep),
    Wait(String),
    Done,
}

fn action_name(a: StepAction) -> &'static str {
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
    }
}

/// Deterministic, agent-safe operation id for a step: unique per status history (the log id)
/// and per creation instant, so a later rollout never reuses an earlier operation's id.
fn step_id(cluster: &str, log_id: u64, action: StepAction, member: &str, now: Timestamp) -> String {
    let raw = format!(
        "{cluster}.{log_id}.{}.{member}.{:x}",
        action_name(action),
        now.millis()
    );
    if raw.len() <= 120 {
        return raw;
    }
    // FNV-1a keeps long names deterministic and short.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in raw.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{}.{h:016x}", &raw[..100])
}

fn backoff(policy: &crate::api::RetryPolicy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let ms = policy.backoff.millis().saturating_mul(1u64 << exp);
    Duration(ms.min(policy.max_backoff.millis()))
}

impl<'a> Planner<'a> {
    fn spec(&self) -> &'a ClusterSpec {
        self.inp.spec
    }
    fn now(&self) -> Timestamp {
        self.inp.now
    }
    fn obs(&self, member: &str) -> Option<&'a MemberObservation> {
        self.inp.observed.get(member)
    }
    fn agent(&self, member: &str) -> Option<&'a AgentView> {
        self.obs(member).and_then(|o| o.agent.as_ref())
    }
    fn member_spec(&self, member: &str) -> Option<&'a MemberSpec> {
        self.spec().members.iter().find(|m| m.name == member)
    }
    fn mstatus(&mut self, member: &str) -> Option<&mut MemberStatus> {
        self.st.members.iter_mut().find(|m| m.name == member)
    }
    fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push(PlanEvent {
            warning,
            reason: reason.to_string(),
            message,
        });
    }
    fn wake_at(&mut self, t: Timestamp) {
        self.wake = self.wake.min(Wake::At(t));
    }
    fn log(&mut self) -> Log<'_> {
        Log {
            entries: &mut self.st.log,
            next_id: &mut self.st.next_log_id,
        }
    }
    /// The open cluster-level entry of the rollout to the current target: the parent of its
    /// step entries. Opened with the first step of the rollout (`open`), closed when the
    /// cluster converges, rolls back or gets another target.
    fn rollout_log(&mut self, open: bool) -> Option<u64> {
        let target = self.target_version.as_str();
        let found = self
            .st
            .log
            .iter()
            .rev()
            .find(|e| is_rollout_entry(e) && e.version.as_deref() == Some(target))
            .map(|e| e.id);
        if found.is_some() || !open || target.is_empty() {
            return found;
        }
        let back = self.st.members.iter().any(|m| {
            m.version
                .as_deref()
                .is_some_and(|v| crate::api::values::cmp_versions(v, target).is_gt())
        });
        let (action, what) = if back {
            ("backout", "back out")
        } else {
            ("upgrade", "upgrade")
        };
        let (name, now) = (self.inp.name, self.now());
        let target = self.target_version.clone();
        let message = format!("{what} {name} to {target}");
        let id = self.log().open(
            None,
            action,
            LogScope::Cluster,
            name,
            Some(&target),
            LogMode::Automatic,
            message,
            now,
        );
        Some(id)
    }

    /// A new target ends the rollout to the old one.
    fn close_superseded_rollouts(&mut self) {
        let target = self.target_version.clone();
        let old: Vec<u64> = self
            .st
            .log
            .iter()
            .filter(|e| is_rollout_entry(e) && e.version.as_deref() != Some(target.as_str()))
            .map(|e| e.id)
            .collect();
        let now = self.now();
        for id in old {
            let msg = format!("superseded by target {target}");
            self.log().close(id, LogResult::Cancelled, msg, now);
        }
    }

    /// The running entry of one phase of a switchover step (`demote`, `promote`), opened
    /// under the switchover's entry when its operation is first asked for.
    fn switchover_phase(&mut self, s: &StepRecord, phase: &str, member: &str) {
        let open = self
            .st
            .log
            .iter()
            .any(|e| e.parent == Some(s.log_id) && e.action == phase && is_running(e));
        if open {
            return;
        }
        let now = self.now();
        let message = match phase {
            "demote" => format!("{member} stops taking writes and follows {}", s.member),
            _ => format!("{member} takes over as active"),
        };
        self.log().open(
            Some(s.log_id),
            phase,
            LogScope::Member,
            member,
            None,
            LogMode::Automatic,
            message,
            now,
        );
    }

    /// Close the running phase entries of a switchover step (`phase` None: all of them).
    fn close_switchover_phases(
        &mut self,
        s: &StepRecord,
        phase: Option<&str>,
        result: LogResult,
        msg: &str,
    ) {
        let ids: Vec<u64> = self
            .st
            .log
            .iter()
            .filter(|e| e.parent == Some(s.log_id) && is_running(e))
            .filter(|e| phase.is_none_or(|p| e.action == p))
            .map(|e| e.id)
            .collect();
        let now = self.now();
        for id in ids {
            self.log().close(id, result, msg, now);
        }
    }

    fn offline(&self) -> bool {
        self.inp.admission.offline
    }
    fn allow_outage(&self) -> bool {
        self.spec().upgrade.allow_outage || self.offline()
    }
    fn in_place(&self) -> bool {
        self.spec().upgrade.strategy == UpgradeStrategy::InPlace || self.offline()
    }

    fn run(&mut self) {
        self.st.observed_generation = self.inp.generation;
        let problems = validate_cluster(self.spec());
        if !problems.is_empty() {
            self.refresh_members();
            self.stalled = Some(Stall::InvalidSpec(problems));
            return;
        }
        self.order = component_order(self.spec()).unwrap_or_default();
        let target = self
            .spec()
            .version
            .clone()
            .or_else(|| self.inp.admission.mesh_version.clone());
        let Some(target) = target else {
            self.refresh_members();
            self.stalled = Some(Stall::NoVersion);
            return;
        };
        if let Err(e) = target.parse::<Version>() {
            self.refresh_members();
            self.stalled = Some(Stall::InvalidVersion(e.to_string()));
            return;
        }
        self.target_version = target;
        self.st.target_version = Some(self.target_version.clone());
        self.close_superseded_rollouts();
        if let Some(rb) = &self.st.rolled_back
            && rb.version != self.target_version
        {
            // A new target supersedes the failed one.
            self.st.rolled_back = None;
        }
        self.apply_retry_intent();
        self.refresh_members();
        self.adopt_converged();
        self.advance_steps();
        self.check_traffic();
        // Paused or not admitted: plan as usual (so convergence is still known) but start nothing.
        let paused = self.spec().paused || self.inp.intents.pause;
        self.may_start = !paused && self.inp.admission.admitted;
        self.choose_next();
    }

    /// The first-apply rule: a cluster Baton has never acted on (no log entry, no step, no
    /// rollback: `next_log_id` is 0) whose members all already run the target, each in a
    /// plain role (exactly one Active, the others Standby or Spare) with no operation running,
    /// owes nothing. The configuration re-apply and the verifications belong to a version
    /// change Baton makes; here none was made, so they are recorded as done and the cluster
    /// goes Ready without a step (before this rule, a first apply of 200 converged clusters
    /// ran sync-config and verify on each, one mesh stagger apart).
    ///
    /// A member held in forced standby, an operation running or an unreachable member means
    /// a rollout may be part-way (a status lost mid-rollout): the rule does not apply and the
    /// usual pipeline decides from observation.
    fn adopt_converged(&mut self) {
        if self.st.next_log_id != 0 || !self.st.steps.is_empty() || self.st.rolled_back.is_some() {
            return;
        }
        let Ok(Some(active)) = self.active() else {
            return;
        };
        let spec = self.spec();
        let mut owed: Vec<(String, String, Vec<String>)> = Vec::new();
        for m in &spec.members {
            let Some(a) = self.agent(&m.name) else {
                return;
            };
            let plain = matches!(
                a.role,
                MemberRole::Active | MemberRole::Standby | MemberRole::Spare
            );
            let running = a
                .operation
                .as_ref()
                .is_some_and(|o| o.state == OpState::Running);
            if !plain || running || self.moves(m).is_none_or(|v| !v.is_empty()) {
                return;
            }
            let target = self.member_target(m);
            let tokens = hosted(spec, m, &self.order)
                .into_iter()
                .filter_map(|c| target.components.get(c).map(|v| verify_token(Some(c), v)))
                .collect();
            owed.push((m.name.clone(), target.key(), tokens));
        }
        let active_key = self
            .member_spec(active)
            .map(|m| self.member_target(m).key());
        for (name, key, tokens) in owed {
            if let Some(ms) = self.mstatus(&name) {
                ms.config_synced = Some(key.clone());
                for t in tokens {
                    if !ms.verified.contains(&t) {
                        ms.verified.push(t);
                    }
                }
            }
        }
        self.st.verified_target = active_key;
    }

    fn apply_retry_intent(&mut self) {
        let Some(token) = &self.inp.intents.retry else {
            return;
        };
        let ack = format!("retry:{token}");
        if self.st.acknowledged.contains(&ack) {
            return;
        }
        for m in &mut self.st.members {
            m.failures = 0;
            m.next_attempt_at = None;
            m.last_error = None;
        }
        let had_rollback = self.st.rolled_back.take().is_some();
        self.ack(ack);
        let now = self.now();
        let msg = if had_rollback {
            "retry requested: automatic rollback cleared"
        } else {
            "retry requested: failures cleared"
        };
        let name = self.inp.name;
        let parent = self.rollout_log(false);
        let id = self.log().open(
            parent,
            "retry",
            LogScope::Cluster,
            name,
            None,
            LogMode::Manual,
            msg,
            now,
        );
        self.log().close(id, LogResult::Succeeded, "", now);
        self.event(false, "RetryRequested", msg.to_string());
    }

    fn ack(&mut self, token: String) {
        self.st.acknowledged.push(token);
        let n = self.st.acknowledged.len();
        if n > 32 {
            self.st.acknowledged.drain(..n - 32);
        }
    }

    /// Rebuild per-member status from the observation, keeping what only the status knows.
    fn refresh_members(&mut self) {
        let limit = self.spec().upgrade.retries.limit;
        // What only the status knows, by member name (the last record of a name counts).
        let mut old: Vec<Option<MemberStatus>> = std::mem::take(&mut self.st.members)
            .into_iter()
            .map(Some)
            .collect();
        let spec_members = &self.spec().members;
        let mut out = Vec::with_capacity(spec_members.len());
        for (i, m) in spec_members.iter().enumerate() {
            let found = old
                .iter()
                .rposition(|o| o.as_ref().is_some_and(|o| o.name == m.name));
            // A name listed twice (an invalid spec) gets the record twice.
            let again = spec_members[i + 1..].iter().any(|n| n.name == m.name);
            let prev = match found {
                Some(k) if again => old[k].clone(),
                Some(k) => old[k].take(),
                None => None,
            };
            let mut ms = prev.unwrap_or_else(|| MemberStatus {
                name: m.name.clone(),
                ..Default::default()
            });
            match self.agent(&m.name) {
                Some(a) => {
                    let version = effective_version(self.spec(), &a.version, &a.components);
                    if let Some(prev) = &ms.version
                        && prev != &version
                    {
                        ms.previous_version = Some(prev.clone());
                    }
                    ms.version = Some(version);
                    ms.components = a.components.clone();
                    ms.role = a.role;
                    ms.serving = a.serving;
                    ms.health = a.health;
                    // Whole seconds: sub-second jitter under live traffic is not news, and a
                    // converged cluster must not rewrite its status on every look.
                    ms.lag_seconds = a.lag_seconds.max(0.0).floor();
                    ms.backlog = a.backlog;
                    ms.conflicts = a.conflicts;
                    ms.alarms = a
                        .alarms
                        .iter()
                        .map(|al| crate::api::AlarmStatus {
                            code: al.code.clone(),
                            name: al.name.clone(),
                            severity: al.severity,
                            expected: expected_alarm(&al.name),
                        })
                        .collect();
                    ms.operation = a.operation.as_ref().map(|o| OperationStatus {
                        id: o.id.clone(),
                        kind: o.kind.clone(),
                        state: format!("{:?}", o.state),
                        progress: o.progress,
                        message: (!o.message.is_empty()).then(|| o.message.clone()),
                    });
                }
                None => {
                    ms.role = MemberRole::Unreachable;
                    ms.serving = false;
                    ms.health = Health::Offline;
                    ms.last_error = self
                        .obs(&m.name)
                        .and_then(|o| o.error.clone())
                        .or(ms.last_error);
                }
            }
            if ms.failures >= limit {
                ms.role = MemberRole::Zombie;
            }
            // Runs exactly the cluster's target software (version and every hosted component),
            // not what an automatic rollback restores; unknown (false) while the member is
            // unreachable or the target is not known.
            ms.up_to_date = !self.target_version.is_empty()
                && self.agent(&m.name).is_some_and(|a| {
                    let target = spec_target(self.spec(), m, &self.order, &self.target_version);
                    same_software(&running(a, &target), &target)
                });
            out.push(ms);
        }
        self.st.members = out;
        self.st.active_member = self
            .st
            .members
            .iter()
            .find(|m| m.role == MemberRole::Active)
            .map(|m| m.name.clone());
        let mut versions: Vec<String> = self
            .st
            .members
            .iter()
            .filter_map(|m| m.version.clone())
            .collect();
        versions.sort_by(|a, b| crate::api::values::cmp_versions(a, b));
        versions.dedup();
        self.st.running_versions = (!versions.is_empty()).then(|| versions.join(","));
    }

    /// The member currently Active (per agent), if exactly one.
    fn active(&self) -> Result<Option<&'a str>, String> {
        let actives: Vec<&'a str> = self
            .spec()
            .members
            .iter()
            .filter(|m| {
                self.agent(&m.name)
                    .is_some_and(|a| a.role == MemberRole::Active)
            })
            .map(|m| m.name.as_str())
            .collect();
        match actives.len() {
            0 => Ok(None),
            1 => Ok(Some(actives[0])),
            _ => Err(format!(
                "more than one active member: {}",
                actives.join(", ")
            )),
        }
    }

    fn member_target(&self, m: &MemberSpec) -> Software {
        if self.st.rolled_back.is_some() {
            // Restore what the (switched-back) active runs.
            if let Ok(Some(active)) = self.active()
                && let Some(a) = self.agent(active)
            {
                let spec_t = spec_target(self.spec(), m, &self.order, &self.target_version);
                let mut t = running(a, &spec_t);
                t.components
                    .retain(|k, _| spec_t.components.contains_key(k));
                return t;
            }
        }
        spec_target(self.spec(), m, &self.order, &self.target_version)
    }

    fn moves(&self, m: &MemberSpec) -> Option<Vec<Move>> {
        let a = self.agent(&m.name)?;
        let t = self.member_target(m);
        let cur = running(a, &t);
        let names = hosted(self.spec(), m, &self.order);
        Some(pending_moves(&cur, &t, &names))
    }

    fn software_of(&self, m: &MemberSpec) -> Option<Software> {
        let a = self.agent(&m.name)?;
        Some(running(
            a,
            &spec_target(self.spec(), m, &self.order, &self.target_version),
        ))
    }

    fn in_sync(&self, member: &str) -> bool {
        self.agent(member).is_some_and(|a| {
            a.healthy() && a.lag_seconds <= self.spec().upgrade.max_replication_lag.as_secs_f64()
        })
    }

    // ----- steps in flight -------------------------------------------------------------

    fn advance_steps(&mut self) {
        let steps = std::mem::take(&mut self.st.steps);
        for s in steps {
            let keep = match s.action {
                StepAction::AwaitSync => self.advance_await(&s),
                StepAction::Switchover => self.advance_switchover(&s),
                _ => self.advance_op(&s),
            };
            if let Some(s) = keep {
                if s.action.disruptive() && s.action != StepAction::Switchover {
                    self.unavailable += 1;
                }
                self.st.steps.push(s);
            }
        }
        if !self.st.steps.is_empty() {
            self.wake = Wake::Busy;
        }
    }

    fn lookup_op(&self, member: &str, id: &str) -> Option<&'a OpView> {
        let o = self.obs(member)?;
        o.ops.get(id).or_else(|| {
            o.agent
                .as_ref()?
                .operation
                .as_ref()
                .filter(|op| op.id == id)
        })
    }

    fn request_for(&self, s: &StepRecord) -> Option<OpRequest> {
        let kind = match s.action {
            StepAction::Preflight => OpKind::Preflight,
            StepAction::ForceStandby => OpKind::ForceStandby,
            StepAction::Upgrade => OpKind::Upgrade,
            StepAction::Rollback => OpKind::Rollback,
            StepAction::Release => OpKind::Demote,
            StepAction::Backup => OpKind::Backup,
            StepAction::Verify => OpKind::Verify,
            StepAction::SyncConfig => OpKind::SyncConfig,
            StepAction::AwaitSync | StepAction::Switchover => return None,
        };
        let role = (s.action == StepAction::Release).then(|| {
            if self.member_spec(&s.member).is_some_and(|m| m.spare) {
                "spare"
            } else {
                "standby"
            }
            .to_string()
        });
        Some(OpRequest {
            id: s.id.clone(),
            kind,
            version: s.version.clone(),
            component: s.component.clone(),
            source: s.source.clone(),
            role,
        })
    }

    /// A one-operation step: submit it if the agent does not know it, finish it when done.
    fn advance_op(&mut self, s: &StepRecord) -> Option<StepRecord> {
        let Some(_) = self.agent(&s.member) else {
            self.waiting.push(format!(
                "{} unreachable during {}",
                s.member,
                action_name(s.action)
            ));
            return Some(s.clone());
        };
        match self.lookup_op(&s.member, &s.id) {
            None => {
                if let Some(req) = self.request_for(s) {
                    self.actions.push(Action {
                        member: s.member.clone(),
                        request: req,
                    });
                }
                Some(s.clone())
            }
            Some(op) if op.state == OpState::Running => Some(s.clone()),
            Some(op) if op.state == OpState::Succeeded => {
                self.step_succeeded(s);
                None
            }
            Some(op) => {
                let msg = if op.message.is_empty() {
                    "operation failed".to_string()
                } else {
                    op.message.clone()
                };
                self.step_failed(s, &msg);
                None
            }
        }
    }

    fn advance_await(&mut self, s: &StepRecord) -> Option<StepRecord> {
        if self.in_sync(&s.member) {
            self.step_succeeded(s);
            return None;
        }
        let timeout = self.spec().upgrade.sync_timeout;
        if self.now().since(s.started_at) >= timeout {
            let lag = self
                .agent(&s.member)
                .map(|a| a.lag_seconds)
                .unwrap_or(f64::NAN);
            self.step_failed(s, &format!("not in sync within {timeout} (lag {lag:.1}s)"));
            return None;
        }
        self.wake_at(s.started_at.plus(timeout));
        Some(s.clone())
    }

    /// Switchover in three observed phases: hold the old active in forced standby (it stops
    /// taking writes and follows the target), wait until the target has every entry, promote.
    fn advance_switchover(&mut self, s: &StepRecord) -> Option<StepRecord> {
        let to = s.member.as_str();
        let Some(from) = s.from.as_deref() else {
            self.step_failed(s, "switchover without a source member");
            return None;
        };
        let (Some(ta), Some(fa)) = (self.agent(to), self.agent(from)) else {
            self.waiting.push(format!(
                "switchover {from} -> {to} waits for both members to be reachable"
            ));
            return Some(s.clone());
        };
        let demote_id = format!("{}.demote", s.id);
        let promote_id = format!("{}.promote", s.id);
        // The target changed while switching over (a backout mid-way): never promote a member
        // that no longer runs the target. Before the old active steps down, just drop the step;
        // after, bring the old active back.
        // Once the promote was sent it may land at any moment: finish the switchover rather
        // than risk two actives; the backout then moves traffic back the normal way.
        let stale = !s.rollback
            && ta.role != MemberRole::Active
            && self.lookup_op(to, &promote_id).is_none()
            && self
                .member_spec(to)
                .and_then(|m| self.moves(m))
                .is_some_and(|v| !v.is_empty());
        if stale {
            if fa.role == MemberRole::Active {
                if self
                    .lookup_op(from, &demote_id)
                    .is_some_and(|op| op.state == OpState::Running)
                {
                    return Some(s.clone());
                }
                if self.lookup_op(from, &demote_id).is_none() {
                    self.cancel_step(s, "target changed before the switchover started");
                    return None;
                }
            }
            if fa.role != MemberRole::Active {
                self.cancel_step(
                    s,
                    &format!("target changed: {to} no longer runs it; switching back to {from}"),
                );
                let mut n = NewStep::on(StepAction::Switchover, from);
                n.from = Some(to.to_string());
                n.rollback = true;
                n.message =
                    format!("switch back to {from}: the target changed during the switchover");
                self.start(n);
                return None;
            }
        }
        if ta.role == MemberRole::Active {
            if fa.role == MemberRole::Active {
                self.stalled = Some(Stall::SplitBrain(format!(
                    "both {from} and {to} report Active"
                )));
                return Some(s.clone());
            }
            self.step_succeeded(s);
            return None;
        }
        if let Some(op) = self.lookup_op(from, &demote_id)
            && op.state == OpState::Failed
        {
            self.step_failed(s, &format!("demoting {from} failed: {}", op.message));
            return None;
        }
        if let Some(op) = self.lookup_op(to, &promote_id)
            && op.state == OpState::Failed
        {
            self.step_failed(s, &format!("promoting {to} failed: {}", op.message));
            return None;
        }
        if fa.role == MemberRole::Active {
            if self.lookup_op(from, &demote_id).is_none() {
                self.switchover_phase(s, "demote", from);
                self.actions.push(Action {
                    member: from.to_string(),
                    request: OpRequest {
                        id: demote_id,
                        kind: OpKind::ForceStandby,
                        version: None,
                        component: None,
                        source: ta.data_endpoint.clone(),
                        role: None,
                    },
                });
            }
            return Some(s.clone());
        }
        // Neither is active: the old active stepped down. Promote once the target holds every
        // entry the old active wrote.
        self.close_switchover_phases(s, Some("demote"), LogResult::Succeeded, "");
        let caught_up = ta.applied_index >= fa.applied_index && ta.lag_entries == 0;
        if caught_up {
            if self.lookup_op(to, &promote_id).is_none() {
                self.switchover_phase(s, "promote", to);
                self.actions.push(Action {
                    member: to.to_string(),
                    request: OpRequest {
                        id: promote_id,
                        kind: OpKind::Promote,
                        version: None,
                        component: None,
                        source: None,
                        role: None,
                    },
                });
            }
            return Some(s.clone());
        }
        let timeout = self.spec().upgrade.sync_timeout;
        if self.now().since(s.started_at) >= timeout {
            self.step_failed(
                s,
                &format!("{to} did not catch up with {from} within {timeout}"),
            );
            return None;
        }
        Some(s.clone())
    }

    fn step_succeeded(&mut self, s: &StepRecord) {
        let now = self.now();
        self.close_switchover_phases(s, None, LogResult::Succeeded, "");
        self.log().close(s.log_id, LogResult::Succeeded, "", now);
        let key = self
            .member_spec(&s.member)
            .map(|m| self.member_target(m).key());
        let what = describe(s);
        self.event(false, "StepSucceeded", format!("{what} succeeded"));
        if let Some(ms) = self.mstatus(&s.member) {
            ms.failures = 0;
            ms.next_attempt_at = None;
            ms.last_error = None;
        }
        match s.action {
            StepAction::Preflight => {
                if let Some(ms) = self.mstatus(&s.member) {
                    ms.preflight_passed = key;
                }
            }
            StepAction::SyncConfig => {
                if let Some(ms) = self.mstatus(&s.member) {
                    ms.config_synced = key;
                }
            }
            StepAction::Verify => {
                let token =
                    verify_token(s.component.as_deref(), s.version.as_deref().unwrap_or(""));
                if s.component.is_none() && s.from.as_deref() == Some("cluster") {
                    self.st.verified_target = key;
                } else if let Some(ms) = self.mstatus(&s.member)
                    && !ms.verified.contains(&token)
                {
                    ms.verified.push(token);
                }
            }
            StepAction::Backup if !self.st.steps.iter().any(|o| o.action == StepAction::Backup) => {
                let window = self.backup_window();
                self.st.last_backup = Some(crate::api::BackupRecord {
                    version: self.target_version.clone(),
                    window,
                    at: now,
                });
            }
            StepAction::Switchover if !s.rollback => {
                self.st.switchover = Some(SwitchoverRecord {
                    from: s.from.clone().unwrap_or_default(),
                    to: s.member.clone(),
                    version: self
                        .agent(&s.member)
                        .map(|a| a.version.clone())
                        .unwrap_or_default(),
                    at: now,
                    verified: false,
                });
            }
            _ => {}
        }
    }

    fn cancel_step(&mut self, s: &StepRecord, msg: &str) {
        let now = self.now();
        self.close_switchover_phases(s, None, LogResult::Cancelled, msg);
        self.log().close(s.log_id, LogResult::Cancelled, msg, now);
        let what = describe(s);
        self.event(false, "StepCancelled", format!("{what} cancelled: {msg}"));
    }

    fn step_failed(&mut self, s: &StepRecord, msg: &str) {
        let now = self.now();
        self.close_switchover_phases(s, None, LogResult::Failed, msg);
        self.log().close(s.log_id, LogResult::Failed, msg, now);
        let what = describe(s);
        self.event(true, "StepFailed", format!("{what} failed: {msg}"));
        let policy = self.spec().upgrade.retries.clone();
        let mut zombie = false;
        if let Some(ms) = self.mstatus(&s.member) {
            ms.failures += 1;
            ms.last_error = Some(msg.to_string());
            if ms.failures >= policy.limit {
                ms.role = MemberRole::Zombie;
                ms.next_attempt_at = None;
                zombie = true;
            } else {
                let at = now.plus(backoff(&policy, ms.failures));
                ms.next_attempt_at = Some(at);
            }
        }
        if zombie {
            self.event(
                true,
                "MemberZombie",
                format!(
                    "{} failed {} times and needs a human: {msg}",
                    s.member, policy.limit
                ),
            );
        }
        // A switchover that left nobody active is undone at once: the old active comes back.
        if s.action == StepAction::Switchover
            && let Some(from) = s.from.as_deref()
            && !s.rollback
            && matches!(self.active(), Ok(None))
        {
            let mut n = NewStep::on(StepAction::Switchover, from);
            n.from = Some(s.member.clone());
            n.rollback = true;
            n.message = format!("switch back to {from} after failed switchover");
            self.start(n);
        }
    }

    /// The post-switchover traffic check; on timeout, the automatic rollback.
    fn check_traffic(&mut self) {
        let Some(sw) = self.st.switchover.clone() else {
            return;
        };
        if sw.verified {
            return;
        }
        let ok = self
            .agent(&sw.to)
            .is_some_and(|a| a.role == MemberRole::Active && a.serving && a.healthy());
        let now = self.now();
        let tc = self.spec().upgrade.traffic_check.clone();
        // The check belongs to the switchover it follows (closed at the instant it recorded).
        let parent = self
            .st
            .log
            .iter()
            .rev()
            .find(|e| e.action == "switchover" && e.target == sw.to && e.end == Some(sw.at))
            .map(|e| e.id)
            .or_else(|| self.rollout_log(false));
        if ok {
            if let Some(x) = self.st.switchover.as_mut() {
                x.verified = true;
            }
            let id = self.log().open(
                parent,
                "traffic-check",
                LogScope::Member,
                &sw.to,
                Some(&sw.version),
                LogMode::Automatic,
                "",
                now,
            );
            self.log().close(
                id,
                LogResult::Succeeded,
                format!("{} serves traffic", sw.to),
                now,
            );
            self.event(
                false,
                "TrafficCheckPassed",
                format!("{} serves traffic after switchover", sw.to),
            );
            return;
        }
        let deadline = sw.at.plus(tc.timeout);
        if now < deadline {
            self.wake_at(deadline);
            self.waiting
                .push(format!("traffic check of {} until {}", sw.to, deadline));
            return;
        }
        let reason = format!(
            "{} did not serve traffic within {} of the switchover",
            sw.to, tc.timeout
        );
        let id = self.log().open(
            parent,
            "traffic-check",
            LogScope::Member,
            &sw.to,
            Some(&sw.version),
            LogMode::Automatic,
            "",
            now,
        );
        self.log().close(id, LogResult::Failed, reason.clone(), now);
        self.st.switchover = None;
        if !tc.rollback {
            self.stalled = Some(Stall::TrafficCheckFailed(reason.clone()));
            self.event(true, "TrafficCheckFailed", reason);
            return;
        }
        let restored = self.agent(&sw.from).map(|a| a.version.clone());
        self.st.rolled_back = Some(RolledBack {
            version: self.target_version.clone(),
            restored,
            reason: reason.clone(),
            at: now,
        });
        self.event(
            true,
            "AutomaticRollback",
            format!("{reason}; switching back to {}", sw.from),
        );
        let mut n = NewStep::on(StepAction::Switchover, &sw.from);
        n.from = Some(sw.to.clone());
        n.rollback = true;
        n.message = format!("automatic rollback: {reason}");
        self.start(n);
    }

    // ----- choosing new steps ----------------------------------------------------------

    fn busy(&self, member: &str) -> bool {
        self.st
            .steps
            .iter()
            .any(|s| s.member == member || s.from.as_deref() == Some(member))
    }

    fn in_backoff(&mut self, member: &str) -> bool {
        let now = self.now();
        let at = self
            .st
            .members
            .iter()
            .find(|m| m.name == member)
            .and_then(|m| m.next_attempt_at);
        match at {
            Some(t) if t > now => {
                self.wake_at(t);
                self.waiting.push(format!("{member} retries at {t}"));
                true
            }
            _ => false,
        }
    }

    fn choose_next(&mut self) {
        if self
            .st
            .steps
            .iter()
            .any(|s| s.action == StepAction::Switchover)
        {
            return;
        }
        if self.st.switchover.as_ref().is_some_and(|s| !s.verified) {
            return;
        }
        let zombies: Vec<String> = self
            .st
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Zombie)
            .map(|m| m.name.clone())
            .collect();
        if !zombies.is_empty() {
            let errors = self
                .st
                .members
                .iter()
                .filter(|m| m.role == MemberRole::Zombie)
                .map(|m| (m.name.clone(), m.last_error.clone().unwrap_or_default()))
                .collect();
            self.stalled = Some(Stall::MemberZombie(errors));
            return;
        }
        let unreachable: Vec<&str> = self
            .spec()
            .members
            .iter()
            .filter(|m| self.agent(&m.name).is_none())
            .map(|m| m.name.as_str())
            .collect();
        if !unreachable.is_empty() {
            // Never act on a member whose state is unknown, nor around it.
            self.degraded
                .push(format!("unreachable: {}", unreachable.join(", ")));
            self.waiting.push(format!(
                "waiting for {} to be reachable",
                unreachable.join(", ")
            ));
            self.wake = self.wake.min(Wake::Busy);
            return;
        }
        let active = match self.active() {
            Ok(a) => a,
            Err(e) => {
                self.stalled = Some(Stall::SplitBrain(e));
                return;
            }
        };
        let Some(active) = active else {
            if self.st.steps.is_empty() {
                self.degraded.push("no active member".into());
                self.waiting
                    .push("no member is active; waiting for the HA system to elect one".into());
            }
            return;
        };
        self.unavailable += self
            .spec()
            .members
            .iter()
            .filter(|m| {
                !self.busy(&m.name)
                    && self
                        .agent(&m.name)
                        .is_some_and(|a| a.role == MemberRole::OutOfService)
            })
            .count() as u32;

        // Mixed version: anyone not on the active's software is held in forced standby.
        let active_spec = self.member_spec(active);
        let active_sw = active_spec.and_then(|m| self.software_of(m));
        let spec = self.spec();
        for m in &spec.members {
            if m.name == active || self.busy(&m.name) {
                continue;
            }
            let (Some(a), Some(asw)) = (self.agent(&m.name), active_sw.as_ref()) else {
                continue;
            };
            let sw = self.software_of(m);
            if matches!(a.role, MemberRole::Standby | MemberRole::Spare)
                && sw.as_ref().is_some_and(|s| !same_software(s, asw))
            {
                let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
                n.source = self.agent(active).and_then(|x| x.data_endpoint.clone());
                n.message = format!("{} runs another version than the active {active}", m.name);
                self.start(n);
            }
        }

        let members = &self.spec().members;
        let (spares, regular): (Vec<&MemberSpec>, Vec<&MemberSpec>) =
            members.iter().partition(|m| m.spare);
        let others: Vec<&MemberSpec> = regular
            .iter()
            .copied()
            .filter(|m| m.name != active)
            .collect();

        // Phase A: the non-spare members other than the active, standby first.
        let mut phase_a_done = true;
        for m in &others {
            if !self.member_phase(m, active) {
                phase_a_done = false;
            }
        }
        if !phase_a_done {
            return;
        }
        // With no regular peer at all, spares are the only possible switchover targets.
        let spares_first = others.is_empty() && !spares.is_empty();
        if spares_first {
            let mut done = true;
            for m in &spares {
                if !self.member_phase(m, active) {
                    done = false;
                }
            }
            if !done {
                return;
            }
        }
        // Phase B: the active.
        let Some(active_m) = self.member_spec(active) else {
            return;
        };
        let active_moves = self.moves(active_m).unwrap_or_default();
        if !active_moves.is_empty() {
            if self.in_place() || (others.is_empty() && spares.is_empty()) {
                if !self.allow_outage() {
                    self.stalled = Some(Stall::OutageNotAllowed {
                        active: active.to_string(),
                    });
                    return;
                }
                self.member_phase(active_m, active);
                return;
            }
            self.plan_switchover(active, &others, &spares);
            return;
        }
        if !self.member_phase(active_m, active) {
            return;
        }
        // Phase C: spares last.
        if !spares_first {
            let mut done = true;
            for m in &spares {
                if !self.member_phase(m, active) {
                    done = false;
                }
            }
            if !done {
                return;
            }
        }
        self.finish_rollout(active);
    }

    /// Start what member `m` needs next; true when it needs nothing more.
    fn member_phase(&mut self, m: &MemberSpec, active: &str) -> bool {
        if self.busy(&m.name) {
            return false;
        }
        if self.in_backoff(&m.name) {
            return false;
        }
        match self.next_for_member(m, active) {
            Next::Done => true,
            Next::Wait(why) => {
                self.waiting.push(why);
                false
            }
            Next::Step(n) => {
                let opposite = match n.action {
                    StepAction::Upgrade => Some(StepAction::Rollback),
                    StepAction::Rollback => Some(StepAction::Upgrade),
                    _ => None,
                };
                if let Some(o) = opposite
                    && let Some(s) = self.st.steps.iter().find(|s| s.action == o)
                {
                    // Never an upgrade and a backout at once: the one in flight finishes first.
                    self.waiting.push(format!(
                        "{} waits for {} to finish",
                        action_name(n.action),
                        describe(s)
                    ));
                    return false;
                }
                if n.action.disruptive() && !self.disruption_allowed(true) {
                    return false;
                }
                self.start(n);
                false
            }
        }
    }

    fn next_for_member(&self, m: &MemberSpec, active: &str) -> Next {
        let Some(a) = self.agent(&m.name) else {
            return Next::Wait(format!("{} unreachable", m.name));
        };
        let Some(moves) = self.moves(m) else {
            return Next::Wait(format!("{} unreachable", m.name));
        };
        let target = self.member_target(m);
        let key = target.key();
        let ms = self.st.members.iter().find(|x| x.name == m.name);
        let is_active = m.name == active;
        let active_source = self.agent(active).and_then(|x| x.data_endpoint.clone());
        if let Some(mv) = moves.first() {
            if !is_active && matches!(a.role, MemberRole::Standby | MemberRole::Spare) {
                let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
                n.source = active_source;
                n.message = format!("hold {} out of failover while it changes version", m.name);
                return Next::Step(n);
            }
            if self.spec().upgrade.preflight
                && ms.and_then(|x| x.preflight_passed.as_ref()) != Some(&key)
            {
                let mut n = NewStep::on(StepAction::Preflight, &m.name);
                n.version = Some(mv.version.clone());
                n.message = format!("narrow checks before moving {} to {}", m.name, key);
                return Next::Step(n);
            }
            // Verify each finished layer before the next one starts, unless deferrable.
            if let Some(v) = self.pending_verify(m, &target, false) {
                return Next::Step(v);
            }
            let mut n = NewStep::on(
                if mv.down {
                    StepAction::Rollback
                } else {
                    StepAction::Upgrade
                },
                &m.name,
            );
            n.version = Some(mv.version.clone());
            n.component = mv.component.clone();
            n.message = match &mv.component {
                Some(c) => format!(
                    "{} {c} on {} to {}",
                    if mv.down { "roll back" } else { "upgrade" },
                    m.name,
                    mv.version
                ),
                None => format!(
                    "{} {} to {}",
                    if mv.down { "roll back" } else { "upgrade" },
                    m.name,
                    mv.version
                ),
            };
            return Next::Step(n);
        }
        if self.spec().upgrade.reapply_config
            && !is_active
            && ms.and_then(|x| x.config_synced.as_ref()) != Some(&key)
        {
            let mut n = NewStep::on(StepAction::SyncConfig, &m.name);
            n.source = active_source;
            n.message = format!("re-apply configuration on {} from {active}", m.name);
            return Next::Step(n);
        }
        if let Some(v) = self.pending_verify(m, &target, true) {
            return Next::Step(v);
        }
        if !is_active && !self.in_sync(&m.name) {
            let mut n = NewStep::on(StepAction::AwaitSync, &m.name);
            n.message = format!(
                "wait until {} replicates within {}",
                m.name,
                self.spec().upgrade.max_replication_lag
            );
            return Next::Step(n);
        }
        Next::Done
    }

    /// A layer verification still owed on `m`. Between layers (`all == false`) deferrable ones
    /// wait; at the end every owed verification runs. HA-pair checks (primary active) belong to
    /// the cluster-wide verification.
    fn pending_verify(&self, m: &MemberSpec, target: &Software, all: bool) -> Option<NewStep> {
        let a = self.agent(&m.name)?;
        let ms = self.st.members.iter().find(|x| x.name == m.name)?;
        for name in hosted(self.spec(), m, &self.order) {
            let c = self.spec().components.iter().find(|c| c.name == name)?;
            if c.verify.skip || c.verify.requires_primary_active || (!all && c.verify.deferrable) {
                continue;
            }
            let want = target.components.get(name)?;
            let at_target = a
                .components
                .get(name)
                .is_some_and(|v| crate::api::values::same_version(v, want));
            if !at_target {
                continue;
            }
            let token = verify_token(Some(name), want);
            if !ms.verified.contains(&token) {
                let mut n = NewStep::on(StepAction::Verify, &m.name);
                n.component = Some(name.to_string());
                n.version = Some(want.clone());
                n.message = format!("verify {name} {want} on {}", m.name);
                return Some(n);
            }
        }
        None
    }

    fn plan_switchover(&mut self, active: &str, others: &[&MemberSpec], spares: &[&MemberSpec]) {
        let pick = |pool: &[&MemberSpec]| -> Option<String> {
            pool.iter()
                .find(|m| {
                    !self.busy(&m.name)
                        && self.moves(m).is_some_and(|v| v.is_empty())
                        && self.agent(&m.name).is_some_and(|a| {
                            matches!(
                                a.role,
                                MemberRole::Standby | MemberRole::ForcedStandby | MemberRole::Spare
                            )
                        })
                        && self.in_sync(&m.name)
                })
                .map(|m| m.name.clone())
        };
        let Some(to) = pick(others).or_else(|| pick(spares)) else {
            self.waiting.push(format!(
                "no upgraded, in-sync member to switch {active} over to"
            ));
            return;
        };
        // After the switchover the version that serves changes: whoever does not run the new
        // active's version must already be held in forced standby.
        let to_sw = self.member_spec(&to).and_then(|m| self.software_of(m));
        let mut holding = false;
        let spec = self.spec();
        for m in &spec.members {
            if m.name == active || m.name == to {
                continue;
            }
            if self.busy(&m.name) {
                // A hold still in flight holds the switchover too: if the member restarts
                // before it applies, it would come back in its plain role on the old version
                // beside the new active.
                holding |= self
                    .st
                    .steps
                    .iter()
                    .any(|s| s.member == m.name && s.action == StepAction::ForceStandby);
                continue;
            }
            let differs = match (self.software_of(m), to_sw.as_ref()) {
                (Some(s), Some(t)) => !same_software(&s, t),
                _ => false,
            };
            let plain = self
                .agent(&m.name)
                .is_some_and(|a| matches!(a.role, MemberRole::Standby | MemberRole::Spare));
            if differs && plain {
                let mut n = NewStep::on(StepAction::ForceStandby, &m.name);
                n.source = self.agent(active).and_then(|x| x.data_endpoint.clone());
                n.message = format!("hold {} in forced standby before {to} takes over", m.name);
                self.start(n);
                holding = true;
            }
        }
        if holding {
            return;
        }
        self.request_switchover(active, &to, "switch traffic to the upgraded member");
    }

    fn request_switchover(&mut self, from: &str, to: &str, why: &str) {
        if !self.may_start {
            self.held = true;
            return;
        }
        let version = self
            .agent(to)
            .map(|a| a.version.clone())
            .unwrap_or_default();
        let name = switchover_step_name(self.inp.name, to, &version);
        let mut mode = LogMode::Automatic;
        if self.spec().upgrade.supervision == Supervision::Approval {
            let ack = format!("approve:{name}");
            if !self.inp.intents.approve.iter().any(|a| a == &name) {
                self.awaiting = Some(name);
                return;
            }
            if !self.disruption_allowed(false) {
                return;
            }
            self.ack(ack);
            self.event(false, "Approved", format!("step {name} approved"));
            mode = LogMode::Manual;
        } else if !self.disruption_allowed(false) {
            return;
        }
        let mut n = NewStep::on(StepAction::Switchover, to);
        n.from = Some(from.to_string());
        n.mode = mode;
        n.message = format!("{why}: {from} -> {to}");
        self.start(n);
    }

    /// Windows, backups and the unavailability budget gate every disruptive step.
    fn disruption_allowed(&mut self, takes_member_down: bool) -> bool {
        let now = self.now();
        let ws = window_state(&self.spec().upgrade.maintenance_windows, now);
        if let WindowState::Closed { next } = ws {
            match next {
                Some(t) => {
                    self.waiting
                        .push(format!("outside maintenance windows; next opens at {t}"));
                    self.wake_at(t);
                }
                None => self
                    .waiting
                    .push("outside maintenance windows; none will open".into()),
            }
            return false;
        }
        if self.spec().upgrade.backup_before_disruptive {
            let window = self.backup_window();
            let fresh = self
                .st
                .last_backup
                .as_ref()
                .is_some_and(|b| b.version == self.target_version && b.window == window);
            if !fresh {
                if !self.st.steps.iter().any(|s| s.action == StepAction::Backup) {
                    let spec = self.spec();
                    for m in &spec.members {
                        if !self.busy(&m.name) {
                            let mut n = NewStep::on(StepAction::Backup, &m.name);
                            n.message = format!(
                                "back up {} before the first disruptive step of this window",
                                m.name
                            );
                            self.start(n);
                        }
                    }
                }
                self.waiting
                    .push("backing up before the first disruptive step".into());
                return false;
            }
        }
        if takes_member_down && self.unavailable >= self.spec().upgrade.max_unavailable {
            self.waiting.push(format!(
                "maxUnavailable {} reached",
                self.spec().upgrade.max_unavailable
            ));
            return false;
        }
        true
    }

    fn backup_window(&self) -> Timestamp {
        match window_state(&self.spec().upgrade.maintenance_windows, self.now()) {
            WindowState::Open { start, .. } => start,
            _ => Timestamp(0),
        }
    }

    /// Every member runs the target: go back to the primary if asked, release forced
    /// standbys, verify the cluster once.
    fn finish_rollout(&mut self, active: &str) {
        if self.spec().upgrade.return_to_primary
            && self.st.rolled_back.is_none()
            && let Some(primary) = self
                .spec()
                .members
                .iter()
                .find(|m| m.primary)
                .map(|m| m.name.clone())
            && primary != active
        {
            if self.in_sync(&primary) {
                self.request_switchover(active, &primary, "return to the primary member");
            } else {
                self.waiting
                    .push(format!("waiting for primary {primary} to be in sync"));
            }
            return;
        }
        let mut released = true;
        let spec = self.spec();
        for m in &spec.members {
            if m.name != active
                && self
                    .agent(&m.name)
                    .is_some_and(|a| a.role == MemberRole::ForcedStandby)
            {
                released = false;
                let mut n = NewStep::on(StepAction::Release, &m.name);
                n.message = format!(
                    "release {} from forced standby: every member runs the same version",
                    m.name
                );
                self.start(n);
            }
        }
        if !released {
            return;
        }
        let key = self
            .member_spec(active)
            .map(|m| self.member_target(m).key());
        if self.st.rolled_back.is_none() && self.st.verified_target != key {
            // HA-pair verifications need the primary active; without returnToPrimary they are
            // skipped with a log line rather than blocking forever.
            let primary_active = self
                .spec()
                .members
                .iter()
                .any(|m| m.primary && m.name == active);
            let needs_primary = self
                .spec()
                .components
                .iter()
                .any(|c| c.verify.requires_primary_active && !c.verify.skip);
            let now = self.now();
            if needs_primary && !primary_active {
                let name = self.inp.name;
                let parent = self.rollout_log(false);
                let id = self.log().open(
                    parent,
                    "verify",
                    LogScope::Cluster,
                    name,
                    None,
                    LogMode::Automatic,
                    "",
                    now,
                );
                self.log().close(
                    id,
                    LogResult::Cancelled,
                    "HA-pair verification skipped: the primary is not active",
                    now,
                );
            }
            let mut n = NewStep::on(StepAction::Verify, active);
            n.from = Some("cluster".into());
            n.version = Some(self.target_version.clone());
            n.message = format!("verify cluster {} on {active}", self.inp.name);
            self.start(n);
            return;
        }
        if self.st.steps.is_empty() && !self.held {
            self.converged = true;
        }
    }

    /// Record a new step (intent first) and ask for its first operation.
    fn start(&mut self, n: NewStep) {
        if !self.may_start && !n.rollback {
            self.held = true;
            return;
        }
        let now = self.now();
        let scope = if n.from.as_deref() == Some("cluster") {
            LogScope::Cluster
        } else {
            LogScope::Member
        };
        let version = n
            .version
            .clone()
            .or_else(|| (n.action == StepAction::Switchover).then(|| self.target_version.clone()));
        let action = action_name(n.action);
        let target = if scope == LogScope::Cluster {
            self.inp.name.to_string()
        } else {
            n.member.clone()
        };
        let parent = self.rollout_log(true);
        let log_id = self.log().open(
            parent,
            action,
            scope,
            &target,
            version.as_deref(),
            n.mode,
            n.message.clone(),
            now,
        );
        let attempt = self
            .st
            .members
            .iter()
            .find(|m| m.name == n.member)
            .map(|m| m.failures + 1)
            .unwrap_or(1);
        let rec = StepRecord {
            id: step_id(self.inp.name, log_id, n.action, &n.member, now),
            action: n.action,
            member: n.member.clone(),
            from: n.from.clone(),
            version: n.version.clone(),
            component: n.component.clone(),
            attempt,
            started_at: now,
            log_id,
            source: n.source.clone(),
            rollback: n.rollback,
        };
        self.event(
            false,
            "StepStarted",
            format!("{}: {}", describe(&rec), n.message),
        );
        if n.action.disruptive() && n.action != StepAction::Switchover {
            self.unavailable += 1;
        }
        // Ask for the first operation at once; the loop persists the status before sending it.
        let kept = match rec.action {
            StepAction::AwaitSync => self.advance_await(&rec),
            StepAction::Switchover => self.advance_switchover(&rec),
            _ => self.advance_op(&rec),
        };
        if let Some(r) = kept {
            self.st.steps.push(r);
            self.wake = Wake::Busy;
        }
    }

    // ----- status summary --------------------------------------------------------------

    fn finish(mut self) -> ClusterPlan {
        let now = self.now();
        let g = self.inp.generation;
        let paused = self.spec().paused || self.inp.intents.pause;
        let rolled_back = self.st.rolled_back.clone();
        for m in &self.st.members {
            if m.role == MemberRole::Unreachable {
                self.degraded.push(format!("{} unreachable", m.name));
            } else if m.health >= Health::Major && m.health != Health::Offline {
                self.degraded
                    .push(format!("{} health {:?}", m.name, m.health));
            }
        }
        if let Some(rb) = &rolled_back
            && self.stalled.is_none()
        {
            self.degraded.push(format!(
                "automatic rollback from {}: {}",
                rb.version, rb.reason
            ));
        }
        if !self.inp.admission.admitted && !self.converged && self.stalled.is_none() {
            let reason = self
                .inp
                .admission
                .reason
                .clone()
                .unwrap_or_else(|| "not admitted by the mesh".into());
            self.waiting.push(reason);
        }
        let phase = if self.stalled.is_some() {
            ClusterPhase::Stalled
        } else if rolled_back.is_some() && self.st.steps.is_empty() && self.converged {
            ClusterPhase::RolledBack
        } else if paused && !self.converged {
            ClusterPhase::Paused
        } else if self.converged {
            ClusterPhase::Ready
        } else if !self.st.steps.is_empty() {
            ClusterPhase::Progressing
        } else {
            ClusterPhase::Waiting
        };
        // A rollback that completed is a terminal state a human must look at.
        if phase == ClusterPhase::RolledBack
            && let Some(rb) = &rolled_back
        {
            self.stalled = Some(Stall::AutomaticRollback {
                version: rb.version.clone(),
                reason: rb.reason.clone(),
            });
        }
        self.st.phase = phase;
        let ready = phase == ClusterPhase::Ready;
        // The rollout ends when the cluster converges or stops on an automatic rollback.
        let end = match (phase, &rolled_back) {
            (ClusterPhase::Ready, _) => Some((
                LogResult::Succeeded,
                format!("every member runs {}", self.target_version),
            )),
            (ClusterPhase::RolledBack, Some(rb)) => {
                Some((LogResult::Failed, format!("rolled back: {}", rb.reason)))
            }
            _ => None,
        };
        if let Some((result, msg)) = end
            && let Some(id) = self.rollout_log(false)
        {
            self.log().close(id, result, msg, now);
        }
        let rec_msg = if !self.st.steps.is_empty() {
            self.st
                .steps
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            self.waiting.first().cloned().unwrap_or_default()
        };
        let rec_reason = if self.st.steps.is_empty() {
            "Waiting"
        } else {
            "StepInProgress"
        };
        let (g, t) = (g, now);
        announce_stall(&self.st.conditions, self.stalled.as_ref(), &mut self.events);
        let conds = &mut self.st.conditions;
        set_kstatus(
            conds,
            Kstatus {
                stalled: self.stalled.as_ref(),
                ready: ready.then(|| format!("every member runs {}", self.target_version)),
                paused,
                reconciling: (rec_reason, rec_msg),
            },
            g,
            t,
        );
        let degraded = !self.degraded.is_empty();
        let impaired = || self.degraded.join("; ");
        set_flag(
            conds,
            cond::DEGRADED,
            degraded,
            "MembersImpaired",
            "AsExpected",
            impaired,
            g,
            t,
        );
        let versions = self.st.running_versions.as_deref().unwrap_or_default();
        let mixed = versions.contains(',');
        let runs = || format!("members run {versions}");
        set_flag(
            conds,
            cond::MIXED_VERSION,
            mixed,
            "MixedVersion",
            "SingleVersion",
            runs,
            g,
            t,
        );
        let awaiting = self.awaiting.as_deref();
        let approve = || format!("approve step {}", awaiting.unwrap_or_default());
        let (on, off) = ("ApprovalRequired", "NoApprovalPending");
        set_flag(
            conds,
            cond::AWAITING_APPROVAL,
            awaiting.is_some(),
            on,
            off,
            approve,
            g,
            t,
        );
        self.st.message = if let Some(stall) = &self.stalled {
            Some(stall.message())
        } else if let Some(a) = &self.awaiting {
            Some(format!("awaiting approval of {a}"))
        } else if ready {
            None
        } else if paused && self.st.steps.is_empty() {
            Some("paused".into())
        } else if !self.st.steps.is_empty() {
            Some(
                self.st
                    .steps
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        } else {
            self.waiting.first().cloned()
        };
        if self.stalled.is_some() && self.st.steps.is_empty() {
            self.wake = Wake::Idle;
        }
        ClusterPlan {
            status: self.st,
            actions: self.actions,
            events: self.events,
            wake: self.wake,
        }
    }
}

fn verify_token(component: Option<&str>, version: &str) -> String {
    format!("{}@{version}", component.unwrap_or(""))
}

fn describe(s: &StepRecord) -> String {
    let mut out = action_name(s.action).to_string();
    if let Some(c) = &s.component {
        out.push(' ');
        out.push_str(c);
    }
    match (s.action, &s.from) {
        (StepAction::Switchover, Some(f)) => out.push_str(&format!(" {f} -> {}", s.member)),
        _ => out.push_str(&format!(" {}", s.member)),
    }
    if let Some(v) = &s.version {
        out.push_str(&format!(" to {v}"));
    }
    out
}

/// Alarms that are normal while a rollout runs, as the source procedures list them.
pub fn expected_alarm(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "forcedstandby",
        "forced standby",
        "forced-standby",
        "mixedversion",
        "mixed version",
        "mixed-version",
        "upgradeinprogress",
        "upgrade in progress",
        "upgrade-in-progress",
        "replicationinhibited",
        "replication inhibited",
    ]
    .iter()
    .any(|k| n.replace(['_'], "").contains(k))
}

/// A cluster-level rollout entry still open (`upgrade` or `backout` of the whole cluster).
fn is_rollout_entry(e: &crate::api::LogEntry) -> bool {
    e.scope == LogScope::Cluster
        && is_running(e)
        && matches!(e.action.as_str(), "upgrade" | "backout")
}

fn is_running(e: &crate::api::LogEntry) -> bool {
    e.result == LogResult::Running
}
