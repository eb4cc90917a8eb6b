//! The gates a new step passes. Every disruptive step (upgrade, rollback, switchover) waits
//! for a maintenance window (the planner wakes when it opens), for a backup of every member
//! before the first disruptive step of each window (`backupBeforeDisruptive`), and, when it
//! takes a member down, for room under `maxUnavailable`. A switchover in `Approval`
//! supervision waits for its approval. Nothing new starts while paused or not admitted by the
//! mesh; an outage (in place, or no other member) needs `allowOutage`.
//!
//! Owns: the backup steps, `status.acknowledged` for approvals, the `Approved` event, the
//! approval awaited and the waits these gates explain.
//!
//! May use: `state`, `view`, `record` (acknowledging), `start` (backups). Used by `member`,
//! `handover`, `choose` and the pipeline (`super`).

use crate::api::{LogMode, StepAction, Supervision, UpgradeStrategy};
use crate::plan::window::{WindowState, window_state};

use super::record;
use super::start;
use super::state::{NewStep, Pass, switchover_step_name};
use super::view;

/// Paused by the spec or by an intent.
pub(super) fn paused(p: &Pass<'_>) -> bool {
    p.spec().paused || p.inp.intents.pause
}

/// New steps may start: not paused and admitted by the mesh (standalone clusters always are).
pub(super) fn may_start(p: &Pass<'_>) -> bool {
    !paused(p) && p.inp.admission.admitted
}

/// Members upgrade where they stand (the strategy, or the mesh's offline rollout).
pub(super) fn in_place(p: &Pass<'_>) -> bool {
    p.spec().upgrade.strategy == UpgradeStrategy::InPlace || p.inp.admission.offline
}

/// Stopping service is allowed (`allowOutage`, or the mesh's offline rollout).
pub(super) fn allow_outage(p: &Pass<'_>) -> bool {
    p.spec().upgrade.allow_outage || p.inp.admission.offline
}

/// Windows, backups and the unavailability budget gate every disruptive step; `false` with
/// the reason among the waits (and a backup started when one is owed).
pub(super) fn disruption_allowed(p: &mut Pass<'_>, takes_member_down: bool) -> bool {
    window_open(p) && backed_up(p) && (!takes_member_down || room_to_take_down(p))
}

/// Inside a maintenance window (or none configured); otherwise wake when the next opens.
fn window_open(p: &mut Pass<'_>) -> bool {
    let WindowState::Closed { next } = window_state(&p.spec().upgrade.maintenance_windows, p.now())
    else {
        return true;
    };
    match next {
        Some(t) => {
            p.wait(format!("outside maintenance windows; next opens at {t}"));
            p.wake_at(t);
        }
        None => p.wait("outside maintenance windows; none will open".into()),
    }
    false
}

/// Backed up for this target in this window, or `backupBeforeDisruptive` off. Otherwise start
/// a backup of every idle member (unless one runs) and wait.
fn backed_up(p: &mut Pass<'_>) -> bool {
    if !p.spec().upgrade.backup_before_disruptive {
        return true;
    }
    let window = view::backup_window(p);
    let fresh =
        p.st.last_backup
            .as_ref()
            .is_some_and(|b| b.version == p.target_version && b.window == window);
    if fresh {
        return true;
    }
    if !p.has_step(StepAction::Backup) {
        for m in &p.spec().members {
            if !p.busy(&m.name) {
                let mut n = NewStep::on(StepAction::Backup, &m.name);
                n.message = format!(
                    "back up {} before the first disruptive step of this window",
                    m.name
                );
                start::start(p, n);
            }
        }
    }
    p.wait("backing up before the first disruptive step".into());
    false
}

/// Fewer than `maxUnavailable` members out of service.
fn room_to_take_down(p: &mut Pass<'_>) -> bool {
    let max = p.spec().upgrade.max_unavailable;
    if p.unavailable >= max {
        p.wait(format!("maxUnavailable {max} reached"));
        return false;
    }
    true
}

/// May the switchover to `to` start now, and how (`Manual` when approved)? Held while new
/// steps may not start; in `Approval` supervision it waits for its approval (acknowledged
/// once it passes the other gates).
pub(super) fn switchover_allowed(p: &mut Pass<'_>, to: &str) -> Option<LogMode> {
    if !p.may_start {
        p.held = true;
        return None;
    }
    if p.spec().upgrade.supervision != Supervision::Approval {
        return disruption_allowed(p, false).then_some(LogMode::Automatic);
    }
    let version = p.agent(to).map(|a| a.version.as_str()).unwrap_or_default();
    let name = switchover_step_name(p.inp.name, to, version);
    if !p.inp.intents.approve.iter().any(|a| a == &name) {
        p.awaiting = Some(name);
        return None;
    }
    if !disruption_allowed(p, false) {
        return None;
    }
    record::acknowledge(p, format!("approve:{name}"));
    p.event(false, "Approved", format!("step {name} approved"));
    Some(LogMode::Manual)
}

