//! Proptest settings shared by the fuzz tests of the agent and the operator (each includes this
//! file with `#[path]`): `BATON_FUZZ_CASES` cases per property, bounded shrinking and no
//! failure files.

use proptest::test_runner::Config;

/// Cases per property: `BATON_FUZZ_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cases(default)` cases per property.
pub fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        // Shrinking a large input takes long and tells little more than the first failure.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    }
}
