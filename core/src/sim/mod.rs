//! Deterministic simulator: members and clusters in virtual time, driven by a seed.
//!
//! It drives the planners exactly as the real loop does (observe → plan → persist status →
//! act), injects faults (failed and hanging-free operations, member crashes, cut networks,
//! operator crashes before or after the status write), and checks the safety invariants of
//! docs/architecture.md at every simulated instant.

pub mod member;
pub mod rng;
pub mod soak;
pub mod topology;

use std::collections::{BTreeMap, BTreeSet};

use crate::api::values::Duration;
use crate::api::{
    CertificatesSpec, ClusterPhase, ClusterSpec, ClusterStatus, Direction, FindingSeverity,
    MemberRole, MemberSpec, MeshPhase, MeshSpec, MeshStatus, Timestamp, UpgradeStrategy,
    values::{cmp_versions, same_version},
};
use crate::plan::software::effective_version_str;
use crate::plan::trust::{CaInput, CaView};
use crate::plan::validate::{FastMap, same_str};
use crate::plan::{
    Admission, ClusterInput, Intents, MemberObservation, MeshClusterView, MeshInput, ObjectView,
    OpKind, OpRequest, OpState, Wake, admission_for, mesh::MeshIntents, plan_cluster_from,
    plan_mesh_from,
};

pub use member::{CERT_NOT_AFTER, CaSet, Downtime, SimMember, SimOp, ca_fingerprint, ca_number};
use rng::Rng;

/// Fault and timing knobs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// How often a busy cluster is looked at.
    pub poll: Duration,
    pub upgrade_time: Duration,
    pub short_op_time: Duration,
    /// Probability that one operation fails.
    pub op_fail_rate: f64,
    /// Per member and simulated minute.
    pub crash_rate: f64,
    pub cut_rate: f64,
    /// Per reconcile pass: the operator dies before writing status / after writing it.
    pub operator_crash_rate: f64,
    /// No new fault after this instant (liveness is judged after it).
    pub faults_until: Timestamp,
    /// Versions the simulated software misbehaves on, however the faults are drawn.
    pub broken: BrokenVersions,
    /// Writes per second on each active member.
    pub write_rate: u64,
    /// Entries per second a standby applies.
    pub replication_rate: u64,
    /// Operations take up to this fraction longer than nominal, at random.
    pub duration_jitter: f64,
    /// Entries a member generates for the other clusters of the mesh when an upgrade of it
    /// succeeds (the data the new version converts), up to this many at random: its
    /// replication backlog (`drainBefore` waits for it). 0: none.
    pub upgrade_backlog: u64,
    /// Backlog entries a running member sends per second.
    pub backlog_drain_rate: u64,
    /// A human answers the preparation checks (`upgrade.prepare`) within 30 simulated minutes:
    /// fixes what blocks and retries the cluster, acknowledges the warnings.
    pub answer_preparation: bool,
}

/// Versions of the simulated software with a bug the planner must survive (like the demo
/// agent's `fail_upgrade_to` and `no_traffic_after_promote_on` faults).
#[derive(Clone, Debug, Default)]
pub struct BrokenVersions {
    /// Upgrades to these versions always fail.
    pub fail_upgrade_to: Vec<String>,
    /// Members on these versions do not serve traffic after a promote.
    pub no_traffic_after_promote_on: Vec<String>,
    /// Members on these versions accept half the writes (their `writeRate` KPI halves).
    pub slow_on: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            poll: Duration::from_secs(5),
            upgrade_time: Duration::from_secs(60),
            short_op_time: Duration::from_secs(2),
            op_fail_rate: 0.0,
            crash_rate: 0.0,
            cut_rate: 0.0,
            operator_crash_rate: 0.0,
            faults_until: Timestamp(0),
            broken: BrokenVersions::default(),
            write_rate: 10,
            replication_rate: 1000,
            duration_jitter: 0.25,
            upgrade_backlog: 0,
            backlog_drain_rate: 20,
            answer_preparation: false,
        }
    }
}

pub struct SimCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ClusterSpec,
    pub status: Option<ClusterStatus>,
    pub members: BTreeMap<String, SimMember>,
    pub intents: Intents,
    /// Highest index acknowledged to a writer on this cluster.
    pub acked: u64,
    /// The CA its own `spec.certificates` names, as the host would read it (see [`ca_input`]);
    /// None until a scenario sets one. Change it with [`Sim::set_ca`]. A cluster of a mesh that
    /// declares certificates reads the mesh's instead ([`SimMesh::ca`]).
    pub ca: Option<CaInput>,
    /// Next time the planner wants to look (the loop's requeue).
    next_look: Timestamp,
    /// When the human answers what the preparation checks found ([`SimConfig::answer_preparation`]).
    human_at: Option<Timestamp>,
}

impl SimCluster {
    /// The cluster as the mesh planner reads it.
    pub fn mesh_view(&self) -> MeshClusterView<'_> {
        MeshClusterView {
            name: &self.name,
            labels: &self.labels,
            spec: &self.spec,
            status: self.status.as_ref(),
        }
    }
}

pub struct SimMesh {
    pub name: String,
    pub spec: MeshSpec,
    pub status: Option<MeshStatus>,
    pub intents: MeshIntents,
    /// The CA the mesh's `spec.certificates` names, as the hosts read it; None until a scenario
    /// sets one ([`Sim::set_mesh_ca`]).
    pub ca: Option<CaInput>,
}

/// A rotation phase run early on a cluster by a force intent, as its `PhaseForced` event
/// announced it.
#[derive(Clone, Debug)]
pub struct ForcedPhase {
    pub cluster: String,
    /// The event's text.
    pub message: String,
    /// The members of the cluster the event names (what it says breaks).
    pub named: BTreeSet<String>,
    /// The event says members of the other clusters of the mesh break too.
    pub mesh_wide: bool,
}

/// The CA Secret a cluster's host reads, as [`Admission::certificates`] names it: the mesh's
/// when the mesh declares certificates (the grant is there), else the cluster's own.
fn ca_read<'a>(
    mesh: Option<&'a SimMesh>,
    c: &'a SimCluster,
    admission: &Admission,
) -> Option<&'a CaInput> {
    admission.certificates(c.spec.certificates.as_ref())?;
    if admission.rotation.is_some() {
        mesh.and_then(|m| m.ca.as_ref())
    } else {
        c.ca.as_ref()
    }
}

/// Counters for reports and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub passes: u64,
    pub ops_submitted: u64,
    pub switchovers: u64,
    pub operator_crashes: u64,
    pub member_crashes: u64,
    /// Times the mesh began to report deferred tiers behind (`status.lagging`).
    pub lagged: u64,
    /// Preparations a human answered: blocking findings fixed (and retried), warnings
    /// acknowledged.
    pub preparations_fixed: u64,
    pub preparations_acknowledged: u64,
    /// First instant every cluster was Ready.
    pub converged_at: Option<Timestamp>,
}

pub struct Sim {
    pub now: Timestamp,
    pub cfg: SimConfig,
    rng: Rng,
    pub clusters: Vec<SimCluster>,
    pub mesh: Option<SimMesh>,
    pub violations: Vec<String>,
    pub stats: SimStats,
    /// Cluster names whose upgrade may stop service (outage allowed).
    outage_ok: BTreeSet<String>,
    /// When the simulation started, for relative times in violation messages.
    start: Timestamp,
    /// Versions the invariant checks met, ranked.
    ranks: VersionRanks,
    /// When the mesh was last planned with no change, if nothing it reads changed since.
    mesh_quiet: Option<Timestamp>,
    /// A cluster status the mesh reads changed since the mesh was last planned: as the
    /// operator's watch does, the mesh is planned again at once (not at the next resync).
    mesh_due: bool,
    /// Rotation phases forced by a force intent, as the planner's `PhaseForced` events named
    /// them: the breaks they announce are expected, any other is a violation.
    pub forced: Vec<ForcedPhase>,
    /// Scratch for `mesh_key`.
    key_before: Vec<u8>,
    key_after: Vec<u8>,
    /// A member was added or removed: a cluster done may be part-way again (a member added on
    /// other software), so tier order is judged when an operation starts, not at every instant
    /// (steps in flight finish, as the mesh rules say).
    edited: bool,
    /// To look into a failing seed: the cluster whose passes are traced, and the trace.
    pub trace: Option<SimTrace>,
    /// Tiers with `drainBefore` whose first admission of a rollout was checked: (the
    /// rollout's log id, tier index).
    drain_checked: BTreeSet<(u64, usize)>,
}

/// One cluster's passes, each as the planner left it (only those that changed something),
/// and the violations among them: `SOAK_TRACE_CLUSTER` of the soak bench prints it.
#[derive(Clone, Debug, Default)]
pub struct SimTrace {
    pub cluster: String,
    pub lines: Vec<String>,
    last: String,
}

impl SimTrace {
    pub fn of(cluster: &str) -> Self {
        SimTrace {
            cluster: cluster.to_string(),
            ..Default::default()
        }
    }
}

fn endpoint(cluster: &str, member: &str) -> String {
    format!("sim://{cluster}/{member}")
}

/// The CA Secret of simulated CA `n` as the host reads it: a root that issues member
/// certificates itself.
pub fn ca_input(n: u8) -> CaInput {
    let fp = ca_fingerprint(n);
    CaInput::Ready(CaView {
        anchor: fp.clone(),
        issuer: fp.clone(),
        chains: vec![(fp.clone(), fp)],
        not_after: CERT_NOT_AFTER,
    })
}

/// The simulated CA a CA Secret holds (None: none, or unusable).
pub fn ca_number_of(ca: Option<&CaInput>) -> Option<u8> {
    match ca {
        Some(CaInput::Ready(v)) => ca_number(&v.anchor),
        _ => None,
    }
}

/// What `m`'s agent reports of the certificates presented to it: each follower replicating
/// from it presents its own certificate on its link (links that exist at `now`: the follower
/// runs and names `m` as its source), grouped by issuer.
fn presented_to(c: &SimCluster, m: &SimMember, now: Timestamp) -> Vec<crate::plan::PresentedView> {
    let mut by_issuer: BTreeMap<u8, u32> = BTreeMap::new();
    for f in c.members.values() {
        if f.name != m.name && f.up(now) && f.source.as_deref() == Some(m.endpoint.as_str()) {
            *by_issuer.entry(f.presents).or_default() += 1;
        }
    }
    by_issuer
        .into_iter()
        .map(|(n, open)| crate::plan::PresentedView {
            issuer: ca_fingerprint(n),
            open,
            last_seen: now,
        })
        .collect()
}

/// Operations of a CA rotation's jobs.
fn is_rotation_op(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::InstallTrust | OpKind::InstallCertificate | OpKind::Restart | OpKind::ResignData
    )
}

/// Operations of an upgrade (not of a switchover, which either may run).
fn is_upgrade_op(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Preflight
            | OpKind::Upgrade
            | OpKind::Rollback
            | OpKind::ForceStandby
            | OpKind::Backup
            | OpKind::Verify
            | OpKind::SyncConfig
    )
}

impl Sim {
    pub fn new(cfg: SimConfig, start: Timestamp) -> Self {
        let rng = Rng::new(cfg.seed);
        Sim {
            now: start,
            cfg,
            rng,
            clusters: vec![],
            mesh: None,
            violations: vec![],
            stats: SimStats::default(),
            outage_ok: BTreeSet::new(),
            start,
            ranks: VersionRanks::default(),
            drain_checked: BTreeSet::new(),
            mesh_quiet: None,
            mesh_due: false,
            forced: Vec::new(),
            key_before: Vec::new(),
            key_after: Vec::new(),
            edited: false,
            trace: None,
        }
    }

    /// Add a cluster whose members all run `version`; the first non-spare member is active.
    pub fn add_cluster(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
        spec: ClusterSpec,
        version: &str,
    ) {
        let mut members = BTreeMap::new();
        let active = spec
            .members
            .iter()
            .find(|m| !m.spare)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let active_ep = endpoint(name, &active);
        for m in &spec.members {
            let role = if m.name == active {
                MemberRole::Active
            } else if m.spare {
                MemberRole::Spare
            } else {
                MemberRole::Standby
            };
            let mut sm = SimMember::new(&m.name, &endpoint(name, &m.name), version, role);
            for c in &spec.components {
                if m.components.is_empty() || m.components.contains(&c.name) {
                    sm.components.insert(
                        c.name.clone(),
                        c.version.clone().unwrap_or_else(|| version.to_string()),
                    );
                }
            }
            if role != MemberRole::Active {
                sm.source = Some(active_ep.clone());
            }
            members.insert(m.name.clone(), sm);
        }
        let single = spec.members.len() <= 1;
        if spec.upgrade.allow_outage || spec.upgrade.strategy == UpgradeStrategy::InPlace || single
        {
            self.outage_ok.insert(name.to_string());
        }
        self.clusters.push(SimCluster {
            name: name.to_string(),
            labels,
            spec,
            status: None,
            members,
            intents: Intents::default(),
            acked: 0,
            ca: None,
            next_look: self.now,
            human_at: None,
        });
    }

    pub fn set_mesh(&mut self, name: &str, spec: MeshSpec) {
        if spec.strategy.type_ == crate::api::MeshStrategyType::Offline {
            for c in &self.clusters {
                self.outage_ok.insert(c.name.clone());
            }
        }
        self.mesh = Some(SimMesh {
            name: name.to_string(),
            spec,
            status: None,
            intents: MeshIntents::default(),
            ca: None,
        });
    }

    /// The mesh declares certificates: the certificates a cluster rotates to (the mesh's, else
    /// its own `spec.certificates`), as its admission names them.
    pub fn certificates_of<'a>(&'a self, c: &'a SimCluster) -> Option<&'a CertificatesSpec> {
        match self
            .mesh
            .as_ref()
            .and_then(|m| m.spec.certificates.as_ref())
        {
            Some(certs) => Some(certs),
            None => c.spec.certificates.as_ref(),
        }
    }

    /// The CA Secret the host of cluster `c` reads (see [`ca_read`]): the mesh's when the mesh
    /// declares certificates, else the cluster's own.
    pub fn ca_of<'a>(&'a self, c: &'a SimCluster) -> Option<&'a CaInput> {
        match &self.mesh {
            Some(m) if m.spec.certificates.is_some() => m.ca.as_ref(),
            _ => c.ca.as_ref(),
        }
    }

    /// The simulated CA cluster `c` rotates to (None: none, or unusable).
    pub fn ca_target(&self, c: &SimCluster) -> Option<u8> {
        ca_number_of(self.ca_of(c))
    }

    /// The CA of the mesh's `spec.certificates` becomes simulated CA `n` (a rotation of every
    /// cluster of the mesh when its members trust and present another); the mesh and its
    /// clusters are looked at at once, as a watch of the Secret would.
    pub fn set_mesh_ca(&mut self, n: u8) {
        let now = self.now;
        if let Some(m) = self.mesh.as_mut() {
            m.ca = Some(ca_input(n));
            self.mesh_quiet = None;
            self.mesh_due = true;
            for c in &mut self.clusters {
                c.next_look = now;
            }
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&SimCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_mut(&mut self, name: &str) -> Option<&mut SimCluster> {
        self.clusters.iter_mut().find(|c| c.name == name)
    }

    /// The CA of cluster `name`'s own `spec.certificates` becomes simulated CA `n` (a rotation
    /// when its members trust and present another); the cluster is looked at at once, as a
    /// watch of the Secret would. For a standalone cluster: a cluster of a mesh that declares
    /// certificates reads the mesh's CA ([`Sim::set_mesh_ca`]).
    pub fn set_ca(&mut self, name: &str, n: u8) {
        let now = self.now;
        if let Some(c) = self.cluster_mut(name) {
            c.ca = Some(ca_input(n));
            c.next_look = now;
        }
    }

    /// Send `req` to `member` of cluster `cluster` as if the operator had: for tests that break
    /// a planner rule on purpose and expect an invariant to catch it.
    pub fn inject(&mut self, cluster: &str, member: &str, req: OpRequest) {
        if let Some(ci) = self.clusters.iter().position(|c| c.name == cluster) {
            self.submit(ci, member, req);
        }
    }

    /// Liveness of the CA rotations once settled: in every cluster with a CA and not stopped
    /// with a reason (Stalled, RolledBack, or waiting behind a blocked mesh, which
    /// [`Sim::liveness_problems`] judges), the rotation is done: phase `Done`, every member
    /// presents a certificate of the CA and trusts it (and only it, unless `keepOldTrust`).
    /// A mesh that declares certificates is done too (phase `Done`), or Stalled or Degraded
    /// with a reason.
    pub fn rotation_problems(&self) -> Vec<String> {
        let mut out = vec![];
        if let Some(m) = &self.mesh
            && m.spec.certificates.is_some()
            && let Some(n) = ca_number_of(m.ca.as_ref())
        {
            let st = m.status.as_ref();
            let phase = st
                .and_then(|s| s.certificates.as_ref())
                .and_then(|c| c.phase.as_deref());
            let blocked = st.is_some_and(|s| {
                matches!(s.phase, MeshPhase::Stalled | MeshPhase::Degraded)
                    && s.message.as_deref().is_some_and(|m| !m.is_empty())
            });
            if phase != Some("Done") && !blocked {
                out.push(format!(
                    "mesh {}: {:?} but the rotation to CA {n} is in phase {phase:?}: {:?}",
                    m.name,
                    st.map(|s| s.phase),
                    st.and_then(|s| s.message.as_deref())
                ));
            }
        }
        for c in &self.clusters {
            let (Some(n), Some(certs)) = (self.ca_target(c), self.certificates_of(c)) else {
                continue;
            };
            let Some(st) = &c.status else { continue };
            if matches!(
                st.phase,
                ClusterPhase::Stalled | ClusterPhase::RolledBack | ClusterPhase::Waiting
            ) {
                continue;
            }
            let phase = st.certificates.as_ref().and_then(|x| x.phase.as_deref());
            if phase != Some("Done") {
                out.push(format!(
                    "{}: {:?} but the rotation to CA {n} is in phase {phase:?}: {:?}",
                    c.name, st.phase, st.message
                ));
                continue;
            }
            for m in c.members.values() {
                let only = m.trust == CaSet::of(n);
                if m.presents != n || !m.trust.has(n) || (!certs.keep_old_trust && !only) {
                    out.push(format!(
                        "{}/{}: rotation Done but it presents CA {} and trusts {:?} (target {n})",
                        c.name,
                        m.name,
                        m.presents,
                        m.trust.iter().collect::<Vec<_>>()
                    ));
                }
            }
        }
        out
    }

    /// Clusters whose CA rotation is done (see [`Sim::rotation_done`]).
    pub fn rotations_done(&self) -> usize {
        self.clusters
            .iter()
            .filter(|c| self.rotation_done(c))
            .count()
    }

    /// The CA rotation of `c` is done: phase `Done`, every member presents and trusts the CA.
    pub fn rotation_done(&self, c: &SimCluster) -> bool {
        self.ca_target(c).is_some_and(|n| {
            c.status
                .as_ref()
                .and_then(|s| s.certificates.as_ref())
                .and_then(|x| x.phase.as_deref())
                == Some("Done")
                && c.members
                    .values()
                    .all(|m| m.presents == n && m.trust.has(n))
        })
    }

    /// What a cluster pass does with a `PhaseForced` event of cluster `cluster`; public for
    /// tests that announce a force wrongly on purpose and expect the check to catch it.
    pub fn announce_forced(&mut self, cluster: &str, message: &str) {
        if let Some(ci) = self.clusters.iter().position(|c| c.name == cluster) {
            self.record_forced(ci, message);
        }
    }

    /// A `PhaseForced` event of cluster `ci`: what it names must be everything that breaks
    /// (checked against the members' real trust stores and certificates now), and it comes
    /// once per force.
    fn record_forced(&mut self, ci: usize, message: &str) {
        let c = &self.clusters[ci];
        let words: BTreeSet<&str> = message
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '-' || ch == '_'))
            .collect();
        let named: BTreeSet<String> = c
            .members
            .keys()
            .filter(|m| words.contains(m.as_str()))
            .cloned()
            .collect();
        let target = self.ca_target(c);
        // What really breaks: for a forced Reissue, the members that do not trust the new CA;
        // for a forced RemoveOldTrust, the members presenting another CA's certificate.
        let breaking: Vec<&str> = match target {
            Some(n) if message.starts_with("rotation phase Reissue") => c
                .members
                .values()
                .filter(|m| !m.trust.has(n))
                .map(|m| m.name.as_str())
                .collect(),
            Some(n) if message.starts_with("rotation phase RemoveOldTrust") => c
                .members
                .values()
                .filter(|m| m.presents != n)
                .map(|m| m.name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let unnamed: Vec<&str> = breaking
            .iter()
            .filter(|m| !named.contains(**m))
            .copied()
            .collect();
        let many = message.contains(" more");
        let mut found = Vec::new();
        if !unnamed.is_empty() && !many {
            found.push(format!(
                "{}: PhaseForced does not name {unnamed:?}, which break: {message}",
                c.name
            ));
        }
        if self
            .forced
            .iter()
            .any(|f| f.cluster == c.name && f.message == message)
        {
            found.push(format!("{}: PhaseForced twice: {message}", c.name));
        }
        let forced = ForcedPhase {
            cluster: c.name.clone(),
            message: message.to_string(),
            named,
            mesh_wide: message.contains("other clusters of mesh"),
        };
        self.forced.push(forced);
        for v in found {
            self.violation(v);
        }
    }

    /// A broken handshake between `a` (of cluster `ac`) and `b` (of `bc`) that a forced phase
    /// announced: one side is a member of the forced cluster and the other is named by its
    /// event (or stands in another cluster of the mesh, when the event says those break).
    fn announced(&self, ac: &str, a: &str, bc: &str, b: &str) -> bool {
        self.forced.iter().any(|f| {
            let other = |oc: &str, o: &str| {
                (oc == f.cluster && f.named.contains(o)) || (oc != f.cluster && f.mesh_wide)
            };
            (ac == f.cluster && other(bc, b)) || (bc == f.cluster && other(ac, a))
        })
    }

    fn violation(&mut self, msg: String) {
        if let Some(t) = &mut self.trace {
            t.lines.push(format!("  VIOLATION {msg}"));
        }
        if self.violations.len() < 50 {
            self.violations.push(format!(
                "t+{}s: {msg}",
                self.now.since(self.start).as_secs_f64()
            ));
        }
    }

    /// The trace's line for cluster `i` after a pass: its steps and each member's state.
    fn trace_pass(&mut self, i: usize) {
        let Some(t) = &self.trace else { return };
        let c = &self.clusters[i];
        if c.name != t.cluster {
            return;
        }
        let short = |s: &str| s.chars().take(6).collect::<String>();
        let mut line = format!(
            "spec [{}]",
            c.spec
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(st) = &c.status {
            let steps: Vec<String> = st
                .steps
                .iter()
                .map(|s| format!("{:?}@{}", s.action, s.member))
                .collect();
            line.push_str(&format!(
                " {:?} steps {steps:?} {:?}",
                st.phase,
                st.message.as_deref().unwrap_or("")
            ));
        }
        for m in c.members.values() {
            let rec = c
                .status
                .as_ref()
                .and_then(|s| s.members.iter().find(|r| r.name == m.name))
                .map_or("forgotten".to_string(), |r| {
                    r.topology.as_ref().map_or("plain".into(), |t| {
                        format!("{:?} {:?}", t.membership, t.stage)
                    })
                });
            let peers: Vec<String> = m
                .peers
                .iter()
                .map(|(k, v)| format!("{k}:{}", short(v)))
                .collect();
            line.push_str(&format!(
                "\n    {} {} {:?}{}{} op {:?} src {:?} id {} peers {peers:?} ({rec}{})",
                m.name,
                m.version,
                m.role,
                if m.up(self.now) { "" } else { " DOWN" },
                if m.retired { " retired" } else { "" },
                m.running_kind(),
                m.source,
                short(&m.identity),
                if m.joined { ", joined" } else { "" },
            ));
        }
        let at = self.now.since(self.start).as_secs_f64();
        if let Some(t) = &mut self.trace
            && line != t.last
        {
            t.lines.push(format!("t+{at:.3}s {line}"));
            t.last = line;
        }
    }

    fn faulty(&self) -> bool {
        self.now < self.cfg.faults_until
    }

    /// Target version of a cluster: its own, or the mesh's.
    pub fn target_of(&self, c: &SimCluster) -> Option<String> {
        c.spec
            .version
            .clone()
            .or_else(|| self.mesh.as_ref().map(|m| m.spec.version.clone()))
    }

    fn observe(&self, c: &SimCluster) -> BTreeMap<String, MemberObservation> {
        let mut ids: Vec<String> = vec![];
        if let Some(st) = &c.status {
            for s in &st.steps {
                ids.push(s.id.clone());
                ids.push(format!("{}.demote", s.id));
                ids.push(format!("{}.promote", s.id));
            }
        }
        let by_ep: BTreeMap<&str, &SimMember> = c
            .members
            .values()
            .map(|m| (m.endpoint.as_str(), m))
            .collect();
        c.members
            .iter()
            .map(|(name, m)| {
                let obs = if m.reachable(self.now) {
                    let (lag_e, lag_s) = match m.source.as_deref().and_then(|s| by_ep.get(s)) {
                        Some(src) if m.role != MemberRole::Active => {
                            let e = src.applied.saturating_sub(m.applied);
                            (e, e as f64 / self.cfg.replication_rate.max(1) as f64)
                        }
                        _ => (0, 0.0),
                    };
                    let mut agent = m.view(lag_e, lag_s);
                    agent.tls.presented = presented_to(c, m, self.now);
                    MemberObservation {
                        agent: Some(agent),
                        error: None,
                        ops: ids
                            .iter()
                            .filter_map(|id| m.op(id).map(|o| (id.clone(), o)))
                            .collect(),
                    }
                } else {
                    MemberObservation {
                        agent: None,
                        error: Some("connection refused (simulated)".into()),
                        ops: BTreeMap::new(),
                    }
                };
                (name.clone(), obs)
            })
            .collect()
    }

    /// One reconcile pass over the mesh and every cluster due for a look.
    pub fn pass(&mut self) {
        self.mesh_quiet = None;
        self.pass_inner(false);
        self.check_invariants();
    }

    /// `pass` without the invariant check; true when it changed what the invariants read (an
    /// operation started, or the mesh rollout's direction changed).
    fn pass_inner(&mut self, reuse: bool) -> bool {
        self.stats.passes += 1;
        let started = self.stats.ops_submitted;
        let direction = self.rollout_direction();
        let now = self.now;
        // The mesh first: it admits clusters from their last persisted statuses. Its plan is
        // reused while nothing it reads changed since a plan that changed nothing (and no
        // stagger ran out): it would be the same plan. Debug builds plan anyway and check that.
        let quiet = reuse
            && self
                .mesh_quiet
                .is_some_and(|t| self.mesh.as_ref().is_some_and(|m| !stagger_ends(m, t, now)));
        if let Some(mesh) = self.mesh.as_mut()
            && (!quiet || cfg!(debug_assertions))
        {
            self.mesh_due = false;
            // The mesh status is replaced by the plan's: hand it over rather than copy it,
            // keeping all but the log (which changes only with an event) to compare.
            let mut last = mesh.status.take();
            let before = last.as_mut().map(|s| {
                let log = std::mem::take(&mut s.log);
                let copy = s.clone();
                s.log = log;
                (copy, s.log.len(), s.next_log_id)
            });
            let views: Vec<MeshClusterView<'_>> =
                self.clusters.iter().map(SimCluster::mesh_view).collect();
            let mut plan = plan_mesh_from(
                &MeshInput {
                    mesh: ObjectView {
                        name: &mesh.name,
                        generation: Some(1),
                        spec: &mesh.spec,
                        status: None,
                    },
                    clusters: &views,
                    outside: &[],
                    intents: &mesh.intents,
                    ca: mesh.ca.as_ref(),
                    now,
                },
                last,
            );
            drop(views);
            let mut drain = drain_violations(
                &mesh.spec,
                before.as_ref().map(|b| &b.0),
                &plan.status,
                &self.clusters,
                &mut self.drain_checked,
            );
            drain.extend(health_tier_violations(
                &mesh.spec,
                before.as_ref().map(|b| &b.0),
                &plan.status,
                &self.clusters,
            ));
            drain.extend(deferred_violations(
                &mesh.name,
                &mesh.spec,
                before.as_ref().map(|b| &b.0),
                &plan.status,
                &self.clusters,
                &mesh.intents.approve,
                now,
            ));
            if plan.status.lagging.is_some()
                && before.as_ref().is_none_or(|b| b.0.lagging.is_none())
            {
                self.stats.lagged += 1;
            }
            let log = std::mem::take(&mut plan.status.log);
            let unchanged = plan.events.is_empty()
                && before.as_ref().is_some_and(|(b, len, next)| {
                    *b == plan.status && *len == log.len() && *next == plan.status.next_log_id
                });
            // Like the operator's watch (k8s::relations), wake the clusters whose admission
            // (admitted or not, and why not) changed.
            let wake: Vec<bool> = if unchanged {
                vec![false; self.clusters.len()]
            } else {
                self.clusters
                    .iter()
                    .map(|c| {
                        admission_for(
                            &mesh.name,
                            &mesh.spec,
                            before.as_ref().map(|b| &b.0),
                            &c.name,
                        ) != admission_for(&mesh.name, &mesh.spec, Some(&plan.status), &c.name)
                    })
                    .collect()
            };
            plan.status.log = log;
            debug_assert!(
                !quiet || unchanged,
                "the mesh plan changed although nothing it reads did: {plan:?}"
            );
            self.mesh_quiet = unchanged.then_some(now);
            mesh.status = Some(plan.status);
            for v in drain {
                self.violation(v);
            }
            for (c, wake) in self.clusters.iter_mut().zip(wake) {
                if wake {
                    c.next_look = now;
                }
            }
        }
        for i in 0..self.clusters.len() {
            if self.clusters[i].next_look > now {
                continue;
            }
            // Operator crashes: before the status write nothing happened (the plan is lost, so
            // it need not be made); after it, the intent is recorded but the operations were
            // never sent. Drawn before planning, which uses no randomness: same sequence.
            let crash = self.faulty() && self.rng.chance(self.cfg.operator_crash_rate);
            let before_write = crash && self.rng.chance(0.5);
            if crash {
                self.stats.operator_crashes += 1;
            }
            if before_write {
                continue;
            }
            let obs = self.observe(&self.clusters[i]);
            let last = self.clusters[i].status.take();
            // What the mesh reads of this status, to see whether the plan changes it.
            let mut key = std::mem::take(&mut self.key_before);
            mesh_key(last.as_ref(), &mut key);
            let c = &self.clusters[i];
            let admission = match &self.mesh {
                Some(m) => admission_for(&m.name, &m.spec, m.status.as_ref(), &c.name),
                None => Admission::standalone(),
            };
            // The status is replaced by the plan's in both remaining outcomes: hand it over.
            let plan = plan_cluster_from(
                &ClusterInput {
                    cluster: ObjectView {
                        name: &c.name,
                        generation: Some(1),
                        spec: &c.spec,
                        status: None,
                    },
                    observed: &obs,
                    admission: &admission,
                    intents: &c.intents,
                    ca: ca_read(self.mesh.as_ref(), c, &admission),
                    now,
                },
                last,
            );
            for e in plan.events.iter().filter(|e| e.reason == "PhaseForced") {
                self.record_forced(i, &e.message);
            }
            let next_look = match plan.wake {
                Wake::Busy => now.plus(self.cfg.poll),
                Wake::At(t) => t
                    .max(now.plus(Duration::from_millis(1)))
                    .min(now.plus(Duration::from_secs(60))),
                Wake::Idle => now.plus(Duration::from_secs(60)),
            };
            let mut after = std::mem::take(&mut self.key_after);
            mesh_key(Some(&plan.status), &mut after);
            if after != key {
                self.mesh_quiet = None;
                self.mesh_due = self.mesh.is_some();
            }
            self.key_before = key;
            self.key_after = after;
            // A member whose record is a plain member's has joined (for the invariants).
            for r in plan.status.members.iter().filter(|r| r.topology.is_none()) {
                if let Some(m) = self.clusters[i].members.get_mut(&r.name) {
                    m.joined = true;
                }
            }
            self.clusters[i].status = Some(plan.status);
            if crash {
                self.clusters[i].next_look = now;
                continue;
            }
            self.clusters[i].next_look = next_look;
            for a in plan.actions {
                self.submit(i, &a.member, a.request);
            }
            self.trace_pass(i);
        }
        self.stats.ops_submitted != started || self.rollout_direction() != direction
    }

    fn rollout_direction(&self) -> Option<Direction> {
        self.mesh
            .as_ref()
            .and_then(|m| m.status.as_ref())
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.direction)
    }

    fn submit(&mut self, ci: usize, member: &str, req: OpRequest) {
        let now = self.now;
        let outage_ok = self.outage_ok.contains(&self.clusters[ci].name);
        let cname = self.clusters[ci].name.clone();
        let target = self.target_of(&self.clusters[ci]);
        let Some(m) = self.clusters[ci].members.get(member).cloned() else {
            self.violation(format!("{cname}: operation for unknown member {member}"));
            return;
        };
        if !m.reachable(now) {
            return; // connection refused: the planner retries on a later pass
        }
        if let Some(existing) = m.ops.get(&req.id) {
            if existing.req != req {
                self.violation(format!(
                    "{cname}/{member}: operation id {} reused with a different request",
                    req.id
                ));
            }
            return;
        }
        if m.running_kind().is_some() {
            return; // 409: another operation runs
        }
        // Safety checks at the moment an operation would start.
        let moving = matches!(req.kind, OpKind::Upgrade | OpKind::Rollback);
        if moving {
            if m.role == MemberRole::Active && !outage_ok {
                self.violation(format!(
                    "{cname}/{member}: active member taken down by {:?}",
                    req.kind
                ));
            }
            let current = match &req.component {
                Some(c) => m.components.get(c).cloned().unwrap_or_default(),
                None => m.version.clone(),
            };
            if req
                .version
                .as_deref()
                .is_some_and(|v| same_version(v, &current))
            {
                self.violation(format!(
                    "{cname}/{member}: {:?} to {current} which it already runs (done twice)",
                    req.kind
                ));
            }
            let opposite = if req.kind == OpKind::Upgrade {
                OpKind::Rollback
            } else {
                OpKind::Upgrade
            };
            if self.clusters[ci]
                .members
                .values()
                .any(|o| o.running_kind() == Some(opposite))
            {
                self.violation(format!(
                    "{cname}: {:?} started while a {:?} runs",
                    req.kind, opposite
                ));
            }
        }
        self.topology_checks(ci, &m, &req);
        self.task_checks(ci, member, &req);
        self.media_checks(ci, member, &req);
        self.health_checks(ci, member, &req);
        self.prepare_checks(ci, member, &req);
        // A joining member moved to the active's software before it joins is no rollout step.
        if moving && self.edited && joined(&self.clusters[ci], member) {
            self.tier_order_at_start(ci, member, req.kind);
        }
        if req.kind == OpKind::Promote {
            let acked = self.clusters[ci].acked;
            let others_active = self.clusters[ci]
                .members
                .values()
                .any(|o| o.name != member && o.role == MemberRole::Active);
            if m.applied < acked {
                self.violation(format!(
                    "{cname}/{member}: promoted at index {} < acknowledged {acked} (writes lost)",
                    m.applied
                ));
            }
            if others_active {
                self.violation(format!(
                    "{cname}/{member}: promoted while another member is active"
                ));
            }
            if let Some(t) = &target {
                // Moving back is allowed: after an automatic rollback, or when switching back
                // to the old active because a switchover failed or was abandoned (the member
                // promoted is the one that served before it).
                let status = self.clusters[ci].status.as_ref();
                let rollback = status.is_some_and(|s| {
                    s.rolled_back.is_some()
                        || s.steps.iter().any(|st| {
                            st.rollback
                                && st.action == crate::api::StepAction::Switchover
                                && st.member == member
                                && req.id == format!("{}.promote", st.id)
                        })
                });
                // A CA rotation's switchover hands over to a member on the old active's own
                // software (a rollout waits for the rotation): the target is not its concern.
                let rotation = status.is_some_and(|s| {
                    s.steps.iter().any(|st| {
                        st.trust.is_some()
                            && st.action == crate::api::StepAction::Switchover
                            && req.id == format!("{}.promote", st.id)
                            && st
                                .from
                                .as_ref()
                                .and_then(|f| self.clusters[ci].members.get(f))
                                .is_some_and(|f| {
                                    same_version(&f.version, &m.version)
                                        && f.components == m.components
                                })
                    })
                });
                // The hand-over of an active being removed goes to a member on its software.
                let handover = status.is_some_and(|s| {
                    s.steps.iter().any(|st| {
                        st.action == crate::api::StepAction::Switchover
                            && req.id == format!("{}.promote", st.id)
                            && st.from.as_ref().is_some_and(|f| {
                                !self.clusters[ci].spec.members.iter().any(|d| &d.name == f)
                                    && self.clusters[ci].members.get(f).is_some_and(|f| {
                                        same_version(&f.version, &m.version)
                                            && f.components == m.components
                                    })
                            })
                    })
                });
                if !rollback
                    && !rotation
                    && !handover
                    && !same_version(&m.version, t)
                    && m.components.is_empty()
                {
                    self.violation(format!(
                        "{cname}/{member}: switchover to {} which is not the target {t} (operation {})",
                        m.version, req.id
                    ));
                }
            }
        }
        let dur = match req.kind {
            OpKind::Upgrade | OpKind::Rollback => self.cfg.upgrade_time,
            // Copying media takes a while, less than installing it.
            OpKind::StageMedia => Duration(self.cfg.upgrade_time.millis() / 4),
            _ => self.cfg.short_op_time,
        };
        let can_fail = !matches!(
            req.kind,
            OpKind::Promote | OpKind::Demote | OpKind::ForceStandby
        );
        let mut fails = can_fail && self.faulty() && self.rng.chance(self.cfg.op_fail_rate);
        if req.kind == OpKind::Upgrade
            && req.version.as_ref().is_some_and(|v| {
                self.cfg
                    .broken
                    .fail_upgrade_to
                    .iter()
                    .any(|f| same_version(f, v))
            })
        {
            fails = true;
        }
        let jitter = Duration(
            self.rng
                .below((dur.millis() as f64 * self.cfg.duration_jitter) as u64 + 1),
        );
        self.stats.ops_submitted += 1;
        if req.kind == OpKind::Promote {
            self.stats.switchovers += 1;
        }
        let findings = if req.kind == OpKind::Prepare {
            self.prepare_findings(ci, member)
        } else {
            vec![]
        };
        let Some(m) = self.clusters[ci].members.get_mut(member) else {
            return;
        };
        if (moving || req.kind == OpKind::Restart) && m.role == MemberRole::Active {
            m.serving = false;
        }
        m.start(SimOp {
            req,
            state: OpState::Running,
            started: now,
            finish_at: now.plus(dur).plus(jitter),
            fails,
            message: String::new(),
            findings,
        });
    }

    /// The topology invariants, at the moment an operation would start on `m`:
    /// * the active is never retired;
    /// * a retirement never leaves more than `maxUnavailable` members out of service, nor the
    ///   cluster without an in-sync standby where the retired member was one (unless
    ///   `allowRemovingLastStandby`);
    /// * a member is promoted only once it has joined (its record says so) and every peer
    ///   that enforces a list accepts it;
    /// * configuration is copied only from the serving active.
    fn topology_checks(&mut self, ci: usize, m: &SimMember, req: &OpRequest) {
        let c = &self.clusters[ci];
        let mut found = Vec::new();
        match req.kind {
            OpKind::Retire => {
                if m.role == MemberRole::Active {
                    found.push(format!(
                        "{}/{}: the active member is retired",
                        c.name, m.name
                    ));
                }
                let out = c
                    .members
                    .values()
                    .filter(|o| {
                        o.name != m.name
                            && matches!(
                                o.running_kind(),
                                Some(OpKind::Upgrade | OpKind::Rollback | OpKind::Restart)
                            )
                    })
                    .count() as u32;
                if out + 1 > c.spec.upgrade.max_unavailable {
                    found.push(format!(
                        "{}/{}: retired while {out} other members are out of service (maxUnavailable {})",
                        c.name, m.name, c.spec.upgrade.max_unavailable
                    ));
                }
                let in_sync = |o: &SimMember| {
                    matches!(o.role, MemberRole::Standby | MemberRole::ForcedStandby)
                        && o.up(self.now)
                        && !o.retired
                        && o.applied + self.cfg.replication_rate.max(1) * 5 >= c.acked
                };
                let declared = |o: &SimMember| c.spec.members.iter().any(|d| d.name == o.name);
                if in_sync(m)
                    && !c.spec.topology.allow_removing_last_standby
                    && !c.members.values().any(|o| {
                        o.name != m.name && declared(o) && in_sync(o) && joined(c, &o.name)
                    })
                {
                    found.push(format!(
                        "{}/{}: retired, the last in-sync standby, without allowRemovingLastStandby",
                        c.name, m.name
                    ));
                }
            }
            OpKind::Promote => {
                if !joined(c, &m.name) {
                    found.push(format!(
                        "{}/{}: promoted before it joined the cluster",
                        c.name, m.name
                    ));
                }
                for o in c.members.values() {
                    // Members of the group: joined (or leaving, not yet retired).
                    let member = part_of(c, &o.name) && joined(c, &o.name);
                    if o.name != m.name
                        && member
                        && !o.retired
                        && !o.peers.is_empty()
                        && !o.accepts(m)
                    {
                        found.push(format!(
                            "{}/{}: promoted while {} does not accept its identity",
                            c.name, m.name, o.name
                        ));
                    }
                }
            }
            OpKind::SyncConfig => {
                let src = req.source.as_deref();
                let serving = c.members.values().any(|o| {
                    Some(o.endpoint.as_str()) == src && o.role == MemberRole::Active && o.serving
                });
                if !serving {
                    found.push(format!(
                        "{}/{}: configuration copied from {} which is not the serving active",
                        c.name,
                        m.name,
                        src.unwrap_or("nowhere")
                    ));
                }
            }
            _ => {}
        }
        for f in found {
            self.violation(f);
        }
    }

    /// Add a member to a cluster's spec, with a fresh agent running `version`: a standby that
    /// replicates from nobody, unconfigured, accepting no peer list.
    pub fn add_member(&mut self, cluster: &str, member: MemberSpec, version: &str) {
        let Some(c) = self.clusters.iter_mut().find(|c| c.name == cluster) else {
            return;
        };
        if c.spec.members.iter().any(|m| m.name == member.name) {
            return;
        }
        let role = if member.spare {
            MemberRole::Spare
        } else {
            MemberRole::Standby
        };
        let ep = endpoint(cluster, &member.name);
        // On a layered stack the components carry the versions; the base version is the
        // stack's, as the other members report it.
        let base = match c.members.values().next() {
            Some(o) if !c.spec.components.is_empty() => o.version.clone(),
            _ => version.to_string(),
        };
        let mut sm = SimMember::new(&member.name, &ep, &base, role);
        for comp in &c.spec.components {
            if member.components.is_empty() || member.components.contains(&comp.name) {
                let v = comp.version.clone().unwrap_or_else(|| version.to_string());
                sm.components.insert(comp.name.clone(), v);
            }
        }
        sm.config = 0;
        sm.joined = false;
        c.members.insert(member.name.clone(), sm);
        c.spec.members.push(member);
        c.next_look = self.now;
        self.edited = true;
        // The mesh reads the spec too: plan it again.
        self.mesh_quiet = None;
        self.mesh_due = self.mesh.is_some();
    }

    /// Remove a member from a cluster's spec (its agent keeps running).
    pub fn remove_member(&mut self, cluster: &str, member: &str) {
        if let Some(c) = self.clusters.iter_mut().find(|c| c.name == cluster) {
            c.spec.members.retain(|m| m.name != member);
            c.next_look = self.now;
        }
        self.edited = true;
        self.mesh_quiet = None;
        self.mesh_due = self.mesh.is_some();
    }

    /// Tier order when `kind` would start on cluster `ci` (runs with membership edits): no
    /// version move starts while a cluster of an earlier tier (later, in a backout) has a
    /// member off its target.
    fn tier_order_at_start(&mut self, ci: usize, member: &str, kind: OpKind) {
        let Some(mesh) = &self.mesh else {
            return;
        };
        let tier = |name: &str| {
            mesh.spec
                .tiers
                .iter()
                .rposition(|t| t.clusters.iter().any(|c| c == name))
        };
        let Some(t) = tier(&self.clusters[ci].name) else {
            return;
        };
        let backout = mesh
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .is_some_and(|r| r.direction == Direction::Backout);
        let mut found = None;
        for c in &self.clusters {
            let Some(u) = tier(&c.name) else { continue };
            let earlier = if backout { u > t } else { u < t };
            if !earlier {
                continue;
            }
            let target = c.spec.version.as_deref().unwrap_or(&mesh.spec.version);
            if let Some(m) = off_target(c, target) {
                found = Some(format!(
                    "{}/{member}: {kind:?} starts while {}/{} runs {} in an earlier tier",
                    self.clusters[ci].name, c.name, m.name, m.version
                ));
                break;
            }
        }
        if let Some(f) = found {
            self.violation(f);
        }
    }

    /// What `member`'s preparation checks report now.
    fn prepare_findings(&self, ci: usize, member: &str) -> Vec<crate::plan::observe::FindingView> {
        self.clusters[ci]
            .members
            .get(member)
            .map(|m| m.prepare.clone())
            .unwrap_or_default()
    }

    /// Preparation checks (`upgrade.prepare`), checked when an upgrade starts, from what the
    /// agents ran rather than what the status says: every member of the cluster that does not
    /// run the cluster's target yet ran the checks for it, the last run on each found nothing
    /// blocking, and warnings found by those runs were acknowledged (an acknowledgement of the
    /// cluster's checks for the target among its approvals) unless `warnings: Record`.
    fn prepare_checks(&mut self, ci: usize, member: &str, req: &OpRequest) {
        let c = &self.clusters[ci];
        let Some(policy) = c.spec.upgrade.prepare.as_ref() else {
            return;
        };
        let target = c.status.as_ref().and_then(|s| s.target_version.clone());
        let (OpKind::Upgrade, Some(v)) = (req.kind, target) else {
            return;
        };
        let mut found = vec![];
        let mut warned = false;
        for d in &c.spec.members {
            let Some(m) = c.members.get(&d.name) else {
                continue;
            };
            if same_version(&m.version, &v) {
                continue;
            }
            let last = m
                .ops
                .values()
                .filter(|o| {
                    o.req.kind == OpKind::Prepare
                        && o.state == OpState::Succeeded
                        && o.req.version.as_deref() == Some(v.as_str())
                })
                .max_by_key(|o| o.started);
            match last {
                None => found.push(format!(
                    "{}/{member}: upgrade to {v} started before {} ran its preparation checks",
                    c.name, m.name
                )),
                Some(o) => {
                    if o.findings
                        .iter()
                        .any(|f| f.severity == FindingSeverity::Blocking)
                    {
                        found.push(format!(
                            "{}/{member}: upgrade to {v} started while the preparation checks \
                             of {} found a blocking problem",
                            c.name, m.name
                        ));
                    }
                    warned |= o
                        .findings
                        .iter()
                        .any(|f| f.severity == FindingSeverity::Warning);
                }
            }
        }
        let ack = format!("prepare/{}@{v}#", c.name);
        if warned
            && policy.warnings == crate::api::PrepareWarnings::Acknowledge
            && !c.intents.approve.iter().any(|a| a.starts_with(&ack))
        {
            found.push(format!(
                "{}/{member}: upgrade to {v} started with preparation warnings nobody acknowledged",
                c.name
            ));
        }
        for f in found {
            self.violation(f);
        }
    }

    /// The human of [`SimConfig::answer_preparation`]: notices a finished preparation that
    /// holds the cluster (blocking findings stalled it, or warnings wait), and answers a while
    /// later: fixes the blocking causes on every member and retries, or acknowledges.
    fn answer_preparations(&mut self) {
        if !self.cfg.answer_preparation {
            return;
        }
        let now = self.now;
        for ci in 0..self.clusters.len() {
            let c = &self.clusters[ci];
            let need = c.status.as_ref().and_then(|s| {
                let p = s
                    .preparation
                    .as_ref()
                    .filter(|p| s.target_version.as_deref() == Some(p.version.as_str()))?;
                let d = p.digest.as_ref()?;
                let blocking = p
                    .findings
                    .iter()
                    .any(|f| f.severity == FindingSeverity::Blocking);
                let stalled = s.phase == ClusterPhase::Stalled
                    && s.conditions.iter().any(|x| {
                        x.type_ == "Stalled"
                            && x.status == "True"
                            && x.reason == "PreparationFailed"
                    });
                if blocking {
                    stalled.then_some(None)
                } else if !p.acknowledged {
                    Some(Some(crate::plan::cluster::preparation_acknowledgement(
                        &c.name, &p.version, d,
                    )))
                } else {
                    None
                }
            });
            let Some(need) = need else {
                self.clusters[ci].human_at = None;
                continue;
            };
            let Some(at) = self.clusters[ci].human_at else {
                let delay = Duration::from_secs(self.rng.below(1800));
                self.clusters[ci].human_at = Some(now.plus(delay));
                continue;
            };
            if now < at {
                continue;
            }
            let c = &mut self.clusters[ci];
            c.human_at = None;
            c.next_look = now;
            match need {
                Some(name) => {
                    if !c.intents.approve.contains(&name) {
                        c.intents.approve.push(name);
                    }
                    self.stats.preparations_acknowledged += 1;
                }
                None => {
                    for m in c.members.values_mut() {
                        m.prepare
                            .retain(|f| f.severity != FindingSeverity::Blocking);
                    }
                    c.intents.retry = Some(format!("prepare-fixed-{}", now.0));
                    self.stats.preparations_fixed += 1;
                }
            }
        }
    }

    /// Media staging (`upgrade.media`), checked when an operation starts: an upgrade starts
    /// only on a member that holds the media of its version, and no site of the cluster has
    /// more stagings running than `maxParallelPerSite` (this one counted).
    fn media_checks(&mut self, ci: usize, member: &str, req: &OpRequest) {
        let c = &self.clusters[ci];
        let Some(policy) = c.spec.upgrade.media.as_ref() else {
            return;
        };
        let Some(m) = c.members.get(member) else {
            return;
        };
        let mut found = vec![];
        match req.kind {
            OpKind::Upgrade => {
                let v = req.version.clone().unwrap_or_default();
                if !m.media.iter().any(|x| same_version(x, &v)) {
                    found.push(format!(
                        "{}/{member}: upgrade to {v} started without its media staged (holds {:?})",
                        c.name, m.media
                    ));
                }
            }
            OpKind::StageMedia => {
                let site = |name: &str| {
                    c.spec
                        .members
                        .iter()
                        .find(|d| d.name == name)
                        .and_then(|d| d.site.clone())
                };
                let mine = site(member);
                let running = c
                    .members
                    .values()
                    .filter(|o| o.name != member && site(&o.name) == mine)
                    .filter(|o| o.running_kind() == Some(OpKind::StageMedia))
                    .count() as u32;
                if running + 1 > policy.max_parallel_per_site {
                    found.push(format!(
                        "{}/{member}: staging {} at once at site {mine:?} (at most {})",
                        c.name,
                        running + 1,
                        policy.max_parallel_per_site
                    ));
                }
            }
            _ => {}
        }
        for v in found {
            self.violation(v);
        }
    }

    /// The health baseline (`upgrade.health`), checked when an operation starts: an upgrade
    /// (not an automatic rollback's) starts only once the status holds the baseline of the
    /// rollout to its cluster's target.
    fn health_checks(&mut self, ci: usize, member: &str, req: &OpRequest) {
        let c = &self.clusters[ci];
        if c.spec.upgrade.health.is_none() || req.kind != OpKind::Upgrade {
            return;
        }
        let Some(st) = c.status.as_ref() else {
            return;
        };
        let target = st.target_version.as_deref().unwrap_or_default();
        // An upgrade recorded for the last target and sent after the target changed (an
        // operator crash between the status write and the send) belongs to the last target's
        // rollout, and to its baseline.
        let baseline = st.health.as_ref().is_some_and(|h| {
            h.before.is_some()
                && (h.version == target || req.version.as_deref() == Some(h.version.as_str()))
        });
        if !baseline {
            let v = format!(
                "{}/{member}: upgrade started with no health baseline for {target}",
                c.name
            );
            self.violation(v);
        }
    }

    /// Once settled: a cluster with `upgrade.health` whose serving member accepts half the
    /// writes since its upgrade (a slow version) is not Ready, unless a retry accepted it.
    pub fn health_problems(&self) -> Vec<String> {
        let mut out = vec![];
        for c in &self.clusters {
            let Some(policy) = c.spec.upgrade.health.as_ref() else {
                continue;
            };
            let Some(st) = c.status.as_ref() else {
                continue;
            };
            let target = st.target_version.as_deref().unwrap_or_default();
            let Some(h) = st.health.as_ref().filter(|h| h.version == target) else {
                continue;
            };
            let slow = c.members.values().any(|m| m.serving && m.slow);
            let was_fast = h
                .before
                .as_ref()
                .and_then(|b| b.kpis.get("writeRate"))
                .is_some_and(|&r| r >= 100.0);
            let watches_rate = policy
                .kpis
                .iter()
                .any(|k| k.name == "writeRate" && k.tolerance_percent < 50);
            if st.phase == ClusterPhase::Ready && slow && was_fast && watches_rate && !h.accepted {
                out.push(format!(
                    "{}: Ready with its write rate halved since the upgrade ({:?})",
                    c.name, h
                ));
            }
        }
        out
    }

    /// Once settled: every Ready cluster that stages media with cleanup holds no media but that
    /// of the versions its members run.
    pub fn media_problems(&self) -> Vec<String> {
        let mut out = vec![];
        for c in &self.clusters {
            let Some(policy) = c.spec.upgrade.media.as_ref() else {
                continue;
            };
            let ready = c
                .status
                .as_ref()
                .is_some_and(|s| s.phase == ClusterPhase::Ready);
            if !policy.cleanup || !ready {
                continue;
            }
            for m in c.members.values().filter(|m| m.joined && !m.retired) {
                let old: Vec<&String> = m
                    .media
                    .iter()
                    .filter(|v| {
                        !same_version(v, &m.version) && !m.components.values().any(|x| x == *v)
                    })
                    .collect();
                if !old.is_empty() {
                    out.push(format!(
                        "{}/{}: Ready while holding old media {old:?}",
                        c.name, m.name
                    ));
                }
            }
        }
        out
    }

    /// The once-per-mesh task invariants, at the moment an operation would start:
    /// * a task runs at most once per rollout: no attempt starts once one succeeded;
    /// * a task starts only once every cluster of its `after` tier runs the target;
    /// * no upgrade or rollback starts in a tier after a task's tier (in the rollout's order)
    ///   before the task succeeded in this rollout (a step recorded before the rollout began
    ///   finishes: it did not start in it).
    fn task_checks(&mut self, ci: usize, member: &str, req: &OpRequest) {
        let Some(mesh) = &self.mesh else {
            return;
        };
        if mesh.spec.tasks.is_empty() {
            return;
        }
        let Some(rollout) = mesh.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
            return;
        };
        let cname = &self.clusters[ci].name;
        let tier_of = |name: &str| {
            mesh.spec
                .tiers
                .iter()
                .rposition(|t| t.clusters.iter().any(|c| c == name))
        };
        let n = mesh.spec.tiers.len();
        let pos = |ti: usize| match rollout.direction {
            Direction::Upgrade => ti,
            Direction::Backout => n.saturating_sub(ti + 1),
        };
        let mut found = Vec::new();
        if req.kind == OpKind::Task {
            let prefix = task_prefix(&req.id);
            let name = prefix
                .strip_prefix(mesh.name.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.rsplit_once(".r"))
                .map(|(name, _)| name);
            let Some(t) = mesh
                .spec
                .tasks
                .iter()
                .find(|t| Some(t.name.as_str()) == name)
            else {
                let v = format!("{cname}/{member}: task {} is no task of the mesh", req.id);
                self.violation(v);
                return;
            };
            let done = self.task_successes(prefix);
            if done > 0 {
                found.push(format!(
                    "{cname}/{member}: task {} attempt {} starts after it succeeded {done} time(s)",
                    t.name, req.id
                ));
            }
            let target = &mesh.spec.version;
            if let Some(ti) = mesh.spec.tiers.iter().position(|x| x.name == t.after) {
                for c in self
                    .clusters
                    .iter()
                    .filter(|c| tier_of(&c.name) == Some(ti))
                {
                    let want = c.spec.version.as_deref().unwrap_or(target);
                    if let Some(m) = off_target(c, want) {
                        found.push(format!(
                            "{cname}/{member}: task {} starts while {}/{} of tier {} runs {}",
                            t.name, c.name, m.name, t.after, m.version
                        ));
                        break;
                    }
                }
            }
        } else if matches!(req.kind, OpKind::Upgrade | OpKind::Rollback)
            && !rollout.reconcile
            && let Some(t) = tier_of(cname)
        {
            for task in mesh
                .spec
                .tasks
                .iter()
                .filter(|x| x.on.runs_on(rollout.direction))
            {
                let Some(after) = mesh.spec.tiers.iter().position(|x| x.name == task.after) else {
                    continue;
                };
                if pos(after) >= pos(t) {
                    continue;
                }
                let id = crate::plan::task_id(&mesh.name, &task.name, rollout.log_id);
                // A cluster admitted before the task was due is part-way (a reversal keeps it
                // admitted): it finishes, as a backout is not held back. Only an admission
                // made while the task is owed breaks the rule.
                let st = mesh.status.as_ref();
                let asked = st
                    .and_then(|s| s.tasks.iter().find(|x| x.id == id))
                    .and_then(|x| x.started_at);
                let kept = st
                    .and_then(|s| s.admitted.iter().find(|a| &a.cluster == cname))
                    .is_some_and(|a| asked.is_none_or(|t| a.since < t));
                // The operation of a step the cluster recorded before this rollout began (under
                // the last rollout's admission; the operator may have crashed before sending
                // it) is no start in this rollout: steps in flight always finish, and the task
                // holds admissions, not them. A reversal that drops the cluster's admission
                // (its tier is not the backout's first) lets that step finish too.
                let earlier = self.clusters[ci].status.as_ref().is_some_and(|s| {
                    s.steps
                        .iter()
                        .any(|x| x.id == req.id && x.started_at < rollout.started_at)
                });
                if !kept && !earlier && self.task_successes(&id) == 0 {
                    found.push(format!(
                        "{cname}/{member}: {:?} in tier {} starts before task {} (after tier {}) succeeded",
                        req.kind, mesh.spec.tiers[t].name, task.name, task.after
                    ));
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// Successful runs of the mesh task whose id (without the attempt) is `id`, on any member.
    pub fn task_successes(&self, id: &str) -> usize {
        self.clusters
            .iter()
            .flat_map(|c| c.members.values())
            .flat_map(|m| m.ops.values())
            .filter(|op| {
                op.req.kind == OpKind::Task
                    && op.state == OpState::Succeeded
                    && task_prefix(&op.req.id) == id
            })
            .count()
    }

    /// Once settled with the mesh Ready: every task its last rollout owes ran exactly once.
    pub fn task_problems(&self) -> Vec<String> {
        let mut out = vec![];
        let Some(mesh) = &self.mesh else {
            return out;
        };
        let Some(st) = &mesh.status else {
            return out;
        };
        let Some(r) = &st.rollout else {
            return out;
        };
        if st.phase != MeshPhase::Ready || r.reconcile {
            return out;
        }
        for t in mesh.spec.tasks.iter().filter(|t| t.on.runs_on(r.direction)) {
            let id = crate::plan::task_id(&mesh.name, &t.name, r.log_id);
            let n = self.task_successes(&id);
            if n != 1 {
                out.push(format!(
                    "mesh Ready with task {} run {n} times in its rollout",
                    t.name
                ));
            }
        }
        out
    }

    /// Advance virtual time by `dt`: writes, replication, operation completions, faults.
    pub fn tick(&mut self, dt: Duration) {
        self.tick_inner(dt);
        self.check_invariants();
    }

    /// `tick` without the invariant check; true when a member changed in a way the invariants
    /// read (an operation finished, a crash, a recovery; not replication progress).
    fn tick_inner(&mut self, dt: Duration) -> bool {
        let mut changed = false;
        self.now = self.now.plus(dt);
        let now = self.now;
        let secs = dt.as_secs_f64();
        let faulty = self.faulty();
        let minutes = secs / 60.0;
        let Sim {
            cfg,
            rng,
            clusters,
            stats,
            ..
        } = self;
        let write = (cfg.write_rate as f64 * secs).round() as u64;
        let rate = (cfg.replication_rate as f64 * secs).round() as u64;
        // (applied index, up) of each member before replication, in member order.
        let mut snapshot: Vec<(u64, bool)> = Vec::new();
        // Index of the member each member replicates from, and whether the link between them
        // completes a TLS handshake both ways (a follower replicates only over one that does).
        let mut source_of: Vec<Option<(usize, bool)>> = Vec::new();
        for c in clusters.iter_mut() {
            let mut touched = false;
            // Writes on the serving active.
            for m in c.members.values_mut() {
                if m.role == MemberRole::Active && m.serving && m.up(now) {
                    m.applied += write;
                    c.acked = c.acked.max(m.applied);
                }
            }
            // Replication never moves a member backwards; sources are read as they were
            // before this tick's replication.
            snapshot.clear();
            snapshot.extend(c.members.values().map(|m| (m.applied, m.up(now))));
            source_of.clear();
            source_of.extend(c.members.values().map(|m| {
                let s = m.source.as_deref()?;
                let (i, src) = c
                    .members
                    .values()
                    .enumerate()
                    .find(|(_, o)| o.endpoint == s)?;
                // Both ends must accept each other as peers too (once they enforce a list).
                Some((i, m.handshake_with(src) && m.accepts(src) && src.accepts(m)))
            }));
            for (m, src) in c.members.values_mut().zip(&source_of) {
                if m.role != MemberRole::Active
                    && m.up(now)
                    && let Some((i, true)) = *src
                    && let Some(&(src, src_up)) = snapshot.get(i)
                    && src_up
                    && src > m.applied
                {
                    m.applied = src.min(m.applied + rate);
                }
            }
            // A finishing `sync-config` copies its source's configuration (the agent fetches it
            // from the source's data port).
            let copied: Vec<(String, Option<u64>)> = c
                .members
                .values()
                .filter(|m| {
                    m.running_kind() == Some(OpKind::SyncConfig)
                        && m.running_until().is_some_and(|t| t <= now)
                        && m.up(now)
                })
                .map(|m| {
                    let from = m
                        .current
                        .as_ref()
                        .and_then(|id| m.ops.get(id))
                        .and_then(|o| {
                            let src = o.req.source.as_deref()?;
                            c.members.values().find(|x| x.endpoint == src && x.up(now))
                        });
                    (m.name.clone(), from.map(|x| x.config))
                })
                .collect();
            for (name, config) in copied {
                if let (Some(m), Some(config)) = (c.members.get_mut(&name), config) {
                    m.config = config;
                }
            }
            // Operation completions.
            let drained = (cfg.backlog_drain_rate as f64 * secs).round() as u64;
            for m in c.members.values_mut() {
                changed |= m.recover(now);
                if m.backlog > 0 && m.reachable(now) {
                    m.backlog = m.backlog.saturating_sub(drained);
                }
                if m.running_until().is_some_and(|t| t <= now)
                    && m.up(now)
                    && let Some(id) = m.current.clone()
                {
                    m.finish(
                        &id,
                        &cfg.broken.no_traffic_after_promote_on,
                        &cfg.broken.slow_on,
                    );
                    touched = true;
                    if cfg.upgrade_backlog > 0
                        && m.ops.get(&id).is_some_and(|o| {
                            o.req.kind == OpKind::Upgrade && o.state == OpState::Succeeded
                        })
                    {
                        m.backlog += 1 + rng.below(cfg.upgrade_backlog);
                    }
                }
            }
            if faulty {
                for m in c.members.values_mut() {
                    if rng.chance(cfg.crash_rate * minutes) {
                        let d = Duration::from_secs(10 + rng.below(120));
                        m.crash(now.plus(d));
                        stats.member_crashes += 1;
                        touched = true;
                    }
                    if rng.chance(cfg.cut_rate * minutes) {
                        let d = Duration::from_secs(5 + rng.below(90));
                        m.downtime.cut_until = Some(now.plus(d));
                        touched = true;
                    }
                }
            }
            if touched {
                // Event-driven: a finished operation wakes its cluster at once.
                c.next_look = c.next_look.min(now);
                changed = true;
            }
        }
        changed
    }

    /// The next instant something can happen, for event-driven time jumps.
    pub fn next_event(&self) -> Timestamp {
        let mut t = self.now.plus(Duration::from_secs(60));
        for c in &self.clusters {
            t = t.min(c.next_look);
            if let Some(h) = c.human_at {
                t = t.min(h);
            }
            for m in c.members.values() {
                if let Some(end) = m.running_until() {
                    t = t.min(end);
                }
                if let Some(d) = m.downtime.down_until {
                    t = t.min(d);
                }
                if let Some(d) = m.downtime.cut_until
                    && d > self.now
                {
                    t = t.min(d);
                }
            }
        }
        if self.faulty() {
            t = t.min(self.now.plus(self.cfg.poll));
        }
        if self.mesh_due {
            t = self.now;
        }
        t.max(self.now.plus(Duration::from_millis(100)))
    }

    /// Run until everything settled (converged or stalled) after faults stopped, or until
    /// `limit` of virtual time passed.
    pub fn run(&mut self, limit: Duration) {
        // Whatever changed before this call (a spec, an intent) is seen at once, as a watch would.
        for c in &mut self.clusters {
            c.next_look = self.now;
        }
        let end = self.now.plus(limit);
        // The invariants are checked after every pass and every tick that changed what they
        // read; an instant whose state is the one already checked would give the same verdict.
        // Nothing outside runs between these steps, and whatever changed before this call is
        // checked first.
        let mut changed = true;
        self.mesh_quiet = None;
        while self.now < end {
            self.answer_preparations();
            changed |= self.pass_inner(true);
            if changed {
                self.check_invariants();
                changed = false;
            }
            if self.now >= self.cfg.faults_until && self.settled() {
                break;
            }
            let next = self.next_event().min(end);
            let dt = next.since(self.now);
            if self.tick_inner(dt) {
                self.check_invariants();
            }
        }
    }

    /// Nothing more will happen without a human: every cluster is Ready, or stopped in a
    /// terminal state, or waiting behind a mesh that is blocked by such clusters.
    pub fn settled(&self) -> bool {
        // A human is about to answer a preparation.
        if self.clusters.iter().any(|c| c.human_at.is_some()) {
            return false;
        }
        let ms = self.mesh.as_ref().and_then(|m| m.status.as_ref());
        let terminal = |c: &SimCluster| {
            c.status.as_ref().is_some_and(|s| {
                s.steps.is_empty()
                    && matches!(s.phase, ClusterPhase::Stalled | ClusterPhase::RolledBack)
            })
        };
        // A cluster status changed since the mesh was last planned: the mesh has not seen it
        // (a cluster that just stalled in the mesh's CA rotation makes the mesh Degraded).
        // Only with mesh-level certificates, so that the rollout scenarios run as before.
        if self.mesh_due
            && self
                .mesh
                .as_ref()
                .is_some_and(|m| m.spec.certificates.is_some())
        {
            return false;
        }
        let all_ready = self.clusters.iter().all(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.phase == ClusterPhase::Ready)
        });
        if all_ready && ms.is_some_and(|s| s.phase != MeshPhase::Ready) {
            return false; // the mesh has not seen the last cluster finish yet
        }
        // While the mesh's CA rotation waits (for clusters part-way in the rollout), a cluster
        // admitted for the rollout at rest waits for its rotation grant and does not move.
        let rotation_waits = ms
            .and_then(|s| s.certificates.as_ref())
            .is_some_and(|c| c.waiting.is_some());
        let held = |c: &SimCluster| {
            rotation_waits
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.steps.is_empty() && s.phase == ClusterPhase::Waiting)
        };
        let mesh_blocked = ms.is_some_and(|s| {
            matches!(s.phase, MeshPhase::Stalled | MeshPhase::Degraded)
                && s.admitted.iter().all(|a| {
                    self.cluster(&a.cluster)
                        .is_some_and(|c| terminal(c) || held(c))
                })
        });
        self.clusters.iter().all(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.steps.is_empty()
                    && match s.phase {
                        ClusterPhase::Ready | ClusterPhase::Stalled | ClusterPhase::RolledBack => {
                            true
                        }
                        ClusterPhase::Waiting | ClusterPhase::Pending
                            if self.awaits_human(&c.name) =>
                        {
                            true
                        }
                        ClusterPhase::Waiting | ClusterPhase::Pending => {
                            mesh_blocked
                                && !ms.is_some_and(|m| {
                                    (m.admitted.iter().any(|a| a.cluster == c.name) && !held(c))
                                        || m.certificates
                                            .as_ref()
                                            .is_some_and(|x| x.rotating.contains(&c.name))
                                })
                        }
                        _ => false,
                    }
            })
        })
    }

    /// A cluster of a deferred tier the mesh holds for what only a person gives: the tier's
    /// approval, or a window when none can ever open. Not admitted, so it does not move.
    fn awaits_human(&self, cluster: &str) -> bool {
        let Some(m) = self.mesh.as_ref() else {
            return false;
        };
        let Some(st) = m.status.as_ref() else {
            return false;
        };
        if st.admitted.iter().any(|a| a.cluster == cluster) {
            return false;
        }
        m.spec.tiers.iter().zip(&st.tiers).any(|(t, ts)| {
            t.clusters.iter().any(|c| c == cluster)
                && ts.deferred.as_ref().is_some_and(|d| match d.waiting_for {
                    Some(crate::api::DeferredWait::Approval) => true,
                    Some(crate::api::DeferredWait::Window) => d.next_window_at.is_none(),
                    _ => false,
                })
        })
    }

    /// While only deferred tiers are behind (the tiers before them done, none of theirs
    /// admitted or part-way, nothing stalled): the mesh reports the rollout done (Ready, its
    /// log entry Succeeded) and names the lag. Empty otherwise, or when that holds.
    pub fn deferred_problems(&self) -> Vec<String> {
        let mut out = vec![];
        let Some(m) = self.mesh.as_ref() else {
            return out;
        };
        let Some(st) = m.status.as_ref() else {
            return out;
        };
        let deferred = |c: &str| {
            m.spec
                .tiers
                .iter()
                .any(|t| t.deferred.is_some() && t.clusters.iter().any(|x| x == c))
        };
        let on_target = |c: &SimCluster| {
            c.status
                .as_ref()
                .is_some_and(|s| s.phase == ClusterPhase::Ready)
                && c.members
                    .values()
                    .all(|x| same_version(&x.version, &m.spec.version))
        };
        let core_done = self
            .clusters
            .iter()
            .all(|c| deferred(&c.name) || on_target(c));
        let lagging: Vec<&SimCluster> = self
            .clusters
            .iter()
            .filter(|c| deferred(&c.name) && !on_target(c))
            .collect();
        let still = lagging.iter().all(|c| {
            !st.admitted.iter().any(|a| a.cluster == c.name)
                && c.members.values().all(|x| x.current.is_none())
                && c.status
                    .as_ref()
                    .is_some_and(|s| matches!(s.phase, ClusterPhase::Waiting))
        });
        let upgrade = st
            .rollout
            .as_ref()
            .is_some_and(|r| r.direction == Direction::Upgrade && !r.reconcile);
        if !(upgrade && core_done && !lagging.is_empty() && still) {
            return out;
        }
        if st.phase != MeshPhase::Ready {
            out.push(format!(
                "only deferred tiers behind but the mesh is {:?}: {:?}",
                st.phase, st.message
            ));
        }
        if st.lagging.is_none() {
            out.push("deferred tiers behind but status.lagging is empty".into());
        }
        let entry = st
            .rollout
            .as_ref()
            .and_then(|r| st.log.iter().find(|e| e.id == r.log_id));
        // A log past its bound drops its oldest finished entries: a missing entry was
        // finished (and is not the point here); one still there must have succeeded.
        if entry.is_some_and(|e| e.result != crate::api::LogResult::Succeeded) {
            out.push(format!(
                "only deferred tiers behind but the rollout's log entry is {:?}",
                entry.map(|e| e.result)
            ));
        }
        out
    }

    /// Liveness verdict once settled: every cluster Ready, or stopped with a stated reason.
    /// After a run with membership edits: a cluster that ended Ready has every declared member
    /// joined and no record of one it no longer declares.
    pub fn topology_problems(&self) -> Vec<String> {
        let mut out = vec![];
        for c in &self.clusters {
            let Some(st) = c.status.as_ref() else {
                continue;
            };
            if st.phase != ClusterPhase::Ready {
                continue;
            }
            for m in &c.spec.members {
                match st.members.iter().find(|r| r.name == m.name) {
                    None => out.push(format!("{}: Ready without a record of {}", c.name, m.name)),
                    Some(r) if r.topology.is_some() => out.push(format!(
                        "{}: Ready while {} is {:?}",
                        c.name, m.name, r.topology
                    )),
                    _ => {}
                }
            }
            for r in &st.members {
                if !c.spec.members.iter().any(|m| m.name == r.name) {
                    out.push(format!(
                        "{}: Ready while {} is still recorded",
                        c.name, r.name
                    ));
                }
            }
        }
        out
    }

    pub fn liveness_problems(&self) -> Vec<String> {
        let mut out = vec![];
        for c in &self.clusters {
            match &c.status {
                None => out.push(format!("{}: never planned", c.name)),
                Some(s) => match s.phase {
                    ClusterPhase::Ready => {}
                    ClusterPhase::Stalled | ClusterPhase::RolledBack => {
                        if s.message.as_deref().unwrap_or("").is_empty() {
                            out.push(format!("{}: {:?} without a reason", c.name, s.phase));
                        }
                    }
                    ClusterPhase::Waiting if self.mesh.is_some() => {
                        let mesh_stuck = self
                            .mesh
                            .as_ref()
                            .and_then(|m| m.status.as_ref())
                            .is_some_and(|ms| {
                                matches!(ms.phase, MeshPhase::Stalled | MeshPhase::Degraded)
                                    && ms.message.is_some()
                            });
                        if !mesh_stuck {
                            out.push(format!(
                                "{}: waiting ({:?}) but the mesh is not blocked",
                                c.name, s.message
                            ));
                        }
                    }
                    p => out.push(format!(
                        "{}: did not settle, phase {p:?}: {:?}",
                        c.name, s.message
                    )),
                },
            }
        }
        out
    }

    fn check_invariants(&mut self) {
        let mut ranks = std::mem::take(&mut self.ranks);
        let found = loop {
            // A version met for the first time re-ranks them all: check again with the new
            // ranks (only the first instants of a run meet new versions).
            let known = ranks.len();
            let found = self.violations_now(&mut ranks);
            if ranks.len() == known {
                break found;
            }
        };
        self.ranks = ranks;
        for f in found {
            self.violation(f);
        }
    }

    /// Every safety invariant at this instant; versions compare by rank (`same_version` is
    /// equal rank) so that a check costs no version parsing.
    fn violations_now(&self, ranks: &mut VersionRanks) -> Vec<String> {
        let now = self.now;
        let mut found = vec![];
        // What the mesh checks need of each cluster, gathered in the same walk.
        let mut facts: Vec<ClusterFacts<'_>> = Vec::with_capacity(self.clusters.len());
        // A cluster without members runs the empty version, as the mesh would read it.
        let none = ("", ranks.rank(""));
        // Rank of each member's own version, for the mixed-version check.
        let mut own: Vec<u32> = Vec::new();
        for c in &self.clusters {
            let mut moving = 0u32;
            // Restarts take a member out of service too (not a version move: the mesh's
            // checks do not count them).
            let mut restarting = 0u32;
            let mut actives = 0usize;
            let mut active: Option<(&SimMember, u32)> = None;
            // Lowest and highest version as the mesh compares them: the first of equal lowest
            // and the last of equal highest, as a stable sort would order them.
            let mut lo: Option<(&str, u32)> = None;
            let mut hi: Option<(&str, u32)> = None;
            own.clear();
            for m in c.members.values() {
                // A retired member, or one removed and forgotten, is not the cluster's any more;
                // one not joined yet is not the cluster's yet.
                let outside = m.retired || !part_of(c, &m.name) || !joined(c, &m.name);
                match m.running_kind() {
                    _ if outside => {}
                    Some(OpKind::Upgrade | OpKind::Rollback) => moving += 1,
                    Some(OpKind::Restart) => restarting += 1,
                    _ => {}
                }
                let v = effective_version_str(&c.spec, &m.version, &m.components);
                let r = ranks.rank(v);
                let mine = if std::ptr::eq(v, m.version.as_str()) {
                    r
                } else {
                    ranks.rank(&m.version)
                };
                own.push(mine);
                if m.role == MemberRole::Active {
                    actives += 1;
                    active = Some((m, mine));
                }
                if outside {
                    continue;
                }
                if lo.is_none_or(|l| r < l.1) {
                    lo = Some((v, r));
                }
                if hi.is_none_or(|h| r >= h.1) {
                    hi = Some((v, r));
                }
            }
            // maxUnavailable.
            if moving + restarting > c.spec.upgrade.max_unavailable {
                found.push(format!(
                    "{}: {} members out of service ({moving} moving, {restarting} restarting) > \
                     maxUnavailable {}",
                    c.name,
                    moving + restarting,
                    c.spec.upgrade.max_unavailable
                ));
            }
            // Mixed version: everyone up and not on the active's software is forced standby.
            if actives > 1 {
                found.push(format!("{}: {actives} active members", c.name));
            }
            if let (1, Some((a, a_rank))) = (actives, active) {
                for (m, &mine) in c.members.values().zip(&own) {
                    // Not (or no longer) in the group: it follows nobody and cannot take over.
                    let outside = m.source.is_none() || m.retired;
                    if m.name == a.name || !m.up(now) || outside {
                        continue;
                    }
                    let differs = mine != a_rank
                        || m.components.iter().any(|(k, v)| {
                            a.components
                                .get(k)
                                .is_some_and(|w| ranks.rank(v) != ranks.rank(w))
                        });
                    if differs
                        && !matches!(m.role, MemberRole::ForcedStandby | MemberRole::OutOfService)
                    {
                        found.push(format!(
                            "{}/{}: runs {} beside active {} on {} but is {:?}, not ForcedStandby",
                            c.name, m.name, m.version, a.name, a.version, m.role
                        ));
                    }
                }
            }
            // Trust: every replication link between members that are up completes its TLS
            // handshake (nobody presents a certificate its peer does not trust).
            for m in c.members.values() {
                if let Some(s) = m.source.as_deref()
                    && m.up(now)
                    && let Some(src) = c.members.values().find(|o| o.endpoint == s)
                    && src.up(now)
                    && !m.handshake_with(src)
                    && !self.announced(&c.name, &m.name, &c.name, &src.name)
                {
                    found.push(format!(
                        "{}/{}: TLS handshake with its source {} fails (presents CA {}, trusts \
                         {:#b}; the source presents CA {}, trusts {:#b})",
                        c.name, m.name, src.name, m.presents, m.trust.0, src.presents, src.trust.0
                    ));
                }
            }
            rotation_violations(c, &mut found);
            if self.mesh.is_none() {
                self.trust_domain_violations(std::slice::from_ref(c), &mut found);
            }
            let ((lo, lo_rank), (hi, hi_rank)) = (lo.unwrap_or(none), hi.unwrap_or(none));
            facts.push(ClusterFacts {
                lo,
                hi,
                lo_rank,
                hi_rank,
                busy: moving > 0,
            });
        }
        if let Some(mesh) = &self.mesh {
            self.trust_domain_violations(&self.clusters, &mut found);
            found.extend(self.mesh_violations(&mesh.spec, &facts, ranks));
        }
        found
    }

    /// The invariants of a CA rotation across one trust domain: every cluster of the mesh (its
    /// members talk to each other across clusters), or a standalone cluster alone:
    /// * every certificate a member presents is of a CA every member of the domain trusts:
    ///   nobody presents a new CA's certificate before all trust it, and no CA leaves a trust
    ///   store while anyone presents its certificates (crashed or cut members count: their
    ///   stores persist);
    /// * at most `maxJobsPerSite` rotation operations run at once on the members of one site
    ///   (sites are shared by name across the clusters of a mesh; members without a site are
    ///   their cluster's own);
    /// * in a mesh, no rotation step of a change of CA is in flight on one cluster while an
    ///   upgrade step is on another (renewals, same-CA re-issues, are not held to this).
    fn trust_domain_violations(&self, domain: &[SimCluster], found: &mut Vec<String>) {
        let Some(first) = domain.first() else {
            return;
        };
        let target = self.ca_target(first);
        // CAs presented by anyone, and CAs trusted by everyone.
        let mut presented = CaSet::default();
        let mut trusted = CaSet(u64::MAX);
        for c in domain {
            for m in c.members.values() {
                presented = presented.with(m.presents);
                trusted.0 &= m.trust.0;
            }
        }
        for n in CaSet(presented.0 & !trusted.0).iter() {
            let all = || {
                domain
                    .iter()
                    .flat_map(|c| c.members.values().map(move |m| (c, m)))
            };
            // The first pair that a forced phase did not announce.
            let pair = all()
                .filter(|(_, m)| m.presents == n)
                .flat_map(|p| all().filter(|(_, m)| !m.trust.has(n)).map(move |t| (p, t)))
                .find(|((pc, p), (tc, t))| !self.announced(&pc.name, &p.name, &tc.name, &t.name));
            let Some(((pc, p), (tc, t))) = pair else {
                continue;
            };
            let trusts: Vec<u8> = t.trust.iter().collect();
            if Some(n) == target {
                found.push(format!(
                    "{}/{}: presents a certificate of the new CA {n} before every member \
                     trusts it ({}/{} trusts only CAs {trusts:?})",
                    pc.name, p.name, tc.name, t.name
                ));
            } else {
                found.push(format!(
                    "{}/{}: CA {n} left its trust store (it trusts CAs {trusts:?}) while {}/{} \
                     still presents a certificate of it",
                    tc.name, t.name, pc.name, p.name
                ));
            }
        }
        // Rotation operations per site.
        let rotating = domain.iter().any(|c| {
            c.members
                .values()
                .any(|m| m.running_kind().is_some_and(is_rotation_op))
        });
        if rotating {
            let per_site = self
                .certificates_of(first)
                .map_or(1, |x| x.max_jobs_per_site.max(1));
            let mut sites: BTreeMap<(&str, &str), u32> = BTreeMap::new();
            for c in domain {
                for s in &c.spec.members {
                    if let Some(m) = c.members.get(&s.name)
                        && m.running_kind().is_some_and(is_rotation_op)
                    {
                        let key = match s.site.as_deref() {
                            Some(site) if !site.is_empty() => (site, ""),
                            _ => ("", c.name.as_str()),
                        };
                        *sites.entry(key).or_default() += 1;
                    }
                }
            }
            for ((site, own), n) in sites {
                if n > per_site {
                    let site = if own.is_empty() {
                        format!("site {site:?}")
                    } else {
                        format!("the members of {own} without a site")
                    };
                    found.push(format!(
                        "{n} rotation operations run at once in {site} > maxJobsPerSite {per_site}"
                    ));
                }
            }
        }
        // Across the clusters of a mesh: no step of a change of CA beside an upgrade step.
        if domain.len() > 1 {
            let mut rot: Option<(&SimCluster, &crate::api::StepRecord)> = None;
            let mut ups: Vec<(&SimCluster, &crate::api::StepRecord)> = Vec::new();
            for c in domain {
                let Some(st) = &c.status else { continue };
                if rot.is_none() {
                    rot = st
                        .steps
                        .iter()
                        .find(|s| s.is_rotation() && !is_renewal(c, s))
                        .map(|s| (c, s));
                }
                if ups.len() < 2
                    && let Some(u) = st.steps.iter().find(|s| !s.is_rotation())
                {
                    ups.push((c, u));
                }
            }
            if let Some((rc, r)) = rot
                && let Some((uc, u)) = ups.into_iter().find(|(c, _)| c.name != rc.name)
            {
                found.push(format!(
                    "{}: rotation step {:?} on {} in flight while {} has upgrade step {:?} on {} \
                     in flight",
                    rc.name, r.action, r.member, uc.name, u.action, u.member
                ));
            }
        }
    }

    fn mesh_violations(
        &self,
        spec: &MeshSpec,
        facts: &[ClusterFacts<'_>],
        ranks: &mut VersionRanks,
    ) -> Vec<String> {
        let mut out = vec![];
        // Tier of each cluster by its place in a tier's list (a later listing wins).
        let mut tier_of: FastMap<&str, usize> = FastMap::default();
        for (i, t) in spec.tiers.iter().enumerate() {
            for c in &t.clusters {
                tier_of.insert(c.as_str(), i);
            }
        }
        let tiers: Vec<Option<usize>> = self
            .clusters
            .iter()
            .map(|c| tier_of.get(c.name.as_str()).copied())
            .collect();
        let dir = self
            .mesh
            .as_ref()
            .and_then(|m| m.status.as_ref())
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.direction);
        // Tier order: a cluster moves only when every earlier tier (reverse for backout) is done.
        // Per tier, the first cluster not on its target.
        let mut unfinished: Vec<Option<usize>> = vec![None; spec.tiers.len()];
        for (ci, (c, f)) in self.clusters.iter().zip(facts).enumerate() {
            let Some(t) = tiers[ci] else { continue };
            let target = ranks.rank(c.spec.version.as_deref().unwrap_or(&spec.version));
            if !(f.lo_rank == target && f.hi_rank == target) {
                unfinished[t].get_or_insert(ci);
            }
        }
        for (ci, (c, f)) in self.clusters.iter().zip(facts).enumerate() {
            // With membership edits, judged when an operation starts (`tier_order_at_start`).
            let (Some(t), true, false) = (tiers[ci], f.busy, self.edited) else {
                continue;
            };
            let blocking = match dir {
                Some(Direction::Backout) => unfinished
                    .get(t + 1..)
                    .unwrap_or(&[])
                    .iter()
                    .flatten()
                    .next(),
                _ => unfinished[..t].iter().flatten().next(),
            };
            if let Some(&b) = blocking {
                let (bc, bf) = (&self.clusters[b], &facts[b]);
                out.push(format!(
                    "{} moves while {} runs {}..{} in an earlier tier",
                    c.name, bc.name, bf.lo, bf.hi
                ));
            }
        }
        // maxParallel: clusters of a tier in motion (operation running or mixed) at once.
        for (i, tier) in spec.tiers.iter().enumerate() {
            let n = facts
                .iter()
                .zip(&tiers)
                .filter(|(f, t)| **t == Some(i) && (f.busy || f.lo_rank != f.hi_rank))
                .count();
            if n as u32 > tier.max_parallel {
                out.push(format!(
                    "tier {}: {n} clusters moving > maxParallel {}",
                    tier.name, tier.max_parallel
                ));
            }
        }
        // Compatibility rules hold at every instant: the newest `role` cluster (the last of
        // equals) is not newer than the oldest `notNewerThan` one (the first of equals).
        for r in &spec.compatibility {
            let mut newest: Option<(&str, u32)> = None;
            let mut oldest: Option<(&str, u32)> = None;
            for (c, f) in self.clusters.iter().zip(facts) {
                let role = c.spec.role.as_deref();
                if role == Some(r.role.as_str()) && newest.is_none_or(|n| f.hi_rank >= n.1) {
                    newest = Some((f.hi, f.hi_rank));
                }
                if role == Some(r.not_newer_than.as_str()) && oldest.is_none_or(|o| f.lo_rank < o.1)
                {
                    oldest = Some((f.lo, f.lo_rank));
                }
            }
            if let (Some((n, nr)), Some((o, or))) = (newest, oldest)
                && nr > or
            {
                out.push(format!(
                    "{} clusters run {n}, newer than {} clusters on {o}",
                    r.role, r.not_newer_than
                ));
            }
        }
        out
    }
}

/// A member of `c` that has joined, is not retired and does not run `target`, if any.
fn off_target<'c>(c: &'c SimCluster, target: &str) -> Option<&'c SimMember> {
    c.members.values().find(|m| {
        part_of(c, &m.name)
            && joined(c, &m.name)
            && !m.retired
            && !same_version(
                effective_version_str(&c.spec, &m.version, &m.components),
                target,
            )
    })
}

/// `member` is declared, or still has a record (leaving).
fn part_of(c: &SimCluster, member: &str) -> bool {
    c.spec.members.iter().any(|m| m.name == member)
        || c.status
            .as_ref()
            .is_some_and(|st| st.members.iter().any(|r| r.name == member))
}

/// `member` has joined the cluster: one of its first members, or one whose record has been a
/// plain member's (one removed before it joined never was).
fn joined(c: &SimCluster, member: &str) -> bool {
    c.members.get(member).is_some_and(|m| m.joined)
}

/// The invariants of a CA rotation on cluster `c` alone, at this instant (those across its
/// trust domain are [`Sim::trust_domain_violations`]):
/// * no rotation step is in flight beside an upgrade step, nor a rotation operation running
///   beside an upgrade operation;
/// * no restart runs on the active (only a lone member with `allowOutage` restarts in place).
fn rotation_violations(c: &SimCluster, found: &mut Vec<String>) {
    if let Some(st) = &c.status {
        let rot = st.steps.iter().find(|s| s.is_rotation());
        let up = st.steps.iter().find(|s| !s.is_rotation());
        if let (Some(r), Some(u)) = (rot, up) {
            found.push(format!(
                "{}: rotation step {:?} on {} in flight beside upgrade step {:?} on {}",
                c.name, r.action, r.member, u.action, u.member
            ));
        }
    }
    let rot_op = c.members.values().find_map(|m| {
        m.running_kind()
            .filter(|&k| is_rotation_op(k))
            .map(|k| (m, k))
    });
    if rot_op.is_none() {
        return;
    }
    let up_op = c.members.values().find_map(|m| {
        m.running_kind()
            .filter(|&k| is_upgrade_op(k))
            .map(|k| (m, k))
    });
    if let (Some((rm, rk)), Some((um, uk))) = (rot_op, up_op) {
        found.push(format!(
            "{}: rotation operation {} runs on {} beside upgrade operation {} on {}",
            c.name,
            rk.as_str(),
            rm.name,
            uk.as_str(),
            um.name
        ));
    }
    let in_place = c.members.len() <= 1 && c.spec.upgrade.allow_outage;
    for m in c.members.values() {
        if m.role == MemberRole::Active && m.running_kind() == Some(OpKind::Restart) && !in_place {
            found.push(format!(
                "{}/{}: restarts while it is the active",
                c.name, m.name
            ));
        }
    }
}

/// A rotation step that re-issues a certificate of the CA its member already presents (a
/// renewal), not a step of a change of CA: an `install-certificate`, `restart` or switchover
/// (whose member re-issued is the active it replaces) whose issuer the member presents now.
fn is_renewal(c: &SimCluster, s: &crate::api::StepRecord) -> bool {
    use crate::api::StepAction;
    let Some(issuer) = s.trust.as_ref().and_then(|t| ca_number(&t.issuer)) else {
        return false;
    };
    let member = match s.action {
        StepAction::InstallCertificate | StepAction::Restart => Some(s.member.as_str()),
        StepAction::Switchover => s.from.as_deref(),
        _ => None,
    };
    member
        .and_then(|m| c.members.get(m))
        .is_some_and(|m| m.presents == issuer)
}
/// What the invariant checks need of one cluster at one instant.
struct ClusterFacts<'a> {
    /// Lowest and highest version the members run, as the mesh compares them (components
    /// that follow the cluster version stand for the member).
    lo: &'a str,
    hi: &'a str,
    lo_rank: u32,
    hi_rank: u32,
    /// An upgrade or rollback runs on a member.
    busy: bool,
}

/// Distinct version strings the invariant checks met, ranked by `cmp_versions` (versions that
/// compare equal share a rank). A run meets a handful; the checks compare them at every instant.
#[derive(Default)]
struct VersionRanks {
    strs: Vec<String>,
    ranks: Vec<u32>,
    /// The index found last: neighbours mostly run the same version.
    last: usize,
}

impl VersionRanks {
    fn len(&self) -> usize {
        self.strs.len()
    }

    fn rank(&mut self, v: &str) -> u32 {
        if let Some(s) = self.strs.get(self.last)
            && same_str(s, v)
        {
            return self.ranks[self.last];
        }
        if let Some(i) = self.strs.iter().position(|s| same_str(s, v)) {
            self.last = i;
            return self.ranks[i];
        }
        self.strs.push(v.to_string());
        let mut order: Vec<usize> = (0..self.strs.len()).collect();
        order.sort_by(|&a, &b| cmp_versions(&self.strs[a], &self.strs[b]));
        self.ranks = vec![0; self.strs.len()];
        let mut r = 0;
        for (i, &k) in order.iter().enumerate() {
            if i > 0 && !cmp_versions(&self.strs[order[i - 1]], &self.strs[k]).is_eq() {
                r += 1;
            }
            self.ranks[k] = r;
        }
        self.ranks[self.strs.len() - 1]
    }
}

/// What the mesh planner reads of a cluster status, written out exactly (equal bytes, equal
/// fields): phase, target version, whether steps are in flight (and rotation steps), each
/// member's version, backlog and conflicts, and the rotation's target, phase and sites.
fn mesh_key(st: Option<&ClusterStatus>, out: &mut Vec<u8>) {
    fn text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.clear();
    let Some(st) = st else {
        return;
    };
    out.push(1);
    out.push(st.phase as u8);
    text(out, st.target_version.as_deref());
    out.push(st.steps.is_empty() as u8);
    out.extend_from_slice(&(st.members.len() as u64).to_le_bytes());
    for m in &st.members {
        text(out, m.version.as_deref());
        out.extend_from_slice(&m.backlog.to_le_bytes());
        out.extend_from_slice(&m.conflicts.to_le_bytes());
        out.push(m.topology.is_some() as u8);
    }
    // The versions the mesh reads (joining members are not counted in them).
    text(out, st.running_versions.as_deref());
    out.push(st.steps.iter().any(crate::api::StepRecord::is_rotation) as u8);
    // In motion: steps other than a membership change's (what the mesh counts).
    out.push(
        st.steps
            .iter()
            .any(|s| !crate::plan::cluster::membership_step(st, s)) as u8,
    );
    out.push(
        st.steps
            .iter()
            .all(|s| s.action == crate::api::StepAction::Task) as u8,
    );
    // The mesh's tasks as the cluster reports them.
    out.extend_from_slice(&(st.tasks.len() as u64).to_le_bytes());
    for t in &st.tasks {
        text(out, Some(&t.id));
        out.push(t.state as u8);
        out.extend_from_slice(&t.failures.to_le_bytes());
        text(out, t.member.as_deref());
        text(out, t.last_error.as_deref());
    }
    if let Some(c) = &st.certificates {
        out.push(1);
        text(out, c.target_ca.as_deref());
        text(out, c.phase.as_deref());
        text(out, c.forcing.as_deref());
        out.push(c.renewal_due.is_empty() as u8);
        out.extend_from_slice(&(c.sites.len() as u64).to_le_bytes());
        for (k, v) in &c.sites {
            text(out, Some(k));
            text(out, Some(v));
        }
    }
}

/// A stagger deadline of the mesh falls in `(since, now]`: the mesh plan may change with time.
/// The drain invariant, checked when the mesh admits: the first cluster of a `drainBefore`
/// tier admitted in an upgrade rollout (no cluster of the tier moving yet) is admitted only
/// while no member of the mesh has a replication backlog, unless a force intent started the
/// tier (a `DrainForced` warning says so). Judged on the members' real backlog, not on what
/// the statuses say.
fn drain_violations(
    spec: &MeshSpec,
    before: Option<&MeshStatus>,
    after: &MeshStatus,
    clusters: &[SimCluster],
    checked: &mut BTreeSet<(u64, usize)>,
) -> Vec<String> {
    let mut out = vec![];
    let Some(r) = after
        .rollout
        .as_ref()
        .filter(|r| r.direction == Direction::Upgrade)
    else {
        return out;
    };
    let forced = after
        .log
        .iter()
        .any(|e| e.action == "drain" && e.message.contains("by force"));
    for (ti, tier) in spec.tiers.iter().enumerate() {
        if tier.drain_before.is_none() || checked.contains(&(r.log_id, ti)) {
            continue;
        }
        let in_tier = |name: &str| tier.clusters.iter().any(|c| c == name);
        let admitted_now: Vec<&str> = after
            .admitted
            .iter()
            .map(|a| a.cluster.as_str())
            .filter(|c| in_tier(c))
            .filter(|c| before.is_none_or(|b| !b.admitted.iter().any(|a| a.cluster == *c)))
            .collect();
        let Some(first) = admitted_now.first() else {
            continue;
        };
        checked.insert((r.log_id, ti));
        // A tier already part-way (a reversal, a mesh status lost) is not waited for again:
        // one of its clusters runs an operation or has members on two versions.
        let moving = clusters.iter().any(|c| in_tier(&c.name) && part_way(c));
        if moving || forced {
            continue;
        }
        let left: Vec<String> = clusters
            .iter()
            .filter_map(|c| {
                let b: u64 = c.members.values().map(|m| m.backlog).sum();
                (b > 0).then(|| format!("{} ({b})", c.name))
            })
            .collect();
        if !left.is_empty() {
            out.push(format!(
                "tier {} admitted {first} with replication backlog on {}",
                tier.name,
                left.join(", ")
            ));
        }
    }
    out
}

/// A cluster part-way, as its members really are: one runs an operation, or two run different
/// versions (effective ones: a layered member's components count, as in its status).
fn part_way(c: &SimCluster) -> bool {
    fn eff<'m>(c: &SimCluster, m: &'m SimMember) -> &'m str {
        effective_version_str(&c.spec, &m.version, &m.components)
    }
    c.members.values().any(|m| m.current.is_some())
        || c.members.values().any(|m| {
            c.members
                .values()
                .any(|o| !same_version(eff(c, m), eff(c, o)))
        })
}

/// The clusters of `tier` this mesh pass admitted (not admitted before it) that are at rest:
/// a part-way cluster (an operation running, members on two versions, or a move recorded in
/// its status, which runs whatever the admission) is let finish.
fn started_at_rest<'c>(
    tier: &'c crate::api::TierSpec,
    before: Option<&MeshStatus>,
    after: &'c MeshStatus,
    clusters: &'c [SimCluster],
) -> Vec<&'c str> {
    after
        .admitted
        .iter()
        .filter(|a| tier.clusters.contains(&a.cluster))
        .filter(|a| before.is_none_or(|b| !b.admitted.iter().any(|x| x.cluster == a.cluster)))
        .filter_map(|a| clusters.iter().find(|c| c.name == a.cluster))
        .filter(|c| !part_way(c) && !move_recorded(c))
        .map(|c| c.name.as_str())
        .collect()
}

/// The cluster's status records a step in flight that is not media, a task or a membership
/// change: the planner sees it part-way (its step is advanced admitted or not).
fn move_recorded(c: &SimCluster) -> bool {
    use crate::api::StepAction as A;
    c.status.as_ref().is_some_and(|s| {
        s.steps.iter().any(|x| {
            !matches!(x.action, A::StageMedia | A::RemoveMedia | A::Task)
                && !crate::plan::cluster::membership_step(s, x)
        })
    })
}

/// The health invariant of a mesh, checked when it admits: no cluster newly admitted in a tier
/// where another cluster's health after the rollout got worse (and nobody accepted it),
/// unless it is part-way (a cluster started finishes).
fn health_tier_violations(
    spec: &MeshSpec,
    before: Option<&MeshStatus>,
    after: &MeshStatus,
    clusters: &[SimCluster],
) -> Vec<String> {
    let mut out = vec![];
    let worse = |c: &SimCluster| {
        c.status.as_ref().is_some_and(|s| {
            s.health.as_ref().is_some_and(|h| {
                !h.findings.is_empty()
                    && !h.accepted
                    && s.target_version.as_deref() == Some(h.version.as_str())
            })
        })
    };
    for tier in &spec.tiers {
        let stopped: Vec<&str> = clusters
            .iter()
            .filter(|c| tier.clusters.contains(&c.name) && worse(c))
            .map(|c| c.name.as_str())
            .collect();
        if stopped.is_empty() {
            continue;
        }
        // The stopped clusters themselves are stalled: admitting one moves nothing.
        for c in started_at_rest(tier, before, after, clusters) {
            if !stopped.contains(&c) {
                out.push(format!(
                    "tier {} admitted {c} while the health of {} got worse",
                    tier.name,
                    stopped.join(", ")
                ));
            }
        }
    }
    out
}

/// The deferred-tier invariant, checked when the mesh admits: on an upgrade, a cluster of a
/// deferred tier that is not part-way is admitted only once its tier is approved for the
/// target (when the tier asks for an approval) and inside one of its windows (when it has
/// any). Judged on the approvals given and the clock, not on what the statuses say.
fn deferred_violations(
    mesh: &str,
    spec: &MeshSpec,
    before: Option<&MeshStatus>,
    after: &MeshStatus,
    clusters: &[SimCluster],
    approve: &[String],
    now: Timestamp,
) -> Vec<String> {
    let mut out = vec![];
    if after
        .rollout
        .as_ref()
        .is_none_or(|r| r.direction != Direction::Upgrade || r.reconcile)
    {
        return out;
    }
    for tier in &spec.tiers {
        let Some(d) = &tier.deferred else {
            continue;
        };
        let name = crate::plan::mesh::approval_name(mesh, &tier.name, &spec.version);
        let approved = !d.approval || approve.contains(&name);
        let open = !matches!(
            crate::plan::window::window_state(&d.windows, now),
            crate::plan::window::WindowState::Closed { .. }
        );
        if approved && open {
            continue;
        }
        for c in started_at_rest(tier, before, after, clusters) {
            out.push(format!(
                "deferred tier {} admitted {c} {}",
                tier.name,
                if approved {
                    "outside its windows"
                } else {
                    "before its approval"
                }
            ));
        }
    }
    out
}

/// The task id of a task operation's id (`<mesh>.<task>.r<N>.<attempt>`): all but the attempt.
fn task_prefix(op_id: &str) -> &str {
    op_id.rsplit_once('.').map_or(op_id, |(p, _)| p)
}

fn stagger_ends(mesh: &SimMesh, since: Timestamp, now: Timestamp) -> bool {
    let Some(st) = &mesh.status else {
        return false;
    };
    let ends = |end: Timestamp| since < end && end <= now;
    mesh.spec.tiers.iter().any(|t| {
        let status = st.tiers.iter().filter(|x| x.name == t.name);
        (t.stagger.millis() > 0
            && status
                .clone()
                .filter_map(|x| x.last_start_at)
                .any(|l| ends(l.plus(t.stagger))))
            // A deferred tier's window opening is a time the plan changes at.
            || status
                .clone()
                .filter_map(|x| x.deferred.as_ref().and_then(|d| d.next_window_at))
                .any(ends)
            // A drain's timeout is a time the plan changes at too.
            || t.drain_before.as_ref().is_some_and(|d| {
                status
                    .filter_map(|x| x.drain.as_ref())
                    .any(|w| w.drained_at.is_none() && ends(w.since.plus(d.timeout)))
            })
    })
}

#[cfg(test)]
mod drain_tests {
    use super::*;
    use crate::api::{Admitted, DrainSpec, RolloutStatus, TierSpec};

    fn sim_of(names: &[&str]) -> Sim {
        let mut sim = Sim::new(SimConfig::default(), Timestamp(0));
        for n in names {
            let spec = ClusterSpec {
                members: vec![topology::member("m0", n)],
                ..Default::default()
            };
            sim.add_cluster(n, BTreeMap::new(), spec, "1.0.0");
        }
        sim
    }

    fn mesh_spec() -> MeshSpec {
        let tier = |name: &str, clusters: &[&str], drain: bool| TierSpec {
            name: name.into(),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            selector: None,
            max_parallel: 1,
            stagger: Duration(0),
            drain_before: drain.then(DrainSpec::default),
            deferred: None,
        };
        MeshSpec {
            version: "2.0.0".into(),
            tiers: vec![tier("source", &["src"], false), tier("dest", &["d1"], true)],
            ..Default::default()
        }
    }

    fn admitting(cluster: &str, direction: Direction) -> MeshStatus {
        MeshStatus {
            rollout: Some(RolloutStatus {
                version: "2.0.0".into(),
                direction,
                started_at: Timestamp(0),
                log_id: 1,
                reconcile: false,
            }),
            admitted: vec![Admitted {
                cluster: cluster.into(),
                version: "2.0.0".into(),
                direction,
                since: Timestamp(0),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn admitting_a_drain_tier_beside_a_real_backlog_is_a_violation_once() {
        let mut sim = sim_of(&["src", "d1"]);
        if let Some(m) = sim.clusters[0].members.get_mut("m0") {
            m.backlog = 7;
        }
        let spec = mesh_spec();
        let mut checked = BTreeSet::new();
        let after = admitting("d1", Direction::Upgrade);
        let found = drain_violations(&spec, None, &after, &sim.clusters, &mut checked);
        assert_eq!(
            found,
            ["tier dest admitted d1 with replication backlog on src (7)"]
        );
        // Judged at the tier's first admission only.
        let again = drain_violations(&spec, None, &after, &sim.clusters, &mut checked);
        assert!(again.is_empty());
        // A source tier (no drainBefore), a backout, or no backlog: nothing to say.
        let mut fresh = BTreeSet::new();
        let src = admitting("src", Direction::Upgrade);
        assert!(drain_violations(&spec, None, &src, &sim.clusters, &mut fresh).is_empty());
        let back = admitting("d1", Direction::Backout);
        assert!(drain_violations(&spec, None, &back, &sim.clusters, &mut fresh).is_empty());
        if let Some(m) = sim.clusters[0].members.get_mut("m0") {
            m.backlog = 0;
        }
        assert!(drain_violations(&spec, None, &after, &sim.clusters, &mut fresh).is_empty());
        // A tier already part-way (a member of d1 upgraded, the mesh status lost) is not
        // waited for again, whatever the backlog.
        let mut sim = sim_of(&["src", "d1"]);
        let spec2 = ClusterSpec {
            members: vec![topology::member("m0", "d1"), topology::member("m1", "d1")],
            ..Default::default()
        };
        sim.clusters.pop();
        sim.add_cluster("d1", BTreeMap::new(), spec2, "1.0.0");
        if let Some(m) = sim.clusters[0].members.get_mut("m0") {
            m.backlog = 7;
        }
        if let Some(m) = sim.clusters[1].members.get_mut("m1") {
            m.version = "2.0.0".into();
        }
        let mut fresh = BTreeSet::new();
        assert!(drain_violations(&spec, None, &after, &sim.clusters, &mut fresh).is_empty());
        // Not once both of its members are back on one version.
        if let Some(m) = sim.clusters[1].members.get_mut("m1") {
            m.version = "1.0.0".into();
        }
        let mut fresh = BTreeSet::new();
        assert_eq!(
            drain_violations(&spec, None, &after, &sim.clusters, &mut fresh).len(),
            1
        );
    }
}

#[cfg(test)]
mod task_tests {
    use super::*;
    use crate::api::{MeshTaskSpec, RolloutStatus, TaskRollouts, TierSpec};

    /// `src` (tier source) and `d1` (tier dest), two members each on 1.0.0, a mesh to 2.0.0
    /// with task `upload` on `src` after the source tier, in an upgrade rollout (log id 1).
    fn sim() -> Sim {
        let mut sim = Sim::new(SimConfig::default(), Timestamp(0));
        for n in ["src", "d1"] {
            let spec = ClusterSpec {
                members: vec![topology::member("m0", n), topology::member("m1", n)],
                ..Default::default()
            };
            sim.add_cluster(n, BTreeMap::new(), spec, "1.0.0");
        }
        let tier = |name: &str, c: &str| TierSpec {
            name: name.into(),
            clusters: vec![c.into()],
            max_parallel: 1,
            ..Default::default()
        };
        sim.set_mesh(
            "mesh",
            MeshSpec {
                version: "2.0.0".into(),
                tiers: vec![tier("source", "src"), tier("dest", "d1")],
                tasks: vec![MeshTaskSpec {
                    name: "upload".into(),
                    task: None,
                    cluster: "src".into(),
                    member: None,
                    after: "source".into(),
                    on: TaskRollouts::Upgrade,
                }],
                ..Default::default()
            },
        );
        if let Some(m) = sim.mesh.as_mut() {
            m.status = Some(MeshStatus {
                rollout: Some(RolloutStatus {
                    version: "2.0.0".into(),
                    direction: Direction::Upgrade,
                    started_at: Timestamp(0),
                    log_id: 1,
                    reconcile: false,
                }),
                ..Default::default()
            });
        }
        sim
    }

    fn task(attempt: u32) -> OpRequest {
        let mut r = OpRequest::new(format!("mesh.upload.r1.{attempt}"), OpKind::Task);
        r.task = Some("upload".into());
        r.version = Some("2.0.0".into());
        r
    }

    fn upgrade(id: &str) -> OpRequest {
        let mut r = OpRequest::new(id, OpKind::Upgrade);
        r.version = Some("2.0.0".into());
        r
    }

    fn finish_all(sim: &mut Sim) {
        for _ in 0..10 {
            sim.tick(Duration::from_secs(10));
        }
    }

    #[test]
    fn a_task_before_its_tier_is_done_a_second_run_and_a_tier_not_waiting_are_violations() {
        let mut sim = sim();
        // The source still runs 1.0.0: too early.
        sim.inject("src", "m0", task(1));
        assert_eq!(sim.violations.len(), 1, "{:?}", sim.violations);
        assert!(
            sim.violations[0].contains("starts while src/"),
            "{:?}",
            sim.violations
        );
        // The destination upgrades before the task succeeded.
        sim.inject("d1", "m1", upgrade("d1-up"));
        assert_eq!(sim.violations.len(), 2, "{:?}", sim.violations);
        assert!(
            sim.violations[1].contains("before task upload"),
            "{:?}",
            sim.violations
        );

        // In order: the source done, the task once, then the destination.
        let mut sim = self::sim();
        for m in sim.clusters[0].members.values_mut() {
            m.version = "2.0.0".into();
        }
        sim.inject("src", "m0", task(1));
        finish_all(&mut sim);
        assert_eq!(sim.task_successes("mesh.upload.r1"), 1);
        sim.inject("d1", "m1", upgrade("d1-up"));
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        // The same operation again is the same operation (idempotent): no violation; a new
        // attempt after the success is one.
        sim.inject("src", "m0", task(1));
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        sim.inject("src", "m1", task(2));
        assert_eq!(sim.violations.len(), 1, "{:?}", sim.violations);
        assert!(
            sim.violations[0].contains("after it succeeded"),
            "{:?}",
            sim.violations
        );
    }

    /// The destination with its upgrade step of m1 recorded at `at`, in a rollout that began
    /// at 10 s (seed 1303920 of the procedures soak: a reversal found the step recorded under
    /// the last rollout's admission, and the operator crashed before sending its operation).
    fn recorded_at(at: Timestamp) -> (Sim, String) {
        let mut sim = sim();
        if let Some(r) = sim
            .mesh
            .as_mut()
            .and_then(|m| m.status.as_mut())
            .and_then(|s| s.rollout.as_mut())
        {
            r.started_at = Timestamp(10_000);
        }
        let step = crate::fixtures::cluster::step(crate::api::StepAction::Upgrade, "m1", at);
        let id = step.id.clone();
        sim.clusters[1].status = Some(ClusterStatus {
            steps: vec![step],
            ..Default::default()
        });
        (sim, id)
    }

    #[test]
    fn a_step_recorded_before_its_rollout_finishes_before_the_task_one_recorded_in_it_not() {
        // Recorded before the rollout: its operation, sent now, started in no rollout of the
        // task's.
        let (mut sim, id) = recorded_at(Timestamp(5_000));
        sim.inject("d1", "m1", upgrade(&id));
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        // Recorded in the rollout, the task still owed, the cluster not admitted: a violation.
        let (mut sim, id) = recorded_at(Timestamp(10_000));
        sim.inject("d1", "m1", upgrade(&id));
        assert_eq!(sim.violations.len(), 1, "{:?}", sim.violations);
        assert!(
            sim.violations[0].contains("before task upload"),
            "{:?}",
            sim.violations
        );
    }
}
