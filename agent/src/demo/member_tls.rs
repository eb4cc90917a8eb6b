//! The member's data-port identity and trust bundle, kept under `<data-dir>/tls/` so that
//! installs survive restarts. New handshakes always use the latest material.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use rustls::ClientConfig;
use tokio::sync::watch;

use crate::api::CertInfo;
use crate::handshakes::HandshakeCounter;
use crate::persist::atomic_write;
use crate::tls::{self, ReloadableServerTls};

pub const CERT_FILE: &str = "member.crt";
pub const KEY_FILE: &str = "member.key";
pub const TRUST_FILE: &str = "trust.pem";
/// A certificate and key installed and not yet applied (applied by the `restart` operation).
pub const STAGED_CERT_FILE: &str = "member.staged.crt";
pub const STAGED_KEY_FILE: &str = "member.staged.key";

#[derive(Clone, Default)]
struct Material {
    cert_pem: Option<Vec<u8>>,
    key_pem: Option<Vec<u8>>,
    trust_pem: Option<Vec<u8>>,
}

/// The member TLS settings of the command line (`--member-cert`, `--member-key`, `--trust`,
/// `--insecure-http`), which [`MemberTls::open`] starts from.
#[derive(Debug, Clone, Default)]
pub struct MemberTlsFlags {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trust: Option<PathBuf>,
    /// Without the full set of material the data port serves plain TCP instead of failing.
    pub allow_plain: bool,
}

pub struct MemberTls {
    dir: PathBuf,
    allow_plain: bool,
    material: RwLock<Material>,
    client: RwLock<Option<Arc<ClientConfig>>>,
    pub server: Arc<ReloadableServerTls>,
    /// Bumped whenever the material changes, so followers re-handshake.
    generation: watch::Sender<u64>,
    /// Told the trust bundle whenever it changes (to name the issuers peers present).
    observer: RwLock<Option<Arc<HandshakeCounter>>>,
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl MemberTls {
    /// Loads `<data-dir>/tls`. Files given on the command line are copied in only when the
    /// data directory has none yet: what was installed through the API wins over flags.
    pub fn open(data_dir: &Path, flags: &MemberTlsFlags) -> Result<MemberTls> {
        let dir = data_dir.join("tls");
        for (flag, name, private) in [
            (&flags.cert, CERT_FILE, false),
            (&flags.key, KEY_FILE, true),
            (&flags.trust, TRUST_FILE, false),
        ] {
            let target = dir.join(name);
            let Some(src) = flag else { continue };
            if target.exists() {
                let same = fs::read(src).ok() == fs::read(&target).ok();
                if !same {
                    tracing::warn!(
                        "ignoring {}: {} holds material installed earlier, which wins over flags",
                        src.display(),
                        target.display()
                    );
                }
            } else {
                let bytes = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                atomic_write(&target, &bytes, private)?;
            }
        }
        Self::finish_interrupted_apply(&dir)?;
        let (generation, _) = watch::channel(0);
        let me = MemberTls {
            dir,
            allow_plain: flags.allow_plain,
            material: RwLock::new(Material::default()),
            client: RwLock::new(None),
            server: Arc::new(ReloadableServerTls::new(None)),
            generation,
            observer: RwLock::new(None),
        };
        me.reload()?;
        Ok(me)
    }

    fn material(&self) -> Material {
        match self.material.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the files and rebuilds the server and client configurations.
    pub fn reload(&self) -> Result<()> {
        let m = Material {
            cert_pem: read_opt(&self.dir.join(CERT_FILE))?,
            key_pem: read_opt(&self.dir.join(KEY_FILE))?,
            trust_pem: read_opt(&self.dir.join(TRUST_FILE))?,
        };
        let (server, client) = match (&m.cert_pem, &m.key_pem, &m.trust_pem) {
            (Some(cert), Some(key), Some(trust)) => {
                let server = tls::server_config_mtls(cert, key, trust, "data port")?;
                let client = tls::client_config(trust, Some((cert, key)), "replication")?;
                (Some(server), Some(client))
            }
            (None, None, None) if self.allow_plain => (None, None),
            _ if self.allow_plain => {
                tracing::warn!(
                    "data port: member certificate, key and trust bundle are not all present; serving plain TCP"
                );
                (None, None)
            }
            _ => bail!(
                "the data port needs a member certificate, its key and a trust bundle \
                 (--member-cert, --member-key, --trust), or --insecure-http for plain local experiments"
            ),
        };
        self.server.set(server);
        match self.client.write() {
            Ok(mut g) => *g = client,
            Err(p) => *p.into_inner() = client,
        }
        match self.material.write() {
            Ok(mut g) => *g = m,
            Err(p) => *p.into_inner() = m,
        }
        self.generation.send_modify(|g| *g += 1);
        self.tell_observer();
        Ok(())
    }

    /// From now on, `counter` knows the trust bundle in force.
    pub fn observe(&self, counter: Arc<HandshakeCounter>) {
        match self.observer.write() {
            Ok(mut g) => *g = Some(counter),
            Err(p) => *p.into_inner() = Some(counter),
        }
        self.tell_observer();
    }

    fn tell_observer(&self) {
        let observer = match self.observer.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(o) = observer {
            let trust = self.material().trust_pem.unwrap_or_default();
            o.set_trusted(&tls::parse_certs(&trust, "trust bundle").unwrap_or_default());
        }
    }

    pub fn is_tls(&self) -> bool {
        self.server.get().is_some()
    }

    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        match self.client.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Replaces the trust bundle (validated by the caller) and applies it.
    pub fn install_trust(&self, pem: &[u8]) -> Result<()> {
        let path = self.dir.join(TRUST_FILE);
        let old = read_opt(&path)?;
        atomic_write(&path, pem, false)?;
        if let Err(e) = self.reload() {
            // Keep the member usable: put the previous bundle back.
            match old {
                Some(b) => atomic_write(&path, &b, false)?,
                None => fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?,
            }
            self.reload()?;
            return Err(e);
        }
        Ok(())
    }

    /// Installs `add` beside the CAs of the current bundle listed in `keep` (an empty `keep`
    /// replaces the bundle); returns the fingerprints no longer trusted. A bundle left empty is
    /// refused: the member would accept no peer at all.
    pub fn install_trust_keeping(&self, add: &[u8], keep: &[String]) -> Result<Vec<String>> {
        let current = read_opt(&self.dir.join(TRUST_FILE))?;
        let (bundle, dropped) = tls::merge_trust(current.as_deref(), add, keep)?;
        if bundle.is_empty() {
            bail!("the resulting trust bundle is empty; the member would trust no peer");
        }
        self.install_trust(bundle.as_bytes())?;
        Ok(dropped)
    }

    /// Stages a member certificate and key (validated by the caller): checked against the
    /// current trust bundle, written beside the live pair, and presented from the next
    /// [`MemberTls::apply_staged`] (the `restart` operation), as an application that loads its
    /// certificate at start does. Until then every handshake uses the live pair.
    pub fn install_certificate(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        if let Some(trust) = self.material().trust_pem {
            tls::server_config_mtls(cert_pem, key_pem, &trust, "staged certificate")?;
        }
        // Key first, then the certificate: a staged certificate without a staged key means the
        // key was applied and the certificate not yet (see `finish_interrupted_apply`).
        atomic_write(&self.dir.join(STAGED_KEY_FILE), key_pem, true)?;
        atomic_write(&self.dir.join(STAGED_CERT_FILE), cert_pem, false)?;
        Ok(())
    }

    /// A staged certificate waits for a restart.
    pub fn restart_pending(&self) -> bool {
        self.dir.join(STAGED_CERT_FILE).exists()
    }

    /// Makes the staged pair (if any) the live one and reloads; true when a pair was applied.
    /// If the staged pair does not load, the previous live pair is put back and the staged
    /// one discarded: the member keeps serving with what it had.
    pub fn apply_staged(&self) -> Result<bool> {
        let (staged_cert, staged_key) = (
            self.dir.join(STAGED_CERT_FILE),
            self.dir.join(STAGED_KEY_FILE),
        );
        if !staged_cert.exists() {
            self.reload()?;
            return Ok(false);
        }
        let (cert_path, key_path) = (self.dir.join(CERT_FILE), self.dir.join(KEY_FILE));
        let old_cert = read_opt(&cert_path)?;
        let old_key = read_opt(&key_path)?;
        if staged_key.exists() {
            fs::rename(&staged_key, &key_path)
                .with_context(|| format!("applying {}", staged_key.display()))?;
        }
        fs::rename(&staged_cert, &cert_path)
            .with_context(|| format!("applying {}", staged_cert.display()))?;
        if let Err(e) = self.reload() {
            for (path, old, private) in [(&cert_path, old_cert, false), (&key_path, old_key, true)]
            {
                match old {
                    Some(b) => atomic_write(path, &b, private)?,
                    None => {
                        let _ = fs::remove_file(path);
                    }
                }
            }
            self.reload()?;
            return Err(e.context("the staged certificate was discarded"));
        }
        Ok(true)
    }

    /// A crash inside `apply_staged` between its two renames leaves the staged certificate
    /// without its key (already live): finish the apply rather than serve a mismatched pair.
    fn finish_interrupted_apply(dir: &Path) -> Result<()> {
        let staged_cert = dir.join(STAGED_CERT_FILE);
        if staged_cert.exists() && !dir.join(STAGED_KEY_FILE).exists() {
            fs::rename(&staged_cert, dir.join(CERT_FILE))
                .with_context(|| format!("finishing the apply of {}", staged_cert.display()))?;
        }
        Ok(())
    }

    pub fn trust_fingerprints(&self) -> Vec<String> {
        self.material()
            .trust_pem
            .and_then(|p| tls::fingerprints(&p, "trust bundle").ok())
            .unwrap_or_default()
    }

    pub fn cert_info(&self) -> Option<CertInfo> {
        let m = self.material();
        let cert = m.cert_pem?;
        tls::cert_info(&cert, m.trust_pem.as_deref()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CertSpec};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn member(
        dir: &Path,
        ca: &CertAuthority,
    ) -> std::result::Result<MemberTls, Box<dyn std::error::Error>> {
        let leaf = ca.issue(&CertSpec::member("m1"))?;
        let tls = dir.join("tls");
        fs::create_dir_all(&tls)?;
        fs::write(tls.join(CERT_FILE), &leaf.cert_pem)?;
        fs::write(tls.join(KEY_FILE), &leaf.key_pem)?;
        fs::write(tls.join(TRUST_FILE), ca.cert_pem())?;
        Ok(MemberTls::open(dir, &MemberTlsFlags::default())?)
    }

    /// A member in a new data directory, on a certificate of a new CA.
    fn fresh() -> std::result::Result<
        (tempfile::TempDir, CertAuthority, MemberTls),
        Box<dyn std::error::Error>,
    > {
        let dir = tempfile::tempdir()?;
        let ca = CertAuthority::generate("ca")?;
        let m = member(dir.path(), &ca)?;
        Ok((dir, ca, m))
    }

    fn presented(m: &MemberTls) -> Option<String> {
        m.cert_info().map(|c| c.fingerprint)
    }

    #[test]
    fn an_installed_certificate_is_presented_only_after_the_restart_applies_it() -> TestResult {
        let (_dir, ca, m) = fresh()?;
        let first = presented(&m);
        let next = ca.issue(&CertSpec::member("m1"))?;
        m.install_certificate(next.cert_pem.as_bytes(), next.key_pem.as_bytes())?;
        assert!(m.restart_pending());
        assert_eq!(presented(&m), first, "staged, not presented");
        assert!(m.apply_staged()?);
        assert!(!m.restart_pending());
        assert_eq!(presented(&m).as_deref(), Some(next.fingerprint.as_str()));
        // A restart with nothing staged only reloads.
        assert!(!m.apply_staged()?);
        assert_eq!(presented(&m).as_deref(), Some(next.fingerprint.as_str()));
        Ok(())
    }

    #[test]
    fn a_pair_that_does_not_load_is_refused_at_install_and_nothing_is_staged() -> TestResult {
        let (_dir, ca, m) = fresh()?;
        let (leaf, other) = (
            ca.issue(&CertSpec::member("m1"))?,
            ca.issue(&CertSpec::member("m1"))?,
        );
        let err = m.install_certificate(leaf.cert_pem.as_bytes(), other.key_pem.as_bytes());
        assert!(err.is_err(), "a key of another certificate");
        assert!(!m.restart_pending());
        Ok(())
    }

    #[test]
    fn a_crash_between_the_two_renames_of_an_apply_is_finished_at_the_next_start() -> TestResult {
        let (dir, ca, m) = fresh()?;
        let next = ca.issue(&CertSpec::member("m1"))?;
        m.install_certificate(next.cert_pem.as_bytes(), next.key_pem.as_bytes())?;
        drop(m);
        // The key was applied, the certificate not: a mismatched live pair on disk.
        let tls = dir.path().join("tls");
        fs::rename(tls.join(STAGED_KEY_FILE), tls.join(KEY_FILE))?;
        let m = MemberTls::open(dir.path(), &MemberTlsFlags::default())?;
        assert!(!m.restart_pending());
        assert_eq!(presented(&m).as_deref(), Some(next.fingerprint.as_str()));
        Ok(())
    }
}
