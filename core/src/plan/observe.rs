//! What the planner knows about members: a snapshot taken by the effect layer just before
//! planning. Kept independent of the agent crate so the pure core has no I/O dependencies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::values::Timestamp;
use crate::api::{Health, MemberRole};

/// The state of one agent operation, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpView {
    pub id: String,
    pub kind: String,
    pub state: OpState,
    pub progress: u8,
    pub message: String,
    /// What a `prepare` operation found (its checks ran; the findings are its result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingView>,
}

/// One finding of an agent's preparation checks, as its operation reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingView {
    pub check: String,
    pub severity: crate::api::FindingSeverity,
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmView {
    pub code: String,
    pub name: String,
    pub severity: Health,
}

/// What an agent says about its member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// The version the member runs.
    pub version: String,
    /// Version of each component the member hosts.
    pub components: BTreeMap<String, String>,
    /// Active, Standby, ForcedStandby, Spare or OutOfService.
    pub role: MemberRole,
    /// Active and accepting writes.
    pub serving: bool,
    /// The worst severity among its alarms.
    pub health: Health,
    pub alarms: Vec<AlarmView>,
    /// Seconds since the oldest entry it has not applied was written at its source.
    pub lag_seconds: f64,
    /// Entries its source has that it has not applied.
    pub lag_entries: u64,
    /// Index of the last entry in its log (how far a switchover target has caught up).
    pub applied_index: u64,
    /// Entries it holds that a follower has not been sent yet (the mesh's backlog check).
    pub backlog: u64,
    /// Divergences found between its log and its source's.
    pub conflicts: u64,
    /// Where peers replicate from (None: not reported).
    pub data_endpoint: Option<String>,
    /// The load it carries, for the mesh's takeover-capacity check.
    pub load: Option<u64>,
    /// The agent's current or most recent operation.
    pub operation: Option<OpView>,
    /// What it reports about its data-port TLS (a CA rotation's observations).
    #[serde(default)]
    pub tls: TlsReport,
    /// What it reports about membership (peers, identity, configuration, source).
    #[serde(default)]
    pub membership: MembershipReport,
    /// Versions whose upgrade media it holds (`stage-media`).
    #[serde(default)]
    pub media: Vec<String>,
    /// The KPIs it reports, by name (`upgrade.health` compares them).
    #[serde(default)]
    pub kpis: BTreeMap<String, f64>,
}

/// What a member (or a managed client) reports about the group it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MembershipReport {
    /// The SHA-256 fingerprint of the identity it presents to its peers (None: not reported).
    pub identity: Option<String>,
    /// The identities it accepts, by peer name.
    pub peers: BTreeMap<String, String>,
    /// A digest of its configuration (None: not reported, or no configuration).
    pub config_digest: Option<String>,
    /// The data endpoint it replicates from (None: none, or not reported).
    pub source: Option<String>,
    /// It was retired (stopped serving and replicating for good).
    pub retired: bool,
}

/// What a member reports about its data-port TLS: the CAs it trusts, the certificate it
/// presents, and the issuers of the certificates its peers and clients present to it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TlsReport {
    /// SHA-256 fingerprints of the CAs the member trusts (empty: none reported).
    pub trust: Vec<String>,
    /// The certificate the member presents on its data port (None: not reported).
    pub certificate: Option<CertView>,
    /// By issuer fingerprint, the connections whose peer presented a certificate to it.
    pub presented: Vec<PresentedView>,
}

/// Connections to a member whose peer presented a certificate of one issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentedView {
    /// The issuer's fingerprint (`unknown` or `other` when the agent could not name it).
    pub issuer: String,
    /// Such connections open now.
    pub open: u32,
    /// When one was last opened or closed.
    pub last_seen: Timestamp,
}

/// A member's presented certificate, as its agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    pub fingerprint: String,
    /// The issuing CA's fingerprint, when the agent found it in its chain or trust bundle.
    pub issuer_fingerprint: Option<String>,
    pub not_after: Timestamp,
}

impl AgentView {
    /// A member healthy enough to take traffic or count as in sync.
    pub fn healthy(&self) -> bool {
        self.health <= Health::Minor
    }
}

/// One member as observed: reachable with an agent view, or not.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct MemberObservation {
    pub agent: Option<AgentView>,
    /// Why the member could not be observed.
    pub error: Option<String>,
    /// Operations looked up by id (those of the steps in flight). Absent id: the agent does not
    /// know it (never submitted). Only meaningful when `agent` is present.
    pub ops: BTreeMap<String, OpView>,
}

impl MemberObservation {
    pub fn reachable(&self) -> bool {
        self.agent.is_some()
    }
}

/// The agents of one cluster, by key: its members by name (those declared, and those leaving
/// at the endpoint their record keeps), its managed clients by [`client_key`].
pub type ClusterObservation = BTreeMap<String, MemberObservation>;

/// The observation key of a managed client: member names are DNS labels, so a key with a
/// `/` never names a member.
pub fn client_key(name: &str) -> String {
    format!("client/{name}")
}

/// The client name of an observation key, when it is a client's.
pub fn client_of(key: &str) -> Option<&str> {
    key.strip_prefix("client/")
}

/// Defines [`OpKind`] from one table of kinds and their wire names (serde's and `as_str`'s).
macro_rules! op_kinds {
    ($($kind:ident => $wire:literal,)*) => {
        /// Kinds of agent operations the planner asks for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $(#[serde(rename = $wire)] $kind,)*
        }

        impl OpKind {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(OpKind::$kind => $wire,)*
                }
            }
        }
    };
}

op_kinds! {
    Preflight => "preflight",
    Upgrade => "upgrade",
    Rollback => "rollback",
    Promote => "promote",
    Demote => "demote",
    ForceStandby => "force-standby",
    Backup => "backup",
    Verify => "verify",
    SyncConfig => "sync-config",
    InstallTrust => "install-trust",
    InstallCertificate => "install-certificate",
    Restart => "restart",
    ResignData => "resign-data",
    AddPeer => "add-peer",
    RemovePeer => "remove-peer",
    Retire => "retire",
    Task => "task",
    StageMedia => "stage-media",
    RemoveMedia => "remove-media",
    Prepare => "prepare",
}

/// A request to an agent. The id is derived from the recorded step, so sending it twice is the
/// same operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRequest {
    /// Derived from the step (cluster, log entry, action, member, attempt): a repeat is the
    /// same operation, which the agent runs once.
    pub id: String,
    pub kind: OpKind,
    /// The version to install (upgrade, rollback) or to check (verify).
    pub version: Option<String>,
    /// The component, on a layered stack (None: the member's whole software).
    pub component: Option<String>,
    /// Data endpoint of the peer to replicate from (demote, force-standby, sync-config).
    pub source: Option<String>,
    /// Plain role to return to on demote: `standby` or `spare`.
    pub role: Option<String>,
    /// A rotation step's CA material by fingerprint; the host resolves it to PEM (and issues
    /// the certificate of `install-certificate`), so no key passes through a plan.
    pub trust: Option<crate::api::TrustParams>,
    /// A peer-identity step's identity (`add-peer`, `remove-peer`).
    pub peer: Option<crate::api::PeerParams>,
    /// The agent task a `task` operation runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The checks a `prepare` operation runs (`upgrade.prepare.checks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

impl OpRequest {
    /// A request of `kind` with no parameters (set those the kind takes).
    pub fn new(id: impl Into<String>, kind: OpKind) -> Self {
        OpRequest {
            id: id.into(),
            kind,
            version: None,
            component: None,
            source: None,
            role: None,
            trust: None,
            peer: None,
            task: None,
            checks: Vec::new(),
        }
    }
}

/// An effect the planner asks for. The loop persists the status first, then performs these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub member: String,
    pub request: OpRequest,
}

/// Something worth a Kubernetes Event (and a line in the demo's output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// When the planner wants to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wake {
    /// Something is in flight: poll soon.
    Busy,
    /// Nothing happens before this instant (a backoff, a window, a stagger, a timeout).
    At(crate::api::Timestamp),
    /// Converged or blocked on a human: only a change or the slow resync wakes it.
    Idle,
}

impl Wake {
    /// The earlier of two wake-ups.
    pub fn min(self, other: Wake) -> Wake {
        match (self, other) {
            (Wake::Busy, _) | (_, Wake::Busy) => Wake::Busy,
            (Wake::At(a), Wake::At(b)) => Wake::At(a.min(b)),
            (Wake::At(a), Wake::Idle) | (Wake::Idle, Wake::At(a)) => Wake::At(a),
            (Wake::Idle, Wake::Idle) => Wake::Idle,
        }
    }
}
