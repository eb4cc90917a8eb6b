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
