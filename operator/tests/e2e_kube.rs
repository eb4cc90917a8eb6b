//! End-to-end tests against any Kubernetes cluster, enabled by `BATON_E2E_KUBECONFIG`.
//!
//! They apply the CRDs from `crds/`, run the operator out of cluster inside the test process
//! (with leader election on a Lease in a throw-away namespace), start demo agents on this
//! host (127.0.0.1, plain HTTP), apply a Mesh of two Clusters in two tiers and check that the
//! upgrade converges tier by tier, that the kubectl plugin shows it done, that a mesh paused
//! through the plugin does not start its backout until resumed, that the backout converges in
//! the reverse order, and that the API server rejects invalid manifests (schema and CEL rules).
//!
//! The cluster must be able to run on this host's view of 127.0.0.1 only in the sense that
//! the *operator* (this process) reaches the agents; the API server never does. Any cluster
//! works: kind, k3d, minikube or a remote one. Without the variable each test prints why it
//! was skipped and passes. See tests/README.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton::api::{Cluster, ClusterPhase, LogScope, Mesh};
use baton::cli::{Intent, Output};
use baton::k8s::leader::LeaseConfig;
use baton::k8s::{AgentCredentials, OperatorConfig};
use baton::kubectl::{self, Scope, StatusOptions};
use baton::reconcile::Timing;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;

mod k8s_mock;
use k8s_mock::start_agent;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const VAR: &str = "BATON_E2E_KUBECONFIG";
const CONVERGE: Duration = Duration::from_secs(300);

fn kubeconfig(test: &str) -> Option<PathBuf> {
    match std::env::var(VAR) {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!(
                "{test}: skipped: set {VAR}=/path/to/kubeconfig to run (any cluster where the \
                 test may install the baton.dev CRDs and create a namespace; see tests/README.md)"
            );
            None
        }
    }
}

async fn client(path: &Path) -> TestResult<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Apply `crds/*.yaml` and wait until both are Established.
async fn install_crds(client: &Client) -> TestResult {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        let name = crd.metadata.name.clone().ok_or("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("baton-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match baton::k8s::http::check_crds(client).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A throw-away namespace, deleted on drop (best effort).
struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client, prefix: &str) -> TestResult<TestNamespace> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
                % 100_000
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace {
            client: client.clone(),
            name,
        })
    }
}

impl TestNamespace {
    /// Delete the namespace and everything in it (waiting for the request, not the deletion).
    async fn delete(mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = api.delete(&self.name, &DeleteParams::background()).await {
            eprintln!("deleting namespace {}: {e}", self.name);
        }
        self.name.clear();
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// Two members (active + standby) per cluster; returns the Cluster manifests.
async fn start_clusters(dir: &Path, names: &[&str]) -> TestResult<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for name in names {
        let (a_ctl, a_data) = start_agent(dir, &format!("{name}-1"), "1.0.0", true, None).await?;
        let (b_ctl, _) =
            start_agent(dir, &format!("{name}-2"), "1.0.0", false, Some(&a_data)).await?;
        out.push(json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "labels": {"e2e": "yes"}},
            "spec": {
                "members": [
                    {"name": format!("{name}-1"), "endpoint": a_ctl, "primary": true},
                    {"name": format!("{name}-2"), "endpoint": b_ctl},
                ],
                "upgrade": {"trafficCheck": {"timeout": "30s"}},
            },
        }));
    }
    Ok(out)
}

/// Start and end of the member steps of a cluster, from its upgrade log.
fn step_span(c: &Cluster, since: i64) -> Option<(i64, i64)> {
    let st = c.status.as_ref()?;
    let entries: Vec<_> = st
        .log
        .iter()
        .filter(|e| e.scope == LogScope::Member && e.start.0 >= since)
        .collect();
    let start = entries.iter().map(|e| e.start.0).min()?;
    let end = entries.iter().filter_map(|e| e.end.map(|t| t.0)).max()?;
    Some((start, end))
}

fn ready_at(c: &Cluster, version: &str) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.phase == ClusterPhase::Ready
            && s.observed_generation == c.metadata.generation
            && !s.members.is_empty()
            && s.members
                .iter()
                .all(|m| m.version.as_deref() == Some(version))
    })
}

async fn wait_converged(
    api: &Api<Cluster>,
    names: &[&str],
    version: &str,
) -> TestResult<Vec<Cluster>> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let mut all = Vec::new();
        for n in names {
            all.push(api.get(n).await?);
        }
        if all.iter().all(|c| ready_at(c, version)) {
            return Ok(all);
        }
        if tokio::time::Instant::now() > deadline {
            let statuses: Vec<_> = all
                .iter()
                .map(|c| {
                    (
                        c.metadata.name.clone(),
                        c.status.as_ref().map(|s| (s.phase, s.message.clone())),
                    )
                })
                .collect();
            return Err(format!("not converged to {version}: {statuses:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_mesh_upgrades_tier_by_tier_and_backs_out_in_reverse() -> TestResult {
    let Some(path) = kubeconfig("e2e_mesh_upgrades_tier_by_tier_and_backs_out_in_reverse") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "baton-e2e").await?;
    let tmp = tempfile::tempdir()?;
    let clusters = start_clusters(tmp.path(), &["first", "second"]).await?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(baton::k8s::run(
        client.clone(),
        OperatorConfig {
            http_addr: None,
            lease: Some(LeaseConfig::new("baton-operator", &ns.name, "e2e-test")),
            agents: AgentCredentials::Given(baton_agent::client::ClientTls::Insecure),
            concurrency: 4,
            watch_namespace: Some(ns.name.clone()),
            timing: Timing::default(),
            identity: "e2e-test".into(),
            crd_check_period: Duration::from_secs(10),
        },
        async {
            let _ = stop_rx.await;
        },
    ));

    let cluster_api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let mesh_api: Api<Mesh> = Api::namespaced(client.clone(), &ns.name);
    for c in &clusters {
        let c: Cluster = serde_json::from_value(c.clone())?;
        cluster_api.create(&PostParams::default(), &c).await?;
    }
    let mesh: Mesh = serde_json::from_value(json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Mesh",
        "metadata": {"name": "e2e"},
        "spec": {"version": "2.0.0", "tiers": [
            {"name": "one", "clusters": ["first"]},
            {"name": "two", "clusters": ["second"]},
        ]},
    }))?;
    mesh_api.create(&PostParams::default(), &mesh).await?;

    let up = wait_converged(&cluster_api, &["first", "second"], "2.0.0").await?;
    let (_, first_end) = step_span(&up[0], 0).ok_or("no steps recorded for first")?;
    let (second_start, second_end) = step_span(&up[1], 0).ok_or("no steps recorded for second")?;
    assert!(
        first_end <= second_start,
        "tier two started ({second_start}) before tier one finished ({first_end})"
    );

    // The kubectl plugin on the same cluster: the tree shows both clusters done.
    let scope = Scope::Namespace(ns.name.clone());
    let tree = kubectl::status(
        &client,
        &scope,
        StatusOptions {
            output: Output::Table,
        },
    )
    .await?;
    for c in ["first", "second"] {
        assert!(
            tree.contains(&format!("cluster/{c}  2.0.0  Ready  ready")),
            "{tree}"
        );
    }

    // Backout: the old version again; the last tier goes first. Paused through the plugin
    // first: nothing moves until it is resumed.
    kubectl::intent(&client, &scope, Intent::Pause(vec!["mesh/e2e".into()])).await?;
    mesh_api
        .patch(
            "e2e",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "1.0.0"}})),
        )
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = mesh_api.get("e2e").await?;
        let paused = m.status.as_ref().is_some_and(|s| {
            s.observed_generation == m.metadata.generation
                && baton::plan::conditions::condition_true(&s.conditions, "Paused")
        });
        if paused {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the mesh never reported Paused: {:?}", m.status).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in ["first", "second"] {
        let c = cluster_api.get(name).await?;
        assert!(
            ready_at(&c, "2.0.0")
                && !c.status.as_ref().is_some_and(|s| s
                    .log
                    .iter()
                    .any(|e| e.scope == LogScope::Member && e.start.0 > second_end)),
            "{name} moved while the mesh was paused: {:?}",
            c.status
        );
    }
    let resumed = kubectl::intent(&client, &scope, Intent::Resume(vec!["mesh/e2e".into()])).await?;
    assert_eq!(resumed, "resumed mesh/e2e");
    let down = wait_converged(&cluster_api, &["first", "second"], "1.0.0").await?;
    let (first_back_start, _) =
        step_span(&down[0], second_end).ok_or("no backout steps for first")?;
    let (_, second_back_end) =
        step_span(&down[1], second_end).ok_or("no backout steps for second")?;
    assert!(
        second_back_end <= first_back_start,
        "backout: tier one moved ({first_back_start}) before tier two was back ({second_back_end})"
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), operator).await???;
    ns.delete().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_invalid_manifests_are_rejected_by_the_api_server() -> TestResult {
    let Some(path) = kubeconfig("e2e_invalid_manifests_are_rejected_by_the_api_server") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "baton-e2e-invalid").await?;
    let api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let cases = [
        (
            "duplicate member names (CEL)",
            json!([{"name": "m", "endpoint": "a.example:1"}, {"name": "m", "endpoint": "b.example:1"}]),
            "1.0.0",
            "member names must be unique",
        ),
        (
            "bad version (schema pattern)",
            json!([{"name": "m", "endpoint": "a.example:1"}]),
            "one.two",
            "spec.version",
        ),
    ];
    for (what, members, version, expected) in cases {
        let c: Cluster = serde_json::from_value(json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "bad"},
            "spec": {"version": version, "members": members},
        }))?;
        match api.create(&PostParams::default(), &c).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{what}: {s:?}");
                assert!(s.message.contains(expected), "{what}: {}", s.message);
            }
            other => panic!("{what}: expected a 422 rejection, got {other:?}"),
        }
    }
    ns.delete().await;
    Ok(())
}
