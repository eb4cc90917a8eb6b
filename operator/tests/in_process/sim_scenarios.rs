//! Scenario tests: the planner driven by the deterministic simulator, one rule per test,
//! each drawn from the source procedures (see docs/architecture.md).

use std::collections::BTreeMap;

use baton::api::values::Duration;
use baton::api::*;
use baton::sim::topology::{self, member};
use baton::sim::{BrokenVersions, Sim, SimConfig, SimMember};

// 2027-01-15T08:00:00Z
const T0: Timestamp = Timestamp(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 8 * 3_600_000);

fn cluster_spec(n: usize, version: Option<&str>) -> ClusterSpec {
    ClusterSpec {
        version: version.map(str::to_string),
        members: (0..n).map(|i| member(&format!("m{i}"), "c")).collect(),
        ..Default::default()
    }
}

fn standalone(spec: ClusterSpec, from: &str, cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg, T0);
    sim.add_cluster("c", BTreeMap::new(), spec, from);
    sim
}

/// A standalone cluster of `n` members running `from`, asked for `to`, default simulation.
fn upgrading(n: usize, from: &str, to: &str) -> Sim {
    standalone(cluster_spec(n, Some(to)), from, SimConfig::default())
}

/// The default configuration, the simulated software broken on the versions `b` names.
fn broken(b: BrokenVersions) -> SimConfig {
    SimConfig {
        broken: b,
        ..SimConfig::default()
    }
}

fn sim_member<'s>(sim: &'s mut Sim, c: &str, m: &str) -> &'s mut SimMember {
    sim.cluster_mut(c)
        .and_then(|c| c.members.get_mut(m))
        .expect("member simulated")
}

/// Every member of cluster `c` runs `v`.
fn all_members_on(sim: &Sim, v: &str) -> bool {
    sim.cluster("c")
        .unwrap()
        .members
        .values()
        .all(|m| m.version == v)
}

fn condition<'a>(conds: &'a [Condition], t: &str) -> &'a Condition {
    conds
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {conds:#?}"))
}

/// The condition's message names `needle`.
fn assert_says(c: &Condition, needle: &str) {
    assert!(c.message.contains(needle), "{}", c.message);
}

fn status(sim: &Sim, c: &str) -> ClusterStatus {
    sim.cluster(c)
        .and_then(|c| c.status.clone())
        .expect("cluster planned")
}

/// The log's actions on members, in order, as `action member`.
fn log_lines(st: &ClusterStatus) -> Vec<String> {
    st.log
        .iter()
        .filter(|e| e.scope == LogScope::Member)
        .map(|e| format!("{} {}", e.action, e.target))
        .collect()
}

fn assert_clean(sim: &Sim) {
    assert!(
        sim.violations.is_empty(),
        "invariant violations: {:#?}",
        sim.violations
    );
}

/// Some invariant violation names `what`.
fn assert_caught(sim: &Sim, what: &str) {
    assert!(
        sim.violations.iter().any(|v| v.contains(what)),
        "{:#?}",
        sim.violations
    );
}

/// Runs `sim` for `d`, asserts no invariant was violated, and returns cluster c's status.
fn run_clean(sim: &mut Sim, d: Duration) -> ClusterStatus {
    sim.run(d);
    assert_clean(sim);
    status(sim, "c")
}

/// The `Stalled` condition says `InvalidSpec`, naming `needle`.
fn assert_invalid_spec(conds: &[Condition], needle: &str) {
    let c = condition(conds, "Stalled");
    assert_eq!(c.reason, "InvalidSpec");
    assert_says(c, needle);
}

#[test]
fn two_member_cluster_upgrades_standby_first_then_switches_over() {
    let mut sim = upgrading(2, "1.0.0", "2.0.0");
    // `upToDate` follows each member's version as the status reports it, and is seen mixed
    // part-way (the upgraded standby before the old active).
    let mut seen_mixed = false;
    for _ in 0..120 {
        sim.run(Duration::from_secs(30));
        if let Some(st) = sim.cluster("c").and_then(|c| c.status.as_ref()) {
            for m in &st.members {
                let at_target = m.version.as_deref() == Some("2.0.0");
                assert_eq!(m.up_to_date, at_target, "{}: {:?}", m.name, m.version);
            }
            seen_mixed |=
                st.members.iter().any(|m| m.up_to_date) && st.members.iter().any(|m| !m.up_to_date);
        }
    }
    assert!(seen_mixed, "never observed a half-upgraded cluster");
    assert_clean(&sim);
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    assert!(st.members.iter().all(|m| m.up_to_date));
    let lines = log_lines(&st);
    let pos = |s: &str| {
        lines
            .iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("{s} missing from {lines:#?}"))
    };
    // m0 starts active: m1 is upgraded first, then traffic moves to m1, then m0 is upgraded.
    assert!(pos("force-standby m1") < pos("upgrade m1"));
    assert!(pos("preflight m1") < pos("upgrade m1"));
    assert!(pos("upgrade m1") < pos("switchover m1"));
    assert!(pos("switchover m1") < pos("traffic-check m1"));
    assert!(pos("switchover m1") < pos("upgrade m0"));
    assert!(pos("upgrade m0") < pos("release m0"));
    assert_eq!(st.active_member.as_deref(), Some("m1"));
    for m in sim.cluster("c").unwrap().members.values() {
        assert_eq!(m.version, "2.0.0");
        assert_ne!(m.role, MemberRole::ForcedStandby);
    }
    assert_eq!(sim.stats.switchovers, 1);
    assert!(condition_is(&st, "Ready", "True"));
    assert!(condition_is(&st, "Stalled", "False"));
}

fn condition_is(st: &ClusterStatus, t: &str, v: &str) -> bool {
    st.conditions.iter().any(|c| c.type_ == t && c.status == v)
}

fn member_lines(st: &ClusterStatus, action: &str) -> Vec<String> {
    st.log
        .iter()
        .filter(|e| e.action == action && e.scope == LogScope::Member)
        .map(|e| e.target.clone())
        .collect()
}

#[test]
fn spares_go_last_and_max_unavailable_holds() {
    let mut spec = cluster_spec(4, Some("2.0.0"));
    spec.members[3].spare = true;
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    let st = run_clean(&mut sim, Duration::from_secs(7200));
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let ups = member_lines(&st, "upgrade");
    assert_eq!(ups.len(), 4);
    assert_eq!(
        ups.last().map(String::as_str),
        Some("m3"),
        "spare last: {ups:?}"
    );
    assert_eq!(ups[2], "m0", "the old active after the standbys: {ups:?}");
    // The spare returns to Spare, not Standby.
    assert_eq!(
        sim.cluster("c").unwrap().members["m3"].role,
        MemberRole::Spare
    );
}

#[test]
fn single_member_cluster_needs_permission_for_the_outage() {
    let mut sim = upgrading(1, "1.0.0", "2.0.0");
    let st = run_clean(&mut sim, Duration::from_secs(600));
    assert_eq!(st.phase, ClusterPhase::Stalled);
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.reason == "OutageNotAllowed")
    );
    assert_eq!(
        sim.stats.ops_submitted, 0,
        "refused before anything ran: {:?}",
        st.log
    );
    assert_eq!(sim.cluster("c").unwrap().members["m0"].version, "1.0.0");

    let mut spec = cluster_spec(1, Some("2.0.0"));
    spec.upgrade.allow_outage = true;
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(600));
    assert_clean(&sim);
    assert_eq!(status(&sim, "c").phase, ClusterPhase::Ready);
    assert_eq!(sim.cluster("c").unwrap().members["m0"].version, "2.0.0");
}

#[test]
fn failed_traffic_check_rolls_the_cluster_back_automatically() {
    let cfg = broken(BrokenVersions {
        no_traffic_after_promote_on: vec!["2.0.0".into()],
        ..Default::default()
    });
    let mut sim = standalone(cluster_spec(2, Some("2.0.0")), "1.0.0", cfg);
    let st = run_clean(&mut sim, Duration::from_secs(3600));
    assert_eq!(st.phase, ClusterPhase::RolledBack, "{:?}", st.message);
    let rb = st.rolled_back.clone().expect("rollback recorded");
    assert_eq!(rb.version, "2.0.0");
    // Restored to 1.0.0, the members do not run the target (2.0.0): not up to date.
    assert!(st.members.iter().all(|m| !m.up_to_date), "{:?}", st.members);
    assert!(
        rb.reason.contains("did not serve traffic within 1m30s"),
        "{}",
        rb.reason
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "AutomaticRollback")
    );
    let c = sim.cluster("c").unwrap();
    assert_eq!(
        c.members["m0"].role,
        MemberRole::Active,
        "switched back to the old active"
    );
    assert!(c.members["m0"].serving);
    assert_eq!(
        c.members["m1"].version, "1.0.0",
        "the upgraded member was rolled back"
    );
    assert_eq!(member_lines(&st, "rollback"), ["m1"]);
    // The traffic check failed, then the switch back happened.
    assert!(
        st.log
            .iter()
            .any(|e| e.action == "traffic-check" && e.result == LogResult::Failed)
    );
    assert_eq!(sim.stats.switchovers, 2);
}

#[test]
fn failing_upgrade_retries_with_backoff_then_zombie_and_stalled() {
    let cfg = broken(BrokenVersions {
        fail_upgrade_to: vec!["2.0.0".into()],
        ..Default::default()
    });
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.upgrade.retries = RetryPolicy {
        limit: 3,
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(15),
    };
    let mut sim = standalone(spec, "1.0.0", cfg);
    let st = run_clean(&mut sim, Duration::from_secs(3600));
    assert_eq!(st.phase, ClusterPhase::Stalled);
    let m1 = st.members.iter().find(|m| m.name == "m1").unwrap();
    assert_eq!(m1.role, MemberRole::Zombie);
    assert_eq!(m1.failures, 3);
    assert!(
        st.conditions.iter().any(|c| c.type_ == "Stalled"
            && c.reason == "MemberZombie"
            && c.message.contains("m1"))
    );
    let failed: Vec<&LogEntry> = st
        .log
        .iter()
        .filter(|e| e.action == "upgrade" && e.result == LogResult::Failed)
        .collect();
    assert_eq!(failed.len(), 3);
    // Backoff: 10s, then min(20s, 15s) between the end of one attempt and the next start.
    let gaps: Vec<i64> = failed
        .windows(2)
        .map(|w| w[1].start.millis() - w[0].end.unwrap().millis())
        .collect();
    assert!(gaps[0] >= 10_000 && gaps[1] >= 15_000, "gaps {gaps:?}");
    // The active was never touched.
    let c = sim.cluster("c").unwrap();
    assert_eq!(c.members["m0"].role, MemberRole::Active);
    assert_eq!(c.members["m0"].version, "1.0.0");
    assert!(c.members["m0"].serving);

    // A retry clears the Zombie and tries again (and fails again, three more times).
    sim.cluster_mut("c").unwrap().intents.retry = Some("r1".into());
    sim.run(Duration::from_secs(3600));
    let st = status(&sim, "c");
    assert_eq!(
        st.log
            .iter()
            .filter(|e| e.action == "upgrade" && e.result == LogResult::Failed)
            .count(),
        6
    );
    assert!(st.acknowledged.contains(&"retry:r1".to_string()));
}

#[test]
fn backout_is_declarative_and_standby_first() {
    let mut sim = upgrading(2, "2.0.0", "1.0.0");
    let st = run_clean(&mut sim, Duration::from_secs(3600));
    assert_eq!(st.phase, ClusterPhase::Ready);
    assert_eq!(member_lines(&st, "rollback"), ["m1", "m0"]);
    assert!(member_lines(&st, "upgrade").is_empty());
}

#[test]
fn target_change_mid_upgrade_waits_for_the_step_in_flight() {
    let mut sim = upgrading(3, "1.0.0", "2.0.0");
    // Run until the first upgrade is in flight, then ask for the old version back.
    for _ in 0..200 {
        sim.pass();
        if sim
            .cluster("c")
            .unwrap()
            .members
            .values()
            .any(|m| m.running_kind() == Some(baton::plan::OpKind::Upgrade))
        {
            break;
        }
        let dt = sim.next_event().since(sim.now);
        sim.tick(dt);
    }
    assert!(
        sim.cluster("c")
            .unwrap()
            .members
            .values()
            .any(|m| m.running_kind().is_some())
    );
    sim.cluster_mut("c").unwrap().spec.version = Some("1.0.0".into());
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim); // includes: never an upgrade and a rollback at once
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Ready);
    assert!(all_members_on(&sim, "1.0.0"));
}

#[test]
fn approval_mode_stops_before_the_switchover() {
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.upgrade.supervision = Supervision::Approval;
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    let st = run_clean(&mut sim, Duration::from_secs(1800));
    assert_ne!(st.phase, ClusterPhase::Ready);
    let cond = condition(&st.conditions, "AwaitingApproval");
    assert_eq!(cond.status, "True");
    assert_says(cond, "switchover/c/m1@2.0.0");
    assert_eq!(sim.stats.switchovers, 0);
    assert_eq!(sim.cluster("c").unwrap().members["m1"].version, "2.0.0");

    // The wrong name approves nothing; the right one lets it proceed.
    sim.cluster_mut("c").unwrap().intents.approve = vec!["switchover/c/m0@2.0.0".into()];
    sim.run(Duration::from_secs(600));
    assert_eq!(sim.stats.switchovers, 0);
    sim.cluster_mut("c").unwrap().intents.approve = vec!["switchover/c/m1@2.0.0".into()];
    sim.run(Duration::from_secs(3600));
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let sw = st.log.iter().find(|e| e.action == "switchover").unwrap();
    assert_eq!(sw.mode, LogMode::Manual);
}

#[test]
fn disruptive_steps_wait_for_the_maintenance_window() {
    let mut spec = cluster_spec(2, Some("2.0.0"));
    // T0 is 2027-01-15T08:00:00Z; the window opens at 22:00.
    spec.upgrade.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "22:00".into(),
        duration: "2h".parse().unwrap(),
    }];
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(3600));
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Waiting);
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("outside maintenance windows"),
        "{:?}",
        st.message
    );
    assert!(all_members_on(&sim, "1.0.0"));
    let st = run_clean(&mut sim, Duration::from_secs(86_400));
    assert_eq!(st.phase, ClusterPhase::Ready);
    // The first member upgrade (the cluster's rollout entry, also `upgrade`, opened earlier
    // with the first non-disruptive step).
    let first_upgrade = st
        .log
        .iter()
        .find(|e| e.action == "upgrade" && e.scope == LogScope::Member)
        .unwrap();
    let hour = (first_upgrade.start.millis() / 3_600_000) % 24;
    assert_eq!(hour, 22, "upgrade started at {}", first_upgrade.start);
}

#[test]
fn layered_components_follow_prerequisites_verify_and_back_up_first() {
    let comp = |n: &str, v: &str, after: &[&str], deferrable: bool| ComponentSpec {
        name: n.into(),
        version: Some(v.into()),
        after: after.iter().map(|s| s.to_string()).collect(),
        verify: VerifyPolicy {
            skip: false,
            deferrable,
            requires_primary_active: false,
        },
    };
    let mut spec = cluster_spec(2, Some("3.0.0"));
    // Listed out of order on purpose: the prerequisites decide.
    spec.components = vec![
        comp("app", "3.0.0", &["cluster"], false),
        comp("os", "8.4", &[], false),
        comp("cluster", "6.0", &["os"], true),
    ];
    spec.upgrade.backup_before_disruptive = true;
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("c", BTreeMap::new(), spec.clone(), "2.0.0");
    for m in sim.cluster_mut("c").unwrap().members.values_mut() {
        m.components = [("os", "7.9"), ("cluster", "5.0"), ("app", "2.0.0")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }
    let st = run_clean(&mut sim, Duration::from_secs(4 * 3600));
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let seq: Vec<String> = st
        .log
        .iter()
        .filter(|e| e.target == "m1" || e.scope == LogScope::Cluster)
        .map(|e| e.action.clone())
        .collect();
    // Backups of both members come before the first disruptive step.
    let first_backup = st
        .log
        .iter()
        .position(|e| e.action == "backup")
        .expect("backup");
    let first_upgrade = st
        .log
        .iter()
        .position(|e| e.action == "upgrade" && e.scope == LogScope::Member)
        .expect("upgrade");
    assert!(first_backup < first_upgrade);
    assert_eq!(st.log.iter().filter(|e| e.action == "backup").count(), 2);
    let comps: Vec<String> = st
        .log
        .iter()
        .filter(|e| e.action == "upgrade" && e.target == "m1")
        .map(|e| e.message.clone())
        .collect();
    assert!(
        comps[0].contains(" os ") && comps[1].contains(" cluster ") && comps[2].contains(" app "),
        "{comps:?}"
    );
    // os is verified between layers; cluster (deferrable) is verified at the end.
    let m1: Vec<&LogEntry> = st.log.iter().filter(|e| e.target == "m1").collect();
    let idx = |pred: &dyn Fn(&LogEntry) -> bool| {
        m1.iter()
            .position(|e| pred(e))
            .unwrap_or_else(|| panic!("{seq:?}"))
    };
    let up_os = idx(&|e| e.action == "upgrade" && e.message.contains(" os "));
    let ver_os = idx(&|e| e.action == "verify" && e.message.contains("verify os"));
    let up_cl = idx(&|e| e.action == "upgrade" && e.message.contains(" cluster "));
    let up_app = idx(&|e| e.action == "upgrade" && e.message.contains(" app "));
    let ver_cl = idx(&|e| e.action == "verify" && e.message.contains("verify cluster 6.0"));
    assert!(up_os < ver_os && ver_os < up_cl, "{seq:?}");
    assert!(
        up_app < ver_cl,
        "deferred verification after the last layer: {seq:?}"
    );
    for m in sim.cluster("c").unwrap().members.values() {
        assert_eq!(m.components["os"], "8.4");
        assert_eq!(m.components["cluster"], "6.0");
        assert_eq!(m.components["app"], "3.0.0");
    }
}

#[test]
fn unreachable_members_are_waited_for_never_acted_on() {
    let mut sim = upgrading(2, "1.0.0", "2.0.0");
    let until = T0.plus(Duration::from_secs(600));
    sim_member(&mut sim, "c", "m1").downtime.cut_until = Some(until);
    sim.run(Duration::from_secs(300));
    let st = status(&sim, "c");
    assert_eq!(sim.stats.ops_submitted, 0, "{:?}", st.log);
    assert!(
        st.members
            .iter()
            .any(|m| m.name == "m1" && m.role == MemberRole::Unreachable)
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message.contains("m1"))
    );
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim);
    assert_eq!(status(&sim, "c").phase, ClusterPhase::Ready);
}

#[test]
fn pause_stops_new_steps_and_resume_continues() {
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.paused = true;
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(600));
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Paused);
    assert_eq!(sim.stats.ops_submitted, 0);
    sim.cluster_mut("c").unwrap().spec.paused = false;
    sim.run(Duration::from_secs(3600));
    assert_eq!(status(&sim, "c").phase, ClusterPhase::Ready);
}

#[test]
fn invalid_spec_is_stalled_with_the_reason_and_nothing_happens() {
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.components = vec![
        ComponentSpec {
            name: "a".into(),
            version: None,
            after: vec!["b".into()],
            verify: Default::default(),
        },
        ComponentSpec {
            name: "b".into(),
            version: None,
            after: vec!["a".into()],
            verify: Default::default(),
        },
    ];
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(300));
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Stalled);
    assert_invalid_spec(&st.conditions, "prerequisite cycle among a, b");
    assert_eq!(sim.stats.ops_submitted, 0);
}

#[test]
fn converged_cluster_plans_an_identical_status() {
    let mut sim = upgrading(2, "1.0.0", "2.0.0");
    sim.run(Duration::from_secs(3600));
    let before = status(&sim, "c");
    assert_eq!(before.phase, ClusterPhase::Ready);
    let ops = sim.stats.ops_submitted;
    for _ in 0..5 {
        sim.tick(Duration::from_secs(120));
        sim.pass();
    }
    assert_eq!(
        status(&sim, "c"),
        before,
        "a converged system must not change its status"
    );
    assert_eq!(sim.stats.ops_submitted, ops);
}

#[test]
fn split_brain_is_stalled_not_acted_on() {
    let mut sim = upgrading(2, "1.0.0", "2.0.0");
    sim_member(&mut sim, "c", "m1").role = MemberRole::Active;
    sim.run(Duration::from_secs(300));
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Stalled);
    assert!(st.conditions.iter().any(|c| c.reason == "SplitBrain"));
    assert_eq!(sim.stats.ops_submitted, 0);
}

// ----- meshes ------------------------------------------------------------------------------

fn mesh_sim(t: topology::Topology, from: &str, cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg, T0);
    for c in t.clusters {
        sim.add_cluster(&c.name, c.labels, c.spec, from);
    }
    sim.set_mesh("mesh", t.mesh);
    sim
}

/// The active/standby deployment (see [`topology::active_standby_deployment`]) asked for
/// 2.0.0 while running 1.0.0.
fn deployment_rollout(workers: usize, max_parallel: u32, stagger: Duration, cfg: SimConfig) -> Sim {
    let t = topology::active_standby_deployment(workers, max_parallel, stagger, "2.0.0");
    mesh_sim(t, "1.0.0", cfg)
}

fn mesh_status(sim: &Sim) -> MeshStatus {
    sim.mesh
        .as_ref()
        .and_then(|m| m.status.clone())
        .expect("mesh planned")
}

/// Start instants of each cluster's first upgrade/rollback, from the clusters' logs.
fn first_moves(sim: &Sim) -> Vec<(Timestamp, String)> {
    let mut v: Vec<(Timestamp, String)> = sim
        .clusters
        .iter()
        .filter_map(|c| {
            let st = c.status.as_ref()?;
            let e = st
                .log
                .iter()
                .find(|e| e.action == "upgrade" || e.action == "rollback")?;
            Some((e.start, c.name.clone()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn active_standby_deployment_upgrades_in_tier_order_with_parallelism_and_stagger() {
    let mut sim = deployment_rollout(
        12,
        4,
        Duration::from_secs(60),
        SimConfig {
            upgrade_time: Duration::from_secs(600),
            ..Default::default()
        },
    );
    sim.run(Duration::from_secs(86_400));
    assert_clean(&sim); // tier order, maxParallel, compatibility at every instant
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    assert_eq!(ms.progress.as_deref(), Some("14/14"));
    let order = first_moves(&sim);
    assert_eq!(order[0].1, "cmp-primary");
    assert_eq!(order[1].1, "cmp-secondary");
    // Worker admissions (the mesh's starts) are at least a minute apart.
    let admits: Vec<Timestamp> = ms
        .log
        .iter()
        .filter(|e| e.action == "admit" && e.target.starts_with('m'))
        .map(|e| e.start)
        .collect();
    assert_eq!(admits.len(), 12, "{:?}", ms.log);
    for w in admits.windows(2) {
        assert!(
            w[1].since(w[0]) >= Duration::from_secs(60),
            "stagger violated: {admits:?}"
        );
    }
    // Up to four workers move at once, so the workers take about a third of the serial time.
    let workers: Vec<Timestamp> = order
        .iter()
        .filter(|(_, n)| n.starts_with("mpe") || n.starts_with("mra"))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(workers.len(), 12);
    assert!(
        workers[3].since(workers[0]) < Duration::from_secs(300),
        "four workers start within minutes: {order:?}"
    );
    assert!(ms.log.iter().any(|e| e.action == "upgrade"
        && e.scope == LogScope::Mesh
        && e.result == LogResult::Succeeded));
}

#[test]
fn mesh_backout_walks_tiers_in_reverse() {
    let t = topology::active_standby_deployment(4, 2, Duration(0), "1.0.0");
    let mut sim = mesh_sim(t, "2.0.0", SimConfig::default());
    sim.run(Duration::from_secs(86_400));
    assert_clean(&sim);
    assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
    let order = first_moves(&sim);
    let n = order.len();
    assert_eq!(order[n - 1].1, "cmp-primary");
    assert_eq!(order[n - 2].1, "cmp-secondary");
    // One rollout entry, a backout, from start to finish: the last clusters finishing on the
    // old version do not turn it into an "upgrade".
    let ms = mesh_status(&sim);
    let rollouts: Vec<(&str, LogResult)> = ms
        .log
        .iter()
        .filter(|e| e.parent.is_none() && e.scope == LogScope::Mesh)
        .map(|e| (e.action.as_str(), e.result))
        .collect();
    assert_eq!(
        rollouts,
        [("backout", LogResult::Succeeded)],
        "{:#?}",
        ms.log
    );
    assert_eq!(ms.rollout.map(|r| r.direction), Some(Direction::Backout));
}

/// A finished rollout stays in the log as it ended: the next rollout opens its own entry and
/// never rewrites the one before as "Cancelled" (seen on a real API server after every rollout).
#[test]
fn a_finished_rollout_keeps_its_result_when_the_next_one_starts() {
    let mut sim = deployment_rollout(2, 1, Duration(0), SimConfig::default());
    sim.run(Duration::from_secs(86_400));
    assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
    let first = mesh_status(&sim)
        .log
        .into_iter()
        .find(|e| e.parent.is_none() && e.action == "upgrade")
        .expect("the first rollout is logged");
    assert_eq!(first.result, LogResult::Succeeded);
    sim.mesh.as_mut().unwrap().spec.version = "3.0.0".into();
    sim.run(Duration::from_secs(86_400));
    assert_clean(&sim);
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready);
    let rollouts: Vec<(Option<String>, LogResult)> = ms
        .log
        .iter()
        .filter(|e| e.parent.is_none() && e.scope == LogScope::Mesh && e.action == "upgrade")
        .map(|e| (e.version.clone(), e.result))
        .collect();
    assert_eq!(
        rollouts,
        [
            (Some("2.0.0".to_string()), LogResult::Succeeded),
            (Some("3.0.0".to_string()), LogResult::Succeeded)
        ],
        "{:#?}",
        ms.log
    );
    let again = ms.log.iter().find(|e| e.id == first.id).expect("kept");
    assert_eq!(again.end, first.end, "a finished entry is not rewritten");
}

#[test]
fn preconditions_block_the_start_until_forced() {
    let mut sim = deployment_rollout(2, 1, Duration(0), SimConfig::default());
    sim_member(&mut sim, "mpe-00", "s1").backlog = 42;
    sim.run(Duration::from_secs(600));
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Stalled);
    let c = condition(&ms.conditions, "PreconditionsMet");
    assert_eq!(c.status, "False");
    assert_says(c, "replication backlog on mpe-00 (42)");
    assert_eq!(
        sim.stats.ops_submitted, 0,
        "nothing may change when preconditions fail"
    );
    sim.mesh.as_mut().unwrap().intents.force = Some("f1".into());
    sim.run(Duration::from_secs(86_400));
    assert_clean(&sim);
    assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
}

#[test]
fn rolling_mesh_refuses_a_takeover_beyond_the_load_factor() {
    // Three single-core clusters: taking the 10,000-agent core down would put each 500-agent
    // peer at 5,500, eleven times its load.
    let core = |name: &str, load: u64| {
        let mut spec = cluster_spec(1, None);
        spec.members[0].endpoint = format!("{name}:9443");
        spec.upgrade.allow_outage = true;
        spec.load = Some(load);
        (name.to_string(), spec)
    };
    let cores = [
        core("big", 10_000),
        core("small-a", 500),
        core("small-b", 500),
    ];
    let mut sim = Sim::new(SimConfig::default(), T0);
    for (n, s) in &cores {
        sim.add_cluster(n, BTreeMap::new(), s.clone(), "1.0.0");
    }
    let mesh = |factor: f64| MeshSpec {
        version: "2.0.0".into(),
        tiers: vec![TierSpec {
            name: "cores".into(),
            clusters: vec!["big".into(), "small-a".into(), "small-b".into()],
            selector: None,
            max_parallel: 1,
            stagger: Duration(0),
            drain_before: None,
            deferred: None,
        }],
        strategy: MeshStrategy {
            type_: MeshStrategyType::Rolling,
            max_takeover_load_factor: Some(factor),
        },
        ..Default::default()
    };
    sim.set_mesh("mesh", mesh(3.0));
    sim.run(Duration::from_secs(3600));
    let ms = mesh_status(&sim);
    // The small cores may go (each adds 250 to the other peers), the big one never.
    assert_eq!(sim.cluster("big").unwrap().members["m0"].version, "1.0.0");
    assert_eq!(
        sim.cluster("small-a").unwrap().members["m0"].version,
        "2.0.0"
    );
    assert_eq!(ms.phase, MeshPhase::Stalled, "{:?}", ms.message);
    assert!(
        ms.message
            .as_deref()
            .unwrap_or("")
            .contains("11.0x its own load"),
        "{:?}",
        ms.message
    );
    // Raising the factor lets it through.
    sim.mesh.as_mut().unwrap().spec = mesh(12.0);
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim);
    assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
}

#[test]
fn invalid_mesh_is_stalled_and_admits_nothing() {
    let mut t = topology::active_standby_deployment(2, 1, Duration(0), "2.0.0");
    // Workers may not be newer than management, yet workers come first: never satisfiable.
    t.mesh.tiers.swap(0, 2);
    let mut sim = mesh_sim(t, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(600));
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Stalled);
    assert_invalid_spec(&ms.conditions, "can never be satisfied");
    assert!(ms.admitted.is_empty());
    assert_eq!(sim.stats.ops_submitted, 0);
}

#[test]
fn mesh_decides_the_same_from_running_versions_or_member_records() {
    use baton::plan::{MeshClusterView, MeshInput, ObjectView, plan_mesh};
    // The mesh planner reads each cluster's `runningVersions` summary and falls back to the
    // member records when it is missing: both must give the same decision at every stage of
    // an upgrade and of a backout.
    for (from, to) in [("1.0.0", "2.0.0"), ("2.0.0", "1.0.0")] {
        let t = topology::active_standby_deployment(6, 2, Duration::from_secs(60), to);
        let mut sim = mesh_sim(t, from, SimConfig::default());
        let mut moving = 0;
        for _ in 0..600 {
            sim.run(Duration::from_secs(60));
            let mesh = sim.mesh.as_ref().expect("mesh");
            let bare: Vec<Option<ClusterStatus>> = sim
                .clusters
                .iter()
                .map(|c| {
                    c.status.clone().map(|s| ClusterStatus {
                        running_versions: None,
                        ..s
                    })
                })
                .collect();
            let views = |bare_statuses: bool| -> Vec<MeshClusterView<'_>> {
                sim.clusters
                    .iter()
                    .zip(&bare)
                    .map(|(c, b)| MeshClusterView {
                        name: &c.name,
                        labels: &c.labels,
                        spec: &c.spec,
                        status: if bare_statuses {
                            b.as_ref()
                        } else {
                            c.status.as_ref()
                        },
                    })
                    .collect()
            };
            let (full, stripped) = (views(false), views(true));
            let intents = Default::default();
            let input = |clusters| MeshInput {
                mesh: ObjectView {
                    name: "mesh",
                    generation: Some(1),
                    spec: &mesh.spec,
                    status: mesh.status.as_ref(),
                },
                clusters,
                outside: &[],
                intents: &intents,
                ca: None,
                now: sim.now,
            };
            assert_eq!(
                plan_mesh(&input(&full)),
                plan_mesh(&input(&stripped)),
                "{from} -> {to} at {}",
                sim.now
            );
            if mesh_status(&sim).admitted.is_empty() {
                if mesh_status(&sim).phase == MeshPhase::Ready {
                    break;
                }
            } else {
                moving += 1;
            }
        }
        assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
        assert!(moving > 5, "compared only {moving} decisions mid-rollout");
    }
}

/// A cluster the mesh claims but cannot read (its object does not deserialize) holds the
/// mesh: never Ready, never "all clusters run" while its version is unknown, and it is named;
/// a listed cluster that another mesh owns is reported as such, not as "unknown".
#[test]
fn an_unreadable_or_foreign_cluster_is_named_and_holds_the_mesh() {
    use baton::plan::mesh::{Outside, OutsideCluster};
    use baton::plan::{MeshClusterView, MeshInput, ObjectView, plan_mesh};
    let mut sim = deployment_rollout(2, 1, Duration(0), SimConfig::default());
    sim.run(Duration::from_secs(86_400));
    let mesh = sim.mesh.as_ref().expect("mesh");
    assert_eq!(mesh_status(&sim).phase, MeshPhase::Ready);
    // The last tier also selects clusters labelled as workers (none of the listed ones is).
    let mut spec = mesh.spec.clone();
    let mut worker_labels = BTreeMap::new();
    worker_labels.insert("tier".to_string(), "worker".to_string());
    spec.tiers.last_mut().expect("tiers").selector = Some(LabelSelector {
        match_labels: worker_labels.clone(),
    });
    let intents = Default::default();
    let plan = |views: &[MeshClusterView<'_>], outside: &[OutsideCluster<'_>]| {
        plan_mesh(&MeshInput {
            mesh: ObjectView {
                name: "mesh",
                generation: Some(1),
                spec: &spec,
                status: mesh.status.as_ref(),
            },
            clusters: views,
            outside,
            intents: &intents,
            ca: None,
            now: sim.now,
        })
    };
    let views: Vec<MeshClusterView<'_>> = sim.clusters.iter().map(|c| c.mesh_view()).collect();
    // Selected by the workers' labels, unreadable.
    let bad = OutsideCluster {
        name: "mpe-extra",
        labels: &worker_labels,
        why: Outside::Unreadable {
            error: "spec.upgrade.syncTimeout: duration overflows",
        },
    };
    let p = plan(&views, &[bad]);
    assert_eq!(p.status.phase, MeshPhase::Stalled, "{:?}", p.status.message);
    let n = views.len();
    assert_eq!(p.status.progress, Some(format!("{n}/{}", n + 1)));
    let stalled = condition(&p.status.conditions, "Stalled");
    assert_eq!(stalled.reason, "ClusterUnreadable");
    assert_says(stalled, "mpe-extra");
    assert!(
        p.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    );
    assert!(!p.events.iter().any(|e| e.reason == "RolloutComplete"));
    // An unreadable cluster that no tier claims changes nothing.
    let mut other = BTreeMap::new();
    other.insert("tier".to_string(), "elsewhere".to_string());
    let unrelated = OutsideCluster {
        labels: &other,
        ..bad
    };
    assert_eq!(plan(&views, &[unrelated]).status.phase, MeshPhase::Ready);
    // The first tier lists cmp-primary by name; here another mesh owns it, or it is unreadable.
    let without: Vec<MeshClusterView<'_>> = views
        .iter()
        .filter(|v| v.name != "cmp-primary")
        .map(|v| MeshClusterView { ..*v })
        .collect();
    let no_labels = BTreeMap::new();
    let foreign = OutsideCluster {
        name: "cmp-primary",
        labels: &no_labels,
        why: Outside::OwnedBy { mesh: "another" },
    };
    let msg = plan(&without, &[foreign])
        .status
        .message
        .unwrap_or_default();
    assert!(msg.contains("belongs to mesh \"another\""), "{msg}");
    assert!(!msg.contains("unknown cluster"), "{msg}");
    let unreadable = OutsideCluster {
        why: Outside::Unreadable { error: "bad" },
        ..foreign
    };
    let p = plan(&without, &[unreadable]);
    let msg = p.status.message.unwrap_or_default();
    assert!(!msg.contains("unknown cluster"), "{msg}");
    assert!(msg.contains("cannot read cluster cmp-primary"), "{msg}");
}

/// Every stop a human must act on is announced once as a warning event (an invalid spec has no
/// planner step that would announce it), and not again while nothing about it changes.
#[test]
fn becoming_stalled_is_announced_once_by_an_event() {
    use baton::plan::{Admission, ClusterInput, Intents, ObjectView, plan_cluster};
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.members[1].name = spec.members[0].name.clone();
    let (observed, admission, intents) = (
        Default::default(),
        Admission::standalone(),
        Intents::default(),
    );
    let plan = |status: Option<&ClusterStatus>| {
        plan_cluster(&ClusterInput {
            cluster: ObjectView {
                name: "c",
                generation: Some(1),
                spec: &spec,
                status,
            },
            observed: &observed,
            admission: &admission,
            intents: &intents,
            ca: None,
            now: T0,
        })
    };
    let first = plan(None);
    assert_eq!(first.status.phase, ClusterPhase::Stalled);
    let stalls: Vec<_> = first
        .events
        .iter()
        .filter(|e| e.reason == "InvalidSpec")
        .collect();
    assert_eq!(stalls.len(), 1, "{:?}", first.events);
    assert!(stalls[0].warning);
    assert!(
        stalls[0].message.contains("duplicate member name"),
        "{}",
        stalls[0].message
    );
    let again = plan(Some(&first.status));
    assert!(
        again.events.iter().all(|e| e.reason != "InvalidSpec"),
        "announced again: {:?}",
        again.events
    );

    // The mesh planner does the same.
    let mut t = topology::active_standby_deployment(2, 1, Duration(0), "2.0.0");
    t.mesh.tiers.swap(0, 2);
    let mut sim = mesh_sim(t, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(60));
    let mesh = sim.mesh.as_ref().expect("mesh");
    let views: Vec<_> = sim.clusters.iter().map(|c| c.mesh_view()).collect();
    let mesh_intents = Default::default();
    let plan = |status: Option<&MeshStatus>| {
        baton::plan::plan_mesh(&baton::plan::MeshInput {
            mesh: baton::plan::ObjectView {
                name: "mesh",
                generation: Some(1),
                spec: &mesh.spec,
                status,
            },
            clusters: &views,
            outside: &[],
            intents: &mesh_intents,
            ca: None,
            now: sim.now,
        })
    };
    let first = plan(None);
    assert!(
        first
            .events
            .iter()
            .any(|e| e.warning && e.reason == "InvalidSpec"),
        "{:?}",
        first.events
    );
    let again = plan(Some(&first.status));
    assert!(
        again.events.iter().all(|e| e.reason != "InvalidSpec"),
        "{:?}",
        again.events
    );
}

// ----- first apply, stagger across rollouts ---------------------------------------------

/// Issue 11, item 6: a first apply of objects whose members already run the target owes
/// nothing (no sync-config, no verification, no cluster verification): Ready at once.
#[test]
fn a_first_apply_of_a_cluster_already_on_its_target_owes_nothing() {
    let comp = |n: &str, v: &str| ComponentSpec {
        name: n.into(),
        version: Some(v.into()),
        after: vec![],
        verify: VerifyPolicy {
            skip: false,
            deferrable: true,
            requires_primary_active: false,
        },
    };
    let mut spec = cluster_spec(3, Some("2.0.0"));
    spec.components = vec![comp("os", "8.4"), comp("app", "2.0.0")];
    spec.upgrade.reapply_config = true;
    spec.upgrade.preflight = true;
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("c", BTreeMap::new(), spec.clone(), "2.0.0");
    for m in sim.cluster_mut("c").unwrap().members.values_mut() {
        m.components = [("os", "8.4"), ("app", "2.0.0")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }
    let st = run_clean(&mut sim, Duration::from_secs(10));
    assert_eq!(
        st.phase,
        ClusterPhase::Ready,
        "{:?} {:#?}",
        st.message,
        st.log
    );
    assert!(st.log.is_empty(), "nothing was owed: {:#?}", st.log);
    assert_eq!(sim.stats.ops_submitted, 0);

    // A later real rollout still runs the whole pipeline, verifications included.
    sim.cluster_mut("c").unwrap().spec.version = Some("3.0.0".into());
    sim.cluster_mut("c").unwrap().spec.components[1].version = Some("3.0.0".into());
    let st = run_clean(&mut sim, Duration::from_secs(4 * 3600));
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let lines = log_lines(&st);
    for want in ["sync-config", "verify", "upgrade", "preflight"] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{want} missing from {lines:#?}"
        );
    }
}

/// A cluster held in forced standby on first observation may be a rollout part-way (a lost
/// status): the first-apply rule does not apply, the pipeline finishes it (release, verify).
#[test]
fn a_first_observation_with_a_member_in_forced_standby_is_not_adopted() {
    let mut spec = cluster_spec(2, Some("2.0.0"));
    spec.upgrade.reapply_config = true;
    let mut sim = standalone(spec, "2.0.0", SimConfig::default());
    sim_member(&mut sim, "c", "m1").role = MemberRole::ForcedStandby;
    let st = run_clean(&mut sim, Duration::from_secs(600));
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let lines = log_lines(&st);
    assert!(lines.iter().any(|l| l == "release m1"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "sync-config m1"), "{lines:#?}");
}

/// A mesh over clusters that already run its target: every cluster Ready without a step and
/// without waiting for admissions one stagger apart.
#[test]
fn a_first_apply_of_a_mesh_already_on_its_target_is_ready_without_stagger() {
    let mut t = topology::active_standby_deployment(8, 1, Duration::from_secs(60), "1.0.0");
    for c in &mut t.clusters {
        c.spec.upgrade.reapply_config = true;
    }
    let mut sim = mesh_sim(t, "1.0.0", SimConfig::default());
    sim.run(Duration::from_secs(30));
    assert_clean(&sim);
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    assert_eq!(sim.stats.ops_submitted, 0);
    for c in &sim.clusters {
        let st = c.status.as_ref().expect("planned");
        assert_eq!(
            st.phase,
            ClusterPhase::Ready,
            "{}: {:?}",
            c.name,
            st.message
        );
    }
}

/// The stagger spaces the admissions of one rollout; the first admission of the next rollout
/// does not wait for the last admission of the previous one.
#[test]
fn a_stagger_never_carries_over_to_the_next_rollout() {
    let mut sim = deployment_rollout(
        2,
        1,
        Duration::from_secs(3600),
        SimConfig {
            upgrade_time: Duration::from_secs(5),
            short_op_time: Duration::from_secs(1),
            ..Default::default()
        },
    );
    // Two workers an hour apart: the second admission is the last of the rollout.
    let worker = |e: &LogEntry| {
        e.action == "admit" && (e.target.starts_with("mpe") || e.target.starts_with("mra"))
    };
    for _ in 0..300 {
        sim.run(Duration::from_secs(60));
        if sim
            .mesh
            .as_ref()
            .and_then(|m| m.status.as_ref())
            .map(|s| s.phase)
            == Some(MeshPhase::Ready)
        {
            break;
        }
    }
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    let last_admit = ms
        .log
        .iter()
        .filter(|e| worker(e))
        .map(|e| e.start)
        .max()
        .expect("admissions");
    // The next rollout starts well within the stagger after that last admission.
    sim.mesh.as_mut().unwrap().spec.version = "3.0.0".into();
    let started = sim.now;
    assert!(started.since(last_admit) < Duration::from_secs(3600));
    sim.run(Duration::from_secs(1800));
    let ms = mesh_status(&sim);
    let first_admit = ms
        .log
        .iter()
        .filter(|e| worker(e) && e.start >= started)
        .map(|e| e.start)
        .min()
        .expect("the new rollout admitted a cluster");
    assert!(
        first_admit.since(last_admit) < Duration::from_secs(3600),
        "first worker admission of the new rollout {} s after its start",
        first_admit.since(started).millis() / 1000
    );
}

/// What a waiting cluster reads of its mesh changes only with its own situation: another
/// cluster's admission (the mesh message "moving: a, b") must not wake and rewrite every
/// waiting cluster of the mesh.
#[test]
fn a_waiting_clusters_admission_does_not_follow_the_mesh_message() {
    let t = topology::active_standby_deployment(2, 1, Duration(0), "2.0.0");
    let mut st = MeshStatus {
        phase: MeshPhase::Progressing,
        message: Some("moving: mpe-00".into()),
        ..Default::default()
    };
    let before = baton::plan::admission_for("mesh", &t.mesh, Some(&st), "mra-01");
    st.message = Some("moving: mpe-00, cmp-primary".into());
    let after = baton::plan::admission_for("mesh", &t.mesh, Some(&st), "mra-01");
    assert_eq!(before, after);
    assert!(!after.admitted);
    st.phase = MeshPhase::Paused;
    let paused = baton::plan::admission_for("mesh", &t.mesh, Some(&st), "mra-01");
    assert_ne!(paused, after, "a paused mesh is news to its clusters");
}

/// The simulator's trust model: a follower replicates only over a link whose TLS handshake
/// succeeds both ways, and a link that fails is an invariant violation (the check that CA
/// rotations will be held to). Trust added alongside keeps every link working.
#[test]
fn a_link_whose_handshake_fails_stops_replication_and_is_a_violation() {
    use baton::sim::CaSet;
    let cfg = SimConfig {
        write_rate: 10,
        ..SimConfig::default()
    };
    let mut sim = standalone(cluster_spec(2, None), "1.0.0", cfg);
    sim.tick(Duration::from_secs(30));
    assert_clean(&sim);
    // Old and new CA trusted everywhere, the standby presenting a new-CA certificate: fine.
    for m in ["m0", "m1"] {
        sim_member(&mut sim, "c", m).trust = CaSet::of(0).with(1);
    }
    sim_member(&mut sim, "c", "m1").presents = 1;
    sim.tick(Duration::from_secs(30));
    assert_clean(&sim);
    let caught_up = sim_member(&mut sim, "c", "m1").applied;
    assert!(caught_up > 0, "the standby replicates");
    // The active drops CA 1 while the standby still presents a certificate it issued.
    sim_member(&mut sim, "c", "m0").trust = CaSet::of(0);
    sim.tick(Duration::from_secs(30));
    assert_caught(&sim, "c/m1: TLS handshake with its source m0 fails");
    let active = sim_member(&mut sim, "c", "m0").applied;
    let standby = sim_member(&mut sim, "c", "m1").applied;
    assert!(
        active > standby,
        "replication stopped: {standby} of {active}"
    );
}

/// A three-member cluster over two sites whose CA goes from simulated CA 0 to CA 1.
fn rotating_cluster(certs: CertificatesSpec) -> Sim {
    let mut spec = cluster_spec(3, Some("1.0.0"));
    for (m, site) in spec.members.iter_mut().zip(["east", "east", "west"]) {
        m.site = Some(site.to_string());
    }
    spec.certificates = Some(certs);
    let mut sim = standalone(spec, "1.0.0", SimConfig::default());
    sim.set_ca("c", 0);
    sim.run(Duration::from_secs(60));
    assert_clean(&sim);
    sim.set_ca("c", 1);
    sim
}

fn trusts(sim: &Sim, m: &str) -> Vec<u8> {
    sim.cluster("c").unwrap().members[m].trust.iter().collect()
}

/// The simulated agents report their trust stores and presented certificates; a CA rotation
/// runs its phases in order (trust added beside the old CA, certificates staged and presented
/// after a restart, the active restarted after a switchover, the old CA dropped, data
/// re-signed) with every invariant holding at every instant.
#[test]
fn a_clean_rotation_completes_with_every_link_working() {
    let mut sim = rotating_cluster(CertificatesSpec::default());
    let st = run_clean(&mut sim, Duration::from_secs(3600));
    let certs = st.certificates.clone().expect("certificates status");
    assert_eq!(certs.phase.as_deref(), Some("Done"), "{:?}", st.message);
    assert_eq!(st.phase, ClusterPhase::Ready);
    for m in ["m0", "m1", "m2"] {
        assert_eq!(trusts(&sim, m), [1], "{m} trusts only the new CA");
        let sm = &sim.cluster("c").unwrap().members[m];
        assert_eq!((sm.presents, sm.staged), (1, None), "{m} presents it");
    }
    assert_eq!(certs.resigned.len(), 3, "every member re-signed its data");
    let lines = log_lines(&st);
    let first = |a: &str| lines.iter().position(|l| l.starts_with(a));
    let last = |a: &str| lines.iter().rposition(|l| l.starts_with(a));
    let trust_steps: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("install-trust"))
        .collect();
    assert_eq!(
        trust_steps.len(),
        6,
        "added, then removed, on each: {lines:#?}"
    );
    assert!(
        first("install-certificate") > Some(trust_steps[2]),
        "{lines:#?}"
    );
    assert!(last("restart") < Some(trust_steps[3]), "{lines:#?}");
    assert!(first("resign-data") > Some(trust_steps[5]), "{lines:#?}");
    // m0 was the active: it restarted only after the switchover.
    let sw = first("switchover").expect("the active hands over before its restart");
    let m0_restart = lines
        .iter()
        .position(|l| l == "restart m0")
        .expect("m0 restarted");
    assert!(m0_restart > sw, "{lines:#?}");
}

/// With `keepOldTrust` the old CA stays in every store, and with `maxJobsPerSite: 2` the two
/// members of site east may work at once; the invariants hold throughout.
#[test]
fn a_rotation_keeping_the_old_trust_ends_with_both_cas_trusted() {
    let mut sim = rotating_cluster(CertificatesSpec {
        keep_old_trust: true,
        max_jobs_per_site: 2,
        resign_data: false,
        ..CertificatesSpec::default()
    });
    let st = run_clean(&mut sim, Duration::from_secs(3600));
    let certs = st.certificates.clone().expect("certificates status");
    assert_eq!(certs.phase.as_deref(), Some("Done"), "{:?}", st.message);
    for m in ["m0", "m1", "m2"] {
        assert_eq!(trusts(&sim, m), [0, 1], "{m} keeps the old CA");
    }
    assert!(certs.resigned.is_empty(), "resignData: false");
}

/// Sends member `m` of cluster `c`, outside the planner, a rotation request of `kind` for CA 1
/// alone.
fn inject_new_ca(sim: &mut Sim, m: &str, id: &str, kind: baton::plan::OpKind) {
    sim.inject("c", m, rotation_op(id, kind, &[], 1));
}

/// A rotation request to simulated CA `anchor`, keeping the CAs `keep`.
fn rotation_op(
    id: &str,
    kind: baton::plan::OpKind,
    keep: &[u8],
    anchor: u8,
) -> baton::plan::OpRequest {
    let fp = baton::sim::ca_fingerprint;
    baton::plan::OpRequest {
        trust: Some(TrustParams {
            anchor: fp(anchor),
            issuer: fp(anchor),
            keep: keep.iter().map(|&n| fp(n)).collect(),
        }),
        ..baton::plan::OpRequest::new(id, kind)
    }
}

/// The invariants can fail: a step that drops the old CA from one store while the others still
/// present its certificates (what `RemoveOldTrust` must wait for) is caught, and so is a
/// member presenting a new-CA certificate before every member trusts that CA, and a restart
/// of the active.
#[test]
fn a_rotation_rule_broken_on_purpose_is_caught_by_the_invariants() {
    use baton::plan::OpKind;
    // The old CA leaves m1's store at once.
    let mut sim = rotating_cluster(CertificatesSpec::default());
    inject_new_ca(&mut sim, "m1", "bad-drop", OpKind::InstallTrust);
    sim.run(Duration::from_secs(600));
    assert_caught(&sim, "c/m1: CA 0 left its trust store");
    // m2 stages and presents a new-CA certificate before anyone added the new CA.
    let mut sim = rotating_cluster(CertificatesSpec::default());
    inject_new_ca(&mut sim, "m2", "bad-cert", OpKind::InstallCertificate);
    sim.tick(Duration::from_secs(5));
    inject_new_ca(&mut sim, "m2", "bad-restart", OpKind::Restart);
    sim.tick(Duration::from_secs(5));
    assert_caught(
        &sim,
        "c/m2: presents a certificate of the new CA 1 before every member trusts it",
    );
    // The active restarts in place.
    let mut sim = rotating_cluster(CertificatesSpec::default());
    inject_new_ca(&mut sim, "m0", "bad-active", OpKind::Restart);
    sim.tick(Duration::from_millis(500));
    assert_caught(&sim, "c/m0: restarts while it is the active");
}

/// Mesh of a (sites east, west) and b (sites north, south); b's m1 is cut off, so b cannot
/// add the new CA and holds the mesh in AddTrust. A force intent runs Reissue on a ahead of
/// the mesh (a says so in its status; the mesh grants it): a's members present the new CA
/// while b's still refuse it, which its `PhaseForced` event announced ("members of other
/// clusters of mesh …"), so those broken handshakes are not violations. Once b is back, the
/// rotation completes in order. A force announced without naming what breaks is caught.
#[test]
fn a_forced_phase_breaks_only_what_it_announced_and_the_rotation_completes() {
    let scene = || {
        let mut sim = rotating_mesh(CertificatesSpec::default(), false);
        let b = sim.cluster_mut("b").unwrap();
        for (m, site) in b.spec.members.iter_mut().zip(["north", "south"]) {
            m.site = Some(site.to_string());
        }
        let back = sim.now.plus(Duration::from_secs(1800));
        sim_member(&mut sim, "b", "m1").downtime.cut_until = Some(back);
        sim.run(Duration::from_secs(300));
        assert_clean(&sim);
        sim
    };
    let mut sim = scene();
    let certs = |sim: &Sim, c: &str| {
        let st = sim.cluster(c).unwrap().status.clone().unwrap();
        st.certificates.clone().expect("certificates status")
    };
    let a = certs(&sim, "a");
    assert_eq!(a.phase.as_deref(), Some("Reissue"), "{a:?}");
    let mesh = sim.mesh.as_ref().and_then(|m| m.status.as_ref());
    let mesh_phase = mesh.and_then(|s| s.certificates.as_ref()?.phase.clone());
    assert_eq!(mesh_phase.as_deref(), Some("AddTrust"), "b holds the mesh");
    let target = a.target_ca.clone().expect("target");
    let name = baton::plan::cluster::rotation_phase_name("a", RotationPhase::Reissue, &target);
    sim.cluster_mut("a").unwrap().intents.force.push(name);
    sim.run(Duration::from_secs(900));
    assert_eq!(sim.forced.len(), 1, "announced once: {:?}", sim.forced);
    assert!(sim.forced[0].mesh_wide, "{:?}", sim.forced[0]);
    let a_members = &sim.cluster("a").unwrap().members;
    assert!(
        a_members.values().all(|m| m.presents == 1),
        "Reissue ran early on a"
    );
    assert!(
        !sim.cluster("b").unwrap().members["m1"].trust.has(1),
        "b/m1 does not trust the new CA: the handshakes with a fail, as announced"
    );
    assert_clean(&sim);
    sim.run(Duration::from_secs(4 * 3600));
    assert_clean(&sim);
    for c in ["a", "b"] {
        assert_eq!(certs(&sim, c).phase.as_deref(), Some("Done"), "{c}");
    }
    assert_eq!(sim.forced.len(), 1, "{:?}", sim.forced);

    // A force announced without saying what breaks: the check sees what it leaves unsaid.
    let mut sim = scene();
    sim.announce_forced(
        "b",
        "rotation phase Reissue forced before phase AddTrust is complete: nothing breaks",
    );
    assert_caught(&sim, "b: PhaseForced does not name");
    assert!(
        sim.violations.iter().any(|v| v.contains("\"m1\"")),
        "{:#?}",
        sim.violations
    );
}

// ----- mesh-wide CA rotation -----------------------------------------------------------------

/// A mesh of clusters a and b (members m0 in site east and m1 in site west each, one tier of
/// both) and, when `solo`, cluster solo (one member in site west that may not restart in
/// place). The mesh declares `certs`; its clusters none. Adopted on simulated CA 0, then the
/// mesh's CA becomes CA 1.
fn rotating_mesh(certs: CertificatesSpec, solo: bool) -> Sim {
    let two = |name: &str| {
        let mut spec = cluster_spec(2, None);
        for (m, site) in spec.members.iter_mut().zip(["east", "west"]) {
            m.endpoint = format!("{name}-{}.sim:9443", m.name);
            m.site = Some(site.to_string());
        }
        spec
    };
    let mut names = vec!["a", "b"];
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("a", BTreeMap::new(), two("a"), "1.0.0");
    sim.add_cluster("b", BTreeMap::new(), two("b"), "1.0.0");
    if solo {
        let mut spec = cluster_spec(1, None);
        spec.members[0].site = Some("west".into());
        sim.add_cluster("solo", BTreeMap::new(), spec, "1.0.0");
        names.push("solo");
    }
    let mesh = MeshSpec {
        tasks: Vec::new(),
        version: "1.0.0".into(),
        tiers: vec![TierSpec {
            name: "t".into(),
            clusters: names.iter().map(|n| n.to_string()).collect(),
            selector: None,
            max_parallel: 3,
            stagger: Duration(0),
            drain_before: None,
            deferred: None,
        }],
        compatibility: vec![],
        strategy: MeshStrategy::default(),
        preconditions: Preconditions::default(),
        paused: false,
        certificates: Some(certs),
    };
    sim.set_mesh("mesh", mesh);
    sim.set_mesh_ca(0);
    sim.run(Duration::from_secs(60));
    assert_clean(&sim);
    sim.set_mesh_ca(1);
    sim
}

/// The mesh's `spec.certificates` rotates every cluster: each cluster's host reads the mesh's
/// CA, the phases run mesh-wide (nobody presents the new CA before every member of every
/// cluster trusts it, none drops the old one while anyone presents it: checked at every
/// instant), and the mesh ends Ready with its rotation Done.
#[test]
fn a_mesh_rotation_completes_on_every_cluster() {
    let mut sim = rotating_mesh(CertificatesSpec::default(), false);
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim);
    for c in ["a", "b"] {
        let st = status(&sim, c);
        assert_eq!(st.phase, ClusterPhase::Ready, "{c}: {:?}", st.message);
        let certs = st.certificates.expect("certificates status");
        assert_eq!(certs.phase.as_deref(), Some("Done"));
        for m in ["m0", "m1"] {
            let sm = &sim.cluster(c).unwrap().members[m];
            assert_eq!(
                (sm.presents, sm.trust.iter().collect::<Vec<_>>()),
                (1, vec![1])
            );
        }
    }
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    let mc = ms.certificates.expect("mesh certificates status");
    assert_eq!(mc.phase.as_deref(), Some("Done"));
    assert_eq!(mc.target_ca, Some(baton::sim::ca_fingerprint(1)));
    assert!(sim.rotation_problems().is_empty() && sim.liveness_problems().is_empty());
    assert!(sim.settled());
}

/// A cluster of the mesh that cannot finish the rotation (a lone member that may not restart
/// in place) holds the mesh in its phase: the others finish the phase and wait, and the mesh
/// is Degraded naming it. That is a stop with a reason, not a liveness failure.
#[test]
fn a_mesh_rotation_held_by_a_stalled_cluster_is_degraded_with_a_reason() {
    let mut sim = rotating_mesh(CertificatesSpec::default(), true);
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim);
    assert!(sim.settled());
    let solo = status(&sim, "solo");
    assert_eq!(solo.phase, ClusterPhase::Stalled);
    assert_eq!(
        condition(&solo.conditions, "Stalled").reason,
        "RestartNeedsOutage"
    );
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Degraded, "{:?}", ms.message);
    assert!(
        ms.message
            .as_deref()
            .is_some_and(|m| m.contains("failed clusters hold the rotation: solo")),
        "{:?}",
        ms.message
    );
    for c in ["a", "b"] {
        let st = status(&sim, c);
        assert_eq!(st.phase, ClusterPhase::Waiting, "{c}: {:?}", st.message);
    }
    assert_eq!(sim.rotation_problems(), Vec::<String>::new());
    assert_eq!(sim.liveness_problems(), Vec::<String>::new());
}

/// Invariant (a) across clusters: every member of cluster a trusts CA 1 and a/m1 presents a
/// certificate of it, which b's members do not trust. Within a, every link works; the mesh
/// check catches it.
#[test]
fn a_certificate_presented_before_every_cluster_trusts_its_ca_is_caught() {
    use baton::sim::CaSet;
    let mut sim = rotating_mesh(CertificatesSpec::default(), false);
    for m in ["m0", "m1"] {
        sim_member(&mut sim, "a", m).trust = CaSet::of(0).with(1);
    }
    sim_member(&mut sim, "a", "m1").presents = 1;
    sim.tick(Duration::from_millis(100));
    assert!(
        sim.violations.iter().any(|v| v.contains(
            "a/m1: presents a certificate of the new CA 1 before every member trusts it (b/m0 \
             trusts only CAs [0])"
        )),
        "{:#?}",
        sim.violations
    );
    assert!(
        !sim.violations.iter().any(|v| v.contains("handshake")),
        "no link inside a fails: {:#?}",
        sim.violations
    );
}

/// Invariant (b) across clusters: CA 0 leaves b/m0's store while a's members still present
/// its certificates (b itself has moved on: every link inside b works).
#[test]
fn the_old_ca_leaving_a_store_while_another_cluster_presents_it_is_caught() {
    use baton::sim::CaSet;
    let mut sim = rotating_mesh(CertificatesSpec::default(), false);
    for c in ["a", "b"] {
        for m in ["m0", "m1"] {
            sim_member(&mut sim, c, m).trust = CaSet::of(0).with(1);
        }
    }
    for m in ["m0", "m1"] {
        sim_member(&mut sim, "b", m).presents = 1;
    }
    sim.tick(Duration::from_millis(100));
    assert_clean(&sim);
    sim_member(&mut sim, "b", "m0").trust = CaSet::of(1);
    sim.tick(Duration::from_millis(100));
    assert!(
        sim.violations.iter().any(|v| v.contains(
            "b/m0: CA 0 left its trust store (it trusts CAs [1]) while a/m0 still presents a \
             certificate of it"
        )),
        "{:#?}",
        sim.violations
    );
    assert!(!sim.violations.iter().any(|v| v.contains("handshake")));
}

/// Invariant (c): `maxJobsPerSite` counts rotation operations per site across the mesh (sites
/// are shared by name across clusters): one on a/m0 and one on b/m0, both in site east, are
/// two; one in east and one in west are within the limit.
#[test]
fn rotation_jobs_beyond_max_jobs_per_site_across_clusters_are_caught() {
    use baton::plan::OpKind;
    // An install-trust on a's member `on_a` and one on b's member `on_b`, at once.
    let both = |on_a: &str, on_b: &str| {
        let mut sim = rotating_mesh(CertificatesSpec::default(), false);
        for (c, m) in [("a", on_a), ("b", on_b)] {
            let id = format!("{c}-{m}");
            sim.inject(c, m, rotation_op(&id, OpKind::InstallTrust, &[0], 1));
        }
        sim.tick(Duration::from_millis(100));
        sim
    };
    assert_clean(&both("m0", "m1"));
    assert_caught(
        &both("m0", "m0"),
        "2 rotation operations run at once in site \"east\" > maxJobsPerSite 1",
    );
}

fn step(id: &str, action: StepAction, member: &str, trust: Option<u8>) -> StepRecord {
    let fp = baton::sim::ca_fingerprint;
    StepRecord {
        id: id.into(),
        action,
        member: member.into(),
        from: None,
        version: None,
        component: None,
        attempt: 1,
        started_at: T0,
        log_id: 1,
        source: None,
        rollback: false,
        trust: trust.map(|n| TrustParams {
            anchor: fp(n),
            issuer: fp(n),
            keep: vec![],
        }),
        peer: None,
        task: None,
    }
}

fn push_step(sim: &mut Sim, c: &str, s: StepRecord) {
    sim.cluster_mut(c)
        .and_then(|c| c.status.as_mut())
        .expect("planned")
        .steps
        .push(s);
}

/// Invariant (d): a rotation step of a change of CA in flight on a while an upgrade step is in
/// flight on b is caught, and so is one beside an upgrade step on the same cluster; a renewal
/// (a certificate of the CA its member already presents) is not held to the mesh-wide rule.
#[test]
fn a_rotation_step_beside_an_upgrade_step_in_the_mesh_is_caught() {
    // A rotation step (on `rot`, from CA `ca`) and an upgrade step (on `up`), both in flight.
    let beside = |rot: (&str, StepAction, &str, u8), up: (&str, &str)| {
        let mut sim = rotating_mesh(CertificatesSpec::default(), false);
        push_step(&mut sim, rot.0, step("rot", rot.1, rot.2, Some(rot.3)));
        push_step(&mut sim, up.0, step("up", StepAction::Upgrade, up.1, None));
        sim.tick(Duration::from_millis(100));
        sim
    };
    let sim = beside(("a", StepAction::InstallTrust, "m0", 1), ("b", "m1"));
    assert_caught(
        &sim,
        "a: rotation step InstallTrust on m0 in flight while b has upgrade step Upgrade on m1 in flight",
    );
    let sim = beside(("a", StepAction::Restart, "m1", 1), ("a", "m0"));
    assert_caught(
        &sim,
        "a: rotation step Restart on m1 in flight beside upgrade step Upgrade on m0",
    );
    // A renewal from CA 0, which a/m1 presents, beside an upgrade elsewhere.
    let sim = beside(("a", StepAction::InstallCertificate, "m1", 0), ("b", "m1"));
    assert_clean(&sim);
}

/// Invariant (f) can fail: a rotation the cluster calls Done with a member still presenting
/// the old CA, and a mesh whose rotation is neither done nor stopped with a reason.
#[test]
fn a_rotation_left_unfinished_is_a_liveness_problem() {
    let mut sim = rotating_mesh(CertificatesSpec::default(), false);
    sim.run(Duration::from_secs(3600));
    assert_clean(&sim);
    assert!(sim.rotation_problems().is_empty());
    sim_member(&mut sim, "b", "m1").presents = 0;
    let problems = sim.rotation_problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("b/m1: rotation Done but it presents CA 0")),
        "{problems:#?}"
    );
    sim_member(&mut sim, "b", "m1").presents = 1;
    if let Some(c) = sim
        .mesh
        .as_mut()
        .and_then(|m| m.status.as_mut())
        .and_then(|s| s.certificates.as_mut())
    {
        c.phase = Some("Reissue".into());
    }
    let problems = sim.rotation_problems();
    assert!(
        problems.iter().any(|p| p.starts_with(
            "mesh mesh: Some(Ready) but the rotation to CA 1 is in phase Some(\"Reissue\")"
        )),
        "{problems:#?}"
    );
}

#[test]
fn the_workers_tier_waits_for_the_backlog_the_management_upgrades_generated() {
    // Every successful member upgrade generates up to 600 entries for the rest of the mesh,
    // drained at 20 a second: the workers (drainBefore) start only once none is left.
    let mut t = topology::active_standby_deployment(4, 2, Duration(0), "2.0.0");
    t.mesh.preconditions.no_backlog = true;
    t.mesh.tiers[2].drain_before = Some(DrainSpec {
        timeout: Duration::from_secs(3600),
    });
    let cfg = SimConfig {
        upgrade_backlog: 600,
        backlog_drain_rate: 20,
        ..Default::default()
    };
    let mut sim = mesh_sim(t, "1.0.0", cfg);
    sim.run(Duration::from_secs(86_400));
    assert_clean(&sim);
    let ms = mesh_status(&sim);
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    let drain = ms
        .log
        .iter()
        .find(|e| e.action == "drain" && e.target == "workers")
        .expect("the workers waited for a backlog");
    assert_eq!(drain.result, LogResult::Succeeded, "{drain:?}");
    let drained = drain.end.expect("drain entry closed");
    let moves = first_moves(&sim);
    let first_worker = moves
        .iter()
        .find(|(_, c)| c.starts_with("mpe-") || c.starts_with("mra-"))
        .expect("a worker moved");
    assert!(first_worker.0 >= drained, "{moves:?} drained at {drained}");
    let tier = ms
        .tiers
        .iter()
        .find(|t| t.name == "workers")
        .and_then(|t| t.drain.clone())
        .expect("drain status");
    assert_eq!(tier.drained_at, Some(drained));
    assert!(tier.backlog.is_empty());
}
