//! Types shared by `Cluster` and `Mesh`: conditions, the upgrade log, certificates.

use kube_derive::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{Duration, Timestamp};

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
    /// A CA rotation phase runs before the one before it completed (a force intent); the
    /// message names what breaks.
    pub const ROTATION_FORCED: &str = "RotationForced";
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

/// Where a once-per-mesh step (a mesh `task`) stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskState {
    /// Not due yet (its tier is not done), or due and waiting for its member (or for the end
    /// of a backoff after a failed attempt).
    #[default]
    Pending,
    /// An attempt runs.
    Running,
    Succeeded,
    /// Every attempt of the retry policy failed: a human fixes the cause and retries.
    Failed,
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

/// Desired certificate authority. Changing the Secret it names, or its content, starts a phased
/// rotation: every trust store gains the new root, members present certificates the new CA
/// issued, the old root leaves the trust stores, stored data is re-signed. Each phase starts only
/// once the one before is observed complete on every member, so no handshake fails.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || !has(self.certificateValidity) || duration(self.renewBefore) < duration(self.certificateValidity)").message("renewBefore must be shorter than certificateValidity (every certificate would be renewed at once)"))]
pub struct CertificatesSpec {
    /// The CA Secret: Baton's layout (`ca.crt`, `ca.key`) or cert-manager's (`tls.crt`,
    /// `tls.key`, `ca.crt`). With a chain, trust stores hold the root and members get
    /// certificates from the issuer (the certificate the key belongs to).
    pub ca_secret_ref: SecretRef,
    /// Phases that stop for an approval before they start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub approve_phases: Vec<RotationPhase>,
    /// Keep trusting the old CA after the rotation: `RemoveOldTrust` is skipped, so certificates
    /// of the old CA stay accepted (a leaked old key still opens the mesh).
    #[serde(default)]
    pub keep_old_trust: bool,
    /// Re-sign the stored data with the new keys once the old CA is gone. `false` skips
    /// `ResignData`: data signed under the old keys keeps its old signatures.
    #[serde(default = "default_true")]
    pub resign_data: bool,
    /// `Automatic`: members restart in failover order (standbys first, then the active after a
    /// switchover). `Manual`: a member that needs a restart waits in `RestartPending` until a
    /// human restarts it; Baton then checks that it presents the new certificate.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Rotation jobs at a time per site (the procedure: one).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 16))]
    pub max_jobs_per_site: u32,
    /// Renew a member certificate from the same CA this long before it expires (no trust phase).
    #[serde(default = "default_renew_before")]
    pub renew_before: Duration,
    /// Validity of the member certificates Baton issues.
    #[serde(default = "default_certificate_validity")]
    pub certificate_validity: Duration,
    /// The old CA leaves the trust stores only once no member reports a connection presenting
    /// one of its certificates (a member or a client Baton does not manage) open, or seen
    /// within this long: a client that connects now and then is not cut off.
    #[serde(default = "default_client_grace")]
    pub client_grace: Duration,
}

impl Default for CertificatesSpec {
    fn default() -> Self {
        CertificatesSpec {
            ca_secret_ref: SecretRef::default(),
            approve_phases: Vec::new(),
            keep_old_trust: false,
            resign_data: true,
            restart: RestartPolicy::default(),
            max_jobs_per_site: 1,
            renew_before: default_renew_before(),
            certificate_validity: default_certificate_validity(),
            client_grace: default_client_grace(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_one() -> u32 {
    1
}
fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_client_grace() -> Duration {
    Duration::from_secs(300)
}
fn default_certificate_validity() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

/// The phases of a CA rotation, in order.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum RotationPhase {
    /// Every trust store gains the new root beside the old.
    AddTrust,
    /// Members get certificates of the new CA (and restart as `restart` says).
    Reissue,
    /// Trust stores keep only the new root.
    RemoveOldTrust,
    /// Stored data is re-signed with the new keys.
    ResignData,
}

impl RotationPhase {
    pub const ALL: [RotationPhase; 4] = [
        RotationPhase::AddTrust,
        RotationPhase::Reissue,
        RotationPhase::RemoveOldTrust,
        RotationPhase::ResignData,
    ];

    /// The phase a status names (`as_str`); None for `Done`, `Invalid` or anything else.
    pub fn parse(s: &str) -> Option<RotationPhase> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::AddTrust => "AddTrust",
            RotationPhase::Reissue => "Reissue",
            RotationPhase::RemoveOldTrust => "RemoveOldTrust",
            RotationPhase::ResignData => "ResignData",
        }
    }
}

/// How members restart to present new certificates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Automatic,
    Manual,
}

/// Where a mesh-wide CA rotation stands, derived from what its clusters report.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MeshCertificatesStatus {
    /// The CA rotated to (as in a Cluster's `status.certificates.targetCa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ca: Option<String>,
    /// The mesh's phase: the lowest of its clusters' (`AddTrust`, `Reissue`,
    /// `RemoveOldTrust`, `ResignData`), `Done` when every cluster is on the target, or
    /// `Invalid` (the CA Secret cannot be used; see the Stalled condition). A cluster runs the
    /// steps of a phase only while the mesh is in it: no cluster presents the new CA before
    /// every cluster trusts it, none drops the old CA before every cluster presents the new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Each cluster's phase for the target (`Unknown`: it has not reported one yet).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub clusters: std::collections::BTreeMap<String, String>,
    /// Clusters allowed to run rotation steps now (the Cluster controllers read this): those
    /// in the mesh's phase whose sites no other rotating cluster uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotating: Vec<String>,
    /// What the rotation waits for, when it waits (a rollout under way, conflicts, a pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Clusters seen Stalled (or RolledBack) in the mesh's phase since it began: remembered
    /// after they lose their grant (a cluster without a grant only waits), so that each
    /// cluster sharing their sites gets its turn first; among them, the one holding a site
    /// keeps it. Cleared when the phase changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Where a certificate rotation stands, derived from what the members report.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct CertificatesStatus {
    /// The CA rotated to: its root's SHA-256 fingerprint, and the issuer's after a `/` when an
    /// intermediate issues member certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ca: Option<String>,
    /// `AddTrust`, `Reissue`, `RemoveOldTrust`, `ResignData`, `Done` (every member on the
    /// target), or `Invalid` (the CA Secret cannot be used; see the Stalled condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Per-site progress of the phase: site → members past it / members.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sites: std::collections::BTreeMap<String, String>,
    /// Members that still present a certificate not issued by the target CA (at most 16 named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presenting_old: Vec<String>,
    /// Members with a new certificate that wait for a human restart (`restart: Manual`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_pending: Vec<String>,
    /// When the earliest member certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// A rotation to the target ran (some member was not on it): its data is re-signed
    /// once the old CA is gone. Not set when Baton adopts members already on the target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resign_pending: bool,
    /// Members that re-signed their data for the target CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resigned: Vec<String>,
    /// Members whose certificates are due for renewal (`renewBefore`, same CA). In a mesh
    /// they are renewed on the mesh's grant: one job per site across the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renewal_due: Vec<String>,
    /// A later phase a force intent runs now, ahead of `phase` (see the `RotationForced`
    /// condition for what it breaks). The cluster's mesh grants it the rotation in that phase
    /// although the mesh is in an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forcing: Option<String>,
}
