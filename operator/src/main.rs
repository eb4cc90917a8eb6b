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
    #[command(subcommand)]
    command: Command,
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

#[derive(Subcommand)]
enum Command {
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
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Start from the members recorded in this state file.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Assume members run this version where no state says otherwise.
        #[arg(long)]
        from: Option<String>,
        /// Estimated duration of one member upgrade (enables time estimates).
        #[arg(long)]
        upgrade_time: Option<Duration>,
        /// Estimated duration of short steps (preflight, switchover phases, verify).
        #[arg(long)]
        step_time: Option<Duration>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputArg,
    },
    /// Show statuses from the state file: clusters, members and the upgrade log.
    Status {
        #[command(flatten)]
        state: StateArg,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputArg,
        /// Leave out the upgrade log.
        #[arg(long)]
        no_log: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The operator sets up its own logging (--log-format, --log-level).
    let cli = match cli.command {
        Command::Operator(args) => return baton::k8s::main(args),
        command => Cli { command },
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
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
            let opts = cli::plan::PlanOptions {
                files,
                state,
                from,
                upgrade_time,
                step_time,
                horizon: Duration::from_secs(90 * 24 * 3600),
            };
            match cli::plan::schedule(&opts) {
                Ok(s) => {
                    let text = match output(o) {
                        Output::Table => cli::plan::render(&s),
                        Output::Json => match serde_json::to_string_pretty(&s) {
                            Ok(t) => t + "\n",
                            Err(e) => return fail(e.into()),
                        },
                        Output::Yaml => match serde_yaml::to_string(&s) {
                            Ok(t) => t,
                            Err(e) => return fail(e.into()),
                        },
                    };
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Status {
            state,
            output: o,
            no_log,
        } => match cli::status(&state.state, output(o), !no_log) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Approve { step, state } => intent(&state, Intent::Approve(step)),
        Command::Pause { names, state } => intent(&state, Intent::Pause(names)),
        Command::Resume { names, state } => intent(&state, Intent::Resume(names)),
        Command::Retry { names, state } => intent(&state, Intent::Retry(names)),
        Command::Force { names, state } => intent(&state, Intent::Force(names)),
        Command::Operator(args) => baton::k8s::main(args),
        Command::Crds { out, check } => match baton::api::write_crds(&out, check) {
            Ok(stale) if check && !stale.is_empty() => {
                eprintln!(
                    "stale CRD files (run `baton crds --out {}`): {}",
                    out.display(),
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
        },
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
