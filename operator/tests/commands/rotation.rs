//! End-to-end CA rotation: `baton run` rotates the CA of a cluster of real demo agents (mutual
//! TLS on every replication and client connection) under a write load, and the agents' own
//! records and counters say what happened: every phase in order, one job per site at a time,
//! the active restarted only after a switchover, not one TLS handshake refused, no write lost.

use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_agent::api::{OperationKind as K, OperationRecord, OperationState, Role};
use baton_agent::client::ClientTls;
use baton_agent::pki::{CertAuthority, CertSpec};
use support::*;

const VERSION: &str = "1.0.0";

const POLICY: &str = "  upgrade:\n    maxReplicationLag: 2s\n    syncTimeout: 30s\n    trafficCheck:\n      timeout: 3s\n    retries:\n      limit: 5\n      backoff: 300ms\n      maxBackoff: 1s\n";

/// Cluster `web`: m0 (active) and m1 in site a, m2 in site b, all on the fleet's (old) CA.
/// A restart takes `restart` seconds.
async fn fleet(restart: &str) -> TestResult<Fleet> {
    let mut web = ClusterDef::new("web", "app", 3);
    for i in 0..3 {
        web = web.with(i, &["--restart-seconds", restart]);
    }
    Fleet::start(&[web], VERSION, 0.2).await
}

/// The Cluster with `spec.certificates` naming `web-ca`, and that Secret holding `ca`.
fn manifests(f: &Fleet, ca: &CertAuthority) -> TestResult<PathBuf> {
    let sites = ["a", "a", "b"];
    let mut members = String::new();
    for (i, a) in f.clusters["web"].iter().enumerate() {
        members.push_str(&format!(
            "  - name: m{i}\n    site: {}\n    endpoint: https://{}\n",
            sites[i], a.control
        ));
    }
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let yaml = format!(
        "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: web\nspec:\n  version: {VERSION}\n  members:\n{members}{POLICY}  certificates:\n    caSecretRef:\n      name: web-ca\n    clientGrace: 2s\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: web-ca\nstringData:\n  ca.crt: |\n{}  ca.key: |\n{}",
        indent(ca.cert_pem()),
        indent(ca.key_pem())
    );
    f.write("web.yaml", &yaml)
}

/// Writes every `every` until `stop`, to whichever client accepts (the active member).
/// Paced so that checking every acknowledged write afterwards stays cheap.
async fn paced_writes(
    clients: Vec<baton_agent::data::DataClient>,
    tag: &'static str,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> WriteReport {
    let mut report = WriteReport::default();
    let mut current = 0usize;
    while !stop.load(Ordering::SeqCst) && report.attempts < 20_000 {
        report.attempts += 1;
        let key = format!("{tag}{}", report.attempts);
        let value = format!("v{}", report.attempts);
        match clients[current].put(&key, &value).await {
            Ok(_) => report.acked.push((key, value)),
            Err(_) => current = (current + 1) % clients.len(),
        }
        tokio::time::sleep(every).await;
    }
    report
}

/// The write load of a client Baton does not manage: it starts on a certificate of the old
/// CA and, once every member trusts the new CA (what its owner would wait for), reconnects on
/// one the new CA issued, trusting both. Baton must not drop the old CA before that.
struct RotatingClient {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<TestResult<(WriteReport, WriteReport)>>,
}

impl RotatingClient {
    fn start(
        f: &Fleet,
        cluster: &str,
        new_ca: &CertAuthority,
        every: Duration,
    ) -> TestResult<Self> {
        let both = format!("{}{}", f.pki.mesh_ca.cert_pem(), new_ca.cert_pem());
        let id = new_ca.issue(&CertSpec::client("writer"))?;
        let (mut old, mut next, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
        for (i, a) in f.clusters[cluster].iter().enumerate() {
            old.push(a.data_client(f.pki.data_tls(&format!("{cluster}-m{i}"))?)?);
            next.push(a.data_client(ClientTls::mtls(&both, &id.cert_pem, &id.key_pem))?);
            statuses.push(a.client.clone());
        }
        let new_fp = new_ca.fingerprint().to_string();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let switch = Arc::new(AtomicBool::new(false));
            let first = tokio::spawn(paced_writes(old, "a", switch.clone(), every));
            loop {
                let mut all = true;
                for c in &statuses {
                    all &= c.status().await.is_ok_and(|s| s.trust.contains(&new_fp));
                }
                if all || stop.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            switch.store(true, Ordering::SeqCst);
            let before = first.await?;
            let second = paced_writes(next, "b", stop, every).await;
            Ok((before, second))
        });
        Ok(RotatingClient { done, task })
    }

    async fn stop(self) -> TestResult<(WriteReport, WriteReport)> {
        self.done.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// Every rotation operation that succeeded, by member.
fn rotation_ops(
    records: &BTreeMap<(String, String), Vec<OperationRecord>>,
    cluster: &str,
) -> BTreeMap<String, Vec<OperationRecord>> {
    records
        .iter()
        .filter(|((c, _), _)| c == cluster)
        .map(|((_, m), rs)| {
            let ops = rs
                .iter()
                .filter(|r| r.state == OperationState::Succeeded)
                .filter(|r| {
                    matches!(
                        r.kind,
                        K::InstallTrust | K::InstallCertificate | K::Restart | K::ResignData
                    )
                })
                .cloned()
                .collect();
            (m.clone(), ops)
        })
        .collect()
}

/// Acknowledged writes missing from any member, read on a certificate of the new CA (the
/// only one members accept once the rotation is over). Replication may still be applying the
/// last writes: each member gets a moment to have the newest one first.
async fn lost_writes(
    f: &Fleet,
    cluster: &str,
    new: &CertAuthority,
    acked: &[(String, String)],
) -> TestResult<usize> {
    let id = new.issue(&CertSpec::client("checker"))?;
    let mut lost = 0;
    for a in &f.clusters[cluster] {
        let c = a.data_client(ClientTls::mtls(new.cert_pem(), &id.cert_pem, &id.key_pem))?;
        if let Some((k, v)) = acked.last() {
            let _ = wait_until(
                &format!("{k} on {}", a.name),
                Duration::from_secs(10),
                || async { matches!(c.get(k).await, Ok(Some(got)) if &got == v).then_some(()) },
            )
            .await;
        }
        for (k, v) in acked {
            if !matches!(c.get(k).await, Ok(Some(got)) if &got == v) {
                lost += 1;
            }
        }
    }
    Ok(lost)
}

/// What the rotation must leave and must never have done on `cluster`, from the agents' side.
async fn check_rotation(
    f: &Fleet,
    cluster: &str,
    site_a: &[&str],
    old: &str,
    new: &CertAuthority,
    client: (WriteReport, WriteReport),
) -> TestResult {
    let new_fp = new.fingerprint();
    // Every member trusts only the new CA and presents a certificate it issued.
    for a in &f.clusters[cluster] {
        let s = a.status().await?;
        assert_eq!(s.trust, [new_fp], "{}: {:?}", a.name, s.trust);
        let issuer = s.certificate.and_then(|c| c.issuer_fingerprint);
        assert_eq!(issuer.as_deref(), Some(new_fp), "{}", a.name);
        // Not one handshake refused, either way, on any member.
        assert_eq!(
            s.handshake_failures.total(),
            0,
            "{}: {:?}",
            a.name,
            s.handshake_failures
        );
    }
    let active = f.roles().await?[cluster]
        .iter()
        .filter(|(r, _)| *r == Role::Active)
        .count();
    assert_eq!(active, 1);
    // No acknowledged write lost, before or after the client's own switch.
    let (before, after) = client;
    assert!(
        !before.acked.is_empty() && !after.acked.is_empty(),
        "writes on both identities"
    );
    let mut acked = before.acked;
    acked.extend(after.acked);
    assert_eq!(
        lost_writes(f, cluster, new, &acked).await?,
        0,
        "acknowledged writes lost"
    );

    let records = f.records().await?;
    let ops = rotation_ops(&records, cluster);
    // Each member: trust added once (keeping the old root), a certificate once, a restart
    // once, the old root dropped once, its data re-signed once. Nothing twice.
    for (m, rs) in &ops {
        let kinds: Vec<K> = rs.iter().map(|r| r.kind).collect();
        let count = |k: K| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(K::InstallTrust), 2, "{m}: {kinds:?}");
        assert_eq!(count(K::InstallCertificate), 1, "{m}: {kinds:?}");
        assert_eq!(count(K::Restart), 1, "{m}: {kinds:?}");
        assert_eq!(count(K::ResignData), 1, "{m}: {kinds:?}");
        let trusts: Vec<&OperationRecord> =
            rs.iter().filter(|r| r.kind == K::InstallTrust).collect();
        assert_eq!(
            trusts[0].params.keep_trust,
            [old],
            "{m}: AddTrust keeps the old root"
        );
        assert_eq!(
            trusts[1].params.keep_trust,
            [new_fp],
            "{m}: removal keeps the new only"
        );
    }
    // Phase order across the cluster, from the agents' clocks (one machine).
    let all_ops: Vec<&OperationRecord> = ops.values().flatten().collect();
    phases_in_order(&all_ops, old, new_fp);
    // Site a: never two rotation jobs at once.
    one_job_at_a_time(site_a.iter().flat_map(|m| ops[*m].iter()), "site a");
    // m0 was active: it restarted only after handing over (its demote finished first).
    let m0 = &records[&(cluster.to_string(), "m0".to_string())];
    let demoted = m0
        .iter()
        .filter(|r| r.kind == K::Demote && r.state == OperationState::Succeeded)
        .map(|r| span(r).1)
        .min();
    let restarted = ops["m0"]
        .iter()
        .find(|r| r.kind == K::Restart)
        .map(|r| span(r).0);
    assert!(
        demoted.is_some() && demoted <= restarted,
        "m0 restarted while active: demote {demoted:?}, restart {restarted:?}"
    );
    Ok(())
}

/// Every trust addition ended before the first certificate of the new CA was staged or
/// presented, and every re-issue before the first removal of the old root.
fn phases_in_order(ops: &[&OperationRecord], old: &str, new_fp: &str) {
    let span = |r: &OperationRecord| support::span(r);
    let first_of = |pred: &dyn Fn(&OperationRecord) -> bool| {
        ops.iter().filter(|r| pred(r)).map(|r| span(r).0).min()
    };
    let last_of = |pred: &dyn Fn(&OperationRecord) -> bool| {
        ops.iter().filter(|r| pred(r)).map(|r| span(r).1).max()
    };
    let adds = |r: &OperationRecord| r.kind == K::InstallTrust && r.params.keep_trust == [old];
    let drops = |r: &OperationRecord| r.kind == K::InstallTrust && r.params.keep_trust == [new_fp];
    let reissue = |r: &OperationRecord| matches!(r.kind, K::InstallCertificate | K::Restart);
    assert!(
        last_of(&adds) <= first_of(&reissue),
        "a certificate of the new CA before every member trusted it"
    );
    assert!(
        last_of(&reissue) <= first_of(&drops),
        "the old root dropped while a member still presented its certificate"
    );
}

/// The operations never overlap in time.
fn one_job_at_a_time<'a>(ops: impl Iterator<Item = &'a OperationRecord>, what: &str) {
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp, &str)> = ops
        .map(|r| {
            let (a, b) = support::span(r);
            (a, b, r.id.as_str())
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "two jobs at once in {what}: {w:?}");
    }
}

/// `baton status` shows every cluster's rotation to `ca` done, and each of `also` (e.g. a
/// mesh's line prefix) too.
fn status_says_done(state: &std::path::Path, ca: &CertAuthority, also: &[&str]) -> TestResult {
    let status = baton().arg("status").arg("--state").arg(state).output()?;
    let shown = String::from_utf8_lossy(&status.stdout).to_string();
    let short = &ca.fingerprint()[..12];
    for prefix in [""].iter().chain(also) {
        let line = format!("{prefix}certificates: CA {short} Done");
        assert!(shown.contains(&line), "{line:?} not in {shown}");
    }
    Ok(())
}

/// A fleet whose restarts take `restart` seconds, a new CA declared for it in `web.yaml`, and
/// the rotating client writing every `every`.
struct Rotation {
    f: Fleet,
    new_ca: CertAuthority,
    state: PathBuf,
    run: Vec<String>,
    client: RotatingClient,
}

impl Rotation {
    async fn start(restart: &str, every: Duration) -> TestResult<Rotation> {
        let f = fleet(restart).await?;
        let new_ca = CertAuthority::generate("web CA 2")?;
        let file = manifests(&f, &new_ca)?;
        let state = f.path("state.json");
        let client = RotatingClient::start(&f, "web", &new_ca, every)?;
        let run = run_args(&[&file], &state, &f.pki.dir);
        Ok(Rotation {
            f,
            new_ca,
            state,
            run,
            client,
        })
    }

    /// `baton run --until-settled` to the end, then the client stopped; what the agents say.
    async fn finish(self) -> TestResult<(Fleet, CertAuthority, PathBuf)> {
        let mut args = self.run.clone();
        args.extend(["--until-settled".into(), "--timeout".into(), "150s".into()]);
        let out = tokio::task::spawn_blocking(move || baton().args(&args).output()).await??;
        let client = self.client.stop().await?;
        assert!(out.status.success(), "{}", text(&out));
        check_rotation(
            &self.f,
            "web",
            &["m0", "m1"],
            self.f.pki.mesh_ca.fingerprint(),
            &self.new_ca,
            client,
        )
        .await?;
        Ok((self.f, self.new_ca, self.state))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_under_write_load_refuses_no_handshake_and_keeps_every_order() -> TestResult {
    let (_f, new_ca, state) = Rotation::start("0.3", Duration::from_millis(2))
        .await?
        .finish()
        .await?;
    // `baton status` says where the rotation stands: done, on the new CA.
    status_says_done(&state, &new_ca, &[])?;
    Ok(())
}

/// `baton run` killed with SIGKILL at 24 points of a rotation, then run to the end: the
/// rotation completes from where the members really are, with nothing done twice and not one
/// handshake refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_baton_run_at_24_points_of_a_rotation_does_nothing_twice() -> TestResult {
    // Restarts of 3 s: the rotation outlasts the 24 kills, which land in every phase.
    let r = Rotation::start("3", Duration::from_millis(10)).await?;
    let delays = [
        250u64, 400, 300, 550, 350, 450, 500, 300, 400, 600, 350, 450, 300, 500, 400, 550, 380,
        420, 300, 480, 350, 520, 400, 450,
    ];
    for delay in delays {
        let mut child = baton()
            .args(&r.run)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    // The kills landed inside the rotation: it started and is not over yet.
    let (mut started, mut finished) = (false, true);
    for a in &r.f.clusters["web"] {
        let trust = a.status().await?.trust;
        started |= trust.iter().any(|t| t == r.new_ca.fingerprint());
        finished &= trust == [r.new_ca.fingerprint()];
    }
    assert!(
        started && !finished,
        "kills outside the rotation: started {started}, finished {finished}"
    );
    r.finish().await?;
    Ok(())
}

/// A Mesh declares the CA: its clusters `web` (m0, m1 in site a, m2 in b) and `db` (m0 in
/// site a, m1 in b) rotate together. Every phase completes on both clusters before either
/// starts the next, at most one rotation job runs per site across the mesh, no handshake is
/// refused and no write is lost on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_rotates_its_clusters_together_phase_by_phase() -> TestResult {
    let mut web = ClusterDef::new("web", "app", 3);
    for i in 0..3 {
        web = web.with(i, &["--restart-seconds", "0.3"]);
    }
    let mut db = ClusterDef::new("db", "app", 2);
    for i in 0..2 {
        db = db.with(i, &["--restart-seconds", "0.3"]);
    }
    let f = Fleet::start(&[web, db], VERSION, 0.2).await?;
    let new_ca = CertAuthority::generate("mesh CA 2")?;
    let cluster_yaml = |name: &str, sites: &[&str]| -> String {
        let mut members = String::new();
        for (i, a) in f.clusters[name].iter().enumerate() {
            members.push_str(&format!(
                "  - name: m{i}\n    site: {}\n    endpoint: https://{}\n",
                sites[i], a.control
            ));
        }
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  members:\n{members}{POLICY}---\n"
        )
    };
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let yaml = format!(
        "{}{}apiVersion: baton.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: fleet\nspec:\n  version: {VERSION}\n  tiers:\n  - name: all\n    clusters: [web, db]\n  certificates:\n    caSecretRef:\n      name: mesh-ca\n    clientGrace: 2s\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: mesh-ca\nstringData:\n  ca.crt: |\n{}  ca.key: |\n{}",
        cluster_yaml("web", &["a", "a", "b"]),
        cluster_yaml("db", &["a", "b"]),
        indent(new_ca.cert_pem()),
        indent(new_ca.key_pem())
    );
    let file = f.write("mesh.yaml", &yaml)?;
    let state = f.path("state.json");
    let web_client = RotatingClient::start(&f, "web", &new_ca, Duration::from_millis(5))?;
    let db_client = RotatingClient::start(&f, "db", &new_ca, Duration::from_millis(5))?;
    let mut args = run_args(&[&file], &state, &f.pki.dir);
    args.extend(["--until-settled".into(), "--timeout".into(), "150s".into()]);
    let out = tokio::task::spawn_blocking(move || baton().args(&args).output()).await??;
    let (web_writes, db_writes) = (web_client.stop().await?, db_client.stop().await?);
    assert!(out.status.success(), "{}", text(&out));
    let old = f.pki.mesh_ca.fingerprint();
    check_rotation(&f, "web", &["m0", "m1"], old, &new_ca, web_writes).await?;
    check_rotation(&f, "db", &["m0"], old, &new_ca, db_writes).await?;
    // Mesh-wide: the phases in order over both clusters, one job at a time in each site.
    let records = f.records().await?;
    let (web_ops, db_ops) = (rotation_ops(&records, "web"), rotation_ops(&records, "db"));
    let all: Vec<&OperationRecord> = web_ops.values().chain(db_ops.values()).flatten().collect();
    phases_in_order(&all, old, new_ca.fingerprint());
    let site_a = ["m0", "m1"]
        .iter()
        .flat_map(|m| web_ops[*m].iter())
        .chain(db_ops["m0"].iter());
    one_job_at_a_time(site_a, "site a across the mesh");
    let site_b = web_ops["m2"].iter().chain(db_ops["m1"].iter());
    one_job_at_a_time(site_b, "site b across the mesh");
    // `baton status` shows the mesh's rotation done.
    status_says_done(&state, &new_ca, &["Mesh fleet "])?;
    Ok(())
}
