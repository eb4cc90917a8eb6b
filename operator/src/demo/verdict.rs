//! Judging the demo after the rollout, in the order `Demo::run` does it: stop the load and
//! read every acknowledged write back, the agents' own records (tier order and switchovers),
//! the writes, the final versions and phases against the scenario's expected outcome, and the
//! result.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::load::{self, LoadResult, Verification};
use super::setup::{Reach, Traffic};
use super::topology::Tier;
use super::watch::{self, ClusterRecords, Watched};
use super::{Demo, DemoEnd, Rollout, Scenario, Summary};
use crate::api::ClusterPhase;

impl Demo {
    /// Stop the load; read everything back: every acknowledged write from every member of
    /// its cluster. Then stop the split-brain watcher.
    pub(super) async fn stop_and_read_back(
        &self,
        traffic: Traffic,
        reach: &Reach,
        tls: &baton_agent::client::ClientTls,
    ) -> anyhow::Result<(Vec<LoadResult>, Vec<Verification>)> {
        self.stop_load.store(true, Ordering::Relaxed);
        let mut loads: Vec<LoadResult> = Vec::new();
        for w in traffic.load.running {
            loads.push(w.await.context("a writer task failed")?);
        }
        let mut verifications: Vec<Verification> = Vec::new();
        for l in &loads {
            // The members the cluster has now (one removed by the scale scenario stopped
            // receiving writes when it retired).
            let declared = self.layout.iter().find(|c| c.name == l.cluster);
            let members: Vec<(String, String)> = reach
                .data_members
                .iter()
                .find(|(c, _)| c == &l.cluster)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|(m, _)| declared.is_none_or(|c| c.members.contains(m)))
                .collect();
            verifications.push(load::verify(l, &members, tls, Duration::from_secs(20)).await);
        }
        self.stop_watch.store(true, Ordering::Relaxed);
        let _ = traffic.monitor.await;
        Ok((loads, verifications))
    }

    /// The agents' own records: tier order and switchovers. Starts the summary.
    pub(super) async fn read_records(
        &self,
        watched: &[Watched],
        rollout: &Rollout,
        started: Instant,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<(Vec<ClusterRecords>, Summary)> {
        let tiers: Vec<(String, Tier)> = self
            .layout
            .iter()
            .map(|c| (c.name.clone(), c.tier))
            .collect();
        let records = watch::fetch_records(watched, &tiers).await?;
        let mut summary = Summary {
            elapsed: started.elapsed(),
            switchovers: watch::switchovers(&records, rollout.phase1, None),
            passes: rollout.stats.passes,
            state_writes: rollout.stats.state_writes,
            actions: rollout.stats.actions,
            ..Default::default()
        };
        if matches!(self.opts.scenario, Scenario::RotateCa | Scenario::Scale) {
            // A rotation or a resize moves no tier: there is no tier order to check.
            return Ok((records, summary));
        }
        match watch::tier_order(&records, rollout.phase1, rollout.phase2, Tier::Management) {
            Ok(s) => summary.tier_order.push(format!("upgrade: {s}")),
            Err(e) => failures.push(e),
        }
        if let Some(p2) = rollout.phase2 {
            match watch::tier_order(&records, p2, None, Tier::Worker) {
                Ok(s) => summary.tier_order.push(format!("backout: {s}")),
                Err(e) => failures.push(e),
            }
        }
        Ok((records, summary))
    }

    /// Final versions as the agents report them, and the final phases from the state file,
    /// against the expected outcome of the scenario.
    pub(super) async fn check_final_state(
        &self,
        watched: &[Watched],
        state: &Path,
        summary: &mut Summary,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let o = &self.opts;
        let expected_final = |cluster: &str| -> &str {
            match o.scenario {
                Scenario::Upgrade => &o.to,
                Scenario::RotateCa | Scenario::Scale => &o.from,
                Scenario::Backout => &o.from,
                Scenario::Rollback if Some(cluster) == self.fault_cluster() => &o.from,
                Scenario::Rollback => &o.to,
            }
        };
        let phases = self.final_phases(state)?;
        for c in &self.layout {
            let mut versions = Vec::new();
            for w in watched.iter().filter(|w| w.cluster == c.name) {
                match w.client.status().await {
                    Ok(s) => versions.push((w.member.clone(), s.version)),
                    Err(e) => failures.push(format!("{}/{}: {e}", c.name, w.member)),
                }
            }
            let want = expected_final(&c.name);
            for (m, v) in &versions {
                if v != want {
                    failures.push(format!(
                        "{}/{m} runs {v}, expected {want} after the {} scenario",
                        c.name,
                        o.scenario.name()
                    ));
                }
            }
            let phase = phases
                .iter()
                .find(|(n, _)| n == &c.name)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            let want_phase = if Some(c.name.as_str()) == self.fault_cluster() {
                ClusterPhase::RolledBack
            } else {
                ClusterPhase::Ready
            };
            if phase != want_phase {
                failures.push(format!(
                    "cluster {} ended {phase:?}, expected {want_phase:?}",
                    c.name
                ));
            }
            summary
                .clusters
                .push((c.name.clone(), format!("{phase:?}"), versions));
        }
        Ok(())
    }

    /// The result: breaches first, then agents that exited, then the rest; the summary is
    /// printed either way.
    pub(super) fn conclude(
        &mut self,
        summary: &Summary,
        records: &[ClusterRecords],
        state: &Path,
        manifest_dir: &Path,
        mut failures: Vec<String>,
    ) -> anyhow::Result<DemoEnd> {
        for b in self.breached() {
            failures.insert(0, b);
        }
        let fleet = self.fleet.as_mut().context("agents")?;
        for (agent, how, log) in fleet.exited() {
            failures.push(format!("agent {agent} exited ({how}); log tail:\n{log}"));
        }
        self.print_summary(summary, records, state, manifest_dir);
        if failures.is_empty() {
            println!("\nresult: PASSED — every invariant held");
            Ok(DemoEnd::Passed)
        } else {
            println!("\nresult: FAILED");
            for f in &failures {
                println!("  breach: {f}");
            }
            Ok(DemoEnd::Failed(failures))
        }
    }
}

/// Writes: acknowledged, refused and lost per cluster, and the worst unavailability window.
pub(super) fn check_writes(
    loads: &[LoadResult],
    verifications: &[Verification],
    summary: &mut Summary,
    failures: &mut Vec<String>,
) {
    for (l, v) in loads.iter().zip(verifications) {
        summary.acked += l.acked.len() as u64;
        summary.refused += l.refused;
        summary.lost += v.lost.len();
        let worst = l.worst_window();
        if summary
            .worst_window
            .as_ref()
            .is_none_or(|(_, w)| worst > *w)
        {
            summary.worst_window = Some((l.cluster.clone(), worst));
        }
        if l.acked.is_empty() {
            failures.push(format!(
                "no write was acknowledged on cluster {}",
                l.cluster
            ));
        }
        if !v.lost.is_empty() {
            let sample: Vec<String> = v
                .lost
                .iter()
                .take(5)
                .map(|(k, m)| format!("{k} (missing on {})", m.join(", ")))
                .collect();
            failures.push(format!(
                "{} acknowledged writes lost on cluster {}: {}",
                v.lost.len(),
                l.cluster,
                sample.join("; ")
            ));
        }
        for (m, e) in &v.unreadable {
            failures.push(format!(
                "cannot read back the writes of cluster {} from {m}: {e}",
                l.cluster
            ));
        }
    }
}
