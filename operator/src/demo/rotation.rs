//! The rotate-ca scenario: the fleet's data-port CA is replaced under the write load, as a
//! user would do it. The manifests declare the CA Secret (`ca-secret.yaml`, the demo CA the
//! agents started with); once the fleet is Ready on it, the demo writes a second CA, rewrites
//! that Secret document in place and starts the reconcile loop again on the manifests (the
//! runner reads the manifests when it starts, as `baton run` does). The write load is a
//! client Baton does not manage, following the documented client steps: it trusts the old and
//! the new CA from the moment the new CA exists, and presents a certificate of the new CA once
//! every member trusts it.
//!
//! What it shows, from the statuses and from the agents' side: each phase with its duration
//! (from `status.certificates.phase` of each cluster, pass by pass), the TLS handshakes the
//! agents refused while it ran (their own counters, per peer), the writes and the worst write
//! unavailability.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_agent::api::HandshakeFailures;
use baton_agent::client::ClientTls;
use baton_agent::pki::{CertAuthority, CertSpec};
use jiff::Timestamp;
use tokio::sync::watch;

use super::setup::Traffic;
use super::topology;
use super::watch::Watched;
use super::{Demo, Rollout, add_stats, write};
use crate::api::RotationPhase;
use crate::reconcile::ClusterObject;

/// The CA Secret of the scenario's manifests.
pub(super) const CA_SECRET: &str = "demo-ca";
/// Its file in the manifest directory.
pub(super) const CA_SECRET_FILE: &str = "ca-secret.yaml";
/// `clientGrace` of the scenario: the old CA leaves the trust stores this long after the last
/// connection presenting one of its certificates closed.
pub(super) const CLIENT_GRACE_SECS: u64 = 2;

/// The phases in the order they must come, then `Done`.
const ORDER: [RotationPhase; 4] = [
    RotationPhase::AddTrust,
    RotationPhase::Reissue,
    RotationPhase::RemoveOldTrust,
    RotationPhase::ResignData,
];
const DONE: &str = "Done";

/// A rotation under way in the demo: the new CA and what is learnt about its rotation.
pub(super) struct CaRotation {
    pub(super) old_fp: String,
    pub(super) new_fp: String,
    /// What the writers present once every member trusts the new CA, and what the read-back
    /// presents: a certificate of the new CA, trusting both.
    pub(super) new_tls: ClientTls,
    pub(super) timeline: Timeline,
    /// The agents' refused handshakes when the Secret was rewritten.
    pub(super) baseline: BTreeMap<String, HandshakeFailures>,
    /// When the Secret was rewritten.
    pub(super) started: Instant,
    /// When the writers switched to the new CA's certificate.
    pub(super) switched: Arc<Mutex<Option<Instant>>>,
    /// When the removal of the old CA was forced (`--force-remove-old-trust`).
    pub(super) forced_at: Option<Instant>,
    /// Kept while the writers run: they see a change of identity only while it lives.
    _identity: Arc<watch::Sender<ClientTls>>,
}

/// How long a forced run watches what the forced removal breaks before it stops.
const FORCED_FOR: Duration = Duration::from_secs(10);

/// When each cluster's `status.certificates.phase` took each value, for the target CA.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Cluster → (phase, first reported), in the order reported.
    seen: BTreeMap<String, Vec<(String, Instant)>>,
}

/// One phase across the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSpan {
    pub phase: String,
    /// From the first cluster entering it to the last leaving it.
    pub span: Duration,
    /// Per cluster: how long it was in the phase.
    pub clusters: Vec<(String, Duration)>,
}

impl Timeline {
    /// Note the phases the clusters report now (rotations to `target` only).
    pub fn observe(&mut self, clusters: &[ClusterObject], target: &str, at: Instant) {
        for c in clusters {
            let Some(cs) = c.status.as_ref().and_then(|s| s.certificates.as_ref()) else {
                continue;
            };
            // `root` or `root/issuer`: the rotation is to the root the trust stores get.
            let root = cs
                .target_ca
                .as_deref()
                .map(|t| t.split('/').next().unwrap_or(t));
            let (Some(root), Some(phase)) = (root, cs.phase.as_ref()) else {
                continue;
            };
            if root != target {
                continue;
            }
            self.note(&c.name, phase, at);
        }
    }

    fn note(&mut self, cluster: &str, phase: &str, at: Instant) {
        let v = self.seen.entry(cluster.to_string()).or_default();
        if v.last().is_none_or(|(p, _)| p != phase) {
            v.push((phase.to_string(), at));
        }
    }

    /// The phases in their order, each with the time the fleet spent in it; `now` ends the
    /// phases still under way.
    pub fn spans(&self, now: Instant) -> Vec<PhaseSpan> {
        let mut out = Vec::new();
        for phase in ORDER {
            let name = phase.as_str();
            let mut first: Option<Instant> = None;
            let mut last: Option<Instant> = None;
            let mut clusters = Vec::new();
            for (c, seen) in &self.seen {
                for (i, (p, at)) in seen.iter().enumerate() {
                    if p != name {
                        continue;
                    }
                    let end = seen.get(i + 1).map_or(now, |(_, t)| *t);
                    first = Some(first.map_or(*at, |f| f.min(*at)));
                    last = Some(last.map_or(end, |l| l.max(end)));
                    clusters.push((c.clone(), end.saturating_duration_since(*at)));
                }
            }
            if let (Some(f), Some(l)) = (first, last) {
                out.push(PhaseSpan {
                    phase: name.to_string(),
                    span: l.saturating_duration_since(f),
                    clusters,
                });
            }
        }
        out
    }

    /// What is wrong with the phases of each of `clusters`: every phase reported, in order,
    /// ending `Done`.
    pub fn check(&self, clusters: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        for c in clusters {
            let seen: Vec<&str> = self
                .seen
                .get(c)
                .map(|v| v.iter().map(|(p, _)| p.as_str()).collect())
                .unwrap_or_default();
            let want: Vec<&str> = ORDER.iter().map(|p| p.as_str()).chain([DONE]).collect();
            if seen != want {
                failures.push(format!(
                    "cluster {c}: rotation phases {} (expected {})",
                    if seen.is_empty() {
                        "none reported".to_string()
                    } else {
                        seen.join(" → ")
                    },
                    want.join(" → ")
                ));
            }
        }
        failures
    }

    /// When the last cluster reported `Done`.
    pub fn done_at(&self) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for seen in self.seen.values() {
            let (p, at) = seen.last()?;
            if p != DONE {
                return None;
            }
            last = Some(last.map_or(*at, |l| l.max(*at)));
        }
        last
    }
}

/// Every agent's refused handshakes, by `cluster/member`.
pub(super) async fn handshakes(
    watched: &[Watched],
) -> anyhow::Result<BTreeMap<String, HandshakeFailures>> {
    let all = futures::future::join_all(watched.iter().map(|w| w.client.status())).await;
    let mut out = BTreeMap::new();
    for (w, s) in watched.iter().zip(all) {
        let s = s.with_context(|| format!("reading the status of {}/{}", w.cluster, w.member))?;
        out.insert(format!("{}/{}", w.cluster, w.member), s.handshake_failures);
    }
    Ok(out)
}

/// The handshakes refused since `baseline`: the total, and one line per agent and peer.
pub fn refused_since(
    baseline: &BTreeMap<String, HandshakeFailures>,
    now: &BTreeMap<String, HandshakeFailures>,
) -> (u64, Vec<String>) {
    let empty = HandshakeFailures::default();
    let mut total = 0;
    let mut lines = Vec::new();
    for (agent, f) in now {
        let before = baseline.get(agent).unwrap_or(&empty);
        for (dir, map, old) in [
            ("from", &f.inbound, &before.inbound),
            ("to", &f.outbound, &before.outbound),
        ] {
            for (peer, n) in map {
                let d = n.saturating_sub(old.get(peer).copied().unwrap_or(0));
                if d > 0 {
                    total += d;
                    lines.push(format!("{agent}: {d} refused {dir} {peer}"));
                }
            }
        }
    }
    (total, lines)
}

/// Poll the members until every one trusts `new_fp`, then give the writers `next` (the
/// client's second step: present a certificate of the new CA). Gives up at `stop`.
fn follow_trust(
    watched: Vec<Watched>,
    new_fp: String,
    identity: Arc<watch::Sender<ClientTls>>,
    next: ClientTls,
    switched: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let all = futures::future::join_all(watched.iter().map(|w| w.client.status())).await;
            if all
                .iter()
                .all(|s| s.as_ref().is_ok_and(|s| s.trust.contains(&new_fp)))
            {
                let _ = identity.send(next);
                if let Ok(mut s) = switched.lock() {
                    *s = Some(Instant::now());
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

impl Demo {
    /// The rotate-ca rollout: the loop on the first CA until the fleet is Ready, then the
    /// Secret rewritten with a second CA and the loop again until the rotation settles.
    pub(super) async fn rotate_ca(
        &mut self,
        manifest_dir: &Path,
        state: &Path,
        reach: &super::setup::Reach,
        traffic: &mut Traffic,
        deadline: Instant,
    ) -> anyhow::Result<(Rollout, Vec<String>)> {
        let tls = &reach.control_tls;
        let mut stats = crate::local::RunnerStats::default();
        let mut failures = Vec::new();
        // 1. The fleet on the CA it started with: Baton adopts it (nothing to rotate).
        let (first, failure) = self
            .phase(manifest_dir, state, tls, traffic, deadline, false)
            .await?;
        add_stats(&mut stats, &first);
        failures.extend(failure.map(|e| format!("before the rotation: {e}")));
        let rotation_start = Timestamp::now();
        if failures.is_empty() && self.breached().is_empty() {
            // 2. A second CA, the writers told to trust it, the load started.
            let pki = self.pki.clone().context("certificates")?;
            let (old_pem, _) = pki.mesh_ca()?;
            let old_fp = baton_agent::pki::fingerprints_pem(&old_pem)?
                .into_iter()
                .next()
                .context("the demo CA has no certificate")?;
            let new_ca = CertAuthority::generate("baton mesh CA 2")?;
            write(&pki.dir.join("mesh-ca-2.crt"), new_ca.cert_pem())?;
            crate::local::state::write_atomic(
                &pki.dir.join("mesh-ca-2.key"),
                new_ca.key_pem().as_bytes(),
            )?;
            let both = format!("{old_pem}{}", new_ca.cert_pem());
            let old_id = pki.data_identity()?;
            let new_id = new_ca.issue(&CertSpec::client(super::fleet::LOAD_IDENTITY))?;
            let identity = Arc::new(self.identity.take().context("the writers' identity")?);
            let _ = identity.send(ClientTls::mtls(&both, &old_id.0, &old_id.1));
            let new_tls = ClientTls::mtls(&both, &new_id.cert_pem, &new_id.key_pem);
            traffic.load.start();
            tokio::time::sleep(Duration::from_secs(1)).await;
            // 3. The Secret rewritten in place; the loop started again on the manifests.
            let baseline = handshakes(&reach.watched).await?;
            write(
                &manifest_dir.join(CA_SECRET_FILE),
                &topology::ca_secret_yaml(CA_SECRET, new_ca.cert_pem(), new_ca.key_pem()),
            )?;
            let new_fp = new_ca.fingerprint().to_string();
            self.line(&format!(
                "\n  rotate-ca: Secret {CA_SECRET} rewritten in {} with CA {} (was {}); the \
                 write load trusts both and presents the new CA's certificate once every \
                 member trusts it\n",
                manifest_dir.join(CA_SECRET_FILE).display(),
                &new_fp[..12],
                &old_fp[..12],
            ));
            let switched = Arc::new(Mutex::new(None));
            let follower = follow_trust(
                reach.watched.clone(),
                new_fp.clone(),
                identity.clone(),
                new_tls.clone(),
                switched.clone(),
                self.stop_load.clone(),
            );
            self.rotation = Some(CaRotation {
                old_fp,
                new_fp,
                new_tls,
                timeline: Timeline::default(),
                baseline,
                started: Instant::now(),
                switched,
                forced_at: None,
                _identity: identity,
            });
            let (second, failure) = self
                .phase(manifest_dir, state, tls, traffic, deadline, false)
                .await?;
            add_stats(&mut stats, &second);
            failures.extend(failure.map(|e| format!("the rotation: {e}")));
            follower.abort();
        }
        if let Some(d) = &mut self.display {
            d.finish();
        }
        Ok((
            Rollout {
                phase1: rotation_start,
                phase2: None,
                stats,
            },
            failures,
        ))
    }

    /// `--force-remove-old-trust`: once every cluster reports `Reissue` for the new CA (every
    /// member trusts it, nobody presents it yet), force `RemoveOldTrust` on each, as a user
    /// would with `baton force`; `FORCED_FOR` later, stop the loop (`Some`): what the force
    /// broke is what the run shows.
    pub(super) fn force_removal(
        &mut self,
        clusters: &[ClusterObject],
        state: &Path,
    ) -> anyhow::Result<Option<crate::local::Settled>> {
        let Some(r) = &mut self.rotation else {
            return Ok(None);
        };
        if let Some(at) = r.forced_at {
            return Ok((at.elapsed() > FORCED_FOR).then(|| {
                crate::local::Settled::Blocked(vec![(
                    "demo".into(),
                    "the old CA's removal was forced before Reissue".into(),
                )])
            }));
        }
        let in_reissue = |c: &ClusterObject| {
            c.status
                .as_ref()
                .and_then(|s| s.certificates.as_ref())
                .is_some_and(|cs| {
                    cs.phase.as_deref() == Some(RotationPhase::Reissue.as_str())
                        && cs
                            .target_ca
                            .as_deref()
                            .is_some_and(|t| t.starts_with(r.new_fp.as_str()))
                })
        };
        if clusters.is_empty() || !clusters.iter().all(in_reissue) {
            return Ok(None);
        }
        let names: Vec<String> = clusters
            .iter()
            .map(|c| {
                crate::plan::cluster::rotation_phase_name(
                    &c.name,
                    RotationPhase::RemoveOldTrust,
                    &r.new_fp,
                )
            })
            .collect();
        let path = crate::local::state::Intents::path_for(state);
        crate::local::state::Intents::update(&path, |i| {
            for (c, name) in clusters.iter().zip(&names) {
                i.clusters
                    .entry(c.name.clone())
                    .or_default()
                    .force
                    .push(name.clone());
            }
        })?;
        r.forced_at = Some(Instant::now());
        self.line(&format!(
            "\n  rotate-ca: forcing {} before anyone is re-issued (as `baton force` would)\n",
            names.join(", ")
        ));
        Ok(None)
    }

    /// After the rotation: every cluster Ready and `Done` on the new CA; every member on the
    /// version it started with, trusting only the new CA and presenting its certificate; the
    /// phases in order; not one handshake refused. Fills the summary.
    pub(super) async fn check_rotation(
        &self,
        watched: &[Watched],
        state: &Path,
        summary: &mut super::Summary,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let o = &self.opts;
        let phases = self.final_phases(state)?;
        let st = crate::local::State::load(state)?;
        let Some(r) = &self.rotation else {
            failures.push("the rotation did not start".into());
            return Ok(());
        };
        for c in &self.layout {
            let mut members = Vec::new();
            for w in watched.iter().filter(|w| w.cluster == c.name) {
                let s = match w.client.status().await {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(format!("{}/{}: {e}", c.name, w.member));
                        continue;
                    }
                };
                let issuer = s
                    .certificate
                    .as_ref()
                    .and_then(|c| c.issuer_fingerprint.clone())
                    .unwrap_or_default();
                if s.trust != [r.new_fp.clone()] {
                    failures.push(format!(
                        "{}/{} trusts {:?}, expected only the new CA {}",
                        c.name, w.member, s.trust, r.new_fp
                    ));
                }
                if issuer != r.new_fp {
                    failures.push(format!(
                        "{}/{} presents a certificate issued by {issuer:?}, expected the new CA",
                        c.name, w.member
                    ));
                }
                if s.version != o.from {
                    failures.push(format!(
                        "{}/{} runs {}, expected {} (a rotation changes no version)",
                        c.name, w.member, s.version, o.from
                    ));
                }
                let ca = if issuer.len() >= 12 {
                    &issuer[..12]
                } else {
                    "none"
                };
                members.push((w.member.clone(), format!("{} CA {ca}", s.version)));
            }
            let phase = phases
                .iter()
                .find(|(n, _)| n == &c.name)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            if phase != crate::api::ClusterPhase::Ready {
                failures.push(format!(
                    "cluster {} ended {phase:?}, expected Ready",
                    c.name
                ));
            }
            let certs = st
                .clusters
                .get(&c.name)
                .and_then(|o| o.status.as_ref())
                .and_then(|s| s.certificates.clone())
                .unwrap_or_default();
            if certs.phase.as_deref() != Some(DONE)
                || certs.target_ca.as_deref().map(|t| t.split('/').next()) != Some(Some(&r.new_fp))
            {
                failures.push(format!(
                    "cluster {}: certificates {:?} on {:?}, expected Done on the new CA",
                    c.name, certs.phase, certs.target_ca
                ));
            }
            summary
                .clusters
                .push((c.name.clone(), format!("{phase:?}"), members));
        }
        let names: Vec<String> = self.layout.iter().map(|c| c.name.clone()).collect();
        failures.extend(r.timeline.check(&names));
        let now = handshakes(watched).await?;
        let (refused, lines) = refused_since(&r.baseline, &now);
        if refused > 0 {
            failures.push(format!(
                "{refused} TLS handshakes refused during the rotation: {}",
                lines.join("; ")
            ));
        }
        let end = r.timeline.done_at().unwrap_or_else(Instant::now);
        summary.rotation = Some(super::RotationSummary {
            old_ca: r.old_fp.clone(),
            new_ca: r.new_fp.clone(),
            phases: r.timeline.spans(end),
            total: end.saturating_duration_since(r.started),
            handshakes_refused: refused,
            handshake_lines: lines,
            client_switched: r
                .switched
                .lock()
                .ok()
                .and_then(|s| *s)
                .map(|t| t.saturating_duration_since(r.started)),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(seen: &[(&str, &[(&str, u64)])], t0: Instant) -> Timeline {
        let mut t = Timeline::default();
        for (c, phases) in seen {
            for (p, ms) in *phases {
                t.note(c, p, t0 + Duration::from_millis(*ms));
            }
        }
        t
    }

    #[test]
    fn phases_are_timed_across_the_fleet_and_checked_in_order() {
        let t0 = Instant::now();
        let t = timeline(
            &[
                (
                    "a",
                    &[
                        ("AddTrust", 0),
                        ("Reissue", 1000),
                        ("RemoveOldTrust", 5000),
                        ("ResignData", 7000),
                        ("Done", 7500),
                    ],
                ),
                (
                    "b",
                    &[
                        ("AddTrust", 200),
                        ("Reissue", 1500),
                        ("RemoveOldTrust", 6000),
                        ("ResignData", 8000),
                        ("Done", 8200),
                    ],
                ),
            ],
            t0,
        );
        let spans = t.spans(t0 + Duration::from_secs(60));
        let names: Vec<&str> = spans.iter().map(|s| s.phase.as_str()).collect();
        assert_eq!(
            names,
            ["AddTrust", "Reissue", "RemoveOldTrust", "ResignData"]
        );
        assert_eq!(spans[0].span, Duration::from_millis(1500));
        assert_eq!(
            spans[1].clusters,
            [
                ("a".to_string(), Duration::from_millis(4000)),
                ("b".to_string(), Duration::from_millis(4500))
            ]
        );
        assert_eq!(spans[3].span, Duration::from_millis(1200));
        assert!(t.check(&["a".into(), "b".into()]).is_empty());
        assert_eq!(t.done_at(), Some(t0 + Duration::from_millis(8200)));
        // A phase skipped, one out of order, a cluster that never rotated, one not done.
        let bad = timeline(
            &[
                (
                    "a",
                    &[("AddTrust", 0), ("RemoveOldTrust", 10), ("Done", 20)],
                ),
                ("b", &[("Reissue", 0), ("AddTrust", 10)]),
            ],
            t0,
        );
        let f = bad.check(&["a".into(), "b".into(), "c".into()]);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[2].contains("none reported"), "{f:?}");
        assert_eq!(bad.done_at(), None);
    }

    #[test]
    fn only_handshakes_refused_since_the_baseline_count() {
        let f = |inbound: &[(&str, u64)], outbound: &[(&str, u64)]| HandshakeFailures {
            inbound: inbound.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            outbound: outbound.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let before = BTreeMap::from([("web/m1".to_string(), f(&[("127.0.0.1", 2)], &[]))]);
        let now = BTreeMap::from([
            ("web/m1".to_string(), f(&[("127.0.0.1", 2)], &[])),
            (
                "web/m2".to_string(),
                f(&[("127.0.0.1", 1)], &[("127.0.0.1:7001", 3)]),
            ),
        ]);
        assert_eq!(refused_since(&before, &before), (0, vec![]));
        let (n, lines) = refused_since(&before, &now);
        assert_eq!(n, 4);
        assert_eq!(
            lines,
            [
                "web/m2: 1 refused from 127.0.0.1",
                "web/m2: 3 refused to 127.0.0.1:7001"
            ]
        );
    }
}
