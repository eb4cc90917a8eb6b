//! What the controllers know about Clusters and Meshes: the reflector caches, corrected by
//! the objects the controllers themselves just wrote.
//!
//! A watch cache lags behind the API server. The planner must never plan from a status older
//! than the one last written (it would forget a step already sent to an agent), so every
//! status write's response is kept here and preferred over the cached copy until the cache
//! shows that status too (or a newer version of the object with that status). The entries
//! also expire after [`FRESH_FOR`] so a status overwritten by someone else cannot pin an old
//! copy forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::api::{Cluster, ClusterStatus, Mesh, MeshStatus};
use crate::plan::validate::{ClusterRef, tier_membership};
use crate::plan::{Admission, admission_for};
use crate::reconcile::{ClusterObject, MeshObject, OutsideObject, OutsideWhy};

use super::annotations::{cluster_intents, mesh_intents};

pub type GuardedCluster = DeserializeGuard<Cluster>;
pub type GuardedMesh = DeserializeGuard<Mesh>;

/// How long a written object is preferred over the watch cache at most.
pub const FRESH_FOR: StdDuration = StdDuration::from_secs(30);

/// An object kind with a status the controllers write.
pub trait WithStatus: Resource + Clone {
    type Status: PartialEq;
    fn status_ref(&self) -> Option<&Self::Status>;
}

impl WithStatus for Cluster {
    type Status = ClusterStatus;
    fn status_ref(&self) -> Option<&ClusterStatus> {
        self.status.as_ref()
    }
}

impl WithStatus for Mesh {
    type Status = MeshStatus;
    fn status_ref(&self) -> Option<&MeshStatus> {
        self.status.as_ref()
    }
}

/// `(namespace, name)`.
pub type Key = (String, String);

pub fn key_of<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// The objects written last, by key.
pub struct Written<K> {
    entries: Mutex<HashMap<Key, Entry<K>>>,
}

struct Entry<K> {
    obj: Arc<K>,
    at: Instant,
    /// A quorum read after a conflict: newer than the cache even when the status is the same
    /// (the spec or annotations moved on), so only the same resourceVersion catches it up.
    read: bool,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Written {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: WithStatus> Written<K> {
    /// Remember an object as the API server returned it after a write.
    pub fn record(&self, obj: K) {
        self.insert(obj, false);
    }

    /// Remember an object read from the API server after a conflict.
    pub fn record_read(&self, obj: K) {
        self.insert(obj, true);
    }

    fn insert(&self, obj: K, read: bool) {
        if let Ok(mut e) = self.entries.lock() {
            let entry = Entry {
                obj: Arc::new(obj.clone()),
                at: Instant::now(),
                read,
            };
            e.insert(key_of(&obj), entry);
        }
    }

    pub fn forget(&self, key: &Key) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(key);
        }
    }

    /// The freshest copy of `stored`: the one written last while the cache has not caught up.
    pub fn pick(&self, stored: &K) -> K {
        let key = key_of(stored);
        let Ok(mut entries) = self.entries.lock() else {
            return stored.clone();
        };
        let Some(Entry {
            obj: ours,
            at,
            read,
        }) = entries.get(&key)
        else {
            return stored.clone();
        };
        let same_object = ours.uid() == stored.uid();
        let caught_up = ours.resource_version() == stored.resource_version()
            || (!read && ours.status_ref() == stored.status_ref());
        if same_object && !caught_up && at.elapsed() < FRESH_FOR {
            return (**ours).clone();
        }
        entries.remove(&key);
        stored.clone()
    }
}

/// Wait until a store is listed; false when its writer is gone.
async fn wait_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(StdDuration::from_millis(200), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => return false,
            Err(_) => {}
        }
    }
}

/// The caches of both kinds plus the written copies; cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub clusters: Store<GuardedCluster>,
    pub meshes: Store<GuardedMesh>,
    pub written_clusters: Arc<Written<Cluster>>,
    pub written_meshes: Arc<Written<Mesh>>,
    synced: Arc<AtomicBool>,
}

impl Stores {
    pub fn new(clusters: Store<GuardedCluster>, meshes: Store<GuardedMesh>) -> Self {
        Stores {
            clusters,
            meshes,
            written_clusters: Arc::default(),
            written_meshes: Arc::default(),
            synced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Both caches hold a complete list. Before that a Cluster could look standalone only
    /// because its Mesh was not listed yet, so nothing is reconciled.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Wait until both caches are listed, then mark them synced.
    pub async fn wait_synced(&self) {
        // A store wakes only its latest waiter (the controller also waits on it): poll again
        // periodically instead of relying on the wake-up. Once ready, it answers at once.
        if wait_ready(&self.clusters).await && wait_ready(&self.meshes).await {
            self.mark_synced();
        }
    }

    /// The valid Meshes of a namespace, freshest copies, sorted by name (the first mesh
    /// claiming a cluster owns it).
    pub fn meshes_in(&self, ns: &str) -> Vec<Mesh> {
        let mut out: Vec<Mesh> = self
            .meshes
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|m| m.namespace().as_deref().unwrap_or_default() == ns)
            .map(|m| self.written_meshes.pick(m))
            .collect();
        out.sort_by_key(|m| m.name_any());
        out
    }

    /// Which Mesh owns which Cluster in a namespace. Clusters are borrowed from the cache,
    /// never copied: this runs on every cluster pass and watch event.
    pub fn ownership(&self, ns: &str) -> Ownership {
        let state = self.clusters.state();
        let refs: Vec<ClusterRef<'_>> = state
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|c| c.metadata.namespace.as_deref().unwrap_or_default() == ns)
            .map(|c| ClusterRef {
                name: c.metadata.name.as_deref().unwrap_or_default(),
                labels: c.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                spec: &c.spec,
            })
            .collect();
        let meshes = self.meshes_in(ns);
        // Same rule as the engine's `mesh_membership`: the first mesh by name wins.
        let mut owner = BTreeMap::new();
        for (i, m) in meshes.iter().enumerate() {
            for name in tier_membership(&m.spec, &refs).into_keys() {
                owner.entry(name).or_insert(i);
            }
        }
        let mut unreadable_meshes: Vec<String> = self
            .meshes
            .state()
            .iter()
            .filter(|g| g.0.is_err() && g.namespace().as_deref().unwrap_or_default() == ns)
            .map(|g| g.name_any())
            .collect();
        unreadable_meshes.sort();
        Ownership {
            clusters: refs.iter().map(|r| r.name.to_string()).collect(),
            meshes,
            owner,
            unreadable_meshes,
        }
    }

    /// The clusters of the namespace a Mesh sees but does not plan: the unreadable ones and
    /// the ones another mesh owns.
    pub fn outside_of(&self, ns: &str, own: &Ownership, mesh: &str) -> Vec<OutsideObject> {
        let mine = own.meshes.iter().position(|m| m.name_any() == mesh);
        let mut out = Vec::new();
        for g in self.clusters.state().iter() {
            match &g.0 {
                Err(invalid) => {
                    let meta = &invalid.metadata;
                    if meta.namespace.as_deref().unwrap_or_default() == ns {
                        out.push(OutsideObject {
                            name: meta.name.clone().unwrap_or_default(),
                            labels: meta.labels.clone().unwrap_or_default(),
                            why: OutsideWhy::Unreadable(invalid.error.clone()),
                        });
                    }
                }
                Ok(c) if c.metadata.namespace.as_deref().unwrap_or_default() == ns => {
                    let name = c.name_any();
                    if let Some(&owner) = own.owner.get(&name)
                        && Some(owner) != mine
                    {
                        out.push(OutsideObject {
                            labels: c.labels().clone(),
                            why: OutsideWhy::OwnedBy(own.meshes[owner].name_any()),
                            name,
                        });
                    }
                }
                Ok(_) => {}
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The Clusters a Mesh owns, as the engine takes them (freshest copies).
    pub fn members_of(&self, ns: &str, own: &Ownership, mesh: &str) -> Vec<ClusterObject> {
        let Some(mi) = own.meshes.iter().position(|m| m.name_any() == mesh) else {
            return Vec::new();
        };
        let mut out: Vec<ClusterObject> = self
            .clusters
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|c| c.metadata.namespace.as_deref().unwrap_or_default() == ns)
            .filter(|c| own.owner.get(&c.name_any()) == Some(&mi))
            .map(|c| cluster_object(&self.written_clusters.pick(c)))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Which Mesh of a namespace owns each Cluster.
pub struct Ownership {
    /// Names of the valid Clusters of the namespace.
    pub clusters: Vec<String>,
    /// Valid Meshes of the namespace, freshest copies, sorted by name.
    pub meshes: Vec<Mesh>,
    /// Cluster name → index into `meshes`.
    pub owner: BTreeMap<String, usize>,
    /// Meshes of the namespace that do not deserialize: which clusters they claim is unknown.
    pub unreadable_meshes: Vec<String>,
}

impl Ownership {
    pub fn mesh_of(&self, cluster: &str) -> Option<&Mesh> {
        self.owner.get(cluster).map(|&i| &self.meshes[i])
    }

    /// What a cluster may do. A cluster no readable Mesh claims is standalone, unless a Mesh
    /// of its namespace cannot be read: that Mesh may claim it, so it is held (not admitted)
    /// rather than moved out of the mesh's order.
    pub fn admission_of(&self, cluster: &str) -> Admission {
        if let Some(m) = self.mesh_of(cluster) {
            return admission_for(&m.name_any(), &m.spec, m.status.as_ref(), cluster);
        }
        match self.unreadable_meshes.first() {
            None => Admission::standalone(),
            Some(m) => Admission {
                admitted: false,
                reason: Some(format!(
                    "Mesh {m} of this namespace cannot be read (see its Stalled condition): \
                     holding clusters it may claim"
                )),
                mesh: Some(m.clone()),
                ..Default::default()
            },
        }
    }
}

/// A Cluster as the engine holds it, intents from its annotations.
pub fn cluster_object(c: &Cluster) -> ClusterObject {
    ClusterObject {
        name: c.name_any(),
        labels: c.labels().clone(),
        generation: c.metadata.generation,
        spec: c.spec.clone(),
        status: c.status.clone(),
        intents: cluster_intents(c.annotations()),
        ca: None,
    }
}

/// A Mesh as the engine holds it, intents from its annotations.
pub fn mesh_object(m: &Mesh) -> MeshObject {
    MeshObject {
        name: m.name_any(),
        generation: m.metadata.generation,
        spec: m.spec.clone(),
        status: m.status.clone(),
        intents: mesh_intents(m.annotations()),
        ca: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterPhase, ClusterSpec};

    fn cluster(rv: &str, phase: Option<ClusterPhase>) -> Cluster {
        let mut c = Cluster::new("web", ClusterSpec::default());
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("u1".into());
        c.metadata.resource_version = Some(rv.into());
        c.status = phase.map(|phase| ClusterStatus {
            phase,
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_written_status_wins_until_the_cache_shows_it() {
        let w = Written::<Cluster>::default();
        let stale = cluster("10", Some(ClusterPhase::Pending));
        w.record(cluster("11", Some(ClusterPhase::Progressing)));
        // The cache has not seen the write: our copy (status and resourceVersion) is used.
        let picked = w.pick(&stale);
        assert_eq!(picked.resource_version().as_deref(), Some("11"));
        assert_eq!(picked.status.unwrap().phase, ClusterPhase::Progressing);
        // A newer version (an annotation edit) that carries our status: the cache wins and
        // the entry is dropped.
        let newer = cluster("12", Some(ClusterPhase::Progressing));
        assert_eq!(w.pick(&newer).resource_version().as_deref(), Some("12"));
        assert_eq!(
            w.pick(&stale).resource_version().as_deref(),
            Some("10"),
            "entry dropped once caught up"
        );
    }

    #[test]
    fn a_recreated_object_is_not_confused_with_the_written_one() {
        let w = Written::<Cluster>::default();
        w.record(cluster("11", Some(ClusterPhase::Progressing)));
        let mut other = cluster("20", None);
        other.metadata.uid = Some("u2".into());
        assert_eq!(w.pick(&other).resource_version().as_deref(), Some("20"));
    }
}
