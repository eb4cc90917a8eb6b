//! The write policy: which planned statuses are worth persisting.
//!
//! The planner derives a member's current operation (`members[].operation`: id, kind, state,
//! progress, message) from the agent on every pass, for display. It is never read back: the
//! planner looks operations up by the ids of the steps in `status.steps`. While an operation
//! runs, its progress moves on almost every look, so persisting it cost several status writes
//! per agent operation (measured: about 4 per operation, 38 per cluster on a 200-cluster
//! upgrade). A status whose only difference from the stored one is that field is therefore not
//! written; the field is brought up to date by the next write that records something (a step's
//! intent or result, a role or version change). Everything else the planner writes is either
//! memory (steps, failures, the log) or an observation that only moves when the cluster does
//! (roles, versions, whole-second lag), and a difference there is always written.

use crate::api::ClusterStatus;

/// True when `planned` records something `stored` does not (beyond the volatile fields above).
pub fn worth_writing(stored: Option<&ClusterStatus>, planned: &ClusterStatus) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    if stored == planned {
        return false;
    }
    if stored.members.len() != planned.members.len() {
        return true;
    }
    let mut a = stored.clone();
    let mut b = planned.clone();
    for m in a.members.iter_mut().chain(b.members.iter_mut()) {
        m.operation = None;
    }
    a != b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberStatus, OperationStatus, StepAction, Timestamp};

    fn with_op(progress: u8, state: &str) -> ClusterStatus {
        ClusterStatus {
            members: vec![MemberStatus {
                name: "m1".into(),
                operation: Some(OperationStatus {
                    id: "op".into(),
                    kind: "upgrade".into(),
                    state: state.into(),
                    progress,
                    message: Some(format!("{progress}%")),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn progress_of_a_running_operation_alone_is_not_written() {
        assert!(!worth_writing(
            Some(&with_op(10, "Running")),
            &with_op(60, "Running")
        ));
        assert!(!worth_writing(
            Some(&with_op(60, "Running")),
            &with_op(100, "Succeeded")
        ));
        assert!(!worth_writing(
            Some(&with_op(60, "Running")),
            &with_op(60, "Running")
        ));
    }

    #[test]
    fn anything_else_is_written() {
        assert!(worth_writing(None, &with_op(0, "Running")));
        let mut step = with_op(60, "Running");
        let mut upgrade = crate::fixtures::cluster::step(StepAction::Upgrade, "m1", Timestamp(1));
        upgrade.version = Some("2.0.0".into());
        step.steps.push(upgrade);
        assert!(worth_writing(Some(&with_op(10, "Running")), &step));
        let mut lag = with_op(10, "Running");
        lag.members[0].lag_seconds = 3.0;
        assert!(worth_writing(Some(&with_op(10, "Running")), &lag));
    }
}
