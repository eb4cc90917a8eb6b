//! Randomized rollouts: a random topology, a random fault schedule, a rollout, and a verdict.
//! Used by the property tests (a few dozen cases) and the soak benchmark (100,000 cases).
//!
//! The rotation scenarios ([`Scenario::ROTATION`]) rotate the CA of every cluster from
//! simulated CA 0 (which every member trusts and presents) to CA 1, members spread over 1–3
//! sites. Not simulated: `restart: Manual` and `approvePhases` (they wait for a human). A
//! forced phase is ([`Scenario::RotationForced`]): what breaks must be what it announced.

use super::rng::Rng;
use super::topology::{self, Bounds};
use super::{Sim, SimConfig};
use crate::api::FindingSeverity;
use crate::api::values::Duration;
use crate::api::{
    CertificatesSpec, DeferredSpec, Direction, DrainSpec, HealthPolicy, KpiAggregate, KpiRule,
    KpiWorse, MaintenanceWindow, MediaPolicy, MeshTaskSpec, PreparePolicy, PrepareWarnings,
    TaskRollouts, Timestamp,
};
use crate::plan::observe::FindingView;

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
    /// CA rotation of every cluster, no faults, no upgrade.
    CleanRotation,
    /// CA rotation under failed operations, member crashes, cut networks, operator crashes.
    FaultyRotation,
    /// CA rotation asked for with an upgrade: both at once from rest, or the CA changed
    /// mid-rollout (half of the cases each), under faults.
    RotationDuringRollout,
    /// CA rotation while every member of one site is unreachable for a window (1–30 min,
    /// starting in the first 10 min), no other fault.
    RotationSiteCut,
    /// CA rotation with random `maxJobsPerSite` (1–3), `keepOldTrust` and `resignData`
    /// (`restart: Automatic`), faults in half of the cases.
    RotationOptions,
    /// CA rotation while one site is cut off (as [`Scenario::RotationSiteCut`]), and a force
    /// intent on one cluster, at a random instant of the cut, for its own phase when the mesh
    /// holds it in an earlier one, else for the phase after its own: the handshakes that break
    /// must be exactly those its `PhaseForced` event names, and the rotation still ends done or
    /// stopped with a reason.
    RotationForced,
    /// Members added, removed and replaced (random edits of random clusters at random instants
    /// of the first half hour) during an upgrade under faults.
    TopologyUpgrade,
    /// The same during a backout.
    TopologyBackout,
    /// The same during an upgrade whose target is set back mid-way.
    TopologyReversal,
    /// The same with no version change, under faults.
    TopologyAtRest,
    /// Upgrade under faults where the procedures' extra rules apply: tiers after the first
    /// declare `drainBefore` at random (timeouts of 1–30 min), and every successful member
    /// upgrade generates a replication backlog (up to 3,000 entries, drained at 1–50 a second
    /// while the member is reachable).
    ProcedureUpgrade,
    /// The same, with the target set back mid-way (a backout never waits for a drain).
    ProcedureReversal,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::CleanUpgrade,
        Scenario::FaultyUpgrade,
        Scenario::FaultyBackout,
        Scenario::Reversal,
    ];

    /// The CA rotation scenarios (the soak runs them with `SOAK_SET=rotation`).
    pub const ROTATION: [Scenario; 6] = [
        Scenario::CleanRotation,
        Scenario::FaultyRotation,
        Scenario::RotationDuringRollout,
        Scenario::RotationSiteCut,
        Scenario::RotationOptions,
        Scenario::RotationForced,
    ];

    /// The membership-change scenarios (the soak runs them with `SOAK_SET=topology`).
    pub const TOPOLOGY: [Scenario; 4] = [
        Scenario::TopologyUpgrade,
        Scenario::TopologyBackout,
        Scenario::TopologyReversal,
        Scenario::TopologyAtRest,
    ];

    /// The scenarios of the procedures' extra rules (the soak runs them with
    /// `SOAK_SET=procedures`).
    pub const PROCEDURES: [Scenario; 2] = [Scenario::ProcedureUpgrade, Scenario::ProcedureReversal];

    /// One of [`Scenario::ROTATION`].
    pub fn rotates(self) -> bool {
        Scenario::ROTATION.contains(&self)
    }

    /// One of [`Scenario::TOPOLOGY`].
    pub fn changes_topology(self) -> bool {
        Scenario::TOPOLOGY.contains(&self)
    }
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
    /// Clusters whose CA was rotated; of those, the ones whose rotation ended done, the ones
    /// that ended Stalled or RolledBack (with their reason), and the ones left waiting behind a
    /// mesh blocked by such clusters (the mesh admits clusters to rotate as to a rollout).
    pub rotations: usize,
    pub rotations_done: usize,
    pub rotations_stalled: usize,
    pub rotations_held: usize,
    /// Phases forced (`PhaseForced` events; [`Scenario::RotationForced`]).
    pub forced: usize,
    /// Membership edits ([`Scenario::TOPOLOGY`]): members added and removed by them.
    pub added: usize,
    pub removed: usize,
    /// Tiers that waited for a replication backlog to drain ([`Scenario::PROCEDURES`]).
    pub drains: usize,
    /// Once-per-mesh tasks that ran ([`Scenario::PROCEDURES`]).
    pub tasks: usize,
    /// Times the mesh reported deferred tiers behind a finished rollout, and deferred tiers
    /// approved ([`Scenario::PROCEDURES`]).
    pub lagged: usize,
    pub approved: usize,
    /// Media stagings that succeeded ([`Scenario::PROCEDURES`]).
    pub staged: usize,
    /// Clusters stopped because their health got worse ([`Scenario::PROCEDURES`]).
    pub health_stalls: usize,
    /// Preparation checks that ran, and preparations a human answered: blocking findings
    /// fixed and retried, warnings acknowledged ([`Scenario::PROCEDURES`]).
    pub prepared: usize,
    pub preparations_fixed: usize,
    pub preparations_acknowledged: usize,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.liveness.is_empty()
    }
}

const START: Timestamp = Timestamp(1_800_000_000_000);

/// The fault rates of a randomized run: none when not `faulty`; faults stop at `faults_until`.
fn fault_config(seed: u64, faulty: bool, faults_until: Timestamp) -> SimConfig {
    let rate = |r: f64| if faulty { r } else { 0.0 };
    SimConfig {
        seed,
        op_fail_rate: rate(0.05),
        crash_rate: rate(0.01),
        cut_rate: rate(0.01),
        operator_crash_rate: rate(0.05),
        faults_until,
        ..SimConfig::default()
    }
}

/// When faults stop in a faulty run: up to two hours in.
fn random_fault_end(rng: &mut Rng) -> Timestamp {
    START.plus(Duration::from_secs(rng.below(7200)))
}

/// Run one randomized rollout, fully determined by `seed`.
pub fn random_rollout(seed: u64, bounds: Bounds, scenario: Scenario) -> Verdict {
    if scenario.rotates() {
        return random_rotation(seed, bounds, scenario);
    }
    if scenario.changes_topology() {
        let (sim, added, removed) = topology_run(seed, bounds, scenario);
        let mut v = verdict(&sim);
        v.liveness.extend(sim.topology_problems());
        v.added = added;
        v.removed = removed;
        return v;
    }
    let mut rng = Rng::new(seed);
    let (from, to) = match scenario {
        Scenario::FaultyBackout => ("2.0.0", "1.0.0"),
        _ => ("1.0.0", "2.0.0"),
    };
    let mut topo = topology::random(&mut rng, bounds, to);
    let faulty = scenario != Scenario::CleanUpgrade;
    // The seed is drawn before the end of the faults: the order fixes every later draw.
    let seed = rng.next_u64();
    let faults_until = if faulty {
        random_fault_end(&mut rng)
    } else {
        START
    };
    let mut cfg = fault_config(seed, faulty, faults_until);
    let procedures = Scenario::PROCEDURES.contains(&scenario);
    if procedures {
        // Drawn after everything the other scenarios draw, so theirs stay as they were.
        for t in topo.mesh.tiers.iter_mut().skip(1) {
            if rng.chance(0.6) {
                t.drain_before = Some(DrainSpec {
                    timeout: Duration::from_secs(60 * (1 + rng.below(30))),
                });
            }
        }
        cfg.upgrade_backlog = 1 + rng.below(3000);
        cfg.backlog_drain_rate = 1 + rng.below(50);
        // Once-per-mesh tasks: after a random tier, on a random cluster (its active, or a
        // named member), on upgrades, backouts or both.
        for k in 0..rng.below(3) {
            let after = topo.mesh.tiers[rng.below(topo.mesh.tiers.len() as u64) as usize]
                .name
                .clone();
            let c = &topo.clusters[rng.below(topo.clusters.len() as u64) as usize];
            let member = rng.chance(0.3).then(|| {
                c.spec.members[rng.below(c.spec.members.len() as u64) as usize]
                    .name
                    .clone()
            });
            let on = match rng.below(3) {
                0 => TaskRollouts::Upgrade,
                1 => TaskRollouts::Backout,
                _ => TaskRollouts::Both,
            };
            topo.mesh.tasks.push(MeshTaskSpec {
                name: format!("task-{k}"),
                task: None,
                cluster: c.name.clone(),
                member,
                after,
                on,
            });
        }
    }
    // The last tier deferred (no upgrade task may wait for it): behind an approval given at
    // a random instant of the first four hours, a daily window of 1-4 hours, both or neither.
    let mut approve_after = None;
    if procedures && topo.mesh.tiers.len() >= 2 && rng.chance(0.5) {
        let last = topo.mesh.tiers.len() - 1;
        let name = topo.mesh.tiers[last].name.clone();
        let approval = rng.chance(0.5);
        let windows = if rng.chance(0.5) {
            let start = rng.below(24 * 60);
            vec![MaintenanceWindow {
                days: vec![],
                start: format!("{:02}:{:02}", start / 60, start % 60),
                duration: Duration::from_secs(3600 * (1 + rng.below(4))),
            }]
        } else {
            vec![]
        };
        let waits = topo
            .mesh
            .tasks
            .iter()
            .any(|t| t.after == name && t.on.runs_on(Direction::Upgrade));
        if !waits {
            topo.mesh.tiers[last].deferred = Some(DeferredSpec { approval, windows });
            if approval {
                approve_after = Some(Duration::from_secs(rng.below(4 * 3600)));
            }
        }
    }
    // Health compared around the upgrade (half the clusters): the write rate may drop 20 %;
    // one run in five upgrades to a version that halves it.
    if procedures && rng.chance(0.6) {
        for c in topo.clusters.iter_mut() {
            if rng.chance(0.5) {
                c.spec.upgrade.health = Some(HealthPolicy {
                    alarms: true,
                    kpis: vec![KpiRule {
                        name: "writeRate".into(),
                        worse: KpiWorse::Lower,
                        aggregate: KpiAggregate::Sum,
                        tolerance: 0.0,
                        tolerance_percent: 20,
                    }],
                    settle: Duration::from_secs(rng.below(120)),
                });
            }
        }
        if rng.chance(0.2) {
            cfg.broken.slow_on = vec![to.to_string()];
        }
    }
    // Media staged ahead (half the clusters), 1-3 per site of 1-3 sites, cleanup mostly on.
    if procedures && rng.chance(0.7) {
        topology::add_sites(&mut rng, &mut topo);
        for c in topo.clusters.iter_mut() {
            if rng.chance(0.5) {
                c.spec.upgrade.media = Some(MediaPolicy {
                    max_parallel_per_site: 1 + rng.below(3) as u32,
                    cleanup: rng.chance(0.8),
                });
            }
        }
    }
    // Preparation checks (half the clusters): a member's checks may find a blocking problem
    // (a human fixes it and retries) or a dropped scheduled job (acknowledged, or recorded).
    let prepare = procedures && rng.chance(0.6);
    if prepare {
        cfg.answer_preparation = true;
        for c in topo.clusters.iter_mut() {
            if rng.chance(0.5) {
                c.spec.upgrade.prepare = Some(PreparePolicy {
                    checks: vec!["config".into(), "gateways".into(), "scheduledJobs".into()],
                    warnings: if rng.chance(0.8) {
                        PrepareWarnings::Acknowledge
                    } else {
                        PrepareWarnings::Record
                    },
                });
            }
        }
    }
    let mut sim = Sim::new(cfg, START);
    for c in topo.clusters {
        sim.add_cluster(&c.name, c.labels, c.spec, from);
    }
    if prepare {
        for c in sim.clusters.iter_mut() {
            if c.spec.upgrade.prepare.is_none() {
                continue;
            }
            for m in c.members.values_mut() {
                if rng.chance(0.1) {
                    m.prepare.push(prepare_finding(
                        FindingSeverity::Blocking,
                        "gateways",
                        "GatewayDown",
                    ));
                }
                if rng.chance(0.2) {
                    m.prepare.push(prepare_finding(
                        FindingSeverity::Warning,
                        "scheduledJobs",
                        "ScheduledJobDropped",
                    ));
                }
            }
        }
    }
    sim.set_mesh("mesh", topo.mesh);
    if matches!(scenario, Scenario::Reversal | Scenario::ProcedureReversal) {
        let until = sim.now.plus(Duration::from_secs(60 + rng.below(1800)));
        sim.run(until.since(sim.now));
        if let Some(m) = sim.mesh.as_mut() {
            m.spec.version = from.to_string();
        }
    }
    let mut deferred = vec![];
    if let Some(after) = approve_after {
        // Until the approval, or until only it is missing (the run settles then).
        sim.run(after);
        deferred.extend(sim.deferred_problems());
        if let Some(m) = sim.mesh.as_mut() {
            let t = &m.spec.tiers[m.spec.tiers.len() - 1];
            let name = crate::plan::mesh::approval_name(&m.name, &t.name, to);
            m.intents.approve.push(name);
        }
    }
    // Generous bound: 50 clusters upgraded one at a time take a few simulated hours, and a
    // deferred tier's window opens within a day.
    sim.run(Duration::from_secs(72 * 3600));
    let mut v = verdict(&sim);
    v.violations.extend(deferred);
    v.violations.extend(sim.deferred_problems());
    v.liveness.extend(sim.task_problems());
    v.liveness.extend(sim.media_problems());
    v.violations.extend(sim.health_problems());
    v.health_stalls = v
        .stalled_reasons
        .iter()
        .filter(|r| *r == "HealthCheckFailed")
        .count();
    v.staged = succeeded(&sim, crate::plan::OpKind::StageMedia);
    v.approved = sim
        .mesh
        .as_ref()
        .and_then(|m| m.status.as_ref())
        .map_or(0, |st| {
            st.log.iter().filter(|e| e.action == "approve").count()
        });
    v.tasks = succeeded(&sim, crate::plan::OpKind::Task);
    v.prepared = succeeded(&sim, crate::plan::OpKind::Prepare);
    v.preparations_fixed = sim.stats.preparations_fixed as usize;
    v.preparations_acknowledged = sim.stats.preparations_acknowledged as usize;
    v.drains = sim
        .mesh
        .as_ref()
        .and_then(|m| m.status.as_ref())
        .map_or(0, |st| {
            st.log.iter().filter(|e| e.action == "drain").count()
        });
    v
}

/// Operations of `kind` that succeeded, on every member.
fn succeeded(sim: &Sim, kind: crate::plan::OpKind) -> usize {
    sim.clusters
        .iter()
        .flat_map(|c| c.members.values())
        .flat_map(|m| m.ops.values())
        .filter(|op| op.req.kind == kind && op.state == crate::plan::OpState::Succeeded)
        .count()
}

fn prepare_finding(severity: FindingSeverity, check: &str, code: &str) -> FindingView {
    FindingView {
        check: check.into(),
        severity,
        code: code.into(),
        message: format!("{code} (simulated)"),
    }
}

/// The verdict on a run: violations, liveness once settled (rotations included), counts.
fn verdict(sim: &Sim) -> Verdict {
    let mut liveness = Vec::new();
    if !sim.settled() {
        liveness.push("did not settle within 72 simulated hours".to_string());
    }
    liveness.extend(sim.liveness_problems());
    liveness.extend(sim.rotation_problems());
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
    let rotating: Vec<&super::SimCluster> = sim
        .clusters
        .iter()
        .filter(|c| sim.ca_of(c).is_some())
        .collect();
    let done = sim.rotations_done();
    // Stopped short of the target (a cluster that rotated and then stopped in the rollout
    // counts as done).
    let stalled = rotating
        .iter()
        .filter(|c| !sim.rotation_done(c))
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                matches!(
                    s.phase,
                    crate::api::ClusterPhase::Stalled | crate::api::ClusterPhase::RolledBack
                )
            })
        })
        .count();
    Verdict {
        violations: sim.violations.clone(),
        stalled_reasons,
        liveness,
        clusters: sim.clusters.len(),
        members: sim.clusters.iter().map(|c| c.members.len()).sum(),
        ready,
        passes: sim.stats.passes,
        ops_submitted: sim.stats.ops_submitted,
        switchovers: sim.stats.switchovers,
        operator_crashes: sim.stats.operator_crashes,
        member_crashes: sim.stats.member_crashes,
        virtual_secs: sim.now.since(START).as_secs_f64(),
        rotations: rotating.len(),
        rotations_done: done,
        rotations_stalled: stalled,
        rotations_held: rotating.len() - done - stalled,
        forced: sim.forced.len(),
        added: 0,
        removed: 0,
        drains: 0,
        tasks: 0,
        lagged: sim.stats.lagged as usize,
        approved: 0,
        staged: 0,
        health_stalls: 0,
        prepared: 0,
        preparations_fixed: 0,
        preparations_acknowledged: 0,
    }
}

/// One randomized run of a [`Scenario::TOPOLOGY`] scenario, fully determined by `seed`: the
/// simulation after its run, and how many members its edits added and removed.
pub fn topology_run(seed: u64, bounds: Bounds, scenario: Scenario) -> (Sim, usize, usize) {
    topology_run_traced(seed, bounds, scenario, None)
}

/// [`topology_run`], tracing the passes of cluster `trace` (see [`super::SimTrace`]).
pub fn topology_run_traced(
    seed: u64,
    bounds: Bounds,
    scenario: Scenario,
    trace: Option<&str>,
) -> (Sim, usize, usize) {
    let mut rng = Rng::new(seed);
    let (from, to) = match scenario {
        Scenario::TopologyBackout => ("2.0.0", "1.0.0"),
        Scenario::TopologyAtRest => ("1.0.0", "1.0.0"),
        _ => ("1.0.0", "2.0.0"),
    };
    let topo = topology::random(&mut rng, bounds, to);
    let seed = rng.next_u64();
    let faults_until = random_fault_end(&mut rng);
    let mut sim = Sim::new(fault_config(seed, true, faults_until), START);
    sim.trace = trace.map(super::SimTrace::of);
    for c in topo.clusters {
        sim.add_cluster(&c.name, c.labels, c.spec, from);
    }
    sim.set_mesh("mesh", topo.mesh);
    // The members are adopted as they are before anything changes.
    sim.pass();
    // The edits, at random instants of the first half hour, in order.
    let mut at: Vec<u64> = (0..1 + rng.below(4)).map(|_| rng.below(1800)).collect();
    at.sort_unstable();
    let reversal_at = (scenario == Scenario::TopologyReversal).then(|| 60 + rng.below(1800));
    let (mut added, mut removed, mut next_name) = (0, 0, 0u32);
    let mut reversed = false;
    for t in at {
        if let Some(r) = reversal_at
            && !reversed
            && r <= t
        {
            run_until(&mut sim, r);
            if let Some(m) = sim.mesh.as_mut() {
                m.spec.version = from.to_string();
            }
            reversed = true;
        }
        run_until(&mut sim, t);
        let ci = rng.below(sim.clusters.len() as u64) as usize;
        let name = sim.clusters[ci].name.clone();
        if rng.chance(0.3) {
            sim.clusters[ci].spec.topology.allow_removing_last_standby = true;
        }
        let declared: Vec<String> = sim.clusters[ci]
            .spec
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let edit = rng.below(3);
        // 0: add, 1: remove, 2: replace (both in one edit).
        if edit != 1 && declared.len() < 8 {
            next_name += 1;
            let mut m = topology::member(&format!("j{next_name}"), &name);
            m.spare = rng.chance(0.2);
            let version = if rng.chance(0.5) { from } else { to };
            sim.add_member(&name, m, version);
            added += 1;
        }
        if edit != 0 && declared.len() >= 2 {
            let gone = &declared[rng.below(declared.len() as u64) as usize];
            // At least one regular member stays declared.
            let regular_left = sim.clusters[ci]
                .spec
                .members
                .iter()
                .filter(|m| !m.spare && &m.name != gone)
                .count();
            if regular_left > 0 {
                sim.remove_member(&name, gone);
                removed += 1;
            }
        }
    }
    if let Some(r) = reversal_at
        && !reversed
    {
        run_until(&mut sim, r);
        if let Some(m) = sim.mesh.as_mut() {
            m.spec.version = from.to_string();
        }
    }
    sim.run(Duration::from_secs(72 * 3600));
    (sim, added, removed)
}

/// Run the simulation to `secs` after the start (nothing when already past it).
fn run_until(sim: &mut Sim, secs: u64) {
    let t = START.plus(Duration::from_secs(secs));
    if t > sim.now {
        sim.run(t.since(sim.now));
    }
}

/// One randomized CA rotation (a [`Scenario::ROTATION`] scenario), fully determined by `seed`:
/// every cluster's CA goes from 0 to 1.
fn random_rotation(seed: u64, bounds: Bounds, scenario: Scenario) -> Verdict {
    verdict(&rotation_run(seed, bounds, scenario))
}

/// The simulation [`random_rollout`] judges for a rotation scenario, after its run (to look
/// into a failing seed).
pub fn rotation_run(seed: u64, bounds: Bounds, scenario: Scenario) -> Sim {
    let mut rng = Rng::new(seed);
    let from = "1.0.0";
    let to = if scenario == Scenario::RotationDuringRollout {
        "2.0.0"
    } else {
        from
    };
    let mut topo = topology::random(&mut rng, bounds, to);
    topology::add_sites(&mut rng, &mut topo);
    let faulty = match scenario {
        Scenario::FaultyRotation | Scenario::RotationDuringRollout => true,
        Scenario::RotationOptions => rng.chance(0.5),
        _ => false,
    };
    // RotationSiteCut: the window in which one site is cut off.
    let cuts = matches!(
        scenario,
        Scenario::RotationSiteCut | Scenario::RotationForced
    );
    let cut = cuts.then(|| {
        let at = Duration::from_secs(rng.below(600));
        let length = Duration::from_secs(60 + rng.below(1740));
        (at, length)
    });
    let faults_until = if faulty {
        random_fault_end(&mut rng)
    } else if let Some((at, length)) = cut {
        START.plus(at).plus(length)
    } else {
        START
    };
    let cfg = fault_config(rng.next_u64(), faulty, faults_until);
    let mut sim = Sim::new(cfg, START);
    for c in topo.clusters {
        sim.add_cluster(&c.name, c.labels, c.spec, from);
    }
    // The mesh declares the certificates; its clusters declare none.
    let mut certs = CertificatesSpec::default();
    if scenario == Scenario::RotationOptions {
        certs.max_jobs_per_site = 1 + rng.below(3) as u32;
        certs.keep_old_trust = rng.chance(0.3);
        certs.resign_data = rng.chance(0.7);
    }
    topo.mesh.certificates = Some(certs);
    sim.set_mesh("mesh", topo.mesh);
    // Adopted on CA 0 (what every member trusts and presents): nothing to rotate yet.
    sim.set_mesh_ca(0);
    // With a rollout: the CA changes with the version, or a while into the rollout.
    if scenario == Scenario::RotationDuringRollout && rng.chance(0.5) {
        let until = sim.now.plus(Duration::from_secs(60 + rng.below(1800)));
        sim.run(until.since(sim.now));
    }
    sim.set_mesh_ca(1);
    if let Some((at, length)) = cut {
        if at.millis() > 0 {
            sim.run(at);
        }
        let sites: std::collections::BTreeSet<String> = sim
            .clusters
            .iter()
            .flat_map(|c| c.spec.members.iter().filter_map(|m| m.site.clone()))
            .collect();
        let site = sites
            .iter()
            .nth(rng.below(sites.len() as u64) as usize)
            .cloned()
            .unwrap_or_default();
        let until = sim.now.plus(length);
        // The force comes while the site is cut off (what a human forces a phase for).
        let force_at = sim
            .now
            .plus(Duration::from_millis(rng.below(length.millis().max(1))));
        for c in &mut sim.clusters {
            for s in &c.spec.members {
                if s.site.as_deref() == Some(site.as_str())
                    && let Some(m) = c.members.get_mut(&s.name)
                {
                    m.downtime.cut_until = Some(until);
                }
            }
        }
        if scenario == Scenario::RotationForced {
            sim.run(force_at.since(sim.now));
            force_next_phase(&mut sim, &mut rng);
        }
    }
    sim.run(Duration::from_secs(72 * 3600));
    sim
}

/// A force intent on one random cluster still rotating (`rotation/<cluster>/<phase>@<ca>`, as
/// `baton force` gives it): for its own phase when the mesh holds it in an earlier one, else
/// for the phase after its own.
fn force_next_phase(sim: &mut Sim, rng: &mut Rng) {
    use crate::api::RotationPhase;
    let mesh_phase = sim
        .mesh
        .as_ref()
        .and_then(|m| m.status.as_ref()?.certificates.as_ref()?.phase.as_deref())
        .and_then(RotationPhase::parse);
    let open: Vec<(usize, String)> = sim
        .clusters
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let certs = c.status.as_ref()?.certificates.as_ref()?;
            let phase = RotationPhase::parse(certs.phase.as_deref()?)?;
            let next = match mesh_phase {
                Some(m) if m < phase => phase,
                _ => RotationPhase::ALL.into_iter().find(|p| *p > phase)?,
            };
            let name = crate::plan::cluster::rotation_phase_name(
                &c.name,
                next,
                certs.target_ca.as_deref()?,
            );
            Some((i, name))
        })
        .collect();
    if open.is_empty() {
        return;
    }
    let (i, name) = open[rng.below(open.len() as u64) as usize].clone();
    sim.clusters[i].intents.force.push(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Bounds = Bounds {
        max_tiers: 2,
        max_clusters: 4,
        max_members: 4,
    };

    #[test]
    fn every_topology_scenario_changes_members_safely_on_small_meshes() {
        let mut added = 0;
        for scenario in Scenario::TOPOLOGY {
            for seed in 1..=6 {
                let v = random_rollout(seed, SMALL, scenario);
                assert!(v.ok(), "seed {seed} {scenario:?}: {v:#?}");
                added += v.added;
            }
        }
        assert!(added > 0, "no member was added");
    }

    #[test]
    fn every_procedure_scenario_drains_safely_on_small_meshes() {
        let (mut drains, mut tasks, mut lagged, mut approved, mut staged) = (0, 0, 0, 0, 0);
        let mut health_stalls = 0;
        let (mut prepared, mut fixed, mut acknowledged) = (0, 0, 0);
        for scenario in Scenario::PROCEDURES {
            for seed in 1..=40 {
                let v = random_rollout(seed, SMALL, scenario);
                assert!(v.ok(), "seed {seed} {scenario:?}: {v:#?}");
                drains += v.drains;
                tasks += v.tasks;
                lagged += v.lagged;
                approved += v.approved;
                staged += v.staged;
                health_stalls += v.health_stalls;
                prepared += v.prepared;
                fixed += v.preparations_fixed;
                acknowledged += v.preparations_acknowledged;
            }
        }
        assert!(prepared > 0, "no preparation checks ran");
        assert!(
            fixed > 0,
            "no blocking preparation finding was fixed and retried"
        );
        assert!(acknowledged > 0, "no preparation warning was acknowledged");
        assert!(drains > 0, "no tier waited for a drain");
        assert!(tasks > 0, "no once-per-mesh task ran");
        assert!(
            lagged > 0,
            "no deferred tier lagged behind a finished rollout"
        );
        assert!(approved > 0, "no deferred tier was approved");
        assert!(staged > 0, "no media was staged");
        assert!(health_stalls > 0, "no cluster's health got worse");
    }

    #[test]
    fn every_rotation_scenario_rotates_safely_on_small_meshes() {
        for scenario in Scenario::ROTATION {
            for seed in 1..=6 {
                let v = random_rollout(seed, SMALL, scenario);
                assert!(v.ok(), "seed {seed} {scenario:?}: {v:#?}");
                assert!(v.rotations > 0, "seed {seed} {scenario:?}: nothing rotated");
            }
        }
    }
}
