//! Test support: a pass prepared the way the pipeline prepares it for the stages after
//! `record` (target resolved, members recorded), so a stage's unit tests call it directly.

use super::state::Pass;
use super::{ClusterInput, record, target};

/// The pass after `target` and `record`, as `flight` and later stages see it.
pub(super) fn recorded<'a>(input: &'a ClusterInput<'a>) -> Pass<'a> {
    let mut p = Pass::new(input, input.cluster.status.cloned().unwrap_or_default());
    target::resolve(&mut p).expect("a valid spec with a target version");
    record::supersede(&mut p);
    record::apply_retry_intent(&mut p);
    record::refresh_members(&mut p);
    record::adopt_converged(&mut p);
    p
}

/// The steps recorded in the pass, as `(action, member)`.
pub(super) fn steps(p: &Pass<'_>) -> Vec<(crate::api::StepAction, String)> {
    p.st.steps
        .iter()
        .map(|s| (s.action, s.member.clone()))
        .collect()
}

/// The steps a plan recorded, as `(action, member)`.
pub(super) fn started(plan: &super::ClusterPlan) -> Vec<(crate::api::StepAction, String)> {
    plan.status
        .steps
        .iter()
        .map(|s| (s.action, s.member.clone()))
        .collect()
}
