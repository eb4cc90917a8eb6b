//! baton-agent: the process every member runs so that the Baton operator never logs into a
//! host. The operator drives members only through this crate's HTTP API (see
//! `docs/agent-api.md`), using [`client::AgentClient`] and the types in [`api`].

pub mod api;
pub mod cli;
pub mod client;
pub mod data;
pub mod demo;
pub mod exec;
pub mod http_client;
pub mod http_util;
pub mod ops;
pub mod ops_engine;
pub mod persist;
pub mod pki;
pub mod server;
pub mod tls;
