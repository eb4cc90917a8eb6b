//! Property tests: random topologies (1–5 tiers, 1–50 clusters, 1–4 members, random
//! components) under random fault schedules. At every simulated instant the safety invariants
//! hold; once faults stop, every rollout converges or stops with a stated reason.
//!
//! The seed fully determines a case: a failure prints it, and
//! `baton::sim::soak::random_rollout(seed, Bounds::FULL, scenario)` replays it.

use baton::sim::soak::{Scenario, random_rollout};
use baton::sim::topology::Bounds;
use proptest::prelude::*;

fn check(seed: u64, scenario: Scenario) -> Result<baton::sim::soak::Verdict, TestCaseError> {
    let v = random_rollout(seed, Bounds::FULL, scenario);
    prop_assert!(
        v.violations.is_empty(),
        "seed {seed} {scenario:?}: safety violations {:#?}",
        v.violations
    );
    prop_assert!(
        v.liveness.is_empty(),
        "seed {seed} {scenario:?}: liveness {:#?}",
        v.liveness
    );
    if scenario == Scenario::CleanUpgrade {
        // Without faults, only a forbidden outage may stop a cluster (which may then hold its
        // whole mesh back, so "nothing Ready" is possible).
        prop_assert!(
            v.stalled_reasons.iter().all(|r| r == "OutageNotAllowed"),
            "seed {seed}: stalled for {:?}",
            v.stalled_reasons
        );
        prop_assert!(
            v.ready > 0 || !v.stalled_reasons.is_empty(),
            "seed {seed}: nothing converged and nothing stalled"
        );
    }
    if scenario == Scenario::CleanRotation {
        // Without faults, only a lone member that may not restart in place stops a rotation.
        prop_assert!(
            v.stalled_reasons.iter().all(|r| r == "RestartNeedsOutage"),
            "seed {seed}: stalled for {:?}",
            v.stalled_reasons
        );
    }
    if scenario.rotates() {
        prop_assert!(v.rotations > 0, "seed {seed}: nothing rotated");
    }
    Ok(v)
}

/// One property test per scenario, named first: `check` holds for any seed. `cases` seeds a
/// test.
macro_rules! scenario_properties {
    (cases: $cases:literal; $($name:ident: $scenario:ident),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: $cases, failure_persistence: None, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(seed in any::<u64>()) {
                    check(seed, Scenario::$scenario)?;
                }
            )*
        }
    };
}

scenario_properties! {
    cases: 12;
    clean_upgrades_converge: CleanUpgrade,
    faulty_upgrades_stay_safe_and_settle: FaultyUpgrade,
    faulty_backouts_stay_safe_and_settle: FaultyBackout,
    reversals_mid_rollout_stay_safe_and_settle: Reversal,
}

/// A mesh whose first tier is a single-member cluster without outage permission: nothing
/// converges, and the reason is the forbidden outage.
#[test]
fn regression_clean_mesh_blocked_by_a_forbidden_outage() {
    check(1116268025436333477, Scenario::CleanUpgrade).expect("blocked only by OutageNotAllowed");
}

/// Seeds the soak run found: a backout decided while a switchover toward the new version was
/// half done must not promote the member that no longer runs the target, nor create two
/// actives by switching back while the promote is already under way.
#[test]
fn regression_reversal_during_switchover() {
    for seed in [
        2433, 2487, 2558, 2715, 2743, 1002211, 1002254, 1002520, 1002561, 1002694,
    ] {
        let v = random_rollout(seed, Bounds::FULL, Scenario::Reversal);
        assert!(v.violations.is_empty(), "seed {seed}: {:#?}", v.violations);
        assert!(v.liveness.is_empty(), "seed {seed}: {:#?}", v.liveness);
    }
}

/// Seeds of the 100,000-rollout soak (chunk 1) where a switchover's promote was interrupted by
/// an agent restart after the old active had stepped down: nobody was active, and the planner
/// promoted the old active back, as designed, on the version it ran. The invariant checker took
/// that promote for a switchover to a version other than the target (it only knew automatic
/// rollbacks); switching back to the member that served before is allowed. The runs stay safe
/// and settle.
#[test]
fn regression_switch_back_after_an_interrupted_promote() {
    for (seed, scenario) in [
        (3274, Scenario::FaultyUpgrade),
        (3845, Scenario::FaultyUpgrade),
        (4579, Scenario::FaultyUpgrade),
        (5990, Scenario::FaultyBackout),
        (6577, Scenario::FaultyBackout),
        (7317, Scenario::FaultyBackout),
        (7539, Scenario::Reversal),
        (8286, Scenario::Reversal),
        (8552, Scenario::Reversal),
        (9641, Scenario::Reversal),
    ] {
        check(seed, scenario).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Seeds of the 100,000-rollout soak (chunk 6, commit ddbbf5b): a spare's forced standby was
/// still in flight when the switchover started; the spare restarted before it applied and came
/// back as a plain Spare on the old version beside the new active (for 40 s, until the planner
/// held it again). A hold in flight now holds the switchover too.
#[test]
fn regression_switchover_waits_for_the_holds_in_flight() {
    for (seed, scenario) in [
        (54275, Scenario::FaultyUpgrade),
        (57764, Scenario::Reversal),
    ] {
        check(seed, scenario).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The CA rotation scenarios (every cluster's CA rotated: alone, under faults, with a
/// rollout, with a site cut off, with random options, with a forced phase), on fixed seeds:
/// the invariants hold at every instant and every rotation ends done or stopped with a reason.
/// The search over random seeds is the soak's (`SOAK_SET=rotation`, `docs/benchmarks.md`:
/// 24,000 rollouts, nothing found in its last run), which keeps CI deterministic; what the
/// soak found is pinned below as regression seeds.
mod rotation {
    use super::*;

    const SEEDS: [u64; 6] = [1, 2, 3, 4, 5, 6];

    macro_rules! fixed_seeds {
        ($($name:ident: $scenario:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    for seed in SEEDS {
                        check(seed, Scenario::$scenario).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            )*
        };
    }

    /// Seeds of the rotation soak (mesh-level certificates): clusters stalled part-way in the
    /// rollout hold the mesh (Degraded, with a reason) and the CA rotation waits for them; a
    /// cluster admitted for the rollout at rest waits for its rotation grant and never moves.
    /// The simulator took that admitted cluster for one still to settle (72 simulated hours,
    /// "did not settle"); it is held, as the clusters behind a blocked mesh are.
    #[test]
    fn regression_a_cluster_admitted_at_rest_behind_a_waiting_rotation_is_held() {
        for seed in [1112, 1619, 2123, 2390] {
            check(seed, Scenario::RotationDuringRollout).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Rotation soak seed 2705 and CI's random seed 3688262728247156764: a member stalled the
    /// rotation in the pass after the mesh's; the simulator called the run settled (or not
    /// settled) before the mesh saw it (Progressing, not yet Degraded). A rotation done on a
    /// cluster that then stopped in the rollout counted as done and stalled (proptest seed
    /// 9170100868474894145): done only.
    #[test]
    fn regression_the_mesh_sees_the_last_stall_and_a_cluster_is_done_or_stalled() {
        for seed in [2705, 3688262728247156764] {
            check(seed, Scenario::RotationOptions).unwrap_or_else(|e| panic!("{e}"));
        }
        let v = random_rollout(
            9170100868474894145,
            Bounds::FULL,
            Scenario::RotationDuringRollout,
        );
        assert!(
            v.rotations_done + v.rotations_stalled <= v.rotations,
            "{v:#?}"
        );
        assert!(v.ok(), "{v:#?}");
    }

    /// Rotation soak seed 3536 (`FaultyRotation`): a rotation's hand-over failed (the promote
    /// interrupted by an agent restart) and its switch back ran as an upgrade step, under an
    /// "upgrade" log entry, beside another cluster's rotation restart. It is a rotation step.
    #[test]
    fn regression_a_rotation_switchover_is_switched_back_as_a_rotation_step() {
        check(3536, Scenario::FaultyRotation).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Rotation soak seeds 13061 and 13229 (`RotationDuringRollout`): a layered cluster
    /// part-way (standbys on os 2.0.0, the active on 1.0.0) between two steps looked at rest
    /// to the mesh (same effective versions), the rotation went first, and its hand-over
    /// demoted the old active to a plain standby beside an active on other software.
    #[test]
    fn regression_a_layered_cluster_part_way_finishes_its_upgrade_before_rotating() {
        for seed in [13061, 13229, 3106] {
            check(seed, Scenario::RotationDuringRollout).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fixed_seeds! {
        clean_rotations_complete: CleanRotation,
        faulty_rotations_stay_safe_and_settle: FaultyRotation,
        rotations_with_a_rollout_stay_safe_and_settle: RotationDuringRollout,
        rotations_with_a_site_cut_off_stay_safe_and_settle: RotationSiteCut,
        rotations_with_random_options_stay_safe_and_settle: RotationOptions,
        rotations_with_a_forced_phase_break_only_what_they_announce: RotationForced,
    }
}
