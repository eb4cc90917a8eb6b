//! Planner benchmarks, printed as tables for docs/benchmarks.md.
//!
//! cargo bench -p baton --bench planner [-- decision | schedule]
//!
//! 1. Time of one mesh decision (plan_mesh) and one cluster decision (plan_cluster) on meshes
//!    of 100, 1,000 and 10,000 clusters of 3 members, mid-rollout.
//! 2. Schedule efficiency: the simulated makespan of the Active/Standby deployment (primary and
//!    secondary management clusters, 40 workers, maxParallel 4, 1-minute stagger, 40-minute
//!    member upgrades) divided by the critical-path lower bound.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use baton::api::values::Duration;
use baton::api::*;
use baton::plan::*;
use baton::sim::topology::{self, member};
use baton::sim::{Sim, SimConfig};
use baton_core::fixtures::cluster::observed;

const NOW: Timestamp = Timestamp(1_800_000_000_000);

fn member_status(name: &str, version: &str, role: MemberRole) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        role,
        version: Some(version.into()),
        health: Health::Ok,
        serving: role == MemberRole::Active,
        ..Default::default()
    }
}

/// A cluster of the fixture: name, labels, spec, status.
type Fixture = (String, BTreeMap<String, String>, ClusterSpec, ClusterStatus);

fn mesh_fixture(n: usize) -> (MeshSpec, Vec<Fixture>) {
    let per_tier = n / 4;
    let mut tiers = vec![];
    let mut clusters = vec![];
    for t in 0..4 {
        let mut names = vec![];
        for i in 0..per_tier {
            let name = format!("c{t}-{i}");
            names.push(name.clone());
            let spec = ClusterSpec {
                role: Some(format!("tier{t}")),
                members: (0..3).map(|j| member(&format!("m{j}"), &name)).collect(),
                ..Default::default()
            };
            // Tier 0 done, tier 1 half way, the rest untouched.
            let (v, phase) = match (t, i < per_tier / 2) {
                (0, _) | (1, true) => ("2.0.0", ClusterPhase::Ready),
                _ => ("1.0.0", ClusterPhase::Waiting),
            };
            let status = ClusterStatus {
                phase,
                target_version: Some("2.0.0".into()),
                // As the cluster planner writes it.
                running_versions: Some(v.into()),
                members: vec![
                    member_status("m0", v, MemberRole::Active),
                    member_status("m1", v, MemberRole::Standby),
                    member_status("m2", v, MemberRole::Standby),
                ],
                ..Default::default()
            };
            clusters.push((name, BTreeMap::new(), spec, status));
        }
        tiers.push(TierSpec {
            name: format!("tier{t}"),
            clusters: names,
            selector: None,
            max_parallel: 8,
            stagger: Duration(0),
            drain_before: None,
            deferred: None,
        });
    }
    let compatibility = (1..4)
        .map(|t| CompatibilityRule {
            role: format!("tier{t}"),
            not_newer_than: "tier0".into(),
        })
        .collect();
    (
        MeshSpec {
            version: "2.0.0".into(),
            tiers,
            compatibility,
            ..Default::default()
        },
        clusters,
    )
}

fn median_micros(mut f: impl FnMut(), iters: usize) -> f64 {
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn decision_times() {
    println!("## Planner decision time (median)\n");
    println!(
        "| clusters (3 members) | plan_mesh | growth for 10x size | plan_mesh, member records only | plan_cluster |"
    );
    println!("|---|---|---|---|---|");
    let mut prev: Option<f64> = None;
    // PLANNER_SIZES=10000 (comma separated) measures chosen sizes only.
    let sizes: Vec<usize> = std::env::var("PLANNER_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    for n in sizes {
        let (mesh, clusters) = mesh_fixture(n);
        let views: Vec<MeshClusterView<'_>> = clusters
            .iter()
            .map(|(n, l, s, st)| MeshClusterView {
                name: n,
                labels: l,
                spec: s,
                status: Some(st),
            })
            .collect();
        let intents = baton::plan::mesh::MeshIntents::default();
        let input = MeshInput {
            mesh: ObjectView {
                name: "mesh",
                generation: Some(1),
                spec: &mesh,
                status: None,
            },
            clusters: &views,
            outside: &[],
            intents: &intents,
            ca: None,
            now: NOW,
        };
        let first = plan_mesh(&input);
        let input = MeshInput {
            mesh: ObjectView {
                status: Some(&first.status),
                ..input.mesh
            },
            ..input
        };
        let iters = if n >= 10_000 { 30 } else { 200 };
        let mesh_us = median_micros(
            || {
                black_box(plan_mesh(black_box(&input)));
            },
            iters,
        );
        // The same decision from statuses without `runningVersions` (written by hand or by an
        // older operator): the planner reads every member's record instead.
        let bare: Vec<ClusterStatus> = clusters
            .iter()
            .map(|(_, _, _, st)| ClusterStatus {
                running_versions: None,
                ..st.clone()
            })
            .collect();
        let bare_views: Vec<MeshClusterView<'_>> = views
            .iter()
            .zip(&bare)
            .map(|(v, st)| MeshClusterView {
                status: Some(st),
                ..*v
            })
            .collect();
        let bare_input = MeshInput {
            clusters: &bare_views,
            ..input
        };
        let bare_us = median_micros(
            || {
                black_box(plan_mesh(black_box(&bare_input)));
            },
            iters,
        );
        assert_eq!(
            plan_mesh(&input).status,
            plan_mesh(&bare_input).status,
            "both paths decide the same"
        );
        // One cluster decision is independent of the mesh size; measured for scale.
        let (_, _, spec, status) = &clusters[n / 2];
        let obs: ClusterObservation = ["m0", "m1", "m2"]
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = if i == 0 {
                    MemberRole::Active
                } else {
                    MemberRole::Standby
                };
                (m.to_string(), observed(m).role(role).build())
            })
            .collect();
        let adm = Admission::standalone();
        let intents = Intents::default();
        let cin = ClusterInput {
            cluster: ObjectView {
                name: "c",
                generation: Some(1),
                spec,
                status: Some(status),
            },
            observed: &obs,
            admission: &adm,
            intents: &intents,
            ca: None,
            now: NOW,
        };
        let cluster_us = median_micros(
            || {
                black_box(plan_cluster(black_box(&cin)));
            },
            2000,
        );
        let ratio = prev
            .map(|p| format!("{:.1}x (size x10)", mesh_us / p))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {n} | {:.3} ms | {ratio} | {:.3} ms | {:.1} µs |",
            mesh_us / 1000.0,
            bare_us / 1000.0,
            cluster_us
        );
        prev = Some(mesh_us);
    }
}

fn schedule_efficiency() {
    println!("\n## Schedule efficiency (Active/Standby deployment, simulated)\n");
    println!(
        "| workers | maxParallel | stagger | member upgrade | makespan | lower bound | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let up = Duration::from_secs(40 * 60);
    let stagger = Duration::from_secs(60);
    let (workers, par) = (40usize, 4u32);
    let t = topology::active_standby_deployment(workers, par, stagger, "2.0.0");
    // Critical path: each cluster upgrades its members one at a time (maxUnavailable 1).
    let members_of = |name: &str| {
        t.clusters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.spec.members.len() as u64)
            .unwrap_or(0)
    };
    let t_primary = members_of("cmp-primary") * up.millis();
    let t_secondary = members_of("cmp-secondary") * up.millis();
    let t_worker = 2 * up.millis();
    let waves = (workers as u64).div_ceil(par as u64);
    let workers_lb = (waves * t_worker).max((workers as u64 - 1) * stagger.millis() + t_worker);
    let lb = Duration(t_primary + t_secondary + workers_lb);
    let cfg = SimConfig {
        upgrade_time: up,
        duration_jitter: 0.0,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, NOW);
    for c in t.clusters {
        sim.add_cluster(&c.name, c.labels, c.spec, "1.0.0");
    }
    sim.set_mesh("mesh", t.mesh);
    sim.run(Duration::from_secs(7 * 86_400));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let ready = sim
        .mesh
        .as_ref()
        .and_then(|m| m.status.as_ref())
        .is_some_and(|s| s.phase == MeshPhase::Ready);
    assert!(ready, "the deployment did not converge");
    // The makespan ends with the last cluster's last log entry.
    let end = sim
        .clusters
        .iter()
        .filter_map(|c| c.status.as_ref()?.log.iter().filter_map(|e| e.end).max())
        .max()
        .unwrap_or(NOW);
    let makespan = end.since(NOW);
    println!(
        "| {workers} | {par} | {stagger} | {up} | {:.1} min | {:.1} min | {:.4} |",
        makespan.as_secs_f64() / 60.0,
        lb.as_secs_f64() / 60.0,
        makespan.as_secs_f64() / lb.as_secs_f64()
    );
}

fn main() {
    // `-- decision` or `-- schedule` runs one part (for profiling); none runs both.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    if wants("decision") {
        decision_times();
    }
    if wants("schedule") {
        schedule_efficiency();
    }
}
