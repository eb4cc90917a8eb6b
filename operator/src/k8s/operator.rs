//! The `baton operator` process: one watch per kind feeding a cache and a controller, the
//! triggers between them, leader election, the HTTP endpoints and graceful shutdown.
//!
//! Shutdown order: stop taking new work and let running reconciles finish their
//! persist-then-act sequence (the Lease is still renewed meanwhile), then release the Lease
//! so another replica takes over at once, then stop the HTTP endpoints.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use baton_agent::client::ClientTls;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::reconcile::Timing;

use super::agent_tls::{self, SwappableMembers};
use super::context::{Context, Error, Triggers};
use super::events::EventSink;
use super::http::{self, HttpState};
use super::leader::{Leadership, LeaseConfig, LeaseElector};
use super::metrics::Metrics;
use super::relations::Relations;
use super::slots::Slots;
use super::stores::{GuardedCluster, GuardedMesh, Stores};
use super::{cluster_controller, mesh_controller};

/// What the passes of this process share.
type OperatorContext = Context<SwappableMembers>;

/// How the operator reaches agents.
#[derive(Clone, Debug)]
pub enum AgentCredentials {
    /// A Secret with `ca.crt`, `tls.crt`, `tls.key` (reloaded when it changes).
    Secret { namespace: String, name: String },
    /// Given directly (tests).
    Given(ClientTls),
}

pub struct OperatorConfig {
    /// `None`: no HTTP endpoints (tests).
    pub http_addr: Option<SocketAddr>,
    /// `None`: leader election off, this replica always acts.
    pub lease: Option<LeaseConfig>,
    pub agents: AgentCredentials,
    pub concurrency: u16,
    /// `None`: every namespace.
    pub watch_namespace: Option<String>,
    pub timing: Timing,
    /// Reporting instance of events and Lease holder identity.
    pub identity: String,
    /// Period of the CRD readiness check.
    pub crd_check_period: StdDuration,
    /// How often an object with `spec.certificates` reads its CA Secret again when nothing
    /// else wakes it (the Secret's watch wakes it at once when it changes).
    pub ca_recheck: StdDuration,
}

/// The watch of one kind: it feeds the cache (`writer`), tells `on` of each event and yields
/// the objects applied.
fn watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    on: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                on(ev);
            }
        })
        .applied_objects()
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A stream that yields each time leadership is gained.
fn leadership_gains(leader: &Leadership) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(leader.subscribe(), |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

/// Runs `controller` (when awaited) until `shutdown` resolves, then until its running passes
/// end. Besides its watch, `triggers` and each gain of leadership (every object then) start
/// passes; each error it yields is logged (at debug) with the message `what`. Built at once:
/// a gain of leadership before the first poll still counts.
fn run_controller<K, Pass>(
    controller: Controller<K>,
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    reconcile: impl FnMut(Arc<K>, Arc<OperatorContext>) -> Pass,
    error_policy: impl Fn(Arc<K>, &Error, Arc<OperatorContext>) -> Action,
    ctx: Arc<OperatorContext>,
    what: &'static str,
) -> impl Future<Output = ()>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Pass: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let gains = leadership_gains(&ctx.leader);
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(gains)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(move |r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "{what}");
            }
        })
}

/// Run the operator until `shutdown` resolves (then shut down gracefully).
pub async fn run(
    client: Client,
    cfg: OperatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    // Every API request below goes through this wrapper and is counted.
    let client = super::requests::counted(client, metrics.kube_requests());
    let tls = match &cfg.agents {
        AgentCredentials::Secret { namespace, name } => {
            agent_tls::load(&client, namespace, name).await?
        }
        AgentCredentials::Given(t) => t.clone(),
    };
    let members = SwappableMembers::new(&tls)?;
    let leader = match cfg.lease {
        Some(_) => Leadership::elected(),
        None => Leadership::always(),
    };
    let listener = match cfg.http_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding {addr} (--http-addr): {e}"))?,
        ),
        None => None,
    };

    let (cluster_store, cluster_writer) = reflector::store::<GuardedCluster>();
    let (mesh_store, mesh_writer) = reflector::store::<GuardedMesh>();
    let stores = Stores::new(cluster_store.clone(), mesh_store.clone());
    let (triggers, trigger_streams) = Triggers::new();
    let relations = Arc::new(Relations::new(stores.clone(), triggers.clone()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        members,
        stores: stores.clone(),
        events: EventSink::new(client.clone(), &cfg.identity),
        leader: leader.clone(),
        metrics: metrics.clone(),
        timing: cfg.timing,
        triggers,
        relations: relations.clone(),
        slots: Slots::new(cfg.concurrency.into()),
        hot: Default::default(),
        ca_recheck: cfg.ca_recheck,
    });
    let shutdown = shutdown.boxed().shared();

    let rel = relations.clone();
    let cluster_events = watch(
        api::<GuardedCluster>(&client, &cfg.watch_namespace),
        cluster_writer,
        move |ev| rel.on_cluster(ev),
    );
    let rel = relations.clone();
    let mesh_events = watch(
        api::<GuardedMesh>(&client, &cfg.watch_namespace),
        mesh_writer,
        move |ev| rel.on_mesh(ev),
    );

    let config = controller::Config::default().concurrency(cfg.concurrency);
    // Clusters: no limit in kube-runtime's runner (its queue of due objects is a HashSet
    // served in hash order, which starved some clusters for minutes at 200 objects); every
    // due pass starts and waits for one of `ctx.slots` instead, busy clusters first.
    let clusters = run_controller(
        Controller::for_stream(cluster_events, cluster_store)
            .with_config(controller::Config::default().concurrency(0)),
        trigger_streams.clusters,
        shutdown.clone(),
        cluster_controller::reconcile,
        cluster_controller::error_policy,
        ctx.clone(),
        "cluster controller",
    );
    let meshes = run_controller(
        Controller::for_stream(mesh_events, mesh_store).with_config(config),
        trigger_streams.meshes,
        shutdown.clone(),
        mesh_controller::reconcile,
        mesh_controller::error_policy,
        ctx.clone(),
        "mesh controller",
    );

    // The agent client Secret: new credentials are used as soon as it changes.
    let reload = match &cfg.agents {
        AgentCredentials::Secret { namespace, name } => {
            let ctx = ctx.clone();
            let (ns, name) = (namespace.clone(), name.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
                let mut seen = None;
                let mut stream = watcher::watch_object(api, &name).take_until(stop).boxed();
                while let Some(ev) = stream.next().await {
                    let Ok(Some(secret)) = ev else { continue };
                    let rv = secret.metadata.resource_version.clone();
                    if seen.is_some() && seen != rv {
                        match agent_tls::client_tls_from(&secret, &ns, &name)
                            .and_then(|t| ctx.members.replace(&t))
                        {
                            Ok(()) => {
                                tracing::info!(secret = %name, "agent client credentials reloaded")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "keeping the previous agent credentials")
                            }
                        }
                    }
                    seen = rv;
                }
            }))
        }
        AgentCredentials::Given(_) => None,
    };

    // The CA Secrets `spec.certificates` names: a change wakes the objects that name them.
    let ca_watch = tokio::spawn(super::ca_watch::run(
        client.clone(),
        stores.clone(),
        ctx.triggers.clone(),
        shutdown.clone(),
    ));

    tokio::spawn({
        let stores = stores.clone();
        async move {
            stores.wait_synced().await;
            tracing::info!("caches of Clusters and Meshes listed");
        }
    });

    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done = done_rx.map(|_| ()).shared();
    let elector = cfg.lease.map(|lease| {
        tracing::info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "leader election on");
        let elector = LeaseElector::new(client.clone(), lease, leader.clone());
        tokio::spawn(elector.run(done.clone()))
    });
    let state = Arc::new(HttpState::new(
        stores.clone(),
        metrics.clone(),
        leader.clone(),
    ));
    let crd_check = tokio::spawn(http::watch_crds(
        client.clone(),
        state.clone(),
        cfg.crd_check_period,
        done.clone(),
    ));
    let server = listener.map(|l| tokio::spawn(http::serve_on(l, state.clone(), done.clone())));

    tracing::info!(
        namespace = cfg.watch_namespace.as_deref().unwrap_or("(all)"),
        concurrency = cfg.concurrency,
        "operator started"
    );
    futures::join!(clusters, meshes);
    tracing::info!("controllers stopped; releasing the lease");
    let _ = done_tx.send(());
    if let Some(e) = elector {
        let _ = e.await;
    }
    let _ = crd_check.await;
    if let Some(r) = reload {
        r.abort();
    }
    ca_watch.abort();
    if let Some(s) = server {
        match s.await {
            Ok(r) => r?,
            Err(e) => tracing::warn!(error = %e, "HTTP task"),
        }
    }
    tracing::info!("operator stopped");
    Ok(())
}
