//! The local commands of the `baton` binary, as library functions the binary and the tests
//! call: `run`, `status`, `plan` and the intent commands (`approve`, `pause`, `resume`,
//! `retry`, `force`).

pub mod plan;
pub mod tree;
pub mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context, bail};
use baton_agent::client::ClientTls;
use serde::Serialize;

use crate::api::{ClusterStatus, LogEntry, MeshStatus};
use crate::local::state::ObjectState;
use crate::local::{Intents, Runner, Settled, State, load};
use crate::reconcile::{AgentMembers, Timing};

/// How to reach agents.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// A directory with `ca.crt`, `client.crt`, `client.key` (as `baton-agent gen-certs`
    /// writes them).
    pub tls_dir: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Plain HTTP, for agents started with `--insecure-http`.
    pub insecure: bool,
}

impl TlsOptions {
    pub fn client_tls(&self) -> anyhow::Result<ClientTls> {
        if self.insecure {
            return Ok(ClientTls::Insecure);
        }
        let pick = |explicit: &Option<PathBuf>, name: &str| -> anyhow::Result<PathBuf> {
            match (explicit, &self.tls_dir) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(d)) => Ok(d.join(name)),
                (None, None) => bail!(
                    "no agent credentials: pass --tls-dir DIR (with ca.crt, client.crt, client.key), \
                     or --ca/--cert/--key, or --insecure-http for plain-HTTP agents"
                ),
            }
        };
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(ClientTls::mtls(
            read(pick(&self.ca, "ca.crt")?)?,
            read(pick(&self.cert, "client.crt")?)?,
            read(pick(&self.key, "client.key")?)?,
        ))
    }
}

/// When `baton run` stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Keep reconciling (a controller).
    Forever,
    /// One pass.
    Once,
    /// Until everything is Ready (exit 0) or blocked on a human (exit 1).
    Settled,
}

/// How `baton run` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Converged,
    OnePass,
    Blocked(Vec<(String, String)>),
    TimedOut,
    Interrupted,
}

pub struct RunOptions {
    pub files: Vec<PathBuf>,
    pub state: PathBuf,
    pub tls: TlsOptions,
    pub until: Until,
    pub timeout: Option<StdDuration>,
    pub timing: Timing,
}

/// `baton run`: reconcile the manifests against the agents, printing events as they happen.
pub async fn run(opts: RunOptions, out: &mut dyn std::io::Write) -> anyhow::Result<RunEnd> {
    let manifests = load(&opts.files)?;
    let members = AgentMembers::new(&opts.tls.client_tls()?)?;
    let mut runner = Runner::new(members, &manifests, &opts.state)?.with_timing(opts.timing);
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        // A pass runs to its end: the state it persists always matches what it sent.
        let report = runner.pass().await?;
        for (obj, e) in &report.events {
            let kind = if e.warning { "Warning" } else { "Normal" };
            writeln!(
                out,
                "{} {obj} {kind} {}: {}",
                crate::reconcile::now(),
                e.reason,
                e.message
            )?;
        }
        match opts.until {
            Until::Once => return Ok(RunEnd::OnePass),
            Until::Settled => match runner.settled() {
                Settled::Converged => return Ok(RunEnd::Converged),
                Settled::Blocked(b) => return Ok(RunEnd::Blocked(b)),
                Settled::No => {}
            },
            Until::Forever => {}
        }
        let mut wake = runner.next_wake();
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return Ok(RunEnd::TimedOut);
            }
            wake = wake.min(d);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = &mut ctrl_c => return Ok(RunEnd::Interrupted),
        }
    }
}

/// Everything in a state file, for `-o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDump<'a> {
    pub meshes: Vec<NamedStatus<'a, MeshStatus>>,
    pub clusters: Vec<NamedStatus<'a, ClusterStatus>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedStatus<'a, T> {
    pub name: &'a str,
    pub generation: i64,
    pub status: Option<&'a T>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// The state file `baton run` wrote; its absence is an error (not an empty state) for the
/// commands that only read it.
fn existing_state(state_path: &Path) -> anyhow::Result<State> {
    if !state_path.exists() {
        bail!(
            "{}: no such state file (it is created by `baton run --state {}`)",
            state_path.display(),
            state_path.display()
        );
    }
    Ok(State::load(state_path)?)
}

/// `baton status`: the state file as tables (clusters, members, log), JSON or YAML.
pub fn status(state_path: &Path, output: Output, with_log: bool) -> anyhow::Result<String> {
    let st = existing_state(state_path)?;
    let intents = Intents::load(&Intents::path_for(state_path))?;
    match output {
        Output::Json | Output::Yaml => {
            fn named<T>(
                m: &std::collections::BTreeMap<String, crate::local::state::ObjectState<T>>,
            ) -> Vec<NamedStatus<'_, T>> {
                m.iter()
                    .map(|(n, o)| NamedStatus {
                        name: n,
                        generation: o.generation,
                        status: o.status.as_ref(),
                    })
                    .collect()
            }
            let dump = StatusDump {
                meshes: named(&st.meshes),
                clusters: named(&st.clusters),
            };
            Ok(if output == Output::Json {
                serde_json::to_string_pretty(&dump)? + "\n"
            } else {
                serde_yaml::to_string(&dump)?
            })
        }
        Output::Table => {
            use view::*;
            let mut out = String::new();
            if !st.meshes.is_empty() {
                let rows: Vec<MeshRow<'_>> = st
                    .meshes
                    .iter()
                    .map(|(n, o)| MeshRow {
                        name: n,
                        version: o
                            .status
                            .as_ref()
                            .and_then(|s| s.rollout.as_ref())
                            .map_or("-", |r| r.version.as_str()),
                        generation: Some(o.generation),
                        status: o.status.as_ref(),
                    })
                    .collect();
                out.push_str(&meshes_table(&rows));
                for (n, o) in &st.meshes {
                    if let Some(c) = o.status.as_ref().and_then(|s| s.certificates.as_ref()) {
                        out.push_str(&format!(
                            "Mesh {n} certificates: {}\n",
                            mesh_certificates_summary(c)
                        ));
                    }
                    for t in o.status.iter().flat_map(|s| &s.tiers) {
                        if let Some(d) = &t.deferred {
                            out.push_str(&format!(
                                "Mesh {n} deferred tier {} ({}/{} done): {}\n",
                                t.name,
                                t.done,
                                t.total,
                                deferred_summary(d)
                            ));
                        }
                    }
                    for t in o.status.iter().flat_map(|s| &s.tasks) {
                        out.push_str(&format!(
                            "Mesh {n} task {} on {}: {}\n",
                            t.name,
                            t.cluster,
                            task_summary(t)
                        ));
                    }
                }
                out.push('\n');
            }
            let rows: Vec<ClusterRow<'_>> = st
                .clusters
                .iter()
                .map(|(n, o)| ClusterRow {
                    name: n,
                    generation: Some(o.generation),
                    status: o.status.as_ref(),
                })
                .collect();
            out.push_str(&clusters_table(&rows));
            for (n, o) in &st.clusters {
                let Some(s) = &o.status else { continue };
                out.push_str(&format!("\nCluster {n}\n"));
                out.push_str(&members_table(s));
                out.push_str(&view::topology_lines(s));
                if let Some(c) = &s.certificates {
                    out.push_str(&format!(
                        "  certificates: {}\n",
                        view::certificates_summary(c)
                    ));
                }
                if let Some(h) = &s.health {
                    out.push_str(&format!("  health: {}\n", view::health_summary(h)));
                }
                if let Some(p) = &s.preparation {
                    out.push_str(&format!(
                        "  preparation: {}\n",
                        view::preparation_summary(n, p)
                    ));
                }
                let pending: Vec<String> = intents
                    .clusters
                    .get(n)
                    .map(|i| {
                        i.approve
                            .iter()
                            .filter(|a| !s.acknowledged.contains(a))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if !pending.is_empty() {
                    out.push_str(&format!(
                        "  approvals not yet acted on: {}\n",
                        pending.join(", ")
                    ));
                }
                if with_log && !s.log.is_empty() {
                    out.push_str("  log:\n");
                    out.push_str(&log_lines(&s.log));
                }
            }
            if with_log {
                for (n, o) in &st.meshes {
                    if let Some(s) = o.status.as_ref().filter(|s| !s.log.is_empty()) {
                        out.push_str(&format!("\nMesh {n} log:\n"));
                        out.push_str(&log_lines(&s.log));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// `baton log`: the upgrade log of the named objects (all when none) from the state file.
pub fn log(state_path: &Path, names: &[String], output: Output) -> anyhow::Result<String> {
    let st = existing_state(state_path)?;
    let targets: Vec<Target> = if names.is_empty() {
        st.meshes
            .keys()
            .map(|m| Target::Mesh(m.clone()))
            .chain(st.clusters.keys().map(|c| Target::Cluster(c.clone())))
            .collect()
    } else {
        names
            .iter()
            .map(|n| resolve(&st, n))
            .collect::<anyhow::Result<_>>()?
    };
    let entries = |t: &Target| -> (&'static str, String, &[LogEntry]) {
        match t {
            Target::Cluster(c) => (
                "Cluster",
                c.clone(),
                stored_log(&st.clusters, c, |s| &s.log),
            ),
            Target::Mesh(m) => ("Mesh", m.clone(), stored_log(&st.meshes, m, |s| &s.log)),
        }
    };
    if output != Output::Table {
        #[derive(Serialize)]
        struct Logged<'a> {
            kind: &'static str,
            name: String,
            log: &'a [LogEntry],
        }
        let all: Vec<Logged<'_>> = targets
            .iter()
            .map(|t| {
                let (kind, name, log) = entries(t);
                Logged { kind, name, log }
            })
            .collect();
        return Ok(if output == Output::Json {
            serde_json::to_string_pretty(&all)? + "\n"
        } else {
            serde_yaml::to_string(&all)?
        });
    }
    let mut out = String::new();
    for t in &targets {
        let (kind, name, log) = entries(t);
        if log.is_empty() {
            out.push_str(&format!(
                "{}/{name}: no log entries yet\n",
                kind.to_lowercase()
            ));
        } else {
            out.push_str(&format!("{}/{name}:\n", kind.to_lowercase()));
            out.push_str(&view::log_lines(log));
        }
    }
    Ok(out)
}

/// The upgrade log (`log` of the status) of the object `name` of `objects`; empty before its
/// first status.
fn stored_log<'a, S>(
    objects: &'a BTreeMap<String, ObjectState<S>>,
    name: &str,
    log: impl FnOnce(&'a S) -> &'a Vec<LogEntry>,
) -> &'a [LogEntry] {
    objects
        .get(name)
        .and_then(|o| o.status.as_ref())
        .map_or(&[], |s| log(s).as_slice())
}

/// An imperative intent for the local runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    Approve(String),
    Pause(Vec<String>),
    Resume(Vec<String>),
    Retry(Vec<String>),
    Force(Vec<String>),
}

enum Target {
    Cluster(String),
    Mesh(String),
}

fn resolve(st: &State, name: &str) -> anyhow::Result<Target> {
    let (kind, n) = match name.split_once('/') {
        Some((k, n)) => (Some(k.to_ascii_lowercase()), n),
        None => (None, name),
    };
    let is_c = st.clusters.contains_key(n);
    let is_m = st.meshes.contains_key(n);
    match (kind.as_deref(), is_c, is_m) {
        (Some("cluster" | "clusters"), true, _) | (None, true, false) => {
            Ok(Target::Cluster(n.to_string()))
        }
        (Some("mesh" | "meshes"), _, true) | (None, false, true) => Ok(Target::Mesh(n.to_string())),
        (None, true, true) => {
            bail!("{n:?} names both a Cluster and a Mesh: say cluster/{n} or mesh/{n}")
        }
        (Some(k), _, _) if !matches!(k, "cluster" | "clusters" | "mesh" | "meshes") => {
            bail!("{name:?}: kind must be cluster or mesh")
        }
        _ => bail!(
            "{name:?} is not in the state file (known: {})",
            st.clusters
                .keys()
                .map(|c| format!("cluster/{c}"))
                .chain(st.meshes.keys().map(|m| format!("mesh/{m}")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The cluster an approvable step (`switchover/CLUSTER/MEMBER@VERSION`) belongs to.
pub fn approval_cluster(step: &str) -> anyhow::Result<&str> {
    if let Some((cluster, ..)) = rotation_name(step) {
        return Ok(cluster);
    }
    if step.starts_with("prepare/") {
        return check_preparation_acknowledgement(step);
    }
    step.strip_prefix("switchover/")
        .and_then(|r| r.split('/').next())
        .filter(|c| !c.is_empty() && step.contains('@'))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{step:?} is not a step name; approvable steps look like \
                 switchover/CLUSTER/MEMBER@VERSION, rotation/CLUSTER/PHASE@CA, \
                 prepare/CLUSTER@VERSION#DIGEST or tier/MESH/TIER@VERSION (see `baton status`)"
            )
        })
}

/// The cluster a well-formed acknowledgement of preparation warnings names
/// (`prepare/CLUSTER@VERSION#DIGEST`, the digest as the cluster's status gives it).
pub fn check_preparation_acknowledgement(step: &str) -> anyhow::Result<&str> {
    let Some((cluster, version, _)) = crate::plan::cluster::parse_preparation_acknowledgement(step)
    else {
        bail!(
            "{step:?} is not an acknowledgement of preparation warnings; they look like \
             prepare/CLUSTER@VERSION#DIGEST with the 12-digit digest the cluster's status shows"
        );
    };
    if let Err(e) = version.parse::<crate::api::Version>() {
        bail!("{step:?}: {version:?} is not a version: {e}");
    }
    Ok(cluster)
}

/// A deferred tier's approval, `tier/MESH/TIER@VERSION`: the mesh, the tier and the version.
pub fn tier_approval(step: &str) -> Option<(&str, &str, &str)> {
    let rest = step.strip_prefix("tier/")?;
    let (mesh, rest) = rest.split_once('/')?;
    let (tier, version) = rest.rsplit_once('@')?;
    (!mesh.is_empty() && !tier.is_empty() && !tier.contains('/')).then_some((mesh, tier, version))
}

/// The mesh and the tier a well-formed tier approval names.
pub fn tier_approval_of(step: &str) -> anyhow::Result<(&str, &str)> {
    let Some((mesh, tier, version)) = tier_approval(step) else {
        bail!(
            "{step:?} is not a tier approval; a deferred tier's approval looks like \
             tier/MESH/TIER@VERSION (see `baton status`)"
        );
    };
    if let Err(e) = version.parse::<crate::api::Version>() {
        bail!("{step:?}: {version:?} is not a version: {e}");
    }
    Ok((mesh, tier))
}

/// Refuse a tier approval the planner could never act on: the tier must be one of the mesh's
/// (`tiers`: name and whether it waits for an approval, as the host knows them) and the version
/// a version. Returns the mesh.
pub fn check_tier_approval<'a>(
    step: &'a str,
    tiers: impl IntoIterator<Item = (&'a str, bool)>,
) -> anyhow::Result<&'a str> {
    let (mesh, tier) = tier_approval_of(step)?;
    let tiers: Vec<(&str, bool)> = tiers.into_iter().collect();
    match tiers.iter().find(|(t, _)| *t == tier) {
        None => bail!(
            "{step:?}: mesh {mesh} has no tier {tier:?} (tiers: {})",
            listed(
                &tiers.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
                "none known yet"
            )
        ),
        Some((_, false)) => bail!(
            "{step:?}: tier {tier:?} of mesh {mesh} is not a deferred tier waiting for an approval \
             (deferred: {{approval: true}})"
        ),
        Some(_) => Ok(mesh),
    }
}

/// Add `step` to the approvals `list` picks in the intents file at `path` (once), and say
/// so; `who` (`cluster web`, `mesh cores`) waits for it now or not.
fn approve_in(
    path: &Path,
    step: &str,
    waiting: bool,
    who: &str,
    list: impl FnOnce(&mut Intents) -> &mut Vec<String>,
) -> anyhow::Result<String> {
    Intents::update(path, |i| {
        let l = list(i);
        if !l.iter().any(|s| s == step) {
            l.push(step.to_string());
        }
    })?;
    Ok(if waiting {
        format!("approved {step}")
    } else {
        format!(
            "approved {step} ({who} is not waiting for it now; the approval applies when it does)"
        )
    })
}

/// A rotation phase's name, `rotation/CLUSTER/PHASE@CA` (what `approvePhases` waits for and a
/// force intent names): the cluster, the phase and the CA's short id.
pub fn rotation_name(name: &str) -> Option<(&str, crate::api::RotationPhase, &str)> {
    let rest = name.strip_prefix("rotation/")?;
    let (cluster, rest) = rest.split_once('/')?;
    let (phase, ca) = rest.split_once('@')?;
    let phase = crate::api::RotationPhase::parse(phase)?;
    let hex = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (!cluster.is_empty() && ca.split('/').all(hex) && ca.split('/').count() <= 2)
        .then_some((cluster, phase, ca))
}

/// A force intent names a cluster's rotation phase (`rotation/CLUSTER/PHASE@CA`) or the
/// removal of one of its unreachable members (`remove/CLUSTER/MEMBER`): the cluster it goes to.
pub fn check_force_name(name: &str) -> anyhow::Result<&str> {
    if let Some(rest) = name.strip_prefix("remove/") {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        return match rest.split_once('/') {
            Some((cluster, member)) if !cluster.is_empty() && label(member) => Ok(cluster),
            _ => bail!(
                "{name:?} is not a removal name; it looks like remove/CLUSTER/MEMBER (the member                  being removed, see `baton status`)"
            ),
        };
    }
    check_rotation_name(name).map(|(c, _)| c)
}

/// A force intent of a cluster (a rotation phase or a removal), not a mesh name.
pub fn is_cluster_force(name: &str) -> bool {
    name.starts_with("rotation/") || name.starts_with("remove/")
}

/// Refuse a rotation phase name the planner could never act on (see [`rotation_name`]).
pub fn check_rotation_name(name: &str) -> anyhow::Result<(&str, crate::api::RotationPhase)> {
    rotation_name(name).map(|(c, p, _)| (c, p)).ok_or_else(|| {
        anyhow::anyhow!(
            "{name:?} is not a rotation phase name; they look like \
                 rotation/CLUSTER/PHASE@CA with PHASE one of AddTrust, Reissue, RemoveOldTrust, \
                 ResignData and CA the short id `baton status` shows"
        )
    })
}

/// Refuse an approval the planner could never act on: the member the step names must be one
/// of the cluster's members (`members`, as the host knows them) and the version a version.
/// Without this a typo is written as an annotation or intent and waits forever.
pub fn check_approval<'a>(
    step: &str,
    cluster: &str,
    members: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<()> {
    if step.starts_with("rotation/") {
        // A phase of the rotation, not a member's step: the name says all there is to check.
        return check_rotation_name(step).map(|_| ());
    }
    if step.starts_with("prepare/") {
        // The cluster's preparation warnings: the digest says which (a stale one waits
        // harmlessly, as new warnings need their own acknowledgement).
        return check_preparation_acknowledgement(step).map(|_| ());
    }
    let rest = step
        .strip_prefix("switchover/")
        .and_then(|r| r.strip_prefix(cluster))
        .and_then(|r| r.strip_prefix('/'));
    let Some((member, version)) = rest.and_then(|r| r.rsplit_once('@')) else {
        bail!(
            "{step:?} is not a step name; approvable steps look like \
             switchover/CLUSTER/MEMBER@VERSION (see `baton status`)"
        );
    };
    if let Err(e) = version.parse::<crate::api::Version>() {
        bail!("{step:?}: {version:?} is not a version: {e}");
    }
    let members: Vec<&str> = members.into_iter().collect();
    if !members.contains(&member) {
        bail!(
            "{step:?}: cluster {cluster} has no member {member:?} (members: {})",
            listed(&members, "none known yet")
        );
    }
    Ok(())
}

/// Record an intent for the runner (which acts on it at its next pass). Returns a message.
pub fn intent(state_path: &Path, intent: Intent) -> anyhow::Result<String> {
    let st = State::load(state_path)?;
    if st.clusters.is_empty() && st.meshes.is_empty() {
        bail!(
            "{}: no objects recorded yet (run `baton run --state {}` first)",
            state_path.display(),
            state_path.display()
        );
    }
    let path = Intents::path_for(state_path);
    let token = format!("{}", crate::reconcile::now().0);
    let all_names = |names: &[String]| -> Vec<String> {
        if names.is_empty() {
            st.clusters
                .keys()
                .map(|c| format!("cluster/{c}"))
                .chain(st.meshes.keys().map(|m| format!("mesh/{m}")))
                .collect()
        } else {
            names.to_vec()
        }
    };
    match intent {
        Intent::Approve(step) if step.starts_with("tier/") => {
            let mesh = tier_approval_of(&step)?.0.to_string();
            let m = match resolve(&st, &format!("mesh/{mesh}")) {
                Ok(Target::Mesh(m)) => m,
                _ => bail!("{step:?}: no mesh {mesh:?} in the state file"),
            };
            // The state file keeps statuses, not specs: the tier names are checked (an
            // approval given ahead of a rollout is fine, before the tier says it waits).
            let status = st.meshes[&m].status.as_ref();
            let tiers = status
                .into_iter()
                .flat_map(|s| s.tiers.iter().map(|t| (t.name.as_str(), true)));
            check_tier_approval(&step, tiers)?;
            let waiting = status
                .and_then(|s| s.message.as_deref())
                .is_some_and(|msg| msg.contains(&step));
            approve_in(&path, &step, waiting, &format!("mesh {m}"), |i| {
                &mut i.meshes.entry(m.clone()).or_default().approve
            })
        }
        Intent::Approve(step) => {
            let cluster = approval_cluster(&step)?.to_string();
            let c = match resolve(&st, &format!("cluster/{cluster}"))? {
                Target::Cluster(c) => c,
                Target::Mesh(m) => bail!("{m:?} is a mesh; approvals name a cluster's step"),
            };
            let status = st.clusters[&c].status.as_ref();
            check_approval(
                &step,
                &c,
                status
                    .into_iter()
                    .flat_map(|s| s.members.iter().map(|m| m.name.as_str())),
            )?;
            let waiting = status
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains(&step));
            approve_in(&path, &step, waiting, &format!("cluster {c}"), |i| {
                &mut i.clusters.entry(c.clone()).or_default().approve
            })
        }
        Intent::Pause(names) => set_pause(&st, &path, &all_names(&names), true),
        Intent::Resume(names) => set_pause(&st, &path, &all_names(&names), false),
        Intent::Retry(names) => {
            let names = if names.is_empty() {
                st.clusters.keys().map(|c| format!("cluster/{c}")).collect()
            } else {
                names
            };
            let done = resolve_each(&st, &names, |t| match t {
                Target::Cluster(c) => Ok(c),
                Target::Mesh(m) => bail!(
                    "retry applies to clusters; mesh/{m}: use `baton force` to start despite failed preconditions"
                ),
            })?;
            Intents::update(&path, |i| {
                for c in &done {
                    i.clusters.entry(c.clone()).or_default().retry = Some(token.clone());
                }
            })?;
            Ok(format!("retry requested for {}", done.join(", ")))
        }
        Intent::Force(names) => {
            let (mut meshes, mut phases) = (Vec::new(), Vec::new());
            for n in &names {
                if is_cluster_force(n) {
                    let cluster = check_force_name(n)?;
                    let Target::Cluster(c) = resolve(&st, &format!("cluster/{cluster}"))? else {
                        bail!("{n}: {cluster:?} is not a cluster");
                    };
                    phases.push((c, n.clone()));
                    continue;
                }
                match resolve(&st, n)? {
                    Target::Mesh(m) => meshes.push(m),
                    Target::Cluster(c) => bail!(
                        "force applies to meshes (their preconditions), to rotation phases \
                         (rotation/CLUSTER/PHASE@CA) and to removals of unreachable members \
                         (remove/CLUSTER/MEMBER); cluster/{c}: use `baton retry`"
                    ),
                }
            }
            if meshes.is_empty() && phases.is_empty() {
                bail!("name the mesh or the rotation phase to force");
            }
            Intents::update(&path, |i| {
                for m in &meshes {
                    i.meshes.entry(m.clone()).or_default().force = Some(token.clone());
                }
                for (c, name) in &phases {
                    let e = i.clusters.entry(c.clone()).or_default();
                    if !e.force.contains(name) {
                        e.force.push(name.clone());
                    }
                }
            })?;
            let mut said = Vec::new();
            if !meshes.is_empty() {
                said.push(format!(
                    "forcing {} despite failed preconditions",
                    meshes.join(", ")
                ));
            }
            for (_, name) in &phases {
                said.push(format!(
                    "forcing {name} before the phase before it is complete (see the RotationForced condition for what breaks)"
                ));
            }
            Ok(said.join("; "))
        }
    }
}

/// Each name resolved and passed to `pick`, in order; the first error stops.
fn resolve_each<T>(
    st: &State,
    names: &[String],
    pick: impl Fn(Target) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    names.iter().map(|n| pick(resolve(st, n)?)).collect()
}

fn set_pause(st: &State, path: &Path, names: &[String], pause: bool) -> anyhow::Result<String> {
    let targets: Vec<Target> = names
        .iter()
        .map(|n| resolve(st, n))
        .collect::<anyhow::Result<_>>()?;
    Intents::update(path, |i| {
        for t in &targets {
            match t {
                Target::Cluster(c) => i.clusters.entry(c.clone()).or_default().pause = pause,
                Target::Mesh(m) => i.meshes.entry(m.clone()).or_default().pause = pause,
            }
        }
    })?;
    let what: Vec<String> = targets
        .iter()
        .map(|t| match t {
            Target::Cluster(c) => format!("cluster/{c}"),
            Target::Mesh(m) => format!("mesh/{m}"),
        })
        .collect();
    Ok(format!(
        "{} {}",
        if pause { "paused" } else { "resumed" },
        what.join(", ")
    ))
}

/// `items` joined with commas, or `none` when there are none (for error messages).
pub fn listed(items: &[impl AsRef<str>], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberRole, MemberStatus};
    use crate::local::state::ObjectState;

    fn member(name: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            role: MemberRole::Standby,
            version: None,
            ..Default::default()
        }
    }

    /// A state file in `dir` that records cluster `web` with `status`.
    fn with_web(dir: &tempfile::TempDir, status: ClusterStatus) -> std::path::PathBuf {
        let state_path = dir.path().join("state.json");
        let mut st = State::default();
        st.clusters.insert(
            "web".into(),
            ObjectState {
                generation: 1,
                spec_hash: String::new(),
                status: Some(status),
            },
        );
        st.save(&state_path).expect("save");
        state_path
    }

    #[test]
    fn an_approval_naming_no_member_or_no_version_is_refused_and_records_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_path = with_web(
            &dir,
            ClusterStatus {
                members: vec![member("a"), member("b")],
                ..Default::default()
            },
        );
        for (step, expected) in [
            (
                "switchover/web/c@2.0.0",
                "cluster web has no member \"c\" (members: a, b)",
            ),
            ("switchover/web/b@2.x", "\"2.x\" is not a version"),
            ("switchover/web/b", "is not a step name"),
        ] {
            let err = intent(&state_path, Intent::Approve(step.into()))
                .expect_err("refused")
                .to_string();
            assert!(err.contains(expected), "{step}: {err}");
        }
        assert!(!Intents::path_for(&state_path).exists(), "nothing recorded");
        let ok = intent(
            &state_path,
            Intent::Approve("switchover/web/b@2.0.0".into()),
        )
        .expect("a real member");
        assert!(ok.starts_with("approved switchover/web/b@2.0.0"), "{ok}");
        assert!(Intents::path_for(&state_path).exists());
    }

    #[test]
    fn preparation_warnings_are_acknowledged_by_their_digest_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ack = "prepare/web@2.0.0#861a2efb6163";
        let state_path = with_web(
            &dir,
            ClusterStatus {
                members: vec![member("a")],
                message: Some(format!("awaiting approval of {ack}")),
                ..Default::default()
            },
        );
        for (step, expected) in [
            ("prepare/web@2.0.0", "12-digit digest"),
            ("prepare/web@2.0.0#beef", "12-digit digest"),
            ("prepare/web@2.x#861a2efb6163", "\"2.x\" is not a version"),
            ("prepare/db@2.0.0#861a2efb6163", "cluster/db"),
        ] {
            let err = intent(&state_path, Intent::Approve(step.into()))
                .expect_err("refused")
                .to_string();
            assert!(err.contains(expected), "{step}: {err}");
        }
        assert!(!Intents::path_for(&state_path).exists(), "nothing recorded");
        let ok = intent(&state_path, Intent::Approve(ack.into())).expect("acknowledged");
        assert_eq!(ok, format!("approved {ack}"), "the cluster waits for it");
        let intents = Intents::load(&Intents::path_for(&state_path)).expect("intents");
        assert_eq!(intents.clusters["web"].approve, [ack.to_string()]);
    }

    #[test]
    fn rotation_phases_are_approved_and_forced_by_name_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_path = with_web(&dir, ClusterStatus::default());
        for bad in [
            "rotation/web/Removal@4e44e44e44e4",
            "rotation/web/Reissue@not-hex",
            "rotation/web/Reissue",
            "rotation//Reissue@4e44e44e44e4",
        ] {
            let err = intent(&state_path, Intent::Force(vec![bad.into()]))
                .expect_err("refused")
                .to_string();
            assert!(err.contains("is not a rotation phase name"), "{bad}: {err}");
            let err = intent(&state_path, Intent::Approve(bad.into()))
                .expect_err("refused")
                .to_string();
            assert!(err.contains("not a"), "{bad}: {err}");
        }
        let err = intent(
            &state_path,
            Intent::Force(vec!["rotation/db/Reissue@4e44e44e44e4".into()]),
        )
        .expect_err("no such cluster")
        .to_string();
        assert!(err.contains("db"), "{err}");
        assert!(!Intents::path_for(&state_path).exists(), "nothing recorded");

        let name = "rotation/web/RemoveOldTrust@4e44e44e44e4";
        let said = intent(&state_path, Intent::Force(vec![name.into()])).expect("forced");
        assert!(said.contains("RotationForced"), "{said}");
        // Twice is once.
        intent(&state_path, Intent::Force(vec![name.into()])).expect("again");
        let approve = "rotation/web/Reissue@4e44e44e44e4";
        intent(&state_path, Intent::Approve(approve.into())).expect("approved");
        let i = Intents::load(&Intents::path_for(&state_path)).expect("intents");
        let web = i.clusters.get("web").cloned().unwrap_or_default();
        assert_eq!(web.force, [name.to_string()]);
        assert_eq!(web.approve, [approve.to_string()]);
    }
}
