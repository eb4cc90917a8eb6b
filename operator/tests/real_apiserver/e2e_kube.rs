//! End-to-end tests against any Kubernetes cluster, enabled by `BATON_E2E_KUBECONFIG`;
//! `tests/e2e/apiserver.sh` runs them on a real kube-apiserver started on this machine.
//!
//! They apply the CRDs from `crds/`, run the real `baton operator` binary as a process (as the
//! chart's ServiceAccount when `BATON_E2E_OPERATOR_KUBECONFIG` names its kubeconfig, with leader
//! election on the chart's Lease), start demo agents on this host (127.0.0.1, mutual TLS, the
//! operator's client certificate in a Secret read through `--agent-tls-secret`), apply a Mesh
//! of two Clusters in two tiers and check that the upgrade converges tier by tier, that the
//! kubectl plugin shows it done, that a mesh paused through the plugin does not start its
//! backout until resumed, that the operator killed with -9 in the middle of the backout resumes
//! it without repeating a step, that the backout converges in the reverse order, that a Cluster
//! the operator cannot read holds its Mesh (never Ready), that the operator was never refused
//! (no 403 in its log), and that the API server rejects invalid manifests (schema, list types
//! and CEL rules). Two replicas share the Lease while a switchover waits for an approval given
//! through the plugin binary, and the leader is killed with -9 mid-step; the shipped examples
//! are applied, and the Active/Standby one runs against its `examples/agents.sh` agents.
//!
//! The cluster must be able to run on this host's view of 127.0.0.1 only in the sense that
//! the *operator* (this process) reaches the agents; the API server never does. Any cluster
//! works: kind, k3d, minikube or a remote one. Without the variable each test prints why it
//! was skipped and passes. See tests/README.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton::api::{Cluster, ClusterPhase, LogScope, Mesh, MeshPhase};
use baton::cli::{Intent, Output};
use baton::kubectl::{self, Scope, StatusOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::kube_e2e;
use kube_e2e::{
    TestResult, client, gen_agent_certs, install_crds, publish_agent_secret, ready_at,
    release_namespace, start_mtls_agent,
};

const VAR: &str = "BATON_E2E_KUBECONFIG";
const CONVERGE: Duration = Duration::from_secs(300);

/// A client of the server in the kubeconfig, with the CRDs installed and a fresh namespace
/// named from `prefix`; none (the test skips) without a kubeconfig.
async fn start(test: &str, prefix: &str) -> TestResult<Option<(PathBuf, Client, TestNamespace)>> {
    let Some(path) = kubeconfig(test) else {
        return Ok(None);
    };
    let client = client(&path).await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    Ok(Some((path, client, ns)))
}

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

/// Two members (active + standby) per cluster, over mutual TLS; returns the Cluster manifests.
async fn start_clusters(
    dir: &Path,
    tls: &AgentTls,
    names: &[&str],
) -> TestResult<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for name in names {
        let (a_ctl, a_data) =
            start_mtls_agent(dir, &tls.pki, &format!("{name}-1"), true, None, &[]).await?;
        let (b_ctl, _) = start_mtls_agent(
            dir,
            &tls.pki,
            &format!("{name}-2"),
            false,
            Some(&a_data),
            &[],
        )
        .await?;
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

/// Name of the agent client Secret (the chart's `operator.agentTlsSecret`).
const AGENT_SECRET: &str = "baton-agent-client";

/// Certificates for the demo agents' control API and the operator's client certificate,
/// which lives in a Secret the operator reads through `--agent-tls-secret`.
struct AgentTls {
    pki: PathBuf,
    client: baton_agent::client::ClientTls,
}

impl AgentTls {
    async fn create(dir: &Path, kube: &Client, members: &[String]) -> TestResult<AgentTls> {
        let pki = dir.join("pki");
        gen_agent_certs(&pki, members)?;
        Self::publish(pki, kube).await
    }

    /// Use certificates already made (an example's `.run/certs`): the operator's client
    /// certificate goes into the Secret.
    async fn publish(pki: PathBuf, kube: &Client) -> TestResult<AgentTls> {
        let client = publish_agent_secret(kube, AGENT_SECRET, &pki).await?;
        Ok(AgentTls { client, pki })
    }

    /// The upgrades and rollbacks an agent recorded, in order (`"upgrade 2.0.0"`).
    async fn moves(&self, endpoint: &str) -> TestResult<Vec<String>> {
        use baton_agent::api::{OperationKind, OperationState};
        let agent = baton_agent::client::AgentClient::new(endpoint, self.client.clone())?;
        let mut ops = agent.operations().await?;
        ops.sort_by_key(|o| o.started_at);
        Ok(ops
            .iter()
            .filter(|o| o.state == OperationState::Succeeded)
            .filter_map(|o| {
                let kind = match o.kind {
                    OperationKind::Upgrade => "upgrade",
                    OperationKind::Rollback => "rollback",
                    _ => return None,
                };
                Some(format!(
                    "{kind} {}",
                    o.params.version.clone().unwrap_or_default()
                ))
            })
            .collect())
    }
}

/// The real `baton operator` binary, as a process, logging to a file.
struct OperatorProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn spawn(
        admin: &Path,
        watch: &str,
        _tls: &AgentTls,
        dir: &Path,
        name: &str,
    ) -> TestResult<OperatorProcess> {
        // The chart's ServiceAccount when the harness made one, else the test's own identity.
        let kubeconfig = std::env::var("BATON_E2E_OPERATOR_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|_| admin.to_path_buf());
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("operator")
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--lease-namespace", &release_namespace()])
            .args(["--watch-namespace", watch])
            .args(["--agent-tls-secret", AGENT_SECRET])
            .args(["--concurrency", "4"])
            // Only the CA Secrets' watches can make a changed Secret count sooner than this.
            .args(["--ca-recheck", "10m"])
            .env("RUST_LOG", "info,baton=debug")
            .env("POD_NAME", name)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(OperatorProcess { child, log })
    }

    fn kill9(&mut self) -> TestResult {
        // std's kill is SIGKILL on Unix: no shutdown path runs.
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn stop(&mut self) -> TestResult {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                return Err("the operator did not stop within 60 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn log(&self) -> TestResult<String> {
        Ok(std::fs::read_to_string(&self.log)?)
    }
}

/// The last 40 lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start and end of the member steps of a cluster, from its upgrade log (media copied and
/// preparation checks run ahead of the cluster's turn, or media removed after it, aside).
fn step_span(c: &Cluster, since: i64) -> Option<(i64, i64)> {
    let st = c.status.as_ref()?;
    let entries: Vec<_> = st
        .log
        .iter()
        .filter(|e| e.scope == LogScope::Member && e.start.0 >= since)
        // Steps ahead of (or after) the cluster's turn: media, preparation checks.
        .filter(|e| {
            !matches!(
                e.action.as_str(),
                "stage-media" | "remove-media" | "prepare"
            )
        })
        .collect();
    let start = entries.iter().map(|e| e.start.0).min()?;
    let end = entries.iter().filter_map(|e| e.end.map(|t| t.0)).max()?;
    Some((start, end))
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
    let test = "e2e_mesh_upgrades_tier_by_tier_and_backs_out_in_reverse";
    let Some((path, client, ns)) = start(test, "baton-e2e").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let members: Vec<String> = ["first", "second"]
        .iter()
        .flat_map(|c| [format!("{c}-1"), format!("{c}-2")])
        .collect();
    let tls = AgentTls::create(tmp.path(), &client, &members).await?;
    let clusters = start_clusters(tmp.path(), &tls, &["first", "second"]).await?;
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-1")?;

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
        // Their target is the old version now, so they wait (not Ready) for an admission that
        // the paused mesh does not give: every member still runs 2.0.0 and no step started.
        let c = cluster_api.get(name).await?;
        let st = c.status.as_ref().ok_or("no status")?;
        assert!(
            !st.members.is_empty()
                && st
                    .members
                    .iter()
                    .all(|m| m.version.as_deref() == Some("2.0.0"))
                && !st
                    .log
                    .iter()
                    .any(|e| e.scope == LogScope::Member && e.start.0 > second_end),
            "{name} moved while the mesh was paused: {st:?}"
        );
        assert_ne!(st.phase, ClusterPhase::Ready, "{name}: target is 1.0.0 now");
    }
    let resumed = kubectl::intent(&client, &scope, Intent::Resume(vec!["mesh/e2e".into()])).await?;
    assert_eq!(resumed, "resumed mesh/e2e");
    // kill -9 in the middle of the backout (once a step of it is recorded), then a new process.
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let c = cluster_api.get("second").await?;
        let moving = c.status.as_ref().is_some_and(|s| {
            s.log
                .iter()
                .any(|e| e.scope == LogScope::Member && e.start.0 > second_end)
        });
        if moving {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the backout never started: {:?}", c.status).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.kill9()?;
    let killed_log = operator.log()?;
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-2")?;
    let down = wait_converged(&cluster_api, &["first", "second"], "1.0.0").await?;
    let (first_back_start, _) =
        step_span(&down[0], second_end).ok_or("no backout steps for first")?;
    let (_, second_back_end) =
        step_span(&down[1], second_end).ok_or("no backout steps for second")?;
    assert!(
        second_back_end <= first_back_start,
        "backout: tier one moved ({first_back_start}) before tier two was back ({second_back_end})"
    );
    // No step was done twice across the kill: every member moved once up and once down, as
    // its agent recorded (operation ids are derived from the recorded steps).
    for c in &down {
        for m in &c.spec.members {
            let moves = tls.moves(&m.endpoint).await?;
            assert_eq!(
                moves,
                ["upgrade 2.0.0", "rollback 1.0.0"],
                "{}: agent operations across the kill",
                m.name
            );
        }
    }

    // A Cluster the operator cannot deserialize (a duration that overflows): it is Stalled,
    // and the Mesh that claims it is not Ready and says why.
    // Through a guarded Api: the answer is the same object, which this client cannot read either.
    Api::<kube::core::DeserializeGuard<Cluster>>::namespaced(client.clone(), &ns.name)
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"upgrade": {"syncTimeout": "99999999999999999999h"}}})),
        )
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = mesh_api.get("e2e").await?;
        let held = m.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Stalled"
                    && c.status == "True"
                    && c.reason == "ClusterUnreadable"
                    && c.message.contains("first")
            }) && !baton::plan::conditions::condition_true(&s.conditions, "Ready")
        });
        if held {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the mesh did not hold on an unreadable cluster: {:?}",
                m.status
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    operator.stop()?;
    for (name, log) in [("op-1", killed_log), ("op-2", operator.log()?)] {
        assert!(
            // kube reports a refusal as `reason: "Forbidden", code: 403`.
            !log.to_lowercase().contains("forbidden") && !log.contains("code: 403"),
            "{name}: the operator was refused by RBAC:\n{log}"
        );
    }
    ns.delete().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_invalid_manifests_are_rejected_by_the_api_server() -> TestResult {
    let test = "e2e_invalid_manifests_are_rejected_by_the_api_server";
    let Some((_, client, ns)) = start(test, "baton-e2e-invalid").await? else {
        return Ok(());
    };
    let api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let cases = [
        (
            "duplicate member names (list map keyed by name)",
            json!([{"name": "m", "endpoint": "a.example:1"}, {"name": "m", "endpoint": "b.example:1"}]),
            "1.0.0",
            "Duplicate value",
        ),
        (
            "only spares (CEL)",
            json!([{"name": "m", "endpoint": "a.example:1", "spare": true}]),
            "1.0.0",
            "at least one member must not be a spare",
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

/// The Lease holder's identity (the `POD_NAME` of the replica that leads), if any.
async fn lease_holder(client: &Client) -> TestResult<Option<String>> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &release_namespace());
    Ok(api
        .get_opt("baton-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

/// Poll `what` every 200 ms until it returns `Some`, failing after `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, f: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = TestResult<Option<T>>>,
{
    until_every(limit, Duration::from_millis(200), what, f).await
}

/// [`until`], looking every `every`.
async fn until_every<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut f: F,
) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = TestResult<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(every).await;
    }
}

/// `baton` as the kubectl plugin (`kubectl baton ...`), as a user runs it.
fn plugin(admin: &Path, ns: &str, args: &[&str]) -> TestResult<std::process::Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--kubeconfig")
        .arg(admin)
        .args(["-n", ns])
        .args(args)
        .output()?)
}

fn assert_never_refused(name: &str, log: &str) {
    assert!(
        // kube reports a refusal as `reason: "Forbidden", code: 403`.
        !log.to_lowercase().contains("forbidden") && !log.contains("code: 403"),
        "{name}: the operator was refused by RBAC:\n{log}"
    );
}

/// Two replicas on the chart's Lease, a cluster under `Approval` supervision: only the leader
/// acts; the step waits for an approval given through the plugin binary (a typo is refused and
/// writes nothing); the leader is killed with -9 while the old active upgrades, and the other
/// replica takes over within the Lease's bounds and finishes without repeating a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_two_replicas_fail_over_and_a_switchover_waits_for_approval() -> TestResult {
    let test = "e2e_two_replicas_fail_over_and_a_switchover_waits_for_approval";
    let Some((path, client, ns)) = start(test, "baton-e2e-ha").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let members = vec!["ha-1".to_string(), "ha-2".to_string()];
    let tls = AgentTls::create(tmp.path(), &client, &members).await?;
    // Upgrades slow enough to kill the leader in the middle of one.
    let slow = ["--upgrade-seconds", "6"];
    let (a_ctl, a_data) = start_mtls_agent(tmp.path(), &tls.pki, "ha-1", true, None, &slow).await?;
    let (b_ctl, _) =
        start_mtls_agent(tmp.path(), &tls.pki, "ha-2", false, Some(&a_data), &slow).await?;
    let mut replicas = [
        OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "replica-a")?,
        OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "replica-b")?,
    ];
    let names = ["replica-a", "replica-b"];
    let api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "ha"},
        "spec": {
            "version": "2.0.0",
            "members": [
                {"name": "ha-1", "endpoint": a_ctl, "primary": true},
                {"name": "ha-2", "endpoint": b_ctl},
            ],
            "upgrade": {"supervision": "Approval", "trafficCheck": {"timeout": "30s"}},
        },
    }))?;
    api.create(&PostParams::default(), &cluster).await?;

    let step = "switchover/ha/ha-2@2.0.0";
    until(CONVERGE, "the approval gate", || async {
        let c = api.get("ha").await?;
        Ok(c.status
            .filter(|s| baton::plan::conditions::condition_true(&s.conditions, "AwaitingApproval"))
            .filter(|s| s.message.as_deref().is_some_and(|m| m.contains(step))))
    })
    .await?;
    // Waiting means waiting: nothing switches over without the approval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = api.get("ha").await?;
    let st = c.status.as_ref().ok_or("no status")?;
    assert!(
        st.members
            .iter()
            .any(|m| m.name == "ha-1" && m.role == baton::api::MemberRole::Active),
        "switched over before the approval: {st:?}"
    );

    // A typo in the member is refused and writes nothing.
    let typo = plugin(&path, &ns.name, &["approve", "switchover/ha/ha-9@2.0.0"])?;
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success(), "a typo was accepted: {stderr}");
    assert!(stderr.contains("has no member \"ha-9\""), "{stderr}");
    let annotations = api
        .get("ha")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key("baton.dev/approve"),
        "{annotations:?}"
    );
    let ok = plugin(&path, &ns.name, &["approve", step])?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains(&format!("approved {step}")),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // Kill the leader once the old active's upgrade is under way.
    until(CONVERGE, "the old active's upgrade", || async {
        let c = api.get("ha").await?;
        Ok(c.status.filter(|s| {
            s.log.iter().any(|e| {
                e.scope == LogScope::Member
                    && e.action == "upgrade"
                    && e.target == "ha-1"
                    && e.result == baton::api::LogResult::Running
            })
        }))
    })
    .await?;
    let leader = lease_holder(&client)
        .await?
        .ok_or("nobody holds the Lease")?;
    let at = names
        .iter()
        .position(|n| *n == leader)
        .ok_or_else(|| format!("unexpected Lease holder {leader:?}"))?;
    let killed = std::time::Instant::now();
    replicas[at].kill9()?;
    let survivor = names[1 - at];
    until(
        Duration::from_secs(60),
        "the other replica to take the Lease",
        || async { Ok((lease_holder(&client).await?.as_deref() == Some(survivor)).then_some(())) },
    )
    .await?;
    let takeover = killed.elapsed();
    println!(
        "{test}: {survivor} took over {:.1} s after kill -9 of {leader}",
        takeover.as_secs_f64()
    );
    // The Lease lasts 15 s; a bound above it leaves room for the renew period and the poll.
    assert!(
        takeover < Duration::from_secs(30),
        "takeover took {takeover:?}"
    );

    let done = wait_converged(&api, &["ha"], "2.0.0").await?;
    let st = done[0].status.as_ref().ok_or("no status")?;
    assert!(
        st.acknowledged
            .iter()
            .any(|a| a == &format!("approve:{step}")),
        "{:?}",
        st.acknowledged
    );
    for m in &done[0].spec.members {
        assert_eq!(
            tls.moves(&m.endpoint).await?,
            ["upgrade 2.0.0"],
            "{}: agent operations across the failover",
            m.name
        );
    }
    for (i, r) in replicas.iter_mut().enumerate() {
        if i != at {
            r.stop()?;
        }
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_never_refused(names[i], &r.log()?);
    }
    ns.delete().await;
    Ok(())
}

/// The shipped examples as a user runs them on Kubernetes: every manifest set is accepted by
/// the API server (server-side dry run), and the Active/Standby deployment runs for real
/// against its demo agents (`examples/agents.sh`, its certificates in the operator's Secret)
/// to Ready at its target, tier by tier, every server holding its media before its upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_the_examples_apply_and_the_active_standby_deployment_converges() -> TestResult {
    let test = "e2e_the_examples_apply_and_the_active_standby_deployment_converges";
    let Some((path, client, ns)) = start(test, "baton-e2e-examples").await? else {
        return Ok(());
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // A directory whose hosts run the exec backend also holds its configuration, which is
    // not a Kubernetes object: its manifest is applied alone.
    for ex in [
        "active-standby",
        "multi-master",
        "layered-stack",
        "member-addition/cluster.yaml",
    ] {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&path)
            .args(["apply", "--dry-run=server", "-n", &ns.name, "-f"])
            .arg(examples.join(ex))
            .output()?;
        assert!(
            out.status.success(),
            "{ex} refused by the API server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let tmp = tempfile::tempdir()?;
    let agents = ExampleAgents::start(tmp.path(), "active-standby")?;
    let dir = agents.dir.clone();
    let tls = AgentTls::publish(dir.join(".run/certs"), &client).await?;
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-examples")?;
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(["apply", "--server-side", "-n", &ns.name, "-f"])
        .arg(&dir)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let names = ["cmp-primary", "cmp-secondary", "mpe-1", "mpe-2", "mra-1"];
    let present: Vec<String> = api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for n in names {
        assert!(
            present.iter().any(|p| p == n),
            "{n} not applied: {present:?}"
        );
    }
    let done = match wait_converged(&api, &names, "12.7.0").await {
        Ok(done) => done,
        Err(e) => return Err(format!("{e}\noperator log:\n{}", tail(&operator.log()?)).into()),
    };
    let span = |i: usize| step_span(&done[i], 0).ok_or(format!("no steps for {}", names[i]));
    let (_, primary_end) = span(0)?;
    let (secondary_start, secondary_end) = span(1)?;
    assert!(
        primary_end <= secondary_start,
        "management tiers overlapped"
    );
    for (c, name) in done.iter().zip(names).skip(2) {
        let (start, _) = step_span(c, 0).ok_or(format!("no steps for {name}"))?;
        assert!(
            secondary_end <= start,
            "worker {name} started before the management tiers were done"
        );
    }
    // Every server held the media of 12.7.0 before its upgrade (the example's agents refuse
    // an upgrade without it) and holds only that media now.
    for (c, name) in done.iter().zip(names) {
        let st = c.status.as_ref().ok_or("no status")?;
        for m in &st.members {
            assert_eq!(m.media, ["12.7.0"], "{name}/{}", m.name);
            let staged = st
                .log
                .iter()
                .find(|e| e.action == "stage-media" && e.target == m.name)
                .and_then(|e| e.end)
                .ok_or(format!("{name}/{}: no stage-media step", m.name))?;
            let upgraded = st
                .log
                .iter()
                .find(|e| e.action == "upgrade" && e.target == m.name)
                .ok_or(format!("{name}/{}: no upgrade step", m.name))?;
            assert!(staged <= upgraded.start, "{name}/{}", m.name);
        }
    }
    let mesh = Api::<Mesh>::namespaced(client.clone(), &ns.name)
        .get("policy")
        .await?;
    assert!(
        mesh.status
            .as_ref()
            .is_some_and(|s| baton::plan::conditions::condition_true(&s.conditions, "Ready")),
        "{:?}",
        mesh.status
    );
    operator.stop()?;
    assert_never_refused("op-examples", &operator.log()?);
    ns.delete().await;
    Ok(())
}

/// A private copy of `examples/<name>` (agents.sh writes certificates, pids and logs under its
/// `.run/`) with the demo agents its `agents.tsv` describes running; stopped on drop.
struct ExampleAgents {
    dir: PathBuf,
}

impl ExampleAgents {
    fn start(tmp: &Path, name: &str) -> TestResult<ExampleAgents> {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir)?;
        for f in std::fs::read_dir(examples.join(name))? {
            let f = f?;
            if f.file_type()?.is_file() {
                std::fs::copy(f.path(), dir.join(f.file_name()))?;
            }
        }
        let agents = ExampleAgents { dir };
        let started = agents.script("start")?;
        assert!(
            started.status.success(),
            "agents.sh start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        Ok(agents)
    }

    fn script(&self, cmd: &str) -> TestResult<std::process::Output> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents.sh");
        let agent = Path::new(env!("CARGO_BIN_EXE_baton")).with_file_name("baton-agent");
        let mut c = std::process::Command::new("bash");
        c.arg(&script)
            .arg(cmd)
            .arg(&self.dir)
            .env("UPGRADE_SECONDS", "1")
            .env("TASK_SECONDS", "0.3");
        // The workspace build put it beside `baton`; without it agents.sh builds one.
        if agent.exists() {
            c.env("BATON_AGENT", &agent);
        }
        Ok(c.output()?)
    }
}

impl Drop for ExampleAgents {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// The multi-master example on Kubernetes against its demo agents: the Mesh admits the source
/// core, then asks core-a (through its admission) to upload the content once; core-a's
/// controller records and runs the task; the destinations start only after it succeeded. The
/// agents' records hold exactly one `task` operation, on core-a's server. The deferred
/// satellites leave the mesh Ready with them behind (the `LAGGING` column of `kubectl get
/// meshes`) and move only once the plugin approves their tier (a tier that waits for no
/// approval is refused and writes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_the_multi_master_mesh_uploads_its_content_once_between_the_tiers() -> TestResult {
    let test = "e2e_the_multi_master_mesh_uploads_its_content_once_between_the_tiers";
    let Some((path, client, ns)) = start(test, "baton-e2e-mm").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let agents = ExampleAgents::start(tmp.path(), "multi-master")?;
    let certs = agents.dir.join(".run/certs");
    let tls = AgentTls::publish(certs.clone(), &client).await?;
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-mm")?;
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(["apply", "--server-side", "-n", &ns.name, "-f"])
        .arg(agents.dir.join("mesh.yaml"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let names = ["core-a", "core-b", "core-c", "core-d"];
    let done = match wait_converged(&api, &names, "10.3.0").await {
        Ok(done) => done,
        Err(e) => return Err(format!("{e}\noperator log:\n{}", tail(&operator.log()?)).into()),
    };
    // The mesh is Ready once the task succeeded too (it may lag its clusters by a pass).
    let meshes: Api<Mesh> = Api::namespaced(client.clone(), &ns.name);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mesh = loop {
        let m = meshes.get("cores").await?;
        if m.status
            .as_ref()
            .is_some_and(|s| s.phase == MeshPhase::Ready)
        {
            break m;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("mesh not Ready: {:?}", m.status).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let st = mesh.status.as_ref().ok_or("no mesh status")?;
    let [task] = st.tasks.as_slice() else {
        return Err(format!("one task expected: {:?}", st.tasks).into());
    };
    assert_eq!(task.name, "upload-content");
    assert_eq!(task.state, baton::api::TaskState::Succeeded);
    assert_eq!(task.member.as_deref(), Some("server"));
    let entry = st
        .log
        .iter()
        .find(|e| e.action == "task")
        .ok_or("no task entry in the mesh log")?;
    assert_eq!(entry.result, baton::api::LogResult::Succeeded);
    // Between the tiers: after core-a's upgrade, before any destination's first step.
    let task_step = done[0]
        .status
        .as_ref()
        .and_then(|s| s.log.iter().find(|e| e.action == "task"))
        .ok_or("no task step in core-a's log")?;
    let task_end = task_step.end.ok_or("task step not finished")?.0;
    for c in &done[1..] {
        let (start, _) = step_span(c, 0).ok_or("no steps")?;
        assert!(
            task_end <= start,
            "{:?} moved before the content was uploaded",
            c.metadata.name
        );
    }
    // Once, on core-a's server, as the agents recorded it.
    let read = |f: &str| std::fs::read_to_string(certs.join(f));
    let shared = baton_agent::client::ClientTls::mtls(
        read("ca.crt")?,
        read("client.crt")?,
        read("client.key")?,
    )
    .share()?;
    let mut tasks = vec![];
    for (core, port) in [
        ("core-a", 7301),
        ("core-b", 7311),
        ("core-c", 7321),
        ("core-d", 7331),
    ] {
        let agent = baton_agent::client::AgentClient::with_shared(
            &format!("https://127.0.0.1:{port}"),
            &shared,
        )?;
        for r in agent.operations().await? {
            if r.kind == baton_agent::api::OperationKind::Task {
                tasks.push((core, r.params.task.clone(), r.state));
            }
        }
    }
    assert_eq!(
        tasks,
        [(
            "core-a",
            Some("upload-content".to_string()),
            baton_agent::api::OperationState::Succeeded
        )]
    );

    // The satellites are deferred behind an approval: the rollout is done (Ready) with them
    // behind, which `kubectl get meshes` shows, and they do not move.
    assert_eq!(st.lagging.as_deref(), Some("satellites 0/2"), "{st:?}");
    let sat_tier = st
        .tiers
        .iter()
        .find(|t| t.name == "satellites")
        .and_then(|t| t.deferred.as_ref())
        .ok_or("no deferred status on the satellites tier")?;
    assert_eq!(
        sat_tier.waiting_for,
        Some(baton::api::DeferredWait::Approval)
    );
    let approval = "tier/cores/satellites@10.3.0";
    assert_eq!(sat_tier.approval.as_deref(), Some(approval));
    let get = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(["get", "meshes", "-n", &ns.name])
        .output()?;
    let table = String::from_utf8_lossy(&get.stdout);
    assert!(
        table.contains("LAGGING") && table.contains("satellites 0/2"),
        "{table}"
    );
    let sats = ["sat-north", "sat-south"];
    let sat_agent = |port: u16| {
        baton_agent::client::AgentClient::with_shared(&format!("https://127.0.0.1:{port}"), &shared)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    for port in [7341, 7351] {
        let moved = sat_agent(port)?
            .operations()
            .await?
            .into_iter()
            .filter(|r| r.kind == baton_agent::api::OperationKind::Upgrade)
            .count();
        assert_eq!(moved, 0, "a satellite moved before its approval");
    }
    // The plugin refuses a tier that waits for no approval, and writes nothing.
    let wrong = plugin(
        &path,
        &ns.name,
        &["approve", "tier/cores/destinations@10.3.0"],
    )?;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(stderr.contains("is not a deferred tier"), "{stderr}");
    let annotations = meshes
        .get("cores")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key("baton.dev/approve"),
        "{annotations:?}"
    );
    // Each satellite ran its preparation checks ahead: the scheduled job it drops waits for an
    // acknowledgement naming its digest (on the cores it was only recorded).
    let core_a = api.get("core-a").await?;
    let prep = core_a
        .status
        .as_ref()
        .and_then(|s| s.preparation.clone())
        .ok_or("core-a has no preparation")?;
    assert!(prep.acknowledged && prep.findings.len() == 1, "{prep:?}");
    let mut acks = vec![];
    for sat in ["sat-north", "sat-south"] {
        let c = until(CONVERGE, "a satellite's preparation verdict", || async {
            let c = api.get(sat).await?;
            Ok(c.status
                .as_ref()
                .and_then(|s| s.preparation.as_ref())
                .is_some_and(|p| p.digest.is_some())
                .then_some(c))
        })
        .await?;
        let st = c.status.as_ref().ok_or("no status")?;
        let prep = st.preparation.as_ref().ok_or("no preparation")?;
        assert!(!prep.acknowledged, "{prep:?}");
        assert_eq!(prep.findings[0].code, "ScheduledJobDropped", "{prep:?}");
        let ack = format!(
            "prepare/{sat}@10.3.0#{}",
            prep.digest.as_deref().unwrap_or_default()
        );
        assert_eq!(
            st.message.as_deref(),
            Some(format!("awaiting approval of {ack}").as_str())
        );
        acks.push(ack);
    }
    for step in acks.iter().map(String::as_str).chain([approval]) {
        let ok = plugin(&path, &ns.name, &["approve", step])?;
        assert!(
            ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("approved"),
            "{step}: {} {}",
            String::from_utf8_lossy(&ok.stdout),
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let sat_done = match wait_converged(&api, &sats, "10.3.0").await {
        Ok(done) => done,
        Err(e) => return Err(format!("{e}\noperator log:\n{}", tail(&operator.log()?)).into()),
    };
    let last_core = done
        .iter()
        .filter_map(|c| c.status.as_ref()?.log.iter().filter_map(|e| e.end).max())
        .max()
        .ok_or("no core step ended")?;
    for c in &sat_done {
        let (start, _) = step_span(c, 0).ok_or("no satellite steps")?;
        let st = c.status.as_ref().ok_or("no satellite status")?;
        assert!(
            last_core.0 <= start,
            "{:?} moved before the cores were done",
            c.metadata.name
        );
        assert!(
            st.preparation.as_ref().is_some_and(|p| p.acknowledged),
            "{:?}",
            st.preparation
        );
    }
    let mesh = until(CONVERGE, "the mesh to see the satellites done", || async {
        let m = meshes.get("cores").await?;
        Ok(m.status
            .as_ref()
            .is_some_and(|s| s.phase == MeshPhase::Ready && s.lagging.is_none())
            .then_some(m))
    })
    .await?;
    let st = mesh.status.as_ref().ok_or("no mesh status")?;
    assert!(
        st.acknowledged
            .iter()
            .any(|a| a == &format!("approve:{approval}")),
        "{:?}",
        st.acknowledged
    );
    assert!(
        st.log.iter().any(|e| e.action == "approve"),
        "no approve entry in the mesh log"
    );
    operator.stop()?;
    assert_never_refused("op-mm", &operator.log()?);
    ns.delete().await;
    Ok(())
}

/// The CA Secret the chart lets the operator read in CI (`certificates.caSecretNames`).
const CA_SECRET: &str = "baton-e2e-ca";

/// The reason of a Cluster's `Stalled` condition, when it is stalled.
fn stalled_reason(c: &Cluster) -> Option<String> {
    let st = c.status.as_ref()?;
    st.conditions
        .iter()
        .find(|x| x.type_ == "Stalled" && x.status == "True")
        .map(|x| x.reason.clone())
}

/// `spec.certificates` against a real API server and the chart's RBAC: a missing CA Secret,
/// then one holding garbage, each stall the Cluster with its reason and contact no member about
/// certificates; a Secret outside `certificates.caSecretNames` is reported as forbidden; the
/// real CA then written into the Secret (without restarting the operator) rotates the
/// members' trust and certificates to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_ca_secret_rotates_a_cluster_and_bad_secrets_stall_it() -> TestResult {
    use baton_agent::pki::CertAuthority;
    use k8s_openapi::api::core::v1::Secret;
    let test = "e2e_a_ca_secret_rotates_a_cluster_and_bad_secrets_stall_it";
    let Some((path, client, ns)) = start(test, "baton-e2e-ca").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let members: Vec<String> = vec!["web-1".into(), "web-2".into()];
    let tls = AgentTls::create(tmp.path(), &client, &members).await?;
    let mut web = start_clusters(tmp.path(), &tls, &["web"]).await?.remove(0);
    web["spec"]["version"] = json!("1.0.0");
    web["spec"]["certificates"] = json!({"caSecretRef": {"name": CA_SECRET}, "clientGrace": "1s"});
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-ca")?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(web.clone())?,
        )
        .await?;
    let stalled_with = |reason: &'static str| {
        let clusters = clusters.clone();
        async move {
            until(CONVERGE, reason, || async {
                let c = clusters.get("web").await?;
                Ok((stalled_reason(&c).as_deref() == Some(reason)).then_some(c))
            })
            .await
        }
    };
    stalled_with("CASecretNotFound").await?;
    let secret = |data: serde_json::Value| -> TestResult<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": CA_SECRET}, "stringData": data,
        }))?)
    };
    secrets
        .create(
            &PostParams::default(),
            &secret(json!({"ca.crt": "not a certificate"}))?,
        )
        .await?;
    // The Secret's watch wakes the stalled Cluster (it would otherwise wait for its 60 s
    // resync, the CA recheck being 10 minutes here).
    let created = std::time::Instant::now();
    let c = stalled_with("CASecretInvalidPEM").await?;
    assert!(
        created.elapsed() < Duration::from_secs(15),
        "a new Secret took {:?} to be read; the operator's CA watch said:\n{}",
        created.elapsed(),
        ca_watch_lines(&operator)?
    );
    let message = c.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains(CA_SECRET), "{message}");
    // Nothing about certificates was sent while the CA was unusable.
    let agents: Vec<baton_agent::client::AgentClient> = web["spec"]["members"]
        .as_array()
        .ok_or("members")?
        .iter()
        .map(|m| {
            let endpoint = m["endpoint"].as_str().unwrap_or_default();
            baton_agent::client::AgentClient::new(endpoint, tls.client.clone())
        })
        .collect::<Result<_, _>>()?;
    for a in &agents {
        let ops = a.operations().await?;
        assert!(
            ops.is_empty(),
            "operations sent with an unusable CA: {ops:?}"
        );
    }

    // A Secret the chart does not name: the operator may not read it, and says so.
    if std::env::var("BATON_E2E_OPERATOR_KUBECONFIG").is_ok() {
        let mut other = web.clone();
        other["metadata"]["name"] = json!("other");
        other["spec"]["certificates"]["caSecretRef"]["name"] = json!("not-listed-ca");
        clusters
            .create(&PostParams::default(), &serde_json::from_value(other)?)
            .await?;
        until(CONVERGE, "CASecretForbidden", || async {
            let c = clusters.get("other").await?;
            Ok((stalled_reason(&c).as_deref() == Some("CASecretForbidden")).then_some(()))
        })
        .await?;
        clusters.delete("other", &DeleteParams::default()).await?;
    }

    // The real CA, written into the same Secret: the rotation runs without an operator restart.
    let ca = CertAuthority::generate("e2e rotated CA")?;
    secrets
        .replace(
            CA_SECRET,
            &PostParams::default(),
            &secret(json!({"ca.crt": ca.cert_pem(), "ca.key": ca.key_pem()}))?,
        )
        .await?;
    let replaced = std::time::Instant::now();
    until(CONVERGE, "the rotation to start", || async {
        let c = clusters.get("web").await?;
        let target = c
            .status
            .and_then(|s| s.certificates)
            .and_then(|c| c.target_ca);
        Ok((target.as_deref() == Some(ca.fingerprint())).then_some(()))
    })
    .await?;
    assert!(
        replaced.elapsed() < Duration::from_secs(15),
        "a changed Secret took {:?} to start the rotation; the operator's CA watch said:\n{}",
        replaced.elapsed(),
        ca_watch_lines(&operator)?
    );
    let done = until(CONVERGE, "the rotation to complete", || async {
        let c = clusters.get("web").await?;
        let st = c.status.clone().unwrap_or_default();
        let phase = st.certificates.as_ref().and_then(|x| x.phase.clone());
        Ok((phase.as_deref() == Some("Done") && st.phase == ClusterPhase::Ready).then_some(c))
    })
    .await?;
    let target = done
        .status
        .and_then(|s| s.certificates)
        .and_then(|c| c.target_ca);
    assert_eq!(target.as_deref(), Some(ca.fingerprint()));
    for a in &agents {
        let s = a.status().await?;
        assert_eq!(s.trust, [ca.fingerprint()], "{}", s.member);
        let issuer = s.certificate.and_then(|c| c.issuer_fingerprint);
        assert_eq!(issuer.as_deref(), Some(ca.fingerprint()), "{}", s.member);
        assert_eq!(
            s.handshake_failures.total(),
            0,
            "{}: {:?}",
            s.member,
            s.handshake_failures
        );
    }
    operator.stop()?;
    ns.delete().await;
    Ok(())
}

/// What the operator logged about its CA Secret watches (for a failure's message).
fn ca_watch_lines(op: &OperatorProcess) -> TestResult<String> {
    Ok(op
        .log()?
        .lines()
        .filter(|l| l.contains("Secret"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A Mesh declares the CA: both its clusters rotate to it together, the Mesh's status says
/// where the mesh-wide rotation stands, and a Cluster of the mesh that declares other
/// certificates of its own is Stalled (`CertificatesInMesh`) and sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_mesh_ca_rotates_every_cluster_of_the_mesh() -> TestResult {
    use baton_agent::pki::CertAuthority;
    use k8s_openapi::api::core::v1::Secret;
    let test = "e2e_a_mesh_ca_rotates_every_cluster_of_the_mesh";
    let Some((path, client, ns)) = start(test, "baton-e2e-mesh-ca").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let names = ["web", "db", "own"];
    let members: Vec<String> = names
        .iter()
        .flat_map(|c| [format!("{c}-1"), format!("{c}-2")])
        .collect();
    let tls = AgentTls::create(tmp.path(), &client, &members).await?;
    let clusters = start_clusters(tmp.path(), &tls, &names).await?;
    let ca = CertAuthority::generate("e2e mesh CA")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": CA_SECRET},
                "stringData": {"ca.crt": ca.cert_pem(), "ca.key": ca.key_pem()},
            }))?,
        )
        .await?;
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-mesh-ca")?;
    let cluster_api: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    let mesh_api: Api<Mesh> = Api::namespaced(client.clone(), &ns.name);
    for mut c in clusters.clone() {
        if c["metadata"]["name"] == "own" {
            // Its own certificates, other than the mesh's.
            c["spec"]["certificates"] =
                json!({"caSecretRef": {"name": CA_SECRET}, "keepOldTrust": true});
        }
        cluster_api
            .create(&PostParams::default(), &serde_json::from_value(c)?)
            .await?;
    }
    let mesh: Mesh = serde_json::from_value(json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Mesh",
        "metadata": {"name": "fleet"},
        "spec": {
            "version": "1.0.0",
            "tiers": [{"name": "all", "clusters": ["web", "db", "own"]}],
            "certificates": {"caSecretRef": {"name": CA_SECRET}, "clientGrace": "1s"},
        },
    }))?;
    mesh_api.create(&PostParams::default(), &mesh).await?;

    let own = until(CONVERGE, "CertificatesInMesh", || async {
        let c = cluster_api.get("own").await?;
        Ok((stalled_reason(&c).as_deref() == Some("CertificatesInMesh")).then_some(c))
    })
    .await?;
    let message = own.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("mesh fleet"), "{message}");
    // The stalled cluster holds the mesh's phase; remove its own declaration and it joins.
    cluster_api
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"certificates": null}})),
        )
        .await?;
    let done = until(CONVERGE, "the mesh-wide rotation to complete", || async {
        let m = mesh_api.get("fleet").await?;
        let st = m.status.clone().unwrap_or_default();
        let phase = st.certificates.as_ref().and_then(|c| c.phase.clone());
        Ok((phase.as_deref() == Some("Done") && st.phase == MeshPhase::Ready).then_some(m))
    })
    .await?;
    let c = done.status.and_then(|s| s.certificates).unwrap_or_default();
    assert_eq!(c.target_ca.as_deref(), Some(ca.fingerprint()));
    assert_eq!(c.clusters.len(), 3, "{:?}", c.clusters);
    assert!(c.clusters.values().all(|p| p == "Done"), "{:?}", c.clusters);
    for c in &clusters {
        for m in c["spec"]["members"].as_array().ok_or("members")? {
            let endpoint = m["endpoint"].as_str().unwrap_or_default();
            let a = baton_agent::client::AgentClient::new(endpoint, tls.client.clone())?;
            let s = a.status().await?;
            assert_eq!(s.trust, [ca.fingerprint()], "{}", s.member);
            let issuer = s.certificate.and_then(|c| c.issuer_fingerprint);
            assert_eq!(issuer.as_deref(), Some(ca.fingerprint()), "{}", s.member);
            assert_eq!(s.handshake_failures.total(), 0, "{}", s.member);
        }
    }
    operator.stop()?;
    ns.delete().await;
    Ok(())
}

/// Issue 15 on a real API server: a member added to a live Cluster joins (its configuration
/// copied from the active, identities exchanged, replicating) and the active, removed from the
/// spec, hands over, retires and is forgotten; an Event for each, the status tree on the way,
/// the operator never refused by RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_members_are_added_and_removed_on_a_live_cluster() -> TestResult {
    use k8s_openapi::api::core::v1::Event;
    let test = "e2e_members_are_added_and_removed_on_a_live_cluster";
    let Some((path, client, ns)) = start(test, "baton-e2e-topo").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let names: Vec<String> = ["web-1", "web-2", "web-3"].map(String::from).to_vec();
    let tls = AgentTls::create(tmp.path(), &client, &names).await?;
    let mut web = start_clusters(tmp.path(), &tls, &["web"]).await?.remove(0);
    web["spec"]["version"] = json!("1.0.0");
    let mut operator = OperatorProcess::spawn(&path, &ns.name, &tls, tmp.path(), "op-topo")?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns.name);
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(web.clone())?,
        )
        .await?;
    wait_converged(&clusters, &["web"], "1.0.0").await?;

    // A third member: a fresh agent, replicating from nobody, added to the live object.
    let (c3, _) = start_mtls_agent(tmp.path(), &tls.pki, "web-3", false, None, &[]).await?;
    let mut members = web["spec"]["members"]
        .as_array()
        .cloned()
        .ok_or("members")?;
    members.push(json!({"name": "web-3", "endpoint": c3}));
    clusters
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members.clone()}})),
        )
        .await?;
    // The kubectl plugin's tree, sampled on the way: the row of a member joining or leaving.
    let scope = Scope::Namespace(ns.name.clone());
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let sample = |member: &'static str, change: &'static str| {
        let (client, scope, seen) = (&client, &scope, &seen);
        async move {
            let opts = StatusOptions {
                output: Output::Table,
            };
            let tree = kubectl::status(client, scope, opts).await?;
            if let Some(row) = tree
                .lines()
                .find(|l| l.contains(&format!("── {member} ")) && l.contains(change))
                && let Ok(mut seen) = seen.lock()
            {
                seen.push(row.trim().to_string());
            }
            TestResult::Ok(())
        }
    };
    let joined = until_every(
        CONVERGE,
        Duration::from_millis(20),
        "web-3 joined and web Ready",
        || async {
            sample("web-3", "joining").await?;
            let c = clusters.get("web").await?;
            let st = c.status.clone().unwrap_or_default();
            let rec = st.members.iter().find(|m| m.name == "web-3");
            Ok(
                (st.phase == ClusterPhase::Ready && rec.is_some_and(|r| r.topology.is_none()))
                    .then_some(c),
            )
        },
    )
    .await?;
    let joining_rows = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        !joining_rows.is_empty(),
        "the tree never showed web-3 joining"
    );
    let log = &joined.status.as_ref().ok_or("status")?.log;
    // (No sync-config when the new member's configuration already is the active's, nor an
    // await-sync when it is in sync at once: those are judged from what the agents report.)
    for action in ["add-member", "add-peer", "join"] {
        assert!(
            log.iter()
                .any(|e| e.action == action && e.target.starts_with("web")),
            "no {action} in the log: {log:#?}"
        );
    }
    // Every member accepts the new one, and it accepts them.
    let agent =
        |endpoint: &str| baton_agent::client::AgentClient::new(endpoint, tls.client.clone());
    let endpoints: Vec<String> = members
        .iter()
        .filter_map(|m| m["endpoint"].as_str().map(str::to_string))
        .collect();
    let mut identities = std::collections::BTreeMap::new();
    let mut digests = Vec::new();
    for (name, ep) in names.iter().zip(&endpoints) {
        let s = agent(ep)?.status().await?;
        identities.insert(name.clone(), s.identity.clone().ok_or("no identity")?);
        digests.push(s.config_digest.clone());
    }
    assert_eq!(
        digests[2], digests[0],
        "web-3 has the active's configuration"
    );
    for (name, ep) in names.iter().zip(&endpoints) {
        let s = agent(ep)?.status().await?;
        for (other, id) in &identities {
            if other != name {
                assert_eq!(s.peers.get(other), Some(id), "{name} accepts {other}");
            }
        }
    }

    // The active (web-1) removed: it hands over first, retires, and its record goes.
    let remaining: Vec<serde_json::Value> = members
        .iter()
        .filter(|m| m["name"] != "web-1")
        .cloned()
        .collect();
    clusters
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": remaining}})),
        )
        .await?;
    let removed = until_every(
        CONVERGE,
        Duration::from_millis(20),
        "web-1 removed and web Ready",
        || async {
            sample("web-1", "leaving").await?;
            let c = clusters.get("web").await?;
            let st = c.status.clone().unwrap_or_default();
            let gone = !st.members.iter().any(|m| m.name == "web-1");
            Ok((st.phase == ClusterPhase::Ready && gone).then_some(c))
        },
    )
    .await?;
    let rows = seen.lock().map(|s| s.clone()).unwrap_or_default();
    eprintln!("tree rows seen: {rows:#?}");
    assert!(
        rows.len() > joining_rows.len(),
        "the tree never showed web-1 leaving: {rows:?}"
    );
    let st = removed.status.ok_or("status")?;
    assert_ne!(st.active_member.as_deref(), Some("web-1"));
    let retired = agent(&endpoints[0])?.status().await?;
    assert!(retired.retired, "web-1 retired");
    for ep in &endpoints[1..] {
        let s = agent(ep)?.status().await?;
        assert!(!s.peers.contains_key("web-1"), "web-1 still accepted");
    }
    let pos = |a: &str| {
        st.log
            .iter()
            .position(|e| e.action == a)
            .ok_or(format!("no {a} in the log"))
    };
    assert!(pos("switchover")? < pos("retire")?, "{:#?}", st.log);

    // An Event for the join and the removal.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons = until(
        CONVERGE,
        "MemberJoined and MemberRemoved events",
        || async {
            let list = events.list(&Default::default()).await?;
            let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            let both = ["MemberJoined", "MemberRemoved"]
                .iter()
                .all(|r| reasons.iter().any(|x| x == r));
            Ok(both.then_some(reasons))
        },
    )
    .await?;
    assert!(reasons.iter().any(|r| r == "StepStarted"), "{reasons:?}");

    operator.stop()?;
    assert_never_refused("op-topo", &operator.log()?);
    ns.delete().await;
    Ok(())
}
