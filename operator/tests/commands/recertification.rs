//! `examples/recertification` end to end: `baton run` rotates the CA of the example's Cluster
//! (`cluster.yaml`, also with `restart: Manual`) and of its Mesh variant (`mesh.yaml`), whose
//! members run the exec backend with the example's `exec.yaml` and its real scripts (`bin/*.sh`)
//! on files in a work directory per member. The new CA is made with the `openssl` command of the
//! example's README. What must hold at the end is read from those files and from the agents: the
//! trust store holds the new CA only, the certificate presented is the new CA's (and its key the
//! one in use), the data is signed with that key, and the phases ran in order, each operation
//! once.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_agent::api::{OperationKind as K, OperationRecord, OperationState};
use baton_agent::pki::fingerprints_pem;
use support::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/recertification")
}

/// The new CA, made as the example's README says (`ca.crt`, `ca.key` in `dir`).
fn openssl_ca(dir: &Path, cn: &str) -> TestResult<(String, String)> {
    std::fs::create_dir_all(dir)?;
    let subject = format!("/CN={cn}");
    sh(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    Ok((
        std::fs::read_to_string(dir.join("ca.crt"))?,
        std::fs::read_to_string(dir.join("ca.key"))?,
    ))
}

/// One member of the example: its application home (the example's scripts in `bin/`, some data
/// to re-sign, its TLS files on the fleet's old CA) and its agent, run with the example's
/// `exec.yaml` pointed at that home.
struct Member {
    cluster: String,
    app: PathBuf,
    agent: Agent,
}

impl Member {
    /// The member of `cluster`, named `<cluster>-m1` in the PKI.
    async fn start(root: &Path, pki: &Pki, cluster: &str) -> TestResult<Member> {
        let name = format!("{cluster}-m1");
        let app = root.join(format!("app-{cluster}"));
        for sub in ["bin", "tls", "data"] {
            std::fs::create_dir_all(app.join(sub))?;
        }
        for entry in std::fs::read_dir(example().join("bin"))? {
            let from = entry?.path();
            if let Some(file) = from.file_name() {
                // Keeps the mode: the scripts stay executable.
                std::fs::copy(&from, app.join("bin").join(file))?;
            }
        }
        let cert = &pki.members[&name];
        std::fs::write(app.join("tls/trust.pem"), pki.mesh_ca.cert_pem())?;
        std::fs::write(app.join("tls/cert.pem"), &cert.cert_pem)?;
        std::fs::write(app.join("tls/key.pem"), &cert.key_pem)?;
        std::fs::write(
            app.join("data/orders.jsonl"),
            "{\"order\":1}\n{\"order\":2}\n",
        )?;
        std::fs::write(app.join("data/ledger.jsonl"), "{\"entry\":1}\n")?;
        let config = std::fs::read_to_string(example().join("exec.yaml"))?;
        let ours = config.replace("workDir: /opt/app", &format!("workDir: {}", app.display()));
        assert_ne!(
            ours, config,
            "the example's exec.yaml sets workDir: /opt/app"
        );
        let path = root.join(format!("exec-{cluster}.yaml"));
        std::fs::write(&path, ours)?;
        let mut args = pki.args(&name);
        args.extend(["--backend".into(), "exec".into(), "--exec-config".into()]);
        args.push(path.display().to_string());
        let agent = Agent::start(&name, &root.join(&name), pki.client_tls(), args).await?;
        let s = agent.status().await?;
        assert_eq!(s.trust, [pki.mesh_ca.fingerprint()], "{:?}", s.alarms);
        Ok(Member {
            cluster: cluster.to_string(),
            app,
            agent,
        })
    }
}

/// A fleet of one-member clusters on the PKI's (old) CA, and the new CA (made with openssl).
struct Example {
    dir: tempfile::TempDir,
    pki: Pki,
    members: Vec<Member>,
    ca_crt: String,
    ca_key: String,
    old: String,
    new: String,
}

impl Example {
    async fn start(clusters: &[&str]) -> TestResult<Example> {
        let dir = tempfile::Builder::new().prefix("baton-recert").tempdir()?;
        let root = dir.path().to_path_buf();
        let names: Vec<String> = clusters.iter().map(|c| format!("{c}-m1")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pki = Pki::new(&root.join("pki"), &refs)?;
        // What `baton run --tls-dir` reads (gen-certs names).
        std::fs::write(pki.dir.join("client.crt"), &pki.client.cert_pem)?;
        std::fs::write(pki.dir.join("client.key"), &pki.client.key_pem)?;
        let mut members = Vec::new();
        for c in clusters {
            members.push(Member::start(&root, &pki, c).await?);
        }
        let (ca_crt, ca_key) = openssl_ca(&root.join("new-ca"), "app CA 2")?;
        let new = fingerprints_pem(&ca_crt)?.remove(0);
        let old = pki.mesh_ca.fingerprint().to_string();
        Ok(Example {
            dir,
            pki,
            members,
            ca_crt,
            ca_key,
            old,
            new,
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The example's manifest `file`, with each Cluster's member reached at its running agent
    /// and the CA Secret holding the new CA. Returns the copy, which `baton run` reads.
    fn manifests(&self, file: &str) -> TestResult<PathBuf> {
        let control: BTreeMap<&str, &str> = self
            .members
            .iter()
            .map(|m| (m.cluster.as_str(), m.agent.control.as_str()))
            .collect();
        let text = std::fs::read_to_string(example().join(file))?;
        let mut out = String::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut doc = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)?;
            match doc["kind"].as_str() {
                Some("Cluster") => {
                    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                    let at = *control
                        .get(name)
                        .ok_or_else(|| err(format!("{file}: no agent for Cluster {name}")))?;
                    let members = doc["spec"]["members"]
                        .as_sequence_mut()
                        .ok_or_else(|| err(format!("{file}: no spec.members")))?;
                    assert_eq!(members.len(), 1, "{file}: one member per Cluster");
                    members[0]["endpoint"] = format!("https://{at}").into();
                }
                Some("Mesh") => {}
                Some("Secret") => {
                    doc["stringData"]["ca.crt"] = self.ca_crt.as_str().into();
                    doc["stringData"]["ca.key"] = self.ca_key.as_str().into();
                }
                other => return Err(err(format!("{file}: unexpected kind {other:?}"))),
            }
            out.push_str(&serde_yaml::to_string(&doc)?);
            out.push_str("---\n");
        }
        let path = self.root().join(file);
        std::fs::write(&path, out)?;
        Ok(path)
    }

    /// `baton run -f FILE --until-settled` to the end; the state file, for `baton status`.
    async fn run(&self, file: &str) -> TestResult<PathBuf> {
        let manifests = self.manifests(file)?;
        let state = self.root().join("state.json");
        let mut run = run_args(&[&manifests], &state, &self.pki.dir);
        run.extend(["--until-settled".into(), "--timeout".into(), "60s".into()]);
        let out = tokio::task::spawn_blocking(move || baton().args(&run).output()).await??;
        assert!(out.status.success(), "{}", text(&out));
        Ok(state)
    }

    /// What the rotation left on `m`'s disk and in its agent; its operations, oldest first.
    /// `automatic`: `restart: Automatic` (Baton sent the restart), else a human restarted.
    async fn check(&self, m: &Member, automatic: bool) -> TestResult<Vec<OperationRecord>> {
        let (app, who) = (&m.app, &m.cluster);
        let (old, new) = (&self.old, &self.new);
        // On disk: the trust store holds the new CA only; the certificate presented chains to
        // the new CA and not to the old one; its key is the one in use; nothing left staged.
        let trust = std::fs::read_to_string(app.join("tls/trust.pem"))?;
        assert_eq!(
            fingerprints_pem(&trust)?,
            [new.as_str()],
            "{who}: trust.pem"
        );
        let new_file = self.root().join("new-ca/ca.crt");
        let old_file = self.pki.dir.join("trust.pem");
        assert!(issued_by(app, &new_file, "tls/cert.pem"), "{who}: new CA");
        assert!(!issued_by(app, &old_file, "tls/cert.pem"), "{who}: old CA");
        let cert = std::fs::read(app.join("tls/cert.pem"))?;
        baton_agent::tls::check_key_pair(&cert, &std::fs::read(app.join("tls/key.pem"))?)?;
        assert!(
            !app.join("tls/next/cert.pem").exists(),
            "{who}: left staged"
        );
        // The data is re-signed with the presented (new) key.
        data_signed_by_presented_key(app)?;

        // The agent reports the same, healthy.
        let s = m.agent.status().await?;
        assert_eq!(s.trust, [new.as_str()], "{who}");
        let issuer = s
            .certificate
            .as_ref()
            .and_then(|c| c.issuer_fingerprint.as_deref());
        assert_eq!(issuer, Some(new.as_str()), "{who}");
        assert!(s.alarms.is_empty(), "{who}: {:?}", s.alarms);

        // The operations: each phase's once, in phase order, none failed.
        let mut ran = m.agent.client.operations().await?;
        ran.sort_by_key(|r| r.started_at);
        let failed: Vec<&OperationRecord> = ran
            .iter()
            .filter(|r| r.state != OperationState::Succeeded)
            .collect();
        assert!(failed.is_empty(), "{who}: {failed:?}");
        // What each phase sent, and what its script said it did. With `restart: Manual` Baton
        // sends no restart: the human ran bin/restart.sh.
        let mut want = vec![
            // AddTrust: the new CA beside the old one.
            (
                K::InstallTrust,
                vec![old.clone()],
                "trust store replaced: 2 CA(s)",
            ),
            // Reissue: staged by bin/certificate.sh, applied by bin/restart.sh.
            (
                K::InstallCertificate,
                vec![],
                "certificate staged for the next restart",
            ),
            (K::Restart, vec![], "restarted with the staged certificate"),
            // RemoveOldTrust: the new CA only.
            (
                K::InstallTrust,
                vec![new.clone()],
                "trust store replaced: 1 CA(s)",
            ),
            // ResignData: bin/resign.sh.
            (K::ResignData, vec![], "re-signed 2 file(s)"),
        ];
        if !automatic {
            want.remove(2);
        }
        let kinds = |v: &[(K, Vec<String>, &str)]| -> Vec<(K, Vec<String>)> {
            v.iter().map(|(k, keep, _)| (*k, keep.clone())).collect()
        };
        let phases: Vec<(K, Vec<String>)> = ran
            .iter()
            .map(|r| (r.kind, r.params.keep_trust.clone()))
            .collect();
        assert_eq!(phases, kinds(&want), "{who}: {ran:#?}");
        for w in ran.windows(2) {
            let (a, b) = (span(&w[0]), span(&w[1]));
            assert!(a.1 <= b.0, "{who}: {} overlaps {}", w[0].id, w[1].id);
        }
        for (r, (_, _, says)) in ran.iter().zip(&want) {
            assert!(r.message.contains(says), "{who}: {}: {}", r.id, r.message);
        }
        Ok(ran)
    }
}

/// `baton status` shows the rotation to `new` done in each of `clusters` (the certificates line
/// of its block) and, with `mesh`, on that Mesh's line.
fn status_says_done(state: &Path, new: &str, clusters: &[&str], mesh: Option<&str>) -> TestResult {
    let status = baton().arg("status").arg("--state").arg(state).output()?;
    let shown = String::from_utf8_lossy(&status.stdout);
    let done = format!("certificates: CA {} Done", &new[..12]);
    for c in clusters {
        let block = shown
            .split("\nCluster ")
            .find(|b| b.starts_with(&format!("{c}\n")))
            .ok_or_else(|| err(format!("no Cluster {c} in {shown}")))?;
        let line = format!("\n  {done}");
        if !block.contains(&line) {
            return Err(err(format!("{c}: {line:?} not in {shown}")));
        }
    }
    if let Some(m) = mesh {
        let line = format!("Mesh {m} {done}");
        if !shown.contains(&line) {
            return Err(err(format!("{line:?} not in {shown}")));
        }
    }
    Ok(())
}

/// `openssl verify`: `cert` (a file of `dir`) chains to `ca_file`.
fn issued_by(dir: &Path, ca_file: &Path, cert: &str) -> bool {
    let ca = ca_file.display().to_string();
    sh(dir, "openssl", &["verify", "-CAfile", &ca, cert]).is_ok()
}

/// Every file under `data/` of `app` has a signature that verifies with the key of `cert.pem`.
fn data_signed_by_presented_key(app: &Path) -> TestResult {
    let public = sh(
        app,
        "openssl",
        &["x509", "-in", "tls/cert.pem", "-noout", "-pubkey"],
    )?;
    std::fs::write(app.join("presented.pub"), public)?;
    for name in ["orders.jsonl", "ledger.jsonl"] {
        let data = format!("data/{name}");
        let sig = format!("data/{name}.sig");
        let verify = ["dgst", "-sha256", "-verify", "presented.pub"];
        let mut args = verify.to_vec();
        args.extend(["-signature", &sig, &data]);
        sh(app, "openssl", &args)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_rotates_the_recertification_example_through_its_exec_scripts() -> TestResult {
    let ex = Example::start(&["app"]).await?;
    let state = ex.run("cluster.yaml").await?;
    ex.check(&ex.members[0], true).await?;
    // `baton status` says where it stands: the rotation to the new CA is done.
    status_says_done(&state, &ex.new, &["app"], None)?;
    Ok(())
}

/// `mesh.yaml`: the Mesh declares the CA for its two clusters, which rotate together: every
/// trust addition (of both) before the first new certificate, every restart onto a new
/// certificate before the first removal of the old CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_rotates_the_recertification_mesh_variant_phase_by_phase() -> TestResult {
    let ex = Example::start(&["app-east", "app-west"]).await?;
    let state = ex.run("mesh.yaml").await?;
    let mut all = Vec::new();
    for m in &ex.members {
        all.extend(ex.check(m, true).await?);
    }
    let first = |k: K, keep: &str| {
        all.iter()
            .filter(|r| r.kind == k && (keep.is_empty() || r.params.keep_trust == [keep]))
            .map(|r| span(r).0)
            .min()
    };
    let last = |k: K, keep: &str| {
        all.iter()
            .filter(|r| r.kind == k && (keep.is_empty() || r.params.keep_trust == [keep]))
            .map(|r| span(r).1)
            .max()
    };
    assert!(
        last(K::InstallTrust, &ex.old) <= first(K::InstallCertificate, ""),
        "a new certificate before both clusters trusted the new CA: {all:#?}"
    );
    assert!(
        last(K::Restart, "") <= first(K::InstallTrust, &ex.new),
        "the old CA dropped before both clusters presented the new one: {all:#?}"
    );
    status_says_done(&state, &ex.new, &["app-east", "app-west"], Some("fleet"))?;
    Ok(())
}

/// `cluster.yaml` with `restart: Manual`: Baton stages the certificate and waits, `baton status`
/// lists m1 as restart pending, and no restart is sent. Once a human runs `bin/restart.sh`, the
/// agent reads the new certificate from the file and the rotation goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_restart_manual_the_rotation_waits_for_a_human_to_run_restart_sh() -> TestResult {
    let ex = Example::start(&["app"]).await?;
    let file = ex.manifests("cluster.yaml")?;
    let yaml = std::fs::read_to_string(&file)?;
    let manual = yaml.replace("restart: Automatic", "restart: Manual");
    assert_ne!(manual, yaml, "cluster.yaml says restart: Automatic");
    std::fs::write(&file, manual)?;
    let state = ex.root().join("state.json");
    let mut run = run_args(&[&file], &state, &ex.pki.dir);
    // Waiting for a human is at rest: look again soon rather than in the default minute.
    run.extend(["--resync".into(), "300ms".into()]);
    let mut runner = baton()
        .args(&run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let m = &ex.members[0];
    let staged = m.app.join("tls/next/cert.pem");
    let result = async {
        wait_until("the certificate staged", CONVERGE, || async {
            staged.exists().then_some(())
        })
        .await?;
        let pending = wait_until("restart pending in baton status", CONVERGE, || async {
            let out = baton()
                .arg("status")
                .arg("--state")
                .arg(&state)
                .output()
                .ok()?;
            let shown = String::from_utf8_lossy(&out.stdout).into_owned();
            shown.contains("restart pending: m1").then_some(shown)
        })
        .await?;
        assert!(pending.contains("Reissue"), "{pending}");
        // Baton waits: still staged, still presenting the old CA's certificate, no restart sent.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(staged.exists(), "restarted without a human");
        let s = m.agent.status().await?;
        let issuer = s.certificate.and_then(|c| c.issuer_fingerprint);
        assert_eq!(issuer.as_deref(), Some(ex.old.as_str()));
        // The human restarts the application.
        sh(&m.app, "./bin/restart.sh", &[])?;
        wait_until("the data re-signed", CONVERGE, || async {
            let ops = m.agent.client.operations().await.ok()?;
            ops.iter()
                .any(|r| r.kind == K::ResignData && r.state == OperationState::Succeeded)
                .then_some(())
        })
        .await?;
        ex.check(m, false).await?;
        // The runner records the rotation done on its pass after the agent finished.
        wait_until("the rotation Done in baton status", CONVERGE, || async {
            status_says_done(&state, &ex.new, &["app"], None).ok()
        })
        .await?;
        status_says_done(&state, &ex.new, &["app"], None)
    }
    .await;
    runner.kill()?;
    runner.wait()?;
    result
}
