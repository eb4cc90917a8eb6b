//! The operation journal: idempotency by caller-chosen id, one operation at a time, and
//! records that survive restarts (`<data-dir>/operations.json`, replaced atomically).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::api::{
    DemoteRole, Finding, MAX_CHECKS, OperationKind, OperationParams, OperationRecord,
    OperationRequest, OperationState, bound_findings, valid_check_name,
};
use crate::http_util::{ApiError, clip, excerpt};
use crate::persist;
use crate::pki::hex;

/// How many records are kept; the oldest finished ones are dropped first.
pub const MAX_RECORDS: usize = 10_000;
pub const INTERRUPTED: &str = "interrupted by agent restart";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    record: OperationRecord,
    /// SHA-256 of the full request (secrets included), to tell "same request again" from
    /// "same id, different request" without keeping the secrets themselves.
    digest: String,
}

pub struct OpsStore {
    path: PathBuf,
    inner: Mutex<VecDeque<Stored>>,
    /// Serialises file writes so an older snapshot never overwrites a newer one.
    write_lock: tokio::sync::Mutex<()>,
    finished: watch::Sender<u64>,
}

pub enum Begin {
    Created(OperationRecord),
    Existing(OperationRecord),
}

/// How a backend's operation ended: the message of its record either way, `Err` when it failed.
pub type Ended = Result<String, String>;

/// Lets a running operation report progress. It lives with the journal it writes to, so that
/// the backends (`demo`, `exec`) and the engine that drives them all depend on `ops` and not
/// on each other.
#[derive(Clone)]
pub struct Progress {
    ops: Arc<OpsStore>,
    id: String,
}

impl Progress {
    pub fn new(ops: Arc<OpsStore>, id: String) -> Self {
        Progress { ops, id }
    }

    pub fn set(&self, percent: u8, message: &str) {
        self.ops.progress(&self.id, percent, message);
    }

    /// Records what the operation found (a `prepare`'s findings), bounded with
    /// [`bound_findings`]; persisted with the operation's end.
    pub fn findings(&self, findings: Vec<Finding>) {
        self.ops.set_findings(&self.id, findings);
    }
}

impl OpsStore {
    /// Loads the journal. Operations that were running when the agent stopped are marked
    /// Failed with [`INTERRUPTED`]: the agent cannot know how far they got, and reporting them
    /// as finished would let the operator skip a step.
    pub async fn load(path: PathBuf) -> Result<Arc<OpsStore>> {
        let stored: Vec<Stored> = persist::read_json(&path)?.unwrap_or_default();
        let mut interrupted = false;
        let now = Timestamp::now();
        let records: VecDeque<Stored> = stored
            .into_iter()
            .map(|mut s| {
                if s.record.state == OperationState::Running {
                    s.record.state = OperationState::Failed;
                    s.record.message = INTERRUPTED.to_string();
                    s.record.finished_at = Some(now);
                    interrupted = true;
                }
                s
            })
            .collect();
        let (finished, _) = watch::channel(0);
        let store = Arc::new(OpsStore {
            path,
            inner: Mutex::new(records),
            write_lock: tokio::sync::Mutex::new(()),
            finished,
        });
        if interrupted {
            store.persist().await?;
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Stored>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    async fn persist(&self) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let snapshot: Vec<Stored> = self.lock().iter().cloned().collect();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || persist::write_json(&path, &snapshot))
            .await
            .context("operation journal writer task failed")?
    }

    /// Registers a new operation, or returns the existing one for a repeated request.
    pub async fn begin(
        &self,
        req: &OperationRequest,
        member: &str,
        version_before: Option<String>,
    ) -> Result<Begin, ApiError> {
        let digest = request_digest(req);
        let record = {
            let mut inner = self.lock();
            if let Some(existing) = inner.iter().rev().find(|s| s.record.id == req.id) {
                if existing.digest == digest {
                    return Ok(Begin::Existing(existing.record.clone()));
                }
                return Err(ApiError::conflict(
                    "id_conflict",
                    format!(
                        "operation id {:?} is already used by a different {} request; choose a new id",
                        req.id, existing.record.kind
                    ),
                ));
            }
            if let Some(running) = inner
                .iter()
                .rev()
                .find(|s| s.record.state == OperationState::Running)
            {
                return Err(busy(&running.record, req));
            }
            let record = OperationRecord {
                id: req.id.clone(),
                kind: req.kind,
                params: recorded_params(req),
                state: OperationState::Running,
                progress: 0,
                message: "started".to_string(),
                started_at: Timestamp::now(),
                finished_at: None,
                version_before,
                version_after: None,
                member: member.to_string(),
                findings: Vec::new(),
            };
            inner.push_back(Stored {
                record: record.clone(),
                digest,
            });
            while inner.len() > MAX_RECORDS {
                match inner.iter().position(|s| s.record.state.is_finished()) {
                    Some(pos) => {
                        inner.remove(pos);
                    }
                    None => break,
                }
            }
            record
        };
        if let Err(e) = self.persist().await {
            // Without a durable record a restart would forget the operation; refuse it.
            let mut inner = self.lock();
            if let Some(pos) = inner.iter().position(|s| s.record.id == req.id) {
                inner.remove(pos);
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                format!("cannot record the operation durably: {e:#}"),
            ));
        }
        Ok(Begin::Created(record))
    }

    /// Refuses a new operation while another one runs (checked again, atomically, by
    /// [`OpsStore::begin`]).
    pub fn check_idle(&self, req: &OperationRequest) -> Result<(), ApiError> {
        match self.running() {
            Some(running) if running.id != req.id => Err(busy(&running, req)),
            _ => Ok(()),
        }
    }

    /// In-memory progress; persisted with the next state change.
    pub fn progress(&self, id: &str, progress: u8, message: &str) {
        let mut inner = self.lock();
        if let Some(s) = inner.iter_mut().rev().find(|s| s.record.id == id)
            && s.record.state == OperationState::Running
        {
            s.record.progress = progress.min(100);
            s.record.message = message.to_string();
        }
    }

    /// In-memory findings of a running operation, bounded; persisted with the next state
    /// change.
    pub fn set_findings(&self, id: &str, findings: Vec<Finding>) {
        let mut inner = self.lock();
        if let Some(s) = inner.iter_mut().rev().find(|s| s.record.id == id)
            && s.record.state == OperationState::Running
        {
            s.record.findings = bound_findings(findings);
        }
    }

    pub async fn finish(
        &self,
        id: &str,
        state: OperationState,
        message: String,
        version_after: Option<String>,
    ) {
        {
            let mut inner = self.lock();
            if let Some(s) = inner.iter_mut().rev().find(|s| s.record.id == id) {
                s.record.state = state;
                if state == OperationState::Succeeded {
                    s.record.progress = 100;
                }
                s.record.message = message;
                s.record.finished_at = Some(Timestamp::now());
                s.record.version_after = version_after;
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!("cannot persist the result of operation {id}: {e:#}");
        }
        self.finished.send_modify(|n| *n += 1);
    }

    pub fn get(&self, id: &str) -> Option<OperationRecord> {
        self.lock()
            .iter()
            .rev()
            .find(|s| s.record.id == id)
            .map(|s| s.record.clone())
    }

    pub fn list(&self) -> Vec<OperationRecord> {
        self.lock().iter().map(|s| s.record.clone()).collect()
    }

    /// The running operation, or else the most recent one.
    pub fn current(&self) -> Option<OperationRecord> {
        let inner = self.lock();
        inner
            .iter()
            .rev()
            .find(|s| s.record.state == OperationState::Running)
            .or_else(|| inner.back())
            .map(|s| s.record.clone())
    }

    pub fn running(&self) -> Option<OperationRecord> {
        self.lock()
            .iter()
            .rev()
            .find(|s| s.record.state == OperationState::Running)
            .map(|s| s.record.clone())
    }

    /// The most recent finished operation.
    pub fn last_finished(&self) -> Option<OperationRecord> {
        self.lock()
            .iter()
            .rev()
            .find(|s| s.record.state.is_finished())
            .map(|s| s.record.clone())
    }

    /// Waits until `id` is finished or `timeout` passes; returns the record either way.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> Option<OperationRecord> {
        let mut rx = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.get(id)?;
            if rec.state.is_finished() {
                return Some(rec);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.get(id),
            }
        }
    }
}

fn busy(running: &OperationRecord, req: &OperationRequest) -> ApiError {
    ApiError::conflict(
        "operation_running",
        format!(
            "operation {:?} ({}) is still running ({}%, {}); wait for it to finish before starting {} {:?}",
            running.id, running.kind, running.progress, running.message, req.kind, req.id
        ),
    )
}

fn request_digest(req: &OperationRequest) -> String {
    // Field order is fixed by the struct, so the encoding is canonical.
    let bytes = serde_json::to_vec(req).unwrap_or_default();
    hex(&Sha256::digest(bytes))
}

fn recorded_params(req: &OperationRequest) -> OperationParams {
    OperationParams {
        version: req.version.clone(),
        component: req.component.clone(),
        source: req.source.clone(),
        role: req.role,
        trust_fingerprints: req
            .trust_pem
            .as_deref()
            .and_then(|p| crate::tls::fingerprints(p.as_bytes(), "trust").ok())
            .unwrap_or_default(),
        keep_trust: req.keep_trust.clone(),
        certificate_fingerprint: req
            .certificate_pem
            .as_deref()
            .and_then(|p| crate::tls::fingerprints(p.as_bytes(), "certificate").ok())
            .and_then(|f| f.into_iter().next()),
        peer: req.peer.clone(),
        fingerprint: req.fingerprint.clone(),
        copy_from: req.copy_from.clone(),
        task: req.task.clone(),
        checks: req.checks.clone(),
    }
}

fn valid_chars(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

pub fn validate_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 || !valid_chars(id, "._:/-") {
        return Err(ApiError::bad_request(
            "invalid_id",
            "operation id must be 1 to 128 characters of A-Z a-z 0-9 . _ : / -",
        ));
    }
    Ok(())
}

pub fn validate_version(v: &str) -> Result<(), ApiError> {
    validate_token("version", v, "._+-")
}

pub fn validate_component(c: &str) -> Result<(), ApiError> {
    validate_token("component", c, "._-")
}

/// 1 to 64 characters: ASCII letters, digits and `extra`.
fn validate_token(what: &str, v: &str, extra: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 64 || !valid_chars(v, extra) {
        let listed: Vec<String> = extra.chars().map(String::from).collect();
        return Err(ApiError::bad_request(
            "invalid_param",
            format!(
                "{what} {} must be 1 to 64 characters of A-Z a-z 0-9 {}",
                excerpt(v),
                listed.join(" ")
            ),
        ));
    }
    Ok(())
}

/// `host:port` with a DNS name, IPv4 address or bracketed IPv6 address.
pub fn validate_endpoint(s: &str, what: &str) -> Result<(), ApiError> {
    let err = || {
        ApiError::bad_request(
            "invalid_param",
            format!(
                "{what} {} must be host:port (a data endpoint such as 127.0.0.1:7001)",
                excerpt(s)
            ),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    if port == 0 || host.is_empty() || host.len() > 253 {
        return Err(err());
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if !(bracketed && valid_chars(&host[1..host.len() - 1], ":.")
        || !bracketed && valid_chars(host, ".-"))
    {
        return Err(err());
    }
    Ok(())
}

fn require<'a>(
    value: &'a Option<String>,
    kind: OperationKind,
    name: &str,
) -> Result<&'a str, ApiError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::bad_request(
            "missing_param",
            format!("{kind} requires the {name:?} parameter"),
        )),
    }
}

/// A peer name: a DNS label, 1 to 63 characters of `a-z 0-9 -`, starting and ending with a
/// letter or digit (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub fn valid_peer_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// A SHA-256 fingerprint as agents report them: 64 lowercase hex digits.
pub fn valid_fingerprint(fp: &str) -> bool {
    fp.len() == 64 && fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `name` (the parameter `what`: a peer or task name) must be a DNS label.
fn validate_peer_name(name: &str, what: &str) -> Result<(), ApiError> {
    if valid_peer_name(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_param",
        format!(
            "{what} {} must be a DNS label: 1 to 63 characters of a-z 0-9 -, starting and ending with a letter or digit",
            excerpt(name)
        ),
    ))
}

/// `add-peer`: a name, and exactly one of `fingerprint` and `copyFrom`.
fn validate_add_peer(req: &OperationRequest) -> Result<(), ApiError> {
    validate_peer_name(require(&req.peer, req.kind, "peer")?, "peer")?;
    match (&req.fingerprint, &req.copy_from) {
        (None, None) => Err(ApiError::bad_request(
            "missing_param",
            "add-peer requires the \"fingerprint\" or the \"copyFrom\" parameter",
        )),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_param",
            "add-peer takes \"fingerprint\" or \"copyFrom\", not both",
        )),
        (Some(fp), None) if !valid_fingerprint(fp) => Err(ApiError::bad_request(
            "invalid_param",
            format!(
                "fingerprint {} is not a SHA-256 fingerprint (64 lowercase hex digits)",
                excerpt(fp)
            ),
        )),
        (Some(_), None) => Ok(()),
        (None, Some(from)) => validate_peer_name(from, "copyFrom"),
    }
}

/// Most CAs a `keepTrust` list names: a rotation keeps one old root, a chain a few.
pub const MAX_KEEP_TRUST: usize = 16;

/// SHA-256 fingerprints as agents report them: 64 lowercase hex digits.
fn validate_fingerprints(fps: &[String], what: &str) -> Result<(), ApiError> {
    if fps.len() > MAX_KEEP_TRUST {
        return Err(ApiError::bad_request(
            "invalid_param",
            format!(
                "{what} lists {} fingerprints; at most {MAX_KEEP_TRUST}",
                fps.len()
            ),
        ));
    }
    for fp in fps {
        if !valid_fingerprint(fp) {
            return Err(ApiError::bad_request(
                "invalid_param",
                format!(
                    "{what}: {:?} is not a SHA-256 fingerprint (64 lowercase hex digits)",
                    clip(fp, 80)
                ),
            ));
        }
    }
    Ok(())
}

/// `prepare`'s `checks`: 1 to [`MAX_CHECKS`] names, each [`valid_check_name`], none twice.
fn validate_checks(checks: &[String]) -> Result<(), ApiError> {
    if checks.is_empty() {
        return Err(ApiError::bad_request(
            "missing_param",
            "prepare requires the \"checks\" parameter (1 to 16 check names)",
        ));
    }
    if checks.len() > MAX_CHECKS {
        return Err(ApiError::bad_request(
            "invalid_param",
            format!(
                "checks lists {} check names; at most {MAX_CHECKS}",
                checks.len()
            ),
        ));
    }
    for (i, check) in checks.iter().enumerate() {
        if !valid_check_name(check) {
            return Err(ApiError::bad_request(
                "invalid_param",
                format!(
                    "checks: check name {} must be 1 to 63 characters of A-Z a-z 0-9 -, starting with a letter",
                    excerpt(check)
                ),
            ));
        }
        if checks[..i].contains(check) {
            return Err(ApiError::bad_request(
                "invalid_param",
                format!("checks lists {check:?} twice"),
            ));
        }
    }
    Ok(())
}

/// A `prepare`'s findings in its message: "no findings", or "N finding(s): B blocking, W
/// warning(s)".
pub fn describe_findings(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no findings".to_string();
    }
    let blocking = findings
        .iter()
        .filter(|f| f.severity == crate::api::FindingSeverity::Blocking)
        .count();
    format!(
        "{} finding(s): {blocking} blocking, {} warning(s)",
        findings.len(),
        findings.len() - blocking
    )
}

/// Checks the parameters of a request against its kind: required ones present and well
/// formed, and none that the kind does not use (a stray parameter usually means the caller
/// meant another kind).
pub fn validate_request(req: &OperationRequest) -> Result<(), ApiError> {
    use OperationKind as K;
    validate_id(&req.id)?;
    let kind = req.kind;
    let allowed: &[&str] = match kind {
        K::Preflight | K::Upgrade | K::Rollback => &["version", "component"],
        K::Demote => &["source", "role"],
        K::ForceStandby => &["source"],
        K::SyncConfig => &["source"],
        K::InstallTrust => &["trustPem", "keepTrust"],
        K::InstallCertificate => &["certificatePem", "keyPem"],
        K::AddPeer => &["peer", "fingerprint", "copyFrom"],
        K::RemovePeer => &["peer"],
        K::Task => &["task", "version"],
        K::StageMedia | K::RemoveMedia => &["version"],
        K::Prepare => &["version", "checks"],
        K::Promote | K::Backup | K::Verify | K::Restart | K::ResignData | K::Retire => &[],
    };
    let present = [
        ("version", req.version.is_some()),
        ("component", req.component.is_some()),
        ("source", req.source.is_some()),
        ("role", req.role.is_some()),
        ("trustPem", req.trust_pem.is_some()),
        ("keepTrust", !req.keep_trust.is_empty()),
        ("certificatePem", req.certificate_pem.is_some()),
        ("keyPem", req.key_pem.is_some()),
        ("peer", req.peer.is_some()),
        ("fingerprint", req.fingerprint.is_some()),
        ("copyFrom", req.copy_from.is_some()),
        ("task", req.task.is_some()),
        ("checks", !req.checks.is_empty()),
    ];
    for (name, is_present) in present {
        if is_present && !allowed.contains(&name) {
            return Err(ApiError::bad_request(
                "unexpected_param",
                format!("{kind} does not take the {name:?} parameter"),
            ));
        }
    }
    match kind {
        K::Preflight | K::Upgrade | K::Rollback => {
            validate_version(require(&req.version, kind, "version")?)?;
            if let Some(c) = &req.component {
                validate_component(c)?;
            }
        }
        K::Demote | K::ForceStandby => {
            if let Some(s) = &req.source {
                validate_endpoint(s, "source")?;
            }
            if kind == K::Demote {
                // `role` is typed; serde already refused anything but standby/spare.
                let _: Option<DemoteRole> = req.role;
            }
        }
        K::SyncConfig => validate_endpoint(require(&req.source, kind, "source")?, "source")?,
        K::InstallTrust => {
            let pem = require(&req.trust_pem, kind, "trustPem")?;
            crate::tls::parse_cert_bundle_strict(pem.as_bytes(), "trustPem")
                .map_err(|e| ApiError::bad_request("invalid_param", e.to_string()))?;
            validate_fingerprints(&req.keep_trust, "keepTrust")?;
        }
        K::InstallCertificate => {
            let cert = require(&req.certificate_pem, kind, "certificatePem")?;
            let key = require(&req.key_pem, kind, "keyPem")?;
            crate::tls::parse_cert_bundle_strict(cert.as_bytes(), "certificatePem")
                .map_err(|e| ApiError::bad_request("invalid_param", e.to_string()))?;
            crate::tls::check_key_pair(cert.as_bytes(), key.as_bytes())
                .map_err(|e| ApiError::bad_request("invalid_param", e.to_string()))?;
            crate::tls::cert_info(cert.as_bytes(), None)
                .map_err(|e| ApiError::bad_request("invalid_param", e.to_string()))?;
        }
        K::AddPeer => validate_add_peer(req)?,
        K::RemovePeer => validate_peer_name(require(&req.peer, kind, "peer")?, "peer")?,
        K::Task => {
            // A task name is a DNS label, like a peer name.
            validate_peer_name(require(&req.task, kind, "task")?, "task")?;
            if let Some(v) = &req.version {
                validate_version(v)?;
            }
        }
        K::StageMedia | K::RemoveMedia => {
            validate_version(require(&req.version, kind, "version")?)?;
        }
        K::Prepare => {
            validate_version(require(&req.version, kind, "version")?)?;
            validate_checks(&req.checks)?;
        }
        K::Promote | K::Backup | K::Verify | K::Restart | K::ResignData | K::Retire => {}
    }
    Ok(())
}

/// Longest JSON body nesting accepted. serde_json refuses deeper documents itself (at 128);
/// this keeps the duplicate-key check's own recursion far below that.
const MAX_JSON_DEPTH: usize = 32;

/// A JSON value whose objects have no duplicate keys. serde_json's `Value` keeps the last
/// of duplicates silently; for a request that would mean `{"kind":"backup","kind":"promote"}`
/// means whatever the last writer of the body intended, which is not something to guess.
struct Strict(serde_json::Value);

struct StrictSeed {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictSeed {
    type Value = Strict;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn nested<E: serde::de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format!(
                "JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            serde_json::Number::from_f64(v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element_seed(self.nested()?)? {
            out.push(v);
        }
        Ok(Strict(serde_json::Value::Array(out)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value_seed(self.nested()?)?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate field {}",
                    excerpt(&key)
                )));
            }
            out.insert(key, value);
        }
        Ok(Strict(serde_json::Value::Object(out)))
    }
}

/// Parses a JSON document, refusing duplicate keys at any depth: `malformed_json` when it is
/// not JSON, `invalid_request` for a duplicate key.
pub fn parse_json_value_strict(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = StrictSeed { depth: 0 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Strict(v)) => Ok(v),
        Err(e) if e.is_data() => Err(ApiError::bad_request(
            "invalid_request",
            clip(&e.to_string(), 256),
        )),
        Err(e) => Err(ApiError::bad_request(
            "malformed_json",
            format!("body is not valid JSON: {}", clip(&e.to_string(), 256)),
        )),
    }
}

/// Parses a JSON body into `T` with [`parse_json_value_strict`]'s checks; a body of the
/// wrong shape (unknown field, wrong type, bad enum value) is `invalid_request`.
pub fn parse_json_strict<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let value = parse_json_value_strict(body)?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("invalid {what}: {}", clip(&e.to_string(), 256)),
        )
    })
}

/// Parses a `POST /v1/operations` body with errors that name the problem: a missing or
/// unknown kind is reported as such rather than as a generic decoding error.
pub fn parse_request(body: &[u8]) -> Result<OperationRequest, ApiError> {
    let value = parse_json_value_strict(body)?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid_request", "body must be a JSON object"))?;
    match obj.get("id") {
        None => {
            return Err(ApiError::bad_request(
                "missing_param",
                "the \"id\" field is required",
            ));
        }
        Some(serde_json::Value::String(id)) => validate_id(id)?,
        // A wrong type is a wrong shape (invalid_request); invalid_id is about the text.
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "\"id\" must be a string",
            ));
        }
    }
    match obj.get("kind") {
        None => {
            return Err(ApiError::bad_request(
                "missing_param",
                "the \"kind\" field is required",
            ));
        }
        Some(serde_json::Value::String(kind)) => {
            if OperationKind::parse(kind).is_none() {
                let known: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(ApiError::bad_request(
                    "unknown_kind",
                    format!(
                        "unknown operation kind {}; known kinds: {}",
                        excerpt(kind),
                        known.join(", ")
                    ),
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "unknown_kind",
                "\"kind\" must be a string",
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("invalid operation request: {}", clip(&e.to_string(), 256)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each request is refused with its error code, a bounded message naming what it must.
    fn assert_refused<const N: usize>(cases: [(OperationRequest, &str, &str); N]) {
        for (req, want, names) in cases {
            let what = clip(&format!("{req:?}"), 200);
            let e = validate_request(&req).err();
            assert_eq!(e.as_ref().map(|e| e.code.as_str()), Some(want), "{what}");
            let message = e.map(|e| e.message).unwrap_or_default();
            assert!(message.contains(names), "{what}: {message}");
            assert!(message.len() < 400, "{what}: {message}");
        }
    }

    #[test]
    fn ids_and_endpoints() {
        assert!(validate_id("up-1.2:m1/a_b").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
        assert!(validate_endpoint("127.0.0.1:7001", "s").is_ok());
        assert!(validate_endpoint("m1.svc.local:7001", "s").is_ok());
        assert!(validate_endpoint("[::1]:7001", "s").is_ok());
        assert!(validate_endpoint("127.0.0.1", "s").is_err());
        assert!(validate_endpoint("127.0.0.1:0", "s").is_err());
        assert!(validate_endpoint("a;b:1", "s").is_err());
    }

    #[test]
    fn parse_reports_kind_problems() {
        let e = parse_request(br#"{"id":"a","kind":"dance"}"#).err();
        assert_eq!(e.map(|e| e.code), Some("unknown_kind".to_string()));
        let e = parse_request(br#"{"id":"a"}"#).err();
        assert_eq!(e.map(|e| e.code), Some("missing_param".to_string()));
        let e = parse_request(b"{not json").err();
        assert_eq!(e.map(|e| e.code), Some("malformed_json".to_string()));
        let e = parse_request(br#"{"id":"a","kind":"promote","bogus":1}"#).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_request".to_string()));
        let ok = parse_request(br#"{"id":"a","kind":"force-standby","source":"127.0.0.1:9"}"#);
        assert!(ok.is_ok());
    }

    #[test]
    fn validate_params_per_kind() {
        let up = OperationRequest::new("u", OperationKind::Upgrade);
        assert_eq!(
            validate_request(&up).err().map(|e| e.code),
            Some("missing_param".into())
        );
        let up = up.with_version("2.0.0");
        assert!(validate_request(&up).is_ok());
        let promote = OperationRequest::new("p", OperationKind::Promote).with_version("1");
        assert_eq!(
            validate_request(&promote).err().map(|e| e.code),
            Some("unexpected_param".into())
        );
    }

    #[test]
    fn peer_names_and_fingerprints() {
        for good in ["m1", "a", "web-2", "0", &"a".repeat(63)] {
            assert!(valid_peer_name(good), "{good}");
        }
        for bad in [
            "",
            "-m1",
            "m1-",
            "M1",
            "m_1",
            "m.1",
            "m 1",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!valid_peer_name(bad), "{bad}");
        }
        assert!(valid_fingerprint(&"0a".repeat(32)));
        assert!(!valid_fingerprint(&"0A".repeat(32)));
        assert!(!valid_fingerprint(&"0a".repeat(31)));
        assert!(!valid_fingerprint(&"g".repeat(64)));
    }

    #[test]
    fn peer_operations_take_exactly_their_params() {
        let fp = "ab".repeat(32);
        let code = |r: OperationRequest| validate_request(&r).err().map(|e| e.code);
        let add = || OperationRequest::new("a", OperationKind::AddPeer);
        assert_eq!(code(add().with_peer("m3").with_fingerprint(&fp)), None);
        assert_eq!(code(add().with_peer("m3").with_copy_from("m1")), None);
        let cases = [
            (add().with_fingerprint(&fp), "missing_param"),
            (add().with_peer("").with_fingerprint(&fp), "missing_param"),
            (add().with_peer("m3"), "missing_param"),
            (
                add()
                    .with_peer("m3")
                    .with_fingerprint(&fp)
                    .with_copy_from("m1"),
                "invalid_param",
            ),
            (add().with_peer("M3").with_fingerprint(&fp), "invalid_param"),
            (
                add().with_peer("m3").with_fingerprint("abc"),
                "invalid_param",
            ),
            (add().with_peer("m3").with_fingerprint(""), "invalid_param"),
            (
                add().with_peer("m3").with_fingerprint(fp.to_uppercase()),
                "invalid_param",
            ),
            (add().with_peer("m3").with_copy_from("m1."), "invalid_param"),
            (
                add()
                    .with_peer("m3")
                    .with_fingerprint(&fp)
                    .with_source("h:1"),
                "unexpected_param",
            ),
            (
                OperationRequest::new("r", OperationKind::RemovePeer),
                "missing_param",
            ),
            (
                OperationRequest::new("r", OperationKind::RemovePeer)
                    .with_peer("m3")
                    .with_fingerprint(&fp),
                "unexpected_param",
            ),
            (
                OperationRequest::new("r", OperationKind::RemovePeer).with_peer("x".repeat(64)),
                "invalid_param",
            ),
            (
                OperationRequest::new("t", OperationKind::Retire).with_peer("m3"),
                "unexpected_param",
            ),
            (
                OperationRequest::new("d", OperationKind::Demote).with_peer("m3"),
                "unexpected_param",
            ),
        ];
        for (req, want) in cases {
            let what = format!("{req:?}");
            let e = validate_request(&req).err();
            assert_eq!(e.as_ref().map(|e| e.code.as_str()), Some(want), "{what}");
            let message = e.map(|e| e.message).unwrap_or_default();
            assert!(!message.is_empty() && message.len() < 400, "{message}");
        }
        assert_eq!(
            code(OperationRequest::new("r", OperationKind::RemovePeer).with_peer("m3")),
            None
        );
        assert_eq!(
            code(OperationRequest::new("t", OperationKind::Retire)),
            None
        );
    }

    #[test]
    fn task_takes_a_dns_label_and_an_optional_version() {
        let task = || OperationRequest::new("t", OperationKind::Task);
        let code = |r: OperationRequest| validate_request(&r).err().map(|e| e.code);
        assert_eq!(code(task().with_task("upload-content")), None);
        assert_eq!(code(task().with_task("a").with_version("2.0.0")), None);
        assert_eq!(code(task().with_task("x".repeat(63))), None);
        let huge = "Z".repeat(10_000);
        let cases = [
            (task(), "missing_param", "\"task\""),
            (task().with_version("2.0.0"), "missing_param", "\"task\""),
            (task().with_task(""), "missing_param", "\"task\""),
            (task().with_task("Upload"), "invalid_param", "task"),
            (task().with_task("upload_content"), "invalid_param", "task"),
            (task().with_task("-upload"), "invalid_param", "task"),
            (task().with_task("upload-"), "invalid_param", "task"),
            (task().with_task("x".repeat(64)), "invalid_param", "task"),
            (task().with_task(huge.as_str()), "invalid_param", "task"),
            (
                task().with_task("t").with_version("1; rm"),
                "invalid_param",
                "version",
            ),
            (
                task().with_task("t").with_component("os"),
                "unexpected_param",
                "component",
            ),
            (
                task().with_task("t").with_peer("m1"),
                "unexpected_param",
                "peer",
            ),
            (
                OperationRequest::new("b", OperationKind::Backup).with_task("t"),
                "unexpected_param",
                "task",
            ),
            (
                OperationRequest::new("u", OperationKind::Upgrade)
                    .with_version("2.0.0")
                    .with_task("t"),
                "unexpected_param",
                "task",
            ),
        ];
        assert_refused(cases);
    }

    #[test]
    fn task_params_are_recorded_and_parsed_from_the_wire() -> Result<()> {
        let req = parse_request(
            br#"{"id":"up-content","kind":"task","task":"upload-content","version":"2.0.0"}"#,
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        assert_eq!(
            (req.kind, req.task.as_deref(), req.version.as_deref()),
            (OperationKind::Task, Some("upload-content"), Some("2.0.0"))
        );
        assert_eq!(
            serde_json::to_value(recorded_params(&req))?,
            serde_json::json!({"version": "2.0.0", "task": "upload-content"})
        );
        let e = parse_request(br#"{"id":"t","kind":"task","task":7}"#);
        assert_eq!(e.err().map(|e| e.code), Some("invalid_request".into()));
        Ok(())
    }

    #[test]
    fn media_kinds_require_a_version_and_take_nothing_else() {
        let code = |r: OperationRequest| validate_request(&r).err().map(|e| e.code);
        let huge = "9".repeat(10_000);
        for kind in [OperationKind::StageMedia, OperationKind::RemoveMedia] {
            let media = || OperationRequest::new("m", kind);
            assert_eq!(code(media().with_version("2.0.0")), None, "{kind}");
            assert_eq!(code(media().with_version("2.0.0-rc.1+b7")), None, "{kind}");
            assert_eq!(code(media().with_version("v".repeat(64))), None, "{kind}");
            let cases = [
                (media(), "missing_param", "\"version\""),
                (media().with_version(""), "missing_param", "\"version\""),
                (media().with_version("1 2"), "invalid_param", "version"),
                (media().with_version("1;rm -rf"), "invalid_param", "version"),
                (media().with_version("2.0/0"), "invalid_param", "version"),
                (
                    media().with_version("v".repeat(65)),
                    "invalid_param",
                    "version",
                ),
                (
                    media().with_version(huge.as_str()),
                    "invalid_param",
                    "version",
                ),
                (
                    media().with_version("2.0.0").with_component("os"),
                    "unexpected_param",
                    "component",
                ),
                (
                    media().with_version("2.0.0").with_peer("m1"),
                    "unexpected_param",
                    "peer",
                ),
                (
                    media().with_version("2.0.0").with_task("t"),
                    "unexpected_param",
                    "task",
                ),
                (
                    media().with_version("2.0.0").with_source("127.0.0.1:7001"),
                    "unexpected_param",
                    "source",
                ),
                (
                    media().with_version("2.0.0").with_role(DemoteRole::Spare),
                    "unexpected_param",
                    "role",
                ),
                (
                    media()
                        .with_version("2.0.0")
                        .with_keep_trust(vec!["ab".repeat(32)]),
                    "unexpected_param",
                    "keepTrust",
                ),
                // A stray parameter is named before a missing version.
                (media().with_peer("m1"), "unexpected_param", "peer"),
            ];
            assert_refused(cases);
        }
    }

    #[test]
    fn media_params_are_recorded_and_parsed_from_the_wire() -> Result<()> {
        for (body, kind) in [
            (
                &br#"{"id":"stage-2.0.0","kind":"stage-media","version":"2.0.0"}"#[..],
                OperationKind::StageMedia,
            ),
            (
                &br#"{"id":"rm-2.0.0","kind":"remove-media","version":"2.0.0"}"#[..],
                OperationKind::RemoveMedia,
            ),
        ] {
            let req = parse_request(body).map_err(|e| anyhow::anyhow!(e.message))?;
            assert_eq!((req.kind, req.version.as_deref()), (kind, Some("2.0.0")));
            assert_eq!(
                serde_json::to_value(recorded_params(&req))?,
                serde_json::json!({"version": "2.0.0"})
            );
        }
        let e = parse_request(br#"{"id":"s","kind":"stage-media","version":2}"#);
        assert_eq!(e.err().map(|e| e.code), Some("invalid_request".into()));
        let e = parse_request(br#"{"id":"s","kind":"stage_media","version":"2.0.0"}"#);
        assert_eq!(e.err().map(|e| e.code), Some("unknown_kind".into()));
        Ok(())
    }

    #[test]
    fn prepare_requires_a_version_and_distinct_valid_checks() {
        let prep = || OperationRequest::new("p", OperationKind::Prepare);
        let ok = || prep().with_version("2.0.0");
        let code = |r: OperationRequest| validate_request(&r).err().map(|e| e.code);
        assert_eq!(code(ok().with_checks(["installConfig"])), None);
        assert_eq!(
            code(ok().with_checks(["installConfig", "gateways", "scheduledJobs"])),
            None
        );
        let sixteen: Vec<String> = (0..MAX_CHECKS).map(|i| format!("check-{i}")).collect();
        assert_eq!(code(ok().with_checks(sixteen.clone())), None);
        assert_eq!(code(ok().with_checks(["c".repeat(63)])), None);
        let mut seventeen = sixteen.clone();
        seventeen.push("one-more".into());
        let huge = "c".repeat(10_000);
        let cases = [
            (prep().with_checks(["a"]), "missing_param", "\"version\""),
            (
                prep().with_version("").with_checks(["a"]),
                "missing_param",
                "\"version\"",
            ),
            (
                prep().with_version("2 0").with_checks(["a"]),
                "invalid_param",
                "version",
            ),
            (ok(), "missing_param", "\"checks\""),
            (
                ok().with_checks(Vec::<String>::new()),
                "missing_param",
                "\"checks\"",
            ),
            (
                ok().with_checks(seventeen),
                "invalid_param",
                "17 check names; at most 16",
            ),
            (
                ok().with_checks(["gateways", "installConfig", "gateways"]),
                "invalid_param",
                "lists \"gateways\" twice",
            ),
            (ok().with_checks([""]), "invalid_param", "check name \"\""),
            (
                ok().with_checks(["9lives"]),
                "invalid_param",
                "check name \"9lives\"",
            ),
            (
                ok().with_checks(["a", "snake_case"]),
                "invalid_param",
                "check name \"snake_case\"",
            ),
            (
                ok().with_checks(["a b"]),
                "invalid_param",
                "check name \"a b\"",
            ),
            (
                ok().with_checks(["c".repeat(64)]),
                "invalid_param",
                "check name",
            ),
            (
                ok().with_checks([huge.as_str()]),
                "invalid_param",
                "check name",
            ),
            (
                ok().with_checks(["a"]).with_task("t"),
                "unexpected_param",
                "task",
            ),
            (
                ok().with_checks(["a"]).with_component("os"),
                "unexpected_param",
                "component",
            ),
            (
                ok().with_checks(["a"]).with_source("127.0.0.1:7001"),
                "unexpected_param",
                "source",
            ),
            (
                ok().with_checks(["a"]).with_peer("m1"),
                "unexpected_param",
                "peer",
            ),
            // A stray parameter is named before missing ones.
            (prep().with_peer("m1"), "unexpected_param", "peer"),
        ];
        assert_refused(cases);
    }

    /// Every other kind refuses `checks` as it refuses any parameter it does not take, even
    /// alongside otherwise valid parameters.
    #[test]
    fn checks_on_another_kind_are_unexpected() {
        for kind in OperationKind::ALL {
            if kind == OperationKind::Prepare {
                continue;
            }
            let req = OperationRequest::new("x", kind)
                .with_version("2.0.0")
                .with_checks(["gateways"]);
            let e = validate_request(&req).err();
            let (code, message) = e.map(|e| (e.code, e.message)).unwrap_or_default();
            // Kinds that take no version name it first; the others name checks.
            assert_eq!(code, "unexpected_param", "{kind}");
            assert!(
                message.contains("\"checks\"") || message.contains("\"version\""),
                "{kind}: {message}"
            );
            let mut minimal = OperationRequest::new("x", kind).with_checks(["gateways"]);
            minimal.version = None;
            let e = validate_request(&minimal).err();
            assert_eq!(
                e.map(|e| (e.code, e.message)),
                Some((
                    "unexpected_param".to_string(),
                    format!("{kind} does not take the \"checks\" parameter")
                )),
                "{kind}"
            );
        }
    }

    #[test]
    fn prepare_params_are_recorded_and_parsed_from_the_wire() -> Result<()> {
        let req = parse_request(
            br#"{"id":"prep-2.0.0","kind":"prepare","version":"2.0.0","checks":["installConfig","scheduledJobs"]}"#,
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        assert_eq!(
            (req.kind, req.version.as_deref(), req.checks.as_slice()),
            (
                OperationKind::Prepare,
                Some("2.0.0"),
                &["installConfig".to_string(), "scheduledJobs".to_string()][..]
            )
        );
        assert_eq!(validate_request(&req).err().map(|e| e.code), None);
        assert_eq!(
            serde_json::to_value(recorded_params(&req))?,
            serde_json::json!({"version": "2.0.0", "checks": ["installConfig", "scheduledJobs"]})
        );
        for (body, want) in [
            (
                &br#"{"id":"p","kind":"prepare","version":"2.0.0","checks":"gateways"}"#[..],
                "invalid_request",
            ),
            (
                br#"{"id":"p","kind":"prepare","version":"2.0.0","checks":[1]}"#,
                "invalid_request",
            ),
            (
                br#"{"id":"p","kind":"prepare","version":"2.0.0","check":["a"]}"#,
                "invalid_request",
            ),
            (
                br#"{"id":"p","kind":"Prepare","version":"2.0.0","checks":["a"]}"#,
                "unknown_kind",
            ),
        ] {
            let e = parse_request(body).err().map(|e| e.code);
            assert_eq!(
                e.as_deref(),
                Some(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // An empty list parses as none (so it is refused as missing, not as malformed).
        let req = parse_request(br#"{"id":"p","kind":"prepare","version":"2.0.0","checks":[]}"#)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        assert_eq!(
            validate_request(&req).err().map(|e| e.code).as_deref(),
            Some("missing_param")
        );
        Ok(())
    }

    #[test]
    fn peer_params_are_recorded_and_parsed_from_the_wire() -> Result<()> {
        let req = parse_request(br#"{"id":"p","kind":"add-peer","peer":"m3","copyFrom":"m1"}"#)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        assert_eq!(
            (req.kind, req.peer.as_deref(), req.copy_from.as_deref()),
            (OperationKind::AddPeer, Some("m3"), Some("m1"))
        );
        let params = recorded_params(&req);
        assert_eq!(
            serde_json::to_value(&params)?,
            serde_json::json!({"peer": "m3", "copyFrom": "m1"})
        );
        let e = parse_request(br#"{"id":"p","kind":"add-peer","peer":"m3","copy_from":"m1"}"#);
        assert_eq!(e.err().map(|e| e.code), Some("invalid_request".into()));
        // A request of the kinds before peers encodes (and so digests) as it always did.
        let old = OperationRequest::new("d", OperationKind::Demote).with_source("h:1");
        assert_eq!(
            serde_json::to_string(&old)?,
            r#"{"id":"d","kind":"demote","source":"h:1"}"#
        );
        Ok(())
    }

    #[tokio::test]
    async fn journal_idempotency_and_restart() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("operations.json");
        let ops = OpsStore::load(path.clone()).await?;
        let req = OperationRequest::new("op1", OperationKind::Backup);
        assert!(matches!(
            ops.begin(&req, "m", None).await,
            Ok(Begin::Created(_))
        ));
        assert!(matches!(
            ops.begin(&req, "m", None).await,
            Ok(Begin::Existing(_))
        ));
        let other = OperationRequest::new("op1", OperationKind::Verify);
        assert_eq!(
            ops.begin(&other, "m", None).await.err().map(|e| e.code),
            Some("id_conflict".into())
        );
        let second = OperationRequest::new("op2", OperationKind::Verify);
        assert_eq!(
            ops.begin(&second, "m", None).await.err().map(|e| e.code),
            Some("operation_running".into())
        );
        drop(ops);
        let reloaded = OpsStore::load(path).await?;
        let rec = reloaded.get("op1").context("record survives")?;
        assert_eq!(rec.state, OperationState::Failed);
        assert_eq!(rec.message, INTERRUPTED);
        Ok(())
    }

    /// A prepare's findings are recorded bounded, persisted with its end and read back by a
    /// restarted agent; a finished record's findings never change, and the journal of an agent
    /// that predates findings still loads.
    #[tokio::test]
    async fn findings_are_bounded_and_survive_a_restart() -> Result<()> {
        use crate::api::{FINDINGS_TRUNCATED, FindingSeverity, MAX_FINDINGS};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("operations.json");
        let ops = OpsStore::load(path.clone()).await?;
        let req = OperationRequest::new("prep", OperationKind::Prepare)
            .with_version("2.0.0")
            .with_checks(["gateways"]);
        assert!(matches!(
            ops.begin(&req, "m", None).await,
            Ok(Begin::Created(_))
        ));
        let found: Vec<Finding> = (0..40)
            .map(|i| {
                Finding::new(
                    "gateways",
                    FindingSeverity::Blocking,
                    format!("Gateway{i}Down"),
                    "é".repeat(300),
                )
            })
            .collect();
        Progress::new(ops.clone(), "prep".into()).findings(found);
        ops.finish(
            "prep",
            OperationState::Succeeded,
            "ran".into(),
            Some("1.0.0".into()),
        )
        .await;
        Progress::new(ops.clone(), "prep".into()).findings(Vec::new());
        let rec = ops.get("prep").context("recorded")?;
        assert_eq!(rec.findings.len(), MAX_FINDINGS, "finished: unchanged");
        assert_eq!(rec.findings[30].code, "Gateway30Down");
        assert_eq!(rec.findings[31].code, FINDINGS_TRUNCATED);
        assert!(
            rec.findings[..31]
                .iter()
                .all(|f| f.message.chars().count() == 256 && f.message.ends_with('…'))
        );
        drop(ops);
        let reloaded = OpsStore::load(path.clone()).await?;
        assert_eq!(reloaded.get("prep"), Some(rec.clone()));
        let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        assert_eq!(
            on_disk[0]["record"]["findings"][0]["severity"],
            serde_json::json!("Blocking")
        );

        // A journal written before findings existed.
        let old = serde_json::json!([{"record": {
            "id": "b", "kind": "backup", "state": "Succeeded", "progress": 100,
            "startedAt": "2026-01-01T00:00:00Z", "member": "m"}, "digest": "x"}]);
        let old_path = dir.path().join("old.json");
        std::fs::write(&old_path, old.to_string())?;
        let old = OpsStore::load(old_path).await?;
        assert!(old.get("b").context("old record")?.findings.is_empty());
        Ok(())
    }
}
