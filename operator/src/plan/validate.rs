//! Semantic validation: everything the CRD schema and CEL rules say, plus what they cannot
//! (prerequisite cycles, tiers naming unknown clusters, compatibility rules that can never be
//! satisfied). The planner turns problems into a `Stalled` condition and takes no action.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: names are short and trusted-shape, and the mesh planner hashes tens of thousands
/// of them per decision; SipHash's DoS resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // FNV's high bits are weak for short keys; the table uses them, so mix (SplitMix64).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<Fnv>>;
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<Fnv>>;

use crate::api::{ClusterSpec, MeshSpec, UpgradeStrategy, Version, values::VERSION_PATTERN};

use super::window::parse_hhmm;

/// One problem with a manifest: the field path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn problem(out: &mut Vec<Problem>, field: impl Into<String>, message: impl Into<String>) {
    out.push(Problem {
        field: field.into(),
        message: message.into(),
    });
}

/// One line summarising problems, for conditions and CLI errors.
pub fn summarize(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_version(out: &mut Vec<Problem>, field: &str, v: &str) {
    if let Err(e) = v.parse::<Version>() {
        problem(out, field, format!("{e}; must match {VERSION_PATTERN}"));
    }
}

fn valid_endpoint(e: &str) -> bool {
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .unwrap_or(e);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
                && !port.is_empty()
                && port.len() <= 5
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Order components so every prerequisite comes first (stable: spec order breaks ties).
/// Returns the names that are part of a cycle as the error.
pub fn component_order(spec: &ClusterSpec) -> Result<Vec<usize>, Vec<String>> {
    let idx: BTreeMap<&str, usize> = spec
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let n = spec.components.len();
    let mut indeg = vec![0usize; n];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, c) in spec.components.iter().enumerate() {
        for a in &c.after {
            if let Some(&j) = idx.get(a.as_str()) {
                indeg[i] += 1;
                next[j].push(i);
            }
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut done = vec![false; n];
    // n is at most 32, so the quadratic scan keeps spec order as the tie-break cheaply.
    while order.len() < n {
        let Some(i) = (0..n).find(|&i| !done[i] && indeg[i] == 0) else {
            let cyc = (0..n)
                .filter(|&i| !done[i])
                .map(|i| spec.components[i].name.clone())
                .collect();
            return Err(cyc);
        };
        done[i] = true;
        order.push(i);
        for &k in &next[i] {
            indeg[k] -= 1;
        }
    }
    Ok(order)
}

/// Validate a Cluster spec on its own.
pub fn validate_cluster(spec: &ClusterSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(v) = &spec.version {
        check_version(&mut out, "spec.version", v);
    }
    if let Some(r) = &spec.role
        && !is_dns_label(r)
    {
        problem(&mut out, "spec.role", format!("{r:?} must be a DNS label"));
    }
    if spec.members.is_empty() {
        problem(&mut out, "spec.members", "at least one member is required");
    }
    if spec.members.len() > 16 {
        problem(&mut out, "spec.members", "at most 16 members");
    }
    let mut seen = BTreeSet::new();
    for (i, m) in spec.members.iter().enumerate() {
        let f = format!("spec.members[{i}]");
        if !is_dns_label(&m.name) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("{:?} must be a DNS label", m.name),
            );
        }
        if !seen.insert(m.name.as_str()) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("duplicate member name {:?}", m.name),
            );
        }
        if !valid_endpoint(&m.endpoint) {
            problem(
                &mut out,
                format!("{f}.endpoint"),
                format!("{:?} must be host:port or https://host:port", m.endpoint),
            );
        }
        for c in &m.components {
            if !spec.components.iter().any(|k| &k.name == c) {
                problem(
                    &mut out,
                    format!("{f}.components"),
                    format!("unknown component {c:?}"),
                );
            }
        }
    }
    if !spec.members.is_empty() && spec.members.iter().all(|m| m.spare) {
        problem(
            &mut out,
            "spec.members",
            "at least one member must not be a spare",
        );
    }
    if spec.members.iter().filter(|m| m.primary).count() > 1 {
        problem(
            &mut out,
            "spec.members",
            "at most one member may be primary",
        );
    }
    let mut cseen = BTreeSet::new();
    for (i, c) in spec.components.iter().enumerate() {
        let f = format!("spec.components[{i}]");
        if !is_dns_label(&c.name) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("{:?} must be a DNS label", c.name),
            );
        }
        if !cseen.insert(c.name.as_str()) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("duplicate component {:?}", c.name),
            );
        }
        if let Some(v) = &c.version {
            check_version(&mut out, &format!("{f}.version"), v);
        } else if spec.version.is_none() {
            // Inherited from the mesh: checked when the mesh version is known.
        }
        for a in &c.after {
            if a == &c.name {
                problem(
                    &mut out,
                    format!("{f}.after"),
                    format!("component {:?} cannot come after itself", c.name),
                );
            } else if !spec.components.iter().any(|k| &k.name == a) {
                problem(
                    &mut out,
                    format!("{f}.after"),
                    format!("unknown prerequisite {a:?}"),
                );
            }
        }
        if c.verify.requires_primary_active && !spec.members.iter().any(|m| m.primary) {
            problem(
                &mut out,
                format!("{f}.verify.requiresPrimaryActive"),
                "needs a member marked primary: true",
            );
        }
    }
    if let Err(cycle) = component_order(spec) {
        problem(
            &mut out,
            "spec.components",
            format!("prerequisite cycle among {}", cycle.join(", ")),
        );
    }
    let u = &spec.upgrade;
    if u.max_unavailable == 0 {
        problem(
            &mut out,
            "spec.upgrade.maxUnavailable",
            "must be at least 1",
        );
    }
    if u.retries.limit == 0 {
        problem(&mut out, "spec.upgrade.retries.limit", "must be at least 1");
    }
    if u.retries.max_backoff < u.retries.backoff {
        problem(
            &mut out,
            "spec.upgrade.retries.maxBackoff",
            "must not be below retries.backoff",
        );
    }
    if u.strategy == UpgradeStrategy::InPlace && !u.allow_outage {
        problem(
            &mut out,
            "spec.upgrade.strategy",
            "InPlace takes every member down and requires allowOutage: true",
        );
    }
    for (i, w) in u.maintenance_windows.iter().enumerate() {
        if parse_hhmm(&w.start).is_none() {
            problem(
                &mut out,
                format!("spec.upgrade.maintenanceWindows[{i}].start"),
                format!("{:?} is not HH:MM", w.start),
            );
        }
        if w.duration.millis() == 0 {
            problem(
                &mut out,
                format!("spec.upgrade.maintenanceWindows[{i}].duration"),
                "must be positive",
            );
        }
    }
    out
}

/// A cluster as the mesh sees it for validation: name, labels and spec.
pub struct ClusterRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ClusterSpec,
}

/// Which tier (index) each cluster of the mesh belongs to. Clusters matched by two tiers are
/// reported by `validate_mesh`; here the first tier wins.
pub fn tier_membership(mesh: &MeshSpec, clusters: &[ClusterRef<'_>]) -> FastMap<String, usize> {
    let known: FastSet<&str> = clusters.iter().map(|c| c.name).collect();
    let mut out = FastMap::with_capacity_and_hasher(clusters.len(), Default::default());
    for (ti, t) in mesh.tiers.iter().enumerate() {
        for n in &t.clusters {
            if known.contains(n.as_str()) {
                out.entry(n.clone()).or_insert(ti);
            }
        }
        if let Some(s) = t.selector.as_ref().filter(|s| !s.match_labels.is_empty()) {
            for c in clusters {
                if s.match_labels
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
                {
                    out.entry(c.name.to_string()).or_insert(ti);
                }
            }
        }
    }
    out
}

/// Validate a Mesh together with the clusters in its namespace.
pub fn validate_mesh(mesh: &MeshSpec, clusters: &[ClusterRef<'_>]) -> Vec<Problem> {
    validate_mesh_with(mesh, clusters, &tier_membership(mesh, clusters))
}

/// `validate_mesh` with the tier membership the caller already computed (the mesh planner
/// needs it too, and it is the costly part on large meshes).
pub fn validate_mesh_with(
    mesh: &MeshSpec,
    clusters: &[ClusterRef<'_>],
    tiers: &FastMap<String, usize>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    check_version(&mut out, "spec.version", &mesh.version);
    if mesh.tiers.is_empty() {
        problem(&mut out, "spec.tiers", "at least one tier is required");
    }
    let known: FastSet<&str> = clusters.iter().map(|c| c.name).collect();
    let mut tier_names = BTreeSet::new();
    let mut claimed: FastMap<&str, &str> =
        FastMap::with_capacity_and_hasher(clusters.len(), Default::default());
    for (ti, t) in mesh.tiers.iter().enumerate() {
        let f = format!("spec.tiers[{ti}]");
        if !is_dns_label(&t.name) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("{:?} must be a DNS label", t.name),
            );
        }
        if !tier_names.insert(t.name.as_str()) {
            problem(
                &mut out,
                format!("{f}.name"),
                format!("duplicate tier {:?}", t.name),
            );
        }
        if t.max_parallel == 0 {
            problem(&mut out, format!("{f}.maxParallel"), "must be at least 1");
        }
        if t.clusters.is_empty() && t.selector.is_none() {
            problem(&mut out, &f, "a tier names clusters or has a selector");
        }
        if let Some(s) = &t.selector
            && s.match_labels.is_empty()
        {
            problem(
                &mut out,
                format!("{f}.selector.matchLabels"),
                "must not be empty",
            );
        }
        for n in &t.clusters {
            if !known.contains(n.as_str()) {
                problem(
                    &mut out,
                    format!("{f}.clusters"),
                    format!("unknown cluster {n:?}"),
                );
            }
        }
        let mut seen: FastSet<&str> = FastSet::default();
        let mut members: Vec<&str> = t
            .clusters
            .iter()
            .map(String::as_str)
            .filter(|n| known.contains(n) && seen.insert(n))
            .collect();
        if let Some(s) = t.selector.as_ref().filter(|s| !s.match_labels.is_empty()) {
            for c in clusters {
                if s.match_labels
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
                    && seen.insert(c.name)
                {
                    members.push(c.name);
                }
            }
        }
        for c in members {
            if let Some(prev) = claimed.insert(c, t.name.as_str())
                && prev != t.name
            {
                problem(
                    &mut out,
                    &f,
                    format!("cluster {c:?} is in tiers {prev:?} and {:?}", t.name),
                );
            }
        }
    }
    if let Some(f) = mesh.strategy.max_takeover_load_factor
        && !(f.is_finite() && f >= 1.0)
    {
        problem(
            &mut out,
            "spec.strategy.maxTakeoverLoadFactor",
            "must be a number >= 1",
        );
    }
    // Compatibility rules: a cycle means no role can ever move first.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, r) in mesh.compatibility.iter().enumerate() {
        if r.role == r.not_newer_than {
            problem(
                &mut out,
                format!("spec.compatibility[{i}]"),
                "a rule must relate two different roles",
            );
        }
        edges
            .entry(r.role.as_str())
            .or_default()
            .insert(r.not_newer_than.as_str());
    }
    if let Some(cycle) = find_cycle(&edges) {
        problem(
            &mut out,
            "spec.compatibility",
            format!(
                "rules form a cycle ({}): no role could ever move first",
                cycle.join(" -> ")
            ),
        );
    }
    // A rule "A not newer than B" with an A cluster in an earlier tier than a B cluster can never
    // be satisfied on the way up: the A tier would wait forever for the B tier behind it.
    // Earliest and latest tier of each role, with a cluster name for the message.
    type TierAndName<'a> = (usize, &'a str);
    let mut span: BTreeMap<&str, (TierAndName<'_>, TierAndName<'_>)> = BTreeMap::new();
    for c in clusters {
        if let (Some(role), Some(&t)) = (c.spec.role.as_deref(), tiers.get(c.name)) {
            let e = span.entry(role).or_insert(((t, c.name), (t, c.name)));
            e.0 = e.0.min((t, c.name));
            e.1 = e.1.max((t, c.name));
        }
    }
    for (i, r) in mesh.compatibility.iter().enumerate() {
        let a_min = span.get(r.role.as_str()).map(|s| s.0);
        let b_max = span.get(r.not_newer_than.as_str()).map(|s| s.1);
        if let (Some((ta, a)), Some((tb, b))) = (a_min, b_max)
            && ta <= tb
        {
            problem(
                &mut out,
                format!("spec.compatibility[{i}]"),
                format!(
                    "can never be satisfied: {a:?} ({}) is in tier {:?}, not after {b:?} ({}) in tier {:?}",
                    r.role, mesh.tiers[ta].name, r.not_newer_than, mesh.tiers[tb].name
                ),
            );
        }
    }
    out
}

fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn dfs<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in edges.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let pos = stack.iter().position(|&x| x == m).unwrap_or(0);
                    let mut cyc = stack[pos..].to_vec();
                    cyc.push(m);
                    return Some(cyc);
                }
                0 => {
                    if let Some(c) = dfs(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for &n in edges.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = dfs(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}
