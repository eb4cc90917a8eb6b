//! baton-agent: the process every member runs so that the Baton operator never logs into a
//! host. The operator drives members only through this crate's HTTP API (documented in
//! `docs/agent-api.md`).
//!
//! For the operator:
//! - [`api`]: the wire types (`MemberStatus`, `OperationRequest`, `OperationRecord`, `Faults`...).
//! - [`client::AgentClient`]: typed client of the control API (mTLS, timeouts, retries).
//! - [`data::DataClient`]: writes and reads on a demo member's data port.
//! - [`pki`]: certificates for local meshes and tests.
//!
//! Inside the agent:
//! - [`server`] routes the control API onto the [`ops_engine`], which records operations in
//!   the [`ops`] journal and runs them on a backend: [`demo`] (a replicated key-value store)
//!   or [`exec`] (user-configured commands).
//! - [`tls`], [`http_util`] and [`http_client`] are the rustls/hyper plumbing, with
//!   [`conn_limits`] bounding what unauthenticated clients can hold open; [`persist`]
//!   does crash-safe file writes; [`cli`] is the binary's command line.

/// `impl Debug` for the struct `$ty` that shows its field `$field` alone: the other fields
/// hold connections, TLS settings or configuration, not worth (or not safe) printing.
macro_rules! debug_shows_only {
    ($ty:ident, $field:ident) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field(stringify!($field), &self.$field)
                    .finish()
            }
        }
    };
}
pub(crate) use debug_shows_only;

pub mod api;
pub mod ca_material;
pub mod cli;
pub mod client;
pub mod conn_limits;
pub mod data;
pub mod demo;
pub mod exec;
pub mod handshakes;
pub mod http_client;
pub mod http_util;
pub mod ops;
pub mod ops_engine;
pub mod persist;
pub mod pki;
pub mod server;
pub mod tls;
