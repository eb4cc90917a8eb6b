//! Preparation checks before an upgrade (`upgrade.prepare`; the procedures start by checking
//! the install-time configuration against the running system and that the gateways are up,
//! and by noting the scheduled jobs the upgrade drops).
//!
//! Each member that moves up to the target runs the checks once (`Prepare`, one agent
//! operation whose result is its findings). The step is not disruptive: like media staging it
//! runs before the mesh admits the cluster and outside windows, not while paused, so its
//! findings are known hours ahead. Nothing toward the upgrade (not even a forced standby)
//! starts on any member until every member has run them:
//! * a blocking finding stalls the cluster (`PreparationFailed`, each finding in the message)
//!   until a retry intent clears the results and the checks run again;
//! * warnings wait for the acknowledgement `prepare/CLUSTER@VERSION#DIGEST`, whose digest
//!   covers exactly the warnings found, so a warning found by a later run needs a new one
//!   (`warnings: Record` reports them and goes on).
//!
//! A backout needs no preparation (it is the remedy), nor does a member already at the target.
//!
//! Owns: starting `Prepare` steps, `status.preparation` (but a member's findings, which
//! `outcome` records when its step succeeds, and the reset on retry, which `record` makes),
//! the verdict (digest, acknowledgement, stall), the preparation gate of a member's moves, the
//! events `PreparationPassed`, `PreparationBlocked`, `PreparationWarnings` and
//! `PreparationAcknowledged`, and the `prepare` log entry. May use: `state`, `view`, `log`,
//! `record` (acknowledging), `gates`, `start`. Used by the pipeline (`super`) and `member`
//! (the gate).

use crate::api::{
    FindingSeverity, LogMode, LogResult, MemberSpec, PreparationFinding, PreparationStatus,
    PreparePolicy, PrepareWarnings, StepAction,
};
use crate::plan::conditions::bounded;
use crate::plan::stall::Stall;

use super::gates;
use super::log;
use super::record;
use super::start;
use super::state::{NewStep, Pass, StepVersion};
use super::view;

fn policy<'a>(p: &Pass<'a>) -> Option<&'a PreparePolicy> {
    p.spec().upgrade.prepare.as_ref()
}

/// `m` still moves up (toward an upgrade) to its target, or cannot be observed (what it runs
/// is not known: it counts until it reports).
fn moves_up(p: &Pass<'_>, m: &MemberSpec) -> bool {
    view::moves(p, m).is_none_or(|mv| mv.iter().any(|mv| !mv.down))
}

/// The members that must be prepared before the upgrade goes on: those that still move up
/// (an unreachable one included: its checks run once it answers).
fn to_prepare<'a>(p: &Pass<'a>) -> Vec<&'a MemberSpec> {
    p.in_group()
        .into_iter()
        .filter(|m| moves_up(p, m))
        .collect()
}

/// The acknowledgement of the warnings of `version`'s checks on `cluster`.
pub fn acknowledgement(cluster: &str, version: &str, digest: &str) -> String {
    format!("prepare/{cluster}@{version}#{digest}")
}

/// The cluster, version and digest an acknowledgement names (`prepare/CLUSTER@VERSION#DIGEST`).
pub fn parse_acknowledgement(name: &str) -> Option<(&str, &str, &str)> {
    let (cluster, rest) = name.strip_prefix("prepare/")?.split_once('@')?;
    let (version, digest) = rest.split_once('#')?;
    let hex = digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    (!cluster.is_empty() && !cluster.contains('/') && !version.is_empty() && hex)
        .then_some((cluster, version, digest))
}

/// A stable digest of the warnings (FNV-1a over member, check and code; not the message, whose
/// wording may change between runs without anything new being found).
fn digest(findings: &[PreparationFinding]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut warnings: Vec<(&str, &str, &str)> = findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Warning)
        .map(|f| (f.member.as_str(), f.check.as_str(), f.code.as_str()))
        .collect();
    warnings.sort();
    for (m, c, code) in warnings {
        for part in [m, c, code] {
            for b in part.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

/// Run the checks where they are owed, finish the preparation once every member ran them,
/// and apply an acknowledgement.
pub(super) fn run(p: &mut Pass<'_>) {
    let version = p.target.version.clone();
    // The checks of another target (or of a policy since removed) say nothing about this one:
    // they go, so no status reads as waiting on them.
    if p.st
        .preparation
        .as_ref()
        .is_some_and(|s| s.version != version)
        || policy(p).is_none()
    {
        p.st.preparation = None;
    }
    let Some(policy) = policy(p) else {
        return;
    };
    let members = to_prepare(p);
    // Only an upgrade some member is known to take needs the checks (an unreachable member
    // alone, or a backout, does not).
    let upgrade = members.iter().any(|m| p.agent(&m.name).is_some());
    if version.is_empty() || !upgrade {
        return;
    }
    if p.st.preparation.is_none() {
        p.st.preparation = Some(PreparationStatus {
            version: version.clone(),
            ..Default::default()
        });
    }
    let now = p.now();
    for m in &members {
        let done =
            p.st.preparation
                .as_ref()
                .is_some_and(|s| s.prepared.contains(&m.name));
        let running =
            p.st.steps
                .iter()
                .any(|s| s.action == StepAction::Prepare && s.member == m.name);
        if done || running || p.agent(&m.name).is_none() {
            continue;
        }
        if !gates::may_step_ahead(p, &m.name, now) {
            continue;
        }
        let mut n = NewStep::on(StepAction::Prepare, &m.name);
        n.version = Some(StepVersion::whole(&version));
        n.message = format!(
            "run the preparation checks for {version} on {} ({})",
            m.name,
            policy.checks.join(", ")
        );
        start::start(p, n);
    }
    let all = members.iter().all(|m| {
        p.st.preparation
            .as_ref()
            .is_some_and(|s| s.prepared.contains(&m.name))
    });
    if all {
        finish(p, policy);
    }
    acknowledge(p);
    if let Some(stall) = blocked(p) {
        p.found.stalled.get_or_insert(stall);
    } else if let Some(name) = awaited(p) {
        p.found.awaiting.get_or_insert(name);
    }
}

/// The acknowledgement the finished preparation waits for, if any.
fn awaited(p: &Pass<'_>) -> Option<String> {
    let st = p.st.preparation.as_ref()?;
    let d = st.digest.as_deref().filter(|_| !st.acknowledged)?;
    Some(acknowledgement(p.inp.cluster.name, &st.version, d))
}

/// `b gateways GatewayDown: gateway gw-2 does not answer`.
fn line(f: &PreparationFinding) -> String {
    format!("{} {} {}: {}", f.member, f.check, f.code, f.message)
}

fn of(p: &Pass<'_>, severity: FindingSeverity) -> Vec<String> {
    p.st.preparation
        .as_ref()
        .map(|s| {
            s.findings
                .iter()
                .filter(|f| f.severity == severity)
                .map(line)
                .collect()
        })
        .unwrap_or_default()
}

/// Every member ran its checks: the digest, the log entry and the verdict's event, once.
fn finish(p: &mut Pass<'_>, policy: &PreparePolicy) {
    let Some(st) = p.st.preparation.as_mut() else {
        return;
    };
    if st.digest.is_some() {
        return;
    }
    let d = digest(&st.findings);
    st.digest = Some(d.clone());
    let version = st.version.clone();
    let blocking = of(p, FindingSeverity::Blocking);
    let warnings = of(p, FindingSeverity::Warning);
    let omitted = p.st.preparation.as_ref().map_or(0, |s| s.omitted);
    let more = if omitted > 0 {
        format!(" ({omitted} more not listed)")
    } else {
        String::new()
    };
    let report = format!(
        "preparation checks for {version} ({}): {} blocking, {}{more}",
        policy.checks.join(", "),
        blocking.len(),
        warnings_n(warnings.len())
    );
    let record_only = policy.warnings == PrepareWarnings::Record;
    let (result, reason, warning, closing) = if !blocking.is_empty() {
        (
            LogResult::Failed,
            "PreparationBlocked",
            true,
            format!("blocking: {}", blocking.join("; ")),
        )
    } else if warnings.is_empty() || record_only {
        if let Some(st) = p.st.preparation.as_mut() {
            st.acknowledged = true;
        }
        (
            LogResult::Succeeded,
            "PreparationPassed",
            false,
            if warnings.is_empty() {
                String::new()
            } else {
                format!("warnings recorded: {}", warnings.join("; "))
            },
        )
    } else {
        (
            LogResult::Succeeded,
            "PreparationWarnings",
            true,
            format!(
                "warnings to acknowledge ({}): {}",
                acknowledgement(p.inp.cluster.name, &version, &d),
                warnings.join("; ")
            ),
        )
    };
    let closing = bounded(&closing, 1000);
    log::record_done(p, "prepare", LogMode::Automatic, &report, result, &closing);
    let event = if closing.is_empty() {
        report
    } else {
        format!("{report}; {closing}")
    };
    p.event(warning, reason, bounded(&event, 1000));
}

/// `1 warning`, `2 warnings`.
fn warnings_n(n: usize) -> String {
    format!("{n} warning{}", if n == 1 { "" } else { "s" })
}

/// An acknowledgement intent that names the current warnings.
fn acknowledge(p: &mut Pass<'_>) {
    let Some(st) = p.st.preparation.as_ref() else {
        return;
    };
    let (Some(d), false) = (st.digest.as_ref(), st.acknowledged) else {
        return;
    };
    let name = acknowledgement(p.inp.cluster.name, &st.version, d);
    if !p.inp.intents.approve.iter().any(|a| a == &name) {
        return;
    }
    let warnings = of(p, FindingSeverity::Warning).len();
    if let Some(st) = p.st.preparation.as_mut() {
        st.acknowledged = true;
    }
    record::acknowledge(p, format!("approve:{name}"));
    let msg = format!("{name}: {} acknowledged", warnings_n(warnings));
    log::record_done(
        p,
        "prepare",
        LogMode::Manual,
        &msg,
        LogResult::Succeeded,
        "",
    );
    p.event(false, "PreparationAcknowledged", msg);
}

/// Blocking findings nobody fixed yet stall the cluster.
fn blocked(p: &Pass<'_>) -> Option<Stall> {
    let st = p.st.preparation.as_ref()?;
    st.digest.as_ref()?;
    let blocking = of(p, FindingSeverity::Blocking);
    (!blocking.is_empty()).then(|| Stall::PreparationFailed {
        version: st.version.clone(),
        findings: blocking,
    })
}

/// Why `m` may not start toward its upgrade yet: the preparation of the cluster's target is not
/// done, has blocking findings, or has warnings nobody acknowledged.
pub(super) fn missing(p: &Pass<'_>, m: &MemberSpec) -> Option<String> {
    policy(p)?;
    let target = p.target.version.clone();
    let Some(st) = p.st.preparation.as_ref().filter(|s| s.version == target) else {
        return Some(format!(
            "{} waits for the preparation checks for {target}",
            m.name
        ));
    };
    let left: Vec<String> = to_prepare(p)
        .iter()
        .filter(|o| !st.prepared.contains(&o.name))
        .map(|o| o.name.clone())
        .collect();
    if !left.is_empty() {
        return Some(format!(
            "{} waits for the preparation checks for {target} on {}",
            m.name,
            left.join(", ")
        ));
    }
    if st
        .findings
        .iter()
        .any(|f| f.severity == FindingSeverity::Blocking)
    {
        return Some(format!(
            "{} waits: the preparation checks for {target} found blocking problems",
            m.name
        ));
    }
    if st.acknowledged {
        return None;
    }
    let name = acknowledgement(p.inp.cluster.name, &target, st.digest.as_deref()?);
    let n = st
        .findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Warning)
        .count();
    Some(format!(
        "{} waits for the acknowledgement of {n} preparation warnings ({name})",
        m.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::values::Duration;
    use crate::api::{ClusterPhase, Weekday};
    use crate::fixtures::cluster::{ClusterBuilder, observed, stalled_reason};
    use crate::plan::cluster::ClusterPlan;
    use crate::plan::observe::{FindingView, OpKind};

    fn checks() -> Vec<String> {
        vec!["config".into(), "gateways".into(), "scheduledJobs".into()]
    }

    fn policy(warnings: PrepareWarnings) -> PreparePolicy {
        PreparePolicy {
            checks: checks(),
            warnings,
        }
    }

    /// Cluster `c`: `a` (active) and `b` from 1.0.0 to 2.0.0, with preparation checks.
    fn pair(warnings: PrepareWarnings) -> ClusterBuilder {
        ClusterBuilder::pair("2.0.0").running("1.0.0").upgrade(|u| {
            u.preflight = false;
            u.prepare = Some(policy(warnings));
        })
    }

    fn finding(check: &str, severity: FindingSeverity, code: &str) -> FindingView {
        FindingView {
            check: check.into(),
            severity,
            code: code.into(),
            message: format!("{code} found by {check}"),
        }
    }

    fn kinds(plan: &ClusterPlan) -> Vec<(OpKind, String)> {
        plan.actions
            .iter()
            .map(|a| (a.request.kind, a.member.clone()))
            .collect()
    }

    fn prepares(members: &[&str]) -> Vec<(OpKind, String)> {
        members
            .iter()
            .map(|m| (OpKind::Prepare, m.to_string()))
            .collect()
    }

    /// The next pass of `b` once the `Prepare` steps `plan` recorded finished on their agents,
    /// each member finding what `found` lists for it (nothing when not listed).
    fn checked(
        b: ClusterBuilder,
        plan: &ClusterPlan,
        found: &[(&str, FindingView)],
    ) -> ClusterBuilder {
        let mut b = b.status(plan.status.clone());
        for s in plan
            .status
            .steps
            .iter()
            .filter(|s| s.action == StepAction::Prepare)
        {
            let mine = found
                .iter()
                .filter(|(m, _)| *m == s.member)
                .map(|(_, f)| f.clone())
                .collect();
            let mut o = observed(&s.member).version("1.0.0");
            if s.member == "a" {
                o = o.active();
            }
            b = b.observe(o.prepared(&s.id, mine));
        }
        b
    }

    fn events(plan: &ClusterPlan, reason: &str) -> Vec<String> {
        plan.events
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.message.clone())
            .collect()
    }

    #[test]
    fn every_member_runs_the_checks_first_unadmitted_and_outside_windows() {
        let unadmitted = crate::fixtures::cluster::unadmitted("2.0.0");
        let plan = pair(PrepareWarnings::Acknowledge)
            .admission(unadmitted)
            .window(&[Weekday::Sun], "02:00", Duration::from_secs(3600))
            .build()
            .plan();
        assert_eq!(kinds(&plan), prepares(&["a", "b"]));
        for a in &plan.actions {
            assert_eq!(a.request.checks, checks());
            assert_eq!(a.request.version.as_deref(), Some("2.0.0"));
        }
        let st = plan.status.preparation.as_ref().expect("a preparation");
        assert_eq!((st.version.as_str(), st.prepared.len()), ("2.0.0", 0));
        // Paused: no checks run.
        let plan = pair(PrepareWarnings::Acknowledge).paused().build().plan();
        assert!(plan.actions.is_empty(), "{:?}", kinds(&plan));
    }

    #[test]
    fn nothing_toward_the_upgrade_starts_until_every_member_ran_its_checks() {
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().build().plan();
        // Only b's check finished: b may not move (not even out of failover) while a's runs.
        let only_b: Vec<_> = plan
            .status
            .steps
            .iter()
            .filter(|s| s.member == "b")
            .cloned()
            .collect();
        let mut half = plan.clone();
        half.status.steps = only_b;
        let next = checked(b.status(plan.status.clone()), &half, &[])
            .build()
            .plan();
        assert!(
            next.actions
                .iter()
                .all(|a| a.request.kind == OpKind::Prepare),
            "{:?}",
            kinds(&next)
        );
        let msg = next.status.message.clone().unwrap_or_default();
        assert!(msg.contains("prepare a"), "{msg}");
        let st = next.status.preparation.as_ref().expect("a preparation");
        assert_eq!(st.prepared, ["b"]);
    }

    #[test]
    fn a_clean_preparation_is_logged_and_the_upgrade_starts() {
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().build().plan();
        let next = checked(b, &plan, &[]).build().plan();
        let st = next.status.preparation.as_ref().expect("a preparation");
        assert_eq!(st.prepared, ["a", "b"]);
        assert!(st.acknowledged && st.digest.is_some(), "{st:?}");
        assert_eq!(events(&next, "PreparationChecked").len(), 2);
        assert_eq!(events(&next, "PreparationPassed").len(), 1);
        assert!(
            next.status
                .log
                .iter()
                .any(|e| e.action == "prepare" && e.message.contains("0 blocking, 0 warnings")),
            "{:?}",
            next.status.log
        );
        assert_eq!(kinds(&next), [(OpKind::ForceStandby, "b".to_string())]);
    }

    #[test]
    fn blocking_findings_stall_the_cluster_until_a_retry_runs_the_checks_again() {
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().build().plan();
        let down = finding("gateways", FindingSeverity::Blocking, "GatewayDown");
        let next = checked(b.clone(), &plan, &[("b", down)]).build().plan();
        assert_eq!(stalled_reason(&next).as_deref(), Some("PreparationFailed"));
        assert_eq!(next.status.phase, ClusterPhase::Stalled);
        let msg = next.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("b gateways GatewayDown: GatewayDown found by gateways"),
            "{msg}"
        );
        assert!(next.actions.is_empty(), "{:?}", kinds(&next));
        assert!(
            next.events
                .iter()
                .any(|e| e.reason == "PreparationBlocked" && e.warning)
        );
        // The same again: still stalled, no new checks.
        let again = b.clone().status(next.status.clone()).build().plan();
        assert_eq!(stalled_reason(&again).as_deref(), Some("PreparationFailed"));
        assert!(again.actions.is_empty(), "{:?}", kinds(&again));
        // A retry: the results are dropped and every member runs its checks again.
        let retried = b.clone().status(next.status).retry("t1").build().plan();
        assert_eq!(kinds(&retried), prepares(&["a", "b"]));
        assert_eq!(stalled_reason(&retried), None);
        let ids: Vec<&str> = retried.status.steps.iter().map(|s| s.id.as_str()).collect();
        assert!(
            plan.status
                .steps
                .iter()
                .all(|s| !ids.contains(&s.id.as_str())),
            "a rerun is a new operation: {ids:?}"
        );
        let fixed = checked(b.retry("t1"), &retried, &[]).build().plan();
        assert_eq!(stalled_reason(&fixed), None);
        assert_eq!(kinds(&fixed), [(OpKind::ForceStandby, "b".to_string())]);
    }

    #[test]
    fn warnings_wait_for_the_acknowledgement_that_names_exactly_them() {
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().build().plan();
        let job = finding(
            "scheduledJobs",
            FindingSeverity::Warning,
            "ScheduledJobDropped",
        );
        let next = checked(b.clone(), &plan, &[("a", job.clone())])
            .build()
            .plan();
        assert!(next.actions.is_empty(), "{:?}", kinds(&next));
        assert_eq!(stalled_reason(&next), None);
        let st = next.status.preparation.clone().expect("a preparation");
        let name = acknowledgement("c", "2.0.0", st.digest.as_deref().unwrap_or_default());
        let msg = next.status.message.clone().unwrap_or_default();
        assert_eq!(msg, format!("awaiting approval of {name}"));
        assert!(
            next.status
                .conditions
                .iter()
                .any(|c| c.type_ == "AwaitingApproval" && c.status == "True")
        );
        assert!(
            next.events
                .iter()
                .any(|e| e.reason == "PreparationWarnings" && e.warning)
        );
        // An acknowledgement of other warnings does not count.
        let other = acknowledgement("c", "2.0.0", "000000000000");
        let wrong = b
            .clone()
            .status(next.status.clone())
            .approve(&other)
            .build()
            .plan();
        assert!(wrong.actions.is_empty(), "{:?}", kinds(&wrong));
        // The right one: acknowledged, logged, and the upgrade starts.
        let ok = b.status(next.status).approve(&name).build().plan();
        let st = ok.status.preparation.as_ref().expect("a preparation");
        assert!(st.acknowledged);
        assert_eq!(events(&ok, "PreparationAcknowledged").len(), 1);
        assert!(ok.status.acknowledged.contains(&format!("approve:{name}")));
        assert_eq!(kinds(&ok), [(OpKind::ForceStandby, "b".to_string())]);
    }

    #[test]
    fn recorded_warnings_are_reported_and_the_upgrade_goes_on() {
        let b = pair(PrepareWarnings::Record);
        let plan = b.clone().build().plan();
        let job = finding(
            "scheduledJobs",
            FindingSeverity::Warning,
            "ScheduledJobDropped",
        );
        let next = checked(b, &plan, &[("b", job)]).build().plan();
        assert_eq!(kinds(&next), [(OpKind::ForceStandby, "b".to_string())]);
        let passed = events(&next, "PreparationPassed");
        assert!(
            passed[0].contains("warnings recorded: b scheduledJobs"),
            "{passed:?}"
        );
    }

    #[test]
    fn a_backout_or_a_cluster_at_its_target_runs_no_checks() {
        let backout = ClusterBuilder::pair("1.0.0")
            .running("2.0.0")
            .upgrade(|u| u.prepare = Some(policy(PrepareWarnings::Acknowledge)));
        let plan = backout.build().plan();
        assert!(!plan.actions.is_empty(), "the backout starts");
        assert!(
            plan.actions
                .iter()
                .all(|a| a.request.kind != OpKind::Prepare)
        );
        assert!(plan.status.preparation.is_none());
        let at_target = ClusterBuilder::pair("2.0.0")
            .running("2.0.0")
            .upgrade(|u| u.prepare = Some(policy(PrepareWarnings::Acknowledge)));
        let plan = at_target.build().plan();
        assert!(plan.actions.is_empty(), "{:?}", kinds(&plan));
        assert_eq!(plan.status.phase, ClusterPhase::Ready);
    }

    #[test]
    fn an_unreachable_member_runs_its_checks_once_it_answers_before_any_verdict() {
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().unreachable("b").build().plan();
        assert_eq!(kinds(&plan), prepares(&["a"]));
        // a found nothing; b still does not answer: no verdict, nothing moves.
        let next = checked(b.clone().unreachable("b"), &plan, &[])
            .build()
            .plan();
        let st = next.status.preparation.clone().expect("a preparation");
        assert_eq!(
            (st.prepared.as_slice(), st.digest.as_deref()),
            (&["a".to_string()][..], None)
        );
        assert!(next.actions.is_empty(), "{:?}", kinds(&next));
        assert!(events(&next, "PreparationPassed").is_empty());
        // b answers: its checks run, and what they find is judged with a's.
        let back = b.clone().status(next.status).build().plan();
        assert_eq!(kinds(&back), prepares(&["b"]));
        let job = finding(
            "scheduledJobs",
            FindingSeverity::Warning,
            "ScheduledJobDropped",
        );
        let judged = checked(b, &back, &[("b", job)]).build().plan();
        assert!(judged.actions.is_empty(), "{:?}", kinds(&judged));
        let msg = judged.status.message.unwrap_or_default();
        assert!(
            msg.starts_with("awaiting approval of prepare/c@2.0.0#"),
            "{msg}"
        );
    }

    #[test]
    fn a_backout_drops_the_preparation_of_the_target_it_leaves() {
        // Warnings of 2.0.0 await their acknowledgement; the target goes back to 1.0.0.
        let b = pair(PrepareWarnings::Acknowledge);
        let plan = b.clone().build().plan();
        let job = finding(
            "scheduledJobs",
            FindingSeverity::Warning,
            "ScheduledJobDropped",
        );
        let waiting = checked(b, &plan, &[("a", job)]).build().plan();
        let msg = waiting.status.message.clone().unwrap_or_default();
        assert!(msg.contains("prepare/c@2.0.0#"), "{msg}");
        let back = ClusterBuilder::pair("1.0.0")
            .running("1.0.0")
            .upgrade(|u| u.prepare = Some(policy(PrepareWarnings::Acknowledge)))
            .status(waiting.status)
            .build()
            .plan();
        assert_eq!(back.status.preparation, None);
        assert!(
            back.actions
                .iter()
                .all(|a| a.request.kind != OpKind::Prepare)
        );
        assert!(
            back.status
                .conditions
                .iter()
                .all(|c| c.type_ != "AwaitingApproval" || c.status == "False"),
            "{:?}",
            back.status.conditions
        );
    }

    #[test]
    fn the_digest_covers_who_found_which_warning_and_nothing_else() {
        let f = |member: &str, code: &str, severity, message: &str| PreparationFinding {
            member: member.into(),
            check: "scheduledJobs".into(),
            severity,
            code: code.into(),
            message: message.into(),
        };
        let w = FindingSeverity::Warning;
        let one = [f("a", "ScheduledJobDropped", w, "nightly")];
        let reworded = [f("a", "ScheduledJobDropped", w, "the nightly job")];
        let elsewhere = [f("b", "ScheduledJobDropped", w, "nightly")];
        let plus_blocking = [
            f("a", "ScheduledJobDropped", w, "nightly"),
            f("b", "GatewayDown", FindingSeverity::Blocking, "gw"),
        ];
        assert_eq!(digest(&one), digest(&reworded));
        assert_eq!(digest(&one), digest(&plus_blocking));
        assert_ne!(digest(&one), digest(&elsewhere));
        assert_ne!(digest(&one), digest(&[]));
        assert_eq!(digest(&one).len(), 12);
        let name = acknowledgement("web", "2.0.0", &digest(&one));
        assert_eq!(
            parse_acknowledgement(&name),
            Some(("web", "2.0.0", digest(&one).as_str()))
        );
        for bad in [
            "prepare/web@2.0.0",
            "prepare/@2.0.0#0123456789ab",
            "prepare/web@2.0.0#0123",
            "prepare/a/b@2.0.0#0123456789ab",
            "switchover/web/b@2.0.0",
        ] {
            assert_eq!(parse_acknowledgement(bad), None, "{bad}");
        }
    }
}
