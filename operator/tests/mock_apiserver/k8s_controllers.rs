//! The Cluster and Mesh reconcilers against a mock API server (no cluster needed): status
//! writes by server-side apply, no write when nothing changed, events, invalid objects,
//! pause, leadership.

use crate::k8s_mock;

use std::sync::{Arc, Mutex};

use baton::api::{Cluster, MemberRole};
use baton::k8s::leader::Leadership;
use baton::k8s::stores::{GuardedCluster, GuardedMesh, cluster_object};
use baton::k8s::{cluster_controller, mesh_controller};
use baton::reconcile::{ClusterPass, Submission, Timing, admission, observe_and_plan};
use futures::StreamExt;
use k8s_mock::*;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const CLUSTER_STATUS: &str = "/apis/baton.dev/v1alpha1/namespaces/ns/clusters/web/status";

fn timeline() -> Timeline {
    Arc::new(Mutex::new(Vec::new()))
}

fn two_members(version: &str) -> FakeAgentsSpec {
    vec![
        ("m1", agent(version, MemberRole::Active)),
        ("m2", agent(version, MemberRole::Standby)),
    ]
}

type FakeAgentsSpec = Vec<(&'static str, baton::plan::AgentView)>;

fn guarded(v: &Value) -> Arc<GuardedCluster> {
    Arc::new(serde_json::from_value(v.clone()).unwrap())
}

fn web_json() -> Value {
    cluster_json("web", "2.0.0", &[("m1", true), ("m2", false)])
}

fn guarded_mesh(v: &Value) -> Arc<GuardedMesh> {
    Arc::new(serde_json::from_value(v.clone()).unwrap())
}

/// A harness whose API server answers with [`standard_responder`] for `object`; also the
/// task that returns the requests it saw.
fn serve<M: baton::reconcile::Members>(
    tl: &Timeline,
    object: &Value,
    members: M,
    leader: Leadership,
    clusters: &[Value],
    meshes: &[Value],
) -> (Harness<M>, tokio::task::JoinHandle<Vec<Recorded>>) {
    let (client, api) = mock_api(tl.clone(), standard_responder(object.clone()));
    (harness(client, members, leader, clusters, meshes), api)
}

/// [`serve`] by a leader with `web` alone in the store.
fn serve_alone<M: baton::reconcile::Members>(
    tl: &Timeline,
    web: &Value,
    members: M,
) -> (Harness<M>, tokio::task::JoinHandle<Vec<Recorded>>) {
    serve(
        tl,
        web,
        members,
        Leadership::always(),
        std::slice::from_ref(web),
        &[],
    )
}

/// What [`web_pass`] leaves: the timeline, the harness, the API server's task (returning the
/// requests it saw) and the reconciler's answer.
struct WebPass {
    tl: Timeline,
    h: Harness<FakeAgents>,
    api: tokio::task::JoinHandle<Vec<Recorded>>,
    action: Action,
}

/// One pass of the Cluster reconciler over [`web_json`] (changed by `edit` first), alone in the
/// store of a harness with `leader`, its members on 1.0.0.
async fn web_pass(edit: impl FnOnce(&mut Value), leader: Leadership) -> WebPass {
    let tl = timeline();
    let mut web = web_json();
    edit(&mut web);
    let agents = FakeAgents::new(tl.clone(), &two_members("1.0.0"));
    let (h, api) = serve(&tl, &web, agents, leader, std::slice::from_ref(&web), &[]);
    let action = reconcile_web(&h, &web).await;
    WebPass { tl, h, api, action }
}

/// One pass of the Cluster reconciler over `web`.
async fn reconcile_web<M: baton::reconcile::Members>(h: &Harness<M>, web: &Value) -> Action {
    cluster_controller::reconcile(guarded(web), h.ctx.clone())
        .await
        .unwrap()
}

/// Answers status patches with the patched object and events with 201; anything else 404.
fn standard_responder(object: Value) -> Responder {
    Box::new(move |r: &Recorded| {
        if r.method == "PATCH" && r.path().ends_with("/status") {
            (200, patched(&object, r, "101"))
        } else if is_event_post(r) {
            created_event(r)
        } else {
            (404, status_failure(404, "NotFound"))
        }
    })
}

#[tokio::test]
async fn a_new_step_is_persisted_by_server_side_apply_before_the_agent_is_asked() {
    let WebPass { tl, h, api, action } = web_pass(|_| {}, Leadership::always()).await;
    assert_eq!(action, Action::requeue(Timing::default().busy));
    let submitted = h.ctx.members.submitted();
    drop(h);
    let requests = api.await.unwrap();

    let patch = requests
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("a status write");
    assert_eq!(patch.path(), CLUSTER_STATUS);
    assert!(
        patch
            .query()
            .contains("fieldManager=baton-cluster-controller"),
        "{}",
        patch.uri
    );
    assert!(patch.query().contains("force=true"), "{}", patch.uri);
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    let body = &patch.body;
    assert_eq!(body["apiVersion"], "baton.dev/v1alpha1");
    assert_eq!(body["kind"], "Cluster");
    assert_eq!(body["metadata"]["name"], "web");
    assert_eq!(
        body["metadata"]["resourceVersion"], "100",
        "guarded by the version planned from"
    );
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 3);
    let conditions = status["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "Ready"));
    for c in conditions {
        assert_eq!(c["observedGeneration"], 3, "{c}");
    }
    let steps = status["steps"].as_array().expect("the step is recorded");
    assert!(!steps.is_empty());

    // The first agent operation comes after the write that records it.
    assert!(!submitted.is_empty());
    assert_eq!(submitted[0].id, steps[0]["id"].as_str().unwrap());
    let tl = tl.lock().unwrap().clone();
    let write = tl.iter().position(|l| l.starts_with("api PATCH")).unwrap();
    let send = tl
        .iter()
        .position(|l| l.starts_with("agent submit"))
        .unwrap();
    assert!(write < send, "{tl:?}");

    // Every step start is an event about the Cluster.
    let events: Vec<&Recorded> = requests.iter().filter(|r| is_event_post(r)).collect();
    let started = events
        .iter()
        .find(|e| e.body["reason"] == "StepStarted")
        .expect("a StepStarted event");
    assert_eq!(started.body["regarding"]["kind"], "Cluster");
    assert_eq!(started.body["regarding"]["name"], "web");
    assert_eq!(started.body["reportingController"], "baton-operator");
    assert_eq!(started.body["type"], "Normal");
}

/// Plan with the fake agents until nothing changes; returns the Cluster with that status.
/// The planner's pass over `web` as the agents show it now (nothing sent, nothing written).
async fn plan_web(agents: &FakeAgents, web: &Value) -> ClusterPass {
    let c: Cluster = serde_json::from_value(web.clone()).unwrap();
    observe_and_plan(
        agents,
        &cluster_object(&c),
        &admission(None, "web"),
        baton::reconcile::now(),
    )
    .await
}

/// Hand a planned action to the fake agents (after its status is "persisted").
async fn send(agents: &FakeAgents, a: &baton::plan::Action) {
    use baton::reconcile::Members;
    agents
        .submit(&a.member, "", Submission::plain(&a.request))
        .await
        .unwrap();
}

async fn converged(web: &Value, agents: &FakeAgents) -> Value {
    let mut web = web.clone();
    for _ in 0..30 {
        let pass = plan_web(agents, &web).await;
        if !pass.changed && pass.plan.actions.is_empty() {
            return web;
        }
        web["status"] = serde_json::to_value(&pass.plan.status).unwrap();
        for a in &pass.plan.actions {
            send(agents, a).await;
        }
    }
    panic!("no convergence: {}", web["status"]);
}

#[tokio::test]
async fn a_converged_cluster_makes_no_write_no_event_and_sends_nothing() {
    let tl = timeline();
    let agents = FakeAgents::new(tl.clone(), &two_members("2.0.0"));
    let web = converged(&web_json(), &agents).await;
    assert_eq!(web["status"]["phase"], "Ready", "{}", web["status"]);
    let before = agents.submitted().len();
    let (h, api) = serve_alone(&tl, &web, agents);
    let action = reconcile_web(&h, &web).await;
    assert_eq!(action, Action::requeue(Timing::default().resync));
    assert_eq!(h.ctx.members.submitted().len(), before);
    drop(h);
    let requests = api.await.unwrap();
    assert!(requests.is_empty(), "{requests:?}");
}

#[tokio::test]
async fn an_object_that_does_not_deserialize_gets_a_stalled_condition_and_an_event() {
    let tl = timeline();
    let mut bad = cluster_json("web", "2.0.0", &[("m1", true)]);
    bad["spec"]["members"][0]["spare"] = json!("sometimes");
    let raw = bad.clone();
    let responder: Responder = Box::new(move |r: &Recorded| {
        if r.method == "GET" && r.path() == "/apis/baton.dev/v1alpha1/namespaces/ns/clusters/web" {
            (200, raw.clone())
        } else if r.method == "PATCH" && r.path() == CLUSTER_STATUS {
            (200, patched(&raw, r, "101"))
        } else if is_event_post(r) {
            created_event(r)
        } else {
            (404, status_failure(404, "NotFound"))
        }
    });
    let (client, api) = mock_api(tl.clone(), responder);
    let h = harness(
        client,
        FakeAgents::new(tl.clone(), &[]),
        Leadership::always(),
        std::slice::from_ref(&bad),
        &[],
    );
    let g = guarded(&bad);
    assert!(g.0.is_err(), "the guard keeps the invalid object");
    let action = cluster_controller::reconcile(g, h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(h.ctx.members.calls(), 0, "no agent is contacted");
    drop(h);
    let requests = api.await.unwrap();
    let patch = requests.iter().find(|r| r.method == "PATCH").unwrap();
    assert!(
        patch
            .query()
            .contains("fieldManager=baton-cluster-controller")
    );
    let st = &patch.body["status"];
    assert_eq!(st["phase"], "Stalled");
    assert_eq!(st["observedGeneration"], 3);
    let stalled = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap();
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["reason"], "InvalidObject");
    let msg = stalled["message"].as_str().unwrap();
    assert!(msg.contains("spec.members[0].spare"), "{msg}");
    let event = requests.iter().find(|r| is_event_post(r)).unwrap();
    assert_eq!(event.body["reason"], "InvalidObject");
    assert_eq!(event.body["type"], "Warning");
}

#[tokio::test]
async fn the_pause_annotation_is_honoured_no_operation_is_sent() {
    let pause = |w: &mut Value| w["metadata"]["annotations"] = json!({"baton.dev/pause": "true"});
    let WebPass { h, api, .. } = web_pass(pause, Leadership::always()).await;
    assert!(h.ctx.members.submitted().is_empty());
    drop(h);
    let requests = api.await.unwrap();
    let patch = requests.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body["status"]["phase"], "Paused");
    assert!(patch.body["status"]["steps"].is_null(), "no step recorded");
}

#[tokio::test]
async fn a_replica_that_is_not_the_leader_writes_nothing_and_calls_no_agent() {
    let WebPass { h, api, action, .. } = web_pass(|_| {}, Leadership::elected()).await;
    assert_eq!(action, Action::await_change());
    let mesh = serde_json::from_value::<GuardedMesh>(mesh_json(&["web"])).unwrap();
    let action = mesh_controller::reconcile(Arc::new(mesh), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(h.ctx.members.calls(), 0);
    drop(h);
    assert!(api.await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_cache_is_refused_by_the_precondition_and_nothing_is_sent() {
    let tl = timeline();
    let web = web_json();
    let fresh = {
        let mut f = web.clone();
        f["metadata"]["resourceVersion"] = json!("105");
        f
    };
    let f2 = fresh.clone();
    let responder: Responder = Box::new(move |r: &Recorded| {
        if r.method == "PATCH" {
            (409, status_failure(409, "Conflict"))
        } else if r.method == "GET" {
            (200, f2.clone())
        } else {
            (404, status_failure(404, "NotFound"))
        }
    });
    let (client, api) = mock_api(tl.clone(), responder);
    let h = harness(
        client,
        FakeAgents::new(tl.clone(), &two_members("1.0.0")),
        Leadership::always(),
        std::slice::from_ref(&web),
        &[],
    );
    let action = reconcile_web(&h, &web).await;
    assert_eq!(action, Action::requeue(Timing::default().busy));
    assert!(
        h.ctx.members.submitted().is_empty(),
        "never act on a refused write"
    );
    // The next pass plans from the fresh read.
    let stale: Cluster = serde_json::from_value(web.clone()).unwrap();
    let picked = h.ctx.stores.written_clusters.pick(&stale);
    assert_eq!(picked.metadata.resource_version.as_deref(), Some("105"));
    drop(h);
    let methods: Vec<String> = api
        .await
        .unwrap()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["PATCH", "GET"]);
}

fn mesh_json(clusters: &[&str]) -> Value {
    json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": "prod", "namespace": "ns", "uid": "uid-prod", "generation": 7, "resourceVersion": "200"},
        "spec": {
            "version": "2.0.0",
            "tiers": clusters.iter().map(|c| json!({"name": format!("tier-{c}"), "clusters": [c]})).collect::<Vec<_>>(),
        },
    })
}

fn ready_at(name: &str, version: &str) -> Value {
    let mut c = cluster_json(name, version, &[("m1", true), ("m2", false)]);
    c["spec"].as_object_mut().unwrap().remove("version");
    c["status"] = json!({
        "observedGeneration": 3, "phase": "Ready", "targetVersion": version,
        "members": [
            {"name": "m1", "role": "Active", "version": version, "health": "OK"},
            {"name": "m2", "role": "Standby", "version": version, "health": "OK"},
        ],
    });
    c
}

/// One pass of the Mesh reconciler over `mesh` (in the store with `clusters`), by a leader
/// without agents.
async fn mesh_pass(
    tl: &Timeline,
    mesh: &Value,
    clusters: &[Value],
) -> (Harness<FakeAgents>, tokio::task::JoinHandle<Vec<Recorded>>) {
    let agents = FakeAgents::new(tl.clone(), &[]);
    let meshes = std::slice::from_ref(mesh);
    let (h, api) = serve(tl, mesh, agents, Leadership::always(), clusters, meshes);
    mesh_controller::reconcile(guarded_mesh(mesh), h.ctx.clone())
        .await
        .unwrap();
    (h, api)
}

#[tokio::test]
async fn the_mesh_admits_its_first_tier_and_wakes_that_cluster() {
    let tl = timeline();
    let mesh = mesh_json(&["a", "b"]);
    let clusters = [ready_at("a", "1.0.0"), ready_at("b", "1.0.0")];
    let (mut h, api) = mesh_pass(&tl, &mesh, &clusters).await;
    assert_eq!(h.ctx.members.calls(), 0, "a mesh never talks to agents");
    let woken = h.streams.clusters.next().await.unwrap();
    assert_eq!(woken.name, "a");
    drop(h);
    let requests = api.await.unwrap();
    let patch = requests.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch.path(),
        "/apis/baton.dev/v1alpha1/namespaces/ns/meshes/prod/status"
    );
    assert!(patch.query().contains("fieldManager=baton-mesh-controller"));
    assert_eq!(patch.body["kind"], "Mesh");
    assert_eq!(patch.body["metadata"]["resourceVersion"], "200");
    let st = &patch.body["status"];
    assert_eq!(st["observedGeneration"], 7);
    let admitted: Vec<&str> = st["admitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(admitted, ["a"], "tier order: only the first tier moves");
    assert!(
        requests
            .iter()
            .any(|r| is_event_post(r) && r.body["reason"] == "RolloutStarted")
    );
}

#[tokio::test]
async fn a_cluster_is_held_while_a_mesh_of_its_namespace_cannot_be_read() {
    let tl = timeline();
    let web = web_json();
    let mut broken = mesh_json(&["web"]);
    broken["spec"]["tiers"] = json!("not a list");
    let (h, api) = serve(
        &tl,
        &web,
        FakeAgents::new(tl.clone(), &two_members("1.0.0")),
        Leadership::always(),
        std::slice::from_ref(&web),
        std::slice::from_ref(&broken),
    );
    reconcile_web(&h, &web).await;
    assert!(
        h.ctx.members.submitted().is_empty(),
        "not moved out of the mesh's order"
    );
    drop(h);
    let requests = api.await.unwrap();
    let patch = requests.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body["status"]["phase"], "Waiting");
    let msg = patch.body["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("Mesh prod"), "{msg}");
}

#[tokio::test]
async fn an_operation_the_agent_does_not_accept_is_reported_by_a_warning_event() {
    let tl = timeline();
    let web = web_json();
    let agents = FakeAgents::new(tl.clone(), &two_members("1.0.0"));
    *agents.refuse.lock().unwrap() = Some(baton::reconcile::SubmitError::Unreachable(
        "agent m2: connection refused".into(),
    ));
    let (h, api) = serve_alone(&tl, &web, agents);
    reconcile_web(&h, &web).await;
    assert_eq!(h.ctx.members.submitted().len(), 1);
    drop(h);
    let requests = api.await.unwrap();
    let event = requests
        .iter()
        .find(|r| is_event_post(r) && r.body["reason"] == "AgentUnreachable")
        .expect("an AgentUnreachable event");
    assert_eq!(event.body["type"], "Warning");
    let note = event.body["note"].as_str().unwrap();
    assert!(
        note.contains("on m2") && note.contains("connection refused"),
        "{note}"
    );
}

/// Issue 11, item 4: while an upgrade runs, the agent's progress moves on every look; a
/// status that differs only there is not written (it was ~4 writes per agent operation).
#[tokio::test]
async fn progress_of_a_running_operation_alone_makes_no_status_write() {
    use baton::plan::{OpState, OpView};
    let tl = timeline();
    let agents = FakeAgents::new(tl.clone(), &two_members("1.0.0"));
    let mut web = web_json();
    // Plan (and "persist") until the upgrade of the standby is in flight.
    let mut upgrade = None;
    for _ in 0..20 {
        let pass = plan_web(&agents, &web).await;
        web["status"] = serde_json::to_value(&pass.plan.status).unwrap();
        for a in &pass.plan.actions {
            send(&agents, a).await;
            match a.request.kind {
                baton::plan::OpKind::Upgrade => {
                    upgrade = Some((a.member.clone(), a.request.id.clone()));
                }
                // Short operations succeed at once; the fake shows their effect on the role.
                baton::plan::OpKind::ForceStandby => {
                    if let Some(v) = agents.views.lock().unwrap().get_mut(&a.member) {
                        v.role = MemberRole::ForcedStandby;
                    }
                }
                _ => {}
            }
        }
        if upgrade.is_some() {
            break;
        }
    }
    let (member, id) = upgrade.expect("an upgrade in flight");
    let running = |progress: u8| OpView {
        id: id.clone(),
        kind: "upgrade".into(),
        state: OpState::Running,
        progress,
        message: format!("{progress}%"),
        findings: vec![],
    };
    let show = |progress: u8| {
        agents
            .views
            .lock()
            .unwrap()
            .get_mut(&member)
            .unwrap()
            .operation = Some(running(progress));
        agents
            .ops
            .lock()
            .unwrap()
            .insert(id.clone(), running(progress));
    };
    show(10);
    let pass = plan_web(&agents, &web).await;
    web["status"] = serde_json::to_value(&pass.plan.status).unwrap();

    // The operator's pass with progress at 60 %: nothing is written.
    show(60);
    let (h, api) = serve_alone(&tl, &web, agents);
    reconcile_web(&h, &web).await;
    drop(h);
    let requests = api.await.unwrap();
    assert!(
        !requests.iter().any(|r| r.method == "PATCH"),
        "a status write for progress alone: {requests:?}"
    );
}

/// Issue 11, item 3: a Mesh write wakes the Clusters whose admission changed, not every
/// member of the mesh (200 woken passes per admission flooded the queue).
#[tokio::test]
async fn a_mesh_write_wakes_only_the_clusters_whose_admission_changed() {
    let tl = timeline();
    let mut mesh = mesh_json(&["a", "b", "c"]);
    mesh["spec"]["tiers"] = json!([{"name": "all", "clusters": ["a", "b", "c"], "maxParallel": 1}]);
    let clusters = [
        ready_at("a", "1.0.0"),
        ready_at("b", "1.0.0"),
        ready_at("c", "1.0.0"),
    ];
    let (mut h, _api) = mesh_pass(&tl, &mesh, &clusters).await;
    let mut woken = Vec::new();
    while let Ok(r) = h.streams.clusters.try_recv() {
        woken.push(r.name);
    }
    assert_eq!(woken, ["a"], "only the admitted cluster is woken");
}

/// A Cluster deleted while it was busy is forgotten by the slots' busy set when its last
/// trigger finds it gone, so the set does not grow with every deleted cluster.
#[tokio::test]
async fn a_deleted_busy_cluster_is_forgotten() {
    let tl = timeline();
    let web = web_json();
    // The store holds no Cluster: it was deleted after its last pass.
    let (h, api) = serve(
        &tl,
        &web,
        FakeAgents::new(tl.clone(), &two_members("1.0.0")),
        Leadership::always(),
        &[],
        &[],
    );
    let key = ("ns".to_string(), "web".to_string());
    h.ctx.hot.lock().unwrap().insert(key.clone());
    let action = reconcile_web(&h, &web).await;
    assert_eq!(action, Action::await_change());
    assert!(
        !h.ctx.hot.lock().unwrap().contains(&key),
        "still marked busy"
    );
    drop(h);
    let requests = api.await.unwrap();
    assert!(
        requests.is_empty(),
        "a deleted cluster made requests: {requests:?}"
    );
}
