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

use serde::{Deserialize, Serialize};

use crate::api::{ClusterStatus, MeshStatus};
use crate::reconcile::MetricLabel;

pub const STATE_FORMAT: u32 = 1;

/// What went wrong with the state file, the intents file or their locks. Each variant names
/// the file; the I/O or decoding error is its source.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a baton state file", path.display())]
    NotState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a baton intents file", path.display())]
    NotIntents {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: state format {found} is not supported (expected {STATE_FORMAT})",
        path.display()
    )]
    Format { path: PathBuf, found: u32 },
    /// `what`: "the state" or "intents".
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A directory or a file could not be created.
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another runner holds the state file's lock.
    #[error(
        "another `baton run` is already running on {}: {holder} holds {}; stop it first \
         (two runners on one state file would both send the same steps)",
        state.display(),
        lock.display()
    )]
    Held {
        state: PathBuf,
        lock: PathBuf,
        /// Who holds it, as the lock file says.
        holder: String,
    },
    /// Writing (or syncing) the temporary file of an atomic replace.
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replacing {} with {}", path.display(), tmp.display())]
    Replace {
        path: PathBuf,
        tmp: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MetricLabel for StateError {
    fn metric_label(&self) -> &'static str {
        match self {
            StateError::Read { .. } => "Read",
            StateError::NotState { .. } => "NotState",
            StateError::NotIntents { .. } => "NotIntents",
            StateError::Format { .. } => "Format",
            StateError::Encode { .. } => "Encode",
            StateError::Create { .. } => "Create",
            StateError::Open { .. } => "Open",
            StateError::Lock { .. } => "Lock",
            StateError::Held { .. } => "Held",
            StateError::Write { .. } => "Write",
            StateError::Replace { .. } => "Replace",
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Create {
        path: dir.to_path_buf(),
        source,
    })
}

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
    pub fn load(path: &Path) -> Result<State, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let st: State = serde_json::from_str(&text).map_err(|source| StateError::NotState {
            path: path.to_path_buf(),
            source,
        })?;
        if st.format != STATE_FORMAT {
            return Err(StateError::Format {
                path: path.to_path_buf(),
                found: st.format,
            });
        }
        Ok(st)
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(self).map_err(|source| StateError::Encode {
            what: "the state",
            source,
        })?;
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
        beside(state, ".lock")
    }

    /// Takes the lock or fails at once, naming the holder (pid, host, start time).
    pub fn acquire(state: &Path) -> Result<RunnerLock, StateError> {
        use fs2::FileExt;
        use std::io::{Read, Seek};
        let path = Self::path_for(state);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?;
        if let Err(e) = file.try_lock_exclusive() {
            let contended = e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
                || e.kind() == std::io::ErrorKind::WouldBlock;
            if !contended {
                return Err(StateError::Lock { path, source: e });
            }
            let mut holder = String::new();
            // Bounded: the file is ours, but nothing forces it to stay small.
            let _ = (&mut file).take(4096).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StateError::Held {
                state: state.to_path_buf(),
                lock: path,
                holder: if holder.is_empty() {
                    "a runner that is still starting".to_string()
                } else {
                    holder.to_string()
                },
            });
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
    /// Rotation phases forced early (`rotation/CLUSTER/PHASE@CA`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub force: Vec<String>,
}

/// Intents for one Mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshIntentsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// Deferred tiers approved (`tier/MESH/TIER@VERSION`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approve: Vec<String>,
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
        beside(state, ".intents")
    }

    pub fn load(path: &Path) -> Result<Intents, StateError> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map_err(|source| StateError::NotIntents {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Intents::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Read-modify-write under an exclusive lock, so two CLI commands never lose an update.
    pub fn update(path: &Path, f: impl FnOnce(&mut Intents)) -> Result<Intents, StateError> {
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
            create_dir(dir)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::Open {
                path: lock_path.clone(),
                source,
            })?;
        lock.lock_exclusive().map_err(|source| StateError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        let mut intents = Intents::load(path)?;
        f(&mut intents);
        let body = serde_json::to_vec_pretty(&intents).map_err(|source| StateError::Encode {
            what: "intents",
            source,
        })?;
        let r = write_atomic(path, &body);
        let _ = FileExt::unlock(&lock);
        r.map(|_| intents)
    }
}

/// Replace `path` with `body` atomically and durably.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StateError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir(dir)?;
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1
        .write_all(body)
        .and_then(|_| tmp.1.sync_all())
        .map_err(|source| StateError::Write {
            path: tmp.0.clone(),
            source,
        })?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).map_err(|source| StateError::Replace {
        path: path.to_path_buf(),
        tmp: tmp.0.clone(),
        source,
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path, path: &Path) -> Result<(PathBuf, std::fs::File), StateError> {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{base}.{}.tmp", std::process::id()));
    match std::fs::File::create(&tmp) {
        Ok(f) => Ok((tmp, f)),
        Err(source) => Err(StateError::Create { path: tmp, source }),
    }
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

/// The file beside the state file whose name is the state file's and `suffix`.
fn beside(state: &Path, suffix: &str) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    state.with_file_name(name)
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

    #[test]
    fn each_state_error_has_its_label_and_names_its_file() {
        let io = || std::io::Error::other("boom");
        let json = || serde_json::from_str::<u32>("x").expect_err("not a number");
        let p = || PathBuf::from("/s/state.json");
        let cases = [
            (
                StateError::Read {
                    path: p(),
                    source: io(),
                },
                "Read",
                "reading /s/state.json",
            ),
            (
                StateError::NotState {
                    path: p(),
                    source: json(),
                },
                "NotState",
                "/s/state.json: not a baton state file",
            ),
            (
                StateError::NotIntents {
                    path: p(),
                    source: json(),
                },
                "NotIntents",
                "/s/state.json: not a baton intents file",
            ),
            (
                StateError::Format {
                    path: p(),
                    found: 9,
                },
                "Format",
                "/s/state.json: state format 9 is not supported (expected 1)",
            ),
            (
                StateError::Encode {
                    what: "the state",
                    source: json(),
                },
                "Encode",
                "encoding the state",
            ),
            (
                StateError::Create {
                    path: p(),
                    source: io(),
                },
                "Create",
                "creating /s/state.json",
            ),
            (
                StateError::Open {
                    path: p(),
                    source: io(),
                },
                "Open",
                "opening /s/state.json",
            ),
            (
                StateError::Lock {
                    path: p(),
                    source: io(),
                },
                "Lock",
                "locking /s/state.json",
            ),
            (
                StateError::Held {
                    state: p(),
                    lock: PathBuf::from("/s/state.json.lock"),
                    holder: "pid 1".into(),
                },
                "Held",
                "another `baton run` is already running on /s/state.json: pid 1 holds \
                 /s/state.json.lock; stop it first (two runners on one state file would both \
                 send the same steps)",
            ),
            (
                StateError::Write {
                    path: p(),
                    source: io(),
                },
                "Write",
                "writing /s/state.json",
            ),
            (
                StateError::Replace {
                    path: p(),
                    tmp: PathBuf::from("/s/.state.json.1.tmp"),
                    source: io(),
                },
                "Replace",
                "replacing /s/state.json with /s/.state.json.1.tmp",
            ),
        ];
        for (e, label, message) in &cases {
            assert_eq!(e.metric_label(), *label);
            assert_eq!(e.to_string(), *message);
        }
    }

    #[test]
    fn unreadable_files_are_reported_by_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        std::fs::write(&state, "not json").expect("write");
        let e = State::load(&state).expect_err("not a state file");
        assert_eq!(e.metric_label(), "NotState");
        std::fs::write(&state, r#"{"format": 7}"#).expect("write");
        let e = State::load(&state).expect_err("a future format");
        assert_eq!(e.metric_label(), "Format");
        let intents = Intents::path_for(&state);
        std::fs::write(&intents, "[").expect("write");
        assert_eq!(
            Intents::load(&intents).expect_err("bad").metric_label(),
            "NotIntents"
        );
        let _held = RunnerLock::acquire(&state).expect("lock");
        assert_eq!(
            RunnerLock::acquire(&state)
                .expect_err("held")
                .metric_label(),
            "Held"
        );
    }
}
