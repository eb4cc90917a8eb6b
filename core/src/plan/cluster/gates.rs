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

use crate::api::{LogMode, MemberRole, StepAction, Supervision, UpgradeStrategy};
use crate::plan::window::{WindowState, window_state};

use super::record;
use super::start;
use super::state::{NewStep, Pass, switchover_step_name};
use super::view;

/// Paused by the spec or by an intent.
pub(super) fn paused(p: &Pass<'_>) -> bool {
    p.spec().paused || p.inp.intents.pause
}

/// `member` may take a step ahead of the window (media, preparation) now: idle, not Zombie,
/// not backing off (the wake is set for the end of its backoff), the cluster not paused.
pub(super) fn may_step_ahead(p: &mut Pass<'_>, member: &str, now: crate::api::Timestamp) -> bool {
    if p.busy(member) {
        return false;
    }
    match p.record(member) {
        Some(r) if r.role == MemberRole::Zombie => return false,
        Some(r) => {
            if let Some(at) = r.next_attempt_at.filter(|&at| now < at) {
                p.wake_at(at);
                return false;
            }
        }
        None => {}
    }
    if paused(p) {
        p.held = true;
        return false;
    }
    true
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

/// The gates of a rotation's restart: a window and room under `maxUnavailable` (no backup: the
/// data does not change).
pub(super) fn disruption_allowed_for_rotation(p: &mut Pass<'_>) -> bool {
    window_open(p) && room_to_take_down(p)
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
            .is_some_and(|b| b.version == p.target.version && b.window == window);
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
    let name = switchover_step_name(p.inp.cluster.name, to, version);
    if !p.inp.intents.approve.iter().any(|a| a == &name) {
        p.found.awaiting = Some(name);
        return None;
    }
    if !disruption_allowed(p, false) {
        return None;
    }
    record::acknowledge(p, format!("approve:{name}"));
    p.event(false, "Approved", format!("step {name} approved"));
    Some(LogMode::Manual)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{recorded, steps};
    use super::*;
    use crate::api::{BackupRecord, Timestamp, values::Duration};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, step};
    use crate::plan::observe::Wake;

    const HOUR: i64 = 3_600_000;

    fn cluster() -> ClusterBuilder {
        // NOW is a Friday, 08:00 UTC.
        ClusterBuilder::pair("2.0.0").running("1.0.0")
    }

    /// With a maintenance window of two hours from `start`, every day.
    fn in_window(start: &str) -> ClusterBuilder {
        cluster().window(&[], start, Duration::from_secs(7200))
    }

    #[test]
    fn a_disruptive_step_outside_the_window_waits_and_wakes_when_it_opens() {
        let case = in_window("22:00").build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!disruption_allowed(&mut p, true));
        let opens = Timestamp(NOW.millis() + 14 * HOUR);
        assert_eq!(p.wake, Wake::At(opens));
        assert_eq!(
            p.found.waiting,
            [format!(
                "outside maintenance windows; next opens at {opens}"
            )]
        );
    }

    #[test]
    fn inside_a_window_a_disruptive_step_may_start() {
        let case = in_window("07:00").build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(disruption_allowed(&mut p, true));
        assert!(p.found.waiting.is_empty());
    }

    #[test]
    fn max_unavailable_holds_a_step_that_takes_a_member_down() {
        let case = cluster().upgrade(|u| u.max_unavailable = 2).build();
        let input = case.input();
        let mut p = recorded(&input);
        p.unavailable = 1;
        assert!(disruption_allowed(&mut p, true), "one of two is down");
        p.unavailable = 2;
        assert!(!disruption_allowed(&mut p, true));
        assert_eq!(p.found.waiting, ["maxUnavailable 2 reached"]);
        // A switchover does not take a member down: the budget does not hold it.
        assert!(disruption_allowed(&mut p, false));
    }

    #[test]
    fn a_backup_of_every_member_comes_before_the_first_disruptive_step_of_a_window() {
        let window_start = Timestamp(NOW.millis() - HOUR);
        let case = in_window("07:00")
            .upgrade(|u| u.backup_before_disruptive = true)
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!disruption_allowed(&mut p, true));
        let backups = [
            (StepAction::Backup, "a".to_string()),
            (StepAction::Backup, "b".to_string()),
        ];
        assert_eq!(steps(&p), backups);
        // While a backup runs, no other starts (not even of an idle member).
        let case = in_window("07:00")
            .upgrade(|u| u.backup_before_disruptive = true)
            .step(step(StepAction::Backup, "a", NOW))
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!disruption_allowed(&mut p, true));
        assert_eq!(steps(&p), [(StepAction::Backup, "a".to_string())]);

        // Backed up in this window: allowed. Backed up in an earlier one: backed up again.
        let backed_up = |window| {
            in_window("07:00")
                .upgrade(|u| u.backup_before_disruptive = true)
                .with_status(|st| {
                    st.last_backup = Some(BackupRecord {
                        version: "2.0.0".into(),
                        window,
                        at: window,
                    })
                })
                .build()
        };
        let case = backed_up(window_start);
        let input = case.input();
        let mut p = recorded(&input);
        assert!(disruption_allowed(&mut p, true));
        let case = backed_up(Timestamp(window_start.millis() - 24 * HOUR));
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!disruption_allowed(&mut p, true));
        assert_eq!(steps(&p), backups);
    }

    #[test]
    fn a_switchover_under_approval_waits_for_its_approval_then_is_acknowledged() {
        let approval = |u: &mut crate::api::UpgradePolicy| u.supervision = Supervision::Approval;
        let case = cluster().upgrade(approval).build();
        let input = case.input();
        let mut p = recorded(&input);
        assert_eq!(switchover_allowed(&mut p, "b"), None);
        assert_eq!(p.found.awaiting.as_deref(), Some("switchover/c/b@1.0.0"));

        let case = cluster()
            .upgrade(approval)
            .approve("switchover/c/b@1.0.0")
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        assert_eq!(switchover_allowed(&mut p, "b"), Some(LogMode::Manual));
        assert_eq!(p.found.awaiting, None);
        assert_eq!(p.st.acknowledged, ["approve:switchover/c/b@1.0.0"]);
    }

    #[test]
    fn nothing_new_starts_while_paused_or_not_admitted_and_that_is_remembered() {
        let case = cluster().paused().build();
        let input = case.input();
        let p = recorded(&input);
        assert!(!may_start(&p));
        let case = cluster()
            .admission(crate::plan::cluster::Admission::default())
            .build();
        let input = case.input();
        let mut p = recorded(&input);
        assert!(!may_start(&p));
        p.may_start = false;
        assert_eq!(switchover_allowed(&mut p, "b"), None);
        assert!(p.held);
        let case = cluster().build();
        let input = case.input();
        assert!(may_start(&recorded(&input)));
    }

    #[test]
    fn an_outage_needs_allow_outage_or_the_mesh_offline_strategy() {
        let case = cluster().build();
        let input = case.input();
        assert!(!allow_outage(&recorded(&input)));
        let case = cluster().upgrade(|u| u.allow_outage = true).build();
        let input = case.input();
        assert!(allow_outage(&recorded(&input)));
        let offline = crate::plan::cluster::Admission {
            offline: true,
            ..crate::plan::cluster::Admission::standalone()
        };
        let case = cluster().admission(offline).build();
        let input = case.input();
        let p = recorded(&input);
        assert!(allow_outage(&p) && in_place(&p));
    }
}
