//! rustls configuration (ring provider only) for the control API, the data port and clients.

use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The client configuration `client_config` builds (and `http_client::Target` takes).
pub use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::api::CertInfo;
use crate::pki::fingerprint_der;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: invalid PEM: {message}")]
    Pem { what: String, message: String },
    #[error("{what}: no certificate found in PEM")]
    NoCertificates { what: String },
    #[error("{what}: no private key found in PEM")]
    NoKey { what: String },
    #[error("{what}: {message}")]
    Config { what: String, message: String },
    #[error("{what}: cannot parse certificate: {message}")]
    Parse { what: String, message: String },
}

/// The only crypto provider Baton uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        out.push(cert.map_err(|e| TlsError::Pem {
            what: what.to_string(),
            message: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(TlsError::NoCertificates {
            what: what.to_string(),
        });
    }
    Ok(out)
}

/// Like [`parse_certs`], but every PEM block must be an X.509 certificate that parses: the
/// framing alone proves nothing (base64 of garbage between BEGIN/END lines decodes fine), and
/// a key or an unknown block in a trust bundle is a mistake to report, not to skip.
pub fn parse_cert_bundle_strict(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::SectionKind;
    let pem_err = |message: String| TlsError::Pem {
        what: what.to_string(),
        message,
    };
    let mut out = Vec::new();
    for (n, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).enumerate() {
        // The PEM error may quote input (possibly key material): name the block only.
        let (kind, der) =
            section.map_err(|_| pem_err(format!("PEM block {} is malformed", n + 1)))?;
        if kind != SectionKind::Certificate {
            return Err(pem_err(format!(
                "PEM block {} is a {kind:?}, not a certificate",
                n + 1
            )));
        }
        match x509_parser::parse_x509_certificate(&der) {
            Ok(([], _)) => out.push(CertificateDer::from(der)),
            Ok(_) => {
                return Err(TlsError::Parse {
                    what: what.to_string(),
                    message: format!("PEM block {} has data after the certificate", n + 1),
                });
            }
            Err(e) => {
                return Err(TlsError::Parse {
                    what: what.to_string(),
                    message: format!("PEM block {}: {e}", n + 1),
                });
            }
        }
    }
    // Blocks with labels rustls does not know are skipped by its iterator; count them here.
    let begins = pem
        .split(|b| *b == b'\n' || *b == b'\r')
        .filter(|line| line.starts_with(b"-----BEGIN "))
        .count();
    if begins != out.len() {
        return Err(pem_err(format!(
            "{begins} PEM blocks, of which {} are certificates",
            out.len()
        )));
    }
    if out.is_empty() {
        return Err(TlsError::NoCertificates {
            what: what.to_string(),
        });
    }
    Ok(out)
}

pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The PEM error may quote input; never echo it for keys.
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            what: what.to_string(),
        },
        _ => TlsError::Pem {
            what: what.to_string(),
            message: "malformed private key".to_string(),
        },
    })
}

fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in parse_certs(pem, what)? {
        store.add(cert).map_err(|e| TlsError::Config {
            what: what.to_string(),
            message: format!("unusable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

fn config_err(what: &str) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |e| TlsError::Config {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A server that requires a client certificate signed by one of the CAs in `client_ca_pem`.
pub fn server_config_mtls(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    what: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = parse_certs(cert_pem, &format!("{what} certificate"))?;
    let key = parse_key(key_pem, &format!("{what} key"))?;
    let roots = roots(client_ca_pem, &format!("{what} client CA"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config {
            what: what.to_string(),
            message: format!("client verifier: {e}"),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err(what))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(config_err(what))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that verifies servers against `ca_pem` and optionally presents a certificate.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    what: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(ca_pem, &format!("{what} CA"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err(what))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let certs = parse_certs(cert_pem, &format!("{what} client certificate"))?;
            let key = parse_key(key_pem, &format!("{what} client key"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(config_err(what))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks that a certificate and key belong together, without building a full config.
pub fn check_key_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
    let certs = parse_certs(cert_pem, "certificate")?;
    let key = parse_key(key_pem, "private key")?;
    rustls::sign::CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        TlsError::Config {
            what: "certificate/key pair".to_string(),
            message: e.to_string(),
        }
    })?;
    Ok(())
}

/// Server name for verifying a peer reached at `host` (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::Config {
        what: format!("server name {host:?}"),
        message: e.to_string(),
    })
}

/// Fingerprints of every certificate in a PEM bundle.
pub fn fingerprints(pem: &[u8], what: &str) -> Result<Vec<String>, TlsError> {
    Ok(parse_certs(pem, what)?
        .iter()
        .map(|c| fingerprint_der(c))
        .collect())
}

/// The trust bundle an `install-trust` with `keepTrust` leaves: the certificates of `current`
/// whose fingerprints are in `keep`, then those of `add` not already kept (a CA listed twice is
/// stored once). Returns the bundle as PEM and the fingerprints of `current` it drops.
///
/// Kept CAs come from the member's own bundle because the operator may never have seen them
/// (the CA the members trusted before Baton managed them, or one cert-manager renewed in place):
/// the request names them by fingerprint only. A listed fingerprint the member does not trust is
/// not an error: the request was planned from an observation, and the bundle may have moved.
pub fn merge_trust(
    current: Option<&[u8]>,
    add: &[u8],
    keep: &[String],
) -> Result<(String, Vec<String>), TlsError> {
    let current = match current {
        Some(pem) => parse_certs(pem, "current trust bundle")?,
        None => Vec::new(),
    };
    let added = parse_cert_bundle_strict(add, "trustPem")?;
    let mut seen: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    let mut out = String::new();
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    let mut push = |der: &CertificateDer<'_>, fp: String, seen: &mut Vec<String>| {
        if !seen.contains(&fp) {
            out.push_str(&pem::encode_config(
                &pem::Pem::new("CERTIFICATE", der.to_vec()),
                lf,
            ));
            seen.push(fp);
        }
    };
    for der in &current {
        let fp = fingerprint_der(der);
        if keep.contains(&fp) {
            push(der, fp, &mut seen);
        } else if !dropped.contains(&fp) {
            dropped.push(fp);
        }
    }
    for der in &added {
        push(der, fingerprint_der(der), &mut seen);
    }
    dropped.retain(|fp| !seen.contains(fp));
    Ok((out, dropped))
}

/// Describes the first certificate of `cert_pem`. The issuer fingerprint is found among the
/// rest of the chain and then the trust bundle, matching the issuer name.
pub fn cert_info(cert_pem: &[u8], trust_pem: Option<&[u8]>) -> Result<CertInfo, TlsError> {
    let chain = parse_certs(cert_pem, "certificate")?;
    let leaf = &chain[0];
    let parse_err = |e: String| TlsError::Parse {
        what: "certificate".to_string(),
        message: e,
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| parse_err(e.to_string()))?;
    let not_after = Timestamp::from_second(parsed.validity().not_after.timestamp())
        .map_err(|e| parse_err(format!("notAfter out of range: {e}")))?;
    let issuer_raw = parsed.issuer().as_raw();
    let mut candidates: Vec<CertificateDer<'static>> = chain[1..].to_vec();
    if let Some(trust) = trust_pem
        && let Ok(certs) = parse_certs(trust, "trust bundle")
    {
        candidates.extend(certs);
    }
    let issuer_fingerprint = candidates.iter().find_map(|c| {
        let (_, ca) = x509_parser::parse_x509_certificate(c).ok()?;
        (ca.subject().as_raw() == issuer_raw).then(|| fingerprint_der(c))
    });
    Ok(CertInfo {
        fingerprint: fingerprint_der(leaf),
        issuer_fingerprint,
        not_after,
        subject: Some(parsed.subject().to_string()),
    })
}

/// A server TLS configuration that can be swapped at runtime (certificate or trust
/// installs); new handshakes use the latest one. `None` means plain TCP.
#[derive(Default)]
pub struct ReloadableServerTls {
    current: RwLock<Option<Arc<ServerConfig>>>,
}

impl ReloadableServerTls {
    pub fn new(config: Option<Arc<ServerConfig>>) -> Self {
        ReloadableServerTls {
            current: RwLock::new(config),
        }
    }

    pub fn get(&self) -> Option<Arc<ServerConfig>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, config: Option<Arc<ServerConfig>>) {
        match self.current.write() {
            Ok(mut g) => *g = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CertSpec};

    #[test]
    fn cert_info_finds_issuer_in_trust() -> Result<(), Box<dyn std::error::Error>> {
        let ca = CertAuthority::generate("ca")?;
        let other = CertAuthority::generate("other")?;
        let leaf = ca.issue(&CertSpec::member("m1"))?;
        let bundle = format!("{}{}", other.cert_pem(), ca.cert_pem());
        let info = cert_info(leaf.cert_pem.as_bytes(), Some(bundle.as_bytes()))?;
        assert_eq!(info.fingerprint, leaf.fingerprint);
        assert_eq!(info.issuer_fingerprint.as_deref(), Some(ca.fingerprint()));
        assert!(info.not_after > Timestamp::now());
        check_key_pair(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())?;
        let other_leaf = other.issue(&CertSpec::member("m2"))?;
        assert!(check_key_pair(leaf.cert_pem.as_bytes(), other_leaf.key_pem.as_bytes()).is_err());
        Ok(())
    }

    #[test]
    fn merge_trust_keeps_only_the_listed_cas_and_adds_the_new_once()
    -> Result<(), Box<dyn std::error::Error>> {
        let (old, other, new) = (
            CertAuthority::generate("old")?,
            CertAuthority::generate("other")?,
            CertAuthority::generate("new")?,
        );
        let current = format!("{}{}", old.cert_pem(), other.cert_pem());
        let fp = |ca: &CertAuthority| ca.fingerprint().to_string();
        // AddTrust: keep the old root, add the new one; `other` was not listed and goes.
        let (bundle, dropped) = merge_trust(
            Some(current.as_bytes()),
            new.cert_pem().as_bytes(),
            &[fp(&old)],
        )?;
        assert_eq!(
            fingerprints(bundle.as_bytes(), "b")?,
            vec![fp(&old), fp(&new)]
        );
        assert_eq!(dropped, vec![fp(&other)]);
        // Sent again on the result (a replay with a new id): the same bundle, nothing dropped.
        let (again, dropped) = merge_trust(
            Some(bundle.as_bytes()),
            new.cert_pem().as_bytes(),
            &[fp(&old)],
        )?;
        assert_eq!(again, bundle);
        assert!(dropped.is_empty());
        // Keeping the CA being added does not list it twice.
        let (both, _) = merge_trust(
            Some(bundle.as_bytes()),
            new.cert_pem().as_bytes(),
            &[fp(&old), fp(&new)],
        )?;
        assert_eq!(
            fingerprints(both.as_bytes(), "b")?,
            vec![fp(&old), fp(&new)]
        );
        // RemoveOldTrust: keep nothing but the new root.
        let (only_new, dropped) = merge_trust(
            Some(both.as_bytes()),
            new.cert_pem().as_bytes(),
            &[fp(&new)],
        )?;
        assert_eq!(fingerprints(only_new.as_bytes(), "b")?, vec![fp(&new)]);
        assert_eq!(dropped, vec![fp(&old)]);
        // A fingerprint the member does not trust is ignored; no current bundle at all is fine.
        let (fresh, _) = merge_trust(None, new.cert_pem().as_bytes(), &["0".repeat(64)])?;
        assert_eq!(fingerprints(fresh.as_bytes(), "b")?, vec![fp(&new)]);
        // A key in trustPem is refused, whatever is kept.
        assert!(merge_trust(None, new.key_pem().as_bytes(), &[]).is_err());
        Ok(())
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(parse_certs(b"garbage", "x").is_err());
        assert!(
            parse_key(
                b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
                "k"
            )
            .is_err()
        );
        assert!(cert_info(b"", None).is_err());
    }

    #[test]
    fn strict_bundles_hold_only_parseable_certificates() -> Result<(), Box<dyn std::error::Error>> {
        let ca = CertAuthority::generate("ca")?;
        let other = CertAuthority::generate("other")?;
        let bundle = format!("# our CAs\n{}{}", ca.cert_pem(), other.cert_pem());
        assert_eq!(parse_cert_bundle_strict(bundle.as_bytes(), "t")?.len(), 2);
        // Base64 of "garbage": decodes, but is no certificate. The lenient parser takes it.
        let framed = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n";
        assert!(parse_certs(framed.as_bytes(), "t").is_ok());
        assert!(matches!(
            parse_cert_bundle_strict(framed.as_bytes(), "t"),
            Err(TlsError::Parse { .. })
        ));
        let with_key = format!("{}{}", ca.cert_pem(), ca.key_pem());
        let e = parse_cert_bundle_strict(with_key.as_bytes(), "t")
            .err()
            .ok_or("a key in a trust bundle was accepted")?;
        assert!(
            !e.to_string()
                .contains(ca.key_pem().lines().nth(1).unwrap_or("-"))
        );
        let unknown = format!(
            "{}-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
            ca.cert_pem()
        );
        assert!(parse_cert_bundle_strict(unknown.as_bytes(), "t").is_err());
        assert!(parse_cert_bundle_strict(b"", "t").is_err());
        Ok(())
    }
}
