//! The operator's credentials for the agents' mutual TLS, from a Secret (`ca.crt`, `tls.crt`,
//! `tls.key`), and member access that picks up a rotated Secret without a restart.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use baton_agent::client::ClientTls;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::reconcile::{AgentMembers, Delegate, MemberError};

/// Keys of the agent client Secret.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// The client TLS settings a Secret holds; errors name the Secret and the key.
pub fn client_tls_from(secret: &Secret, namespace: &str, name: &str) -> anyhow::Result<ClientTls> {
    let data = secret.data.clone().unwrap_or_default();
    let string_data: BTreeMap<String, String> = secret.string_data.clone().unwrap_or_default();
    let get = |key: &str| -> anyhow::Result<String> {
        if let Some(v) = data.get(key) {
            return String::from_utf8(v.0.clone()).map_err(|_| {
                anyhow::anyhow!("Secret {namespace}/{name}: key {key} is not UTF-8 PEM")
            });
        }
        string_data
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("Secret {namespace}/{name}: key {key} is missing (expected {CA_KEY}, {CERT_KEY}, {KEY_KEY})"))
    };
    let tls = ClientTls::mtls(get(CA_KEY)?, get(CERT_KEY)?, get(KEY_KEY)?);
    // Parse now, so a bad Secret is reported at once and names itself.
    tls.share()
        .map_err(|e| anyhow::anyhow!("Secret {namespace}/{name}: {e}"))?;
    Ok(tls)
}

/// Read the agent client Secret.
pub async fn load(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<ClientTls> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|e| {
        anyhow::anyhow!("reading the agent TLS Secret {namespace}/{name} (--agent-tls-secret): {e}")
    })?;
    client_tls_from(&secret, namespace, name)
}

/// [`AgentMembers`] behind a lock, replaced when the credentials change.
pub struct SwappableMembers {
    inner: RwLock<Arc<AgentMembers>>,
}

impl SwappableMembers {
    pub fn new(tls: &ClientTls) -> anyhow::Result<Self> {
        Ok(SwappableMembers {
            inner: RwLock::new(Arc::new(AgentMembers::new(tls)?)),
        })
    }

    /// Use new credentials for every later request.
    pub fn replace(&self, tls: &ClientTls) -> anyhow::Result<()> {
        let fresh = Arc::new(AgentMembers::new(tls)?);
        if let Ok(mut g) = self.inner.write() {
            *g = fresh;
        }
        Ok(())
    }

    fn current(&self) -> Result<Arc<AgentMembers>, MemberError> {
        self.inner
            .read()
            .map(|g| g.clone())
            .map_err(|_| MemberError::Poisoned {
                what: "agent credentials lock",
            })
    }
}

impl Delegate for SwappableMembers {
    type To = AgentMembers;

    fn to(&self) -> Result<impl Deref<Target = AgentMembers> + Send + '_, MemberError> {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_secret_without_a_key_is_named_in_the_error() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                CA_KEY.to_string(),
                ByteString(b"pem".to_vec()),
            )])),
            ..Default::default()
        };
        let e = client_tls_from(&s, "baton", "agent-client").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("baton/agent-client"), "{msg}");
        assert!(msg.contains("tls.crt"), "{msg}");
    }

    #[test]
    fn a_secret_with_garbage_pem_is_refused() {
        let s = Secret {
            data: Some(BTreeMap::from([
                (CA_KEY.to_string(), ByteString(b"x".to_vec())),
                (CERT_KEY.to_string(), ByteString(b"y".to_vec())),
                (KEY_KEY.to_string(), ByteString(b"z".to_vec())),
            ])),
            ..Default::default()
        };
        let e = client_tls_from(&s, "baton", "agent-client").unwrap_err();
        assert!(e.to_string().contains("baton/agent-client"), "{e}");
    }
}
