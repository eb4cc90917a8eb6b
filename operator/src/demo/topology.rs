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
    /// Member names inside the cluster (`m1`, `m2`, ...); `members[0]` starts Active.
    pub members: Vec<String>,
}

impl ClusterLayout {
    /// Name of a member's agent (unique across the mesh, used for certificates and records).
    pub fn agent_name(&self, member: &str) -> String {
        format!("{}-{member}", self.name)
    }
}

/// One management cluster and `clusters - 1` workers, `members` each.
pub fn layout(clusters: usize, members: usize) -> Vec<ClusterLayout> {
    let names: Vec<String> = (1..=members).map(|i| format!("m{i}")).collect();
    let mut out = vec![ClusterLayout {
        name: "mgmt".into(),
        tier: Tier::Management,
        members: names.clone(),
    }];
    for w in 1..clusters {
        out.push(ClusterLayout {
            name: format!("worker-{w}"),
            tier: Tier::Worker,
            members: names.clone(),
        });
    }
    out
}

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
               role: {tier}\n  \
               members:\n",
            name = c.name,
            tier = c.tier.label(),
        );
        for (i, m) in c.members.iter().enumerate() {
            let _ = writeln!(
                y,
                "    - {{ name: {m}, endpoint: \"{ep}\"{primary} }}",
                ep = endpoint(c, m),
                primary = if i == 0 { ", primary: true" } else { "" },
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
    }
    y
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

    #[test]
    fn manifests_load_and_validate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cl = layout(4, 3);
        let s = ManifestSettings {
            mesh: "demo".into(),
            version: "2.0.0".into(),
            workers_parallel: 2,
            traffic_timeout_secs: 5,
        };
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
}
