//! The scale scenario: a two-member cluster resized under the write load, as a user would do
//! it, by editing its manifest. Once the fleet is Ready (nothing to upgrade), the first worker
//! gets a third member (its agent has run from the start, fresh and replicating from nobody),
//! declared `primary` with `upgrade.returnToPrimary`, so that once it has joined the cluster
//! switches over to it; then an original member (`m1`, the first active) is removed.
//!
//! What it shows, from the statuses and from the agents' side: the stages of the join and of
//! the removal as the cluster's status reported them, how long each edit took, the new member
//! caught up (every acknowledged write of the cluster read back from it), the writes lost and
//! the worst write unavailability, and the identities each member accepts at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;

use super::load::LoadResult;
use super::setup::{AgentEndpoint, Reach, Traffic};
use super::topology::{self, ManifestSettings, SCALED};
use super::watch::Watched;
use super::{Demo, Rollout, add_stats, row, write};
use crate::api::{Membership, TopologyStage};
use crate::reconcile::ClusterObject;

/// What is learnt about the resize while the loop runs, pass by pass.
#[derive(Clone, Debug, Default)]
pub struct ScaleWatch {
    pub cluster: String,
    pub added: String,
    pub removed: String,
    /// When the manifest declared the new member, and when it had joined (a plain member's
    /// record), and when it was the active.
    pub added_at: Option<Instant>,
    pub joined_at: Option<Instant>,
    pub active_at: Option<Instant>,
    /// When the manifest dropped the original member, and when its record went.
    pub removed_at: Option<Instant>,
    pub gone_at: Option<Instant>,
    /// The stages each change went through, in the order the status reported them.
    pub join_stages: Vec<TopologyStage>,
    pub leave_stages: Vec<TopologyStage>,
    /// Acknowledged writes of the cluster when the new member was declared.
    pub acked_before_join: u64,
}

impl ScaleWatch {
    /// Note what the scaled cluster's status says now.
    pub fn observe(&mut self, clusters: &[ClusterObject], at: Instant) {
        let Some(st) = clusters
            .iter()
            .find(|c| c.name == self.cluster)
            .and_then(|c| c.status.as_ref())
        else {
            return;
        };
        let record = |name: &str| st.members.iter().find(|m| m.name == name);
        if self.added_at.is_some() {
            match record(&self.added).map(|r| r.topology.as_ref()) {
                Some(Some(t)) if t.membership == Membership::Joining => {
                    note(&mut self.join_stages, t.stage);
                }
                Some(None) if self.joined_at.is_none() => self.joined_at = Some(at),
                _ => {}
            }
            if self.active_at.is_none() && st.active_member.as_deref() == Some(&self.added) {
                self.active_at = Some(at);
            }
        }
        if self.removed_at.is_some() {
            match record(&self.removed) {
                Some(r) => {
                    if let Some(t) = r.topology.as_ref()
                        && t.membership == Membership::Leaving
                    {
                        note(&mut self.leave_stages, t.stage);
                    }
                }
                None if self.gone_at.is_none() => self.gone_at = Some(at),
                None => {}
            }
        }
    }
}

fn note(stages: &mut Vec<TopologyStage>, s: TopologyStage) {
    if stages.last() != Some(&s) {
        stages.push(s);
    }
}

/// One member of the scaled cluster at the end, as its agent reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberIdentity {
    pub member: String,
    pub identity: String,
    /// The peers it accepts, name → identity.
    pub peers: Vec<(String, String)>,
    pub role: String,
    pub retired: bool,
    pub applied: u64,
}

/// What the scale scenario reports.
#[derive(Clone, Debug, Default)]
pub struct ScaleSummary {
    pub watch: ScaleWatch,
    /// Highest log index of an acknowledged write of the cluster.
    pub top_acked: u64,
    pub acked: u64,
    pub members: Vec<MemberIdentity>,
}

fn stages(s: &[TopologyStage]) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn secs(from: Option<Instant>, to: Option<Instant>) -> String {
    match (from, to) {
        (Some(f), Some(t)) => format!("{:.1} s", t.saturating_duration_since(f).as_secs_f64()),
        _ => "never".into(),
    }
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(8)]
}

/// The scale scenario's rows of the summary.
pub(super) fn print_scale(s: &ScaleSummary) {
    let w = &s.watch;
    row(
        "member added",
        format!(
            "{}/{}: joined {} after the edit ({}), active {} after it (returnToPrimary)",
            w.cluster,
            w.added,
            secs(w.added_at, w.joined_at),
            stages(&w.join_stages),
            secs(w.added_at, w.active_at),
        ),
    );
    let new = s.members.iter().find(|m| m.member == w.added);
    row(
        "new member",
        format!(
            "caught up: applied index {} of {} (highest acknowledged write); all {} \
             acknowledged writes of {} read back from it, {} of them written before it was \
             added",
            new.map_or(0, |m| m.applied),
            s.top_acked,
            s.acked,
            w.cluster,
            w.acked_before_join,
        ),
    );
    row(
        "member removed",
        format!(
            "{}/{}: gone {} after the edit ({})",
            w.cluster,
            w.removed,
            secs(w.removed_at, w.gone_at),
            stages(&w.leave_stages),
        ),
    );
    println!(
        "  identities           (each member's own, and the peers it accepts; SHA-256, 8 digits)"
    );
    for m in &s.members {
        let peers: Vec<String> = m
            .peers
            .iter()
            .map(|(p, fp)| format!("{p} {}", short(fp)))
            .collect();
        println!(
            "    {:<4} {} {:<13} accepts {}{}",
            m.member,
            short(&m.identity),
            m.role,
            if peers.is_empty() {
                "-".to_string()
            } else {
                peers.join(", ")
            },
            if m.retired { "  (retired)" } else { "" }
        );
    }
}

/// What is wrong with how the resize ended: the new member active and caught up, the removed
/// one retired and accepted by nobody, every remaining member accepting every other under its
/// own identity, both changes seen through.
pub fn scale_failures(s: &ScaleSummary) -> Vec<String> {
    let w = &s.watch;
    let mut out = Vec::new();
    for (what, at) in [
        ("joined", w.joined_at),
        ("the active", w.active_at),
        ("removed", w.gone_at),
    ] {
        if at.is_none() {
            let who = if what == "removed" {
                &w.removed
            } else {
                &w.added
            };
            out.push(format!("{}/{who} was never {what}", w.cluster));
        }
    }
    let find = |n: &str| s.members.iter().find(|m| m.member == n);
    match find(&w.added) {
        Some(m) if m.role != "Active" => {
            out.push(format!(
                "{}/{} ends {}, not Active",
                w.cluster, m.member, m.role
            ));
        }
        Some(m) if m.applied < s.top_acked => out.push(format!(
            "{}/{} applied up to {}, short of the acknowledged {}",
            w.cluster, m.member, m.applied, s.top_acked
        )),
        Some(_) => {}
        None => out.push(format!("{}/{} did not answer", w.cluster, w.added)),
    }
    match find(&w.removed) {
        Some(m) if !m.retired => {
            out.push(format!("{}/{} was not retired", w.cluster, m.member));
        }
        _ => {}
    }
    let remaining: Vec<&MemberIdentity> =
        s.members.iter().filter(|m| m.member != w.removed).collect();
    for m in &remaining {
        if m.peers.iter().any(|(p, _)| p == &w.removed) {
            out.push(format!(
                "{}/{} still accepts the removed {}",
                w.cluster, m.member, w.removed
            ));
        }
        for o in remaining.iter().filter(|o| o.member != m.member) {
            if !m
                .peers
                .iter()
                .any(|(p, fp)| p == &o.member && fp == &o.identity)
            {
                out.push(format!(
                    "{}/{} does not accept {} under its identity {}",
                    w.cluster,
                    m.member,
                    o.member,
                    short(&o.identity)
                ));
            }
        }
    }
    out
}

/// Where the manifests are, and what rewriting them needs.
pub(super) struct Manifests<'a> {
    pub(super) dir: &'a Path,
    pub(super) settings: &'a ManifestSettings,
    pub(super) agents: &'a [AgentEndpoint],
}

impl Demo {
    /// The scale rollout: the loop until the fleet is Ready, then the member added (and the
    /// loop until it settles), then an original member removed (and the loop again).
    pub(super) async fn scale(
        &mut self,
        manifests: &Manifests<'_>,
        state: &Path,
        reach: &Reach,
        traffic: &mut Traffic,
        deadline: Instant,
    ) -> anyhow::Result<(Rollout, Vec<String>)> {
        let tls = &reach.control_tls;
        let manifest_dir = manifests.dir;
        let mut stats = crate::local::RunnerStats::default();
        let mut failures = Vec::new();
        let phase1 = Timestamp::now();
        // 1. The fleet as it is: Baton adopts it (nothing to change).
        let (first, failure) = self
            .phase(manifest_dir, state, tls, traffic, deadline, false)
            .await?;
        add_stats(&mut stats, &first);
        failures.extend(failure.map(|e| format!("before the resize: {e}")));
        let c = self
            .layout
            .get(SCALED)
            .context("the scaled cluster")?
            .clone();
        let added = c.spare_agent.clone().context("the member to add")?;
        let removed = c.members.first().cloned().context("an original member")?;
        if failures.is_empty() && self.breached().is_empty() {
            // The load runs a while first: the new member has a backlog to catch up on.
            traffic.load.start();
            tokio::time::sleep(Duration::from_secs(2)).await;
            // 2. The new member declared, primary, with returnToPrimary.
            let acked_before_join = traffic
                .counters
                .iter()
                .find(|(n, _)| n == &c.name)
                .map_or(0, |(_, k)| {
                    k.acked.load(std::sync::atomic::Ordering::Relaxed)
                });
            if let Some(l) = self.layout.get_mut(SCALED) {
                l.members.push(added.clone());
                l.primary = Some(added.clone());
                l.return_to_primary = true;
                l.spare_agent = None;
            }
            self.scale = Some(ScaleWatch {
                cluster: c.name.clone(),
                added: added.clone(),
                removed: removed.clone(),
                added_at: Some(Instant::now()),
                acked_before_join,
                ..Default::default()
            });
            self.rewrite_clusters(manifests)?;
            self.line(&format!(
                "\n  scale: {added} added to cluster {} in {} (primary, returnToPrimary: it \
                 joins, then takes over)\n",
                c.name,
                manifest_dir.join("clusters.yaml").display()
            ));
            let (second, failure) = self
                .phase(manifest_dir, state, tls, traffic, deadline, false)
                .await?;
            add_stats(&mut stats, &second);
            failures.extend(failure.map(|e| format!("adding {added}: {e}")));
        }
        if failures.is_empty() && self.breached().is_empty() {
            // 3. An original member removed.
            if let Some(l) = self.layout.get_mut(SCALED) {
                l.members.retain(|m| m != &removed);
            }
            if let Some(w) = &mut self.scale {
                w.removed_at = Some(Instant::now());
            }
            self.rewrite_clusters(manifests)?;
            self.line(&format!(
                "\n  scale: {removed} removed from cluster {} in {}\n",
                c.name,
                manifest_dir.join("clusters.yaml").display()
            ));
            let (third, failure) = self
                .phase(manifest_dir, state, tls, traffic, deadline, false)
                .await?;
            add_stats(&mut stats, &third);
            failures.extend(failure.map(|e| format!("removing {removed}: {e}")));
        }
        if let Some(d) = &mut self.display {
            d.finish();
        }
        Ok((
            Rollout {
                phase1,
                phase2: None,
                stats,
            },
            failures,
        ))
    }

    /// `clusters.yaml` again, from the layout as it stands.
    fn rewrite_clusters(&self, m: &Manifests<'_>) -> anyhow::Result<()> {
        let find = |c: &str, name: &str| m.agents.iter().find(|a| a.0 == c && a.1 == name);
        let text = topology::clusters_yaml(
            &self.layout,
            |c, name| find(&c.name, name).map(|a| a.2.clone()).unwrap_or_default(),
            m.settings,
        );
        write(&m.dir.join("clusters.yaml"), &text)
    }

    /// After the load stopped: what each agent of the scaled cluster reports, and whether the
    /// resize ended as it must.
    pub(super) async fn check_scale(
        &self,
        watched: &[Watched],
        loads: &[LoadResult],
        summary: &mut super::Summary,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let Some(w) = self.scale.clone() else {
            failures.push("the resize never started".into());
            return Ok(());
        };
        let load = loads.iter().find(|l| l.cluster == w.cluster);
        let mut s = ScaleSummary {
            top_acked: load
                .and_then(|l| l.acked.iter().map(|a| a.index).max())
                .unwrap_or(0),
            acked: load.map_or(0, |l| l.acked.len() as u64),
            watch: w,
            members: Vec::new(),
        };
        for a in watched.iter().filter(|a| a.cluster == s.watch.cluster) {
            let st = a
                .client
                .status()
                .await
                .with_context(|| format!("reading the status of {}/{}", a.cluster, a.member))?;
            s.members.push(MemberIdentity {
                member: a.member.clone(),
                identity: st.identity.clone().unwrap_or_default(),
                peers: st.peers.into_iter().collect(),
                role: format!("{:?}", st.role),
                retired: st.retired,
                applied: st.replication.applied_index,
            });
        }
        failures.extend(scale_failures(&s));
        summary.scale = Some(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, peers: &[(&str, &str)]) -> MemberIdentity {
        MemberIdentity {
            member: name.into(),
            identity: format!("id-{name}"),
            peers: peers
                .iter()
                .map(|(p, f)| (p.to_string(), f.to_string()))
                .collect(),
            role: "Standby".into(),
            retired: false,
            applied: 10,
        }
    }

    /// m3 added and active, m1 removed and retired, m2 and m3 accepting each other.
    fn good() -> ScaleSummary {
        let now = Instant::now();
        let mut m3 = member("m3", &[("m2", "id-m2")]);
        m3.role = "Active".into();
        let mut m1 = member("m1", &[("m2", "id-m2"), ("m3", "id-m3")]);
        m1.retired = true;
        ScaleSummary {
            watch: ScaleWatch {
                cluster: "worker-1".into(),
                added: "m3".into(),
                removed: "m1".into(),
                added_at: Some(now),
                joined_at: Some(now),
                active_at: Some(now),
                removed_at: Some(now),
                gone_at: Some(now),
                ..Default::default()
            },
            top_acked: 10,
            acked: 10,
            members: vec![m1, member("m2", &[("m3", "id-m3")]), m3],
        }
    }

    #[test]
    fn a_resize_seen_through_passes() {
        assert_eq!(scale_failures(&good()), Vec::<String>::new());
    }

    #[test]
    fn each_way_a_resize_can_end_wrong_is_named() {
        let mut s = good();
        s.members[2].role = "Standby".into();
        assert!(scale_failures(&s)[0].contains("not Active"));
        let mut s = good();
        s.members[2].applied = 9;
        assert!(scale_failures(&s)[0].contains("short of the acknowledged 10"));
        let mut s = good();
        s.members[0].retired = false;
        assert!(scale_failures(&s)[0].contains("m1 was not retired"));
        let mut s = good();
        s.members[1].peers.push(("m1".into(), "id-m1".into()));
        assert!(scale_failures(&s)[0].contains("still accepts the removed m1"));
        let mut s = good();
        s.members[1].peers[0].1 = "id-other".into();
        assert!(scale_failures(&s)[0].contains("m2 does not accept m3"));
        let mut s = good();
        s.watch.gone_at = None;
        assert!(scale_failures(&s)[0].contains("m1 was never removed"));
        let mut s = good();
        s.watch.joined_at = None;
        assert!(scale_failures(&s)[0].contains("m3 was never joined"));
    }

    #[test]
    fn the_watch_notes_each_stage_once_and_when_each_change_ended() {
        use crate::api::{ClusterStatus, MemberStatus, MemberTopology};
        let rec = |name: &str, t: Option<(Membership, TopologyStage)>| MemberStatus {
            name: name.into(),
            topology: t.map(|(membership, stage)| MemberTopology {
                membership,
                stage,
                waiting: None,
                never_joined: false,
            }),
            ..Default::default()
        };
        let obj = |members: Vec<MemberStatus>, active: &str| ClusterObject {
            name: "worker-1".into(),
            labels: Default::default(),
            generation: None,
            spec: Default::default(),
            status: Some(ClusterStatus {
                members,
                active_member: Some(active.into()),
                ..Default::default()
            }),
            intents: Default::default(),
            ca: None,
        };
        let t0 = Instant::now();
        let mut w = ScaleWatch {
            cluster: "worker-1".into(),
            added: "m3".into(),
            removed: "m1".into(),
            added_at: Some(t0),
            ..Default::default()
        };
        let joining = |s| rec("m3", Some((Membership::Joining, s)));
        for (i, members) in [
            vec![rec("m1", None), joining(TopologyStage::CopyConfig)],
            vec![rec("m1", None), joining(TopologyStage::CopyConfig)],
            vec![rec("m1", None), joining(TopologyStage::Introduce)],
            vec![rec("m1", None), rec("m3", None)],
        ]
        .into_iter()
        .enumerate()
        {
            w.observe(&[obj(members, "m1")], t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(
            w.join_stages,
            [TopologyStage::CopyConfig, TopologyStage::Introduce]
        );
        assert_eq!(w.joined_at, Some(t0 + Duration::from_secs(3)));
        assert_eq!(w.active_at, None);
        w.observe(
            &[obj(vec![rec("m1", None), rec("m3", None)], "m3")],
            t0 + Duration::from_secs(4),
        );
        assert_eq!(w.active_at, Some(t0 + Duration::from_secs(4)));
        // Nothing about the removal before it was asked for.
        assert!(w.leave_stages.is_empty() && w.gone_at.is_none());
        w.removed_at = Some(t0 + Duration::from_secs(5));
        let leaving = rec("m1", Some((Membership::Leaving, TopologyStage::Retire)));
        w.observe(&[obj(vec![leaving, rec("m3", None)], "m3")], t0);
        w.observe(
            &[obj(vec![rec("m3", None)], "m3")],
            t0 + Duration::from_secs(7),
        );
        assert_eq!(w.leave_stages, [TopologyStage::Retire]);
        assert_eq!(w.gone_at, Some(t0 + Duration::from_secs(7)));
    }
}
