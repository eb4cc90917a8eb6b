//! Human views of statuses: the `kubectl get` columns, per-member detail and the upgrade log.
//! Shared by `baton status` (local state) and the kubectl plugin (live objects).

use std::fmt::Write;

use crate::api::{
    CertificatesStatus, ClusterStatus, DeferredWait, FindingSeverity, HealthStatus, LogEntry,
    MeshCertificatesStatus, MeshStatus, PreparationStatus, TierDeferredStatus, Timestamp,
    condition as cond,
};
use crate::plan::conditions::condition_true;
use crate::plan::trust::short_id;

/// One Cluster for display.
pub struct ClusterRow<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub status: Option<&'a ClusterStatus>,
}

/// One Mesh for display.
pub struct MeshRow<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub generation: Option<i64>,
    pub status: Option<&'a MeshStatus>,
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The first row of a table: its column names.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// Where a mesh task stands: `not due`, or its state, member and failed attempts.
pub fn task_summary(t: &crate::api::MeshTaskStatus) -> String {
    if t.started_at.is_none() {
        return "not due".to_string();
    }
    let mut s = format!("{:?}", t.state);
    if let Some(m) = &t.member {
        s.push_str(&format!(" on {m}"));
    }
    if t.failures > 0 {
        s.push_str(&format!(
            "  {} failed attempt(s): {}",
            t.failures,
            t.last_error.as_deref().unwrap_or_default()
        ));
    }
    s
}

/// The `kubectl get meshes` view.
pub fn meshes_table(meshes: &[MeshRow<'_>]) -> String {
    let mut rows = vec![header(&[
        "MESH", "VERSION", "PROGRESS", "LAGGING", "PHASE", "MESSAGE",
    ])];
    for m in meshes {
        let st = m.status;
        rows.push(vec![
            m.name.to_string(),
            m.version.to_string(),
            or_dash(st.and_then(|s| s.progress.as_deref())),
            or_dash(st.and_then(|s| s.lagging.as_deref())),
            st.map_or("-".into(), |s| format!("{:?}", s.phase)),
            or_dash(st.and_then(|s| s.message.as_deref())),
        ]);
    }
    table(&rows)
}

/// A deferred tier's trigger on one line: what it waits for and the approval to give, or the
/// approval it was given.
pub fn deferred_summary(d: &TierDeferredStatus) -> String {
    let approve = d
        .approval
        .as_deref()
        .map(|a| format!(" (approve {a})"))
        .unwrap_or_default();
    match d.waiting_for {
        Some(DeferredWait::EarlierTiers) => format!("after the earlier tiers{approve}"),
        Some(DeferredWait::Approval) => format!("waits for its approval{approve}"),
        Some(DeferredWait::Window) => match d.next_window_at {
            Some(at) => format!("waits for its window (opens at {at})"),
            None => "waits for a window that never opens".into(),
        },
        None => match &d.approved {
            Some(a) => format!("approved ({a})"),
            None => "open".into(),
        },
    }
}

/// Where a cluster's health check stands, on one line: `baseline taken for 2.0.0`, `passed
/// for 2.0.0 (writeRate 100 → 96)`, `worse for 2.0.0: ...` (and whether a retry accepted it).
pub fn health_summary(h: &HealthStatus) -> String {
    let v = &h.version;
    let Some(after) = &h.after else {
        return format!("baseline taken for {v}");
    };
    if h.findings.is_empty() {
        let kpis: Vec<String> = after
            .kpis
            .iter()
            .map(|(k, a)| {
                let b = h.before.as_ref().and_then(|b| b.kpis.get(k));
                match b {
                    Some(b) => format!("{k} {b} → {a}"),
                    None => format!("{k} {a}"),
                }
            })
            .collect();
        return if kpis.is_empty() {
            format!("passed for {v}")
        } else {
            format!("passed for {v} ({})", kpis.join(", "))
        };
    }
    let accepted = if h.accepted { ", accepted" } else { "" };
    format!("worse for {v}{accepted}: {}", h.findings.join("; "))
}

/// Where a cluster's preparation checks stand, on one line: `running for 2.0.0 (done on a)`,
/// `blocked for 2.0.0: ...`, `2 warnings for 2.0.0 await prepare/c@2.0.0#...: ...`, `passed for
/// 2.0.0 (1 warning acknowledged)`.
pub fn preparation_summary(cluster: &str, p: &PreparationStatus) -> String {
    let v = &p.version;
    let of = |severity: FindingSeverity| -> Vec<String> {
        p.findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| format!("{} {} {}: {}", f.member, f.check, f.code, f.message))
            .collect()
    };
    let (blocking, warnings) = (of(FindingSeverity::Blocking), of(FindingSeverity::Warning));
    let more = if p.omitted > 0 {
        format!(" ({} more not listed)", p.omitted)
    } else {
        String::new()
    };
    let Some(digest) = &p.digest else {
        return if p.prepared.is_empty() {
            format!("running for {v}")
        } else {
            format!("running for {v} (done on {})", p.prepared.join(", "))
        };
    };
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if !blocking.is_empty() {
        return format!(
            "blocked for {v} (retry once fixed): {}{more}",
            blocking.join("; ")
        );
    }
    if warnings.is_empty() {
        return format!("passed for {v}");
    }
    if p.acknowledged {
        return format!(
            "passed for {v} ({} warning{} acknowledged or recorded: {}){more}",
            warnings.len(),
            plural(warnings.len()),
            warnings.join("; ")
        );
    }
    let ack = crate::plan::cluster::preparation_acknowledgement(cluster, v, digest);
    format!(
        "{} warning{} for {v} await {ack}: {}{more}",
        warnings.len(),
        plural(warnings.len()),
        warnings.join("; ")
    )
}

/// The `kubectl get clusters` view.
pub fn clusters_table(clusters: &[ClusterRow<'_>]) -> String {
    let mut rows = vec![header(&[
        "CLUSTER", "TARGET", "RUNNING", "ACTIVE", "PHASE", "CA", "READY", "MESSAGE",
    ])];
    for c in clusters {
        let st = c.status;
        let ready = st.is_some_and(|s| {
            s.observed_generation == c.generation && condition_true(&s.conditions, cond::READY)
        });
        rows.push(vec![
            c.name.to_string(),
            or_dash(st.and_then(|s| s.target_version.as_deref())),
            or_dash(st.and_then(|s| s.running_versions.as_deref())),
            or_dash(st.and_then(|s| s.active_member.as_deref())),
            st.map_or("-".into(), |s| format!("{:?}", s.phase)),
            or_dash(st.and_then(|s| s.certificates.as_ref()?.phase.as_deref())),
            if ready { "True" } else { "False" }.into(),
            or_dash(st.and_then(|s| s.message.as_deref())),
        ]);
    }
    table(&rows)
}

/// Where a CA rotation stands, on one line: the target CA (short fingerprints), the phase,
/// per-site progress, who still presents an old certificate, who waits for a restart, and
/// the earliest certificate expiry.
pub fn certificates_summary(c: &CertificatesStatus) -> String {
    let mut s = format!(
        "CA {} {}",
        c.target_ca.as_deref().map_or("-".to_string(), short_id),
        c.phase.as_deref().unwrap_or("-")
    );
    if let Some(f) = &c.forcing {
        let _ = write!(s, "  FORCING {f}");
    }
    if !c.sites.is_empty() {
        let sites: Vec<String> = c.sites.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(s, "  sites {}", sites.join(", "));
    }
    if !c.presenting_old.is_empty() {
        let _ = write!(s, "  presenting old: {}", c.presenting_old.join(", "));
    }
    if !c.restart_pending.is_empty() {
        let _ = write!(s, "  restart pending: {}", c.restart_pending.join(", "));
    }
    if let Some(t) = c.expires {
        let _ = write!(s, "  expires {}", ts(t));
    }
    s
}

/// One line on a mesh-wide rotation: the target, the mesh's phase, who rotates or what it
/// waits for, and the clusters not in the mesh's phase.
pub fn mesh_certificates_summary(c: &MeshCertificatesStatus) -> String {
    let phase = c.phase.as_deref().unwrap_or("-");
    let mut s = format!(
        "CA {} {phase}",
        c.target_ca.as_deref().map_or("-".to_string(), short_id),
    );
    if !c.rotating.is_empty() {
        let _ = write!(s, "  rotating: {}", c.rotating.join(", "));
    }
    if let Some(w) = &c.waiting {
        let _ = write!(s, "  waiting: {w}");
    }
    if !c.failed.is_empty() {
        let _ = write!(s, "  failed: {}", c.failed.join(", "));
    }
    let others: Vec<String> = c
        .clusters
        .iter()
        .filter(|(_, p)| p.as_str() != phase)
        .map(|(n, p)| format!("{n} {p}"))
        .collect();
    if !others.is_empty() && phase != "Done" {
        let _ = write!(s, "  clusters: {}", others.join(", "));
    }
    s
}

/// Per-member detail of one cluster.
pub fn members_table(status: &ClusterStatus) -> String {
    // The MEDIA column only while some member reports staged media.
    let media = status.members.iter().any(|m| !m.media.is_empty());
    let mut head = vec!["  MEMBER", "ROLE", "VERSION", "UP-TO-DATE", "LAG", "HEALTH"];
    if media {
        head.push("MEDIA");
    }
    head.push("OPERATION");
    let mut rows = vec![header(&head)];
    for m in &status.members {
        let op = m.operation.as_ref().map_or("-".to_string(), |o| {
            format!("{} {} {}%", o.kind, o.state, o.progress)
        });
        let op = match &m.last_error {
            Some(e) if m.failures > 0 => format!("{op} (failures {}: {e})", m.failures),
            _ => op,
        };
        let mut row = vec![
            format!("  {}", m.name),
            format!("{:?}", m.role),
            or_dash(m.version.as_deref()),
            if m.up_to_date { "yes" } else { "no" }.into(),
            format!("{:.1}s", m.lag_seconds),
            format!("{:?}", m.health),
        ];
        if media {
            row.push(if m.media.is_empty() {
                "-".into()
            } else {
                m.media.join(",")
            });
        }
        row.push(op);
        rows.push(row);
    }
    table(&rows)
}

/// The membership changes under way (one line per joining or leaving member) and what each
/// managed client accepts.
pub fn topology_lines(status: &ClusterStatus) -> String {
    let mut out = String::new();
    for m in &status.members {
        let Some(t) = &m.topology else { continue };
        let what = match t.membership {
            crate::api::Membership::Joining => "joining",
            crate::api::Membership::Leaving => "leaving",
        };
        let _ = write!(out, "  {} {what}: {:?}", m.name, t.stage);
        if let Some(w) = &t.waiting {
            let _ = write!(out, " (waiting: {w})");
        }
        out.push('\n');
    }
    for c in &status.clients {
        let reach = if c.reachable { "" } else { " (unreachable)" };
        let _ = write!(
            out,
            "  client {}{reach}: accepts {}",
            c.name,
            if c.accepts.is_empty() {
                "-".to_string()
            } else {
                c.accepts.join(", ")
            }
        );
        if !c.missing.is_empty() {
            let _ = write!(out, "; missing {}", c.missing.join(", "));
        }
        out.push('\n');
    }
    out
}

fn ts(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// How deep each entry sits in the log's tree (parents dropped from the bounded log count
/// as absent; a cycle, which the planner never writes, is cut at the log's length).
fn depths(log: &[LogEntry]) -> Vec<usize> {
    let parent: std::collections::HashMap<u64, Option<u64>> =
        log.iter().map(|e| (e.id, e.parent)).collect();
    log.iter()
        .map(|e| {
            let mut d = 0;
            let mut p = e.parent;
            while let Some(id) = p {
                match parent.get(&id) {
                    Some(up) if d < log.len() => {
                        d += 1;
                        p = *up;
                    }
                    _ => break,
                }
            }
            d
        })
        .collect()
}

/// The upgrade log, oldest first, children indented under their parent.
pub fn log_lines(log: &[LogEntry]) -> String {
    let mut out = String::new();
    for (e, d) in log.iter().zip(depths(log)) {
        let depth = "    ".repeat(d);
        let end = e.end.map(ts).unwrap_or_else(|| "…".into());
        let _ = writeln!(
            out,
            "  {depth}#{id} {start} → {end} {action} {scope:?} {target}{ver} {result:?} ({mode:?}){msg}",
            id = e.id,
            start = ts(e.start),
            action = e.action,
            scope = e.scope,
            target = e.target,
            ver = e
                .version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            result = e.result,
            mode = e.mode,
            msg = if e.message.is_empty() {
                String::new()
            } else {
                format!(": {}", e.message)
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PreparationFinding;

    #[test]
    fn preparation_lines_say_where_the_checks_stand_and_what_to_acknowledge() {
        let f = |severity, check: &str, code: &str| PreparationFinding {
            member: "server".into(),
            check: check.into(),
            severity,
            code: code.into(),
            message: "found".into(),
        };
        let mut p = PreparationStatus {
            version: "10.3.0".into(),
            prepared: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            preparation_summary("c", &p),
            "running for 10.3.0 (done on a)"
        );
        p.digest = Some("861a2efb6163".into());
        p.findings = vec![f(
            FindingSeverity::Warning,
            "scheduledJobs",
            "ScheduledJobDropped",
        )];
        assert_eq!(
            preparation_summary("c", &p),
            "1 warning for 10.3.0 await prepare/c@10.3.0#861a2efb6163: \
             server scheduledJobs ScheduledJobDropped: found"
        );
        p.acknowledged = true;
        assert!(
            preparation_summary("c", &p).starts_with("passed for 10.3.0 (1 warning acknowledged"),
            "{}",
            preparation_summary("c", &p)
        );
        p.findings
            .push(f(FindingSeverity::Blocking, "gateways", "GatewayDown"));
        p.omitted = 3;
        assert_eq!(
            preparation_summary("c", &p),
            "blocked for 10.3.0 (retry once fixed): server gateways GatewayDown: found \
             (3 more not listed)"
        );
    }

    #[test]
    fn rotation_lines_say_a_forced_phase_and_the_failed_clusters() {
        let c = CertificatesStatus {
            target_ca: Some("51ec7e600c41aa".into()),
            phase: Some("AddTrust".into()),
            forcing: Some("Reissue".into()),
            ..Default::default()
        };
        let line = certificates_summary(&c);
        assert!(
            line.starts_with("CA 51ec7e600c41 AddTrust  FORCING Reissue"),
            "{line}"
        );
        let plain = certificates_summary(&CertificatesStatus { forcing: None, ..c });
        assert!(!plain.contains("FORCING"), "{plain}");
        let m = MeshCertificatesStatus {
            target_ca: Some("51ec7e600c41aa".into()),
            phase: Some("Reissue".into()),
            rotating: vec!["b".into()],
            failed: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let line = mesh_certificates_summary(&m);
        assert!(line.contains("rotating: b  failed: a, b"), "{line}");
    }
}
