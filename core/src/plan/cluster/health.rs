//! The health check around an upgrade (`upgrade.health`; the Active/Standby procedure takes
//! a health check with alarms and a KPI baseline before, and compares alarms, KPIs and
//! replication after).
//!
//! The baseline is taken from observation when the rollout's first disruptive step starts
//! (recorded in the same status write as that step). Once every member runs the target and
//! `settle` has passed since the last step ended, the cluster takes the same snapshot again and
//! compares: a new alarm that is not one of an upgrade's expected transient alarms, or a KPI
//! worse than its rule allows, is a finding. Findings stall the cluster (`HealthCheckFailed`)
//! and, through its status, stop its mesh tier, until a retry intent accepts them. The
//! comparison is logged (`health`, before → after) and announced (`HealthChecked`,
//! `HealthRegressed`).
//!
//! Owns: `status.health` (but its acceptance, which `record` marks with the retry intent).
//! May use: `state`, `log`, `record` (the expected alarms). Used by `start` (the baseline)
//! and `converge` (the comparison).

use std::collections::BTreeMap;

use crate::api::{
    HealthPolicy, HealthSnapshot, HealthStatus, KpiAggregate, KpiRule, KpiWorse, LogMode, LogResult,
};
use crate::plan::stall::Stall;

use super::log;
use super::state::Pass;

fn policy<'a>(p: &Pass<'a>) -> Option<&'a HealthPolicy> {
    p.spec().upgrade.health.as_ref()
}

/// The members' unexpected alarms and the cluster's value of each KPI the rules name.
fn snapshot(p: &Pass<'_>, policy: &HealthPolicy) -> HealthSnapshot {
    let mut alarms = vec![];
    let mut kpis: BTreeMap<String, f64> = BTreeMap::new();
    for m in p.in_group() {
        let Some(a) = p.agent(&m.name) else {
            continue;
        };
        for al in &a.alarms {
            if !super::record::expected_alarm(&al.name) {
                alarms.push(format!("{}/{}", m.name, al.name));
            }
        }
        for rule in &policy.kpis {
            let Some(&v) = a.kpis.get(&rule.name).filter(|v| v.is_finite()) else {
                continue;
            };
            let e = kpis
                .entry(rule.name.clone())
                .or_insert(match rule.aggregate {
                    KpiAggregate::Sum => 0.0,
                    KpiAggregate::Max => f64::MIN,
                });
            *e = match rule.aggregate {
                KpiAggregate::Sum => *e + v,
                KpiAggregate::Max => e.max(v),
            };
        }
    }
    alarms.sort();
    alarms.dedup();
    HealthSnapshot {
        at: p.now(),
        alarms,
        kpis,
    }
}

/// Before the rollout's first disruptive step: the baseline for the target, once.
pub(super) fn baseline(p: &mut Pass<'_>) {
    let Some(policy) = policy(p) else {
        return;
    };
    let target = p.target.version.clone();
    if target.is_empty()
        || p.st
            .health
            .as_ref()
            .is_some_and(|h| h.version == target && h.before.is_some())
    {
        return;
    }
    let before = snapshot(p, policy);
    let msg = format!("health baseline: {}", describe(&before, policy));
    p.st.health = Some(HealthStatus {
        version: target,
        before: Some(before),
        ..Default::default()
    });
    p.event(false, "HealthBaseline", msg);
}

/// How a value compares with its baseline under `rule`: what got worse, if beyond the rule.
fn worse(rule: &KpiRule, before: Option<f64>, after: Option<f64>) -> Option<String> {
    let (b, a) = match (before, after) {
        (Some(b), Some(a)) => (b, a),
        (Some(b), None) => return Some(format!("{} {} → not reported", rule.name, num(b))),
        _ => return None,
    };
    let change = match rule.worse {
        KpiWorse::Higher => a - b,
        KpiWorse::Lower => b - a,
    };
    let allowed = rule.tolerance + b.abs() * f64::from(rule.tolerance_percent) / 100.0;
    (change > allowed + 1e-9).then(|| {
        let how = match rule.worse {
            KpiWorse::Higher => "higher",
            KpiWorse::Lower => "lower",
        };
        format!(
            "{} {} → {} ({} {how} than allowed: at most {})",
            rule.name,
            num(b),
            num(a),
            num(change - allowed),
            num(allowed)
        )
    })
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `writeRate 120, errorCount 0; alarms: none` (the rules' KPIs, in their order).
fn describe(s: &HealthSnapshot, policy: &HealthPolicy) -> String {
    let kpis: Vec<String> = policy
        .kpis
        .iter()
        .map(|r| match s.kpis.get(&r.name) {
            Some(v) => format!("{} {}", r.name, num(*v)),
            None => format!("{} -", r.name),
        })
        .collect();
    let alarms = if s.alarms.is_empty() {
        "none".to_string()
    } else {
        s.alarms.join(", ")
    };
    if kpis.is_empty() {
        format!("alarms: {alarms}")
    } else {
        format!("{}; alarms: {alarms}", kpis.join(", "))
    }
}

/// Every member runs the target: compare with the baseline (after `settle`). True while the
/// cluster may not converge: the comparison waits, or found the health worse (the stall is
/// set) and nobody accepted it.
pub(super) fn compare(p: &mut Pass<'_>) -> bool {
    let Some(policy) = policy(p) else {
        return false;
    };
    let target = p.target.version.clone();
    let Some(h) = p.st.health.as_ref().filter(|h| h.version == target) else {
        return false; // no disruptive step was needed: nothing to compare
    };
    let Some(before) = h.before.clone() else {
        return false;
    };
    if h.after.is_some() {
        return held(p);
    }
    if !p.st.steps.is_empty() {
        return true;
    }
    // KPIs settle after the last step (a switchover moves the writes).
    let last_end =
        p.st.log
            .iter()
            .filter(|e| e.version.as_deref() == Some(target.as_str()))
            .filter_map(|e| e.end)
            .max();
    if let Some(end) = last_end {
        let at = end.plus(policy.settle);
        if p.now() < at {
            p.wake_at(at);
            p.wait(format!(
                "health comparison at {at} (settle {})",
                policy.settle
            ));
            return true;
        }
    }
    let after = snapshot(p, policy);
    let mut findings: Vec<String> = vec![];
    if policy.alarms {
        for a in after.alarms.iter().filter(|a| !before.alarms.contains(a)) {
            findings.push(format!("new alarm {a}"));
        }
    }
    for rule in &policy.kpis {
        if let Some(f) = worse(
            rule,
            before.kpis.get(&rule.name).copied(),
            after.kpis.get(&rule.name).copied(),
        ) {
            findings.push(f);
        }
    }
    findings.truncate(32);
    for f in &mut findings {
        *f = crate::plan::conditions::bounded(f, 400);
    }
    let report = format!(
        "health before: {}; after: {}",
        describe(&before, policy),
        describe(&after, policy)
    );
    let (result, closing, reason, warning) = if findings.is_empty() {
        (LogResult::Succeeded, String::new(), "HealthChecked", false)
    } else {
        (
            LogResult::Failed,
            format!("worse: {}", findings.join("; ")),
            "HealthRegressed",
            true,
        )
    };
    log::record_done(p, "health", LogMode::Automatic, &report, result, &closing);
    let event = if findings.is_empty() {
        report
    } else {
        format!("{report}; worse: {}", findings.join("; "))
    };
    p.event(
        warning,
        reason,
        crate::plan::conditions::bounded(&event, 1000),
    );
    if let Some(h) = p.st.health.as_mut() {
        h.after = Some(after);
        h.findings = findings;
    }
    held(p)
}

/// Findings nobody accepted stall the cluster.
fn held(p: &mut Pass<'_>) -> bool {
    let Some(h) = p.st.health.as_ref() else {
        return false;
    };
    if h.findings.is_empty() || h.accepted {
        return false;
    }
    let stall = Stall::HealthRegressed {
        version: h.version.clone(),
        findings: h.findings.clone(),
    };
    p.found.stalled.get_or_insert(stall);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::values::Duration;
    use crate::api::{ClusterPhase, ClusterStatus, LogEntry, LogScope, StepAction, Timestamp};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, observed, stalled_reason};

    fn rule(name: &str, worse: KpiWorse, percent: u32) -> KpiRule {
        KpiRule {
            name: name.into(),
            worse,
            aggregate: KpiAggregate::Sum,
            tolerance: 0.0,
            tolerance_percent: percent,
        }
    }

    fn policy() -> HealthPolicy {
        HealthPolicy {
            alarms: true,
            kpis: vec![
                rule("writeRate", KpiWorse::Lower, 10),
                rule("errorCount", KpiWorse::Higher, 0),
            ],
            settle: Duration(0),
        }
    }

    #[test]
    fn the_baseline_is_taken_when_the_first_disruptive_step_starts() {
        // One member upgraded in place: the first step is the upgrade itself.
        let c = ClusterBuilder::new("c")
            .members(["a"])
            .version("2.0.0")
            .running("1.0.0")
            .observe(
                observed("a")
                    .version("1.0.0")
                    .active()
                    .kpi("writeRate", 120.0)
                    .kpi("errorCount", 3.0)
                    .kpi("unrelated", 7.0)
                    .alarm("DiskFull")
                    .alarm("ForcedStandby"),
            )
            .upgrade(|u| {
                u.allow_outage = true;
                u.preflight = false;
                u.health = Some(policy());
            });
        let plan = c.clone().build().plan();
        assert!(
            plan.status
                .steps
                .iter()
                .any(|s| s.action == StepAction::Upgrade),
            "{:?}",
            plan.status.steps
        );
        let h = plan.status.health.clone().expect("a health status");
        assert_eq!(h.version, "2.0.0");
        let before = h.before.expect("the baseline");
        assert_eq!(before.kpis.get("writeRate"), Some(&120.0));
        assert_eq!(before.kpis.get("errorCount"), Some(&3.0));
        assert!(
            !before.kpis.contains_key("unrelated"),
            "only the rules' KPIs"
        );
        assert_eq!(before.alarms, ["a/DiskFull"], "expected alarms aside");
        assert!(plan.events.iter().any(|e| e.reason == "HealthBaseline"));
        // Taken once: a later pass keeps it even when the KPIs moved.
        let again = c
            .observe(
                observed("a")
                    .version("1.0.0")
                    .active()
                    .kpi("writeRate", 1.0),
            )
            .status(plan.status.clone())
            .build()
            .plan();
        let kept = again.status.health.and_then(|h| h.before);
        assert_eq!(
            kept.and_then(|b| b.kpis.get("writeRate").copied()),
            Some(120.0)
        );
    }

    /// Pair `a` (active), `b` at 2.0.0, upgraded from a baseline of 100 writes a second and no
    /// error, verified, its last step ended at `NOW` − 5 min.
    fn upgraded(settle: Duration) -> ClusterBuilder {
        let mut status = ClusterStatus {
            verified_target: Some("2.0.0".into()),
            health: Some(HealthStatus {
                version: "2.0.0".into(),
                before: Some(HealthSnapshot {
                    at: Timestamp(NOW.0 - 3_600_000),
                    alarms: vec![],
                    kpis: BTreeMap::from([
                        ("writeRate".to_string(), 100.0),
                        ("errorCount".to_string(), 0.0),
                    ]),
                }),
                ..Default::default()
            }),
            next_log_id: 2,
            ..Default::default()
        };
        status.log.push(LogEntry {
            id: 1,
            parent: None,
            action: "upgrade".into(),
            scope: LogScope::Cluster,
            target: "c".into(),
            version: Some("2.0.0".into()),
            start: Timestamp(NOW.0 - 3_600_000),
            end: None,
            result: LogResult::Running,
            mode: LogMode::Automatic,
            message: "upgrade c to 2.0.0".into(),
        });
        status.log.push(LogEntry {
            id: 2,
            parent: Some(1),
            action: "upgrade".into(),
            scope: LogScope::Member,
            target: "a".into(),
            version: Some("2.0.0".into()),
            start: Timestamp(NOW.0 - 600_000),
            end: Some(Timestamp(NOW.0 - 300_000)),
            result: LogResult::Succeeded,
            mode: LogMode::Automatic,
            message: String::new(),
        });
        let mut p = policy();
        p.settle = settle;
        ClusterBuilder::pair("2.0.0")
            .running("2.0.0")
            .upgrade(move |u| u.health = Some(p))
            .status(status)
    }

    fn with_kpis(c: ClusterBuilder, rate_a: f64, errors: f64) -> ClusterBuilder {
        c.observe(
            observed("a")
                .version("2.0.0")
                .active()
                .kpi("writeRate", rate_a)
                .kpi("errorCount", errors),
        )
        .observe(observed("b").version("2.0.0").kpi("writeRate", 0.0))
    }

    #[test]
    fn health_within_its_rules_passes_and_the_cluster_converges() {
        // 92 writes a second is within 10 % of 100.
        let plan = with_kpis(upgraded(Duration(0)), 92.0, 0.0).build().plan();
        assert_eq!(
            plan.status.phase,
            ClusterPhase::Ready,
            "{:?}",
            plan.status.message
        );
        let h = plan.status.health.expect("health");
        assert!(h.findings.is_empty());
        assert_eq!(
            h.after.and_then(|a| a.kpis.get("writeRate").copied()),
            Some(92.0)
        );
        let entry = plan
            .status
            .log
            .iter()
            .find(|e| e.action == "health")
            .expect("a health entry");
        assert_eq!(entry.result, LogResult::Succeeded);
        assert!(
            entry
                .message
                .contains("before: writeRate 100, errorCount 0")
                && entry.message.contains("after: writeRate 92, errorCount 0"),
            "{}",
            entry.message
        );
        assert!(plan.events.iter().any(|e| e.reason == "HealthChecked"));
    }

    #[test]
    fn worse_health_stalls_the_cluster_until_a_retry_accepts_it() {
        let c = with_kpis(upgraded(Duration(0)), 60.0, 2.0).observe(
            observed("b")
                .version("2.0.0")
                .kpi("writeRate", 0.0)
                .alarm("ReplicationFailure")
                .alarm("MixedVersion"),
        );
        let plan = c.clone().build().plan();
        assert_eq!(stalled_reason(&plan).as_deref(), Some("HealthCheckFailed"));
        let h = plan.status.health.clone().expect("health");
        assert_eq!(h.findings.len(), 3, "{:?}", h.findings);
        assert!(h.findings[0].contains("new alarm b/ReplicationFailure"));
        assert!(
            h.findings
                .iter()
                .any(|f| f.starts_with("writeRate 100 → 60"))
        );
        assert!(h.findings.iter().any(|f| f.starts_with("errorCount 0 → 2")));
        let msg = plan.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("health worse after the upgrade to 2.0.0"),
            "{msg}"
        );
        assert!(
            plan.events
                .iter()
                .any(|e| e.reason == "HealthRegressed" && e.warning)
        );
        // Compared once: the next pass keeps the stall without a second entry.
        let again = c.clone().status(plan.status.clone()).build().plan();
        assert_eq!(stalled_reason(&again).as_deref(), Some("HealthCheckFailed"));
        let entries = again
            .status
            .log
            .iter()
            .filter(|e| e.action == "health")
            .count();
        assert_eq!(entries, 1);
        // A retry accepts it.
        let accepted = c.status(again.status).retry("t1").build().plan();
        assert_eq!(accepted.status.phase, ClusterPhase::Ready);
        assert!(accepted.status.health.is_some_and(|h| h.accepted));
    }

    #[test]
    fn the_comparison_waits_for_the_kpis_to_settle() {
        let plan = with_kpis(upgraded(Duration::from_secs(600)), 60.0, 0.0)
            .build()
            .plan();
        assert_ne!(plan.status.phase, ClusterPhase::Ready);
        assert!(stalled_reason(&plan).is_none());
        assert!(plan.status.health.is_some_and(|h| h.after.is_none()));
        assert_eq!(
            plan.wake,
            crate::plan::observe::Wake::At(Timestamp(NOW.0 + 300_000)),
            "ten minutes after the last step ended"
        );
    }
}
