//! The local host of the reconcile loop: objects from manifest files, statuses in a state
//! file, members reached through [`Members`]. Same engine as the Kubernetes controllers.
//!
//! A pass: apply new intents → plan meshes from persisted cluster statuses → observe and plan
//! every cluster that is due, concurrently → re-plan meshes → persist every changed status in
//! one atomic write → perform the actions → schedule the next looks. Clusters with an
//! operation running are looked at every `Timing::busy`; converged ones once per resync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration as StdDuration, Instant, SystemTime};

use futures::StreamExt;
use kube::ResourceExt;
use tracing::Instrument;

use crate::api::{ClusterPhase, DeferredWait, MeshPhase, TaskState, Timestamp, condition as cond};
use crate::plan::conditions::condition_true;
use crate::plan::{Admission, Intents as PlanIntents, MeshIntents, PlanEvent};
use crate::reconcile::{
    ActOutcome, ClusterObject, ClusterPass, Members, MeshObject, MetricLabel, Persisted,
    StatusStore, Timing, act, admission, certificates_of, mesh_membership, now, observe_and_plan,
    owned_elsewhere, persist, plan_mesh_object,
};

use super::manifests::Manifests;
use super::state::{Intents, ObjectState, RunnerLock, State, StateError, spec_hash};
use crate::reconcile::ca::CaState;

/// Why a pass of the local runner failed. Nothing was sent to a member in that pass.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The intents file could not be read.
    #[error("reading intents (written by approve/pause/resume/retry)")]
    Intents(#[source] StateError),
    /// The state file could not be written: the pass acts on nothing.
    #[error(transparent)]
    Persist(StateError),
    /// An earlier pass planned statuses it could not write: the runner's memory is ahead of
    /// the file, and planning on from it could act on intents never recorded. A new runner
    /// (which reads the file and observes the members again) must take over.
    #[error("an earlier state write failed; restart the runner to continue from the state file")]
    Unpersisted,
}

impl MetricLabel for RunnerError {
    fn metric_label(&self) -> &'static str {
        match self {
            RunnerError::Intents(_) => "Intents",
            RunnerError::Persist(_) => "Persist",
            RunnerError::Unpersisted => "Unpersisted",
        }
    }
}

/// What happened in one pass, for output and tests.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// `(object, event)`, object as `Cluster/web` or `Mesh/prod`.
    pub events: Vec<(String, PlanEvent)>,
    /// `(cluster, outcome)` of every operation submitted.
    pub actions: Vec<(String, ActOutcome)>,
    /// The state file was written.
    pub wrote: bool,
    pub clusters_planned: usize,
}

/// Counters over the runner's life (for benchmarks and the demo's summary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerStats {
    pub passes: u64,
    pub cluster_plans: u64,
    pub state_writes: u64,
    pub actions: u64,
}

/// Where the rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Still moving.
    No,
    /// Every object is Ready at its current generation.
    Converged,
    /// Nothing moves without a human: (object, reason) for each blocked object.
    Blocked(Vec<(String, String)>),
}

pub struct Runner<M: Members> {
    members: M,
    clusters: Vec<ClusterObject>,
    meshes: Vec<MeshObject>,
    /// Cluster name → mesh index.
    membership: BTreeMap<String, usize>,
    cluster_due: Vec<Instant>,
    mesh_due: Vec<Instant>,
    state_path: PathBuf,
    state: State,
    intents_path: PathBuf,
    intents_seen: Option<SystemTime>,
    timing: Timing,
    concurrency: usize,
    stats: RunnerStats,
    /// A state write failed after this pass's statuses were planned into memory.
    unpersisted: bool,
    /// When each (object, reason, message) was last reported: a refusal repeated every poll
    /// is reported once a minute, like Kubernetes aggregates repeated events.
    reported: BTreeMap<(String, String, String), Instant>,
    /// The Secrets of the manifests by name: CA Secrets of `spec.certificates`.
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Held until the runner is dropped.
    _lock: RunnerLock,
}

impl<M: Members> Runner<M> {
    /// Load the state for these manifests (bumping generations of changed specs).
    pub fn new(members: M, manifests: &Manifests, state_path: &Path) -> Result<Self, StateError> {
        // Before anything is read: a second runner must not even bump generations.
        let lock = RunnerLock::acquire(state_path)?;
        let mut state = State::load(state_path)?;
        let loaded = state.clone();
        let mut clusters = Vec::new();
        for (_, c) in &manifests.clusters {
            let name = c.name_any();
            let (generation, status) = track(&mut state.clusters, &name, &c.spec);
            clusters.push(ClusterObject {
                name,
                labels: c.labels().clone(),
                generation: Some(generation),
                spec: c.spec.clone(),
                status,
                intents: PlanIntents::default(),
                ca: None,
            });
        }
        let mut meshes = Vec::new();
        for (_, m) in &manifests.meshes {
            let name = m.name_any();
            let (generation, status) = track(&mut state.meshes, &name, &m.spec);
            meshes.push(MeshObject {
                name,
                generation: Some(generation),
                spec: m.spec.clone(),
                status,
                intents: MeshIntents::default(),
                ca: None,
            });
        }
        // Only new objects or changed specs (generations) are worth a write: a restart of a
        // converged runner writes nothing.
        if state != loaded || !state_path.exists() {
            state.save(state_path)?;
        }
        let membership = mesh_membership(&meshes, &clusters);
        let start = Instant::now();
        Ok(Runner {
            members,
            cluster_due: vec![start; clusters.len()],
            mesh_due: vec![start; meshes.len()],
            clusters,
            meshes,
            membership,
            intents_path: Intents::path_for(state_path),
            state_path: state_path.to_path_buf(),
            state,
            intents_seen: None,
            timing: Timing::default(),
            concurrency: 64,
            stats: RunnerStats::default(),
            unpersisted: false,
            reported: BTreeMap::new(),
            secrets: manifests
                .secrets
                .iter()
                .map(|(_, s)| (s.name.clone(), s.data.clone()))
                .collect(),
            _lock: lock,
        })
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    pub fn clusters(&self) -> &[ClusterObject] {
        &self.clusters
    }

    pub fn meshes(&self) -> &[MeshObject] {
        &self.meshes
    }

    pub fn stats(&self) -> &RunnerStats {
        &self.stats
    }

    pub fn members(&self) -> &M {
        &self.members
    }

    /// When the next pass has something to do.
    pub fn next_wake(&self) -> Instant {
        let first = self
            .cluster_due
            .iter()
            .chain(self.mesh_due.iter())
            .min()
            .copied();
        // Intents written by other commands are picked up within a second.
        let intents = Instant::now() + StdDuration::from_secs(1);
        first.map_or(intents, |f| f.min(intents))
    }

    /// One pass (see the module documentation).
    pub async fn pass(&mut self) -> Result<PassReport, RunnerError> {
        if self.unpersisted {
            return Err(RunnerError::Unpersisted);
        }
        self.stats.passes += 1;
        let mut report = PassReport::default();
        self.reload_intents()?;
        let ts = now();
        let instant = Instant::now();
        let mut dirty = self.plan_meshes(ts, instant, &mut report);

        let due: Vec<usize> = (0..self.clusters.len())
            .filter(|&i| self.cluster_due[i] <= instant)
            .collect();
        // The CA is checked again every pass: validity is a matter of the instant.
        for &i in &due {
            let c = &self.clusters[i];
            let mesh = self.membership.get(&c.name).map(|&m| &self.meshes[m]);
            let adm = admission(mesh, &c.name);
            let ca = certificates_of(c, &adm).map(|certs| read_ca(&self.secrets, certs, ts));
            self.clusters[i].ca = ca;
        }
        let passes: Vec<(usize, ClusterPass)> = {
            let members = &self.members;
            let clusters = &self.clusters;
            let meshes = &self.meshes;
            let membership = &self.membership;
            futures::stream::iter(due.iter().map(|&i| {
                let c = &clusters[i];
                let adm = admission(membership.get(&c.name).map(|&m| &meshes[m]), &c.name);
                async move { (i, cluster_pass(members, c, &adm, ts).await) }
            }))
            .buffer_unordered(self.concurrency)
            .collect()
            .await
        };
        report.clusters_planned = passes.len();
        self.stats.cluster_plans += passes.len() as u64;
        let mut any_cluster_changed = false;
        for (i, p) in &passes {
            let c = &mut self.clusters[*i];
            for e in &p.plan.events {
                report
                    .events
                    .push((format!("Cluster/{}", c.name), e.clone()));
            }
            if p.changed {
                c.status = Some(p.plan.status.clone());
                any_cluster_changed = true;
                dirty = true;
            }
            self.cluster_due[*i] = instant + self.timing.after(p.plan.wake, ts);
        }
        if any_cluster_changed {
            // The mesh reads the statuses just planned: admissions follow in this pass.
            dirty |= self.plan_meshes(ts, instant, &mut report);
        }
        // Every changed status (clusters and meshes) in one atomic write; only what it hands
        // back may act.
        let mut store = StateFile {
            path: &self.state_path,
            state: &mut self.state,
            clusters: &self.clusters,
            meshes: &self.meshes,
            dirty,
        };
        let (persisted, wrote) = match persist(&mut store, passes).await {
            Ok(done) => done,
            Err(e) => {
                self.unpersisted = true;
                return Err(RunnerError::Persist(e));
            }
        };
        if wrote {
            self.stats.state_writes += 1;
            report.wrote = true;
        }
        // Only now, with every intent on disk, touch the members.
        let acting: Vec<(usize, Persisted<ClusterPass>)> = persisted
            .into_iter()
            .map(Persisted::into_parts)
            .filter(|(_, p)| !p.get().plan.actions.is_empty())
            .collect();
        if !acting.is_empty() {
            let members = &self.members;
            let clusters = &self.clusters;
            let meshes = &self.meshes;
            let membership = &self.membership;
            let outcomes: Vec<(usize, Vec<ActOutcome>)> =
                futures::stream::iter(acting.iter().map(|(i, p)| {
                    let c = &clusters[*i];
                    let adm = admission(membership.get(&c.name).map(|&m| &meshes[m]), &c.name);
                    let span = tracing::debug_span!("act", cluster = %c.name);
                    async move { (*i, act(members, c, &adm, p).await) }.instrument(span)
                }))
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (i, outs) in outcomes {
                let name = self.clusters[i].name.clone();
                for o in outs {
                    self.stats.actions += 1;
                    if let Some(event) = o.failure_event() {
                        report.events.push((format!("Cluster/{name}"), event));
                    }
                    report.actions.push((name.clone(), o));
                }
                self.cluster_due[i] = instant + self.timing.busy;
            }
        }
        let now_i = Instant::now();
        self.reported
            .retain(|_, at| now_i.duration_since(*at) < StdDuration::from_secs(60));
        let reported = &mut self.reported;
        report.events.retain(|(obj, e)| {
            let key = (obj.clone(), e.reason.clone(), e.message.clone());
            if reported.contains_key(&key) {
                return false;
            }
            reported.insert(key, now_i);
            true
        });
        Ok(report)
    }

    /// Plan every due mesh; returns whether a status changed.
    fn plan_meshes(&mut self, ts: Timestamp, instant: Instant, report: &mut PassReport) -> bool {
        let mut changed = false;
        for mi in 0..self.meshes.len() {
            let ca = self.meshes[mi]
                .spec
                .certificates
                .as_ref()
                .map(|certs| read_ca(&self.secrets, certs, ts));
            self.meshes[mi].ca = ca;
            let members: Vec<&ClusterObject> = self
                .clusters
                .iter()
                .filter(|c| self.membership.get(&c.name) == Some(&mi))
                .collect();
            let outside = owned_elsewhere(&self.meshes, &self.membership, &self.clusters, mi);
            let p = plan_mesh_object(&self.meshes[mi], &members, &outside, ts);
            let name = self.meshes[mi].name.clone();
            for e in p.plan.events {
                report.events.push((format!("Mesh/{name}"), e));
            }
            self.mesh_due[mi] = instant + self.timing.after(p.plan.wake, ts);
            if p.admissions_changed {
                for (ci, c) in self.clusters.iter().enumerate() {
                    if self.membership.get(&c.name) == Some(&mi) {
                        self.cluster_due[ci] = instant;
                    }
                }
            }
            if p.changed {
                self.meshes[mi].status = Some(p.plan.status);
                changed = true;
            }
        }
        changed
    }

    fn reload_intents(&mut self) -> Result<(), RunnerError> {
        let modified = std::fs::metadata(&self.intents_path)
            .and_then(|m| m.modified())
            .ok();
        if modified == self.intents_seen {
            return Ok(());
        }
        self.intents_seen = modified;
        let intents = Intents::load(&self.intents_path).map_err(RunnerError::Intents)?;
        let instant = Instant::now();
        for (i, c) in self.clusters.iter_mut().enumerate() {
            let ci = intents.clusters.get(&c.name).cloned().unwrap_or_default();
            let new = PlanIntents {
                approve: ci.approve,
                retry: ci.retry,
                pause: ci.pause,
                force: ci.force,
            };
            if new != c.intents {
                c.intents = new;
                self.cluster_due[i] = instant;
            }
        }
        for (i, m) in self.meshes.iter_mut().enumerate() {
            let mi = intents.meshes.get(&m.name).cloned().unwrap_or_default();
            let new = MeshIntents {
                force: mi.force,
                pause: mi.pause,
                approve: mi.approve,
            };
            if new != m.intents {
                m.intents = new;
                self.mesh_due[i] = instant;
            }
        }
        Ok(())
    }

    /// Whether the rollout is done, blocked on a human, or still moving.
    pub fn settled(&self) -> Settled {
        let mut blocked = Vec::new();
        let mut moving = false;
        // Meshes first: a blocked mesh holds back the clusters it has not admitted.
        let mut mesh_blocked = vec![false; self.meshes.len()];
        for (mi, m) in self.meshes.iter().enumerate() {
            let Some(st) = &m.status else {
                moving = true;
                continue;
            };
            if st.observed_generation == m.generation && st.phase == MeshPhase::Ready {
                // Done but for a deferred tier that waits for a person: its approval, or a
                // window when none can ever open. A window still to come is moving.
                let human = st
                    .tiers
                    .iter()
                    .filter_map(|t| t.deferred.as_ref())
                    .any(|d| match d.waiting_for {
                        Some(DeferredWait::Approval) => true,
                        Some(DeferredWait::Window) => d.next_window_at.is_none(),
                        _ => false,
                    });
                if human {
                    mesh_blocked[mi] = true;
                    blocked.push((
                        format!("Mesh/{}", m.name),
                        st.message.clone().unwrap_or_else(|| "deferred".into()),
                    ));
                }
                continue;
            }
            // A task the mesh just asked for runs on a cluster that can run it, whatever holds
            // the rest of the mesh (a cluster of the next tier stalled): not settled yet.
            let task_due = st.tasks.iter().any(|t| {
                t.started_at.is_some()
                    && matches!(t.state, TaskState::Pending | TaskState::Running)
                    && self.clusters.iter().any(|c| {
                        c.name == t.cluster
                            && c.status.as_ref().is_some_and(|s| {
                                !matches!(s.phase, ClusterPhase::Stalled | ClusterPhase::RolledBack)
                            })
                    })
            });
            if task_due {
                moving = true;
                continue;
            }
            // Failed preconditions (a replication backlog, conflicts) are checked again on
            // every pass and may clear by themselves: waiting, not blocked.
            let preconditions = st.conditions.iter().any(|c| {
                c.type_ == cond::STALLED && c.status == "True" && c.reason == "PreconditionFailed"
            });
            match st.phase {
                MeshPhase::Stalled if preconditions => moving = true,
                MeshPhase::Stalled | MeshPhase::Paused | MeshPhase::Degraded => {
                    mesh_blocked[mi] = true;
                    blocked.push((
                        format!("Mesh/{}", m.name),
                        st.message
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", st.phase)),
                    ));
                }
                _ => moving = true,
            }
        }
        for c in &self.clusters {
            let Some(st) = &c.status else {
                moving = true;
                continue;
            };
            let current = st.observed_generation == c.generation;
            if current
                && st.phase == ClusterPhase::Ready
                && condition_true(&st.conditions, cond::READY)
            {
                continue;
            }
            let idle = st.steps.is_empty();
            let why = if condition_true(&st.conditions, cond::STALLED)
                || st.phase == ClusterPhase::Stalled
            {
                Some(st.message.clone().unwrap_or_else(|| "stalled".into()))
            } else if st.phase == ClusterPhase::RolledBack {
                Some(st.message.clone().unwrap_or_else(|| "rolled back".into()))
            } else if condition_true(&st.conditions, cond::AWAITING_APPROVAL) {
                Some(
                    st.message
                        .clone()
                        .unwrap_or_else(|| "awaiting approval".into()),
                )
            } else if st.phase == ClusterPhase::Paused {
                Some("paused".into())
            } else {
                None
            };
            match why {
                Some(w) if current && idle => blocked.push((format!("Cluster/{}", c.name), w)),
                None if idle
                    && matches!(st.phase, ClusterPhase::Waiting | ClusterPhase::Pending)
                    && self
                        .membership
                        .get(&c.name)
                        .is_some_and(|&mi| mesh_blocked[mi] && !self.admitted(mi, &c.name)) => {}
                _ => moving = true,
            }
        }
        if moving {
            Settled::No
        } else if blocked.is_empty() {
            Settled::Converged
        } else {
            Settled::Blocked(blocked)
        }
    }

    fn admitted(&self, mesh: usize, cluster: &str) -> bool {
        self.meshes[mesh]
            .status
            .as_ref()
            .is_some_and(|s| s.admitted.iter().any(|a| a.cluster == cluster))
    }
}

/// One cluster's observation and plan, in a span naming it.
#[tracing::instrument(level = "debug", skip_all, fields(cluster = %cluster.name))]
async fn cluster_pass<M: Members>(
    members: &M,
    cluster: &ClusterObject,
    admission: &Admission,
    now: Timestamp,
) -> ClusterPass {
    observe_and_plan(members, cluster, admission, now).await
}

/// The state file as the engine's status store, for one pass: the statuses the runner holds
/// (the passes' changed statuses are already copied into its objects), all in one atomic
/// replace when any changed, nothing otherwise.
struct StateFile<'a> {
    path: &'a Path,
    state: &'a mut State,
    clusters: &'a [ClusterObject],
    meshes: &'a [MeshObject],
    /// A cluster or mesh status changed in this pass.
    dirty: bool,
}

impl StatusStore<Vec<(usize, ClusterPass)>> for StateFile<'_> {
    /// Whether the file was written.
    type Written = bool;
    type Error = StateError;

    async fn write(&mut self, _passes: &Vec<(usize, ClusterPass)>) -> Result<bool, StateError> {
        if !self.dirty {
            return Ok(false);
        }
        for c in self.clusters {
            if let Some(e) = self.state.clusters.get_mut(&c.name) {
                e.status = c.status.clone();
            }
        }
        for m in self.meshes {
            if let Some(e) = self.state.meshes.get_mut(&m.name) {
                e.status = m.status.clone();
            }
        }
        self.state.save(self.path)?;
        Ok(true)
    }
}

/// The generation and the stored status of the object `name` of `states`, which holds it from
/// now on; the generation is bumped when `spec` is not the one it belongs to.
fn track<T: Clone + Default>(
    states: &mut BTreeMap<String, ObjectState<T>>,
    name: &str,
    spec: &impl serde::Serialize,
) -> (i64, Option<T>) {
    let entry = states.entry(name.to_string()).or_default();
    let h = spec_hash(spec);
    if entry.spec_hash != h {
        entry.generation += 1;
        entry.spec_hash = h;
    }
    (entry.generation, entry.status.clone())
}

/// The CA Secret `certs` names, from the manifests' Secrets.
fn read_ca(
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    certs: &crate::api::CertificatesSpec,
    ts: Timestamp,
) -> CaState {
    let name = &certs.ca_secret_ref.name;
    CaState::read(secrets.get(name), name, ts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::api::{Admitted, ClusterStatus, Direction, Health, MemberRole, MeshStatus};
    use crate::local::manifests::parse_into;
    use crate::plan::{AgentView, OpRequest, OpView};
    use crate::reconcile::{Delegate, MemberError, OpLookup, SubmitError};

    /// Agents answering from fixed views; every operation succeeds at once (and changes
    /// nothing).
    struct Fixed(
        BTreeMap<String, AgentView>,
        std::sync::Mutex<BTreeMap<String, OpView>>,
    );

    impl Members for Fixed {
        async fn status(&self, member: &str, endpoint: &str) -> Result<AgentView, MemberError> {
            self.0
                .get(endpoint)
                .cloned()
                .ok_or_else(|| MemberError::unavailable(member, format!("{member}: unreachable")))
        }
        async fn operation(&self, _: &str, _: &str, id: &str) -> OpLookup {
            let ops = self
                .1
                .lock()
                .map_err(|_| MemberError::Poisoned { what: "test ops" })?;
            Ok(ops.get(id).cloned())
        }
        async fn submit(
            &self,
            _: &str,
            _: &str,
            s: crate::reconcile::Submission<'_>,
        ) -> crate::reconcile::Submitted {
            let r = s.request;
            let op = OpView {
                id: r.id.clone(),
                kind: r.kind.as_str().into(),
                state: crate::plan::OpState::Succeeded,
                progress: 100,
                message: String::new(),
                findings: vec![],
            };
            self.1
                .lock()
                .map_err(|e| SubmitError::Refused(e.to_string()))?
                .insert(r.id.clone(), op);
            Ok(())
        }
    }

    fn view(role: MemberRole, version: &str, data: &str) -> AgentView {
        AgentView {
            version: version.into(),
            components: BTreeMap::new(),
            role,
            serving: role == MemberRole::Active,
            health: Health::Ok,
            alarms: vec![],
            lag_seconds: 0.0,
            lag_entries: 0,
            applied_index: 10,
            backlog: 0,
            conflicts: 0,
            data_endpoint: Some(data.into()),
            load: None,
            operation: None,
            tls: Default::default(),
            membership: Default::default(),
            media: vec![],
            kpis: BTreeMap::new(),
        }
    }

    fn manifests(yaml: &str) -> Manifests {
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(Path::new("test.yaml"), yaml, &mut m, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        m
    }

    const CLUSTER: &str = "apiVersion: baton.dev/v1alpha1
kind: Cluster
metadata: { name: web }
spec:
  version: \"1.0.0\"
  members:
    - { name: m1, endpoint: \"127.0.0.1:1\" }
    - { name: m2, endpoint: \"127.0.0.1:2\" }
";

    fn converged() -> Fixed {
        Fixed(
            BTreeMap::from([
                (
                    "127.0.0.1:1".to_string(),
                    view(MemberRole::Active, "1.0.0", "127.0.0.1:11"),
                ),
                (
                    "127.0.0.1:2".to_string(),
                    view(MemberRole::Standby, "1.0.0", "127.0.0.1:12"),
                ),
            ]),
            Default::default(),
        )
    }

    #[tokio::test]
    async fn a_converged_cluster_is_written_once_and_a_restart_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        let m = manifests(CLUSTER);
        let mut r = Runner::new(converged(), &m, &state).expect("runner");
        let first = r.pass().await.expect("pass");
        assert!(first.wrote, "the first status is written");
        // The cluster-wide verification of the version it runs, then Ready.
        for _ in 0..5 {
            if r.settled() == Settled::Converged {
                break;
            }
            r.cluster_due = vec![Instant::now(); r.clusters.len()];
            r.pass().await.expect("pass");
        }
        assert_eq!(r.settled(), Settled::Converged);
        let writes = r.stats().state_writes;
        for _ in 0..3 {
            r.cluster_due = vec![Instant::now(); r.clusters.len()];
            let again = r.pass().await.expect("pass");
            assert_eq!(again.clusters_planned, 1);
            assert!(!again.wrote, "nothing changed: no write");
        }
        assert_eq!(r.stats().state_writes, writes);
        drop(r);

        // Loading the same manifests again (a restart) must not rewrite the state file.
        let before = std::fs::metadata(&state).expect("state").ino();
        let mut r = Runner::new(converged(), &m, &state).expect("runner");
        assert_eq!(std::fs::metadata(&state).expect("state").ino(), before);
        assert!(!r.pass().await.expect("pass").wrote);
        assert_eq!(std::fs::metadata(&state).expect("state").ino(), before);
        drop(r);
        // A changed spec is a new generation, recorded at once.
        let m2 = manifests(&CLUSTER.replace("\"1.0.0\"", "\"1.1.0\""));
        let r = Runner::new(converged(), &m2, &state).expect("runner");
        assert_ne!(std::fs::metadata(&state).expect("state").ino(), before);
        assert_eq!(r.clusters()[0].generation, Some(2));
    }

    const MESH: &str = "apiVersion: baton.dev/v1alpha1
kind: Mesh
metadata: { name: demo }
spec:
  version: \"2.0.0\"
  tiers:
    - { name: workers, clusters: [w1, w2, w3], maxParallel: 2 }
";

    fn worker(name: &str, port: u16) -> String {
        format!(
            "---\napiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata: {{ name: {name} }}\n\
             spec:\n  members:\n    - {{ name: m1, endpoint: \"127.0.0.1:{port}\" }}\n    \
             - {{ name: m2, endpoint: \"127.0.0.1:{}\" }}\n",
            port + 1
        )
    }

    fn status(phase: ClusterPhase, generation: Option<i64>) -> ClusterStatus {
        ClusterStatus {
            observed_generation: generation,
            phase,
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_admitted_but_not_started_keeps_the_rollout_moving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "{MESH}{}{}{}",
            worker("w1", 10),
            worker("w2", 20),
            worker("w3", 30)
        );
        let mut r = Runner::new(
            Fixed(BTreeMap::new(), Default::default()),
            &manifests(&yaml),
            &dir.path().join("s"),
        )
        .expect("runner");
        let g = Some(1);
        // w1 was rolled back and keeps its slot, w2 just finished, and the mesh's re-plan in
        // the same pass admitted w3, which has not been planned since (no step yet).
        r.clusters[0].status = Some(status(ClusterPhase::RolledBack, g));
        r.clusters[1].status = Some(status(ClusterPhase::Ready, g));
        r.clusters[1].status.as_mut().expect("status").conditions = vec![crate::api::Condition {
            type_: cond::READY.into(),
            status: "True".into(),
            reason: "Converged".into(),
            message: String::new(),
            observed_generation: g,
            last_transition_time: now(),
        }];
        r.clusters[2].status = Some(status(ClusterPhase::Waiting, g));
        let admitted = |c: &str| Admitted {
            cluster: c.into(),
            version: "2.0.0".into(),
            direction: Direction::Upgrade,
            since: now(),
        };
        r.meshes[0].status = Some(MeshStatus {
            observed_generation: g,
            phase: crate::api::MeshPhase::Degraded,
            admitted: vec![admitted("w1"), admitted("w3")],
            ..Default::default()
        });
        assert_eq!(r.settled(), Settled::No, "w3 is about to start");

        // Once w3 is done too, only the human decision about w1 is left.
        r.clusters[2].status = r.clusters[1].status.clone();
        r.meshes[0].status.as_mut().expect("mesh").admitted = vec![admitted("w1")];
        match r.settled() {
            // w1 (and the mesh it degrades) wait for a human; nothing else does.
            Settled::Blocked(b) => assert!(
                b.iter().any(|(o, _)| o == "Cluster/w1")
                    && b.iter().all(|(o, _)| o == "Cluster/w1" || o == "Mesh/demo"),
                "{b:?}"
            ),
            other => panic!("expected Blocked, got {other:?}"),
        }

        // A cluster waiting for a slot that the mesh cannot give (no admission) is not moving.
        r.clusters[2].status = Some(status(ClusterPhase::Waiting, g));
        assert!(matches!(r.settled(), Settled::Blocked(_)));
    }

    /// [`Fixed`] that, on each submit, reads the state file from disk and records whether it
    /// already holds the step the operation belongs to.
    struct OnDisk {
        agents: Fixed,
        state: PathBuf,
        /// (operation id, its step was on disk when the agent received it).
        submits: std::sync::Mutex<Vec<(String, bool)>>,
    }

    impl Delegate for OnDisk {
        type To = Fixed;

        fn to(&self) -> Result<impl std::ops::Deref<Target = Fixed> + Send + '_, MemberError> {
            Ok(&self.agents)
        }

        fn before_submit(&self, r: &OpRequest) {
            let recorded = State::load(&self.state).is_ok_and(|st| {
                st.clusters
                    .values()
                    .filter_map(|c| c.status.as_ref())
                    .flat_map(|s| &s.steps)
                    .any(|step| r.id.starts_with(&step.id))
            });
            if let Ok(mut s) = self.submits.lock() {
                s.push((r.id.clone(), recorded));
            }
        }
    }

    /// A runner of an upgrade (the agents run 1.0.0) whose agents record, for each operation,
    /// whether its step was in the state file when it arrived.
    fn upgrade_on_disk(state: &std::path::Path) -> Runner<OnDisk> {
        let members = OnDisk {
            agents: converged(),
            state: state.to_path_buf(),
            submits: Default::default(),
        };
        let upgrade = manifests(&CLUSTER.replace("\"1.0.0\"", "\"1.1.0\""));
        Runner::new(members, &upgrade, state).expect("runner")
    }

    /// The act path gets its passes from the real persist (the state file write): every
    /// operation reaches its agent with its step already in the file.
    #[tokio::test]
    async fn every_operation_is_on_disk_before_its_agent_receives_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        let mut r = upgrade_on_disk(&state);
        for _ in 0..5 {
            r.cluster_due = vec![Instant::now(); r.clusters.len()];
            r.pass().await.expect("pass");
        }
        let submits = r.members().submits.lock().expect("submits").clone();
        assert!(!submits.is_empty(), "the upgrade's first steps were sent");
        for (id, recorded) in &submits {
            assert!(recorded, "{id} was sent before its step was written");
        }
    }

    /// A state write that fails leaves nothing to act on: the pass fails and no agent is
    /// asked to do anything.
    #[tokio::test]
    async fn a_failed_state_write_sends_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        let mut r = upgrade_on_disk(&state);
        // The state file becomes a non-empty directory: the atomic replace cannot happen.
        std::fs::remove_file(&state).expect("remove");
        std::fs::create_dir_all(state.join("in-the-way")).expect("dir");
        let e = r.pass().await.expect_err("the write fails");
        assert_eq!(e.metric_label(), "Persist");
        assert!(
            format!("{:#}", anyhow::Error::from(e)).contains("replacing"),
            "the cause is kept"
        );
        assert!(r.members().submits.lock().expect("submits").is_empty());
        assert_eq!(r.stats().actions, 0);
        // Memory now holds statuses the file does not: even with the file writable again, this
        // runner never acts on them; a new one starts from the file.
        std::fs::remove_dir_all(&state).expect("clear");
        r.cluster_due = vec![Instant::now(); r.clusters.len()];
        let again = r.pass().await.expect_err("the runner stays stopped");
        assert_eq!(again.metric_label(), "Unpersisted");
        assert!(r.members().submits.lock().expect("submits").is_empty());
    }

    #[test]
    fn each_runner_error_has_its_label() {
        let io = || StateError::Read {
            path: "/i".into(),
            source: std::io::Error::other("boom"),
        };
        let intents = RunnerError::Intents(io());
        assert_eq!(intents.metric_label(), "Intents");
        assert_eq!(
            intents.to_string(),
            "reading intents (written by approve/pause/resume/retry)"
        );
        let persist = RunnerError::Persist(io());
        assert_eq!(persist.metric_label(), "Persist");
        assert_eq!(
            persist.to_string(),
            "reading /i",
            "the state error as it is"
        );
        assert_eq!(RunnerError::Unpersisted.metric_label(), "Unpersisted");
    }
}
