//! The `Cluster` resource: one HA group of members (Active / Standby / Spare).
// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads the derive's arguments as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CertificatesSpec, CertificatesStatus, Condition, LogEntry, TaskState};
use super::topology::{ClientSpec, ClientStatus, MemberTopology, PeerParams, TopologyPolicy};
use super::values::{Duration, Timestamp};

/// Desired state of one HA cluster of members.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube = "::kube_derive", kube_core = "::kube_core"),
    attr = "x_kube(crates(kube_core = \"::kube_core\"))",
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "bcl",
    category = "baton",
    derive = "PartialEq",
    cel,
    doc = "An HA group of members upgraded standby-first with failover-ordered steps.",
    printcolumn(name = "Target", type_ = "string", json_path = ".status.targetVersion"),
    printcolumn(
        name = "Running",
        type_ = "string",
        json_path = ".status.runningVersions"
    ),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeMember"),
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
#[x_kube(validation = Rule::new("self.members.exists(m, !has(m.spare) || !m.spare)").message("at least one member must not be a spare"))]
#[x_kube(validation = Rule::new("self.members.filter(m, has(m.primary) && m.primary).size() <= 1").message("at most one member may be primary"))]
pub struct ClusterSpec {
    /// Desired software version. When unset, the version of the Mesh that selects this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^v?[0-9]+(\.[0-9]+){0,4}(-[0-9A-Za-z.-]+)?$"),
        length(max = 64)
    )]
    pub version: Option<String>,
    /// The cluster's role inside its mesh (e.g. `management`, `worker`), used by compatibility rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub role: Option<String>,
    /// The members, each reached through its baton-agent. Names are unique (a list map keyed
    /// by name, so server-side apply merges members by name).
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<MemberSpec>,
    /// Ordered software components (layers of a stack, or parts of a multi-component core).
    /// Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub components: Vec<ComponentSpec>,
    /// How upgrades and backouts are carried out.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
    /// Certificate authority of the cluster (rotation is phased; see docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesSpec>,
    /// Load this cluster carries (e.g. managed agents), for the mesh's takeover-capacity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<u64>,
    /// Clusters that take over this cluster's load while it is down (backup routes). Empty means
    /// every other cluster of the mesh shares it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub backup_peers: Vec<String>,
    /// Stop starting new steps; steps in flight finish and are recorded.
    #[serde(default)]
    pub paused: bool,
    /// Managed clients: hosts that must accept commands from every member (each runs a
    /// baton-agent). Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub clients: Vec<ClientSpec>,
    /// How members are added and removed (`docs/topology.md`).
    #[serde(default)]
    pub topology: TopologyPolicy,
}

/// One member (server) of a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    /// Unique name inside the cluster (DNS label).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Failure domain (site, facility) of the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub site: Option<String>,
    /// Address of the member's agent API: `host:port` or `https://host:port`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^(https?://)?[A-Za-z0-9.\\\\-\\\\[\\\\]:]+:[0-9]{1,5}/?$')").message("endpoint must be host:port or https://host:port"))]
    pub endpoint: String,
    /// A spare is upgraded last and only becomes a switchover target when no standby qualifies.
    #[serde(default)]
    pub spare: bool,
    /// The preferred active member; with `upgrade.returnToPrimary` it is made active again at the end.
    #[serde(default)]
    pub primary: bool,
    /// Components this member hosts; empty means all of the cluster's components.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub components: Vec<String>,
}

/// One software component or stack layer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Version of this component; defaults to the cluster's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^v?[0-9]+(\.[0-9]+){0,4}(-[0-9A-Za-z.-]+)?$"),
        length(max = 64)
    )]
    pub version: Option<String>,
    /// Components that must be at their target on a member before this one is upgraded there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub after: Vec<String>,
    /// Verification after this layer.
    #[serde(default)]
    pub verify: VerifyPolicy,
}

/// When the verification of a layer runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct VerifyPolicy {
    /// Skip verification of this layer entirely.
    #[serde(default)]
    pub skip: bool,
    /// The verification may be deferred to the end when the next layer follows immediately.
    #[serde(default)]
    pub deferrable: bool,
    /// This verification only runs while the primary member is active (an HA-pair check).
    #[serde(default)]
    pub requires_primary_active: bool,
}

/// How the cluster moves between versions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'InPlace' || (has(self.allowOutage) && self.allowOutage)").message("strategy InPlace takes every member down and requires allowOutage: true"))]
pub struct UpgradePolicy {
    /// `StandbyFirst` (default): upgrade standbys, switch over, then the old active.
    /// `InPlace`: upgrade every member where it stands (an outage; needs `allowOutage`).
    #[serde(default)]
    pub strategy: UpgradeStrategy,
    /// Members that may be out of service at once.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 16))]
    pub max_unavailable: u32,
    /// A member is in sync when its replication lag is at most this.
    #[serde(default = "default_max_lag")]
    pub max_replication_lag: Duration,
    /// How long to wait for an upgraded member to get back in sync before the step fails.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout: Duration,
    /// Check after a switchover that the new active serves traffic.
    #[serde(default)]
    pub traffic_check: TrafficCheck,
    /// Retries of a failed step.
    #[serde(default)]
    pub retries: RetryPolicy,
    /// `Automatic`, or `Approval`: stop before each switchover until approved.
    #[serde(default)]
    pub supervision: Supervision,
    /// Take a backup before the first disruptive step of each maintenance window.
    #[serde(default)]
    pub backup_before_disruptive: bool,
    /// Disruptive steps only start inside one of these windows (UTC). Empty: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// Allow steps that stop service (needed for single-member clusters and `InPlace`).
    #[serde(default)]
    pub allow_outage: bool,
    /// Re-apply configuration from the active member after each member upgrade.
    #[serde(default)]
    pub reapply_config: bool,
    /// Make the primary member active again once every member is upgraded.
    #[serde(default)]
    pub return_to_primary: bool,
    /// Run narrow preflight checks on a member before upgrading it.
    #[serde(default = "default_true")]
    pub preflight: bool,
    /// Stage the upgrade media on every member ahead of its disruptive steps (and remove old
    /// media afterwards). Absent: members upgrade from media they already hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaPolicy>,
    /// Compare the cluster's health (alarms, KPIs) before its first disruptive step and after
    /// its last: worse stops the cluster (and its mesh tier). Absent: no comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPolicy>,
    /// Preparation checks every member runs before the rollout's first disruptive step:
    /// blocking findings stall the cluster (`PreparationFailed`), warnings wait for an
    /// acknowledgement. Absent: no preparation checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PreparePolicy>,
}

/// The preparation checks of an upgrade (the Active/Standby and multi-master procedures check
/// the install-time configuration against the running system, that the gateways are up, and
/// note the scheduled jobs the upgrade drops). Each member's agent runs the named checks
/// (`prepare`) once per target version, ahead of the window; nothing disruptive toward that
/// version starts before every member has run them. A blocking finding stalls the cluster
/// until a retry intent runs the checks again; warnings wait for the acknowledgement
/// `prepare/CLUSTER@VERSION#DIGEST` unless `warnings: Record`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct PreparePolicy {
    /// The checks each agent runs, by name (e.g. `config`, `gateways`, `scheduledJobs`).
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub checks: Vec<String>,
    /// `Acknowledge` (default): warnings hold the first disruptive step until acknowledged.
    /// `Record`: warnings are reported (status, events, log) and the rollout goes on.
    #[serde(default)]
    pub warnings: PrepareWarnings,
}

/// What the preparation's warnings hold.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrepareWarnings {
    #[default]
    Acknowledge,
    Record,
}

/// The health check around an upgrade: a baseline of the members' alarms and KPIs is taken
/// before the first disruptive step of a rollout, and compared once every member runs the
/// target (after `settle`). A new alarm that is not one of an upgrade's expected transient
/// alarms, or a KPI worse than its rule allows, stalls the cluster (`HealthCheckFailed`) until
/// a retry intent accepts it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct HealthPolicy {
    /// Compare the alarms: an unexpected alarm after that was not there before fails.
    #[serde(default = "default_true")]
    pub alarms: bool,
    /// The KPIs compared with their baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub kpis: Vec<KpiRule>,
    /// How long after the last step the comparison waits (KPIs settle after a switchover).
    #[serde(default)]
    pub settle: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            alarms: true,
            kpis: Vec::new(),
            settle: Duration(0),
        }
    }
}

/// One KPI the agents report (`kpis` of their status) and how much worse it may get.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct KpiRule {
    /// The KPI's name as the agents report it (e.g. `writeRate`, `errorCount`).
    #[schemars(
        regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]{0,62}$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Which way is worse.
    pub worse: KpiWorse,
    /// How the members' values make the cluster's (`Sum`: rates and counts; `Max`: lags).
    #[serde(default)]
    pub aggregate: KpiAggregate,
    /// How much worse than the baseline it may get, in the KPI's unit.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1e15))]
    pub tolerance: f64,
    /// How much worse it may get besides, in percent of the baseline.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub tolerance_percent: u32,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KpiWorse {
    Higher,
    Lower,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KpiAggregate {
    #[default]
    Sum,
    Max,
}

/// Upgrade media distributed ahead of the maintenance window: a non-disruptive `StageMedia`
/// step per member (outside windows too, and before the mesh admits the cluster), bounded per
/// site; no disruptive step of an upgrade starts on a member whose media for the version is
/// not staged; once the cluster runs its target, `RemoveMedia` steps remove the media of
/// every other version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MediaPolicy {
    /// Members of one site (`members[].site`; members without a site share one) staging at
    /// once: the media cross that site's links.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 64))]
    pub max_parallel_per_site: u32,
    /// Remove the media of other versions once every member runs the target.
    #[serde(default = "default_true")]
    pub cleanup: bool,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            max_parallel_per_site: 1,
            cleanup: true,
        }
    }
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        UpgradePolicy {
            strategy: UpgradeStrategy::default(),
            max_unavailable: 1,
            max_replication_lag: default_max_lag(),
            sync_timeout: default_sync_timeout(),
            traffic_check: TrafficCheck::default(),
            retries: RetryPolicy::default(),
            supervision: Supervision::default(),
            backup_before_disruptive: false,
            maintenance_windows: Vec::new(),
            allow_outage: false,
            reapply_config: false,
            return_to_primary: false,
            preflight: true,
            media: None,
            health: None,
            prepare: None,
        }
    }
}

fn default_one() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_max_lag() -> Duration {
    Duration::from_secs(5)
}
fn default_sync_timeout() -> Duration {
    Duration::from_secs(600)
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpgradeStrategy {
    #[default]
    StandbyFirst,
    InPlace,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Supervision {
    #[default]
    Automatic,
    Approval,
}

/// Post-switchover traffic check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TrafficCheck {
    /// The new active must serve traffic within this time.
    #[serde(default = "default_traffic_timeout")]
    pub timeout: Duration,
    /// On timeout, switch back and roll the member back automatically.
    #[serde(default = "default_true")]
    pub rollback: bool,
}
impl Default for TrafficCheck {
    fn default() -> Self {
        TrafficCheck {
            timeout: default_traffic_timeout(),
            rollback: true,
        }
    }
}
fn default_traffic_timeout() -> Duration {
    Duration::from_secs(90)
}

/// Exponential backoff for failed steps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts of one step before the member is declared Zombie (needs a human).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: u32,
    /// First delay; doubled after each failure.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Upper bound of the delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// A weekly maintenance window in UTC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days the window opens on; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` (UTC).
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"), length(max = 5))]
    pub start: String,
    /// How long the window stays open.
    pub duration: Duration,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Observed state of a Cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: ClusterPhase,
    /// The version the cluster is moving to (or holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Versions running on the members, lowest first, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_versions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_member: Option<String>,
    /// One line on what the cluster is doing or waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Steps started and not yet finished. Written BEFORE a step is acted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// The last switchover, until its traffic check passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverRecord>,
    /// Set when an automatic rollback ran for a target; cleared by a retry or a new target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// Target for which the cluster-wide final verification passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_target: Option<String>,
    /// The window start of the last backup taken before disruptive steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// Intents (annotations or commands) already acted on, so they are not acted on twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<String>,
    /// The bounded upgrade log, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogEntry>,
    /// Next id for the upgrade log.
    #[serde(default)]
    pub next_log_id: u64,
    /// Where the rotation to `spec.certificates` stands (absent without `spec.certificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesStatus>,
    /// The once-per-mesh steps its mesh asked it to run (the current ones and the last
    /// succeeded ones, bounded), so none runs twice even when the mesh's status is rebuilt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<ClusterTaskStatus>,
    /// What each managed client accepts (absent without `spec.clients`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientStatus>,
    /// The health check of the rollout to `version` (`upgrade.health`): the baseline, the
    /// comparison, what got worse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The preparation checks of the rollout to `version` (`upgrade.prepare`): who ran them,
    /// what they found, whether the warnings are acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation: Option<PreparationStatus>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClusterPhase {
    #[default]
    Pending,
    /// Every member runs the target and nothing is in flight.
    Ready,
    /// Steps are being carried out.
    Progressing,
    /// Waiting on something outside the cluster: the mesh, a window, an approval, a member.
    Waiting,
    Paused,
    /// An automatic rollback ran; a human decides what next.
    RolledBack,
    /// Cannot make progress without a human (see the Stalled condition).
    Stalled,
}

/// Role of a member as Baton reports it.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum MemberRole {
    Active,
    Standby,
    ForcedStandby,
    Spare,
    OutOfService,
    #[default]
    Unreachable,
    /// A step failed beyond its retries; needs a human.
    Zombie,
}

#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum Health {
    #[serde(rename = "OK")]
    Ok,
    Info,
    Minor,
    Major,
    Critical,
    #[default]
    Offline,
}

/// The health check of one rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The target the check belongs to.
    pub version: String,
    /// Taken before the rollout's first disruptive step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<HealthSnapshot>,
    /// Taken once every member ran the target (and `settle` passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<HealthSnapshot>,
    /// What got worse; empty when the check passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 400)))]
    pub findings: Vec<String>,
    /// A retry intent accepted the findings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepted: bool,
}

/// The preparation checks of one target version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct PreparationStatus {
    /// The target the checks belong to.
    pub version: String,
    /// Members whose checks ran for `version` (since the last retry), in member order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub prepared: Vec<String>,
    /// What the checks found, member by member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub findings: Vec<PreparationFinding>,
    /// Findings left out of `findings` (beyond its bound).
    #[serde(default, skip_serializing_if = "crate::topology::is_zero")]
    pub omitted: u32,
    /// Once every member ran its checks: the digest of the warnings, the last part of their
    /// acknowledgement `prepare/CLUSTER@VERSION#DIGEST` (new warnings need a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub digest: Option<String>,
    /// The warnings were acknowledged (or `warnings: Record`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledged: bool,
}

/// One finding of a member's preparation checks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct PreparationFinding {
    #[schemars(length(max = 63))]
    pub member: String,
    #[schemars(length(max = 63))]
    pub check: String,
    pub severity: FindingSeverity,
    /// A short CamelCase reason (e.g. `GatewayDown`, `ScheduledJobDropped`).
    #[schemars(length(max = 63))]
    pub code: String,
    #[schemars(length(max = 300))]
    pub message: String,
}

/// How a preparation finding holds the upgrade.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum FindingSeverity {
    /// The upgrade must not start: the cluster is Stalled until the checks pass.
    Blocking,
    /// Needs an acknowledgement before the first disruptive step.
    Warning,
}

/// The members' alarms and KPIs at one instant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct HealthSnapshot {
    pub at: Timestamp,
    /// Unexpected alarms, as `member/Name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 160)))]
    pub alarms: Vec<String>,
    /// The cluster's value of each KPI its rules name (members aggregated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kpis: BTreeMap<String, f64>,
}

/// Per-member status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub role: MemberRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    /// Runs exactly the cluster's target: its version and every component it hosts (false
    /// while unreachable).
    #[serde(default)]
    pub up_to_date: bool,
    #[serde(default)]
    pub serving: bool,
    pub health: Health,
    /// Replication lag in seconds.
    #[serde(default)]
    pub lag_seconds: f64,
    #[serde(default)]
    pub backlog: u64,
    #[serde(default)]
    pub conflicts: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<AlarmStatus>,
    /// The member's current or most recent operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
    /// Consecutive failures of the current step on this member.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Target for which the preflight passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight_passed: Option<String>,
    /// Verifications passed on this member, as `component@version` (`@version` for the whole member).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<String>,
    /// Target for which configuration was re-applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_synced: Option<String>,
    /// Versions whose upgrade media the member holds, as its agent reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// The agent endpoint the member was last declared with: a member removed from the spec
    /// is still reached here while it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The identity (SHA-256 fingerprint) the member presents to its peers, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A membership change in progress (joining or leaving); absent for a plain member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<MemberTopology>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct AlarmStatus {
    pub code: String,
    pub name: String,
    pub severity: Health,
    /// True for alarms that are normal while an upgrade runs (forced standby, mixed version...).
    #[serde(default)]
    pub expected: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    pub id: String,
    pub kind: String,
    pub state: String,
    #[serde(default)]
    pub progress: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a step does.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum StepAction {
    Preflight,
    ForceStandby,
    Upgrade,
    Rollback,
    AwaitSync,
    Switchover,
    Release,
    Backup,
    Verify,
    SyncConfig,
    /// Rotation: install a trust bundle (the new root beside the kept ones, or the new only).
    InstallTrust,
    /// Rotation or renewal: install a certificate the target CA issues.
    InstallCertificate,
    /// Rotation: restart so the member presents its new certificate.
    Restart,
    /// Rotation: re-sign the stored data with the new keys.
    ResignData,
    /// Topology: a peer (member or managed client) learns a member's identity.
    AddPeer,
    /// Topology: a peer forgets a removed member's identity.
    RemovePeer,
    /// Topology: a new member starts replicating from the active.
    Join,
    /// Topology: a removed member stops serving and replicating.
    Retire,
    /// A once-per-mesh step the mesh asked this cluster to run on one member (`task`).
    Task,
    /// Media: copy the upgrade media of a version to a member (non-disruptive).
    StageMedia,
    /// Media: remove the media of a version the member no longer runs (after the rollout).
    RemoveMedia,
    /// Preparation: run the checks of `upgrade.prepare` on a member (non-disruptive).
    Prepare,
}

impl StepAction {
    /// Steps that reduce redundancy or stop service: only inside maintenance windows.
    pub fn disruptive(self) -> bool {
        matches!(
            self,
            StepAction::Upgrade
                | StepAction::Rollback
                | StepAction::Switchover
                | StepAction::Restart
                | StepAction::Retire
        )
    }
}

/// A step in flight. Recorded before any agent is asked to act on it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Deterministic id; agent operation ids derive from it, so a repeat is the same operation.
    pub id: String,
    pub action: StepAction,
    /// The member acted on (the switchover target for a switchover).
    pub member: String,
    /// The switchover source (the active being replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub attempt: u32,
    pub started_at: Timestamp,
    /// Upgrade-log entry of this step.
    pub log_id: u64,
    /// Data endpoint of the member to replicate from, resolved when the step was recorded so a
    /// re-sent request is byte-for-byte the same operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// True for a switchover that undoes a failed one (automatic rollback).
    #[serde(default)]
    pub rollback: bool,
    /// A rotation step's CA material, by fingerprint (the host resolves the PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustParams>,
    /// A peer-identity step's identity (`AddPeer`, `RemovePeer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerParams>,
    /// A mesh task's id and agent task name (`Task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskParams>,
}

/// The mesh task a `Task` step runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TaskParams {
    /// The mesh's id of the task in its rollout (`status.tasks[].id` of the Mesh).
    pub id: String,
    /// The task the agent runs.
    pub task: String,
}

/// A once-per-mesh step this cluster was asked to run, as it stands here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterTaskStatus {
    /// The mesh's id of the task in its rollout.
    pub id: String,
    /// Its name in the mesh's `spec.tasks`.
    pub name: String,
    pub state: TaskState,
    /// The member of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Attempts started; attempt N's agent operation is `<id>.<N>`.
    #[serde(default)]
    pub attempts: u32,
    /// Failed attempts since the last retry intent; the next waits `backoff · 2^(n-1)` (the
    /// cluster's `upgrade.retries`), and after `retries.limit` the task is `Failed` until a
    /// retry intent.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl StepRecord {
    /// A step of a CA rotation: one of its actions, or its switchover (which carries `trust`).
    pub fn is_rotation(&self) -> bool {
        self.trust.is_some()
            || matches!(
                self.action,
                StepAction::InstallTrust
                    | StepAction::InstallCertificate
                    | StepAction::Restart
                    | StepAction::ResignData
            )
    }
}

/// The CA material of a rotation step, by SHA-256 fingerprint only: no key and no PEM is ever
/// written to a status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TrustParams {
    /// The target CA's root (installed by `InstallTrust`).
    pub anchor: String,
    /// The target CA's issuer (signs the certificate of `InstallCertificate`).
    pub issuer: String,
    /// `InstallTrust`: roots the member trusts now that stay beside `anchor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub keep: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRecord {
    pub from: String,
    pub to: String,
    pub version: String,
    pub at: Timestamp,
    /// The traffic check passed.
    #[serde(default)]
    pub verified: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The target that failed.
    pub version: String,
    /// The version restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub version: String,
    /// Start of the maintenance window the backup belongs to (the rollout start without windows).
    pub window: Timestamp,
    pub at: Timestamp,
}
