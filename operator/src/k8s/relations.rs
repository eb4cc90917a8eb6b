//! Which objects to look at when another one changes, computed from the caches as watch
//! events pass by:
//!
//! * a Cluster changed (spec, labels, status) or went away → the Mesh that owns it now and
//!   the one that owned it before;
//! * a Mesh changed or went away → the Clusters whose admission (mesh version, admitted or
//!   not, why not) differs from the one they were last woken for;

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::plan::Admission;

use super::context::Triggers;
use super::stores::{GuardedCluster, GuardedMesh, Key, Stores};

pub struct Relations {
    stores: Stores,
    triggers: Triggers,
    /// Cluster → the mesh that owned it at the last event.
    owner: Mutex<HashMap<Key, String>>,
    /// Cluster → the admission it was last woken for.
    admitted: Mutex<HashMap<Key, Admission>>,
}

fn touched<K>(ev: &watcher::Event<K>) -> Option<&K> {
    match ev {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some(o),
        // During a (re)list the cache is replaced only at InitDone; every object is
        // reconciled from the list itself.
        watcher::Event::InitApply(_) | watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

impl Relations {
    pub fn new(stores: Stores, triggers: Triggers) -> Self {
        Relations {
            stores,
            triggers,
            owner: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        }
    }

    pub fn on_cluster(&self, ev: &watcher::Event<GuardedCluster>) {
        let Some(c) = touched(ev) else {
            return;
        };
        let ns = c.namespace().unwrap_or_default();
        let name = c.name_any();
        let now_owner = self
            .stores
            .ownership(&ns)
            .mesh_of(&name)
            .map(|m| m.name_any());
        let before = match self.owner.lock() {
            Ok(mut owners) => {
                let key = (ns.clone(), name.clone());
                match &now_owner {
                    Some(m) => owners.insert(key, m.clone()),
                    None => owners.remove(&key),
                }
            }
            Err(_) => None,
        };
        for mesh in now_owner.iter().chain(before.iter()) {
            self.triggers.mesh(&ns, mesh);
        }
        if c.0.is_err() {
            // Which mesh claims an unreadable cluster is unknown (a selector may match its
            // labels): every mesh of the namespace looks, and holds if it claims it.
            for m in self.stores.meshes_in(&ns) {
                self.triggers.mesh(&ns, &m.name_any());
            }
        }
        if matches!(ev, watcher::Event::Delete(_)) {
            // Gone: forget what it was last woken for, so that a Cluster re-created under the
            // same name is woken for its admission, and so that the maps do not grow with
            // every Cluster ever deleted.
            let key = (ns, name);
            if let Ok(mut owners) = self.owner.lock() {
                owners.remove(&key);
            }
            if let Ok(mut admitted) = self.admitted.lock() {
                admitted.remove(&key);
            }
        }
    }

    /// How many Clusters the relation maps remember (owners, admissions).
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.owner.lock().map_or(0, |o| o.len()),
            self.admitted.lock().map_or(0, |a| a.len()),
        )
    }

    pub fn on_mesh(&self, ev: &watcher::Event<GuardedMesh>) {
        let Some(m) = touched(ev) else {
            return;
        };
        self.wake_clusters_in(&m.namespace().unwrap_or_default());
    }

    /// After a Mesh write: remember the admission each of its clusters now has, and wake
    /// those for which it changed (`wake`). Remembering the unchanged ones too keeps the watch
    /// event of the same write from waking them as never seen.
    pub fn admitted_by_write(&self, ns: &str, cluster: &str, adm: Admission, wake: bool) {
        if let Ok(mut last) = self.admitted.lock() {
            last.insert((ns.to_string(), cluster.to_string()), adm);
        }
        if wake {
            self.triggers.cluster(ns, cluster);
        }
    }

    /// Wake the clusters of a namespace whose admission changed.
    pub fn wake_clusters_in(&self, ns: &str) {
        let own = self.stores.ownership(ns);
        let Ok(mut last) = self.admitted.lock() else {
            return;
        };
        for c in &own.clusters {
            let adm = own.admission_of(c);
            let key = (ns.to_string(), c.clone());
            if last.get(&key) != Some(&adm) {
                last.insert(key, adm);
                self.triggers.cluster(ns, c);
            }
        }
    }
}
