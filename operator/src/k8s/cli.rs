//! `baton operator`: flags, logging, signals.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use clap::{ArgAction, Args, ValueEnum};

use super::connect::{KubeTarget, connect};
use crate::reconcile::Timing;

use super::leader::{LeaseConfig, default_identity};
use super::operator::{AgentCredentials, OperatorConfig, run};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Run the Kubernetes operator: controllers for Cluster and Mesh.
#[derive(Args, Clone, Debug)]
pub struct OperatorArgs {
    /// Address serving /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Only the holder of a coordination.k8s.io Lease reconciles (--leader-election=false to
    /// run a single replica without it).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "baton-operator")]
    pub lease_name: String,
    /// Namespace of the Lease and of --agent-tls-secret (default: POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Secret (keys ca.crt, tls.crt, tls.key) with the client certificate for the agents'
    /// mutual TLS. Without it agents are reached over plain HTTP (agents started with
    /// --insecure-http).
    #[arg(long)]
    pub agent_tls_secret: Option<String>,
    /// Objects of each kind reconciled at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Log output: text, or json (one object per line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Only watch this namespace (empty: all namespaces).
    #[arg(long, default_value = "")]
    pub watch_namespace: String,
    /// Read each CA Secret of `spec.certificates` again at least this often (e.g. 30s, 10m),
    /// besides its watch, which wakes the objects naming it as soon as it changes.
    #[arg(long, default_value = "30s")]
    pub ca_recheck: crate::api::Duration,
    /// Print the configuration these flags resolve to (JSON) and exit without connecting: a
    /// check of a Deployment's arguments.
    #[arg(long)]
    pub print_config: bool,
}

impl OperatorArgs {
    /// The log filter: `RUST_LOG` when set, else `--log-level`; an unparsable one is an error,
    /// not a silent fallback.
    fn log_filter(&self) -> anyhow::Result<tracing_subscriber::EnvFilter> {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| self.log_level.clone());
        tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| anyhow::anyhow!("log level {filter:?}: {e}"))
    }

    /// What `--print-config` prints.
    pub fn resolved(&self) -> serde_json::Value {
        serde_json::json!({
            "httpAddr": self.http_addr.to_string(),
            "leaderElection": self.leader_election,
            "leaseName": self.lease_name,
            "leaseNamespace": self.lease_namespace.as_deref().filter(|n| !n.is_empty()),
            "agentTlsSecret": self.agent_tls_secret.as_deref().filter(|n| !n.is_empty()),
            "concurrency": self.concurrency,
            "logFormat": match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            "logLevel": self.log_level,
            "watchNamespace": Some(self.watch_namespace.as_str()).filter(|n| !n.is_empty()),
            "caRecheck": self.ca_recheck.to_string(),
        })
    }
}

fn init_logging(args: &OperatorArgs, filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal;
    // Colour only on a terminal: escape codes in a log file or a collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match args.log_format {
        // try_init: a caller may have set up logging already.
        LogFormat::Json => {
            let _ = builder.json().flatten_event(true).try_init();
        }
        LogFormat::Text => {
            let _ = builder.try_init();
        }
    }
}

/// SIGTERM or Ctrl-C; a second one exits at once.
async fn shutdown_signal() {
    baton_agent::cli::shutdown_signal().await;
    tracing::info!("shutting down: finishing running reconciles (signal again to exit now)");
    tokio::spawn(async {
        baton_agent::cli::shutdown_signal().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
}

async fn start(args: OperatorArgs, kube: Option<KubeTarget>) -> anyhow::Result<()> {
    let client = match kube {
        // `baton --context NAME operator`: out of cluster, against a chosen context.
        Some(t) => connect(&t).await?.0,
        None => kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("connecting to Kubernetes (in-cluster config or KUBECONFIG): {e}")
        })?,
    };
    let own_ns = args
        .lease_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = default_identity();
    let cfg = OperatorConfig {
        http_addr: Some(args.http_addr),
        lease: args
            .leader_election
            .then(|| LeaseConfig::new(&args.lease_name, &own_ns, &identity)),
        agents: match &args.agent_tls_secret {
            Some(name) if !name.is_empty() => AgentCredentials::Secret {
                namespace: own_ns.clone(),
                name: name.clone(),
            },
            _ => AgentCredentials::Given(baton_agent::client::ClientTls::Insecure),
        },
        concurrency: args.concurrency,
        watch_namespace: Some(args.watch_namespace.clone()).filter(|n| !n.is_empty()),
        timing: Timing::default(),
        identity,
        crd_check_period: StdDuration::from_secs(10),
        ca_recheck: StdDuration::from_millis(args.ca_recheck.millis().max(1000)),
    };
    run(client, cfg, shutdown_signal()).await
}

/// Entry point of `baton operator`; `kube` names a kubeconfig/context to use instead of the
/// in-cluster account or `KUBECONFIG`.
pub fn main(args: OperatorArgs, kube: Option<KubeTarget>) -> ExitCode {
    let filter = match args.log_filter() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        println!("{}", args.resolved());
        return ExitCode::SUCCESS;
    }
    init_logging(&args, filter);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(start(args, kube)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn parse(argv: &[&str]) -> Result<OperatorArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("operator").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn defaults_match_the_packaging_contract() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.http_addr.to_string(), "0.0.0.0:8080");
        assert!(a.leader_election);
        assert_eq!(a.lease_name, "baton-operator");
        assert_eq!(a.concurrency, 8);
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(a.log_level, "info");
        assert_eq!(a.watch_namespace, "");
        assert_eq!(a.agent_tls_secret, None);
    }

    #[test]
    fn leader_election_is_switched_off_with_equals_false() {
        assert!(!parse(&["--leader-election=false"]).unwrap().leader_election);
        assert!(parse(&["--leader-election"]).unwrap().leader_election);
        assert!(
            parse(&["--leader-election", "--concurrency", "2"])
                .unwrap()
                .leader_election
        );
        assert!(parse(&["--leader-election=maybe"]).is_err());
    }

    #[test]
    fn print_config_resolves_the_flags_and_bad_log_levels_are_errors() {
        let a = parse(&[
            "--leader-election=false",
            "--lease-namespace",
            "ops",
            "--log-format=json",
            "--print-config",
        ])
        .unwrap();
        assert!(a.print_config);
        let r = a.resolved();
        assert_eq!(r["leaderElection"], false);
        assert_eq!(r["leaseNamespace"], "ops");
        assert_eq!(r["logFormat"], "json");
        assert_eq!(r["watchNamespace"], serde_json::Value::Null);
        assert!(
            parse(&["--log-level", "baton=debug,info"])
                .unwrap()
                .log_filter()
                .is_ok()
        );
        // RUST_LOG may be set in the test environment; only check the flag's own parse.
        if std::env::var("RUST_LOG").is_err() {
            assert!(
                parse(&["--log-level", "baton=[bad"])
                    .unwrap()
                    .log_filter()
                    .is_err()
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--http-addr", "nowhere"]).is_err());
        let a = parse(&[
            "--agent-tls-secret",
            "baton-agent-client",
            "--log-format",
            "json",
            "--watch-namespace",
            "prod",
        ])
        .unwrap();
        assert_eq!(a.agent_tls_secret.as_deref(), Some("baton-agent-client"));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.watch_namespace, "prod");
    }
}
