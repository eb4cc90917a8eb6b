//! Talking to members: the [`Members`] seam, its implementation over the agents' HTTP API, and
//! the translation between the agent's wire types and the planner's observation types.
//!
//! The seam exists so that the same loop drives real agents (`baton run`, the operator) and
//! in-process fakes (benchmarks of a thousand clusters).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Deref;
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use baton_agent::api::{
    DemoteRole, Health as AgentHealth, MemberStatus as AgentStatus, OperationKind, OperationRecord,
    OperationRequest, OperationState, Role,
};
use baton_agent::client::{AgentClient, CallPolicy, ClientError, ClientTls, SharedTls};

use crate::api::values::Timestamp;
use crate::api::{CertificatesSpec, ClusterSpec, ClusterStatus, Health, MemberRole, StepAction};
use crate::plan::{
    AgentView, AlarmView, CertView, ClusterObservation, MemberObservation, MembershipReport,
    OpKind, OpRequest, PresentedView, TlsReport,
};
use crate::plan::{OpState, OpView, PlanEvent};

use super::ca::{CaState, Material, material_for};
use super::errors::MetricLabel;

/// Access to the members of clusters, addressed by name (for messages) and agent endpoint.
/// Errors are typed ([`MemberError`], [`SubmitError`]); their messages are human-readable and
/// name the member.
pub trait Members: Send + Sync {
    fn status(
        &self,
        member: &str,
        endpoint: &str,
    ) -> impl Future<Output = Result<AgentView, MemberError>> + Send;

    /// An operation by id; `Ok(None)` when the agent does not know the id.
    fn operation(
        &self,
        member: &str,
        endpoint: &str,
        id: &str,
    ) -> impl Future<Output = OpLookup> + Send;

    /// Submit (idempotent by id).
    fn submit(
        &self,
        member: &str,
        endpoint: &str,
        sub: Submission<'_>,
    ) -> impl Future<Output = Submitted> + Send;
}

/// What a submission comes to: accepted, or why not.
pub type Submitted = Result<(), SubmitError>;

/// An operation as its agent knows it: `Ok(None)` when the agent does not know the id.
pub type OpLookup = Result<Option<OpView>, MemberError>;

/// One request on its way to an agent: the planned request and what a rotation request carries
/// beyond the plan (PEMs, an issued certificate), resolved by the host as it sends.
#[derive(Clone, Copy, Debug)]
pub struct Submission<'a> {
    pub request: &'a OpRequest,
    pub material: &'a Material,
}

impl<'a> Submission<'a> {
    /// A request that needs nothing beyond the plan.
    pub fn plain(request: &'a OpRequest) -> Self {
        static NONE: Material = Material::NONE;
        Submission {
            request,
            material: &NONE,
        }
    }
}

/// A [`Members`] that hands every call on to other members (the ones it holds now):
/// implementing this implements [`Members`]. `before_submit` sees each submission first.
pub trait Delegate: Send + Sync {
    type To: Members;

    /// The members to hand a call on to; an error fails the call.
    fn to(&self) -> Result<impl Deref<Target = Self::To> + Send + '_, MemberError>;

    /// Called with each submission before it is handed on.
    fn before_submit(&self, _request: &OpRequest) {}
}

impl<D: Delegate> Members for D {
    async fn status(&self, member: &str, endpoint: &str) -> Result<AgentView, MemberError> {
        let m = self.to()?;
        m.status(member, endpoint).await
    }

    async fn operation(&self, member: &str, endpoint: &str, id: &str) -> OpLookup {
        let m = self.to()?;
        m.operation(member, endpoint, id).await
    }

    async fn submit(&self, member: &str, endpoint: &str, sub: Submission<'_>) -> Submitted {
        self.before_submit(sub.request);
        let m = self.to().map_err(|e| SubmitError::Refused(e.to_string()))?;
        m.submit(member, endpoint, sub).await
    }
}

/// Why a member could not be observed (its status or an operation could not be read). The
/// planner sees the message (`MemberObservation::error`): the member counts as unobserved for
/// the pass.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The agent's client failed: no connection, TLS, a timeout, an HTTP error or an answer
    /// that does not decode. The client's message names the agent and is kept as it is.
    #[error("{error}")]
    Agent {
        member: String,
        endpoint: String,
        /// Boxed: the client's error is large, and this travels on every failed look.
        error: Box<ClientError>,
    },
    /// A lock of the member access was poisoned (a thread panicked holding it).
    #[error("{what} poisoned")]
    Poisoned { what: &'static str },
    /// The member cannot be reached for a reason of the [`Members`] implementation itself (an
    /// in-process fleet without that member, a fake in tests); the message says why.
    #[error("{message}")]
    Unavailable { member: String, message: String },
}

impl MemberError {
    /// [`MemberError::Unavailable`] for `member`, with `message` as the whole text.
    pub fn unavailable(member: &str, message: impl Into<String>) -> Self {
        MemberError::Unavailable {
            member: member.to_string(),
            message: message.into(),
        }
    }

    /// The member the error is about, when it is about one.
    pub fn member(&self) -> Option<&str> {
        match self {
            MemberError::Agent { member, .. } | MemberError::Unavailable { member, .. } => {
                Some(member)
            }
            MemberError::Poisoned { .. } => None,
        }
    }
}

impl MetricLabel for MemberError {
    fn metric_label(&self) -> &'static str {
        match self {
            MemberError::Agent { .. } => "Agent",
            MemberError::Poisoned { .. } => "Poisoned",
            MemberError::Unavailable { .. } => "Unavailable",
        }
    }
}

/// Why an operation was not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The member runs another operation: the planner asks again on a later pass.
    Busy(String),
    /// Could not reach the agent: the next observation decides again.
    Unreachable(String),
    /// The agent refused the request (4xx other than busy): a bug or a misconfiguration.
    Refused(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Busy(m) | SubmitError::Unreachable(m) | SubmitError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for SubmitError {}

impl MetricLabel for SubmitError {
    fn metric_label(&self) -> &'static str {
        match self {
            SubmitError::Busy(_) => "Busy",
            SubmitError::Unreachable(_) => "Unreachable",
            SubmitError::Refused(_) => "Refused",
        }
    }
}

impl SubmitError {
    /// The reason of the event that reports it, and whether that event is a warning (a busy
    /// member is expected: the step is only deferred).
    pub fn event_reason(&self) -> (bool, &'static str) {
        match self {
            SubmitError::Busy(_) => (false, "OperationDeferred"),
            SubmitError::Unreachable(_) => (true, "AgentUnreachable"),
            SubmitError::Refused(_) => (true, "OperationRefused"),
        }
    }
}

/// [`Members`] over the agents' mutual-TLS HTTP API. One client per endpoint, created on
/// first use and sharing one parsed TLS configuration.
pub struct AgentMembers {
    tls: SharedTls,
    policy: CallPolicy,
    clients: Mutex<HashMap<String, AgentClient>>,
    refused: Mutex<RefusedOps>,
}

/// Operations an agent refused (4xx other than busy). The agent keeps no record of them, so
/// without this memory the planner would see "never submitted" and send the same refused
/// request on every pass, forever; reported as Failed instead, the step goes through the
/// retry policy (backoff, then Zombie with the agent's message) like any failed operation.
#[derive(Debug, Default)]
pub struct RefusedOps {
    /// (endpoint, operation id) → (kind, message), oldest first.
    entries: std::collections::VecDeque<((String, String), (String, String))>,
}

impl RefusedOps {
    /// Refusals remembered; a refusal is looked up on the pass right after it, so a few are
    /// plenty.
    const LIMIT: usize = 1024;

    pub fn note(&mut self, endpoint: &str, id: &str, kind: &str, message: &str) {
        let key = (endpoint.to_string(), id.to_string());
        self.entries.retain(|(k, _)| k != &key);
        if self.entries.len() >= Self::LIMIT {
            self.entries.pop_front();
        }
        self.entries
            .push_back((key, (kind.to_string(), message.to_string())));
    }

    /// The refused operation as a failed one.
    pub fn lookup(&self, endpoint: &str, id: &str) -> Option<OpView> {
        self.entries
            .iter()
            .find(|((e, i), _)| e == endpoint && i == id)
            .map(|(_, (kind, message))| OpView {
                id: id.to_string(),
                kind: kind.clone(),
                state: OpState::Failed,
                progress: 0,
                message: format!("refused by the agent: {message}"),
                findings: vec![],
            })
    }
}

impl AgentMembers {
    pub fn new(tls: &ClientTls) -> anyhow::Result<Self> {
        Ok(AgentMembers {
            tls: tls
                .share()
                .map_err(|e| anyhow::anyhow!("agent client TLS settings: {e}"))?,
            // The loop polls again soon anyway: one quick retry, short timeouts, so an
            // unreachable member never stalls the observation of the others for long.
            policy: CallPolicy {
                timeout: StdDuration::from_secs(3),
                retries: 1,
                backoff: StdDuration::from_millis(100),
                max_backoff: StdDuration::from_millis(500),
            },
            clients: Mutex::new(HashMap::new()),
            refused: Mutex::new(RefusedOps::default()),
        })
    }

    fn client(&self, member: &str, endpoint: &str) -> Result<AgentClient, MemberError> {
        let mut clients = self.clients.lock().map_err(|_| MemberError::Poisoned {
            what: "agent client cache",
        })?;
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let c = AgentClient::with_shared(endpoint, &self.tls)
            .map_err(|error| agent_error(member, endpoint, error))?
            .with_member(member)
            .with_policy(self.policy);
        clients.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }
}

fn agent_error(member: &str, endpoint: &str, error: ClientError) -> MemberError {
    MemberError::Agent {
        member: member.to_string(),
        endpoint: endpoint.to_string(),
        error: Box::new(error),
    }
}

impl Members for AgentMembers {
    async fn status(&self, member: &str, endpoint: &str) -> Result<AgentView, MemberError> {
        let c = self.client(member, endpoint)?;
        let st = c
            .status()
            .await
            .map_err(|e| agent_error(member, endpoint, e))?;
        Ok(agent_view(&st))
    }

    async fn operation(&self, member: &str, endpoint: &str, id: &str) -> OpLookup {
        let c = self.client(member, endpoint)?;
        match c.operation(id).await {
            Ok(rec) => Ok(Some(op_view(&rec))),
            Err(e) if e.status() == Some(404) => Ok(self
                .refused
                .lock()
                .ok()
                .and_then(|r| r.lookup(endpoint, id))),
            Err(e) => Err(agent_error(member, endpoint, e)),
        }
    }

    async fn submit(&self, member: &str, endpoint: &str, sub: Submission<'_>) -> Submitted {
        let (request, material) = (sub.request, sub.material);
        if let Some(why) = &material.unavailable {
            // Recorded like an agent's refusal: the step fails and backs off, visibly.
            if let Ok(mut r) = self.refused.lock() {
                r.note(endpoint, &request.id, request.kind.as_str(), why);
            }
            return Err(SubmitError::Refused(why.clone()));
        }
        let c = self
            .client(member, endpoint)
            .map_err(|e| SubmitError::Refused(e.to_string()))?;
        match c.submit(&operation_request(request, material)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("operation_running") || e.status() == Some(409) => {
                Err(SubmitError::Busy(e.to_string()))
            }
            Err(e) if e.is_transient() => Err(SubmitError::Unreachable(e.to_string())),
            Err(e) => {
                if let Ok(mut r) = self.refused.lock() {
                    r.note(endpoint, &request.id, request.kind.as_str(), &e.to_string());
                }
                Err(SubmitError::Refused(e.to_string()))
            }
        }
    }
}

fn role(r: Role) -> MemberRole {
    match r {
        Role::Active => MemberRole::Active,
        Role::Standby => MemberRole::Standby,
        Role::ForcedStandby => MemberRole::ForcedStandby,
        Role::Spare => MemberRole::Spare,
        Role::OutOfService => MemberRole::OutOfService,
    }
}

fn health(h: AgentHealth) -> Health {
    match h {
        AgentHealth::Ok => Health::Ok,
        AgentHealth::Info => Health::Info,
        AgentHealth::Minor => Health::Minor,
        AgentHealth::Major => Health::Major,
        AgentHealth::Critical => Health::Critical,
    }
}

/// The planner's view of an agent's `/v1/status`.
pub fn agent_view(st: &AgentStatus) -> AgentView {
    AgentView {
        version: st.version.clone(),
        components: st.components.clone(),
        role: role(st.role),
        serving: st.serving,
        health: health(st.health),
        alarms: st
            .alarms
            .iter()
            .map(|a| AlarmView {
                code: a.code.to_string(),
                name: a.name.clone(),
                severity: health(a.severity),
            })
            .collect(),
        lag_seconds: st.replication.lag_seconds,
        lag_entries: st.replication.lag_entries,
        applied_index: st.replication.applied_index,
        backlog: st.replication.backlog,
        conflicts: st.replication.conflicts,
        data_endpoint: (!st.data_endpoint.is_empty()).then(|| st.data_endpoint.clone()),
        load: st.load,
        operation: st.operation.as_ref().map(op_view),
        tls: tls_report(st),
        membership: MembershipReport {
            identity: st.identity.clone(),
            peers: st.peers.clone(),
            config_digest: st.config_digest.clone(),
            source: st.replication.source.clone().filter(|s| !s.is_empty()),
            retired: st.retired,
        },
        media: st.media.clone(),
        kpis: st.kpis.clone(),
    }
}

/// The trust, certificate and presented issuers an agent reports.
fn tls_report(st: &AgentStatus) -> TlsReport {
    TlsReport {
        trust: st.trust.clone(),
        certificate: st.certificate.as_ref().map(|c| CertView {
            fingerprint: c.fingerprint.clone(),
            issuer_fingerprint: c.issuer_fingerprint.clone(),
            not_after: Timestamp(c.not_after.as_millisecond()),
        }),
        presented: st
            .presented_issuers
            .iter()
            .map(|(issuer, p)| PresentedView {
                issuer: issuer.clone(),
                open: p.open,
                last_seen: Timestamp(p.last_seen.as_millisecond()),
            })
            .collect(),
    }
}

pub fn op_view(rec: &OperationRecord) -> OpView {
    OpView {
        id: rec.id.clone(),
        kind: rec.kind.as_str().to_string(),
        state: match rec.state {
            OperationState::Running => OpState::Running,
            OperationState::Succeeded => OpState::Succeeded,
            OperationState::Failed => OpState::Failed,
        },
        progress: rec.progress,
        message: rec.message.clone(),
        // Only a finished operation's findings are its result.
        findings: if rec.state == OperationState::Succeeded {
            rec.findings.iter().map(finding_view).collect()
        } else {
            vec![]
        },
    }
}

fn finding_view(f: &baton_agent::api::Finding) -> crate::plan::FindingView {
    crate::plan::FindingView {
        check: f.check.clone(),
        severity: match f.severity {
            baton_agent::api::FindingSeverity::Blocking => crate::api::FindingSeverity::Blocking,
            baton_agent::api::FindingSeverity::Warning => crate::api::FindingSeverity::Warning,
        },
        code: f.code.clone(),
        message: f.message.clone(),
    }
}

fn operation_kind(k: OpKind) -> OperationKind {
    match k {
        OpKind::Preflight => OperationKind::Preflight,
        OpKind::Upgrade => OperationKind::Upgrade,
        OpKind::Rollback => OperationKind::Rollback,
        OpKind::Promote => OperationKind::Promote,
        OpKind::Demote => OperationKind::Demote,
        OpKind::ForceStandby => OperationKind::ForceStandby,
        OpKind::Backup => OperationKind::Backup,
        OpKind::Verify => OperationKind::Verify,
        OpKind::SyncConfig => OperationKind::SyncConfig,
        OpKind::InstallTrust => OperationKind::InstallTrust,
        OpKind::InstallCertificate => OperationKind::InstallCertificate,
        OpKind::Restart => OperationKind::Restart,
        OpKind::ResignData => OperationKind::ResignData,
        OpKind::AddPeer => OperationKind::AddPeer,
        OpKind::RemovePeer => OperationKind::RemovePeer,
        OpKind::Retire => OperationKind::Retire,
        OpKind::Task => OperationKind::Task,
        OpKind::StageMedia => OperationKind::StageMedia,
        OpKind::RemoveMedia => OperationKind::RemoveMedia,
        OpKind::Prepare => OperationKind::Prepare,
    }
}

/// The wire request for a planner request.
///
/// The planner's request carries what its step record holds — a verify, backup or release
/// step names the version it belongs to — but an agent refuses (400 `unexpected_param`) any
/// parameter the kind does not take (`docs/agent-api.md`), so only the kind's own parameters
/// go on the wire.
pub fn operation_request(r: &OpRequest, material: &Material) -> OperationRequest {
    let mut req = OperationRequest::new(r.id.clone(), operation_kind(r.kind));
    let role = match r.role.as_deref() {
        Some("spare") => Some(DemoteRole::Spare),
        Some(_) => Some(DemoteRole::Standby),
        None => None,
    };
    match r.kind {
        OpKind::Preflight | OpKind::Upgrade | OpKind::Rollback => {
            req.version = r.version.clone();
            req.component = r.component.clone();
        }
        OpKind::StageMedia | OpKind::RemoveMedia => req.version = r.version.clone(),
        OpKind::Prepare => {
            req.version = r.version.clone();
            req.checks = r.checks.clone();
        }
        OpKind::Demote => {
            req.source = r.source.clone();
            req.role = role;
        }
        OpKind::ForceStandby | OpKind::SyncConfig => req.source = r.source.clone(),
        OpKind::Task => {
            req.task = r.task.clone();
            req.version = r.version.clone();
        }
        OpKind::InstallTrust => {
            req.trust_pem = material.trust_pem.clone();
            req.keep_trust = r.trust.as_ref().map(|t| t.keep.clone()).unwrap_or_default();
        }
        OpKind::InstallCertificate => {
            if let Some((cert, key)) = &material.certificate {
                req = req.with_certificate(cert.clone(), key.clone());
            }
        }
        OpKind::AddPeer | OpKind::RemovePeer => {
            if let Some(peer) = &r.peer {
                req.peer = Some(peer.peer.clone());
                if r.kind == OpKind::AddPeer {
                    req.fingerprint = peer.fingerprint.clone();
                    req.copy_from = peer.copy_from.clone();
                }
            }
        }
        OpKind::Promote
        | OpKind::Backup
        | OpKind::Verify
        | OpKind::Restart
        | OpKind::ResignData
        | OpKind::Retire => {}
    }
    req
}

/// Which operation ids to look up on which member: those of the steps in flight. A
/// switchover's demote runs on its source and its promote on its target.
pub fn op_ids_by_member(status: Option<&ClusterStatus>) -> BTreeMap<&str, Vec<String>> {
    let mut out: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in status.map(|s| s.steps.as_slice()).unwrap_or_default() {
        if s.action == StepAction::Switchover {
            out.entry(s.member.as_str())
                .or_default()
                .push(format!("{}.promote", s.id));
            if let Some(from) = s.from.as_deref() {
                out.entry(from)
                    .or_default()
                    .push(format!("{}.demote", s.id));
            }
        } else {
            out.entry(s.member.as_str()).or_default().push(s.id.clone());
        }
    }
    out
}

/// Observe every member of a cluster concurrently: status, then the operations of the steps
/// in flight (answered from the status when it is the member's current operation).
pub async fn observe_cluster<M: Members>(
    members: &M,
    spec: &ClusterSpec,
    status: Option<&ClusterStatus>,
) -> ClusterObservation {
    let ids = op_ids_by_member(status);
    let no_ids = Vec::new();
    // The declared members, those leaving and the managed clients.
    let agents = crate::plan::cluster_agents(spec, status);
    let futs = agents.iter().map(|(name, endpoint)| {
        let ids = ids.get(name.as_str()).unwrap_or(&no_ids);
        let m = Agent {
            name: name.as_str(),
            endpoint,
        };
        async move {
            let mut obs = MemberObservation::default();
            match members.status(m.name, m.endpoint).await {
                Ok(view) => {
                    for id in ids {
                        if let Some(op) = view.operation.as_ref().filter(|o| &o.id == id) {
                            obs.ops.insert(id.clone(), op.clone());
                            continue;
                        }
                        match members.operation(m.name, m.endpoint, id).await {
                            Ok(Some(op)) => {
                                obs.ops.insert(id.clone(), op);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                // Without the operation's state the planner could resend or
                                // misjudge it: treat the member as not observed this pass.
                                obs.error = Some(e.to_string());
                                obs.ops.clear();
                                return (m.name.to_string(), obs);
                            }
                        }
                    }
                    obs.agent = Some(view);
                }
                Err(e) => obs.error = Some(e.to_string()),
            }
            (m.name.to_string(), obs)
        }
    });
    futures::future::join_all(futs).await.into_iter().collect()
}

/// One agent to observe: a member's name (or a client's key) and its endpoint.
#[derive(Clone, Copy)]
struct Agent<'a> {
    name: &'a str,
    endpoint: &'a str,
}

/// Result of performing one planned action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActOutcome {
    pub member: String,
    pub id: String,
    pub kind: OpKind,
    pub result: Result<(), SubmitError>,
}

impl ActOutcome {
    /// The event reporting an operation the agent did not accept; `None` when it did.
    pub fn failure_event(&self) -> Option<PlanEvent> {
        let e = self.result.as_ref().err()?;
        let (warning, reason) = e.event_reason();
        Some(PlanEvent {
            warning,
            reason: reason.into(),
            message: format!("{} {} on {}: {e}", self.kind.as_str(), self.id, self.member),
        })
    }
}

/// Perform the planner's actions, concurrently. Only [`super::act`] calls it, with a pass whose
/// status is [`super::Persisted`].
pub(super) async fn perform<M: Members>(
    members: &M,
    spec: &ClusterSpec,
    status: &ClusterStatus,
    ca: Option<&CaState>,
    certs: Option<&CertificatesSpec>,
    actions: &[crate::plan::Action],
) -> Vec<ActOutcome> {
    let now = Timestamp(jiff::Timestamp::now().as_millisecond());
    // Declared members, those leaving (at the endpoint their record keeps) and the clients.
    let agents = crate::plan::cluster_agents(spec, Some(status));
    let futs = actions.iter().map(|a| {
        let agents = &agents;
        async move {
            let declared = spec.members.iter().find(|m| m.name == a.member).cloned();
            let found = declared.or_else(|| {
                agents
                    .iter()
                    .find(|(k, _)| k == &a.member)
                    .map(|(k, ep)| crate::api::MemberSpec {
                        name: k.clone(),
                        endpoint: ep.to_string(),
                        ..Default::default()
                    })
            });
            let result = match found {
                Some(m) => {
                    let material = material_for(&a.request, &m, ca, certs, now);
                    let sub = Submission {
                        request: &a.request,
                        material: &material,
                    };
                    members.submit(&m.name, &m.endpoint, sub).await
                }
                None => Err(SubmitError::Refused(format!(
                    "member {} is not in the spec",
                    a.member
                ))),
            };
            ActOutcome {
                member: a.member.clone(),
                id: a.request.id.clone(),
                kind: a.request.kind,
                result,
            }
        }
    });
    futures::future::join_all(futs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_carries_the_trust_and_the_presented_certificate() -> serde_json::Result<()> {
        let st: AgentStatus = serde_json::from_value(serde_json::json!({
            "member": "m1", "version": "1.0.0", "role": "Standby", "serving": false,
            "health": "OK", "dataEndpoint": "127.0.0.1:7001",
            "trust": ["aa", "bb"],
            "certificate": {"fingerprint": "cc", "issuerFingerprint": "bb",
                            "notAfter": "2027-01-01T00:00:00Z"},
            "presentedIssuers": {"bb": {"open": 2, "lastSeen": "2027-01-01T00:00:00Z"}},
        }))?;
        let v = agent_view(&st);
        assert_eq!(v.tls.trust, ["aa", "bb"]);
        let cert = v.tls.certificate.expect("certificate mapped");
        assert_eq!(cert.fingerprint, "cc");
        assert_eq!(cert.issuer_fingerprint.as_deref(), Some("bb"));
        assert_eq!(cert.not_after, Timestamp(1_798_761_600_000));
        let seen = PresentedView {
            issuer: "bb".into(),
            open: 2,
            last_seen: Timestamp(1_798_761_600_000),
        };
        assert_eq!(v.tls.presented, [seen]);
        let bare = AgentStatus {
            trust: vec![],
            certificate: None,
            presented_issuers: Default::default(),
            ..st
        };
        let v = agent_view(&bare);
        assert_eq!(v.tls, TlsReport::default());
        Ok(())
    }

    fn req(kind: OpKind) -> OpRequest {
        OpRequest {
            id: format!("web.3.{}.m2.1", kind.as_str()),
            kind,
            version: Some("2.0.0".into()),
            component: Some("app".into()),
            source: Some("127.0.0.1:7001".into()),
            role: Some("spare".into()),
            trust: None,
            peer: None,
            task: Some("upload-content".into()),
            checks: vec!["config".into(), "gateways".into()],
        }
    }

    #[test]
    fn wire_requests_pass_the_agents_parameter_check() {
        for kind in [
            OpKind::Preflight,
            OpKind::Upgrade,
            OpKind::Rollback,
            OpKind::Promote,
            OpKind::Demote,
            OpKind::ForceStandby,
            OpKind::Backup,
            OpKind::Verify,
            OpKind::SyncConfig,
            OpKind::Task,
            OpKind::StageMedia,
            OpKind::RemoveMedia,
            OpKind::Prepare,
        ] {
            let wire = operation_request(&req(kind), &Material::default());
            assert_eq!(wire.id, req(kind).id);
            assert!(
                baton_agent::ops::validate_request(&wire).is_ok(),
                "{kind:?}: {:?}",
                baton_agent::ops::validate_request(&wire).err()
            );
        }
        let up = operation_request(&req(OpKind::Upgrade), &Material::default());
        assert_eq!(up.version.as_deref(), Some("2.0.0"));
        assert_eq!(up.component.as_deref(), Some("app"));
        let demote = operation_request(&req(OpKind::Demote), &Material::default());
        assert_eq!(demote.source.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(demote.role, Some(DemoteRole::Spare));
        let verify = operation_request(&req(OpKind::Verify), &Material::default());
        assert_eq!((verify.version, verify.source), (None, None));
        assert_eq!(verify.task, None, "only a task names one");
        let task = operation_request(&req(OpKind::Task), &Material::default());
        assert_eq!(task.task.as_deref(), Some("upload-content"));
        assert_eq!(task.version.as_deref(), Some("2.0.0"));
        assert_eq!((task.source, task.component), (None, None));
        assert!(task.checks.is_empty(), "only a prepare names checks");
        let prepare = operation_request(&req(OpKind::Prepare), &Material::default());
        assert_eq!(prepare.checks, ["config", "gateways"]);
        assert_eq!(prepare.version.as_deref(), Some("2.0.0"));
        assert_eq!((prepare.source, prepare.task), (None, None));
    }

    #[test]
    fn a_finished_prepare_reads_back_with_its_findings_a_running_one_without() {
        use baton_agent::api::{Finding, FindingSeverity as S};
        let mut rec = baton_agent::api::OperationRecord {
            id: "p".into(),
            kind: OperationKind::Prepare,
            params: Default::default(),
            state: OperationState::Succeeded,
            progress: 100,
            message: String::new(),
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: None,
            version_before: None,
            version_after: None,
            member: "a".into(),
            findings: vec![Finding::new(
                "gateways",
                S::Blocking,
                "GatewayDown",
                "gw-2 is down",
            )],
        };
        let v = op_view(&rec);
        assert_eq!(v.findings.len(), 1);
        assert_eq!(
            v.findings[0].severity,
            crate::api::FindingSeverity::Blocking
        );
        assert_eq!(
            (v.findings[0].check.as_str(), v.findings[0].code.as_str()),
            ("gateways", "GatewayDown")
        );
        rec.state = OperationState::Running;
        assert!(op_view(&rec).findings.is_empty());
    }

    #[test]
    fn a_refused_operation_reads_back_as_failed() {
        let mut r = RefusedOps::default();
        assert_eq!(r.lookup("127.0.0.1:1", "op"), None);
        r.note("127.0.0.1:1", "op", "verify", "HTTP 400 unexpected_param");
        let op = r.lookup("127.0.0.1:1", "op").expect("remembered");
        assert_eq!(op.state, OpState::Failed);
        assert_eq!(op.kind, "verify");
        assert!(op.message.contains("unexpected_param"), "{}", op.message);
        assert_eq!(r.lookup("127.0.0.1:2", "op"), None, "another agent");
        for i in 0..RefusedOps::LIMIT {
            r.note("127.0.0.1:1", &format!("x{i}"), "verify", "no");
        }
        assert_eq!(
            r.lookup("127.0.0.1:1", "op"),
            None,
            "bounded, oldest dropped"
        );
        assert!(r.lookup("127.0.0.1:1", "x5").is_some());
    }

    #[test]
    fn each_member_error_has_its_label_and_keeps_its_message() {
        let agent = MemberError::Agent {
            member: "m1".into(),
            endpoint: "127.0.0.1:1".into(),
            error: Box::new(ClientError::Config {
                agent: "m1".into(),
                message: "bad".into(),
            }),
        };
        let poisoned = MemberError::Poisoned {
            what: "agent client cache",
        };
        let unavailable = MemberError::unavailable("m2", "m2: unreachable");
        let cases = [
            (
                &agent,
                "Agent",
                "agent m1: invalid client configuration: bad",
            ),
            (&poisoned, "Poisoned", "agent client cache poisoned"),
            (&unavailable, "Unavailable", "m2: unreachable"),
        ];
        for (e, label, message) in cases {
            assert_eq!(e.metric_label(), label);
            assert_eq!(e.to_string(), message);
        }
        assert_eq!(agent.member(), Some("m1"));
        assert_eq!(unavailable.member(), Some("m2"));
        assert_eq!(poisoned.member(), None);
    }

    #[test]
    fn each_submit_error_has_its_label_and_event() {
        let cases = [
            (
                SubmitError::Busy("b".into()),
                "Busy",
                false,
                "OperationDeferred",
            ),
            (
                SubmitError::Unreachable("u".into()),
                "Unreachable",
                true,
                "AgentUnreachable",
            ),
            (
                SubmitError::Refused("r".into()),
                "Refused",
                true,
                "OperationRefused",
            ),
        ];
        for (e, label, warning, reason) in cases {
            assert_eq!(e.metric_label(), label);
            assert_eq!(e.event_reason(), (warning, reason));
            let outcome = ActOutcome {
                member: "m1".into(),
                id: "web.1.upgrade.m1.1".into(),
                kind: OpKind::Upgrade,
                result: Err(e.clone()),
            };
            let ev = outcome.failure_event().expect("an event");
            assert_eq!((ev.warning, ev.reason.as_str()), (warning, reason));
            assert_eq!(
                ev.message,
                format!("upgrade web.1.upgrade.m1.1 on m1: {e}"),
                "the message the hosts always reported"
            );
        }
        let ok = ActOutcome {
            member: "m1".into(),
            id: "x".into(),
            kind: OpKind::Verify,
            result: Ok(()),
        };
        assert_eq!(ok.failure_event(), None);
    }
}
