//! The end of a rollout, once every member runs the target: go back to the primary member if
//! asked (`returnToPrimary`), release forced standbys (to Standby or Spare), verify the
//! cluster once (HA-pair checks needing the primary active are logged as skipped when it is
//! not), and then the cluster has converged.
//!
//! Owns: the release and cluster-verification steps, the skipped HA-pair log entry, and
//! `converged`.
//!
//! May use: `state`, `view`, `log`, `start`, `handover`. Used by `choose`.

use crate::api::{LogMode, LogResult, MemberRole, StepAction};

use super::handover;
use super::log;
use super::start;
use super::state::{NewStep, Pass, StepVersion};
use super::view;

/// Every member runs the target: return to the primary, release, verify, converge.
pub(super) fn finish_rollout(p: &mut Pass<'_>, active: &str) {
    if return_to_primary(p, active) || release_forced_standbys(p, active) {
        return;
    }
    let key = view::target_key(p, active);
    if p.st.rolled_back.is_none() && p.st.verified_target != key {
        verify_cluster(p, active);
        return;
    }
    // The health after, against the baseline (`upgrade.health`): worse stalls the cluster.
    if super::health::compare(p) {
        return;
    }
    // The old media goes once the new version runs everywhere; converged after that.
    if super::media::cleanup(p) {
        return;
    }
    if p.st.steps.is_empty() && !p.held {
        p.converged = true;
    }
}

/// With `returnToPrimary`, switch back to the primary member (once it is in sync). True while
/// that is what the cluster does.
fn return_to_primary(p: &mut Pass<'_>, active: &str) -> bool {
    if !p.spec().upgrade.return_to_primary || p.st.rolled_back.is_some() {
        return false;
    }
    let Some(primary_m) = p.spec().members.iter().find(|m| m.primary) else {
        return false;
    };
    let primary = primary_m.name.as_str();
    if primary == active {
        return false;
    }
    // The gates of any switchover target: in sync, and accepted by every peer that enforces
    // a list (a primary just added is, once it has joined).
    if handover::may_take_over(p, primary_m) {
        handover::request_switchover(p, active, primary, "return to the primary member");
    } else {
        p.wait(format!(
            "waiting for primary {primary} to be idle, in sync and accepted by its peers"
        ));
    }
    true
}

/// Release every forced standby but the active. True when one was started.
fn release_forced_standbys(p: &mut Pass<'_>, active: &str) -> bool {
    let mut started = false;
    for m in p.settled().collect::<Vec<_>>() {
        if m.name != active
            && p.agent(&m.name)
                .is_some_and(|a| a.role == MemberRole::ForcedStandby)
        {
            started = true;
            let mut n = NewStep::on(StepAction::Release, &m.name);
            n.message = format!(
                "release {} from forced standby: every member runs the same version",
                m.name
            );
            start::start(p, n);
        }
    }
    started
}

/// The one cluster-wide verification of the target. HA-pair verifications need the primary
/// active; without `returnToPrimary` they are skipped with a log line rather than blocking
/// forever.
fn verify_cluster(p: &mut Pass<'_>, active: &str) {
    let primary_active = p
        .spec()
        .members
        .iter()
        .any(|m| m.primary && m.name == active);
    let needs_primary = p
        .spec()
        .components
        .iter()
        .any(|c| c.verify.requires_primary_active && !c.verify.skip);
    if needs_primary && !primary_active {
        log::record_done(
            p,
            "verify",
            LogMode::Automatic,
            "",
            LogResult::Cancelled,
            "HA-pair verification skipped: the primary is not active",
        );
    }
    let mut n = NewStep::on(StepAction::Verify, active);
    n.from = Some("cluster".into());
    n.version = Some(StepVersion::whole(&p.target.version));
    n.message = format!("verify cluster {} on {active}", p.inp.cluster.name);
    start::start(p, n);
}
