//! What a member should run, what it runs, and the order of the steps between the two.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::api::{ClusterSpec, MemberSpec, values::cmp_versions};

use super::observe::AgentView;

/// Versions a member runs or should run: the whole version, and per hosted component.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Software {
    pub version: String,
    pub components: BTreeMap<String, String>,
}

impl Software {
    /// A compact, stable key (`2.0.0` or `app=3.0,os=8.4`), recorded when a step for a target
    /// passed so it is not repeated for the same target.
    pub fn key(&self) -> String {
        if self.components.is_empty() {
            self.version.clone()
        } else {
            self.components
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

/// Components hosted by a member, in the cluster's dependency order.
pub fn hosted<'a>(spec: &'a ClusterSpec, member: &MemberSpec, order: &[usize]) -> Vec<&'a str> {
    order
        .iter()
        .map(|&i| spec.components[i].name.as_str())
        .filter(|c| member.components.is_empty() || member.components.iter().any(|h| h == c))
        .collect()
}

/// The target software of a member from the spec and the cluster target version.
pub fn spec_target(
    spec: &ClusterSpec,
    member: &MemberSpec,
    order: &[usize],
    version: &str,
) -> Software {
    let mut components = BTreeMap::new();
    for name in hosted(spec, member, order) {
        let v = spec
            .components
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.version.clone())
            .unwrap_or_else(|| version.to_string());
        components.insert(name.to_string(), v);
    }
    Software {
        version: version.to_string(),
        components,
    }
}

/// What a member runs now, restricted to the components the target names.
pub fn running(agent: &AgentView, target: &Software) -> Software {
    let components = target
        .components
        .keys()
        .map(|k| {
            (
                k.clone(),
                agent.components.get(k).cloned().unwrap_or_default(),
            )
        })
        .collect();
    Software {
        version: agent.version.clone(),
        components,
    }
}

/// Equal software, comparing versions semantically (`1.2` == `1.2.0`).
pub fn same_software(a: &Software, b: &Software) -> bool {
    if a.components.is_empty() && b.components.is_empty() {
        return cmp_versions(&a.version, &b.version) == Ordering::Equal;
    }
    a.components.len() == b.components.len()
        && a.components.iter().all(|(k, v)| {
            b.components
                .get(k)
                .is_some_and(|w| cmp_versions(v, w) == Ordering::Equal)
        })
}

/// One move of one unit (the whole member, or one component).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub component: Option<String>,
    pub version: String,
    /// True when moving to a lower version (backout).
    pub down: bool,
}

/// The moves still needed on a member, in the order they must happen: backouts top layer
/// first (reverse dependency order), then upgrades bottom layer first.
pub fn pending_moves(current: &Software, target: &Software, order_names: &[&str]) -> Vec<Move> {
    if target.components.is_empty() {
        return match cmp_versions(&current.version, &target.version) {
            Ordering::Equal => vec![],
            o => vec![Move {
                component: None,
                version: target.version.clone(),
                down: o == Ordering::Greater,
            }],
        };
    }
    let mut downs = Vec::new();
    let mut ups = Vec::new();
    for name in order_names {
        let (Some(want), cur) = (target.components.get(*name), current.components.get(*name))
        else {
            continue;
        };
        let cur = cur.map(String::as_str).unwrap_or("");
        match cmp_versions(cur, want) {
            Ordering::Equal => {}
            Ordering::Greater => downs.push(Move {
                component: Some(name.to_string()),
                version: want.clone(),
                down: true,
            }),
            Ordering::Less => ups.push(Move {
                component: Some(name.to_string()),
                version: want.clone(),
                down: false,
            }),
        }
    }
    downs.reverse();
    downs.extend(ups);
    downs
}

/// The version that stands for a member in mesh-wide comparisons: the whole version without
/// components, otherwise the lowest version among components that follow the cluster version.
pub fn effective_version(
    spec: &ClusterSpec,
    agent_version: &str,
    components: &BTreeMap<String, String>,
) -> String {
    effective_version_str(spec, agent_version, components).to_string()
}

/// `effective_version` without the copy, for per-instant checks over every member.
pub fn effective_version_str<'a>(
    spec: &ClusterSpec,
    agent_version: &'a str,
    components: &'a BTreeMap<String, String>,
) -> &'a str {
    let mut lowest: Option<&'a str> = None;
    for c in spec.components.iter().filter(|c| c.version.is_none()) {
        if let Some(v) = components.get(&c.name)
            // The first of equal versions wins, as `min_by` would pick it.
            && lowest.is_none_or(|l| cmp_versions(v, l).is_lt())
        {
            lowest = Some(v);
        }
    }
    lowest.unwrap_or(agent_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(v: &str, comps: &[(&str, &str)]) -> Software {
        Software {
            version: v.into(),
            components: comps
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn moves_back_out_top_layer_first_then_upgrade_bottom_first() {
        let order = ["os", "cluster", "app"];
        let cur = sw("1", &[("os", "8.4"), ("cluster", "6.0"), ("app", "2.0")]);
        let tgt = sw("1", &[("os", "8.4"), ("cluster", "5.0"), ("app", "3.0")]);
        let m = pending_moves(&cur, &tgt, &order);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].component.as_deref(), Some("cluster"));
        assert!(m[0].down);
        assert_eq!(m[1].component.as_deref(), Some("app"));
        assert!(!m[1].down);

        let cur = sw("1", &[("os", "7.9"), ("cluster", "5.0"), ("app", "2.0")]);
        let tgt = sw("1", &[("os", "8.4"), ("cluster", "6.0"), ("app", "3.0")]);
        let names: Vec<_> = pending_moves(&cur, &tgt, &order)
            .into_iter()
            .map(|m| m.component.unwrap())
            .collect();
        assert_eq!(names, ["os", "cluster", "app"]);
        // Backout of all three: top layer first.
        let names: Vec<_> = pending_moves(&tgt, &cur, &order)
            .into_iter()
            .map(|m| m.component.unwrap())
            .collect();
        assert_eq!(names, ["app", "cluster", "os"]);
    }

    #[test]
    fn whole_version_moves() {
        assert!(pending_moves(&sw("1.0", &[]), &sw("1.0.0", &[]), &[]).is_empty());
        let m = pending_moves(&sw("2.0", &[]), &sw("1.0", &[]), &[]);
        assert!(m[0].down);
    }
}
