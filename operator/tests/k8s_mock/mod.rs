//! Test helpers for the Kubernetes host without a cluster: an HTTP-level mock API server (the
//! kube-rs `tower-test` pattern) that records every request and answers from a closure, an
//! in-process fake of the agents, and a controller context wired to both.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::api::{Health, MemberRole};
use baton::k8s::events::EventSink;
use baton::k8s::leader::Leadership;
use baton::k8s::metrics::Metrics;
use baton::k8s::stores::{GuardedCluster, GuardedMesh, Stores};
use baton::k8s::{Context, Triggers};
use baton::plan::{AgentView, OpKind, OpRequest, OpState, OpView};
use baton::reconcile::{
    MemberError, Members, OpLookup, Submission, SubmitError, Submitted, Timing,
};
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// What happened, in order, across the API server and the agents.
pub type Timeline = Arc<Mutex<Vec<String>>>;

/// One request the mock API server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
    pub fn query(&self) -> &str {
        self.uri.split_once('?').map(|x| x.1).unwrap_or_default()
    }
}

/// `(status code, JSON body)` for a request.
/// A request as the mock API server records it (a body that is not JSON reads as null).
pub async fn recorded(req: Request<Body>) -> Recorded {
    let method = req.method().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
    Recorded {
        method,
        uri,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

pub type Responder = Box<dyn FnMut(&Recorded) -> (u16, Value) + Send>;

/// A kube client whose requests go to `respond`; returns the client and a task yielding
/// every request once the client (and all its clones) is dropped.
pub fn mock_api(
    timeline: Timeline,
    respond: Responder,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Recorded>>) {
    mock_api_slow_patches(timeline, respond, Duration::ZERO)
}

/// [`mock_api`] answering every PATCH only after `delay`.
pub fn mock_api_slow_patches(
    timeline: Timeline,
    mut respond: Responder,
    delay: Duration,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Recorded>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some((req, send))) =
            tokio::time::timeout(Duration::from_secs(30), handle.next_request()).await
        {
            let rec = recorded(req).await;
            timeline
                .lock()
                .unwrap()
                .push(format!("api {} {}", rec.method, rec.path()));
            let (code, answer) = respond(&rec);
            if rec.method == "PATCH" && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            seen.push(rec);
            let resp = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
        seen
    });
    (kube::Client::new(svc, "default"), task)
}

/// A Kubernetes `Status` failure body.
pub fn status_failure(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "code": code,
        "message": format!("{reason} (mock)"),
    })
}

/// Agents in memory: fixed views, operations succeed as soon as they are submitted.
pub struct FakeAgents {
    pub views: Mutex<HashMap<String, AgentView>>,
    pub ops: Mutex<HashMap<String, OpView>>,
    pub submitted: Mutex<Vec<OpRequest>>,
    pub calls: Mutex<u32>,
    pub timeline: Timeline,
    /// When set, every submission fails with this error.
    pub refuse: Mutex<Option<SubmitError>>,
}

pub fn agent(version: &str, role: MemberRole) -> AgentView {
    AgentView {
        version: version.into(),
        components: Default::default(),
        role,
        serving: role == MemberRole::Active,
        health: Health::Ok,
        alarms: Vec::new(),
        lag_seconds: 0.0,
        lag_entries: 0,
        applied_index: 10,
        backlog: 0,
        conflicts: 0,
        data_endpoint: Some("127.0.0.1:1".into()),
        load: None,
        operation: None,
        tls: Default::default(),
        membership: Default::default(),
        media: vec![],
        kpis: Default::default(),
    }
}

impl FakeAgents {
    /// `(member name, view)`.
    pub fn new(timeline: Timeline, members: &[(&str, AgentView)]) -> Self {
        FakeAgents {
            views: Mutex::new(
                members
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect(),
            ),
            ops: Mutex::new(HashMap::new()),
            submitted: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
            timeline,
            refuse: Mutex::new(None),
        }
    }

    pub fn submitted(&self) -> Vec<OpRequest> {
        self.submitted.lock().unwrap().clone()
    }

    pub fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }
}

impl Members for FakeAgents {
    async fn status(&self, member: &str, _endpoint: &str) -> Result<AgentView, MemberError> {
        *self.calls.lock().unwrap() += 1;
        self.views
            .lock()
            .unwrap()
            .get(member)
            .cloned()
            .ok_or_else(|| MemberError::unavailable(member, format!("{member}: unknown")))
    }

    async fn operation(&self, _member: &str, _endpoint: &str, id: &str) -> OpLookup {
        *self.calls.lock().unwrap() += 1;
        Ok(self.ops.lock().unwrap().get(id).cloned())
    }

    async fn submit(&self, member: &str, _endpoint: &str, sub: Submission<'_>) -> Submitted {
        let request = sub.request;
        *self.calls.lock().unwrap() += 1;
        self.timeline
            .lock()
            .unwrap()
            .push(format!("agent submit {member} {}", request.kind.as_str()));
        self.submitted.lock().unwrap().push(request.clone());
        if let Some(e) = self.refuse.lock().unwrap().clone() {
            return Err(e);
        }
        self.ops.lock().unwrap().insert(
            request.id.clone(),
            OpView {
                id: request.id.clone(),
                kind: request.kind.as_str().into(),
                state: if request.kind == OpKind::Upgrade {
                    OpState::Running
                } else {
                    OpState::Succeeded
                },
                progress: 100,
                message: String::new(),
                findings: vec![],
            },
        );
        Ok(())
    }
}

/// A context over the mock client and the fake agents, caches filled with `clusters` and
/// `meshes` (raw JSON, so invalid objects can be cached too) and marked synced.
pub struct Harness<M: Members> {
    pub ctx: Arc<Context<M>>,
    pub cluster_writer: Writer<GuardedCluster>,
    pub mesh_writer: Writer<GuardedMesh>,
    pub streams: baton::k8s::context::TriggerStreams,
}

pub fn harness<M: Members>(
    client: kube::Client,
    members: M,
    leader: Leadership,
    clusters: &[Value],
    meshes: &[Value],
) -> Harness<M> {
    let (creader, mut cwriter) = reflector::store::<GuardedCluster>();
    let (mreader, mut mwriter) = reflector::store::<GuardedMesh>();
    for c in clusters {
        let g: GuardedCluster = serde_json::from_value(c.clone()).unwrap();
        cwriter.apply_watcher_event(&watcher::Event::Apply(g));
    }
    for m in meshes {
        let g: GuardedMesh = serde_json::from_value(m.clone()).unwrap();
        mwriter.apply_watcher_event(&watcher::Event::Apply(g));
    }
    let stores = Stores::new(creader, mreader);
    stores.mark_synced();
    let (triggers, streams) = Triggers::new();
    let relations = Arc::new(baton::k8s::relations::Relations::new(
        stores.clone(),
        triggers.clone(),
    ));
    let ctx = Arc::new(Context {
        client: client.clone(),
        members,
        stores,
        relations,
        slots: baton::k8s::slots::Slots::new(4),
        hot: Default::default(),
        events: EventSink::new(client, "test-replica"),
        leader,
        metrics: Arc::new(Metrics::new()),
        timing: Timing::default(),
        triggers,
        ca_recheck: Duration::from_secs(30),
    });
    Harness {
        ctx,
        cluster_writer: cwriter,
        mesh_writer: mwriter,
        streams,
    }
}

/// A Cluster as the API server would return it.
pub fn cluster_json(name: &str, version: &str, members: &[(&str, bool)]) -> Value {
    json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {
            "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
            "generation": 3, "resourceVersion": "100",
            "labels": {"tier": "t"},
        },
        "spec": {
            "version": version,
            "members": members.iter().map(|(m, primary)| json!({
                "name": m, "endpoint": format!("{name}-{m}.example:9443"), "primary": primary,
            })).collect::<Vec<_>>(),
        },
    })
}

/// Answer for a status patch: the object with the applied status and a new resourceVersion.
pub fn patched(object: &Value, req: &Recorded, rv: &str) -> Value {
    let mut o = object.clone();
    o["status"] = req.body["status"].clone();
    o["metadata"]["resourceVersion"] = json!(rv);
    o
}

/// Echo an event back as created.
pub fn created_event(req: &Recorded) -> (u16, Value) {
    let mut e = req.body.clone();
    e["apiVersion"] = json!("events.k8s.io/v1");
    e["kind"] = json!("Event");
    (201, e)
}

pub fn is_event_post(r: &Recorded) -> bool {
    r.method == "POST" && r.path() == "/apis/events.k8s.io/v1/namespaces/ns/events"
}

/// A demo `baton-agent` running in this process on 127.0.0.1 (plain HTTP and fast upgrades
/// unless `flags` say otherwise); returns (control URL, data address). With `--tls-cert` among
/// the flags the control API is served over mutual TLS, and the endpoint says `https://`.
pub async fn start_agent_with(
    dir: &std::path::Path,
    member: &str,
    version: &str,
    active: bool,
    source: Option<&str>,
    flags: &[String],
) -> Result<(String, String), String> {
    let tls = flags.iter().any(|f| f == "--tls-cert");
    let data_dir = dir.join(member);
    let mut argv = vec![
        "baton-agent".to_string(),
        "--member".into(),
        member.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--version".into(),
        version.into(),
        "--role".into(),
        if active { "active" } else { "standby" }.into(),
    ];
    // Fast upgrades unless the caller chose a time (clap refuses a flag given twice).
    if !flags.iter().any(|f| f == "--upgrade-seconds") {
        argv.extend(["--upgrade-seconds".to_string(), "0.3".into()]);
    }
    if !tls {
        argv.push("--insecure-http".into());
    }
    argv.extend(flags.iter().cloned());
    if let Some(s) = source {
        argv.push("--source".into());
        argv.push(s.into());
    }
    let cli =
        <baton_agent::cli::Cli as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = baton_agent::cli::run(cli.run).await {
            eprintln!("agent failed: {e:#}");
        }
    });
    let ready = data_dir.join(baton_agent::cli::READY_FILE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(info) = serde_json::from_str::<baton_agent::api::ReadyInfo>(&text)
        {
            let scheme = if tls { "https" } else { "http" };
            return Ok((format!("{scheme}://{}", info.control), info.data));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("agent {member} did not start"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
