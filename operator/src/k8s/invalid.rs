//! Objects that do not deserialize into the Rust types (a CRD older than the operator, a
//! field written around the schema). The watch keeps them as [`InvalidObject`]s instead of
//! failing, and the controllers report them with a `Stalled` condition (reason
//! `InvalidObject`, the failing field path in the message) and a warning event. Nothing else
//! is done for them until they change.

use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ClusterPhase, ClusterStatus, Condition, MeshPhase, MeshStatus, Timestamp, condition as cond,
};
use crate::plan::PlanEvent;
use crate::plan::conditions::set_condition;

use super::status_write::apply_body;

/// Condition reason for objects that do not deserialize.
pub const REASON: &str = "InvalidObject";

/// A status that can say "stalled on an invalid object".
pub trait StallStatus: Default + PartialEq + Clone + Serialize + DeserializeOwned {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn set_stalled(&mut self, generation: Option<i64>, message: &str);

    fn stall(&mut self, generation: Option<i64>, message: &str, now: Timestamp) {
        self.set_stalled(generation, message);
        let c = self.conditions_mut();
        set_condition(c, cond::STALLED, true, REASON, message, generation, now);
        set_condition(c, cond::READY, false, REASON, message, generation, now);
        set_condition(c, cond::RECONCILING, false, REASON, "", generation, now);
    }
}

impl StallStatus for ClusterStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn set_stalled(&mut self, generation: Option<i64>, message: &str) {
        self.observed_generation = generation;
        self.phase = ClusterPhase::Stalled;
        self.message = Some(message.to_string());
    }
}

impl StallStatus for MeshStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn set_stalled(&mut self, generation: Option<i64>, message: &str) {
        self.observed_generation = generation;
        self.phase = MeshPhase::Stalled;
        self.message = Some(message.to_string());
        // A mesh that cannot be read admits nobody.
        self.admitted.clear();
    }
}

/// What handling an invalid object did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Gone: nothing to report.
    Deleted,
    /// A fresh read deserializes: a newer version is on its way through the watch.
    NowValid,
    /// The Stalled status was already in place.
    Unchanged,
    /// The Stalled status was written; this event reports it.
    Written(PlanEvent),
}

/// Report an invalid `K` (status type `S`) with a Stalled status written by `manager`.
pub async fn report<K, S>(
    client: &kube::Client,
    invalid: &InvalidObject,
    manager: &str,
    now: Timestamp,
) -> Result<Outcome, kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
    S: StallStatus,
{
    let ns = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<K>(&()));
    // A fresh read: the field path of the problem, and the status as stored.
    let Some(raw) = api.get_opt(&name).await? else {
        return Ok(Outcome::Deleted);
    };
    let value = serde_json::to_value(&raw).unwrap_or_default();
    let detail = match serde_path_to_error::deserialize::<_, K>(value.clone()) {
        Ok(_) => return Ok(Outcome::NowValid),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }
        }
    };
    let message = format!(
        "{} {ns}/{name} cannot be read by this operator: {detail}",
        K::kind(&())
    );
    let old: Option<S> = value
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let mut new = old.clone().unwrap_or_default();
    new.stall(raw.metadata.generation, &message, now);
    if old.as_ref() == Some(&new) {
        return Ok(Outcome::Unchanged);
    }
    let body = apply_body::<K>(&name, None, &new);
    api.patch_status(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(Outcome::Written(PlanEvent {
        warning: true,
        reason: REASON.into(),
        message,
    }))
}
