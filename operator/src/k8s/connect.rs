//! From kubeconfig flags to a client: the same precedence as kubectl (`--kubeconfig`, else
//! `KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account; `--context`
//! picks a context; `--namespace` wins over the context's namespace).

use std::path::PathBuf;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Which cluster and namespace the plugin acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
}

/// The namespaces a command reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    /// The one namespace a write acts in (writes never span namespaces).
    pub fn namespace(&self) -> anyhow::Result<&str> {
        match self {
            Scope::Namespace(n) => Ok(n),
            Scope::All => anyhow::bail!(
                "this command changes objects: name their namespace with -n NAMESPACE instead of -A"
            ),
        }
    }
}

async fn config(t: &KubeTarget) -> anyhow::Result<Config> {
    let opts = KubeConfigOptions {
        context: t.context.clone(),
        cluster: None,
        user: None,
    };
    match (&t.kubeconfig, &t.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))
        }
        (None, Some(ctx)) => Config::from_kubeconfig(&opts)
            .await
            .with_context(|| format!("kubeconfig context {ctx:?}")),
        (None, None) => Config::infer()
            .await
            .context("no usable kubeconfig (KUBECONFIG, ~/.kube/config) or in-cluster account"),
    }
}

/// A client for the target and the scope its commands read.
pub async fn connect(t: &KubeTarget) -> anyhow::Result<(Client, Scope)> {
    let config = config(t).await?;
    let scope = if t.all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(
            t.namespace
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone()),
        )
    };
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, scope))
}
