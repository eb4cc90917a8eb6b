//! What is recorded before anything is decided: the status bookkeeping of a pass. A new target
//! closes the rollout to the old one (and clears its automatic rollback); a retry intent is
//! acknowledged once; every member record is rebuilt from observation, keeping what only the
//! status knows; a cluster Baton never acted on that already runs its target is adopted.
//!
//! Owns: `status.members` (rebuilt), `activeMember`, `runningVersions`, `acknowledged`, the
//! retry's log entry and event (and what a retry clears: failures, an automatic rollback,
//! worse health accepted, a blocked preparation run again), and the first-apply rule.
//!
//! May use: `state`, `view`, `log`, `plan::software`. Used by the pipeline (`super`) only.

use crate::api::{
    AlarmStatus, FindingSeverity, Health, LogMode, LogResult, MemberRole, MemberSpec, MemberStatus,
    OperationStatus, PreparationStatus, values::cmp_versions,
};
use crate::plan::observe::{AgentView, OpState};
use crate::plan::software::{effective_version, hosted, running, same_software, spec_target};

use super::log;
use super::state::{Pass, verify_token};
use super::view;

/// A new target supersedes the rollout to the old one, and its automatic rollback.
pub(super) fn supersede(p: &mut Pass<'_>) {
    log::close_superseded(p);
    if let Some(rb) = &p.st.rolled_back
        && rb.version != p.target.version
    {
        p.st.rolled_back = None;
    }
}

/// A retry request (once per token): clear failures and an automatic rollback.
pub(super) fn apply_retry_intent(p: &mut Pass<'_>) {
    let Some(token) = &p.inp.intents.retry else {
        return;
    };
    let ack = format!("retry:{token}");
    if p.st.acknowledged.contains(&ack) {
        return;
    }
    for m in &mut p.st.members {
        m.failures = 0;
        m.next_attempt_at = None;
        m.last_error = None;
    }
    // A mesh task that failed for good starts over (its attempts count on).
    for t in &mut p.st.tasks {
        if t.state != crate::api::TaskState::Succeeded {
            t.state = crate::api::TaskState::Pending;
            t.failures = 0;
            t.next_attempt_at = None;
        }
    }
    let had_rollback = p.st.rolled_back.take().is_some();
    // Worse health after the rollout is accepted: the cluster converges.
    let accepted = match p.st.health.as_mut() {
        Some(h) if !h.findings.is_empty() && !h.accepted => {
            h.accepted = true;
            true
        }
        _ => false,
    };
    let rerun = rerun_preparation(p);
    acknowledge(p, ack);
    let msg = if had_rollback {
        "retry requested: automatic rollback cleared"
    } else if rerun {
        "retry requested: the preparation checks run again"
    } else if accepted {
        "retry requested: the worse health after the rollout accepted"
    } else {
        "retry requested: failures cleared"
    };
    log::record_done(p, "retry", LogMode::Manual, msg, LogResult::Succeeded, "");
    p.event(false, "RetryRequested", msg.to_string());
}

/// A retry intent on a preparation with blocking findings (`upgrade.prepare`): the results
/// are dropped and every member runs its checks again (the cause may have been fixed
/// anywhere). True when there was something to run again.
fn rerun_preparation(p: &mut Pass<'_>) -> bool {
    let Some(st) = p.st.preparation.as_mut() else {
        return false;
    };
    if !st
        .findings
        .iter()
        .any(|f| f.severity == FindingSeverity::Blocking)
    {
        return false;
    }
    *st = PreparationStatus {
        version: std::mem::take(&mut st.version),
        ..Default::default()
    };
    true
}

/// Remember an intent as acted on (the last 32).
pub(super) fn acknowledge(p: &mut Pass<'_>, token: String) {
    p.st.acknowledged.push(token);
    let n = p.st.acknowledged.len();
    if n > 32 {
        p.st.acknowledged.drain(..n - 32);
    }
}

/// Rebuild per-member status from the observation, keeping what only the status knows.
pub(super) fn refresh_members(p: &mut Pass<'_>) {
    // What only the status knows, by member name (the last record of a name counts).
    let mut old: Vec<Option<MemberStatus>> = std::mem::take(&mut p.st.members)
        .into_iter()
        .map(Some)
        .collect();
    let spec_members = &p.spec().members;
    let mut out = Vec::with_capacity(spec_members.len());
    for (i, m) in spec_members.iter().enumerate() {
        let found = old
            .iter()
            .rposition(|o| o.as_ref().is_some_and(|o| o.name == m.name));
        // A name listed twice (an invalid spec) gets the record twice.
        let again = spec_members[i + 1..].iter().any(|n| n.name == m.name);
        let prev = match found {
            Some(k) if again => old[k].clone(),
            Some(k) => old[k].take(),
            None => None,
        };
        out.push(member_record(p, m, prev));
    }
    // Members that join have a record too (the stages read only the joined ones).
    for name in &p.topo.joining {
        let Some(m) = p.declared().members.iter().find(|m| &m.name == name) else {
            continue;
        };
        let prev = old
            .iter_mut()
            .rev()
            .find(|o| o.as_ref().is_some_and(|o| &o.name == name))
            .and_then(Option::take);
        out.push(member_record(p, m, prev));
    }
    p.st.members = out;
    summarize_members(p);
}

/// One member's record: the last one (or a new one) brought up to date with observation.
fn member_record(p: &Pass<'_>, m: &MemberSpec, prev: Option<MemberStatus>) -> MemberStatus {
    let mut ms = prev.unwrap_or_else(|| MemberStatus {
        name: m.name.clone(),
        ..Default::default()
    });
    match p.agent(&m.name) {
        Some(a) => observed(p, &mut ms, a),
        None => {
            ms.role = MemberRole::Unreachable;
            ms.serving = false;
            ms.health = Health::Offline;
            ms.last_error = p
                .obs(&m.name)
                .and_then(|o| o.error.clone())
                .or(ms.last_error);
        }
    }
    if ms.failures >= p.spec().upgrade.retries.limit {
        ms.role = MemberRole::Zombie;
    }
    // Runs exactly the cluster's target software (version and every hosted component), not
    // what an automatic rollback restores; unknown (false) while the member is unreachable or
    // the target is not known.
    ms.up_to_date = !p.target.version.is_empty()
        && p.agent(&m.name).is_some_and(|a| {
            let target = spec_target(p.spec(), m, &p.target.order, &p.target.version);
            same_software(&running(a, &target), &target)
        });
    ms
}

/// Media versions a member record shows (an agent keeps at most 8).
const MEDIA_SHOWN: usize = 16;

/// What the agent says about a reachable member.
fn observed(p: &Pass<'_>, ms: &mut MemberStatus, a: &AgentView) {
    let version = effective_version(p.spec(), &a.version, &a.components);
    if let Some(prev) = &ms.version
        && prev != &version
    {
        ms.previous_version = Some(prev.clone());
    }
    ms.version = Some(version);
    ms.components = a.components.clone();
    ms.role = a.role;
    ms.serving = a.serving;
    ms.health = a.health;
    // Whole seconds: sub-second jitter under live traffic is not news, and a converged
    // cluster must not rewrite its status on every look.
    ms.lag_seconds = a.lag_seconds.max(0.0).floor();
    ms.backlog = a.backlog;
    ms.conflicts = a.conflicts;
    ms.media = a.media.iter().take(MEDIA_SHOWN).cloned().collect();
    ms.alarms = a
        .alarms
        .iter()
        .map(|al| AlarmStatus {
            code: al.code.clone(),
            name: al.name.clone(),
            severity: al.severity,
            expected: expected_alarm(&al.name),
        })
        .collect();
    ms.operation = a.operation.as_ref().map(|o| OperationStatus {
        id: o.id.clone(),
        kind: o.kind.clone(),
        state: format!("{:?}", o.state),
        progress: o.progress,
        message: (!o.message.is_empty()).then(|| o.message.clone()),
    });
}

/// `activeMember` and `runningVersions` from the member records.
fn summarize_members(p: &mut Pass<'_>) {
    p.st.active_member =
        p.st.members
            .iter()
            .find(|m| m.role == MemberRole::Active)
            .map(|m| m.name.clone());
    // A member joining is not the cluster's yet, one leaving before it joined never was: what
    // they run does not make the cluster part-way (the mesh reads this to admit clusters).
    let mut versions: Vec<String> =
        p.st.members
            .iter()
            .filter(|m| {
                // `topology` is still last pass's here (marked after): a record joining then
                // and not declared now has given up its join.
                !p.topo.is_joining(&m.name)
                    && !m.topology.as_ref().is_some_and(|t| {
                        t.never_joined || t.membership == crate::api::Membership::Joining
                    })
            })
            .filter_map(|m| m.version.clone())
            .collect();
    versions.sort_by(|a, b| cmp_versions(a, b));
    versions.dedup();
    p.st.running_versions = (!versions.is_empty()).then(|| versions.join(","));
}

/// The first-apply rule: a cluster Baton has never acted on (no log entry, no step, no
/// rollback: `next_log_id` is 0) whose members all already run the target, each in a plain
/// role (exactly one Active, the others Standby or Spare) with no operation running, owes
/// nothing. The configuration re-apply and the verifications belong to a version change Baton
/// makes; here none was made, so they are recorded as done and the cluster goes Ready without
/// a step (before this rule, a first apply of 200 converged clusters ran sync-config and
/// verify on each, one mesh stagger apart).
///
/// A member held in forced standby, an operation running or an unreachable member means a
/// rollout may be part-way (a status lost mid-rollout): the rule does not apply and the usual
/// pipeline decides from observation.
pub(super) fn adopt_converged(p: &mut Pass<'_>) {
    if p.st.next_log_id != 0 || !p.st.steps.is_empty() || p.st.rolled_back.is_some() {
        return;
    }
    let Ok(Some(active)) = view::active(p) else {
        return;
    };
    let spec = p.spec();
    let mut owed: Vec<(String, String, Vec<String>)> = Vec::new();
    for m in &spec.members {
        let Some(a) = p.agent(&m.name) else {
            return;
        };
        let plain = matches!(
            a.role,
            MemberRole::Active | MemberRole::Standby | MemberRole::Spare
        );
        let running = a
            .operation
            .as_ref()
            .is_some_and(|o| o.state == OpState::Running);
        if !plain || running || !view::at_target(p, m) {
            return;
        }
        let target = view::member_target(p, m);
        let tokens = hosted(spec, m, &p.target.order)
            .into_iter()
            .filter_map(|c| target.components.get(c).map(|v| verify_token(Some(c), v)))
            .collect();
        owed.push((m.name.clone(), target.key(), tokens));
    }
    let active_key = view::target_key(p, active);
    for (name, key, tokens) in owed {
        if let Some(ms) = p.record_mut(&name) {
            ms.config_synced = Some(key.clone());
            for t in tokens {
                if !ms.verified.contains(&t) {
                    ms.verified.push(t);
                }
            }
        }
    }
    p.st.verified_target = active_key;
}

/// Alarms that are normal while a rollout runs, as the source procedures list them.
pub fn expected_alarm(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "forcedstandby",
        "forced standby",
        "forced-standby",
        "mixedversion",
        "mixed version",
        "mixed-version",
        "upgradeinprogress",
        "upgrade in progress",
        "upgrade-in-progress",
        "replicationinhibited",
        "replication inhibited",
    ]
    .iter()
    .any(|k| n.replace(['_'], "").contains(k))
}

#[cfg(test)]
mod tests {
    use super::super::testing::recorded;
    use super::*;
    use crate::fixtures::cluster::{ClusterBuilder, observed};

    fn with_failures(n: u32) -> MemberStatus {
        MemberStatus {
            name: "b".into(),
            failures: n,
            preflight_passed: Some("2.0.0".into()),
            version: Some("0.9.0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn member_records_follow_observation_and_keep_what_only_the_status_knows() {
        let case = ClusterBuilder::new("c")
            .members(["a", "b", "x"])
            .version("2.0.0")
            .running("1.0.0")
            .observe(observed("b").version("2.0.0").lag(2.7))
            .unreachable("x")
            .with_status(|st| st.members = vec![with_failures(1)])
            .build();
        let input = case.input();
        let p = recorded(&input);
        let b = p.record("b").unwrap();
        assert_eq!(b.version.as_deref(), Some("2.0.0"));
        assert_eq!(b.previous_version.as_deref(), Some("0.9.0"));
        assert_eq!(
            (b.failures, b.preflight_passed.as_deref()),
            (1, Some("2.0.0"))
        );
        assert_eq!(b.lag_seconds, 2.0, "whole seconds");
        assert!(b.up_to_date);
        let x = p.record("x").unwrap();
        assert_eq!(
            (x.role, x.health),
            (MemberRole::Unreachable, Health::Offline)
        );
        assert_eq!(x.last_error.as_deref(), Some("connection refused"));
        assert_eq!(p.st.active_member.as_deref(), Some("a"));
        assert_eq!(p.st.running_versions.as_deref(), Some("1.0.0,2.0.0"));
    }

    #[test]
    fn a_member_at_the_retry_limit_is_zombie_until_a_retry_clears_it_once() {
        let zombie = || {
            ClusterBuilder::pair("2.0.0")
                .running("1.0.0")
                .with_status(|st| st.members = vec![with_failures(3)])
        };
        let case = zombie().build();
        let input = case.input();
        assert_eq!(
            recorded(&input).record("b").unwrap().role,
            MemberRole::Zombie
        );

        let case = zombie().retry("t1").build();
        let input = case.input();
        let p = recorded(&input);
        assert_eq!(p.record("b").unwrap().role, MemberRole::Standby);
        assert_eq!(p.st.acknowledged, ["retry:t1"]);
        assert!(p.events.iter().any(|e| e.reason == "RetryRequested"));
        // The same token again (acknowledged in the status) does nothing.
        let case = zombie()
            .retry("t1")
            .with_status(|st| st.acknowledged = vec!["retry:t1".into()])
            .build();
        let input = case.input();
        let p = recorded(&input);
        assert_eq!(p.record("b").unwrap().role, MemberRole::Zombie);
        assert!(p.events.is_empty());
    }

    #[test]
    fn a_cluster_first_seen_at_its_target_owes_no_config_or_verification() {
        let case = ClusterBuilder::pair("2.0.0").running("2.0.0").build();
        let input = case.input();
        let p = recorded(&input);
        assert_eq!(p.st.verified_target.as_deref(), Some("2.0.0"));
        assert_eq!(
            p.record("b").unwrap().config_synced.as_deref(),
            Some("2.0.0")
        );
        // Not when a member is held in forced standby (a rollout may be part-way).
        let case = ClusterBuilder::pair("2.0.0")
            .running("2.0.0")
            .observe(
                observed("b")
                    .version("2.0.0")
                    .role(MemberRole::ForcedStandby),
            )
            .build();
        let input = case.input();
        assert_eq!(recorded(&input).st.verified_target, None);
    }
}
