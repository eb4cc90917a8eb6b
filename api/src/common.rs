//! Types shared by `Cluster` and `Mesh`: conditions, the upgrade log, certificates.

use kube_derive::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::Timestamp;

/// A condition as Kubernetes API conventions describe it (kstatus compatible).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: Timestamp,
}

/// Condition types Baton sets.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const DEGRADED: &str = "Degraded";
    pub const MIXED_VERSION: &str = "MixedVersion";
    pub const PAUSED: &str = "Paused";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Mesh only: the preconditions for starting a rollout hold.
    pub const PRECONDITIONS: &str = "PreconditionsMet";
}

/// One entry of the upgrade log (kept apart from the audit log, as the source procedures do).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub id: u64,
    /// The entry this one is part of (a member step's cluster rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    pub action: String,
    pub scope: LogScope,
    /// What was acted on: a member, cluster or mesh name.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub start: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    pub result: LogResult,
    pub mode: LogMode,
    #[serde(default)]
    pub message: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogScope {
    Member,
    Cluster,
    Mesh,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogResult {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    Automatic,
    Manual,
}

/// Entries kept in a status log; older ones are dropped first.
pub const LOG_LIMIT: usize = 64;

/// Reference to a Secret holding a CA certificate (`ca.crt`) and optionally its key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Desired certificate authority. Changing it starts a phased rotation in which no member
/// presents a certificate from the new CA before every peer trusts it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct CertificatesSpec {
    pub ca_secret_ref: SecretRef,
    /// Phases that stop for an approval before they start (e.g. `RemoveOldTrust`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub approve_phases: Vec<String>,
    /// Keep trusting the old CA after the rotation (skips the removal phase).
    #[serde(default)]
    pub keep_old_trust: bool,
}

/// Where a certificate rotation stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct CertificatesStatus {
    /// SHA-256 fingerprint of the CA every member's certificate is issued from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_ca: Option<String>,
    /// Fingerprint of the CA being rotated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Per-site progress of the current phase: site → members done / total.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sites: std::collections::BTreeMap<String, String>,
}
