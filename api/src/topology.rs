//! Topology: the members a cluster declares changing at run time (added, removed, replaced),
//! the managed clients that must accept commands from every member, and what the status says
//! of a membership change in progress. See `docs/topology.md`.

use kube_derive::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::Timestamp;

/// A managed client: a host that must accept commands from every member of the cluster (it
/// holds one identity per member). It runs a baton-agent (any backend, no replication).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClientSpec {
    /// Unique name among the cluster's clients (DNS label).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Address of the client's agent API: `host:port` or `https://host:port`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^(https?://)?[A-Za-z0-9.\\\\-\\\\[\\\\]:]+:[0-9]{1,5}/?$')").message("endpoint must be host:port or https://host:port"))]
    pub endpoint: String,
}

/// How members are added to and removed from the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TopologyPolicy {
    /// How managed clients learn a new member's identity.
    #[serde(default)]
    pub client_identity: ClientIdentity,
    /// Removing a member may leave the cluster without an in-sync standby where it had one.
    /// Without this, such a removal is `Stalled/LastInSyncStandby` (it waits instead while a
    /// new member is joining, which will restore the redundancy).
    #[serde(default)]
    pub allow_removing_last_standby: bool,
}

/// The two ways the member-addition procedure gives managed clients a key for a new member.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientIdentity {
    /// Every member has its own identity: every client is given the new member's. This is a
    /// re-keying of the client set: it starts only once every client is reachable (until
    /// then the cluster waits, naming the unreachable clients).
    #[default]
    Distinct,
    /// The new member presents an identity the clients already accept (that of an existing
    /// member): each client copies that member's entry under the new member's name, one
    /// client at a time as each is reachable. The new member must present an existing
    /// member's identity, or the cluster is `Stalled/IdentityMismatch`.
    Shared,
}

/// Where a member stands in a membership change.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Membership {
    /// Declared in `spec.members`, not yet a member: it is bootstrapped, configured, made
    /// known to its peers and clients, and joins replication; it is never a switchover target
    /// nor counted as available before that ends.
    Joining,
    /// No longer declared: it hands the active role over (if it has it), stops serving, and its
    /// identity is withdrawn from the peers and clients; then its record goes.
    Leaving,
}

/// The step of a membership change a member is at (in the order they run).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum TopologyStage {
    /// Joining: the certificate and trust of the cluster's CA installed (or checked).
    Bootstrap,
    /// Joining: the configuration copied from the active, while it serves.
    CopyConfig,
    /// Joining: the new member and its peers learn each other's identity.
    Introduce,
    /// Joining: replicating from the active, until in sync.
    Replicate,
    /// Leaving: the active role handed over first.
    HandOver,
    /// Leaving: stop serving and replicating.
    Retire,
    /// Leaving: its identity removed from the peers and clients.
    Withdraw,
}

/// A membership change in progress on one member (absent: a plain member).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MemberTopology {
    pub membership: Membership,
    pub stage: TopologyStage,
    /// Why the change does not move now (empty when it does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Leaving before its join completed: it never was the cluster's, so what it runs does not
    /// make the cluster part-way (`runningVersions` leaves it out, as it leaves out a joining
    /// member).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub never_joined: bool,
}

/// What one managed client accepts, as its agent reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClientStatus {
    pub name: String,
    #[serde(default)]
    pub reachable: bool,
    /// Members whose identity the client holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepts: Vec<String>,
    /// Members (joined or joining) whose identity it does not hold yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Failed peer-identity steps in a row on this client (backoff as for members).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub(crate) fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An identity a peer-identity step adds or removes, resolved when the step is recorded so a
/// re-sent request is byte-for-byte the same operation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct PeerParams {
    /// The member whose identity is added or removed.
    pub peer: String,
    /// The identity's SHA-256 fingerprint (`AddPeer` with a distinct identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `AddPeer` with a shared identity: the accepted member whose entry is copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<String>,
}
