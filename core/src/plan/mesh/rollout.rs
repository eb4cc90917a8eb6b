//! Direction and the rollout log: which way the mesh moves, and the log entries that record
//! it (the rollout, its tiers, each admission).
//!
//! Owns: upgrade vs backout (and a backout that keeps backing out), when a rollout is new, the
//! rollout entry (opened, superseded, closed when every cluster is done), tier statuses and
//! tier entries, admission entries. May use: `read`, `plan::conditions` (the log). Calls no
//! other stage.

use crate::api::{
    Direction, LogEntry, LogMode, LogResult, LogScope, MeshSpec, MeshStatus, RolloutStatus,
    TierSpec, TierStatus, Timestamp, values::cmp_versions,
};
use crate::plan::conditions::Log;
use crate::plan::observe::PlanEvent;

use super::read::Summary;

/// A backout while any unfinished cluster has a member newer than its target, or while a
/// backout keeps backing out; an upgrade otherwise.
pub(super) fn direction(st: &MeshStatus, spec: &MeshSpec, sums: &[Summary<'_>]) -> Direction {
    if sums
        .iter()
        .any(|s| !s.done && s.direction() == Direction::Backout)
    {
        Direction::Backout
    } else if keeps_backing_out(st.rollout.as_ref(), &st.log, spec, sums) {
        // The last clusters of a backout run the old version before they report Ready: the
        // rollout stays a backout (same log entry, reverse tier order) rather than turning
        // into an "upgrade" of clusters that are only finishing.
        Direction::Backout
    } else {
        Direction::Upgrade
    }
}

/// A backout rollout toward the current target, still open, with no cluster behind the target
/// (which would need an upgrade, a new rollout).
fn keeps_backing_out(
    rollout: Option<&RolloutStatus>,
    log: &[LogEntry],
    spec: &MeshSpec,
    sums: &[Summary<'_>],
) -> bool {
    rollout.is_some_and(|r| {
        r.direction == Direction::Backout
            && cmp_versions(&r.version, &spec.version).is_eq()
            && rollout_open(log, r)
            && !sums.iter().any(|s| !s.done && s.behind)
    })
}

/// The rollout's log entry is still running (not closed as done or superseded).
fn rollout_open(log: &[LogEntry], r: &RolloutStatus) -> bool {
    log.iter()
        .any(|e| e.id == r.log_id && e.result == LogResult::Running)
}

/// The version of the rollout under way (its log entry open), if one is.
pub(super) fn open_version(st: &MeshStatus) -> Option<&str> {
    st.rollout
        .as_ref()
        .filter(|r| rollout_open(&st.log, r))
        .map(|r| r.version.as_str())
}

pub(super) fn dir_word(d: Direction) -> &'static str {
    match d {
        Direction::Upgrade => "upgrade",
        Direction::Backout => "backout",
    }
}

/// A new target or a new direction starts a new rollout.
pub(super) fn is_new(st: &MeshStatus, spec: &MeshSpec, direction: Direction) -> bool {
    st.rollout.as_ref().is_none_or(|r| {
        !cmp_versions(&r.version, &spec.version).is_eq() || r.direction != direction
    })
}

pub(super) fn log(st: &mut MeshStatus) -> Log<'_> {
    Log {
        entries: &mut st.log,
        next_id: &mut st.next_log_id,
    }
}

/// What a rollout about to start covers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scope {
    /// Clusters in the mesh, readable or not.
    pub(super) total: u32,
    /// Some cluster runs another version than the target. When none does, the clusters move
    /// for another reason (a member joining or leaving): the log and the event say so, rather
    /// than announcing an upgrade to the version every cluster already runs.
    pub(super) versions_change: bool,
}

impl Scope {
    pub(super) fn of(sums: &[Summary<'_>], total: u32) -> Scope {
        Scope {
            total,
            versions_change: sums.iter().any(|s| s.behind || s.backout),
        }
    }
}

/// Start a rollout: the previous one (and its open tiers) is superseded, a new entry opens
/// (manual when forced) and `status.rollout` points at it.
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    st: &mut MeshStatus,
    mesh: &str,
    spec: &MeshSpec,
    direction: Direction,
    scope: Scope,
    forced: bool,
    events: &mut Vec<PlanEvent>,
    now: Timestamp,
) {
    let total = scope.total;
    let prev = st.rollout.as_ref().map(|r| r.log_id);
    let mut log = log(st);
    if let Some(prev) = prev {
        let why = format!("superseded by {} {}", dir_word(direction), spec.version);
        // Its tiers end with it.
        for id in open_tier_entries(log.entries, prev) {
            log.close(id, LogResult::Cancelled, why.clone(), now);
        }
        log.close(prev, LogResult::Cancelled, why, now);
    }
    let id = log.open(
        None,
        dir_word(direction),
        LogScope::Mesh,
        mesh,
        Some(&spec.version),
        if forced {
            LogMode::Manual
        } else {
            LogMode::Automatic
        },
        if scope.versions_change {
            format!(
                "{} {total} clusters to {}",
                dir_word(direction),
                spec.version
            )
        } else {
            format!(
                "reconcile {total} clusters at {} (no version changes)",
                spec.version
            )
        },
        now,
    );
    st.rollout = Some(RolloutStatus {
        version: spec.version.clone(),
        direction,
        started_at: now,
        log_id: id,
        reconcile: !scope.versions_change,
    });
    events.push(PlanEvent {
        warning: false,
        reason: "RolloutStarted".into(),
        message: if scope.versions_change {
            format!("{} to {}", dir_word(direction), spec.version)
        } else {
            format!("reconcile at {}: no cluster changes version", spec.version)
        },
    });
}

/// Every cluster is done, or every cluster but those of deferred tiers (`lagging` says which
/// are behind): the open rollout entry succeeds (the caller clears the admissions).
pub(super) fn finish(
    st: &mut MeshStatus,
    spec: &MeshSpec,
    total: u32,
    lagging: Option<&str>,
    events: &mut Vec<PlanEvent>,
    now: Timestamp,
) {
    if let Some(r) = &st.rollout
        && rollout_open(&st.log, r)
    {
        let id = r.log_id;
        let (entry, event) = match lagging {
            None => (
                format!("all {total} clusters run {}", spec.version),
                format!("all clusters run {}", spec.version),
            ),
            Some(behind) => {
                let m = format!(
                    "the tiers before the deferred ones run {}; deferred tiers behind: {behind}",
                    spec.version
                );
                (m.clone(), m)
            }
        };
        log(st).close(id, LogResult::Succeeded, entry, now);
        events.push(PlanEvent {
            warning: false,
            reason: "RolloutComplete".into(),
            message: event,
        });
    }
}

/// The rollout's health report, once, as it completes: a `health` entry under its own naming
/// each cluster that compared its health (`upgrade.health`) with its KPIs before → after.
pub(super) fn health_report(
    st: &mut MeshStatus,
    spec: &MeshSpec,
    mesh: &str,
    sums: &[Summary<'_>],
    now: Timestamp,
) {
    let Some(r) = st.rollout.as_ref().filter(|r| rollout_open(&st.log, r)) else {
        return;
    };
    let id = r.log_id;
    let lines: Vec<String> = sums
        .iter()
        .filter_map(|s| {
            let h = s.view.status?.health.as_ref()?;
            let after = h.after.as_ref().filter(|_| h.version == s.target(spec))?;
            let kpis: Vec<String> = after
                .kpis
                .iter()
                .map(
                    |(k, a)| match h.before.as_ref().and_then(|b| b.kpis.get(k)) {
                        Some(b) => format!("{k} {b} → {a}"),
                        None => format!("{k} {a}"),
                    },
                )
                .collect();
            let verdict = match (h.findings.is_empty(), h.accepted) {
                (true, _) => "passed",
                (false, true) => "worse, accepted",
                (false, false) => "worse",
            };
            Some(if kpis.is_empty() {
                format!("{} {verdict}", s.name())
            } else {
                format!("{} {verdict} ({})", s.name(), kpis.join(", "))
            })
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    let message = crate::plan::conditions::bounded(
        &format!("health before → after: {}", lines.join("; ")),
        2000,
    );
    let mut log = log(st);
    let entry = log.open(
        Some(id),
        "health",
        LogScope::Mesh,
        mesh,
        Some(&spec.version),
        LogMode::Automatic,
        message,
        now,
    );
    log.close(entry, LogResult::Succeeded, "", now);
}

/// One status per tier of the spec: its clusters counted, done or not, and the last start
/// kept from the last status (`moving` is filled by admission).
pub(super) fn tier_statuses(
    spec: &MeshSpec,
    last: &[TierStatus],
    sums: &[Summary<'_>],
) -> Vec<TierStatus> {
    let mut tiers: Vec<TierStatus> = spec
        .tiers
        .iter()
        .map(|t| {
            let prev = last.iter().find(|x| x.name == t.name);
            TierStatus {
                name: t.name.clone(),
                done: 0,
                total: 0,
                moving: vec![],
                last_start_at: prev.and_then(|p| p.last_start_at),
                drain: prev.and_then(|p| p.drain.clone()),
                deferred: prev.and_then(|p| p.deferred.clone()),
            }
        })
        .collect();
    for s in sums {
        if let Some(t) = tiers.get_mut(s.tier as usize) {
            t.total += 1;
            if s.done {
                t.done += 1;
            }
        }
    }
    tiers
}

/// A tier's entry (under the rollout's) closes when every cluster of the tier is done.
pub(super) fn close_done_tiers(
    st: &mut MeshStatus,
    tiers: &[TierStatus],
    events: &mut Vec<PlanEvent>,
    now: Timestamp,
) {
    let Some(rollout) = st.rollout.as_ref().map(|r| r.log_id) else {
        return;
    };
    let mut log = log(st);
    for id in open_tier_entries(log.entries, rollout) {
        let tier = log
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.target.clone());
        if let Some(t) = tiers.iter().find(|t| Some(&t.name) == tier.as_ref())
            && t.total > 0
            && t.done == t.total
        {
            let msg = format!("all {} clusters of tier {} done", t.total, t.name);
            log.close(id, LogResult::Succeeded, msg.clone(), now);
            events.push(PlanEvent {
                warning: false,
                reason: "TierComplete".into(),
                message: msg,
            });
        }
    }
}

/// Record an admission: an entry of its tier's entry (opened on the tier's first admission
/// of the rollout), itself under the rollout's; `moving` counts the tier's moving clusters.
#[allow(clippy::too_many_arguments)]
pub(super) fn log_admission(
    st: &mut MeshStatus,
    spec: &MeshSpec,
    tier: &TierSpec,
    s: &Summary<'_>,
    direction: Direction,
    moving: u32,
    now: Timestamp,
) {
    let parent = tier_entry(st, spec, tier, direction, now);
    let mut log = log(st);
    let id = log.open(
        parent,
        "admit",
        LogScope::Cluster,
        s.name(),
        Some(s.target(spec)),
        LogMode::Automatic,
        format!(
            "tier {} ({}/{} moving)",
            tier.name, moving, tier.max_parallel
        ),
        now,
    );
    log.close(id, LogResult::Succeeded, "", now);
}

/// The open `tier` entry of `tier` under the open rollout's entry, opened when there is
/// none; `None` without a rollout. A deferred tier that moves after its rollout completed
/// gets an entry of its own at the top of the log (a finished entry is history).
pub(super) fn tier_entry(
    st: &mut MeshStatus,
    spec: &MeshSpec,
    tier: &TierSpec,
    direction: Direction,
    now: Timestamp,
) -> Option<u64> {
    let r = st.rollout.as_ref().map(|r| r.log_id)?;
    // Only a deferred tier moves on its own after the rollout completed; any other tier
    // that moves again then (a member rejoining) stays under the rollout's entry.
    let own_entry = tier.deferred.is_some()
        && !st
            .rollout
            .as_ref()
            .is_some_and(|r| rollout_open(&st.log, r));
    let mut log = log(st);
    let open = open_tier_entries(log.entries, r).into_iter().find(|&id| {
        log.entries
            .iter()
            .any(|e| e.id == id && e.target == tier.name)
    });
    Some(open.unwrap_or_else(|| {
        log.open(
            (!own_entry).then_some(r),
            "tier",
            LogScope::Mesh,
            &tier.name,
            Some(&spec.version),
            LogMode::Automatic,
            if own_entry {
                format!("{} deferred tier {}", dir_word(direction), tier.name)
            } else {
                format!("{} tier {}", dir_word(direction), tier.name)
            },
            now,
        )
    }))
}

/// Ids of the tier entries still open under a rollout entry, and of those open at the top
/// of the log (deferred tiers moving after their rollout completed).
fn open_tier_entries(log: &[LogEntry], rollout: u64) -> Vec<u64> {
    log.iter()
        .filter(|e| {
            (e.parent == Some(rollout) || (e.parent.is_none() && e.id > rollout))
                && e.action == "tier"
                && e.result == LogResult::Running
        })
        .map(|e| e.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mesh::{NOW, Scene, cluster, mesh};
    use crate::plan::mesh::read;

    #[test]
    fn the_rollout_ends_with_the_health_of_each_cluster_before_and_after() {
        let mut scene = mesh("2.0.0")
            .tier("t", &["a", "b"])
            .scene()
            .with(cluster("a").runs("1.0.0"))
            .with(cluster("b").runs("1.0.0"));
        scene.step();
        let mut scene = scene
            .with(cluster("a").ready("2.0.0").health_passed("2.0.0"))
            .with(cluster("b").ready("2.0.0"));
        let plan = scene.step();
        let rollout = plan.status.rollout.as_ref().map(|r| r.log_id);
        let report = plan
            .status
            .log
            .iter()
            .find(|e| e.action == "health")
            .expect("a health report");
        assert_eq!(report.parent, rollout, "under the rollout's entry");
        assert_eq!(
            report.message,
            "health before → after: a passed (writeRate 100 → 96)"
        );
        // Once: the next pass adds none.
        let again = scene.step();
        let n = again
            .status
            .log
            .iter()
            .filter(|e| e.action == "health")
            .count();
        assert_eq!(n, 1);
    }

    fn direction_of(scene: &Scene, st: &MeshStatus) -> Direction {
        scene.with_input(|input| direction(st, input.mesh.spec, &read::read(input).sums))
    }

    /// A fresh status with an unforced rollout of `total` clusters started, and its events.
    fn started(spec: &MeshSpec, direction: Direction, total: u32) -> (MeshStatus, Vec<PlanEvent>) {
        let mut st = MeshStatus::default();
        let mut events = Vec::new();
        start(
            &mut st,
            "mesh",
            spec,
            direction,
            Scope {
                total,
                versions_change: true,
            },
            false,
            &mut events,
            NOW,
        );
        (st, events)
    }

    /// A status with a backout to `version` started (its log entry running).
    fn backing_out(scene: &Scene, version: &str) -> MeshStatus {
        let spec = MeshSpec {
            version: version.into(),
            ..scene.mesh.spec.clone()
        };
        started(&spec, Direction::Backout, 2).0
    }

    #[test]
    fn a_cluster_newer_than_its_target_makes_a_backout() {
        let up = Scene::one_tier(
            "1.0.0",
            [cluster("a").runs("1.0.0"), cluster("b").runs("0.9.0")],
        );
        assert_eq!(
            direction_of(&up, &MeshStatus::default()),
            Direction::Upgrade
        );
        let mut down = up.clone();
        down.set(cluster("b").members_run(&["1.0.0", "2.0.0"]));
        assert_eq!(
            direction_of(&down, &MeshStatus::default()),
            Direction::Backout
        );
        // A done cluster does not count, whatever its members run.
        let mut done = up;
        done.set(cluster("b").ready("1.0.0").members_run(&["2.0.0"]));
        assert_eq!(
            direction_of(&done, &MeshStatus::default()),
            Direction::Upgrade
        );
    }

    #[test]
    fn a_backout_keeps_backing_out_while_its_target_holds_and_nobody_is_behind() {
        // The last clusters of a backout already run the old version.
        let scene = Scene::one_tier(
            "1.0.0",
            [cluster("a").ready("1.0.0"), cluster("b").runs("1.0.0")],
        );
        let st = backing_out(&scene, "1.0.0");
        assert_eq!(direction_of(&scene, &st), Direction::Backout);
        assert_eq!(
            direction_of(&scene, &MeshStatus::default()),
            Direction::Upgrade
        );
        // Another target, or a cluster behind it, is an upgrade.
        assert_eq!(
            direction_of(&scene, &backing_out(&scene, "0.9.0")),
            Direction::Upgrade
        );
        let mut behind = scene.clone();
        behind.set(cluster("b").runs("0.9.0"));
        assert_eq!(direction_of(&behind, &st), Direction::Upgrade);
        // A finished backout is over.
        let mut closed = st.clone();
        closed.log[0].result = LogResult::Succeeded;
        assert_eq!(direction_of(&scene, &closed), Direction::Upgrade);
    }

    #[test]
    fn a_new_rollout_supersedes_the_last_and_its_tiers_but_not_finished_entries() {
        let spec = mesh("2.0.0").tier("t", &["a"]).build();
        let scene = Scene::new(spec.clone()).with(cluster("a").runs("1.0.0"));
        let (mut st, mut events) = started(&spec, Direction::Upgrade, 1);
        assert!(!is_new(&st, &spec, Direction::Upgrade));
        assert!(is_new(&st, &spec, Direction::Backout));
        scene.with_input(|input| {
            let c = read::read(input);
            log_admission(
                &mut st,
                &spec,
                &spec.tiers[0],
                &c.sums[0],
                Direction::Upgrade,
                1,
                NOW,
            );
        });
        let (rollout, tier, admit) = (&st.log[0], &st.log[1], &st.log[2]);
        assert_eq!(
            (rollout.action.as_str(), rollout.mode),
            ("upgrade", LogMode::Automatic)
        );
        assert_eq!(
            (tier.action.as_str(), tier.parent),
            ("tier", Some(rollout.id))
        );
        assert_eq!(
            (admit.action.as_str(), admit.parent),
            ("admit", Some(tier.id))
        );
        assert_eq!(admit.result, LogResult::Succeeded);
        let back = MeshSpec {
            version: "1.0.0".into(),
            ..spec
        };
        start(
            &mut st,
            "mesh",
            &back,
            Direction::Backout,
            Scope {
                total: 1,
                versions_change: true,
            },
            true,
            &mut events,
            NOW,
        );
        assert_eq!(st.log[0].result, LogResult::Cancelled);
        assert_eq!(
            st.log[1].result,
            LogResult::Cancelled,
            "its tier ends with it"
        );
        assert_eq!(st.log[2].result, LogResult::Succeeded, "history stays");
        assert_eq!(st.log[3].mode, LogMode::Manual, "forced");
        assert_eq!(st.rollout.as_ref().map(|r| r.log_id), Some(st.log[3].id));
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["RolloutStarted", "RolloutStarted"]);
    }

    #[test]
    fn tier_entries_close_when_the_tier_is_done_and_the_rollout_when_all_are() {
        let spec = mesh("2.0.0").tier("t", &["a"]).tier("u", &["b"]).build();
        let scene = Scene::new(spec.clone())
            .with(cluster("a").ready("2.0.0"))
            .with(cluster("b").runs("1.0.0"));
        let (mut st, mut events) = started(&spec, Direction::Upgrade, 2);
        let tiers = scene.with_input(|input| {
            let c = read::read(input);
            for s in &c.sums {
                let tier = &spec.tiers[s.tier as usize];
                log_admission(&mut st, &spec, tier, s, Direction::Upgrade, 1, NOW);
            }
            tier_statuses(&spec, &[], &c.sums)
        });
        assert_eq!((tiers[0].done, tiers[0].total, tiers[1].done), (1, 1, 0));
        close_done_tiers(&mut st, &tiers, &mut events, NOW);
        let tier_entries: Vec<LogResult> = st
            .log
            .iter()
            .filter(|e| e.action == "tier")
            .map(|e| e.result)
            .collect();
        assert_eq!(tier_entries, [LogResult::Succeeded, LogResult::Running]);
        finish(&mut st, &spec, 2, None, &mut events, NOW);
        assert_eq!(st.log[0].result, LogResult::Succeeded);
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["RolloutStarted", "TierComplete", "RolloutComplete"]
        );
        // Finishing again announces nothing.
        finish(&mut st, &spec, 2, None, &mut events, NOW);
        assert_eq!(events.len(), 3);
    }
}
