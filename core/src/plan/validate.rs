//! Semantic validation: everything the CRD schema and CEL rules say, plus what they cannot
//! (prerequisite cycles, tiers naming unknown clusters, compatibility rules that can never be
//! satisfied). The planner turns problems into a `Stalled` condition and takes no action.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A word-at-a-time hash for short names and versions: the mesh planner hashes tens of
/// thousands of them per decision; SipHash's DoS resistance buys nothing here (names come
/// from the cluster's own API objects) and byte-at-a-time FNV was a good part of the time.
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);
impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        // The table uses the high bits too: mix them all (SplitMix64's finaliser).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59))
                .wrapping_mul(K);
        }
        self.0 = h;
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}
/// Byte equality for short strings without a call into `memcmp` (names, roles and versions
/// are compared tens of thousands of times per mesh decision).
#[inline]
pub(crate) fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len()
        && (std::ptr::eq(a.as_ptr(), b.as_ptr())
            || if a.len() <= 16 {
                a.iter().zip(b).all(|(x, y)| x == y)
            } else {
                a == b
            })
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<WordHasher>>;
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<WordHasher>>;

/// A position or a tier number, or none, in four bytes (an `Option<usize>` takes sixteen).
/// The index keeps several per cluster, and on a large mesh the pages a decision touches for
/// the first time (each one a page fault once the allocator has returned them) are a good
/// part of its cost. A mesh of four billion clusters would not fit in memory anyway.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Slot(u32);

impl Slot {
    pub const NONE: Slot = Slot(u32::MAX);

    #[inline]
    pub fn of(i: usize) -> Slot {
        Slot(u32::try_from(i).unwrap_or(u32::MAX))
    }

    #[inline]
    pub fn get(self) -> Option<usize> {
        (self != Slot::NONE).then_some(self.0 as usize)
    }

    #[inline]
    pub fn is_none(self) -> bool {
        self == Slot::NONE
    }
}

use crate::api::schema_check::is_dns_label;
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

/// The name of one of a list's entries (at the field path `at()`, built only for a problem):
/// a DNS label, and not one `seen` before in the list.
fn check_name<'a>(
    out: &mut Vec<Problem>,
    seen: &mut BTreeSet<&'a str>,
    at: &dyn Fn() -> String,
    what: &str,
    name: &'a str,
) {
    if !is_dns_label(name) {
        problem(
            out,
            format!("{}.name", at()),
            format!("{name:?} must be a DNS label"),
        );
    }
    if !seen.insert(name) {
        problem(
            out,
            format!("{}.name", at()),
            format!("duplicate {what} {name:?}"),
        );
    }
}

/// One line summarising problems, for conditions and CLI errors.
pub fn summarize(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_version(out: &mut Vec<Problem>, field: &str, v: &str) {
    if let Err(e) = v.parse::<Version>() {
        problem(out, field, format!("{e}; must match {VERSION_PATTERN}"));
    }
}

/// An endpoint's `host:port`: without its scheme and trailing slash.
fn bare_endpoint(e: &str) -> &str {
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .unwrap_or(e);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// The agent an endpoint reaches, as the uniqueness checks compare it: its `host:port` in
/// lower case. Borrowed unless it has capitals (the mesh's check runs on every pass).
fn endpoint_key(e: &str) -> std::borrow::Cow<'_, str> {
    let bare = bare_endpoint(e);
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        bare.to_ascii_lowercase().into()
    } else {
        bare.into()
    }
}

fn valid_endpoint(e: &str) -> bool {
    match bare_endpoint(e).rsplit_once(':') {
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
        // The field path only when there is a problem: this runs on every pass.
        let f = || format!("spec.members[{i}]");
        check_name(&mut out, &mut seen, &f, "member name", &m.name);
        if !valid_endpoint(&m.endpoint) {
            problem(
                &mut out,
                format!("{}.endpoint", f()),
                format!("{:?} must be host:port or https://host:port", m.endpoint),
            );
        }
        for c in &m.components {
            if !spec.components.iter().any(|k| &k.name == c) {
                problem(
                    &mut out,
                    format!("{}.components", f()),
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
    // One agent is one member: two entries with the same address (with or without the
    // scheme) would take each other's operations and identities.
    let mut endpoints: BTreeMap<std::borrow::Cow<'_, str>, &str> = BTreeMap::new();
    for (i, m) in spec.members.iter().enumerate() {
        if let Some(first) = endpoints.insert(endpoint_key(&m.endpoint), &m.name) {
            problem(
                &mut out,
                format!("spec.members[{i}].endpoint"),
                format!(
                    "member endpoints must be unique (two members cannot be one agent): {:?} is {first}'s",
                    m.endpoint
                ),
            );
        }
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
        let f = || format!("spec.components[{i}]");
        check_name(&mut out, &mut cseen, &f, "component", &c.name);
        if let Some(v) = &c.version {
            check_version(&mut out, &format!("{}.version", f()), v);
        } else if spec.version.is_none() {
            // Inherited from the mesh: checked when the mesh version is known.
        }
        for a in &c.after {
            if a == &c.name {
                problem(
                    &mut out,
                    format!("{}.after", f()),
                    format!("component {:?} cannot come after itself", c.name),
                );
            } else if !spec.components.iter().any(|k| &k.name == a) {
                problem(
                    &mut out,
                    format!("{}.after", f()),
                    format!("unknown prerequisite {a:?}"),
                );
            }
        }
        if c.verify.requires_primary_active && !spec.members.iter().any(|m| m.primary) {
            problem(
                &mut out,
                format!("{}.verify.requiresPrimaryActive", f()),
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
    check_windows(
        &mut out,
        "spec.upgrade.maintenanceWindows",
        &u.maintenance_windows,
    );
    out
}

/// Weekly windows: an `HH:MM` start and a positive duration each.
fn check_windows(out: &mut Vec<Problem>, field: &str, windows: &[crate::api::MaintenanceWindow]) {
    for (i, w) in windows.iter().enumerate() {
        if parse_hhmm(&w.start).is_none() {
            problem(
                out,
                format!("{field}[{i}].start"),
                format!("{:?} is not HH:MM", w.start),
            );
        }
        if w.duration.millis() == 0 {
            problem(out, format!("{field}[{i}].duration"), "must be positive");
        }
    }
}

/// A cluster as the mesh sees it for validation: name, labels and spec.
pub struct ClusterRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ClusterSpec,
}

impl<'a> ClusterRef<'a> {
    pub fn new(name: &'a str, labels: &'a BTreeMap<String, String>, spec: &'a ClusterSpec) -> Self {
        ClusterRef { name, labels, spec }
    }
}

/// Names and tiers of a mesh's clusters, worked out once per decision and shared by validation
/// and the mesh planner (on a large mesh, hashing names is most of the cost of both). Clusters
/// are referred to by their position in the slice the index was built from.
pub struct MeshIndex<'a> {
    /// Position of each name: the last cluster of that name, as a map built in order keeps it.
    pub by_name: FastMap<&'a str, usize>,
    /// Per position, the position that stands for its name (itself unless a later cluster
    /// has the same name); see [`MeshIndex::canon`].
    canon: Vec<u32>,
    /// Per standing position: the first tier that names or selects the cluster; see
    /// [`MeshIndex::tier_at`].
    tier: Vec<Slot>,
    /// Per standing position: its place in the last tier list that names it.
    listed_at: Vec<Slot>,
    /// Per tier: the standing position of each listed name (none: no such cluster).
    listed: Vec<Vec<Slot>>,
    /// Per tier: the positions its selector matches, in slice order.
    selected: Vec<Vec<usize>>,
    /// The clusters' roles.
    pub roles: Roles<'a>,
}

/// The distinct roles of a mesh's clusters, numbered, so that rules and spans compare numbers.
#[derive(Default)]
pub struct Roles<'a> {
    pub ids: FastMap<&'a str, u32>,
    /// Per id: the role.
    pub names: Vec<&'a str>,
    /// Per position: the id of the cluster's role (`u32::MAX`: none); see [`Roles::of`].
    of: Vec<u32>,
    /// The role met last: neighbours mostly share one.
    last: Option<(&'a str, u32)>,
}

impl<'a> Roles<'a> {
    #[inline]
    fn push(&mut self, role: Option<&'a str>) {
        let id = role.map_or(u32::MAX, |r| match self.last {
            Some((l, id)) if same_str(l, r) => id,
            _ => {
                let next = self.names.len() as u32;
                let id = *self.ids.entry(r).or_insert(next);
                if id == next {
                    self.names.push(r);
                }
                self.last = Some((r, id));
                id
            }
        });
        self.of.push(id);
    }

    /// The id of the role of the cluster at `pos` (None: it has none).
    #[inline]
    pub fn of(&self, pos: usize) -> Option<u32> {
        self.of.get(pos).copied().filter(|&id| id != u32::MAX)
    }

    /// The role with this id (None for `u32::MAX`, no role).
    pub fn name(&self, id: u32) -> Option<&'a str> {
        self.names.get(id as usize).copied()
    }

    /// The id of a role by name (None: no cluster has it).
    pub fn get(&self, role: &str) -> Option<u32> {
        self.ids.get(role).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl<'a> MeshIndex<'a> {
    pub fn new(mesh: &MeshSpec, clusters: &[ClusterRef<'a>]) -> Self {
        Self::new_visiting(mesh, clusters, |_| {})
    }

    /// `new`, calling `visit` with each position during the one sweep that reads every
    /// cluster's name and role: on a large mesh, touching each cluster's memory once (the
    /// mesh planner summarises it there) matters more than the work done on it.
    pub(crate) fn new_visiting(
        mesh: &MeshSpec,
        clusters: &[ClusterRef<'a>],
        mut visit: impl FnMut(usize),
    ) -> Self {
        let n = clusters.len();
        let mut by_name: FastMap<&'a str, usize> =
            FastMap::with_capacity_and_hasher(n, Default::default());
        let mut duplicates = false;
        let mut roles = Roles {
            of: Vec::with_capacity(n),
            ..Roles::default()
        };
        for (i, c) in clusters.iter().enumerate() {
            duplicates |= by_name.insert(c.name, i).is_some();
            roles.push(c.spec.role.as_deref());
            visit(i);
        }
        let canon: Vec<u32> = if duplicates {
            clusters
                .iter()
                .enumerate()
                .map(|(i, c)| by_name.get(c.name).copied().unwrap_or(i) as u32)
                .collect()
        } else {
            (0..n as u32).collect()
        };
        let mut tier = vec![Slot::NONE; n];
        let mut listed_at = vec![Slot::NONE; n];
        let mut listed = Vec::with_capacity(mesh.tiers.len());
        let mut selected = Vec::with_capacity(mesh.tiers.len());
        for (ti, t) in mesh.tiers.iter().enumerate() {
            let pos: Vec<Slot> = t
                .clusters
                .iter()
                .map(|name| {
                    by_name
                        .get(name.as_str())
                        .map_or(Slot::NONE, |&k| Slot::of(k))
                })
                .collect();
            for (j, p) in pos.iter().enumerate() {
                if let Some(k) = p.get() {
                    if tier[k].is_none() {
                        tier[k] = Slot::of(ti);
                    }
                    listed_at[k] = Slot::of(j);
                }
            }
            let mut sel = Vec::new();
            if let Some(s) = &t.selector {
                for (i, c) in clusters.iter().enumerate() {
                    if s.matches(c.labels) {
                        let k = canon[i] as usize;
                        if tier[k].is_none() {
                            tier[k] = Slot::of(ti);
                        }
                        sel.push(i);
                    }
                }
            }
            listed.push(pos);
            selected.push(sel);
        }
        MeshIndex {
            by_name,
            canon,
            tier,
            listed_at,
            listed,
            selected,
            roles,
        }
    }

    /// The standing positions that have a tier, ordered by tier, then as listed in the tier,
    /// then by name (selected by labels).
    pub fn in_tier_order(&self, clusters: &[ClusterRef<'_>]) -> Vec<usize> {
        let key = |k: usize| {
            (
                self.tier[k].get(),
                self.listed_at[k].get().unwrap_or(usize::MAX),
                clusters[k].name,
            )
        };
        // Walking the tiers gives that order directly on a valid spec; a cluster in two
        // tiers (reported by validation) can upset it, and then sorting does.
        let mut out = Vec::with_capacity(clusters.len());
        for ti in 0..self.listed.len() {
            for (j, p) in self.listed[ti].iter().enumerate() {
                if let Some(k) = p.get()
                    && self.tier[k].get() == Some(ti)
                    && self.listed_at[k].get() == Some(j)
                {
                    out.push(k);
                }
            }
            let start = out.len();
            for &i in &self.selected[ti] {
                let k = self.canon(i);
                if self.tier[k].get() == Some(ti) && self.listed_at[k].is_none() {
                    out.push(k);
                }
            }
            out[start..].sort_unstable_by_key(|&k| clusters[k].name);
            // Clusters of the same name stand at one position.
            let mut tail = out.split_off(start);
            tail.dedup();
            out.append(&mut tail);
        }
        let expected = (0..clusters.len())
            .filter(|&k| self.canon(k) == k && !self.tier[k].is_none())
            .count();
        if out.len() != expected || !out.is_sorted_by_key(|&k| key(k)) {
            out = (0..clusters.len())
                .filter(|&k| self.canon(k) == k && !self.tier[k].is_none())
                .collect();
            out.sort_by_key(|&k| key(k));
        }
        out
    }

    /// The tier of the cluster called `name`.
    pub fn tier_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).and_then(|&k| self.tier_at(k))
    }

    /// The position that stands for the name of the cluster at `pos` (itself unless a later
    /// cluster has the same name).
    #[inline]
    pub fn canon(&self, pos: usize) -> usize {
        self.canon.get(pos).map_or(pos, |&k| k as usize)
    }

    /// The tier of the cluster standing at `pos` (None: no tier names or selects it).
    #[inline]
    pub fn tier_at(&self, pos: usize) -> Option<usize> {
        self.tier.get(pos).and_then(|t| t.get())
    }
}

/// Which tier (index) each cluster of the mesh belongs to. Clusters matched by two tiers are
/// reported by `validate_mesh`; here the first tier wins.
pub fn tier_membership(mesh: &MeshSpec, clusters: &[ClusterRef<'_>]) -> FastMap<String, usize> {
    let index = MeshIndex::new(mesh, clusters);
    let mut out = FastMap::with_capacity_and_hasher(clusters.len(), Default::default());
    for (i, c) in clusters.iter().enumerate() {
        if index.canon(i) == i
            && let Some(t) = index.tier_at(i)
        {
            out.insert(c.name.to_string(), t);
        }
    }
    out
}

/// Validate a Mesh together with the clusters in its namespace.
pub fn validate_mesh(mesh: &MeshSpec, clusters: &[ClusterRef<'_>]) -> Vec<Problem> {
    let index = MeshIndex::new(mesh, clusters);
    validate_mesh_indexed(mesh, clusters, &index, |_| None)
}

/// `validate_mesh` over an index the caller (the mesh planner) already built. `outside` says
/// why a name a tier lists is not among `clusters` although it exists: `Some(Some(message))`
/// replaces "unknown cluster" (another mesh owns it), `Some(None)` drops the problem (the
/// cluster exists but cannot be read; the planner reports that itself).
pub fn validate_mesh_indexed(
    mesh: &MeshSpec,
    clusters: &[ClusterRef<'_>],
    index: &MeshIndex<'_>,
    outside: impl Fn(&str) -> Option<Option<String>>,
) -> Vec<Problem> {
    validate_mesh_core(mesh, clusters, index, outside, |i, _| {
        index.tier_at(index.canon(i))
    })
}

fn validate_mesh_core(
    mesh: &MeshSpec,
    clusters: &[ClusterRef<'_>],
    index: &MeshIndex<'_>,
    outside: impl Fn(&str) -> Option<Option<String>>,
    tier_of: impl Fn(usize, &str) -> Option<usize>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    check_version(&mut out, "spec.version", &mesh.version);
    if mesh.tiers.is_empty() {
        problem(&mut out, "spec.tiers", "at least one tier is required");
    }
    let mut tier_names = BTreeSet::new();
    // Per standing position: the last tier that claimed it, and the last tier that saw it
    // (a tier names or selects a cluster at most once).
    let mut claimed: Vec<Slot> = vec![Slot::NONE; clusters.len()];
    let mut seen: Vec<Slot> = vec![Slot::NONE; clusters.len()];
    for (ti, t) in mesh.tiers.iter().enumerate() {
        let f = format!("spec.tiers[{ti}]");
        check_name(&mut out, &mut tier_names, &|| f.clone(), "tier", &t.name);
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
        for (n, p) in t.clusters.iter().zip(&index.listed[ti]) {
            if p.is_none() {
                match outside(n) {
                    None => problem(
                        &mut out,
                        format!("{f}.clusters"),
                        format!("unknown cluster {n:?}"),
                    ),
                    Some(Some(why)) => problem(&mut out, format!("{f}.clusters"), why),
                    Some(None) => {}
                }
            }
        }
        let listed = index.listed[ti].iter().filter_map(|p| p.get());
        let selected = index.selected[ti].iter().map(|&i| index.canon(i));
        for k in listed.chain(selected) {
            if seen[k] == Slot::of(ti) {
                continue;
            }
            seen[k] = Slot::of(ti);
            if let Some(prev) = std::mem::replace(&mut claimed[k], Slot::of(ti)).get()
                && mesh.tiers[prev].name != t.name
            {
                problem(
                    &mut out,
                    &f,
                    format!(
                        "cluster {:?} is in tiers {:?} and {:?}",
                        clusters[k].name, mesh.tiers[prev].name, t.name
                    ),
                );
            }
        }
    }
    // One agent is a member of one cluster: the same endpoint in two clusters of the mesh would
    // take both clusters' operations and identities (a member added to two clusters).
    let mut agents: BTreeMap<std::borrow::Cow<'_, str>, (&str, &str)> = BTreeMap::new();
    for (k, c) in clusters.iter().enumerate() {
        if claimed[k].get().is_none() {
            continue;
        }
        for m in &c.spec.members {
            let here = (c.name, m.name.as_str());
            if let Some((oc, om)) = agents.insert(endpoint_key(&m.endpoint), here)
                && oc != c.name
            {
                problem(
                    &mut out,
                    "spec.tiers",
                    format!(
                        "clusters {oc:?} and {:?} both have the agent at {:?} (members {om} and {}): one agent cannot be a member of two clusters",
                        c.name, m.endpoint, m.name
                    ),
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
    check_tasks(&mut out, mesh, clusters, index, &outside);
    check_deferred(&mut out, mesh);
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
    if mesh.compatibility.is_empty() {
        return out;
    }
    // A rule "A not newer than B" with an A cluster in an earlier tier than a B cluster can never
    // be satisfied on the way up: the A tier would wait forever for the B tier behind it.
    // Earliest and latest tier of each role; the names for the message (the first name in
    // the earliest tier, the last in the latest) only when a rule fails.
    let roles = &index.roles;
    let mut span: Vec<Option<(usize, usize)>> = vec![None; roles.len()];
    for (i, c) in clusters.iter().enumerate() {
        if let (Some(role), Some(t)) = (roles.of(i), tier_of(i, c.name)) {
            let e = span[role as usize].get_or_insert((t, t));
            e.0 = e.0.min(t);
            e.1 = e.1.max(t);
        }
    }
    let name_in = |role: u32, tier: usize, last: bool| -> &str {
        let names = clusters
            .iter()
            .enumerate()
            .filter(|(i, c)| roles.of(*i) == Some(role) && tier_of(*i, c.name) == Some(tier));
        let names = names.map(|(_, c)| c.name);
        if last { names.max() } else { names.min() }.unwrap_or_default()
    };
    let span_of = |role: &str| roles.get(role).and_then(|r| Some((r, span[r as usize]?)));
    for (i, r) in mesh.compatibility.iter().enumerate() {
        if let (Some((ra, (ta, _))), Some((rb, (_, tb)))) =
            (span_of(&r.role), span_of(&r.not_newer_than))
            && ta <= tb
        {
            let a = name_in(ra, ta, false);
            let b = name_in(rb, tb, true);
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

/// Once-per-mesh tasks: unique names, after a tier of the mesh, on a cluster of the mesh (and
/// a member of it when one is named).
fn check_tasks(
    out: &mut Vec<Problem>,
    mesh: &MeshSpec,
    clusters: &[ClusterRef<'_>],
    index: &MeshIndex<'_>,
    outside: &impl Fn(&str) -> Option<Option<String>>,
) {
    let mut names = BTreeSet::new();
    for (i, t) in mesh.tasks.iter().enumerate() {
        let f = format!("spec.tasks[{i}]");
        check_name(out, &mut names, &|| f.clone(), "task", &t.name);
        if let Some(task) = &t.task
            && !is_dns_label(task)
        {
            problem(
                out,
                format!("{f}.task"),
                format!("{task:?} must be a DNS label"),
            );
        }
        if !mesh.tiers.iter().any(|x| x.name == t.after) {
            problem(
                out,
                format!("{f}.after"),
                format!("{:?} is not a tier of the mesh", t.after),
            );
        }
        if index.tier_of(&t.cluster).is_none() {
            match outside(&t.cluster) {
                None => problem(
                    out,
                    format!("{f}.cluster"),
                    format!("{:?} is not a cluster of the mesh", t.cluster),
                ),
                Some(Some(why)) => problem(out, format!("{f}.cluster"), why),
                Some(None) => {}
            }
            continue;
        }
        if let Some(m) = &t.member
            && let Some(c) = clusters.iter().rev().find(|c| c.name == t.cluster)
            && !c.spec.members.iter().any(|x| &x.name == m)
        {
            problem(
                out,
                format!("{f}.member"),
                format!("{m:?} is not a member of cluster {:?}", t.cluster),
            );
        }
    }
}

/// Deferred tiers: only the last tiers (a tier after a deferred one would wait for it, and
/// the mesh would report a rollout done with a tier behind that was never deferred), never
/// every tier (nothing would be the rollout), and no upgrade task after one (a task after a
/// tier that may lag for weeks would hold the next tier, or the rollout, for as long).
fn check_deferred(out: &mut Vec<Problem>, mesh: &MeshSpec) {
    let first = mesh.tiers.iter().position(|t| t.deferred.is_some());
    let Some(first) = first else {
        return;
    };
    if first == 0 {
        problem(
            out,
            "spec.tiers[0].deferred",
            "the first tier cannot be deferred: the tiers before a deferred one are the rollout",
        );
    }
    for (i, t) in mesh.tiers.iter().enumerate().skip(first) {
        match &t.deferred {
            None => problem(
                out,
                format!("spec.tiers[{i}]"),
                format!(
                    "tier {:?} follows the deferred tier {:?}: only the last tiers may be deferred",
                    t.name, mesh.tiers[first].name
                ),
            ),
            Some(d) => check_windows(
                out,
                &format!("spec.tiers[{i}].deferred.windows"),
                &d.windows,
            ),
        }
    }
    for (i, task) in mesh.tasks.iter().enumerate() {
        let deferred = mesh
            .tiers
            .iter()
            .any(|t| t.name == task.after && t.deferred.is_some());
        if deferred && task.on.runs_on(crate::api::Direction::Upgrade) {
            problem(
                out,
                format!("spec.tasks[{i}].after"),
                format!(
                    "tier {:?} is deferred: an upgrade task cannot wait for a tier that may lag behind the rollout",
                    task.after
                ),
            );
        }
    }
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
