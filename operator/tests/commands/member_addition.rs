//! `examples/member-addition` end to end: every host of the example's Cluster (members m1, m2,
//! the new m3, managed clients k1, k2) runs an exec agent with the example's `exec.yaml` and
//! its real scripts (`bin/*.sh`) on files in one work directory (`hosts/<name>/`, the package's
//! storage `package/`). `baton run` adopts m1 and m2, adds m3, then removes the active m1. What
//! must hold is read from those files and from the agents' operation records: the new member's
//! configuration is the package's, every member and client holds its key (its own, or with
//! `clientIdentity: Shared` a copy of m1's entry), the removed active handed the package over,
//! was retired and its key withdrawn everywhere, and every operation ran once and succeeded.
//! With the package stopped, the configuration is not copied and `baton status` says why.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_agent::api::{OperationKind as K, OperationRecord, OperationState, Role};
use support::*;

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
const CLIENTS: [&str; 2] = ["k1", "k2"];

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/member-addition")
}

/// A host's data endpoint, as its `data-endpoint` file says. The scripts replicate nothing, so
/// nobody dials it: it only names the member in sources.
fn endpoint_of(name: &str) -> String {
    let n = MEMBERS.iter().position(|m| *m == name).unwrap_or(9);
    format!("127.0.0.1:{}", 17101 + n)
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> TestResult<BTreeMap<String, Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> TestResult {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base)?.display().to_string();
                out.insert(rel, std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The hosts of the example and their agents.
struct Example {
    dir: tempfile::TempDir,
    pki: Pki,
    exec: PathBuf,
    agents: BTreeMap<String, Agent>,
}

impl Example {
    /// The work directory as a running cluster has it: m1 active running the package, m2 its
    /// standby, both holding each other's key; k1 and k2 holding both; m3 a fresh host (its
    /// key, an empty configuration, nobody's key), sharing m1's key with `shared`. Every agent
    /// but m3's started.
    async fn start(shared: bool) -> TestResult<Example> {
        let dir = tempfile::Builder::new()
            .prefix("baton-member-addition")
            .tempdir()?;
        let names: Vec<&str> = MEMBERS.iter().chain(&CLIENTS).copied().collect();
        let pki = Pki::new(&dir.path().join("pki"), &names)?;
        // What `baton run --tls-dir` reads (gen-certs names).
        std::fs::write(pki.dir.join("client.crt"), &pki.client.cert_pem)?;
        std::fs::write(pki.dir.join("client.key"), &pki.client.key_pem)?;
        let root = dir.path().join("cluster");
        std::fs::create_dir_all(root.join("bin"))?;
        for entry in std::fs::read_dir(example().join("bin"))? {
            let from = entry?.path();
            if let Some(file) = from.file_name() {
                // Keeps the mode: the scripts stay executable.
                std::fs::copy(&from, root.join("bin").join(file))?;
            }
        }
        let config = std::fs::read_to_string(example().join("exec.yaml"))?;
        let ours = config.replace(
            "workDir: /opt/cluster",
            &format!("workDir: {}", root.display()),
        );
        assert_ne!(
            ours, config,
            "the example's exec.yaml sets workDir: /opt/cluster"
        );
        let exec = dir.path().join("exec.yaml");
        std::fs::write(&exec, ours)?;
        let mut ex = Example {
            dir,
            pki,
            exec,
            agents: BTreeMap::new(),
        };

        // The package's storage: the configuration every member was given when it joined.
        let package = ex.root().join("package/config");
        std::fs::create_dir_all(package.join("inputs"))?;
        std::fs::write(package.join("cf.conf"), "control: { domain => \"app\"; }\n")?;
        std::fs::write(package.join("inputs/update.cf"), "bundle agent update {}\n")?;
        for name in &names {
            let host = ex.host(name);
            std::fs::create_dir_all(host.join("ppkeys"))?;
            // Each host's key pair, made as the example's README says.
            sh(
                &host,
                "openssl",
                &["genpkey", "-algorithm", "ed25519", "-out", "identity.key"],
            )?;
            sh(
                &host,
                "openssl",
                &[
                    "pkey",
                    "-in",
                    "identity.key",
                    "-pubout",
                    "-out",
                    "identity.pub",
                ],
            )?;
        }
        if shared {
            std::fs::copy(
                ex.host("m1").join("identity.pub"),
                ex.host("m3").join("identity.pub"),
            )?;
        }
        for m in MEMBERS {
            std::fs::write(ex.host(m).join("data-endpoint"), endpoint_of(m))?;
        }
        for m in ["m1", "m2"] {
            sh(
                &ex.root(),
                "cp",
                &["-R", "package/config", &format!("hosts/{m}/config")],
            )?;
        }
        std::fs::create_dir_all(ex.host("m3").join("config"))?;
        std::fs::write(ex.host("m1").join("role"), "Active\n")?;
        std::fs::write(ex.host("m2").join("role"), "Standby\n")?;
        std::fs::write(ex.host("m2").join("source"), endpoint_of("m1"))?;
        std::fs::write(ex.root().join("package/running-on"), "m1\n")?;
        for (holder, peer) in [
            ("m1", "m2"),
            ("m2", "m1"),
            ("k1", "m1"),
            ("k1", "m2"),
            ("k2", "m1"),
            ("k2", "m2"),
        ] {
            std::fs::copy(ex.key(peer), ex.accepted(holder, peer))?;
        }
        for name in ["m1", "m2", "k1", "k2"] {
            ex.start_agent(name).await?;
        }
        Ok(ex)
    }

    /// The work directory (`workDir` of the exec configuration).
    fn root(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    fn host(&self, name: &str) -> PathBuf {
        self.root().join("hosts").join(name)
    }

    /// `name`'s public key, where the cluster publishes it.
    fn key(&self, name: &str) -> PathBuf {
        self.host(name).join("identity.pub")
    }

    /// Where `holder` keeps the key it accepts for `peer`.
    fn accepted(&self, holder: &str, peer: &str) -> PathBuf {
        self.host(holder).join(format!("ppkeys/root-{peer}.pub"))
    }

    fn read(&self, path: &Path) -> TestResult<String> {
        std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// The first line of one of `name`'s state files, empty when it has none.
    fn state(&self, name: &str, file: &str) -> String {
        std::fs::read_to_string(self.host(name).join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    async fn start_agent(&mut self, name: &str) -> TestResult {
        let mut args = self.pki.args(name);
        args.extend(["--backend".into(), "exec".into(), "--exec-config".into()]);
        args.push(self.exec.display().to_string());
        let agents = self.dir.path().join("agents");
        std::fs::create_dir_all(&agents)?;
        let data_dir = agents.join(name);
        let agent = Agent::start(name, &data_dir, self.pki.client_tls(), args).await?;
        let s = agent.status().await?;
        assert!(s.alarms.is_empty(), "{name}: {:?}", s.alarms);
        self.agents.insert(name.to_string(), agent);
        Ok(())
    }

    fn agent(&self, name: &str) -> TestResult<&Agent> {
        self.agents
            .get(name)
            .ok_or_else(|| err(format!("no agent {name}")))
    }

    /// The example's `cluster.yaml` with the members of `members` only, every host reached at
    /// its agent, and `clientIdentity` set to `identity`. Returns the copy `baton run` reads.
    fn manifest(&self, members: &[&str], identity: &str) -> TestResult<PathBuf> {
        let text = std::fs::read_to_string(example().join("cluster.yaml"))?;
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let at = |name: &str| -> TestResult<String> {
            // A member not started yet is declared at an address nothing listens on.
            Ok(match self.agents.get(name) {
                Some(a) => format!("https://{}", a.control),
                None => "https://127.0.0.1:9".to_string(),
            })
        };
        let spec = &mut doc["spec"];
        let declared = spec["members"]
            .as_sequence_mut()
            .ok_or_else(|| err("cluster.yaml: no spec.members"))?;
        let names: Vec<String> = declared
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(names, MEMBERS, "cluster.yaml declares m1, m2, m3");
        declared.retain(|m| m["name"].as_str().is_some_and(|n| members.contains(&n)));
        for m in declared.iter_mut() {
            let name = m["name"].as_str().unwrap_or_default().to_string();
            m["endpoint"] = at(&name)?.into();
        }
        let clients = spec["clients"]
            .as_sequence_mut()
            .ok_or_else(|| err("cluster.yaml: no spec.clients"))?;
        for c in clients.iter_mut() {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            c["endpoint"] = at(&name)?.into();
        }
        assert_eq!(
            spec["topology"]["clientIdentity"].as_str(),
            Some("Distinct")
        );
        spec["topology"]["clientIdentity"] = identity.into();
        let path = self
            .dir
            .path()
            .join(format!("cluster-{}.yaml", members.join("-")));
        std::fs::write(&path, serde_yaml::to_string(&doc)?)?;
        Ok(path)
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// `baton run -f MANIFEST` with `extra` flags, to its end.
    async fn baton_run(&self, manifest: &Path, extra: &[&str]) -> TestResult<std::process::Output> {
        let mut run = run_args(&[manifest], &self.state_file(), &self.pki.dir);
        run.extend(extra.iter().map(|s| s.to_string()));
        Ok(tokio::task::spawn_blocking(move || baton().args(&run).output()).await??)
    }

    /// `baton run --until-settled`, which must settle (Ready) within its timeout.
    async fn settle(&self, members: &[&str], identity: &str) -> TestResult {
        let manifest = self.manifest(members, identity)?;
        let out = self
            .baton_run(&manifest, &["--until-settled", "--timeout", "120s"])
            .await?;
        assert!(out.status.success(), "{}", text(&out));
        Ok(())
    }

    fn baton_status(&self) -> TestResult<String> {
        let out = baton()
            .arg("status")
            .arg("--state")
            .arg(self.state_file())
            .output()?;
        assert!(out.status.success(), "{}", text(&out));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `name`'s operations, oldest first; every one must have succeeded.
    async fn succeeded(&self, name: &str) -> TestResult<Vec<OperationRecord>> {
        let mut ran = self.agent(name)?.client.operations().await?;
        ran.sort_by_key(|r| r.started_at);
        let failed: Vec<&OperationRecord> = ran
            .iter()
            .filter(|r| r.state != OperationState::Succeeded)
            .collect();
        assert!(failed.is_empty(), "{name}: {failed:#?}");
        Ok(ran)
    }

    /// One line per operation of `name` (each must have succeeded): its kind and what it was
    /// about (the peer, the member its source is), sorted: steps Baton may run in either
    /// order compare equal.
    async fn summary(&self, name: &str) -> TestResult<Vec<String>> {
        let by_endpoint: BTreeMap<String, &str> =
            MEMBERS.iter().map(|m| (endpoint_of(m), *m)).collect();
        let mut lines: Vec<String> = self
            .succeeded(name)
            .await?
            .iter()
            .map(|r| {
                let p = &r.params;
                let mut line = r.kind.as_str().to_string();
                if let Some(peer) = &p.peer {
                    line.push_str(&format!(" {peer}"));
                }
                if let Some(from) = &p.copy_from {
                    line.push_str(&format!(" copying {from}"));
                }
                if let Some(src) = &p.source {
                    let who = by_endpoint.get(src).copied().unwrap_or(src.as_str());
                    line.push_str(&format!(" from {who}"));
                }
                line
            })
            .collect();
        lines.sort();
        Ok(lines)
    }

    /// The member the package runs on, which must be an Active member that serves.
    async fn package_host(&self) -> TestResult<String> {
        let on = self.read(&self.root().join("package/running-on"))?;
        let on = on.trim().to_string();
        assert_eq!(
            self.state(&on, "role"),
            "Active",
            "the package runs on {on}"
        );
        let s = self.agent(&on)?.status().await?;
        assert!(s.role == Role::Active && s.serving, "{on}: {s:?}");
        Ok(on)
    }

    /// m3 has joined: its configuration is the package's, it holds m1's and m2's keys, they
    /// and the clients hold its key (`shared`: the clients by copying m1's entry), and it
    /// follows the active as a standby.
    async fn check_joined(&self, shared: bool) -> TestResult {
        assert_eq!(
            tree(&self.host("m3").join("config"))?,
            tree(&self.root().join("package/config"))?,
            "m3's configuration is the package's"
        );
        let m3_key = self.read(&self.key("m3"))?;
        for holder in ["m1", "m2", "k1", "k2"] {
            assert_eq!(
                self.read(&self.accepted(holder, "m3"))?,
                m3_key,
                "{holder} accepts m3's key"
            );
        }
        for peer in ["m1", "m2"] {
            assert_eq!(
                self.read(&self.accepted("m3", peer))?,
                self.read(&self.key(peer))?,
                "m3 accepts {peer}"
            );
        }
        assert_eq!(self.state("m3", "role"), "Standby");
        assert_eq!(self.state("m3", "source"), endpoint_of("m1"));
        let s = self.agent("m3")?.status().await?;
        assert_eq!(s.role, Role::Standby);
        assert!(s.alarms.is_empty(), "{:?}", s.alarms);
        assert_eq!(self.package_host().await?, "m1");

        // What each host was asked to do for the join, each once. The clients: m3's own key
        // (Distinct), or a copy of m1's entry (Shared).
        let client_add = if shared {
            "add-peer m3 copying m1"
        } else {
            "add-peer m3"
        };
        let want: [(&str, Vec<&str>); 5] = [
            ("m1", vec!["add-peer m3"]),
            ("m2", vec!["add-peer m3"]),
            (
                "m3",
                vec![
                    "add-peer m1",
                    "add-peer m2",
                    "demote from m1",
                    "sync-config from m1",
                ],
            ),
            ("k1", vec![client_add]),
            ("k2", vec![client_add]),
        ];
        for (name, ops) in &want {
            assert_eq!(&self.summary(name).await?, ops, "{name}");
        }
        let m3_identity = sha256_hex(m3_key.as_bytes());
        for name in ["m1", "m2", "k1", "k2"] {
            let ops = self.succeeded(name).await?;
            let add = ops
                .iter()
                .find(|r| r.kind == K::AddPeer)
                .ok_or_else(|| err(format!("{name}: no add-peer")))?;
            let client = name.starts_with('k');
            if shared && client {
                assert_eq!(add.params.fingerprint, None, "{name}");
                assert_eq!(add.params.copy_from.as_deref(), Some("m1"), "{name}");
            } else {
                assert_eq!(
                    add.params.fingerprint.as_deref(),
                    Some(m3_identity.as_str()),
                    "{name}"
                );
                assert_eq!(add.params.copy_from, None, "{name}");
            }
        }

        // In the procedure's order: the configuration first, then the keys both ways, and
        // only then does m3 replicate.
        let m3 = self.succeeded("m3").await?;
        let one =
            |ops: &[OperationRecord], k: K| -> TestResult<(jiff::Timestamp, jiff::Timestamp)> {
                ops.iter()
                    .find(|r| r.kind == k)
                    .map(span)
                    .ok_or_else(|| err(format!("no {k}")))
            };
        let copied = one(&m3, K::SyncConfig)?;
        let joined = one(&m3, K::Demote)?;
        let mut introductions: Vec<(jiff::Timestamp, jiff::Timestamp)> = m3
            .iter()
            .filter(|r| r.kind == K::AddPeer)
            .map(span)
            .collect();
        for holder in ["m1", "m2"] {
            introductions.push(one(&self.succeeded(holder).await?, K::AddPeer)?);
        }
        for (start, end) in introductions {
            assert!(
                copied.1 <= start,
                "a key exchanged before the configuration was copied"
            );
            assert!(
                end <= joined.0,
                "m3 replicated before every key was exchanged"
            );
        }
        Ok(())
    }
}

/// SHA-256 in hex: over any bytes, whatever the name says.
fn sha256_hex(data: &[u8]) -> String {
    baton_agent::pki::fingerprint_der(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_adds_a_member_through_the_example_scripts_and_removes_the_active() -> TestResult
{
    let mut ex = Example::start(false).await?;
    // First plan: m1 and m2 are adopted as they are; nothing is sent to anyone.
    ex.settle(&["m1", "m2"], "Distinct").await?;
    for name in ["m1", "m2", "k1", "k2"] {
        assert_eq!(ex.summary(name).await?, Vec::<String>::new(), "{name}");
    }

    // The member addition.
    ex.start_agent("m3").await?;
    ex.settle(&MEMBERS, "Distinct").await?;
    ex.check_joined(false).await?;
    let shown = ex.baton_status()?;
    assert!(
        shown.contains("client k1: accepts m1, m2, m3") && !shown.contains("joining"),
        "{shown}"
    );

    // The removal of the active: it hands the package over first, then retires, and its key
    // is withdrawn from everyone that stays.
    ex.settle(&["m2", "m3"], "Distinct").await?;
    let active = ex.package_host().await?;
    let other = if active == "m2" { "m3" } else { "m2" };
    assert_eq!(ex.state(other, "role"), "Standby");
    assert_eq!(ex.state(other, "source"), endpoint_of(&active));
    assert_eq!(ex.state("m1", "role"), "OutOfService");
    assert!(ex.host("m1").join("retired").exists());
    let s = ex.agent("m1")?.status().await?;
    assert!(s.retired && s.role == Role::OutOfService, "{s:?}");
    for holder in ["m2", "m3", "k1", "k2"] {
        assert!(
            !ex.accepted(holder, "m1").exists(),
            "{holder} still accepts m1"
        );
    }
    for holder in ["m2", "k1", "k2"] {
        assert!(ex.accepted(holder, "m3").exists(), "{holder} forgot m3");
    }
    let shown = ex.baton_status()?;
    assert!(
        !shown.contains("leaving") && shown.contains("client k2: accepts m2, m3"),
        "{shown}"
    );
    // The log shows a removal, its hand-over first, and no upgrade (none took place).
    let removal = shown
        .find(" remove-member Member m1 Succeeded")
        .ok_or_else(|| err(format!("no removal in {shown}")))?;
    let hand_over = shown
        .find(&format!(" switchover Member {active} "))
        .ok_or_else(|| err(format!("no switchover in {shown}")))?;
    assert!(removal < hand_over, "{shown}");
    assert!(!shown.contains(" upgrade Cluster app"), "{shown}");

    // Each host's operations over the three runs, each once, none failed.
    let mut want: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let of = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    want.insert(
        "m1",
        of(&[
            "add-peer m3",
            &format!("force-standby from {active}"),
            "retire",
        ]),
    );
    let m3_join = [
        "sync-config from m1",
        "add-peer m1",
        "add-peer m2",
        "demote from m1",
    ];
    let (m2_ops, m3_ops) = if active == "m2" {
        (
            of(&["add-peer m3", "promote", "remove-peer m1"]),
            of(&[&m3_join[..], &["demote from m2", "remove-peer m1"]].concat()),
        )
    } else {
        (
            of(&["add-peer m3", "demote from m3", "remove-peer m1"]),
            of(&[&m3_join[..], &["promote", "remove-peer m1"]].concat()),
        )
    };
    want.insert("m2", m2_ops);
    want.insert("m3", m3_ops);
    for c in CLIENTS {
        want.insert(c, of(&["add-peer m3", "remove-peer m1"]));
    }
    for (name, mut ops) in want {
        ops.sort();
        assert_eq!(ex.summary(name).await?, ops, "{name}");
    }
    // The order of the removal: the package moved before m1 retired, and m1's key went only
    // once it no longer served.
    let promoted = ex
        .succeeded(&active)
        .await?
        .iter()
        .find(|r| r.kind == K::Promote)
        .map(span)
        .ok_or_else(|| err("no promote"))?;
    let retired = ex
        .succeeded("m1")
        .await?
        .iter()
        .find(|r| r.kind == K::Retire)
        .map(span)
        .ok_or_else(|| err("no retire"))?;
    assert!(
        promoted.1 <= retired.0,
        "m1 retired before the package moved"
    );
    for holder in ["m2", "m3", "k1", "k2"] {
        for r in ex.succeeded(holder).await? {
            if r.kind == K::RemovePeer {
                assert!(
                    retired.1 <= span(&r).0,
                    "{holder} forgot m1 before it retired"
                );
            }
        }
    }
    Ok(())
}

/// `clientIdentity: Shared`, m3 set up with the members' shared key (a copy of m1's), and the
/// package stopped when m3 is added: m3 is not configured while it does not run, and `baton
/// status` says the copy waits for the active to serve. Once the package is started again, the
/// join completes, the clients copying their entry of m1 under m3's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shared_keys_a_member_added_while_the_package_is_stopped_is_configured_once_it_runs()
-> TestResult {
    let mut ex = Example::start(true).await?;
    ex.settle(&["m1", "m2"], "Shared").await?;
    // The package stops: m1 stays the active but serves nothing. Its agent caches a status
    // for half a second: run once that says so, as an operator looking after it would see.
    sh(&ex.root(), "./bin/package.sh", &["stop"])?;
    let m1 = ex.agent("m1")?;
    wait_until("m1 to report it does not serve", CONVERGE, || async {
        let s = m1.status().await.ok()?;
        (s.role == Role::Active && !s.serving).then_some(())
    })
    .await?;
    ex.start_agent("m3").await?;
    let manifest = ex.manifest(&MEMBERS, "Shared")?;
    let out = ex
        .baton_run(&manifest, &["--until-settled", "--timeout", "10s"])
        .await?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "gave up at its timeout: {}",
        text(&out)
    );
    assert!(
        tree(&ex.host("m3").join("config"))?.is_empty(),
        "m3 configured while the package was stopped"
    );
    assert_eq!(ex.summary("m3").await?, Vec::<String>::new());
    let shown = ex.baton_status()?;
    let line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("m3 joining"))
        .ok_or_else(|| err(format!("no joining line in {shown}")))?;
    assert!(
        line.contains("CopyConfig") && line.contains("the active m1, which does not serve"),
        "{shown}"
    );

    // The administrator starts the package again; the run goes on from the state file.
    sh(&ex.root(), "./bin/package.sh", &["start", "m1"])?;
    ex.settle(&MEMBERS, "Shared").await?;
    ex.check_joined(true).await?;
    for c in CLIENTS {
        assert_eq!(
            ex.read(&ex.accepted(c, "m3"))?,
            ex.read(&ex.accepted(c, "m1"))?,
            "{c}: root-m3.pub is a copy of root-m1.pub"
        );
    }
    Ok(())
}
