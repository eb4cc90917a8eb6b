//! Setting the demo up, in the order `Demo::run` does it: the banner, the certificates and
//! agents, the manifests, who is where, the fault of the rollback scenario, the write load with
//! the split-brain watcher, and the display.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use baton_agent::api::Faults;
use baton_agent::client::ClientTls;

use super::display::Display;
use super::fleet::{AgentSpec, Fleet, Pki};
use super::load::{LoadCounters, LoadLimits, Writer};
use super::topology::{self, ManifestSettings};
use super::watch::{self, Watched};
use super::{Demo, Load, Scenario, write};

/// One agent: (cluster, member, control endpoint, data endpoint).
pub(super) type AgentEndpoint = (String, String, String, String);

/// How the writers, the watchers and the read-back reach the agents.
pub(super) struct Reach {
    /// Every cluster with its members' data endpoints: (cluster, [(member, data endpoint)]).
    pub(super) data_members: Vec<(String, Vec<(String, String)>)>,
    pub(super) control_tls: ClientTls,
    pub(super) data_tls: ClientTls,
    /// A control-API client per agent.
    pub(super) watched: Vec<Watched>,
}

/// The write load (its writers start with the rollout) and the split-brain watcher.
pub(super) struct Traffic {
    pub(super) counters: Vec<(String, Arc<LoadCounters>)>,
    pub(super) load: Load,
    pub(super) monitor: tokio::task::JoinHandle<()>,
}

impl Demo {
    /// What is about to run.
    pub(super) fn announce(&self) {
        let o = &self.opts;
        let workers = o.clusters - 1;
        if o.scenario == Scenario::RotateCa {
            println!(
                "Baton demo (rotate-ca): {} clusters × {} members on {}, one Mesh declaring \
                 their CA — rotated mesh-wide under a write load (restarts of {} s)",
                o.clusters, o.members, o.from, o.restart_seconds
            );
            println!("  directory {}", self.root.display());
            return;
        }
        if o.scenario == Scenario::Scale {
            let c = self.layout.get(topology::SCALED);
            println!(
                "Baton demo (scale): {} clusters × {} members on {} — cluster {} gets a member \
                 ({}), switches over to it and loses an original one, under a write load",
                o.clusters,
                o.members,
                o.from,
                c.map_or("?", |c| c.name.as_str()),
                c.and_then(|c| c.spare_agent.as_deref()).unwrap_or("?"),
            );
            println!("  directory {}", self.root.display());
            return;
        }
        println!(
            "Baton demo ({}): {} clusters × {} members — 1 management, {workers} worker{} — \
             {} → {}{}",
            o.scenario.name(),
            o.clusters,
            o.members,
            if workers == 1 { "" } else { "s" },
            o.from,
            o.to,
            if o.scenario == Scenario::Backout {
                format!(" → {}", o.from)
            } else {
                String::new()
            }
        );
        println!("  directory {}", self.root.display());
    }

    /// Certificates and agents: the first member of each cluster active, the others
    /// replicating from it. The fleet is kept in `self` (stopped by `shutdown`).
    pub(super) async fn start_agents(&mut self) -> anyhow::Result<(Pki, Vec<AgentEndpoint>)> {
        let o = &self.opts;
        let agents: Vec<String> = self
            .layout
            .iter()
            .flat_map(|c| c.agents().map(|m| c.agent_name(m)))
            .collect();
        let pki = Pki::generate(&self.root.join("pki"), &agents)?;
        self.pki = Some(pki.clone());
        let mut fleet = Fleet::new(
            &self.root,
            pki.clone(),
            o.upgrade_seconds,
            o.restart_seconds,
        )?;
        let t = Instant::now();
        for c in &self.layout {
            let first = &c.members[0];
            let active = fleet
                .start(&AgentSpec {
                    cluster: c.name.clone(),
                    member: first.clone(),
                    agent: c.agent_name(first),
                    active: true,
                    source: None,
                    version: o.from.clone(),
                })
                .await?;
            let source = active.data.clone();
            // The others replicate from it; the member the scale scenario adds is fresh,
            // replicating from nobody (its join points it at the active).
            let followers = c.members[1..].iter().map(|m| (m, Some(source.clone())));
            for (m, source) in followers.chain(c.spare_agent.iter().map(|m| (m, None))) {
                fleet
                    .start(&AgentSpec {
                        cluster: c.name.clone(),
                        member: m.clone(),
                        agent: c.agent_name(m),
                        active: false,
                        source,
                        version: o.from.clone(),
                    })
                    .await?;
            }
        }
        println!(
            "  started {} agents on 127.0.0.1 in {:.1} s (mutual TLS; logs in {})",
            fleet.agents.len(),
            t.elapsed().as_secs_f64(),
            self.root.join("agents").display()
        );
        let agent_eps: Vec<AgentEndpoint> = fleet
            .agents
            .iter()
            .map(|a| {
                (
                    a.cluster.clone(),
                    a.member.clone(),
                    a.control.clone(),
                    a.data.clone(),
                )
            })
            .collect();
        self.fleet = Some(fleet);
        Ok((pki, agent_eps))
    }

    /// The Clusters and the Mesh (at the target version), in `manifests/`.
    pub(super) fn write_manifests(
        &self,
        agents: &[AgentEndpoint],
    ) -> anyhow::Result<(PathBuf, ManifestSettings)> {
        let o = &self.opts;
        let find = |c: &str, m: &str| agents.iter().find(|a| a.0 == c && a.1 == m);
        let manifest_dir = self.root.join("manifests");
        std::fs::create_dir_all(&manifest_dir)
            .with_context(|| format!("creating {}", manifest_dir.display()))?;
        // The scale scenario changes members, not versions: the mesh stays where it is.
        let settings = ManifestSettings {
            mesh: "demo".into(),
            version: if o.scenario == Scenario::Scale {
                o.from.clone()
            } else {
                o.to.clone()
            },
            workers_parallel: o.parallel,
            traffic_timeout_secs: o.traffic_timeout,
        };
        if o.scenario == Scenario::RotateCa {
            return self.write_rotation_manifests(&manifest_dir, agents, settings);
        }
        let clusters_text = topology::clusters_yaml(
            &self.layout,
            |c, m| find(&c.name, m).map(|a| a.2.clone()).unwrap_or_default(),
            &settings,
        );
        write(&manifest_dir.join("clusters.yaml"), &clusters_text)?;
        write(
            &manifest_dir.join("mesh.yaml"),
            &topology::mesh_yaml(&settings),
        )?;
        println!(
            "  manifests {} (mesh demo → {})",
            manifest_dir.display(),
            settings.version
        );
        Ok((manifest_dir, settings))
    }

    /// The rotate-ca scenario's manifests: the clusters declaring the CA Secret, and the
    /// Secret holding the CA the agents started with.
    fn write_rotation_manifests(
        &self,
        manifest_dir: &std::path::Path,
        agents: &[AgentEndpoint],
        settings: ManifestSettings,
    ) -> anyhow::Result<(PathBuf, ManifestSettings)> {
        let find = |c: &str, m: &str| agents.iter().find(|a| a.0 == c && a.1 == m);
        let ca = topology::CaSettings {
            secret: super::rotation::CA_SECRET.into(),
            client_grace_secs: super::rotation::CLIENT_GRACE_SECS,
        };
        let files = topology::rotate_ca_manifests(
            &self.layout,
            |c, m| find(&c.name, m).map(|a| a.2.clone()).unwrap_or_default(),
            &settings,
            &self.opts.from,
            &ca,
        );
        for (name, text) in &files {
            write(&manifest_dir.join(name), text)?;
        }
        let pki = self.pki.as_ref().context("certificates")?;
        let (cert, key) = pki.mesh_ca()?;
        write(
            &manifest_dir.join(super::rotation::CA_SECRET_FILE),
            &topology::ca_secret_yaml(&ca.secret, &cert, &key),
        )?;
        println!(
            "  manifests {} (clusters on CA Secret {}, holding the CA the agents started with)",
            manifest_dir.display(),
            ca.secret
        );
        Ok((manifest_dir.to_path_buf(), settings))
    }

    /// Who is where, for the load and the watchers.
    pub(super) fn reach(&self, pki: &Pki, agents: &[AgentEndpoint]) -> anyhow::Result<Reach> {
        let find = |c: &str, m: &str| agents.iter().find(|a| a.0 == c && a.1 == m);
        let data_members: Vec<(String, Vec<(String, String)>)> = self
            .layout
            .iter()
            .map(|c| {
                // The writers know every agent (a member added later is written to once it
                // is the active).
                let members = c
                    .agents()
                    .filter_map(|m| find(&c.name, m).map(|a| (m.clone(), a.3.clone())))
                    .collect();
                (c.name.clone(), members)
            })
            .collect();
        let control_tls = pki.control_tls()?;
        let data_tls = pki.data_tls()?;
        let watched = watch::clients(
            &agents
                .iter()
                .map(|a| (a.0.clone(), a.1.clone(), a.2.clone()))
                .collect::<Vec<_>>(),
            &control_tls,
        )?;
        Ok(Reach {
            data_members,
            control_tls,
            data_tls,
            watched,
        })
    }

    /// The fault of the rollback scenario: the members of the fault cluster stop serving
    /// when promoted on the target version. Nothing in the other scenarios.
    pub(super) async fn inject_fault(&self, watched: &[Watched]) -> anyhow::Result<()> {
        let o = &self.opts;
        if let Some(fc) = self.fault_cluster() {
            for w in watched.iter().filter(|w| w.cluster == fc) {
                w.client
                    .set_faults(&Faults {
                        no_traffic_after_promote_on: vec![o.to.clone()],
                        ..Faults::default()
                    })
                    .await
                    .with_context(|| format!("injecting the fault on {fc}/{}", w.member))?;
            }
            println!(
                "  fault injected: members of {fc} stop serving when promoted on {} \
                 (their traffic check will fail)",
                o.to
            );
        }
        Ok(())
    }

    /// Write load and the split-brain watcher: one writer per cluster (started by the first
    /// pass of the rollout), and the watcher polling every member's role from now on.
    pub(super) fn start_traffic(&mut self, reach: &Reach) -> anyhow::Result<Traffic> {
        let mut counters: Vec<(String, Arc<LoadCounters>)> = Vec::new();
        let mut pending = Vec::new();
        let limits = LoadLimits {
            max_time: self.opts.timeout,
            ..LoadLimits::default()
        };
        // The rotate-ca scenario changes what the writers present as the rotation goes.
        let identity = (self.opts.scenario == Scenario::RotateCa)
            .then(|| tokio::sync::watch::channel(reach.data_tls.clone()));
        for (c, members) in &reach.data_members {
            let mut w = Writer::new(c, members, &reach.data_tls, limits)?;
            if let Some((_, rx)) = &identity {
                w = w.with_identity(rx.clone());
            }
            counters.push((c.clone(), w.counters.clone()));
            pending.push(w);
        }
        let monitor = tokio::spawn(watch::split_brain_monitor(
            reach.watched.clone(),
            self.breaches.clone(),
            self.stop_watch.clone(),
        ));
        if let Some((tx, _)) = identity {
            self.identity = Some(tx);
            println!(
                "  write load: one writer per cluster on the active member's data port, once \
                 the fleet is Ready\n"
            );
        } else {
            println!(
                "  write load: one writer per cluster on the active member's data port, from \
                 the first pass on\n"
            );
        }
        let load = Load {
            pending,
            running: Vec::new(),
            stop: self.stop_load.clone(),
        };
        Ok(Traffic {
            counters,
            load,
            monitor,
        })
    }

    /// The progress display (bars or plain lines), one row per cluster.
    pub(super) fn start_display(&mut self) {
        self.display = Some(Display::new(
            self.opts.bars,
            &self
                .layout
                .iter()
                .map(|c| (c.name.clone(), c.members.len()))
                .collect::<Vec<_>>(),
        ));
    }
}
