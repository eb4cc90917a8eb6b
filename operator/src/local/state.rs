//! The local runner's persistent state: statuses in a state file written only by `baton run`,
//! and imperative intents (approve, pause, resume, retry, force) in a sibling intents file
//! written only by the CLI commands. Two files, one writer each, so neither can undo the
//! other's update.
//!
//! Both are replaced atomically (write a temporary file, fsync, rename, fsync the directory):
//! a crash leaves the old or the new content, never a torn file.
//!
//! One writer each is enforced with locks: a runner holds [`RunnerLock`] (`<state>.lock`)
//! for its lifetime, and each intents update holds `<state>.intents.lock` while it reads,
//! modifies and replaces the intents file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::api::{ClusterStatus, MeshStatus};

pub const STATE_FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectState<T> {
    /// Bumped whenever the spec read from the manifests changes (like `metadata.generation`).
    pub generation: i64,
    /// Fingerprint of the spec the generation belongs to.
    pub spec_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<T>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub format: u32,
    #[serde(default)]
    pub clusters: BTreeMap<String, ObjectState<ClusterStatus>>,
    #[serde(default)]
    pub meshes: BTreeMap<String, ObjectState<MeshStatus>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: STATE_FORMAT,
            clusters: BTreeMap::new(),
            meshes: BTreeMap::new(),
        }
    }
}

impl State {
    /// The state in `path`, or an empty state when the file does not exist yet.
    pub fn load(path: &Path) -> anyhow::Result<State> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let st: State = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a baton state file", path.display()))?;
        anyhow::ensure!(
            st.format == STATE_FORMAT,
            "{}: state format {} is not supported (expected {STATE_FORMAT})",
            path.display(),
            st.format
        );
        Ok(st)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(self).context("encoding the state")?;
        write_atomic(path, &body)
    }
}

/// The exclusive right to run on one state file, held for the runner's lifetime: two runners
/// on one state file would each record the same step under their own operation id and both
/// send it. The lock is an advisory `flock` on `<state>.lock`, so the kernel releases it when
/// the holder exits, however it exits; the file then names the last holder, which is harmless.
#[derive(Debug)]
pub struct RunnerLock {
    file: std::fs::File,
    path: PathBuf,
}

impl RunnerLock {
    pub fn path_for(state: &Path) -> PathBuf {
        let mut name = state
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        state.with_file_name(name)
    }

    /// Takes the lock or fails at once, naming the holder (pid, host, start time).
    pub fn acquire(state: &Path) -> anyhow::Result<RunnerLock> {
        use fs2::FileExt;
        use std::io::{Read, Seek};
        let path = Self::path_for(state);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if let Err(e) = file.try_lock_exclusive() {
            let contended = e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
                || e.kind() == std::io::ErrorKind::WouldBlock;
            if !contended {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
            let mut holder = String::new();
            // Bounded: the file is ours, but nothing forces it to stay small.
            let _ = (&mut file).take(4096).read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "another `baton run` is already running on {}: {} holds {}; stop it first \
                 (two runners on one state file would both send the same steps)",
                state.display(),
                if holder.is_empty() {
                    "a runner that is still starting".to_string()
                } else {
                    holder.to_string()
                },
                path.display()
            );
        }
        let holder = format!(
            "pid {} on host {} since {}\n",
            std::process::id(),
            crate::host::host_name().unwrap_or_else(|| "unknown".into()),
            jiff::Timestamp::now()
        );
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(holder.as_bytes()))
            .and_then(|_| file.sync_all());
        if let Err(e) = written {
            // The lock itself is what matters; a missing holder line only makes the refusal
            // of a second runner less informative.
            tracing::warn!("cannot record the runner in {}: {e}", path.display());
        }
        Ok(RunnerLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        use fs2::FileExt;
        let _ = FileExt::unlock(&self.file);
    }
}

/// Intents for one Cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIntents {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approve: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

/// Intents for one Mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshIntentsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intents {
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterIntents>,
    #[serde(default)]
    pub meshes: BTreeMap<String, MeshIntentsFile>,
}

impl Intents {
    pub fn path_for(state: &Path) -> PathBuf {
        let mut name = state
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".intents");
        state.with_file_name(name)
    }

    pub fn load(path: &Path) -> anyhow::Result<Intents> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t)
                .with_context(|| format!("{}: not a baton intents file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Intents::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Read-modify-write under an exclusive lock, so two CLI commands never lose an update.
    pub fn update(path: &Path, f: impl FnOnce(&mut Intents)) -> anyhow::Result<Intents> {
        use fs2::FileExt;
        let lock_path = {
            let mut n = path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            n.push(".lock");
            path.with_file_name(n)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock_exclusive()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let mut intents = Intents::load(path)?;
        f(&mut intents);
        let body = serde_json::to_vec_pretty(&intents).context("encoding intents")?;
        let r = write_atomic(path, &body);
        let _ = FileExt::unlock(&lock);
        r.map(|_| intents)
    }
}

/// Replace `path` with `body` atomically and durably.
pub fn write_atomic(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1
        .write_all(body)
        .and_then(|_| tmp.1.sync_all())
        .with_context(|| format!("writing {}", tmp.0.display()))?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path)
        .with_context(|| format!("replacing {} with {}", path.display(), tmp.0.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path, path: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{base}.{}.tmp", std::process::id()));
    let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok((tmp, f))
}

/// A stable fingerprint of a spec (FNV-1a over its JSON encoding).
pub fn spec_hash<T: Serialize>(spec: &T) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_runner_is_refused_with_the_holder_named_until_the_first_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        let first = RunnerLock::acquire(&state).expect("first runner");
        let holder = std::fs::read_to_string(first.path()).expect("lock file");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        let e = RunnerLock::acquire(&state).expect_err("second runner refused");
        let msg = format!("{e:#}");
        assert!(msg.contains("already running"), "{msg}");
        assert!(msg.contains(holder.trim()), "{msg}");
        drop(first);
        let again = RunnerLock::acquire(&state).expect("lock free after the first runner");
        drop(again);
    }

    #[test]
    fn concurrent_intents_updates_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Intents::path_for(&dir.path().join("state.json"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        Intents::update(&path, |intents| {
                            intents
                                .clusters
                                .entry("c".into())
                                .or_default()
                                .approve
                                .push(format!("{t}-{i}"));
                        })
                        .expect("update");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let intents = Intents::load(&path).expect("load");
        assert_eq!(intents.clusters["c"].approve.len(), 80);
    }
}
