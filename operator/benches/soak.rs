//! Soak run of randomized rollouts (the long-running mode of the property tests).
//!
//! cargo bench -p baton --bench soak -- [ROLLOUTS] [FIRST_SEED]   (env SOAK_SCENARIO=Reversal for one)
//!
//! Prints a table per scenario: rollouts, clusters, members, operator and member crashes,
//! violations and liveness failures. Exits non-zero on any violation.
//!
//! SOAK_SET=rotation runs the CA rotation scenarios (`Scenario::ROTATION`) instead of the four
//! rollout scenarios, ROLLOUTS split evenly among the six; the table then also counts the
//! clusters rotated and how their rotations ended: done, Stalled (or RolledBack) with a reason,
//! or held behind a mesh such clusters block, and the phases forced. SOAK_SCENARIO picks one of
//! the set.
//!
//! SOAK_SET=topology runs the membership-change scenarios (`Scenario::TOPOLOGY`): members
//! added, removed and replaced during upgrades, backouts, reversals and at rest, under faults;
//! the table also counts the members the edits added and removed and the clusters that ended
//! Stalled (with their reasons in the trace).
//!
//! SOAK_SET=procedures runs the scenarios of the procedures' extra rules
//! (`Scenario::PROCEDURES`): tiers waiting for the replication backlog to drain, under faults
//! and reversals; the table also counts the tiers that waited.
//!
//! SOAK_TRACE_CLUSTER=c4 SOAK_SCENARIO=TopologyUpgrade SOAK_SET=topology ... -- 1 SEED prints the
//! passes of cluster c4 in the rollout of seed SEED (to look into a failing seed).
//! SOAK_TRACE=FILE appends one line per rollout (scenario, seed, passes, operations,
//! switchovers, crashes, virtual seconds, outcome): two builds that simulate the same
//! trajectories write the same lines, which is how simulator speed-ups are checked.

use std::io::Write;
use std::time::Instant;

use baton::sim::soak::{Scenario, random_rollout};
use baton::sim::topology::Bounds;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let first: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let bounds = Bounds::FULL;
    let started = Instant::now();
    let which = std::env::var("SOAK_SET").unwrap_or_default();
    let (rotation, topology, procedures) = match which.as_str() {
        "" | "rollout" => (false, false, false),
        "rotation" => (true, false, false),
        "topology" => (false, true, false),
        "procedures" => (false, false, true),
        other => panic!("SOAK_SET={other}: rollout, rotation, topology or procedures"),
    };
    let set: &[Scenario] = if rotation {
        &Scenario::ROTATION
    } else if topology {
        &Scenario::TOPOLOGY
    } else if procedures {
        &Scenario::PROCEDURES
    } else {
        &Scenario::ALL
    };
    if procedures {
        println!(
            "| scenario | rollouts | clusters | members | tiers drained | tasks run | deferred tiers lagged | deferred tiers approved | media staged | health stalls | checks run | blocking fixed | warnings acked | operator crashes | member crashes | clusters ready | violations | liveness failures | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    } else if topology {
        println!(
            "| scenario | rollouts | clusters | members | members added | members removed | operator crashes | member crashes | clusters ready | clusters stalled | violations | liveness failures | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    } else if rotation {
        println!(
            "| scenario | rollouts | clusters | members | rotations | done | stalled | held by the mesh | phases forced | operator crashes | member crashes | clusters ready | violations | liveness failures | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    } else {
        println!(
            "| scenario | rollouts | clusters | members | operator crashes | member crashes | clusters ready | violations | liveness failures | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }
    // SOAK_TRACE_CLUSTER=c4 with SOAK_SCENARIO: trace that cluster's passes in the rollout of
    // seed FIRST_SEED (a topology scenario) and print them, instead of the table.
    if let (Ok(cluster), Some(name)) = (
        std::env::var("SOAK_TRACE_CLUSTER"),
        std::env::var("SOAK_SCENARIO").ok(),
    ) {
        let Some(scenario) = set.iter().find(|s| format!("{s:?}") == name) else {
            panic!("SOAK_SCENARIO={name}: not a scenario of this set");
        };
        let (sim, _, _) =
            baton::sim::soak::topology_run_traced(first, bounds, *scenario, Some(&cluster));
        for l in sim.trace.map(|t| t.lines).unwrap_or_default() {
            println!("{l}");
        }
        println!("violations: {:?}", sim.violations);
        return;
    }
    let mut bad = 0u64;
    let per = total / set.len() as u64;
    // SOAK_SCENARIO=Reversal (etc.) runs one scenario, keeping the same seeds as a full run.
    let only = std::env::var("SOAK_SCENARIO").ok();
    let mut trace = std::env::var("SOAK_TRACE").ok().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("SOAK_TRACE {p}: {e}"))
    });
    for (k, scenario) in set.iter().enumerate() {
        if only.as_ref().is_some_and(|o| o != &format!("{scenario:?}")) {
            continue;
        }
        let t = Instant::now();
        let (mut clusters, mut members, mut oc, mut mc, mut ready, mut viol, mut live) =
            (0, 0, 0, 0, 0, 0u64, 0u64);
        let (mut rotations, mut rotated, mut r_stalled, mut r_held, mut forced) = (0, 0, 0, 0, 0);
        let (mut added, mut removed, mut stalled, mut drains, mut tasks) = (0, 0, 0, 0, 0);
        let (mut lagged, mut approved, mut staged, mut health) = (0, 0, 0, 0);
        let (mut prepared, mut fixed, mut acked) = (0, 0, 0);
        for i in 0..per {
            let seed = first + k as u64 * per + i;
            let v = random_rollout(seed, bounds, *scenario);
            clusters += v.clusters;
            members += v.members;
            oc += v.operator_crashes;
            mc += v.member_crashes;
            ready += v.ready;
            rotations += v.rotations;
            rotated += v.rotations_done;
            r_stalled += v.rotations_stalled;
            r_held += v.rotations_held;
            forced += v.forced;
            added += v.added;
            removed += v.removed;
            stalled += v.stalled_reasons.len();
            drains += v.drains;
            tasks += v.tasks;
            lagged += v.lagged;
            approved += v.approved;
            staged += v.staged;
            health += v.health_stalls;
            prepared += v.prepared;
            fixed += v.preparations_fixed;
            acked += v.preparations_acknowledged;
            if let Some(f) = trace.as_mut() {
                let mut line = format!(
                    "{scenario:?} {seed} clusters={} members={} passes={} ops={} switchovers={} oc={} mc={} virtual={} ready={} stalled={:?} violations={:?} liveness={:?}\n",
                    v.clusters,
                    v.members,
                    v.passes,
                    v.ops_submitted,
                    v.switchovers,
                    v.operator_crashes,
                    v.member_crashes,
                    v.virtual_secs,
                    v.ready,
                    v.stalled_reasons,
                    v.violations,
                    v.liveness
                );
                if scenario.changes_topology() {
                    line.pop();
                    line.push_str(&format!(" added={} removed={}\n", v.added, v.removed));
                }
                if scenario.rotates() {
                    line.pop();
                    line.push_str(&format!(
                        " rotations={} rotated={} rotation_stalled={} rotation_held={} forced={}\n",
                        v.rotations,
                        v.rotations_done,
                        v.rotations_stalled,
                        v.rotations_held,
                        v.forced
                    ));
                }
                if let Err(e) = f.write_all(line.as_bytes()) {
                    eprintln!("SOAK_TRACE: {e}");
                }
            }
            if !v.violations.is_empty() {
                viol += 1;
                eprintln!(
                    "seed {seed} {scenario:?}: {:?}",
                    &v.violations[..v.violations.len().min(3)]
                );
            }
            if !v.liveness.is_empty() {
                live += 1;
                eprintln!(
                    "seed {seed} {scenario:?} liveness: {:?}",
                    &v.liveness[..v.liveness.len().min(3)]
                );
            }
        }
        bad += viol + live;
        if procedures {
            println!(
                "| {scenario:?} | {per} | {clusters} | {members} | {drains} | {tasks} | {lagged} | {approved} | {staged} | {health} | {prepared} | {fixed} | {acked} | {oc} | {mc} | {ready} | {viol} | {live} | {:.1} |",
                t.elapsed().as_secs_f64()
            );
        } else if topology {
            println!(
                "| {scenario:?} | {per} | {clusters} | {members} | {added} | {removed} | {oc} | {mc} | {ready} | {stalled} | {viol} | {live} | {:.1} |",
                t.elapsed().as_secs_f64()
            );
        } else if rotation {
            println!(
                "| {scenario:?} | {per} | {clusters} | {members} | {rotations} | {rotated} | {r_stalled} | {r_held} | {forced} | {oc} | {mc} | {ready} | {viol} | {live} | {:.1} |",
                t.elapsed().as_secs_f64()
            );
        } else {
            println!(
                "| {scenario:?} | {per} | {clusters} | {members} | {oc} | {mc} | {ready} | {viol} | {live} | {:.1} |",
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "\ntotal {} rollouts in {:.1}s, {bad} failing",
        per * set.len() as u64,
        started.elapsed().as_secs_f64()
    );
    if bad > 0 {
        std::process::exit(1);
    }
}
