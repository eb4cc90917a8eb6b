//! Watches of the CA Secrets that `spec.certificates` names: a changed Secret wakes the
//! Clusters and Meshes that name it at once, so a CA renewed in place (cert-manager) starts its
//! rotation without waiting for the next read.
//!
//! One watch per Secret, by name (`metadata.name` field selector): RBAC can grant `list` and
//! `watch` on a Secret name that way, never on Secrets in general. The passes still read the
//! Secret by name themselves, and at least every `--ca-recheck`; the watch only makes them
//! sooner. A watch that may not run (RBAC) is retried with backoff and changes nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration as StdDuration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::CertificatesSpec;

use super::context::Triggers;
use super::stores::Stores;

/// `(namespace, name)` of a Secret.
pub type SecretKey = (String, String);

/// An object that names a CA Secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Referrer {
    Cluster { namespace: String, name: String },
    Mesh { namespace: String, name: String },
}

/// How often the set of referenced Secrets is looked at again.
const RESCAN: StdDuration = StdDuration::from_secs(5);

/// The Secret a `spec.certificates` of an object in `namespace` names.
fn secret_of(namespace: &str, certs: &CertificatesSpec) -> SecretKey {
    let r = &certs.ca_secret_ref;
    (
        r.namespace.clone().unwrap_or_else(|| namespace.to_string()),
        r.name.clone(),
    )
}

/// Every CA Secret the cached Clusters and Meshes name, with the objects that name it.
pub fn referenced(stores: &Stores) -> BTreeMap<SecretKey, BTreeSet<Referrer>> {
    let mut out: BTreeMap<SecretKey, BTreeSet<Referrer>> = BTreeMap::new();
    let mut add = |ns: String, name: String, certs: Option<&CertificatesSpec>, mesh: bool| {
        let Some(certs) = certs else { return };
        let secret = secret_of(&ns, certs);
        let r = if mesh {
            Referrer::Mesh {
                namespace: ns,
                name,
            }
        } else {
            Referrer::Cluster {
                namespace: ns,
                name,
            }
        };
        out.entry(secret).or_default().insert(r);
    };
    for g in stores.clusters.state() {
        if let Ok(c) = &g.0 {
            let ns = c.namespace().unwrap_or_default();
            add(ns, c.name_any(), c.spec.certificates.as_ref(), false);
        }
    }
    for g in stores.meshes.state() {
        if let Ok(m) = &g.0 {
            let ns = m.namespace().unwrap_or_default();
            add(ns, m.name_any(), m.spec.certificates.as_ref(), true);
        }
    }
    out
}

fn wake(stores: &Stores, triggers: &Triggers, secret: &SecretKey) {
    // Looked up again now: the objects naming it may have changed since the watch started.
    for r in referenced(stores).remove(secret).unwrap_or_default() {
        match r {
            Referrer::Cluster { namespace, name } => triggers.cluster(&namespace, &name),
            Referrer::Mesh { namespace, name } => triggers.mesh(&namespace, &name),
        }
    }
}

/// Keep one watch per referenced CA Secret until `stop` resolves.
pub async fn run(
    client: kube::Client,
    stores: Stores,
    triggers: Triggers,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let stop = stop.boxed().shared();
    let mut watches: BTreeMap<SecretKey, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let wanted = referenced(&stores);
        watches.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted.into_keys() {
            if watches.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(watch_one(
                client.clone(),
                stores.clone(),
                triggers.clone(),
                key.clone(),
                stop.clone(),
            ));
            watches.insert(key, task);
        }
        tokio::select! {
            _ = stop.clone() => break,
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
    for (_, task) in watches {
        task.abort();
    }
}

/// Watch one Secret; wake its referrers whenever it changes or goes away, and at the first
/// sight too: the watch starts after the object that names the Secret was read, perhaps after
/// the Secret changed. Errors (RBAC) are retried with backoff.
async fn watch_one(
    client: kube::Client,
    stores: Stores,
    triggers: Triggers,
    key: SecretKey,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tracing::info!(namespace = %key.0, secret = %key.1, "watching CA Secret");
    let api: kube::Api<Secret> = kube::Api::namespaced(client, &key.0);
    let mut stream = watcher::watch_object(api, &key.1)
        .default_backoff()
        .take_until(stop)
        .boxed();
    let mut seen: Option<Option<String>> = None;
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        let rv = match ev {
            Ok(Some(s)) => Some(s.metadata.resource_version.unwrap_or_default()),
            Ok(None) => None,
            Err(e) => {
                if !warned {
                    tracing::debug!(namespace = %key.0, secret = %key.1, error = %e, "CA Secret watch failed; it is still read by name on every pass");
                    warned = true;
                }
                continue;
            }
        };
        if seen.as_ref() != Some(&rv) {
            tracing::info!(namespace = %key.0, secret = %key.1, "CA Secret seen or changed: waking the objects that name it");
            wake(&stores, &triggers, &key);
        }
        seen = Some(rv);
    }
}

/// The CA Secret `certs` names (a Cluster's or a Mesh's `spec.certificates`; none without
/// them), read now by name (in another namespace when the ref names one). Missing, forbidden or
/// unreadable is an unusable CA with its reason: the planner stalls the object and contacts no
/// member about certificates.
pub(super) async fn read(
    client: &kube::Client,
    ns: &str,
    certs: Option<&CertificatesSpec>,
) -> Option<crate::reconcile::ca::CaState> {
    let certs = certs?;
    Some(read_secret(client, ns, certs).await)
}

/// The next pass at the latest `recheck` from now while the object names a CA Secret: its
/// watch makes a change count at once, this bounds the wait when the watch cannot run.
pub(super) fn bound(
    wait: StdDuration,
    recheck: StdDuration,
    certs: Option<&CertificatesSpec>,
) -> StdDuration {
    match certs {
        Some(_) => wait.min(recheck),
        None => wait,
    }
}

async fn read_secret(
    client: &kube::Client,
    ns: &str,
    certs: &CertificatesSpec,
) -> crate::reconcile::ca::CaState {
    use crate::reconcile::ca::CaState;
    use k8s_openapi::api::core::v1::Secret;
    let r = &certs.ca_secret_ref;
    let secret_ns = r.namespace.as_deref().unwrap_or(ns);
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), secret_ns);
    let name = format!("{secret_ns}/{}", r.name);
    match api.get_opt(&r.name).await {
        Ok(Some(s)) => {
            let data: std::collections::BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            CaState::read(Some(&data), &name, crate::reconcile::now())
        }
        Ok(None) => CaState::read(None, &name, crate::reconcile::now()),
        Err(kube::Error::Api(e)) if e.code == 403 => CaState::unusable(
            "CASecretForbidden",
            format!(
                "the operator may not read Secret {name}: list it in the chart value \
                 certificates.caSecretNames (docs/rbac.md)"
            ),
        ),
        Err(e) => CaState::unusable(
            "CASecretUnreadable",
            format!("Secret {name} could not be read: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretRef;

    fn stores(clusters: Vec<crate::api::Cluster>, meshes: Vec<crate::api::Mesh>) -> Stores {
        use kube::core::DeserializeGuard;
        use kube::runtime::reflector;
        let (cr, mut cw) = reflector::store();
        let (mr, mut mw) = reflector::store();
        for c in clusters {
            cw.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(c))));
        }
        for m in meshes {
            mw.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(m))));
        }
        Stores::new(cr, mr)
    }

    fn named(
        ns: &str,
        name: &str,
        secret: Option<&str>,
    ) -> (kube::api::ObjectMeta, Option<CertificatesSpec>) {
        let meta = kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        let certs = secret.map(|s| CertificatesSpec {
            ca_secret_ref: SecretRef {
                name: s.into(),
                namespace: None,
            },
            ..Default::default()
        });
        (meta, certs)
    }

    #[test]
    fn the_secrets_named_by_clusters_and_meshes_are_watched_with_their_referrers() {
        let cluster = |ns: &str, name: &str, secret: Option<&str>| {
            let (metadata, certificates) = named(ns, name, secret);
            let mut c = crate::api::Cluster::new(name, Default::default());
            c.metadata = metadata;
            c.spec.certificates = certificates;
            c
        };
        let (metadata, certificates) = named("apps", "fleet", Some("mesh-ca"));
        let mut mesh = crate::api::Mesh::new("fleet", Default::default());
        mesh.metadata = metadata;
        mesh.spec.certificates = certificates;
        let s = stores(
            vec![
                cluster("apps", "web", Some("web-ca")),
                cluster("apps", "db", Some("web-ca")),
                cluster("apps", "plain", None),
                cluster("other", "web", Some("web-ca")),
            ],
            vec![mesh],
        );
        let got = referenced(&s);
        let keys: Vec<&SecretKey> = got.keys().collect();
        assert_eq!(
            keys,
            [
                &("apps".to_string(), "mesh-ca".to_string()),
                &("apps".to_string(), "web-ca".to_string()),
                &("other".to_string(), "web-ca".to_string()),
            ]
        );
        let web_ca = &got[&("apps".to_string(), "web-ca".to_string())];
        assert_eq!(web_ca.len(), 2, "{web_ca:?}");
        assert!(web_ca.contains(&Referrer::Cluster {
            namespace: "apps".into(),
            name: "db".into()
        }));
        assert!(
            got[&("apps".to_string(), "mesh-ca".to_string())].contains(&Referrer::Mesh {
                namespace: "apps".into(),
                name: "fleet".into()
            })
        );
    }

    #[test]
    fn a_ref_without_a_namespace_is_the_objects_own() {
        let mut certs = CertificatesSpec {
            ca_secret_ref: SecretRef {
                name: "ca".into(),
                namespace: None,
            },
            ..Default::default()
        };
        assert_eq!(secret_of("apps", &certs), ("apps".into(), "ca".into()));
        certs.ca_secret_ref.namespace = Some("pki".into());
        assert_eq!(secret_of("apps", &certs), ("pki".into(), "ca".into()));
    }
}
