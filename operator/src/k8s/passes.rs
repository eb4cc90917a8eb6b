//! What the two reconcilers (`cluster_controller`, `mesh_controller`) share around their
//! passes: the leader and cache gate, the pass timer and error count, the status write and the
//! conflict read after a refused one, and the report of an object that does not deserialize.

use std::future::Future;
use std::time::Duration as StdDuration;

use kube::core::NamespaceResourceScope;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::plan::PlanEvent;
use crate::reconcile::{Members, Persisted, StatusStore, now, persist};

use super::context::{Context, Error};
use super::events::reference;
use super::invalid::{self, Outcome, StallStatus};
use super::leader::is_conflict;
use super::status_write::StatusTarget;
use super::stores::{WithStatus, Written};

/// Before the caches are listed: look again shortly.
const NOT_SYNCED: StdDuration = StdDuration::from_secs(1);

/// The action of a pass that must not run now: not the leader (woken again by
/// `reconcile_all_on` when this replica becomes the leader), or the caches not listed yet.
pub fn not_now<M: Members>(ctx: &Context<M>) -> Option<Action> {
    if !ctx.leader.is_leader() {
        return Some(Action::await_change());
    }
    if !ctx.stores.synced() {
        return Some(Action::requeue(NOT_SYNCED));
    }
    None
}

/// Counts the pass and observes its duration when done, however it ends; counts its error.
pub async fn timed<M: Members>(
    ctx: &Context<M>,
    kind: &'static str,
    pass: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(kind);
    let result = pass.await;
    if let Err(e) = &result {
        ctx.metrics.error(kind, e);
    }
    result
}

/// Persist `pass` as the status of `object` (guarded by the resourceVersion it was planned
/// from). `Ok(None)` when the write was refused for a conflict (planned from an outdated copy:
/// the current one is read, and the caller plans again soon); the error of the pass for any
/// other failure. A write is counted and its result remembered as the freshest copy; the
/// flag says whether there was one.
pub async fn write_status<K, P, M>(
    ctx: &Context<M>,
    copies: &Written<K>,
    kind: &'static str,
    manager: &'static str,
    object: &K,
    pass: P,
) -> Result<Option<(Persisted<P>, bool)>, Error>
where
    K: WithStatus + Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    K: DeserializeOwned + std::fmt::Debug,
    for<'a> StatusTarget<'a, K>: StatusStore<P, Written = Option<K>, Error = kube::Error>,
    M: Members,
{
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let mut target = StatusTarget {
        api: &api,
        manager,
        name: &name,
        resource_version: object.meta().resource_version.as_deref(),
    };
    match persist(&mut target, pass).await {
        Ok((pass, None)) => Ok(Some((pass, false))),
        Ok((pass, Some(updated))) => {
            ctx.metrics.status_written(kind);
            copies.record(updated);
            Ok(Some((pass, true)))
        }
        Err(e) if is_conflict(&e) => {
            refresh(copies, &api, kind, &ns, &name).await?;
            Ok(None)
        }
        Err(source) => Err(Error::StatusWrite {
            kind,
            namespace: ns,
            name,
            source,
        }),
    }
}

/// After a conflict: a quorum read replaces whatever copy the pass planned from.
async fn refresh<K>(
    copies: &Written<K>,
    api: &Api<K>,
    kind: &'static str,
    ns: &str,
    name: &str,
) -> Result<(), Error>
where
    K: WithStatus + Resource<DynamicType = ()> + DeserializeOwned + std::fmt::Debug,
{
    copies.forget(&(ns.to_string(), name.to_string()));
    match api.get_opt(name).await {
        Ok(Some(fresh)) => copies.record_read(fresh),
        Ok(None) => {}
        // Unreadable now: the next pass reads the cache; the precondition guards it again.
        Err(kube::Error::SerdeError(_)) => {}
        Err(source) => {
            return Err(Error::Read {
                kind,
                namespace: ns.to_string(),
                name: name.to_string(),
                source,
            });
        }
    }
    Ok(())
}

/// An object that does not deserialize: the Stalled status and a warning event (`log` logs
/// it with the namespace, the name and the message first).
pub async fn report_invalid<K, S, M>(
    invalid: &InvalidObject,
    ctx: &Context<M>,
    kind: &'static str,
    manager: &str,
    log: impl FnOnce(&str, &str, &PlanEvent),
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
    S: StallStatus,
    M: Members,
{
    let ns = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    match invalid::report::<K, S>(&ctx.client, invalid, manager, now()).await {
        Ok(Outcome::Written(event)) => {
            log(&ns, &name, &event);
            let regarding = reference::<K>(&invalid.metadata);
            ctx.events.publish(&regarding, &[event]).await;
            Ok(Action::await_change())
        }
        Ok(Outcome::NowValid) => Ok(Action::requeue(ctx.timing.busy)),
        Ok(_) => Ok(Action::await_change()),
        Err(source) => Err(Error::StatusWrite {
            kind,
            namespace: ns,
            name,
            source,
        }),
    }
}
