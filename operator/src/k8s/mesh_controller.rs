//! The Mesh reconciler: plans admissions from the member Clusters' statuses (pure, no agent
//! calls), writes the status when it changed, and wakes the Clusters whose admission changed;
//! only a [`Persisted`] pass (one the status write handed back) wakes them.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::api::{Mesh, MeshSpec, MeshStatus};
use crate::plan::{PlanEvent, admission_for};
use crate::reconcile::{ClusterObject, Members, MeshPass, Persisted, now, plan_mesh_object};

use super::context::{Context, Error};
use super::events::{mesh_derived, reference};
use super::passes::{self, not_now, timed, write_status};
use super::status_write::MESH_MANAGER;
use super::stores::{GuardedMesh, mesh_object};

pub const KIND: &str = "Mesh";

#[tracing::instrument(
    skip(obj, ctx),
    fields(name = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default())
)]
pub async fn reconcile<M: Members>(
    obj: Arc<GuardedMesh>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    if let Some(later) = not_now(&ctx) {
        return Ok(later);
    }
    let pass = async {
        match &obj.0 {
            Ok(m) => pass(m, &ctx).await,
            Err(invalid) => report_invalid(invalid, &ctx).await,
        }
    };
    timed(&ctx, KIND, pass).await
}

pub fn error_policy<M: Members>(
    obj: Arc<GuardedMesh>,
    error: &Error,
    _ctx: Arc<Context<M>>,
) -> Action {
    tracing::warn!(mesh = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(StdDuration::from_secs(5))
}

async fn pass<M: Members>(stored: &Mesh, ctx: &Context<M>) -> Result<Action, Error> {
    let fresh = ctx.stores.written_meshes.pick(stored);
    let ns = fresh.namespace().unwrap_or_default();
    let name = fresh.name_any();
    let own = ctx.stores.ownership(&ns);
    let mut object = mesh_object(&fresh);
    let certs = fresh.spec.certificates.as_ref();
    object.ca = super::ca_watch::read(&ctx.client, &ns, certs).await;
    let clusters = ctx.stores.members_of(&ns, &own, &name);
    let outside = ctx.stores.outside_of(&ns, &own, &name);
    let members: Vec<&ClusterObject> = clusters.iter().collect();
    let ts = now();
    let pass = plan_mesh_object(&object, &members, &outside, ts);
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    let before: Option<&MeshStatus> = object.status.as_ref();
    let changed = pass.changed;
    let copies = &ctx.stores.written_meshes;
    let written = write_status(ctx, copies, KIND, MESH_MANAGER, &fresh, pass).await?;
    let Some((pass, written)) = written else {
        return Ok(Action::requeue(ctx.timing.busy));
    };
    if written {
        wake_admitted(ctx, &ns, &name, &object.spec, before, &members, &pass);
    }
    let plan = &pass.get().plan;
    let mut events = plan.events.clone();
    if changed {
        events.extend(mesh_derived(before, &plan.status));
    }
    ctx.events
        .publish(&reference::<Mesh>(&fresh.metadata), &events)
        .await;
    let wait = ctx.timing.after(plan.wake, ts);
    Ok(Action::requeue(super::ca_watch::bound(
        wait,
        ctx.ca_recheck,
        certs,
    )))
}

/// After a status write: the clusters whose admission changed decide at once; the others are
/// not woken: waking every member on each admission flooded the queue of a 200-cluster mesh
/// with passes that had nothing to do. The relation map remembers what each cluster was woken
/// for, so the watch event of this write does not wake them a second time. Takes the
/// [`Persisted`] pass: a cluster is never woken for an admission that is not stored.
fn wake_admitted<M: Members>(
    ctx: &Context<M>,
    ns: &str,
    mesh: &str,
    spec: &MeshSpec,
    before: Option<&MeshStatus>,
    members: &[&ClusterObject],
    pass: &Persisted<MeshPass>,
) {
    let after = &pass.get().plan.status;
    for c in members {
        let old = admission_for(mesh, spec, before, &c.name);
        let new = admission_for(mesh, spec, Some(after), &c.name);
        let changed = old != new;
        ctx.relations.admitted_by_write(ns, &c.name, new, changed);
    }
}

async fn report_invalid<M: Members>(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context<M>,
) -> Result<Action, Error> {
    let log = |ns: &str, name: &str, event: &PlanEvent| {
        tracing::warn!(mesh = %name, namespace = %ns, "{}", event.message);
    };
    passes::report_invalid::<Mesh, MeshStatus, M>(invalid, ctx, KIND, MESH_MANAGER, log).await
}
