//! End-to-end support: fleets of real `baton-agent` processes on 127.0.0.1 (reusing the agent
//! crate's test helpers), manifests pointing at them, and the `baton` binary.
#![allow(dead_code)]

#[path = "../../../agent/tests/common/mod.rs"]
pub mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_agent::api::{OperationKind, OperationRecord, Role};
pub use common::*;

/// One cluster of the fleet: `members` agents named m0.., m0 active.
pub struct ClusterDef {
    pub name: &'static str,
    pub role: &'static str,
    pub members: usize,
    /// Extra agent flags for member index i.
    pub extra: Vec<(usize, Vec<String>)>,
}

impl ClusterDef {
    pub fn new(name: &'static str, role: &'static str, members: usize) -> Self {
        ClusterDef {
            name,
            role,
            members,
            extra: vec![],
        }
    }

    pub fn with(mut self, member: usize, flags: &[&str]) -> Self {
        self.extra
            .push((member, flags.iter().map(|s| s.to_string()).collect()));
        self
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    /// Cluster → its agents, m0 first.
    pub clusters: BTreeMap<String, Vec<Agent>>,
}

fn pki_name(cluster: &str, i: usize) -> String {
    format!("{cluster}-m{i}")
}

impl Fleet {
    pub async fn start(
        defs: &[ClusterDef],
        version: &str,
        upgrade_seconds: f64,
    ) -> TestResult<Fleet> {
        let dir = tempfile::Builder::new().prefix("baton-e2e").tempdir()?;
        let names: Vec<String> = defs
            .iter()
            .flat_map(|d| (0..d.members).map(|i| pki_name(d.name, i)))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pki = Pki::new(&dir.path().join("pki"), &refs)?;
        // What `baton run --tls-dir` reads (gen-certs names).
        std::fs::write(pki.dir.join("client.crt"), &pki.client.cert_pem)?;
        std::fs::write(pki.dir.join("client.key"), &pki.client.key_pem)?;
        let mut clusters = BTreeMap::new();
        for d in defs {
            let mut agents: Vec<Agent> = Vec::new();
            for i in 0..d.members {
                let pname = pki_name(d.name, i);
                let mut args = pki.args(&pname);
                args.extend([
                    "--version".into(),
                    version.into(),
                    "--upgrade-seconds".into(),
                    upgrade_seconds.to_string(),
                ]);
                if i == 0 {
                    args.extend(["--role".into(), "active".into()]);
                } else {
                    args.extend([
                        "--role".into(),
                        "standby".into(),
                        "--source".into(),
                        agents[0].data.clone(),
                    ]);
                }
                for (m, flags) in &d.extra {
                    if *m == i {
                        args.extend(flags.iter().cloned());
                    }
                }
                let a =
                    Agent::start(&pname, &dir.path().join(&pname), pki.client_tls(), args).await?;
                agents.push(a);
            }
            clusters.insert(d.name.to_string(), agents);
        }
        Ok(Fleet { dir, pki, clusters })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Cluster manifest for cluster `name` (spec extras indented by two spaces, under spec).
    pub fn cluster_yaml(&self, name: &str, role: &str, spec_extra: &str) -> String {
        let mut members = String::new();
        for (i, a) in self.clusters[name].iter().enumerate() {
            members.push_str(&format!(
                "  - name: m{i}\n    endpoint: https://{}\n",
                a.control
            ));
        }
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  role: {role}\n  members:\n{members}{spec_extra}---\n"
        )
    }

    pub fn write(&self, file: &str, content: &str) -> TestResult<PathBuf> {
        let p = self.path(file);
        std::fs::write(&p, content)?;
        Ok(p)
    }

    /// Every operation record of every agent, by (cluster, member name m0..).
    pub async fn records(&self) -> TestResult<BTreeMap<(String, String), Vec<OperationRecord>>> {
        let mut out = BTreeMap::new();
        for (c, agents) in &self.clusters {
            for (i, a) in agents.iter().enumerate() {
                out.insert((c.clone(), format!("m{i}")), a.client.operations().await?);
            }
        }
        Ok(out)
    }

    /// A bounded write load on the cluster, following whichever member is active.
    pub fn write_load(&self, cluster: &str) -> TestResult<WriteLoad> {
        let mut clients = Vec::new();
        for (i, a) in self.clusters[cluster].iter().enumerate() {
            clients.push(a.data_client(self.pki.data_tls(&pki_name(cluster, i))?)?);
        }
        Ok(WriteLoad::start(clients, 200_000, Duration::from_secs(300)))
    }

    /// Acknowledged writes missing from any member of the cluster once replication settled.
    pub async fn lost_writes(&self, cluster: &str, report: &WriteReport) -> TestResult<usize> {
        let agents = &self.clusters[cluster];
        let mut lost = 0;
        for (i, a) in agents.iter().enumerate() {
            let c = a.data_client(self.pki.data_tls(&pki_name(cluster, i))?)?;
            for (k, v) in &report.acked {
                // Followers may still be applying: poll briefly before calling it lost.
                let found = wait_until(
                    &format!("{k} on {}", a.name),
                    Duration::from_secs(10),
                    || async {
                        match c.get(k).await {
                            Ok(Some(got)) if &got == v => Some(true),
                            _ => None,
                        }
                    },
                )
                .await
                .is_ok();
                if !found {
                    lost += 1;
                }
            }
        }
        Ok(lost)
    }

    /// Role and version of every member, by cluster.
    pub async fn roles(&self) -> TestResult<BTreeMap<String, Vec<(Role, String)>>> {
        let mut out = BTreeMap::new();
        for (c, agents) in &self.clusters {
            let mut v = Vec::new();
            for a in agents {
                let s = a.status().await?;
                v.push((s.role, s.version));
            }
            out.insert(c.clone(), v);
        }
        Ok(out)
    }
}

/// Runs `program` in `dir` and fails the test with its output unless it exits 0; its stdout.
pub fn sh(dir: &Path, program: &str, args: &[&str]) -> TestResult<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        return Err(err(format!("{program} {args:?}: {}", text(&out))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A finished process's exit code and output, for a failure message.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `baton` binary under test.
pub fn baton() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    c.env("RUST_LOG", "warn");
    c
}

/// Arguments for `baton run` against this fleet.
pub fn run_args(files: &[&Path], state: &Path, certs: &Path) -> Vec<String> {
    let mut v = vec!["run".to_string()];
    for f in files {
        v.push("-f".into());
        v.push(f.display().to_string());
    }
    v.extend([
        "--state".into(),
        state.display().to_string(),
        "--tls-dir".into(),
        certs.display().to_string(),
        "--busy-poll".into(),
        "100ms".into(),
    ]);
    v
}

/// Time span of a record.
pub fn span(r: &OperationRecord) -> (jiff::Timestamp, jiff::Timestamp) {
    (r.started_at, r.finished_at.unwrap_or(r.started_at))
}

pub fn is_move(r: &OperationRecord) -> bool {
    matches!(r.kind, OperationKind::Upgrade | OperationKind::Rollback)
}

/// `examples/agents.sh CMD DIR` (the demo agents of an example's `agents.tsv`) with fast demo
/// operations and this build's agent binary.
pub fn example_agents(dir: &Path, cmd: &str) -> TestResult<std::process::Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents.sh");
    let mut c = std::process::Command::new("bash");
    c.arg(script)
        .arg(cmd)
        .arg(dir)
        .env("UPGRADE_SECONDS", "1")
        .env("TASK_SECONDS", "0.3")
        .env("STAGE_SECONDS", "0.5");
    let agent = Path::new(env!("CARGO_BIN_EXE_baton")).with_file_name("baton-agent");
    if agent.exists() {
        c.env("BATON_AGENT", &agent);
    }
    Ok(c.output()?)
}

/// A private copy of `examples/<name>` under `tmp` (agents.sh writes certificates, pids and
/// logs under its `.run/`) with its demo agents started; they stop when the guard drops.
pub fn start_example(tmp: &Path, name: &str) -> TestResult<ExampleAgents> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    for f in std::fs::read_dir(example)? {
        let f = f?;
        if f.file_type()?.is_file() {
            std::fs::copy(f.path(), dir.join(f.file_name()))?;
        }
    }
    let agents = ExampleAgents { dir };
    let started = example_agents(&agents.dir, "start")?;
    if !started.status.success() {
        return Err(format!("agents.sh start: {}", text(&started)).into());
    }
    Ok(agents)
}

/// The running demo agents of an example copy (see [`start_example`]).
pub struct ExampleAgents {
    pub dir: PathBuf,
}

impl Drop for ExampleAgents {
    fn drop(&mut self) {
        let _ = example_agents(&self.dir, "stop");
    }
}
