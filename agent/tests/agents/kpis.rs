//! KPIs of the demo backend: what a member really does (writes accepted and refused on the
//! data port, operations that failed, its replication lag), and the `kpiOffsets` fault that
//! injects a regression, through `PUT /v1/faults` and `--kpi-offset`.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_agent::api::{
    Faults, MemberStatus, OperationKind as K, OperationRequest as Req, OperationState, kpi_names,
};
use baton_agent::data::DataError;
use common::*;

/// The KPI `name` of `status` (NaN when absent, which no assertion on a number accepts).
fn kpi(status: &MemberStatus, name: &str) -> f64 {
    status.kpis.get(name).copied().unwrap_or(f64::NAN)
}

/// The four demo KPIs, by name.
fn demo_names(status: &MemberStatus) -> Vec<&str> {
    status.kpis.keys().map(String::as_str).collect()
}

fn sorted_demo_names() -> Vec<&'static str> {
    let mut names = kpi_names::DEMO.to_vec();
    names.sort_unstable();
    names
}

/// An Active member and its standby: writeRate rises with a burst of writes on the Active
/// and stays 0 on the standby, which counts the writes it refuses; a failed operation counts
/// in errorCount; replicationLag is the lag the status reports. Counters restart from zero
/// with the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_kpis_count_what_the_members_do() -> TestResult {
    let (fx, m1, mut m2) = Fixture::new_caught_up_pair(&["--task-seconds", "0"], &[]).await?;
    for agent in [&m1, &m2] {
        let s = agent.status().await?;
        assert_eq!(demo_names(&s), sorted_demo_names(), "{}", agent.name);
        for name in kpi_names::DEMO {
            assert_eq!(kpi(&s, name), 0.0, "{} {name}: {:?}", agent.name, s.kpis);
        }
    }
    let data = fx.data_clients(&[&m1, &m2])?;

    // A burst of writes on the Active: all of them within the window of 10 s.
    let burst = 50;
    let started = Instant::now();
    for i in 0..burst {
        data[0].put(&format!("k{i}"), "v").await?;
    }
    let s1 = m1.status().await?;
    let within_window = started.elapsed() < Duration::from_secs(9);
    let rate = kpi(&s1, kpi_names::WRITE_RATE);
    assert!(rate > 0.0 && rate <= 5.0, "{rate}");
    if within_window {
        assert_eq!(rate, f64::from(burst) / 10.0, "{burst} writes over 10 s");
    }
    assert_eq!(kpi(&s1, kpi_names::REFUSED_WRITES), 0.0);
    wait_caught_up(&m2, &m1).await?;
    let s2 = m2.status().await?;
    assert_eq!(
        kpi(&s2, kpi_names::WRITE_RATE),
        0.0,
        "a standby serves no writes, though it applied {burst}"
    );

    // Writes sent to the standby are refused, and counted there only.
    for i in 0..3 {
        let e = refused(data[1].put(&format!("r{i}"), "v"), "standby took a write").await?;
        assert!(matches!(e, DataError::NotActive { .. }), "{e}");
    }
    let s2 = m2.status().await?;
    assert_eq!(kpi(&s2, kpi_names::REFUSED_WRITES), 3.0, "{:?}", s2.kpis);
    assert_eq!(
        kpi(&m1.status().await?, kpi_names::REFUSED_WRITES),
        0.0,
        "the Active refused nothing"
    );

    // A failed operation counts in errorCount; a successful one does not.
    m1.client
        .set_faults(&Faults {
            fail_tasks: vec!["flaky".into()],
            ..Faults::default()
        })
        .await?;
    let failed = m1
        .run(&Req::new("flaky-1", K::Task).with_task("flaky"))
        .await?;
    assert_eq!(failed.state, OperationState::Failed, "{failed:?}");
    m1.run_ok(&Req::new("fine-1", K::Task).with_task("fine"))
        .await?;
    let s1 = m1.status().await?;
    assert_eq!(kpi(&s1, kpi_names::ERROR_COUNT), 1.0, "{:?}", s1.kpis);
    // The same failed id again is answered from the journal: nothing runs, nothing counts.
    m1.client
        .submit(&Req::new("flaky-1", K::Task).with_task("flaky"))
        .await?;
    assert_eq!(kpi(&m1.status().await?, kpi_names::ERROR_COUNT), 1.0);
    assert_eq!(kpi(&m2.status().await?, kpi_names::ERROR_COUNT), 0.0);

    // replicationLag is the status's own lagSeconds: make the standby lag behind.
    m2.client
        .set_faults(&Faults {
            replication_delay_ms: 2_000,
            ..Faults::default()
        })
        .await?;
    data[0].put("late", "v").await?;
    let lagging = wait_until("m2 to report a replication lag", CONVERGE, || async {
        let s = m2.client.status().await.ok()?;
        (s.replication.lag_seconds > 0.0).then_some(s)
    })
    .await?;
    assert_eq!(
        kpi(&lagging, kpi_names::REPLICATION_LAG),
        lagging.replication.lag_seconds
    );
    assert_eq!(kpi(&m1.status().await?, kpi_names::REPLICATION_LAG), 0.0);
    m2.client.set_faults(&Faults::default()).await?;
    wait_caught_up(&m2, &m1).await?;
    assert_eq!(kpi(&m2.status().await?, kpi_names::REPLICATION_LAG), 0.0);

    // Counted since the agent started: a restarted standby starts again from zero.
    m2.restart(&[]).await?;
    let s2 = m2.status().await?;
    assert_eq!(kpi(&s2, kpi_names::REFUSED_WRITES), 0.0, "{:?}", s2.kpis);
    Ok(())
}

/// `kpiOffsets` (`PUT /v1/faults`) and `--kpi-offset` add to the reported KPIs and create
/// the ones the member does not report; bad offsets are refused with a 400 and change
/// nothing; a bad flag stops the agent at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpi_offsets_shift_the_reported_kpis() -> TestResult {
    let fx = Fixture::new(&["m1", "m2"])?;
    let m1 = fx
        .start_m1_active(&[
            "--kpi-offset",
            "errorCount=5",
            "--kpi-offset",
            "latencyMs=40.5",
        ])
        .await?;
    let s = m1.status().await?;
    assert_eq!(kpi(&s, kpi_names::ERROR_COUNT), 5.0, "{:?}", s.kpis);
    assert_eq!(kpi(&s, "latencyMs"), 40.5);
    assert_eq!(kpi(&s, kpi_names::REFUSED_WRITES), 0.0);
    assert_eq!(s.kpis.len(), 5, "{:?}", s.kpis);
    let from_flags: BTreeMap<String, f64> =
        BTreeMap::from([("errorCount".into(), 5.0), ("latencyMs".into(), 40.5)]);
    assert_eq!(m1.client.faults().await?.kpi_offsets, from_flags);

    // PUT replaces the whole set: the flags' offsets are gone, the new ones apply.
    let offsets = BTreeMap::from([
        (kpi_names::WRITE_RATE.to_string(), -1.0),
        (kpi_names::REFUSED_WRITES.to_string(), 2.5),
    ]);
    let faults = Faults {
        kpi_offsets: offsets.clone(),
        ..Faults::default()
    };
    m1.client.set_faults(&faults).await?;
    assert_eq!(m1.client.faults().await?, faults);
    let s = m1.status().await?;
    assert_eq!(demo_names(&s), sorted_demo_names(), "latencyMs is gone");
    assert_eq!(kpi(&s, kpi_names::WRITE_RATE), -1.0);
    assert_eq!(kpi(&s, kpi_names::REFUSED_WRITES), 2.5);
    assert_eq!(kpi(&s, kpi_names::ERROR_COUNT), 0.0);
    // The offset adds to the measured value.
    let data = fx.data_clients(&[&m1])?;
    let started = Instant::now();
    for i in 0..20 {
        data[0].put(&format!("k{i}"), "v").await?;
    }
    let rate = kpi(&m1.status().await?, kpi_names::WRITE_RATE);
    if started.elapsed() < Duration::from_secs(9) {
        assert_eq!(rate, 1.0, "20 writes over 10 s, minus 1");
    } else {
        assert!(rate > -1.0, "{rate}");
    }

    // Refused: a bad name, non-finite values (sent as null), too many new names.
    let mut too_many: BTreeMap<String, f64> = (0..29).map(|i| (format!("k{i}"), 1.0)).collect();
    let bad: [(BTreeMap<String, f64>, &str); 5] = [
        (BTreeMap::from([("9lives".into(), 1.0)]), "invalid_param"),
        (
            BTreeMap::from([("write rate".into(), 1.0)]),
            "invalid_param",
        ),
        (
            BTreeMap::from([("writeRate".into(), f64::NAN)]),
            "invalid_request",
        ),
        (
            BTreeMap::from([("writeRate".into(), f64::INFINITY)]),
            "invalid_request",
        ),
        (std::mem::take(&mut too_many), "invalid_param"),
    ];
    for (kpi_offsets, code) in bad {
        let what = format!("{kpi_offsets:?}");
        let e = refused(
            m1.client.set_faults(&Faults {
                kpi_offsets,
                ..Faults::default()
            }),
            &format!("accepted {what}"),
        )
        .await?;
        assert_eq!(e.code(), Some(code), "{what}: {e}");
        if code == "invalid_param" {
            assert!(e.to_string().contains("kpiOffsets"), "{e}");
        }
    }
    assert_eq!(m1.client.faults().await?, faults, "nothing changed");

    // A bad flag: the agent does not start, and says why.
    let e = fx
        .start("m2", &["--kpi-offset", "errorCount=NaN"])
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("exited before listening"), "{e}");
    let log = std::fs::read_to_string(fx.path().join("m2.log"))?;
    assert!(
        log.contains("--kpi-offset") && log.contains("not a finite number"),
        "{log}"
    );
    Ok(())
}
