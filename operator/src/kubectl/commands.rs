//! What each plugin command does against the API server and what it prints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::connect::Scope;
use super::live::{Live, Target, all_targets, by_namespace, explain, fetch, parsed, resolve};
use crate::api::annotations::names;
use crate::api::{ClusterStatus, LogEntry, MeshStatus};
use crate::cli::plan::{PlanOptions, Schedule, schedule_from};
use crate::cli::tree::{TreeCluster, TreeInput, TreeInvalid, TreeMesh, render};
use crate::cli::view::log_lines;
use crate::cli::{
    Intent, Output, approval_cluster, check_approval, check_force_name, check_tier_approval,
    is_cluster_force, tier_approval_of,
};
use crate::k8s::annotations::{APPROVE, FORCE, PAUSE, RETRY};
use crate::k8s::stores::{GuardedCluster, GuardedMesh};
use crate::local::Manifests;

/// The plugin's name in the hints it prints.
pub const COMMAND: &str = "kubectl baton";

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

#[derive(Clone, Copy, Debug)]
pub struct StatusOptions {
    pub output: Output,
}

/// One object's status for `-o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dumped<'a, T> {
    kind: &'static str,
    namespace: String,
    name: String,
    generation: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid: Option<&'a str>,
    status: Option<&'a T>,
}

/// One object as the dump shows it; `status` reads the status of one that deserializes.
fn dumped<'a, K, S>(
    kind: &'static str,
    o: &'a DeserializeGuard<K>,
    status: impl FnOnce(&'a K) -> Option<&'a S>,
) -> Dumped<'a, S>
where
    DeserializeGuard<K>: Resource,
{
    Dumped {
        kind,
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
        generation: o.meta().generation,
        annotations: baton_annotations(o.annotations()),
        invalid: o.0.as_ref().err().map(|e| e.error.as_str()),
        status: o.0.as_ref().ok().and_then(status),
    }
}

fn baton_annotations(all: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    all.iter()
        .filter(|(k, _)| k.starts_with("baton.dev/"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn dump<T: Serialize>(value: &T, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => serde_yaml::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

/// The tree (or a dump) of everything in the live objects.
pub fn render_status(live: &Live, scope: &Scope, opts: StatusOptions) -> anyhow::Result<String> {
    if opts.output != Output::Table {
        #[derive(Serialize)]
        struct All<'a> {
            meshes: Vec<Dumped<'a, MeshStatus>>,
            clusters: Vec<Dumped<'a, ClusterStatus>>,
        }
        let all = All {
            meshes: live
                .meshes
                .iter()
                .map(|m| dumped("Mesh", m, |m| m.status.as_ref()))
                .collect(),
            clusters: live
                .clusters
                .iter()
                .map(|c| dumped("Cluster", c, |c| c.status.as_ref()))
                .collect(),
        };
        return dump(&all, opts.output);
    }
    let groups = by_namespace(live);
    if groups.is_empty() {
        return Ok(match scope {
            Scope::Namespace(ns) => format!("no Mesh or Cluster objects in namespace {ns}\n"),
            Scope::All => "no Mesh or Cluster objects in any namespace\n".to_string(),
        });
    }
    let mut out = String::new();
    for (ns, (meshes, clusters)) in groups {
        let mut input = TreeInput::default();
        for m in &meshes {
            match &m.0 {
                Ok(mesh) => input.meshes.push(TreeMesh {
                    name: mesh.metadata.name.as_deref().unwrap_or_default(),
                    spec: &mesh.spec,
                    generation: mesh.metadata.generation,
                    status: mesh.status.as_ref(),
                    annotations: mesh.metadata.annotations.as_ref().unwrap_or(&EMPTY),
                }),
                Err(e) => input.invalid.push(tree_invalid("mesh", e)),
            }
        }
        for c in &clusters {
            match &c.0 {
                Ok(cl) => input.clusters.push(TreeCluster {
                    name: cl.metadata.name.as_deref().unwrap_or_default(),
                    labels: cl.metadata.labels.as_ref().unwrap_or(&EMPTY),
                    spec: &cl.spec,
                    generation: cl.metadata.generation,
                    status: cl.status.as_ref(),
                    annotations: cl.metadata.annotations.as_ref().unwrap_or(&EMPTY),
                }),
                Err(e) => input.invalid.push(tree_invalid("cluster", e)),
            }
        }
        if scope == &Scope::All {
            out.push_str(&format!("namespace {ns}\n"));
        }
        out.push_str(&render(&input));
        out.push('\n');
    }
    out.pop();
    Ok(out)
}

/// `status`: mesh → tiers → clusters → members.
pub async fn status(client: &Client, scope: &Scope, opts: StatusOptions) -> anyhow::Result<String> {
    let live = fetch(client, scope).await?;
    render_status(&live, scope, opts)
}

#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Objects to show (all in the scope when empty).
    pub names: Vec<String>,
    pub output: Output,
}

/// `log`: the upgrade log of the named objects (all when none), as trees.
pub fn render_log(live: &Live, scope: &Scope, opts: &LogOptions) -> anyhow::Result<String> {
    let targets = if opts.names.is_empty() {
        all_targets(live)
    } else {
        if scope == &Scope::All {
            bail!("name objects within one namespace (-n NAMESPACE), not with -A");
        }
        opts.names
            .iter()
            .map(|n| resolve(live, n))
            .collect::<anyhow::Result<_>>()?
    };
    let entries = |t: &Target| -> (String, Option<&[LogEntry]>) {
        match t {
            Target::Cluster(n) => log_of(&live.clusters, n, |c| {
                c.status.as_ref().map(|s| s.log.as_slice())
            }),
            Target::Mesh(n) => log_of(&live.meshes, n, |m| {
                m.status.as_ref().map(|s| s.log.as_slice())
            }),
        }
    };
    if opts.output != Output::Table {
        #[derive(Serialize)]
        struct Logged<'a> {
            kind: &'static str,
            namespace: String,
            name: &'a str,
            log: &'a [LogEntry],
        }
        let all: Vec<Logged<'_>> = targets
            .iter()
            .map(|t| {
                let (namespace, log) = entries(t);
                Logged {
                    kind: if matches!(t, Target::Cluster(_)) {
                        "Cluster"
                    } else {
                        "Mesh"
                    },
                    namespace,
                    name: t.name(),
                    log: log.unwrap_or_default(),
                }
            })
            .collect();
        return dump(&all, opts.output);
    }
    let mut out = String::new();
    for t in &targets {
        let (ns, log) = entries(t);
        let here = if scope == &Scope::All {
            format!(" (namespace {ns})")
        } else {
            String::new()
        };
        match log {
            Some(l) if !l.is_empty() => {
                out.push_str(&format!("{t}{here}:\n"));
                out.push_str(&log_lines(l));
            }
            _ => out.push_str(&format!("{t}{here}: no log entries yet\n")),
        }
    }
    if targets.is_empty() {
        out.push_str("no Mesh or Cluster objects\n");
    }
    Ok(out)
}

pub async fn log(client: &Client, scope: &Scope, opts: &LogOptions) -> anyhow::Result<String> {
    let live = fetch(client, scope).await?;
    render_log(&live, scope, opts)
}

/// The namespace and the log of the object `name` (no log when it is missing, does not
/// deserialize or has no status); `log` reads the log of one that deserializes.
fn log_of<'a, K>(
    objects: &'a [DeserializeGuard<K>],
    name: &str,
    log: impl FnOnce(&'a K) -> Option<&'a [LogEntry]>,
) -> (String, Option<&'a [LogEntry]>)
where
    DeserializeGuard<K>: Resource,
{
    let o = objects.iter().find(|o| o.name_any() == name);
    (
        o.and_then(|o| o.namespace()).unwrap_or_default(),
        o.and_then(|o| o.0.as_ref().ok()).and_then(log),
    )
}

/// An object that does not deserialize, as the tree shows it.
fn tree_invalid<'a>(kind: &'a str, e: &'a InvalidObject) -> TreeInvalid<'a> {
    TreeInvalid {
        kind,
        name: e.metadata.name.as_deref().unwrap_or_default(),
        error: &e.error,
    }
}

/// The objects `here` accepts (by namespace) as manifests, each at `<dir>/<name>`.
fn as_manifests<K: Resource + Clone>(
    dir: &str,
    objects: &[&K],
    here: impl Fn(&Option<String>) -> bool,
) -> Vec<(PathBuf, K)> {
    objects
        .iter()
        .filter(|o| here(&o.meta().namespace))
        .map(|o| {
            (
                PathBuf::from(format!("{dir}/{}", o.name_any())),
                (*o).clone(),
            )
        })
        .collect()
}

/// The schedule from the live state, per namespace (a mesh only spans its namespace).
pub fn plan_live(live: &Live, opts: &PlanOptions) -> anyhow::Result<Vec<(String, Schedule)>> {
    let mut out = Vec::new();
    let (meshes, clusters) = parsed(live);
    let mut namespaces: Vec<String> = meshes
        .iter()
        .map(|m| m.namespace().unwrap_or_default())
        .chain(clusters.iter().map(|c| c.namespace().unwrap_or_default()))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        let here = |o: &Option<String>| o.as_deref().unwrap_or_default() == ns;
        let manifests = Manifests {
            clusters: as_manifests("cluster", &clusters, here),
            meshes: as_manifests("mesh", &meshes, here),
            secrets: Vec::new(),
        };
        let statuses: BTreeMap<&str, &ClusterStatus> = clusters
            .iter()
            .filter(|c| here(&c.metadata.namespace))
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c.status.as_ref()?)))
            .collect();
        let s = schedule_from(opts, &manifests, &statuses)
            .map_err(|e| e.context(format!("namespace {ns}")))?;
        out.push((ns, s));
    }
    Ok(out)
}

/// `plan`: the schedule from the live state.
pub async fn plan(
    client: &Client,
    scope: &Scope,
    opts: &PlanOptions,
) -> anyhow::Result<Vec<(String, Schedule)>> {
    let live = fetch(client, scope).await?;
    if live.meshes.is_empty() && live.clusters.is_empty() {
        bail!("no Mesh or Cluster objects to plan for");
    }
    plan_live(&live, opts)
}

fn namespaced<K>(client: &Client, ns: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(client.clone(), ns)
}

/// Merge-patch one annotation of `target`, a `K` in namespace `ns` (`None` removes it).
async fn annotate<K>(
    client: &Client,
    ns: &str,
    target: &Target,
    key: &str,
    value: Option<&str>,
    resource_version: Option<&str>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut meta = json!({ "annotations": { key: value } });
    // With the version read, a concurrent change fails with 409 instead of being lost.
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = Value::String(rv.to_string());
    }
    namespaced::<K>(client, ns)
        .patch(
            target.name(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": meta })),
        )
        .await
        .map(|_| ())
}

async fn annotate_target(
    client: &Client,
    ns: &str,
    target: &Target,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let what = format!("annotating {target} in namespace {ns}");
    match target {
        Target::Cluster(_) => {
            annotate::<GuardedCluster>(client, ns, target, key, value, None).await
        }
        Target::Mesh(_) => annotate::<GuardedMesh>(client, ns, target, key, value, None).await,
    }
    .map_err(|e| explain(e, &what))
}

/// Concurrent writers of the approve annotation are retried this many times.
const APPROVE_ATTEMPTS: usize = 5;

/// Approve a step: its name joins the Cluster's approve annotation.
async fn approve(client: &Client, ns: &str, step: &str) -> anyhow::Result<String> {
    add_name(client, ns, step, Listed::Approval).await
}

/// What a name added to a Cluster's annotation list is.
#[derive(Clone, Copy, PartialEq)]
enum Listed {
    /// A step to approve (`baton.dev/approve`).
    Approval,
    /// A rotation phase to force (`baton.dev/force`).
    Force,
}

impl Listed {
    fn key(self) -> &'static str {
        match self {
            Listed::Approval => APPROVE,
            Listed::Force => FORCE,
        }
    }
    fn ack(self) -> &'static str {
        match self {
            Listed::Approval => "approve",
            Listed::Force => "force",
        }
    }
    fn done(self) -> &'static str {
        match self {
            Listed::Approval => "approved",
            Listed::Force => "forced (see the RotationForced condition for what breaks)",
        }
    }
}

/// What `add_name` read of the object a name goes to.
struct Read {
    annotations: std::collections::BTreeMap<String, String>,
    resource_version: Option<String>,
    acknowledged: Vec<String>,
    message: Option<String>,
}

/// Read `target` and check `step` against it (a typo is refused, not written to wait
/// forever): a cluster's member, a mesh's deferred tier.
async fn read_for(client: &Client, ns: &str, target: &Target, step: &str) -> anyhow::Result<Read> {
    let reading = |e| explain(e, &format!("reading {target} in namespace {ns}"));
    match target {
        Target::Cluster(cluster) => {
            let obj = namespaced::<GuardedCluster>(client, ns)
                .get(cluster)
                .await
                .map_err(reading)?;
            // An unreadable Cluster has no member list to check against; the operator
            // reports it Stalled and the approval waits like any other.
            if let Ok(c) = obj.0.as_ref() {
                check_approval(
                    step,
                    cluster,
                    c.spec.members.iter().map(|m| m.name.as_str()),
                )?;
            }
            let status = obj.0.as_ref().ok().and_then(|c| c.status.as_ref());
            Ok(Read {
                annotations: obj.annotations().clone(),
                resource_version: obj.meta().resource_version.clone(),
                acknowledged: status.map(|s| s.acknowledged.clone()).unwrap_or_default(),
                message: status.and_then(|s| s.message.clone()),
            })
        }
        Target::Mesh(mesh) => {
            let obj = namespaced::<GuardedMesh>(client, ns)
                .get(mesh)
                .await
                .map_err(reading)?;
            if let Ok(m) = obj.0.as_ref() {
                let tiers = m.spec.tiers.iter().map(|t| {
                    let approval = t.deferred.as_ref().is_some_and(|d| d.approval);
                    (t.name.as_str(), approval)
                });
                check_tier_approval(step, tiers)?;
            }
            let status = obj.0.as_ref().ok().and_then(|m| m.status.as_ref());
            Ok(Read {
                annotations: obj.annotations().clone(),
                resource_version: obj.meta().resource_version.clone(),
                acknowledged: status.map(|s| s.acknowledged.clone()).unwrap_or_default(),
                message: status.and_then(|s| s.message.clone()),
            })
        }
    }
}

/// Add `step` to the list annotation `what` names on its object (the Cluster of a member's
/// step or a rotation phase, the Mesh of a deferred tier), after checking the name against it.
async fn add_name(client: &Client, ns: &str, step: &str, what: Listed) -> anyhow::Result<String> {
    let target = match what {
        Listed::Approval if step.starts_with("tier/") => {
            Target::Mesh(tier_approval_of(step)?.0.to_string())
        }
        Listed::Approval => Target::Cluster(approval_cluster(step)?.to_string()),
        Listed::Force => Target::Cluster(check_force_name(step)?.to_string()),
    };
    for _ in 0..APPROVE_ATTEMPTS {
        let read = read_for(client, ns, &target, step).await?;
        let (ack, done) = (what.ack(), what.done());
        if read
            .acknowledged
            .iter()
            .any(|a| a == &format!("{ack}:{step}"))
        {
            return Ok(format!("{step} was already {ack}d and acted on"));
        }
        let mut approvals = names(&read.annotations, what.key());
        if approvals.iter().any(|a| a == step) {
            return Ok(format!(
                "{step} is already {ack}d (the operator acts on it at its next pass)"
            ));
        }
        approvals.push(step.to_string());
        let value = approvals.join(",");
        let rv = read.resource_version.as_deref();
        let patched = match &target {
            Target::Cluster(_) => {
                annotate::<GuardedCluster>(client, ns, &target, what.key(), Some(&value), rv).await
            }
            Target::Mesh(_) => {
                annotate::<GuardedMesh>(client, ns, &target, what.key(), Some(&value), rv).await
            }
        };
        match patched {
            Ok(()) => {
                let waiting = read.message.as_deref().is_some_and(|m| m.contains(step));
                return Ok(if waiting || what == Listed::Force {
                    format!("{done} {step}")
                } else {
                    format!(
                        "approved {step} ({target} is not waiting for it now; the approval \
                         applies when it does)"
                    )
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(explain(
                    e,
                    &format!("annotating {target} in namespace {ns}"),
                ));
            }
        }
    }
    bail!("{target} kept changing while adding {step}; try again")
}

fn token() -> String {
    crate::reconcile::now().to_rfc3339()
}

/// `approve`, `pause`, `resume`, `retry`, `force`: set the annotation the operator acts on.
pub async fn intent(client: &Client, scope: &Scope, intent: Intent) -> anyhow::Result<String> {
    let ns = scope.namespace()?.to_string();
    if let Intent::Approve(step) = &intent {
        return approve(client, &ns, step).await;
    }
    let live = fetch(client, &Scope::Namespace(ns.clone())).await?;
    let targets = |names: &[String]| -> anyhow::Result<Vec<Target>> {
        if names.is_empty() {
            let all = all_targets(&live);
            if all.is_empty() {
                bail!("no Mesh or Cluster objects in namespace {ns}");
            }
            Ok(all)
        } else {
            names.iter().map(|n| resolve(&live, n)).collect()
        }
    };
    let (chosen, key, value, verb) = match &intent {
        Intent::Approve(_) => unreachable!("handled above"),
        Intent::Pause(names) => (targets(names)?, PAUSE, Some("true".to_string()), "paused"),
        Intent::Resume(names) => (targets(names)?, PAUSE, None, "resumed"),
        Intent::Retry(names) => {
            let chosen: Vec<Target> = if names.is_empty() {
                all_targets(&live)
                    .into_iter()
                    .filter(|t| matches!(t, Target::Cluster(_)))
                    .collect()
            } else {
                targets(names)?
            };
            if let Some(m) = chosen.iter().find(|t| matches!(t, Target::Mesh(_))) {
                bail!(
                    "retry applies to clusters; {m}: use `{COMMAND} force` to start despite \
                     failed preconditions"
                );
            }
            if chosen.is_empty() {
                bail!("no Cluster objects in namespace {ns}");
            }
            (chosen, RETRY, Some(token()), "retry requested for")
        }
        Intent::Force(names) => {
            if names.is_empty() {
                bail!("name the mesh or the rotation phase to force");
            }
            let (phases, names): (Vec<&String>, Vec<String>) = {
                let (p, m): (Vec<&String>, Vec<&String>) =
                    names.iter().partition(|n| is_cluster_force(n));
                (p, m.into_iter().cloned().collect())
            };
            // Every name is checked before the first write.
            for p in &phases {
                check_force_name(p)?;
            }
            let mut said = Vec::new();
            for p in &phases {
                said.push(add_name(client, &ns, p, Listed::Force).await?);
            }
            if names.is_empty() {
                return Ok(said.join("; "));
            }
            let chosen = targets(&names)?;
            if let Some(c) = chosen.iter().find(|t| matches!(t, Target::Cluster(_))) {
                bail!("force applies to meshes (their preconditions); {c}: use `{COMMAND} retry`");
            }
            (
                chosen,
                FORCE,
                Some(token()),
                "forcing (despite failed preconditions)",
            )
        }
    };
    // Every name is resolved before the first write: a typo changes nothing.
    for t in &chosen {
        annotate_target(client, &ns, t, key, value.as_deref()).await?;
    }
    let mut msg = format!(
        "{verb} {}",
        chosen
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if matches!(intent, Intent::Resume(_)) {
        // The annotation is the imperative pause; `spec.paused` is the declarative one, owned
        // by whoever applies the manifests.
        let held: Vec<String> = chosen
            .iter()
            .filter(|t| spec_paused(&live, t))
            .map(|t| t.to_string())
            .collect();
        if !held.is_empty() {
            msg.push_str(&format!(
                "; still paused by spec.paused: {} (set it to false in the manifest)",
                held.join(", ")
            ));
        }
    }
    Ok(msg)
}

fn spec_paused(live: &Live, t: &Target) -> bool {
    match t {
        Target::Cluster(n) => live
            .clusters
            .iter()
            .any(|c| &c.name_any() == n && c.0.as_ref().is_ok_and(|c| c.spec.paused)),
        Target::Mesh(n) => live
            .meshes
            .iter()
            .any(|m| &m.name_any() == n && m.0.as_ref().is_ok_and(|m| m.spec.paused)),
    }
}
