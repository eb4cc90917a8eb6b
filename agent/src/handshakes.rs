//! TLS handshakes on the data port: those that failed over certificates or trust, counted per
//! peer (the evidence that a CA rotation broke nobody: a rotation done in the right order
//! leaves these at zero; one that drops the old CA too early does not), and, for those that
//! succeeded, the CA that issued the certificate each peer presented: open connections and
//! when one was last seen, per issuer. The second is what lets the operator hold the removal
//! of an old CA while any peer — a member or a client Baton does not manage — still presents a
//! certificate it issued.
//!
//! Only trust failures count (a certificate refused, or the peer refusing ours); timeouts and
//! garbage from a connection flood are the connection limits' business, not trust.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use rustls::AlertDescription;
use rustls_pki_types::CertificateDer;

use crate::api::{HandshakeFailures, PresentedIssuer};
use crate::pki::fingerprint_der;

/// Distinct peers kept per direction; the rest are counted under [`OTHER`] (a flood from
/// many addresses must not grow the status without bound).
pub const MAX_PEERS: usize = 64;
pub const OTHER: &str = "other";

/// Issuers kept; the rest are counted under [`OTHER`].
pub const MAX_ISSUERS: usize = 16;
/// The key of certificates whose issuer is neither in the presented chain nor trusted.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Default)]
pub struct HandshakeCounter {
    failures: Mutex<HandshakeFailures>,
    presented: Mutex<BTreeMap<String, PresentedIssuer>>,
    /// (raw subject, fingerprint) of each CA of the trust bundle: a presented leaf's issuer
    /// is looked up here when its chain does not carry it.
    known: RwLock<Vec<(Vec<u8>, String)>>,
}

/// An open connection whose peer presented a certificate: counted until dropped.
pub struct PresentedGuard {
    counter: Arc<HandshakeCounter>,
    issuer: String,
}

impl Drop for PresentedGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.counter.presented.lock()
            && let Some(e) = p.get_mut(&self.issuer)
        {
            e.open = e.open.saturating_sub(1);
            e.last_seen = Timestamp::now();
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, peer: String) {
    let key = if map.contains_key(&peer) || map.len() < MAX_PEERS {
        peer
    } else {
        OTHER.to_string()
    };
    *map.entry(key).or_default() += 1;
}

impl HandshakeCounter {
    /// A peer's connection to us failed its handshake.
    pub fn inbound(&self, peer: IpAddr) {
        if let Ok(mut f) = self.failures.lock() {
            bump(&mut f.inbound, peer.to_string());
        }
    }

    /// Our connection to `endpoint` failed its handshake.
    pub fn outbound(&self, endpoint: &str) {
        if let Ok(mut f) = self.failures.lock() {
            bump(&mut f.outbound, endpoint.to_string());
        }
    }

    pub fn snapshot(&self) -> HandshakeFailures {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The CAs of the trust bundle now in force (called whenever it changes).
    pub fn set_trusted(&self, trust: &[CertificateDer<'_>]) {
        let known = trust
            .iter()
            .filter_map(|c| {
                let (_, x) = x509_parser::parse_x509_certificate(c).ok()?;
                Some((x.subject().as_raw().to_vec(), fingerprint_der(c)))
            })
            .collect();
        if let Ok(mut k) = self.known.write() {
            *k = known;
        }
    }

    /// A peer completed a handshake presenting `chain` (leaf first): its issuer counts one
    /// open connection until the guard drops.
    pub fn presented(self: &Arc<Self>, chain: &[CertificateDer<'_>]) -> Option<PresentedGuard> {
        let issuer = self.issuer_of(chain)?;
        let mut p = self.presented.lock().ok()?;
        let key = if p.contains_key(&issuer) || p.len() < MAX_ISSUERS {
            issuer
        } else {
            OTHER.to_string()
        };
        let e = p.entry(key.clone()).or_insert(PresentedIssuer {
            open: 0,
            last_seen: Timestamp::now(),
        });
        e.open += 1;
        e.last_seen = Timestamp::now();
        Some(PresentedGuard {
            counter: self.clone(),
            issuer: key,
        })
    }

    pub fn presented_snapshot(&self) -> BTreeMap<String, PresentedIssuer> {
        self.presented.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The fingerprint of the CA that issued the leaf: found in the rest of the chain, then
    /// in the trust bundle, by the leaf's issuer name; [`UNKNOWN`] otherwise.
    fn issuer_of(&self, chain: &[CertificateDer<'_>]) -> Option<String> {
        let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
        let issuer = leaf.issuer().as_raw();
        let in_chain = chain[1..].iter().find_map(|c| {
            let (_, ca) = x509_parser::parse_x509_certificate(c).ok()?;
            (ca.subject().as_raw() == issuer).then(|| fingerprint_der(c))
        });
        if in_chain.is_some() {
            return in_chain;
        }
        let known = self.known.read().ok()?;
        Some(
            known
                .iter()
                .find(|(subject, _)| subject.as_slice() == issuer)
                .map_or_else(|| UNKNOWN.to_string(), |(_, fp)| fp.clone()),
        )
    }
}

/// A handshake error that is about certificates or trust (ours refused, or theirs).
pub fn is_trust_failure(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::CertificateRequired
        ),
        _ => false,
    }
}

/// [`is_trust_failure`] for the I/O error a TLS accept or connect returns.
pub fn io_is_trust_failure(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(is_trust_failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn peers_are_counted_apart_and_bounded() {
        let c = HandshakeCounter::default();
        c.outbound("127.0.0.1:7001");
        c.outbound("127.0.0.1:7001");
        c.inbound(IpAddr::from([10, 0, 0, 1]));
        let f = c.snapshot();
        assert_eq!(f.outbound["127.0.0.1:7001"], 2);
        assert_eq!(f.inbound["10.0.0.1"], 1);
        assert_eq!(f.total(), 3);
        for i in 0..200u8 {
            c.inbound(IpAddr::from([10, 0, 1, i]));
        }
        let f = c.snapshot();
        assert_eq!(
            f.inbound.len(),
            MAX_PEERS + 1,
            "bounded, plus one key for the rest"
        );
        assert_eq!(f.inbound.values().sum::<u64>(), 201);
        assert!(f.inbound[OTHER] > 0);
    }

    #[test]
    fn presented_issuers_are_named_from_the_chain_or_the_trust_and_counted_while_open()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::pki::{CertAuthority, CertSpec};
        let (root, stranger) = (
            CertAuthority::generate("root")?,
            CertAuthority::generate("x")?,
        );
        let inter = root.issue_ca("intermediate", crate::pki::Validity::Days(30))?;
        let der = |pem: &str| crate::tls::parse_certs(pem.as_bytes(), "t");
        let c = Arc::new(HandshakeCounter::default());
        c.set_trusted(&der(root.cert_pem())?);
        // Issued by the trusted root: named by the root's fingerprint.
        let leaf = der(&root.issue(&CertSpec::member("m1"))?.cert_pem)?;
        let g1 = c.presented(&leaf).ok_or("not counted")?;
        // Issued by an intermediate carried in the chain: named by the intermediate.
        let chain = format!(
            "{}{}",
            inter.issue(&CertSpec::member("m2"))?.cert_pem,
            inter.cert_pem()
        );
        let g2 = c.presented(&der(&chain)?).ok_or("not counted")?;
        // Nobody we know: unknown.
        let _g3 = c.presented(&der(&stranger.issue(&CertSpec::client("c"))?.cert_pem)?);
        let snap = c.presented_snapshot();
        assert_eq!(snap[root.fingerprint()].open, 1);
        assert_eq!(snap[inter.fingerprint()].open, 1);
        assert_eq!(snap[UNKNOWN].open, 1);
        drop((g1, g2));
        let snap = c.presented_snapshot();
        assert_eq!(snap[root.fingerprint()].open, 0, "closed, still remembered");
        assert_eq!(snap[inter.fingerprint()].open, 0);
        Ok(())
    }

    #[test]
    fn only_certificate_and_trust_errors_count() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(is_trust_failure(&unknown));
        assert!(is_trust_failure(&rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
        )));
        assert!(!is_trust_failure(&rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
        )));
        assert!(!is_trust_failure(&rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        assert!(io_is_trust_failure(&io));
        let plain = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert!(!io_is_trust_failure(&plain));
    }
}
