//! `baton demo` end to end: the real binary starts real agents, upgrades them with the
//! reconcile loop under a write load, and must leave no agent process behind — after a
//! normal end and after Ctrl-C. Small settings (two clusters, short upgrades) keep each run
//! to seconds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(150);

fn demo(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
    c.arg("demo")
        .args(["--clusters", "2", "--members", "2"])
        .args(["--traffic-timeout", "2", "--timeout", "120s", "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Stdout lines as they come, and the process.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = demo(args).spawn().expect("start baton demo");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
        }
        let _ = self.child.kill();
        panic!(
            "no line containing {needle:?} within {limit:?}; output so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Wait for the exit (killing the demo after `LIMIT`), collecting the rest of stdout.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "baton demo did not finish within {LIMIT:?}; output so far:\n{}",
                    self.seen.join("\n")
                );
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status, self.seen.join("\n"), err)
    }
}

/// The agent pids `agents.json` in the demo directory names.
fn agent_pids(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("agents.json")).expect("agents.json");
    let recs: Vec<serde_json::Value> = serde_json::from_str(&text).expect("agents.json is JSON");
    recs.iter()
        .map(|r| r["pid"].as_u64().expect("pid") as u32)
        .collect()
}

/// An agent process with this pid still runs (a reused pid running something else does not
/// count).
fn agent_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let running = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next())
        .is_some_and(|s| s != "Z" && s != "X");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running && String::from_utf8_lossy(&cmdline).contains("__agent")
}

fn assert_no_agent_survives(pids: &[u32]) {
    assert!(!pids.is_empty(), "the demo recorded no agent");
    // The demo reaps its agents before exiting; allow a moment for the kernel anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| agent_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| agent_alive(p)).collect();
    assert!(
        alive.is_empty(),
        "agent processes survived the demo: {alive:?}"
    );
}

fn kept_dir(out: &str) -> PathBuf {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("kept: "))
        .unwrap_or_else(|| panic!("no `kept:` line in:\n{out}"));
    PathBuf::from(line.trim())
}

/// Removes the kept demo directory when the test ends, passed or not.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `baton demo --keep ARGS` run to its end: it passed and left no agent behind. Its stdout
/// and the kept directory (removed when the guard drops).
fn passing(args: &[&str]) -> (String, PathBuf, RemoveOnDrop) {
    let mut all = vec!["--keep"];
    all.extend_from_slice(args);
    let run = Running::start(&all);
    let (status, out, err) = run.finish();
    let dir = kept_dir(&out);
    let cleanup = RemoveOnDrop(dir.clone());
    let pids = agent_pids(&dir);
    assert!(
        status.success(),
        "baton demo {args:?} failed ({status}):\n{out}\nstderr:\n{err}"
    );
    assert_no_agent_survives(&pids);
    assert!(out.contains("result: PASSED"), "{out}");
    (out, dir, cleanup)
}

/// Run a scenario to its end and check the summary; returns stdout.
fn scenario(name: &str) -> String {
    let (out, dir, _cleanup) = passing(&["--scenario", name, "--upgrade-seconds", "0.3"]);
    let writes = out
        .lines()
        .find(|l| l.trim_start().starts_with("writes "))
        .unwrap_or_else(|| panic!("no writes line:\n{out}"));
    assert!(writes.contains(" 0 lost"), "{writes}");
    assert!(!writes.contains(" 0 acknowledged"), "{writes}");
    assert!(
        out.contains("tier order") && out.contains("workers started"),
        "{out}"
    );
    // The state file is the runner's, readable by `baton status`.
    let status_out = baton_status(&dir);
    assert!(status_out.status.success());
    let table = String::from_utf8_lossy(&status_out.stdout).into_owned();
    assert!(
        table.contains("worker-1") && table.contains("mgmt"),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).expect("remove the kept directory");
    out
}

fn final_line<'a>(out: &'a str, cluster: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{cluster} ")) && l.contains(" m1 "))
        .unwrap_or_else(|| panic!("no final state line for {cluster}:\n{out}"))
}

/// The final state line of `cluster` shows `phase` with both members on `version`.
fn assert_final(out: &str, cluster: &str, phase: &str, version: &str) {
    let l = final_line(out, cluster);
    assert!(
        l.contains(phase)
            && l.contains(&format!("m1 {version}"))
            && l.contains(&format!("m2 {version}")),
        "{l}"
    );
}

#[test]
fn upgrade_scenario_upgrades_every_cluster_without_losing_writes() {
    let out = scenario("upgrade");
    for c in ["mgmt", "worker-1"] {
        assert_final(&out, c, "Ready", "2.0.0");
    }
    let switchovers = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("switchovers"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no switchovers line:\n{out}"));
    assert_eq!(switchovers, "2", "one switchover per cluster:\n{out}");
}

#[test]
fn rollback_scenario_rolls_the_faulty_cluster_back_and_completes_the_others() {
    let out = scenario("rollback");
    assert_final(&out, "worker-1", "RolledBack", "1.0.0");
    let l = final_line(&out, "mgmt");
    assert!(l.contains("Ready") && l.contains("m1 2.0.0"), "{l}");
}

#[test]
fn backout_scenario_returns_to_the_old_version_workers_first() {
    let out = scenario("backout");
    for c in ["mgmt", "worker-1"] {
        assert_final(&out, c, "Ready", "1.0.0");
    }
    assert!(
        out.contains("backout: management started"),
        "the backout must move workers first:\n{out}"
    );
}

/// The value of the summary row `label` (`  label   value`).
fn row<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} row:\n{out}"))
}

/// Writes were acknowledged and none lost, and the switchovers refused some for a while.
fn assert_writes_kept_with_a_window(out: &str) {
    let writes = row(out, "writes");
    assert!(
        writes.contains(" 0 lost") && !writes.starts_with("0 "),
        "{writes}"
    );
    assert!(
        row(out, "write unavailability").starts_with("worst"),
        "a switchover refuses a few writes:\n{out}"
    );
}

#[test]
fn rotate_ca_scenario_rotates_every_cluster_refusing_no_handshake_and_losing_no_write() {
    let (out, dir, _cleanup) = passing(&["--scenario", "rotate-ca", "--restart-seconds", "0.3"]);
    // Every phase, in order, each with a duration.
    let phases: Vec<&str> = out
        .lines()
        .map(str::trim_start)
        .filter_map(|l| {
            ["AddTrust", "Reissue", "RemoveOldTrust", "ResignData"]
                .into_iter()
                .find(|p| l.starts_with(&format!("{p} ")) && l.contains(" s "))
        })
        .collect();
    assert_eq!(
        phases,
        ["AddTrust", "Reissue", "RemoveOldTrust", "ResignData"],
        "{out}"
    );
    assert!(
        row(&out, "TLS handshakes").starts_with("0 refused"),
        "{out}"
    );
    assert_writes_kept_with_a_window(&out);
    // One switchover per cluster: each active restarted only after handing over.
    assert!(row(&out, "switchovers").starts_with("2 "), "{out}");
    // The manifests hold the rewritten Secret, and the state file says Done on its CA.
    let secret = std::fs::read_to_string(dir.join("manifests/ca-secret.yaml")).expect("secret");
    let new_ca = std::fs::read_to_string(dir.join("pki/mesh-ca-2.crt")).expect("new CA");
    assert!(
        secret.contains(new_ca.lines().nth(1).expect("PEM body")),
        "{secret}"
    );
    let status_out = baton_status(&dir);
    let table = String::from_utf8_lossy(&status_out.stdout).into_owned();
    assert!(table.contains(" Done"), "{table}");
    // The Mesh declared the CA, and its own line says the mesh-wide rotation is done.
    assert!(table.contains("Mesh demo certificates: CA "), "{table}");
}

/// Forcing the old CA's removal before anyone is re-issued: the agents refuse handshakes,
/// the PhaseForced event says who loses contact, and the run fails its check (as it must).
#[test]
fn forcing_the_old_cas_removal_early_shows_the_refused_handshakes_and_fails() {
    let run = Running::start(&[
        "--scenario",
        "rotate-ca",
        "--force-remove-old-trust",
        "--restart-seconds",
        "0.3",
    ]);
    let (status, out, err) = run.finish();
    assert_eq!(status.code(), Some(1), "{out}\nstderr:\n{err}");
    assert!(out.contains("result: FAILED"), "{out}");
    assert!(
        out.contains("forcing rotation/mgmt/RemoveOldTrust@"),
        "{out}"
    );
    assert!(
        out.contains("PhaseForced") && out.contains("lose contact"),
        "{out}"
    );
    let refused = row(&out, "TLS handshakes");
    let n: u64 = refused
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        n > 0,
        "no refused handshake after a forced removal: {refused}"
    );
}

#[test]
fn ctrl_c_stops_every_agent_and_removes_the_directory() {
    let mut run = Running::start(&["--upgrade-seconds", "30"]);
    let dir_line = run.wait_line("  directory ", Duration::from_secs(60));
    let dir = PathBuf::from(dir_line.trim().trim_start_matches("directory ").trim());
    run.wait_line("write load", Duration::from_secs(60));
    let pids = agent_pids(&dir);
    // Let the runner start the rollout, then interrupt as a terminal would.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGINT);
    }
    let (status, out, err) = run.finish();
    assert_eq!(status.code(), Some(130), "{out}\nstderr:\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_no_agent_survives(&pids);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["demo", "--clusters", "1"])
        .output()
        .expect("baton demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clusters"));
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["demo", "--from", "2.0.0", "--to", "1.0.0"])
        .output()
        .expect("baton demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be newer"));
}

/// `baton status` on the demo's state file in `dir` (the runner's, as the demo leaves it).
fn baton_status(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["status", "--state"])
        .arg(dir.join("state.json"))
        .output()
        .expect("baton status")
}

/// The scale scenario: a third member added to worker-1 under the write load joins (every
/// acknowledged write read back from it), takes over (returnToPrimary), and an original member
/// is removed: retired, and accepted by nobody. The state file says so too.
#[test]
fn scale_scenario_adds_a_member_switches_over_to_it_and_removes_an_original_one() {
    let (out, dir, _cleanup) = passing(&["--scenario", "scale"]);
    assert_writes_kept_with_a_window(&out);
    assert!(row(&out, "switchovers").starts_with("1 "), "{out}");
    let added = row(&out, "member added");
    assert!(
        added.starts_with("worker-1/m3: joined ") && !added.contains("never"),
        "{added}"
    );
    let new = row(&out, "new member");
    let applied: Vec<u64> = new
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .take(2)
        .collect();
    assert!(
        applied.len() == 2 && applied[0] >= applied[1] && applied[1] > 0,
        "m3 caught up with the highest acknowledged write: {new}"
    );
    let removed = row(&out, "member removed");
    assert!(
        removed.starts_with("worker-1/m1: gone ") && removed.contains("Retire"),
        "{removed}"
    );
    // The identities: m1 retired; m2 and m3 accept each other and not m1.
    let ident = |m: &str| {
        out.lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(&format!("{m} ")) && l.contains(" accepts "))
            .unwrap_or_else(|| panic!("no identity line for {m}:\n{out}"))
    };
    assert!(ident("m1").ends_with("(retired)"), "{out}");
    for (m, other) in [("m2", "m3"), ("m3", "m2")] {
        let l = ident(m);
        let accepts = l.split(" accepts ").nth(1).unwrap_or_default();
        assert!(
            accepts.contains(&format!("{other} ")) && !accepts.contains("m1 "),
            "{l}"
        );
    }
    assert!(ident("m3").contains("Active"), "{out}");
    // The runner's state: worker-1 is m2 and m3 now, m3 active.
    let table = String::from_utf8_lossy(&baton_status(&dir).stdout).into_owned();
    let worker = table
        .lines()
        .find(|l| l.contains("worker-1"))
        .unwrap_or_default();
    assert!(worker.contains("m3"), "{table}");
}
