//! Integration tests that run the `baton` binary as a process, with real agents where the
//! command starts them: `baton run` end to end, `baton demo` and the shipped examples.

#[path = "../support/mod.rs"]
mod support;

mod active_standby;
mod demo;
mod e2e_local;
mod examples;
mod member_addition;
mod multi_master;
mod recertification;
mod rotation;
