//! The commands on a local state file, and those that run something on this machine: the
//! reconcile loop (`run`), the demo and the CRD generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use super::args::{Command, OutputArg, ScenarioArg, StateArg, TlsArgs};
use super::{fail, plan_options, print_or_fail, runtime, serialized, std_duration, watch_frames};
use crate::api::Duration;
use crate::cli::{self, Intent, Output, RunEnd, RunOptions, Until};
use crate::demo::{DemoEnd, DemoOptions, Scenario};
use crate::reconcile::Timing;

pub(super) fn run(command: Command) -> ExitCode {
    match command {
        Command::Run {
            files,
            state,
            tls,
            once,
            until_settled,
            timeout,
            busy_poll,
            resync,
        } => {
            let until = if once {
                Until::Once
            } else if until_settled {
                Until::Settled
            } else {
                Until::Forever
            };
            reconcile(files, state, tls, until, timeout, busy_poll, resync)
        }
        Command::Plan {
            files,
            state,
            from,
            upgrade_time,
            step_time,
            output,
        } => {
            if files.is_empty() {
                return fail(anyhow::anyhow!(
                    "name the manifests with -f FILE|DIR (or plan the live objects of a \
                     Kubernetes cluster with --context/--kube, or as `kubectl baton plan`)"
                ));
            }
            let opts = plan_options(files, state, from, upgrade_time, step_time);
            let text = cli::plan::schedule(&opts).and_then(|s| match Output::from(output) {
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
        Command::Operator(args) => crate::k8s::main(args, None),
        Command::Demo {
            scenario,
            clusters,
            members,
            upgrade_seconds,
            parallel,
            from,
            to,
            traffic_timeout,
            keep,
            quiet,
            timeout,
        } => {
            use std::io::IsTerminal;
            demo(DemoOptions {
                scenario: match scenario {
                    ScenarioArg::Upgrade => Scenario::Upgrade,
                    ScenarioArg::Rollback => Scenario::Rollback,
                    ScenarioArg::Backout => Scenario::Backout,
                },
                clusters,
                members,
                upgrade_seconds,
                parallel,
                from,
                to,
                traffic_timeout,
                keep,
                bars: !quiet && std::io::stdout().is_terminal(),
                timeout: std_duration(timeout),
            })
        }
        Command::Crds { out, chart, check } => crds(&out, chart.as_deref(), check),
    }
}

/// `baton run`.
fn reconcile(
    files: Vec<PathBuf>,
    state: StateArg,
    tls: TlsArgs,
    until: Until,
    timeout: Option<Duration>,
    busy_poll: Duration,
    resync: Duration,
) -> ExitCode {
    let opts = RunOptions {
        files,
        state: state.state,
        tls: tls.into(),
        until,
        timeout: timeout.map(std_duration),
        timing: Timing {
            busy: std_duration(busy_poll),
            resync: std_duration(resync),
        },
    };
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
    let written = crate::api::write_crds(out, check).and_then(|mut stale| {
        if let Some(chart) = chart {
            stale.extend(crate::api::write_chart_crds(chart, check)?);
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
