//! The first stage: is there anything to plan for? The spec must validate and a target version
//! must be known (the cluster's, or its mesh's) and parse.
//!
//! Owns: `status.observedGeneration`, `status.targetVersion`, and the pass's target (its
//! version and component order).
//!
//! May use: `state`, `plan::validate`. Used by the pipeline (`super`) only.

use crate::api::Version;
use crate::plan::stall::Stall;
use crate::plan::validate::{component_order, validate_cluster};

use super::state::Pass;

/// Set the pass's target, or say why there is none (the only stalls found before the members
/// are looked at).
pub(super) fn resolve(p: &mut Pass<'_>) -> Result<(), Stall> {
    p.st.observed_generation = p.inp.cluster.generation;
    let problems = validate_cluster(p.declared());
    if !problems.is_empty() {
        return Err(Stall::InvalidSpec(problems));
    }
    p.target.order = component_order(p.spec()).unwrap_or_default();
    let target = p
        .spec()
        .version
        .clone()
        .or_else(|| p.inp.admission.mesh_version.clone());
    let Some(target) = target else {
        return Err(Stall::NoVersion);
    };
    if let Err(e) = target.parse::<Version>() {
        return Err(Stall::InvalidVersion(e.to_string()));
    }
    p.st.target_version = Some(target.clone());
    p.target.version = target;
    Ok(())
}
