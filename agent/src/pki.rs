//! Certificate helpers for local meshes, demos and tests: a CA, certificates signed by it,
//! and SHA-256 fingerprints. Production deployments bring their own PKI; these helpers exist
//! so `baton demo`, `baton-agent gen-certs` and the tests can build real mTLS setups.

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate input: {0}")]
    Invalid(String),
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From one hour ago (tolerates small clock skew) for this many days.
    Days(u32),
    /// Expired yesterday: for tests that prove expired certificates are refused.
    Expired,
    /// An explicit window.
    Between {
        not_before: Timestamp,
        not_after: Timestamp,
    },
}

/// What a certificate may be used for (extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// Member certificates: served on the data port and presented when replicating.
    ServerAndClient,
}

/// Parameters of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    /// DNS names or IP addresses.
    pub sans: Vec<String>,
    pub usage: Usage,
    pub validity: Validity,
}

impl CertSpec {
    fn local(common_name: &str, usage: Usage) -> Self {
        CertSpec {
            common_name: common_name.to_string(),
            sans: vec!["127.0.0.1".to_string(), "localhost".to_string()],
            usage,
            validity: Validity::Days(365),
        }
    }

    /// A server certificate valid for 127.0.0.1 and localhost.
    pub fn server(common_name: &str) -> Self {
        Self::local(common_name, Usage::Server)
    }

    /// A client certificate (the operator's control identity).
    pub fn client(common_name: &str) -> Self {
        Self::local(common_name, Usage::Client)
    }

    /// A member certificate for the data port (server and client usage), valid for
    /// 127.0.0.1 and localhost.
    pub fn member(common_name: &str) -> Self {
        Self::local(common_name, Usage::ServerAndClient)
    }

    pub fn with_validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    pub fn with_sans(mut self, sans: Vec<String>) -> Self {
        self.sans = sans;
        self
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate authority able to sign leaf certificates.
pub struct CertAuthority {
    cert: IssuedCert,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("fingerprint", &self.cert.fingerprint)
            .finish()
    }
}

impl CertAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        Self::generate_with_validity(common_name, Validity::Days(3650))
    }

    pub fn generate_with_validity(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, validity)?;
        let cert = params.self_signed(&key)?;
        Ok(Self::from_parts(cert, params, key))
    }

    /// A new intermediate CA signed by this one (for chains: root, intermediates, issuer).
    pub fn issue_ca(&self, common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(common_name, validity)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Self::from_parts(cert, params, key))
    }

    fn from_parts(cert: rcgen::Certificate, params: CertificateParams, key: KeyPair) -> Self {
        let issued = IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: fingerprint_der(cert.der()),
        };
        CertAuthority {
            cert: issued,
            issuer: Issuer::new(params, key),
        }
    }

    /// Loads an existing CA (for example one written by `baton-agent gen-certs`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::Invalid(format!("CA private key: {e}")))?;
        let fingerprints = fingerprints_pem(cert_pem)?;
        let Some(fingerprint) = fingerprints.first().cloned() else {
            return Err(PkiError::Invalid("CA PEM holds no certificate".into()));
        };
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
        Ok(CertAuthority {
            cert: IssuedCert {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
                fingerprint,
            },
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.cert.key_pem
    }

    pub fn fingerprint(&self) -> &str {
        &self.cert.fingerprint
    }

    /// Signs a new leaf certificate with a fresh key.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(spec.sans.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Baton");
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        apply_validity(&mut params, spec.validity)?;
        params.serial_number = Some(serial_for(&spec.common_name));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: fingerprint_der(cert.der()),
        })
    }
}

fn ca_params(common_name: &str, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Baton");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    apply_validity(&mut params, validity)?;
    params.serial_number = Some(serial_for(common_name));
    Ok(params)
}

fn to_offset(ts: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(ts.as_second())
        .map_err(|e| PkiError::Invalid(format!("timestamp {ts} out of range: {e}")))
}

fn apply_validity(params: &mut CertificateParams, validity: Validity) -> Result<(), PkiError> {
    let now = Timestamp::now();
    let hour = SignedDuration::from_hours(1);
    let day = SignedDuration::from_hours(24);
    let (not_before, not_after) = match validity {
        Validity::Days(days) => {
            let span = SignedDuration::from_hours(24 * i64::from(days));
            (now - hour, now + span)
        }
        Validity::Expired => (now - day * 10, now - day),
        Validity::Between {
            not_before,
            not_after,
        } => (not_before, not_after),
    };
    if not_after <= not_before {
        return Err(PkiError::Invalid(format!(
            "validity window is empty: {not_before} .. {not_after}"
        )));
    }
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    Ok(())
}

// Unique enough for local meshes: two certificates must never share issuer+serial, or peers
// may cache the wrong one.
fn serial_for(name: &str) -> SerialNumber {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(Timestamp::now().as_nanosecond().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // DER integers are signed; keep the serial positive and non-zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Fingerprints of every certificate in a PEM bundle, in order.
pub fn fingerprints_pem(pem: &str) -> Result<Vec<String>, PkiError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| PkiError::Invalid(format!("PEM: {e}")))?;
        out.push(fingerprint_der(&cert));
    }
    Ok(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_leaf_with_distinct_fingerprints() -> Result<(), PkiError> {
        let ca = CertAuthority::generate("test-ca")?;
        let a = ca.issue(&CertSpec::server("a"))?;
        let b = ca.issue(&CertSpec::member("b").with_validity(Validity::Expired))?;
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(fingerprints_pem(&a.cert_pem)?, vec![a.fingerprint.clone()]);
        let reloaded = CertAuthority::from_pem(ca.cert_pem(), ca.key_pem())?;
        assert_eq!(reloaded.fingerprint(), ca.fingerprint());
        reloaded.issue(&CertSpec::client("c"))?;
        Ok(())
    }

    #[test]
    fn debug_never_prints_keys() -> Result<(), PkiError> {
        let ca = CertAuthority::generate("test-ca")?;
        let leaf = ca.issue(&CertSpec::client("c"))?;
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        Ok(())
    }
}
