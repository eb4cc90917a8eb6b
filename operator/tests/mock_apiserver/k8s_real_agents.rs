//! The Cluster reconciler drives real demo agents (in this process, 127.0.0.1, plain HTTP)
//! through a whole upgrade, with the API server mocked as one object that enforces the
//! resourceVersion precondition, and a watch cache that lags several passes behind.

use crate::k8s_mock;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::k8s::agent_tls::SwappableMembers;
use baton::k8s::cluster_controller;
use baton::k8s::leader::Leadership;
use baton::k8s::stores::GuardedCluster;
use baton_agent::client::ClientTls;
use k8s_mock::*;
use kube::runtime::watcher;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_real_agents_is_upgraded_through_the_kubernetes_host() {
    let tmp = tempfile::tempdir().unwrap();
    let web = web_of_real_agents(tmp.path()).await;

    // The API server: one object, optimistic concurrency on status writes.
    let (responder, server, conflicts) = object_server(web.clone());
    let (mut h, api) = real_harness(&web, responder);

    let mut cache = web.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut passes = 0;
    loop {
        // The watch delivers the server's object only every fourth pass.
        if passes % 4 == 0 {
            cache = server.lock().unwrap().0.clone();
        }
        passes += 1;
        pass(&mut h, &cache).await;
        let current = server.lock().unwrap().0.clone();
        let st = &current["status"];
        let done = st["phase"] == "Ready"
            && st["members"]
                .as_array()
                .is_some_and(|ms| ms.iter().all(|m| m["version"] == "2.0.0"));
        if done {
            assert_eq!(
                st["activeMember"], "m2",
                "switched over to the upgraded standby"
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            drop(h);
            let events: Vec<String> = api
                .await
                .unwrap()
                .iter()
                .filter(|r| is_event_post(r))
                .map(|r| format!("{} {}", r.body["reason"], r.body["note"]))
                .collect();
            panic!("no convergence after {passes} passes: {st}\nevents: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lagging cache never made a pass overwrite a newer status: the written copies were
    // used, so no write was refused.
    assert_eq!(*conflicts.lock().unwrap(), 0);
}

/// One object behind a mock API server with optimistic concurrency on status writes.
/// Also the object with its resourceVersion, and how many writes were refused.
fn object_server(object: Value) -> (Responder, Shared<(Value, u64)>, Shared<u32>) {
    let server: Shared<(Value, u64)> = Arc::new(Mutex::new((object, 100)));
    let conflicts = Arc::new(Mutex::new(0u32));
    let (srv, confl) = (server.clone(), conflicts.clone());
    let responder: Responder = Box::new(move |r: &Recorded| {
        let mut s = srv.lock().unwrap();
        let rv = s.1.to_string();
        match r.method.as_str() {
            "PATCH" if r.body["metadata"]["resourceVersion"].as_str() != Some(rv.as_str()) => {
                *confl.lock().unwrap() += 1;
                (409, status_failure(409, "Conflict"))
            }
            "PATCH" => {
                s.1 += 1;
                s.0["status"] = r.body["status"].clone();
                s.0["metadata"]["resourceVersion"] = json!(s.1.to_string());
                (200, s.0.clone())
            }
            "GET" => (200, s.0.clone()),
            "POST" => created_event(r),
            _ => (404, status_failure(404, "NotFound")),
        }
    });
    (responder, server, conflicts)
}

type Shared<T> = Arc<Mutex<T>>;

/// Two demo agents, m1 active and m2 its standby, both on 1.0.0, and the Cluster `web` over
/// them asking for 2.0.0.
async fn web_of_real_agents(dir: &std::path::Path) -> Value {
    let (a_ctl, a_data) = start_agent_with(dir, "m1", "1.0.0", true, None, &[])
        .await
        .unwrap();
    let (b_ctl, _) = start_agent_with(dir, "m2", "1.0.0", false, Some(&a_data), &[])
        .await
        .unwrap();
    let mut web = cluster_json("web", "2.0.0", &[("m1", true), ("m2", false)]);
    web["spec"]["members"][0]["endpoint"] = json!(a_ctl);
    web["spec"]["members"][1]["endpoint"] = json!(b_ctl);
    web
}

/// A harness over real agents (plain HTTP) whose store holds `web`.
fn real_harness(
    web: &Value,
    responder: Responder,
) -> (
    Harness<SwappableMembers>,
    tokio::task::JoinHandle<Vec<Recorded>>,
) {
    let (client, api) = mock_api(Default::default(), responder);
    let members = SwappableMembers::new(&ClientTls::Insecure).unwrap();
    let h = harness(
        client,
        members,
        Leadership::always(),
        std::slice::from_ref(web),
        &[],
    );
    (h, api)
}

/// One pass over `cache`: the watch fills the cache the pass plans from (after waiting for
/// its slot), then the reconciler runs.
async fn pass(h: &mut Harness<SwappableMembers>, cache: &Value) {
    let g: Arc<GuardedCluster> = Arc::new(serde_json::from_value(cache.clone()).unwrap());
    h.cluster_writer
        .apply_watcher_event(&watcher::Event::Apply((*g).clone()));
    cluster_controller::reconcile(g, h.ctx.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_waits_for_the_approve_annotation_and_reports_its_acknowledgement() {
    let tmp = tempfile::tempdir().unwrap();
    let mut web = web_of_real_agents(tmp.path()).await;
    web["spec"]["upgrade"] = json!({"supervision": "Approval"});
    let (responder, server, _) = object_server(web.clone());
    let (mut h, api) = real_harness(&web, responder);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut approved = false;
    loop {
        let cache = server.lock().unwrap().0.clone();
        pass(&mut h, &cache).await;
        let st = server.lock().unwrap().0["status"].clone();
        let awaiting = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "AwaitingApproval" && c["status"] == "True");
        if awaiting && !approved {
            // What `kubectl annotate` (or the plugin) does: a metadata change, new version.
            assert_eq!(st["activeMember"], "m1", "nothing switched before approval");
            let msg = st["message"].as_str().unwrap().to_string();
            let step = msg.trim_start_matches("awaiting approval of ").to_string();
            assert_eq!(step, "switchover/web/m2@2.0.0");
            let mut s = server.lock().unwrap();
            s.1 += 1;
            s.0["metadata"]["annotations"] = json!({"baton.dev/approve": step});
            s.0["metadata"]["resourceVersion"] = json!(s.1.to_string());
            approved = true;
        }
        if st["phase"] == "Ready" && st["activeMember"] == "m2" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(approved, "the rollout stopped for approval");
    let st = server.lock().unwrap().0["status"].clone();
    assert!(
        st["acknowledged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "approve:switchover/web/m2@2.0.0"),
        "{st}"
    );
    drop(h);
    let requests = api.await.unwrap();
    let notes: Vec<String> = requests
        .iter()
        .filter(|r| is_event_post(r))
        .map(|r| {
            format!(
                "{} {}",
                r.body["reason"].as_str().unwrap_or_default(),
                r.body["note"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n
                == "IntentAcknowledged baton.dev/approve=switchover/web/m2@2.0.0 acknowledged"),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("Approved ")),
        "{notes:#?}"
    );
}
