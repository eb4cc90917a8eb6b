//! `baton operator`: flags, logging, signals.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use clap::{ArgAction, Args, ValueEnum};

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
}

fn init_logging(args: &OperatorArgs) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| args.log_level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
    wait_signal().await;
    tracing::info!("shutting down: finishing running reconciles (signal again to exit now)");
    tokio::spawn(async {
        wait_signal().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn start(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("connecting to Kubernetes (in-cluster config or KUBECONFIG): {e}")
    })?;
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
    };
    run(client, cfg, shutdown_signal()).await
}

/// Entry point of `baton operator`.
pub fn main(args: OperatorArgs) -> ExitCode {
    init_logging(&args);
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
    match rt.block_on(start(args)) {
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
