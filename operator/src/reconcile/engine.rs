//! The reconcile steps every host shares: observe → plan → (host persists the status) → act →
//! decide when to look again. Hosts (the local runner, the Kubernetes controllers) differ only
//! in where objects and statuses live and what wakes them.
//!
//! The ordering rule that makes a crash harmless is held by a type: [`act`] takes a
//! [`Persisted`] pass, which only [`super::persist()`] gives, after the host's
//! [`super::StatusStore`] wrote [`ClusterPass::plan`]'s status (when [`ClusterPass::changed`]).
//! A crash before the write loses nothing (the next pass plans the same step again); a crash
//! after it leaves the intent recorded, and the operation ids derived from the step make
//! sending it again the same operation.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use crate::api::{
    CertificatesSpec, ClusterSpec, ClusterStatus, MeshCertificatesStatus, MeshSpec, MeshStatus,
    Timestamp,
};
use crate::plan::mesh::{Outside, OutsideCluster};
use crate::plan::validate::{ClusterRef, tier_membership};
use crate::plan::{
    Admission, ClusterInput, ClusterPlan, Intents, MeshClusterView, MeshInput, MeshIntents,
    MeshPlan, ObjectView, Wake, admission_for, plan_cluster, plan_mesh,
};

use super::ca::CaState;
use super::members::{ActOutcome, Members, observe_cluster, perform};
use super::persist::Persisted;

/// A Cluster as every host holds it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ClusterObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub generation: Option<i64>,
    pub spec: ClusterSpec,
    pub status: Option<ClusterStatus>,
    pub intents: Intents,
    /// The CA the cluster rotates to (its mesh's `spec.certificates`, or its own: see
    /// [`certificates_of`]), as the host read it this pass (None without certificates).
    pub ca: Option<CaState>,
}

/// A Mesh as every host holds it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MeshObject {
    pub name: String,
    pub generation: Option<i64>,
    pub spec: MeshSpec,
    pub status: Option<MeshStatus>,
    pub intents: MeshIntents,
    /// The CA of `spec.certificates`, as the host read it this pass.
    pub ca: Option<CaState>,
}

/// The certificates a cluster rotates to, whose CA Secret the host reads for it: its mesh's
/// when the mesh declares them, else its own.
pub fn certificates_of<'a>(
    cluster: &'a ClusterObject,
    admission: &'a Admission,
) -> Option<&'a CertificatesSpec> {
    admission.certificates(cluster.spec.certificates.as_ref())
}

/// The mesh (index into `meshes`) each cluster belongs to, by cluster name. A cluster claimed
/// by two meshes belongs to the first; the second reports it through validation.
pub fn mesh_membership(
    meshes: &[MeshObject],
    clusters: &[ClusterObject],
) -> BTreeMap<String, usize> {
    let refs: Vec<ClusterRef<'_>> = clusters
        .iter()
        .map(|c| ClusterRef::new(&c.name, &c.labels, &c.spec))
        .collect();
    let mut out = BTreeMap::new();
    for (mi, m) in meshes.iter().enumerate() {
        for name in tier_membership(&m.spec, &refs).into_keys() {
            out.entry(name).or_insert(mi);
        }
    }
    out
}

/// What the cluster may do, given the mesh it belongs to (if any).
pub fn admission(mesh: Option<&MeshObject>, cluster: &str) -> Admission {
    match mesh {
        Some(m) => admission_for(&m.name, &m.spec, m.status.as_ref(), cluster),
        None => Admission::standalone(),
    }
}

/// One cluster's pass up to the point where the host must persist.
#[derive(Clone, Debug)]
pub struct ClusterPass {
    pub plan: ClusterPlan,
    /// The status records something the stored one does not: the host writes it (before
    /// acting). False also when only volatile display fields moved (`plan::persist`).
    pub changed: bool,
}

/// Observe the members and plan.
pub async fn observe_and_plan<M: Members>(
    members: &M,
    cluster: &ClusterObject,
    admission: &Admission,
    now: Timestamp,
) -> ClusterPass {
    let observed = observe_cluster(members, &cluster.spec, cluster.status.as_ref()).await;
    let plan = plan_cluster(&ClusterInput {
        cluster: ObjectView {
            name: &cluster.name,
            generation: cluster.generation,
            spec: &cluster.spec,
            status: cluster.status.as_ref(),
        },
        observed: &observed,
        admission,
        intents: &cluster.intents,
        ca: cluster.ca.as_ref().map(|c| &c.input),
        now,
    });
    // Volatile display fields alone are not worth a write (see `plan::persist`).
    let changed = crate::plan::persist::worth_writing(cluster.status.as_ref(), &plan.status);
    ClusterPass { plan, changed }
}

/// Perform the actions of a pass whose status is persisted (see [`Persisted`]).
pub async fn act<M: Members>(
    members: &M,
    cluster: &ClusterObject,
    admission: &Admission,
    pass: &Persisted<ClusterPass>,
) -> Vec<ActOutcome> {
    let pass = pass.get();
    if pass.plan.actions.is_empty() {
        return Vec::new();
    }
    perform(
        members,
        &cluster.spec,
        &pass.plan.status,
        cluster.ca.as_ref(),
        certificates_of(cluster, admission),
        &pass.plan.actions,
    )
    .await
}

/// One mesh's pass: pure, from the clusters' persisted statuses.
pub struct MeshPass {
    pub plan: MeshPlan,
    pub changed: bool,
    /// The set of admitted clusters changed: the clusters should be looked at at once.
    pub admissions_changed: bool,
}

/// A cluster of the mesh's namespace the mesh does not plan (see [`OutsideCluster`]), owned.
#[derive(Clone, Debug, PartialEq)]
pub struct OutsideObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub why: OutsideWhy,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutsideWhy {
    /// The object does not deserialize; the error says why.
    Unreadable(String),
    /// This mesh (first by name) owns it.
    OwnedBy(String),
}

/// The clusters another mesh owns, for the mesh at `mesh` (index into `meshes`).
pub fn owned_elsewhere(
    meshes: &[MeshObject],
    membership: &BTreeMap<String, usize>,
    clusters: &[ClusterObject],
    mesh: usize,
) -> Vec<OutsideObject> {
    clusters
        .iter()
        .filter_map(|c| {
            let &owner = membership.get(&c.name)?;
            let owner = meshes.get(owner).filter(|_| owner != mesh)?;
            Some(OutsideObject {
                name: c.name.clone(),
                labels: c.labels.clone(),
                why: OutsideWhy::OwnedBy(owner.name.clone()),
            })
        })
        .collect()
}

pub fn plan_mesh_object(
    mesh: &MeshObject,
    clusters: &[&ClusterObject],
    outside: &[OutsideObject],
    now: Timestamp,
) -> MeshPass {
    let outside: Vec<OutsideCluster<'_>> = outside
        .iter()
        .map(|o| OutsideCluster {
            name: &o.name,
            labels: &o.labels,
            why: match &o.why {
                OutsideWhy::Unreadable(e) => Outside::Unreadable { error: e },
                OutsideWhy::OwnedBy(m) => Outside::OwnedBy { mesh: m },
            },
        })
        .collect();
    let views: Vec<MeshClusterView<'_>> = clusters
        .iter()
        .map(|c| MeshClusterView {
            name: &c.name,
            labels: &c.labels,
            spec: &c.spec,
            status: c.status.as_ref(),
        })
        .collect();
    let plan = plan_mesh(&MeshInput {
        mesh: ObjectView {
            name: &mesh.name,
            generation: mesh.generation,
            spec: &mesh.spec,
            status: mesh.status.as_ref(),
        },
        clusters: &views,
        outside: &outside,
        intents: &mesh.intents,
        ca: mesh.ca.as_ref().map(|c| &c.input),
        now,
    });
    let changed = mesh.status.as_ref() != Some(&plan.status);
    let admissions_changed = mesh.status.as_ref().map(|s| &s.admitted)
        != Some(&plan.status.admitted)
        || grants_changed(mesh.status.as_ref(), Some(&plan.status));
    MeshPass {
        plan,
        changed,
        admissions_changed,
    }
}

/// What a mesh's status tells its clusters about the rotation changed (it wakes them). The
/// per-cluster phases do not count: they are what the clusters wrote.
fn grants_changed(old: Option<&MeshStatus>, new: Option<&MeshStatus>) -> bool {
    let key = |st: Option<&MeshStatus>| {
        st.and_then(|s| s.certificates.as_ref())
            .map(|c: &MeshCertificatesStatus| MeshCertificatesStatus {
                clusters: Default::default(),
                ..c.clone()
            })
    };
    key(old) != key(new)
}

/// How often to look, by what the planner said.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// An operation runs or a step waits on observation (replication, a traffic check).
    pub busy: StdDuration,
    /// Nothing to do: the slow resync that notices drift (one status request per member).
    pub resync: StdDuration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            busy: StdDuration::from_millis(250),
            resync: StdDuration::from_secs(60),
        }
    }
}

impl Timing {
    /// How long to wait before the next look.
    pub fn after(&self, wake: Wake, now: Timestamp) -> StdDuration {
        match wake {
            Wake::Busy => self.busy,
            Wake::At(t) => {
                let ms = t.0.saturating_sub(now.0).max(1) as u64;
                StdDuration::from_millis(ms).min(self.resync)
            }
            Wake::Idle => self.resync,
        }
    }
}

/// Wall-clock now, as the planner's timestamp.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}
