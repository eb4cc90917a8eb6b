//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! Several replicas may run; only the holder of the Lease reconciles (observes and acts on
//! members, writes status, publishes events). Writes use the Lease's `resourceVersion`, so two
//! replicas can never both succeed in taking or renewing it.
//!
//! Safety against acting after the lease is lost: a replica counts itself leader only until
//! `renew_deadline` after the start of its last successful renewal, which is shorter than the
//! `lease_duration` another replica waits (measured on its own clock, from the moment it last
//! saw the Lease change) before taking over. A renewal that fails, hangs or conflicts therefore
//! stops this replica acting before anyone else may start. The reconcilers check
//! [`Leadership::is_leader`] before writing a status and again before acting.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

/// Whether this replica may act now.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    /// Leader election is off: always the leader.
    always: bool,
    valid_until: Mutex<Option<Instant>>,
    changes: watch::Sender<bool>,
}

impl Leadership {
    /// Leader election disabled (`--leader-election=false`): this replica always acts.
    pub fn always() -> Self {
        Self::make(true)
    }

    /// Not the leader until a [`LeaseElector`] says so.
    pub fn elected() -> Self {
        Self::make(false)
    }

    fn make(always: bool) -> Self {
        Leadership {
            inner: Arc::new(Inner {
                always,
                valid_until: Mutex::new(None),
                changes: watch::channel(always).0,
            }),
        }
    }

    pub fn is_leader(&self) -> bool {
        if self.inner.always {
            return true;
        }
        self.inner
            .valid_until
            .lock()
            .ok()
            .and_then(|v| *v)
            .is_some_and(|t| Instant::now() < t)
    }

    /// Notified with `true` whenever leadership is gained and `false` when it is lost.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.changes.subscribe()
    }

    fn set(&self, until: Option<Instant>) {
        if self.inner.always {
            return;
        }
        if let Ok(mut v) = self.inner.valid_until.lock() {
            *v = until;
        }
        let now = until.is_some_and(|t| Instant::now() < t);
        self.inner.changes.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
    }
}

/// Lease timing and identity.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the pod name, or host name and process id out of cluster).
    pub identity: String,
    /// Another replica takes over after not seeing a renewal for this long.
    pub lease_duration: StdDuration,
    /// This replica stops acting when it could not renew for this long (< lease_duration).
    pub renew_deadline: StdDuration,
    /// Renewal period of the leader.
    pub renew_period: StdDuration,
    /// Period at which a non-leader tries to acquire.
    pub retry_period: StdDuration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: StdDuration::from_secs(15),
            renew_deadline: StdDuration::from_secs(10),
            renew_period: StdDuration::from_secs(5),
            retry_period: StdDuration::from_secs(2),
        }
    }
}

/// The identity of this replica: `POD_NAME`, else `hostname_pid` (two processes on one host
/// must not share an identity, or both would believe they hold the lease).
pub fn default_identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = crate::host::host_name().unwrap_or_else(|| "baton".into());
    format!("{host}_{}", std::process::id())
}

/// Acquires and renews the Lease.
pub struct LeaseElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leadership: Leadership,
    /// The last Lease record seen (holder, renew time, resourceVersion) and when it was first
    /// seen: expiry is judged on this replica's clock, never by comparing with the holder's.
    observed: Option<(String, Instant)>,
}

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Created, renewed or took over the Lease.
    Leader,
    /// Another replica holds a live Lease (named).
    Follower(String),
    /// Another replica wrote the Lease first.
    Conflict,
}

impl LeaseElector {
    pub fn new(client: Client, cfg: LeaseConfig, leadership: Leadership) -> Self {
        LeaseElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            leadership,
            observed: None,
        }
    }

    /// One acquire-or-renew attempt. On an API error leadership is left to expire on its own
    /// (after `renew_deadline`), so a short API hiccup does not interrupt a leader.
    pub async fn step(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let now = MicroTime(jiff::Timestamp::now());
        let current = self.api.get_opt(&self.cfg.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for_me(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won(started)),
                Err(e) if is_conflict(&e) => Ok(self.lost_race()),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!(
            "{holder}|{:?}|{}",
            spec.renew_time.as_ref().map(|t| t.0),
            lease.metadata.resource_version.clone().unwrap_or_default()
        );
        if self.observed.as_ref().is_none_or(|(r, _)| r != &record) {
            self.observed = Some((record, started));
        }
        let duration = spec
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| StdDuration::from_secs(s as u64))
            .unwrap_or(self.cfg.lease_duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen)| started.duration_since(*seen) >= duration);
        let mine = holder == self.cfg.identity;
        if !mine && !holder.is_empty() && !expired {
            self.leadership.set(None);
            return Ok(Attempt::Follower(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            LeaseSpec {
                renew_time: Some(now),
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
                ..spec
            }
        } else {
            self.spec_for_me(now, transitions + 1)
        });
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(self.won(started)),
            Err(e) if is_conflict(&e) => Ok(self.lost_race()),
            Err(e) => Err(e),
        }
    }

    fn spec_for_me(&self, now: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn won(&mut self, started: Instant) -> Attempt {
        let was = self.leadership.is_leader();
        self.leadership.set(Some(started + self.cfg.renew_deadline));
        if !was {
            tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
        }
        Attempt::Leader
    }

    fn lost_race(&mut self) -> Attempt {
        if self.leadership.is_leader() {
            tracing::warn!(identity = %self.cfg.identity, "lost the lease: another replica wrote it");
        }
        self.leadership.set(None);
        Attempt::Conflict
    }

    /// Give the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let was_leader = self.leadership.is_leader();
        self.leadership.set(None);
        if !was_leader {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..spec
        });
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.cfg.identity, "released the lease");
                Ok(())
            }
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Acquire and renew until `stop` resolves, then release the Lease.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let period = match self.step().await {
                Ok(Attempt::Leader) => self.cfg.renew_period,
                Ok(_) => self.cfg.retry_period,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "lease request failed");
                    self.cfg.retry_period
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = &mut stop => break,
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; it expires on its own");
        }
    }
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
