//! The CA a Mesh or a standalone Cluster declares (`spec.certificates.caSecretRef`), read from
//! the Secret's data and checked before any member is asked to trust it or is issued from it.
//!
//! Two layouts are accepted, the ones users already have:
//! - Baton's: `ca.crt` (the issuing CA, optionally followed by its chain up to a root) and
//!   `ca.key` (the issuing CA's key).
//! - cert-manager's CA Secret (a `Certificate` with `isCA: true`): `tls.crt` (the issuing CA,
//!   optionally followed by intermediates), `tls.key`, and `ca.crt` (its root). A CA that
//!   cert-manager renews therefore changes the Secret, which is what starts a rotation.
//!
//! Trust anchors are the self-signed roots at the end of the chain; member certificates are
//! issued by the issuing CA (the certificate whose key the Secret holds). Every check here is
//! made before anything is sent: a Secret that fails one is reported with a typed reason and
//! changes nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use x509_parser::certificate::X509Certificate;

use crate::pki::fingerprint_der;
use crate::tls;

/// Where the Secret keeps the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ca.crt` + `ca.key`.
    Baton,
    /// `tls.crt` + `tls.key` (+ `ca.crt`, the root).
    CertManager,
}

/// Why the CA Secret cannot be used. Messages name keys of the Secret and certificates by
/// subject and fingerprint; they never quote key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("the Secret holds no CA certificate (neither ca.crt nor tls.crt)")]
    NoCertificate,
    #[error("{key}: {detail}")]
    BadPem { key: &'static str, detail: String },
    #[error(
        "the Secret holds no private key ({key}); Baton issues the members' certificates from it"
    )]
    MissingKey { key: &'static str },
    #[error("{key}: the private key is malformed")]
    BadKey { key: &'static str },
    #[error("{key} is not the key of the CA certificate {subject} ({fingerprint})")]
    KeyMismatch {
        key: &'static str,
        subject: String,
        fingerprint: String,
    },
    #[error("certificate {subject} ({fingerprint}) is not a CA (basicConstraints cA is not set)")]
    NotCa {
        subject: String,
        fingerprint: String,
    },
    #[error(
        "CA certificate {subject} ({fingerprint}) may not sign certificates (keyUsage lacks keyCertSign)"
    )]
    CannotSign {
        subject: String,
        fingerprint: String,
    },
    #[error("CA certificate {subject} ({fingerprint}) expired at {not_after}")]
    Expired {
        subject: String,
        fingerprint: String,
        not_after: Timestamp,
    },
    #[error("CA certificate {subject} ({fingerprint}) is not valid before {not_before}")]
    NotYetValid {
        subject: String,
        fingerprint: String,
        not_before: Timestamp,
    },
    #[error("the chain is broken: {subject} is not signed by {next}, the certificate after it")]
    BrokenChain { subject: String, next: String },
    #[error(
        "the chain of {subject} ends without a root (a self-signed CA): add the root to ca.crt"
    )]
    NoRoot { subject: String },
}

impl CaError {
    /// The reason of the `Stalled` condition this error is reported in.
    pub fn reason(&self) -> &'static str {
        match self {
            CaError::NoCertificate => "CASecretHasNoCertificate",
            CaError::BadPem { .. } => "CASecretInvalidPEM",
            CaError::MissingKey { .. } => "CASecretHasNoKey",
            CaError::BadKey { .. } => "CASecretInvalidKey",
            CaError::KeyMismatch { .. } => "CAKeyMismatch",
            CaError::NotCa { .. } => "CASecretNotACA",
            CaError::CannotSign { .. } => "CACannotSign",
            CaError::Expired { .. } => "CAExpired",
            CaError::NotYetValid { .. } => "CANotYetValid",
            CaError::BrokenChain { .. } => "CAChainBroken",
            CaError::NoRoot { .. } => "CAChainHasNoRoot",
        }
    }
}

/// One CA certificate of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// SHA-256 of the DER, lowercase hex (what agents report in `/v1/status`).
    pub fingerprint: String,
    pub subject: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub der: Vec<u8>,
}

impl CaCert {
    pub fn pem(&self) -> String {
        let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new("CERTIFICATE", self.der.clone()), lf)
    }
}

/// A checked CA: the issuer of member certificates, the intermediates above it and the roots
/// trust stores hold.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    pub layout: Layout,
    /// The CA whose key the Secret holds: member certificates are issued by it.
    pub issuer: CaCert,
    /// Certificates between the issuer and its root, the issuer's parent first (empty when
    /// the issuer is the root). Members present them after their own certificate.
    pub intermediates: Vec<CaCert>,
    /// The root the chain ends at: what every trust store holds.
    pub anchor: CaCert,
    key_pem: Option<String>,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("layout", &self.layout)
            .field("issuer", &self.issuer.fingerprint)
            .field("anchor", &self.anchor.fingerprint)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Subjects come from the Secret: keep messages bounded.
const MAX_SUBJECT: usize = 120;

fn bounded(s: String) -> String {
    if s.len() <= MAX_SUBJECT {
        return s;
    }
    let mut end = MAX_SUBJECT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A certificate of the Secret, parsed once.
struct Parsed {
    cert: CaCert,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    is_ca: bool,
    /// keyUsage is absent or allows keyCertSign.
    can_sign: bool,
}

fn parse_bundle(data: &[u8], key: &'static str) -> Result<Vec<Parsed>, CaError> {
    let bad = |detail: String| CaError::BadPem { key, detail };
    let ders = tls::parse_cert_bundle_strict(data, key).map_err(|e| bad(detail_of(e)))?;
    ders.iter()
        .map(|der| {
            let (_, x) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| bad(format!("cannot parse certificate: {e}")))?;
            let time = |t: i64, what: &str| {
                Timestamp::from_second(t).map_err(|e| bad(format!("{what} out of range: {e}")))
            };
            let can_sign = match x.key_usage() {
                Ok(None) => true,
                Ok(Some(ku)) => ku.value.key_cert_sign(),
                Err(e) => return Err(bad(format!("keyUsage: {e}"))),
            };
            Ok(Parsed {
                cert: CaCert {
                    fingerprint: fingerprint_der(der),
                    subject: bounded(x.subject().to_string()),
                    not_before: time(x.validity().not_before.timestamp(), "notBefore")?,
                    not_after: time(x.validity().not_after.timestamp(), "notAfter")?,
                    der: der.to_vec(),
                },
                subject_raw: x.subject().as_raw().to_vec(),
                issuer_raw: x.issuer().as_raw().to_vec(),
                is_ca: x.is_ca(),
                can_sign,
            })
        })
        .collect()
}

/// The message of a PEM error, without the `what` prefix (the key is said by [`CaError`]).
fn detail_of(e: tls::TlsError) -> String {
    match e {
        tls::TlsError::Pem { message, .. }
        | tls::TlsError::Parse { message, .. }
        | tls::TlsError::Config { message, .. } => message,
        tls::TlsError::NoCertificates { .. } => "no certificate in PEM".into(),
        tls::TlsError::NoKey { .. } => "no private key in PEM".into(),
    }
}

/// `child` is signed by `parent`'s key (names alone prove nothing).
fn signed_by(child: &Parsed, parent: &Parsed) -> bool {
    if child.issuer_raw != parent.subject_raw {
        return false;
    }
    let (Ok((_, c)), Ok((_, p))) = (
        x509_parser::parse_x509_certificate(&child.cert.der),
        x509_parser::parse_x509_certificate(&parent.cert.der),
    ) else {
        return false;
    };
    verify(&c, &p)
}

fn verify(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.verify_signature(Some(parent.public_key())).is_ok()
}

fn self_signed(p: &Parsed) -> bool {
    signed_by(p, p)
}

impl CaMaterial {
    /// Reads and checks the CA in a Secret's `data`. `need_key`: Baton issues member
    /// certificates from this CA, so the Secret must hold the issuer's key. `now` is when
    /// every certificate of the chain must be valid.
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
        need_key: bool,
        now: Timestamp,
    ) -> Result<Self, CaError> {
        let (layout, cert_key, key_key) = if data.contains_key("tls.crt") {
            (Layout::CertManager, "tls.crt", "tls.key")
        } else if data.contains_key("ca.crt") {
            (Layout::Baton, "ca.crt", "ca.key")
        } else {
            return Err(CaError::NoCertificate);
        };
        let mut chain = parse_bundle(data.get(cert_key).map_or(&[][..], |v| v), cert_key)?;
        // cert-manager keeps the root apart, in ca.crt: candidates to end the chain with.
        let mut roots = match (layout, data.get("ca.crt")) {
            (Layout::CertManager, Some(pem)) => parse_bundle(pem, "ca.crt")?,
            _ => Vec::new(),
        };
        for pair in chain.windows(2) {
            if !signed_by(&pair[0], &pair[1]) {
                return Err(CaError::BrokenChain {
                    subject: pair[0].cert.subject.clone(),
                    next: pair[1].cert.subject.clone(),
                });
            }
        }
        // Walk up through ca.crt until a self-signed root; a root already at the end of the
        // chain (cert-manager repeats a self-signed CA in ca.crt) ends it.
        while let Some(last) = chain.last()
            && !self_signed(last)
        {
            let Some(i) = roots
                .iter()
                .position(|r| signed_by(last, r) && !chain.iter().any(|c| c.cert == r.cert))
            else {
                return Err(CaError::NoRoot {
                    subject: last.cert.subject.clone(),
                });
            };
            let root = roots.swap_remove(i);
            chain.push(root);
        }
        for p in &chain {
            let (subject, fingerprint) = (p.cert.subject.clone(), p.cert.fingerprint.clone());
            if !p.is_ca {
                return Err(CaError::NotCa {
                    subject,
                    fingerprint,
                });
            }
            if !p.can_sign {
                return Err(CaError::CannotSign {
                    subject,
                    fingerprint,
                });
            }
            if now < p.cert.not_before {
                return Err(CaError::NotYetValid {
                    subject,
                    fingerprint,
                    not_before: p.cert.not_before,
                });
            }
            if now > p.cert.not_after {
                return Err(CaError::Expired {
                    subject,
                    fingerprint,
                    not_after: p.cert.not_after,
                });
            }
        }
        let key_pem = match data.get(key_key) {
            Some(key) => {
                tls::parse_key(key, key_key).map_err(|_| CaError::BadKey { key: key_key })?;
                let issuer = &chain[0].cert;
                tls::check_key_pair(issuer.pem().as_bytes(), key).map_err(|_| {
                    CaError::KeyMismatch {
                        key: key_key,
                        subject: issuer.subject.clone(),
                        fingerprint: issuer.fingerprint.clone(),
                    }
                })?;
                Some(String::from_utf8_lossy(key).into_owned())
            }
            None if need_key => return Err(CaError::MissingKey { key: key_key }),
            None => None,
        };
        let mut certs = chain.into_iter().map(|p| p.cert);
        let Some(issuer) = certs.next() else {
            return Err(CaError::NoCertificate);
        };
        let mut rest: Vec<CaCert> = certs.collect();
        let anchor = rest.pop().unwrap_or_else(|| issuer.clone());
        Ok(CaMaterial {
            layout,
            issuer,
            intermediates: rest,
            anchor,
            key_pem,
        })
    }

    /// The issuer's private key, PEM (None when the Secret holds none).
    pub fn key_pem(&self) -> Option<&str> {
        self.key_pem.as_deref()
    }

    /// Names this trust: the root's and the issuer's fingerprints. A rotation starts when it
    /// changes; re-reading the same Secret (or the same CA in the other layout) gives the same.
    pub fn id(&self) -> String {
        if self.issuer.fingerprint == self.anchor.fingerprint {
            self.anchor.fingerprint.clone()
        } else {
            format!("{}/{}", self.anchor.fingerprint, self.issuer.fingerprint)
        }
    }

    /// When the first certificate of the chain expires: the CA must be rotated before then.
    pub fn expires_at(&self) -> Timestamp {
        std::iter::once(&self.issuer)
            .chain(&self.intermediates)
            .chain(std::iter::once(&self.anchor))
            .map(|c| c.not_after)
            .min()
            .unwrap_or(self.issuer.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CertSpec, PkiError, Validity};
    use jiff::SignedDuration;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<CaMaterial, CaError> {
        CaMaterial::from_secret_data(&data(pairs), true, Timestamp::now())
    }

    fn reason(r: Result<CaMaterial, CaError>) -> &'static str {
        match r {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => {
                assert!(e.to_string().len() < 400, "bounded: {e}");
                e.reason()
            }
        }
    }

    #[test]
    fn a_self_signed_ca_in_either_layout_is_the_same_trust() -> R {
        let ca = CertAuthority::generate("mesh-ca")?;
        let baton = read(&[("ca.crt", ca.cert_pem()), ("ca.key", ca.key_pem())])?;
        assert_eq!(baton.layout, Layout::Baton);
        assert_eq!(baton.issuer.fingerprint, ca.fingerprint());
        assert_eq!(baton.anchor, baton.issuer, "a root issues its own leaves");
        assert!(baton.intermediates.is_empty());
        assert_eq!(baton.key_pem(), Some(ca.key_pem()));
        let cm = read(&[
            ("tls.crt", ca.cert_pem()),
            ("tls.key", ca.key_pem()),
            ("ca.crt", ca.cert_pem()),
        ])?;
        assert_eq!(cm.layout, Layout::CertManager);
        assert_eq!(cm.id(), baton.id());
        assert_eq!(cm.anchor.pem().trim(), ca.cert_pem().trim());
        let other = CertAuthority::generate("mesh-ca")?;
        let other = read(&[("ca.crt", other.cert_pem()), ("ca.key", other.key_pem())])?;
        assert_ne!(
            other.id(),
            baton.id(),
            "a new CA of the same name is a new trust"
        );
        Ok(())
    }

    #[test]
    fn an_intermediate_under_a_customer_root_issues_and_the_root_is_trusted() -> R {
        let root = CertAuthority::generate("customer-root")?;
        let mid = root.issue_ca("customer-intermediate", Validity::Days(365))?;
        let issuer = mid.issue_ca("baton-issuing", Validity::Days(90))?;
        let bundle = format!("{}{}{}", issuer.cert_pem(), mid.cert_pem(), root.cert_pem());
        let m = read(&[("ca.crt", &bundle), ("ca.key", issuer.key_pem())])?;
        assert_eq!(m.issuer.fingerprint, issuer.fingerprint());
        assert_eq!(m.anchor.fingerprint, root.fingerprint());
        let mids: Vec<_> = m
            .intermediates
            .iter()
            .map(|c| c.fingerprint.as_str())
            .collect();
        assert_eq!(mids, [mid.fingerprint()]);
        assert_eq!(
            m.id(),
            format!("{}/{}", root.fingerprint(), issuer.fingerprint())
        );
        // cert-manager: the intermediate in tls.crt, the root apart in ca.crt.
        let chain = format!("{}{}", issuer.cert_pem(), mid.cert_pem());
        let cm = read(&[
            ("tls.crt", &chain),
            ("tls.key", issuer.key_pem()),
            ("ca.crt", root.cert_pem()),
        ])?;
        assert_eq!(cm.id(), m.id());
        assert_eq!(cm.intermediates, m.intermediates);
        // The earliest expiry of the chain is the CA's: 90 days, not the root's ten years.
        let in_91_days = Timestamp::now() + SignedDuration::from_hours(24 * 91);
        assert!(m.expires_at() < in_91_days);
        Ok(())
    }

    #[test]
    fn a_chain_without_its_root_or_out_of_order_is_refused() -> R {
        let root = CertAuthority::generate("root")?;
        let mid = root.issue_ca("issuing", Validity::Days(365))?;
        let key = mid.key_pem();
        assert_eq!(
            reason(read(&[("ca.crt", mid.cert_pem()), ("ca.key", key)])),
            "CAChainHasNoRoot"
        );
        let cm = read(&[("tls.crt", mid.cert_pem()), ("tls.key", key)]);
        assert_eq!(
            reason(cm),
            "CAChainHasNoRoot",
            "cert-manager without ca.crt"
        );
        let stranger = CertAuthority::generate("root")?;
        let wrong_root = format!("{}{}", mid.cert_pem(), stranger.cert_pem());
        assert_eq!(
            reason(read(&[("ca.crt", &wrong_root), ("ca.key", key)])),
            "CAChainBroken",
            "a root of the same name that did not sign it"
        );
        let cm = read(&[
            ("tls.crt", mid.cert_pem()),
            ("tls.key", key),
            ("ca.crt", stranger.cert_pem()),
        ]);
        assert_eq!(reason(cm), "CAChainHasNoRoot");
        Ok(())
    }

    #[test]
    fn missing_garbage_and_mismatched_keys_are_refused_by_name() -> R {
        let ca = CertAuthority::generate("ca")?;
        let other = CertAuthority::generate("ca")?;
        assert_eq!(reason(read(&[])), "CASecretHasNoCertificate");
        assert_eq!(
            reason(read(&[("ca.key", ca.key_pem())])),
            "CASecretHasNoCertificate"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        assert_eq!(
            reason(read(&[("ca.crt", garbage), ("ca.key", ca.key_pem())])),
            "CASecretInvalidPEM"
        );
        assert_eq!(
            reason(read(&[("ca.crt", "hello"), ("ca.key", ca.key_pem())])),
            "CASecretInvalidPEM"
        );
        assert_eq!(
            reason(read(&[("ca.crt", ca.cert_pem())])),
            "CASecretHasNoKey"
        );
        // Trust only (members bring their own certificates): no key needed.
        let trust_only = CaMaterial::from_secret_data(
            &data(&[("ca.crt", ca.cert_pem())]),
            false,
            Timestamp::now(),
        )?;
        assert_eq!(trust_only.key_pem(), None);
        assert_eq!(
            reason(read(&[("ca.crt", ca.cert_pem()), ("ca.key", "not a key")])),
            "CASecretInvalidKey"
        );
        let e = read(&[("ca.crt", ca.cert_pem()), ("ca.key", other.key_pem())]);
        let Err(e) = e else {
            panic!("a foreign key was accepted")
        };
        assert_eq!(e.reason(), "CAKeyMismatch");
        let text = e.to_string();
        assert!(text.contains(ca.fingerprint()), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        Ok(())
    }

    #[test]
    fn a_leaf_an_expired_or_a_future_ca_is_refused() -> Result<(), PkiError> {
        let ca = CertAuthority::generate("ca")?;
        let leaf = ca.issue(&CertSpec::member("m1"))?;
        let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem());
        assert_eq!(
            reason(read(&[("ca.crt", &chain), ("ca.key", &leaf.key_pem)])),
            "CASecretNotACA"
        );
        let expired = CertAuthority::generate_with_validity("old", Validity::Expired)?;
        assert_eq!(
            reason(read(&[
                ("ca.crt", expired.cert_pem()),
                ("ca.key", expired.key_pem())
            ])),
            "CAExpired"
        );
        let now = Timestamp::now();
        let future = CertAuthority::generate_with_validity(
            "next",
            Validity::Between {
                not_before: now + SignedDuration::from_hours(24),
                not_after: now + SignedDuration::from_hours(48),
            },
        )?;
        assert_eq!(
            reason(read(&[
                ("ca.crt", future.cert_pem()),
                ("ca.key", future.key_pem())
            ])),
            "CANotYetValid"
        );
        // An expired root under a valid issuer fails too: its trust would not verify.
        let old_root = CertAuthority::generate_with_validity("old-root", Validity::Expired)?;
        let mid = old_root.issue_ca("mid", Validity::Days(30))?;
        let chain = format!("{}{}", mid.cert_pem(), old_root.cert_pem());
        assert_eq!(
            reason(read(&[("ca.crt", &chain), ("ca.key", mid.key_pem())])),
            "CAExpired"
        );
        Ok(())
    }

    #[test]
    fn debug_never_prints_the_key() -> R {
        let ca = CertAuthority::generate("ca")?;
        let m = read(&[("ca.crt", ca.cert_pem()), ("ca.key", ca.key_pem())])?;
        let shown = format!("{m:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains(ca.fingerprint()));
        Ok(())
    }
}
