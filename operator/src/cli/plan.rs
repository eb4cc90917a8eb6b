//! `baton plan`: the whole ordered schedule from the current (or an assumed initial) state to
//! the desired one, without touching anything. The schedule is what the real loop would do:
//! the same planner drives the deterministic simulator (no faults, no jitter), approvals are
//! assumed given (and listed as waits), and durations are the estimates passed in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use kube::ResourceExt;
use serde::Serialize;

use crate::api::{
    ClusterStatus, DeferredWait, Duration, LogEntry, LogResult, LogScope, MemberRole, MeshStatus,
    Timestamp, condition as cond,
};
use crate::local::{Manifests, State, load};
use crate::plan::conditions::condition_true;
use crate::plan::validate::tier_membership;
use crate::sim::{Sim, SimConfig};

pub struct PlanOptions {
    pub files: Vec<PathBuf>,
    pub state: Option<PathBuf>,
    /// Version every member is assumed to run when no state says otherwise.
    pub from: Option<String>,
    /// Component versions assumed likewise (`os` → `8.4.0`).
    pub from_components: BTreeMap<String, String>,
    /// Estimated duration of one member upgrade or rollback.
    pub upgrade_time: Option<Duration>,
    /// Estimated duration of the short operations (preflight, switchover phases, verify).
    pub step_time: Option<Duration>,
    /// Give up after this much simulated time.
    pub horizon: Duration,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// Order of start.
    pub seq: usize,
    /// Offset from the start of the plan, in seconds.
    pub start: f64,
    pub end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub cluster: String,
    /// A member, or the cluster for cluster-wide steps.
    pub target: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedWait {
    pub start: f64,
    pub end: f64,
    pub cluster: String,
    /// What it waits for (the mesh's admission, a window, an approval…).
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPreparation {
    pub cluster: String,
    pub version: String,
    /// Its warnings wait for an acknowledgement (`warnings: Acknowledge`), else are recorded.
    pub acknowledge: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub steps: Vec<PlannedStep>,
    pub waits: Vec<PlannedWait>,
    /// Approvals the plan assumed (each needs `baton approve NAME` in reality).
    pub approvals: Vec<String>,
    /// Clusters whose preparation checks (`upgrade.prepare`) run before their upgrade: what
    /// they find is only known once they run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preparations: Vec<PlannedPreparation>,
    /// Seconds from the first step to the last.
    pub makespan: f64,
    /// Clusters that would not converge, with the reason.
    pub blocked: Vec<(String, String)>,
    /// Whether durations are estimates given by the user.
    pub estimated: bool,
}

/// Build the schedule from manifest files and (optionally) a state file.
pub fn schedule(opts: &PlanOptions) -> anyhow::Result<Schedule> {
    let manifests = load(&opts.files)?;
    let state = match &opts.state {
        Some(p) => Some(State::load(p)?),
        None => None,
    };
    let statuses: BTreeMap<&str, &ClusterStatus> = state
        .iter()
        .flat_map(|s| s.clusters.iter())
        .filter_map(|(n, o)| o.status.as_ref().map(|st| (n.as_str(), st)))
        .collect();
    schedule_from(opts, &manifests, &statuses)
}

/// Build the schedule from objects and the last statuses of their clusters (the kubectl
/// plugin passes live objects; `opts.files` and `opts.state` are not read).
pub fn schedule_from(
    opts: &PlanOptions,
    manifests: &Manifests,
    statuses: &BTreeMap<&str, &ClusterStatus>,
) -> anyhow::Result<Schedule> {
    let mut out = Schedule {
        steps: vec![],
        waits: vec![],
        approvals: vec![],
        preparations: vec![],
        makespan: 0.0,
        blocked: vec![],
        estimated: opts.upgrade_time.is_some() || opts.step_time.is_some(),
    };
    // One simulation per mesh (with its clusters), one for the standalone clusters.
    let refs = manifests.cluster_refs();
    let mut claimed: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut groups: Vec<(Option<usize>, Vec<String>)> = vec![];
    for (mi, (_, mesh)) in manifests.meshes.iter().enumerate() {
        let mut names = vec![];
        for (name, tier) in tier_membership(&mesh.spec, &refs) {
            if claimed.contains_key(&name) {
                continue;
            }
            claimed.insert(
                name.clone(),
                (mesh.name_any(), mesh.spec.tiers[tier].name.clone()),
            );
            names.push(name);
        }
        groups.push((Some(mi), names));
    }
    let standalone: Vec<String> = refs
        .iter()
        .map(|r| r.name.to_string())
        .filter(|n| !claimed.contains_key(n))
        .collect();
    if !standalone.is_empty() {
        groups.push((None, standalone));
    }
    for (mesh, names) in groups {
        simulate(opts, manifests, statuses, mesh, &names, &claimed, &mut out)?;
    }
    // The simulation's checks find nothing: say what real ones may hold.
    for (_, c) in &manifests.clusters {
        let name = c.name_any();
        if let Some(p) = &c.spec.upgrade.prepare
            && let Some(version) = out
                .steps
                .iter()
                .find(|s| s.cluster == name && s.action == "prepare")
                .and_then(|s| s.version.clone())
        {
            out.preparations.push(PlannedPreparation {
                cluster: name,
                version,
                acknowledge: p.warnings == crate::api::PrepareWarnings::Acknowledge,
            });
        }
    }
    out.steps.sort_by(|a, b| {
        a.start
            .total_cmp(&b.start)
            .then_with(|| a.cluster.cmp(&b.cluster))
    });
    for (i, s) in out.steps.iter_mut().enumerate() {
        s.seq = i + 1;
    }
    drain_waits(manifests, &mut out);
    out.waits.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok(out)
}

/// A tier with `drainBefore` starts only once no cluster of its mesh has a replication
/// backlog. The simulation cannot know how long the real backlog takes (it assumes none), so
/// the schedule names the wait where the tier's first step of its turn would start, with its
/// bound (media staged and preparation checks run ahead of the turn, not in it).
fn drain_waits(manifests: &Manifests, out: &mut Schedule) {
    for (_, mesh) in &manifests.meshes {
        let name = mesh.name_any();
        for tier in &mesh.spec.tiers {
            let Some(d) = &tier.drain_before else {
                continue;
            };
            let first = out
                .steps
                .iter()
                .filter(|s| {
                    s.mesh.as_deref() == Some(name.as_str())
                        && s.tier.as_deref() == Some(tier.name.as_str())
                        && !matches!(
                            s.action.as_str(),
                            "stage-media" | "remove-media" | "prepare"
                        )
                })
                .map(|s| s.start)
                .min_by(f64::total_cmp);
            if let Some(at) = first {
                out.waits.push(PlannedWait {
                    start: at,
                    end: at,
                    cluster: format!("mesh/{name}"),
                    reason: format!(
                        "tier {} starts once no cluster has a replication backlog (drainBefore: assumed drained; at most {}, then Stalled/DrainTimeout)",
                        tier.name, d.timeout
                    ),
                });
            }
        }
    }
}

fn simulate(
    opts: &PlanOptions,
    manifests: &Manifests,
    statuses: &BTreeMap<&str, &ClusterStatus>,
    mesh: Option<usize>,
    names: &[String],
    claimed: &BTreeMap<String, (String, String)>,
    out: &mut Schedule,
) -> anyhow::Result<()> {
    let start = Timestamp(crate::reconcile::now().0);
    let cfg = SimConfig {
        seed: 1,
        poll: Duration::from_secs(1),
        upgrade_time: opts.upgrade_time.unwrap_or(Duration::from_secs(600)),
        short_op_time: opts.step_time.unwrap_or(Duration::from_secs(5)),
        duration_jitter: 0.0,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, start);
    for name in names {
        let Some((_, c)) = manifests
            .clusters
            .iter()
            .find(|(_, c)| &c.name_any() == name)
        else {
            continue;
        };
        let status: Option<&ClusterStatus> = statuses.get(name.as_str()).copied();
        let initial = initial_version(opts, status, name)?;
        sim.add_cluster(name, c.labels().clone(), c.spec.clone(), &initial);
        if status.is_none()
            && let Some(sc) = sim.cluster_mut(name)
        {
            for sm in sc.members.values_mut() {
                for (comp, v) in &opts.from_components {
                    if let Some(cur) = sm.components.get_mut(comp) {
                        *cur = v.clone();
                    }
                }
            }
        }
        if let (Some(st), Some(sc)) = (status, sim.cluster_mut(name)) {
            sc.status = Some(resumable(st));
            for m in &st.members {
                let Some(sm) = sc.members.get_mut(&m.name) else {
                    continue;
                };
                if let Some(v) = &m.version {
                    sm.version = v.clone();
                }
                if !m.components.is_empty() {
                    sm.components = m.components.clone();
                }
                if matches!(
                    m.role,
                    MemberRole::Active
                        | MemberRole::Standby
                        | MemberRole::ForcedStandby
                        | MemberRole::Spare
                ) {
                    sm.role = m.role;
                }
            }
        }
    }
    if let Some(mi) = mesh {
        let (_, m) = &manifests.meshes[mi];
        sim.set_mesh(&m.name_any(), m.spec.clone());
    }
    // Entries the last statuses already hold are history, not plan (`next_log_id` is the
    // last id given out).
    let history: BTreeMap<String, u64> = sim
        .clusters
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.status.as_ref()?.next_log_id)))
        .collect();
    let mut logs: BTreeMap<(String, u64), LogEntry> = BTreeMap::new();
    let mut waiting: BTreeMap<String, (String, Timestamp)> = BTreeMap::new();
    let end = start.plus(opts.horizon);
    let secs = |t: Timestamp| t.since(start).as_secs_f64();
    loop {
        sim.pass();
        let mut approved = false;
        if let Some(m) = sim.mesh.as_mut() {
            let key = format!("mesh/{}", m.name);
            let reason = deferred_wait(m);
            if let Some(name) = m.status.as_ref().and_then(awaited_approval)
                && !m.intents.approve.contains(&name)
            {
                // Assumed given, and listed, as a step's approval is.
                out.approvals.push(name.clone());
                m.intents.approve.push(name);
                approved = true;
            }
            record_wait(&mut waiting, &key, reason, sim.now, &mut |w| {
                out.waits.push(PlannedWait {
                    start: secs(w.1),
                    end: secs(sim.now),
                    cluster: key.clone(),
                    reason: w.0,
                })
            });
        }
        for c in &mut sim.clusters {
            let Some(st) = &c.status else { continue };
            for e in &st.log {
                logs.insert((c.name.clone(), e.id), e.clone());
            }
            // Waits: a cluster not moving, with a reason.
            let reason = (st.steps.is_empty() && st.phase != crate::api::ClusterPhase::Ready)
                .then(|| st.message.clone())
                .flatten();
            record_wait(&mut waiting, &c.name, reason, sim.now, &mut |w| {
                out.waits.push(PlannedWait {
                    start: secs(w.1),
                    end: secs(sim.now),
                    cluster: c.name.clone(),
                    reason: w.0,
                })
            });
            // Approvals are assumed given, and listed.
            if condition_true(&st.conditions, cond::AWAITING_APPROVAL)
                && let Some(step) = st
                    .conditions
                    .iter()
                    .find(|k| k.type_ == cond::AWAITING_APPROVAL)
                    .and_then(|k| k.message.strip_prefix("approve step "))
                    .map(str::to_string)
                && !c.intents.approve.contains(&step)
            {
                out.approvals.push(step.clone());
                c.intents.approve.push(step);
            }
        }
        if (!approved && sim.settled()) || sim.now >= end {
            break;
        }
        let next = sim.next_event().min(end);
        let dt = next.since(sim.now);
        sim.tick(dt);
    }
    if let Some(v) = sim.violations.first() {
        bail!("the simulated schedule broke a safety rule (please report): {v}");
    }
    // A stalled mesh says why in its own status; its clusters only point to it.
    if let Some(m) = &sim.mesh
        && let Some(ms) = &m.status
        && ms.phase == crate::api::MeshPhase::Stalled
    {
        out.blocked.push((
            format!("mesh/{}", m.name),
            ms.message.clone().unwrap_or_else(|| "stalled".into()),
        ));
    }
    for c in &sim.clusters {
        match &c.status {
            Some(s) if s.phase == crate::api::ClusterPhase::Ready => {}
            Some(s) => out.blocked.push((
                c.name.clone(),
                s.message
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", s.phase)),
            )),
            None => out.blocked.push((c.name.clone(), "never planned".into())),
        }
    }
    for ((cluster, _), e) in logs {
        // A cluster's rollout entry (top level, cluster scope) spans the steps under it: it
        // is the heading of the steps, not one of them.
        let rollout = e.scope == LogScope::Cluster && e.parent.is_none();
        if e.scope == LogScope::Mesh
            || rollout
            || e.result == LogResult::Cancelled
            || history.get(&cluster).is_some_and(|&last| e.id <= last)
        {
            continue;
        }
        let (mesh, tier) = claimed
            .get(&cluster)
            .map(|(m, t)| (Some(m.clone()), Some(t.clone())))
            .unwrap_or((None, None));
        let end_t = e.end.unwrap_or(sim.now);
        out.makespan = out.makespan.max(secs(end_t));
        out.steps.push(PlannedStep {
            seq: 0,
            start: secs(e.start),
            end: secs(end_t),
            mesh,
            tier,
            cluster,
            target: e.target.clone(),
            action: e.action.clone(),
            version: e.version.clone(),
            detail: e.message.clone(),
        });
    }
    Ok(())
}

/// Track what `key` waits for: a wait that ends (or changes reason) is handed to `done`.
fn record_wait(
    waiting: &mut BTreeMap<String, (String, Timestamp)>,
    key: &str,
    reason: Option<String>,
    now: Timestamp,
    done: &mut dyn FnMut((String, Timestamp)),
) {
    if let (Some((r, _)), Some(new)) = (waiting.get(key), &reason)
        && r == new
    {
        return;
    }
    if let Some(prev) = waiting.remove(key) {
        done(prev);
    }
    if let Some(n) = reason {
        waiting.insert(key.to_string(), (n, now));
    }
}

/// What the mesh's active deferred tier waits for, as the schedule lists it.
fn deferred_wait(m: &crate::sim::SimMesh) -> Option<String> {
    let st = m.status.as_ref()?;
    st.tiers.iter().find_map(|t| {
        let d = t.deferred.as_ref()?;
        match d.waiting_for? {
            DeferredWait::Approval => Some(format!(
                "deferred tier {} waits for its approval (assumed given: approve {})",
                t.name,
                d.approval.as_deref().unwrap_or("?")
            )),
            DeferredWait::Window => Some(match d.next_window_at {
                Some(at) => format!(
                    "deferred tier {} waits for its maintenance window (opens at {at})",
                    t.name
                ),
                None => format!(
                    "deferred tier {} waits for a window that never opens",
                    t.name
                ),
            }),
            DeferredWait::EarlierTiers => None,
        }
    })
}

/// The approval of a deferred tier the mesh waits for now, if any.
fn awaited_approval(st: &MeshStatus) -> Option<String> {
    st.tiers.iter().find_map(|t| {
        let d = t.deferred.as_ref()?;
        (d.waiting_for == Some(DeferredWait::Approval))
            .then(|| d.approval.clone())
            .flatten()
    })
}

/// The last status as the simulation's starting point: what is done stays done (verified
/// versions, the log, failures), and nothing is in flight — the simulated members run what the
/// status last saw, so a step in flight is planned again from its start (a conservative
/// estimate).
fn resumable(st: &ClusterStatus) -> ClusterStatus {
    let mut s = st.clone();
    s.steps.clear();
    s.switchover = None;
    // The simulation's objects are at generation 1.
    s.observed_generation = Some(1);
    for m in &mut s.members {
        m.operation = None;
    }
    s
}

fn initial_version(
    opts: &PlanOptions,
    status: Option<&ClusterStatus>,
    cluster: &str,
) -> anyhow::Result<String> {
    if let Some(v) = status
        .and_then(|s| s.members.iter().find(|m| m.role == MemberRole::Active))
        .and_then(|m| m.version.clone())
    {
        return Ok(v);
    }
    match &opts.from {
        Some(v) => Ok(v.clone()),
        None => bail!(
            "cluster {cluster}: its running version is unknown (no status with an active member \
             yet); pass --state FILE (from `baton run`, local mode) or --from VERSION to assume \
             every member runs VERSION"
        ),
    }
}

fn clock(secs: f64) -> String {
    let s = secs.round() as i64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The schedule as text.
pub fn render(s: &Schedule) -> String {
    render_for(s, "baton")
}

/// The schedule as text, naming `command` (e.g. `kubectl baton`) in the hints it prints.
pub fn render_for(s: &Schedule, command: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut last_group = None;
    for st in &s.steps {
        let group = (st.mesh.clone(), st.tier.clone());
        if last_group.as_ref() != Some(&group) {
            match &group {
                (Some(m), Some(t)) => {
                    let _ = writeln!(out, "mesh {m}, tier {t}:");
                }
                _ => {
                    let _ = writeln!(out, "standalone clusters:");
                }
            }
            last_group = Some(group);
        }
        let when = if s.estimated {
            format!("{} → {}  ", clock(st.start), clock(st.end))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:>3}. {when}{:<11} {}/{}{}{}",
            st.seq,
            st.action,
            st.cluster,
            st.target,
            st.version
                .as_deref()
                .map(|v| format!(" → {v}"))
                .unwrap_or_default(),
            if st.detail.is_empty() {
                String::new()
            } else {
                format!("  ({})", st.detail)
            }
        );
    }
    if !s.waits.is_empty() {
        let _ = writeln!(out, "\nwaits:");
        for w in &s.waits {
            let when = if s.estimated {
                format!("{} → {}  ", clock(w.start), clock(w.end))
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {when}{}: {}", w.cluster, w.reason);
        }
    }
    if !s.approvals.is_empty() {
        let _ = writeln!(out, "\napprovals needed (assumed given above):");
        for a in &s.approvals {
            let _ = writeln!(out, "  {command} approve {a}");
        }
    }
    if !s.preparations.is_empty() {
        let _ = writeln!(
            out,
            "\npreparation checks (assumed to find nothing above; what they find is known once they run):"
        );
        for p in &s.preparations {
            let (c, v) = (&p.cluster, &p.version);
            let warnings = if p.acknowledge {
                format!(
                    "warnings wait for `{command} approve prepare/{c}@{v}#DIGEST` (the digest its status gives)"
                )
            } else {
                "warnings are recorded".to_string()
            };
            let _ = writeln!(
                out,
                "  {c}: a blocking finding stalls it until `{command} retry cluster/{c}`; {warnings}"
            );
        }
    }
    if !s.blocked.is_empty() {
        let _ = writeln!(out, "\nwould not converge:");
        for (c, why) in &s.blocked {
            let _ = writeln!(out, "  {c}: {why}");
        }
    }
    let _ = writeln!(
        out,
        "\n{} steps{}",
        s.steps.len(),
        if s.estimated {
            format!(", estimated makespan {}", clock(s.makespan))
        } else {
            " (pass --upgrade-time/--step-time for estimated durations)".into()
        }
    );
    out
}
