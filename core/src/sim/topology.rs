//! Topologies for the simulator: random ones for property tests, and the deployment shape of
//! the Active/Standby procedure (management clusters at two sites, then worker clusters).

use std::collections::BTreeMap;

use crate::api::values::Duration;
use crate::api::{
    ClusterSpec, CompatibilityRule, ComponentSpec, MemberSpec, MeshSpec, MeshStrategy,
    Preconditions, RetryPolicy, TierSpec, UpgradePolicy, VerifyPolicy,
};

use super::rng::Rng;

/// A cluster to add to a simulation: name, labels, spec.
pub struct ClusterDef {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ClusterSpec,
}

pub struct Topology {
    pub clusters: Vec<ClusterDef>,
    pub mesh: MeshSpec,
}

/// Bounds for random topologies.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_tiers: u64,
    pub max_clusters: u64,
    pub max_members: u64,
}

impl Bounds {
    pub const FULL: Bounds = Bounds {
        max_tiers: 5,
        max_clusters: 50,
        max_members: 4,
    };
}

pub fn member(name: &str, cluster: &str) -> MemberSpec {
    MemberSpec {
        name: name.to_string(),
        site: None,
        endpoint: format!("{cluster}-{name}.sim:9443"),
        spare: false,
        primary: false,
        components: vec![],
    }
}

fn fast_policy(rng: &mut Rng) -> UpgradePolicy {
    UpgradePolicy {
        max_unavailable: 1 + rng.below(2) as u32,
        retries: RetryPolicy {
            limit: 2 + rng.below(3) as u32,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
        },
        preflight: rng.chance(0.7),
        ..Default::default()
    }
}

/// A random mesh: 1..=max tiers, 1..=max clusters, 1..=max members, random components,
/// spares, parallelism, stagger and compatibility rules consistent with the tier order.
pub fn random(rng: &mut Rng, b: Bounds, version: &str) -> Topology {
    let n_clusters = 1 + rng.below(b.max_clusters);
    let n_tiers = (1 + rng.below(b.max_tiers)).min(n_clusters);
    let mut tiers: Vec<TierSpec> = (0..n_tiers)
        .map(|i| TierSpec {
            name: format!("tier{i}"),
            clusters: vec![],
            selector: None,
            max_parallel: 1 + rng.below(4) as u32,
            stagger: if rng.chance(0.3) {
                Duration::from_secs(30)
            } else {
                Duration(0)
            },
            drain_before: None,
            deferred: None,
        })
        .collect();
    let mut clusters = Vec::new();
    for i in 0..n_clusters {
        // Every tier gets at least one cluster.
        let t = if i < n_tiers { i } else { rng.below(n_tiers) };
        let name = format!("c{i}");
        tiers[t as usize].clusters.push(name.clone());
        let n_members = 1 + rng.below(b.max_members);
        let mut members: Vec<MemberSpec> = (0..n_members)
            .map(|j| member(&format!("m{j}"), &name))
            .collect();
        if n_members >= 3
            && rng.chance(0.3)
            && let Some(last) = members.last_mut()
        {
            last.spare = true;
        }
        let mut upgrade = fast_policy(rng);
        if n_members == 1 {
            upgrade.allow_outage = rng.chance(0.8);
        }
        let mut components = vec![];
        if rng.chance(0.3) {
            let n = 1 + rng.below(3);
            let names = ["os", "platform", "app"];
            for k in 0..n as usize {
                components.push(ComponentSpec {
                    name: names[k].to_string(),
                    version: None,
                    after: if k > 0 {
                        vec![names[k - 1].to_string()]
                    } else {
                        vec![]
                    },
                    verify: VerifyPolicy {
                        skip: rng.chance(0.3),
                        deferrable: rng.chance(0.5),
                        requires_primary_active: false,
                    },
                });
            }
        }
        let spec = ClusterSpec {
            version: None,
            role: Some(format!("tier{t}")),
            members,
            components,
            upgrade,
            ..Default::default()
        };
        clusters.push(ClusterDef {
            name,
            labels: BTreeMap::new(),
            spec,
        });
    }
    let mut compatibility = vec![];
    if n_tiers > 1 && rng.chance(0.5) {
        for t in 1..n_tiers {
            compatibility.push(CompatibilityRule {
                role: format!("tier{t}"),
                not_newer_than: "tier0".into(),
            });
        }
    }
    let mesh = MeshSpec {
        tasks: Vec::new(),
        version: version.to_string(),
        tiers,
        compatibility,
        strategy: MeshStrategy::default(),
        preconditions: Preconditions::default(),
        paused: false,
        certificates: None,
    };
    Topology { clusters, mesh }
}

/// The deployment of the Active/Standby procedure: a primary and a secondary management
/// cluster (each its own tier), then `workers` worker clusters with `max_parallel` and a stagger.
pub fn active_standby_deployment(
    workers: usize,
    max_parallel: u32,
    stagger: Duration,
    version: &str,
) -> Topology {
    let mut clusters = Vec::new();
    let mk = |name: &str, role: &str, n: usize, spare: bool| {
        let mut members: Vec<MemberSpec> = (0..n).map(|j| member(&format!("s{j}"), name)).collect();
        if spare {
            members.push(MemberSpec {
                spare: true,
                ..member("spare", name)
            });
        }
        ClusterDef {
            name: name.to_string(),
            labels: BTreeMap::new(),
            spec: ClusterSpec {
                version: None,
                role: Some(role.to_string()),
                members,
                upgrade: UpgradePolicy {
                    preflight: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    };
    clusters.push(mk("cmp-primary", "management", 2, true));
    clusters.push(mk("cmp-secondary", "management", 2, false));
    let mut worker_names = vec![];
    for i in 0..workers {
        let name = if i % 2 == 0 {
            format!("mpe-{i:02}")
        } else {
            format!("mra-{i:02}")
        };
        worker_names.push(name.clone());
        clusters.push(mk(&name, "worker", 2, false));
    }
    let tier = |name: &str, cl: Vec<String>, mp: u32, st: Duration| TierSpec {
        name: name.to_string(),
        clusters: cl,
        selector: None,
        max_parallel: mp,
        stagger: st,
        drain_before: None,
        deferred: None,
    };
    let mesh = MeshSpec {
        tasks: Vec::new(),
        version: version.to_string(),
        tiers: vec![
            tier(
                "management-primary",
                vec!["cmp-primary".into()],
                1,
                Duration(0),
            ),
            tier(
                "management-secondary",
                vec!["cmp-secondary".into()],
                1,
                Duration(0),
            ),
            tier("workers", worker_names, max_parallel, stagger),
        ],
        compatibility: vec![CompatibilityRule {
            role: "worker".into(),
            not_newer_than: "management".into(),
        }],
        strategy: MeshStrategy::default(),
        preconditions: Preconditions::default(),
        paused: false,
        certificates: None,
    };
    Topology { clusters, mesh }
}

/// Give every member of `topo` one of 1–3 sites (`s0`, `s1`, `s2`) at random: the per-site
/// job slots of a CA rotation need them.
pub fn add_sites(rng: &mut Rng, topo: &mut Topology) {
    let n_sites = 1 + rng.below(3);
    for c in &mut topo.clusters {
        for m in &mut c.spec.members {
            m.site = Some(format!("s{}", rng.below(n_sites)));
        }
    }
}
