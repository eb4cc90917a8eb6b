//! Baton: declarative, failover-ordered upgrades of HA clusters and meshes.
//!
//! Layers (see docs/architecture.md): `api` (CRD types), `plan` (pure planner), and the
//! effectful layers built on them; `app` is the `baton` binary's commands, above them all.

pub mod api;
pub mod app;
pub mod cli;
pub mod demo;
pub mod host;
pub mod k8s;
pub mod kubectl;
pub mod local;
pub mod plan;
pub mod reconcile;
pub mod sim;
