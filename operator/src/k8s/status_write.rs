//! Status writes: server-side apply on the status subresource, one field manager per writer,
//! guarded by the `resourceVersion` the status was planned from.
//!
//! The precondition is what makes "persist before act" hold under a lagging watch cache: a
//! status planned from an outdated copy of the object is refused (409) instead of
//! overwriting a newer one, and the reconciler plans again from a fresh read.
//!
//! [`StatusTarget`] is the engine's [`StatusStore`] for one object: the reconcilers persist a
//! pass through it (`reconcile::persist`) and act only on the [`Persisted`] pass it yields.
//!
//! [`Persisted`]: crate::reconcile::Persisted

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Cluster, Mesh};
use crate::reconcile::{ClusterPass, MeshPass, StatusStore};

/// Field manager of the Cluster controller's status writes.
pub const CLUSTER_MANAGER: &str = "baton-cluster-controller";
/// Field manager of the Mesh controller's status writes.
pub const MESH_MANAGER: &str = "baton-mesh-controller";

/// The server-side apply body of a status write.
pub fn apply_body<K: Resource<DynamicType = ()>>(
    name: &str,
    resource_version: Option<&str>,
    status: &impl Serialize,
) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    })
}

/// Apply `status` to the object `name`; returns the object as stored after the write.
pub async fn apply_status<K>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    resource_version: Option<&str>,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = apply_body::<K>(name, resource_version, status);
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
}

impl<K> StatusTarget<'_, K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    /// Apply `status` when it `changed`: the object as stored after the write, `None` when
    /// nothing was written.
    async fn apply_if(
        &self,
        changed: bool,
        status: &impl Serialize,
    ) -> Result<Option<K>, kube::Error> {
        if !changed {
            return Ok(None);
        }
        apply_status(
            self.api,
            self.manager,
            self.name,
            self.resource_version,
            status,
        )
        .await
        .map(Some)
    }
}

/// The status subresource of one object, as the engine's status store: a pass whose status
/// changed is applied (guarded by the `resourceVersion` it was planned from); an unchanged one
/// is already stored. The write returns the object as stored after it, `None` when nothing was
/// written; a refusal is the API server's error (409 when planned from an outdated copy).
pub struct StatusTarget<'a, K> {
    pub api: &'a Api<K>,
    /// Field manager: [`CLUSTER_MANAGER`] or [`MESH_MANAGER`].
    pub manager: &'static str,
    pub name: &'a str,
    /// The version of the object the pass planned from.
    pub resource_version: Option<&'a str>,
}

impl StatusStore<ClusterPass> for StatusTarget<'_, Cluster> {
    type Written = Option<Cluster>;
    type Error = kube::Error;

    async fn write(&mut self, pass: &ClusterPass) -> Result<Option<Cluster>, kube::Error> {
        self.apply_if(pass.changed, &pass.plan.status).await
    }
}

impl StatusStore<MeshPass> for StatusTarget<'_, Mesh> {
    type Written = Option<Mesh>;
    type Error = kube::Error;

    async fn write(&mut self, pass: &MeshPass) -> Result<Option<Mesh>, kube::Error> {
        self.apply_if(pass.changed, &pass.plan.status).await
    }
}
