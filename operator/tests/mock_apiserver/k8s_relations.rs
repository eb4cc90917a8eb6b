//! Which objects a watch event wakes: the owning Mesh for a Cluster, only the Clusters whose
//! admission changed for a Mesh, the referencing objects for a Secret.

use crate::k8s_mock;

use baton::k8s::leader::Leadership;
use baton::k8s::relations::Relations;
use baton::k8s::stores::{GuardedCluster, GuardedMesh};
use k8s_mock::*;
use kube::runtime::watcher;
use serde_json::{Value, json};

fn mesh(clusters: &[&str], admitted: &[&str]) -> Value {
    json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Mesh",
        "metadata": {"name": "prod", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1"},
        "spec": {"version": "2.0.0", "tiers": [{"name": "all", "clusters": clusters, "maxParallel": 2}]},
        "status": {"admitted": admitted.iter().map(|c| json!({
            "cluster": c, "version": "2.0.0", "direction": "Upgrade", "since": "2026-01-01T00:00:00Z",
        })).collect::<Vec<_>>()},
    })
}

/// Everything queued on a trigger stream so far.
/// The names of the objects woken.
fn names<K>(woken: Vec<kube::runtime::reflector::ObjectRef<K>>) -> Vec<String>
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    woken.into_iter().map(|r| r.name).collect()
}

fn drain<T: Clone>(rx: &mut futures::channel::mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(x) = rx.try_recv() {
        out.push(x);
    }
    out
}

#[tokio::test]
async fn watch_events_wake_the_related_objects_only() {
    let (client, _api) = mock_api(Default::default(), Box::new(|_| (404, json!({}))));
    let a = cluster_json("a", "2.0.0", &[("m1", true)]);
    let mut b = cluster_json("b", "2.0.0", &[("m1", true)]);
    b["spec"]["certificates"] = json!({"caSecretRef": {"name": "mesh-ca"}});
    let lone = cluster_json("lone", "2.0.0", &[("m1", true)]);
    let m0 = mesh(&["a", "b"], &[]);
    let mut h = harness(
        client,
        FakeAgents::new(Default::default(), &[]),
        Leadership::always(),
        &[a.clone(), b.clone(), lone.clone()],
        std::slice::from_ref(&m0),
    );
    let rel = Relations::new(h.ctx.stores.clone(), h.ctx.triggers.clone());

    // First look at the namespace: every cluster is woken once for its admission.
    rel.wake_clusters_in("ns");
    let mut woken: Vec<String> = names(drain(&mut h.streams.clusters));
    woken.sort();
    assert_eq!(woken, ["a", "b", "lone"]);

    // The mesh admits `a`: only `a` is woken.
    let m1 = mesh(&["a", "b"], &["a"]);
    let g: GuardedMesh = serde_json::from_value(m1).unwrap();
    h.mesh_writer
        .apply_watcher_event(&watcher::Event::Apply(g.clone()));
    rel.on_mesh(&watcher::Event::Apply(g.clone()));
    let woken: Vec<String> = names(drain(&mut h.streams.clusters));
    assert_eq!(woken, ["a"]);
    // The same mesh again (a status-only change that does not touch admissions): nobody.
    rel.on_mesh(&watcher::Event::Apply(g));
    assert!(drain(&mut h.streams.clusters).is_empty());

    // A member cluster changed: its mesh is woken; the standalone one wakes no mesh.
    let ga: GuardedCluster = serde_json::from_value(a).unwrap();
    rel.on_cluster(&watcher::Event::Apply(ga));
    let meshes: Vec<String> = names(drain(&mut h.streams.meshes));
    assert_eq!(meshes, ["prod"]);
    let gl: GuardedCluster = serde_json::from_value(lone).unwrap();
    rel.on_cluster(&watcher::Event::Apply(gl));
    assert!(drain(&mut h.streams.meshes).is_empty());
}

#[tokio::test]
async fn a_deleted_cluster_is_forgotten_and_woken_again_when_recreated() {
    let (client, _api) = mock_api(Default::default(), Box::new(|_| (404, json!({}))));
    let a = cluster_json("a", "2.0.0", &[("m1", true)]);
    let m = mesh(&["a"], &["a"]);
    let mut h = harness(
        client,
        FakeAgents::new(Default::default(), &[]),
        Leadership::always(),
        std::slice::from_ref(&a),
        std::slice::from_ref(&m),
    );
    let rel = Relations::new(h.ctx.stores.clone(), h.ctx.triggers.clone());
    let ga: GuardedCluster = serde_json::from_value(a).unwrap();
    rel.on_cluster(&watcher::Event::Apply(ga.clone()));
    rel.wake_clusters_in("ns");
    assert_eq!(rel.remembered(), (1, 1));
    drain(&mut h.streams.clusters);
    drain(&mut h.streams.meshes);

    // Deleted: its mesh hears of it, and nothing is remembered of it any more.
    h.cluster_writer
        .apply_watcher_event(&watcher::Event::Delete(ga.clone()));
    rel.on_cluster(&watcher::Event::Delete(ga.clone()));
    let meshes: Vec<String> = names(drain(&mut h.streams.meshes));
    assert_eq!(meshes, ["prod"]);
    assert_eq!(rel.remembered(), (0, 0));

    // Re-created with the same name and the same admission: woken for it again.
    h.cluster_writer
        .apply_watcher_event(&watcher::Event::Apply(ga.clone()));
    rel.on_cluster(&watcher::Event::Apply(ga));
    rel.wake_clusters_in("ns");
    let woken: Vec<String> = names(drain(&mut h.streams.clusters));
    assert_eq!(woken, ["a"]);
}
