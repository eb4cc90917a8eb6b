//! The upgrade log is a tree: a cluster's step entries hang under the entry of the rollout
//! they belong to, a switchover's phases and traffic check under the switchover, and a mesh's
//! admissions under their tier's entry, itself under the mesh rollout's entry.

use std::collections::BTreeMap;

use baton::api::values::Duration;
use baton::api::*;
use baton::sim::topology::member;
use baton::sim::{Sim, SimConfig};

// 2027-01-15T08:00:00Z
const T0: Timestamp = Timestamp(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 8 * 3_600_000);

fn cluster_spec(name: &str, n: usize, version: Option<&str>) -> ClusterSpec {
    ClusterSpec {
        version: version.map(str::to_string),
        members: (0..n).map(|i| member(&format!("m{i}"), name)).collect(),
        upgrade: UpgradePolicy {
            preflight: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn status(sim: &Sim, c: &str) -> ClusterStatus {
    sim.cluster(c)
        .and_then(|c| c.status.clone())
        .expect("cluster planned")
}

fn entry(log: &[LogEntry], id: u64) -> &LogEntry {
    log.iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no entry {id} in {log:#?}"))
}

/// The cluster-level rollout entries (`upgrade` / `backout` of the whole cluster).
fn rollouts(st: &ClusterStatus) -> Vec<&LogEntry> {
    st.log
        .iter()
        .filter(|e| {
            e.scope == LogScope::Cluster && matches!(e.action.as_str(), "upgrade" | "backout")
        })
        .collect()
}

/// Cluster `c` of `n` members on 1.0.0 asked for 2.0.0, alone in a default simulation.
fn upgrading_c(n: usize) -> Sim {
    let mut sim = Sim::new(SimConfig::default(), T0);
    sim.add_cluster(
        "c",
        BTreeMap::new(),
        cluster_spec("c", n, Some("2.0.0")),
        "1.0.0",
    );
    sim
}

fn clean(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn cluster_steps_hang_under_the_rollout_and_switchover_phases_under_the_switchover() {
    let mut sim = upgrading_c(3);
    sim.run(Duration::from_secs(3 * 3600));
    clean(&sim);
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);

    let r = rollouts(&st);
    assert_eq!(r.len(), 1, "one rollout entry: {:#?}", st.log);
    let rollout = r[0];
    assert_eq!(rollout.action, "upgrade");
    assert_eq!(rollout.target, "c");
    assert_eq!(rollout.version.as_deref(), Some("2.0.0"));
    assert_eq!(rollout.parent, None);
    assert_eq!(rollout.result, LogResult::Succeeded);
    assert!(rollout.end.is_some());

    let switchover = st
        .log
        .iter()
        .find(|e| e.action == "switchover")
        .expect("a switchover entry");
    let mut steps = 0;
    for e in &st.log {
        match e.action.as_str() {
            "upgrade" | "backout" if e.scope == LogScope::Cluster => {}
            // The phases of the switchover and its traffic check belong to it.
            "demote" | "promote" | "traffic-check" => {
                assert_eq!(e.parent, Some(switchover.id), "{e:#?}");
                assert_eq!(e.result, LogResult::Succeeded, "{e:#?}");
            }
            // Every step of the rollout, member or cluster-wide (the final verification).
            _ => {
                assert_eq!(e.parent, Some(rollout.id), "{e:#?}");
                steps += 1;
            }
        }
    }
    assert!(steps >= 8, "steps of a 3-member rollout: {:#?}", st.log);
    for phase in ["demote", "promote", "traffic-check"] {
        assert!(
            st.log.iter().any(|e| e.action == phase),
            "{phase} missing from {:#?}",
            st.log
        );
    }
    let demote = st.log.iter().find(|e| e.action == "demote").unwrap();
    let promote = st.log.iter().find(|e| e.action == "promote").unwrap();
    assert!(demote.id < promote.id, "the old active steps down first");
    // Parents always come before their entries.
    for e in &st.log {
        if let Some(p) = e.parent {
            assert!(entry(&st.log, p).id < e.id);
        }
    }
}

#[test]
fn a_new_target_closes_the_old_rollout_and_opens_a_backout_under_which_its_steps_hang() {
    let mut sim = upgrading_c(2);
    // Part-way: the standby is being upgraded.
    sim.run(Duration::from_secs(40));
    clean(&sim);
    let st = status(&sim, "c");
    let first = rollouts(&st);
    assert_eq!(first.len(), 1, "{:#?}", st.log);
    assert_eq!(first[0].result, LogResult::Running);
    let upgrade_id = first[0].id;

    sim.cluster_mut("c").unwrap().spec.version = Some("1.0.0".into());
    sim.run(Duration::from_secs(3 * 3600));
    clean(&sim);
    let st = status(&sim, "c");
    assert_eq!(st.phase, ClusterPhase::Ready, "{:?}", st.message);
    let up = entry(&st.log, upgrade_id);
    assert_eq!(up.result, LogResult::Cancelled, "{up:#?}");
    assert!(up.message.contains("superseded"), "{up:#?}");
    let back = rollouts(&st)
        .into_iter()
        .find(|e| e.action == "backout")
        .unwrap_or_else(|| panic!("no backout entry in {:#?}", st.log));
    assert_eq!(back.version.as_deref(), Some("1.0.0"));
    assert_eq!(back.result, LogResult::Succeeded);
    let rollbacks: Vec<&LogEntry> = st.log.iter().filter(|e| e.action == "rollback").collect();
    assert!(
        !rollbacks.is_empty(),
        "the upgraded member rolls back: {:#?}",
        st.log
    );
    for e in rollbacks {
        assert_eq!(e.parent, Some(back.id), "{e:#?}");
    }
    // Steps started before the new target stay under the rollout they belonged to.
    assert!(
        st.log
            .iter()
            .any(|e| e.parent == Some(upgrade_id) && e.scope == LogScope::Member),
        "{:#?}",
        st.log
    );
}

#[test]
fn mesh_admissions_hang_under_their_tier_and_tiers_under_the_rollout() {
    let mut sim = Sim::new(SimConfig::default(), T0);
    let tiers = [
        ("core", ["core-a", "core-b"]),
        ("edge", ["edge-a", "edge-b"]),
    ];
    for (_, names) in &tiers {
        for n in names {
            sim.add_cluster(n, BTreeMap::new(), cluster_spec(n, 2, None), "1.0.0");
        }
    }
    let mesh = MeshSpec {
        version: "2.0.0".into(),
        tiers: tiers
            .iter()
            .map(|(t, names)| TierSpec {
                name: t.to_string(),
                clusters: names.iter().map(|n| n.to_string()).collect(),
                selector: None,
                max_parallel: 1,
                stagger: Duration(0),
                drain_before: None,
                deferred: None,
            })
            .collect(),
        ..Default::default()
    };
    sim.set_mesh("mesh", mesh);
    sim.run(Duration::from_secs(6 * 3600));
    clean(&sim);
    let ms = sim
        .mesh
        .as_ref()
        .and_then(|m| m.status.clone())
        .expect("mesh planned");
    assert_eq!(ms.phase, MeshPhase::Ready, "{:?}", ms.message);
    let rollout = ms
        .log
        .iter()
        .find(|e| e.scope == LogScope::Mesh && e.action == "upgrade")
        .unwrap_or_else(|| panic!("no mesh rollout entry in {:#?}", ms.log));
    assert_eq!(rollout.parent, None);
    assert_eq!(rollout.result, LogResult::Succeeded);
    let tier_entries: Vec<&LogEntry> = ms.log.iter().filter(|e| e.action == "tier").collect();
    assert_eq!(
        tier_entries
            .iter()
            .map(|e| e.target.as_str())
            .collect::<Vec<_>>(),
        ["core", "edge"],
        "{:#?}",
        ms.log
    );
    for t in &tier_entries {
        assert_eq!(t.parent, Some(rollout.id), "{t:#?}");
        assert_eq!(t.result, LogResult::Succeeded, "{t:#?}");
    }
    let admits: Vec<&LogEntry> = ms.log.iter().filter(|e| e.action == "admit").collect();
    assert_eq!(admits.len(), 4, "{:#?}", ms.log);
    for a in admits {
        let tier = tiers
            .iter()
            .find(|(_, names)| names.contains(&a.target.as_str()))
            .map(|(t, _)| *t)
            .unwrap();
        let parent = entry(&ms.log, a.parent.expect("admission has a parent"));
        assert_eq!(parent.action, "tier", "{a:#?}");
        assert_eq!(parent.target, tier, "{a:#?}");
    }
    // The edge tier opened only after the core tier was done.
    let (core, edge) = (tier_entries[0], tier_entries[1]);
    assert!(
        core.end.is_some_and(|end| end <= edge.start),
        "{core:#?} {edge:#?}"
    );
}
