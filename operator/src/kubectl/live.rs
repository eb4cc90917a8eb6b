//! Live objects: listing both kinds in a scope, resolving names, and API errors explained.

use std::collections::BTreeMap;
use std::fmt::Debug;

use anyhow::bail;
use k8s_openapi::NamespaceResourceScope;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::connect::Scope;
use crate::api::{Cluster, Mesh};
use crate::cli::listed;
use crate::k8s::stores::{GuardedCluster, GuardedMesh};

/// Objects per list page: large fleets are read in pages, never in one response.
const PAGE: u32 = 500;

/// The Meshes and Clusters of a scope, sorted by namespace and name. Objects that do not
/// parse as their kind are kept (as `Err`) so that they are shown, not silently dropped.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub meshes: Vec<GuardedMesh>,
    pub clusters: Vec<GuardedCluster>,
}

/// What a user needs to hear about a failed API call.
pub fn explain(e: kube::Error, what: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
            "{what}: not found ({}); are the Baton CRDs installed (kubectl apply -f crds/, or the \
             chart)?",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => {
            anyhow::anyhow!("{what}: forbidden by RBAC: {}", s.message)
        }
        kube::Error::Api(s) if s.code == 401 => {
            anyhow::anyhow!("{what}: not authenticated: {}", s.message)
        }
        _ => anyhow::Error::new(e).context(what.to_string()),
    }
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match scope {
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        Scope::All => Api::all(client.clone()),
    }
}

async fn list<K>(client: &Client, scope: &Scope) -> anyhow::Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = api(client, scope);
    let what = match scope {
        Scope::Namespace(ns) => format!("listing {} in namespace {ns}", K::plural(&())),
        Scope::All => format!("listing {} in all namespaces", K::plural(&())),
    };
    let mut items = Vec::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&lp).await.map_err(|e| explain(e, &what))?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    items.sort_by_key(|o| (o.namespace(), o.name_any()));
    Ok(items)
}

/// Both kinds in the scope.
pub async fn fetch(client: &Client, scope: &Scope) -> anyhow::Result<Live> {
    let (meshes, clusters) = tokio::try_join!(
        list::<GuardedMesh>(client, scope),
        list::<GuardedCluster>(client, scope)
    )?;
    Ok(Live { meshes, clusters })
}

/// Per namespace, the objects of that namespace.
pub fn by_namespace(live: &Live) -> BTreeMap<String, (Vec<&GuardedMesh>, Vec<&GuardedCluster>)> {
    let mut out: BTreeMap<String, (Vec<&GuardedMesh>, Vec<&GuardedCluster>)> = BTreeMap::new();
    for m in &live.meshes {
        out.entry(m.namespace().unwrap_or_default())
            .or_default()
            .0
            .push(m);
    }
    for c in &live.clusters {
        out.entry(c.namespace().unwrap_or_default())
            .or_default()
            .1
            .push(c);
    }
    out
}

/// An object named on the command line: `cluster/NAME`, `mesh/NAME`, or a bare `NAME` that
/// only one kind has.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Cluster(String),
    Mesh(String),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Cluster(_) => "cluster",
            Target::Mesh(_) => "mesh",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Target::Cluster(n) | Target::Mesh(n) => n,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind(), self.name())
    }
}

/// Resolve a name against the objects of one namespace.
pub fn resolve(live: &Live, name: &str) -> anyhow::Result<Target> {
    let (kind, n) = match name.split_once('/') {
        Some((k, n)) => (Some(k.to_ascii_lowercase()), n),
        None => (None, name),
    };
    let is_c = live.clusters.iter().any(|c| c.name_any() == n);
    let is_m = live.meshes.iter().any(|m| m.name_any() == n);
    let kind = match kind.as_deref() {
        None => None,
        Some("cluster" | "clusters" | "clusters.baton.dev" | "cluster.baton.dev") => {
            Some("cluster")
        }
        Some("mesh" | "meshes" | "meshes.baton.dev" | "mesh.baton.dev") => Some("mesh"),
        Some(k) => bail!("{name:?}: kind {k:?} is neither cluster nor mesh"),
    };
    match (kind, is_c, is_m) {
        (Some("cluster"), true, _) | (None, true, false) => Ok(Target::Cluster(n.to_string())),
        (Some("mesh"), _, true) | (None, false, true) => Ok(Target::Mesh(n.to_string())),
        (None, true, true) => {
            bail!("{n:?} names both a Cluster and a Mesh: say cluster/{n} or mesh/{n}")
        }
        _ => {
            let known: Vec<String> = all_targets(live).iter().map(|t| t.to_string()).collect();
            bail!(
                "{name:?} not found (known here: {})",
                listed(&known, "none")
            )
        }
    }
}

/// Every object of the scope, meshes first.
pub fn all_targets(live: &Live) -> Vec<Target> {
    live.meshes
        .iter()
        .map(|m| Target::Mesh(m.name_any()))
        .chain(live.clusters.iter().map(|c| Target::Cluster(c.name_any())))
        .collect()
}

/// The parsed objects (invalid ones left out), for planning.
pub fn parsed(live: &Live) -> (Vec<&Mesh>, Vec<&Cluster>) {
    (
        live.meshes
            .iter()
            .filter_map(|m| m.0.as_ref().ok())
            .collect(),
        live.clusters
            .iter()
            .filter_map(|c| c.0.as_ref().ok())
            .collect(),
    )
}
