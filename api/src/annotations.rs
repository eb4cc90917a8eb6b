//! The annotations that carry imperative intent (set by `kubectl annotate` or the kubectl
//! plugin) and how their values read. They sit with the API because both hosts read them:
//! the Kubernetes controllers map them onto the planner's intents (`k8s::annotations`), and
//! the status tree shared by every host shows a paused object.

use std::collections::BTreeMap;

/// Comma-separated step names to approve (e.g. `switchover/web/m2@2.0.0`).
pub const APPROVE: &str = "baton.dev/approve";
/// `"true"` pauses: no new step starts (steps in flight finish).
pub const PAUSE: &str = "baton.dev/pause";
/// Any token; a new value is a new retry of failed steps.
pub const RETRY: &str = "baton.dev/retry";
/// On a Mesh, any token: start the rollout even though its preconditions fail. On a Cluster,
/// comma-separated rotation phase names (`rotation/CLUSTER/PHASE@CA`) to run before the phase
/// before them is complete.
pub const FORCE: &str = "baton.dev/force";

/// The step names the approve annotation lists.
pub fn approvals(annotations: &BTreeMap<String, String>) -> Vec<String> {
    names(annotations, APPROVE)
}

/// The comma-separated names under `key` (blanks dropped).
pub fn names(annotations: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    annotations
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The token under `key`; blank counts as none.
pub fn token(annotations: &BTreeMap<String, String>, key: &str) -> Option<String> {
    annotations
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Whether the pause annotation holds: only "true" (any case) pauses.
pub fn paused(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(PAUSE)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}
