//! The local runner: the reconcile loop hosted on one machine, without Kubernetes. Manifests
//! come from files, statuses live in a state file, intents in a sibling file.

pub mod manifests;
pub mod runner;
pub mod state;
mod yaml_depth;

pub use manifests::{Level, ManifestError, ManifestErrors, Manifests, load};
pub use runner::{PassReport, Runner, RunnerError, RunnerStats, Settled};
pub use state::{Intents, RunnerLock, State, StateError};
