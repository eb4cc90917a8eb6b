//! The demo backend: a real replicated key-value store. The Active member accepts writes on
//! the data port, every member serves its log to followers over mutual TLS, and roles,
//! versions and certificates are real, persisted state of the member.

mod data_server;
mod kpis;
mod member_tls;
mod operations;
mod peers;
mod replication;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{
    Alarm, Faults, Finding, Health, MemberStatus, OperationKind, OperationRequest, Replication,
    Role, TaskRun, alarm_codes,
};
use crate::handshakes::HandshakeCounter;
use crate::http_util::ApiError;
use crate::ops::{Ended, Progress};
use crate::persist;

pub use member_tls::{MemberTls, MemberTlsFlags};
use store::Store;

const STATE_FILE: &str = "state.json";
pub(crate) const CONFIG_FILE: &str = "config.json";
/// A replication failure becomes an alarm only once it has lasted this long, so that a
/// source restarting during a planned step does not flap the health.
const REPLICATION_ALARM_GRACE_MS: i64 = 1000;

/// Persisted identity and role of the member (`<data-dir>/state.json`). On restart it wins
/// over command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    pub member: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// OutOfService only while retired (an upgrade's OutOfService is derived from the
    /// running upgrade, never persisted).
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub role_since: Timestamp,
    #[serde(default)]
    pub conflicts: u64,
    /// Accepted peers, name to identity fingerprint (`add-peer`, `remove-peer`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, String>,
    /// Retired (`retire`): OutOfService with no source until a demote or force-standby with a
    /// source re-joins it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retired: bool,
    /// The `task` operations that succeeded, newest last (the last
    /// [`crate::api::MAX_TASK_RUNS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskRun>,
    /// Versions whose upgrade media is staged (`stage-media`), oldest first, at most
    /// [`crate::api::MAX_MEDIA`]. A version is added only once its staging finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What the follower has learned about its source.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplState {
    pub connected: bool,
    pub source_head: Option<u64>,
    pub source_version: Option<String>,
    pub source_role: Option<Role>,
    /// Write time (unix µs) of the oldest entry known at the source but not applied here.
    pub first_unapplied_ts: Option<i64>,
    pub failing_since: Option<Timestamp>,
    pub last_error: Option<String>,
    pub conflict: Option<(Timestamp, String)>,
    pub mixed_since: Option<Timestamp>,
}

struct Downstream {
    sent: u64,
}

/// Startup settings of the demo backend.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub member: String,
    pub data_dir: PathBuf,
    pub data_listen: SocketAddr,
    /// Host reported in the data endpoint instead of the bound address (the port stays the
    /// bound one).
    pub data_advertise_host: Option<String>,
    /// The data port's certificate and trust, and whether it may serve plain TCP.
    pub tls: MemberTlsFlags,
    /// Connection limits and timeouts of the data port.
    pub conn_limits: crate::conn_limits::ConnLimits,
    pub version: String,
    pub role: Role,
    pub source: Option<String>,
    pub components: BTreeMap<String, String>,
    pub upgrade_seconds: f64,
    /// How long the `restart` operation takes.
    pub restart_seconds: f64,
    /// How long a `task` operation takes.
    pub task_seconds: f64,
    /// How long a `stage-media` operation takes.
    pub stage_seconds: f64,
    /// Refuse (409 `media_not_staged`) an `upgrade` to a version whose media is not staged.
    pub require_staged_media: bool,
    /// How long a `prepare` operation takes.
    pub prepare_seconds: f64,
    /// Findings a `prepare` reports when its `checks` include theirs (`--prepare-finding`);
    /// the `prepareFindings` fault adds to them.
    pub prepare_findings: Vec<Finding>,
    /// Scheduled jobs of the member that an upgrade drops (`--scheduled-job`): a `prepare`
    /// with the `scheduledJobs` check warns of each.
    pub scheduled_jobs: Vec<String>,
    pub load: Option<u64>,
    pub faults: Faults,
}

pub(crate) struct Shared {
    pub member: String,
    pub data_dir: PathBuf,
    pub data_endpoint: String,
    state: Mutex<MemberState>,
    pub store: Arc<Store>,
    pub tls: MemberTls,
    /// SHA-256 of the identity key's public key: the identity of a member without a member
    /// certificate on its data port.
    key_identity: String,
    /// Bumped whenever the accepted peers change, so that open replication streams (both
    /// ways) are checked again and a refused follower retries at once.
    peers_tx: watch::Sender<u64>,
    /// Digest of `config.json`, kept up to date by [`Shared::write_config`].
    config_digest: Mutex<Option<String>>,
    /// Data-port handshakes refused over certificates or trust, both ways.
    pub handshakes: Arc<HandshakeCounter>,
    /// The counters behind the KPIs, since the agent started.
    pub kpis: kpis::KpiCounters,
    faults: Mutex<Faults>,
    default_upgrade_seconds: f64,
    pub restart_seconds: f64,
    pub task_seconds: f64,
    pub stage_seconds: f64,
    require_staged_media: bool,
    pub prepare_seconds: f64,
    pub prepare_findings: Vec<Finding>,
    pub scheduled_jobs: Vec<String>,
    default_load: Option<u64>,
    upgrading: Mutex<Option<Timestamp>>,
    traffic_failed: Mutex<Option<(Timestamp, String)>>,
    pub repl: Mutex<ReplState>,
    follower: Mutex<Option<JoinHandle<()>>>,
    cut: watch::Sender<u64>,
    /// Effective role and version, watched by the streams this member serves so followers
    /// learn about a demotion at once rather than at the next heartbeat.
    role_tx: watch::Sender<(Role, String)>,
    downstream: Mutex<HashMap<u64, Downstream>>,
    next_downstream: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    pub fn state(&self) -> MemberState {
        lock(&self.state).clone()
    }

    /// Applies `f` to the member state and persists it atomically; the in-memory state only
    /// changes when the write succeeded.
    pub fn update_state(&self, f: impl FnOnce(&mut MemberState)) -> Result<MemberState> {
        let mut guard = lock(&self.state);
        let mut next = guard.clone();
        f(&mut next);
        persist::write_json(&self.data_dir.join(STATE_FILE), &next)?;
        *guard = next.clone();
        Ok(next)
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    pub fn upgrade_seconds(&self) -> f64 {
        self.faults()
            .upgrade_seconds
            .unwrap_or(self.default_upgrade_seconds)
            .clamp(0.0, 86_400.0)
    }

    pub fn upgrading(&self) -> bool {
        lock(&self.upgrading).is_some()
    }

    pub fn effective_role(&self) -> Role {
        let upgrading = self.upgrading();
        let st = lock(&self.state);
        if st.retired || upgrading {
            Role::OutOfService
        } else {
            st.role
        }
    }

    /// The fingerprint of the identity presented to peers: the identity key's. Not the member
    /// certificate's, which a CA rotation replaces: a member keeps its identity across
    /// rotations, so its peers keep accepting it.
    pub fn identity(&self) -> String {
        self.key_identity.clone()
    }

    pub fn peers(&self) -> BTreeMap<String, String> {
        lock(&self.state).peers.clone()
    }

    pub fn subscribe_peers(&self) -> watch::Receiver<u64> {
        self.peers_tx.subscribe()
    }

    /// Changes the accepted peers (persisted) and has every open stream checked again.
    pub fn update_peers(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<MemberState> {
        let next = self.update_state(|s| f(&mut s.peers))?;
        self.peers_tx.send_modify(|g| *g += 1);
        Ok(next)
    }

    /// Replaces `config.json` and its digest.
    pub fn write_config(&self, value: &serde_json::Value) -> Result<()> {
        persist::write_json(&self.data_dir.join(CONFIG_FILE), value)?;
        *lock(&self.config_digest) = Some(peers::config_digest(value));
        Ok(())
    }

    /// Writes are accepted only by an Active member that is not being upgraded and did not
    /// fail its traffic check.
    pub fn refresh_accepting(&self) {
        let accepting =
            self.effective_role() == Role::Active && lock(&self.traffic_failed).is_none();
        self.store.set_accepting(accepting);
        let state = self.state();
        self.role_tx
            .send_replace((self.effective_role(), state.version));
    }

    pub fn repl(&self) -> MutexGuard<'_, ReplState> {
        lock(&self.repl)
    }

    pub fn subscribe_role(&self) -> watch::Receiver<(Role, String)> {
        self.role_tx.subscribe()
    }

    pub fn subscribe_cut(&self) -> watch::Receiver<u64> {
        self.cut.subscribe()
    }

    fn register_downstream(&self, sent: u64) -> u64 {
        let id = self.next_downstream.fetch_add(1, Ordering::Relaxed);
        lock(&self.downstream).insert(id, Downstream { sent });
        id
    }

    fn update_downstream(&self, id: u64, sent: u64) {
        if let Some(d) = lock(&self.downstream).get_mut(&id) {
            d.sent = sent;
        }
    }

    fn unregister_downstream(&self, id: u64) {
        lock(&self.downstream).remove(&id);
    }

    fn backlog(&self) -> u64 {
        let head = self.store.head();
        lock(&self.downstream)
            .values()
            .map(|d| head.saturating_sub(d.sent))
            .max()
            .unwrap_or(0)
    }

    /// (Re)starts replication from the persisted source, if any, unless upgrading.
    pub fn restart_follower(self: &Arc<Self>) {
        self.stop_follower();
        let source = self.state().source;
        let Some(source) = source else { return };
        if self.upgrading() {
            return;
        }
        let handle = tokio::spawn(replication::follow(self.clone(), source));
        *lock(&self.follower) = Some(handle);
    }

    pub fn stop_follower(&self) {
        if let Some(h) = lock(&self.follower).take() {
            h.abort();
        }
        self.repl().connected = false;
    }

    /// Sets a new source, forgetting what was learned about the previous one.
    pub fn set_source(&self, source: Option<String>) -> Result<()> {
        let current = self.state().source;
        if current != source {
            self.update_state(|s| s.source = source)?;
            *self.repl() = ReplState::default();
        }
        Ok(())
    }

    pub fn cut_connections(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    fn status(&self) -> MemberStatus {
        let st = self.state();
        let repl = self.repl().clone();
        let now = Timestamp::now();
        let upgrading = *lock(&self.upgrading);
        let traffic_failed = lock(&self.traffic_failed).clone();
        let role = self.effective_role();
        let head = self.store.head();
        let mut alarms = Vec::new();
        let mut alarm = |code, severity, name: &str, since, message: Option<String>| {
            alarms.push(Alarm {
                code,
                severity,
                name: name.to_string(),
                since,
                message,
            })
        };
        if let (Some(source), Some(since)) = (&st.source, repl.failing_since)
            && !repl.connected
            && now.duration_since(since).as_millis() >= i128::from(REPLICATION_ALARM_GRACE_MS)
        {
            alarm(
                alarm_codes::REPLICATION_FAILURE,
                Health::Major,
                "ReplicationFailure",
                since,
                Some(format!(
                    "cannot replicate from {source}: {}",
                    repl.last_error
                        .clone()
                        .unwrap_or_else(|| "unknown error".into())
                )),
            );
        }
        if st.role == Role::ForcedStandby {
            alarm(
                alarm_codes::FORCED_STANDBY,
                Health::Minor,
                "ForcedStandby",
                st.role_since,
                Some("held out of failover".into()),
            );
        }
        if let (Some(v), Some(since)) = (&repl.source_version, repl.mixed_since)
            && *v != st.version
        {
            alarm(
                alarm_codes::MIXED_VERSION,
                Health::Minor,
                "MixedVersion",
                since,
                Some(format!("runs {} while its source runs {v}", st.version)),
            );
        }
        if let Some(since) = upgrading {
            alarm(
                alarm_codes::UPGRADE_IN_PROGRESS,
                Health::Info,
                "UpgradeInProgress",
                since,
                None,
            );
        }
        if let Some((since, msg)) = &repl.conflict {
            alarm(
                alarm_codes::CONFLICT,
                Health::Critical,
                "Conflict",
                *since,
                Some(msg.clone()),
            );
        }
        if let Some((since, msg)) = traffic_failed.clone() {
            alarm(
                alarm_codes::TRAFFIC_CHECK_FAILED,
                Health::Major,
                "TrafficCheckFailed",
                since,
                Some(msg),
            );
        }
        if let Some(issue) = self.store.integrity() {
            alarm(
                alarm_codes::DATA_INTEGRITY,
                Health::Critical,
                "DataIntegrity",
                issue.since,
                Some(format!(
                    "{} log entr{} fail checksum verification, first at index {}",
                    issue.bad_entries,
                    if issue.bad_entries == 1 { "y" } else { "ies" },
                    issue.first_bad_index
                )),
            );
        }
        let health = alarms
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Health::Ok);
        let lag_entries = match (&st.source, repl.source_head) {
            (Some(_), Some(source_head)) => source_head.saturating_sub(head),
            _ => 0,
        };
        let lag_seconds = match repl.first_unapplied_ts {
            Some(ts) if lag_entries > 0 => {
                ((now.as_microsecond() - ts).max(0) as f64) / 1_000_000.0
            }
            _ => 0.0,
        };
        let faults = self.faults();
        let serving = role == Role::Active && self.store.accepting();
        let mut kpis = self.kpis.snapshot(serving, lag_seconds);
        kpis::apply_offsets(&mut kpis, &faults.kpi_offsets);
        MemberStatus {
            member: self.member.clone(),
            version: st.version.clone(),
            components: st.components.clone(),
            previous_version: st.previous_version.clone(),
            role,
            serving,
            health,
            alarms,
            replication: Replication {
                source: st.source.clone(),
                connected: st.source.is_some() && repl.connected,
                lag_seconds,
                lag_entries,
                backlog: self.backlog(),
                conflicts: st.conflicts,
                applied_index: head,
                source_index: st.source.as_ref().and(repl.source_head),
                source_version: st.source.as_ref().and(repl.source_version.clone()),
            },
            data_endpoint: self.data_endpoint.clone(),
            load: faults.load.or(self.default_load),
            trust: self.tls.trust_fingerprints(),
            certificate: self.tls.cert_info(),
            handshake_failures: self.handshakes.snapshot(),
            presented_issuers: self.handshakes.presented_snapshot(),
            identity: Some(self.identity()),
            peers: st.peers.clone(),
            config_digest: lock(&self.config_digest).clone(),
            retired: st.retired,
            tasks: st.tasks.clone(),
            media: st.media.clone(),
            kpis,
            operation: None,
        }
    }
}

/// Handle on a running demo backend.
pub struct DemoBackend {
    shared: Arc<Shared>,
    data_addr: SocketAddr,
}

impl DemoBackend {
    /// Loads or initialises the member, opens its log, binds the data port and starts
    /// replication when the member has a source.
    pub async fn start(cfg: DemoConfig) -> Result<DemoBackend> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let state_path = cfg.data_dir.join(STATE_FILE);
        let state = match persist::read_json::<MemberState>(&state_path)? {
            Some(mut s) => {
                if s.member != cfg.member {
                    anyhow::bail!(
                        "{} belongs to member {:?}, not {:?}; use another --data-dir",
                        cfg.data_dir.display(),
                        s.member,
                        cfg.member
                    );
                }
                if s.retired {
                    s.role = Role::OutOfService;
                } else if s.role == Role::OutOfService {
                    s.role = Role::Standby;
                }
                tracing::info!(
                    "resuming member {} from {}: version {}, role {}",
                    s.member,
                    state_path.display(),
                    s.version,
                    s.role
                );
                s
            }
            None => {
                let s = MemberState {
                    member: cfg.member.clone(),
                    version: cfg.version.clone(),
                    previous_version: None,
                    components: cfg.components.clone(),
                    role: if cfg.role == Role::OutOfService {
                        Role::Standby
                    } else {
                        cfg.role
                    },
                    source: cfg.source.clone(),
                    role_since: Timestamp::now(),
                    conflicts: 0,
                    peers: BTreeMap::new(),
                    retired: false,
                    tasks: Vec::new(),
                    media: Vec::new(),
                };
                persist::write_json(&state_path, &s)?;
                s
            }
        };
        let config_path = cfg.data_dir.join(CONFIG_FILE);
        if !config_path.exists() {
            persist::write_json(
                &config_path,
                &serde_json::json!({"revision": 0, "settings": {}}),
            )?;
        }
        let config_digest = match persist::read_json::<serde_json::Value>(&config_path) {
            Ok(config) => config.as_ref().map(peers::config_digest),
            Err(e) => {
                tracing::warn!("no configuration digest: {e:#}");
                None
            }
        };
        let key_identity = peers::load_or_create_identity_key(&cfg.data_dir)?;
        let store = Store::open(&cfg.data_dir.join("data"))?;
        let tls = MemberTls::open(&cfg.data_dir, &cfg.tls)?;
        let handshakes: Arc<HandshakeCounter> = Arc::default();
        tls.observe(handshakes.clone());
        let listener = crate::http_util::bind(cfg.data_listen)
            .with_context(|| format!("binding the data port on {}", cfg.data_listen))?;
        let data_addr = listener
            .local_addr()
            .context("reading the data port address")?;
        let (cut, _) = watch::channel(0);
        let (role_tx, _) = watch::channel((state.role, state.version.clone()));
        let shared = Arc::new(Shared {
            member: cfg.member.clone(),
            data_dir: cfg.data_dir.clone(),
            data_endpoint: match &cfg.data_advertise_host {
                Some(host) => format!("{host}:{}", data_addr.port()),
                None => data_addr.to_string(),
            },
            state: Mutex::new(state),
            store,
            tls,
            key_identity,
            peers_tx: watch::channel(0).0,
            config_digest: Mutex::new(config_digest),
            handshakes,
            kpis: kpis::KpiCounters::default(),
            faults: Mutex::new(cfg.faults.clone()),
            default_upgrade_seconds: cfg.upgrade_seconds,
            restart_seconds: cfg.restart_seconds,
            task_seconds: cfg.task_seconds,
            stage_seconds: cfg.stage_seconds,
            require_staged_media: cfg.require_staged_media,
            prepare_seconds: cfg.prepare_seconds,
            prepare_findings: cfg.prepare_findings.clone(),
            scheduled_jobs: cfg.scheduled_jobs.clone(),
            default_load: cfg.load,
            upgrading: Mutex::new(None),
            traffic_failed: Mutex::new(None),
            repl: Mutex::new(ReplState::default()),
            follower: Mutex::new(None),
            cut,
            role_tx,
            downstream: Mutex::new(HashMap::new()),
            next_downstream: AtomicU64::new(1),
        });
        shared.refresh_accepting();
        tokio::spawn(data_server::serve(
            shared.clone(),
            listener,
            cfg.conn_limits,
        ));
        shared.restart_follower();
        Ok(DemoBackend { shared, data_addr })
    }

    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    pub fn data_is_tls(&self) -> bool {
        self.shared.tls.is_tls()
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    pub fn status(&self) -> MemberStatus {
        self.shared.status()
    }

    pub fn version(&self) -> String {
        self.shared.state().version
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Checks that need the member's state; run before the operation is recorded.
    pub fn validate(&self, req: &OperationRequest) -> Result<(), ApiError> {
        let st = self.shared.state();
        if let Some(c) = &req.component
            && !st.components.contains_key(c)
        {
            let hosted: Vec<&str> = st.components.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(
                "unknown_component",
                format!(
                    "member {} does not host component {c:?} (it hosts: {})",
                    self.shared.member,
                    if hosted.is_empty() {
                        "none".to_string()
                    } else {
                        hosted.join(", ")
                    }
                ),
            ));
        }
        if let Some(source) = &req.source
            && *source == self.shared.data_endpoint
        {
            return Err(ApiError::bad_request(
                "invalid_param",
                format!("source {source} is this member's own data endpoint"),
            ));
        }
        if matches!(
            req.kind,
            OperationKind::Promote | OperationKind::Demote | OperationKind::ForceStandby
        ) && self.shared.upgrading()
        {
            return Err(ApiError::conflict(
                "invalid_state",
                "the member is being upgraded; role changes wait until it is back",
            ));
        }
        if self.shared.require_staged_media
            && req.kind == OperationKind::Upgrade
            && let Some(version) = &req.version
            && !st.media.contains(version)
        {
            // `version` passed validate_request: at most 64 characters, so the message is short.
            return Err(ApiError::conflict(
                "media_not_staged",
                format!("upgrade to {version} needs its media staged first (stage-media)"),
            ));
        }
        if st.retired {
            let member = &self.shared.member;
            match req.kind {
                OperationKind::Promote => {
                    return Err(ApiError::conflict(
                        "invalid_state",
                        format!(
                            "member {member} is retired and cannot be promoted; re-join it first (demote or force-standby with a source)"
                        ),
                    ));
                }
                OperationKind::Demote | OperationKind::ForceStandby if req.source.is_none() => {
                    return Err(ApiError::conflict(
                        "invalid_state",
                        format!(
                            "member {member} is retired; a {} re-joins it only with a source to follow",
                            req.kind
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs an operation; one that fails (or whose task ends without an outcome) counts in
    /// the `errorCount` KPI.
    pub async fn execute(&self, req: OperationRequest, progress: Progress) -> Ended {
        let guard = kpis::FailureGuard::new(&self.shared.kpis);
        let ended = operations::execute(&self.shared, req, progress).await;
        if ended.is_ok() {
            guard.succeeded();
        }
        ended
    }
}
