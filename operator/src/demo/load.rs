//! The demo's write load: one bounded writer per cluster that follows the Active member,
//! remembers every acknowledged write, and measures how long writes were refused; then a
//! read-back of every acknowledged key from every member of its cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_agent::client::ClientTls;
use baton_agent::data::DataClient;
use tokio::sync::watch;

/// Bounds of one writer.
#[derive(Clone, Copy, Debug)]
pub struct LoadLimits {
    /// Pause after each acknowledged write.
    pub interval: Duration,
    /// Pause after a refused or failed write, before trying the next member.
    pub retry: Duration,
    pub max_writes: u64,
    pub max_time: Duration,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            interval: Duration::from_millis(20),
            retry: Duration::from_millis(10),
            max_writes: 20_000,
            max_time: Duration::from_secs(600),
        }
    }
}

/// Live counters of one writer (read by the progress display).
#[derive(Debug, Default)]
pub struct LoadCounters {
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    /// Writes are being refused right now.
    pub down: AtomicBool,
}

/// One acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub key: String,
    pub value: String,
    pub index: u64,
    /// The member that acknowledged it.
    pub member: String,
}

/// What one writer did.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub cluster: String,
    pub acked: Vec<Ack>,
    /// Refused (not Active) or failed (connection, timeout) attempts.
    pub refused: u64,
    /// Write-unavailability windows: first refused/failed write → next acknowledged write.
    pub windows: Vec<Duration>,
    /// A window still open when the writer stopped (from its first failure to the stop).
    pub open_window: Option<Duration>,
}

impl LoadResult {
    pub fn worst_window(&self) -> Duration {
        self.windows
            .iter()
            .copied()
            .chain(self.open_window)
            .max()
            .unwrap_or_default()
    }
}

/// A writer for one cluster; members are `(name, data endpoint)`, the first the initial
/// Active.
pub struct Writer {
    pub cluster: String,
    /// `(name, data endpoint)` of each member.
    endpoints: Vec<(String, String)>,
    members: Vec<(String, DataClient)>,
    limits: LoadLimits,
    pub counters: Arc<LoadCounters>,
    /// When set, the identity (trust and certificate) the writer presents: a change makes it
    /// reconnect to every member with the new one, closing the connections of the old. (A
    /// change is seen only while the sender lives: keep it until the writer stops.)
    identity: Option<watch::Receiver<ClientTls>>,
}

fn data_clients(
    cluster: &str,
    members: &[(String, String)],
    tls: &ClientTls,
) -> anyhow::Result<Vec<(String, DataClient)>> {
    members
        .iter()
        .map(|(name, ep)| {
            DataClient::new(ep, tls.clone())
                .map(|c| (name.clone(), c.with_timeout(Duration::from_secs(2))))
                .map_err(|e| anyhow::anyhow!("data client for {cluster}/{name}: {e}"))
        })
        .collect()
}

impl Writer {
    pub fn new(
        cluster: &str,
        members: &[(String, String)],
        tls: &ClientTls,
        limits: LoadLimits,
    ) -> anyhow::Result<Writer> {
        let endpoints = members.to_vec();
        let members = data_clients(cluster, members, tls)?;
        anyhow::ensure!(!members.is_empty(), "cluster {cluster} has no members");
        Ok(Writer {
            cluster: cluster.to_string(),
            endpoints,
            members,
            limits,
            counters: Arc::new(LoadCounters::default()),
            identity: None,
        })
    }

    /// Present the identity `identity` holds from now on, and follow its changes (a client
    /// that rotates its own certificate, as a CA rotation asks of clients).
    pub fn with_identity(mut self, identity: watch::Receiver<ClientTls>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Write until `stop` is set or a limit is reached. Keys are `<cluster>.<n>`, unique.
    pub async fn run(mut self, stop: Arc<AtomicBool>) -> LoadResult {
        let mut out = LoadResult {
            cluster: self.cluster.clone(),
            ..Default::default()
        };
        let started = Instant::now();
        let mut current = 0usize;
        let mut down_since: Option<Instant> = None;
        let mut seq: u64 = 0;
        while !stop.load(Ordering::Relaxed)
            && (out.acked.len() as u64) < self.limits.max_writes
            && started.elapsed() < self.limits.max_time
        {
            if let Some(id) = &mut self.identity
                && id.has_changed().unwrap_or(false)
            {
                let tls = id.borrow_and_update().clone();
                // A configuration that does not parse keeps the writer on the old identity
                // (the scenario's checks then say why).
                if let Ok(m) = data_clients(&self.cluster, &self.endpoints, &tls) {
                    self.members = m;
                }
            }
            seq += 1;
            let key = format!("{}.{seq:07}", self.cluster);
            let value = format!("value-{seq}");
            let (member, client) = &self.members[current];
            let attempt = Instant::now();
            match client.put(&key, &value).await {
                Ok(index) => {
                    if let Some(since) = down_since.take() {
                        out.windows.push(since.elapsed());
                        self.counters.down.store(false, Ordering::Relaxed);
                    }
                    out.acked.push(Ack {
                        key,
                        value,
                        index,
                        member: member.clone(),
                    });
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.limits.interval).await;
                }
                Err(_) => {
                    // Refused (not Active) or unreachable: the write is not acknowledged,
                    // so it is not remembered. Follow the active: try the next member.
                    down_since.get_or_insert(attempt);
                    self.counters.down.store(true, Ordering::Relaxed);
                    out.refused += 1;
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    current = (current + 1) % self.members.len();
                    tokio::time::sleep(self.limits.retry).await;
                }
            }
        }
        out.open_window = down_since.map(|s| s.elapsed());
        out
    }
}

/// What the read-back found for one cluster.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub cluster: String,
    pub checked: usize,
    /// Acknowledged keys missing (or holding another value) on at least one member.
    pub lost: BTreeMap<String, Vec<String>>,
    /// Members that could not be read (they count every key as unverified).
    pub unreadable: Vec<(String, String)>,
}

/// Read every acknowledged key of `load` back from every member, after each member's log has
/// reached the highest acknowledged index (or `catch_up` passed).
pub async fn verify(
    load: &LoadResult,
    members: &[(String, String)],
    tls: &ClientTls,
    catch_up: Duration,
) -> Verification {
    let mut v = Verification {
        cluster: load.cluster.clone(),
        checked: load.acked.len(),
        ..Default::default()
    };
    let top = load.acked.iter().map(|a| a.index).max().unwrap_or(0);
    let futs = members.iter().map(|(_, ep)| async move {
        let client = DataClient::new(ep, tls.clone())
            .map_err(|e| e.to_string())?
            .with_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + catch_up;
        loop {
            match client.head().await {
                Ok(h) if h.head >= top => break,
                _ if Instant::now() > deadline => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let mut missing = Vec::new();
        for a in &load.acked {
            match client.get(&a.key).await {
                Ok(Some(v)) if v == a.value => {}
                Ok(_) => missing.push(a.key.clone()),
                Err(e) => return Err(format!("reading {}: {e}", a.key)),
            }
        }
        Ok::<_, String>(missing)
    });
    let results = futures::future::join_all(futs).await;
    for ((name, _), r) in members.iter().zip(results) {
        match r {
            Ok(missing) => {
                for k in missing {
                    v.lost.entry(k).or_default().push(name.clone());
                }
            }
            Err(e) => v.unreadable.push((name.clone(), e)),
        }
    }
    v
}
