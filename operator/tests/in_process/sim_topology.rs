//! Membership changes driven by the simulator (docs/topology.md): members added, removed and
//! replaced, alone and during rollouts. The simulator checks the topology invariants at every
//! instant (the active is never retired, a member is promoted only once joined and accepted by
//! every peer, configuration is copied only from the serving active, a retirement keeps the
//! availability the policy asks for), so each test also fails on a violation.

use std::collections::BTreeMap;

use baton::api::values::Duration;
use baton::api::*;
use baton::sim::topology::member;
use baton::sim::{Sim, SimConfig};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn spec(names: &[&str], version: &str) -> ClusterSpec {
    ClusterSpec {
        version: Some(version.to_string()),
        members: names.iter().map(|n| member(n, "c")).collect(),
        ..Default::default()
    }
}

/// A standalone cluster of `names` on `version` (the first active), settled.
fn settled(names: &[&str], version: &str) -> Sim {
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("c", BTreeMap::new(), spec(names, version), version);
    run(&mut sim);
    assert_eq!(
        status(&sim).phase,
        ClusterPhase::Ready,
        "{:#?}",
        status(&sim)
    );
    sim
}

fn run(sim: &mut Sim) {
    sim.run(Duration::from_secs(6 * 3600));
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

fn status(sim: &Sim) -> ClusterStatus {
    sim.cluster("c")
        .and_then(|c| c.status.clone())
        .expect("cluster planned")
}

fn record<'a>(st: &'a ClusterStatus, name: &str) -> Option<&'a MemberStatus> {
    st.members.iter().find(|m| m.name == name)
}

fn agent<'a>(sim: &'a Sim, name: &str) -> &'a baton::sim::SimMember {
    sim.cluster("c")
        .and_then(|c| c.members.get(name))
        .expect("member simulated")
}

/// The member actions of the log, in order, as `action member` (parents excluded).
fn actions(st: &ClusterStatus) -> Vec<String> {
    st.log
        .iter()
        .filter(|e| e.scope == LogScope::Member && e.parent.is_some())
        .map(|e| format!("{} {}", e.action, e.target))
        .collect()
}

fn entry<'a>(st: &'a ClusterStatus, action: &str, target: &str) -> &'a LogEntry {
    st.log
        .iter()
        .find(|e| e.action == action && e.target == target && e.parent.is_none())
        .unwrap_or_else(|| panic!("no {action} {target} entry in {:#?}", st.log))
}

fn stalled_reason(st: &ClusterStatus) -> Option<String> {
    st.conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .map(|c| c.reason.clone())
}

#[test]
fn an_added_member_is_configured_introduced_and_joins_from_the_active() {
    let mut sim = settled(&["m0", "m1"], "1.0.0");
    sim.add_member("c", member("m2", "c"), "1.0.0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    let rec = record(&st, "m2").expect("m2 recorded");
    assert_eq!(rec.topology, None, "m2 joined");
    let m2 = agent(&sim, "m2");
    assert_eq!(m2.config, agent(&sim, "m0").config, "configuration copied");
    assert_eq!(
        m2.source.as_deref(),
        Some(agent(&sim, "m0").endpoint.as_str())
    );
    assert_eq!(m2.role, MemberRole::Standby);
    for (holder, others) in [
        ("m0", ["m1", "m2"]),
        ("m1", ["m0", "m2"]),
        ("m2", ["m0", "m1"]),
    ] {
        for o in others {
            assert_eq!(
                agent(&sim, holder).peers.get(o),
                Some(&agent(&sim, o).identity),
                "{holder} accepts {o}"
            );
        }
    }
    // In the procedure's order: configuration, identities, then replication.
    let log = actions(&st);
    let pos = |a: &str| {
        log.iter()
            .position(|l| l == a)
            .unwrap_or_else(|| panic!("{a} not in {log:?}"))
    };
    assert!(pos("sync-config m2") < pos("add-peer m0"), "{log:?}");
    assert!(pos("add-peer m2") < pos("join m2"), "{log:?}");
    assert!(pos("join m2") < pos("await-sync m2"), "{log:?}");
    assert_eq!(entry(&st, "add-member", "m2").result, LogResult::Succeeded);
}

#[test]
fn a_member_added_during_an_upgrade_joins_and_is_upgraded_with_the_others() {
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("c", BTreeMap::new(), spec(&["m0", "m1"], "1.0.0"), "1.0.0");
    run(&mut sim);
    sim.cluster_mut("c").expect("c").spec.version = Some("2.0.0".into());
    sim.run(Duration::from_secs(20));
    sim.add_member("c", member("m2", "c"), "1.0.0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    for m in ["m0", "m1", "m2"] {
        assert_eq!(agent(&sim, m).version, "2.0.0", "{m}");
    }
}

#[test]
fn a_new_member_on_other_software_is_moved_to_the_active_s_before_it_joins() {
    let mut sim = settled(&["m0", "m1"], "2.0.0");
    sim.add_member("c", member("m2", "c"), "1.0.0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    let log = actions(&st);
    // Upgraded while outside the group, then a plain join: never a plain standby on other
    // software beside the active (the simulator checks that at every instant).
    let up = log
        .iter()
        .position(|l| l == "upgrade m2")
        .expect("m2 upgraded");
    let join = log.iter().position(|l| l == "join m2").expect("m2 joined");
    assert!(up < join, "{log:?}");
    assert_eq!(agent(&sim, "m2").version, "2.0.0");
}

#[test]
fn a_new_member_on_the_target_mid_rollout_joins_held_out_of_failover() {
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster("c", BTreeMap::new(), spec(&["m0", "m1"], "1.0.0"), "1.0.0");
    run(&mut sim);
    sim.cluster_mut("c").expect("c").spec.version = Some("2.0.0".into());
    sim.add_member("c", member("m2", "c"), "2.0.0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    let log = actions(&st);
    assert!(log.contains(&"force-standby m2".to_string()), "{log:?}");
    assert!(!log.iter().any(|l| l == "upgrade m2"), "{log:?}");
    for m in ["m0", "m1", "m2"] {
        assert_eq!(agent(&sim, m).version, "2.0.0", "{m}");
    }
}

#[test]
fn a_removed_standby_is_retired_withdrawn_and_forgotten() {
    let mut sim = settled(&["m0", "m1", "m2"], "1.0.0");
    // First make the peers enforce lists (as after any join), so withdrawal is visible.
    sim.add_member("c", member("m3", "c"), "1.0.0");
    run(&mut sim);
    sim.remove_member("c", "m2");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    assert!(record(&st, "m2").is_none(), "record dropped");
    let m2 = agent(&sim, "m2");
    assert!(m2.retired);
    assert_eq!(m2.role, MemberRole::OutOfService);
    for holder in ["m0", "m1", "m3"] {
        assert!(
            !agent(&sim, holder).peers.contains_key("m2"),
            "{holder} still accepts m2"
        );
    }
    assert_eq!(
        entry(&st, "remove-member", "m2").result,
        LogResult::Succeeded
    );
}

#[test]
fn a_removed_active_hands_over_first() {
    let mut sim = settled(&["m0", "m1", "m2"], "1.0.0");
    sim.remove_member("c", "m0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    assert!(record(&st, "m0").is_none());
    let log = actions(&st);
    let switch = log
        .iter()
        .position(|l| l.starts_with("switchover"))
        .expect("a switchover");
    let retire = log.iter().position(|l| l == "retire m0").expect("retired");
    assert!(switch < retire, "{log:?}");
    assert_ne!(st.active_member.as_deref(), Some("m0"));
}

#[test]
fn the_only_in_sync_standby_is_not_removed_without_permission() {
    let mut sim = settled(&["m0", "m1"], "1.0.0");
    sim.remove_member("c", "m1");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(
        stalled_reason(&st).as_deref(),
        Some("LastInSyncStandby"),
        "{st:#?}"
    );
    assert!(!agent(&sim, "m1").retired, "nothing changed");
    assert!(record(&st, "m1").is_some());
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("allowRemovingLastStandby")
    );

    // The permission lets it go.
    sim.cluster_mut("c")
        .expect("c")
        .spec
        .topology
        .allow_removing_last_standby = true;
    run(&mut sim);
    let st = status(&sim);
    assert!(record(&st, "m1").is_none(), "{st:#?}");
    assert!(agent(&sim, "m1").retired);
}

#[test]
fn replacing_a_member_waits_for_the_new_one_to_join_before_the_old_one_goes() {
    let mut sim = settled(&["m0", "m1"], "1.0.0");
    // One edit: m2 in, m1 (the only standby) out.
    sim.add_member("c", member("m2", "c"), "1.0.0");
    sim.remove_member("c", "m1");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    let log = actions(&st);
    let joined = log
        .iter()
        .position(|l| l == "await-sync m2")
        .expect("m2 synced");
    let retired = log
        .iter()
        .position(|l| l == "retire m1")
        .expect("m1 retired");
    assert!(joined < retired, "{log:?}");
    assert!(record(&st, "m1").is_none());
}

#[test]
fn replacing_the_active_switches_over_to_the_new_member_once_it_joined() {
    let mut sim = settled(&["m0", "m1"], "1.0.0");
    sim.add_member("c", member("m2", "c"), "1.0.0");
    sim.remove_member("c", "m1");
    run(&mut sim);
    sim.remove_member("c", "m0");
    sim.cluster_mut("c")
        .expect("c")
        .spec
        .topology
        .allow_removing_last_standby = true;
    sim.add_member("c", member("m3", "c"), "1.0.0");
    run(&mut sim);
    let st = status(&sim);
    assert_eq!(st.phase, ClusterPhase::Ready, "{st:#?}");
    assert!(record(&st, "m0").is_none(), "{st:#?}");
    assert!(matches!(st.active_member.as_deref(), Some("m2" | "m3")));
}

#[test]
fn an_unreachable_member_is_removed_only_by_force() {
    let mut sim = settled(&["m0", "m1", "m2"], "1.0.0");
    sim.add_member("c", member("m3", "c"), "1.0.0");
    run(&mut sim);
    // m2 is cut off for a day, then removed.
    let until = sim.now.plus(Duration::from_secs(86_400));
    if let Some(m) = sim.cluster_mut("c").and_then(|c| c.members.get_mut("m2")) {
        m.downtime.cut_until = Some(until);
    }
    sim.remove_member("c", "m2");
    sim.run(Duration::from_secs(600));
    let st = status(&sim);
    assert!(record(&st, "m2").is_some(), "not removed without force");
    assert!(
        st.message.as_deref().unwrap_or("").contains("remove/c/m2"),
        "{:?}",
        st.message
    );
    sim.cluster_mut("c")
        .expect("c")
        .intents
        .force
        .push("remove/c/m2".into());
    sim.run(Duration::from_secs(600));
    let st = status(&sim);
    assert!(record(&st, "m2").is_none(), "{st:#?}");
    for holder in ["m0", "m1", "m3"] {
        assert!(!agent(&sim, holder).peers.contains_key("m2"), "{holder}");
    }
    assert!(st.acknowledged.iter().any(|a| a == "force:remove/c/m2"));
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}
