//! Helpers shared by the real-API-server tests (`e2e_kube`, `e2e_kube_scale`).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use baton_agent::client::ClientTls;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use serde_json::json;

use baton::api::{Cluster, ClusterPhase};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub async fn client(path: &Path) -> TestResult<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Apply `crds/*.yaml` and wait until both are Established.
pub async fn install_crds(client: &Client) -> TestResult {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        let name = crd.metadata.name.clone().ok_or("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("baton-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match baton::k8s::http::check_crds(client).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Namespace of the chart's release: the operator's Lease and its agent client Secret.
pub fn release_namespace() -> String {
    std::env::var("BATON_E2E_RELEASE_NAMESPACE").unwrap_or_else(|_| "baton-system".into())
}

/// The cluster has seen its current generation and every member runs `version`.
pub fn ready_at(c: &Cluster, version: &str) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.phase == ClusterPhase::Ready
            && s.observed_generation == c.metadata.generation
            && !s.members.is_empty()
            && s.members
                .iter()
                .all(|m| m.version.as_deref() == Some(version))
    })
}

/// Put the operator's client certificate of `pki` (from `gen-certs`) into Secret `name` of the
/// release namespace (created if missing), as `--agent-tls-secret` reads it; returns the same
/// credentials for the test's own agent calls.
pub async fn publish_agent_secret(kube: &Client, name: &str, pki: &Path) -> TestResult<ClientTls> {
    let read = |f: &str| std::fs::read_to_string(pki.join(f));
    let (ca, crt, key) = (read("ca.crt")?, read("client.crt")?, read("client.key")?);
    let ns = release_namespace();
    let want: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    match Api::<Namespace>::all(kube.clone())
        .create(&PostParams::default(), &want)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"ca.crt": ca, "tls.crt": crt, "tls.key": key},
    }))?;
    Api::<Secret>::namespaced(kube.clone(), &ns)
        .patch(
            name,
            &PatchParams::apply("baton-e2e").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(ClientTls::mtls(ca, crt, key))
}

/// Certificates from `gen-certs` in `pki` for the demo agents `members` on this machine
/// (127.0.0.1, localhost), valid two days.
pub fn gen_agent_certs(pki: &Path, members: &[String]) -> TestResult {
    baton_agent::cli::gen_certs(&baton_agent::cli::GenCertsArgs {
        out: pki.to_path_buf(),
        members: members.to_vec(),
        hosts: vec!["127.0.0.1".into(), "localhost".into()],
        days: 2,
    })?;
    Ok(())
}

/// A demo agent in this process on 1.0.0 (see `k8s_mock::start_agent_with`) with the flags of
/// [`mtls_agent_flags`] and then `extra`; returns (control URL, data address).
pub async fn start_mtls_agent(
    dir: &Path,
    pki: &Path,
    member: &str,
    active: bool,
    source: Option<&str>,
    extra: &[&str],
) -> TestResult<(String, String)> {
    let mut flags = mtls_agent_flags(pki, member);
    flags.extend(extra.iter().map(|f| f.to_string()));
    Ok(crate::k8s_mock::start_agent_with(dir, member, "1.0.0", active, source, &flags).await?)
}

/// The flags of a demo agent serving its control API over mutual TLS with the certificates of
/// `pki`, and replicating over TLS with its member certificate.
pub fn mtls_agent_flags(pki: &Path, member: &str) -> Vec<String> {
    let p = |f: &str| pki.join(f).display().to_string();
    [
        ("--tls-cert", p("server.crt")),
        ("--tls-key", p("server.key")),
        ("--client-ca", p("ca.crt")),
        ("--member-cert", p(&format!("member-{member}.crt"))),
        ("--member-key", p(&format!("member-{member}.key"))),
        ("--trust", p("trust.pem")),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .collect()
}
