//! Baton: declarative, failover-ordered upgrades of HA clusters and meshes.
//!
//! Layers (see docs/architecture.md): `api` (CRD types, crate `baton-api`), `plan` and `sim`
//! (the pure planner and simulator, crate `baton-core`), and the effectful layers built on them
//! here; `app` is the `baton` binary's commands, above them all.

pub use baton_api as api;
pub use baton_core::{plan, sim};

pub mod app;
pub mod cli;
pub mod crds;
pub mod demo;
pub mod host;
pub mod k8s;
pub mod kubectl;
pub mod local;
pub mod reconcile;

#[cfg(test)]
mod layers;
