//! The reconcile loop shared by every host: observe members → plan (pure) → persist the
//! intended step → act through the agents → decide when to look again.
//!
//! `engine` holds the per-object steps; `members` the agent seam; `persist` the store seam and
//! [`Persisted`], the proof the act path requires; `errors` the label every typed error has.
//! The hosts (the local runner, the Kubernetes controllers) sit above this module and import
//! from it, never the other way round.

pub mod ca;
pub mod engine;
pub mod errors;
pub mod members;
pub mod persist;

pub use engine::*;
pub use errors::MetricLabel;
pub use members::*;
pub use persist::{Persisted, StatusStore, persist};
