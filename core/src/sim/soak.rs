//! Randomized rollouts: a random topology, a random fault schedule, a rollout, and a verdict.
//! Used by the property tests (a few dozen cases) and the soak benchmark (100,000 cases).

use super::rng::Rng;
use super::topology::{self, Bounds};
use super::{Sim, SimConfig};
use crate::api::Timestamp;
use crate::api::values::Duration;

/// What a randomized rollout does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Upgrade without faults: every cluster must end Ready (or Stalled with a reason when
    /// the spec forbids the needed outage).
    CleanUpgrade,
    /// Upgrade under faults: failed operations, member crashes, cut networks, operator crashes.
    FaultyUpgrade,
    /// Backout (lower target) under faults.
    FaultyBackout,
    /// Upgrade, then the target is set back to the old version mid-way.
    Reversal,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::CleanUpgrade,
        Scenario::FaultyUpgrade,
        Scenario::FaultyBackout,
        Scenario::Reversal,
    ];
}

/// The outcome of one randomized rollout.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub liveness: Vec<String>,
    pub clusters: usize,
    pub members: usize,
    pub ready: usize,
    /// Reasons of the clusters that ended Stalled (their `Stalled` condition).
    pub stalled_reasons: Vec<String>,
    pub passes: u64,
    /// Agent operations started and switchovers promoted (a fingerprint of the trajectory).
    pub ops_submitted: u64,
    pub switchovers: u64,
    pub operator_crashes: u64,
    pub member_crashes: u64,
    pub virtual_secs: f64,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.liveness.is_empty()
    }
}

const START: Timestamp = Timestamp(1_800_000_000_000);

/// Run one randomized rollout, fully determined by `seed`.
pub fn random_rollout(seed: u64, bounds: Bounds, scenario: Scenario) -> Verdict {
    let mut rng = Rng::new(seed);
    let (from, to) = match scenario {
        Scenario::FaultyBackout => ("2.0.0", "1.0.0"),
        _ => ("1.0.0", "2.0.0"),
    };
    let topo = topology::random(&mut rng, bounds, to);
    let faulty = scenario != Scenario::CleanUpgrade;
    let cfg = SimConfig {
        seed: rng.next_u64(),
        op_fail_rate: if faulty { 0.05 } else { 0.0 },
        crash_rate: if faulty { 0.01 } else { 0.0 },
        cut_rate: if faulty { 0.01 } else { 0.0 },
        operator_crash_rate: if faulty { 0.05 } else { 0.0 },
        faults_until: if faulty {
            START.plus(Duration::from_secs(rng.below(7200)))
        } else {
            START
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, START);
    let mut members = 0;
    for c in topo.clusters {
        members += c.spec.members.len();
        sim.add_cluster(&c.name, c.labels, c.spec, from);
    }
    let clusters = sim.clusters.len();
    sim.set_mesh("mesh", topo.mesh);
    if scenario == Scenario::Reversal {
        let until = sim.now.plus(Duration::from_secs(60 + rng.below(1800)));
        sim.run(until.since(sim.now));
        if let Some(m) = sim.mesh.as_mut() {
            m.spec.version = from.to_string();
        }
    }
    // Generous bound: 50 clusters upgraded one at a time take a few simulated hours.
    sim.run(Duration::from_secs(72 * 3600));
    let mut liveness = Vec::new();
    if !sim.settled() {
        liveness.push("did not settle within 72 simulated hours".to_string());
    }
    liveness.extend(sim.liveness_problems());
    let ready = sim
        .clusters
        .iter()
        .filter(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.phase == crate::api::ClusterPhase::Ready)
        })
        .count();
    let stalled_reasons = sim
        .clusters
        .iter()
        .filter_map(|c| c.status.as_ref())
        .filter(|s| s.phase == crate::api::ClusterPhase::Stalled)
        .flat_map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ == "Stalled")
                .map(|c| c.reason.clone())
        })
        .collect();
    Verdict {
        violations: sim.violations.clone(),
        stalled_reasons,
        liveness,
        clusters,
        members,
        ready,
        passes: sim.stats.passes,
        ops_submitted: sim.stats.ops_submitted,
        switchovers: sim.stats.switchovers,
        operator_crashes: sim.stats.operator_crashes,
        member_crashes: sim.stats.member_crashes,
        virtual_secs: sim.now.since(START).as_secs_f64(),
    }
}
