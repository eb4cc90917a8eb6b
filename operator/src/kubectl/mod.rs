//! The kubectl plugin: the `baton` commands `status`, `plan`, `log`, `approve`, `pause`,
//! `resume`, `retry` and `force` acting on live objects through a kubeconfig context instead
//! of a local state file. Installed as `kubectl-baton`, it is `kubectl baton …`.
//!
//! Reads are plain lists of the two kinds (objects that do not parse are shown, never
//! hidden); writes are JSON merge patches of the `baton.dev/*` annotations the operator reads
//! (`crate::k8s::annotations`) — the plugin never writes a spec or a status, so it cannot race
//! the operator's server-side applies.
//!
//! * `connect` — kubeconfig, context and namespace to a client and a scope (it lives in
//!   `k8s::connect`, which the operator uses too: imports run from `kubectl` to `k8s` only);
//! * `live` — listing and resolving objects;
//! * `commands` — what each command does and prints;
//! * `watch` — `status --watch`.

pub mod commands;
pub mod live;
pub mod watch;

pub use crate::k8s::connect::{self, KubeTarget, Scope, connect};
pub use commands::{LogOptions, StatusOptions, intent, log, plan, status};
pub use live::{Live, fetch};
