//! The reconcile loop shared by every host: observe members → plan (pure) → persist the
//! intended step → act through the agents → decide when to look again.
//!
//! `engine` holds the per-object steps; `members` the agent seam. The local runner
//! (`crate::local`) and the Kubernetes controllers (`crate::k8s`) are hosts of the same steps.

pub mod engine;
pub mod members;

pub use engine::*;
pub use members::*;
