//! The `Mesh` resource: a set of Clusters with cross-cluster order and shared trust.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads the derive's arguments as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::MaintenanceWindow;
use super::common::{CertificatesSpec, Condition, LogEntry, MeshCertificatesStatus, TaskState};
use super::values::{Duration, Timestamp};

/// Desired state of a mesh of clusters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube = "::kube_derive", kube_core = "::kube_core"),
    attr = "x_kube(crates(kube_core = \"::kube_core\"))",
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Mesh",
    namespaced,
    status = "MeshStatus",
    shortname = "bmesh",
    category = "baton",
    derive = "PartialEq",
    cel,
    doc = "A set of Clusters moved tier by tier, with compatibility rules and shared trust.",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Lagging", type_ = "string", json_path = ".status.lagging"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "CA",
        type_ = "string",
        json_path = ".status.certificates.phase"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    /// Mesh-wide target version, inherited by member Clusters that do not pin one.
    #[schemars(
        regex(pattern = r"^v?[0-9]+(\.[0-9]+){0,4}(-[0-9A-Za-z.-]+)?$"),
        length(min = 1, max = 64)
    )]
    pub version: String,
    /// Ordered groups of clusters: tier N+1 starts only when tiers 0..N are done. Tier names
    /// are unique.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tiers: Vec<TierSpec>,
    /// Mixed-version rules between cluster roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub compatibility: Vec<CompatibilityRule>,
    #[serde(default)]
    pub strategy: MeshStrategy,
    #[serde(default)]
    pub preconditions: Preconditions,
    /// Admit no new cluster; clusters already moving finish their steps in flight.
    #[serde(default)]
    pub paused: bool,
    /// The CA every cluster of the mesh takes its member certificates from, and the options
    /// of its rotation. The clusters share one trust: they rotate together, phase by phase
    /// (a Cluster of the mesh does not declare its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesSpec>,
    /// Steps the mesh runs once per rollout, not per cluster: each on one member of a named
    /// cluster, once a named tier is done and before the next tier starts (e.g. uploading
    /// content once the source core runs the new version). Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tasks: Vec<MeshTaskSpec>,
}

/// A once-per-mesh step: one agent `task` operation on one member of `cluster`, after tier
/// `after`, recorded in the mesh log, idempotent by id, retried with the cluster's
/// `upgrade.retries` policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MeshTaskSpec {
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// The task the agent runs (the exec backend's `{task}`). Default: `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub task: Option<String>,
    /// The cluster of this mesh whose member runs it.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// The member that runs it. Default: the cluster's active member when the task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub member: Option<String>,
    /// The tier after which it runs: once every cluster of that tier is done in the rollout.
    /// The next tier (in the rollout's order) starts only once it succeeded; after the last
    /// tier, the rollout completes only once it succeeded.
    #[schemars(length(min = 1, max = 63))]
    pub after: String,
    /// The rollouts that run it: `Upgrade` (default), `Backout` or `Both`.
    #[serde(default)]
    pub on: TaskRollouts,
}

impl MeshTaskSpec {
    /// The agent's task name.
    pub fn task_name(&self) -> &str {
        self.task.as_deref().unwrap_or(&self.name)
    }
}

/// Which rollouts run a mesh task.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskRollouts {
    #[default]
    Upgrade,
    Backout,
    Both,
}

impl TaskRollouts {
    pub fn runs_on(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (TaskRollouts::Both, _)
                | (TaskRollouts::Upgrade, Direction::Upgrade)
                | (TaskRollouts::Backout, Direction::Backout)
        )
    }
}

/// A tier: clusters named explicitly and/or selected by labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.clusters) && size(self.clusters) > 0) || has(self.selector)").message("a tier names clusters or has a selector"))]
pub struct TierSpec {
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Clusters of the tier by name, each listed once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Clusters of this tier that may move at once.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_parallel: u32,
    /// Minimum time between two cluster starts in this tier.
    #[serde(default)]
    pub stagger: Duration,
    /// Before the first cluster of this tier starts an upgrade, every cluster of the mesh must
    /// report no replication backlog: what the earlier tiers generated (a source core's
    /// upgraded data) has been received by every other cluster. Unset: the tier does not wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_before: Option<DrainSpec>,
    /// The tier may lag behind the rest of the mesh (satellites upgraded later; the mesh works
    /// with them behind). On an upgrade it does not hold the rollout from completing: once
    /// the tiers before it are done the mesh reports the rollout done (`Ready`, with
    /// `MixedVersion` and `status.lagging` while the tier lags), and its clusters start only
    /// when its trigger allows, still under the compatibility rules. A backout does not wait
    /// for it. Only the last tiers may be deferred, and not every tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<DeferredSpec>,
}

/// When a deferred tier starts its clusters: after an approval of the tier for the target
/// (`tier/<mesh>/<tier>@<version>` on the Mesh's `baton.dev/approve`), inside one of the
/// windows, or both. Neither: as soon as the tiers before it are done.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct DeferredSpec {
    /// Each upgrade of the tier waits for its approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// New clusters of the tier start only inside one of these weekly windows (UTC); a
    /// cluster started finishes (its own `maintenanceWindows` govern its disruptive steps).
    /// Empty: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub windows: Vec<MaintenanceWindow>,
}

/// Waiting for the mesh's replication backlog to drain before a tier starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// How long the tier waits for the backlog to drain. Past it the mesh is `Stalled` with
    /// reason `DrainTimeout`, naming the backlog left per cluster; it goes on by itself once
    /// the backlog drains (or with a force intent on the mesh). Default 15m.
    #[serde(default = "default_drain_timeout")]
    pub timeout: Duration,
}

impl Default for DrainSpec {
    fn default() -> Self {
        DrainSpec {
            timeout: default_drain_timeout(),
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_one() -> u32 {
    1
}

/// Equality-based label selector (`matchLabels`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.matchLabels) && size(self.matchLabels) > 0").message("selector.matchLabels must not be empty"))]
pub struct LabelSelector {
    #[serde(default)]
    #[schemars(schema_with = "match_labels_schema")]
    pub match_labels: BTreeMap<String, String>,
}

/// Label keys are at most 317 characters (a 253-character DNS prefix, `/`, a 63-character name)
/// and values at most 63, as Kubernetes labels are.
impl LabelSelector {
    /// The labels carry every `matchLabels` pair. An empty selector matches nothing (the
    /// schema refuses one; validation reports it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.match_labels.is_empty()
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

fn match_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "type": "string", "maxLength": 63 }
    })
}

/// Clusters of `role` may never run a newer version than any cluster of `notNewerThan`.
/// (A new management cluster can manage old workers; an old one cannot manage new workers.)
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.role != self.notNewerThan").message("a compatibility rule must relate two different roles"))]
pub struct CompatibilityRule {
    #[schemars(length(min = 1, max = 63))]
    pub role: String,
    #[schemars(length(min = 1, max = 63))]
    pub not_newer_than: String,
}

/// How clusters of the mesh are taken down.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MeshStrategy {
    #[serde(default, rename = "type")]
    pub type_: MeshStrategyType,
    /// Rolling only: refuse to take a cluster down when a peer taking over its load would carry
    /// more than this multiple of its own load (e.g. 3.0). Unset: no capacity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_takeover_load_factor: Option<f64>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MeshStrategyType {
    /// One cluster down at a time per tier budget; peers take over its load.
    #[default]
    Rolling,
    /// The whole mesh is down for the upgrade: clusters upgrade in order without switchovers.
    Offline,
}

/// Checked before a rollout starts; a failure is a condition and nothing moves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    #[serde(default = "default_true")]
    pub no_backlog: bool,
    #[serde(default = "default_true")]
    pub no_conflicts: bool,
}
impl Default for Preconditions {
    fn default() -> Self {
        Preconditions {
            no_backlog: true,
            no_conflicts: true,
        }
    }
}
fn default_true() -> bool {
    true
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MeshPhase {
    #[default]
    Pending,
    Ready,
    Progressing,
    Waiting,
    Paused,
    Degraded,
    Stalled,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Upgrade,
    Backout,
}

/// Observed state of a Mesh.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: MeshPhase,
    /// `done/total` clusters at the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The deferred tiers behind the target of an upgrade (`tier done/total`, comma-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagging: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierStatus>,
    /// Clusters allowed to move now (the Cluster controllers read this).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admitted: Vec<Admitted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the mesh-wide rotation to `spec.certificates` stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<MeshCertificatesStatus>,
    /// The once-per-mesh steps (`spec.tasks`) of the current (or last) rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<MeshTaskStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogEntry>,
    #[serde(default)]
    pub next_log_id: u64,
}

/// Where one once-per-mesh step stands in the rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MeshTaskStatus {
    pub name: String,
    /// The same for every attempt in this rollout (`<mesh>.<name>.r<rollout log id>`); the
    /// agent operation of attempt N is `<id>.<N>`, so a repeat is the same operation.
    pub id: String,
    pub cluster: String,
    pub state: TaskState,
    /// The member it ran on (last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When its tier was done and the cluster was asked to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Its entry in the mesh log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<u64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub version: String,
    pub direction: Direction,
    pub started_at: Timestamp,
    pub log_id: u64,
    /// No cluster changed version: the clusters moved for another reason (a member joining or
    /// leaving). Such a rollout runs no once-per-mesh task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    pub name: String,
    pub done: u32,
    pub total: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start_at: Option<Timestamp>,
    /// The tier's wait for the replication backlog to drain (`drainBefore`), in this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<TierDrainStatus>,
    /// A deferred tier's trigger, while the tier lags behind the rest of an upgraded mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<TierDeferredStatus>,
}

/// Where a deferred tier's trigger stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TierDeferredStatus {
    /// What the tier waits for before it starts a cluster. Unset: it may start them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<DeferredWait>,
    /// The approval the tier needs for this target (`tier/<mesh>/<tier>@<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The approval given (kept for the rollout: a later target needs its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
    /// When the next window opens, while the tier waits for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window_at: Option<Timestamp>,
}

/// What a deferred tier waits for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferredWait {
    /// The tiers before it (it moves after them, like any tier).
    EarlierTiers,
    Approval,
    Window,
}

/// Where a tier's wait for the mesh's replication backlog stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TierDrainStatus {
    /// When the tier's turn came and it began to wait.
    pub since: Timestamp,
    /// When every cluster reported no backlog: the tier may start. Unset while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_at: Option<Timestamp>,
    /// While it waits: the clusters with a backlog left (entries not yet sent to a follower,
    /// over their members), largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backlog: Vec<ClusterBacklog>,
}

/// One cluster's replication backlog.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterBacklog {
    pub cluster: String,
    pub entries: u64,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct Admitted {
    pub cluster: String,
    pub version: String,
    pub direction: Direction,
    pub since: Timestamp,
}
