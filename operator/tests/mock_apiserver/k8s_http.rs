//! `/healthz`, `/readyz`, `/metrics` over real HTTP on 127.0.0.1, and the CRD readiness check
//! against a mock API server.

use crate::k8s_mock;

use std::sync::Arc;

use baton::k8s::http::{HttpState, NotReady, check_crds, serve_on};
use baton::k8s::leader::Leadership;
use baton::k8s::metrics::Metrics;
use baton::k8s::stores::{GuardedCluster, GuardedMesh, Stores};
use k8s_mock::{Recorded, Responder, mock_api, status_failure};
use kube::runtime::{reflector, watcher};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_string())
}

#[tokio::test]
async fn readiness_waits_for_the_caches_and_the_crds_and_metrics_describe_the_fleet() {
    let (creader, mut cwriter) = reflector::store::<GuardedCluster>();
    let (mreader, _mwriter) = reflector::store::<GuardedMesh>();
    let mut c = k8s_mock::cluster_json("web", "2.0.0", &[("m1", true)]);
    c["status"] =
        json!({"members": [{"name": "m1", "role": "Active", "version": "2.0.0", "health": "OK"}]});
    cwriter.apply_watcher_event(&watcher::Event::Apply(
        serde_json::from_value::<GuardedCluster>(c).unwrap(),
    ));
    let stores = Stores::new(creader, mreader);
    let state = Arc::new(HttpState::new(
        stores.clone(),
        Arc::new(Metrics::new()),
        Leadership::always(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));

    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("caches"), "{body}");
    stores.mark_synced();
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "CRDs not checked yet");
    assert!(body.contains("CRD"), "{body}");
    state.set_crds(Ok(()));
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("baton_leader 1"), "{body}");
    assert!(
        body.contains("baton_members{role=\"Active\",version=\"2.0.0\"} 1"),
        "{body}"
    );
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

fn crd(name: &str, established: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": "baton.dev", "names": {"plural": "x", "kind": "X"}, "scope": "Namespaced", "versions": []},
        "status": {"conditions": [{"type": "Established", "status": established}]},
    })
}

#[tokio::test]
async fn the_crd_check_needs_both_crds_established() {
    let responder: Responder = Box::new(|r: &Recorded| {
        let name = r.path().rsplit('/').next().unwrap_or_default().to_string();
        match name.as_str() {
            "clusters.baton.dev" => (200, crd(&name, "True")),
            "meshes.baton.dev" => (200, crd(&name, "False")),
            _ => (404, status_failure(404, "NotFound")),
        }
    });
    let (client, _api) = mock_api(Default::default(), responder);
    let err = check_crds(&client).await.unwrap_err();
    assert_eq!(
        err,
        NotReady::CrdNotEstablished {
            name: "meshes.baton.dev"
        }
    );
    assert!(
        err.to_string()
            .contains("meshes.baton.dev is not Established"),
        "{err}"
    );

    let responder: Responder = Box::new(|_r: &Recorded| (404, status_failure(404, "NotFound")));
    let (client, _api) = mock_api(Default::default(), responder);
    let err = check_crds(&client).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("clusters.baton.dev is not installed"),
        "{err}"
    );
}
