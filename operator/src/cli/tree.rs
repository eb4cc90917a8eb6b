//! The status tree: mesh → tiers → clusters → members (and managed clients), with role,
//! version, lag, membership change, operation and progress on one screen. Pure: the kubectl plugin feeds it live objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::api::annotations::paused;
use crate::api::{
    ClientStatus, ClusterSpec, ClusterStatus, MemberStatus, Membership, MeshSpec, MeshStatus,
    condition,
};
use crate::plan::conditions::condition_true;
use crate::plan::validate::{ClusterRef, tier_membership};

/// One Cluster as the tree shows it.
pub struct TreeCluster<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ClusterSpec,
    pub generation: Option<i64>,
    pub status: Option<&'a ClusterStatus>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// One Mesh as the tree shows it.
pub struct TreeMesh<'a> {
    pub name: &'a str,
    pub spec: &'a MeshSpec,
    pub generation: Option<i64>,
    pub status: Option<&'a MeshStatus>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// An object that is stored but does not parse as its kind (shown, never hidden).
pub struct TreeInvalid<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub error: &'a str,
}

/// Everything of one namespace.
#[derive(Default)]
pub struct TreeInput<'a> {
    pub meshes: Vec<TreeMesh<'a>>,
    pub clusters: Vec<TreeCluster<'a>>,
    pub invalid: Vec<TreeInvalid<'a>>,
}

const BRANCH: &str = "├── ";
const LAST: &str = "└── ";
const PIPE: &str = "│   ";
const SPACE: &str = "    ";

fn quoted(m: Option<&str>) -> String {
    m.filter(|m| !m.is_empty())
        .map(|m| format!("  \"{m}\""))
        .unwrap_or_default()
}

fn mesh_line(m: &TreeMesh<'_>) -> String {
    let mut s = format!("mesh/{}  → {}", m.name, m.spec.version);
    match m.status {
        None => s.push_str("  (no status yet)"),
        Some(st) => {
            let _ = write!(s, "  {:?}", st.phase);
            if let Some(p) = &st.progress {
                let _ = write!(s, "  {p} clusters done");
            }
            if let Some(r) = &st.rollout {
                let dir = format!("{:?}", r.direction).to_lowercase();
                let _ = write!(s, "  rollout: {dir}");
            }
            if let Some(l) = &st.lagging {
                let _ = write!(s, "  lagging: {l}");
            }
            let ca = st
                .certificates
                .as_ref()
                .map(super::view::mesh_certificates_summary);
            let stale = st.observed_generation != m.generation;
            line_tail(&mut s, ca, stale, st.message.as_deref());
        }
    }
    if m.spec.paused || paused(m.annotations) {
        s.push_str("  [paused]");
    }
    s
}

/// One line per once-per-mesh task: where and when it runs, and where it stands in the
/// rollout (`not due` before its tier is done).
fn task_lines(m: &TreeMesh<'_>) -> Vec<String> {
    m.spec
        .tasks
        .iter()
        .map(|t| {
            let mut s = format!(
                "task {}  after tier {}  on {}",
                t.name,
                t.after,
                t.member
                    .as_ref()
                    .map_or(t.cluster.clone(), |mm| format!("{}/{mm}", t.cluster))
            );
            let st = m
                .status
                .and_then(|st| st.tasks.iter().find(|x| x.name == t.name));
            match st {
                None => s.push_str("  (not in this rollout)"),
                Some(x) => {
                    let _ = write!(s, "  {}", super::view::task_summary(x));
                }
            }
            s
        })
        .collect()
}

/// The end of an object's line: its rotation, whether the status is for an older spec, and
/// its message.
fn line_tail(s: &mut String, ca: Option<String>, stale: bool, message: Option<&str>) {
    if let Some(ca) = ca {
        let _ = write!(s, "  [{ca}]");
    }
    if stale {
        s.push_str("  (status not yet for the latest spec)");
    }
    s.push_str(&quoted(message));
}

fn cluster_line(c: &TreeCluster<'_>) -> String {
    let mut s = format!("cluster/{}", c.name);
    match c.status {
        None => s.push_str("  (no status yet)"),
        Some(st) => {
            let running = st.running_versions.as_deref().unwrap_or("?");
            match st.target_version.as_deref() {
                Some(t) if t != running => {
                    let _ = write!(s, "  {running} → {t}");
                }
                _ => {
                    let _ = write!(s, "  {running}");
                }
            }
            let _ = write!(s, "  {:?}", st.phase);
            let ready = st.observed_generation == c.generation
                && condition_true(&st.conditions, condition::READY);
            s.push_str(if ready { "  ready" } else { "  not ready" });
            if let Some(a) = &st.active_member {
                let _ = write!(s, "  active {a}");
            }
            if let Some(h) = &st.health {
                let _ = write!(s, "  health {}", super::view::health_summary(h));
            }
            if let Some(p) = &st.preparation {
                let _ = write!(
                    s,
                    "  preparation {}",
                    super::view::preparation_summary(c.name, p)
                );
            }
            let ca = st
                .certificates
                .as_ref()
                .map(super::view::certificates_summary);
            let stale = st.observed_generation != c.generation;
            line_tail(&mut s, ca, stale, st.message.as_deref());
        }
    }
    if c.spec.paused || paused(c.annotations) {
        s.push_str("  [paused]");
    }
    s
}

/// Where a member's membership change stands (`joining Introduce (waiting: …)`); empty for a
/// plain member.
fn membership_cell(m: &MemberStatus) -> String {
    let Some(t) = &m.topology else {
        return String::new();
    };
    let what = match t.membership {
        Membership::Joining => "joining",
        Membership::Leaving => "leaving",
    };
    let mut s = format!("{what} {:?}", t.stage);
    if let Some(w) = &t.waiting {
        let _ = write!(s, " (waiting: {w})");
    }
    s
}

/// A managed client's row: whether Baton reaches it, which members it accepts and which not
/// yet.
fn client_cells(c: &ClientStatus) -> Vec<String> {
    let mut cells = vec![
        format!("client/{}", c.name),
        if c.reachable {
            "reachable".into()
        } else {
            "unreachable".into()
        },
        format!(
            "accepts {}",
            if c.accepts.is_empty() {
                "-".to_string()
            } else {
                c.accepts.join(", ")
            }
        ),
    ];
    if !c.missing.is_empty() {
        cells.push(format!("missing {}", c.missing.join(", ")));
    }
    if c.failures > 0 {
        let e = c.last_error.as_deref().unwrap_or("failed");
        cells.push(format!("failures {}: {e}", c.failures));
    }
    cells
}

fn member_cells(m: &MemberStatus, membership: bool, media: bool) -> Vec<String> {
    let mut op = m.operation.as_ref().map_or(String::new(), |o| {
        format!("{} {} {}%", o.kind, o.state, o.progress)
    });
    if m.failures > 0 {
        let e = m.last_error.as_deref().unwrap_or("failed");
        let _ = write!(
            op,
            "{}failures {}: {e}",
            if op.is_empty() { "" } else { "; " },
            m.failures
        );
    }
    let mut cells = vec![
        m.name.clone(),
        format!("{:?}", m.role),
        m.version.clone().unwrap_or_else(|| "?".into()),
        if m.up_to_date {
            "up to date".into()
        } else {
            "-".into()
        },
        format!("lag {}s", m.lag_seconds),
        format!("{:?}", m.health),
    ];
    // The column is there only while some member of the cluster joins or leaves.
    if membership {
        cells.push(membership_cell(m));
    }
    // The upgrade media each member holds, while some member of the cluster reports any.
    if media {
        cells.push(if m.media.is_empty() {
            "media -".into()
        } else {
            format!("media {}", m.media.join(","))
        });
    }
    cells.push(op);
    cells
}

/// Rows of cells aligned in columns, each prefixed.
fn aligned(prefix: &str, rows: &[(bool, Vec<String>)], out: &mut String) {
    let cols = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.1.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (last, cells) in rows {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(line, "{c:<w$}  ", w = widths[i]);
        }
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if *last { LAST } else { BRANCH },
            line.trim_end()
        );
    }
}

fn cluster_subtree(c: &TreeCluster<'_>, prefix: &str, last: bool, out: &mut String) {
    let _ = writeln!(
        out,
        "{prefix}{}{}",
        if last { LAST } else { BRANCH },
        cluster_line(c)
    );
    let inner = format!("{prefix}{}", if last { SPACE } else { PIPE });
    match c.status {
        Some(st) if !st.members.is_empty() => {
            let membership = st.members.iter().any(|m| m.topology.is_some());
            let media = st.members.iter().any(|m| !m.media.is_empty());
            let n = st.members.len() + st.clients.len();
            let rows: Vec<(bool, Vec<String>)> = st
                .members
                .iter()
                .map(|m| member_cells(m, membership, media))
                .chain(st.clients.iter().map(client_cells))
                .enumerate()
                .map(|(i, cells)| (i + 1 == n, cells))
                .collect();
            aligned(&inner, &rows, out);
        }
        _ => {
            // Not observed yet: the members the spec names.
            let n = c.spec.members.len();
            for (i, m) in c.spec.members.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{inner}{}{}  (not observed yet)",
                    if i + 1 == n { LAST } else { BRANCH },
                    m.name
                );
            }
        }
    }
}

/// The tree of one namespace.
pub fn render(input: &TreeInput<'_>) -> String {
    let mut out = String::new();
    let refs: Vec<ClusterRef<'_>> = input
        .clusters
        .iter()
        .map(|c| ClusterRef {
            name: c.name,
            labels: c.labels,
            spec: c.spec,
        })
        .collect();
    let by_name: BTreeMap<&str, &TreeCluster<'_>> =
        input.clusters.iter().map(|c| (c.name, c)).collect();
    let mut in_mesh: BTreeSet<&str> = BTreeSet::new();
    for m in &input.meshes {
        let _ = writeln!(out, "{}", mesh_line(m));
        for line in task_lines(m) {
            let _ = writeln!(out, "{BRANCH}{line}");
        }
        let membership = tier_membership(m.spec, &refs);
        let tiers = m.spec.tiers.len();
        for (ti, tier) in m.spec.tiers.iter().enumerate() {
            let last_tier = ti + 1 == tiers;
            let members: Vec<&TreeCluster<'_>> = input
                .clusters
                .iter()
                .filter(|c| membership.get(c.name) == Some(&ti))
                .collect();
            let mut line = format!("tier {}", tier.name);
            let ts = m
                .status
                .and_then(|s| s.tiers.iter().find(|t| t.name == tier.name));
            if let Some(ts) = ts {
                let _ = write!(line, "  {}/{} done", ts.done, ts.total);
                if !ts.moving.is_empty() {
                    let _ = write!(line, "  moving {}", ts.moving.join(", "));
                }
            }
            let _ = write!(line, "  maxParallel {}", tier.max_parallel);
            if let Some(d) = ts.and_then(|t| t.drain.as_ref())
                && d.drained_at.is_none()
            {
                let left: Vec<String> = d
                    .backlog
                    .iter()
                    .map(|b| format!("{} ({})", b.cluster, b.entries))
                    .collect();
                let _ = write!(
                    line,
                    "  draining since {}: backlog {}",
                    d.since,
                    if left.is_empty() {
                        "-".to_string()
                    } else {
                        left.join(", ")
                    }
                );
            }
            if let Some(d) = ts.and_then(|t| t.deferred.as_ref()) {
                let _ = write!(line, "  deferred: {}", super::view::deferred_summary(d));
            } else if tier.deferred.is_some() {
                line.push_str("  deferred");
            }
            // Names listed explicitly but absent are worth seeing: the mesh waits for them.
            let missing: Vec<&str> = tier
                .clusters
                .iter()
                .map(String::as_str)
                .filter(|n| !by_name.contains_key(n))
                .collect();
            if !missing.is_empty() {
                let _ = write!(line, "  missing: {}", missing.join(", "));
            }
            if members.is_empty() {
                line.push_str("  (no clusters)");
            }
            let _ = writeln!(out, "{}{line}", if last_tier { LAST } else { BRANCH });
            let prefix = if last_tier { SPACE } else { PIPE };
            for (ci, c) in members.iter().enumerate() {
                in_mesh.insert(c.name);
                cluster_subtree(c, prefix, ci + 1 == members.len(), &mut out);
            }
        }
    }
    let loose: Vec<&TreeCluster<'_>> = input
        .clusters
        .iter()
        .filter(|c| !in_mesh.contains(c.name))
        .collect();
    if !loose.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            if input.meshes.is_empty() {
                "clusters"
            } else {
                "clusters in no mesh"
            }
        );
        for (i, c) in loose.iter().enumerate() {
            cluster_subtree(c, "", i + 1 == loose.len(), &mut out);
        }
    }
    if !input.invalid.is_empty() {
        let _ = writeln!(out, "invalid objects (the operator reports them Stalled)");
        let n = input.invalid.len();
        for (i, o) in input.invalid.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}{}/{}: {}",
                if i + 1 == n { LAST } else { BRANCH },
                o.kind,
                o.name,
                o.error
            );
        }
    }
    if out.is_empty() {
        out.push_str("no Mesh or Cluster objects\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cluster, Mesh};

    fn mesh() -> Mesh {
        serde_yaml::from_str(
            "apiVersion: baton.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  version: 2.0.0\n  \
             tiers:\n  - name: core\n    clusters: [c1, ghost]\n  - name: edge\n    selector:\n      \
             matchLabels: {role: edge}\n",
        )
        .expect("mesh")
    }

    fn cluster(name: &str, labels: &str) -> Cluster {
        serde_yaml::from_str(&format!(
            "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, labels: {labels}}}\n\
             spec:\n  members:\n  - {{name: x, endpoint: 'https://x:1'}}\n  - {{name: y, endpoint: 'https://y:1'}}\n"
        ))
        .expect("cluster")
    }

    fn input<'a>(
        m: &'a Mesh,
        cs: &'a [Cluster],
        ann: &'a BTreeMap<String, String>,
    ) -> TreeInput<'a> {
        TreeInput {
            meshes: vec![TreeMesh {
                name: "m",
                spec: &m.spec,
                generation: Some(2),
                status: m.status.as_ref(),
                annotations: ann,
            }],
            clusters: cs
                .iter()
                .map(|c| TreeCluster {
                    name: c.metadata.name.as_deref().unwrap_or_default(),
                    labels: c.metadata.labels.as_ref().expect("labels"),
                    spec: &c.spec,
                    generation: Some(1),
                    status: c.status.as_ref(),
                    annotations: ann,
                })
                .collect(),
            invalid: vec![],
        }
    }

    #[test]
    fn unobserved_objects_show_their_spec_and_what_is_missing() {
        let m = mesh();
        let cs = [
            cluster("c1", "{}"),
            cluster("e1", "{role: edge}"),
            cluster("loose", "{}"),
        ];
        let none = BTreeMap::new();
        let text = render(&input(&m, &cs, &none));
        let expected = "\
mesh/m  → 2.0.0  (no status yet)
├── tier core  maxParallel 1  missing: ghost
│   └── cluster/c1  (no status yet)
│       ├── x  (not observed yet)
│       └── y  (not observed yet)
└── tier edge  maxParallel 1
    └── cluster/e1  (no status yet)
        ├── x  (not observed yet)
        └── y  (not observed yet)
clusters in no mesh
└── cluster/loose  (no status yet)
    ├── x  (not observed yet)
    └── y  (not observed yet)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn paused_and_stale_objects_are_marked() {
        let mut m = mesh();
        m.status = Some(MeshStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let mut c = cluster("c1", "{}");
        c.spec.paused = true;
        c.status = Some(ClusterStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let cs = [c];
        let ann: BTreeMap<String, String> =
            [("baton.dev/pause".to_string(), "true".to_string())].into();
        let text = render(&input(&m, &cs, &ann));
        let first = text.lines().next().unwrap_or_default();
        // The mesh is at generation 2, its status at 1.
        assert!(
            first.contains("status not yet for the latest spec"),
            "{text}"
        );
        assert!(first.ends_with("[paused]"), "{text}");
        let c1 = text
            .lines()
            .find(|l| l.contains("cluster/c1"))
            .unwrap_or_default();
        assert!(c1.ends_with("[paused]"), "{text}");
        assert!(!c1.contains("status not yet"), "{text}");
        assert!(
            text.contains("tier edge  maxParallel 1  (no clusters)"),
            "{text}"
        );
    }

    #[test]
    fn a_tier_waiting_for_the_backlog_to_drain_shows_what_is_left() {
        use crate::api::{ClusterBacklog, TierDrainStatus, TierStatus, Timestamp};
        let since: Timestamp = "2026-12-01T10:00:00Z".parse().expect("timestamp");
        let tier = |name: &str, drained: bool| TierStatus {
            name: name.into(),
            total: 1,
            drain: Some(TierDrainStatus {
                since,
                drained_at: drained.then_some(since),
                backlog: if drained {
                    vec![]
                } else {
                    vec![ClusterBacklog {
                        cluster: "c1".into(),
                        entries: 40,
                    }]
                },
            }),
            ..Default::default()
        };
        let mut m = mesh();
        m.status = Some(MeshStatus {
            observed_generation: Some(2),
            tiers: vec![tier("core", true), tier("edge", false)],
            ..Default::default()
        });
        let cs = [cluster("c1", "{}"), cluster("e1", "{role: edge}")];
        let none = BTreeMap::new();
        let text = render(&input(&m, &cs, &none));
        let line = |t: &str| {
            text.lines()
                .find(|l| l.contains(&format!("tier {t}")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("edge").ends_with("draining since 2026-12-01T10:00:00Z: backlog c1 (40)"),
            "{text}"
        );
        assert!(!line("core").contains("draining"), "drained: {text}");
    }

    #[test]
    fn a_deferred_tier_shows_its_trigger_and_the_mesh_its_lag() {
        use crate::api::{DeferredSpec, DeferredWait, TierDeferredStatus, TierStatus, Timestamp};
        let at: Timestamp = "2026-12-02T02:00:00Z".parse().expect("timestamp");
        let mut m = mesh();
        m.spec.tiers[1].deferred = Some(DeferredSpec {
            approval: true,
            ..Default::default()
        });
        let status = |waiting_for, next_window_at, approved: Option<&str>| MeshStatus {
            observed_generation: Some(2),
            lagging: Some("edge 0/1".into()),
            tiers: vec![
                TierStatus {
                    name: "core".into(),
                    done: 1,
                    total: 1,
                    ..Default::default()
                },
                TierStatus {
                    name: "edge".into(),
                    total: 1,
                    deferred: Some(TierDeferredStatus {
                        waiting_for,
                        approval: Some("tier/m/edge@2.0.0".into()),
                        approved: approved.map(str::to_string),
                        next_window_at,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let cs = [cluster("c1", "{}"), cluster("e1", "{role: edge}")];
        let none = BTreeMap::new();
        let edge = |st: MeshStatus| {
            let mut m = m.clone();
            m.status = Some(st);
            let text = render(&input(&m, &cs, &none));
            let first = text.lines().next().unwrap_or_default().to_string();
            let line = text
                .lines()
                .find(|l| l.contains("tier edge"))
                .unwrap_or_default()
                .to_string();
            (first, line)
        };
        let (first, line) = edge(status(Some(DeferredWait::Approval), None, None));
        assert!(first.contains("lagging: edge 0/1"), "{first}");
        assert!(
            line.ends_with("deferred: waits for its approval (approve tier/m/edge@2.0.0)"),
            "{line}"
        );
        let (_, line) = edge(status(Some(DeferredWait::EarlierTiers), None, None));
        assert!(
            line.ends_with("deferred: after the earlier tiers (approve tier/m/edge@2.0.0)"),
            "{line}"
        );
        let (_, line) = edge(status(Some(DeferredWait::Window), Some(at), None));
        assert!(
            line.ends_with("deferred: waits for its window (opens at 2026-12-02T02:00:00Z)"),
            "{line}"
        );
        let (_, line) = edge(status(None, None, Some("tier/m/edge@2.0.0")));
        assert!(
            line.ends_with("deferred: approved (tier/m/edge@2.0.0)"),
            "{line}"
        );
    }

    #[test]
    fn the_mesh_s_tasks_show_where_they_stand() {
        use crate::api::{MeshTaskSpec, MeshTaskStatus, TaskState, Timestamp};
        let mut m = mesh();
        let task = |name: &str, member: Option<&str>| MeshTaskSpec {
            name: name.into(),
            cluster: "c1".into(),
            member: member.map(str::to_string),
            after: "core".into(),
            ..Default::default()
        };
        m.spec.tasks = vec![
            task("upload", None),
            task("index", Some("y")),
            task("later", None),
        ];
        let at: Timestamp = "2026-12-01T10:00:00Z".parse().expect("timestamp");
        m.status = Some(MeshStatus {
            observed_generation: Some(2),
            tasks: vec![
                MeshTaskStatus {
                    name: "upload".into(),
                    id: "m.upload.r1".into(),
                    cluster: "c1".into(),
                    state: TaskState::Pending,
                    member: Some("x".into()),
                    failures: 1,
                    last_error: Some("exit 2".into()),
                    started_at: Some(at),
                    ..Default::default()
                },
                MeshTaskStatus {
                    name: "index".into(),
                    id: "m.index.r1".into(),
                    cluster: "c1".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let cs = [cluster("c1", "{}")];
        let none = BTreeMap::new();
        let text = render(&input(&m, &cs, &none));
        let line = |t: &str| {
            text.lines()
                .find(|l| l.contains(&format!("task {t} ")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("upload").ends_with(
                "task upload  after tier core  on c1  Pending on x  1 failed attempt(s): exit 2"
            ),
            "{text}"
        );
        assert!(line("index").ends_with("on c1/y  not due"), "{text}");
        assert!(line("later").ends_with("(not in this rollout)"), "{text}");
    }

    #[test]
    fn joining_and_leaving_members_and_clients_show_where_they_stand() {
        use crate::api::{MemberRole, MemberTopology, TopologyStage};
        let member =
            |name: &str, role, topology: Option<(Membership, TopologyStage, &str)>| MemberStatus {
                name: name.into(),
                role,
                version: Some("1.0.0".into()),
                topology: topology.map(|(membership, stage, waiting)| MemberTopology {
                    membership,
                    stage,
                    waiting: (!waiting.is_empty()).then(|| waiting.to_string()),
                    never_joined: false,
                }),
                ..Default::default()
            };
        let mut c = cluster("c1", "{}");
        c.status = Some(ClusterStatus {
            observed_generation: Some(1),
            running_versions: Some("1.0.0".into()),
            members: vec![
                member("x", MemberRole::Active, None),
                member(
                    "y",
                    MemberRole::Standby,
                    Some((Membership::Leaving, TopologyStage::Retire, "")),
                ),
                member(
                    "n",
                    MemberRole::Standby,
                    Some((
                        Membership::Joining,
                        TopologyStage::CopyConfig,
                        "the active x does not serve",
                    )),
                ),
            ],
            clients: vec![ClientStatus {
                name: "ems".into(),
                reachable: false,
                accepts: vec!["x".into(), "y".into()],
                missing: vec!["n".into()],
                ..Default::default()
            }],
            ..Default::default()
        });
        let m = mesh();
        let cs = [c];
        let none = BTreeMap::new();
        let text = render(&input(&m, &cs, &none));
        let line = |name: &str| {
            text.lines()
                .find(|l| l.contains(&format!("── {name} ")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(line("y").contains("leaving Retire"), "{text}");
        assert!(
            line("n").contains("joining CopyConfig (waiting: the active x does not serve)"),
            "{text}"
        );
        assert!(!line("x").contains("joining") && !line("x").contains("leaving"));
        // The client comes last, under the members.
        let client = text
            .lines()
            .find(|l| l.contains("client/ems"))
            .unwrap_or_default();
        assert!(client.contains("└── client/ems"), "{text}");
        assert!(
            client.contains("unreachable") && client.contains("accepts x, y"),
            "{text}"
        );
        assert!(client.contains("missing n"), "{text}");
        assert!(line("n").contains("├── n"), "{text}");
        // The columns stay aligned: the membership cell starts at the same place on each row.
        let at = |l: &str, what: &str| l.find(what).unwrap_or(0);
        assert_eq!(
            at(&line("y"), "leaving"),
            at(&line("n"), "joining"),
            "{text}"
        );
    }
}
