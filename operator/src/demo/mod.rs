//! `baton demo`: a real mesh of `baton-agent` processes on 127.0.0.1, upgraded by the same
//! reconcile loop as `baton run` (manifests written to a temporary directory, loaded with
//! [`crate::local::load`], driven by [`crate::local::Runner`] over mutual TLS) while a write
//! load runs against the active members, with the invariants checked from the agents' side.
//!
//! Scenarios: a plain upgrade, an upgrade where one worker cluster fails its post-switchover
//! traffic check and is rolled back automatically, a full backout to the old version, a
//! phased rotation of the members' CA (`rotation.rs`), and a cluster resized: a member added,
//! switched over to, and an original one removed (`scale.rs`).

pub mod display;
pub mod fleet;
pub mod load;
pub mod rotation;
pub mod scale;
mod setup;
pub mod topology;
mod verdict;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::ClusterPhase;
use crate::local::{Runner, Settled, load as load_manifests};
use crate::reconcile::{AgentMembers, Timing};

use display::{Display, LoadView};
use fleet::{Fleet, Pki};
use load::{LoadCounters, LoadResult, Writer};
use setup::Traffic;
use topology::{ClusterLayout, ManifestSettings};
use watch::ClusterRecords;

/// What the demo shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Upgrade every cluster, tier by tier.
    Upgrade,
    /// One worker cluster fails its post-switchover traffic check and is rolled back
    /// automatically; the others complete.
    Rollback,
    /// Upgrade, then set the old version back: tiers in reverse order.
    Backout,
    /// Rotate the members' data-port CA under the write load (no version change).
    RotateCa,
    /// Under the write load, add a member to a cluster, switch over to it, and remove an
    /// original member (no version change).
    Scale,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Upgrade => "upgrade",
            Scenario::Rollback => "rollback",
            Scenario::Backout => "backout",
            Scenario::RotateCa => "rotate-ca",
            Scenario::Scale => "scale",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub scenario: Scenario,
    /// Clusters in all: one management cluster and `clusters - 1` workers.
    pub clusters: usize,
    pub members: usize,
    /// Duration of one member upgrade (or rollback) on the demo agents.
    pub upgrade_seconds: f64,
    /// Duration of one member restart (a CA rotation's `restart` step) on the demo agents.
    pub restart_seconds: f64,
    /// rotate-ca: force `RemoveOldTrust` once every cluster is in `Reissue` (see
    /// `rotation`): the refused handshakes it causes fail the run.
    pub force_remove_old_trust: bool,
    pub from: String,
    pub to: String,
    /// Worker clusters moving at once.
    pub parallel: usize,
    /// Post-switchover traffic check timeout, in seconds.
    pub traffic_timeout: u64,
    /// Keep the directory (manifests, state, agent logs) and print its path.
    pub keep: bool,
    /// Progress bars (else plain lines).
    pub bars: bool,
    /// Give up (exit non-zero) after this long.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: Scenario::Upgrade,
            clusters: 4,
            members: 2,
            upgrade_seconds: 4.0,
            restart_seconds: 1.0,
            force_remove_old_trust: false,
            from: "1.0.0".into(),
            to: "2.0.0".into(),
            parallel: 2,
            traffic_timeout: 5,
            keep: false,
            bars: false,
            timeout: Duration::from_secs(600),
        }
    }
}

impl DemoOptions {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(2..=12).contains(&self.clusters) {
            bail!("--clusters must be 2 to 12 (one management cluster and at least one worker)");
        }
        if !(2..=5).contains(&self.members) {
            bail!(
                "--members must be 2 to 5 (a switchover needs a standby; one-member clusters need an outage)"
            );
        }
        if !(self.upgrade_seconds.is_finite() && (0.0..=600.0).contains(&self.upgrade_seconds)) {
            bail!("--upgrade-seconds must be between 0 and 600");
        }
        if !(self.restart_seconds.is_finite() && (0.0..=600.0).contains(&self.restart_seconds)) {
            bail!("--restart-seconds must be between 0 and 600");
        }
        if self.parallel == 0 {
            bail!("--parallel must be at least 1");
        }
        if self.traffic_timeout == 0 {
            bail!("--traffic-timeout must be at least 1 second");
        }
        for (flag, v) in [("--from", &self.from), ("--to", &self.to)] {
            v.parse::<crate::api::Version>()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
        if crate::api::values::cmp_versions(&self.to, &self.from).is_le() {
            bail!(
                "--to ({}) must be newer than --from ({})",
                self.to,
                self.from
            );
        }
        Ok(())
    }
}

/// How the demo ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DemoEnd {
    /// Every invariant held and the outcome matched the scenario.
    Passed,
    /// Invariant breaches or an unexpected outcome, each named.
    Failed(Vec<String>),
}

/// Marker in the demo directory: who owns it, whether to keep it.
#[derive(Serialize, Deserialize)]
struct Owner {
    pid: u32,
    keep: bool,
}

const OWNER_FILE: &str = "baton-demo.json";
const DIR_PREFIX: &str = "baton-demo-";

/// Remove demo directories left behind by demos that were killed (their owner is gone and
/// they were not kept). Only directories carrying the demo's marker file are touched.
pub fn remove_stale_dirs(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let is_demo = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_demo || !path.is_dir() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
            continue;
        };
        if !owner.keep && owner.pid != std::process::id() && !fleet::alive(owner.pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Where the demo's files are.
struct Workdir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    keep: bool,
}

impl Workdir {
    fn create(keep: bool) -> anyhow::Result<Workdir> {
        let tmp = std::env::temp_dir();
        remove_stale_dirs(&tmp);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&tmp)
            .with_context(|| format!("creating a directory in {}", tmp.display()))?;
        let path = dir.path().to_path_buf();
        let owner = serde_json::to_vec(&Owner {
            pid: std::process::id(),
            keep,
        })?;
        std::fs::write(path.join(OWNER_FILE), owner)
            .with_context(|| format!("writing {}", path.join(OWNER_FILE).display()))?;
        Ok(Workdir {
            dir: Some(dir),
            path,
            keep,
        })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if self.keep {
                let _ = d.keep();
            } else {
                let _ = d.close();
            }
        }
    }
}

/// A cluster at the end: (name, phase, (member, version as its agent reports it)).
pub type FinalCluster = (String, String, Vec<(String, String)>);

/// Everything the summary reports.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub elapsed: Duration,
    pub switchovers: usize,
    pub acked: u64,
    pub lost: usize,
    pub refused: u64,
    pub passes: u64,
    pub state_writes: u64,
    pub actions: u64,
    /// The cluster that could not write for longest, and how long.
    pub worst_window: Option<(String, Duration)>,
    pub clusters: Vec<FinalCluster>,
    pub tier_order: Vec<String>,
    /// The rotate-ca scenario's findings.
    pub rotation: Option<RotationSummary>,
    /// The scale scenario's findings.
    pub scale: Option<scale::ScaleSummary>,
}

/// What the rotate-ca scenario reports.
#[derive(Clone, Debug, Default)]
pub struct RotationSummary {
    pub old_ca: String,
    pub new_ca: String,
    /// Each phase in order, with its duration across the fleet and per cluster.
    pub phases: Vec<rotation::PhaseSpan>,
    /// From the Secret rewritten to every cluster `Done`.
    pub total: Duration,
    /// TLS handshakes the agents refused while the rotation ran (their own counters).
    pub handshakes_refused: u64,
    /// One line per agent and peer that refused some.
    pub handshake_lines: Vec<String>,
    /// When the write load presented the new CA's certificate, after the Secret was rewritten.
    pub client_switched: Option<Duration>,
}

/// Run the demo, printing progress and the summary on stdout.
///
/// `interrupt` set (by a Ctrl-C handler) makes the reconcile loop stop after the pass in
/// progress; the caller then drops this future, which stops every agent and removes the
/// directory (dropping it at any other point is safe too: a pass cut half-way is a crash,
/// which the runner's persist-before-act order makes harmless).
pub async fn run(opts: DemoOptions, interrupt: Arc<AtomicBool>) -> anyhow::Result<DemoEnd> {
    opts.validate()?;
    let work = Workdir::create(opts.keep)?;
    // The Fleet is declared after the directory, so it is dropped (agents stopped) first.
    let mut demo = Demo::new(opts, &work.path)?;
    demo.interrupt = interrupt;
    let end = demo.run().await;
    demo.shutdown();
    let end = end?;
    if work.keep {
        println!("kept: {}", work.path.display());
        println!(
            "  baton status --state {}",
            work.path.join("state.json").display()
        );
    }
    Ok(end)
}

struct Demo {
    opts: DemoOptions,
    root: PathBuf,
    layout: Vec<ClusterLayout>,
    fleet: Option<Fleet>,
    pki: Option<Pki>,
    stop_load: Arc<AtomicBool>,
    stop_watch: Arc<AtomicBool>,
    breaches: Arc<Mutex<Vec<String>>>,
    display: Option<Display>,
    interrupt: Arc<AtomicBool>,
    /// The rotate-ca scenario: the identity the writers present (changed as the rotation
    /// asks of clients), until the rotation takes it.
    identity: Option<tokio::sync::watch::Sender<baton_agent::client::ClientTls>>,
    /// The rotate-ca scenario, once the Secret is rewritten.
    rotation: Option<rotation::CaRotation>,
    /// The scale scenario, once the first edit is written.
    scale: Option<scale::ScaleWatch>,
}

impl Demo {
    fn new(opts: DemoOptions, root: &Path) -> anyhow::Result<Demo> {
        let layout = if opts.scenario == Scenario::Scale {
            topology::scale_layout(opts.clusters, opts.members)
        } else {
            topology::layout(opts.clusters, opts.members)
        };
        Ok(Demo {
            opts,
            root: root.to_path_buf(),
            layout,
            fleet: None,
            pki: None,
            stop_load: Arc::new(AtomicBool::new(false)),
            stop_watch: Arc::new(AtomicBool::new(false)),
            breaches: Arc::new(Mutex::new(Vec::new())),
            display: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            identity: None,
            rotation: None,
            scale: None,
        })
    }

    fn fault_cluster(&self) -> Option<&str> {
        (self.opts.scenario == Scenario::Rollback).then(|| {
            // The last worker of the first wave: the others of that wave complete beside it.
            let workers = self.opts.clusters - 1;
            let w = self.opts.parallel.min(workers).max(1);
            self.layout[w].name.as_str()
        })
    }

    fn shutdown(&mut self) {
        self.stop_load.store(true, Ordering::Relaxed);
        self.stop_watch.store(true, Ordering::Relaxed);
        if let Some(d) = &mut self.display {
            d.finish();
        }
        if let Some(mut f) = self.fleet.take() {
            f.stop();
        }
    }

    fn line(&self, s: &str) {
        match &self.display {
            Some(d) => d.line(s),
            None => println!("{s}"),
        }
    }

    /// The demo from start to verdict: each step is one function (setting up in `setup.rs`,
    /// the rollout below, judging in `verdict.rs`).
    async fn run(&mut self) -> anyhow::Result<DemoEnd> {
        let started = Instant::now();
        self.announce();
        let (pki, agents) = self.start_agents().await?;
        let (manifest_dir, settings) = self.write_manifests(&agents)?;
        let reach = self.reach(&pki, &agents)?;
        self.inject_fault(&reach.watched).await?;
        let mut traffic = self.start_traffic(&reach)?;
        self.start_display();

        let state = self.root.join("state.json");
        let deadline = started + self.opts.timeout;
        let (rollout, mut failures) = if self.opts.scenario == Scenario::RotateCa {
            self.rotate_ca(&manifest_dir, &state, &reach, &mut traffic, deadline)
                .await?
        } else if self.opts.scenario == Scenario::Scale {
            let manifests = scale::Manifests {
                dir: &manifest_dir,
                settings: &settings,
                agents: &agents,
            };
            self.scale(&manifests, &state, &reach, &mut traffic, deadline)
                .await?
        } else {
            self.rollout(
                &manifest_dir,
                &settings,
                &state,
                &reach.control_tls,
                &mut traffic,
                deadline,
            )
            .await?
        };

        // After a rotation, members accept only certificates of the new CA.
        let read_tls = match &self.rotation {
            Some(r) => r.new_tls.clone(),
            None => reach.data_tls.clone(),
        };
        let (loads, verifications) = self.stop_and_read_back(traffic, &reach, &read_tls).await?;
        let (records, mut summary) = self
            .read_records(&reach.watched, &rollout, started, &mut failures)
            .await?;
        verdict::check_writes(&loads, &verifications, &mut summary, &mut failures);
        if self.opts.scenario == Scenario::Scale {
            self.check_scale(&reach.watched, &loads, &mut summary, &mut failures)
                .await?;
        }
        if self.opts.scenario == Scenario::RotateCa {
            self.check_rotation(&reach.watched, &state, &mut summary, &mut failures)
                .await?;
        } else {
            self.check_final_state(&reach.watched, &state, &mut summary, &mut failures)
                .await?;
        }
        self.conclude(&summary, &records, &state, &manifest_dir, failures)
    }

    /// Phase 1, the upgrade; in the backout scenario, when it went well, phase 2: the old
    /// version set back, as a user would edit the Mesh. With the phases, how they did not end
    /// as the scenario expects.
    async fn rollout(
        &mut self,
        manifest_dir: &Path,
        settings: &ManifestSettings,
        state: &Path,
        tls: &baton_agent::client::ClientTls,
        traffic: &mut Traffic,
        deadline: Instant,
    ) -> anyhow::Result<(Rollout, Vec<String>)> {
        let o = self.opts.clone();
        let phase1 = Timestamp::now();
        let mut stats = crate::local::RunnerStats::default();
        let mut failures = Vec::new();
        let (first, failure) = self
            .phase(manifest_dir, state, tls, traffic, deadline, true)
            .await?;
        add_stats(&mut stats, &first);
        failures.extend(failure);
        let mut phase2 = None;
        if o.scenario == Scenario::Backout && failures.is_empty() && self.breached().is_empty() {
            // Phase 2: set the old version back, as a user would edit the Mesh.
            let back = ManifestSettings {
                version: o.from.clone(),
                ..settings.clone()
            };
            write(&manifest_dir.join("mesh.yaml"), &topology::mesh_yaml(&back))?;
            self.line(&format!(
                "\n  backout: mesh demo set back to {} in {} — tiers in reverse order\n",
                o.from,
                manifest_dir.join("mesh.yaml").display()
            ));
            phase2 = Some(Timestamp::now());
            let (second, failure) = self
                .phase(manifest_dir, state, tls, traffic, deadline, false)
                .await?;
            add_stats(&mut stats, &second);
            failures.extend(failure);
        }
        if let Some(d) = &mut self.display {
            d.finish();
        }
        Ok((
            Rollout {
                phase1,
                phase2,
                stats,
            },
            failures,
        ))
    }

    fn breached(&self) -> Vec<String> {
        self.breaches.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// One phase of the rollout: drive the loop until it settles; its counts, and what is
    /// wrong with how it settled (`with_fault`: the fault cluster, if the scenario has one,
    /// should have been rolled back).
    async fn phase(
        &mut self,
        manifest_dir: &Path,
        state: &Path,
        tls: &baton_agent::client::ClientTls,
        traffic: &mut Traffic,
        deadline: Instant,
        with_fault: bool,
    ) -> anyhow::Result<(crate::local::RunnerStats, Option<String>)> {
        let (settled, stats) = self
            .drive(manifest_dir, state, tls, traffic, deadline)
            .await?;
        let fault = if with_fault {
            self.fault_cluster()
        } else {
            None
        };
        Ok((stats, check_settled(&settled, fault).err()))
    }

    /// Run the reconcile loop on the manifests until it settles (or a breach, or the deadline).
    async fn drive(
        &mut self,
        manifest_dir: &Path,
        state: &Path,
        tls: &baton_agent::client::ClientTls,
        traffic: &mut Traffic,
        deadline: Instant,
    ) -> anyhow::Result<(Settled, crate::local::RunnerStats)> {
        let (counters, load) = (&traffic.counters, &mut traffic.load);
        let manifests = load_manifests(&[manifest_dir.to_path_buf()])
            .map_err(|e| anyhow::anyhow!("the demo manifests do not load:\n{e}"))?;
        let members = AgentMembers::new(tls)?;
        let mut runner = Runner::new(members, &manifests, state)?.with_timing(Timing {
            busy: Duration::from_millis(200),
            resync: Duration::from_secs(5),
        });
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let report = runner.pass().await?;
            if let Some(r) = &mut self.rotation {
                r.timeline
                    .observe(runner.clusters(), &r.new_fp, Instant::now());
            }
            if let Some(w) = &mut self.scale {
                w.observe(runner.clusters(), Instant::now());
            }
            if self.opts.force_remove_old_trust
                && let Some(over) = self.force_removal(runner.clusters(), state)?
            {
                return Ok((over, runner.stats().clone()));
            }
            // The writers start once the mesh has started its rollout: the mesh checks that no
            // follower is behind before it starts, which no live write load satisfies at
            // every instant (see docs/demo.md).
            if runner
                .meshes()
                .iter()
                .any(|m| m.status.as_ref().is_some_and(|s| s.rollout.is_some()))
            {
                load.start();
            }
            let view = load_view(counters);
            if let Some(d) = &mut self.display {
                for (obj, e) in &report.events {
                    d.event(obj, e);
                }
                d.update(runner.clusters(), runner.meshes(), &view);
            }
            let fleet = self.fleet.as_mut().context("agents")?;
            let exited = fleet.exited();
            if !exited.is_empty() {
                for (agent, how, log) in exited {
                    if let Ok(mut b) = self.breaches.lock() {
                        b.push(format!("agent {agent} exited ({how}); log tail:\n{log}"));
                    }
                }
            }
            if !self.breached().is_empty() {
                return Ok((
                    Settled::Blocked(vec![("demo".into(), "invariant breached".into())]),
                    runner.stats().clone(),
                ));
            }
            match runner.settled() {
                Settled::No => {}
                s => return Ok((s, runner.stats().clone())),
            }
            if self.interrupt.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            if Instant::now() > deadline {
                self.line(&format!(
                    "  giving up: the rollout did not settle within {:?}",
                    self.opts.timeout
                ));
                return Ok((Settled::No, runner.stats().clone()));
            }
            let wake = tokio::time::Instant::from_std(runner.next_wake());
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    _ = tick.tick() => {
                        if self.interrupt.load(Ordering::Relaxed) {
                            bail!("interrupted");
                        }
                        if let Some(d) = &self.display {
                            d.tick(runner.meshes(), &load_view(counters));
                        }
                    }
                }
            }
        }
    }

    fn final_phases(&self, state: &Path) -> anyhow::Result<Vec<(String, ClusterPhase)>> {
        let st = crate::local::State::load(state)?;
        Ok(st
            .clusters
            .iter()
            .map(|(n, o)| {
                (
                    n.clone(),
                    o.status.as_ref().map(|s| s.phase).unwrap_or_default(),
                )
            })
            .collect())
    }

    fn print_summary(
        &self,
        s: &Summary,
        records: &[ClusterRecords],
        state: &Path,
        manifests: &Path,
    ) {
        let o = &self.opts;
        let members: usize = self.layout.iter().map(|c| c.members.len()).sum();
        let ops: usize = records.iter().map(|c| c.records.len()).sum();
        println!("\nSummary ({} scenario)", o.scenario.name());
        row("elapsed", format!("{:.1} s", s.elapsed.as_secs_f64()));
        let workers = self.layout.len() - 1;
        row(
            "clusters",
            if o.scenario == Scenario::RotateCa {
                format!(
                    "{} in one Mesh declaring the CA, {members} members",
                    self.layout.len()
                )
            } else {
                format!(
                    "{} (1 management, {workers} worker{}), {members} members",
                    self.layout.len(),
                    if workers == 1 { "" } else { "s" }
                )
            },
        );
        row(
            "switchovers",
            format!(
                "{} (promotes in the agents' records; {ops} operations in all)",
                s.switchovers
            ),
        );
        row(
            "writes",
            format!(
                "{} acknowledged, {} lost (read back from every member)",
                s.acked, s.lost
            ),
        );
        row(
            "write unavailability",
            match &s.worst_window {
                Some((c, w)) if !w.is_zero() => format!(
                    "worst {:.2} s (cluster {c}); {} writes refused in all",
                    w.as_secs_f64(),
                    s.refused
                ),
                _ => "none".to_string(),
            },
        );
        for t in &s.tier_order {
            row("tier order", t.clone());
        }
        if let Some(r) = &s.rotation {
            print_rotation(r);
        }
        if let Some(r) = &s.scale {
            scale::print_scale(r);
        }
        println!("  final state");
        for (c, phase, versions) in &s.clusters {
            let v: Vec<String> = versions.iter().map(|(m, v)| format!("{m} {v}")).collect();
            println!("    {c:<12} {phase:<11} {}", v.join(", "));
        }
        row(
            "reconcile loop",
            format!(
                "{} passes, {} state writes, {} operations sent",
                s.passes, s.state_writes, s.actions
            ),
        );
        if o.keep {
            row("state file", state.display().to_string());
            row("manifests", manifests.display().to_string());
        } else {
            row(
                "files",
                format!("{} (removed; --keep keeps them)", self.root.display()),
            );
        }
    }
}

/// One row of the summary: its label in a column, then the value.
fn row(label: &str, value: String) {
    println!("  {label:<20} {value}");
}

/// The rotate-ca scenario's rows of the summary.
fn print_rotation(r: &RotationSummary) {
    row(
        "CA",
        format!(
            "{} → {} (SHA-256 of the roots, first 12 digits)",
            &r.old_ca[..r.old_ca.len().min(12)],
            &r.new_ca[..r.new_ca.len().min(12)]
        ),
    );
    println!(
        "  rotation phases      (from status.certificates.phase; fleet: first cluster in → last out)"
    );
    for p in &r.phases {
        let per: Vec<String> = p
            .clusters
            .iter()
            .map(|(c, d)| format!("{c} {:.1} s", d.as_secs_f64()))
            .collect();
        println!(
            "    {:<18} {:>6.1} s   ({})",
            p.phase,
            p.span.as_secs_f64(),
            per.join(", ")
        );
    }
    println!(
        "    {:<18} {:>6.1} s   (Secret rewritten → every cluster Done)",
        "total",
        r.total.as_secs_f64()
    );
    if let Some(t) = r.client_switched {
        row(
            "load client",
            format!(
                "trusted both CAs from the start; presented the new CA's certificate from \
                 {:.1} s on (every member trusted it)",
                t.as_secs_f64()
            ),
        );
    }
    row(
        "TLS handshakes",
        format!(
            "{} refused during the rotation (the agents' own counters, every peer{})",
            r.handshakes_refused,
            if r.handshake_lines.is_empty() {
                String::new()
            } else {
                format!(": {}", r.handshake_lines.join("; "))
            }
        ),
    );
}

/// When the phases of the rollout started, and what the reconcile loop did in them.
struct Rollout {
    /// The upgrade.
    phase1: Timestamp,
    /// The backout, when the scenario has one and the upgrade went well.
    phase2: Option<Timestamp>,
    stats: crate::local::RunnerStats,
}

/// The writers, started once.
struct Load {
    pending: Vec<Writer>,
    running: Vec<tokio::task::JoinHandle<LoadResult>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(&mut self) {
        for w in self.pending.drain(..) {
            self.running.push(tokio::spawn(w.run(self.stop.clone())));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn add_stats(total: &mut crate::local::RunnerStats, s: &crate::local::RunnerStats) {
    total.passes += s.passes;
    total.cluster_plans += s.cluster_plans;
    total.state_writes += s.state_writes;
    total.actions += s.actions;
}

fn load_view(counters: &[(String, Arc<LoadCounters>)]) -> LoadView {
    let mut v = LoadView::default();
    for (c, k) in counters {
        v.acked += k.acked.load(Ordering::Relaxed);
        v.refused += k.refused.load(Ordering::Relaxed);
        if k.down.load(Ordering::Relaxed) {
            v.down.push(c.clone());
        }
    }
    v
}

/// Whether the runner settled the way the scenario expects: converged, or blocked only by the
/// cluster that was made to fail.
fn check_settled(s: &Settled, fault: Option<&str>) -> Result<(), String> {
    match (s, fault) {
        (Settled::Converged, None) => Ok(()),
        (Settled::Converged, Some(f)) => Err(format!(
            "the rollout converged although {f} should have been rolled back"
        )),
        (Settled::Blocked(b), Some(f))
            if b.iter()
                .all(|(o, _)| o == &format!("Cluster/{f}") || o.starts_with("Mesh/")) =>
        {
            Ok(())
        }
        (Settled::Blocked(b), _) => Err(format!(
            "the rollout stopped blocked: {}",
            b.iter()
                .map(|(o, w)| format!("{o}: {w}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        (Settled::No, _) => Err("the rollout did not settle within --timeout".into()),
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_dir(root: &Path, name: &str, pid: u32, keep: bool) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("agents")).expect("mkdir");
        let owner = serde_json::to_vec(&Owner { pid, keep }).expect("json");
        std::fs::write(d.join(OWNER_FILE), owner).expect("write");
        d
    }

    #[test]
    fn only_unkept_directories_of_dead_demos_are_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        // A pid that surely ended: a child we ran and reaped.
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let dead = child.id();
        child.wait().expect("wait");
        let alive = std::os::unix::process::parent_id();
        let stale = demo_dir(root.path(), "baton-demo-stale", dead, false);
        let kept = demo_dir(root.path(), "baton-demo-kept", dead, true);
        let running = demo_dir(root.path(), "baton-demo-running", alive, false);
        let other = demo_dir(root.path(), "not-a-demo", dead, false);
        let unmarked = root.path().join("baton-demo-unmarked");
        std::fs::create_dir_all(&unmarked).expect("mkdir");
        remove_stale_dirs(root.path());
        assert!(!stale.exists());
        assert!(kept.exists() && running.exists() && other.exists() && unmarked.exists());
    }

    #[test]
    fn options_are_checked() {
        assert!(DemoOptions::default().validate().is_ok());
        let bad = [
            DemoOptions {
                clusters: 1,
                ..Default::default()
            },
            DemoOptions {
                members: 1,
                ..Default::default()
            },
            DemoOptions {
                upgrade_seconds: f64::NAN,
                ..Default::default()
            },
            DemoOptions {
                restart_seconds: -1.0,
                ..Default::default()
            },
            DemoOptions {
                to: "1.0.0".into(),
                ..Default::default()
            },
            DemoOptions {
                from: "one".into(),
                ..Default::default()
            },
            DemoOptions {
                parallel: 0,
                ..Default::default()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
    }

    #[test]
    fn the_fault_lands_on_a_worker_of_the_first_wave() {
        let demo = |clusters, parallel| {
            let opts = DemoOptions {
                scenario: Scenario::Rollback,
                clusters,
                parallel,
                ..Default::default()
            };
            Demo::new(opts, Path::new("/nonexistent"))
                .expect("demo")
                .fault_cluster()
                .map(str::to_string)
        };
        assert_eq!(demo(4, 2).as_deref(), Some("worker-2"));
        assert_eq!(demo(2, 2).as_deref(), Some("worker-1"));
        assert_eq!(demo(4, 1).as_deref(), Some("worker-1"));
    }
}
