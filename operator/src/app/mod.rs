//! What the `baton` binary does once clap has parsed its command line: each command's body,
//! run on a state file ([`local`]) or on a Kubernetes cluster ([`live`]). It sits above every
//! other layer (the operator, the kubectl plugin, the demo), so that `main.rs` only parses and
//! `cli` stays shared by both hosts.

pub mod args;
mod live;
mod local;

use std::process::ExitCode;
use std::time::Duration as StdDuration;

pub use args::{Cli, Command, is_kubectl_plugin, parse};

use crate::api::Duration;
use crate::cli::Output;

/// Runs the parsed command; `plugin` when the binary runs as `kubectl baton`.
pub fn run(cli: Cli, plugin: bool) -> ExitCode {
    let Cli { kube, command } = cli;
    // The operator sets up its own logging (--log-format, --log-level).
    if let Command::Operator(args) = command {
        return crate::k8s::main(args, kube.wanted().then(|| kube.target()));
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if plugin || kube.wanted() {
        live::run(&kube, command)
    } else {
        local::run(command)
    }
}

/// The runtime of every async command, and of the member agent `baton __agent` runs.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(2)
}

fn std_duration(d: Duration) -> StdDuration {
    StdDuration::from_millis(d.millis())
}

fn serialized<T: serde::Serialize>(value: &T, o: Output) -> anyhow::Result<String> {
    Ok(match o {
        Output::Yaml => serde_yaml::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

fn print_or_fail(text: anyhow::Result<String>) -> ExitCode {
    match text {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `status --watch`, local or live.
fn watch_frames<F, Fut>(read: F, interval: Duration, title: &str) -> ExitCode
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    use crate::kubectl::watch::{Display, Limits, watch};
    use std::io::IsTerminal;
    let display = if std::io::stdout().is_terminal() {
        Display::Redraw
    } else {
        Display::Append
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let mut stdout = std::io::stdout();
    match rt.block_on(watch(
        read,
        std_duration(interval),
        title,
        display,
        Limits::default(),
        &mut stdout,
    )) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
