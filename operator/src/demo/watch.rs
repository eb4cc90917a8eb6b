//! Invariants the demo checks from the agents' side — never from Baton's view of itself:
//! at most one Active member per cluster (polled live), tier order and switchover counts
//! (from the operation records every agent keeps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_agent::api::{OperationKind, OperationRecord, OperationState, Role};
use baton_agent::client::{AgentClient, CallPolicy, ClientTls};
use jiff::Timestamp;

use super::topology::Tier;

/// One member's agent, for the watchers.
#[derive(Clone)]
pub struct Watched {
    pub cluster: String,
    pub member: String,
    pub client: AgentClient,
}

pub fn clients(
    agents: &[(String, String, String)],
    tls: &ClientTls,
) -> anyhow::Result<Vec<Watched>> {
    let shared = tls
        .share()
        .map_err(|e| anyhow::anyhow!("agent client TLS settings: {e}"))?;
    agents
        .iter()
        .map(|(cluster, member, control)| {
            let client = AgentClient::with_shared(control, &shared)
                .map_err(|e| anyhow::anyhow!("agent client for {cluster}/{member}: {e}"))?
                .with_member(&format!("{cluster}/{member}"))
                .with_policy(CallPolicy {
                    timeout: Duration::from_secs(2),
                    retries: 1,
                    backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                });
            Ok(Watched {
                cluster: cluster.clone(),
                member: member.clone(),
                client,
            })
        })
        .collect()
}

async fn is_active(w: &Watched) -> bool {
    matches!(w.client.status().await, Ok(s) if s.role == Role::Active)
}

/// Poll every member's role until `stop`; record a breach when two members of one cluster
/// are Active at once. Polls of different members are not simultaneous, so a candidate pair
/// is confirmed by reading A, then B, then A again: A Active before and after B was seen
/// Active means both were Active at the moment B answered (a switchover always demotes the
/// old active before it promotes the new one, and takes far longer than three reads).
pub async fn split_brain_monitor(
    watched: Vec<Watched>,
    breaches: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut clusters: Vec<&str> = watched.iter().map(|w| w.cluster.as_str()).collect();
    clusters.dedup();
    while !stop.load(Ordering::Relaxed) {
        for c in &clusters {
            let members: Vec<&Watched> = watched.iter().filter(|w| w.cluster == *c).collect();
            let roles = futures::future::join_all(members.iter().map(|w| is_active(w))).await;
            let active: Vec<&Watched> = members
                .iter()
                .zip(roles)
                .filter(|(_, a)| *a)
                .map(|(w, _)| *w)
                .collect();
            if active.len() < 2 {
                continue;
            }
            let (a, b) = (active[0], active[1]);
            if is_active(a).await && is_active(b).await && is_active(a).await {
                let msg = format!(
                    "two Active members in cluster {c}: {} and {} (confirmed by reading {}, {}, {})",
                    a.member, b.member, a.member, b.member, a.member
                );
                if let Ok(mut v) = breaches.lock()
                    && !v.contains(&msg)
                {
                    v.push(msg);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The operation records of one cluster's members.
#[derive(Clone, Debug)]
pub struct ClusterRecords {
    pub cluster: String,
    pub tier: Tier,
    pub records: Vec<OperationRecord>,
}

/// Fetch every agent's operation records, grouped by cluster.
pub async fn fetch_records(
    watched: &[Watched],
    tiers: &[(String, Tier)],
) -> anyhow::Result<Vec<ClusterRecords>> {
    let all = futures::future::join_all(watched.iter().map(|w| w.client.operations())).await;
    let mut out: Vec<ClusterRecords> = tiers
        .iter()
        .map(|(c, t)| ClusterRecords {
            cluster: c.clone(),
            tier: *t,
            records: Vec::new(),
        })
        .collect();
    for (w, r) in watched.iter().zip(all) {
        let recs = r.map_err(|e| {
            anyhow::anyhow!(
                "reading the operation records of {}/{}: {e}",
                w.cluster,
                w.member
            )
        })?;
        if let Some(c) = out.iter_mut().find(|c| c.cluster == w.cluster) {
            c.records.extend(recs);
        }
    }
    Ok(out)
}

/// Successful promote operations started in `[from, to)`: the switchovers the agents saw.
pub fn switchovers(recs: &[ClusterRecords], from: Timestamp, to: Option<Timestamp>) -> usize {
    recs.iter()
        .flat_map(|c| c.records.iter())
        .filter(|r| in_phase(r, from, to))
        .filter(|r| r.kind == OperationKind::Promote && r.state == OperationState::Succeeded)
        .count()
}

fn in_phase(r: &OperationRecord, from: Timestamp, to: Option<Timestamp>) -> bool {
    r.started_at >= from && to.is_none_or(|t| r.started_at < t)
}

/// The tier order as the agents recorded it, for operations started in `[from, to)`: every
/// operation on a cluster of the `first` tier must have finished before any operation on a
/// cluster of the other tier started. `Ok` describes the gap, `Err` the breach.
pub fn tier_order(
    recs: &[ClusterRecords],
    from: Timestamp,
    to: Option<Timestamp>,
    first: Tier,
) -> Result<String, String> {
    let mut first_end: Option<(Timestamp, String)> = None;
    let mut second_start: Option<(Timestamp, String)> = None;
    for c in recs {
        for r in c.records.iter().filter(|r| in_phase(r, from, to)) {
            let who = format!("{} {} on {}", r.kind, r.id, r.member);
            if c.tier == first {
                // A record still running has not finished: it ends "now" at the earliest.
                let end = r.finished_at.unwrap_or_else(Timestamp::now);
                if first_end.as_ref().is_none_or(|(t, _)| end > *t) {
                    first_end = Some((end, who));
                }
            } else if second_start.as_ref().is_none_or(|(t, _)| r.started_at < *t) {
                second_start = Some((r.started_at, who));
            }
        }
    }
    let (first_name, second_name) = match first {
        Tier::Management => ("management", "workers"),
        Tier::Worker => ("workers", "management"),
    };
    match (first_end, second_start) {
        (Some((end, last)), Some((start, next))) if start < end => Err(format!(
            "tier order broken: {second_name} started ({next} at {start}) before {first_name} \
             finished ({last} at {end})"
        )),
        (Some((end, _)), Some((start, _))) => Ok(format!(
            "{second_name} started {:.1} s after {first_name} finished",
            (start.as_millisecond() - end.as_millisecond()) as f64 / 1000.0
        )),
        (None, _) => Err(format!("no operation recorded on the {first_name} tier")),
        (_, None) => Err(format!("no operation recorded on the {second_name} tier")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_agent::api::OperationParams;

    fn rec(member: &str, kind: OperationKind, start_s: i64, end_s: Option<i64>) -> OperationRecord {
        OperationRecord {
            id: format!("{member}.{kind}.{start_s}"),
            kind,
            params: OperationParams::default(),
            state: if end_s.is_some() {
                OperationState::Succeeded
            } else {
                OperationState::Running
            },
            progress: 100,
            message: String::new(),
            started_at: Timestamp::from_second(1_000 + start_s).expect("ts"),
            finished_at: end_s.map(|e| Timestamp::from_second(1_000 + e).expect("ts")),
            version_before: None,
            version_after: None,
            member: member.into(),
            findings: vec![],
        }
    }

    fn recs(mgmt: Vec<OperationRecord>, worker: Vec<OperationRecord>) -> Vec<ClusterRecords> {
        vec![
            ClusterRecords {
                cluster: "mgmt".into(),
                tier: Tier::Management,
                records: mgmt,
            },
            ClusterRecords {
                cluster: "worker-1".into(),
                tier: Tier::Worker,
                records: worker,
            },
        ]
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_000 + s).expect("ts")
    }

    #[test]
    fn tier_order_accepts_workers_after_management() {
        let r = recs(
            vec![
                rec("mgmt-m2", OperationKind::Upgrade, 1, Some(5)),
                rec("mgmt-m2", OperationKind::Promote, 6, Some(7)),
            ],
            vec![rec("worker-1-m2", OperationKind::Preflight, 9, Some(9))],
        );
        let ok = tier_order(&r, t(0), None, Tier::Management).expect("in order");
        assert!(ok.contains("2.0 s after"), "{ok}");
        assert_eq!(switchovers(&r, t(0), None), 1);
    }

    #[test]
    fn tier_order_names_the_overlap() {
        let r = recs(
            vec![rec("mgmt-m1", OperationKind::Upgrade, 1, Some(8))],
            vec![rec("worker-1-m2", OperationKind::Upgrade, 5, Some(9))],
        );
        let e = tier_order(&r, t(0), None, Tier::Management).expect_err("overlap");
        assert!(e.contains("worker-1-m2") && e.contains("mgmt-m1"), "{e}");
        // A running management operation also ends after any worker start.
        let r = recs(
            vec![rec("mgmt-m1", OperationKind::Upgrade, 1, None)],
            vec![rec("worker-1-m2", OperationKind::Upgrade, 5, Some(9))],
        );
        assert!(tier_order(&r, t(0), None, Tier::Management).is_err());
    }

    #[test]
    fn phases_split_upgrade_from_backout() {
        // Upgrade: management 1..4, workers 5..8. Backout from 10: workers 11..14, mgmt 15..18.
        let r = recs(
            vec![
                rec("mgmt-m1", OperationKind::Upgrade, 1, Some(4)),
                rec("mgmt-m1", OperationKind::Rollback, 15, Some(18)),
            ],
            vec![
                rec("worker-1-m1", OperationKind::Upgrade, 5, Some(8)),
                rec("worker-1-m1", OperationKind::Rollback, 11, Some(14)),
            ],
        );
        assert!(tier_order(&r, t(0), Some(t(10)), Tier::Management).is_ok());
        assert!(tier_order(&r, t(10), None, Tier::Worker).is_ok());
        // Over the whole run, neither order holds.
        assert!(tier_order(&r, t(0), None, Tier::Management).is_err());
        assert!(tier_order(&r, t(0), None, Tier::Worker).is_err());
        assert!(tier_order(&r, t(20), None, Tier::Worker).is_err());
    }
}
