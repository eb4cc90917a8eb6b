//! The exec backend: every operation runs a command the user configured, and status comes
//! from a status command (JSON on stdout) and/or fixed values. This is how Baton drives
//! members whose upgrade procedures already exist as scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::api::{
    Alarm, CertInfo, Faults, Finding, FindingSeverity, Health, MAX_MEDIA, MemberStatus,
    OperationKind, OperationRequest, Replication, Role, TaskRun, alarm_codes, check_finding,
    check_kpis,
};
use crate::http_util::{ApiError, excerpt};
use crate::ops::{Ended, Progress};

/// How much of each output stream is kept in an operation's message.
const OUTPUT_TAIL: usize = 2048;
/// Most a status command may print on stdout; beyond it the status is unavailable.
pub const MAX_STATUS_OUTPUT: usize = 64 * 1024;
/// Most a KPIs command may print on stdout; beyond it no KPI is reported.
pub const MAX_KPIS_OUTPUT: usize = 16 * 1024;
/// Most a `prepare` command may print on stdout (its findings); beyond it the operation fails.
pub const MAX_PREPARE_OUTPUT: usize = 64 * 1024;
const STATUS_CACHE: Duration = Duration::from_millis(500);

/// One configured command: argv with `{placeholders}`, and a timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandSpec {
    /// Program and arguments. No shell is involved unless you name one (`["sh", "-c", ...]`).
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
}

/// Status fields a status command prints (all optional), or fixed values in the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecStatus {
    pub version: Option<String>,
    pub components: Option<BTreeMap<String, String>>,
    pub previous_version: Option<String>,
    pub role: Option<Role>,
    pub serving: Option<bool>,
    pub health: Option<Health>,
    pub alarms: Option<Vec<Alarm>>,
    pub replication: Option<Replication>,
    pub data_endpoint: Option<String>,
    pub load: Option<u64>,
    pub trust: Option<Vec<String>>,
    pub certificate: Option<CertInfo>,
    /// The CAs of the certificates the application's peers and clients present to it (see
    /// `/v1/status`): what holds the removal of an old CA while clients still use it.
    pub presented_issuers: Option<BTreeMap<String, crate::api::PresentedIssuer>>,
    /// The fingerprint of the identity the application presents to its peers.
    pub identity: Option<String>,
    /// The peers the application accepts, name to identity fingerprint.
    pub peers: Option<BTreeMap<String, String>>,
    /// Digest of the application's configuration.
    pub config_digest: Option<String>,
    /// The member was retired.
    pub retired: Option<bool>,
    /// The `task` operations the application ran, newest last.
    pub tasks: Option<Vec<TaskRun>>,
    /// Versions whose upgrade media the application has staged, oldest first (at most
    /// [`MAX_MEDIA`], each a valid version, none twice).
    pub media: Option<Vec<String>>,
    /// The application's KPIs, name to number (checked with [`check_kpis`]). Not used when
    /// the configuration has a `kpisCommand`.
    pub kpis: Option<BTreeMap<String, f64>>,
}

impl ExecStatus {
    /// Fields of `self` win; missing ones come from `fallback`.
    fn or(self, fallback: &ExecStatus) -> ExecStatus {
        let f = fallback.clone();
        ExecStatus {
            version: self.version.or(f.version),
            components: self.components.or(f.components),
            previous_version: self.previous_version.or(f.previous_version),
            role: self.role.or(f.role),
            serving: self.serving.or(f.serving),
            health: self.health.or(f.health),
            alarms: self.alarms.or(f.alarms),
            replication: self.replication.or(f.replication),
            data_endpoint: self.data_endpoint.or(f.data_endpoint),
            load: self.load.or(f.load),
            trust: self.trust.or(f.trust),
            certificate: self.certificate.or(f.certificate),
            presented_issuers: self.presented_issuers.or(f.presented_issuers),
            identity: self.identity.or(f.identity),
            peers: self.peers.or(f.peers),
            config_digest: self.config_digest.or(f.config_digest),
            retired: self.retired.or(f.retired),
            tasks: self.tasks.or(f.tasks),
            media: self.media.or(f.media),
            kpis: self.kpis.or(f.kpis),
        }
    }
}

/// The exec backend's configuration file (YAML; JSON is valid YAML too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecConfig {
    /// Timeout of commands that set none. Default 600 s.
    #[serde(default)]
    pub default_timeout_seconds: Option<f64>,
    /// Working directory of every command. Default: the agent's data directory.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Extra environment for every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Command printing a JSON [`ExecStatus`] on stdout.
    #[serde(default)]
    pub status_command: Option<CommandSpec>,
    /// Fixed status values, used where the status command says nothing.
    #[serde(default)]
    pub status: ExecStatus,
    /// Command printing the application's KPIs on stdout: a JSON object of numbers
    /// (`{"name": 1.5, ...}`) or lines `name value`. Run with the status command (and cached
    /// with it); when set, its KPIs are the member's and the status's `kpis` is not used.
    #[serde(default)]
    pub kpis_command: Option<CommandSpec>,
    /// Operation kind (wire name, e.g. `force-standby`) to command.
    #[serde(default)]
    pub operations: BTreeMap<String, CommandSpec>,
    /// PEM file of the CAs the application trusts. When the status command reports no
    /// `trust`, the agent reports the fingerprints of this file's certificates, read afresh
    /// for every status: what a CA rotation's gates observe. Relative to the work directory.
    #[serde(default)]
    pub trust_file: Option<PathBuf>,
    /// PEM file of the certificate the application presents (its own first, then its chain).
    /// When the status command reports no `certificate`, the agent describes this one (its
    /// issuer found in the chain or in `trustFile`). Relative to the work directory.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
}

impl ExecConfig {
    pub fn load(path: &Path) -> Result<ExecConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: ExecConfig =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (kind, spec) in &config.operations {
            if OperationKind::parse(kind).is_none() {
                bail!("{}: unknown operation kind {kind:?}", path.display());
            }
            if spec.command.is_empty() {
                bail!("{}: the command for {kind} is empty", path.display());
            }
            if let Some(t) = spec.timeout_seconds
                && !(t.is_finite() && t > 0.0)
            {
                bail!(
                    "{}: timeoutSeconds of {kind} must be positive",
                    path.display()
                );
            }
        }
        if let Some(spec) = &config.status_command
            && spec.command.is_empty()
        {
            bail!("{}: statusCommand.command is empty", path.display());
        }
        if let Some(spec) = &config.kpis_command {
            if spec.command.is_empty() {
                bail!("{}: kpisCommand.command is empty", path.display());
            }
            if let Some(t) = spec.timeout_seconds
                && !(t.is_finite() && t > 0.0)
            {
                bail!(
                    "{}: timeoutSeconds of kpisCommand must be positive",
                    path.display()
                );
            }
        }
        Ok(config)
    }
}

pub struct ExecBackend {
    member: String,
    data_dir: PathBuf,
    config: ExecConfig,
    faults: Mutex<Faults>,
    cache: tokio::sync::Mutex<Option<(Instant, MemberStatus)>>,
}

/// Result of running one command.
struct Outcome {
    exit: Option<i32>,
    timed_out: bool,
    elapsed: Duration,
    stdout: String,
    /// stdout went beyond what was kept (its last bytes are kept).
    stdout_cut: bool,
    stderr: String,
}

/// The request values a command gets, as `{name}` in its argv and as `BATON_<NAME>` in its
/// environment.
pub const PLACEHOLDERS: [&str; 14] = [
    "version",
    "component",
    "trust_path",
    "cert_path",
    "key_path",
    "source",
    "data_dir",
    "member",
    "role",
    "peer",
    "fingerprint",
    "copy_from",
    "task",
    "checks",
];

impl ExecBackend {
    pub fn new(
        member: String,
        data_dir: PathBuf,
        config: ExecConfig,
        faults: Faults,
    ) -> ExecBackend {
        ExecBackend {
            member,
            data_dir,
            config,
            faults: Mutex::new(faults),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    pub fn faults(&self) -> Faults {
        match self.faults.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        match self.faults.lock() {
            Ok(mut g) => *g = faults,
            Err(p) => *p.into_inner() = faults,
        }
    }

    fn secrets_dir(&self) -> PathBuf {
        self.data_dir.join("exec")
    }

    fn values(&self, req: &OperationRequest) -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        let dir = self.secrets_dir();
        v.insert("data_dir", self.data_dir.display().to_string());
        v.insert("member", self.member.clone());
        if let Some(x) = &req.version {
            v.insert("version", x.clone());
        }
        if let Some(x) = &req.component {
            v.insert("component", x.clone());
        }
        if let Some(x) = &req.source {
            v.insert("source", x.clone());
        }
        if let Some(r) = req.role {
            v.insert("role", format!("{r:?}").to_lowercase());
        }
        if let Some(x) = &req.peer {
            v.insert("peer", x.clone());
        }
        if let Some(x) = &req.fingerprint {
            v.insert("fingerprint", x.clone());
        }
        if let Some(x) = &req.copy_from {
            v.insert("copy_from", x.clone());
        }
        if let Some(x) = &req.task {
            v.insert("task", x.clone());
        }
        if !req.checks.is_empty() {
            v.insert("checks", req.checks.join(","));
        }
        if req.trust_pem.is_some() {
            v.insert("trust_path", dir.join("trust.pem").display().to_string());
        }
        if req.certificate_pem.is_some() {
            v.insert("cert_path", dir.join("cert.pem").display().to_string());
        }
        if req.key_pem.is_some() {
            v.insert("key_path", dir.join("key.pem").display().to_string());
        }
        v
    }

    /// The operation's environment: its id and kind, and `BATON_<NAME>` for every value a
    /// placeholder could take. A value the request lacks is removed rather than left empty,
    /// so one script can tell the forms of a kind apart (`add-peer` with a fingerprint or
    /// with `copyFrom`) by what is set, and a variable of that name in the agent's own
    /// environment or in the config's `env` never passes for the request's.
    fn request_env(&self, req: &OperationRequest) -> Vec<(String, Option<String>)> {
        let mut values = self.values(req);
        let mut env = vec![
            ("BATON_OPERATION_ID".to_string(), Some(req.id.clone())),
            (
                "BATON_OPERATION_KIND".to_string(),
                Some(req.kind.as_str().to_string()),
            ),
        ];
        for name in PLACEHOLDERS {
            let var = format!("BATON_{}", name.to_ascii_uppercase());
            env.push((var, values.remove(name)));
        }
        env
    }

    fn expand(&self, spec: &CommandSpec, req: &OperationRequest) -> Result<Vec<String>, ApiError> {
        let values = self.values(req);
        let mut argv = Vec::with_capacity(spec.command.len());
        for arg in &spec.command {
            let mut out = arg.clone();
            for name in PLACEHOLDERS {
                let ph = format!("{{{name}}}");
                if out.contains(&ph) {
                    let Some(value) = values.get(name) else {
                        return Err(ApiError::bad_request(
                            "missing_param",
                            format!(
                                "the {} command uses {ph} but the request gives no value for it",
                                req.kind
                            ),
                        ));
                    };
                    out = out.replace(&ph, value);
                }
            }
            argv.push(out);
        }
        Ok(argv)
    }

    pub fn validate(&self, req: &OperationRequest) -> Result<(), ApiError> {
        let Some(spec) = self.config.operations.get(req.kind.as_str()) else {
            let configured: Vec<&str> = self.config.operations.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(
                "unsupported_operation",
                format!(
                    "the exec backend has no command for {} (configured: {})",
                    req.kind,
                    if configured.is_empty() {
                        "none".to_string()
                    } else {
                        configured.join(", ")
                    }
                ),
            ));
        };
        self.expand(spec, req).map(|_| ())
    }

    fn timeout_of(&self, spec: &CommandSpec) -> Duration {
        let secs = spec
            .timeout_seconds
            .or(self.config.default_timeout_seconds)
            .unwrap_or(600.0)
            .clamp(0.001, 7.0 * 86_400.0);
        Duration::from_secs_f64(secs)
    }

    /// Runs `argv`, keeping the last `stdout_max` bytes of its stdout and the last
    /// [`OUTPUT_TAIL`] of its stderr.
    async fn run(
        &self,
        argv: &[String],
        timeout: Duration,
        extra_env: &[(String, Option<String>)],
        stdout_max: usize,
    ) -> Result<Outcome, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(self.work_dir())
            .envs(&self.config.env)
            .env("BATON_MEMBER", &self.member)
            .env("BATON_DATA_DIR", &self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so a timeout can kill the command and everything it started.
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let pid = child.id();
        let out_task = child
            .stdout
            .take()
            .map(|s| tokio::spawn(tail(s, stdout_max)));
        let err_task = child
            .stderr
            .take()
            .map(|s| tokio::spawn(tail(s, OUTPUT_TAIL)));
        let (exit, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => (status.code().or_else(|| signal_code(&status)), false),
            Ok(Err(e)) => return Err(format!("waiting for {program:?}: {e}")),
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill(2) with a negative pid signals a process group; it takes no
                    // pointers and cannot violate memory safety.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                let _ = child.wait().await;
                (None, true)
            }
        };
        let collect = |task: Option<tokio::task::JoinHandle<(String, bool)>>| async move {
            match task {
                Some(t) => tokio::time::timeout(Duration::from_secs(2), t)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_default(),
                None => (String::new(), false),
            }
        };
        let (stdout, stdout_cut) = collect(out_task).await;
        let (stderr, _) = collect(err_task).await;
        Ok(Outcome {
            exit,
            timed_out,
            elapsed: started.elapsed(),
            stdout,
            stdout_cut,
            stderr,
        })
    }

    /// The bundle `{trust_path}` holds: `trustPem`, or with `keepTrust` the listed CAs of the
    /// application's current bundle (`trustFile`) beside it, so the user command always receives
    /// the whole bundle to install.
    fn trust_bundle(&self, req: &OperationRequest) -> Result<Option<String>, String> {
        let Some(add) = &req.trust_pem else {
            return Ok(None);
        };
        if req.keep_trust.is_empty() {
            return Ok(Some(add.clone()));
        }
        let Some(file) = &self.config.trust_file else {
            return Err(
                "install-trust with keepTrust needs `trustFile` in the exec configuration: \
                 the agent keeps the listed CAs from the application's current bundle"
                    .to_string(),
            );
        };
        let path = self.work_dir().join(file);
        let current = std::fs::read(&path)
            .map_err(|e| format!("cannot read trustFile {}: {e}", path.display()))?;
        let (bundle, _) = crate::tls::merge_trust(Some(&current), add.as_bytes(), &req.keep_trust)
            .map_err(|e| e.to_string())?;
        Ok(Some(bundle))
    }

    fn write_inputs(&self, req: &OperationRequest) -> Result<(), String> {
        let dir = self.secrets_dir();
        let write = |name: &str, content: &Option<String>, private: bool| -> Result<(), String> {
            if let Some(c) = content {
                crate::persist::atomic_write(&dir.join(name), c.as_bytes(), private)
                    .map_err(|e| format!("cannot write {name}: {e:#}"))?;
            }
            Ok(())
        };
        let trust = self.trust_bundle(req)?;
        write("trust.pem", &trust, false)?;
        write("cert.pem", &req.certificate_pem, false)?;
        write("key.pem", &req.key_pem, true)?;
        Ok(())
    }

    pub async fn execute(&self, req: OperationRequest, progress: Progress) -> Ended {
        let spec = self
            .config
            .operations
            .get(req.kind.as_str())
            .ok_or_else(|| format!("no command configured for {}", req.kind))?;
        let argv = self.expand(spec, &req).map_err(|e| e.message)?;
        self.write_inputs(&req)?;
        let secrets: Vec<String> = req.key_pem.iter().cloned().collect();
        let timeout = self.timeout_of(spec);
        progress.set(
            10,
            &format!("running {}", argv.first().map(String::as_str).unwrap_or("")),
        );
        let prepare = req.kind == OperationKind::Prepare;
        // A prepare command's stdout is its findings: read whole (up to a bound), not a tail.
        let stdout_max = if prepare {
            MAX_PREPARE_OUTPUT
        } else {
            OUTPUT_TAIL
        };
        let out = self
            .run(&argv, timeout, &self.request_env(&req), stdout_max)
            .await?;
        // The status may have changed; do not serve a stale cached one.
        *self.cache.lock().await = None;
        let tails = format_tails(&out, &secrets);
        if out.timed_out {
            return Err(format!(
                "{} timed out after {:.1}s; its process group was killed{tails}",
                req.kind,
                out.elapsed.as_secs_f64()
            ));
        }
        match out.exit {
            Some(0) if prepare => {
                let stderr = stderr_tail(&out);
                if out.stdout_cut {
                    return Err(format!(
                        "prepare printed more than {MAX_PREPARE_OUTPUT} bytes on stdout; \
                         its findings were not read{stderr}"
                    ));
                }
                let findings = parse_findings(&out.stdout).map_err(|e| {
                    format!("prepare printed findings that do not parse: {e}{stderr}")
                })?;
                let found = crate::ops::describe_findings(&findings);
                progress.findings(findings);
                Ok(format!(
                    "prepare succeeded in {:.1}s (exit 0): {found}{stderr}",
                    out.elapsed.as_secs_f64()
                ))
            }
            Some(0) => Ok(format!(
                "{} succeeded in {:.1}s (exit 0){tails}",
                req.kind,
                out.elapsed.as_secs_f64()
            )),
            Some(code) => Err(format!(
                "{} failed with exit code {code} after {:.1}s{tails}",
                req.kind,
                out.elapsed.as_secs_f64()
            )),
            None => Err(format!("{} ended without an exit code{tails}", req.kind)),
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.config
            .work_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

    /// Trust and certificate from `trustFile` / `certificateFile`, where the status command
    /// said nothing of them. A file that cannot be read or parsed is a status problem (never
    /// an empty trust: the rotation's gates must not read "trusts nothing" into a typo).
    fn trust_from_files(&self, s: &mut ExecStatus) -> Result<(), String> {
        let read = |p: &PathBuf, what: &str| -> Result<Vec<u8>, String> {
            let path = self.work_dir().join(p);
            std::fs::read(&path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let wants_cert = s.certificate.is_none() && self.config.certificate_file.is_some();
        let trust_pem = match &self.config.trust_file {
            Some(p) if s.trust.is_none() || wants_cert => Some(read(p, "trustFile")?),
            _ => None,
        };
        if s.trust.is_none()
            && let Some(pem) = &trust_pem
        {
            s.trust = Some(crate::tls::fingerprints(pem, "trustFile").map_err(|e| e.to_string())?);
        }
        if s.certificate.is_none()
            && let Some(p) = &self.config.certificate_file
        {
            let pem = read(p, "certificateFile")?;
            let info = crate::tls::cert_info(&pem, trust_pem.as_deref())
                .map_err(|e| format!("certificateFile: {e}"))?;
            s.certificate = Some(info);
        }
        Ok(())
    }

    pub async fn version(&self) -> Option<String> {
        Some(self.status().await.version)
    }

    pub async fn status(&self) -> MemberStatus {
        let mut cache = self.cache.lock().await;
        if let Some((at, status)) = cache.as_ref()
            && at.elapsed() < STATUS_CACHE
        {
            return status.clone();
        }
        let status = self.fresh_status().await;
        *cache = Some((Instant::now(), status.clone()));
        status
    }

    /// What the status command printed (nothing without one), and what went wrong.
    async fn reported_status(&self) -> (ExecStatus, Option<String>) {
        let Some(spec) = &self.config.status_command else {
            return (ExecStatus::default(), None);
        };
        let problem = match self.run_for_output(spec, "status", MAX_STATUS_OUTPUT).await {
            Ok(stdout) => match serde_json::from_str::<ExecStatus>(stdout.trim()) {
                Ok(s) => return (s, None),
                Err(e) => format!(
                    "status command printed invalid JSON: {}",
                    crate::http_util::clip(&e.to_string(), 256)
                ),
            },
            Err(e) => e,
        };
        (ExecStatus::default(), Some(problem))
    }

    /// The KPIs the `kpisCommand` printed, checked; `None` without one.
    async fn reported_kpis(&self) -> Option<Result<BTreeMap<String, f64>, String>> {
        let spec = self.config.kpis_command.as_ref()?;
        let kpis = match self.run_for_output(spec, "kpis", MAX_KPIS_OUTPUT).await {
            Ok(stdout) => parse_kpis(&stdout).map_err(|e| format!("kpis command printed {e}")),
            Err(e) => Err(e),
        };
        Some(kpis)
    }

    /// Runs a status-side command (`what`: `status`, `kpis`) and returns its stdout, or why
    /// it gave none: it could not start, timed out, failed, or printed more than `max` bytes.
    async fn run_for_output(
        &self,
        spec: &CommandSpec,
        what: &str,
        max: usize,
    ) -> Result<String, String> {
        let out = self
            .run(&spec.command, self.timeout_of(spec), &[], max)
            .await
            .map_err(|e| format!("{what} command: {e}"))?;
        if out.timed_out {
            return Err(format!("{what} command timed out"));
        }
        if out.exit != Some(0) {
            return Err(format!(
                "{what} command failed (exit {:?}){}",
                out.exit,
                format_tails(&out, &[])
            ));
        }
        if out.stdout_cut {
            return Err(format!("{what} command printed more than {max} bytes"));
        }
        Ok(out.stdout)
    }

    async fn fresh_status(&self) -> MemberStatus {
        let ((reported, mut problem), from_command) =
            tokio::join!(self.reported_status(), self.reported_kpis());
        let mut add_problem = |e: String| {
            problem = Some(match problem.take() {
                Some(p) => format!("{p}; {e}"),
                None => e,
            });
        };
        let mut s = reported.or(&self.config.status);
        if let Err(e) = self.trust_from_files(&mut s) {
            add_problem(e);
        }
        if let Some(media) = &s.media
            && let Err(e) = check_media(media)
        {
            // Not trusted in part: a version listed by mistake could have the operator start
            // an upgrade without its media. Nothing is reported staged; the status is
            // unavailable until the command reports a valid list.
            s.media = None;
            add_problem(e);
        }
        // Likewise no KPI is reported from an output with one bad entry: a baseline taken
        // from part of the KPIs would compare the wrong things after the upgrade.
        let kpis = match from_command {
            Some(Ok(kpis)) => kpis,
            Some(Err(e)) => {
                add_problem(e);
                BTreeMap::new()
            }
            None => match s.kpis.take() {
                Some(kpis) => match check_kpis(&kpis) {
                    Ok(()) => kpis,
                    Err(e) => {
                        add_problem(format!("status kpis: {e}"));
                        BTreeMap::new()
                    }
                },
                None => BTreeMap::new(),
            },
        };
        let mut alarms = s.alarms.unwrap_or_default();
        if let Some(p) = problem {
            alarms.push(Alarm {
                code: alarm_codes::STATUS_UNAVAILABLE,
                severity: Health::Critical,
                name: "StatusUnavailable".to_string(),
                since: jiff::Timestamp::now(),
                message: Some(p),
            });
        }
        let worst = alarms
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Health::Ok);
        let role = s.role.unwrap_or(Role::Standby);
        MemberStatus {
            member: self.member.clone(),
            version: s.version.unwrap_or_else(|| "unknown".to_string()),
            components: s.components.unwrap_or_default(),
            previous_version: s.previous_version,
            role,
            serving: s.serving.unwrap_or(false),
            health: s.health.unwrap_or(Health::Ok).max(worst),
            alarms,
            replication: s.replication.unwrap_or_default(),
            data_endpoint: s.data_endpoint.unwrap_or_default(),
            load: self.faults().load.or(s.load),
            trust: s.trust.unwrap_or_default(),
            certificate: s.certificate,
            presented_issuers: s.presented_issuers.unwrap_or_default(),
            handshake_failures: Default::default(),
            identity: s.identity,
            peers: s.peers.unwrap_or_default(),
            config_digest: s.config_digest,
            retired: s.retired.unwrap_or(false),
            tasks: s.tasks.unwrap_or_default(),
            media: s.media.unwrap_or_default(),
            kpis,
            operation: None,
        }
    }
}

crate::debug_shows_only!(ExecBackend, member);

/// The `media` a status command (or `status.media`) reports: at most [`MAX_MEDIA`] versions,
/// each a valid version, none twice. The error names the first problem, briefly.
fn check_media(media: &[String]) -> Result<(), String> {
    if media.len() > MAX_MEDIA {
        return Err(format!(
            "status media lists {} versions; at most {MAX_MEDIA}",
            media.len()
        ));
    }
    for (i, v) in media.iter().enumerate() {
        crate::ops::validate_version(v).map_err(|e| format!("status media: {}", e.message))?;
        if media[..i].contains(v) {
            return Err(format!("status media lists {v} twice"));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn signal_code(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal().map(|s| 128 + s)
}

/// The KPIs a `kpisCommand` printed: a JSON object of numbers, or lines `name value`
/// (blank lines ignored), checked with [`check_kpis`], no name twice. The error names the
/// first problem briefly, quoting what was printed only as an excerpt.
pub fn parse_kpis(stdout: &str) -> Result<BTreeMap<String, f64>, String> {
    let text = stdout.trim();
    let mut kpis = BTreeMap::new();
    if text.starts_with('{') {
        // Strict: a name given twice is refused, not resolved by order.
        let value = crate::ops::parse_json_value_strict(text.as_bytes())
            .map_err(|e| format!("invalid JSON: {}", e.message))?;
        let Some(object) = value.as_object() else {
            return Err("invalid JSON: not an object".to_string());
        };
        for (name, v) in object {
            let Some(x) = v.as_f64() else {
                return Err(format!(
                    "KPI {} with a value that is not a number",
                    excerpt(name)
                ));
            };
            kpis.insert(name.clone(), x);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let (name, value) = match (words.next(), words.next(), words.next()) {
                (None, _, _) => continue,
                (Some(name), Some(value), None) => (name, value),
                _ => {
                    return Err(format!(
                        "line {} {} that is not `name value`",
                        i + 1,
                        excerpt(line)
                    ));
                }
            };
            let Ok(x) = value.parse::<f64>() else {
                return Err(format!(
                    "line {}: KPI {} with the value {}, not a number",
                    i + 1,
                    excerpt(name),
                    excerpt(value)
                ));
            };
            if kpis.insert(name.to_string(), x).is_some() {
                return Err(format!("line {}: KPI {} twice", i + 1, excerpt(name)));
            }
        }
    }
    check_kpis(&kpis).map_err(|e| format!("invalid KPIs: {e}"))?;
    Ok(kpis)
}

/// Reads a stream to its end, keeping only its last `max` bytes; true when more came.
async fn tail<R: tokio::io::AsyncRead + Unpin>(mut r: R, max: usize) -> (String, bool) {
    let mut keep: Vec<u8> = Vec::new();
    let mut cut_any = false;
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > max * 2 {
                    let cut = keep.len() - max;
                    keep.drain(..cut);
                    cut_any = true;
                }
            }
        }
    }
    if keep.len() > max {
        let cut = keep.len() - max;
        keep.drain(..cut);
        cut_any = true;
    }
    (String::from_utf8_lossy(&keep).into_owned(), cut_any)
}

/// The last [`OUTPUT_TAIL`] bytes of `text` (from a character boundary).
fn last_part(text: &str) -> &str {
    let mut start = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `; stderr: ...` with the last [`OUTPUT_TAIL`] bytes of stderr, or nothing.
fn stderr_tail(out: &Outcome) -> String {
    let stderr = last_part(out.stderr.trim());
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

/// The findings a `prepare` command printed: a JSON array of finding objects (`check`,
/// `severity`, `code`, `message`; severity `Blocking`/`Warning` in any letter case), or lines
/// `SEVERITY CHECK CODE MESSAGE...` (MESSAGE the rest of the line; blank lines and lines
/// starting with `#` ignored); nothing printed is no findings. Each finding is checked with
/// [`check_finding`]; its message is cut to [`crate::api::MAX_FINDING_MESSAGE`] characters.
/// The error names the first problem briefly: the finding's position in the array, or the
/// line (quoted as an excerpt).
pub fn parse_findings(stdout: &str) -> Result<Vec<Finding>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Printed {
        check: String,
        severity: String,
        code: String,
        message: String,
    }
    let text = stdout.trim();
    let mut findings = Vec::new();
    if text.starts_with('[') {
        let value = crate::ops::parse_json_value_strict(text.as_bytes())
            .map_err(|e| format!("invalid JSON: {}", e.message))?;
        let Some(items) = value.as_array() else {
            return Err("invalid JSON: not an array".to_string());
        };
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            let p: Printed = serde_json::from_value(item.clone()).map_err(|e| {
                format!(
                    "finding {n}: {}",
                    crate::http_util::clip(&e.to_string(), 256)
                )
            })?;
            let Some(severity) = FindingSeverity::parse(&p.severity) else {
                return Err(format!(
                    "finding {n}: severity {} must be Blocking or Warning",
                    excerpt(&p.severity)
                ));
            };
            let f = Finding::new(p.check, severity, p.code, p.message);
            check_finding(&f).map_err(|e| format!("finding {n}: {e}"))?;
            findings.push(f);
        }
        return Ok(findings);
    }
    /// The first word of `s` and what follows it, or `None` when `s` is blank.
    fn word(s: &str) -> Option<(&str, &str)> {
        let s = s.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        (end > 0).then(|| (&s[..end], &s[end..]))
    }
    for (i, line) in stdout.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parsed = word(trimmed).and_then(|(severity, rest)| {
            let (check, rest) = word(rest)?;
            let (code, rest) = word(rest)?;
            let message = rest.trim();
            (!message.is_empty()).then_some((severity, check, code, message))
        });
        let Some((severity, check, code, message)) = parsed else {
            return Err(format!(
                "line {n} {} is not `SEVERITY CHECK CODE MESSAGE`",
                excerpt(trimmed)
            ));
        };
        let Some(severity) = FindingSeverity::parse(severity) else {
            return Err(format!(
                "line {n}: severity {} must be blocking or warning",
                excerpt(severity)
            ));
        };
        let f = Finding::new(check, severity, code, message);
        check_finding(&f).map_err(|e| format!("line {n}: {e}"))?;
        findings.push(f);
    }
    Ok(findings)
}

fn format_tails(out: &Outcome, secrets: &[String]) -> String {
    let mut s = String::new();
    let stdout = redact(out.stdout.trim(), secrets);
    let stderr = redact(out.stderr.trim(), secrets);
    let (stdout, stderr) = (last_part(&stdout), last_part(&stderr));
    if !stdout.is_empty() {
        s.push_str(&format!("; stdout: {stdout}"));
    }
    if !stderr.is_empty() {
        s.push_str(&format!("; stderr: {stderr}"));
    }
    s
}

/// Removes private-key PEM blocks and any line of a known secret from command output.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with("-----BEGIN") && trimmed.contains("PRIVATE KEY") {
            in_key = true;
            out.push_str("[redacted private key]\n");
            continue;
        }
        if in_key {
            if trimmed.starts_with("-----END") {
                in_key = false;
            }
            continue;
        }
        out.push_str(line);
    }
    for secret in secrets {
        for secret_line in secret.lines().map(str::trim).filter(|l| l.len() >= 16) {
            out = out.replace(secret_line, "[redacted]");
        }
    }
    out
}

pub fn shared(
    member: String,
    data_dir: PathBuf,
    config: ExecConfig,
    faults: Faults,
) -> Arc<ExecBackend> {
    Arc::new(ExecBackend::new(member, data_dir, config, faults))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_keys() {
        let text = "ok\n-----BEGIN PRIVATE KEY-----\nABCDEFGHIJKLMNOPQRSTUV\n-----END PRIVATE KEY-----\ndone ZYXWVUTSRQPONMLKJIHG\n";
        let r = redact(
            text,
            &["-----BEGIN PRIVATE KEY-----\nZYXWVUTSRQPONMLKJIHG\n".to_string()],
        );
        assert!(!r.contains("ABCDEFGHIJ"));
        assert!(!r.contains("ZYXWVUTSRQ"));
        assert!(r.contains("done"));
    }

    #[test]
    fn kpis_are_read_as_a_json_object_or_as_lines() {
        let want: BTreeMap<String, f64> =
            [("writeRate", 12.5), ("errorCount", 0.0), ("lag.s", -1e-3)]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
        let json = r#" {"writeRate": 12.5, "errorCount": 0, "lag.s": -1e-3} "#;
        assert_eq!(parse_kpis(json), Ok(want.clone()));
        let lines = "writeRate 12.5\n\n  errorCount\t0\r\nlag.s -0.001\n";
        assert_eq!(parse_kpis(lines), Ok(want));
        assert_eq!(parse_kpis(""), Ok(BTreeMap::new()));
        assert_eq!(parse_kpis("{}"), Ok(BTreeMap::new()));
        assert_eq!(parse_kpis("\n \n"), Ok(BTreeMap::new()));
        let at_bound: String = (0..crate::api::MAX_KPIS)
            .map(|i| format!("k{i} {i}\n"))
            .collect();
        assert_eq!(parse_kpis(&at_bound).map(|k| k.len()), Ok(32));
    }

    #[test]
    fn invalid_kpis_output_is_refused_with_a_short_reason() {
        let over_lines: String = (0..=crate::api::MAX_KPIS)
            .map(|i| format!("k{i} {i}\n"))
            .collect();
        let over_json = format!(
            "{{{}}}",
            (0..=crate::api::MAX_KPIS)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let huge = "x".repeat(100_000);
        let huge_line = format!("{huge} 1");
        let cases: [(&str, &str); 17] = [
            ("9lives 1", "KPI name \"9lives\""),
            ("write/rate 1", "KPI name"),
            (r#"{"bad name": 1}"#, "KPI name \"bad name\""),
            ("writeRate fast", "not a number"),
            ("writeRate", "not `name value`"),
            ("writeRate 1 2", "not `name value`"),
            (
                "writeRate 1\nwriteRate 2",
                "line 2: KPI \"writeRate\" twice",
            ),
            ("writeRate inf", "not a finite number"),
            ("writeRate NaN", "not a finite number"),
            ("writeRate -infinity", "not a finite number"),
            ("writeRate 1e999", "not a finite number"),
            (r#"{"writeRate": "12"}"#, "not a number"),
            (r#"{"writeRate": null}"#, "not a number"),
            (r#"{"writeRate": 1e999}"#, "invalid JSON"),
            (r#"{"writeRate": 1, "writeRate": 2}"#, "invalid JSON"),
            (&over_lines, "33 KPIs; at most 32"),
            (&over_json, "33 KPIs; at most 32"),
        ];
        for (output, want) in cases {
            let e = parse_kpis(output).err().unwrap_or_default();
            assert!(e.contains(want), "{output:?}: {e}");
        }
        for output in [
            r#"["writeRate", 1]"#,
            r#"{"writeRate": 1"#,
            r#"{"a": {"b": 1}}"#,
        ] {
            assert!(parse_kpis(output).is_err(), "{output}");
        }
        for output in [huge.as_str(), huge_line.as_str()] {
            let e = parse_kpis(output).err().unwrap_or_default();
            assert!(!e.is_empty() && e.len() < 400, "{} bytes", e.len());
        }
    }

    #[test]
    fn status_media_must_be_few_distinct_valid_versions() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_media(&[]), Ok(()));
        assert_eq!(check_media(&list(&["1.0.0", "2.0.0-rc.1"])), Ok(()));
        let eight: Vec<String> = (0..MAX_MEDIA).map(|i| format!("1.{i}")).collect();
        assert_eq!(check_media(&eight), Ok(()));
        let nine: Vec<String> = (0..=MAX_MEDIA).map(|i| format!("1.{i}")).collect();
        let huge = "x".repeat(100_000);
        let cases: [(Vec<String>, &str); 5] = [
            (nine, "9 versions; at most 8"),
            (list(&["1.0.0", "1 0"]), "version"),
            (list(&[""]), "version"),
            (list(&[huge.as_str()]), "version"),
            (list(&["2.0.0", "1.0.0", "2.0.0"]), "lists 2.0.0 twice"),
        ];
        for (media, want) in cases {
            let e = check_media(&media).err().unwrap_or_default();
            assert!(e.contains(want), "{e}");
            assert!(e.len() < 300, "{e}");
        }
    }

    #[test]
    fn findings_are_read_as_a_json_array_or_as_lines() {
        use crate::api::FindingSeverity::{Blocking, Warning};
        let want = vec![
            Finding::new(
                "installConfig",
                Blocking,
                "ConfigDrift",
                "max_connections is 200 on the host, 100 in the install config",
            ),
            Finding::new(
                "scheduledJobs",
                Warning,
                "ScheduledJobDropped",
                "nightly-report",
            ),
        ];
        let json = r#"
            [{"check": "installConfig", "severity": "Blocking", "code": "ConfigDrift",
              "message": "max_connections is 200 on the host, 100 in the install config"},
             {"check": "scheduledJobs", "severity": "warning", "code": "ScheduledJobDropped",
              "message": "nightly-report"}]
        "#;
        assert_eq!(parse_findings(json), Ok(want.clone()));
        let lines = "# preparation checks\n\nblocking installConfig ConfigDrift   max_connections is 200 on the host, 100 in the install config  \r\n  # done with the config\nWARNING\tscheduledJobs ScheduledJobDropped nightly-report\n";
        assert_eq!(parse_findings(lines), Ok(want));
        for nothing in ["", "  \n", "[]", "# nothing found\n"] {
            assert_eq!(parse_findings(nothing), Ok(Vec::new()), "{nothing:?}");
        }
        // Long messages are cut, and there is no bound on the count here (the journal's).
        let long = format!("warning c Long {}", "x".repeat(1000));
        let parsed = parse_findings(&long).unwrap_or_default();
        assert_eq!(parsed[0].message.chars().count(), 256);
        let many: String = (0..100).map(|i| format!("warning c C{i} m{i}\n")).collect();
        assert_eq!(parse_findings(&many).map(|f| f.len()), Ok(100));
    }

    #[test]
    fn findings_output_that_does_not_parse_is_refused_naming_the_line() {
        let huge = "x".repeat(100_000);
        let huge_line = format!("blocking c {huge} m");
        let cases: [(&str, &str); 14] = [
            (
                "blocking c",
                "line 1 \"blocking c\" is not `SEVERITY CHECK CODE MESSAGE`",
            ),
            ("warning c Code", "line 1 \"warning c Code\" is not"),
            (
                "warning c Code fine\nfatal c Code m",
                "line 2: severity \"fatal\" must be blocking or warning",
            ),
            ("warning bad_check Code m", "line 1: check \"bad_check\""),
            ("\n\nwarning c Not-Camel m", "line 3: code \"Not-Camel\""),
            ("{\"check\": \"c\"}", "line 1 "),
            (
                r#"[{"check": "c", "severity": "Fatal", "code": "C", "message": "m"}]"#,
                "finding 1: severity \"Fatal\" must be Blocking or Warning",
            ),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C", "message": "m"},
                 {"check": "c c", "severity": "Warning", "code": "C", "message": "m"}]"#,
                "finding 2: check \"c c\"",
            ),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C_1", "message": "m"}]"#,
                "finding 1: code \"C_1\"",
            ),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C", "message": " "}]"#,
                "finding 1: finding C of c has no message",
            ),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C"}]"#,
                "finding 1: missing field `message`",
            ),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C", "message": "m", "x": 1}]"#,
                "finding 1: unknown field `x`",
            ),
            (r#"["c"]"#, "finding 1"),
            (
                r#"[{"check": "c", "severity": "Warning", "code": "C", "message": "m"}"#,
                "invalid JSON",
            ),
        ];
        for (output, want) in cases {
            let e = parse_findings(output).err().unwrap_or_default();
            assert!(e.contains(want), "{output:?}: {e}");
        }
        for output in [huge.as_str(), huge_line.as_str()] {
            let e = parse_findings(output).err().unwrap_or_default();
            assert!(!e.is_empty() && e.len() < 400, "{} bytes", e.len());
        }
    }
}
