//! Log shipping between members over the data port.
//!
//! A follower asks its source for `GET /v1/replicate?after=N&hash=H&member=..&version=..`,
//! where N is its head and H the checksum of entry N. The source answers with a stream of
//! JSON lines: a `hello` (its head and the checksum at min(N, head)), then batches of entries
//! after N, periodic `head` heartbeats, and a `conflict` line if the logs have diverged.
//! Because checksums chain, equal checksums at one index mean equal logs up to it; the source
//! checks at N as soon as it has N entries, the follower checks at the source's head when the
//! source is behind (a demoted old active following the standby about to be promoted).
//!
//! Once a member accepts peers (`add-peer`), the stream runs only between accepted peers: the
//! follower names its identity (`identity=` in the query) and the source serves it only when
//! it accepts the follower's name with that identity (403 `unknown_peer` otherwise); the source
//! names its identity in the `hello` and the follower applies nothing from a source it does not
//! accept. A change of the accepted peers checks open streams again.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Shared;
use super::peers::{self, check_follower, check_source};
use super::store::{Entry, StoreError};
use crate::api::Role;
use crate::http_client::{Target, TransportError, send_streaming};
use crate::http_util::{ApiError, ChannelBody, RespBody, clip, query_params};

const HEARTBEAT: Duration = Duration::from_millis(200);
/// A source silent for this long is considered gone (it sends heartbeats every 200 ms).
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
const MAX_BATCH: usize = 512;
const MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum Msg {
    #[serde(rename_all = "camelCase")]
    Hello {
        member: String,
        version: String,
        role: Role,
        head: u64,
        check_index: u64,
        check_hash: String,
        /// The source's identity fingerprint (absent from agents before peer identities).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
    },
    Entries {
        entries: Vec<Entry>,
    },
    #[serde(rename_all = "camelCase")]
    Head {
        head: u64,
        role: Role,
        version: String,
        /// Write time of the first entry not yet sent on this stream.
        next_ts: Option<i64>,
    },
    Conflict {
        message: String,
    },
}

fn line(msg: &Msg) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Who asks for the stream: its name and the identity it claims.
struct Follower {
    name: String,
    identity: Option<String>,
}

impl Follower {
    fn check(&self, shared: &Shared) -> Result<(), String> {
        check_follower(
            &shared.member,
            &shared.peers(),
            &self.name,
            self.identity.as_deref(),
        )
    }
}

/// Source side: answers a follower's replicate request with a stream.
pub(crate) fn serve_stream(
    shared: &Arc<Shared>,
    query: Option<&str>,
) -> Result<Response<RespBody>, ApiError> {
    let params = query_params(query);
    let get = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let after: u64 = get("after")
        .ok_or_else(|| ApiError::bad_request("missing_param", "\"after\" is required"))?
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_param", "\"after\" must be an integer"))?;
    let hash = get("hash").unwrap_or_default();
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_param",
            "\"hash\" must be 64 hex digits",
        ));
    }
    // Used in messages and log lines; keep peer-supplied text to a safe alphabet.
    let follower = Follower {
        name: peers::clean_name(get("member").as_deref()),
        identity: get("identity").filter(|fp| crate::ops::valid_fingerprint(fp)),
    };
    let follower_version = peers::clean_name(get("version").as_deref());
    if let Err(message) = follower.check(shared) {
        warn!("{message}");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_peer",
            message,
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let shared = shared.clone();
    tokio::spawn(async move {
        let name = follower.name.clone();
        info!("serving log to follower {name} (version {follower_version}) from index {after}");
        let id = shared.register_downstream(after.min(shared.store.head()));
        let outcome = stream_to(&shared, &tx, after, &hash, id, &follower).await;
        shared.unregister_downstream(id);
        info!("log stream to {name} ended: {outcome}");
    });
    let mut resp = Response::new(RespBody::new(ChannelBody::new(rx)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

async fn stream_to(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Bytes>,
    after: u64,
    hash: &str,
    id: u64,
    follower: &Follower,
) -> String {
    let store = &shared.store;
    let mut head_rx = store.subscribe();
    let mut role_rx = shared.subscribe_role();
    let mut cut_rx = shared.subscribe_cut();
    cut_rx.borrow_and_update();
    let mut peers_rx = shared.subscribe_peers();
    peers_rx.borrow_and_update();
    // Accepted peers may have changed since the request was checked.
    if let Err(message) = follower.check(shared) {
        return message;
    }
    let head = store.head();
    let check_index = after.min(head);
    let check_hash = store.hash_at(check_index).unwrap_or_default();
    let (role, version) = role_rx.borrow_and_update().clone();
    let hello = Msg::Hello {
        member: shared.member.clone(),
        version: version.clone(),
        role,
        head,
        check_index,
        check_hash,
        identity: Some(shared.identity()),
    };
    if tx.send(line(&hello)).await.is_err() {
        return "follower went away".into();
    }
    // Until we hold entry `after` we cannot vouch for the follower's prefix.
    let mut pending_check = true;
    let mut sent = after;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        let head = store.head();
        if pending_check && head >= after {
            if store.hash_at(after).as_deref() != Some(hash) {
                let message = format!(
                    "follower's entry {after} differs from {}'s: the logs have diverged",
                    shared.member
                );
                let _ = tx
                    .send(line(&Msg::Conflict {
                        message: message.clone(),
                    }))
                    .await;
                return message;
            }
            pending_check = false;
        }
        if !pending_check && head > sent {
            let entries = store.entries_after(sent, MAX_BATCH);
            if let Some(last) = entries.last() {
                let last = last.index;
                if tx.send(line(&Msg::Entries { entries })).await.is_err() {
                    return "follower went away".into();
                }
                sent = last;
                shared.update_downstream(id, sent);
                continue;
            }
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return "log closed".into() },
            changed = role_rx.changed() => {
                if changed.is_err() { return "member shutting down".into() }
                if !send_head(shared, tx, sent).await { return "follower went away".into() }
            }
            _ = ticker.tick() => {
                if !send_head(shared, tx, sent).await { return "follower went away".into() }
            }
            _ = cut_rx.changed() => return "data service restarted".into(),
            Ok(()) = peers_rx.changed() => {
                // The follower reconnects and is answered 403 unknown_peer.
                if let Err(message) = follower.check(shared) {
                    return message;
                }
            }
        }
    }
}

async fn send_head(shared: &Shared, tx: &mpsc::Sender<Bytes>, sent: u64) -> bool {
    let (role, version) = shared.subscribe_role().borrow().clone();
    let msg = Msg::Head {
        head: shared.store.head(),
        role,
        version,
        next_ts: shared.store.entry(sent + 1).map(|e| e.ts),
    };
    tx.send(line(&msg)).await.is_ok()
}

enum FollowError {
    /// Retry soon.
    Transient(String),
    /// Peer identities refused the stream, at the source or here: retry (at least every
    /// second, and at once when this member's accepted peers change).
    Refused(String),
    /// The logs diverged; retrying will not help until someone intervenes.
    Conflict(String),
}

/// Follower side: replicates from `source` until aborted.
pub(crate) async fn follow(shared: Arc<Shared>, source: String) {
    let mut backoff = Duration::from_millis(50);
    let mut peers_rx = shared.subscribe_peers();
    loop {
        peers_rx.borrow_and_update();
        let result = follow_once(&shared, &source).await;
        {
            let mut r = shared.repl();
            // A stream that was established broke: retry soon, not after the backoff grown
            // by the failures that may have preceded it.
            if r.connected {
                backoff = Duration::from_millis(50);
            }
            r.connected = false;
            r.first_unapplied_ts = None;
            match &result {
                Ok(()) => {}
                Err(FollowError::Transient(msg) | FollowError::Refused(msg)) => {
                    r.failing_since.get_or_insert_with(Timestamp::now);
                    r.last_error = Some(msg.clone());
                }
                Err(FollowError::Conflict(msg)) => {
                    r.failing_since.get_or_insert_with(Timestamp::now);
                    r.last_error = Some(msg.clone());
                }
            }
        }
        match result {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(FollowError::Transient(msg)) => {
                warn!("replication from {source}: {msg}");
            }
            Err(FollowError::Refused(msg)) => {
                warn!("replication from {source} refused: {msg}");
            }
            Err(FollowError::Conflict(msg)) => {
                record_conflict(&shared, &msg);
                backoff = Duration::from_secs(2);
            }
        }
        // A change of the accepted peers may lift a refusal: retry at once.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            Ok(()) = peers_rx.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn record_conflict(shared: &Shared, msg: &str) {
    let first = {
        let mut r = shared.repl();
        let first = r.conflict.is_none();
        if first {
            r.conflict = Some((Timestamp::now(), msg.to_string()));
        }
        first
    };
    if first {
        warn!("replication conflict: {msg}");
        if let Err(e) = shared.update_state(|s| s.conflicts += 1) {
            warn!("cannot persist the conflict count: {e:#}");
        }
    }
}

fn transient(e: TransportError) -> FollowError {
    FollowError::Transient(e.to_string())
}

async fn follow_once(shared: &Arc<Shared>, source: &str) -> Result<(), FollowError> {
    // A TLS failure toward the source is a handshake refused one way or the other (with TLS
    // 1.3 a refused client certificate shows on the first exchange, not in the handshake).
    let transient = |e: TransportError| {
        if matches!(e, TransportError::Tls(_)) {
            shared.handshakes.outbound(source);
        }
        transient(e)
    };
    let mut tls_rx = shared.tls.subscribe();
    tls_rx.borrow_and_update();
    let target = Target::new(source, shared.tls.client_config()).map_err(transient)?;
    let mut sender = target
        .connect(Duration::from_secs(3))
        .await
        .map_err(transient)?;
    let after = shared.store.head();
    let hash = shared.store.hash_at(after).unwrap_or_default();
    let version = shared.state().version;
    let path = format!(
        "/v1/replicate?after={after}&hash={hash}&member={}&version={version}&identity={}",
        shared.member,
        shared.identity()
    );
    let req = target.request(Method::GET, &path, None);
    let resp = tokio::time::timeout(Duration::from_secs(5), send_streaming(&mut sender, req))
        .await
        .map_err(|_| FollowError::Transient("source did not answer in 5s".into()))?
        .map_err(transient)?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = crate::http_client::read_limited(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        if let Ok(e) = serde_json::from_slice::<crate::api::ErrorBody>(&body)
            && status == StatusCode::FORBIDDEN
            && e.error == "unknown_peer"
        {
            return Err(FollowError::Refused(clip(&e.message, 512)));
        }
        return Err(FollowError::Transient(format!(
            "source answered {status}: {}",
            clip(&String::from_utf8_lossy(&body), 512)
        )));
    }
    let mut peers_rx = shared.subscribe_peers();
    peers_rx.borrow_and_update();
    // The source's name and identity, from its hello.
    let mut accepted: Option<(String, Option<String>)> = None;
    let recheck = |accepted: &Option<(String, Option<String>)>| -> Result<(), FollowError> {
        let Some((name, identity)) = accepted else {
            return Ok(());
        };
        check_source(&shared.member, &shared.peers(), name, identity.as_deref())
            .map_err(FollowError::Refused)
    };
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(SILENCE_LIMIT, body.frame()) => f,
            _ = tls_rx.changed() => {
                return Err(FollowError::Transient("TLS material changed; reconnecting".into()));
            }
            Ok(()) = peers_rx.changed() => {
                recheck(&accepted)?;
                continue;
            }
        };
        let frame = match frame {
            Err(_) => {
                return Err(FollowError::Transient(format!(
                    "source silent for {SILENCE_LIMIT:?}"
                )));
            }
            Ok(None) => return Err(FollowError::Transient("source closed the stream".into())),
            Ok(Some(Err(e))) => return Err(FollowError::Transient(format!("stream broke: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if buf.len() > MAX_LINE {
            return Err(FollowError::Transient(
                "source sent an oversized line".into(),
            ));
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            let msg: Msg = serde_json::from_slice(&line[..pos]).map_err(|e| {
                FollowError::Transient(format!("undecodable message from source: {e}"))
            })?;
            match &msg {
                Msg::Hello {
                    member, identity, ..
                } => {
                    let id = identity
                        .clone()
                        .filter(|fp| crate::ops::valid_fingerprint(fp));
                    accepted = Some((peers::clean_name(Some(member)), id));
                    recheck(&accepted)?;
                }
                _ if accepted.is_none() => {
                    return Err(FollowError::Transient(
                        "source sent entries before its hello".into(),
                    ));
                }
                _ => {}
            }
            handle(shared, source, msg).await?;
        }
    }
}

async fn handle(shared: &Arc<Shared>, source: &str, msg: Msg) -> Result<(), FollowError> {
    match msg {
        Msg::Hello {
            member,
            version,
            role,
            head,
            check_index,
            check_hash,
            identity: _,
        } => {
            if shared.store.hash_at(check_index).as_deref() != Some(check_hash.as_str()) {
                return Err(FollowError::Conflict(format!(
                    "entry {check_index} differs between {} and its source {member} ({source}): the logs have diverged",
                    shared.member
                )));
            }
            let own_version = shared.state().version;
            let mut r = shared.repl();
            r.connected = true;
            r.failing_since = None;
            r.last_error = None;
            r.conflict = None;
            r.source_head = Some(head);
            r.source_role = Some(role);
            note_version(&mut r, &own_version, version);
            info!("replicating from {member} at {source} (head {head}, role {role})");
        }
        Msg::Entries { entries } => {
            let Some(first) = entries.first() else {
                return Ok(());
            };
            let last_index = entries.last().map(|e| e.index).unwrap_or(first.index);
            {
                let mut r = shared.repl();
                r.first_unapplied_ts = Some(first.ts);
                r.source_head = Some(r.source_head.unwrap_or(0).max(last_index));
            }
            let delay_ms = shared.faults().replication_delay_ms;
            if delay_ms > 0 {
                // Apply entries no earlier than `delay` after they were written: a slow link.
                let due = first.ts.saturating_add(
                    i64::try_from(delay_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
                );
                let wait = due - Timestamp::now().as_microsecond();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_micros(u64::try_from(wait).unwrap_or(0)))
                        .await;
                }
            }
            match shared.store.append_replicated(entries).await {
                Ok(_) => {}
                Err(e @ (StoreError::Gap { .. } | StoreError::Checksum { .. })) => {
                    return Err(FollowError::Conflict(format!(
                        "cannot apply entries from {source}: {e}"
                    )));
                }
                Err(e) => return Err(FollowError::Transient(e.to_string())),
            }
            let mut r = shared.repl();
            if r.source_head.unwrap_or(0) <= shared.store.head() {
                r.first_unapplied_ts = None;
            }
        }
        Msg::Head {
            head,
            role,
            version,
            next_ts,
        } => {
            let own_version = shared.state().version;
            let own_head = shared.store.head();
            let mut r = shared.repl();
            r.source_head = Some(head);
            r.source_role = Some(role);
            note_version(&mut r, &own_version, version);
            if head > own_head {
                if r.first_unapplied_ts.is_none() {
                    r.first_unapplied_ts = next_ts;
                }
            } else {
                r.first_unapplied_ts = None;
            }
        }
        Msg::Conflict { message } => return Err(FollowError::Conflict(message)),
    }
    Ok(())
}

fn note_version(r: &mut super::ReplState, own: &str, source_version: String) {
    if source_version != own {
        if r.source_version.as_deref() != Some(source_version.as_str()) || r.mixed_since.is_none() {
            r.mixed_since = Some(Timestamp::now());
        }
    } else {
        r.mixed_since = None;
    }
    r.source_version = Some(source_version);
}
