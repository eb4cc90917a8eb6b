//! The Cluster reconciler: the shared engine's cluster pass with the API server as the store.
//!
//! A pass: (leader?) → freshest copy of the Cluster → admission from the Mesh that owns it →
//! observe the members and plan → write the status when it changed (server-side apply,
//! guarded by resourceVersion) → (still leader?) → act → events → requeue after the planner's
//! wake-up. Nothing is sent to an agent unless the status naming it was written first: `act`
//! takes the [`Persisted`] pass that only the status write (`persist` through
//! [`StatusTarget`]) hands back.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::api::{Cluster, ClusterStatus};
use crate::plan::PlanEvent;
use crate::reconcile::{Members, act, certificates_of, now, observe_and_plan};

use super::ca_watch;
use super::context::{Context, Error};
use super::events::{cluster_derived, reference, submission_failures};
use super::passes::{self, not_now, timed, write_status};
use super::slots::Class;
use super::status_write::CLUSTER_MANAGER;
use super::stores::{GuardedCluster, cluster_object};

pub const KIND: &str = "Cluster";

#[tracing::instrument(
    skip(obj, ctx),
    fields(name = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default())
)]
pub async fn reconcile<M: Members>(
    obj: Arc<GuardedCluster>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    tracing::debug!(cluster = %obj.name_any(), leader = ctx.leader.is_leader(), synced = ctx.stores.synced(), "reconcile");
    if let Some(later) = not_now(&ctx) {
        return Ok(later);
    }
    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
    let class = match &obj.0 {
        Ok(c) if c.status.as_ref().is_some_and(|s| !s.steps.is_empty()) => Class::Busy,
        _ if ctx.hot.lock().is_ok_and(|h| h.contains(&key)) => Class::Busy,
        _ => Class::Idle,
    };
    let _slot = ctx.slots.acquire(class).await;
    // The wait for a slot may have been long: plan from the cache as it is now.
    let obj = match ctx.stores.clusters.get(&ObjectRef::from_obj(&*obj)) {
        Some(fresh) => fresh,
        None => {
            // Deleted: forget that it was busy, or the set grows with every deleted cluster.
            if let Ok(mut hot) = ctx.hot.lock() {
                hot.remove(&key);
            }
            return Ok(Action::await_change());
        }
    };
    let pass = async {
        match &obj.0 {
            Ok(c) => pass(c, &ctx).await,
            Err(invalid) => report_invalid(invalid, &ctx).await,
        }
    };
    timed(&ctx, KIND, pass).await
}

/// Remember whether a cluster asked to be looked at again soon: its next pass then waits in
/// the busy queue of the slots (a step in flight, a switchover phase, a traffic check).
fn mark_hot<M: Members>(ctx: &Context<M>, key: (String, String), wait: StdDuration) {
    let soon = wait <= ctx.timing.busy.saturating_mul(4);
    if let Ok(mut hot) = ctx.hot.lock() {
        if soon {
            hot.insert(key);
        } else {
            hot.remove(&key);
        }
    }
}

pub fn error_policy<M: Members>(
    obj: Arc<GuardedCluster>,
    error: &Error,
    _ctx: Arc<Context<M>>,
) -> Action {
    tracing::warn!(cluster = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(StdDuration::from_secs(5))
}

async fn pass<M: Members>(stored: &Cluster, ctx: &Context<M>) -> Result<Action, Error> {
    let c = ctx.stores.written_clusters.pick(stored);
    let ns = c.namespace().unwrap_or_default();
    let name = c.name_any();
    let mut object = cluster_object(&c);
    let own = ctx.stores.ownership(&ns);
    let mesh = own.mesh_of(&name).map(|m| m.name_any());
    let adm = own.admission_of(&name);
    // The CA the cluster rotates to: its mesh's when the mesh declares certificates.
    let certs = certificates_of(&object, &adm).cloned();
    object.ca = ca_watch::read(&ctx.client, &ns, certs.as_ref()).await;
    let ts = now();
    let pass = observe_and_plan(&ctx.members, &object, &adm, ts).await;

    if !ctx.leader.is_leader() {
        tracing::info!(cluster = %name, "lease lost while observing: nothing written, nothing sent");
        return Ok(Action::await_change());
    }
    let before: Option<&ClusterStatus> = object.status.as_ref();
    let changed = pass.changed;
    let copies = &ctx.stores.written_clusters;
    let written = write_status(ctx, copies, KIND, CLUSTER_MANAGER, &c, pass).await?;
    let Some((pass, written)) = written else {
        mark_hot(ctx, (ns, name), ctx.timing.busy);
        return Ok(Action::requeue(ctx.timing.busy));
    };
    if written {
        ctx.metrics.count_steps(before, &pass.get().plan.status);
        if let Some(m) = &mesh {
            // The mesh reads this status: let it decide at once.
            ctx.triggers.mesh(&ns, m);
        }
    }
    let plan = &pass.get().plan;
    let mut events = plan.events.clone();
    if changed {
        events.extend(cluster_derived(before, &plan.status));
    }
    let regarding = reference::<Cluster>(&c.metadata);
    if !ctx.leader.is_leader() {
        tracing::warn!(cluster = %name, "lease lost after writing the status: not acting");
        ctx.events.publish(&regarding, &events).await;
        return Ok(Action::await_change());
    }
    let outcomes = act(&ctx.members, &object, &adm, &pass).await;
    for o in &outcomes {
        match &o.result {
            Ok(()) => {
                tracing::info!(cluster = %name, member = %o.member, op = %o.id, kind = o.kind.as_str(), "operation submitted")
            }
            Err(e) => {
                tracing::warn!(cluster = %name, member = %o.member, op = %o.id, kind = o.kind.as_str(), error = %e, "operation not accepted")
            }
        }
    }
    events.extend(submission_failures(&outcomes));
    ctx.events.publish(&regarding, &events).await;
    let wait = if outcomes.is_empty() {
        ctx.timing.after(plan.wake, ts)
    } else {
        ctx.timing.busy
    };
    // The CA Secret is read by name on each pass; its watch (`ca_watch`) wakes the pass when it
    // changes, and this bounds the wait when the watch cannot run.
    let wait = ca_watch::bound(wait, ctx.ca_recheck, certs.as_ref());
    mark_hot(ctx, (ns, name), wait);
    Ok(Action::requeue(wait))
}

async fn report_invalid<M: Members>(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context<M>,
) -> Result<Action, Error> {
    let log = |ns: &str, name: &str, event: &PlanEvent| {
        tracing::warn!(cluster = %name, namespace = %ns, "{}", event.message);
    };
    passes::report_invalid::<Cluster, ClusterStatus, M>(invalid, ctx, KIND, CLUSTER_MANAGER, log)
        .await
}
