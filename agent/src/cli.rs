//! Command line of the `baton-agent` binary: run an agent, or write certificates for local
//! experiments (`gen-certs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::{Faults, Finding, FindingSeverity, ReadyInfo, Role};
use crate::conn_limits::ConnLimits;
use crate::demo::{DemoBackend, DemoConfig, MemberTlsFlags};
use crate::exec::{ExecBackend, ExecConfig};
use crate::ops::OpsStore;
use crate::ops_engine::{Backend, Engine};
use crate::persist;
use crate::pki::{CertAuthority, CertSpec, Validity};

pub const READY_FILE: &str = "ready.json";

#[derive(Debug, Parser)]
#[command(
    name = "baton-agent",
    about = "Baton member agent: serves the control API the Baton operator drives members through",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a control CA, agent server and operator client certificates, a mesh CA and
    /// member certificates into a directory, for local experiments.
    GenCerts(GenCertsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Active,
    Standby,
    Spare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Demo,
    Exec,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Member name (required to run an agent).
    #[arg(long)]
    pub member: Option<String>,
    /// Directory holding the member's persisted state, log, certificates and operation records.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Control API address; port 0 picks a free port (see ready.json).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Data/replication port address (demo backend); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub data_listen: SocketAddr,
    /// Host peers dial to reach this member's data port: the data endpoint reported in status
    /// (and handed to other members as their replication source) becomes HOST:<bound data port>.
    /// Needed whenever the bound address is not what peers can dial, e.g. 0.0.0.0 in a pod
    /// (use the pod's stable DNS name, which the member certificate names). Default: the bound
    /// address.
    #[arg(long, value_name = "HOST")]
    pub data_advertise_host: Option<String>,
    /// Initial software version (persisted state wins on restart).
    #[arg(long = "version", default_value = "1.0.0")]
    pub member_version: String,
    /// Initial role (persisted state wins on restart).
    #[arg(long, value_enum, default_value = "standby")]
    pub role: RoleArg,
    /// Data endpoint (host:port) of the member to replicate from.
    #[arg(long)]
    pub source: Option<String>,
    /// Components and their versions, e.g. `os=8.4,app=2.1`.
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Member certificate (PEM) served on the data port and presented when replicating.
    #[arg(long)]
    pub member_cert: Option<PathBuf>,
    #[arg(long)]
    pub member_key: Option<PathBuf>,
    /// Trust bundle (PEM, one or more CAs) for member-to-member TLS.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Control API server certificate (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates may use the control API.
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Serve the control API (and, without member certificates, the data port) over plain
    /// HTTP. For local experiments only.
    #[arg(long)]
    pub insecure_http: bool,
    #[arg(long, value_enum, default_value = "demo")]
    pub backend: BackendArg,
    /// Exec backend configuration (YAML).
    #[arg(long)]
    pub exec_config: Option<PathBuf>,
    /// Duration of a demo upgrade or rollback.
    #[arg(long, default_value_t = 2.0)]
    pub upgrade_seconds: f64,
    /// Duration of a demo restart (the `restart` operation of a CA rotation).
    #[arg(long, default_value_t = 0.0)]
    pub restart_seconds: f64,
    /// Duration of a demo `task` operation (a once-per-mesh step).
    #[arg(long, default_value_t = 1.0)]
    pub task_seconds: f64,
    /// Duration of a demo `stage-media` operation (copying a version's upgrade media).
    #[arg(long, default_value_t = 1.0)]
    pub stage_seconds: f64,
    /// Demo: refuse an `upgrade` to a version whose media is not staged (409
    /// `media_not_staged`).
    #[arg(long)]
    pub require_staged_media: bool,
    /// Duration of a demo `prepare` operation (the preparation checks before an upgrade).
    #[arg(long, default_value_t = 1.0)]
    pub prepare_seconds: f64,
    /// Demo: a finding a `prepare` reports when its `checks` include CHECK. SEVERITY is
    /// `blocking` or `warning` (any case), CODE a CamelCase reason, MESSAGE the rest (it may
    /// hold colons). Repeatable, reported in the order given.
    #[arg(long = "prepare-finding", value_name = "SEVERITY:CHECK:CODE:MESSAGE")]
    pub prepare_findings: Vec<String>,
    /// Demo: a scheduled job of the member that an upgrade drops; a `prepare` with the
    /// `scheduledJobs` check warns of it. Repeatable.
    #[arg(long = "scheduled-job", value_name = "NAME")]
    pub scheduled_jobs: Vec<String>,
    /// Load figure reported in /v1/status.
    #[arg(long)]
    pub load: Option<u64>,
    /// Fault: upgrades to these versions fail halfway.
    #[arg(long, value_delimiter = ',')]
    pub fail_upgrade_to: Vec<String>,
    /// Fault: upgrades never finish.
    #[arg(long)]
    pub hang_upgrade: bool,
    /// Fault: the process exits abruptly halfway through an upgrade.
    #[arg(long)]
    pub crash_mid_upgrade: bool,
    /// Fault: a promote while running one of these versions leaves the member not serving.
    #[arg(long, value_delimiter = ',')]
    pub no_traffic_after_promote_on: Vec<String>,
    /// Fault: apply replicated entries this long after they were written.
    #[arg(long, default_value_t = 0)]
    pub replication_delay_ms: u64,
    /// Fault: every preflight fails.
    #[arg(long)]
    pub fail_preflight: bool,
    /// Fault: preflight refuses these target versions.
    #[arg(long, value_delimiter = ',')]
    pub reject_versions: Vec<String>,
    /// Fault: `task` operations of these task names fail.
    #[arg(long, value_delimiter = ',')]
    pub fail_tasks: Vec<String>,
    /// Fault: `stage-media` of these versions fails.
    #[arg(long, value_delimiter = ',')]
    pub fail_stage_media: Vec<String>,
    /// Fault: every `prepare` fails, its checks could not run.
    #[arg(long)]
    pub fail_prepare: bool,
    /// Fault: add VALUE to the demo KPI NAME (reported with VALUE when the member has no such
    /// KPI). Repeatable; of one name given twice, the last wins.
    #[arg(long = "kpi-offset", value_name = "NAME=VALUE")]
    pub kpi_offsets: Vec<String>,
    /// Open connections per listener (control API, data port), authenticated or not. Lowered
    /// at startup to fit the process's descriptor limit.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections per listener that have not yet authenticated (finished the mutual-TLS
    /// handshake; with --insecure-http: sent a request). A new connection beyond this closes
    /// the oldest of the address holding the most.
    #[arg(long, default_value_t = 64)]
    pub max_pending_connections: usize,
    /// Unauthenticated connections from one IP address; beyond this its oldest is closed.
    #[arg(long, default_value_t = 16)]
    pub max_pending_per_peer: usize,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout_seconds: f64,
    /// Seconds a client has to send request headers (also how long an idle keep-alive
    /// connection is kept).
    #[arg(long, default_value_t = 30.0)]
    pub header_timeout_seconds: f64,
    /// Seconds a client has to send a whole request body.
    #[arg(long, default_value_t = 10.0)]
    pub body_timeout_seconds: f64,
}

#[derive(Debug, Clone, Args)]
pub struct GenCertsArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Member certificates to issue from the mesh CA.
    #[arg(long, value_delimiter = ',', default_value = "m1,m2,m3")]
    pub members: Vec<String>,
    /// Subject alternative names of the server and member certificates.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
    /// Validity of leaf certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

impl RunArgs {
    fn faults(&self) -> Result<Faults> {
        Ok(Faults {
            fail_upgrade_to: self.fail_upgrade_to.clone(),
            hang_upgrade: self.hang_upgrade,
            crash_mid_upgrade: self.crash_mid_upgrade,
            no_traffic_after_promote_on: self.no_traffic_after_promote_on.clone(),
            replication_delay_ms: self.replication_delay_ms,
            fail_preflight: self.fail_preflight,
            reject_versions: self.reject_versions.clone(),
            upgrade_seconds: None,
            load: None,
            fail_tasks: self.fail_tasks.clone(),
            fail_stage_media: self.fail_stage_media.clone(),
            kpi_offsets: parse_kpi_offsets(&self.kpi_offsets)?,
            prepare_findings: Vec::new(),
            fail_prepare: self.fail_prepare,
        })
    }
}

/// `--prepare-finding SEVERITY:CHECK:CODE:MESSAGE` flags, checked as `prepareFindings` of
/// `PUT /v1/faults` are (a long message is cut the same way).
fn parse_prepare_findings(items: &[String]) -> Result<Vec<Finding>> {
    items
        .iter()
        .map(|item| {
            let quoted = crate::http_util::excerpt(item);
            let mut parts = item.splitn(4, ':');
            let (Some(severity), Some(check), Some(code), Some(message)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                bail!("--prepare-finding {quoted} must be SEVERITY:CHECK:CODE:MESSAGE");
            };
            let Some(severity) = FindingSeverity::parse(severity) else {
                bail!(
                    "--prepare-finding {quoted}: severity {} must be blocking or warning",
                    crate::http_util::excerpt(severity)
                );
            };
            let finding = Finding::new(check, severity, code, message);
            crate::api::check_finding(&finding)
                .map_err(|e| anyhow::anyhow!("--prepare-finding {quoted}: {e}"))?;
            Ok(finding)
        })
        .collect()
}

/// Longest `--scheduled-job` name.
const MAX_JOB_NAME: usize = 128;

/// `--scheduled-job NAME` flags: 1 to 128 characters, no control characters.
fn check_scheduled_jobs(jobs: &[String]) -> Result<()> {
    for job in jobs {
        if job.trim().is_empty()
            || job.chars().count() > MAX_JOB_NAME
            || job.chars().any(char::is_control)
        {
            bail!(
                "--scheduled-job {} must be 1 to {MAX_JOB_NAME} characters, without control \
                 characters",
                crate::http_util::excerpt(job)
            );
        }
    }
    Ok(())
}

/// `--kpi-offset NAME=VALUE` flags, checked as `kpiOffsets` of `PUT /v1/faults` are.
fn parse_kpi_offsets(items: &[String]) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for item in items {
        let quoted = crate::http_util::excerpt(item);
        let (name, value) = item
            .split_once('=')
            .with_context(|| format!("--kpi-offset {quoted} must be NAME=VALUE"))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--kpi-offset {quoted}: the value is not a number"))?;
        out.insert(name.to_string(), value);
    }
    crate::api::check_kpi_offsets(&out).map_err(|e| anyhow::anyhow!("--kpi-offset: {e}"))?;
    Ok(out)
}

/// Descriptors kept for everything but connections: files, the replication stream, exec
/// children, the runtime.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft descriptor limit to the hard one (as Go and nginx do), so the configured
/// connection limits are what bounds connections, not EMFILE. Returns the soft limit.
fn raise_descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

impl RunArgs {
    /// The connection limits of each listener, lowered so that both listeners at their
    /// limits still leave descriptors for the rest of the agent.
    pub fn conn_limits(&self) -> Result<ConnLimits> {
        for (name, v) in [
            (
                "--handshake-timeout-seconds",
                self.handshake_timeout_seconds,
            ),
            ("--header-timeout-seconds", self.header_timeout_seconds),
            ("--body-timeout-seconds", self.body_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                bail!("{name} must be a number of seconds between 0 and 86400");
            }
        }
        if self.max_connections == 0
            || self.max_pending_connections == 0
            || self.max_pending_per_peer == 0
        {
            bail!(
                "--max-connections, --max-pending-connections and --max-pending-per-peer must be \
                 at least 1"
            );
        }
        let mut limits = ConnLimits {
            max_connections: self.max_connections,
            max_pending: self.max_pending_connections,
            max_pending_per_peer: self.max_pending_per_peer,
            handshake_timeout: Duration::from_secs_f64(self.handshake_timeout_seconds),
            header_timeout: Duration::from_secs_f64(self.header_timeout_seconds),
            body_timeout: Duration::from_secs_f64(self.body_timeout_seconds),
        };
        if let Some(soft) = raise_descriptor_limit() {
            let per_listener = (soft.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(16) as usize;
            if limits.max_connections > per_listener {
                tracing::warn!(
                    "descriptor limit {soft}: --max-connections {} lowered to {per_listener} per \
                     listener (raise `ulimit -n` for more)",
                    limits.max_connections
                );
                limits.max_connections = per_listener;
            }
        }
        Ok(limits.normalized())
    }
}

fn parse_components(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.iter().filter(|s| !s.is_empty()) {
        let (name, version) = item
            .split_once('=')
            .with_context(|| format!("component {item:?} must be name=version"))?;
        crate::ops::validate_component(name).map_err(|e| anyhow::anyhow!(e.message))?;
        crate::ops::validate_version(version).map_err(|e| anyhow::anyhow!(e.message))?;
        out.insert(name.to_string(), version.to_string());
    }
    Ok(out)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// How a binary runs the agent: `baton-agent` itself, or `baton __agent` (what `baton demo`
/// starts, so that the demo needs no second binary). The fields are where the two entries
/// differ; each keeps what it did when it had its own copy of [`main_entry`].
pub struct Entry {
    /// Names the process in the error line on stderr.
    pub name: &'static str,
    /// Builds the async runtime the agent runs on.
    pub runtime: fn() -> Result<tokio::runtime::Runtime>,
    /// Colour log lines only when stderr is a terminal (else tracing-subscriber's default).
    pub ansi_on_terminal: bool,
    /// Also log the error that ends the process.
    pub log_error: bool,
}

/// The `baton-agent` binary.
pub const BATON_AGENT: Entry = Entry {
    name: "baton-agent",
    runtime: || {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?)
    },
    ansi_on_terminal: false,
    log_error: true,
};

/// Parses `args` (the first names the program), runs the agent or `gen-certs`, and tells
/// how the process ends.
pub fn main_entry<I, T>(entry: &Entry, args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let logs = if entry.ansi_on_terminal {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    } else {
        logs
    };
    logs.init();
    let result = match cli.command {
        Some(Command::GenCerts(args)) => gen_certs(&args).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
        None => match (entry.runtime)() {
            Ok(rt) => rt.block_on(run(cli.run)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if entry.log_error {
                // The target the binary's own `main` logged under.
                tracing::error!(target: "baton_agent", "{e:#}");
            }
            eprintln!("{}: {e:#}", entry.name);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs an agent until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    let member = args
        .member
        .clone()
        .context("--member is required (or use a subcommand such as gen-certs)")?;
    crate::ops::validate_id(&member).map_err(|_| {
        anyhow::anyhow!("--member must be 1 to 128 characters of A-Z a-z 0-9 . _ : / -")
    })?;
    let data_dir = args.data_dir.clone().context("--data-dir is required")?;
    crate::ops::validate_version(&args.member_version).map_err(|e| anyhow::anyhow!(e.message))?;
    if let Some(s) = &args.source {
        crate::ops::validate_endpoint(s, "--source").map_err(|e| anyhow::anyhow!(e.message))?;
    }
    if let Some(host) = &args.data_advertise_host {
        // Checked with a placeholder port: the real one is known once the port is bound.
        crate::ops::validate_endpoint(&format!("{host}:1"), "--data-advertise-host").map_err(
            |_| {
                anyhow::anyhow!(
                    "--data-advertise-host {host:?} must be a host name or IP address \
                     (no port; [..] around IPv6)"
                )
            },
        )?;
        if args.backend == BackendArg::Exec {
            bail!(
                "--data-advertise-host applies to the demo backend; the exec backend reports \
                 its data endpoint through its status command or `status.dataEndpoint`"
            );
        }
    }
    if args.require_staged_media && args.backend == BackendArg::Exec {
        bail!(
            "--require-staged-media applies to the demo backend; with the exec backend the \
             upgrade command checks for its own media"
        );
    }
    if !(args.restart_seconds.is_finite() && (0.0..=3600.0).contains(&args.restart_seconds)) {
        bail!("--restart-seconds must be between 0 and 3600");
    }
    if !(args.task_seconds.is_finite() && (0.0..=3600.0).contains(&args.task_seconds)) {
        bail!("--task-seconds must be between 0 and 3600");
    }
    if !(args.stage_seconds.is_finite() && (0.0..=3600.0).contains(&args.stage_seconds)) {
        bail!("--stage-seconds must be between 0 and 3600");
    }
    if !(args.prepare_seconds.is_finite() && (0.0..=3600.0).contains(&args.prepare_seconds)) {
        bail!("--prepare-seconds must be between 0 and 3600");
    }
    let prepare_findings = parse_prepare_findings(&args.prepare_findings)?;
    check_scheduled_jobs(&args.scheduled_jobs)?;
    if (!prepare_findings.is_empty() || !args.scheduled_jobs.is_empty())
        && args.backend == BackendArg::Exec
    {
        bail!(
            "--prepare-finding and --scheduled-job apply to the demo backend; with the exec \
             backend the prepare command reports the findings"
        );
    }
    if !(args.upgrade_seconds.is_finite() && args.upgrade_seconds >= 0.0) {
        bail!("--upgrade-seconds must be a non-negative number");
    }
    let faults = args.faults()?;
    let conn_limits = args.conn_limits()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let ready_path = data_dir.join(READY_FILE);
    match std::fs::remove_file(&ready_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale {}", ready_path.display()));
        }
    }

    let control_tls = if args.insecure_http {
        tracing::warn!(
            "!!! --insecure-http: the control API is served WITHOUT TLS or client authentication; \
             anyone who can reach {} can drive this member. Local experiments only. !!!",
            args.listen
        );
        None
    } else {
        let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.client_ca)
        else {
            bail!(
                "the control API needs --tls-cert, --tls-key and --client-ca (mutual TLS); \
                 --insecure-http serves plain HTTP for local experiments"
            );
        };
        Some(crate::tls::server_config_mtls(
            &read(cert, "--tls-cert")?,
            &read(key, "--tls-key")?,
            &read(ca, "--client-ca")?,
            "control API",
        )?)
    };

    let ops = OpsStore::load(data_dir.join("operations.json")).await?;
    let (backend, data_addr, data_scheme) = match args.backend {
        BackendArg::Demo => {
            let demo = DemoBackend::start(DemoConfig {
                member: member.clone(),
                data_dir: data_dir.clone(),
                data_listen: args.data_listen,
                data_advertise_host: args.data_advertise_host.clone(),
                version: args.member_version.clone(),
                role: match args.role {
                    RoleArg::Active => Role::Active,
                    RoleArg::Standby => Role::Standby,
                    RoleArg::Spare => Role::Spare,
                },
                source: args.source.clone(),
                components: parse_components(&args.components)?,
                tls: MemberTlsFlags {
                    cert: args.member_cert.clone(),
                    key: args.member_key.clone(),
                    trust: args.trust.clone(),
                    allow_plain: args.insecure_http,
                },
                upgrade_seconds: args.upgrade_seconds,
                restart_seconds: args.restart_seconds,
                task_seconds: args.task_seconds,
                stage_seconds: args.stage_seconds,
                require_staged_media: args.require_staged_media,
                prepare_seconds: args.prepare_seconds,
                prepare_findings,
                scheduled_jobs: args.scheduled_jobs.clone(),
                load: args.load,
                faults,
                conn_limits,
            })
            .await?;
            let addr = demo.data_addr().to_string();
            let scheme = if demo.data_is_tls() { "https" } else { "http" };
            (Backend::Demo(Arc::new(demo)), addr, scheme)
        }
        BackendArg::Exec => {
            let path = args
                .exec_config
                .as_ref()
                .context("--backend exec needs --exec-config FILE")?;
            let config = ExecConfig::load(path)?;
            let mut faults = faults;
            faults.load = args.load;
            let exec = ExecBackend::new(member.clone(), data_dir.clone(), config, faults);
            (Backend::Exec(Arc::new(exec)), String::new(), "")
        }
    };
    let engine = Arc::new(Engine {
        member: member.clone(),
        ops,
        backend,
    });
    let listener = crate::http_util::bind(args.listen)
        .with_context(|| format!("binding the control API on {}", args.listen))?;
    let control_addr = listener
        .local_addr()
        .context("reading the control API address")?;
    let control_scheme = if control_tls.is_some() {
        "https"
    } else {
        "http"
    };
    tokio::spawn(crate::server::serve(
        engine,
        listener,
        control_tls,
        conn_limits,
    ));

    let ready = ReadyInfo {
        member: member.clone(),
        control: control_addr.to_string(),
        control_scheme: control_scheme.to_string(),
        data: data_addr.clone(),
        data_scheme: data_scheme.to_string(),
        pid: std::process::id(),
    };
    persist::write_json(&ready_path, &ready)?;
    // Tests and `baton demo` read this line to learn ephemeral ports.
    println!("baton-agent listening control={control_addr} data={data_addr}");
    tracing::info!(
        "member {member} ready: control {control_scheme}://{control_addr}, data {}",
        if data_addr.is_empty() {
            "none".to_string()
        } else {
            format!("{data_scheme}://{data_addr}")
        }
    );

    shutdown_signal().await;
    tracing::info!("member {member} shutting down");
    let _ = std::fs::remove_file(&ready_path);
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (Ctrl-C only where there is no SIGTERM); shared by the
/// agent and the operator.
pub async fn shutdown_signal() {
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

/// Writes the certificates of a local mesh. File names are stable so docs and scripts can
/// refer to them.
pub fn gen_certs(args: &GenCertsArgs) -> Result<Vec<PathBuf>> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let validity = Validity::Days(args.days);
    let mut written = Vec::new();
    let mut write = |name: &str, content: &str, private: bool| -> Result<()> {
        let path = out.join(name);
        persist::atomic_write(&path, content.as_bytes(), private)?;
        written.push(path);
        Ok(())
    };
    let control_ca = CertAuthority::generate("baton control CA")?;
    write("ca.crt", control_ca.cert_pem(), false)?;
    write("ca.key", control_ca.key_pem(), true)?;
    let server = control_ca.issue(
        &CertSpec::server("baton-agent")
            .with_sans(args.hosts.clone())
            .with_validity(validity),
    )?;
    write("server.crt", &server.cert_pem, false)?;
    write("server.key", &server.key_pem, true)?;
    let client = control_ca.issue(&CertSpec::client("baton-operator").with_validity(validity))?;
    write("client.crt", &client.cert_pem, false)?;
    write("client.key", &client.key_pem, true)?;
    let mesh_ca = CertAuthority::generate("baton mesh CA")?;
    write("mesh-ca.crt", mesh_ca.cert_pem(), false)?;
    write("mesh-ca.key", mesh_ca.key_pem(), true)?;
    write("trust.pem", mesh_ca.cert_pem(), false)?;
    for m in &args.members {
        crate::ops::validate_component(m)
            .map_err(|_| anyhow::anyhow!("invalid member name {m:?}"))?;
        let cert = mesh_ca.issue(
            &CertSpec::member(m)
                .with_sans(args.hosts.clone())
                .with_validity(validity),
        )?;
        write(&format!("member-{m}.crt"), &cert.cert_pem, false)?;
        write(&format!("member-{m}.key"), &cert.key_pem, true)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_offset_flags_are_name_value_pairs_checked_like_the_fault() {
        let flags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse_kpi_offsets(&flags(&[
            "errorCount=3",
            "writeRate=-2.5",
            "latencyMs=40",
            "errorCount=5",
        ]))
        .map_err(|e| e.to_string());
        let want: BTreeMap<String, f64> = [
            ("errorCount", 5.0),
            ("writeRate", -2.5),
            ("latencyMs", 40.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(parsed, Ok(want), "the last of a name wins");
        assert_eq!(parse_kpi_offsets(&[]).ok(), Some(BTreeMap::new()));
        for (bad, want) in [
            ("errorCount", "must be NAME=VALUE"),
            ("errorCount=", "not a number"),
            ("errorCount=lots", "not a number"),
            ("errorCount=inf", "not a finite number"),
            ("errorCount=NaN", "not a finite number"),
            ("errorCount=1e999", "not a finite number"),
            ("9lives=1", "KPI name"),
            ("=1", "KPI name"),
        ] {
            let e = parse_kpi_offsets(&flags(&[bad]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("--kpi-offset") && e.contains(want), "{bad}: {e}");
        }
        let many: Vec<String> = (0..30).map(|i| format!("k{i}=1")).collect();
        let e = parse_kpi_offsets(&many)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("at most 32"), "{e}");
    }

    #[test]
    fn prepare_finding_flags_are_checked_like_the_fault() {
        use crate::api::FindingSeverity::{Blocking, Warning};
        let flags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse_prepare_findings(&flags(&[
            "blocking:gateways:GatewayUnreachable:gw-1 at 10.0.0.1:443 does not answer",
            "WARNING:installConfig:ConfigDrift:ulimit differs",
            "Warning:gateways:GatewaySlow:slow",
        ]))
        .map_err(|e| e.to_string());
        assert_eq!(
            parsed,
            Ok(vec![
                Finding::new(
                    "gateways",
                    Blocking,
                    "GatewayUnreachable",
                    "gw-1 at 10.0.0.1:443 does not answer"
                ),
                Finding::new("installConfig", Warning, "ConfigDrift", "ulimit differs"),
                Finding::new("gateways", Warning, "GatewaySlow", "slow"),
            ]),
            "in the order given; the message keeps its colons"
        );
        let long = format!("warning:c:C:{}", "m".repeat(300));
        let cut = parse_prepare_findings(&flags(&[&long])).unwrap_or_default();
        assert_eq!(cut[0].message.chars().count(), 256);
        for (bad, want) in [
            (
                "fatal:c:C:m",
                "severity \"fatal\" must be blocking or warning",
            ),
            ("blocking:c:C", "must be SEVERITY:CHECK:CODE:MESSAGE"),
            ("blocking", "must be SEVERITY:CHECK:CODE:MESSAGE"),
            ("warning:bad check:C:m", "check \"bad check\""),
            ("warning:c:Bad-Code:m", "code \"Bad-Code\""),
            ("warning:c:C:", "has no message"),
        ] {
            let e = parse_prepare_findings(&flags(&[bad]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("--prepare-finding"), "{bad}: {e}");
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(check_scheduled_jobs(&flags(&["nightly-report", "Weekly backup (Sun)"])).is_ok());
        for bad in ["", " ", "a\nb", &"j".repeat(129)] {
            let e = check_scheduled_jobs(&flags(&[bad]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("--scheduled-job"), "{bad:?}: {e}");
            assert!(e.len() < 300, "{e}");
        }
    }
}
