//! The whole `baton operator` wiring against a mock API server: lists and watches feed the
//! caches and controllers, a listed Cluster and Mesh get their statuses written by their own
//! field managers, readiness sees the CRDs, and a shutdown request ends the operator cleanly.

use crate::k8s_mock;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::k8s::{AgentCredentials, OperatorConfig, run};
use baton::reconcile::Timing;
use http::{Request, Response};
use k8s_mock::{Recorded, cluster_json, recorded, status_failure};
use kube::client::Body;
use serde_json::{Value, json};

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "300"}, "items": items})
}

fn answer(r: &Recorded, cluster: &Value, mesh: &Value) -> (u16, Value) {
    let path = r.path();
    match r.method.as_str() {
        "GET" if path == "/apis/baton.dev/v1alpha1/namespaces/ns/clusters" => (
            200,
            list("ClusterList", "baton.dev/v1alpha1", vec![cluster.clone()]),
        ),
        "GET" if path == "/apis/baton.dev/v1alpha1/namespaces/ns/meshes" => (
            200,
            list("MeshList", "baton.dev/v1alpha1", vec![mesh.clone()]),
        ),
        "GET" if path == "/api/v1/namespaces/ns/secrets" => (
            200,
            list("PartialObjectMetadataList", "meta.k8s.io/v1", vec![]),
        ),
        "GET" if path.starts_with("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/") => {
            let name = path.rsplit('/').next().unwrap_or_default();
            (
                200,
                json!({
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": name},
                    "spec": {"group": "baton.dev", "names": {"plural": "x", "kind": "X"}, "scope": "Namespaced", "versions": []},
                    "status": {"conditions": [{"type": "Established", "status": "True"}]},
                }),
            )
        }
        "PATCH" if path.ends_with("/status") => {
            let mut o = if path.contains("/clusters/") {
                cluster.clone()
            } else {
                mesh.clone()
            };
            o["status"] = r.body["status"].clone();
            o["metadata"]["resourceVersion"] = json!("301");
            (200, o)
        }
        "POST" if path.ends_with("/events") => (201, r.body.clone()),
        _ => (404, status_failure(404, "NotFound")),
    }
}

#[tokio::test]
async fn the_operator_lists_watches_reconciles_and_shuts_down() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,baton=info")
        .with_test_writer()
        .try_init();
    // Members on a closed port: observation fails fast, the status says so.
    let mut cluster = cluster_json("a", "2.0.0", &[("m1", true), ("m2", false)]);
    cluster["spec"]["members"][0]["endpoint"] = json!("127.0.0.1:1");
    cluster["spec"]["members"][1]["endpoint"] = json!("127.0.0.1:1");
    cluster["spec"].as_object_mut().unwrap().remove("version");
    let mesh = json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Mesh",
        "metadata": {"name": "prod", "namespace": "ns", "uid": "uid-prod", "generation": 1, "resourceVersion": "200"},
        "spec": {"version": "2.0.0", "tiers": [{"name": "all", "clusters": ["a"]}]},
    });

    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let log = seen.clone();
    tokio::spawn(async move {
        // Watches are long polls: keep them open and unanswered.
        let mut watches = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let rec = recorded(req).await;
            if rec.query().contains("watch=true") {
                watches.push(send);
                log.lock().unwrap().push(rec);
                continue;
            }
            let (code, body) = answer(&rec, &cluster, &mesh);
            log.lock().unwrap().push(rec);
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = OperatorConfig {
        http_addr: None,
        lease: None,
        agents: AgentCredentials::Given(baton_agent::client::ClientTls::Insecure),
        concurrency: 2,
        watch_namespace: Some("ns".into()),
        timing: Timing {
            busy: Duration::from_millis(200),
            resync: Duration::from_secs(60),
        },
        identity: "test".into(),
        crd_check_period: Duration::from_secs(60),
        ca_recheck: Duration::from_secs(30),
    };
    let op = tokio::spawn(run(client, cfg, async {
        let _ = stop_rx.await;
    }));

    let wrote = |path: &str, manager: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.method == "PATCH" && r.path() == path && r.query().contains(manager))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cluster_written = wrote(
            "/apis/baton.dev/v1alpha1/namespaces/ns/clusters/a/status",
            "fieldManager=baton-cluster-controller",
        );
        let mesh_written = wrote(
            "/apis/baton.dev/v1alpha1/namespaces/ns/meshes/prod/status",
            "fieldManager=baton-mesh-controller",
        );
        if cluster_written && mesh_written {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses not written; requests: {:#?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let seen = seen.lock().unwrap();
        let watched: Vec<&str> = seen
            .iter()
            .filter(|r| r.query().contains("watch=true"))
            .map(|r| r.path())
            .collect();
        for p in [
            "/apis/baton.dev/v1alpha1/namespaces/ns/clusters",
            "/apis/baton.dev/v1alpha1/namespaces/ns/meshes",
        ] {
            assert!(watched.contains(&p), "no watch on {p}: {watched:?}");
        }
        // Least privilege: no list or watch of Secrets in general (docs/rbac.md).
        assert!(
            !seen.iter().any(|r| r.path().ends_with("/secrets")),
            "the operator listed or watched Secrets"
        );
        let cluster_patch = seen
            .iter()
            .find(|r| r.method == "PATCH" && r.path().contains("/clusters/a/"))
            .unwrap();
        let members = cluster_patch.body["status"]["members"].as_array().unwrap();
        assert!(
            members.iter().all(|m| m["role"] == "Unreachable"),
            "{}",
            cluster_patch.body
        );
    }
    stop_tx.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), op)
        .await
        .expect("the operator stops after a shutdown request")
        .unwrap();
    ended.unwrap();
}
