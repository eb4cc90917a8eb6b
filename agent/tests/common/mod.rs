//! Helpers shared by the integration tests (and the switchover benchmark): a throw-away PKI,
//! agents run as real processes on 127.0.0.1, and bounded polling.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use baton_agent::api::{
    MemberStatus, OperationKind, OperationRecord, OperationRequest, OperationState,
};
use baton_agent::client::{AgentClient, ClientTls};
use baton_agent::data::DataClient;
use baton_agent::pki::{CertAuthority, CertSpec, IssuedCert};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn err(msg: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
    msg.into().into()
}

/// Generous: the machine may be loaded by other builds and tests.
pub const STARTUP: Duration = Duration::from_secs(60);
pub const CONVERGE: Duration = Duration::from_secs(60);

/// A control CA (agent server cert + operator client cert) and a mesh CA (member certs),
/// written to files the agents read.
pub struct Pki {
    pub dir: PathBuf,
    pub control_ca: CertAuthority,
    pub server: IssuedCert,
    pub client: IssuedCert,
    pub mesh_ca: CertAuthority,
    pub members: BTreeMap<String, IssuedCert>,
}

impl Pki {
    pub fn new(dir: &Path, members: &[&str]) -> TestResult<Pki> {
        std::fs::create_dir_all(dir)?;
        let control_ca = CertAuthority::generate("test control CA")?;
        let server = control_ca.issue(&CertSpec::server("agent"))?;
        let client = control_ca.issue(&CertSpec::client("operator"))?;
        let mesh_ca = CertAuthority::generate("test mesh CA")?;
        let mut map = BTreeMap::new();
        for m in members {
            map.insert(m.to_string(), mesh_ca.issue(&CertSpec::member(m))?);
        }
        let pki = Pki {
            dir: dir.to_path_buf(),
            control_ca,
            server,
            client,
            mesh_ca,
            members: map,
        };
        std::fs::write(dir.join("ca.crt"), pki.control_ca.cert_pem())?;
        std::fs::write(dir.join("server.crt"), &pki.server.cert_pem)?;
        std::fs::write(dir.join("server.key"), &pki.server.key_pem)?;
        std::fs::write(dir.join("trust.pem"), pki.mesh_ca.cert_pem())?;
        for (name, cert) in &pki.members {
            std::fs::write(dir.join(format!("{name}.crt")), &cert.cert_pem)?;
            std::fs::write(dir.join(format!("{name}.key")), &cert.key_pem)?;
        }
        Ok(pki)
    }

    pub fn client_tls(&self) -> ClientTls {
        ClientTls::mtls(
            self.control_ca.cert_pem(),
            &self.client.cert_pem,
            &self.client.key_pem,
        )
    }

    /// Data-port credentials: the mesh trust and a member certificate.
    pub fn data_tls(&self, member: &str) -> TestResult<ClientTls> {
        let cert = self
            .members
            .get(member)
            .ok_or_else(|| err(format!("no certificate for {member}")))?;
        Ok(ClientTls::mtls(
            self.mesh_ca.cert_pem(),
            &cert.cert_pem,
            &cert.key_pem,
        ))
    }

    /// Arguments giving an agent its control TLS and member identity.
    pub fn args(&self, member: &str) -> Vec<String> {
        let p = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            p("server.crt"),
            "--tls-key".into(),
            p("server.key"),
            "--client-ca".into(),
            p("ca.crt"),
            "--member-cert".into(),
            p(&format!("{member}.crt")),
            "--member-key".into(),
            p(&format!("{member}.key")),
            "--trust".into(),
            p("trust.pem"),
        ]
    }
    /// The operator's TLS client configuration for the control API, for raw requests.
    pub fn control_client_config(
        &self,
    ) -> TestResult<std::sync::Arc<baton_agent::tls::ClientConfig>> {
        Ok(baton_agent::tls::client_config(
            self.control_ca.cert_pem().as_bytes(),
            Some((
                self.client.cert_pem.as_bytes(),
                self.client.key_pem.as_bytes(),
            )),
            "test",
        )?)
    }
}

/// A scratch directory holding a PKI for some members; agents started from it live in
/// `<dir>/<member>`.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub pki: Pki,
}

impl Fixture {
    pub fn new(members: &[&str]) -> TestResult<Fixture> {
        let tmp = tempdir()?;
        let pki = Pki::new(&tmp.path().join("pki"), members)?;
        Ok(Fixture { tmp, pki })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Starts `member` with its TLS arguments followed by `extra`.
    pub async fn start(&self, member: &str, extra: &[&str]) -> TestResult<Agent> {
        self.start_with_nofile(member, extra, None).await
    }

    /// Like `start`, with the process's descriptor limit set to `nofile`.
    pub async fn start_with_nofile(
        &self,
        member: &str,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> TestResult<Agent> {
        let mut args = self.pki.args(member);
        args.extend(extra.iter().map(|s| s.to_string()));
        let dir = self.path().join(member);
        Agent::start_with_nofile(member, &dir, self.pki.client_tls(), args, nofile).await
    }

    /// A fixture of the one member `m1`, and `m1` started Active with `extra`.
    pub async fn active_m1(extra: &[&str]) -> TestResult<(Fixture, Agent)> {
        let fx = Fixture::new(&["m1"])?;
        let m1 = fx.start_m1_active(extra).await?;
        Ok((fx, m1))
    }

    /// Starts `m1` Active with `extra`.
    pub async fn start_m1_active(&self, extra: &[&str]) -> TestResult<Agent> {
        self.start("m1", &[&["--role", "active"], extra].concat())
            .await
    }

    /// `m1` Active (with `extra1`) and `m2` a standby replicating from it (with `extra2`);
    /// the caller decides whether to wait for `m2` to catch up.
    pub async fn active_standby(
        &self,
        extra1: &[&str],
        extra2: &[&str],
    ) -> TestResult<(Agent, Agent)> {
        let m1 = self.start_m1_active(extra1).await?;
        let m2 = self
            .start("m2", &[&["--source", m1.data.as_str()], extra2].concat())
            .await?;
        Ok((m1, m2))
    }

    /// A fixture of the members `m1` and `m2`, and its `caught_up_pair`.
    pub async fn new_caught_up_pair(
        extra1: &[&str],
        extra2: &[&str],
    ) -> TestResult<(Fixture, Agent, Agent)> {
        let fx = Fixture::new(&["m1", "m2"])?;
        let (m1, m2) = fx.caught_up_pair(extra1, extra2).await?;
        Ok((fx, m1, m2))
    }

    /// `active_standby`, once `m2` has caught up with `m1`.
    pub async fn caught_up_pair(
        &self,
        extra1: &[&str],
        extra2: &[&str],
    ) -> TestResult<(Agent, Agent)> {
        let (m1, m2) = self.active_standby(extra1, extra2).await?;
        wait_caught_up(&m2, &m1).await?;
        Ok((m1, m2))
    }

    /// A data client for each agent, with that agent's own member certificate.
    pub fn data_clients(&self, agents: &[&Agent]) -> TestResult<Vec<DataClient>> {
        agents
            .iter()
            .map(|a| a.data_client(self.pki.data_tls(&a.name)?))
            .collect()
    }
}

/// A `baton-agent` process.
pub struct Agent {
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub control: String,
    pub data: String,
    pub client: AgentClient,
    tls: ClientTls,
    child: Option<Child>,
    /// Soft and hard RLIMIT_NOFILE of the process, when the test set one.
    nofile: Option<u64>,
    /// Variables set in the process's environment, beside the test's own.
    env: Vec<(String, String)>,
}

/// The agent executable: this package's, or (when the operator's tests include this module)
/// the one the workspace build puts next to `baton`; `BATON_AGENT_BIN` overrides both.
pub fn binary() -> String {
    if let Ok(p) = std::env::var("BATON_AGENT_BIN") {
        return p;
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_baton-agent") {
        return p.to_string();
    }
    let baton = option_env!("CARGO_BIN_EXE_baton").unwrap_or("baton");
    Path::new(baton)
        .with_file_name("baton-agent")
        .display()
        .to_string()
}

impl Agent {
    /// Starts an agent; `args` are everything but `--member` and `--data-dir`.
    pub async fn start(
        name: &str,
        data_dir: &Path,
        tls: ClientTls,
        args: Vec<String>,
    ) -> TestResult<Agent> {
        Agent::start_with_nofile(name, data_dir, tls, args, None).await
    }

    /// Like `start`, with the process's descriptor limit (soft and hard) set to `nofile`.
    pub async fn start_with_nofile(
        name: &str,
        data_dir: &Path,
        tls: ClientTls,
        args: Vec<String>,
        nofile: Option<u64>,
    ) -> TestResult<Agent> {
        Agent::launch(name, data_dir, tls, args, nofile, Vec::new()).await
    }

    /// Like `start`, with `env` set in the process's environment.
    pub async fn start_with_env(
        name: &str,
        data_dir: &Path,
        tls: ClientTls,
        args: Vec<String>,
        env: &[(&str, &str)],
    ) -> TestResult<Agent> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Agent::launch(name, data_dir, tls, args, None, env).await
    }

    async fn launch(
        name: &str,
        data_dir: &Path,
        tls: ClientTls,
        args: Vec<String>,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> TestResult<Agent> {
        let mut full = vec![
            "--member".to_string(),
            name.to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        full.extend(args);
        let log = data_dir.with_extension("log");
        let (child, control, data) = spawn(&full, &log, nofile, &env).await?;
        let client = AgentClient::new(&control, tls.clone())?.with_member(name);
        Ok(Agent {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            log,
            args: full,
            control,
            data,
            client,
            tls,
            child: Some(child),
            nofile,
            env,
        })
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) -> TestResult {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        }
        Ok(())
    }

    /// Waits for the process to exit on its own (e.g. the crashMidUpgrade fault).
    pub async fn wait_exit(&mut self, timeout: Duration) -> TestResult<Option<i32>> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| err("agent not running"))?;
        let status = tokio::time::timeout(timeout, child.wait()).await??;
        self.child = None;
        Ok(status.code())
    }

    /// Starts the process again with the same arguments, optionally with extra ones.
    pub async fn restart(&mut self, extra: &[&str]) -> TestResult {
        self.kill().await?;
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, control, data) = spawn(&args, &self.log, self.nofile, &self.env).await?;
        self.client = AgentClient::new(&control, self.tls.clone())?.with_member(&self.name);
        self.control = control;
        self.data = data;
        self.child = Some(child);
        Ok(())
    }

    pub async fn status(&self) -> TestResult<MemberStatus> {
        Ok(self.client.status().await?)
    }

    /// Submits and waits for the operation to finish.
    pub async fn run(&self, req: &OperationRequest) -> TestResult<OperationRecord> {
        self.client.submit(req).await?;
        Ok(self
            .client
            .wait(&req.id, CONVERGE, Duration::from_millis(20))
            .await?)
    }

    /// Like `run`, but the operation must succeed.
    pub async fn run_ok(&self, req: &OperationRequest) -> TestResult<OperationRecord> {
        let rec = self.run(req).await?;
        if rec.state != OperationState::Succeeded {
            return Err(err(format!(
                "{} {} on {}: {:?}: {}",
                req.kind, req.id, self.name, rec.state, rec.message
            )));
        }
        Ok(rec)
    }

    pub fn data_client(&self, tls: ClientTls) -> TestResult<DataClient> {
        Ok(DataClient::new(&self.data, tls)?)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

async fn spawn(
    args: &[String],
    log: &Path,
    nofile: Option<u64>,
    env: &[(String, String)],
) -> TestResult<(Child, String, String)> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(binary());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STARTUP, lines.next_line())
        .await
        .map_err(|_| {
            err(format!(
                "agent did not report its ports within {STARTUP:?}; see {}",
                log.display()
            ))
        })??
        .ok_or_else(|| {
            err(format!(
                "agent exited before listening; see {}",
                log.display()
            ))
        })?;
    // Keep draining stdout so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let mut control = None;
    let mut data = None;
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("control=") {
            control = Some(v.to_string());
        }
        if let Some(v) = word.strip_prefix("data=") {
            data = Some(v.to_string());
        }
    }
    let control = control.ok_or_else(|| err(format!("unexpected first line {line:?}")))?;
    Ok((child, control, data.unwrap_or_default()))
}

/// Polls `check` until it returns `Some`, at most `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `follower` has applied everything `leader` holds and reports no lag.
pub async fn wait_caught_up(follower: &Agent, leader: &Agent) -> TestResult<u64> {
    wait_until(
        &format!("{} to catch up with {}", follower.name, leader.name),
        CONVERGE,
        || async {
            let l = leader.client.status().await.ok()?;
            let f = follower.client.status().await.ok()?;
            (f.replication.applied_index == l.replication.applied_index
                && f.replication.lag_entries == 0
                && f.replication.connected)
                .then_some(f.replication.applied_index)
        },
    )
    .await
}

/// The documented switchover: demote the old active to follow the standby, wait
/// until the standby has applied the old active's final index, promote the standby.
pub async fn switchover(
    old: &Agent,
    new: &Agent,
    tag: &str,
) -> TestResult<(OperationRecord, OperationRecord)> {
    let demote = old
        .run_ok(
            &OperationRequest::new(format!("{tag}-demote"), OperationKind::Demote)
                .with_source(&new.data),
        )
        .await?;
    let final_index = old.status().await?.replication.applied_index;
    wait_until(
        &format!("{} to reach index {final_index}", new.name),
        CONVERGE,
        || async {
            let s = new.client.status().await.ok()?;
            (s.replication.applied_index >= final_index && s.replication.lag_entries == 0)
                .then_some(())
        },
    )
    .await?;
    let promote = new
        .run_ok(&OperationRequest::new(
            format!("{tag}-promote"),
            OperationKind::Promote,
        ))
        .await?;
    Ok((demote, promote))
}

/// Whether `status` carries an alarm named `name`.
pub fn has_alarm(status: &MemberStatus, name: &str) -> bool {
    status.alarms.iter().any(|a| a.name == name)
}

/// The error `call` must end in; `what` says what it did instead.
pub async fn refused<T, E>(call: impl Future<Output = Result<T, E>>, what: &str) -> TestResult<E> {
    call.await.err().ok_or_else(|| err(what))
}

pub fn tempdir() -> TestResult<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("baton-agent-test")
        .tempdir()?)
}

/// What a write load observed.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Every acknowledged write, in acknowledgement order.
    pub acked: Vec<(String, String)>,
    pub attempts: u64,
    /// Write-unavailability windows: from the first failed attempt after a success to the
    /// next acknowledged write.
    pub windows: Vec<Duration>,
}

pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: tokio::task::JoinHandle<WriteReport>,
}

impl WriteLoad {
    /// Writes unique keys to whichever member accepts them, moving to the next member on a
    /// refusal or failure. Bounded by `max_attempts` and `max_time`.
    pub fn start(clients: Vec<DataClient>, max_attempts: u64, max_time: Duration) -> WriteLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = WriteReport::default();
            let mut current = 0usize;
            let mut outage_start: Option<Instant> = None;
            let mut failures_in_row = 0usize;
            while !stop2.load(Ordering::SeqCst)
                && report.attempts < max_attempts
                && started.elapsed() < max_time
                && !clients.is_empty()
            {
                report.attempts += 1;
                let key = format!("w{}", report.attempts);
                let value = format!("v{}-{}", report.attempts, started.elapsed().as_micros());
                let attempt_start = Instant::now();
                match clients[current].put(&key, &value).await {
                    Ok(_) => {
                        if let Some(start) = outage_start.take() {
                            report.windows.push(start.elapsed());
                        }
                        failures_in_row = 0;
                        report.acked.push((key, value));
                        acked2.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        outage_start.get_or_insert(attempt_start);
                        failures_in_row += 1;
                        current = (current + 1) % clients.len();
                        if failures_in_row >= clients.len() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            report
        });
        WriteLoad {
            stop,
            acked,
            handle,
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` writes were acknowledged.
    pub async fn wait_acked(&self, n: u64) -> TestResult {
        wait_until(&format!("{n} acknowledged writes"), CONVERGE, || async {
            (self.acked() >= n).then_some(())
        })
        .await
    }

    pub async fn stop(self) -> TestResult<WriteReport> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.handle.await?)
    }
}

/// p-th percentile (0..=100) of durations, nearest-rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
