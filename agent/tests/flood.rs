//! A connection flood from another process must not keep the operator out: while a child
//! process holds up to 10,000 connections to the control port (reconnecting whenever the agent
//! sheds one), the operator's `/v1/status` calls (a fresh mutual-TLS connection each, as
//! `AgentClient` makes them) keep a p99 latency under 100 ms.
//!
//! The agent runs with a descriptor limit of 4,096, below the flood: before connection limits
//! it failed `accept` with EMFILE and the operator could not connect at all.
//!
//! Figures: `cargo nextest run -p baton-agent --test flood --no-capture` (environment:
//! `BATON_FLOOD_CONNECTIONS`, default 10000; `BATON_FLOOD_SECONDS`, default 12).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_agent::client::{AgentClient, CallPolicy};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Flooding addresses: 127.0.0.2 ..= 127.0.0.65 (the operator is 127.0.0.1). Every
/// 127.0.0.0/8 address is loopback on Linux.
const FLOOD_ADDRESSES: u8 = 64;
const MAX_CONNECTS: u64 = 2_000_000;
const IN_FLIGHT_CONNECTS: usize = 512;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raises the soft descriptor limit towards `want`; returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let target = (want as libc::rlim_t).min(lim.rlim_max);
        if target > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = target;
            }
        }
    }
    lim.rlim_cur
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    opened: AtomicU64,
    open_now: AtomicUsize,
    peak_open: AtomicUsize,
    closed_by_server: AtomicU64,
    connect_errors: AtomicU64,
}

/// The flooding process: the parent test runs this test binary again with
/// `BATON_FLOOD_TARGET` set. Without it (a plain `--ignored` run) it does nothing.
#[test]
#[ignore = "the flooding child process of operator_status_stays_fast_during_a_connection_flood"]
fn flood_child() -> TestResult {
    let Ok(target) = std::env::var("BATON_FLOOD_TARGET") else {
        return Ok(());
    };
    let target: SocketAddr = target.parse()?;
    if !target.ip().is_loopback() {
        return Err(err(format!("refusing to flood non-loopback {target}")));
    }
    let want: usize = env_num("BATON_FLOOD_CONNECTIONS", 10_000);
    let seconds: f64 = env_num("BATON_FLOOD_SECONDS", 12.0);
    let soft = raise_nofile(want as u64 + 256);
    let n = want.min(soft.saturating_sub(256) as usize);
    if n < want {
        println!("flood: descriptor limit {soft}: scaled from {want} to {n} connections");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_CONNECTS));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let c = counters.clone();
            let gate = gate.clone();
            let src = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                2 + (i % FLOOD_ADDRESSES as usize) as u8,
            ));
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline
                    && c.connects.fetch_add(1, Ordering::Relaxed) < MAX_CONNECTS
                {
                    let connected = {
                        let Ok(_permit) = gate.acquire().await else {
                            return;
                        };
                        let socket = match tokio::net::TcpSocket::new_v4()
                            .and_then(|s| s.bind(SocketAddr::new(src, 0)).map(|()| s))
                        {
                            Ok(s) => s,
                            Err(_) => {
                                c.connect_errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
                    };
                    match connected {
                        Ok(Ok(mut s)) => {
                            // Half the connections send one byte (the start of a TLS record)
                            // and then nothing: the kernel hands those to the agent at once,
                            // the idle ones only after TCP_DEFER_ACCEPT.
                            if i % 2 == 1 {
                                let _ = s.write_all(&[0x16]).await;
                            }
                            c.opened.fetch_add(1, Ordering::Relaxed);
                            let now = c.open_now.fetch_add(1, Ordering::Relaxed) + 1;
                            c.peak_open.fetch_max(now, Ordering::Relaxed);
                            // Idle: never a byte of TLS. Wait for the agent to close it.
                            let mut buf = [0u8; 64];
                            if tokio::time::timeout_at(deadline, s.read(&mut buf))
                                .await
                                .is_ok()
                            {
                                c.closed_by_server.fetch_add(1, Ordering::Relaxed);
                            }
                            c.open_now.fetch_sub(1, Ordering::Relaxed);
                        }
                        _ => {
                            c.connect_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        // Tell the parent when the flood holds its connections (or has tried for 5 s).
        let ramp_deadline = Instant::now() + Duration::from_secs(5);
        while counters.opened.load(Ordering::Relaxed) < n as u64 && Instant::now() < ramp_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "flood: ramped opened={} open={} after {:?}",
            counters.opened.load(Ordering::Relaxed),
            counters.open_now.load(Ordering::Relaxed),
            started.elapsed()
        );
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "flood: summary connections={n} connects={} opened={} peak_open={} closed_by_server={} \
         connect_errors={} seconds={:.1}",
        counters.connects.load(Ordering::Relaxed).min(MAX_CONNECTS),
        counters.opened.load(Ordering::Relaxed),
        counters.peak_open.load(Ordering::Relaxed),
        counters.closed_by_server.load(Ordering::Relaxed),
        counters.connect_errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The last "total N" the agent logged for shed connections.
fn shed_total(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("control API: connection limits"))
        .filter_map(|l| {
            let rest = &l[l.find("(total ")? + "(total ".len()..];
            rest[..rest.find(')')?].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_status_stays_fast_during_a_connection_flood() -> TestResult {
    let fx = Fixture::new(&["m1"])?;
    let pki = &fx.pki;
    // Extra agent flags, to compare limits: BATON_FLOOD_AGENT_ARGS="--max-pending-connections 64".
    let extra = std::env::var("BATON_FLOOD_AGENT_ARGS").unwrap_or_default();
    let mut args = vec!["--role", "active"];
    args.extend(extra.split_whitespace());
    let agent_nofile = 4096;
    let m1 = fx
        .start_with_nofile("m1", &args, Some(agent_nofile))
        .await?;
    let operator = AgentClient::new(&m1.control, pki.client_tls())?.with_policy(CallPolicy {
        timeout: Duration::from_secs(5),
        retries: 0,
        ..Default::default()
    });
    operator.status().await?;

    let seconds: f64 = env_num("BATON_FLOOD_SECONDS", 12.0);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "flood_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BATON_FLOOD_TARGET", &m1.control)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| err("no child stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut child_said = Vec::new();
    let ramped = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let ramped = line.contains("flood: ramped");
            child_said.push(line);
            if ramped {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ramped {
        return Err(err(format!("the flood did not start: {child_said:?}")));
    }

    // Measure while the flood runs; stop well before it ends.
    let window = Duration::from_secs_f64((seconds - 7.0).clamp(2.0, 20.0));
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while t0.elapsed() < window && latencies.len() + failures.len() < 5_000 {
        let start = Instant::now();
        match operator.status().await {
            Ok(_) => latencies.push(start.elapsed()),
            Err(e) => failures.push(format!("after {:?}: {e}", start.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let rest = tokio::time::timeout(Duration::from_secs_f64(seconds + 30.0), async {
        while let Ok(Some(line)) = lines.next_line().await {
            child_said.push(line);
        }
        child.wait().await
    })
    .await;
    if !matches!(rest, Ok(Ok(ref st)) if st.success()) {
        return Err(err(format!("flood child failed: {rest:?}: {child_said:?}")));
    }
    // The agent reports shedding every 5 s: wait for the report covering the flood's end.
    tokio::time::sleep(Duration::from_secs(6)).await;

    latencies.sort();
    let summary = child_said
        .iter()
        .filter(|l| l.contains("flood:"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let log = m1.log_text();
    let shed = shed_total(&log);
    if let Some(last) = log
        .lines()
        .rev()
        .find(|l| l.contains("control API: connection limits"))
    {
        println!("agent's last report: {last}");
    }
    println!("{summary}");
    println!(
        "agent: descriptor limit {agent_nofile}; shed {shed} unauthenticated connections \
         (agent log)"
    );
    println!(
        "operator /v1/status during the flood (fresh mTLS connection each): n={} \
         failures={} p50={:?} p99={:?} max={:?}",
        latencies.len(),
        failures.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default()
    );
    assert!(failures.is_empty(), "operator calls failed: {failures:?}");
    assert!(latencies.len() >= 50, "only {} samples", latencies.len());
    let p99 = percentile(&latencies, 99.0);
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(shed > 0, "the flood was never shed:\n{summary}");
    // The agent is still fine afterwards.
    operator.status().await?;
    Ok(())
}
