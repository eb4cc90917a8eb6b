//! The `baton` command line: parses, then hands off to `baton::app`.

use std::process::ExitCode;

use baton::app;
use baton_agent::cli::{Entry, main_entry};

/// The member agent that `baton demo` starts, so that the demo needs nothing but this binary.
const AGENT: Entry = Entry {
    name: "baton __agent",
    runtime: app::runtime,
    ansi_on_terminal: true,
    log_error: false,
};

fn main() -> ExitCode {
    // `baton __agent ARGS` runs the agent with the agent's own command line.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__agent") {
        return main_entry(&AGENT, std::iter::once("baton-agent".into()).chain(args));
    }
    let plugin = app::is_kubectl_plugin();
    app::run(app::parse(plugin), plugin)
}
