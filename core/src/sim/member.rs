//! A simulated member: the behaviour of a demo agent (roles, versions, replication by index,
//! idempotent operations by id) in virtual time.

use std::collections::BTreeMap;

use crate::api::{Health, MemberRole, Timestamp, values::same_version};
use crate::plan::{
    AgentView, CertView, MembershipReport, OpKind, OpRequest, OpState, OpView, TlsReport,
};

#[derive(Clone, Debug)]
pub struct SimOp {
    pub req: OpRequest,
    pub state: OpState,
    pub started: Timestamp,
    pub finish_at: Timestamp,
    /// Decided at submission from the seed: this run of the operation fails.
    pub fails: bool,
    pub message: String,
    /// What a `prepare` operation reports once it succeeds.
    pub findings: Vec<crate::plan::observe::FindingView>,
}

/// A set of CA numbers (0 to 63): the trust store of a simulated member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CaSet(pub u64);

impl CaSet {
    pub fn of(ca: u8) -> CaSet {
        CaSet(1u64 << (ca % 64))
    }

    pub fn has(self, ca: u8) -> bool {
        self.0 & (1u64 << (ca % 64)) != 0
    }

    pub fn with(self, ca: u8) -> CaSet {
        CaSet(self.0 | CaSet::of(ca).0)
    }

    /// The CA numbers in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..64u8).filter(move |&n| self.has(n))
    }
}

/// The fingerprint simulated agents report for CA `n` (shaped like a SHA-256 fingerprint).
/// Its number repeats in every group of 4 of the 64 digits, so that the first 12 (what status
/// texts and approval names show) tell CAs apart, as real fingerprints do.
pub fn ca_fingerprint(n: u8) -> String {
    format!("{:04x}", u16::from(n) + 1).repeat(16)
}

/// The CA number of a fingerprint [`ca_fingerprint`] made (None: not a simulated CA's).
pub fn ca_number(fingerprint: &str) -> Option<u8> {
    let head = fingerprint.get(..4)?;
    if fingerprint.len() != 64 || fingerprint != head.repeat(16) {
        return None;
    }
    let n = u16::from_str_radix(head, 16).ok()?.checked_sub(1)?;
    u8::try_from(n).ok().filter(|&n| n < 64)
}

/// The identity a simulated member presents: a fingerprint-shaped FNV-1a digest of its name.
pub fn identity_of(name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}").repeat(4)
}

fn id_of(req: &OpRequest) -> &str {
    &req.id
}

/// When every simulated member certificate expires: far beyond any simulated run (about three
/// years after the simulations' start), so no renewal falls due.
pub const CERT_NOT_AFTER: Timestamp = Timestamp(1_900_000_000_000);

/// What keeps a simulated member from answering, each until its instant (None: not now).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downtime {
    /// The process is down (crashed) until this instant.
    pub down_until: Option<Timestamp>,
    /// The network to it is cut until this instant (it keeps running).
    pub cut_until: Option<Timestamp>,
}

impl Downtime {
    /// The process runs at `now`.
    pub fn up(&self, now: Timestamp) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    /// The process runs and the network reaches it at `now`.
    pub fn reachable(&self, now: Timestamp) -> bool {
        self.up(now) && self.cut_until.is_none_or(|t| now >= t)
    }
}

#[derive(Clone, Debug)]
pub struct SimMember {
    pub name: String,
    pub endpoint: String,
    pub version: String,
    pub components: BTreeMap<String, String>,
    pub role: MemberRole,
    pub serving: bool,
    /// Traffic fails on the member after a promote (models a failed traffic check).
    pub broken_traffic: bool,
    pub applied: u64,
    /// Data endpoint of the member it replicates from.
    pub source: Option<String>,
    /// A crash or a network cut it has not recovered from yet.
    pub downtime: Downtime,
    pub ops: BTreeMap<String, SimOp>,
    pub current: Option<String>,
    pub backlog: u64,
    pub conflicts: u64,
    /// The CAs its trust store holds, as a set of CA numbers (bit n: CA n). Every simulated
    /// member starts trusting CA 0 and presenting a certificate it issued.
    pub trust: CaSet,
    /// The CA that issued the certificate it presents.
    pub presents: u8,
    /// A certificate `install-certificate` staged (the CA that issued it): presented from the
    /// next `restart` on, as the demo agent does. A crash does not apply it (the agent loads
    /// its live pair on start).
    pub staged: Option<u8>,
    /// The identity it presents to its peers (a fingerprint-shaped digest of its name).
    pub identity: String,
    /// The identities it accepts, by peer name. Non-empty: it replicates only with peers
    /// listed there, as the demo agent does.
    pub peers: BTreeMap<String, String>,
    /// Its configuration (a number: equal numbers are equal configurations). Existing
    /// members share 1; a new member starts with 0, unconfigured.
    pub config: u64,
    /// Retired: stopped serving and replicating for good (until it joins again).
    pub retired: bool,
    /// It has been a member of its cluster (one of the first, or joined since): what the
    /// invariants count as the cluster's.
    pub joined: bool,
    /// Versions whose upgrade media it holds (`stage-media` adds, `remove-media` removes).
    pub media: Vec<String>,
    /// What its preparation checks find now (`prepare` reports it; a human's fix removes the
    /// blocking ones).
    pub prepare: Vec<crate::plan::observe::FindingView>,
    /// It accepts half the writes (a version the scenario made slow): its `writeRate` halves.
    pub slow: bool,
    /// Kind and end of the running operation: `current` looked up in `ops` while Running,
    /// kept at hand because every simulated instant asks for it (and ids are long strings).
    /// Kept in step by `start`, `finish` and `crash`, the only changes to either.
    running: Option<(OpKind, Timestamp)>,
}

impl SimMember {
    pub fn new(name: &str, endpoint: &str, version: &str, role: MemberRole) -> Self {
        SimMember {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            version: version.to_string(),
            components: BTreeMap::new(),
            role,
            serving: role == MemberRole::Active,
            broken_traffic: false,
            applied: 0,
            source: None,
            downtime: Downtime::default(),
            ops: BTreeMap::new(),
            current: None,
            backlog: 0,
            conflicts: 0,
            trust: CaSet::of(0),
            presents: 0,
            staged: None,
            identity: identity_of(name),
            peers: BTreeMap::new(),
            config: 1,
            retired: false,
            joined: true,
            media: Vec::new(),
            prepare: Vec::new(),
            slow: false,
            running: None,
        }
    }

    /// It accepts `peer` as a replication partner: it enforces no list, or lists its identity.
    pub fn accepts(&self, peer: &SimMember) -> bool {
        self.peers.is_empty() || self.peers.get(&peer.name) == Some(&peer.identity)
    }

    /// A TLS handshake between the two succeeds: each trusts the CA of the other's certificate.
    pub fn handshake_with(&self, peer: &SimMember) -> bool {
        self.trust.has(peer.presents) && peer.trust.has(self.presents)
    }

    pub fn up(&self, now: Timestamp) -> bool {
        self.downtime.up(now)
    }

    pub fn reachable(&self, now: Timestamp) -> bool {
        self.downtime.reachable(now)
    }

    pub fn running_kind(&self) -> Option<OpKind> {
        self.running().map(|r| r.0)
    }

    /// When the running operation ends (its nominal finish), if one runs.
    pub fn running_until(&self) -> Option<Timestamp> {
        self.running().map(|r| r.1)
    }

    fn running(&self) -> Option<(OpKind, Timestamp)> {
        debug_assert_eq!(
            self.running,
            self.current
                .as_ref()
                .and_then(|id| self.ops.get(id))
                .filter(|o| o.state == OpState::Running)
                .map(|o| (o.req.kind, o.finish_at)),
            "{}: running operation out of step with current/ops",
            self.name
        );
        self.running
    }

    /// Start an operation: it becomes the current one.
    pub fn start(&mut self, op: SimOp) {
        self.running = (op.state == OpState::Running).then_some((op.req.kind, op.finish_at));
        self.current = Some(op.req.id.clone());
        self.ops.insert(op.req.id.clone(), op);
    }

    fn op_view(op: &SimOp) -> OpView {
        OpView {
            id: op.req.id.clone(),
            kind: op.req.kind.as_str().to_string(),
            state: op.state,
            progress: if op.state == OpState::Running {
                50
            } else {
                100
            },
            message: op.message.clone(),
            // Findings are a finished operation's result.
            findings: if op.state == OpState::Succeeded {
                op.findings.clone()
            } else {
                vec![]
            },
        }
    }

    pub fn view(&self, lag_entries: u64, lag_seconds: f64) -> AgentView {
        let health = if self.broken_traffic && self.role == MemberRole::Active {
            Health::Major
        } else if self.role == MemberRole::ForcedStandby || self.running_kind().is_some() {
            Health::Minor
        } else {
            Health::Ok
        };
        AgentView {
            version: self.version.clone(),
            components: self.components.clone(),
            role: self.role,
            serving: self.serving,
            health,
            alarms: vec![],
            lag_seconds,
            lag_entries,
            applied_index: self.applied,
            backlog: self.backlog,
            conflicts: self.conflicts,
            data_endpoint: Some(self.endpoint.clone()),
            load: None,
            operation: self
                .current
                .as_ref()
                .and_then(|id| self.ops.get(id))
                .map(Self::op_view),
            tls: TlsReport {
                trust: self.trust.iter().map(ca_fingerprint).collect(),
                certificate: Some(CertView {
                    fingerprint: format!("{:064x}", 0x1_0000 + u64::from(self.presents)),
                    issuer_fingerprint: Some(ca_fingerprint(self.presents)),
                    not_after: CERT_NOT_AFTER,
                }),
                presented: Vec::new(),
            },
            membership: MembershipReport {
                identity: Some(self.identity.clone()),
                peers: self.peers.clone(),
                config_digest: Some(format!("{:016x}", self.config)),
                source: self.source.clone(),
                retired: self.retired,
            },
            media: self.media.clone(),
            kpis: self.kpis(),
        }
    }

    /// What a demo agent reports as KPIs: `writeRate` (100 a second on a serving member, half
    /// when slow) and `errorCount` (its failed operations).
    pub fn kpis(&self) -> BTreeMap<String, f64> {
        let rate = match (self.serving, self.slow) {
            (false, _) => 0.0,
            (true, false) => 100.0,
            (true, true) => 50.0,
        };
        let errors = self
            .ops
            .values()
            .filter(|o| o.state == OpState::Failed)
            .count() as f64;
        BTreeMap::from([
            ("writeRate".to_string(), rate),
            ("errorCount".to_string(), errors),
        ])
    }

    pub fn op(&self, id: &str) -> Option<OpView> {
        self.ops.get(id).map(Self::op_view)
    }

    /// Apply the effect of a finished operation.
    pub fn finish(&mut self, id: &str, no_traffic_versions: &[String], slow_versions: &[String]) {
        let Some(op) = self.ops.get_mut(id) else {
            return;
        };
        if op.state != OpState::Running {
            return;
        }
        if op.fails {
            op.state = OpState::Failed;
            op.message = format!("{} failed (simulated)", op.req.kind.as_str());
            if matches!(
                op.req.kind,
                OpKind::Upgrade | OpKind::Rollback | OpKind::Restart
            ) && self.role == MemberRole::Active
            {
                self.serving = true;
            }
            self.current = None;
            self.running = None;
            return;
        }
        op.state = OpState::Succeeded;
        let req = op.req.clone();
        self.current = None;
        self.running = None;
        match req.kind {
            OpKind::Upgrade | OpKind::Rollback => {
                let v = req.version.clone().unwrap_or_default();
                match &req.component {
                    Some(c) => {
                        self.components.insert(c.clone(), v);
                    }
                    None => self.version = v,
                }
                self.broken_traffic = no_traffic_versions
                    .iter()
                    .any(|n| same_version(n, &self.version));
                self.slow = slow_versions.iter().any(|n| same_version(n, &self.version));
                if self.role == MemberRole::Active {
                    self.serving = !self.broken_traffic;
                }
            }
            OpKind::Promote => {
                self.role = MemberRole::Active;
                self.source = None;
                self.serving = !self.broken_traffic;
            }
            OpKind::Demote => {
                self.retired = false;
                self.role = if req.role.as_deref() == Some("spare") {
                    MemberRole::Spare
                } else {
                    MemberRole::Standby
                };
                self.serving = false;
                if req.source.is_some() {
                    self.source = req.source.clone();
                }
            }
            OpKind::ForceStandby => {
                self.retired = false;
                self.role = MemberRole::ForcedStandby;
                self.serving = false;
                if req.source.is_some() {
                    self.source = req.source.clone();
                }
            }
            OpKind::InstallTrust => {
                if let Some(t) = &req.trust {
                    let mut set = CaSet::default();
                    for n in t.keep.iter().filter_map(|f| ca_number(f)) {
                        if self.trust.has(n) {
                            set = set.with(n);
                        }
                    }
                    if let Some(n) = ca_number(&t.anchor) {
                        set = set.with(n);
                    }
                    self.trust = set;
                }
            }
            OpKind::InstallCertificate => {
                if let Some(n) = req.trust.as_ref().and_then(|t| ca_number(&t.issuer)) {
                    self.staged = Some(n);
                }
            }
            OpKind::Restart => {
                if let Some(n) = self.staged.take() {
                    self.presents = n;
                }
                if self.role == MemberRole::Active {
                    self.serving = !self.broken_traffic;
                }
            }
            OpKind::AddPeer => {
                if let Some(peer) = &req.peer {
                    let id = match (&peer.fingerprint, &peer.copy_from) {
                        (Some(f), _) => Some(f.clone()),
                        (None, Some(from)) => self.peers.get(from).cloned(),
                        (None, None) => None,
                    };
                    match id {
                        Some(id) => {
                            self.peers.insert(peer.peer.clone(), id);
                        }
                        None => {
                            if let Some(op) = self.ops.get_mut(id_of(&req)) {
                                op.state = OpState::Failed;
                                op.message = "copyFrom names no accepted peer".into();
                            }
                        }
                    }
                }
            }
            OpKind::RemovePeer => {
                if let Some(peer) = &req.peer {
                    self.peers.remove(&peer.peer);
                }
            }
            OpKind::Retire => {
                self.retired = true;
                self.role = MemberRole::OutOfService;
                self.serving = false;
                self.source = None;
            }
            // The configuration a `sync-config` copies is set by the simulator, which sees
            // its source (`Sim::tick`).
            OpKind::Preflight
            | OpKind::Backup
            | OpKind::Verify
            | OpKind::SyncConfig
            | OpKind::ResignData
            | OpKind::Prepare => {}
            // The simulator counts the tasks that ran (`Sim::tick`).
            OpKind::Task => {}
            OpKind::StageMedia => {
                if let Some(v) = &req.version
                    && !self.media.contains(v)
                {
                    self.media.push(v.clone());
                }
            }
            OpKind::RemoveMedia => {
                if let Some(v) = &req.version {
                    self.media.retain(|m| m != v);
                }
            }
        }
    }

    /// A crash interrupts the running operation, as a real agent restart reports it.
    pub fn crash(&mut self, until: Timestamp) {
        self.downtime.down_until = Some(until);
        self.running = None;
        if let Some(id) = self.current.take()
            && let Some(op) = self.ops.get_mut(&id)
            && op.state == OpState::Running
        {
            op.state = OpState::Failed;
            op.message = "interrupted by agent restart".into();
        }
        if self.role == MemberRole::Active {
            self.serving = false;
        }
    }

    /// Back up once the crash is over; true when it came back now.
    pub fn recover(&mut self, now: Timestamp) -> bool {
        if self.downtime.down_until.is_some_and(|t| now >= t) {
            self.downtime.down_until = None;
            if self.role == MemberRole::Active {
                self.serving = !self.broken_traffic;
            }
            return true;
        }
        false
    }
}
