//! TLS handshakes on the data port that failed over certificates or trust, counted per peer:
//! the evidence that a CA rotation broke nobody (a rotation done in the right order leaves
//! these at zero; one that drops the old CA too early does not).
//!
//! Only trust failures count (a certificate refused, or the peer refusing ours); timeouts and
//! garbage from a connection flood are the connection limits' business, not trust.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use rustls::AlertDescription;

use crate::api::HandshakeFailures;

/// Distinct peers kept per direction; the rest are counted under [`OTHER`] (a flood from
/// many addresses must not grow the status without bound).
pub const MAX_PEERS: usize = 64;
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
pub struct HandshakeCounter(Mutex<HandshakeFailures>);

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
        if let Ok(mut f) = self.0.lock() {
            bump(&mut f.inbound, peer.to_string());
        }
    }

    /// Our connection to `endpoint` failed its handshake.
    pub fn outbound(&self, endpoint: &str) {
        if let Ok(mut f) = self.0.lock() {
            bump(&mut f.outbound, endpoint.to_string());
        }
    }

    pub fn snapshot(&self) -> HandshakeFailures {
        self.0.lock().map(|f| f.clone()).unwrap_or_default()
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
