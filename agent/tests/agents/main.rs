//! Integration tests of `baton-agent` processes on 127.0.0.1 over mutual TLS: the control API
//! and its errors, hardening and fuzzing of what it parses, operations, replication, restarts,
//! switchovers, membership (peer identities, retirement), KPIs and the exec backend. The
//! connection-flood test is its own binary (`flood.rs`): it measures latency, so it runs alone.

#[path = "../common/mod.rs"]
mod common;

mod advertise;
mod api_errors;
mod exec_backend;
mod fuzz_parsing;
mod hardening;
mod kpis;
mod operations;
mod peers;
mod prepare;
mod replication;
mod restart;
mod switchover;
