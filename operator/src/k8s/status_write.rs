//! Status writes: server-side apply on the status subresource, one field manager per writer,
//! guarded by the `resourceVersion` the status was planned from.
//!
//! The precondition is what makes "persist before act" hold under a lagging watch cache: a
//! status planned from an outdated copy of the object is refused (409) instead of
//! overwriting a newer one, and the reconciler plans again from a fresh read.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
