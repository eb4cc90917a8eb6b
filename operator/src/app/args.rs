//! The `baton` command line as clap parses it: commands, flags and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::std_duration;
use crate::api::Duration;
use crate::cli::plan::PlanOptions;
use crate::cli::{Output, RunOptions, TlsOptions, Until};
use crate::demo::{DemoOptions, Scenario};
use crate::reconcile::Timing;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Declarative, failover-ordered upgrades of HA clusters and meshes"
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where `status`, `plan`, `log` and the intent commands act: a local state file (default),
/// or a Kubernetes cluster (with any of these flags, or when run as `kubectl baton`).
#[derive(Args, Clone, Default)]
pub struct KubeArgs {
    /// Act on the cluster of the current kubeconfig context instead of a state file.
    #[arg(long, global = true, help_heading = "Kubernetes")]
    pub kube: bool,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, help_heading = "Kubernetes")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true, help_heading = "Kubernetes")]
    pub namespace: Option<String>,
    /// Every namespace (read-only commands).
    #[arg(
        short = 'A',
        long,
        global = true,
        conflicts_with = "namespace",
        help_heading = "Kubernetes"
    )]
    pub all_namespaces: bool,
}

impl KubeArgs {
    pub fn wanted(&self) -> bool {
        self.kube
            || self.kubeconfig.is_some()
            || self.context.is_some()
            || self.namespace.is_some()
            || self.all_namespaces
    }
    pub fn target(&self) -> crate::kubectl::KubeTarget {
        crate::kubectl::KubeTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            all_namespaces: self.all_namespaces,
        }
    }
}

#[derive(Args, Clone)]
pub struct StateArg {
    /// State file written by `baton run` (statuses); intents go to FILE.intents.
    #[arg(long, default_value = "baton-state.json", env = "BATON_STATE")]
    pub state: PathBuf,
}

#[derive(Args, Clone)]
pub struct TlsArgs {
    /// Directory with ca.crt, client.crt and client.key (as `baton-agent gen-certs` writes).
    #[arg(long, env = "BATON_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// CA certificate that signed the agents' server certificates.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate presented to agents.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Talk plain HTTP to agents started with --insecure-http.
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputArg {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScenarioArg {
    /// Upgrade every cluster, management tier first.
    Upgrade,
    /// One worker cluster fails its traffic check after the switchover and is rolled back
    /// automatically; the others complete.
    Rollback,
    /// Upgrade, then set the old version back: workers first, management last.
    Backout,
    /// Rotate the members' CA under the write load (AddTrust, Reissue, RemoveOldTrust,
    /// ResignData), standalone clusters; fails on any refused TLS handshake or lost write.
    RotateCa,
    /// Add a third member to a two-member cluster under the write load, switch over to it,
    /// then remove an original member; fails on a lost write or a member left accepting the
    /// removed one.
    Scale,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a mesh of real agents on 127.0.0.1 (no Kubernetes needed), run a write load and
    /// upgrade it with the same reconcile loop as `baton run`, showing live progress. Exits 0
    /// when every invariant held (no acknowledged write lost, one active per cluster, tier
    /// order, expected outcome), 1 otherwise.
    Demo(DemoArgs),
    /// Reconcile Mesh/Cluster manifests against the agents they name, persisting status in a
    /// state file. Re-running after a crash resumes.
    Run(RunArgs),
    /// Print the ordered schedule from the current (or assumed) state to the desired one,
    /// without acting.
    Plan(PlanArgs),
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
    /// Approve a step that waits for approval (e.g. switchover/web/m2@2.0.0, or a rotation
    /// phase in approvePhases: rotation/web/Reissue@4e44e44e44e4).
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
    /// Start a mesh rollout whose preconditions fail (NAME: a mesh), or run a CA rotation
    /// phase before the one before it is complete (NAME: rotation/CLUSTER/PHASE@CA; the
    /// RotationForced condition says what breaks).
    Force {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Run the Kubernetes operator: controllers for Cluster and Mesh (see docs/operator.md).
    Operator(crate::k8s::OperatorArgs),
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

// The commands whose options become the options of a library call have them in a struct of
// their own, converted in one place.

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value = "upgrade")]
    pub scenario: ScenarioArg,
    /// Clusters in all: one management cluster, the rest workers.
    #[arg(long, default_value_t = 4)]
    pub clusters: usize,
    /// Members per cluster.
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    /// Duration of one member upgrade on the demo agents, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub upgrade_seconds: f64,
    /// Duration of one member restart on the demo agents (a CA rotation's `restart` step),
    /// in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub restart_seconds: f64,
    /// rotate-ca: force the removal of the old CA (`baton force rotation/…/RemoveOldTrust@…`)
    /// as soon as every cluster is in Reissue, before anyone is re-issued, to show the refused
    /// handshakes it causes (the run then fails its check, as it must).
    #[arg(long)]
    pub force_remove_old_trust: bool,
    /// Worker clusters upgraded at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Version the agents start with.
    #[arg(long, default_value = "1.0.0")]
    pub from: String,
    /// Version the mesh is upgraded to.
    #[arg(long, default_value = "2.0.0")]
    pub to: String,
    /// Post-switchover traffic check timeout, in seconds (the rollback scenario waits it out).
    #[arg(long, default_value_t = 5)]
    pub traffic_timeout: u64,
    /// Keep the directory (manifests, state file, certificates, agent logs) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Plain log lines instead of progress bars (the default when stdout is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Give up (exit 1) when the demo has not finished after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: Duration,
}

#[derive(Args)]
pub struct RunArgs {
    /// Manifest files or directories (repeatable).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// One reconcile pass, then exit.
    #[arg(long, conflicts_with = "until_settled")]
    pub once: bool,
    /// Exit 0 once everything is Ready, 1 when blocked on a human (stalled, rolled back,
    /// awaiting approval, paused).
    #[arg(long)]
    pub until_settled: bool,
    /// Give up after this long (e.g. 10m); exit 3.
    #[arg(long)]
    pub timeout: Option<Duration>,
    /// Poll interval while an operation runs.
    #[arg(long, default_value = "250ms")]
    pub busy_poll: Duration,
    /// Resync interval once converged (one status request per member).
    #[arg(long, default_value = "60s")]
    pub resync: Duration,
}

#[derive(Args)]
pub struct PlanArgs {
    /// Manifest files or directories (repeatable; local mode; on Kubernetes the live
    /// objects are planned).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Start from the members recorded in this state file.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Assume members run this version where no state says otherwise; `COMPONENT=VERSION`
    /// items assume component versions (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<String>,
    /// Estimated duration of one member upgrade (enables time estimates).
    #[arg(long)]
    pub upgrade_time: Option<Duration>,
    /// Estimated duration of short steps (preflight, switchover phases, verify).
    #[arg(long)]
    pub step_time: Option<Duration>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputArg,
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        use std::io::IsTerminal;
        DemoOptions {
            scenario: match a.scenario {
                ScenarioArg::Upgrade => Scenario::Upgrade,
                ScenarioArg::Rollback => Scenario::Rollback,
                ScenarioArg::Backout => Scenario::Backout,
                ScenarioArg::RotateCa => Scenario::RotateCa,
                ScenarioArg::Scale => Scenario::Scale,
            },
            clusters: a.clusters,
            members: a.members,
            upgrade_seconds: a.upgrade_seconds,
            restart_seconds: a.restart_seconds,
            force_remove_old_trust: a.force_remove_old_trust,
            parallel: a.parallel,
            from: a.from,
            to: a.to,
            traffic_timeout: a.traffic_timeout,
            keep: a.keep,
            bars: !a.quiet && std::io::stdout().is_terminal(),
            timeout: std_duration(a.timeout),
        }
    }
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> Self {
        RunOptions {
            files: a.files,
            state: a.state.state,
            tls: a.tls.into(),
            until: if a.once {
                Until::Once
            } else if a.until_settled {
                Until::Settled
            } else {
                Until::Forever
            },
            timeout: a.timeout.map(std_duration),
            timing: Timing {
                busy: std_duration(a.busy_poll),
                resync: std_duration(a.resync),
            },
        }
    }
}

impl From<PlanArgs> for PlanOptions {
    fn from(a: PlanArgs) -> Self {
        let (comps, versions): (Vec<String>, Vec<String>) =
            a.from.into_iter().partition(|f| f.contains('='));
        PlanOptions {
            files: a.files,
            state: a.state,
            from: versions.into_iter().last(),
            from_components: comps
                .iter()
                .filter_map(|c| c.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            upgrade_time: a.upgrade_time,
            step_time: a.step_time,
            horizon: Duration::from_secs(90 * 24 * 3600),
        }
    }
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

impl From<OutputArg> for Output {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Table => Output::Table,
            OutputArg::Json => Output::Json,
            OutputArg::Yaml => Output::Yaml,
        }
    }
}

/// Whether this binary runs as `kubectl-baton` (kubectl runs plugins by that name).
pub fn is_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .is_some_and(|s| s == "kubectl-baton")
}

/// The command line, with the plugin's name and help when run as `kubectl baton`.
pub fn parse(plugin: bool) -> Cli {
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
