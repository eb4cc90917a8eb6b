//! Measures the write-unavailability window of the documented switchover sequence under a
//! continuous write load, with real agents on 127.0.0.1:
//!
//! ```text
//! cargo bench -p baton-agent --bench switchover            # 20 switchovers
//! SWITCHOVERS=50 cargo bench -p baton-agent --bench switchover
//! ```
//!
//! The window runs from the first write refused (or failed) after the old active stopped
//! accepting writes to the next write acknowledged by the new active.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn main() -> TestResult {
    let args: Vec<String> = std::env::args().collect();
    // Test runners list tests first (`--list`); this binary has none to list.
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run a quick smoke.
    let default_rounds = if args.iter().any(|a| a == "--bench") {
        20
    } else {
        2
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(default_rounds))
}

async fn bench(default_rounds: usize) -> TestResult {
    let rounds: usize = std::env::var("SWITCHOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_rounds)
        .clamp(1, 1000);
    let fx = Fixture::new(&["m1", "m2"])?;
    let pki = &fx.pki;
    let (m1, m2) = fx.caught_up_pair(&[], &[]).await?;

    let load = WriteLoad::start(
        fx.data_clients(&[&m1, &m2])?,
        u64::MAX,
        Duration::from_secs(600),
    );
    load.wait_acked(50).await?;
    let started = Instant::now();
    let mut sequence_times = Vec::new();
    for round in 0..rounds {
        let (old, new) = if round.is_multiple_of(2) {
            (&m1, &m2)
        } else {
            (&m2, &m1)
        };
        let t = Instant::now();
        switchover(old, new, &format!("r{round}")).await?;
        sequence_times.push(t.elapsed());
        let acked = load.acked();
        load.wait_acked(acked + 50).await?;
    }
    let report = load.stop().await?;
    let total = started.elapsed();

    // Every acknowledged write must be on both members.
    let (last_active, follower) = if rounds.is_multiple_of(2) {
        (&m1, &m2)
    } else {
        (&m2, &m1)
    };
    wait_caught_up(follower, last_active).await?;
    let mut lost = 0usize;
    for agent in [&m1, &m2] {
        let reader = agent.data_client(pki.data_tls("m1")?)?;
        for (key, value) in &report.acked {
            if reader.get(key).await?.as_deref() != Some(value.as_str()) {
                lost += 1;
            }
        }
    }

    let mut windows = report.windows.clone();
    windows.sort();
    sequence_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "switchover benchmark: {rounds} switchovers in {:.1}s",
        total.as_secs_f64()
    );
    println!(
        "  writes: {} acknowledged / {} attempts, lost after switchovers: {lost}",
        report.acked.len(),
        report.attempts
    );
    println!(
        "  write-unavailability window ({} observed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        windows.len(),
        ms(percentile(&windows, 50.0)),
        ms(percentile(&windows, 99.0)),
        ms(windows.last().copied().unwrap_or_default())
    );
    println!(
        "  full sequence (demote -> caught up -> promote, as seen by the caller): p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&sequence_times, 50.0)),
        ms(percentile(&sequence_times, 99.0))
    );
    if lost > 0 {
        return Err(err(format!("{lost} acknowledged writes missing")));
    }
    Ok(())
}
