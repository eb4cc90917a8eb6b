//! The Kubernetes host of the shared reconcile engine (`crate::reconcile`): objects and
//! statuses live in the API server, watches wake the loop. Same engine as the local runner;
//! only the store and the wake-up source differ.
//!
//! * `stores` — the watch caches and the copies just written (never plan from a stale status);
//! * `cluster_controller`, `mesh_controller` — the reconcilers;
//! * `relations` — which objects to wake when another changes;
//! * `passes` — what the two reconcilers share around a pass;
//! * `slots` — fair reconcile slots (busy clusters first); `requests` — API request counts;
//! * `status_write` — server-side apply of statuses, guarded by resourceVersion;
//! * `invalid` — Stalled status for objects that do not deserialize;
//! * `annotations` — imperative intents (`baton.dev/approve|pause|retry|force`);
//! * `events` — Kubernetes Events; `metrics` — Prometheus; `http` — health and metrics
//!   endpoints; `leader` — Lease leader election; `agent_tls` — agent client credentials;
//!   `ca_watch` — watches of the CA Secrets `spec.certificates` names;
//! * `connect` — kubeconfig, context and namespace to a client (the operator and the kubectl
//!   plugin both connect through it);
//! * `operator` — the wiring; `cli` — the `baton operator` command.

pub mod agent_tls;
pub mod annotations;
pub mod ca_watch;
pub mod cli;
pub mod cluster_controller;
pub mod connect;
pub mod context;
pub mod events;
pub mod http;
pub mod invalid;
pub mod leader;
pub mod mesh_controller;
pub mod metrics;
pub mod operator;
pub mod passes;
pub mod relations;
pub mod requests;
pub mod slots;
pub mod status_write;
pub mod stores;

pub use cli::{OperatorArgs, main};
pub use context::{Context, Error, Triggers};
pub use operator::{AgentCredentials, OperatorConfig, run};
