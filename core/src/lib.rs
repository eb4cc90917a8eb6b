//! Baton's pure core: validation, the cluster and mesh planners (`plan`) and the deterministic
//! simulator that drives them under faults (`sim`).
//!
//! Nothing here reads a clock, draws randomness, touches the network or a file: `now` and the
//! simulator's seed are inputs, so every decision can be replayed. The crate's dependencies
//! (the API types, serde, thiserror, jiff for calendar arithmetic) keep it so by construction.

pub use baton_api as api;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod plan;
pub mod sim;
