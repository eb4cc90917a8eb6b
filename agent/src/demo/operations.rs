//! What each operation kind does on a demo member.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use jiff::Timestamp;

use super::peers::{self, MAX_PEERS, short};
use super::{Shared, lock};
use crate::api::{
    DemoteRole, Finding, FindingSeverity, MAX_MEDIA, MAX_TASK_RUNS, OperationKind,
    OperationRequest, Role, TaskRun,
};
use crate::http_client::Target;
use crate::ops::{Ended, Progress};
use crate::persist;
use crate::tls;

/// How long a promote waits for a connected source to finish handing over (its demotion to
/// arrive, the last entries to be applied) before refusing.
const PROMOTE_WAIT: Duration = Duration::from_secs(3);

pub(crate) async fn execute(
    shared: &Arc<Shared>,
    req: OperationRequest,
    progress: Progress,
) -> Ended {
    use OperationKind as K;
    match req.kind {
        K::Preflight => preflight(shared, &req).await,
        K::Upgrade | K::Rollback => upgrade(shared, &req, &progress).await,
        K::Promote => promote(shared, &progress).await,
        K::Demote => {
            let role = match req.role {
                Some(DemoteRole::Spare) => Role::Spare,
                _ => Role::Standby,
            };
            demote(shared, role, req.source.clone()).await
        }
        K::ForceStandby => demote(shared, Role::ForcedStandby, req.source.clone()).await,
        K::Backup => backup(shared).await,
        K::Verify => verify(shared).await,
        K::InstallTrust => {
            let pem = req.trust_pem.unwrap_or_default();
            let dropped = shared
                .tls
                .install_trust_keeping(pem.as_bytes(), &req.keep_trust)
                .map_err(|e| format!("trust bundle not installed: {e:#}"))?;
            let fps = shared.tls.trust_fingerprints();
            Ok(format!(
                "trust bundle replaced: {} CA certificate(s): {}{}",
                fps.len(),
                fps.join(", "),
                if dropped.is_empty() {
                    String::new()
                } else {
                    format!("; no longer trusted: {}", dropped.join(", "))
                }
            ))
        }
        K::InstallCertificate => {
            let cert = req.certificate_pem.unwrap_or_default();
            let key = req.key_pem.unwrap_or_default();
            shared
                .tls
                .install_certificate(cert.as_bytes(), key.as_bytes())
                .map_err(|e| format!("certificate not installed: {e:#}"))?;
            let info = tls::cert_info(cert.as_bytes(), None).ok();
            Ok(match info {
                Some(info) => format!(
                    "certificate {} staged (valid until {}); presented after the next restart",
                    info.fingerprint, info.not_after
                ),
                None => "certificate staged; presented after the next restart".to_string(),
            })
        }
        K::Restart => {
            progress.set(10, "restarting the data service");
            tokio::time::sleep(Duration::from_secs_f64(shared.restart_seconds)).await;
            progress.set(30, "applying staged certificates, reloading trust");
            let applied = shared
                .tls
                .apply_staged()
                .map_err(|e| format!("data service cannot restart: {e:#}"))?;
            progress.set(60, "closing open connections");
            shared.cut_connections();
            shared.restart_follower();
            let presented = shared
                .tls
                .cert_info()
                .map(|c| format!("; presents {}", c.fingerprint))
                .unwrap_or_default();
            Ok(format!(
                "data service restarted ({}{}){presented}; peers reconnect with the current certificates",
                if shared.tls.is_tls() {
                    "mutual TLS"
                } else {
                    "plain TCP"
                },
                if applied {
                    ", staged certificate applied"
                } else {
                    ""
                }
            ))
        }
        K::ResignData => {
            let n = shared
                .store
                .resign()
                .await
                .map_err(|e| format!("re-signing failed: {e}"))?;
            Ok(format!("re-computed the checksums of {n} log entries"))
        }
        K::SyncConfig => sync_config(shared, req.source.as_deref().unwrap_or_default()).await,
        K::AddPeer => add_peer(shared, &req),
        K::RemovePeer => remove_peer(shared, req.peer.as_deref().unwrap_or_default()),
        K::Retire => retire(shared).await,
        K::Task => task(shared, &req, &progress).await,
        K::StageMedia => {
            stage_media(
                shared,
                req.version.as_deref().unwrap_or_default(),
                &progress,
            )
            .await
        }
        K::RemoveMedia => remove_media(shared, req.version.as_deref().unwrap_or_default()),
        K::Prepare => prepare(shared, &req, &progress).await,
    }
}

async fn preflight(shared: &Arc<Shared>, req: &OperationRequest) -> Ended {
    let faults = shared.faults();
    let version = req.version.clone().unwrap_or_default();
    let current = shared.state().version;
    if faults.fail_preflight {
        return Err("preflight failed: injected fault failPreflight is set".into());
    }
    if faults.reject_versions.contains(&version) {
        return Err(format!(
            "preflight failed: {version} is not a supported upgrade path from {current}"
        ));
    }
    let probe = shared.data_dir.join(".preflight-probe");
    persist::atomic_write(&probe, b"probe", false)
        .and_then(|()| std::fs::remove_file(&probe).map_err(Into::into))
        .map_err(|e| format!("preflight failed: data directory is not writable: {e:#}"))?;
    if let Some((_, msg)) = shared.repl().conflict.clone() {
        return Err(format!("preflight failed: replication conflict: {msg}"));
    }
    if let Some(issue) = shared.store.integrity() {
        return Err(format!(
            "preflight failed: log checksums broken from index {}",
            issue.first_bad_index
        ));
    }
    Ok(format!(
        "preflight for {version} passed: data directory writable, no replication conflicts, log intact (running {current})"
    ))
}

async fn upgrade(shared: &Arc<Shared>, req: &OperationRequest, progress: &Progress) -> Ended {
    let target = req.version.clone().unwrap_or_default();
    let is_upgrade = req.kind == OperationKind::Upgrade;
    let faults = shared.faults();
    let seconds = shared.upgrade_seconds();
    let what = match &req.component {
        Some(c) => format!("component {c}"),
        None => "member".to_string(),
    };
    let verb = if is_upgrade {
        "upgrading"
    } else {
        "rolling back"
    };
    // Stop serving: no writes, no replication, while the "software" is replaced. Writes are
    // drained before followers hear that this member went out of service.
    shared.store.set_accepting(false);
    let _ = shared.store.barrier().await;
    *lock(&shared.upgrading) = Some(Timestamp::now());
    shared.refresh_accepting();
    shared.stop_follower();
    progress.set(5, &format!("{verb} {what} to {target}: service stopped"));
    let steps: u32 = 20;
    let step = Duration::from_secs_f64(seconds / f64::from(steps));
    let mut failure = None;
    for i in 1..=steps {
        tokio::time::sleep(step).await;
        let pct = u8::try_from(5 + i * 90 / steps).unwrap_or(95);
        progress.set(pct, &format!("{verb} {what} to {target}: step {i}/{steps}"));
        if is_upgrade && i == steps / 2 {
            if faults.crash_mid_upgrade {
                tracing::error!(
                    "injected fault crashMidUpgrade: exiting abruptly halfway through the upgrade"
                );
                std::process::exit(70);
            }
            if faults.hang_upgrade {
                tracing::warn!("injected fault hangUpgrade: this upgrade will never finish");
                std::future::pending::<()>().await;
            }
            if faults.fail_upgrade_to.contains(&target) {
                failure = Some(format!(
                    "upgrade of {what} to {target} failed at {pct}%: injected fault failUpgradeTo; version unchanged"
                ));
                break;
            }
        }
    }
    let outcome = match failure {
        Some(msg) => Err(msg),
        None => {
            let before = shared.state();
            let result = shared.update_state(|s| match &req.component {
                Some(c) => {
                    s.components.insert(c.clone(), target.clone());
                }
                None => {
                    if s.version != target {
                        s.previous_version = Some(s.version.clone());
                    }
                    s.version = target.clone();
                }
            });
            match result {
                Ok(_) => {
                    let from = match &req.component {
                        Some(c) => before.components.get(c).cloned().unwrap_or_default(),
                        None => before.version,
                    };
                    Ok(format!(
                        "{} {what} from {from} to {target} in {seconds:.1}s; role {} kept, {} log entries intact",
                        if is_upgrade {
                            "upgraded"
                        } else {
                            "rolled back"
                        },
                        before.role,
                        shared.store.head()
                    ))
                }
                Err(e) => Err(format!("cannot persist the new version: {e:#}")),
            }
        }
    };
    *lock(&shared.upgrading) = None;
    shared.refresh_accepting();
    shared.restart_follower();
    outcome
}

async fn promote(shared: &Arc<Shared>, progress: &Progress) -> Ended {
    let st = shared.state();
    let version = st.version.clone();
    let no_traffic = shared
        .faults()
        .no_traffic_after_promote_on
        .contains(&version);
    if st.role == Role::Active {
        return Ok(format!("already Active at index {}", shared.store.head()));
    }
    let mut note = String::new();
    if let Some(source) = &st.source {
        progress.set(10, &format!("waiting for {source} to hand over"));
        let deadline = tokio::time::Instant::now() + PROMOTE_WAIT;
        loop {
            let r = shared.repl().clone();
            if let Some((_, msg)) = &r.conflict {
                return Err(format!(
                    "refusing to promote: log conflicts with {source}: {msg}"
                ));
            }
            if !r.connected {
                note =
                    format!("; source {source} unreachable, promoted without confirming catch-up");
                break;
            }
            let lag = r
                .source_head
                .unwrap_or(0)
                .saturating_sub(shared.store.head());
            let source_active = r.source_role == Some(Role::Active);
            if !source_active && lag == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(if source_active {
                    format!(
                        "refusing to promote: source {source} is still Active; demote or force-standby it first"
                    )
                } else {
                    format!(
                        "refusing to promote: still {lag} entries behind source {source}; wait for catch-up"
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    shared.stop_follower();
    shared
        .update_state(|s| {
            s.role = Role::Active;
            s.source = None;
            s.role_since = Timestamp::now();
        })
        .map_err(|e| format!("cannot persist the new role: {e:#}"))?;
    *shared.repl() = super::ReplState::default();
    *lock(&shared.traffic_failed) = if no_traffic {
        Some((
            Timestamp::now(),
            format!("no traffic reached the member after the switchover (version {version})"),
        ))
    } else {
        None
    };
    shared.refresh_accepting();
    Ok(format!(
        "promoted to Active at index {}{note}{}",
        shared.store.head(),
        if no_traffic {
            "; WARNING: traffic check failed, member not serving"
        } else {
            ""
        }
    ))
}

async fn demote(shared: &Arc<Shared>, role: Role, source: Option<String>) -> Ended {
    let was = shared.state().role;
    // Stop writes and drain the writer before telling anyone: followers must never see
    // "no longer Active" together with a head that can still grow.
    shared.store.set_accepting(false);
    let head = match shared.store.barrier().await {
        Ok(h) => h,
        Err(e) => {
            shared.refresh_accepting();
            return Err(e.to_string());
        }
    };
    let rejoins = shared.state().retired && source.is_some();
    let persisted = shared.update_state(|s| {
        if s.role != role {
            s.role_since = Timestamp::now();
        }
        s.role = role;
        // Validation let a retired member through only with a source: it re-joins.
        if source.is_some() {
            s.retired = false;
        }
    });
    if let Err(e) = persisted {
        shared.refresh_accepting();
        return Err(format!("cannot persist the new role: {e:#}"));
    }
    *lock(&shared.traffic_failed) = None;
    if source.is_some() {
        shared
            .set_source(source)
            .map_err(|e| format!("cannot persist the source: {e:#}"))?;
    }
    shared.refresh_accepting();
    shared.restart_follower();
    let following = match shared.state().source {
        Some(s) => format!("; following {s}"),
        None => "; no source to follow".to_string(),
    };
    let (was, rejoined) = if rejoins {
        (
            "OutOfService (retired)".to_string(),
            "; re-joined, no longer retired",
        )
    } else {
        (was.to_string(), "")
    };
    Ok(format!(
        "{was} -> {role} at final index {head}{following}{rejoined}"
    ))
}

async fn backup(shared: &Arc<Shared>) -> Ended {
    let stamp = Timestamp::now().to_string().replace(':', "-");
    let dest = shared
        .data_dir
        .join("backups")
        .join(format!("log-{stamp}.jsonl"));
    let entries = shared.store.backup(dest.clone()).await?;
    Ok(format!(
        "backed up {entries} log entries to {}",
        dest.display()
    ))
}

async fn verify(shared: &Arc<Shared>) -> Ended {
    let entries = shared
        .store
        .verify()
        .await
        .map_err(|e| format!("verify failed: {e}"))?;
    if let Some((_, msg)) = shared.repl().conflict.clone() {
        return Err(format!("verify failed: replication conflict: {msg}"));
    }
    let status = shared.status();
    Ok(format!(
        "{entries} log entries verified; role {}, health {}, {} alarm(s)",
        status.role,
        status.health,
        status.alarms.len()
    ))
}

async fn sync_config(shared: &Arc<Shared>, source: &str) -> Ended {
    let target = Target::new(source, shared.tls.client_config()).map_err(|e| e.to_string())?;
    let mut last = String::new();
    // A peer restarting should not fail the step; a handful of tries bridges it.
    for attempt in 1..=5u32 {
        match target
            .call(
                Method::GET,
                "/v1/config",
                None,
                Duration::from_secs(5),
                1024 * 1024,
            )
            .await
        {
            Ok((StatusCode::OK, body)) => {
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("{source} sent invalid config JSON: {e}"))?;
                if !value.is_object() {
                    return Err(format!("{source} sent a config that is not a JSON object"));
                }
                shared
                    .write_config(&value)
                    .map_err(|e| format!("cannot store the config: {e:#}"))?;
                let revision = value
                    .get("revision")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                return Ok(format!(
                    "configuration (revision {revision}) copied from {source}"
                ));
            }
            Ok((status, body)) => {
                last = format!(
                    "{source} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(e) => last = format!("{source}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(format!("sync-config failed: {last}"))
}

/// Accepts `peer` with the fingerprint given, or with the one of the accepted peer `copyFrom`.
fn add_peer(shared: &Arc<Shared>, req: &OperationRequest) -> Ended {
    let peer = req.peer.clone().unwrap_or_default();
    let accepted = shared.peers();
    let (fingerprint, how) = match (&req.fingerprint, &req.copy_from) {
        (Some(fp), _) => (fp.clone(), String::new()),
        (None, Some(from)) => match accepted.get(from) {
            Some(fp) => (fp.clone(), format!(" (copied from {from})")),
            None => {
                return Err(format!(
                    "cannot copy the identity of {from}: it is not an accepted peer of {} (accepted: {})",
                    shared.member,
                    peers::list_names(&accepted)
                ));
            }
        },
        // Validation requires one of the two.
        (None, None) => return Err("add-peer needs a fingerprint or copyFrom".to_string()),
    };
    let previous = accepted.get(&peer).cloned();
    if previous.as_deref() == Some(fingerprint.as_str()) {
        return Ok(format!(
            "{peer} is already accepted with identity {fingerprint}{how}; nothing changed"
        ));
    }
    if previous.is_none() && accepted.len() >= MAX_PEERS {
        return Err(format!(
            "cannot accept {peer}: {} already accepts {MAX_PEERS} peers, the most it keeps",
            shared.member
        ));
    }
    shared
        .update_peers(|p| {
            p.insert(peer.clone(), fingerprint.clone());
        })
        .map_err(|e| format!("cannot persist the accepted peers: {e:#}"))?;
    let count = accepted.len() + usize::from(previous.is_none());
    Ok(match previous {
        Some(old) => format!(
            "{peer}'s identity replaced: {old} -> {fingerprint}{how}; {count} accepted peer(s)"
        ),
        None => {
            format!("{peer} accepted with identity {fingerprint}{how}; {count} accepted peer(s)")
        }
    })
}

/// Withdraws `peer`'s identity. Streams to and from it are checked again at once.
fn remove_peer(shared: &Arc<Shared>, peer: &str) -> Ended {
    let accepted = shared.peers();
    let Some(old) = accepted.get(peer) else {
        return Ok(format!(
            "{peer} was not an accepted peer of {}; nothing changed",
            shared.member
        ));
    };
    let old = old.clone();
    shared
        .update_peers(|p| {
            p.remove(peer);
        })
        .map_err(|e| format!("cannot persist the accepted peers: {e:#}"))?;
    let left = accepted.len() - 1;
    Ok(format!(
        "{peer} (identity {}) no longer accepted; {}",
        short(&old),
        if left == 0 {
            "no accepted peers left: peer identities are no longer enforced".to_string()
        } else {
            format!("{left} accepted peer(s) left")
        }
    ))
}

/// Takes the member out of the cluster: no writes, no source, role OutOfService, persisted.
/// It keeps serving its log to whoever still follows it, so that a standby can catch up with
/// a retired Active member's final index before being promoted.
async fn retire(shared: &Arc<Shared>) -> Ended {
    let before = shared.state();
    if before.retired {
        return Ok(format!(
            "already retired (since {}); nothing changed",
            before.role_since
        ));
    }
    shared.store.set_accepting(false);
    let head = match shared.store.barrier().await {
        Ok(h) => h,
        Err(e) => {
            shared.refresh_accepting();
            return Err(format!("cannot drain the writes: {e}"));
        }
    };
    shared.stop_follower();
    let persisted = shared.update_state(|s| {
        s.retired = true;
        s.role = Role::OutOfService;
        s.source = None;
        s.role_since = Timestamp::now();
    });
    if let Err(e) = persisted {
        shared.refresh_accepting();
        shared.restart_follower();
        return Err(format!("cannot persist the retirement: {e:#}"));
    }
    *shared.repl() = super::ReplState::default();
    *lock(&shared.traffic_failed) = None;
    shared.refresh_accepting();
    let source = before
        .source
        .map(|s| format!(", stopped following {s}"))
        .unwrap_or_default();
    Ok(format!(
        "retired: {} -> OutOfService at final index {head}{source}; accepts no writes and follows no source until a demote or force-standby with a source re-joins it",
        before.role
    ))
}

/// Runs the named job: `--task-seconds` with progress, then records it in the member's `tasks`
/// (persisted with the member state, newest last, the last [`MAX_TASK_RUNS`]). A name listed
/// in the `failTasks` fault fails halfway and is not recorded.
async fn task(shared: &Arc<Shared>, req: &OperationRequest, progress: &Progress) -> Ended {
    let name = req.task.clone().unwrap_or_default();
    let fail = shared.faults().fail_tasks.contains(&name);
    let seconds = shared.task_seconds;
    let what = match &req.version {
        Some(v) => format!("task {name} for {v}"),
        None => format!("task {name}"),
    };
    progress.set(5, &format!("{what}: started"));
    let steps: u32 = 10;
    let step = Duration::from_secs_f64(seconds / f64::from(steps));
    for i in 1..=steps {
        tokio::time::sleep(step).await;
        if fail && i == steps / 2 {
            return Err(format!("task {name} failed (injected fault)"));
        }
        let pct = u8::try_from(5 + i * 90 / steps).unwrap_or(95);
        progress.set(pct, &format!("{what}: step {i}/{steps}"));
    }
    let run = TaskRun {
        id: req.id.clone(),
        task: name.clone(),
        version: req.version.clone(),
        at: Timestamp::now().to_string(),
    };
    let state = shared
        .update_state(|s| {
            // One entry per operation id, whatever happened before.
            s.tasks.retain(|t| t.id != run.id);
            s.tasks.push(run.clone());
            let excess = s.tasks.len().saturating_sub(MAX_TASK_RUNS);
            s.tasks.drain(..excess);
        })
        .map_err(|e| format!("{what} ran but cannot be recorded: {e:#}"))?;
    Ok(format!(
        "{what} ran in {seconds:.1}s; {} task run(s) recorded",
        state.tasks.len()
    ))
}

/// The "media store full" refusal of a member holding `staged` versions.
fn media_full(staged: usize) -> String {
    format!("media store full: {staged} versions staged (remove some first)")
}

/// Stages the upgrade media of `version`: `--stage-seconds` with progress, then `version` is
/// listed in the member's `media` (persisted, oldest first). The member keeps its role and
/// keeps serving throughout. A version already staged succeeds at once; a store already
/// holding [`MAX_MEDIA`] versions refuses and changes nothing; a version listed in the
/// `failStageMedia` fault fails halfway and is not listed. Only a staging that ran to its end
/// lists the version, so one cut short by a restart is not.
async fn stage_media(shared: &Arc<Shared>, version: &str, progress: &Progress) -> Ended {
    let before = shared.state().media;
    if before.iter().any(|v| v == version) {
        return Ok(format!(
            "media of {version} already staged; {} version(s) staged",
            before.len()
        ));
    }
    if before.len() >= MAX_MEDIA {
        return Err(media_full(before.len()));
    }
    let fail = shared
        .faults()
        .fail_stage_media
        .iter()
        .any(|v| v == version);
    let seconds = shared.stage_seconds;
    progress.set(5, &format!("staging media of {version}: started"));
    let steps: u32 = 10;
    let step = Duration::from_secs_f64(seconds / f64::from(steps));
    for i in 1..=steps {
        tokio::time::sleep(step).await;
        if fail && i == steps / 2 {
            return Err(format!(
                "staging media of {version} failed (injected fault)"
            ));
        }
        let pct = u8::try_from(5 + i * 90 / steps).unwrap_or(95);
        progress.set(
            pct,
            &format!("staging media of {version}: step {i}/{steps}"),
        );
    }
    // Checked again when recording: only one operation runs at a time, but the state is the
    // authority, not what was read before the copy.
    let mut full = None;
    let state = shared
        .update_state(|s| {
            if s.media.iter().any(|v| v == version) {
                return;
            }
            if s.media.len() >= MAX_MEDIA {
                full = Some(s.media.len());
                return;
            }
            s.media.push(version.to_string());
        })
        .map_err(|e| format!("media of {version} copied but cannot be recorded: {e:#}"))?;
    if let Some(staged) = full {
        return Err(media_full(staged));
    }
    Ok(format!(
        "media of {version} staged in {seconds:.1}s; {} version(s) staged: {}",
        state.media.len(),
        state.media.join(", ")
    ))
}

/// Removes `version` from the member's staged media (persisted). A version that is not staged
/// succeeds and changes nothing. Quick: nothing to copy, and the member keeps serving.
fn remove_media(shared: &Arc<Shared>, version: &str) -> Ended {
    if !shared.state().media.iter().any(|v| v == version) {
        return Ok(format!("media of {version} not staged; nothing removed"));
    }
    let state = shared
        .update_state(|s| s.media.retain(|v| v != version))
        .map_err(|e| format!("cannot record the removal of the media of {version}: {e:#}"))?;
    Ok(format!(
        "media of {version} removed; {} version(s) staged{}",
        state.media.len(),
        if state.media.is_empty() {
            String::new()
        } else {
            format!(": {}", state.media.join(", "))
        }
    ))
}

/// The check whose findings are the member's scheduled jobs (`--scheduled-job`).
pub(crate) const SCHEDULED_JOBS_CHECK: &str = "scheduledJobs";

/// What a demo member's preparation checks find for an upgrade to `version`, in the order of
/// `checks`: per check, a warning per scheduled job (check `scheduledJobs`), then the
/// `--prepare-finding` flags' findings of that check, then the `prepareFindings` fault's.
/// A check the member knows nothing about finds nothing.
pub(crate) fn prepare_findings(
    checks: &[String],
    version: &str,
    scheduled_jobs: &[String],
    from_flags: &[Finding],
    from_faults: &[Finding],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for check in checks {
        if check == SCHEDULED_JOBS_CHECK {
            out.extend(scheduled_jobs.iter().map(|job| {
                Finding::new(
                    SCHEDULED_JOBS_CHECK,
                    FindingSeverity::Warning,
                    "ScheduledJobDropped",
                    format!(
                        "scheduled job {job} is dropped by the upgrade to {version}; it must be recreated after the upgrade"
                    ),
                )
            }));
        }
        out.extend(
            from_flags
                .iter()
                .chain(from_faults)
                .filter(|f| f.check == *check)
                .cloned(),
        );
    }
    out
}

/// Runs the preparation checks of `req.checks` for an upgrade to `req.version`:
/// `--prepare-seconds` with progress, then records what they found (see
/// [`prepare_findings`]) as the operation's findings. Succeeds whatever it found; with the
/// `failPrepare` fault it fails halfway, the checks could not run. Changes nothing on the
/// member: role, version, serving and data are untouched.
async fn prepare(shared: &Arc<Shared>, req: &OperationRequest, progress: &Progress) -> Ended {
    let version = req.version.clone().unwrap_or_default();
    let faults = shared.faults();
    let seconds = shared.prepare_seconds;
    let checks = req.checks.join(", ");
    progress.set(
        5,
        &format!("preparation checks for {version}: started ({checks})"),
    );
    let steps: u32 = 10;
    let step = Duration::from_secs_f64(seconds / f64::from(steps));
    for i in 1..=steps {
        tokio::time::sleep(step).await;
        if faults.fail_prepare && i == steps / 2 {
            return Err(
                "preparation checks could not run: injected fault failPrepare is set".into(),
            );
        }
        let pct = u8::try_from(5 + i * 90 / steps).unwrap_or(95);
        progress.set(
            pct,
            &format!("preparation checks for {version}: step {i}/{steps}"),
        );
    }
    let findings = prepare_findings(
        &req.checks,
        &version,
        &shared.scheduled_jobs,
        &shared.prepare_findings,
        &faults.prepare_findings,
    );
    let message = crate::ops::describe_findings(&findings);
    progress.findings(findings);
    Ok(format!(
        "preparation checks for {version} ran ({} check(s): {checks}): {message}",
        req.checks.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FindingSeverity::{Blocking, Warning};

    /// In the order of the requested checks; per check the scheduled jobs, then the flags',
    /// then the faults' findings; nothing for a check not asked for.
    #[test]
    fn prepare_findings_follow_the_requested_checks() {
        let f = |check: &str, severity, code: &str| Finding::new(check, severity, code, code);
        let flags = [
            f("gateways", Blocking, "FlagGateway"),
            f("installConfig", Warning, "FlagConfig"),
            f("scheduledJobs", Warning, "FlagJobs"),
        ];
        let faults = [
            f("installConfig", Blocking, "FaultConfig"),
            f("gateways", Warning, "FaultGateway"),
            f("diskSpace", Blocking, "FaultDisk"),
        ];
        let jobs = ["nightly-report".to_string(), "purge".to_string()];
        let checks = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let codes = |c: &[&str]| -> Vec<String> {
            prepare_findings(&checks(c), "2.0.0", &jobs, &flags, &faults)
                .into_iter()
                .map(|f| f.code)
                .collect()
        };
        assert_eq!(
            codes(&["installConfig", "scheduledJobs", "gateways"]),
            [
                "FlagConfig",
                "FaultConfig",
                "ScheduledJobDropped",
                "ScheduledJobDropped",
                "FlagJobs",
                "FlagGateway",
                "FaultGateway"
            ]
        );
        assert_eq!(codes(&["gateways"]), ["FlagGateway", "FaultGateway"]);
        assert_eq!(codes(&["diskSpace"]), ["FaultDisk"]);
        assert!(codes(&["somethingElse"]).is_empty());
        let jobs_found = prepare_findings(&checks(&["scheduledJobs"]), "2.0.0", &jobs, &[], &[]);
        assert_eq!(
            jobs_found[0],
            Finding::new(
                "scheduledJobs",
                Warning,
                "ScheduledJobDropped",
                "scheduled job nightly-report is dropped by the upgrade to 2.0.0; it must be recreated after the upgrade"
            )
        );
        assert_eq!(jobs_found[1].message.split(' ').nth(2), Some("purge"));
        for f in &jobs_found {
            assert_eq!(crate::api::check_finding(f), Ok(()));
        }
    }
}
