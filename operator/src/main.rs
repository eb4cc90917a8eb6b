//! The `baton` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use baton::api::Duration;
use baton::cli::{self, Intent, Output, RunEnd, RunOptions, TlsOptions, Until};
use baton::reconcile::Timing;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Declarative, failover-ordered upgrades of HA clusters and meshes"
)]
struct Cli {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where `status`, `plan`, `log` and the intent commands act: a local state file (default),
/// or a Kubernetes cluster (with any of these flags, or when run as `kubectl baton`).
#[derive(Args, Clone, Default)]
struct KubeArgs {
    /// Act on the cluster of the current kubeconfig context instead of a state file.
    #[arg(long, global = true, help_heading = "Kubernetes")]
    kube: bool,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, help_heading = "Kubernetes")]
    context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true, help_heading = "Kubernetes")]
    namespace: Option<String>,
    /// Every namespace (read-only commands).
    #[arg(
        short = 'A',
        long,
        global = true,
        conflicts_with = "namespace",
        help_heading = "Kubernetes"
    )]
    all_namespaces: bool,
}

impl KubeArgs {
    fn wanted(&self) -> bool {
        self.kube
            || self.kubeconfig.is_some()
            || self.context.is_some()
            || self.namespace.is_some()
            || self.all_namespaces
    }
    fn target(&self) -> baton::kubectl::KubeTarget {
        baton::kubectl::KubeTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            all_namespaces: self.all_namespaces,
        }
    }
}

#[derive(Args, Clone)]
struct StateArg {
    /// State file written by `baton run` (statuses); intents go to FILE.intents.
    #[arg(long, default_value = "baton-state.json", env = "BATON_STATE")]
    state: PathBuf,
}

#[derive(Args, Clone)]
struct TlsArgs {
    /// Directory with ca.crt, client.crt and client.key (as `baton-agent gen-certs` writes).
    #[arg(long, env = "BATON_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// CA certificate that signed the agents' server certificates.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate presented to agents.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Talk plain HTTP to agents started with --insecure-http.
    #[arg(long)]
    insecure_http: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScenarioArg {
    /// Upgrade every cluster, management tier first.
    Upgrade,
    /// One worker cluster fails its traffic check after the switchover and is rolled back
    /// automatically; the others complete.
    Rollback,
    /// Upgrade, then set the old version back: workers first, management last.
    Backout,
}

#[derive(Subcommand)]
enum Command {
    /// Start a mesh of real agents on 127.0.0.1 (no Kubernetes needed), run a write load and
    /// upgrade it with the same reconcile loop as `baton run`, showing live progress. Exits 0
    /// when every invariant held (no acknowledged write lost, one active per cluster, tier
    /// order, expected outcome), 1 otherwise.
    Demo {
        #[arg(long, value_enum, default_value = "upgrade")]
        scenario: ScenarioArg,
        /// Clusters in all: one management cluster, the rest workers.
        #[arg(long, default_value_t = 4)]
        clusters: usize,
        /// Members per cluster.
        #[arg(long, default_value_t = 2)]
        members: usize,
        /// Duration of one member upgrade on the demo agents, in seconds.
        #[arg(long, default_value_t = 4.0)]
        upgrade_seconds: f64,
        /// Worker clusters upgraded at once.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Version the agents start with.
        #[arg(long, default_value = "1.0.0")]
        from: String,
        /// Version the mesh is upgraded to.
        #[arg(long, default_value = "2.0.0")]
        to: String,
        /// Post-switchover traffic check timeout, in seconds (the rollback scenario waits it out).
        #[arg(long, default_value_t = 5)]
        traffic_timeout: u64,
        /// Keep the directory (manifests, state file, certificates, agent logs) and print its path.
        #[arg(long)]
        keep: bool,
        /// Plain log lines instead of progress bars (the default when stdout is not a terminal).
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Give up (exit 1) when the demo has not finished after this long.
        #[arg(long, default_value = "10m")]
        timeout: Duration,
    },
    /// Reconcile Mesh/Cluster manifests against the agents they name, persisting status in a
    /// state file. Re-running after a crash resumes.
    Run {
        /// Manifest files or directories (repeatable).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        tls: TlsArgs,
        /// One reconcile pass, then exit.
        #[arg(long, conflicts_with = "until_settled")]
        once: bool,
        /// Exit 0 once everything is Ready, 1 when blocked on a human (stalled, rolled back,
        /// awaiting approval, paused).
        #[arg(long)]
        until_settled: bool,
        /// Give up after this long (e.g. 10m); exit 3.
        #[arg(long)]
        timeout: Option<Duration>,
        /// Poll interval while an operation runs.
        #[arg(long, default_value = "250ms")]
        busy_poll: Duration,
        /// Resync interval once converged (one status request per member).
        #[arg(long, default_value = "60s")]
        resync: Duration,
    },
    /// Print the ordered schedule from the current (or assumed) state to the desired one,
    /// without acting.
    Plan {
        /// Manifest files or directories (repeatable; local mode; on Kubernetes the live
        /// objects are planned).
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// Start from the members recorded in this state file.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Assume members run this version where no state says otherwise; `COMPONENT=VERSION`
        /// items assume component versions (repeatable, comma-separated).
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
        /// Estimated duration of one member upgrade (enables time estimates).
        #[arg(long)]
        upgrade_time: Option<Duration>,
        /// Estimated duration of short steps (preflight, switchover phases, verify).
        #[arg(long)]
        step_time: Option<Duration>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputArg,
    },
    /// Show statuses: from the state file (clusters, members, upgrade log), or on Kubernetes
    /// as a tree (mesh → tiers → clusters → members).
    Status {
        #[command(flatten)]
        state: StateArg,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputArg,
        /// Leave out the upgrade log (local mode; on Kubernetes use `log`).
        #[arg(long)]
        no_log: bool,
        /// Keep watching: print again whenever something changed (Ctrl-C stops).
        #[arg(short = 'w', long)]
        watch: bool,
        /// How often --watch reads.
        #[arg(long, default_value = "2s", requires = "watch")]
        interval: Duration,
    },
    /// Show the upgrade log of clusters or meshes (all when none named), as a tree.
    Log {
        /// cluster/NAME, mesh/NAME or NAME.
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputArg,
    },
    /// Approve a step that waits for approval (e.g. switchover/web/m2@2.0.0).
    Approve {
        step: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Pause clusters or meshes (all when none named): no new step starts.
    Pause {
        /// cluster/NAME, mesh/NAME or NAME.
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Resume paused clusters or meshes (all when none named).
    Resume {
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Retry failed steps of clusters (all when none named): clears failures, Zombie members
    /// and an automatic rollback.
    Retry {
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Start a mesh rollout whose preconditions fail.
    Force {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Run the Kubernetes operator: controllers for Cluster and Mesh (see docs/operator.md).
    Operator(baton::k8s::OperatorArgs),
    /// Write the CustomResourceDefinitions generated from the Rust types.
    Crds {
        /// Directory to write into (one file per CRD).
        #[arg(long, default_value = "crds")]
        out: PathBuf,
        /// Also write the Helm chart's CRD templates into CHART/templates/crds/.
        #[arg(long, value_name = "CHART")]
        chart: Option<PathBuf>,
        /// Only check that the files are up to date; exit 1 when they are not.
        #[arg(long)]
        check: bool,
    },
}

impl From<TlsArgs> for TlsOptions {
    fn from(a: TlsArgs) -> Self {
        TlsOptions {
            tls_dir: a.tls_dir,
            ca: a.ca,
            cert: a.cert,
            key: a.key,
            insecure: a.insecure_http,
        }
    }
}

fn output(o: OutputArg) -> Output {
    match o {
        OutputArg::Table => Output::Table,
        OutputArg::Json => Output::Json,
        OutputArg::Yaml => Output::Yaml,
    }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn plan_options(
    files: Vec<PathBuf>,
    state: Option<PathBuf>,
    from: Vec<String>,
    upgrade_time: Option<Duration>,
    step_time: Option<Duration>,
) -> cli::plan::PlanOptions {
    let (comps, versions): (Vec<String>, Vec<String>) =
        from.into_iter().partition(|f| f.contains('='));
    cli::plan::PlanOptions {
        files,
        state,
        from: versions.into_iter().last(),
        from_components: comps
            .iter()
            .filter_map(|c| c.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        upgrade_time,
        step_time,
        horizon: Duration::from_secs(90 * 24 * 3600),
    }
}

/// `status --watch`, local or live.
fn watch_frames<F, Fut>(read: F, interval: Duration, title: &str) -> ExitCode
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    use baton::kubectl::watch::{Display, Limits, watch};
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

/// Whether this binary runs as `kubectl-baton` (kubectl runs plugins by that name).
fn is_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .is_some_and(|s| s == "kubectl-baton")
}

fn parse(plugin: bool) -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd.name("kubectl baton").bin_name("kubectl baton").about(
            "Baton's kubectl plugin: status, plan, log, approve, pause, resume, retry and \
                 force on live Mesh and Cluster objects",
        );
        // What runs the loop has no place in the plugin's help.
        for hidden in ["demo", "run", "operator", "crds"] {
            cmd = cmd.mut_subcommand(hidden, |c| c.hide(true));
        }
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The commands that act on a Kubernetes cluster (the kubectl plugin).
fn on_kubernetes(kube: &KubeArgs, command: Command) -> ExitCode {
    use baton::kubectl::{self, LogOptions, StatusOptions};
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
            let opts = StatusOptions { output: output(o) };
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
                output: output(o),
            },
        ))),
        Command::Plan {
            files,
            state,
            from,
            upgrade_time,
            step_time,
            output: o,
        } => {
            if !files.is_empty() || state.is_some() {
                return fail(anyhow::anyhow!(
                    "on Kubernetes `plan` reads the live objects; -f and --state are for local \
                     manifests (drop the Kubernetes flags to use them)"
                ));
            }
            let opts = plan_options(files, state, from, upgrade_time, step_time);
            let text = rt
                .block_on(kubectl::plan(&client, &scope, &opts))
                .and_then(|plans| match output(o) {
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
        Command::Run { .. }
        | Command::Demo { .. }
        | Command::Crds { .. }
        | Command::Operator(_) => fail(anyhow::anyhow!(
            "this command does not take Kubernetes flags: on a cluster the operator runs the \
                 loop (`baton operator`, see docs/operator.md); `kubectl baton` offers status, \
                 plan, log, approve, pause, resume, retry and force"
        )),
    }
}

fn main() -> ExitCode {
    // `baton __agent ARGS`: run a member agent (what `baton demo` starts), so that the demo
    // needs nothing but this binary.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__agent") {
        return agent(args.collect());
    }
    let plugin = is_kubectl_plugin();
    let cli = parse(plugin);
    // The operator sets up its own logging (--log-format, --log-level).
    let cli = match cli.command {
        Command::Operator(args) => {
            return baton::k8s::main(args, cli.kube.wanted().then(|| cli.kube.target()));
        }
        command => Cli {
            command,
            kube: cli.kube,
        },
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if plugin || cli.kube.wanted() {
        return on_kubernetes(&cli.kube, cli.command);
    }
    match cli.command {
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
            let opts = RunOptions {
                files,
                state: state.state,
                tls: tls.into(),
                until: if once {
                    Until::Once
                } else if until_settled {
                    Until::Settled
                } else {
                    Until::Forever
                },
                timeout: timeout.map(std_duration),
                timing: Timing {
                    busy: std_duration(busy_poll),
                    resync: std_duration(resync),
                },
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(e.into()),
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
        Command::Plan {
            files,
            state,
            from,
            upgrade_time,
            step_time,
            output: o,
        } => {
            if files.is_empty() {
                return fail(anyhow::anyhow!(
                    "name the manifests with -f FILE|DIR (or plan the live objects of a \
                     Kubernetes cluster with --context/--kube, or as `kubectl baton plan`)"
                ));
            }
            let opts = plan_options(files, state, from, upgrade_time, step_time);
            let text = cli::plan::schedule(&opts).and_then(|s| match output(o) {
                Output::Table => Ok(cli::plan::render(&s)),
                other => serialized(&s, other),
            });
            print_or_fail(text)
        }
        Command::Status {
            state,
            output: o,
            no_log,
            watch,
            interval,
        } => {
            if watch {
                let path = state.state.clone();
                let read = move || {
                    let path = path.clone();
                    async move { cli::status(&path, output(o), !no_log) }
                };
                watch_frames(read, interval, "baton status")
            } else {
                print_or_fail(cli::status(&state.state, output(o), !no_log))
            }
        }
        Command::Log {
            names,
            state,
            output: o,
        } => print_or_fail(cli::log(&state.state, &names, output(o))),
        Command::Approve { step, state } => intent(&state, Intent::Approve(step)),
        Command::Pause { names, state } => intent(&state, Intent::Pause(names)),
        Command::Resume { names, state } => intent(&state, Intent::Resume(names)),
        Command::Retry { names, state } => intent(&state, Intent::Retry(names)),
        Command::Force { names, state } => intent(&state, Intent::Force(names)),
        Command::Operator(args) => baton::k8s::main(args, None),
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
            let opts = baton::demo::DemoOptions {
                scenario: match scenario {
                    ScenarioArg::Upgrade => baton::demo::Scenario::Upgrade,
                    ScenarioArg::Rollback => baton::demo::Scenario::Rollback,
                    ScenarioArg::Backout => baton::demo::Scenario::Backout,
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
            };
            demo(opts)
        }
        Command::Crds { out, chart, check } => {
            let written = baton::api::write_crds(&out, check).and_then(|mut stale| {
                if let Some(chart) = &chart {
                    stale.extend(baton::api::write_chart_crds(chart, check)?);
                }
                Ok(stale)
            });
            match written {
                Ok(stale) if check && !stale.is_empty() => {
                    eprintln!(
                        "stale CRD files (run `{}`): {}",
                        baton::api::REGENERATE,
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
    }
}

fn demo(opts: baton::demo::DemoOptions) -> ExitCode {
    if let Err(e) = opts.validate() {
        return fail(e);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(e.into()),
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
        let run = baton::demo::run(opts, interrupt.clone());
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
        Ok(Some(baton::demo::DemoEnd::Passed)) => ExitCode::SUCCESS,
        Ok(Some(baton::demo::DemoEnd::Failed(_))) => ExitCode::from(1),
        Ok(None) => {
            eprintln!("\ninterrupted: the runner and every agent were stopped");
            ExitCode::from(130)
        }
        Err(e) => fail(e),
    }
}

/// The member agent, as `baton-agent` would run it.
fn agent(args: Vec<std::ffi::OsString>) -> ExitCode {
    use baton_agent::cli::{Cli as AgentCli, Command as AgentCommand};
    let cli = AgentCli::parse_from(std::iter::once("baton-agent".into()).chain(args));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Some(AgentCommand::GenCerts(a)) => baton_agent::cli::gen_certs(&a).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
        None => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(baton_agent::cli::run(cli.run)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton __agent: {e:#}");
            ExitCode::FAILURE
        }
    }
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
