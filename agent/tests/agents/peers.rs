//! Membership operations on real agents: `add-peer`, `remove-peer` and `retire`, the identity,
//! peers, configuration digest and retirement they report, and the peer identities enforced on
//! the replication stream once a member accepts peers.

use crate::common;

use std::time::{Duration, Instant};

use baton_agent::api::{
    ErrorBody, MemberStatus, OperationKind as K, OperationRequest as Req, OperationState, Role,
};
use baton_agent::client::ClientTls;
use baton_agent::data::DataError;
use baton_agent::http_client::Target;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

/// How soon replication must resume once a refused peer is accepted: the follower retries
/// at least every second (at once when its own peers change). Generous for a loaded host.
const RECOVERY: Duration = Duration::from_secs(10);

fn fp(byte: &str) -> String {
    byte.repeat(32)
}

fn identity(s: &MemberStatus) -> TestResult<String> {
    s.identity
        .clone()
        .ok_or_else(|| err(format!("{} reports no identity", s.member)))
}

fn add_peer(id: &str, peer: &str, fingerprint: &str) -> Req {
    Req::new(id, K::AddPeer)
        .with_peer(peer)
        .with_fingerprint(fingerprint)
}

/// The error of a refused submission: HTTP status and code, and its message.
async fn refusal(agent: &Agent, req: &Req) -> TestResult<(u16, String, String)> {
    let e = refused(agent.client.submit(req), "the submission was accepted").await?;
    let (status, code) = (e.status(), e.code().map(str::to_string));
    let message = match &e {
        baton_agent::client::ClientError::Http { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match (status, code) {
        (Some(s), Some(c)) => Ok((s, c, message)),
        _ => Err(err(format!("not an HTTP refusal: {e}"))),
    }
}

/// POSTs a raw body to the control API.
async fn post_raw(fx: &Fixture, agent: &Agent, body: &str) -> TestResult<(StatusCode, ErrorBody)> {
    let t = Target::new(&agent.control, Some(fx.pki.control_client_config()?))?;
    let (status, bytes) = t
        .call(
            Method::POST,
            "/v1/operations",
            Some(Bytes::copy_from_slice(body.as_bytes())),
            Duration::from_secs(30),
            1 << 20,
        )
        .await?;
    let parsed = serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "{status}: not an error body ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    Ok((status, parsed))
}

/// A raw client of `agent`'s data port presenting `member`'s certificate.
fn data_target(fx: &Fixture, agent: &Agent, member: &str) -> TestResult<Target> {
    let cert = fx
        .pki
        .members
        .get(member)
        .ok_or_else(|| err(format!("no certificate for {member}")))?;
    let config = baton_agent::tls::client_config(
        fx.pki.mesh_ca.cert_pem().as_bytes(),
        Some((cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())),
        "test",
    )?;
    Ok(Target::new(&agent.data, Some(config))?)
}

fn replication_failure(s: &MemberStatus) -> Option<String> {
    s.alarms
        .iter()
        .find(|a| a.name == "ReplicationFailure")
        .map(|a| a.message.clone().unwrap_or_default())
}

/// Waits for `agent`'s ReplicationFailure alarm to say `why` (the stream may first fail
/// otherwise, e.g. "source closed the stream" when the source cuts it) and returns its message.
async fn wait_replication_failure(agent: &Agent, why: &str) -> TestResult<String> {
    wait_until(
        &format!("{} to raise ReplicationFailure saying {why:?}", agent.name),
        CONVERGE,
        || async {
            let message = replication_failure(&agent.client.status().await.ok()?)?;
            message.contains(why).then_some(message)
        },
    )
    .await
}

async fn write_keys(fx: &Fixture, active: &Agent, prefix: &str, n: usize) -> TestResult {
    let writer = active.data_client(fx.pki.data_tls(&active.name)?)?;
    for i in 0..n {
        writer.put(&format!("{prefix}{i}"), "v").await?;
    }
    Ok(())
}

/// `follower` holds fewer entries than `leader`, and still after a while (it applies nothing).
async fn stays_behind(follower: &Agent, leader: &Agent) -> TestResult {
    let head = leader.status().await?.replication.applied_index;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = follower.status().await?;
    assert!(
        s.replication.applied_index < head && !s.replication.connected,
        "{} replicated anyway: {:?}",
        follower.name,
        s.replication
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_operations_are_idempotent_by_id_and_report_what_changed() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let (a, b) = (fp("a1"), fp("b2"));
    let before = m1.status().await?;
    assert!(before.peers.is_empty(), "{:?}", before.peers);

    let first = m1.run_ok(&add_peer("add-m2", "m2", &a)).await?;
    assert!(first.message.contains("m2 accepted"), "{}", first.message);
    assert_eq!(
        (
            first.params.peer.as_deref(),
            first.params.fingerprint.as_deref()
        ),
        (Some("m2"), Some(a.as_str()))
    );
    // The same id and request again: the same operation, not a second one.
    let again = m1.client.submit(&add_peer("add-m2", "m2", &a)).await?;
    assert_eq!(
        (again.started_at, again.state),
        (first.started_at, OperationState::Succeeded)
    );
    // The same id with another fingerprint is another request.
    let (status, code, _) = refusal(&m1, &add_peer("add-m2", "m2", &b)).await?;
    assert_eq!((status, code.as_str()), (409, "id_conflict"));
    let ops = m1.client.operations().await?;
    assert_eq!(
        ops.iter().filter(|o| o.id == "add-m2").count(),
        1,
        "{ops:?}"
    );

    // A new id, the same fingerprint: nothing to do, and it says so.
    let same = m1.run_ok(&add_peer("add-m2-again", "m2", &a)).await?;
    assert!(
        same.message.contains("already accepted"),
        "{}",
        same.message
    );
    // Another fingerprint replaces the old one, and the message names both.
    let replaced = m1.run_ok(&add_peer("add-m2-b", "m2", &b)).await?;
    assert!(
        replaced.message.contains("replaced")
            && replaced.message.contains(&a)
            && replaced.message.contains(&b),
        "{}",
        replaced.message
    );
    // A shared identity: m3 accepted under m2's fingerprint.
    let copied = m1
        .run_ok(
            &Req::new("add-m3", K::AddPeer)
                .with_peer("m3")
                .with_copy_from("m2"),
        )
        .await?;
    assert!(
        copied.message.contains("copied from m2"),
        "{}",
        copied.message
    );
    // Copying from a peer that is not accepted is recorded, and fails.
    let unknown = m1
        .run(
            &Req::new("add-m4", K::AddPeer)
                .with_peer("m4")
                .with_copy_from("m9"),
        )
        .await?;
    assert_eq!(unknown.state, OperationState::Failed, "{}", unknown.message);
    assert!(
        unknown.message.contains("m9") && unknown.message.contains("not an accepted peer"),
        "{}",
        unknown.message
    );
    let s = m1.status().await?;
    assert!(has_alarm(&s, "OperationFailed"), "{:?}", s.alarms);
    // A member may accept itself.
    let own = identity(&s)?;
    m1.run_ok(&add_peer("add-self", "m1", &own)).await?;
    let s = m1.status().await?;
    let want = [("m1", own.as_str()), ("m2", b.as_str()), ("m3", b.as_str())];
    let got: Vec<(&str, &str)> = s
        .peers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, want);

    // remove-peer: idempotent by id, and a no-op success for a peer not accepted.
    let removed = m1
        .run_ok(&Req::new("rm-m3", K::RemovePeer).with_peer("m3"))
        .await?;
    assert!(
        removed.message.contains("no longer accepted"),
        "{}",
        removed.message
    );
    let again = m1
        .client
        .submit(&Req::new("rm-m3", K::RemovePeer).with_peer("m3"))
        .await?;
    assert_eq!(again.started_at, removed.started_at);
    let (status, code, _) = refusal(&m1, &Req::new("rm-m3", K::RemovePeer).with_peer("m2")).await?;
    assert_eq!((status, code.as_str()), (409, "id_conflict"));
    let absent = m1
        .run_ok(&Req::new("rm-m3-again", K::RemovePeer).with_peer("m3"))
        .await?;
    assert!(
        absent.message.contains("was not an accepted peer"),
        "{}",
        absent.message
    );
    let s = m1.status().await?;
    assert_eq!(
        s.peers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    // Peers and retirement change nothing of the role or the data path of an Active member.
    assert_eq!((s.role, s.serving, s.retired), (Role::Active, true, false));
    write_keys(&fx, &m1, "k", 3).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peer_parameters_are_refused_with_the_documented_codes() -> TestResult {
    let (fx, m1) = Fixture::active_m1(&[]).await?;
    let f = fp("0f");
    let long = "p".repeat(10_000);
    let cases = [
        (
            format!(r#"{{"id":"b1","kind":"add-peer","fingerprint":"{f}"}}"#),
            "missing_param",
        ),
        (
            r#"{"id":"b2","kind":"add-peer","peer":"m3"}"#.to_string(),
            "missing_param",
        ),
        (
            format!(
                r#"{{"id":"b3","kind":"add-peer","peer":"m3","fingerprint":"{f}","copyFrom":"m1"}}"#
            ),
            "invalid_param",
        ),
        (
            format!(r#"{{"id":"b4","kind":"add-peer","peer":"M3","fingerprint":"{f}"}}"#),
            "invalid_param",
        ),
        (
            format!(r#"{{"id":"b5","kind":"add-peer","peer":"{long}","fingerprint":"{f}"}}"#),
            "invalid_param",
        ),
        (
            r#"{"id":"b6","kind":"add-peer","peer":"m3","fingerprint":"ABC"}"#.to_string(),
            "invalid_param",
        ),
        (
            format!(r#"{{"id":"b7","kind":"add-peer","peer":"m3","fingerprint":"{long}"}}"#),
            "invalid_param",
        ),
        (
            r#"{"id":"b8","kind":"add-peer","peer":"m3","copyFrom":"-m1"}"#.to_string(),
            "invalid_param",
        ),
        (
            r#"{"id":"b9","kind":"remove-peer"}"#.to_string(),
            "missing_param",
        ),
        (
            r#"{"id":"b10","kind":"remove-peer","peer":"m3","copyFrom":"m1"}"#.to_string(),
            "unexpected_param",
        ),
        (
            r#"{"id":"b11","kind":"retire","peer":"m3"}"#.to_string(),
            "unexpected_param",
        ),
        (
            r#"{"id":"b12","kind":"promote","fingerprint":"x"}"#.to_string(),
            "unexpected_param",
        ),
        (
            r#"{"id":"b13","kind":"add-peer","peer":3,"fingerprint":"x"}"#.to_string(),
            "invalid_request",
        ),
    ];
    for (body, want) in &cases {
        let (status, e) = post_raw(&fx, &m1, body).await?;
        let what = &body[..body.len().min(80)];
        assert_eq!(
            (status, e.error.as_str()),
            (StatusCode::BAD_REQUEST, *want),
            "{what}: {}",
            e.message
        );
        assert!(
            !e.message.is_empty() && e.message.len() <= 1024,
            "{what}: message of {} bytes",
            e.message.len()
        );
    }
    assert!(
        m1.client.operations().await?.is_empty(),
        "a refused request was recorded"
    );
    assert!(m1.status().await?.peers.is_empty());
    Ok(())
}

/// Peers, retirement and the identity are persisted state: a restarted agent reports them
/// as they were, whatever its flags say. The identity is an identity key of the member's own
/// (not its certificate, which a CA rotation replaces), kept across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_retirement_and_identity_survive_a_restart() -> TestResult {
    let (_fx, mut m1) = Fixture::active_m1(&[]).await?;
    let s = m1.status().await?;
    let id = identity(&s)?;
    let cert = s.certificate.as_ref().map(|c| c.fingerprint.clone());
    assert!(cert.is_some(), "m1 presents a member certificate");
    assert_ne!(
        Some(&id),
        cert.as_ref(),
        "the identity is not the certificate's: it outlives a rotation"
    );
    assert!(m1.data_dir.join("identity.key").exists());
    m1.run_ok(&add_peer("add-m2", "m2", &fp("c3"))).await?;
    m1.run_ok(
        &Req::new("add-m3", K::AddPeer)
            .with_peer("m3")
            .with_copy_from("m2"),
    )
    .await?;
    m1.run_ok(&Req::new("retire", K::Retire)).await?;
    m1.restart(&["--role", "active"]).await?;
    let s = m1.status().await?;
    assert_eq!(identity(&s)?, id);
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.peers.get("m3"), Some(&fp("c3")));
    assert_eq!(
        (s.role, s.serving, s.retired),
        (Role::OutOfService, false, true)
    );
    let rec = m1.client.operation("retire").await?;
    assert_eq!(rec.state, OperationState::Succeeded);

    // Without a member certificate: the identity key.
    let tmp = tempdir()?;
    let dir = tmp.path().join("plain");
    let args = vec![
        "--insecure-http".to_string(),
        "--role".into(),
        "active".into(),
    ];
    let mut plain = Agent::start("plain", &dir, ClientTls::Insecure, args).await?;
    let s = plain.status().await?;
    let key_id = identity(&s)?;
    assert!(s.certificate.is_none());
    assert!(
        key_id.len() == 64
            && key_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{key_id}"
    );
    assert_ne!(key_id, id);
    assert!(dir.join("identity.key").exists());
    plain.restart(&[]).await?;
    assert_eq!(
        identity(&plain.status().await?)?,
        key_id,
        "stable across restarts"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_digest_follows_the_configuration() -> TestResult {
    let (fx, m1, mut m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let digest = |s: MemberStatus| {
        s.config_digest
            .ok_or_else(|| err(format!("{} reports no configDigest", s.member)))
    };
    let (d1, d2) = (digest(m1.status().await?)?, digest(m2.status().await?)?);
    assert_eq!(d1.len(), 64);
    assert_eq!(d1, d2, "both start from the default configuration");

    let t = data_target(&fx, &m1, "m1")?;
    let config = br#"{"revision": 7, "settings": {"threads": 4}}"#;
    let (status, body) = t
        .call(
            Method::PUT,
            "/v1/config",
            Some(Bytes::from_static(config)),
            Duration::from_secs(30),
            1 << 16,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let changed = digest(m1.status().await?)?;
    assert_ne!(changed, d1, "PUT /v1/config changes the digest");
    assert_eq!(digest(m2.status().await?)?, d2);

    m2.run_ok(&Req::new("sync", K::SyncConfig).with_source(&m1.data))
        .await?;
    assert_eq!(
        digest(m2.status().await?)?,
        changed,
        "equal after sync-config"
    );
    m2.restart(&[]).await?;
    assert_eq!(digest(m2.status().await?)?, changed, "read back at start");
    Ok(())
}

/// A standby that accepts peers applies nothing from a source it does not accept, and picks
/// the stream up by itself once the source is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replicates_only_from_a_source_it_accepts() -> TestResult {
    let (fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    let source_id = identity(&m1.status().await?)?;

    // m2 accepts some other member only: the open stream is dropped at once.
    m2.run_ok(&add_peer("add-m9", "m9", &fp("99"))).await?;
    let message = wait_replication_failure(&m2, "is not an accepted peer").await?;
    assert!(
        message.contains("source m1")
            && message.contains(&source_id[..8])
            && message.contains("is not an accepted peer"),
        "{message}"
    );
    write_keys(&fx, &m1, "a", 5).await?;
    stays_behind(&m2, &m1).await?;

    // Accepting m1 under another fingerprint does not do either.
    m2.run_ok(&add_peer("add-m1-wrong", "m1", &fp("98")))
        .await?;
    let message = wait_until(
        "the alarm to name the wrong fingerprint",
        CONVERGE,
        || async {
            let m = replication_failure(&m2.client.status().await.ok()?)?;
            m.contains("accepts m1 as 98989898").then_some(m)
        },
    )
    .await?;
    assert!(message.contains(&source_id[..8]), "{message}");
    stays_behind(&m2, &m1).await?;

    // The right fingerprint: m2 catches up by itself.
    let accepted = Instant::now();
    m2.run_ok(&add_peer("add-m1", "m1", &source_id)).await?;
    wait_until("m2 to catch up after accepting m1", RECOVERY, || async {
        let (l, f) = (
            m1.client.status().await.ok()?,
            m2.client.status().await.ok()?,
        );
        (f.replication.connected && f.replication.applied_index == l.replication.applied_index)
            .then_some(())
    })
    .await?;
    let took = accepted.elapsed();
    let s = m2.status().await?;
    assert!(replication_failure(&s).is_none(), "{:?}", s.alarms);
    write_keys(&fx, &m1, "b", 3).await?;
    wait_caught_up(&m2, &m1).await?;
    assert!(took < RECOVERY, "recovered in {took:?}");
    Ok(())
}

/// A source that accepts peers serves its log only to them: a follower it does not accept is
/// answered 403 `unknown_peer` (and raises ReplicationFailure), accepted later it catches up,
/// withdrawn again its stream is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_serves_only_the_followers_it_accepts() -> TestResult {
    let fx = Fixture::new(&["m1", "m2", "m3"])?;
    let m1 = fx.start_m1_active(&[]).await?;
    m1.run_ok(&add_peer("add-m3", "m3", &fp("33"))).await?;
    write_keys(&fx, &m1, "a", 5).await?;
    let m2 = fx.start("m2", &["--source", &m1.data]).await?;
    let message = wait_replication_failure(&m2, "source refused").await?;
    assert!(
        message.contains("source refused: m2 (identity ")
            && message.contains(") is not an accepted peer of m1"),
        "{message}"
    );
    assert_eq!(m2.status().await?.replication.applied_index, 0);

    let m2_id = identity(&m2.status().await?)?;
    let accepted = Instant::now();
    m1.run_ok(&add_peer("add-m2", "m2", &m2_id)).await?;
    wait_until("m2 to catch up once accepted", RECOVERY, || async {
        let f = m2.client.status().await.ok()?;
        (f.replication.connected && f.replication.applied_index == 5).then_some(())
    })
    .await?;
    assert!(accepted.elapsed() < RECOVERY);
    assert!(replication_failure(&m2.status().await?).is_none());

    // A follower naming m2 with another identity is refused.
    let hash = "0".repeat(64);
    let other = fp("77");
    let path =
        format!("/v1/replicate?after=0&hash={hash}&member=m2&version=1.0.0&identity={other}");
    let (status, body) = data_target(&fx, &m1, "m3")?
        .call(Method::GET, &path, None, Duration::from_secs(30), 1 << 16)
        .await?;
    let e: ErrorBody = serde_json::from_slice(&body)?;
    assert_eq!(
        (status, e.error.as_str()),
        (StatusCode::FORBIDDEN, "unknown_peer"),
        "{}",
        e.message
    );
    assert!(e.message.contains("accepts m2 as"), "{}", e.message);
    // And a request without an identity is refused too.
    let path = format!("/v1/replicate?after=0&hash={hash}&member=m2&version=1.0.0");
    let (status, _) = data_target(&fx, &m1, "m2")?
        .call(Method::GET, &path, None, Duration::from_secs(30), 1 << 16)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Withdrawn: the open stream is cut and new entries no longer reach m2.
    m1.run_ok(&Req::new("rm-m2", K::RemovePeer).with_peer("m2"))
        .await?;
    wait_replication_failure(&m2, "is not an accepted peer of m1").await?;
    write_keys(&fx, &m1, "b", 3).await?;
    stays_behind(&m2, &m1).await?;
    Ok(())
}

/// Everything a peer map checks is off while it is empty: removing the last peer lets any
/// member trusted by TLS replicate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_peer_map_enforces_nothing() -> TestResult {
    let (fx, m1, m2) = Fixture::new_caught_up_pair(&[], &[]).await?;
    m1.run_ok(&add_peer("add-m9", "m9", &fp("99"))).await?;
    wait_replication_failure(&m2, "source refused").await?;
    m1.run_ok(&Req::new("rm-m9", K::RemovePeer).with_peer("m9"))
        .await?;
    write_keys(&fx, &m1, "k", 4).await?;
    wait_caught_up(&m2, &m1).await?;
    assert!(m1.status().await?.peers.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_member_stops_serving_and_replicating_until_it_re_joins() -> TestResult {
    let (fx, m1, mut m2) = Fixture::new_caught_up_pair(&[], &[]).await?;

    // A standby retired: no source, no replication, held out of promotion.
    let rec = m2.run_ok(&Req::new("retire-m2", K::Retire)).await?;
    assert!(rec.message.contains("stopped following"), "{}", rec.message);
    let again = m2.client.submit(&Req::new("retire-m2", K::Retire)).await?;
    assert_eq!(
        again.started_at, rec.started_at,
        "same id: the same operation"
    );
    let (status, code, _) = refusal(&m2, &Req::new("retire-m2", K::Backup)).await?;
    assert_eq!((status, code.as_str()), (409, "id_conflict"));
    let twice = m2.run_ok(&Req::new("retire-m2-again", K::Retire)).await?;
    assert!(
        twice.message.contains("already retired"),
        "{}",
        twice.message
    );
    let s = m2.status().await?;
    assert_eq!(
        (s.role, s.serving, s.retired),
        (Role::OutOfService, false, true)
    );
    assert_eq!(
        (s.replication.source.as_deref(), s.replication.connected),
        (None, false)
    );
    write_keys(&fx, &m1, "a", 5).await?;
    stays_behind(&m2, &m1).await?;
    let (status, code, message) = refusal(&m2, &Req::new("promote-m2", K::Promote)).await?;
    assert_eq!((status, code.as_str()), (409, "invalid_state"));
    assert!(message.contains("retired"), "{message}");
    let (status, code, _) = refusal(&m2, &Req::new("demote-m2", K::Demote)).await?;
    assert_eq!(
        (status, code.as_str()),
        (409, "invalid_state"),
        "a re-join needs a source"
    );

    // Still retired after a restart, though its flags name a source.
    m2.restart(&[]).await?;
    let s = m2.status().await?;
    assert_eq!(
        (s.role, s.retired, s.replication.source.as_deref()),
        (Role::OutOfService, true, None)
    );
    stays_behind(&m2, &m1).await?;

    // A demote with a source re-joins it.
    let rejoin = m2
        .run_ok(&Req::new("rejoin-m2", K::Demote).with_source(&m1.data))
        .await?;
    assert!(rejoin.message.contains("re-joined"), "{}", rejoin.message);
    wait_caught_up(&m2, &m1).await?;
    let s = m2.status().await?;
    assert_eq!((s.role, s.retired), (Role::Standby, false));

    // The Active member retired: it refuses writes at once, and keeps serving its log so that
    // its standby reaches the final index and can be promoted.
    let final_index = m1.status().await?.replication.applied_index;
    m1.run_ok(&Req::new("retire-m1", K::Retire)).await?;
    let s = m1.status().await?;
    assert_eq!(
        (s.role, s.serving, s.retired),
        (Role::OutOfService, false, true)
    );
    let writer = m1.data_client(fx.pki.data_tls("m1")?)?;
    let refused_write = writer.put("late", "v").await;
    assert!(
        matches!(refused_write, Err(DataError::NotActive { .. })),
        "{refused_write:?}"
    );
    assert_eq!(m2.status().await?.replication.applied_index, final_index);
    m2.run_ok(&Req::new("promote-m2-now", K::Promote)).await?;
    let s = m2.status().await?;
    assert_eq!((s.role, s.serving), (Role::Active, true));
    write_keys(&fx, &m2, "after", 2).await?;
    Ok(())
}
