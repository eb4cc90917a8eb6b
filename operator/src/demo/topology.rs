//! The demo mesh: which clusters and members exist, and the Mesh/Cluster manifests that
//! describe them to the runner (written as YAML a user can read and reuse with `baton run`).

use std::fmt::Write;

/// Tier of a demo cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Management,
    Worker,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Management => "management",
            Tier::Worker => "worker",
        }
    }
}

/// One demo cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    pub name: String,
    pub tier: Tier,
    /// Member names the manifests declare (`m1`, `m2`, ...); `members[0]` starts Active.
    pub members: Vec<String>,
    /// The member marked `primary` (`m1` unless the scale scenario moved it).
    pub primary: Option<String>,
    /// `upgrade.returnToPrimary`: the cluster switches over to its primary when it is not the
    /// active (the scale scenario's "switch over to the new member").
    pub return_to_primary: bool,
    /// A member whose agent runs from the start, replicating from nobody, that the manifests
    /// do not declare until the scale scenario adds it.
    pub spare_agent: Option<String>,
}

impl ClusterLayout {
    /// Name of a member's agent (unique across the mesh, used for certificates and records).
    pub fn agent_name(&self, member: &str) -> String {
        format!("{}-{member}", self.name)
    }

    /// Every member with an agent: the declared ones, then the spare agent.
    pub fn agents(&self) -> impl Iterator<Item = &String> {
        self.members.iter().chain(&self.spare_agent)
    }

    fn plain(name: String, tier: Tier, members: Vec<String>) -> ClusterLayout {
        ClusterLayout {
            name,
            tier,
            primary: members.first().cloned(),
            members,
            return_to_primary: false,
            spare_agent: None,
        }
    }
}

/// One management cluster and `clusters - 1` workers, `members` each.
pub fn layout(clusters: usize, members: usize) -> Vec<ClusterLayout> {
    let names: Vec<String> = (1..=members).map(|i| format!("m{i}")).collect();
    let mut out = vec![ClusterLayout::plain(
        "mgmt".into(),
        Tier::Management,
        names.clone(),
    )];
    for w in 1..clusters {
        out.push(ClusterLayout::plain(
            format!("worker-{w}"),
            Tier::Worker,
            names.clone(),
        ));
    }
    out
}

/// The scale scenario's layout: [`layout`], with one more agent for the first worker (the
/// member it will add), named after the last member (`m3` beside `m1`, `m2`).
pub fn scale_layout(clusters: usize, members: usize) -> Vec<ClusterLayout> {
    let mut out = layout(clusters, members);
    if let Some(c) = out.get_mut(SCALED) {
        c.spare_agent = Some(format!("m{}", members + 1));
    }
    out
}

/// The cluster the scale scenario resizes: the first worker.
pub const SCALED: usize = 1;

/// Settings that go into the manifests.
#[derive(Clone, Debug)]
pub struct ManifestSettings {
    pub mesh: String,
    pub version: String,
    /// Workers moving at once.
    pub workers_parallel: usize,
    /// Traffic check timeout, in seconds.
    pub traffic_timeout_secs: u64,
}

/// `spec.certificates` of the rotate-ca scenario.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// The CA Secret's name (a `v1` Secret document of the manifests).
    pub secret: String,
    /// `clientGrace`, in seconds.
    pub client_grace_secs: u64,
}

/// `clusters.yaml`: every Cluster, each member with its agent's control endpoint.
pub fn clusters_yaml(
    clusters: &[ClusterLayout],
    mut endpoint: impl FnMut(&ClusterLayout, &str) -> String,
    s: &ManifestSettings,
) -> String {
    let mut y = String::from(
        "# Written by `baton demo`: the clusters of the demo mesh. Each member is a baton-agent\n\
         # process on 127.0.0.1; Baton drives it over mutual TLS (certificates in ../pki).\n",
    );
    for c in clusters {
        let _ = write!(
            y,
            "---\n\
             apiVersion: baton.dev/v1alpha1\n\
             kind: Cluster\n\
             metadata:\n  \
               name: {name}\n  \
               labels: {{ tier: {tier} }}\n\
             spec:\n  \
               role: {tier}\n",
            name = c.name,
            tier = c.tier.label(),
        );
        y.push_str("  members:\n");
        for m in &c.members {
            let _ = writeln!(
                y,
                "    - {{ name: {m}, endpoint: \"{ep}\"{primary} }}",
                ep = endpoint(c, m),
                primary = if c.primary.as_ref() == Some(m) {
                    ", primary: true"
                } else {
                    ""
                },
            );
        }
        let _ = write!(
            y,
            "  upgrade:\n    \
               maxReplicationLag: 2s\n    \
               syncTimeout: 60s\n    \
               trafficCheck: {{ timeout: {t}s, rollback: true }}\n    \
               retries: {{ limit: 2, backoff: 2s, maxBackoff: 10s }}\n",
            t = s.traffic_timeout_secs,
        );
        if c.return_to_primary {
            y.push_str("    returnToPrimary: true\n");
        }
    }
    y
}

/// A `spec.certificates` block, indented by `indent` (the spec's own fields' indentation).
/// `renewBefore` stays under the week the demo's first certificates are valid (`gen-certs
/// --days 7`): with the default (720h) Baton would renew them all as soon as it starts.
fn certificates_yaml(ca: &CaSettings, indent: &str) -> String {
    format!(
        "{indent}certificates:\n\
         {indent}  caSecretRef: {{ name: {secret} }}\n\
         {indent}  restart: Automatic\n\
         {indent}  clientGrace: {grace}s\n\
         {indent}  renewBefore: 24h\n",
        secret = ca.secret,
        grace = ca.client_grace_secs,
    )
}

/// A `v1` Secret document in Baton's layout (`ca.crt`, `ca.key`), as `kubectl apply` takes it.
pub fn ca_secret_yaml(name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    format!(
        "# Written by `baton demo --scenario rotate-ca`: the CA the clusters' members get their\n\
         # data-port certificates from. Replacing it starts a phased rotation.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  \
           name: {name}\n\
         type: Opaque\n\
         stringData:\n  \
           ca.crt: |\n{}  \
           ca.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// The manifests of the rotate-ca scenario, as `(file name, text)`, the CA Secret aside
/// ([`ca_secret_yaml`]): the demo mesh at `version`, declaring the CA for all its clusters
/// (`spec.certificates` on the Mesh: they share one trust and rotate together, phase by phase).
pub fn rotate_ca_manifests(
    clusters: &[ClusterLayout],
    endpoint: impl FnMut(&ClusterLayout, &str) -> String,
    s: &ManifestSettings,
    version: &str,
    ca: &CaSettings,
) -> Vec<(&'static str, String)> {
    let at = ManifestSettings {
        version: version.to_string(),
        ..s.clone()
    };
    let mut mesh = mesh_yaml(&at);
    mesh.push_str(&certificates_yaml(ca, "  "));
    vec![
        ("clusters.yaml", clusters_yaml(clusters, endpoint, s)),
        ("mesh.yaml", mesh),
    ]
}

/// `mesh.yaml`: the Mesh with the version every cluster moves to.
pub fn mesh_yaml(s: &ManifestSettings) -> String {
    format!(
        "# Written by `baton demo`: the mesh and the version it runs. Change `version` and run\n\
         # `baton run -f` on this directory to move it (the agents must be running).\n\
         apiVersion: baton.dev/v1alpha1\n\
         kind: Mesh\n\
         metadata:\n  \
           name: {mesh}\n\
         spec:\n  \
           version: \"{version}\"\n  \
           tiers:\n    \
             - {{ name: management, clusters: [mgmt] }}\n    \
             - {{ name: workers, selector: {{ matchLabels: {{ tier: worker }} }}, maxParallel: {par}, stagger: 1s }}\n  \
           compatibility:\n    \
             - {{ role: worker, notNewerThan: management }}\n",
        mesh = s.mesh,
        version = s.version,
        par = s.workers_parallel.max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::load;

    /// The demo mesh's settings with `version` and `workers_parallel`.
    fn settings(version: &str, workers_parallel: usize) -> ManifestSettings {
        ManifestSettings {
            mesh: "demo".into(),
            version: version.into(),
            workers_parallel,
            traffic_timeout_secs: 5,
        }
    }

    #[test]
    fn manifests_load_and_validate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cl = layout(4, 3);
        let s = settings("2.0.0", 2);
        let mut port = 7000;
        let text = clusters_yaml(
            &cl,
            |_, _| {
                port += 1;
                format!("127.0.0.1:{port}")
            },
            &s,
        );
        std::fs::write(dir.path().join("clusters.yaml"), text).expect("write");
        std::fs::write(dir.path().join("mesh.yaml"), mesh_yaml(&s)).expect("write");
        let m = load(&[dir.path().to_path_buf()]).expect("the demo manifests are valid");
        assert_eq!(m.clusters.len(), 4);
        assert_eq!(m.meshes.len(), 1);
        let mesh = &m.meshes[0].1.spec;
        assert_eq!(mesh.version, "2.0.0");
        assert_eq!(mesh.tiers[1].max_parallel, 2);
        let w = &m.clusters[3].1.spec;
        assert_eq!(w.members.len(), 3);
        assert!(w.members[0].primary);
        assert_eq!(w.upgrade.traffic_check.timeout.millis(), 5000);
        assert_eq!(cl[3].agent_name("m2"), "worker-3-m2");
    }

    #[test]
    fn rotate_ca_manifests_load_with_their_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cl = layout(2, 2);
        let s = settings("1.0.0", 1);
        let ca = CaSettings {
            secret: "demo-ca".into(),
            client_grace_secs: 2,
        };
        let mut port = 7000;
        let files = rotate_ca_manifests(
            &cl,
            |_, _| {
                port += 1;
                format!("127.0.0.1:{port}")
            },
            &s,
            "1.0.0",
            &ca,
        );
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let authority = baton_agent::pki::CertAuthority::generate("t").expect("ca");
        let secret = ca_secret_yaml("demo-ca", authority.cert_pem(), authority.key_pem());
        std::fs::write(dir.path().join("ca-secret.yaml"), secret).expect("write");
        let m = load(&[dir.path().to_path_buf()]).expect("the rotate-ca manifests are valid");
        // The Mesh declares the CA at the version; its Clusters declare neither.
        assert_eq!(m.meshes.len(), 1);
        let (_, mesh) = &m.meshes[0];
        assert_eq!(mesh.spec.version, "1.0.0");
        let certs = mesh.spec.certificates.as_ref().expect("certificates");
        assert_eq!(certs.ca_secret_ref.name, "demo-ca");
        assert_eq!(certs.client_grace.millis(), 2000);
        assert_eq!(m.clusters.len(), 2);
        for (_, c) in &m.clusters {
            assert!(c.spec.certificates.is_none() && c.spec.version.is_none());
        }
        let (_, secret) = &m.secrets[0];
        assert_eq!(secret.name, "demo-ca");
        assert_eq!(
            secret.data["ca.crt"],
            authority.cert_pem().as_bytes(),
            "the PEM survives the YAML block"
        );
        assert_eq!(secret.data["ca.key"], authority.key_pem().as_bytes());
    }
}
