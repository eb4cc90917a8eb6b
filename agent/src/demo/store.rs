//! The demo backend's replicated log: an append-only file of JSON lines, each entry chained to
//! the previous one by a SHA-256 checksum, and the key-value map it produces.
//!
//! One thread owns the file. It takes queued writes in batches, appends them, fsyncs once and
//! only then publishes the entries and acknowledges the writers (group commit). Entries that
//! are visible to readers and followers are therefore always durable.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

use crate::pki::hex;

/// Checksum "before" the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const LOG_FILE: &str = "log.jsonl";
const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "i")]
    pub index: u64,
    /// Wall-clock write time at the member that accepted the write, unix microseconds.
    #[serde(rename = "ts")]
    pub ts: i64,
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "v")]
    pub value: String,
    /// Chained checksum: covers this entry and, through `prev`, every entry before it.
    #[serde(rename = "h")]
    pub hash: String,
}

pub fn chain_hash(prev: &str, index: u64, ts: i64, key: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(index.to_string().as_bytes());
    h.update(b"\n");
    h.update(ts.to_string().as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    h.update(b"\n");
    h.update(value.as_bytes());
    hex(&h.finalize())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("this member does not accept writes")]
    NotAccepting,
    #[error("replicated entry {got} does not follow local head {head}")]
    Gap { head: u64, got: u64 },
    #[error("replicated entry {index} has a checksum that does not chain onto the local log")]
    Checksum { index: u64 },
    #[error("log I/O failed: {0}")]
    Io(String),
    #[error("the log writer has stopped")]
    Closed,
}

/// Checksum problems found in the log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityIssue {
    pub first_bad_index: u64,
    pub bad_entries: u64,
    pub since: Timestamp,
}

#[derive(Default)]
struct Mem {
    entries: Vec<Entry>,
    kv: HashMap<String, String>,
    integrity: Option<IntegrityIssue>,
}

impl Mem {
    fn head(&self) -> u64 {
        self.entries.len() as u64
    }

    fn hash_at(&self, index: u64) -> Option<String> {
        if index == 0 {
            return Some(GENESIS.to_string());
        }
        self.entries
            .get(usize::try_from(index - 1).ok()?)
            .map(|e| e.hash.clone())
    }

    fn publish(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.kv.insert(e.key.clone(), e.value.clone());
            self.entries.push(e);
        }
    }
}

enum Cmd {
    Write {
        key: String,
        value: String,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Replicated {
        entries: Vec<Entry>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Barrier {
        reply: oneshot::Sender<u64>,
    },
    Backup {
        dest: PathBuf,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Verify {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Resign {
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

pub struct Store {
    mem: Arc<RwLock<Mem>>,
    head_tx: watch::Sender<u64>,
    cmd_tx: mpsc::Sender<Cmd>,
    accepting: Arc<AtomicBool>,
}

/// Outcome of loading the log file from disk.
struct Loaded {
    entries: Vec<Entry>,
    integrity: Option<IntegrityIssue>,
    /// Bytes of the file that hold complete entries.
    good_len: u64,
}

/// Parses a log file. A torn last line (a crash during an append that was never
/// acknowledged) is tolerated and reported through `good_len`; damage anywhere else is an
/// error, because silently dropping acknowledged writes is exactly what the log must not do.
fn load_log(path: &Path) -> Result<Loaded> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut integrity: Option<IntegrityIssue> = None;
    let mut offset = 0usize;
    let mut good_len = 0u64;
    let mut prev = GENESIS.to_string();
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let end = bytes[offset..].iter().position(|b| *b == b'\n');
        let (line, next, complete) = match end {
            Some(n) => (&bytes[offset..offset + n], offset + n + 1, true),
            None => (&bytes[offset..], bytes.len(), false),
        };
        let parsed: Option<Entry> = serde_json::from_slice(line).ok();
        match parsed {
            Some(entry) if complete => {
                let expected = entries.len() as u64 + 1;
                if entry.index != expected {
                    bail!(
                        "{} line {line_no}: entry index {} where {expected} was expected",
                        path.display(),
                        entry.index
                    );
                }
                let computed = chain_hash(&prev, entry.index, entry.ts, &entry.key, &entry.value);
                if computed != entry.hash {
                    match integrity.as_mut() {
                        Some(issue) => issue.bad_entries += 1,
                        None => {
                            integrity = Some(IntegrityIssue {
                                first_bad_index: entry.index,
                                bad_entries: 1,
                                since: Timestamp::now(),
                            })
                        }
                    }
                }
                prev = entry.hash.clone();
                entries.push(entry);
                good_len = next as u64;
            }
            _ => {
                let rest_is_blank = bytes[next..].iter().all(|b| b.is_ascii_whitespace());
                if rest_is_blank {
                    // Torn final append: never acknowledged, safe to drop.
                    break;
                }
                bail!(
                    "{} line {line_no} is not a valid log entry and is not the last line; \
                     the log is damaged (restore it from a backup)",
                    path.display()
                );
            }
        }
        offset = next;
    }
    Ok(Loaded {
        entries,
        integrity,
        good_len,
    })
}

impl Store {
    /// Opens (or creates) the log under `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Arc<Store>> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let loaded = load_log(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let actual_len = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        if actual_len != loaded.good_len {
            tracing::warn!(
                "dropping {} bytes of a torn final entry in {}",
                actual_len - loaded.good_len,
                path.display()
            );
            file.set_len(loaded.good_len)
                .with_context(|| format!("truncating {}", path.display()))?;
            file.sync_all()
                .with_context(|| format!("syncing {}", path.display()))?;
        }
        let mut mem = Mem {
            integrity: loaded.integrity,
            ..Mem::default()
        };
        let head = loaded.entries.len() as u64;
        mem.publish(loaded.entries);
        let mem = Arc::new(RwLock::new(mem));
        let (head_tx, _) = watch::channel(head);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let accepting = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            path,
            file,
            len: loaded.good_len,
            mem: mem.clone(),
            head_tx: head_tx.clone(),
            accepting: accepting.clone(),
        };
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(cmd_rx))
            .context("starting the log writer thread")?;
        Ok(Arc::new(Store {
            mem,
            head_tx,
            cmd_tx,
            accepting,
        }))
    }

    fn read(&self) -> RwLockReadGuard<'_, Mem> {
        match self.mem.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn head(&self) -> u64 {
        self.read().head()
    }

    pub fn hash_at(&self, index: u64) -> Option<String> {
        self.read().hash_at(index)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.read().kv.get(key).cloned()
    }

    pub fn entry(&self, index: u64) -> Option<Entry> {
        let i = usize::try_from(index.checked_sub(1)?).ok()?;
        self.read().entries.get(i).cloned()
    }

    /// Entries with index in `after+1 ..= after+max`.
    pub fn entries_after(&self, after: u64, max: usize) -> Vec<Entry> {
        let mem = self.read();
        let Ok(start) = usize::try_from(after) else {
            return Vec::new();
        };
        mem.entries.iter().skip(start).take(max).cloned().collect()
    }

    pub fn integrity(&self) -> Option<IntegrityIssue> {
        self.read().integrity.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::SeqCst);
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.cmd_tx.send(cmd).map_err(|_| StoreError::Closed)
    }

    /// Appends a client write; returns its index once it is durable.
    pub async fn write(&self, key: String, value: String) -> Result<u64, StoreError> {
        if !self.accepting() {
            return Err(StoreError::NotAccepting);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Write { key, value, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends entries received from the source, after checking they chain onto the log.
    pub async fn append_replicated(&self, entries: Vec<Entry>) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Replicated { entries, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Returns once every write queued before it has been appended or refused; with
    /// `set_accepting(false)` beforehand, the returned head is final.
    pub async fn barrier(&self) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Barrier { reply })?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Copies the log to `dest`; returns the number of entries copied.
    pub async fn backup(&self, dest: PathBuf) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Backup { dest, reply })
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| StoreError::Closed.to_string())?
    }

    /// Re-reads the log file and checks every checksum; returns the number of entries.
    pub async fn verify(&self) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Verify { reply })
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| StoreError::Closed.to_string())?
    }

    /// Recomputes every checksum and rewrites the log atomically.
    pub async fn resign(&self) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Resign { reply })
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| StoreError::Closed.to_string())?
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    len: u64,
    mem: Arc<RwLock<Mem>>,
    head_tx: watch::Sender<u64>,
    accepting: Arc<AtomicBool>,
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

impl Writer {
    fn mem(&self) -> RwLockWriteGuard<'_, Mem> {
        match self.mem.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let mut staged: Vec<Entry> = Vec::new();
            let mut waiting: Vec<(Reply, u64)> = Vec::new();
            for cmd in batch {
                match cmd {
                    Cmd::Write { key, value, reply } => {
                        if !self.accepting.load(Ordering::SeqCst) {
                            let _ = reply.send(Err(StoreError::NotAccepting));
                            continue;
                        }
                        let (head, prev) = self.staged_head(&staged);
                        let index = head + 1;
                        let ts = Timestamp::now().as_microsecond();
                        let hash = chain_hash(&prev, index, ts, &key, &value);
                        staged.push(Entry {
                            index,
                            ts,
                            key,
                            value,
                            hash,
                        });
                        waiting.push((reply, index));
                    }
                    Cmd::Replicated { entries, reply } => {
                        match self.fresh_entries(&staged, entries) {
                            Ok(entries) => {
                                let last = entries.last().map(|e| e.index);
                                staged.extend(entries);
                                let idx = last.unwrap_or_else(|| self.staged_head(&staged).0);
                                waiting.push((reply, idx));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Cmd::Barrier { reply } => {
                        self.flush(&mut staged, &mut waiting);
                        let _ = reply.send(self.mem().head());
                    }
                    Cmd::Backup { dest, reply } => {
                        self.flush(&mut staged, &mut waiting);
                        let _ = reply.send(self.backup(&dest));
                    }
                    Cmd::Verify { reply } => {
                        self.flush(&mut staged, &mut waiting);
                        let _ = reply.send(self.verify());
                    }
                    Cmd::Resign { reply } => {
                        self.flush(&mut staged, &mut waiting);
                        let _ = reply.send(self.resign());
                    }
                }
            }
            self.flush(&mut staged, &mut waiting);
        }
    }

    fn staged_head(&self, staged: &[Entry]) -> (u64, String) {
        match staged.last() {
            Some(e) => (e.index, e.hash.clone()),
            None => {
                let mem = match self.mem.read() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let head = mem.head();
                (
                    head,
                    mem.hash_at(head).unwrap_or_else(|| GENESIS.to_string()),
                )
            }
        }
    }

    /// The replicated entries this log does not hold yet, chain-checked. Leading entries it
    /// already holds are skipped when their checksums match: a follower restarted while a
    /// batch of its previous stream was still queued here asks the source from an older head
    /// and receives that batch again (identical entries, not a divergence).
    fn fresh_entries(
        &self,
        staged: &[Entry],
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>, StoreError> {
        let (head, _) = self.staged_head(staged);
        let mut fresh = Vec::with_capacity(entries.len());
        for e in entries {
            if fresh.is_empty() && e.index <= head && e.index > 0 {
                if self.hash_held(staged, e.index).as_deref() != Some(e.hash.as_str()) {
                    return Err(StoreError::Checksum { index: e.index });
                }
                continue;
            }
            fresh.push(e);
        }
        self.check_chain(staged, &fresh)?;
        Ok(fresh)
    }

    /// Checksum of entry `index`, staged or stored.
    fn hash_held(&self, staged: &[Entry], index: u64) -> Option<String> {
        if let Some(first) = staged.first()
            && index >= first.index
        {
            let i = usize::try_from(index - first.index).ok()?;
            return staged.get(i).map(|e| e.hash.clone());
        }
        match self.mem.read() {
            Ok(g) => g.hash_at(index),
            Err(p) => p.into_inner().hash_at(index),
        }
    }

    fn check_chain(&self, staged: &[Entry], entries: &[Entry]) -> Result<(), StoreError> {
        let (mut head, mut prev) = self.staged_head(staged);
        for e in entries {
            if e.index != head + 1 {
                return Err(StoreError::Gap { head, got: e.index });
            }
            if chain_hash(&prev, e.index, e.ts, &e.key, &e.value) != e.hash {
                return Err(StoreError::Checksum { index: e.index });
            }
            head = e.index;
            prev = e.hash.clone();
        }
        Ok(())
    }

    /// Appends and fsyncs the staged entries, then publishes them and answers the writers.
    fn flush(&mut self, staged: &mut Vec<Entry>, waiting: &mut Vec<(Reply, u64)>) {
        if staged.is_empty() {
            for (reply, idx) in waiting.drain(..) {
                let _ = reply.send(Ok(idx));
            }
            return;
        }
        let mut buf = Vec::with_capacity(staged.len() * 128);
        for e in staged.iter() {
            match serde_json::to_vec(e) {
                Ok(line) => {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                }
                Err(err) => {
                    self.fail(
                        staged,
                        waiting,
                        format!("encoding entry {}: {err}", e.index),
                    );
                    return;
                }
            }
        }
        let result = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = result {
            // Cut the partial append off so the file stays a clean prefix of the log.
            let _ = self.file.set_len(self.len);
            let _ = self.file.sync_all();
            self.fail(
                staged,
                waiting,
                format!("appending to {}: {err}", self.path.display()),
            );
            return;
        }
        self.len += buf.len() as u64;
        let head = {
            let mut mem = self.mem();
            mem.publish(std::mem::take(staged));
            mem.head()
        };
        self.head_tx.send_replace(head);
        for (reply, idx) in waiting.drain(..) {
            let _ = reply.send(Ok(idx));
        }
    }

    fn fail(&mut self, staged: &mut Vec<Entry>, waiting: &mut Vec<(Reply, u64)>, message: String) {
        tracing::error!("log write failed: {message}");
        staged.clear();
        for (reply, _) in waiting.drain(..) {
            let _ = reply.send(Err(StoreError::Io(message.clone())));
        }
    }

    fn backup(&mut self, dest: &Path) -> Result<u64, String> {
        let entries = self.mem().head();
        let run = || -> Result<()> {
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::copy(&self.path, dest).with_context(|| {
                format!("copying {} to {}", self.path.display(), dest.display())
            })?;
            File::open(dest)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", dest.display()))?;
            Ok(())
        };
        run().map_err(|e| format!("{e:#}"))?;
        Ok(entries)
    }

    fn verify(&mut self) -> Result<u64, String> {
        let loaded = load_log(&self.path).map_err(|e| format!("{e:#}"))?;
        let on_disk = loaded.entries.len() as u64;
        let in_memory = self.mem().head();
        let issue = loaded.integrity.clone();
        {
            let mut mem = self.mem();
            match (&issue, &mem.integrity) {
                (Some(new), Some(old)) => {
                    mem.integrity = Some(IntegrityIssue {
                        since: old.since,
                        ..new.clone()
                    })
                }
                (new, _) => mem.integrity = new.clone(),
            }
        }
        if let Some(issue) = issue {
            return Err(format!(
                "log checksum mismatch: {} bad entr{} starting at index {} (run resign-data or restore a backup)",
                issue.bad_entries,
                if issue.bad_entries == 1 { "y" } else { "ies" },
                issue.first_bad_index
            ));
        }
        if on_disk != in_memory {
            return Err(format!(
                "log file holds {on_disk} entries but {in_memory} were acknowledged"
            ));
        }
        Ok(on_disk)
    }

    fn resign(&mut self) -> Result<u64, String> {
        let rewritten: Vec<Entry> = {
            let mem = self.mem();
            let mut prev = GENESIS.to_string();
            mem.entries
                .iter()
                .map(|e| {
                    let hash = chain_hash(&prev, e.index, e.ts, &e.key, &e.value);
                    prev = hash.clone();
                    Entry { hash, ..e.clone() }
                })
                .collect()
        };
        let mut buf = Vec::new();
        for e in &rewritten {
            let line = serde_json::to_vec(e).map_err(|err| format!("encoding entry: {err}"))?;
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        crate::persist::atomic_write(&self.path, &buf, false).map_err(|e| format!("{e:#}"))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("reopening {}: {e}", self.path.display()))?;
        self.len = buf.len() as u64;
        let count = rewritten.len() as u64;
        let mut mem = self.mem();
        mem.entries = rewritten;
        mem.integrity = None;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_durable_and_reload() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        assert_eq!(
            store.write("a".into(), "1".into()).await,
            Err(StoreError::NotAccepting)
        );
        store.set_accepting(true);
        assert_eq!(store.write("a".into(), "1".into()).await, Ok(1));
        assert_eq!(store.write("b".into(), "2".into()).await, Ok(2));
        assert_eq!(store.verify().await, Ok(2));
        drop(store);
        // A torn final line is dropped on reload.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))?;
        f.write_all(b"{\"i\":3,\"ts\":1")?;
        drop(f);
        let store = Store::open(dir.path())?;
        assert_eq!(store.head(), 2);
        assert_eq!(store.get("b").as_deref(), Some("2"));
        Ok(())
    }

    /// An accepting store holding `n` writes `k{i}` = `v{i}`, an empty store to replicate
    /// into, and the first one's entries (with the directories that hold them).
    async fn source_and_replica(
        n: usize,
    ) -> Result<(
        tempfile::TempDir,
        tempfile::TempDir,
        Arc<Store>,
        Arc<Store>,
        Vec<Entry>,
    )> {
        let a_dir = tempfile::tempdir()?;
        let b_dir = tempfile::tempdir()?;
        let a = Store::open(a_dir.path())?;
        let b = Store::open(b_dir.path())?;
        a.set_accepting(true);
        for i in 0..n {
            a.write(format!("k{i}"), format!("v{i}"))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let entries = a.entries_after(0, 100);
        Ok((a_dir, b_dir, a, b, entries))
    }

    #[tokio::test]
    async fn replicated_entries_must_chain() -> Result<()> {
        let (_a_dir, _b_dir, a, b, entries) = source_and_replica(5).await?;
        assert_eq!(b.append_replicated(entries[..2].to_vec()).await, Ok(2));
        assert_eq!(
            b.append_replicated(entries[3..].to_vec()).await,
            Err(StoreError::Gap { head: 2, got: 4 })
        );
        let mut bad = entries[2].clone();
        bad.value = "tampered".into();
        assert_eq!(
            b.append_replicated(vec![bad]).await,
            Err(StoreError::Checksum { index: 3 })
        );
        assert_eq!(b.append_replicated(entries[2..].to_vec()).await, Ok(5));
        assert_eq!(a.hash_at(5), b.hash_at(5));
        Ok(())
    }

    #[tokio::test]
    async fn a_batch_delivered_twice_is_not_a_conflict() -> Result<()> {
        let (_a_dir, _b_dir, a, b, entries) = source_and_replica(6).await?;
        assert_eq!(b.append_replicated(entries[..3].to_vec()).await, Ok(3));
        // Entries 2..=5 again (a restarted stream): 2 and 3 are held, 4 and 5 are new.
        assert_eq!(b.append_replicated(entries[1..5].to_vec()).await, Ok(5));
        // Only held entries: nothing changes.
        assert_eq!(b.append_replicated(entries[..5].to_vec()).await, Ok(5));
        assert_eq!(b.head(), 5);
        // Both in one group commit: the second batch overlaps the first, still staged.
        let c_dir = tempfile::tempdir()?;
        let c = Store::open(c_dir.path())?;
        let (first, second) = tokio::join!(
            c.append_replicated(entries[..4].to_vec()),
            c.append_replicated(entries[2..].to_vec())
        );
        assert_eq!((first, second), (Ok(4), Ok(6)));
        assert_eq!(c.hash_at(6), a.hash_at(6));
        assert_eq!(c.verify().await, Ok(6));
        // A held index with another checksum is a divergence.
        let mut other = entries[1].clone();
        other.hash = "0".repeat(64);
        assert_eq!(
            b.append_replicated(vec![other, entries[5].clone()]).await,
            Err(StoreError::Checksum { index: 2 })
        );
        assert_eq!(b.head(), 5);
        Ok(())
    }

    #[tokio::test]
    async fn verify_detects_tampering_and_resign_repairs() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        store.set_accepting(true);
        for i in 0..3 {
            store
                .write(format!("k{i}"), format!("v{i}"))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let path = dir.path().join(LOG_FILE);
        let text = fs::read_to_string(&path)?;
        fs::write(&path, text.replace("\"v\":\"v1\"", "\"v\":\"evil\""))?;
        let err = store.verify().await.err().unwrap_or_default();
        assert!(err.contains("index 2"), "{err}");
        assert!(store.integrity().is_some());
        assert_eq!(store.resign().await, Ok(3));
        assert_eq!(store.verify().await, Ok(3));
        assert_eq!(store.write("k9".into(), "v9".into()).await, Ok(4));
        assert_eq!(store.verify().await, Ok(4));
        Ok(())
    }
}
