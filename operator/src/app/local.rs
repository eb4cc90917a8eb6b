//! The commands on a local state file, and those that run something on this machine: the
//! reconcile loop (`run`), the demo and the CRD generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use super::args::{Command, OutputArg, StateArg};
use super::{fail, print_or_fail, runtime, serialized, watch_frames};
use crate::api::Duration;
use crate::cli::{self, Intent, Output, RunEnd, RunOptions};
use crate::demo::{DemoEnd, DemoOptions};

pub(super) fn run(command: Command) -> ExitCode {
    match command {
        Command::Run(args) => reconcile(args.into()),
        Command::Plan(args) => {
            if args.files.is_empty() {
                return fail(anyhow::anyhow!(
                    "name the manifests with -f FILE|DIR (or plan the live objects of a \
                     Kubernetes cluster with --context/--kube, or as `kubectl baton plan`)"
                ));
            }
            let o = args.output;
            let text = cli::plan::schedule(&args.into()).and_then(|s| match Output::from(o) {
                Output::Table => Ok(cli::plan::render(&s)),
                other => serialized(&s, other),
            });
            print_or_fail(text)
        }
        Command::Status {
            state,
            output,
            no_log,
            watch,
            interval,
        } => status(state.state, output, no_log, watch.then_some(interval)),
        Command::Log {
            names,
            state,
            output,
        } => print_or_fail(cli::log(&state.state, &names, output.into())),
        Command::Approve { step, state } => intent(&state, Intent::Approve(step)),
        Command::Pause { names, state } => intent(&state, Intent::Pause(names)),
        Command::Resume { names, state } => intent(&state, Intent::Resume(names)),
        Command::Retry { names, state } => intent(&state, Intent::Retry(names)),
        Command::Force { names, state } => intent(&state, Intent::Force(names)),
        // `app::run` starts the operator before logging is set up; this arm is never taken.
        Command::Operator(args) => crate::k8s::main(args, None),
        Command::Demo(args) => demo(args.into()),
        Command::Crds { out, chart, check } => crds(&out, chart.as_deref(), check),
    }
}

/// `baton run`.
fn reconcile(opts: RunOptions) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let mut stdout = std::io::stdout();
    match rt.block_on(cli::run(opts, &mut stdout)) {
        Ok(RunEnd::Converged) => {
            println!("converged: every object is Ready");
            ExitCode::SUCCESS
        }
        Ok(RunEnd::OnePass) => ExitCode::SUCCESS,
        Ok(RunEnd::Blocked(b)) => {
            for (o, why) in b {
                println!("blocked: {o}: {why}");
            }
            ExitCode::from(1)
        }
        Ok(RunEnd::TimedOut) => {
            eprintln!("timed out before the rollout settled");
            ExitCode::from(3)
        }
        Ok(RunEnd::Interrupted) => {
            eprintln!("interrupted; the state file holds every step started");
            ExitCode::from(130)
        }
        Err(e) => fail(e),
    }
}

/// `baton status`, once or every `watch` interval.
fn status(path: PathBuf, o: OutputArg, no_log: bool, watch: Option<Duration>) -> ExitCode {
    let Some(interval) = watch else {
        return print_or_fail(cli::status(&path, o.into(), !no_log));
    };
    let read = move || {
        let path = path.clone();
        async move { cli::status(&path, o.into(), !no_log) }
    };
    watch_frames(read, interval, "baton status")
}

fn intent(state: &StateArg, i: Intent) -> ExitCode {
    match cli::intent(&state.state, i) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn demo(opts: DemoOptions) -> ExitCode {
    if let Err(e) = opts.validate() {
        return fail(e);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let end = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => return Err(anyhow::anyhow!("installing the SIGTERM handler: {e}")),
        };
        // On Ctrl-C or SIGTERM the reconcile loop stops after the pass in progress; dropping
        // the demo then stops the load and every agent, and removes the directory (unless
        // --keep).
        let interrupt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = crate::demo::run(opts, interrupt.clone());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => return r.map(Some),
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::time::timeout(StdDuration::from_secs(3), &mut run).await;
        Ok(None)
    });
    match end {
        Ok(Some(DemoEnd::Passed)) => ExitCode::SUCCESS,
        Ok(Some(DemoEnd::Failed(_))) => ExitCode::from(1),
        Ok(None) => {
            eprintln!("\ninterrupted: the runner and every agent were stopped");
            ExitCode::from(130)
        }
        Err(e) => fail(e),
    }
}

/// `baton crds`.
fn crds(out: &Path, chart: Option<&Path>, check: bool) -> ExitCode {
    let written = crate::crds::write_crds(out, check).and_then(|mut stale| {
        if let Some(chart) = chart {
            stale.extend(crate::crds::write_chart_crds(chart, check)?);
        }
        Ok(stale)
    });
    match written {
        Ok(stale) if check && !stale.is_empty() => {
            eprintln!(
                "stale CRD files (run `{}`): {}",
                crate::api::REGENERATE,
                stale.join(", ")
            );
            ExitCode::from(1)
        }
        Ok(stale) => {
            if !check {
                for s in &stale {
                    println!("wrote {s}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
