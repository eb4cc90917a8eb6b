//! Three real agents: one Active, two Standbys replicating over mutual TLS.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_agent::api::{Faults, Health, Role};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_reaches_every_member() -> TestResult {
    let fx = Fixture::new(&["m1", "m2", "m3"])?;
    let pki = &fx.pki;
    let m1 = fx.start_m1_active(&[]).await?;
    let mut followers = Vec::new();
    for name in ["m2", "m3"] {
        followers.push(
            fx.start(name, &["--role", "standby", "--source", &m1.data])
                .await?,
        );
    }

    // 4 concurrent writers x 125 writes, so the active's group commit is exercised.
    let writer = Arc::new(m1.data_client(pki.data_tls("m1")?)?);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..125 {
                let key = format!("w{w}-k{i}");
                let value = format!("value-{w}-{i}");
                if writer.put(&key, &value).await.is_ok() {
                    acked.push((key, value));
                }
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await?);
    }
    assert_eq!(
        acked.len(),
        500,
        "every write to a healthy active is acknowledged"
    );

    for f in &followers {
        wait_caught_up(f, &m1).await?;
    }
    let leader = m1.status().await?;
    assert_eq!(leader.role, Role::Active);
    assert!(leader.serving);
    assert_eq!(leader.replication.applied_index, 500);
    for f in &followers {
        let s = f.status().await?;
        assert_eq!(s.role, Role::Standby);
        assert!(!s.serving);
        assert_eq!(s.health, Health::Ok, "{:?}", s.alarms);
        assert_eq!(s.replication.lag_entries, 0);
        assert_eq!(s.replication.lag_seconds, 0.0);
        assert_eq!(s.replication.applied_index, 500);
        assert_eq!(s.replication.source.as_deref(), Some(m1.data.as_str()));
        assert_eq!(s.replication.source_version.as_deref(), Some("1.0.0"));
    }
    for agent in std::iter::once(&m1).chain(followers.iter()) {
        let reader = agent.data_client(pki.data_tls("m2")?)?;
        for (key, value) in &acked {
            let got = reader.get(key).await?;
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "{key} on {}",
                agent.name
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_measured_and_returns_to_zero() -> TestResult {
    let (fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let pki = &fx.pki;

    // A slow link: entries are applied 1.5 s after they were written.
    m2.client
        .set_faults(&Faults {
            replication_delay_ms: 1500,
            ..Faults::default()
        })
        .await?;
    let writer = m1.data_client(pki.data_tls("m1")?)?;
    for i in 0..20 {
        writer.put(&format!("k{i}"), "v").await?;
    }
    let seen = wait_until("m2 to report lag", Duration::from_secs(30), || async {
        let s = m2.client.status().await.ok()?;
        (s.replication.lag_entries > 0 && s.replication.lag_seconds > 0.0).then_some(s.replication)
    })
    .await?;
    assert!(seen.lag_entries <= 20);
    assert!(
        seen.lag_seconds < 30.0,
        "lag seconds is measured from write times: {seen:?}"
    );
    m2.client.set_faults(&Faults::default()).await?;
    wait_caught_up(&m2, &m1).await?;
    let s = m2.status().await?;
    assert_eq!(s.replication.lag_seconds, 0.0);
    assert_eq!(s.replication.applied_index, 20);
    Ok(())
}

/// A follower restarted while entries flow (force-standby and demote restart it) must resume
/// exactly after what it holds. Before the fix it read its head while the aborted previous
/// stream's last batch could still be queued in the store, asked the source for entries it
/// was about to append, and reported a replication conflict ("replicated entry N does not
/// follow local head N"), counted for good in `conflicts` (found by `baton demo`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_follower_under_load_never_reports_a_conflict() -> TestResult {
    use baton_agent::api::{DemoteRole, OperationKind, OperationRequest};
    use std::sync::atomic::{AtomicBool, Ordering};

    let (fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let pki = &fx.pki;

    // Bounded load: 4 writers, at most 20 s or 20,000 writes each.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = Arc::new(m1.data_client(pki.data_tls("m1")?)?);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (writer, stop) = (writer.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed)
                && n < 20_000
                && start.elapsed() < Duration::from_secs(20)
            {
                if writer.put(&format!("w{w}-{n}"), "v").await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut conflicts = 0;
    for i in 0..40 {
        let req = if i % 2 == 0 {
            OperationRequest::new(format!("fs-{i}"), OperationKind::ForceStandby)
                .with_source(m1.data.clone())
        } else {
            OperationRequest::new(format!("d-{i}"), OperationKind::Demote)
                .with_source(m1.data.clone())
                .with_role(DemoteRole::Standby)
        };
        m2.run_ok(&req).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        conflicts = m2.status().await?.replication.conflicts;
        if conflicts > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for t in tasks {
        written += t.await?;
    }
    assert!(written > 0);
    let s = m2.status().await?;
    assert_eq!(
        (conflicts, s.replication.conflicts),
        (0, 0),
        "alarms: {:?}",
        s.alarms
    );
    wait_caught_up(&m2, &m1).await?;
    Ok(())
}
