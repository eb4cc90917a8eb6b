//! Upgrade media staged ahead of the window (`upgrade.media`; the Active/Standby procedure
//! distributes the media to every server before the maintenance window and removes the old
//! media afterwards).
//!
//! Staging is not disruptive: a member keeps its role and serves while its media is copied, so
//! it runs outside maintenance windows and before the mesh admits the cluster (not while the
//! cluster is paused), at most `maxParallelPerSite` members of one site at a time. A member
//! whose next move is an upgrade to a version whose media it does not hold starts nothing
//! toward it (not even its forced standby or preflight) until the media is staged. Once every
//! member runs the target, the media of every other version is removed before the cluster
//! converges. A staging or removal that fails backs off and counts against the member like
//! any member step (`upgrade.retries`).
//!
//! Owns: starting `StageMedia` and `RemoveMedia` steps, the media gate of a member's moves.
//! May use: `state`, `view`, `gates`, `start`. Used by the pipeline (`super`), `member` (the
//! gate) and `converge` (the cleanup).

use std::collections::BTreeMap;

use crate::api::{MediaPolicy, MemberSpec, StepAction};

use super::gates;
use super::start;
use super::state::{NewStep, Pass, StepVersion};
use super::view;

fn policy<'a>(p: &Pass<'a>) -> Option<&'a MediaPolicy> {
    p.spec().upgrade.media.as_ref()
}

/// The versions `m` moves up to and whose media it does not hold yet, first move first.
fn unstaged(p: &Pass<'_>, m: &MemberSpec) -> Vec<String> {
    let (Some(a), Some(moves)) = (p.agent(&m.name), view::moves(p, m)) else {
        return vec![];
    };
    let mut out: Vec<String> = vec![];
    for mv in moves.iter().filter(|mv| !mv.down) {
        if !a.media.contains(&mv.version) && !out.contains(&mv.version) {
            out.push(mv.version.clone());
        }
    }
    out
}

/// Why `m` may not start toward an upgrade to `version` yet: its media is not staged.
pub(super) fn missing(p: &Pass<'_>, m: &MemberSpec, version: &str) -> Option<String> {
    policy(p)?;
    let a = p.agent(&m.name)?;
    (!a.media.iter().any(|v| v == version))
        .then(|| format!("{} waits for the media of {version} to be staged", m.name))
}

/// Stage what the members' upgrades need, per site within the bound.
pub(super) fn stage(p: &mut Pass<'_>) {
    let Some(policy) = policy(p) else {
        return;
    };
    let limit = policy.max_parallel_per_site.max(1);
    let site_of = |p: &Pass<'_>, member: &str| p.member_spec(member).and_then(|m| m.site.clone());
    let mut staging: BTreeMap<Option<String>, u32> = BTreeMap::new();
    for s in
        p.st.steps
            .iter()
            .filter(|s| s.action == StepAction::StageMedia)
    {
        *staging.entry(site_of(p, &s.member)).or_default() += 1;
    }
    let now = p.now();
    let mut waiting: Vec<String> = vec![];
    for m in p.in_group() {
        let Some(version) = unstaged(p, m).into_iter().next() else {
            continue;
        };
        if !gates::may_step_ahead(p, &m.name, now) {
            continue;
        }
        let n_site = staging.entry(m.site.clone()).or_default();
        if *n_site >= limit {
            waiting.push(m.name.clone());
            continue;
        }
        *n_site += 1;
        let mut n = NewStep::on(StepAction::StageMedia, &m.name);
        n.version = Some(StepVersion::whole(&version));
        n.message = format!("stage the media of {version} on {}", m.name);
        start::start(p, n);
    }
    if !waiting.is_empty() {
        p.wait(format!(
            "media staging waits for a free slot of its site (at most {limit} per site): {}",
            waiting.join(", ")
        ));
    }
}

/// Once every member runs the target: remove the media of every other version, one removal
/// per member at a time. True while a removal is owed (the cluster has not converged yet).
pub(super) fn cleanup(p: &mut Pass<'_>) -> bool {
    let Some(policy) = policy(p) else {
        return false;
    };
    if !policy.cleanup {
        return false;
    }
    let mut owed = false;
    let now = p.now();
    for m in p.in_group() {
        let Some(a) = p.agent(&m.name) else {
            continue;
        };
        let target = view::member_target(p, m);
        let keep = |v: &str| {
            crate::api::values::same_version(v, &a.version)
                || a.components.values().any(|c| c == v)
                || target.version == v
                || target.components.values().any(|c| c == v)
        };
        let Some(old) = a.media.iter().find(|v| !keep(v)).cloned() else {
            continue;
        };
        owed = true;
        if !gates::may_step_ahead(p, &m.name, now) {
            continue;
        }
        let mut n = NewStep::on(StepAction::RemoveMedia, &m.name);
        n.version = Some(StepVersion::whole(&old));
        n.message = format!("remove the old media of {old} from {}", m.name);
        start::start(p, n);
    }
    owed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::values::Duration;
    use crate::api::{ClusterPhase, ClusterStatus, Weekday};
    use crate::fixtures::cluster::{ClusterBuilder, observed};
    use crate::plan::cluster::ClusterPlan;
    use crate::plan::observe::OpKind;

    /// Cluster `c`: `a` (active) and `b`, `x` and `y` at sites one and two, from 1.0.0 to
    /// 2.0.0 with media staging (`per_site` at a time).
    fn four(per_site: u32) -> ClusterBuilder {
        ClusterBuilder::new("c")
            .members(["a", "b", "x", "y"])
            .version("2.0.0")
            .site("a", "one")
            .site("b", "one")
            .site("x", "two")
            .site("y", "two")
            .running("1.0.0")
            .upgrade(|u| {
                u.media = Some(MediaPolicy {
                    max_parallel_per_site: per_site,
                    cleanup: true,
                })
            })
    }

    fn started(plan: &ClusterPlan) -> Vec<(OpKind, String, String)> {
        plan.actions
            .iter()
            .map(|a| {
                (
                    a.request.kind,
                    a.member.clone(),
                    a.request.version.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn staging(members: &[&str]) -> Vec<(OpKind, String, String)> {
        members
            .iter()
            .map(|m| (OpKind::StageMedia, m.to_string(), "2.0.0".to_string()))
            .collect()
    }

    #[test]
    fn media_is_staged_per_site_within_the_bound_and_nothing_disruptive_starts_before_it() {
        let plan = four(1).build().plan();
        // One per site, and no preflight, forced standby or upgrade anywhere yet.
        assert_eq!(started(&plan), staging(&["a", "x"]));
        let msg = plan.status.message.clone().unwrap_or_default();
        assert!(msg.contains("stage-media a to 2.0.0"), "{msg}");
        let plan = four(2).build().plan();
        assert_eq!(started(&plan), staging(&["a", "b", "x", "y"]));
    }

    #[test]
    fn staging_runs_before_the_mesh_admits_the_cluster_and_outside_its_windows() {
        // Not admitted, and the only window opens on another day: staging still starts.
        let unadmitted = crate::fixtures::cluster::unadmitted("2.0.0");
        let plan = four(2)
            .admission(unadmitted.clone())
            .window(&[Weekday::Sun], "02:00", Duration::from_secs(3600))
            .build()
            .plan();
        assert_eq!(started(&plan), staging(&["a", "b", "x", "y"]));
        // Staged everywhere: the cluster waits for its turn and starts nothing else.
        let mut done = four(2).admission(unadmitted);
        for m in ["b", "x", "y"] {
            done = done.observe(observed(m).version("1.0.0").media(&["1.0.0", "2.0.0"]));
        }
        done = done.observe(
            observed("a")
                .version("1.0.0")
                .active()
                .media(&["1.0.0", "2.0.0"]),
        );
        let plan = done.build().plan();
        assert!(plan.actions.is_empty(), "{:?}", started(&plan));
        // Paused: nothing is staged.
        let plan = four(2).paused().build().plan();
        assert!(plan.actions.is_empty(), "{:?}", started(&plan));
    }

    #[test]
    fn a_member_whose_media_is_staged_moves_on_while_the_others_still_stage() {
        let plan = four(1)
            .observe(observed("b").version("1.0.0").media(&["2.0.0"]))
            .build()
            .plan();
        let got = started(&plan);
        // b holds its media: its own pipeline starts (held out of failover first); a and x
        // stage (one per site: b's site has a free slot again as b stages nothing).
        assert!(
            got.contains(&(OpKind::ForceStandby, "b".into(), String::new())),
            "{got:?}"
        );
        assert!(got.contains(&(OpKind::StageMedia, "a".into(), "2.0.0".into())));
        assert!(got.contains(&(OpKind::StageMedia, "x".into(), "2.0.0".into())));
        assert!(
            got.iter()
                .all(|(k, m, _)| *k != OpKind::Upgrade && (m == "b" || *k == OpKind::StageMedia)),
            "{got:?}"
        );
    }

    #[test]
    fn a_backout_needs_no_staged_media() {
        // Back from 2.0.0 to 1.0.0: the rollback restores the previous release.
        let plan = ClusterBuilder::pair("1.0.0")
            .running("2.0.0")
            .upgrade(|u| u.media = Some(MediaPolicy::default()))
            .build()
            .plan();
        assert!(
            started(&plan)
                .iter()
                .all(|(k, _, _)| *k != OpKind::StageMedia),
            "{:?}",
            started(&plan)
        );
        assert!(!plan.actions.is_empty(), "the backout starts");
    }

    #[test]
    fn old_media_is_removed_once_every_member_runs_the_target_and_then_the_cluster_is_ready() {
        let at_target = |media: &[&str]| {
            ClusterBuilder::pair("2.0.0")
                .running("2.0.0")
                .observe(observed("a").version("2.0.0").active().media(media))
                .observe(observed("b").version("2.0.0").media(media))
                .upgrade(|u| u.media = Some(MediaPolicy::default()))
                .status(ClusterStatus {
                    verified_target: Some("2.0.0".into()),
                    ..Default::default()
                })
        };
        let plan = at_target(&["1.0.0", "2.0.0"]).build().plan();
        let removals: Vec<(OpKind, String, String)> = ["a", "b"]
            .iter()
            .map(|m| (OpKind::RemoveMedia, m.to_string(), "1.0.0".to_string()))
            .collect();
        assert_eq!(started(&plan), removals);
        assert_ne!(plan.status.phase, ClusterPhase::Ready);
        let plan = at_target(&["2.0.0"]).build().plan();
        assert!(plan.actions.is_empty(), "{:?}", started(&plan));
        assert_eq!(plan.status.phase, ClusterPhase::Ready);
        // Without cleanup the old media stays.
        let plan = at_target(&["1.0.0", "2.0.0"])
            .upgrade(|u| {
                u.media = Some(MediaPolicy {
                    cleanup: false,
                    ..Default::default()
                })
            })
            .build()
            .plan();
        assert!(plan.actions.is_empty(), "{:?}", started(&plan));
        assert_eq!(plan.status.phase, ClusterPhase::Ready);
    }
}
