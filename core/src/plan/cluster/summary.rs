//! The summary written to status at the end of a pass: the phase, the kstatus conditions
//! (exactly one of Ready / Stalled / Reconciling unless paused) and the Degraded,
//! MixedVersion and AwaitingApproval flags, the one-line message, the end of the rollout's
//! log entry, and the wake hint (idle when stalled with nothing in flight).
//!
//! Owns: `status.{phase, message, conditions}`, the stall of a completed automatic rollback,
//! and the only call that turns the pass's [`Stall`] into the `Stalled` condition and its
//! warning event (`plan::conditions`).
//!
//! May use: `state`, `log`, `gates` (paused), `plan::conditions`. Used by the pipeline
//! (`super`) only.

use crate::api::{ClusterPhase, Health, LogResult, MemberRole, condition as cond};
use crate::plan::conditions::{Kstatus, announce_stall, set_flag, set_kstatus};
use crate::plan::observe::Wake;
use crate::plan::stall::Stall;

use super::gates;
use super::log;
use super::state::{Pass, describe_steps};

/// Finish the pass: everything the status says about where the cluster stands.
pub(super) fn summarize(p: &mut Pass<'_>) {
    let paused = gates::paused(p);
    note_impairments(p);
    let phase = phase_of(p, paused);
    // A rollback that completed is a terminal state a human must look at.
    if phase == ClusterPhase::RolledBack
        && let Some(rb) = &p.st.rolled_back
    {
        p.found.stalled = Some(Stall::AutomaticRollback {
            version: rb.version.clone(),
            reason: rb.reason.clone(),
        });
    }
    p.st.phase = phase;
    close_rollout(p, phase);
    write_conditions(p, paused, phase == ClusterPhase::Ready);
    p.st.message = message(p, paused, phase == ClusterPhase::Ready);
    if p.found.stalled.is_some() && p.st.steps.is_empty() {
        p.wake = Wake::Idle;
    }
}

/// Degraded notes from the member records and a rollback; a wait for the mesh's admission.
fn note_impairments(p: &mut Pass<'_>) {
    for m in &p.st.members {
        if m.role == MemberRole::Unreachable {
            p.found.degraded.push(format!("{} unreachable", m.name));
        } else if m.health >= Health::Major && m.health != Health::Offline {
            p.found
                .degraded
                .push(format!("{} health {:?}", m.name, m.health));
        }
    }
    if let Some(rb) = &p.st.rolled_back
        && p.found.stalled.is_none()
    {
        p.found.degraded.push(format!(
            "automatic rollback from {}: {}",
            rb.version, rb.reason
        ));
    }
    let admission = p.inp.admission;
    if !admission.admitted && !p.converged && p.found.stalled.is_none() {
        let reason = admission
            .reason
            .clone()
            .unwrap_or_else(|| "not admitted by the mesh".into());
        p.wait(reason);
    }
}

fn phase_of(p: &Pass<'_>, paused: bool) -> ClusterPhase {
    let steps = !p.st.steps.is_empty();
    if p.found.stalled.is_some() {
        ClusterPhase::Stalled
    } else if p.st.rolled_back.is_some() && !steps && p.converged {
        ClusterPhase::RolledBack
    } else if paused && !p.converged {
        ClusterPhase::Paused
    } else if p.converged {
        ClusterPhase::Ready
    } else if steps {
        ClusterPhase::Progressing
    } else {
        ClusterPhase::Waiting
    }
}

/// The rollout ends when the cluster converges or stops on an automatic rollback.
fn close_rollout(p: &mut Pass<'_>, phase: ClusterPhase) {
    let end = match (phase, &p.st.rolled_back) {
        (ClusterPhase::Ready, _) => Some((
            LogResult::Succeeded,
            format!("every member runs {}", p.target.version),
        )),
        (ClusterPhase::RolledBack, Some(rb)) => {
            Some((LogResult::Failed, format!("rolled back: {}", rb.reason)))
        }
        _ => None,
    };
    let now = p.now();
    if let Some((result, msg)) = end
        && let Some(id) = log::rollout(p, false)
    {
        p.log().close(id, result, msg, now);
    }
}

fn write_conditions(p: &mut Pass<'_>, paused: bool, ready: bool) {
    let (g, t) = (p.inp.cluster.generation, p.now());
    let (reason, message) = if p.st.steps.is_empty() {
        (
            "Waiting",
            p.found.waiting.first().cloned().unwrap_or_default(),
        )
    } else {
        ("StepInProgress", describe_steps(&p.st.steps))
    };
    announce_stall(&p.st.conditions, p.found.stalled.as_ref(), &mut p.events);
    let conds = &mut p.st.conditions;
    set_kstatus(
        conds,
        Kstatus {
            stalled: p.found.stalled.as_ref(),
            ready: ready.then(|| format!("every member runs {}", p.target.version)),
            paused,
            reconciling: (reason, message),
        },
        g,
        t,
    );
    let impaired = || p.found.degraded.join("; ");
    let degraded = !p.found.degraded.is_empty();
    let (on, off) = ("MembersImpaired", "AsExpected");
    set_flag(conds, cond::DEGRADED, degraded, on, off, impaired, g, t);
    let versions = p.st.running_versions.as_deref().unwrap_or_default();
    let mixed = versions.contains(',');
    let runs = || format!("members run {versions}");
    let (on, off) = ("MixedVersion", "SingleVersion");
    set_flag(conds, cond::MIXED_VERSION, mixed, on, off, runs, g, t);
    let awaiting = p.found.awaiting.as_deref();
    let approve = || format!("approve step {}", awaiting.unwrap_or_default());
    let (on, off) = ("ApprovalRequired", "NoApprovalPending");
    let flag = awaiting.is_some();
    set_flag(conds, cond::AWAITING_APPROVAL, flag, on, off, approve, g, t);
    // Only where a rotation could be forced: the condition is not news on other clusters.
    let forced = p.found.forced.as_deref();
    if forced.is_some() || conds.iter().any(|c| c.type_ == cond::ROTATION_FORCED) {
        let what = || forced.unwrap_or_default().to_string();
        let (on, off) = ("PhaseForced", "NotForced");
        set_flag(
            conds,
            cond::ROTATION_FORCED,
            forced.is_some(),
            on,
            off,
            what,
            g,
            t,
        );
    }
}

/// The one line on what the cluster does or waits for (none when ready).
fn message(p: &Pass<'_>, paused: bool, ready: bool) -> Option<String> {
    if let Some(stall) = &p.found.stalled {
        Some(stall.message())
    } else if let Some(a) = &p.found.awaiting {
        Some(format!("awaiting approval of {a}"))
    } else if ready {
        None
    } else if paused && p.st.steps.is_empty() {
        Some("paused".into())
    } else if !p.st.steps.is_empty() {
        Some(describe_steps(&p.st.steps))
    } else {
        p.found.waiting.first().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::recorded;
    use super::*;
    use crate::api::{Condition, StepAction};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, step};

    fn on(conds: &[Condition]) -> Vec<&str> {
        [cond::READY, cond::STALLED, cond::RECONCILING]
            .into_iter()
            .filter(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
            .collect()
    }

    fn summarized(
        f: impl FnOnce(&mut Pass<'_>),
    ) -> (Vec<String>, Option<String>, Wake, ClusterPhase) {
        let case = ClusterBuilder::pair("2.0.0").running("1.0.0").build();
        let input = case.input();
        let mut p = recorded(&input);
        f(&mut p);
        summarize(&mut p);
        let on = on(&p.st.conditions).into_iter().map(String::from).collect();
        (on, p.st.message.clone(), p.wake, p.st.phase)
    }

    #[test]
    fn exactly_one_of_ready_stalled_and_reconciling_holds() {
        let (ready, msg, _, phase) = summarized(|p| p.converged = true);
        assert_eq!(
            (ready, msg, phase),
            (vec![cond::READY.to_string()], None, ClusterPhase::Ready)
        );
        let (stalled, ..) = summarized(|p| p.found.stalled = Some(Stall::NoVersion));
        assert_eq!(stalled, [cond::STALLED]);
        let (waiting, msg, _, phase) = summarized(|p| p.wait("waiting for b".into()));
        assert_eq!(waiting, [cond::RECONCILING]);
        assert_eq!(
            (msg.as_deref(), phase),
            (Some("waiting for b"), ClusterPhase::Waiting)
        );
        let (busy, msg, _, phase) =
            summarized(|p| p.st.steps.push(step(StepAction::Upgrade, "b", NOW)));
        assert_eq!(busy, [cond::RECONCILING]);
        assert_eq!(
            (msg.as_deref(), phase),
            (Some("upgrade b"), ClusterPhase::Progressing)
        );
    }

    #[test]
    fn while_stalled_the_message_is_the_stall_and_nothing_wakes_the_cluster() {
        let stall = Stall::SplitBrain("both a and b report Active".into());
        let (_, msg, wake, phase) = summarized(|p| {
            p.wake = Wake::Busy;
            p.wait("something else".into());
            p.found.stalled = Some(stall.clone());
        });
        assert_eq!(msg, Some(stall.message()));
        assert_eq!((wake, phase), (Wake::Idle, ClusterPhase::Stalled));
    }

    #[test]
    fn a_completed_automatic_rollback_is_a_stall() {
        let (on, msg, ..) = summarized(|p| {
            p.converged = true;
            p.st.rolled_back = Some(crate::api::RolledBack {
                version: "2.0.0".into(),
                restored: Some("1.0.0".into()),
                reason: "b did not serve".into(),
                at: NOW,
            });
        });
        assert_eq!(on, [cond::STALLED]);
        assert!(
            msg.unwrap()
                .starts_with("rolled back from 2.0.0: b did not serve")
        );
    }
}
