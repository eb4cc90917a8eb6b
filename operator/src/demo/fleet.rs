//! The demo's agent processes: certificates, starting `baton __agent` children on 127.0.0.1,
//! learning their ports from `ready.json`, and stopping every one of them — on success, on
//! error, on Ctrl-C and on panic (the [`Fleet`] stops its children when dropped).
//!
//! Each agent runs in its own process group (a terminal Ctrl-C reaches only `baton demo`,
//! which then stops the runner before the agents) and is asked by the kernel to die with its
//! parent (`PR_SET_PDEATHSIG`), so even a `kill -9` of the demo leaves no agent behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_agent::api::ReadyInfo;
use baton_agent::cli::{GenCertsArgs, READY_FILE};
use baton_agent::client::ClientTls;
use serde::{Deserialize, Serialize};

/// Name of the member certificate the write load presents on the data ports.
pub const LOAD_IDENTITY: &str = "load-writer";

/// Where the generated certificates are.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A control CA (agent server + operator client certificates) and a mesh CA (one member
    /// certificate per agent, plus one for the write load), valid a week.
    pub fn generate(dir: &Path, agents: &[String]) -> anyhow::Result<Pki> {
        let mut members = agents.to_vec();
        members.push(LOAD_IDENTITY.to_string());
        baton_agent::cli::gen_certs(&GenCertsArgs {
            out: dir.to_path_buf(),
            members,
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
            days: 7,
        })
        .context("generating the demo certificates")?;
        Ok(Pki {
            dir: dir.to_path_buf(),
        })
    }

    /// The mesh CA the members' data-port certificates come from: (certificate, key), PEM.
    pub fn mesh_ca(&self) -> anyhow::Result<(String, String)> {
        Ok((self.read("mesh-ca.crt")?, self.read("mesh-ca.key")?))
    }

    fn read(&self, name: &str) -> anyhow::Result<String> {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// What Baton presents to the agents' control API.
    pub fn control_tls(&self) -> anyhow::Result<ClientTls> {
        Ok(ClientTls::mtls(
            self.read("ca.crt")?,
            self.read("client.crt")?,
            self.read("client.key")?,
        ))
    }

    /// What the write load presents to the members' data ports.
    pub fn data_tls(&self) -> anyhow::Result<ClientTls> {
        Ok(ClientTls::mtls(
            self.read("trust.pem")?,
            self.read(&format!("member-{LOAD_IDENTITY}.crt"))?,
            self.read(&format!("member-{LOAD_IDENTITY}.key"))?,
        ))
    }

    /// The write load's certificate and key (PEM), issued by the mesh CA.
    pub fn data_identity(&self) -> anyhow::Result<(String, String)> {
        Ok((
            self.read(&format!("member-{LOAD_IDENTITY}.crt"))?,
            self.read(&format!("member-{LOAD_IDENTITY}.key"))?,
        ))
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// How to start one agent.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub cluster: String,
    pub member: String,
    /// The agent's own name (unique in the mesh).
    pub agent: String,
    pub active: bool,
    /// Data endpoint of the member to follow (standbys).
    pub source: Option<String>,
    pub version: String,
}

/// A running agent.
#[derive(Debug)]
pub struct AgentProc {
    pub cluster: String,
    pub member: String,
    pub agent: String,
    /// Control API, `127.0.0.1:port`.
    pub control: String,
    /// Data port, `127.0.0.1:port`.
    pub data: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

/// What `agents.json` (in the demo directory) records of each agent, so that tests and
/// people can check that none outlives the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentRecord {
    pub cluster: String,
    pub member: String,
    pub agent: String,
    pub pid: u32,
    pub control: String,
    pub data: String,
    pub log: PathBuf,
}

pub const AGENTS_FILE: &str = "agents.json";

/// Every agent the demo started. Dropping it stops them.
pub struct Fleet {
    root: PathBuf,
    pki: Pki,
    exe: PathBuf,
    upgrade_seconds: f64,
    restart_seconds: f64,
    pub agents: Vec<AgentProc>,
}

impl Fleet {
    /// `upgrade_seconds` and `restart_seconds`: how long an upgrade and a restart (the
    /// `restart` step of a CA rotation) take on the agents.
    pub fn new(
        root: &Path,
        pki: Pki,
        upgrade_seconds: f64,
        restart_seconds: f64,
    ) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("locating the baton executable")?;
        Ok(Fleet {
            root: root.to_path_buf(),
            pki,
            exe,
            upgrade_seconds,
            restart_seconds,
            agents: Vec::new(),
        })
    }

    /// Start one agent and wait until it serves (its `ready.json` names its ports).
    pub async fn start(&mut self, spec: &AgentSpec) -> anyhow::Result<&AgentProc> {
        let dir = self.root.join("agents");
        let data_dir = dir.join(&spec.agent);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log = dir.join(format!("{}.log", spec.agent));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let p = |n: &str| self.pki.path(n);
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__agent")
            .args(["--member", &spec.agent])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0"])
            .args(["--version", &spec.version])
            .args(["--role", if spec.active { "active" } else { "standby" }])
            .args(["--upgrade-seconds", &format!("{}", self.upgrade_seconds)])
            .args(["--restart-seconds", &format!("{}", self.restart_seconds)])
            .args([
                "--tls-cert",
                &p("server.crt"),
                "--tls-key",
                &p("server.key"),
            ])
            .args(["--client-ca", &p("ca.crt"), "--trust", &p("trust.pem")])
            .args(["--member-cert", &p(&format!("member-{}.crt", spec.agent))])
            .args(["--member-key", &p(&format!("member-{}.key", spec.agent))]);
        if let Some(s) = &spec.source {
            cmd.args(["--source", s]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nobody would kill us.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting agent {}", spec.agent))?;
        let pid = child.id();
        self.agents.push(AgentProc {
            cluster: spec.cluster.clone(),
            member: spec.member.clone(),
            agent: spec.agent.clone(),
            control: String::new(),
            data: String::new(),
            pid,
            data_dir: data_dir.clone(),
            log: log.clone(),
            child,
        });
        self.record()?;
        let ready = self.wait_ready(self.agents.len() - 1).await?;
        let a = self.agents.last_mut().context("agent just started")?;
        a.control = ready.control;
        a.data = ready.data;
        self.record()?;
        self.agents.last().context("agent just started")
    }

    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<ReadyInfo> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = self.agents[i].data_dir.join(READY_FILE);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(r) = serde_json::from_str::<ReadyInfo>(&text)
                && r.pid == self.agents[i].pid
            {
                return Ok(r);
            }
            let a = &mut self.agents[i];
            if let Some(status) = a.child.try_wait().context("waiting for an agent")? {
                bail!(
                    "agent {} exited during startup ({status}); its log {}:\n{}",
                    a.agent,
                    a.log.display(),
                    tail(&a.log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent {} did not write {} within 30 s; its log {}:\n{}",
                    a.agent,
                    path.display(),
                    a.log.display(),
                    tail(&a.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn record(&self) -> anyhow::Result<()> {
        let recs: Vec<AgentRecord> = self
            .agents
            .iter()
            .map(|a| AgentRecord {
                cluster: a.cluster.clone(),
                member: a.member.clone(),
                agent: a.agent.clone(),
                pid: a.pid,
                control: a.control.clone(),
                data: a.data.clone(),
                log: a.log.clone(),
            })
            .collect();
        let body = serde_json::to_vec_pretty(&recs).context("encoding agents.json")?;
        Ok(crate::local::state::write_atomic(
            &self.root.join(AGENTS_FILE),
            &body,
        )?)
    }

    pub fn get(&self, cluster: &str, member: &str) -> Option<&AgentProc> {
        self.agents
            .iter()
            .find(|a| a.cluster == cluster && a.member == member)
    }

    /// Agents whose process ended although nobody asked it to: `(agent, how, log tail)`.
    pub fn exited(&mut self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for a in &mut self.agents {
            if let Ok(Some(status)) = a.child.try_wait() {
                out.push((a.agent.clone(), status.to_string(), tail(&a.log)));
            }
        }
        out
    }

    /// Stop every agent: SIGTERM to its process group, SIGKILL after 3 s, and reap it.
    pub fn stop(&mut self) {
        if self.agents.is_empty() {
            return;
        }
        for a in &mut self.agents {
            if matches!(a.child.try_wait(), Ok(None)) {
                signal_group(a.pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && self
                .agents
                .iter_mut()
                .any(|a| matches!(a.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for a in &mut self.agents {
            if matches!(a.child.try_wait(), Ok(None)) {
                signal_group(a.pid, libc::SIGKILL);
                let _ = a.child.wait();
            }
        }
        self.agents.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pid: u32, sig: i32) {
    let Ok(pgid) = i32::try_from(pid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group the agent leads (each
    // agent was started with process_group(0), so its group id is its pid).
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    lines[from..].join("\n")
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; `Z` is a zombie (dead, not yet reaped).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
