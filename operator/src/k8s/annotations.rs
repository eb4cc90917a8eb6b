//! Imperative intent carried by annotations (set by `kubectl annotate` or the kubectl plugin)
//! and its mapping onto the planner's [`Intents`] / [`MeshIntents`].
//!
//! Annotations are read on every pass and never removed by the controllers: the planner
//! records each acted-on token in `status.acknowledged`, so a left-over annotation is not
//! acted on twice. `pause` is a state, not a token: it holds while the annotation says "true".

use std::collections::BTreeMap;

// The keys and their parsing live in `api::annotations`, which the host-neutral status tree
// reads too; re-exported so that the controllers and the kubectl plugin keep this path.
pub use crate::api::annotations::{APPROVE, FORCE, PAUSE, RETRY, approvals};
use crate::api::annotations::{names, paused, token};
use crate::plan::{Intents, MeshIntents};

/// The intents a Cluster's annotations carry.
pub fn cluster_intents(annotations: &BTreeMap<String, String>) -> Intents {
    Intents {
        approve: approvals(annotations),
        retry: token(annotations, RETRY),
        pause: paused(annotations),
        force: names(annotations, FORCE),
    }
}

/// The intents a Mesh's annotations carry.
pub fn mesh_intents(annotations: &BTreeMap<String, String>) -> MeshIntents {
    MeshIntents {
        force: token(annotations, FORCE),
        pause: paused(annotations),
        approve: approvals(annotations),
    }
}

/// The annotation an acknowledged token (`approve:…`, `retry:…`, `force:…`) came from, for
/// the event that reports it.
pub fn annotation_of(ack: &str) -> Option<(&'static str, &str)> {
    let (kind, value) = ack.split_once(':')?;
    let key = match kind {
        "approve" => APPROVE,
        "retry" => RETRY,
        "force" => FORCE,
        _ => return None,
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cluster_annotations_map_to_intents() {
        let i = cluster_intents(&ann(&[
            (APPROVE, " switchover/web/m2@2.0.0, ,switchover/db/n1@3.1 "),
            (PAUSE, "True"),
            (RETRY, "2024-06-01T10:00"),
            (FORCE, "rotation/web/RemoveOldTrust@4e44e44e44e4, "),
            ("other", "x"),
        ]));
        assert_eq!(i.force, ["rotation/web/RemoveOldTrust@4e44e44e44e4"]);
        assert_eq!(
            i.approve,
            vec!["switchover/web/m2@2.0.0", "switchover/db/n1@3.1"]
        );
        assert!(i.pause);
        assert_eq!(i.retry.as_deref(), Some("2024-06-01T10:00"));
        assert_eq!(cluster_intents(&BTreeMap::new()), Intents::default());
    }

    #[test]
    fn pause_needs_true_and_empty_tokens_are_ignored() {
        let i = cluster_intents(&ann(&[(PAUSE, "yes"), (RETRY, "  ")]));
        assert!(!i.pause);
        assert_eq!(i.retry, None);
        let m = mesh_intents(&ann(&[
            (FORCE, "t1"),
            (PAUSE, "true"),
            (APPROVE, "tier/prod/sat@2.0.0, "),
        ]));
        assert_eq!(m.force.as_deref(), Some("t1"));
        assert!(m.pause);
        assert_eq!(m.approve, ["tier/prod/sat@2.0.0"]);
    }

    #[test]
    fn acknowledged_tokens_name_their_annotation() {
        assert_eq!(
            annotation_of("approve:switchover/web/m2@2.0.0"),
            Some((APPROVE, "switchover/web/m2@2.0.0"))
        );
        assert_eq!(annotation_of("force:abc"), Some((FORCE, "abc")));
        assert_eq!(annotation_of("weird"), None);
    }
}
