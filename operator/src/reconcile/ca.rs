//! The CA of `spec.certificates` as a host holds it, and the secret parts of rotation requests.
//!
//! The planner names CA material by fingerprint only ([`crate::api::TrustParams`]); the host
//! read the CA Secret ([`CaState::read`]) and, when it sends a rotation request, resolves the
//! fingerprints to PEM and issues the member's certificate ([`material_for`]). PEMs and keys
//! live only in the request on its way to the agent: never in a plan, a status or an Event.
//!
//! A certificate is issued afresh each time a request is sent. That is safe because a request
//! is only sent again when its agent answered that it does not know the id (`advance_op`):
//! an agent that has the first request never sees a second one with another key.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use baton_agent::ca_material::{CaError, CaMaterial};
use baton_agent::pki::{CertAuthority, CertSpec, Validity};

use crate::api::{CertificatesSpec, MemberSpec, Timestamp};
use crate::plan::trust::{CaInput, CaView};
use crate::plan::{OpKind, OpRequest};

/// The CA a cluster declares, as its host read it in this pass.
#[derive(Clone, Debug, PartialEq)]
pub struct CaState {
    /// What the planner sees.
    pub input: CaInput,
    /// The checked material (None when unusable).
    pub material: Option<Arc<CaMaterial>>,
}

impl CaState {
    /// Reads and checks the CA Secret `secret` (its `data`; None: the Secret does not exist).
    /// Baton issues member certificates from it, so the issuer's key is required.
    pub fn read(data: Option<&BTreeMap<String, Vec<u8>>>, secret: &str, now: Timestamp) -> Self {
        let Some(data) = data else {
            return CaState::unusable(
                "CASecretNotFound",
                format!("Secret {secret:?} (spec.certificates.caSecretRef) does not exist"),
            );
        };
        let now =
            jiff::Timestamp::from_millisecond(now.millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        match CaMaterial::from_secret_data(data, true, now) {
            Ok(m) => CaState::ready(Arc::new(m)),
            Err(e) => CaState::invalid(secret, &e),
        }
    }

    fn ready(m: Arc<CaMaterial>) -> Self {
        let mut chains = vec![(m.issuer.fingerprint.clone(), m.anchor.fingerprint.clone())];
        for c in &m.intermediates {
            chains.push((c.fingerprint.clone(), m.anchor.fingerprint.clone()));
        }
        if m.anchor.fingerprint != m.issuer.fingerprint {
            chains.push((m.anchor.fingerprint.clone(), m.anchor.fingerprint.clone()));
        }
        let not_after = Timestamp(m.expires_at().as_millisecond());
        CaState {
            input: CaInput::Ready(CaView {
                anchor: m.anchor.fingerprint.clone(),
                issuer: m.issuer.fingerprint.clone(),
                chains,
                not_after,
            }),
            material: Some(m),
        }
    }

    fn invalid(secret: &str, e: &CaError) -> Self {
        CaState::unusable(e.reason(), format!("Secret {secret:?}: {e}"))
    }

    /// A CA that cannot be used, with the stable reason of the `Stalled` condition.
    pub fn unusable(reason: &'static str, message: String) -> Self {
        CaState {
            input: CaInput::Unusable { reason, message },
            material: None,
        }
    }
}

/// What a rotation request carries on the wire beyond what the plan recorded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// `install-trust`: the target root.
    pub trust_pem: Option<String>,
    /// `install-certificate`: the member's certificate (then the chain up to, not including,
    /// the root) and its key.
    pub certificate: Option<(String, String)>,
    /// The host cannot resolve what the request needs: it is refused before it is sent.
    pub unavailable: Option<String>,
}

// Hand-written so that no `{:?}` can print a key.
impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("trust_pem", &self.trust_pem.as_ref().map(|p| p.len()))
            .field(
                "certificate",
                &self.certificate.as_ref().map(|_| "<redacted>"),
            )
            .field("unavailable", &self.unavailable)
            .finish()
    }
}

impl Material {
    /// Nothing beyond the plan.
    pub const NONE: Material = Material {
        trust_pem: None,
        certificate: None,
        unavailable: None,
    };

    fn unavailable(why: String) -> Self {
        Material {
            unavailable: Some(why),
            ..Default::default()
        }
    }
}

/// The material `req` needs, from the CA the host holds now. A request recorded for another CA
/// than the one now declared is refused (the planner moves on to the new CA).
pub fn material_for(
    req: &OpRequest,
    member: &MemberSpec,
    ca: Option<&CaState>,
    certs: Option<&CertificatesSpec>,
    now: Timestamp,
) -> Material {
    let Some(t) = &req.trust else {
        return Material::default();
    };
    if !matches!(req.kind, OpKind::InstallTrust | OpKind::InstallCertificate) {
        return Material::default();
    }
    let Some(m) = ca.and_then(|c| c.material.as_deref()) else {
        return Material::unavailable("the CA of spec.certificates cannot be used".into());
    };
    if m.anchor.fingerprint != t.anchor || m.issuer.fingerprint != t.issuer {
        return Material::unavailable(format!(
            "the step was recorded for CA {}/{}, and spec.certificates now names {}",
            t.anchor,
            t.issuer,
            m.id()
        ));
    }
    match req.kind {
        OpKind::InstallTrust => Material {
            trust_pem: Some(m.anchor.pem()),
            ..Default::default()
        },
        _ => match issue(m, member, certs, now) {
            Ok(pair) => Material {
                certificate: Some(pair),
                ..Default::default()
            },
            Err(e) => Material::unavailable(e),
        },
    }
}

/// A member certificate from the issuer: server and client use, for the member's name and
/// the host of its agent endpoint, valid for `certificateValidity` but never past the
/// issuer's own expiry.
fn issue(
    m: &CaMaterial,
    member: &MemberSpec,
    certs: Option<&CertificatesSpec>,
    now: Timestamp,
) -> Result<(String, String), String> {
    let key = m
        .key_pem()
        .ok_or_else(|| "the CA Secret holds no key to issue member certificates".to_string())?;
    let ca = CertAuthority::from_pem(&m.issuer.pem(), key).map_err(|e| e.to_string())?;
    let validity = certs.map_or(CertificatesSpec::default().certificate_validity, |c| {
        c.certificate_validity
    });
    let not_before = jiff::Timestamp::from_millisecond(now.millis() - 3_600_000)
        .map_err(|e| format!("certificate start: {e}"))?;
    let until = jiff::Timestamp::from_millisecond(now.plus(validity).millis())
        .map_err(|e| format!("certificate end: {e}"))?;
    let not_after = until.min(m.issuer.not_after);
    let spec = CertSpec::member(&member.name)
        .with_sans(sans(member))
        .with_validity(Validity::Between {
            not_before,
            not_after,
        });
    let leaf = ca.issue(&spec).map_err(|e| e.to_string())?;
    let mut chain = leaf.cert_pem;
    for c in &m.intermediates {
        chain.push_str(&c.pem());
    }
    Ok((chain, leaf.key_pem))
}

/// The names a member certificate is valid for: the host of the agent endpoint (what peers
/// dial in this deployment model) and the member's name.
fn sans(member: &MemberSpec) -> Vec<String> {
    let host = member
        .endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = match host.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => host,
    };
    let mut out = vec![host.to_string()];
    if member.name != host {
        out.push(member.name.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TrustParams;

    fn secret(ca: &CertAuthority) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("ca.crt".to_string(), ca.cert_pem().as_bytes().to_vec()),
            ("ca.key".to_string(), ca.key_pem().as_bytes().to_vec()),
        ])
    }

    fn now() -> Timestamp {
        Timestamp(jiff::Timestamp::now().as_millisecond())
    }

    fn member() -> MemberSpec {
        MemberSpec {
            name: "m1".into(),
            endpoint: "https://10.0.0.5:9443".into(),
            ..Default::default()
        }
    }

    fn request(kind: OpKind, anchor: &str) -> OpRequest {
        OpRequest {
            trust: Some(TrustParams {
                anchor: anchor.into(),
                issuer: anchor.into(),
                keep: vec![],
            }),
            ..OpRequest::new("s1", kind)
        }
    }

    /// What `material_for` gives a request of `kind` recorded for CA `anchor`.
    fn resolve(kind: OpKind, anchor: &str, st: &CaState) -> Material {
        material_for(&request(kind, anchor), &member(), Some(st), None, now())
    }

    #[test]
    fn a_missing_or_unusable_secret_is_a_typed_reason_and_yields_no_material()
    -> Result<(), Box<dyn std::error::Error>> {
        let missing = CaState::read(None, "mesh-ca", now());
        assert!(matches!(
            missing.input,
            CaInput::Unusable {
                reason: "CASecretNotFound",
                ..
            }
        ));
        let ca = CertAuthority::generate("ca")?;
        let mut no_key = secret(&ca);
        no_key.remove("ca.key");
        let st = CaState::read(Some(&no_key), "mesh-ca", now());
        assert!(matches!(
            st.input,
            CaInput::Unusable {
                reason: "CASecretHasNoKey",
                ..
            }
        ));
        let m = resolve(OpKind::InstallTrust, ca.fingerprint(), &st);
        assert!(m.unavailable.is_some() && m.trust_pem.is_none());
        Ok(())
    }

    #[test]
    fn trust_resolves_to_the_root_and_a_certificate_is_issued_for_the_member()
    -> Result<(), Box<dyn std::error::Error>> {
        let ca = CertAuthority::generate("ca")?;
        let st = CaState::read(Some(&secret(&ca)), "mesh-ca", now());
        let CaInput::Ready(view) = &st.input else {
            return Err("the CA should be usable".into());
        };
        assert_eq!(view.id(), ca.fingerprint());
        let trust = resolve(OpKind::InstallTrust, ca.fingerprint(), &st);
        assert_eq!(trust.trust_pem.as_deref(), Some(ca.cert_pem()));
        let cert = resolve(OpKind::InstallCertificate, ca.fingerprint(), &st);
        let (chain, key) = cert.certificate.clone().ok_or("no certificate")?;
        baton_agent::tls::check_key_pair(chain.as_bytes(), key.as_bytes())?;
        let info = baton_agent::tls::cert_info(chain.as_bytes(), Some(ca.cert_pem().as_bytes()))?;
        assert_eq!(info.issuer_fingerprint.as_deref(), Some(ca.fingerprint()));
        assert!(
            !format!("{cert:?}").contains("PRIVATE"),
            "Debug redacts the key"
        );
        // Other kinds and requests without trust need nothing.
        let restart = resolve(OpKind::Restart, ca.fingerprint(), &st);
        assert_eq!(restart, Material::default());
        Ok(())
    }

    #[test]
    fn a_step_recorded_for_another_ca_is_refused_not_sent_with_the_new_one()
    -> Result<(), Box<dyn std::error::Error>> {
        let (old, new) = (
            CertAuthority::generate("old")?,
            CertAuthority::generate("new")?,
        );
        let st = CaState::read(Some(&secret(&new)), "mesh-ca", now());
        let m = resolve(OpKind::InstallTrust, old.fingerprint(), &st);
        assert!(m.trust_pem.is_none());
        assert!(
            m.unavailable
                .unwrap_or_default()
                .contains("recorded for CA")
        );
        Ok(())
    }

    #[test]
    fn member_certificates_name_the_endpoint_host_and_the_member() {
        assert_eq!(sans(&member()), ["10.0.0.5", "m1"]);
        let v6 = MemberSpec {
            name: "m2".into(),
            endpoint: "[::1]:9443".into(),
            ..Default::default()
        };
        assert_eq!(sans(&v6), ["::1", "m2"]);
    }
}
