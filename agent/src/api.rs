//! Wire types of the agent's control API (`/v1`), shared with the operator.
//!
//! Field names are camelCase on the wire. The operator's planner consumes [`MemberStatus`]
//! directly, so changes here are API changes: add optional fields, never rename.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `Display` for a fieldless enum: each variant's name, as listed.
macro_rules! display_names {
    ($ty:ident { $($variant:ident => $name:literal,)* }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($ty::$variant => $name,)*
                })
            }
        }
    };
}

/// The role a member plays in its cluster, as reported by `GET /v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Handles traffic and accepts writes.
    Active,
    /// Follows a source and may be promoted by a plain failover.
    Standby,
    /// Follows a source but is held out of failover (typically: runs another version).
    ForcedStandby,
    /// A spare member: follows a source, last in line for promotion.
    Spare,
    /// Not participating (for example while its software is being upgraded).
    OutOfService,
}

display_names!(Role {
    Active => "Active",
    Standby => "Standby",
    ForcedStandby => "ForcedStandby",
    Spare => "Spare",
    OutOfService => "OutOfService",
});

/// Health levels, ordered from best to worst so `max()` gives the overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Health {
    #[serde(rename = "OK")]
    Ok,
    Info,
    Minor,
    Major,
    Critical,
}

display_names!(Health {
    Ok => "OK",
    Info => "Info",
    Minor => "Minor",
    Major => "Major",
    Critical => "Critical",
});

/// Well-known alarm codes raised by the demo backend. The exec backend passes through
/// whatever its status command reports.
pub mod alarm_codes {
    pub const REPLICATION_FAILURE: u32 = 1001;
    pub const FORCED_STANDBY: u32 = 1002;
    pub const MIXED_VERSION: u32 = 1003;
    pub const UPGRADE_IN_PROGRESS: u32 = 1004;
    pub const CONFLICT: u32 = 1005;
    pub const TRAFFIC_CHECK_FAILED: u32 = 1006;
    pub const DATA_INTEGRITY: u32 = 1007;
    pub const OPERATION_FAILED: u32 = 1008;
    pub const STATUS_UNAVAILABLE: u32 = 1009;
}

/// One raised alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alarm {
    pub code: u32,
    pub severity: Health,
    /// Stable machine name, e.g. `ReplicationFailure`, `ForcedStandby`, `MixedVersion`.
    pub name: String,
    /// When the condition was first observed.
    pub since: Timestamp,
    /// Human detail; absent when the name says it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Replication figures of a member. All counts are measured, not estimated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// Data endpoint this member follows (absent for an Active member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether the stream from `source` is currently established.
    #[serde(default)]
    pub connected: bool,
    /// Seconds since the oldest entry this member has not yet applied was written at the source.
    pub lag_seconds: f64,
    /// Entries the source has that this member has not applied.
    pub lag_entries: u64,
    /// Entries this member holds that a connected follower has not yet been sent (max over
    /// followers); 0 when nobody follows it.
    pub backlog: u64,
    /// Number of divergences detected between this member's log and its source's.
    pub conflicts: u64,
    /// Index of the last entry durably stored in this member's log.
    pub applied_index: u64,
    /// Index of the source's last entry, as last reported by the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_index: Option<u64>,
    /// Version the source reported in the replication handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
}

/// Data-port TLS handshakes that failed over certificates or trust, per peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeFailures {
    /// Connections from a peer that failed, by the peer's address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound: BTreeMap<String, u64>,
    /// Connections to a peer (the replication source) that failed, by its data endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outbound: BTreeMap<String, u64>,
}

impl HandshakeFailures {
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.inbound.values().chain(self.outbound.values()).sum()
    }
}

/// Data-port connections whose peer presented a certificate of one issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentedIssuer {
    /// Such connections open now.
    pub open: u32,
    /// When one was last opened or closed.
    pub last_seen: Timestamp,
}

/// The member's own certificate on the data port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// SHA-256 of the issuing CA certificate, when that CA is in the trust bundle or chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_fingerprint: Option<String>,
    pub not_after: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub member: String,
    pub version: String,
    /// Per-component versions; empty when the member has no components.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Version before the last successful upgrade or rollback, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    pub role: Role,
    /// True when this member handles traffic (Active and accepting writes).
    pub serving: bool,
    pub health: Health,
    #[serde(default)]
    pub alarms: Vec<Alarm>,
    #[serde(default)]
    pub replication: Replication,
    /// Where this member serves its data/replication port.
    pub data_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<u64>,
    /// SHA-256 fingerprints of the CA certificates this member trusts for member-to-member TLS.
    #[serde(default)]
    pub trust: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertInfo>,
    /// Data-port handshakes that failed over certificates or trust since the agent started
    /// (demo backend; absent when there were none).
    #[serde(default, skip_serializing_if = "HandshakeFailures::is_empty")]
    pub handshake_failures: HandshakeFailures,
    /// The CAs that issued the certificates peers (members and clients) presented on the data
    /// port, by fingerprint (`unknown`: an issuer neither in the chain nor trusted; `other`:
    /// past 16 issuers). A CA rotation drops an old CA only once nobody presents its
    /// certificates here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub presented_issuers: BTreeMap<String, PresentedIssuer>,
    /// SHA-256 (64 lowercase hex) of the identity this member presents to its peers: its
    /// data-port member certificate when it presents one, else a key of its own generated at
    /// first start (demo backend). Peers and managed clients accept it with `add-peer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The peers this member accepts, name to identity fingerprint (`add-peer`,
    /// `remove-peer`). Empty: nothing is enforced (every member trusted by TLS is accepted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, String>,
    /// SHA-256 of the member's configuration (what `sync-config` copies); absent when the
    /// member has none. Equal digests mean equal configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The member was retired (`retire`): it is OutOfService, accepts no writes and follows
    /// no source until a `demote` or `force-standby` with a source re-joins it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retired: bool,
    /// The `task` operations this member ran to success, oldest first, newest last (the last
    /// [`MAX_TASK_RUNS`]). Demo backend: persisted across restarts; exec backend: what the
    /// status command reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskRun>,
    /// Versions whose upgrade media is staged on this member (`stage-media`), oldest first,
    /// at most [`MAX_MEDIA`]. Demo backend: persisted across restarts; exec backend: what the
    /// status command reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// Key performance indicators, name to value: what the operator records as a health
    /// baseline before an upgrade and compares after it. At most [`MAX_KPIS`], names as
    /// [`valid_kpi_name`], values finite (see [`check_kpis`]). Demo backend: the four of
    /// [`kpi_names`], counters since the agent started; exec backend: what its `kpisCommand`
    /// (or the status command) reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kpis: BTreeMap<String, f64>,
    /// The running operation, or else the most recent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRecord>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How many [`TaskRun`]s a member keeps in its status; the oldest are dropped first.
pub const MAX_TASK_RUNS: usize = 32;

/// How many versions' upgrade media a member holds at once (`MemberStatus::media`): staging
/// one more fails until some are removed (`remove-media`).
pub const MAX_MEDIA: usize = 8;

/// How many KPIs a member reports at most (`MemberStatus::kpis`).
pub const MAX_KPIS: usize = 32;

/// The KPIs the demo backend reports (`MemberStatus::kpis`).
pub mod kpi_names {
    /// Writes accepted per second, over the last 10 s (0 on a member that does not serve).
    pub const WRITE_RATE: &str = "writeRate";
    /// Writes refused since the agent started.
    pub const REFUSED_WRITES: &str = "refusedWrites";
    /// Replication lag in seconds (`replication.lagSeconds`).
    pub const REPLICATION_LAG: &str = "replicationLag";
    /// Operations that failed, and internal errors, since the agent started.
    pub const ERROR_COUNT: &str = "errorCount";
    /// All four.
    pub const DEMO: [&str; 4] = [WRITE_RATE, REFUSED_WRITES, REPLICATION_LAG, ERROR_COUNT];
}

/// A KPI name: `^[a-zA-Z][a-zA-Z0-9_.-]{0,62}$` (1 to 63 characters, a letter first).
pub fn valid_kpi_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks a set of KPIs: at most [`MAX_KPIS`], every name [`valid_kpi_name`], every value
/// finite. The error names the first problem briefly (a bad name is quoted as an excerpt).
pub fn check_kpis(kpis: &BTreeMap<String, f64>) -> Result<(), String> {
    if kpis.len() > MAX_KPIS {
        return Err(format!("{} KPIs; at most {MAX_KPIS}", kpis.len()));
    }
    for (name, value) in kpis {
        if !valid_kpi_name(name) {
            return Err(format!(
                "KPI name {} must be 1 to 63 characters of A-Z a-z 0-9 _ . -, starting with a letter",
                crate::http_util::excerpt(name)
            ));
        }
        if !value.is_finite() {
            return Err(format!("KPI {name} is {value}, not a finite number"));
        }
    }
    Ok(())
}

/// Checks [`Faults::kpi_offsets`]: names and values as [`check_kpis`], and few enough that a
/// demo member's KPIs with the offsets' new names stay within [`MAX_KPIS`].
pub fn check_kpi_offsets(offsets: &BTreeMap<String, f64>) -> Result<(), String> {
    check_kpis(offsets)?;
    let added = offsets
        .keys()
        .filter(|k| !kpi_names::DEMO.contains(&k.as_str()))
        .count();
    let total = kpi_names::DEMO.len() + added;
    if total > MAX_KPIS {
        return Err(format!(
            "{added} new KPI names besides the demo's {}: {total} KPIs; at most {MAX_KPIS}",
            kpi_names::DEMO.len()
        ));
    }
    Ok(())
}

/// One `task` operation that succeeded on a member (`MemberStatus::tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    /// The id of the operation that ran it.
    pub id: String,
    /// The task's name (the request's `task`).
    pub task: String,
    /// The request's `version`, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it finished, RFC 3339 (UTC, as every timestamp of the status).
    pub at: String,
}

/// Every operation the agent knows. Wire names are kebab-case (`force-standby`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    Preflight,
    Upgrade,
    Rollback,
    Promote,
    Demote,
    ForceStandby,
    Backup,
    Verify,
    InstallTrust,
    InstallCertificate,
    Restart,
    ResignData,
    SyncConfig,
    AddPeer,
    RemovePeer,
    Retire,
    /// A named job run once on this member (a once-per-mesh step), idempotent by id.
    Task,
    /// Copies the upgrade media of `version` to this member ahead of its upgrade; the member
    /// keeps its role and keeps serving meanwhile.
    StageMedia,
    /// Deletes the staged upgrade media of `version` (once no member needs it any more).
    RemoveMedia,
    /// Runs the named preparation `checks` before an upgrade to `version` and records what
    /// they found as the operation's `findings`. Not disruptive: the member keeps its role,
    /// version, serving state and data.
    Prepare,
}

impl OperationKind {
    pub const ALL: [OperationKind; 20] = [
        OperationKind::Preflight,
        OperationKind::Upgrade,
        OperationKind::Rollback,
        OperationKind::Promote,
        OperationKind::Demote,
        OperationKind::ForceStandby,
        OperationKind::Backup,
        OperationKind::Verify,
        OperationKind::InstallTrust,
        OperationKind::InstallCertificate,
        OperationKind::Restart,
        OperationKind::ResignData,
        OperationKind::SyncConfig,
        OperationKind::AddPeer,
        OperationKind::RemovePeer,
        OperationKind::Retire,
        OperationKind::Task,
        OperationKind::StageMedia,
        OperationKind::RemoveMedia,
        OperationKind::Prepare,
    ];

    /// The wire name, e.g. `force-standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Preflight => "preflight",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Rollback => "rollback",
            OperationKind::Promote => "promote",
            OperationKind::Demote => "demote",
            OperationKind::ForceStandby => "force-standby",
            OperationKind::Backup => "backup",
            OperationKind::Verify => "verify",
            OperationKind::InstallTrust => "install-trust",
            OperationKind::InstallCertificate => "install-certificate",
            OperationKind::Restart => "restart",
            OperationKind::ResignData => "resign-data",
            OperationKind::SyncConfig => "sync-config",
            OperationKind::AddPeer => "add-peer",
            OperationKind::RemovePeer => "remove-peer",
            OperationKind::Retire => "retire",
            OperationKind::Task => "task",
            OperationKind::StageMedia => "stage-media",
            OperationKind::RemoveMedia => "remove-media",
            OperationKind::Prepare => "prepare",
        }
    }

    pub fn parse(s: &str) -> Option<OperationKind> {
        OperationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plain role a `demote` returns a member to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoteRole {
    Standby,
    Spare,
}

/// `POST /v1/operations`. The id is chosen by the caller and makes the request idempotent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationRequest {
    pub id: String,
    pub kind: OperationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Data endpoint (`host:port`) of the peer to replicate or copy from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DemoteRole>,
    /// `install-trust`: the CA certificates to trust. Without `keepTrust`, the whole bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_pem: Option<String>,
    /// `install-trust`: fingerprints of CAs the member trusts now that stay in its bundle beside
    /// `trustPem` (the rotation's old CA, which the operator may know by fingerprint only).
    /// Empty: `trustPem` replaces the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_trust: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// Private key of `install-certificate`. Never logged, never echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// `add-peer`, `remove-peer`: the peer's name (a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `add-peer`: the peer's identity, a SHA-256 fingerprint (64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `add-peer`: instead of `fingerprint`, the name of an accepted peer whose fingerprint is
    /// accepted under `peer` too (a shared identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<String>,
    /// `task`: the name of the job to run (a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `prepare`: the names of the preparation checks to run (1 to [`MAX_CHECKS`], each
    /// [`valid_check_name`], none twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

impl OperationRequest {
    /// A request of `kind` with no parameters.
    pub fn new(id: impl Into<String>, kind: OperationKind) -> Self {
        let id = id.into();
        OperationRequest {
            id,
            kind,
            version: None,
            component: None,
            source: None,
            role: None,
            trust_pem: None,
            keep_trust: Vec::new(),
            certificate_pem: None,
            key_pem: None,
            peer: None,
            fingerprint: None,
            copy_from: None,
            task: None,
            checks: Vec::new(),
        }
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    pub fn with_component(mut self, component: impl Into<String>) -> Self {
        self.component = Some(component.into());
        self
    }

    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn with_role(mut self, role: DemoteRole) -> Self {
        self.role = Some(role);
        self
    }

    pub fn with_trust_pem(mut self, pem: impl Into<String>) -> Self {
        self.trust_pem = Some(pem.into());
        self
    }

    /// Keep these currently trusted CAs (by fingerprint) beside `trustPem`.
    pub fn with_keep_trust(mut self, fingerprints: Vec<String>) -> Self {
        self.keep_trust = fingerprints;
        self
    }

    /// `add-peer` / `remove-peer`: the peer's name.
    pub fn with_peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// `add-peer`: the peer's identity fingerprint.
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// `add-peer`: copy the fingerprint of this accepted peer.
    pub fn with_copy_from(mut self, peer: impl Into<String>) -> Self {
        self.copy_from = Some(peer.into());
        self
    }

    /// `task`: the name of the job to run.
    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// `prepare`: the preparation checks to run.
    pub fn with_checks<S: Into<String>>(mut self, checks: impl IntoIterator<Item = S>) -> Self {
        self.checks = checks.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_certificate(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        self.certificate_pem = Some(cert_pem.into());
        self.key_pem = Some(key_pem.into());
        self
    }
}

// Hand-written so that a stray `{:?}` can never print key material.
impl fmt::Debug for OperationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationRequest")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("component", &self.component)
            .field("source", &self.source)
            .field("role", &self.role)
            .field("trust_pem", &self.trust_pem.as_ref().map(|p| p.len()))
            .field("keep_trust", &self.keep_trust)
            .field(
                "certificate_pem",
                &self.certificate_pem.as_ref().map(|p| p.len()),
            )
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("peer", &self.peer)
            .field("fingerprint", &self.fingerprint)
            .field("copy_from", &self.copy_from)
            .field("task", &self.task)
            .field("checks", &self.checks)
            .finish()
    }
}

/// Parameters of an operation as recorded: secrets are dropped, PEM bundles are reduced to
/// their fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DemoteRole>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_fingerprints: Vec<String>,
    /// `keepTrust` as asked (the bundle's result is in the operation's message and the status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_trust: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `prepare`: the checks asked for, in the request's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationState {
    Running,
    Succeeded,
    Failed,
}

impl OperationState {
    pub fn is_finished(self) -> bool {
        !matches!(self, OperationState::Running)
    }
}

/// One operation as the agent records it (`GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    pub id: String,
    pub kind: OperationKind,
    #[serde(default)]
    pub params: OperationParams,
    pub state: OperationState,
    /// 0 to 100.
    pub progress: u8,
    #[serde(default)]
    pub message: String,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<String>,
    /// Name of the member that ran it (helps when records of many agents are merged).
    #[serde(default)]
    pub member: String,
    /// What a `prepare` operation's checks found (at most [`MAX_FINDINGS`], see
    /// [`bound_findings`]); empty for every other kind. Omitted when empty, so records of an
    /// agent that predates it still parse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// Most check names a `prepare` request lists.
pub const MAX_CHECKS: usize = 16;

/// Most findings an operation records; beyond them the last is a [`FINDINGS_TRUNCATED`]
/// warning (see [`bound_findings`]).
pub const MAX_FINDINGS: usize = 32;

/// Most characters of a finding's message; a longer one is cut on a character boundary and
/// ends with `…` (see [`Finding::new`]).
pub const MAX_FINDING_MESSAGE: usize = 256;

/// The check name of the findings the agent adds itself (the truncation warning).
pub const PREPARE_CHECK: &str = "prepare";

/// The code of the warning that replaces the findings beyond [`MAX_FINDINGS`].
pub const FINDINGS_TRUNCATED: &str = "FindingsTruncated";

/// Whether a `prepare` finding holds an upgrade (`Blocking`: it must not start) or asks a
/// human to acknowledge it (`Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FindingSeverity {
    Blocking,
    Warning,
}

display_names!(FindingSeverity {
    Blocking => "Blocking",
    Warning => "Warning",
});

impl FindingSeverity {
    /// `Blocking`/`Warning` in any letter case (the CLI flag and exec output forms).
    pub fn parse(s: &str) -> Option<FindingSeverity> {
        if s.eq_ignore_ascii_case("blocking") {
            Some(FindingSeverity::Blocking)
        } else if s.eq_ignore_ascii_case("warning") {
            Some(FindingSeverity::Warning)
        } else {
            None
        }
    }
}

/// One thing a `prepare` operation's checks found (`OperationRecord::findings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Finding {
    /// The check that found it (one of the request's `checks`, or [`PREPARE_CHECK`]).
    pub check: String,
    pub severity: FindingSeverity,
    /// A short CamelCase reason ([`valid_finding_code`]), e.g. `ScheduledJobDropped`.
    pub code: String,
    /// What a human reads: at most [`MAX_FINDING_MESSAGE`] characters.
    pub message: String,
}

impl Finding {
    /// A finding whose message is cut to [`MAX_FINDING_MESSAGE`] characters (see
    /// [`bound_message`]). Names are not checked here: see [`check_finding`].
    pub fn new(
        check: impl Into<String>,
        severity: FindingSeverity,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            severity,
            code: code.into(),
            message: bound_message(&message.into()),
        }
    }
}

/// A check name: `^[A-Za-z][A-Za-z0-9-]{0,62}$` (1 to 63 characters, a letter first).
pub fn valid_check_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A finding's code: `^[A-Za-z][A-Za-z0-9]{0,62}$` (1 to 63 letters and digits, a letter
/// first).
pub fn valid_finding_code(code: &str) -> bool {
    let mut chars = code.chars();
    code.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// `message` cut to at most [`MAX_FINDING_MESSAGE`] characters: a longer one keeps its first
/// 255 characters and ends with `…`.
pub fn bound_message(message: &str) -> String {
    match message.char_indices().nth(MAX_FINDING_MESSAGE) {
        None => message.to_string(),
        Some(_) => {
            let mut out: String = message.chars().take(MAX_FINDING_MESSAGE - 1).collect();
            out.push('…');
            out
        }
    }
}

/// Checks a finding's names and message: the check [`valid_check_name`], the code
/// [`valid_finding_code`], a message that is not blank. The error names the first problem
/// briefly (names quoted as excerpts). The message's length is not checked: it is cut.
pub fn check_finding(f: &Finding) -> Result<(), String> {
    if !valid_check_name(&f.check) {
        return Err(format!(
            "check {} must be 1 to 63 characters of A-Z a-z 0-9 -, starting with a letter",
            crate::http_util::excerpt(&f.check)
        ));
    }
    if !valid_finding_code(&f.code) {
        return Err(format!(
            "code {} must be 1 to 63 letters and digits (CamelCase), starting with a letter",
            crate::http_util::excerpt(&f.code)
        ));
    }
    if f.message.trim().is_empty() {
        return Err(format!("finding {} of {} has no message", f.code, f.check));
    }
    Ok(())
}

/// The findings an operation records: every message bounded ([`bound_message`]), and at
/// most [`MAX_FINDINGS`]: of more, the first 31 are kept and the 32nd is a Warning of check
/// [`PREPARE_CHECK`] and code [`FINDINGS_TRUNCATED`] saying how many were left out, and how
/// many of those were blocking.
pub fn bound_findings(findings: Vec<Finding>) -> Vec<Finding> {
    let count_blocking = |fs: &[Finding]| {
        fs.iter()
            .filter(|f| f.severity == FindingSeverity::Blocking)
            .count()
    };
    let total = findings.len();
    let blocking_total = count_blocking(&findings);
    let mut out: Vec<Finding> = findings
        .into_iter()
        .take(if total > MAX_FINDINGS {
            MAX_FINDINGS - 1
        } else {
            MAX_FINDINGS
        })
        .map(|mut f| {
            f.message = bound_message(&f.message);
            f
        })
        .collect();
    if total > MAX_FINDINGS {
        let left_out = total - out.len();
        let blocking_left_out = blocking_total - count_blocking(&out);
        out.push(Finding::new(
            PREPARE_CHECK,
            FindingSeverity::Warning,
            FINDINGS_TRUNCATED,
            format!(
                "{left_out} more findings were not listed ({blocking_left_out} of them \
                 blocking; at most {MAX_FINDINGS} per operation); run fewer checks at a time \
                 to see them"
            ),
        ));
    }
    out
}

/// Fault injection knobs (`GET`/`PUT /v1/faults`). `PUT` replaces the whole set; missing
/// fields take their defaults. Faults live in memory only: a restarted agent starts from its
/// command-line flags again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Faults {
    /// Upgrades to these versions fail after some progress; the version stays unchanged.
    pub fail_upgrade_to: Vec<String>,
    /// Upgrades never finish.
    pub hang_upgrade: bool,
    /// The agent process exits abruptly halfway through an upgrade.
    pub crash_mid_upgrade: bool,
    /// While running one of these versions, a promote succeeds but the member reports
    /// `serving: false` and health Major (a failed post-switchover traffic check).
    pub no_traffic_after_promote_on: Vec<String>,
    /// Replicated entries are applied no earlier than this long after they were written.
    pub replication_delay_ms: u64,
    /// Every preflight fails.
    pub fail_preflight: bool,
    /// Preflight refuses these target versions (an unsupported upgrade path).
    pub reject_versions: Vec<String>,
    /// Duration of an upgrade or rollback, in seconds. `None` keeps the agent's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_seconds: Option<f64>,
    /// Load figure reported in `/v1/status` (`None` keeps the `--load` flag's value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<u64>,
    /// `task` operations of these task names fail (demo backend) and are not recorded in
    /// `tasks`. Omitted when empty, so a client that never sets it can still drive an agent
    /// that predates it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail_tasks: Vec<String>,
    /// `stage-media` of these versions fails halfway (demo backend) and the version is not
    /// staged. Omitted when empty, like `fail_tasks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail_stage_media: Vec<String>,
    /// Added to the KPIs a demo member reports, by name (a name it does not report is
    /// reported with the offset as its value): a KPI regression on demand. Checked with
    /// [`check_kpi_offsets`]. Omitted when empty, like `fail_tasks`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kpi_offsets: BTreeMap<String, f64>,
    /// Reported by `prepare` operations (demo backend) whose `checks` include the finding's
    /// check, after the `--prepare-finding` flags' findings of that check. Checked with
    /// [`check_finding`]. Omitted when empty, like `fail_tasks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prepare_findings: Vec<Finding>,
    /// Every `prepare` operation fails: its checks could not run (demo backend). Omitted
    /// when false.
    #[serde(skip_serializing_if = "is_false")]
    pub fail_prepare: bool,
}

/// Every 4xx/5xx answer of the agent carries this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `missing_param`, `operation_running`, `id_conflict`.
    pub error: String,
    pub message: String,
}

/// Written to `<data-dir>/ready.json` once both ports are bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyInfo {
    pub member: String,
    /// `host:port` of the control API.
    pub control: String,
    /// `https` or `http` (only with `--insecure-http`).
    pub control_scheme: String,
    /// `host:port` of the data port (empty for the exec backend).
    pub data: String,
    pub data_scheme: String,
    pub pid: u32,
}

/// Answer of a data-port write (`PUT /kv/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteAck {
    /// Log index the write was stored at.
    pub index: u64,
}

/// `GET /v1/head` on the data port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataHead {
    pub member: String,
    pub role: Role,
    pub version: String,
    pub head: u64,
    pub accepting_writes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_status() -> serde_json::Value {
        serde_json::json!({
            "member": "m1", "version": "1.0.0", "role": "Standby", "serving": false,
            "health": "OK", "dataEndpoint": "127.0.0.1:7001"
        })
    }

    /// A new client reads an agent that predates peer identities, and the agent's new fields
    /// are omitted when they say nothing, so an old client reads a new agent's status as before.
    #[test]
    fn peer_fields_of_the_status_are_optional_both_ways() -> Result<(), serde_json::Error> {
        let st: MemberStatus = serde_json::from_value(old_status())?;
        assert_eq!(
            (&st.identity, st.peers.len(), &st.config_digest, st.retired),
            (&None, 0, &None, false)
        );
        let back = serde_json::to_value(&st)?;
        for field in ["identity", "peers", "configDigest", "retired"] {
            assert!(back.get(field).is_none(), "{field} in {back}");
        }
        let fp = "ab".repeat(32);
        let mut full = old_status();
        full["identity"] = fp.clone().into();
        full["peers"] = serde_json::json!({"m2": fp});
        full["configDigest"] = "cd".repeat(32).into();
        full["retired"] = true.into();
        let st: MemberStatus = serde_json::from_value(full.clone())?;
        assert_eq!(st.identity.as_deref(), Some(fp.as_str()));
        assert_eq!(st.peers.get("m2"), Some(&fp));
        assert!(st.retired);
        let back = serde_json::to_value(&st)?;
        for field in ["identity", "peers", "configDigest", "retired"] {
            assert_eq!(back.get(field), full.get(field), "{field}");
        }
        Ok(())
    }

    #[test]
    fn peer_operations_round_trip() -> Result<(), serde_json::Error> {
        for kind in [
            OperationKind::AddPeer,
            OperationKind::RemovePeer,
            OperationKind::Retire,
        ] {
            assert_eq!(OperationKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind)?, kind.as_str());
        }
        let req = OperationRequest::new("add-m3", OperationKind::AddPeer)
            .with_peer("m3")
            .with_copy_from("m1");
        let wire = serde_json::to_value(&req)?;
        assert_eq!(
            wire,
            serde_json::json!({"id": "add-m3", "kind": "add-peer", "peer": "m3", "copyFrom": "m1"})
        );
        assert_eq!(serde_json::from_value::<OperationRequest>(wire)?, req);
        let req = OperationRequest::new("add-m4", OperationKind::AddPeer)
            .with_peer("m4")
            .with_fingerprint("ef".repeat(32));
        let back: OperationRequest = serde_json::from_str(&serde_json::to_string(&req)?)?;
        assert_eq!(back, req);
        assert!(format!("{req:?}").contains("m4"));
        Ok(())
    }

    #[test]
    fn task_operations_and_task_runs_on_the_wire() -> Result<(), serde_json::Error> {
        assert_eq!(OperationKind::parse("task"), Some(OperationKind::Task));
        assert_eq!(serde_json::to_value(OperationKind::Task)?, "task");
        assert!(OperationKind::ALL.contains(&OperationKind::Task));
        let req = OperationRequest::new("upload-2.0.0", OperationKind::Task)
            .with_task("upload-content")
            .with_version("2.0.0");
        let wire = serde_json::to_value(&req)?;
        assert_eq!(
            wire,
            serde_json::json!({"id": "upload-2.0.0", "kind": "task", "version": "2.0.0",
                               "task": "upload-content"})
        );
        assert_eq!(serde_json::from_value::<OperationRequest>(wire)?, req);
        assert!(format!("{req:?}").contains("upload-content"));
        let params: OperationParams = serde_json::from_value(serde_json::json!({"task": "t"}))?;
        assert_eq!(params.task.as_deref(), Some("t"));

        // `tasks` is omitted when empty, and read back with its runs in order.
        let st: MemberStatus = serde_json::from_value(old_status())?;
        assert!(st.tasks.is_empty());
        assert!(serde_json::to_value(&st)?.get("tasks").is_none());
        let mut full = old_status();
        full["tasks"] = serde_json::json!([
            {"id": "a", "task": "upload-content", "version": "2.0.0", "at": "2026-01-01T10:00:00Z"},
            {"id": "b", "task": "upload-content", "at": "2026-01-01T10:05:00Z"}
        ]);
        let st: MemberStatus = serde_json::from_value(full.clone())?;
        assert_eq!(
            st.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(st.tasks[1].version, None);
        assert_eq!(serde_json::to_value(&st)?.get("tasks"), full.get("tasks"));

        // `failTasks` is omitted when empty (an older agent refuses unknown fault fields).
        let wire = serde_json::to_value(Faults::default())?;
        assert!(wire.get("failTasks").is_none(), "{wire}");
        let faults: Faults = serde_json::from_value(serde_json::json!({"failTasks": ["x"]}))?;
        assert_eq!(faults.fail_tasks, ["x"]);
        Ok(())
    }

    #[test]
    fn media_operations_and_staged_media_on_the_wire() -> Result<(), serde_json::Error> {
        for (kind, wire) in [
            (OperationKind::StageMedia, "stage-media"),
            (OperationKind::RemoveMedia, "remove-media"),
        ] {
            assert_eq!(kind.as_str(), wire);
            assert_eq!(kind.to_string(), wire);
            assert_eq!(OperationKind::parse(wire), Some(kind));
            assert_eq!(serde_json::to_value(kind)?, wire);
            assert!(OperationKind::ALL.contains(&kind));
            let req = OperationRequest::new("m-2.0.0", kind).with_version("2.0.0");
            let json = serde_json::to_value(&req)?;
            assert_eq!(
                json,
                serde_json::json!({"id": "m-2.0.0", "kind": wire, "version": "2.0.0"})
            );
            assert_eq!(serde_json::from_value::<OperationRequest>(json)?, req);
        }
        // Every kind is listed once, and its wire name parses back to it.
        for (i, k) in OperationKind::ALL.iter().enumerate() {
            assert_eq!(OperationKind::parse(k.as_str()), Some(*k));
            assert!(!OperationKind::ALL[..i].contains(k), "{k} listed twice");
        }
        assert_eq!(OperationKind::parse("stage_media"), None);
        assert_eq!(OperationKind::parse("stageMedia"), None);

        // `media` is omitted when empty, and read back in order.
        let st: MemberStatus = serde_json::from_value(old_status())?;
        assert!(st.media.is_empty());
        assert!(serde_json::to_value(&st)?.get("media").is_none());
        let mut full = old_status();
        full["media"] = serde_json::json!(["2.0.0", "1.9.1"]);
        let st: MemberStatus = serde_json::from_value(full.clone())?;
        assert_eq!(st.media, ["2.0.0", "1.9.1"]);
        assert_eq!(serde_json::to_value(&st)?.get("media"), full.get("media"));
        assert_eq!(MAX_MEDIA, 8, "the spec bounds staged media at 8 versions");

        // `failStageMedia` is omitted when empty (an older agent refuses unknown fault fields).
        let wire = serde_json::to_value(Faults::default())?;
        assert!(wire.get("failStageMedia").is_none(), "{wire}");
        let faults: Faults =
            serde_json::from_value(serde_json::json!({"failStageMedia": ["3.0.0"]}))?;
        assert_eq!(faults.fail_stage_media, ["3.0.0"]);
        assert_eq!(
            serde_json::to_value(&faults)?.get("failStageMedia"),
            Some(&serde_json::json!(["3.0.0"]))
        );
        Ok(())
    }

    #[test]
    fn kpis_and_kpi_offsets_on_the_wire() -> Result<(), serde_json::Error> {
        // `kpis` is omitted when empty, and an agent that predates it reads as none.
        let st: MemberStatus = serde_json::from_value(old_status())?;
        assert!(st.kpis.is_empty());
        assert!(serde_json::to_value(&st)?.get("kpis").is_none());
        let mut full = old_status();
        full["kpis"] =
            serde_json::json!({"writeRate": 12.5, "errorCount": 0.0, "p99.latency-ms": -3.0});
        let st: MemberStatus = serde_json::from_value(full.clone())?;
        assert_eq!(st.kpis.get("writeRate"), Some(&12.5));
        assert_eq!(st.kpis.get("p99.latency-ms"), Some(&-3.0));
        assert_eq!(st.kpis.len(), 3);
        assert_eq!(serde_json::to_value(&st)?.get("kpis"), full.get("kpis"));
        let back: MemberStatus = serde_json::from_str(&serde_json::to_string(&st)?)?;
        assert_eq!(back, st);
        // An integer on the wire is a number too.
        full["kpis"] = serde_json::json!({"refusedWrites": 7});
        let st: MemberStatus = serde_json::from_value(full)?;
        assert_eq!(st.kpis.get("refusedWrites"), Some(&7.0));

        // `kpiOffsets` is omitted when empty (an older agent refuses unknown fault fields).
        let wire = serde_json::to_value(Faults::default())?;
        assert!(wire.get("kpiOffsets").is_none(), "{wire}");
        let faults: Faults =
            serde_json::from_value(serde_json::json!({"kpiOffsets": {"errorCount": 5}}))?;
        assert_eq!(faults.kpi_offsets.get("errorCount"), Some(&5.0));
        assert_eq!(
            serde_json::to_value(&faults)?.get("kpiOffsets"),
            Some(&serde_json::json!({"errorCount": 5.0}))
        );
        let not_numbers = serde_json::json!({"kpiOffsets": {"errorCount": "5"}});
        assert!(serde_json::from_value::<Faults>(not_numbers).is_err());
        Ok(())
    }

    #[test]
    fn kpi_names_values_and_bound_are_checked() {
        let map = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(MAX_KPIS, 32, "the spec bounds a member's KPIs at 32");
        let longest = format!("k{}", "x".repeat(62));
        for good in ["a", "writeRate", "p99.latency_ms-2", "Z9", longest.as_str()] {
            assert!(valid_kpi_name(good), "{good}");
            assert_eq!(check_kpis(&map(&[(good, 1.0)])), Ok(()), "{good}");
        }
        let too_long = format!("k{}", "x".repeat(63));
        for bad in [
            "",
            "9lives",
            "_x",
            ".x",
            "-x",
            "a b",
            "a/b",
            "né",
            "a:b",
            too_long.as_str(),
        ] {
            assert!(!valid_kpi_name(bad), "{bad:?}");
            let e = check_kpis(&map(&[(bad, 1.0)])).err().unwrap_or_default();
            assert!(
                e.contains("KPI name") && e.contains("starting with a letter"),
                "{e}"
            );
        }
        let huge = "x".repeat(100_000);
        let e = check_kpis(&map(&[(huge.as_str(), 1.0)]))
            .err()
            .unwrap_or_default();
        assert!(
            e.len() < 400,
            "the name is quoted as an excerpt: {} bytes",
            e.len()
        );
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = check_kpis(&map(&[("writeRate", v)]))
                .err()
                .unwrap_or_default();
            assert!(
                e.contains("writeRate") && e.contains("not a finite number"),
                "{e}"
            );
        }
        assert_eq!(check_kpis(&map(&[("x", f64::MAX), ("y", -0.0)])), Ok(()));
        let at_bound: BTreeMap<String, f64> =
            (0..MAX_KPIS).map(|i| (format!("k{i}"), i as f64)).collect();
        assert_eq!(check_kpis(&at_bound), Ok(()));
        let over: BTreeMap<String, f64> = (0..=MAX_KPIS)
            .map(|i| (format!("k{i}"), i as f64))
            .collect();
        assert_eq!(check_kpis(&over), Err("33 KPIs; at most 32".to_string()));
        assert_eq!(check_kpis(&BTreeMap::new()), Ok(()));

        // Offsets: the same checks, and the demo's four names plus new ones within the bound.
        assert_eq!(check_kpi_offsets(&map(&[("errorCount", 3.0)])), Ok(()));
        assert!(check_kpi_offsets(&map(&[("bad name", 3.0)])).is_err());
        assert!(check_kpi_offsets(&map(&[("errorCount", f64::NAN)])).is_err());
        let mut offsets: BTreeMap<String, f64> = (0..MAX_KPIS - kpi_names::DEMO.len())
            .map(|i| (format!("extra{i}"), 1.0))
            .collect();
        for name in kpi_names::DEMO {
            offsets.insert(name.to_string(), 1.0);
        }
        assert_eq!(check_kpi_offsets(&offsets), Ok(()), "32 in all");
        offsets.insert("oneMore".into(), 1.0);
        let e = check_kpi_offsets(&offsets).err().unwrap_or_default();
        assert!(e.contains("33 KPIs; at most 32"), "{e}");
    }

    #[test]
    fn prepare_checks_and_findings_on_the_wire() -> Result<(), serde_json::Error> {
        let kind = OperationKind::Prepare;
        assert_eq!(kind.as_str(), "prepare");
        assert_eq!(OperationKind::parse("prepare"), Some(kind));
        assert_eq!(serde_json::to_value(kind)?, "prepare");
        assert!(OperationKind::ALL.contains(&kind));
        let req = OperationRequest::new("prep-2.0.0", kind)
            .with_version("2.0.0")
            .with_checks(["installConfig", "scheduledJobs"]);
        let json = serde_json::to_value(&req)?;
        assert_eq!(
            json,
            serde_json::json!({"id": "prep-2.0.0", "kind": "prepare", "version": "2.0.0",
                "checks": ["installConfig", "scheduledJobs"]})
        );
        assert_eq!(serde_json::from_value::<OperationRequest>(json)?, req);
        // `checks` is omitted from other requests, and from the params of other records.
        let plain = serde_json::to_value(OperationRequest::new("b", OperationKind::Backup))?;
        assert!(plain.get("checks").is_none(), "{plain}");
        assert!(
            serde_json::to_value(OperationParams::default())?
                .get("checks")
                .is_none()
        );

        // A record of an agent that predates findings parses, with none; none is omitted.
        let old = serde_json::json!({
            "id": "b", "kind": "backup", "state": "Succeeded", "progress": 100,
            "startedAt": "2026-01-01T00:00:00Z", "member": "m1"
        });
        let rec: OperationRecord = serde_json::from_value(old)?;
        assert!(rec.findings.is_empty());
        assert!(serde_json::to_value(&rec)?.get("findings").is_none());

        // Finding: camelCase, severity exactly Blocking / Warning.
        let finding = Finding::new(
            "gateways",
            FindingSeverity::Blocking,
            "GatewayUnreachable",
            "gw-1 does not answer",
        );
        let wire = serde_json::to_value(&finding)?;
        assert_eq!(
            wire,
            serde_json::json!({"check": "gateways", "severity": "Blocking",
                "code": "GatewayUnreachable", "message": "gw-1 does not answer"})
        );
        assert_eq!(
            serde_json::to_value(FindingSeverity::Warning)?,
            serde_json::json!("Warning")
        );
        assert_eq!(FindingSeverity::Warning.to_string(), "Warning");
        let mut rec = rec;
        rec.kind = OperationKind::Prepare;
        rec.params.checks = vec!["gateways".into()];
        rec.findings = vec![finding.clone()];
        let json = serde_json::to_value(&rec)?;
        assert_eq!(json["findings"], serde_json::json!([wire]));
        assert_eq!(json["params"]["checks"], serde_json::json!(["gateways"]));
        assert_eq!(serde_json::from_value::<OperationRecord>(json)?, rec);
        for bad in ["blocking", "BLOCKING", "Error"] {
            let json = serde_json::json!({"check": "c", "severity": bad, "code": "C",
                "message": "m"});
            assert!(serde_json::from_value::<Finding>(json).is_err(), "{bad}");
        }
        assert_eq!(
            FindingSeverity::parse("bLoCkInG"),
            Some(FindingSeverity::Blocking)
        );
        assert_eq!(
            FindingSeverity::parse("warning"),
            Some(FindingSeverity::Warning)
        );
        assert_eq!(FindingSeverity::parse("warn"), None);

        // The prepare faults are omitted when they say nothing.
        let wire = serde_json::to_value(Faults::default())?;
        assert!(wire.get("prepareFindings").is_none(), "{wire}");
        assert!(wire.get("failPrepare").is_none(), "{wire}");
        let faults: Faults = serde_json::from_value(serde_json::json!({
            "prepareFindings": [{"check": "gateways", "severity": "Warning",
                "code": "GatewaySlow", "message": "gw-2 answers slowly"}],
            "failPrepare": true
        }))?;
        assert!(faults.fail_prepare);
        assert_eq!(
            faults.prepare_findings,
            [Finding::new(
                "gateways",
                FindingSeverity::Warning,
                "GatewaySlow",
                "gw-2 answers slowly"
            )]
        );
        let wire = serde_json::to_value(&faults)?;
        assert_eq!(wire["failPrepare"], true);
        assert_eq!(wire["prepareFindings"][0]["severity"], "Warning");
        Ok(())
    }

    #[test]
    fn check_names_and_finding_codes() {
        for name in [
            "a",
            "installConfig",
            "gateway-reachability",
            &"c".repeat(63),
        ] {
            assert!(valid_check_name(name), "{name}");
        }
        for name in [
            "",
            "9lives",
            "-x",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"c".repeat(64),
        ] {
            assert!(!valid_check_name(name), "{name}");
        }
        for code in ["A", "ScheduledJobDropped", "Http2Down", &"C".repeat(63)] {
            assert!(valid_finding_code(code), "{code}");
        }
        for code in ["", "1Bad", "Not-Camel", "a_b", "A B", &"C".repeat(64)] {
            assert!(!valid_finding_code(code), "{code}");
        }
        let f = |check: &str, code: &str, message: &str| {
            check_finding(&Finding::new(
                check,
                FindingSeverity::Warning,
                code,
                message,
            ))
        };
        assert_eq!(f("gateways", "GatewaySlow", "slow"), Ok(()));
        let huge = "x".repeat(100_000);
        for (e, want) in [
            (f("bad check", "C", "m"), "check \"bad check\""),
            (f(&huge, "C", "m"), "check \"xxx"),
            (f("c", "Bad-Code", "m"), "code \"Bad-Code\""),
            (f("c", &huge, "m"), "code \"xxx"),
            (f("c", "C", " "), "no message"),
        ] {
            let e = e.err().unwrap_or_default();
            assert!(e.contains(want), "{e}");
            assert!(e.len() < 300, "{e}");
        }
    }

    #[test]
    fn finding_messages_and_counts_are_bounded() {
        let exact = "m".repeat(MAX_FINDING_MESSAGE);
        assert_eq!(bound_message(&exact), exact);
        assert_eq!(bound_message(""), "");
        let cut = bound_message(&format!("{exact}m"));
        assert_eq!(cut.chars().count(), MAX_FINDING_MESSAGE);
        assert!(cut.ends_with('…'), "{cut}");
        assert_eq!(cut, format!("{}…", "m".repeat(MAX_FINDING_MESSAGE - 1)));
        // Counted in characters and cut on a character boundary.
        let wide = "é".repeat(300);
        let cut = bound_message(&wide);
        assert_eq!(cut.chars().count(), MAX_FINDING_MESSAGE);
        assert_eq!(cut, format!("{}…", "é".repeat(MAX_FINDING_MESSAGE - 1)));
        assert_eq!(bound_message(&"é".repeat(256)), "é".repeat(256));
        assert_eq!(
            Finding::new("c", FindingSeverity::Warning, "C", wide).message,
            cut,
            "Finding::new bounds its message"
        );

        let finding = |i: usize, severity| Finding {
            check: "c".into(),
            severity,
            code: format!("Code{i}"),
            message: "x".repeat(1000),
        };
        let warnings = |n: usize| -> Vec<Finding> {
            (0..n)
                .map(|i| finding(i, FindingSeverity::Warning))
                .collect()
        };
        assert!(bound_findings(Vec::new()).is_empty());
        let at_bound = bound_findings(warnings(MAX_FINDINGS));
        assert_eq!(at_bound.len(), MAX_FINDINGS);
        assert_eq!(
            at_bound[31].code, "Code31",
            "32 findings are kept as they are"
        );
        assert!(at_bound.iter().all(|f| f.message.chars().count() == 256));

        let mut many = warnings(40);
        many[35].severity = FindingSeverity::Blocking;
        many[38].severity = FindingSeverity::Blocking;
        many[2].severity = FindingSeverity::Blocking;
        let kept = bound_findings(many.clone());
        assert_eq!(kept.len(), MAX_FINDINGS);
        for (k, f) in kept[..31].iter().zip(&many) {
            assert_eq!((&k.code, k.severity), (&f.code, f.severity));
        }
        let last = &kept[31];
        assert_eq!(
            (last.check.as_str(), last.severity, last.code.as_str()),
            ("prepare", FindingSeverity::Warning, "FindingsTruncated")
        );
        assert!(
            last.message
                .starts_with("9 more findings were not listed (2 of them blocking"),
            "{}",
            last.message
        );
        assert!(last.message.chars().count() <= MAX_FINDING_MESSAGE);
        assert_eq!(check_finding(last), Ok(()));
        let one_over = bound_findings(warnings(MAX_FINDINGS + 1));
        assert_eq!(one_over[31].code, FINDINGS_TRUNCATED);
        assert!(
            one_over[31].message.starts_with("2 more findings"),
            "{}",
            one_over[31].message
        );
    }
}
