//! The kubectl plugin against an HTTP-level mock API server (the kube-rs `tower-test`
//! pattern): what it reads, what it writes (only `baton.dev/*` annotations, as merge patches),
//! what it prints, and that bad input writes nothing. Objects and statuses come from the
//! deterministic simulator stopped mid-rollout, so the tree shows what a real rollout shows.

use crate::k8s_mock;

use std::sync::{Arc, Mutex};

use baton::api::{Cluster, ClusterPhase, Duration, Mesh, Timestamp};
use baton::cli::{Intent, Output};
use baton::kubectl::{self, LogOptions, Scope, StatusOptions};
use baton::sim::{Sim, SimConfig};
use k8s_mock::{Recorded, mock_api, status_failure};
use serde_json::{Value, json};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const NS: &str = "ns";
const BASE: &str = "/apis/baton.dev/v1alpha1/namespaces/ns";

const MESH: &str = "apiVersion: baton.dev/v1alpha1
kind: Mesh
metadata:
  name: fleet
  namespace: ns
spec:
  version: 2.0.0
  tiers:
  - name: management
    clusters: [mgmt]
  - name: workers
    selector:
      matchLabels: {role: worker}
    maxParallel: 1
  compatibility:
  - role: worker
    notNewerThan: management
";

fn cluster_yaml(name: &str, role: &str) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
  namespace: ns
  labels: {{role: {role}}}
spec:
  role: {role}
  members:
  - name: a
    endpoint: https://{name}-a:9443
  - name: b
    endpoint: https://{name}-b:9443
"
    )
}

/// A mesh of three clusters (mgmt; workers w1, w2 one at a time) on its way from 1.0.0 to
/// 2.0.0: the simulator runs the real planner until `stop` holds.
fn rollout(stop: impl Fn(&Sim) -> bool) -> TestResult<(Mesh, Vec<Cluster>)> {
    let mesh: Mesh = serde_yaml::from_str(MESH)?;
    let mut clusters: Vec<Cluster> = vec![
        serde_yaml::from_str(&cluster_yaml("mgmt", "management"))?,
        serde_yaml::from_str(&cluster_yaml("w1", "worker"))?,
        serde_yaml::from_str(&cluster_yaml("w2", "worker"))?,
    ];
    let cfg = SimConfig {
        seed: 7,
        poll: Duration::from_secs(1),
        upgrade_time: Duration::from_secs(60),
        short_op_time: Duration::from_secs(2),
        duration_jitter: 0.0,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, Timestamp::from_millis(1_700_000_000_000));
    for c in &clusters {
        let name = c.metadata.name.clone().unwrap_or_default();
        let labels = c.metadata.labels.clone().unwrap_or_default();
        sim.add_cluster(&name, labels, c.spec.clone(), "1.0.0");
    }
    sim.set_mesh("fleet", mesh.spec.clone());
    let mut reached = false;
    for _ in 0..100_000 {
        sim.pass();
        if stop(&sim) {
            reached = true;
            break;
        }
        let next = sim.next_event();
        let dt = next.since(sim.now);
        sim.tick(dt);
    }
    assert!(
        reached,
        "the simulated rollout never reached the wanted state"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let mut mesh = mesh;
    mesh.status = sim.mesh.as_ref().and_then(|m| m.status.clone());
    mesh.metadata.generation = mesh.status.as_ref().and_then(|s| s.observed_generation);
    mesh.metadata.resource_version = Some("7".into());
    for c in &mut clusters {
        let name = c.metadata.name.clone().unwrap_or_default();
        c.status = sim.cluster(&name).and_then(|s| s.status.clone());
        c.metadata.generation = c.status.as_ref().and_then(|s| s.observed_generation);
        c.metadata.resource_version = Some("11".into());
    }
    Ok((mesh, clusters))
}

fn phase(sim: &Sim, name: &str) -> Option<ClusterPhase> {
    sim.cluster(name)
        .and_then(|c| c.status.as_ref())
        .map(|s| s.phase)
}

/// mgmt done, w1 part-way (a step in flight), w2 not started.
fn mid_rollout() -> TestResult<(Mesh, Vec<Cluster>)> {
    rollout(|sim| {
        phase(sim, "mgmt") == Some(ClusterPhase::Ready)
            && sim
                .cluster("mgmt")
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.running_versions.as_deref())
                == Some("2.0.0")
            && sim
                .cluster("w1")
                .and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.members.iter().any(|m| m.operation.is_some()))
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": kind,
        "metadata": {"resourceVersion": "99"}, "items": items,
    })
}

fn to_json<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// A mock API server holding these objects: lists, gets, and patches (answered with the
/// object). `conflicts` PATCHes are answered 409 first.
fn server(
    mesh: &Mesh,
    clusters: &[Cluster],
    extra_clusters: Vec<Value>,
    conflicts: usize,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Recorded>>) {
    let mesh = to_json(mesh);
    let mut cl: Vec<Value> = clusters.iter().map(to_json).collect();
    cl.extend(extra_clusters);
    let conflicts = Arc::new(Mutex::new(conflicts));
    mock_api(
        Arc::new(Mutex::new(Vec::new())),
        Box::new(move |r: &Recorded| {
            let path = r.path().to_string();
            let object = |name: &str| -> Option<Value> {
                if path.contains("/meshes/") {
                    (mesh["metadata"]["name"] == name).then(|| mesh.clone())
                } else {
                    cl.iter().find(|c| c["metadata"]["name"] == name).cloned()
                }
            };
            match (r.method.as_str(), path.strip_prefix(BASE)) {
                ("GET", Some("/meshes")) => (200, list("MeshList", vec![mesh.clone()])),
                ("GET", Some("/clusters")) => (200, list("ClusterList", cl.clone())),
                ("GET", Some(p)) => match object(p.rsplit('/').next().unwrap_or_default()) {
                    Some(o) => (200, o),
                    None => (404, status_failure(404, "NotFound")),
                },
                ("PATCH", Some(p)) => {
                    let mut left = conflicts.lock().unwrap_or_else(|e| e.into_inner());
                    if *left > 0 {
                        *left -= 1;
                        return (409, status_failure(409, "Conflict"));
                    }
                    match object(p.rsplit('/').next().unwrap_or_default()) {
                        Some(o) => (200, o),
                        None => (404, status_failure(404, "NotFound")),
                    }
                }
                _ => (404, status_failure(404, "NotFound")),
            }
        }),
    )
}

fn ns() -> Scope {
    Scope::Namespace(NS.into())
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<(usize, &'a str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .collect()
}

fn line_no(text: &str, needle: &str) -> usize {
    match lines_with(text, needle).first() {
        Some((i, _)) => *i,
        None => panic!("no line with {needle:?} in:\n{text}"),
    }
}

#[tokio::test]
async fn status_tree_nests_mesh_tiers_clusters_members() -> TestResult {
    let (mesh, clusters) = mid_rollout()?;
    let invalid = json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "broken", "namespace": "ns", "generation": 1},
        "spec": {"members": "not a list"},
    });
    let (client, requests) = server(&mesh, &clusters, vec![invalid], 0);
    let text = status_in_ns(&client, Output::Table).await?;
    drop(client);
    let requests = requests.await?;

    eprintln!("{text}");
    assert!(text.starts_with("mesh/fleet  → 2.0.0"), "{text}");
    let order = [
        "├── tier management",
        "│   └── cluster/mgmt  2.0.0  Ready  ready  active",
        "└── tier workers",
        "    ├── cluster/w1  ",
        "    └── cluster/w2  1.0.0 → 2.0.0",
        "invalid objects",
        "└── cluster/broken: ",
    ];
    let at: Vec<usize> = order.iter().map(|n| line_no(&text, n)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?} in\n{text}");
    // Members under their cluster, aligned, with role, version, lag and health; w1 shows the
    // operation in flight with its progress.
    let mgmt_members = lines_with(&text, "│       ");
    assert_eq!(mgmt_members.len(), 2, "{text}");
    assert!(mgmt_members.iter().all(|(_, l)| l.contains("2.0.0")
        && l.contains("lag ")
        && (l.contains("Active") || l.contains("Standby"))));
    let w1 = &text[text.find("cluster/w1").unwrap_or(0)..text.find("cluster/w2").unwrap_or(0)];
    assert!(w1.contains('%'), "no operation progress under w1:\n{text}");
    assert!(w1.contains("Running") || w1.contains("Pending"), "{text}");
    assert!(text.contains("1/3 clusters done"), "{text}");
    assert!(text.contains("maxParallel 1"), "{text}");

    // Two reads (both kinds, paged), nothing written.
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|r| r.method == "GET"));
    assert!(requests.iter().all(|r| r.query().contains("limit=500")));
    Ok(())
}

#[tokio::test]
async fn status_reads_every_page_and_dumps_yaml() -> TestResult {
    let (mesh, clusters) = mid_rollout()?;
    let mesh_v = to_json(&mesh);
    let pages: Vec<Value> = clusters.iter().map(to_json).collect();
    let (client, requests) = mock_api(
        Arc::new(Mutex::new(Vec::new())),
        Box::new(move |r: &Recorded| match r.path().strip_prefix(BASE) {
            Some("/meshes") => (200, list("MeshList", vec![mesh_v.clone()])),
            Some("/clusters") if !r.query().contains("continue=") => {
                let mut l = list("ClusterList", pages[..2].to_vec());
                l["metadata"]["continue"] = json!("page-2");
                (200, l)
            }
            Some("/clusters") => (200, list("ClusterList", pages[2..].to_vec())),
            _ => (404, status_failure(404, "NotFound")),
        }),
    );
    let text = status_in_ns(&client, Output::Yaml).await?;
    drop(client);
    let requests = requests.await?;
    let dumped: Value = serde_yaml::from_str(&text)?;
    let names: Vec<&str> = dumped["clusters"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["mgmt", "w1", "w2"]);
    assert_eq!(dumped["meshes"][0]["status"]["progress"], json!("1/3"));
    assert_eq!(dumped["clusters"][0]["namespace"], json!("ns"));
    let cluster_reads: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.path().ends_with("/clusters"))
        .collect();
    assert_eq!(cluster_reads.len(), 2);
    assert!(cluster_reads[1].query().contains("continue=page-2"));
    Ok(())
}

#[tokio::test]
async fn missing_crds_are_explained() -> TestResult {
    let (client, _requests) = mock_api(
        Arc::new(Mutex::new(Vec::new())),
        Box::new(|_| (404, status_failure(404, "NotFound"))),
    );
    let err = status_in_ns(&client, Output::Table)
        .await
        .expect_err("a 404 list must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("CRDs installed"), "{msg}");
    assert!(msg.contains("namespace ns"), "{msg}");
    Ok(())
}

/// `kubectl baton status -n ns -o OUTPUT`.
async fn status_in_ns(client: &kube::Client, output: Output) -> anyhow::Result<String> {
    kubectl::status(client, &ns(), StatusOptions { output }).await
}

fn patches(requests: &[Recorded]) -> Vec<&Recorded> {
    requests.iter().filter(|r| r.method == "PATCH").collect()
}

/// Cluster `c` carries the approval annotation with `step` already.
fn approved_before(c: &mut Cluster, step: &str) {
    c.metadata.annotations = Some([("baton.dev/approve".to_string(), step.to_string())].into());
}

/// `kubectl baton INTENT -n ns` for each of `intents` in turn, against the mid-rollout
/// objects (changed by `edit` first) with `conflicts` PATCHes answered 409 first: the
/// messages, and the requests the server saw.
async fn intents_mid_rollout<const N: usize>(
    edit: impl FnOnce(&mut [Cluster]),
    conflicts: usize,
    intents: [Intent; N],
) -> TestResult<([String; N], Vec<Recorded>)> {
    let (mesh, mut clusters) = mid_rollout()?;
    edit(&mut clusters);
    let (client, requests) = server(&mesh, &clusters, vec![], conflicts);
    let mut msgs = Vec::new();
    for intent in intents {
        msgs.push(kubectl::intent(&client, &ns(), intent).await?);
    }
    drop(client);
    let msgs = <[String; N]>::try_from(msgs).map_err(|_| "one message per intent")?;
    Ok((msgs, requests.await?))
}

/// `kubectl baton approve switchover/w1/b@2.0.0 -n ns`, w1 carrying the approval annotation
/// with `before` already.
async fn approve_b(before: &str, conflicts: usize) -> TestResult<(String, Vec<Recorded>)> {
    let approve = Intent::Approve("switchover/w1/b@2.0.0".into());
    let edit = |c: &mut [Cluster]| approved_before(&mut c[1], before);
    let ([msg], requests) = intents_mid_rollout(edit, conflicts, [approve]).await?;
    Ok((msg, requests))
}

#[tokio::test]
async fn approve_appends_to_the_annotation_and_retries_a_conflict() -> TestResult {
    let (msg, requests) = approve_b("switchover/w1/a@1.5.0", 1).await?;
    assert!(msg.starts_with("approved switchover/w1/b@2.0.0"), "{msg}");
    let p = patches(&requests);
    assert_eq!(p.len(), 2, "one 409, then the retry: {requests:?}");
    for r in &p {
        assert_eq!(r.path(), format!("{BASE}/clusters/w1"));
        assert_eq!(r.content_type, "application/merge-patch+json");
        assert_eq!(
            r.body["metadata"]["annotations"]["baton.dev/approve"],
            json!("switchover/w1/a@1.5.0,switchover/w1/b@2.0.0")
        );
        // Optimistic concurrency: a change in between is a 409, never lost.
        assert_eq!(r.body["metadata"]["resourceVersion"], json!("11"));
        assert!(r.body.get("spec").is_none() && r.body.get("status").is_none());
    }
    // Read again after the conflict.
    let gets = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path().ends_with("/clusters/w1"))
        .count();
    assert_eq!(gets, 2);
    Ok(())
}

#[tokio::test]
async fn approving_twice_writes_once() -> TestResult {
    let (msg, requests) = approve_b("switchover/w1/b@2.0.0", 0).await?;
    assert!(msg.contains("already approved"), "{msg}");
    assert!(patches(&requests).is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_input_changes_nothing() -> TestResult {
    let (mesh, clusters) = mid_rollout()?;
    let cases: Vec<(Scope, Intent, &str)> = vec![
        (ns(), Intent::Approve("w1".into()), "is not a step name"),
        // A typo in the member would wait forever: refused, naming the members there are.
        (
            ns(),
            Intent::Approve("switchover/w1/zz@2.0.0".into()),
            "cluster w1 has no member \"zz\" (members: a, b)",
        ),
        (
            ns(),
            Intent::Approve("switchover/w1/b@two".into()),
            "\"two\" is not a version",
        ),
        (
            ns(),
            Intent::Retry(vec!["mesh/fleet".into()]),
            "retry applies to clusters",
        ),
        (
            ns(),
            Intent::Force(vec!["cluster/w1".into()]),
            "force applies to meshes",
        ),
        (ns(), Intent::Force(vec![]), "name the mesh"),
        // One typo among good names: nothing is paused.
        (
            ns(),
            Intent::Pause(vec!["w1".into(), "w9".into()]),
            "\"w9\" not found",
        ),
        (
            ns(),
            Intent::Pause(vec!["pod/w1".into()]),
            "neither cluster nor mesh",
        ),
        (Scope::All, Intent::Pause(vec![]), "-n NAMESPACE"),
    ];
    for (scope, intent, expected) in cases {
        let (client, requests) = server(&mesh, &clusters, vec![], 0);
        let err = kubectl::intent(&client, &scope, intent.clone())
            .await
            .expect_err("must be refused");
        drop(client);
        let msg = format!("{err:#}");
        assert!(msg.contains(expected), "{intent:?}: {msg}");
        assert!(
            patches(&requests.await?).is_empty(),
            "{intent:?} wrote something"
        );
    }
    Ok(())
}

#[tokio::test]
async fn pause_everything_then_resume_one() -> TestResult {
    let ([msg, msg2, msg3], requests) = intents_mid_rollout(
        |c| c[2].spec.paused = true,
        0,
        [
            Intent::Pause(vec![]),
            Intent::Resume(vec!["w1".into()]),
            Intent::Resume(vec!["w2".into()]),
        ],
    )
    .await?;
    assert_eq!(
        msg,
        "paused mesh/fleet, cluster/mgmt, cluster/w1, cluster/w2"
    );
    assert_eq!(msg2, "resumed cluster/w1");
    // The declarative pause is the manifest's: said, not overridden.
    assert!(
        msg3.contains("still paused by spec.paused: cluster/w2"),
        "{msg3}"
    );
    let p = patches(&requests);
    let seen: Vec<(String, Value)> = p
        .iter()
        .map(|r| {
            (
                r.path().trim_start_matches(BASE).to_string(),
                r.body["metadata"]["annotations"]["baton.dev/pause"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/meshes/fleet".to_string(), json!("true")),
            ("/clusters/mgmt".to_string(), json!("true")),
            ("/clusters/w1".to_string(), json!("true")),
            ("/clusters/w2".to_string(), json!("true")),
            // Resuming removes the annotation (null in a merge patch).
            ("/clusters/w1".to_string(), Value::Null),
            ("/clusters/w2".to_string(), Value::Null),
        ]
    );
    assert!(
        p.iter()
            .all(|r| r.content_type == "application/merge-patch+json")
    );
    assert!(
        p[4].body["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.contains_key("baton.dev/pause")),
        "resume must send an explicit null"
    );
    Ok(())
}

#[tokio::test]
async fn retry_and_force_set_fresh_tokens() -> TestResult {
    let intents = [Intent::Retry(vec![]), Intent::Force(vec!["fleet".into()])];
    let ([retry, force], requests) = intents_mid_rollout(|_| {}, 0, intents).await?;
    assert_eq!(
        retry,
        "retry requested for cluster/mgmt, cluster/w1, cluster/w2"
    );
    assert!(force.contains("mesh/fleet"), "{force}");
    let p = patches(&requests);
    assert_eq!(p.len(), 4);
    for r in &p[..3] {
        let token = r.body["metadata"]["annotations"]["baton.dev/retry"]
            .as_str()
            .unwrap_or_default();
        assert!(token.parse::<jiff::Timestamp>().is_ok(), "{token:?}");
    }
    assert_eq!(p[3].path(), format!("{BASE}/meshes/fleet"));
    assert!(p[3].body["metadata"]["annotations"]["baton.dev/force"].is_string());
    Ok(())
}

#[tokio::test]
async fn log_is_printed_as_a_tree() -> TestResult {
    let (mesh, clusters) = rollout(|sim| {
        ["mgmt", "w1", "w2"]
            .iter()
            .all(|c| phase(sim, c) == Some(ClusterPhase::Ready))
            && sim
                .cluster("w2")
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.running_versions.as_deref())
                == Some("2.0.0")
    })?;
    let (client, _requests) = server(&mesh, &clusters, vec![], 0);
    let text = kubectl::log(
        &client,
        &ns(),
        &LogOptions {
            names: vec!["cluster/w1".into()],
            output: Output::Table,
        },
    )
    .await?;
    drop(client);
    assert!(text.starts_with("cluster/w1:\n"), "{text}");
    let log = clusters[1]
        .status
        .as_ref()
        .map(|s| s.log.clone())
        .unwrap_or_default();
    assert!(log.len() >= 5, "{log:?}");
    let indent = |id: u64| -> usize {
        let key = format!("#{id} ");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&key))
            .unwrap_or_default();
        line.len() - line.trim_start().len()
    };
    let mut nested = 0;
    for e in &log {
        if let Some(p) = e.parent.filter(|p| log.iter().any(|x| x.id == *p)) {
            assert!(
                indent(e.id) > indent(p),
                "#{} not under #{p}:\n{text}",
                e.id
            );
            nested += 1;
        }
    }
    assert!(nested >= 3, "{text}");
    // Switchover phases sit two levels down (rollout → switchover → demote/promote).
    assert!(
        log.iter().any(|e| indent(e.id) >= indent(log[0].id) + 8),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn plan_starts_from_the_live_state() -> TestResult {
    let (mesh, clusters) = mid_rollout()?;
    let (client, _requests) = server(&mesh, &clusters, vec![], 0);
    let opts = baton::cli::plan::PlanOptions {
        files: vec![],
        state: None,
        from: None,
        from_components: Default::default(),
        upgrade_time: Some(Duration::from_secs(600)),
        step_time: Some(Duration::from_secs(5)),
        horizon: Duration::from_secs(30 * 24 * 3600),
    };
    let plans = kubectl::plan(&client, &ns(), &opts).await?;
    drop(client);
    assert_eq!(plans.len(), 1);
    let (namespace, s) = &plans[0];
    assert_eq!(namespace, NS);
    assert!(s.blocked.is_empty(), "{:?}", s.blocked);
    // The recorded statuses are the starting point: no waiting for a first status.
    assert!(
        s.waits.iter().all(|w| !w.reason.contains("first status")),
        "{:?}",
        s.waits
    );
    assert!(s.steps.first().is_some_and(|st| st.start == 0.0), "{s:?}");
    // mgmt already runs 2.0.0: nothing left to do there.
    assert!(s.steps.iter().all(|st| st.cluster != "mgmt"), "{s:?}");
    let upgrades = |c: &str| {
        s.steps
            .iter()
            .filter(|st| st.cluster == c && st.action == "upgrade")
            .map(|st| (st.start, st.end))
            .collect::<Vec<_>>()
    };
    let (w1, w2) = (upgrades("w1"), upgrades("w2"));
    assert!(!w2.is_empty() && !w1.is_empty(), "{s:?}");
    // maxParallel 1: w2 starts after w1's last upgrade ended.
    let w1_end = w1.iter().map(|x| x.1).fold(0.0, f64::max);
    let w2_start = w2.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    assert!(w2_start >= w1_end, "w2 at {w2_start}, w1 until {w1_end}");
    assert!(
        s.steps
            .iter()
            .all(|st| st.tier.as_deref() == Some("workers"))
    );
    // The rendered plan names the plugin in its hints.
    let text = baton::cli::plan::render_for(s, kubectl::commands::COMMAND);
    assert!(text.contains("mesh fleet, tier workers:"), "{text}");
    Ok(())
}

/// A fake API server on 127.0.0.1 (real HTTP, for the real binary): the same answers as
/// [`server`], every request recorded as `METHOD PATH?QUERY BODY`.
async fn http_server(
    mesh: &Mesh,
    clusters: &[Cluster],
) -> TestResult<(std::net::SocketAddr, Arc<Mutex<Vec<String>>>)> {
    use axum::body::Bytes;
    use axum::http::{Method, StatusCode, Uri};
    let mesh = to_json(mesh);
    let cl: Vec<Value> = clusters.iter().map(to_json).collect();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let (mesh, cl, log) = (mesh.clone(), cl.clone(), log.clone());
        async move {
            let path = uri.path().to_string();
            if let Ok(mut l) = log.lock() {
                l.push(format!("{method} {uri} {}", String::from_utf8_lossy(&body)));
            }
            let object = |name: &str| -> Option<Value> {
                if path.contains("/meshes/") {
                    (mesh["metadata"]["name"] == name).then(|| mesh.clone())
                } else {
                    cl.iter().find(|c| c["metadata"]["name"] == name).cloned()
                }
            };
            let (code, body) = match (method.as_str(), path.strip_prefix(BASE)) {
                ("GET", Some("/meshes")) => (200, list("MeshList", vec![mesh.clone()])),
                ("GET", Some("/clusters")) => (200, list("ClusterList", cl.clone())),
                ("GET" | "PATCH", Some(p)) => {
                    match object(p.rsplit('/').next().unwrap_or_default()) {
                        Some(o) => (200, o),
                        None => (404, status_failure(404, "NotFound")),
                    }
                }
                _ => (404, status_failure(404, "NotFound")),
            };
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [("content-type", "application/json")],
                body.to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, seen))
}

/// The real binary, installed as `kubectl-baton` (a symlink, as a package would), against a
/// kubeconfig whose current context points elsewhere: `--context` must pick the fake cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_baton_binary_uses_the_named_context() -> TestResult {
    let (mesh, clusters) = mid_rollout()?;
    let (addr, seen) = http_server(&mesh, &clusters).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{addr}\"}}
- name: nowhere
  cluster: {{server: \"http://127.0.0.1:1\"}}
users:
- name: someone
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: someone, namespace: ns}}
- name: elsewhere
  context: {{cluster: nowhere, user: someone, namespace: other}}
current-context: elsewhere
"
        ),
    )?;
    let plugin = dir.path().join("kubectl-baton");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_baton"), &plugin)?;
    let run = |bin: &std::path::Path, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("BATON_STATE")
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
                .await
                .map_err(|_| "the plugin did not finish within 60 s")??;
            Ok::<_, Box<dyn std::error::Error>>((
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };

    let (code, help, _) = run(&plugin, &["--help"]).await?;
    assert_eq!(code, Some(0));
    assert!(help.contains("Usage: kubectl baton"), "{help}");
    assert!(
        !help.contains("\n  demo ") && !help.contains("\n  run "),
        "{help}"
    );

    let (code, out, err) = run(&plugin, &["status", "--context", "fake"]).await?;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("mesh/fleet  → 2.0.0"), "{out}");
    assert!(out.contains("└── tier workers"), "{out}");

    // As `baton` with Kubernetes flags, the same; the write is a merge patch of one annotation.
    let baton = std::path::Path::new(env!("CARGO_BIN_EXE_baton"));
    let (code, out, err) = run(baton, &["--context", "fake", "pause", "w2"]).await?;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "paused cluster/w2");

    // The current context (unreachable) is used when none is named: a clear failure.
    let (code, _, err) = run(&plugin, &["status"]).await?;
    assert_eq!(code, Some(2));
    assert!(err.contains("error:"), "{err}");

    // What runs the loop is not part of the plugin.
    let (code, _, err) = run(&plugin, &["run", "-f", "x.yaml"]).await?;
    assert_eq!(code, Some(2));
    assert!(err.contains("does not take Kubernetes flags"), "{err}");

    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    let patches: Vec<&String> = seen.iter().filter(|r| r.starts_with("PATCH")).collect();
    assert_eq!(patches.len(), 1, "{seen:#?}");
    assert!(
        patches[0].starts_with(&format!("PATCH {BASE}/clusters/w2"))
            && patches[0].contains(r#""baton.dev/pause":"true""#),
        "{patches:?}"
    );
    Ok(())
}
