//! The Rolling strategy's capacity check: taking an outage cluster down moves its `load` to
//! its `backupPeers` (or every other cluster); a step that would put a peer above
//! `maxTakeoverLoadFactor` times its own load is refused.
//!
//! Owns: [`capacity_refusal`]. May use: `read`.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{Admitted, MeshSpec, MeshStrategyType};

use super::read::{Clusters, Summary};

/// Rolling meshes: refuse to take `cand` down when a peer would carry more than the allowed
/// multiple of its own load (the 10,000-agent core whose two 500-agent peers jump to 11x).
/// `admitted` are the clusters already down or going down.
pub(super) fn capacity_refusal(
    spec: &MeshSpec,
    clusters: &Clusters<'_>,
    admitted: &[Admitted],
    cand: &Summary<'_>,
) -> Option<String> {
    let limit = spec.strategy.max_takeover_load_factor?;
    if spec.strategy.type_ != MeshStrategyType::Rolling || !cand.outage(spec) {
        return None;
    }
    let by = |name: &str| clusters.find(name);
    let mut down: Vec<&Summary<'_>> = admitted
        .iter()
        .filter_map(|a| by(a.cluster.as_str()))
        .filter(|s| s.outage(spec) && !s.done)
        .collect();
    down.push(cand);
    let down_names: BTreeSet<&str> = down.iter().map(|s| s.name()).collect();
    let mut extra: BTreeMap<&str, f64> = BTreeMap::new();
    for d in &down {
        if d.load() == 0 {
            continue;
        }
        let peers: Vec<&str> = if d.backup_peers().is_empty() {
            clusters
                .sums
                .iter()
                .map(|s| s.name())
                .filter(|n| !down_names.contains(n))
                .collect()
        } else {
            d.backup_peers()
                .iter()
                .map(String::as_str)
                .filter(|n| !down_names.contains(n) && by(n).is_some())
                .collect()
        };
        if peers.is_empty() {
            return Some(format!(
                "no peer is up to take over the load of {}",
                d.name()
            ));
        }
        let share = d.load() as f64 / peers.len() as f64;
        for p in peers {
            *extra.entry(p).or_default() += share;
        }
    }
    let mut worst: Option<(&str, f64)> = None;
    for (p, e) in extra {
        let own = by(p).map(|s| s.load()).unwrap_or(0) as f64;
        let factor = if own == 0.0 {
            f64::INFINITY
        } else {
            (own + e) / own
        };
        if worst.is_none_or(|(_, w)| factor > w) {
            worst = Some((p, factor));
        }
    }
    match worst {
        Some((p, f)) if f > limit => Some(format!(
            "taking {} down would put {p} at {f:.1}x its own load (maxTakeoverLoadFactor {limit})",
            cand.name()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Direction;
    use crate::fixtures::mesh::{NOW, Scene, cluster, mesh};
    use crate::plan::mesh::read;

    fn admitted(names: &[&str]) -> Vec<Admitted> {
        names
            .iter()
            .map(|c| Admitted {
                cluster: c.to_string(),
                version: "2.0.0".into(),
                direction: Direction::Upgrade,
                since: NOW,
            })
            .collect()
    }

    /// The 10,000-load core (one member: an outage) and two 500-load peers.
    fn core_and_peers(factor: f64) -> Scene {
        mesh("2.0.0").max_takeover_load_factor(factor).one_tier([
            cluster("core").members(1).load(10_000).runs("1.0.0"),
            cluster("p1").members(1).load(500).runs("1.0.0"),
            cluster("p2").members(1).load(500).runs("1.0.0"),
        ])
    }

    fn refusal(scene: &Scene, down: &[&str], cand: &str) -> Option<String> {
        scene.with_input(|input| {
            let c = read::read(input);
            capacity_refusal(input.mesh.spec, &c, &admitted(down), c.find(cand).unwrap())
        })
    }

    #[test]
    fn a_core_of_10000_with_two_peers_of_500_puts_them_at_11x() {
        assert_eq!(
            refusal(&core_and_peers(3.0), &[], "core").as_deref(),
            Some("taking core down would put p1 at 11.0x its own load (maxTakeoverLoadFactor 3)")
        );
        assert_eq!(
            refusal(&core_and_peers(11.0), &[], "core"),
            None,
            "11.0 is allowed"
        );
        // A peer's load spread over the core and the other peer stays low...
        assert_eq!(refusal(&core_and_peers(3.0), &[], "p1"), None);
        // ...unless the other peer is down too.
        let why = refusal(&core_and_peers(1.05), &["p2"], "p1").unwrap();
        assert!(why.contains("put core at 1.1x"), "{why}");
    }

    #[test]
    fn only_outage_clusters_of_a_rolling_mesh_with_a_factor_are_checked() {
        let scene = mesh("2.0.0").one_tier([
            cluster("core").members(1).load(10_000).runs("1.0.0"),
            cluster("p").members(1).load(1).runs("1.0.0"),
        ]);
        assert_eq!(refusal(&scene, &[], "core"), None, "no factor, no check");
        let scene = mesh("2.0.0").max_takeover_load_factor(2.0).one_tier([
            cluster("core").load(10_000).runs("1.0.0"),
            cluster("p").members(1).load(1).runs("1.0.0"),
        ]);
        assert_eq!(refusal(&scene, &[], "core"), None, "a standby takes over");
    }

    #[test]
    fn backup_peers_take_the_load_and_none_up_is_a_refusal() {
        let core = cluster("core").members(1).load(1_000).backup_peers(&["p1"]);
        let scene = mesh("2.0.0").max_takeover_load_factor(3.0).one_tier([
            core.runs("1.0.0"),
            cluster("p1").members(1).load(1_000).runs("1.0.0"),
            cluster("p2").members(1).load(1).runs("1.0.0"),
        ]);
        assert_eq!(
            refusal(&scene, &[], "core"),
            None,
            "p1 goes to 2.0x, p2 gets nothing"
        );
        assert_eq!(
            refusal(&scene, &["p1"], "core").as_deref(),
            Some("no peer is up to take over the load of core")
        );
    }
}
