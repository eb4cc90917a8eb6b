//! The local runner at scale, against simulated agents in the same process (the runner, its
//! state file and its loop are the real ones; only the agents are simulated):
//!
//!   cargo bench -p baton --bench runner            # 1,000 clusters of 3 members
//!   CLUSTERS=200 IDLE_SECONDS=65 cargo bench -p baton --bench runner
//!
//! Prints, for a rollout of every cluster at once (1 s member upgrades):
//! - reaction latency: from an agent operation finishing to the next operation of that cluster
//!   being submitted (median, p90, p99);
//! - idle cost: requests per member per minute once converged (over IDLE_SECONDS);
//! - peak RSS of the process (VmHWM), and the state file's size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton::api::{Cluster, ClusterSpec, MemberRole, MemberSpec, UpgradePolicy};
use baton::local::{Manifests, Runner, Settled};
use baton::plan::{AgentView, OpKind, OpRequest, OpState, OpView};
use baton::reconcile::{
    MemberError, Members, OpLookup, Submission, SubmitError, Submitted, Timing,
};
use baton_core::fixtures::cluster::observed;
use kube::core::ObjectMeta;

const UPGRADE: Duration = Duration::from_secs(1);
const SHORT: Duration = Duration::from_millis(50);

struct Op {
    req: OpRequest,
    start: Instant,
    applied: bool,
}

struct Agent {
    cluster: String,
    version: String,
    role: MemberRole,
    ops: HashMap<String, Op>,
    current: Option<String>,
}

impl Agent {
    fn duration(kind: OpKind) -> Duration {
        match kind {
            OpKind::Upgrade | OpKind::Rollback => UPGRADE,
            _ => SHORT,
        }
    }

    /// Applies the effect of finished operations; returns the finish instant of each newly
    /// finished one.
    fn settle(&mut self, now: Instant) -> Vec<Instant> {
        let mut done = vec![];
        for op in self.ops.values_mut() {
            let end = op.start + Self::duration(op.req.kind);
            if op.applied || now < end {
                continue;
            }
            op.applied = true;
            done.push(end);
            match op.req.kind {
                OpKind::Upgrade | OpKind::Rollback => {
                    if let Some(v) = &op.req.version {
                        self.version = v.clone();
                    }
                }
                OpKind::ForceStandby => self.role = MemberRole::ForcedStandby,
                OpKind::Promote => self.role = MemberRole::Active,
                OpKind::Demote => {
                    self.role = if op.req.role.as_deref() == Some("spare") {
                        MemberRole::Spare
                    } else {
                        MemberRole::Standby
                    }
                }
                _ => {}
            }
        }
        if let Some(c) = &self.current
            && self.ops.get(c).is_some_and(|o| o.applied)
        {
            self.current = None;
        }
        done
    }

    fn view(&self, id: &str, now: Instant) -> Option<OpView> {
        let op = self.ops.get(id)?;
        let done = now >= op.start + Self::duration(op.req.kind);
        Some(OpView {
            id: id.to_string(),
            kind: op.req.kind.as_str().to_string(),
            state: if done {
                OpState::Succeeded
            } else {
                OpState::Running
            },
            progress: if done { 100 } else { 50 },
            message: String::new(),
            findings: vec![],
        })
    }
}

#[derive(Default)]
struct Fleet {
    agents: Mutex<HashMap<String, Agent>>,
    requests: AtomicU64,
    /// Per cluster: the latest operation end not yet followed by a submit.
    last_end: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Fleet {
    fn with<T>(
        &self,
        endpoint: &str,
        f: impl FnOnce(&mut Agent, Instant) -> T,
    ) -> Result<T, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut agents = self.agents.lock().map_err(|_| "poisoned".to_string())?;
        let a = agents
            .get_mut(endpoint)
            .ok_or_else(|| format!("no agent at {endpoint}"))?;
        let ends = a.settle(now);
        if let Some(e) = ends.into_iter().max()
            && let Ok(mut m) = self.last_end.lock()
        {
            let slot = m.entry(a.cluster.clone()).or_insert(e);
            *slot = (*slot).max(e);
        }
        Ok(f(a, now))
    }
}

impl Members for Fleet {
    async fn status(&self, member: &str, endpoint: &str) -> Result<AgentView, MemberError> {
        self.with(endpoint, |a, now| {
            let agent = observed(endpoint).version(&a.version).role(a.role).build();
            AgentView {
                data_endpoint: Some(format!("{endpoint}-data")),
                operation: a.current.as_deref().and_then(|c| a.view(c, now)),
                ..agent.agent.expect("an observed agent")
            }
        })
        .map_err(|e| MemberError::unavailable(member, e))
    }

    async fn operation(&self, member: &str, endpoint: &str, id: &str) -> OpLookup {
        self.with(endpoint, |a, now| a.view(id, now))
            .map_err(|e| MemberError::unavailable(member, e))
    }

    async fn submit(&self, _m: &str, endpoint: &str, sub: Submission<'_>) -> Submitted {
        let req = sub.request;
        let r = self
            .with(endpoint, |a, now| {
                if a.ops.contains_key(&req.id) {
                    return Ok(None);
                }
                if a.current.is_some() {
                    return Err(SubmitError::Busy("busy".into()));
                }
                a.current = Some(req.id.clone());
                a.ops.insert(
                    req.id.clone(),
                    Op {
                        req: req.clone(),
                        start: now,
                        applied: false,
                    },
                );
                Ok(Some((a.cluster.clone(), now)))
            })
            .map_err(SubmitError::Unreachable)??;
        if let Some((cluster, now)) = r
            && let Ok(mut ends) = self.last_end.lock()
            && let Some(end) = ends.remove(&cluster)
            && let Ok(mut l) = self.latencies.lock()
        {
            l.push(now.saturating_duration_since(end));
        }
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // Under `cargo test --benches` this is built and run as a test: stay tiny there.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let n = if quick {
        5
    } else {
        env_or("CLUSTERS", 1000) as usize
    };
    let idle_secs = if quick {
        1
    } else {
        env_or("IDLE_SECONDS", 125)
    };
    let fleet = Fleet::default();
    let mut manifests = Manifests::default();
    {
        let mut agents = fleet
            .agents
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        for c in 0..n {
            let name = format!("c{c:04}");
            let mut members = vec![];
            for m in 0..3 {
                let ep = format!("10.0.{}.{}:{}", c / 250, c % 250, 7000 + m);
                members.push(MemberSpec {
                    name: format!("m{m}"),
                    endpoint: ep.clone(),
                    ..Default::default()
                });
                agents.insert(
                    ep,
                    Agent {
                        cluster: name.clone(),
                        version: "1.0.0".into(),
                        role: if m == 0 {
                            MemberRole::Active
                        } else {
                            MemberRole::Standby
                        },
                        ops: HashMap::new(),
                        current: None,
                    },
                );
            }
            let spec = ClusterSpec {
                version: Some("2.0.0".into()),
                members,
                upgrade: UpgradePolicy {
                    preflight: false,
                    ..Default::default()
                },
                ..Default::default()
            };
            let cluster = Cluster {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..Default::default()
                },
                spec,
                status: None,
            };
            manifests.clusters.push(("bench.yaml".into(), cluster));
        }
    }
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut runner = Runner::new(fleet, &manifests, &state)?.with_timing(Timing::default());
        let started = Instant::now();
        let limit = Duration::from_secs(900);
        loop {
            runner.pass().await?;
            match runner.settled() {
                Settled::Converged => break,
                Settled::Blocked(b) => anyhow::bail!("blocked: {:?}", &b[..b.len().min(3)]),
                Settled::No => {}
            }
            anyhow::ensure!(started.elapsed() < limit, "no convergence within {limit:?}");
            tokio::time::sleep_until(runner.next_wake().into()).await;
        }
        let rollout = started.elapsed();
        let stats_rollout = runner.stats().clone();
        let before = runner.members().requests.load(Ordering::Relaxed);
        let idle_start = Instant::now();
        while idle_start.elapsed() < Duration::from_secs(idle_secs) {
            runner.pass().await?;
            let wake = runner.next_wake().min(idle_start + Duration::from_secs(idle_secs));
            tokio::time::sleep_until(wake.into()).await;
        }
        let idle_requests = runner.members().requests.load(Ordering::Relaxed) - before;
        let minutes = idle_start.elapsed().as_secs_f64() / 60.0;
        let members = (n * 3) as f64;
        let mut lat = runner
            .members()
            .latencies
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        lat.sort();
        let state_kib = std::fs::metadata(&state).map(|m| m.len() / 1024).unwrap_or(0);
        println!("| clusters | members | rollout | passes | state writes | reaction median | p90 | p99 | idle requests/member/min | peak RSS | state file |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {n} | {} | {:.1} s | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {:.1} MiB | {} KiB |",
            n * 3,
            rollout.as_secs_f64(),
            stats_rollout.passes,
            stats_rollout.state_writes,
            pct(&lat, 50.0).as_secs_f64() * 1000.0,
            pct(&lat, 90.0).as_secs_f64() * 1000.0,
            pct(&lat, 99.0).as_secs_f64() * 1000.0,
            idle_requests as f64 / members / minutes,
            peak_rss_kib() as f64 / 1024.0,
            state_kib,
        );
        println!("({} reaction samples; idle window {:.0} s)", lat.len(), minutes * 60.0);
        Ok(())
    })
}
