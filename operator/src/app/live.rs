//! The commands on a Kubernetes cluster: what `kubectl baton` offers, or `baton` with
//! Kubernetes flags.

use std::process::ExitCode;

use super::args::{Command, KubeArgs};
use super::{fail, print_or_fail, runtime, serialized, watch_frames};
use crate::cli::{self, Intent, Output};
use crate::kubectl::{self, LogOptions, StatusOptions};

/// The commands that act on a Kubernetes cluster (the kubectl plugin).
pub(super) fn run(kube: &KubeArgs, command: Command) -> ExitCode {
    let target = kube.target();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let connected = rt.block_on(kubectl::connect(&target));
    let (client, scope) = match connected {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let intent = |i: Intent| {
        print_or_fail(
            rt.block_on(kubectl::intent(&client, &scope, i))
                .map(|m| m + "\n"),
        )
    };
    match command {
        Command::Status {
            output: o,
            watch,
            interval,
            ..
        } => {
            let opts = StatusOptions {
                output: Output::from(o),
            };
            if watch {
                drop(rt);
                let read = move || {
                    let (client, scope) = (client.clone(), scope.clone());
                    async move { kubectl::status(&client, &scope, opts).await }
                };
                watch_frames(read, interval, "kubectl baton status")
            } else {
                print_or_fail(rt.block_on(kubectl::status(&client, &scope, opts)))
            }
        }
        Command::Log {
            names, output: o, ..
        } => print_or_fail(rt.block_on(kubectl::log(
            &client,
            &scope,
            &LogOptions {
                names,
                output: Output::from(o),
            },
        ))),
        Command::Plan(args) => {
            if !args.files.is_empty() || args.state.is_some() {
                return fail(anyhow::anyhow!(
                    "on Kubernetes `plan` reads the live objects; -f and --state are for local \
                     manifests (drop the Kubernetes flags to use them)"
                ));
            }
            let o = args.output;
            let opts = cli::plan::PlanOptions::from(args);
            let text = rt
                .block_on(kubectl::plan(&client, &scope, &opts))
                .and_then(|plans| match Output::from(o) {
                    Output::Table => Ok(plans
                        .iter()
                        .map(|(ns, s)| {
                            let text = cli::plan::render_for(s, kubectl::commands::COMMAND);
                            if plans.len() > 1 || scope == kubectl::Scope::All {
                                format!("namespace {ns}\n{text}")
                            } else {
                                text
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\n")),
                    other => serialized(
                        &plans
                            .iter()
                            .map(|(ns, s)| serde_json::json!({ "namespace": ns, "schedule": s }))
                            .collect::<Vec<_>>(),
                        other,
                    ),
                });
            print_or_fail(text)
        }
        Command::Approve { step, .. } => intent(Intent::Approve(step)),
        Command::Pause { names, .. } => intent(Intent::Pause(names)),
        Command::Resume { names, .. } => intent(Intent::Resume(names)),
        Command::Retry { names, .. } => intent(Intent::Retry(names)),
        Command::Force { names, .. } => intent(Intent::Force(names)),
        Command::Run(_) | Command::Demo(_) | Command::Crds { .. } | Command::Operator(_) => {
            fail(anyhow::anyhow!(
                "this command does not take Kubernetes flags: on a cluster the operator runs the \
                 loop (`baton operator`, see docs/operator.md); `kubectl baton` offers status, \
                 plan, log, approve, pause, resume, retry and force"
            ))
        }
    }
}
