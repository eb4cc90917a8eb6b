//! Talking to members: the [`Members`] seam, its implementation over the agents' HTTP API, and
//! the translation between the agent's wire types and the planner's observation types.
//!
//! The seam exists so that the same loop drives real agents (`baton run`, the operator) and
//! in-process fakes (benchmarks of a thousand clusters).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use baton_agent::api::{
    DemoteRole, Health as AgentHealth, MemberStatus as AgentStatus, OperationKind, OperationRecord,
    OperationRequest, OperationState, Role,
};
use baton_agent::client::{AgentClient, CallPolicy, ClientTls, SharedTls};

use crate::api::{ClusterSpec, ClusterStatus, Health, MemberRole, StepAction};
use crate::plan::{AgentView, AlarmView, ClusterObservation, MemberObservation, OpKind, OpRequest};
use crate::plan::{OpState, OpView};

/// Access to the members of clusters, addressed by name (for messages) and agent endpoint.
/// Errors are human-readable and name the member.
pub trait Members: Send + Sync {
    fn status(
        &self,
        member: &str,
        endpoint: &str,
    ) -> impl Future<Output = Result<AgentView, String>> + Send;

    /// An operation by id; `Ok(None)` when the agent does not know the id.
    fn operation(
        &self,
        member: &str,
        endpoint: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<OpView>, String>> + Send;

    /// Submit (idempotent by id).
    fn submit(
        &self,
        member: &str,
        endpoint: &str,
        request: &OpRequest,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send;
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

/// [`Members`] over the agents' mutual-TLS HTTP API. One client per endpoint, created on
/// first use and sharing one parsed TLS configuration.
pub struct AgentMembers {
    tls: SharedTls,
    policy: CallPolicy,
    clients: Mutex<HashMap<String, AgentClient>>,
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
        })
    }

    fn client(&self, member: &str, endpoint: &str) -> Result<AgentClient, String> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| "agent client cache poisoned".to_string())?;
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let c = AgentClient::with_shared(endpoint, &self.tls)
            .map_err(|e| e.to_string())?
            .with_member(member)
            .with_policy(self.policy);
        clients.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }
}

impl Members for AgentMembers {
    async fn status(&self, member: &str, endpoint: &str) -> Result<AgentView, String> {
        let c = self.client(member, endpoint)?;
        let st = c.status().await.map_err(|e| e.to_string())?;
        Ok(agent_view(&st))
    }

    async fn operation(
        &self,
        member: &str,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<OpView>, String> {
        let c = self.client(member, endpoint)?;
        match c.operation(id).await {
            Ok(rec) => Ok(Some(op_view(&rec))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn submit(
        &self,
        member: &str,
        endpoint: &str,
        request: &OpRequest,
    ) -> Result<(), SubmitError> {
        let c = self
            .client(member, endpoint)
            .map_err(SubmitError::Refused)?;
        match c.submit(&operation_request(request)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("operation_running") || e.status() == Some(409) => {
                Err(SubmitError::Busy(e.to_string()))
            }
            Err(e) if e.is_transient() => Err(SubmitError::Unreachable(e.to_string())),
            Err(e) => Err(SubmitError::Refused(e.to_string())),
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
    }
}

/// The wire request for a planner request. Only the parameters the kind takes are sent:
/// agents refuse stray ones (the planner keeps e.g. the target version on a verify step for
/// its own bookkeeping).
pub fn operation_request(r: &OpRequest) -> OperationRequest {
    let mut req = OperationRequest::new(r.id.clone(), operation_kind(r.kind));
    if matches!(
        r.kind,
        OpKind::Preflight | OpKind::Upgrade | OpKind::Rollback
    ) {
        req.version = r.version.clone();
        req.component = r.component.clone();
    }
    if matches!(
        r.kind,
        OpKind::Demote | OpKind::ForceStandby | OpKind::SyncConfig
    ) {
        req.source = r.source.clone();
    }
    if r.kind == OpKind::Demote {
        req.role = match r.role.as_deref() {
            Some("spare") => Some(DemoteRole::Spare),
            Some(_) => Some(DemoteRole::Standby),
            None => None,
        };
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
    let futs = spec.members.iter().map(|m| {
        let ids = ids.get(m.name.as_str()).unwrap_or(&no_ids);
        async move {
            let mut obs = MemberObservation::default();
            match members.status(&m.name, &m.endpoint).await {
                Ok(view) => {
                    for id in ids {
                        if let Some(op) = view.operation.as_ref().filter(|o| &o.id == id) {
                            obs.ops.insert(id.clone(), op.clone());
                            continue;
                        }
                        match members.operation(&m.name, &m.endpoint, id).await {
                            Ok(Some(op)) => {
                                obs.ops.insert(id.clone(), op);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                // Without the operation's state the planner could resend or
                                // misjudge it: treat the member as not observed this pass.
                                obs.error = Some(e);
                                obs.ops.clear();
                                return (m.name.clone(), obs);
                            }
                        }
                    }
                    obs.agent = Some(view);
                }
                Err(e) => obs.error = Some(e),
            }
            (m.name.clone(), obs)
        }
    });
    futures::future::join_all(futs).await.into_iter().collect()
}

/// Result of performing one planned action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActOutcome {
    pub member: String,
    pub id: String,
    pub kind: OpKind,
    pub result: Result<(), SubmitError>,
}

/// Perform the planner's actions (after their intent was persisted), concurrently.
pub async fn perform<M: Members>(
    members: &M,
    spec: &ClusterSpec,
    actions: &[crate::plan::Action],
) -> Vec<ActOutcome> {
    let futs = actions.iter().map(|a| async move {
        let result = match spec.members.iter().find(|m| m.name == a.member) {
            Some(m) => members.submit(&m.name, &m.endpoint, &a.request).await,
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
    });
    futures::future::join_all(futs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_requests_carry_only_the_parameters_their_kind_takes() {
        let r = |kind| OpRequest {
            id: "c.1.x.m.1".into(),
            kind,
            version: Some("2.0.0".into()),
            component: Some("app".into()),
            source: Some("127.0.0.1:1".into()),
            role: Some("spare".into()),
        };
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
        ] {
            let req = operation_request(&r(kind));
            assert!(
                baton_agent::ops::validate_request(&req).is_ok(),
                "{kind:?}: {:?}",
                baton_agent::ops::validate_request(&req)
            );
        }
        let up = operation_request(&r(OpKind::Upgrade));
        assert_eq!(up.version.as_deref(), Some("2.0.0"));
        assert_eq!(up.component.as_deref(), Some("app"));
        assert_eq!(
            operation_request(&r(OpKind::Demote)).role,
            Some(DemoteRole::Spare)
        );
    }
}
