//! Peer identities. A member presents one identity to its peers: the SHA-256 of an identity
//! key of its own, generated at first start and kept in `<data-dir>/identity.key` (not of its
//! TLS certificate, which a CA rotation replaces: the identity outlives rotations). TLS (the
//! mesh CA) authenticates the connection; the accepted peers say which members belong. It accepts the peers `add-peer` gave it
//! (name → identity, persisted in `state.json`); once that set is non-empty, the replication
//! stream runs only between accepted peers, both ways ([`check_follower`], [`check_source`]).
//! An empty set enforces nothing, as before peer identities existed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

use crate::persist;
use crate::pki::hex;

/// The identity key (PKCS#8 PEM, mode 0600).
pub const IDENTITY_KEY_FILE: &str = "identity.key";
/// Most peers a member accepts: a cluster's members and its managed clients, with room.
pub const MAX_PEERS: usize = 256;
/// Peers named in one message before the rest are counted.
const LISTED_PEERS: usize = 8;

/// The SHA-256 of the member's identity key's public key (SubjectPublicKeyInfo DER), the key
/// being generated and stored on first start.
pub fn load_or_create_identity_key(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(IDENTITY_KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key (PEM)", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().context("generating the member's identity key")?;
            persist::atomic_write(&path, key.serialize_pem().as_bytes(), true)?;
            tracing::info!("generated the member identity key {}", path.display());
            key
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(hex(&Sha256::digest(key.subject_public_key_info())))
}

/// SHA-256 of a configuration document: of its compact JSON encoding (object keys sorted), so
/// that equal configurations have equal digests whatever their file's layout.
pub fn config_digest(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex(&Sha256::digest(bytes))
}

/// A fingerprint cut to its first 8 digits, for messages.
pub fn short(fp: &str) -> String {
    match fp.get(..8) {
        Some(head) if fp.len() > 8 => format!("{head}…"),
        _ => fp.to_string(),
    }
}

/// A member name received from a peer, fit for messages and logs.
pub fn clean_name(name: Option<&str>) -> String {
    name.filter(|s| crate::ops::validate_id(s).is_ok())
        .unwrap_or("unknown")
        .to_string()
}

/// The accepted peers' names, bounded.
pub fn list_names(peers: &BTreeMap<String, String>) -> String {
    if peers.is_empty() {
        return "none".to_string();
    }
    let mut names: Vec<&str> = peers
        .keys()
        .take(LISTED_PEERS)
        .map(String::as_str)
        .collect();
    if peers.len() > LISTED_PEERS {
        names.push("…");
    }
    let listed = names.join(", ");
    if peers.len() > LISTED_PEERS {
        format!("{listed} ({} in all)", peers.len())
    } else {
        listed
    }
}

/// The name `peers` accepts `identity` under, if any. A peer is accepted by its identity: the
/// name it calls itself is its agent's (`--member`), which need not be the name its cluster
/// gives it (the demo's `worker-1-m3` is member `m3`), so names only explain refusals.
fn accepted_as<'a>(peers: &'a BTreeMap<String, String>, identity: &str) -> Option<&'a str> {
    peers
        .iter()
        .find(|(_, fp)| fp.as_str() == identity)
        .map(|(n, _)| n.as_str())
}

/// Source side: may `follower`, which claims `identity`, replicate from member `me`, which
/// accepts `peers`? The error is the refusal's message (answered as 403 `unknown_peer`).
pub fn check_follower(
    me: &str,
    peers: &BTreeMap<String, String>,
    follower: &str,
    identity: Option<&str>,
) -> Result<(), String> {
    if peers.is_empty() {
        return Ok(());
    }
    let Some(identity) = identity else {
        return Err(format!(
            "source refused: {follower} sent no identity, and {me} serves its log to its accepted peers only"
        ));
    };
    if accepted_as(peers, identity).is_some() {
        return Ok(());
    }
    match peers.get(follower) {
        None => Err(format!(
            "source refused: {follower} (identity {}) is not an accepted peer of {me}",
            short(identity)
        )),
        Some(accepted) => Err(format!(
            "source refused: {follower} presents identity {} but {me} accepts {follower} as {}",
            short(identity),
            short(accepted)
        )),
    }
}

/// Follower side: may member `me`, which accepts `peers`, apply entries from the source
/// `source` (its name in the replication hello), which claims `identity`? The error says why
/// not.
pub fn check_source(
    me: &str,
    peers: &BTreeMap<String, String>,
    source: &str,
    identity: Option<&str>,
) -> Result<(), String> {
    if peers.is_empty() {
        return Ok(());
    }
    let Some(identity) = identity else {
        return Err(format!(
            "source {source} sent no identity (an agent without peer identities), and {me} applies entries from its accepted peers only"
        ));
    };
    if accepted_as(peers, identity).is_some() {
        return Ok(());
    }
    match peers.get(source) {
        Some(accepted) => Err(format!(
            "source {source} (identity {}) is not an accepted peer: {me} accepts {source} as {}",
            short(identity),
            short(accepted)
        )),
        None => Err(format!(
            "source {source} (identity {}) is not an accepted peer of {me} (accepted: {})",
            short(identity),
            list_names(peers)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn peers(list: &[(&str, char)]) -> BTreeMap<String, String> {
        list.iter().map(|(n, c)| (n.to_string(), fp(*c))).collect()
    }

    #[test]
    fn nothing_is_enforced_without_peers() {
        let none = BTreeMap::new();
        assert_eq!(check_follower("m1", &none, "m9", None), Ok(()));
        assert_eq!(check_source("m1", &none, "m9", None), Ok(()));
    }

    #[test]
    fn a_follower_is_accepted_by_its_identity_whatever_it_calls_itself() {
        let p = peers(&[("m2", 'a'), ("m3", 'b')]);
        let (a, c) = (fp('a'), fp('c'));
        assert_eq!(check_follower("m1", &p, "m2", Some(&a)), Ok(()));
        // Its agent's own name (`worker-1-m2`) is not the cluster's name for it (`m2`).
        assert_eq!(check_follower("m1", &p, "worker-1-m2", Some(&a)), Ok(()));
        let e = check_follower("m1", &p, "m4", Some(&c))
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "source refused: m4 (identity cccccccc…) is not an accepted peer of m1"
        );
        let e = check_follower("m1", &p, "m2", Some(&c))
            .err()
            .unwrap_or_default();
        assert!(e.contains("accepts m2 as aaaaaaaa…"), "{e}");
        let e = check_follower("m1", &p, "m2", None)
            .err()
            .unwrap_or_default();
        assert!(e.contains("sent no identity"), "{e}");
    }

    #[test]
    fn a_source_is_accepted_by_its_identity_whatever_it_calls_itself() {
        let p = peers(&[("m1", 'a')]);
        let (a, b) = (fp('a'), fp('b'));
        assert_eq!(check_source("m2", &p, "m1", Some(&a)), Ok(()));
        assert_eq!(check_source("m2", &p, "worker-1-m1", Some(&a)), Ok(()));
        let e = check_source("m2", &p, "m3", Some(&b))
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "source m3 (identity bbbbbbbb…) is not an accepted peer of m2 (accepted: m1)"
        );
        let e = check_source("m2", &p, "m1", Some(&b))
            .err()
            .unwrap_or_default();
        assert!(e.contains("accepts m1 as aaaaaaaa…"), "{e}");
        assert!(check_source("m2", &p, "m1", None).is_err());
    }

    #[test]
    fn long_peer_lists_are_cut() {
        let many: BTreeMap<String, String> =
            (0..40).map(|i| (format!("p{i:02}"), fp('c'))).collect();
        let listed = list_names(&many);
        assert!(listed.ends_with("… (40 in all)"), "{listed}");
        assert_eq!(listed.matches(", ").count(), LISTED_PEERS);
    }

    #[test]
    fn the_identity_key_is_made_once_and_kept() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create_identity_key(dir.path())?;
        assert!(crate::ops::valid_fingerprint(&first), "{first}");
        assert_eq!(load_or_create_identity_key(dir.path())?, first);
        let other = tempfile::tempdir()?;
        assert_ne!(load_or_create_identity_key(other.path())?, first);
        std::fs::write(dir.path().join(IDENTITY_KEY_FILE), "garbage")?;
        assert!(load_or_create_identity_key(dir.path()).is_err());
        Ok(())
    }

    #[test]
    fn config_digests_ignore_layout() -> Result<()> {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": {"x": [1, 2]}}"#)?;
        let b: serde_json::Value = serde_json::from_str("{\"a\":{\"x\":[1,2]},\n \"b\":1}")?;
        let c: serde_json::Value = serde_json::from_str(r#"{"a": {"x": [2, 1]}, "b": 1}"#)?;
        assert_eq!(config_digest(&a), config_digest(&b));
        assert_ne!(config_digest(&a), config_digest(&c));
        assert!(crate::ops::valid_fingerprint(&config_digest(&a)));
        Ok(())
    }
}
