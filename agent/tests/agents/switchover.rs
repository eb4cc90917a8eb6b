//! Switchovers under write load lose no acknowledged write, and diverged logs are detected.

use crate::common;

use std::time::Duration;

use baton_agent::api::{Health, OperationKind, OperationRequest, OperationState, Role};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_load_loses_no_acknowledged_write() -> TestResult {
    let (fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let pki = &fx.pki;

    let load = WriteLoad::start(
        fx.data_clients(&[&m1, &m2])?,
        1_000_000,
        Duration::from_secs(240),
    );
    load.wait_acked(100).await?;
    let (demote1, promote1) = switchover(&m1, &m2, "s1").await?;
    let after_first = load.acked();
    load.wait_acked(after_first + 100).await?;
    let (demote2, promote2) = switchover(&m2, &m1, "s2").await?;
    let after_second = load.acked();
    load.wait_acked(after_second + 100).await?;
    let report = load.stop().await?;

    wait_caught_up(&m2, &m1).await?;
    let s1 = m1.status().await?;
    let s2 = m2.status().await?;
    assert_eq!(s1.role, Role::Active);
    assert!(s1.serving);
    assert_eq!(s2.role, Role::Standby);
    assert_eq!(s2.replication.source.as_deref(), Some(m1.data.as_str()));
    assert_eq!(s1.replication.conflicts + s2.replication.conflicts, 0);
    assert_eq!(s1.health, Health::Ok, "{:?}", s1.alarms);
    assert_eq!(s2.health, Health::Ok, "{:?}", s2.alarms);

    // Zero acknowledged writes lost, on either member.
    for agent in [&m1, &m2] {
        let reader = agent.data_client(pki.data_tls("m1")?)?;
        for (key, value) in &report.acked {
            assert_eq!(
                reader.get(key).await?.as_deref(),
                Some(value.as_str()),
                "{key} on {}",
                agent.name
            );
        }
    }
    assert!(report.acked.len() >= 300);
    assert!(!report.windows.is_empty(), "the writer saw the switchovers");
    eprintln!(
        "{} writes acknowledged in {} attempts; unavailability windows: {:?}",
        report.acked.len(),
        report.attempts,
        report.windows
    );

    // The records carry wall-clock times, so ordering across agents can be checked.
    for (demote, promote) in [(&demote1, &promote1), (&demote2, &promote2)] {
        let demoted_at = demote
            .finished_at
            .ok_or_else(|| err("demote has no end time"))?;
        assert!(demoted_at <= promote.started_at, "{demote:?} / {promote:?}");
    }
    let ops1 = m1.client.operations().await?;
    let kinds: Vec<_> = ops1
        .iter()
        .map(|r| (r.id.as_str(), r.kind, r.state))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "s1-demote",
                OperationKind::Demote,
                OperationState::Succeeded
            ),
            (
                "s2-promote",
                OperationKind::Promote,
                OperationState::Succeeded
            )
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_while_the_source_is_still_active() -> TestResult {
    let (_fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let rec = m2
        .run(&OperationRequest::new("p1", OperationKind::Promote))
        .await?;
    assert_eq!(rec.state, OperationState::Failed);
    assert!(rec.message.contains("still Active"), "{}", rec.message);
    assert_eq!(m2.status().await?.role, Role::Standby);
    assert_eq!(m1.status().await?.role, Role::Active);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_logs_raise_a_conflict_instead_of_merging() -> TestResult {
    let fx = Fixture::new(&["m1", "m2"])?;
    let pki = &fx.pki;
    let (mut m1, m2) = fx.active_standby(&[], &[]).await?;
    let w1 = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..10 {
        w1.put(&format!("common{i}"), "x").await?;
    }
    wait_caught_up(&m2, &m1).await?;

    // An unplanned failover: m1 dies, m2 is promoted without it, both take writes.
    m1.kill().await?;
    let rec = m2
        .run_ok(&OperationRequest::new("failover", OperationKind::Promote))
        .await?;
    assert!(rec.message.contains("unreachable"), "{}", rec.message);
    let w2 = m2.data_client(pki.data_tls("m2")?)?;
    w2.put("only-on-m2", "b").await?;
    m1.restart(&[]).await?;
    let w1 = m1.data_client(pki.data_tls("m1")?)?;
    w1.put("only-on-m1", "a").await?;

    // Rejoining m1 behind m2 must not silently merge the two histories.
    m1.run_ok(&OperationRequest::new("rejoin", OperationKind::Demote).with_source(&m2.data))
        .await?;
    let s = wait_until("m1 to report the conflict", CONVERGE, || async {
        let s = m1.client.status().await.ok()?;
        (s.replication.conflicts > 0).then_some(s)
    })
    .await?;
    assert_eq!(s.health, Health::Critical);
    assert!(has_alarm(&s, "Conflict"), "{:?}", s.alarms);
    let reader = m1.data_client(pki.data_tls("m1")?)?;
    assert_eq!(reader.get("only-on-m2").await?, None);
    assert_eq!(reader.get("only-on-m1").await?.as_deref(), Some("a"));
    // And the conflicted member refuses to be promoted.
    let rec = m1
        .run(&OperationRequest::new(
            "bad-promote",
            OperationKind::Promote,
        ))
        .await?;
    assert_eq!(rec.state, OperationState::Failed);
    let verify = m1
        .run(&OperationRequest::new("verify", OperationKind::Verify))
        .await?;
    assert_eq!(verify.state, OperationState::Failed);
    Ok(())
}
