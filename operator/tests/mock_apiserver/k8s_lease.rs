//! Leader election over a coordination.k8s.io/v1 Lease, against a mock API server: create,
//! follow, take over an expired lease, lose it on conflict or silence, release it; and a
//! reconcile that loses the lease after writing its status sends nothing.

use crate::k8s_mock;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::api::MemberRole;
use baton::k8s::cluster_controller;
use baton::k8s::leader::{Attempt, Leadership, LeaseConfig, LeaseElector};
use k8s_mock::*;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/baton-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";

fn lease(holder: &str, rv: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "baton-operator", "namespace": "ns", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": transitions,
        },
    })
}

/// Serves one Lease object with optimistic concurrency like the API server.
fn lease_server(initial: Option<Value>) -> Responder {
    let state: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(initial));
    let mut rv = 10;
    Box::new(move |r: &Recorded| {
        let mut cur = state.lock().unwrap();
        match (r.method.as_str(), r.path()) {
            ("GET", LEASE) => match cur.as_ref() {
                Some(l) => (200, l.clone()),
                None => (404, status_failure(404, "NotFound")),
            },
            ("POST", LEASES) if cur.is_none() => {
                rv += 1;
                let mut l = r.body.clone();
                l["metadata"]["resourceVersion"] = json!(rv.to_string());
                *cur = Some(l.clone());
                (201, l)
            }
            ("PUT", LEASE) => {
                let want = &r.body["metadata"]["resourceVersion"];
                let have = cur
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if Some(want) != have.as_ref() {
                    return (409, status_failure(409, "Conflict"));
                }
                rv += 1;
                let mut l = r.body.clone();
                l["metadata"]["resourceVersion"] = json!(rv.to_string());
                *cur = Some(l.clone());
                (200, l)
            }
            _ => (409, status_failure(409, "AlreadyExists")),
        }
    })
}

fn cfg(me: &str) -> LeaseConfig {
    LeaseConfig::new("baton-operator", "ns", me)
}

#[tokio::test]
async fn a_missing_lease_is_created_and_held() {
    let (client, api) = mock_api(Default::default(), lease_server(None));
    let leader = Leadership::elected();
    let mut gained = leader.subscribe();
    let mut e = LeaseElector::new(client, cfg("me"), leader.clone());
    assert!(!leader.is_leader());
    assert_eq!(e.step().await.unwrap(), Attempt::Leader);
    assert!(leader.is_leader());
    assert!(*gained.borrow_and_update());
    // Renewal: same holder, replaced with the stored resourceVersion.
    assert_eq!(e.step().await.unwrap(), Attempt::Leader);
    drop(e);
    let req = api.await.unwrap();
    let methods: Vec<&str> = req.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "PUT"]);
    assert_eq!(req[1].body["spec"]["holderIdentity"], "me");
    assert_eq!(req[1].body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(req[3].body["metadata"]["resourceVersion"], "11");
}

#[tokio::test(start_paused = true)]
async fn a_live_lease_is_followed_and_an_expired_one_taken_over() {
    let (client, api) = mock_api(
        Default::default(),
        lease_server(Some(lease("other", "5", 2))),
    );
    let leader = Leadership::elected();
    let mut e = LeaseElector::new(client, cfg("me"), leader.clone());
    assert_eq!(e.step().await.unwrap(), Attempt::Follower("other".into()));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        e.step().await.unwrap(),
        Attempt::Follower("other".into()),
        "not expired yet on this replica's clock"
    );
    assert!(!leader.is_leader());
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(e.step().await.unwrap(), Attempt::Leader);
    assert!(leader.is_leader());
    drop(e);
    let req = api.await.unwrap();
    let put = req.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(put.path(), LEASE);
    assert_eq!(put.body["metadata"]["resourceVersion"], "5");
    assert_eq!(put.body["spec"]["holderIdentity"], "me");
    assert_eq!(put.body["spec"]["leaseTransitions"], 3);
    assert_eq!(req.iter().filter(|r| r.method != "GET").count(), 1);
}

#[tokio::test]
async fn a_conflicting_write_loses_leadership_at_once() {
    // Our lease as we last saw it, but another replica took it meanwhile: our PUT carries
    // a stale resourceVersion.
    let state = Arc::new(Mutex::new(0));
    let responder: Responder = Box::new(move |r: &Recorded| {
        let mut n = state.lock().unwrap();
        *n += 1;
        match r.method.as_str() {
            "GET" => (200, lease("me", "7", 0)),
            _ if *n <= 2 => (200, lease("me", "8", 0)),
            _ => (409, status_failure(409, "Conflict")),
        }
    });
    let (client, _api) = mock_api(Default::default(), responder);
    let leader = Leadership::elected();
    let mut e = LeaseElector::new(client, cfg("me"), leader.clone());
    assert_eq!(e.step().await.unwrap(), Attempt::Leader);
    assert!(leader.is_leader());
    assert_eq!(e.step().await.unwrap(), Attempt::Conflict);
    assert!(!leader.is_leader());
}

#[tokio::test(start_paused = true)]
async fn leadership_ends_by_itself_when_renewals_stop() {
    let (client, _api) = mock_api(Default::default(), lease_server(None));
    let leader = Leadership::elected();
    let config = cfg("me");
    let deadline = config.renew_deadline;
    assert!(deadline < config.lease_duration);
    let mut e = LeaseElector::new(client, config, leader.clone());
    e.step().await.unwrap();
    assert!(leader.is_leader());
    tokio::time::advance(deadline - Duration::from_millis(1)).await;
    assert!(leader.is_leader());
    tokio::time::advance(Duration::from_millis(2)).await;
    assert!(!leader.is_leader(), "no renewal within renew_deadline");
}

#[tokio::test]
async fn release_hands_the_lease_over() {
    let (client, api) = mock_api(Default::default(), lease_server(None));
    let leader = Leadership::elected();
    let mut e = LeaseElector::new(client, cfg("me"), leader.clone());
    e.step().await.unwrap();
    e.release().await.unwrap();
    assert!(!leader.is_leader());
    drop(e);
    let req = api.await.unwrap();
    let put = req.iter().rfind(|r| r.method == "PUT").unwrap();
    assert!(put.body["spec"]["holderIdentity"].is_null(), "{}", put.body);
    assert_eq!(put.body["spec"]["leaseDurationSeconds"], 1);
}

#[tokio::test]
async fn a_reconcile_that_loses_the_lease_after_its_write_sends_nothing() {
    let tl: Timeline = Default::default();
    // The lease is valid for 300 ms after winning it; the status write takes 600 ms.
    let (lease_client, _lease_api) = mock_api(tl.clone(), lease_server(None));
    let leader = Leadership::elected();
    let mut config = cfg("me");
    config.renew_deadline = Duration::from_millis(300);
    let mut e = LeaseElector::new(lease_client, config, leader.clone());
    assert_eq!(e.step().await.unwrap(), Attempt::Leader);

    let web = cluster_json("web", "2.0.0", &[("m1", true), ("m2", false)]);
    let object = web.clone();
    let responder: Responder = Box::new(move |r: &Recorded| {
        if r.method == "PATCH" {
            (200, patched(&object, r, "101"))
        } else if is_event_post(r) {
            created_event(r)
        } else {
            (404, status_failure(404, "NotFound"))
        }
    });
    let (client, api) = mock_api_slow_patches(tl.clone(), responder, Duration::from_millis(600));
    let agents = FakeAgents::new(
        tl.clone(),
        &[
            ("m1", agent("1.0.0", MemberRole::Active)),
            ("m2", agent("1.0.0", MemberRole::Standby)),
        ],
    );
    let h = harness(
        client,
        agents,
        leader.clone(),
        std::slice::from_ref(&web),
        &[],
    );
    let g = Arc::new(serde_json::from_value(web.clone()).unwrap());
    let action = cluster_controller::reconcile(g, h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(!leader.is_leader());
    assert!(
        h.ctx.members.submitted().is_empty(),
        "the step is recorded but never sent by a replica that lost the lease"
    );
    drop(h);
    let req = api.await.unwrap();
    assert_eq!(req.iter().filter(|r| r.method == "PATCH").count(), 1);
}
