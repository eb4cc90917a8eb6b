//! Why an object cannot make progress without a human: one typed reason per stop, carrying the
//! data its message is made of. The planners decide *which* stall holds; [`Stall::reason`] and
//! [`Stall::message`] are the only place that turns it into the `Stalled` condition's reason
//! and message, the object's `status.message` and the warning event
//! ([`super::conditions::announce_stall`]).

use std::fmt;

use super::validate::Problem;

/// A stop that a human must act on (kstatus `Stalled=True`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stall {
    /// The spec fails validation (CEL/schema rules the API server would also enforce, or a
    /// semantic rule only the planner can check); nothing runs until it is fixed.
    InvalidSpec(Vec<Problem>),
    /// A version string that does not parse.
    InvalidVersion(String),
    /// No `spec.version` and no Mesh setting one.
    NoVersion,
    /// Two members report Active: acting could make it worse.
    SplitBrain(String),
    /// The new active did not serve in time and automatic rollback is off.
    TrafficCheckFailed(String),
    /// Members that exhausted their retries, with their last errors (`(member, error)`).
    MemberZombie(Vec<(String, String)>),
    /// The only way forward stops service and `allowOutage` is not set.
    OutageNotAllowed { active: String },
    /// An automatic rollback completed: the rollout from `version` failed with `reason`.
    AutomaticRollback { version: String, reason: String },
    /// Mesh: member clusters whose objects cannot be read (`(cluster, error)`).
    ClusterUnreadable(Vec<(String, String)>),
    /// Mesh: the preconditions of a rollout to `version` failed.
    PreconditionFailed { version: String, failures: String },
    /// Mesh: nothing moves and nothing will; what each cluster waits for.
    Blocked(Vec<String>),
    /// The CA Secret of `spec.certificates` is missing or unusable (`reason` is the stable
    /// reason the host found, e.g. `CAExpired`); no member is contacted about certificates.
    CaUnusable {
        reason: &'static str,
        message: String,
    },
    /// A member must restart onto its new certificate and no other member can take over
    /// first (`allowOutage` is not set).
    RestartNeedsOutage { member: String },
    /// The Cluster declares `spec.certificates` while it belongs to mesh `mesh`, whose
    /// clusters share one trust (`mesh_declares`: the mesh declares other certificates).
    CertificatesInMesh { mesh: String, mesh_declares: bool },
    /// Removing `member` would leave no in-sync standby where it is the only one, and
    /// `spec.topology.allowRemovingLastStandby` is not set (and no member is joining).
    LastInSyncStandby { member: String },
    /// `spec.topology.clientIdentity: Shared`, and the joining `member` presents an identity
    /// no existing member has, so the clients' copied entries would not accept it.
    IdentityMismatch { member: String, identity: String },
    /// Mesh: `tier` declares `drainBefore` and the replication backlog did not drain within
    /// `timeout` (`backlog`: the clusters with their entries left).
    DrainTimeout {
        tier: String,
        timeout: String,
        backlog: String,
    },
    /// A once-per-mesh step (`task`) failed every attempt of its retry policy on `member`
    /// (unknown: None) of `cluster`.
    TaskFailed {
        task: String,
        cluster: String,
        member: Option<String>,
        failures: u32,
        error: String,
    },
    /// A once-per-mesh task is due but its cluster is stopped (Stalled or RolledBack for
    /// another reason): it cannot run until a human fixes the cluster.
    TaskBlocked {
        task: String,
        cluster: String,
        phase: String,
    },
    /// The health after the rollout to `version` is worse than its baseline (`findings`).
    HealthRegressed {
        version: String,
        findings: Vec<String>,
    },
    /// The preparation checks for `version` found blocking problems (`findings`, each
    /// `member check Code: message`).
    PreparationFailed {
        version: String,
        findings: Vec<String>,
    },
}

impl Stall {
    /// The condition's `reason` (CamelCase, stable: alerting and tests match on it).
    pub fn reason(&self) -> &'static str {
        match self {
            Stall::InvalidSpec(_) | Stall::InvalidVersion(_) => "InvalidSpec",
            Stall::NoVersion => "NoVersion",
            Stall::SplitBrain(_) => "SplitBrain",
            Stall::TrafficCheckFailed(_) => "TrafficCheckFailed",
            Stall::MemberZombie(_) => "MemberZombie",
            Stall::OutageNotAllowed { .. } => "OutageNotAllowed",
            Stall::AutomaticRollback { .. } => "AutomaticRollback",
            Stall::ClusterUnreadable(_) => "ClusterUnreadable",
            Stall::PreconditionFailed { .. } => "PreconditionFailed",
            Stall::Blocked(_) => "Blocked",
            Stall::CaUnusable { reason, .. } => reason,
            Stall::RestartNeedsOutage { .. } => "RestartNeedsOutage",
            Stall::CertificatesInMesh { .. } => "CertificatesInMesh",
            Stall::LastInSyncStandby { .. } => "LastInSyncStandby",
            Stall::IdentityMismatch { .. } => "IdentityMismatch",
            Stall::DrainTimeout { .. } => "DrainTimeout",
            Stall::TaskFailed { .. } => "TaskFailed",
            Stall::TaskBlocked { .. } => "TaskBlocked",
            Stall::HealthRegressed { .. } => "HealthCheckFailed",
            Stall::PreparationFailed { .. } => "PreparationFailed",
        }
    }

    /// The condition's message, also the object's `status.message` while stalled.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::InvalidSpec(problems) => f.write_str(&super::validate::summarize(problems)),
            Stall::InvalidVersion(e) | Stall::SplitBrain(e) | Stall::TrafficCheckFailed(e) => {
                f.write_str(e)
            }
            Stall::NoVersion => {
                f.write_str("no version: set spec.version or add the cluster to a Mesh")
            }
            Stall::MemberZombie(errors) => {
                let errs: Vec<String> = errors.iter().map(|(m, e)| format!("{m}: {e}")).collect();
                write!(f, "needs a human (then retry): {}", errs.join("; "))
            }
            Stall::OutageNotAllowed { active } => write!(
                f,
                "upgrading {active} in place stops service (no other member can take over); set spec.upgrade.allowOutage: true"
            ),
            Stall::AutomaticRollback { version, reason } => write!(
                f,
                "rolled back from {version}: {reason}; set a new version or request a retry"
            ),
            Stall::ClusterUnreadable(clusters) => {
                let list: Vec<String> = clusters
                    .iter()
                    .map(|(n, e)| format!("{n}: {}", super::conditions::bounded(e, 200)))
                    .collect();
                write!(
                    f,
                    "cannot read cluster {} (see its Stalled condition); no new cluster is \
                     admitted until it is fixed",
                    list.join("; ")
                )
            }
            Stall::PreconditionFailed { version, failures } => {
                write!(f, "rollout to {version} not started: {failures}")
            }
            Stall::Blocked(waiting) => f.write_str(&waiting.join("; ")),
            Stall::CaUnusable { message, .. } => write!(
                f,
                "the CA of spec.certificates cannot be used: {}; nothing is sent to the members until it is fixed",
                super::conditions::bounded(message, 400)
            ),
            Stall::RestartNeedsOutage { member } => write!(
                f,
                "{member} must restart to present its new certificate and no other member can take over first; set spec.upgrade.allowOutage: true or restart it by hand (restart: Manual)"
            ),
            Stall::CertificatesInMesh {
                mesh,
                mesh_declares: true,
            } => write!(
                f,
                "spec.certificates differs from mesh {mesh}'s: the clusters of a mesh share one trust and rotate together; remove spec.certificates from the Cluster (the mesh's applies)"
            ),
            Stall::CertificatesInMesh { mesh, .. } => write!(
                f,
                "spec.certificates is declared on a Cluster of mesh {mesh}: the clusters of a mesh share one trust and rotate together; declare it on the Mesh instead"
            ),
            Stall::LastInSyncStandby { member } => write!(
                f,
                "removing {member} would leave the cluster without an in-sync standby; add a member first, or set spec.topology.allowRemovingLastStandby: true"
            ),
            Stall::IdentityMismatch { member, identity } => write!(
                f,
                "{member} presents identity {} that no existing member has, but spec.topology.clientIdentity is Shared (clients copy an existing member's entry); give it an existing member's identity or use Distinct",
                &identity[..identity.len().min(16)]
            ),
            Stall::DrainTimeout {
                tier,
                timeout,
                backlog,
            } => write!(
                f,
                "tier {tier} waited {timeout} for the replication backlog to drain and it has not: {backlog}; it starts by itself once the backlog drains (or with a force intent on the mesh)"
            ),
            Stall::TaskFailed {
                task,
                cluster,
                member,
                failures,
                error,
            } => write!(
                f,
                "task {task} failed {failures} times (cluster {cluster}, member {}): {}; fix the cause, then retry the cluster",
                member.as_deref().unwrap_or("?"),
                super::conditions::bounded(error, 400)
            ),
            Stall::HealthRegressed { version, findings } => write!(
                f,
                "health worse after the upgrade to {version}: {}; fix it, or accept it with a retry intent",
                super::conditions::bounded(&findings.join("; "), 600)
            ),
            Stall::PreparationFailed { version, findings } => write!(
                f,
                "the preparation checks for {version} found {} blocking: {}; fix them, then retry the cluster (the checks run again)",
                findings.len(),
                super::conditions::bounded(&findings.join("; "), 800)
            ),
            Stall::TaskBlocked {
                task,
                cluster,
                phase,
            } => write!(
                f,
                "task {task} is due but cluster {cluster} is {phase} (see its Stalled condition); fix the cluster, then retry it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stall_has_its_reason_and_a_message_with_its_data() {
        let cases = [
            (Stall::NoVersion, "NoVersion", "no version"),
            (
                Stall::TaskBlocked {
                    task: "upload".into(),
                    cluster: "core-a".into(),
                    phase: "Stalled".into(),
                },
                "TaskBlocked",
                "task upload is due but cluster core-a is Stalled (see its Stalled condition); fix the cluster, then retry it",
            ),
            (
                Stall::TaskFailed {
                    task: "upload-content".into(),
                    cluster: "core-a".into(),
                    member: Some("a1".into()),
                    failures: 3,
                    error: "exit 2".into(),
                },
                "TaskFailed",
                "task upload-content failed 3 times (cluster core-a, member a1): exit 2; fix the cause, then retry the cluster",
            ),
            (
                Stall::DrainTimeout {
                    tier: "dest".into(),
                    timeout: "15m".into(),
                    backlog: "src (12)".into(),
                },
                "DrainTimeout",
                "tier dest waited 15m for the replication backlog to drain and it has not: src (12)",
            ),
            (
                Stall::InvalidVersion("bad version \"x\"".into()),
                "InvalidSpec",
                "bad version",
            ),
            (
                Stall::SplitBrain("both a and b report Active".into()),
                "SplitBrain",
                "both a and b",
            ),
            (
                Stall::TrafficCheckFailed("b did not serve".into()),
                "TrafficCheckFailed",
                "b did not",
            ),
            (
                Stall::MemberZombie(vec![
                    ("a".into(), "disk full".into()),
                    ("b".into(), "x".into()),
                ]),
                "MemberZombie",
                "needs a human (then retry): a: disk full; b: x",
            ),
            (
                Stall::OutageNotAllowed { active: "a".into() },
                "OutageNotAllowed",
                "upgrading a in place",
            ),
            (
                Stall::AutomaticRollback {
                    version: "2.0".into(),
                    reason: "no traffic".into(),
                },
                "AutomaticRollback",
                "rolled back from 2.0: no traffic;",
            ),
            (
                Stall::ClusterUnreadable(vec![("c0".into(), "bad".into())]),
                "ClusterUnreadable",
                "cannot read cluster c0: bad",
            ),
            (
                Stall::PreconditionFailed {
                    version: "2.0".into(),
                    failures: "backlog on c1".into(),
                },
                "PreconditionFailed",
                "rollout to 2.0 not started: backlog on c1",
            ),
            (
                Stall::Blocked(vec!["c1 waits".into(), "c2 waits".into()]),
                "Blocked",
                "c1 waits; c2 waits",
            ),
            (
                Stall::CaUnusable {
                    reason: "CAExpired",
                    message: "CA certificate x expired".into(),
                },
                "CAExpired",
                "cannot be used: CA certificate x expired; nothing is sent",
            ),
            (
                Stall::RestartNeedsOutage { member: "a".into() },
                "RestartNeedsOutage",
                "a must restart",
            ),
        ];
        for (stall, reason, message) in cases {
            assert_eq!(stall.reason(), reason, "{stall:?}");
            assert!(
                stall.message().contains(message),
                "{:?} → {}",
                stall,
                stall.message()
            );
        }
    }

    #[test]
    fn an_unreadable_cluster_error_is_bounded_in_the_message() {
        let long = "x".repeat(10_000);
        let m = Stall::ClusterUnreadable(vec![("c0".into(), long)]).message();
        assert!(m.len() < 400, "{} bytes", m.len());
    }
}
