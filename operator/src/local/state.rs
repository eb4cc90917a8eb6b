//! The local runner's persistent state: statuses in a state file written only by `baton run`,
//! and imperative intents (approve, pause, resume, retry, force) in a sibling intents file
//! written only by the CLI commands. Two files, one writer each, so neither can undo the
//! other's update.
//!
//! Both are replaced atomically (write a temporary file, fsync, rename, fsync the directory):
//! a crash leaves the old or the new content, never a torn file.

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
