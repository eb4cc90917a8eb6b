//! Membership changes (`docs/topology.md`): a member declared in `spec.members` that is not a
//! member yet **joins**, a member whose record is no longer declared **leaves**.
//!
//! The stages below this one read the members as they are: the joined ones and those still
//! leaving, never one that is joining (see [`Topology::effective_spec`]). So a joining member
//! is never a switchover target, never counted as available, and never upgraded before it has
//! joined; a leaving one keeps the active role (and its switchover, traffic check and switch
//! back) until it has handed it over.
//!
//! A join, in the order of the member-addition procedure (file 004):
//! 1. *bootstrap*: with certificates managed (`spec.certificates`, the CA read), it trusts the
//!    CA and presents a certificate of it (install-trust, install-certificate, restart);
//! 2. *configuration*, copied from the active, and only while the active serves;
//! 3. *introduce*: every member learns its identity, and it learns theirs (`add-peer`), before
//!    it replicates (a failover to it would otherwise be refused);
//! 4. *replicate*: it follows the active (as `ForcedStandby` when it runs other software than
//!    the active: the mixed-version rule), until in sync; then it is a member, and the upgrade
//!    pipeline takes it to the target.
//!
//! Managed clients (`spec.clients`) are given every member's identity, as
//! `spec.topology.clientIdentity` says (all clients reachable first for `Distinct`; an existing
//! member's entry copied, client by client, for `Shared`), and lose a removed member's.
//!
//! A removal: the active hands over first (a switchover through the usual gates); then, within
//! a window and under `maxUnavailable`, and never taking the last in-sync standby without
//! `allowRemovingLastStandby`, it is retired (stops serving and replicating); then its identity
//! is withdrawn from the peers and clients; then its record goes. An unreachable member is
//! removed only on a force intent (`remove/<cluster>/<member>`, a warning Event): its
//! identity is withdrawn without it being retired.
//!
//! Owns: `status.members[].{endpoint, identity, topology}`, `status.clients`, the records of
//! removed members, the `add-member`/`remove-member` log entries, the `MemberJoined`,
//! `MemberRemoved` and `RemovalForced` events, and the steps `AddPeer`, `RemovePeer`, `Join`
//! and `Retire`.
//!
//! May use: `state`, `view`, `log`, `record`, `gates`, `start`, `member`, `handover`,
//! `plan::software`. Used by `choose` and the pipeline (`super`).

use crate::api::{
    ClientIdentity, ClientStatus, ClusterSpec, ClusterStatus, LogResult, MemberRole, MemberSpec,
    MemberTopology, Membership, PeerParams, StepAction, TopologyStage,
};
use crate::plan::observe::{AgentView, Wake, client_key};
use crate::plan::software::same_software;
use crate::plan::stall::Stall;
use crate::plan::trust::CaInput;

use super::state::{NewStep, Pass, TopologyEntry};
use super::{gates, handover, log, member, record, start, view};

/// Who joins and who leaves, from the declared spec and the last status.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Topology {
    /// Declared, not members yet (no record, or a record still joining or left).
    pub joining: Vec<String>,
    /// Recorded, no longer declared.
    pub leaving: Vec<String>,
    /// A member joined, or a removed one's record went, in this pass: the stages read the
    /// members as they were, so the next pass plans again at once (never Ready on this one).
    pub changed: bool,
}

impl Topology {
    /// A first pass (no records) adopts the declared members as they are.
    pub fn classify(spec: &ClusterSpec, last: Option<&ClusterStatus>) -> Self {
        let records = last.map(|s| s.members.as_slice()).unwrap_or(&[]);
        if records.is_empty() {
            return Topology::default();
        }
        let joining = spec
            .members
            .iter()
            .filter(|m| match records.iter().find(|r| r.name == m.name) {
                None => true,
                // Still joining, or declared again while it left: it joins (again).
                Some(r) => r.topology.is_some(),
            })
            .map(|m| m.name.clone())
            .collect();
        let mut leaving: Vec<String> = Vec::new();
        for r in records {
            if !spec.members.iter().any(|m| m.name == r.name) && !leaving.contains(&r.name) {
                leaving.push(r.name.clone());
            }
        }
        Topology {
            joining,
            leaving,
            changed: false,
        }
    }

    pub fn is_joining(&self, name: &str) -> bool {
        self.joining.iter().any(|n| n == name)
    }

    pub fn is_leaving(&self, name: &str) -> bool {
        self.leaving.iter().any(|n| n == name)
    }

    /// The members the stages below read: the declared ones but those joining, then those
    /// leaving (reached at the endpoint their record keeps). `None`: no change under way.
    pub fn effective_spec(
        &self,
        spec: &ClusterSpec,
        last: Option<&ClusterStatus>,
    ) -> Option<ClusterSpec> {
        if self.joining.is_empty() && self.leaving.is_empty() {
            return None;
        }
        let mut eff = spec.clone();
        eff.members.retain(|m| !self.is_joining(&m.name));
        let records = last.map(|s| s.members.as_slice()).unwrap_or(&[]);
        for name in &self.leaving {
            let endpoint = records
                .iter()
                .find(|r| &r.name == name)
                .and_then(|r| r.endpoint.clone())
                .unwrap_or_default();
            eff.members.push(MemberSpec {
                name: name.clone(),
                endpoint,
                ..Default::default()
            });
        }
        Some(eff)
    }
}

/// Every agent a host observes (and may act on) for one cluster: the declared members, the
/// members leaving (at the endpoint their record keeps), and the managed clients (under
/// [`client_key`]), as `(key, endpoint)`.
pub fn agents<'a>(
    spec: &'a ClusterSpec,
    status: Option<&'a ClusterStatus>,
) -> Vec<(String, &'a str)> {
    let mut out: Vec<(String, &'a str)> = spec
        .members
        .iter()
        .map(|m| (m.name.clone(), m.endpoint.as_str()))
        .collect();
    for r in status.map(|s| s.members.as_slice()).unwrap_or_default() {
        if let Some(ep) = r.endpoint.as_deref()
            && !out.iter().any(|(k, _)| k == &r.name)
        {
            out.push((r.name.clone(), ep));
        }
    }
    for c in &spec.clients {
        out.push((client_key(&c.name), c.endpoint.as_str()));
    }
    out
}

/// A step of a membership change only (an identity given or withdrawn, a retirement, or any
/// step on a member joining or leaving, or on a managed client): not the cluster's rollout.
/// The mesh does not count a cluster doing only these as in motion. A switchover is never
/// one (a leaving active's hand-over moves the active role).
pub fn membership_step(st: &ClusterStatus, s: &crate::api::StepRecord) -> bool {
    if s.action == StepAction::Switchover {
        return false;
    }
    matches!(
        s.action,
        StepAction::AddPeer | StepAction::RemovePeer | StepAction::Join | StepAction::Retire
    ) || crate::plan::observe::client_of(&s.member).is_some()
        || st
            .members
            .iter()
            .any(|m| m.name == s.member && m.topology.is_some())
}

/// The approval-style name of the force that removes an unreachable member.
pub fn removal_force_name(cluster: &str, member: &str) -> String {
    format!("remove/{cluster}/{member}")
}

fn declared_member<'a>(p: &Pass<'a>, name: &str) -> Option<&'a MemberSpec> {
    p.declared().members.iter().find(|m| m.name == name)
}

fn identity_of<'a>(p: &Pass<'a>, name: &str) -> Option<&'a str> {
    p.agent(name).and_then(|a| a.membership.identity.as_deref())
}

/// `holder` accepts `name` with `identity`.
fn holds(holder: &AgentView, name: &str, identity: &str) -> bool {
    holder.membership.peers.get(name).map(String::as_str) == Some(identity)
}

/// Mark the records: endpoint, identity, and the membership change of each (after
/// `record::refresh_members`, which made a record for every member, joining ones too). Also
/// `status.clients`.
pub(super) fn mark(p: &mut Pass<'_>) {
    for i in 0..p.st.members.len() {
        let name = p.st.members[i].name.clone();
        let endpoint = p
            .member_spec(&name)
            .or_else(|| declared_member(p, &name))
            .map(|m| m.endpoint.clone())
            .filter(|e| !e.is_empty());
        let identity = identity_of(p, &name).map(str::to_string);
        let active = p.agent(&name).is_some_and(|a| a.role == MemberRole::Active);
        let joining = p.topo.is_joining(&name);
        let leaving = p.topo.is_leaving(&name);
        let rec = &mut p.st.members[i];
        if endpoint.is_some() {
            rec.endpoint = endpoint;
        }
        if identity.is_some() {
            rec.identity = identity;
        }
        let was = rec.topology.take();
        rec.topology = match (joining, leaving) {
            (true, _) => Some(match was {
                Some(t) if t.membership == Membership::Joining => t,
                _ => change(Membership::Joining, TopologyStage::Bootstrap),
            }),
            // Leaving: it hands over while active (a switch back may make it active again),
            // then retires; once retired or forced out, it stays withdrawing.
            (_, true) => {
                // A join given up: the member never was the cluster's.
                let never_joined = was.as_ref().is_some_and(|t| {
                    t.membership == Membership::Joining
                        || (t.membership == Membership::Leaving && t.never_joined)
                });
                Some(match was {
                    Some(t)
                        if t.membership == Membership::Leaving
                            && (t.stage == TopologyStage::Withdraw
                                || (!active && t.stage != TopologyStage::HandOver)) =>
                    {
                        t
                    }
                    _ => MemberTopology {
                        never_joined,
                        ..change(
                            Membership::Leaving,
                            if active {
                                TopologyStage::HandOver
                            } else {
                                TopologyStage::Retire
                            },
                        )
                    },
                })
            }
            _ => None,
        };
    }
    mark_clients(p);
}

fn change(membership: Membership, stage: TopologyStage) -> MemberTopology {
    MemberTopology {
        membership,
        stage,
        waiting: None,
        never_joined: false,
    }
}

/// What each managed client holds of the members' identities.
fn mark_clients(p: &mut Pass<'_>) {
    let spec = p.declared();
    let mut old = std::mem::take(&mut p.st.clients);
    let mut out = Vec::with_capacity(spec.clients.len());
    for c in &spec.clients {
        let agent = p.agent(&client_key(&c.name));
        // Failures and backoff are only in the status.
        let (failures, next_attempt_at, last_error) =
            match old.iter_mut().find(|o| o.name == c.name) {
                Some(o) => (o.failures, o.next_attempt_at, o.last_error.take()),
                None => (0, None, None),
            };
        let mut st = ClientStatus {
            name: c.name.clone(),
            reachable: agent.is_some(),
            failures,
            next_attempt_at,
            last_error,
            ..Default::default()
        };
        for m in &p.st.members {
            if p.topo.is_leaving(&m.name) {
                continue;
            }
            let Some(identity) = m.identity.as_deref() else {
                continue;
            };
            match agent {
                Some(a) if holds(a, &m.name, identity) => st.accepts.push(m.name.clone()),
                _ => st.missing.push(m.name.clone()),
            }
        }
        out.push(st);
    }
    p.st.clients = out;
}

/// Set where `name`'s change stands and why it waits (also among the pass's waits).
fn stage(p: &mut Pass<'_>, name: &str, stage: TopologyStage, waiting: Option<String>) {
    if let Some(w) = &waiting {
        p.wait(w.clone());
    }
    if let Some(t) = p.record_mut(name).and_then(|r| r.topology.as_mut()) {
        t.stage = stage;
        t.waiting = waiting;
    }
}

/// A leaving member that cannot be reached is removed only on its force intent (acknowledged
/// once, with a warning Event): it goes straight to having its identity withdrawn. Before
/// `choose`, which otherwise waits for every member to be reachable.
pub(super) fn force_unreachable(p: &mut Pass<'_>) {
    for name in p.topo.leaving.clone() {
        if p.agent(&name).is_some() || p.busy(&name) {
            continue;
        }
        let at_withdraw = p
            .record(&name)
            .and_then(|r| r.topology.as_ref())
            .is_some_and(|t| t.stage == TopologyStage::Withdraw);
        if at_withdraw {
            continue;
        }
        let force = removal_force_name(p.inp.cluster.name, &name);
        let ack = format!("force:{force}");
        if p.inp.intents.force.iter().any(|f| f == &force) && !p.st.acknowledged.contains(&ack) {
            record::acknowledge(p, ack);
            p.event(
                true,
                "RemovalForced",
                format!(
                    "{name} is unreachable and removed by force ({force}): it was not retired; \
                     its identity is withdrawn from the peers and clients, and it must not be \
                     started again as it was"
                ),
            );
            stage(p, &name, TopologyStage::Withdraw, None);
        } else {
            let why = format!(
                "{name} is being removed but is unreachable: removing it without retiring it needs the force {force}"
            );
            stage(p, &name, TopologyStage::Retire, Some(why));
        }
    }
}

/// Joining members that cannot be reached while they may already replicate (their join got
/// to `Replicate`): the cluster waits for them as for any member.
pub(super) fn unreachable_in_group<'a>(p: &Pass<'a>) -> Vec<&'a str> {
    p.declared()
        .members
        .iter()
        .filter(|m| p.topo.is_joining(&m.name) && p.agent(&m.name).is_none())
        .filter(|m| {
            p.record(&m.name)
                .and_then(|r| r.topology.as_ref())
                .is_some_and(|t| t.stage == TopologyStage::Replicate)
        })
        .map(|m| m.name.as_str())
        .collect()
}

/// Leaving members not to wait for: those retired (or forced out) whose identity is being
/// withdrawn. `choose` does not hold the cluster for them being unreachable.
pub(super) fn gone(p: &Pass<'_>, name: &str) -> bool {
    // Its record dropped in this pass: gone too (never introduced to anyone again).
    p.topo.is_leaving(name)
        && p.record(name).is_none_or(|r| {
            r.topology
                .as_ref()
                .is_some_and(|t| t.stage == TopologyStage::Withdraw)
        })
}

/// A membership change is under way, or a managed client lacks a member's identity.
pub(super) fn pending(p: &Pass<'_>) -> bool {
    p.topo.changed
        || p.st.members.iter().any(|m| m.topology.is_some())
        || p.st.clients.iter().any(|c| !c.missing.is_empty())
}

/// A CA rotation runs: every membership change waits for it.
pub(super) fn wait_for_rotation(p: &mut Pass<'_>) {
    let names: Vec<String> = p
        .topo
        .joining
        .iter()
        .chain(&p.topo.leaving)
        .cloned()
        .collect();
    for name in names {
        if p.busy(&name) {
            continue;
        }
        let why = format!("{name}'s membership change waits for the CA rotation to finish");
        let at = p
            .record(&name)
            .and_then(|r| r.topology.as_ref())
            .map(|t| t.stage)
            .unwrap_or(TopologyStage::Bootstrap);
        stage(p, &name, at, Some(why));
    }
}

/// Run the membership changes (with `active`, the one active member). False while the active
/// itself is leaving and hands over: nothing else is chosen then.
pub(super) fn advance<'a>(p: &mut Pass<'a>, active: &'a str) -> bool {
    let mut go_on = true;
    for name in p.topo.leaving.clone() {
        if name == active {
            go_on &= !hand_over(p, active);
        } else {
            leave(p, &name);
        }
    }
    for name in p.topo.joining.clone() {
        join(p, &name, active);
    }
    give_clients(p);
    // A stop found here (the last in-sync standby, a mismatched identity) starts nothing else.
    go_on && p.found.stalled.is_none()
}

/// The leaving active hands over to a settled member in sync that runs its software (or
/// the target's) and is known to every peer. True when a switchover was asked for (or is
/// held by its gates).
fn hand_over<'a>(p: &mut Pass<'a>, active: &'a str) -> bool {
    let Some(active_sw) = p.member_spec(active).and_then(|m| view::software_of(p, m)) else {
        return false;
    };
    let pool: Vec<&MemberSpec> = p.settled().filter(|m| m.name != active).collect();
    let pick = |spare: bool| {
        pool.iter()
            .filter(|m| m.spare == spare && handover::may_take_over(p, m))
            .find(|m| {
                view::at_target(p, m)
                    || view::software_of(p, m).is_some_and(|s| same_software(&s, &active_sw))
            })
            .map(|m| m.name.as_str())
    };
    let Some(to) = pick(false).or_else(|| pick(true)) else {
        let why = format!(
            "{active} is being removed: no in-sync member known to every peer to hand the active role to"
        );
        stage(p, active, TopologyStage::HandOver, Some(why));
        return false;
    };
    stage(p, active, TopologyStage::HandOver, None);
    if handover::hold_others(p, active, to) {
        return true;
    }
    handover::request_hand_over(p, active, to, "the active is being removed");
    true
}

/// In-sync standbys (settled, reachable, not the active) other than `but`.
fn in_sync_standbys(p: &Pass<'_>, but: &str) -> usize {
    p.settled()
        .filter(|m| m.name != but)
        .filter(|m| {
            p.agent(&m.name)
                .is_some_and(|a| matches!(a.role, MemberRole::Standby | MemberRole::ForcedStandby))
                && view::in_sync(p, &m.name)
        })
        .count()
}

fn leave(p: &mut Pass<'_>, name: &str) {
    if p.busy(name) {
        return;
    }
    if gone(p, name) {
        withdraw(p, name);
        return;
    }
    let Some(a) = p.agent(name) else {
        return; // `force_unreachable` said what it needs
    };
    if a.membership.retired {
        stage(p, name, TopologyStage::Withdraw, None);
        withdraw(p, name);
        return;
    }
    if member::in_backoff(p, name) {
        return;
    }
    // Availability: never the last in-sync standby where it is one, unless allowed; while a
    // member joins (which will restore the redundancy), wait for it instead.
    let standby = matches!(a.role, MemberRole::Standby | MemberRole::ForcedStandby);
    if standby
        && view::in_sync(p, name)
        && in_sync_standbys(p, name) == 0
        && !p.declared().topology.allow_removing_last_standby
    {
        if p.topo.joining.is_empty() {
            p.found.stalled = Some(Stall::LastInSyncStandby {
                member: name.to_string(),
            });
            stage(p, name, TopologyStage::Retire, None);
        } else {
            let why = format!(
                "{name} is the only in-sync standby: it is removed once {} has joined",
                p.topo.joining.join(", ")
            );
            stage(p, name, TopologyStage::Retire, Some(why));
        }
        return;
    }
    if !gates::disruption_allowed_for_rotation(p) {
        stage(p, name, TopologyStage::Retire, None);
        return;
    }
    stage(p, name, TopologyStage::Retire, None);
    // Members that replicate from it (a chain through an old active) follow the active first.
    if repoint_followers(p, name, a) {
        return;
    }
    let mut n = NewStep::on(StepAction::Retire, name);
    n.message = format!("{name} is removed from the spec: it stops serving and replicating");
    n.topology = Some(TopologyEntry::Member(Membership::Leaving, name.to_string()));
    start::start(p, n);
}

/// Point the members that replicate from `name` at the active instead (same role: a forced
/// standby stays held). True while any still follows `name`.
fn repoint_followers(p: &mut Pass<'_>, name: &str, a: &AgentView) -> bool {
    let Some(ep) = a.data_endpoint.as_deref() else {
        return false;
    };
    let Ok(Some(active)) = view::active(p) else {
        return false;
    };
    let source = p.agent(active).and_then(|x| x.data_endpoint.clone());
    let followers: Vec<(&str, MemberRole)> = p
        .in_group()
        .into_iter()
        .filter(|m| m.name != name && m.name != active)
        .filter_map(|m| {
            let x = p.agent(&m.name)?;
            (x.membership.source.as_deref() == Some(ep)).then_some((m.name.as_str(), x.role))
        })
        .collect();
    for &(f, role) in &followers {
        if p.busy(f) || member::in_backoff(p, f) {
            continue;
        }
        let action = if role == MemberRole::ForcedStandby {
            StepAction::ForceStandby
        } else {
            StepAction::Join
        };
        let mut n = NewStep::on(action, f);
        n.source = source.clone();
        n.message =
            format!("{f} replicates from the active {active} instead of {name}, which is removed");
        n.topology = Some(TopologyEntry::Member(Membership::Leaving, name.to_string()));
        start::start(p, n);
    }
    !followers.is_empty()
}

/// Withdraw a retired (or forced-out) member's identity from every peer and client that holds
/// it; once none does, its record goes.
fn withdraw(p: &mut Pass<'_>, name: &str) {
    let mut holders: Vec<String> = Vec::new();
    let mut unreachable: Vec<String> = Vec::new();
    let others: Vec<String> = p
        .settled()
        .filter(|m| m.name != name)
        .map(|m| m.name.clone())
        .chain(p.declared().clients.iter().map(|c| client_key(&c.name)))
        .collect();
    for key in &others {
        match p.agent(key) {
            Some(a) if a.membership.peers.contains_key(name) => holders.push(key.clone()),
            Some(_) => {}
            None => unreachable.push(key.clone()),
        }
    }
    if holders.is_empty() && unreachable.is_empty() {
        drop_record(p, name);
        return;
    }
    let waiting = (!unreachable.is_empty()).then(|| {
        format!(
            "{name}'s identity is withdrawn once {} can be reached",
            unreachable.join(", ")
        )
    });
    stage(p, name, TopologyStage::Withdraw, waiting);
    if !unreachable.is_empty() {
        p.wake = p.wake.min(Wake::Busy);
    }
    for key in holders {
        if p.busy(&key) || client_backing_off(p, &key) || switchover_holds_peers(p, &key) {
            continue;
        }
        let mut n = NewStep::on(StepAction::RemovePeer, &key);
        n.message = format!("{key} forgets the identity of the removed member {name}");
        n.peer = Some(PeerParams {
            peer: name.to_string(),
            ..Default::default()
        });
        n.topology = Some(TopologyEntry::Member(Membership::Leaving, name.to_string()));
        start::start(p, n);
    }
}

/// A member's accepted peers do not change while a switchover runs (see
/// [`view::peer_lists_changing`]); a client's may.
fn switchover_holds_peers(p: &mut Pass<'_>, on: &str) -> bool {
    if crate::plan::observe::client_of(on).is_some() || !p.has_step(StepAction::Switchover) {
        return false;
    }
    p.wait(format!(
        "the peers {on} accepts change once the switchover in flight ends"
    ));
    true
}

fn drop_record(p: &mut Pass<'_>, name: &str) {
    p.st.members.retain(|m| m.name != name);
    p.topo.changed = true;
    p.wake = Wake::Busy;
    let msg = format!("{name} removed: it no longer serves, and no peer or client accepts it");
    log::close_membership(p, Membership::Leaving, name, LogResult::Succeeded, &msg);
    p.event(false, "MemberRemoved", msg);
}

/// A client whose last peer-identity step failed waits for its retry instant.
fn client_backing_off(p: &mut Pass<'_>, key: &str) -> bool {
    let now = p.now();
    let Some(name) = crate::plan::observe::client_of(key) else {
        return member::in_backoff(p, key);
    };
    match p
        .st
        .clients
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.next_attempt_at)
    {
        Some(t) if t > now => {
            p.wake_at(t);
            true
        }
        _ => false,
    }
}

/// The join of `name`, one stage at a time (see the module's doc).
fn join(p: &mut Pass<'_>, name: &str, active: &str) {
    let Some(m) = declared_member(p, name) else {
        return;
    };
    if p.busy(name) {
        return;
    }
    let Some(a) = p.agent(name) else {
        let why = format!("{name} is joining and cannot be reached yet");
        stage(p, name, TopologyStage::Bootstrap, Some(why));
        p.wake = p.wake.min(Wake::Busy);
        return;
    };
    if member::in_backoff(p, name) {
        return;
    }
    if !bootstrapped(p, name, a) {
        return;
    }
    let Some(act) = p.agent(active) else {
        return;
    };
    // 2. The configuration, from the active only while it serves.
    let copied = match (&a.membership.config_digest, &act.membership.config_digest) {
        (Some(mine), Some(theirs)) => mine == theirs,
        _ => p.record(name).is_some_and(|r| r.config_synced.is_some()),
    };
    if !copied {
        if !act.serving {
            let why = format!(
                "{name}'s configuration is copied from the active {active}, which does not serve now"
            );
            stage(p, name, TopologyStage::CopyConfig, Some(why));
            return;
        }
        stage(p, name, TopologyStage::CopyConfig, None);
        let mut n = NewStep::on(StepAction::SyncConfig, name);
        n.source = act.data_endpoint.clone();
        n.message = format!("{name} copies its configuration from the active {active}");
        n.topology = Some(TopologyEntry::Member(Membership::Joining, name.to_string()));
        start::start(p, n);
        return;
    }
    // 3. Introduce: the peers learn its identity, it learns theirs.
    if !introduced(p, name, a) {
        return;
    }
    // 4. Replicate from the active: as a plain standby on the active's software, held out of
    // failover on the target's (as an upgraded standby of the rollout); on any other software
    // it is first moved to the active's, while it is outside the group (nothing serves from it,
    // and the cluster never becomes mixed by a join the mesh did not plan).
    let source = act.data_endpoint.clone();
    let following = source.is_some() && a.membership.source == source;
    if !following && p.busy(active) {
        // What the active runs may change under a step in flight (an upgrade in place).
        let why = format!("{name} joins once the step on the active {active} has ended");
        stage(p, name, TopologyStage::Replicate, Some(why));
        return;
    }
    if !following {
        let active_sw = p
            .member_spec(active)
            .and_then(|am| view::software_of(p, am));
        let differs = match (view::software_of(p, m), &active_sw) {
            (Some(mine), Some(s)) => !same_software(&mine, s),
            _ => false,
        };
        // Moved only while outside the group: one that replicates already (from an old
        // active, after a switchover) is held instead, as the mixed-version rule says.
        let outside = a.membership.source.is_none();
        if differs && outside && !view::at_target(p, m) {
            if let Some(sw) = active_sw {
                align(p, name, m, a, &sw, active);
            }
            return;
        }
        stage(p, name, TopologyStage::Replicate, None);
        let (action, why) = if differs {
            (
                StepAction::ForceStandby,
                format!(
                    "{name} joins as a forced standby: it runs other software than the active {active}"
                ),
            )
        } else {
            (
                StepAction::Join,
                format!("{name} starts replicating from the active {active}"),
            )
        };
        let mut n = NewStep::on(action, name);
        n.source = source;
        n.message = why;
        n.topology = Some(TopologyEntry::Member(Membership::Joining, name.to_string()));
        start::start(p, n);
        return;
    }
    let caught_up = view::in_sync(p, name) && (a.applied_index > 0 || act.applied_index == 0);
    if !caught_up {
        stage(p, name, TopologyStage::Replicate, None);
        let mut n = NewStep::on(StepAction::AwaitSync, name);
        n.message = format!("{name} catches up with the active {active}");
        n.topology = Some(TopologyEntry::Member(Membership::Joining, name.to_string()));
        start::start(p, n);
        return;
    }
    if let Some(r) = p.record_mut(name) {
        r.topology = None;
    }
    p.topo.changed = true;
    p.wake = Wake::Busy;
    let msg = format!("{name} joined: in sync with the active {active} and known to every member");
    log::close_membership(p, Membership::Joining, name, LogResult::Succeeded, &msg);
    p.event(false, "MemberJoined", msg);
}

/// Move a joining member (outside the group) to `sw`, the active's software: one component
/// (or the whole) at a time, never beside an opposite move.
fn align(
    p: &mut Pass<'_>,
    name: &str,
    m: &MemberSpec,
    a: &AgentView,
    sw: &crate::plan::software::Software,
    active: &str,
) {
    use crate::plan::software::{hosted, pending_moves, running};
    let names = hosted(p.spec(), m, &p.target.order);
    let moves = pending_moves(&running(a, sw), sw, &names);
    let Some(mv) = moves.first() else {
        return;
    };
    let action = if mv.down {
        StepAction::Rollback
    } else {
        StepAction::Upgrade
    };
    let mut n = NewStep::on(action, name);
    n.version = Some(super::state::StepVersion {
        version: mv.version.clone(),
        component: mv.component.clone(),
    });
    n.message = format!(
        "{name} is moved to {} (what the active {active} runs) before it joins",
        mv.version
    );
    n.topology = Some(joining(name));
    if let Some(why) = member::opposite_in_flight(p, &n) {
        stage(p, name, TopologyStage::Replicate, Some(why));
        return;
    }
    stage(p, name, TopologyStage::Replicate, None);
    let before = p.unavailable;
    start::start(p, n);
    // Outside the group: taking it down takes nothing from the cluster's availability.
    p.unavailable = before;
}

/// The bootstrap (stage 1): with the cluster's CA read, the member trusts it and presents a
/// certificate of its issuer (the steps of a rotation, for this member alone); without, the
/// peers must already trust what it presents. True when done.
fn bootstrapped(p: &mut Pass<'_>, name: &str, a: &AgentView) -> bool {
    let ca = match (p.certificates(), p.inp.ca) {
        (Some(_), Some(CaInput::Ready(ca))) => Some(ca),
        _ => None,
    };
    let Some(ca) = ca else {
        // Not managed: what it presents must be trusted by every member that reports trust.
        let issuer = a
            .tls
            .certificate
            .as_ref()
            .and_then(|c| c.issuer_fingerprint.as_deref());
        let Some(issuer) = issuer else {
            return true;
        };
        let refusing: Vec<&str> = p
            .settled()
            .filter(|m| {
                p.agent(&m.name).is_some_and(|x| {
                    !x.tls.trust.is_empty() && !x.tls.trust.iter().any(|t| t == issuer)
                })
            })
            .map(|m| m.name.as_str())
            .collect();
        if refusing.is_empty() {
            return true;
        }
        let why = format!(
            "{name} presents a certificate {} does not trust; install one of the cluster's CA (or declare spec.certificates)",
            refusing.join(", ")
        );
        stage(p, name, TopologyStage::Bootstrap, Some(why));
        return false;
    };
    let trusts = a.tls.trust.iter().any(|t| t == &ca.anchor);
    let presents = a
        .tls
        .certificate
        .as_ref()
        .is_some_and(|c| c.issuer_fingerprint.as_deref() == Some(ca.issuer.as_str()));
    let staged =
        p.st.certificates
            .as_ref()
            .is_some_and(|c| c.restart_pending.iter().any(|m| m == name));
    let (action, why) = if !trusts {
        (StepAction::InstallTrust, "trusts the cluster's CA")
    } else if presents {
        return true;
    } else if !staged {
        (
            StepAction::InstallCertificate,
            "is issued a certificate of the cluster's CA",
        )
    } else {
        (StepAction::Restart, "restarts to present its certificate")
    };
    stage(p, name, TopologyStage::Bootstrap, None);
    let mut n = NewStep::on(action, name);
    n.message = format!("{name} {why}");
    n.trust = Some(crate::api::TrustParams {
        anchor: ca.anchor.clone(),
        issuer: ca.issuer.clone(),
        keep: Vec::new(),
    });
    n.topology = Some(TopologyEntry::Member(Membership::Joining, name.to_string()));
    start::start(p, n);
    false
}

/// The introductions (stage 3): every member of the group (the members, those leaving until
/// withdrawn, and `name`) accepts every other one's identity; otherwise start the `add-peer` steps owed, one per member at a time. A member
/// that enforces a list accepts only what it lists, so the entries of its current partners go
/// first (its source, then the other members) and the new member's last. True when done.
fn introduced(p: &mut Pass<'_>, name: &str, a: &AgentView) -> bool {
    let Some(identity) = a.membership.identity.clone() else {
        // It reports no identity: there is nothing to distribute.
        return true;
    };
    if p.declared().topology.client_identity == ClientIdentity::Shared
        && !p.declared().clients.is_empty()
        && shared_with(p, name, &identity).is_none()
    {
        p.found.stalled = Some(Stall::IdentityMismatch {
            member: name.to_string(),
            identity,
        });
        return false;
    }
    // Everyone in the group, with the identity each reports; the new member last. Members
    // being removed stay until their identity is withdrawn (they may still serve, or be the
    // source others replicate from).
    let mut group: Vec<(String, Option<String>)> = p
        .spec()
        .members
        .iter()
        .filter(|m| m.name != name && !gone(p, &m.name))
        .map(|m| (m.name.clone(), identity_of(p, &m.name).map(str::to_string)))
        .collect();
    // Members joining beside it learn it too (either may take over once both have joined).
    for other in p.topo.joining.iter().filter(|j| *j != name) {
        if let Some(id) = identity_of(p, other) {
            group.push((other.clone(), Some(id.to_string())));
        }
    }
    group.push((name.to_string(), Some(identity)));
    let mut done = true;
    for (holder, _) in &group {
        let Some(ha) = p.agent(holder) else {
            done = false;
            continue;
        };
        let source_owner = ha.membership.source.as_deref().and_then(|src| {
            p.spec()
                .members
                .iter()
                .find(|m| p.agent(&m.name).and_then(|x| x.data_endpoint.as_deref()) == Some(src))
                .map(|m| m.name.as_str())
        });
        let mut owed: Vec<(&str, &str)> = group
            .iter()
            .filter(|(peer, _)| peer != holder)
            .filter_map(|(peer, pid)| Some((peer.as_str(), pid.as_deref()?)))
            .filter(|(peer, pid)| !holds(ha, peer, pid))
            .collect();
        if owed.is_empty() {
            continue;
        }
        done = false;
        // Partners first: its source, then the others in order, the new member last.
        owed.sort_by_key(|(peer, _)| (Some(*peer) != source_owner, *peer == name));
        let (peer, pid) = owed[0];
        let (peer, pid) = (peer.to_string(), pid.to_string());
        if !p.busy(holder) && !member::in_backoff(p, holder) {
            add_peer(p, holder, &peer, Some(&pid), None, joining(name));
        }
    }
    if !done {
        stage(p, name, TopologyStage::Introduce, None);
    }
    done
}

/// With shared identities: an existing member presenting `identity` (whose entry the
/// clients copy under `name`).
fn shared_with(p: &Pass<'_>, name: &str, identity: &str) -> Option<String> {
    p.settled()
        .filter(|m| m.name != name && !p.topo.is_joining(&m.name))
        .find(|m| identity_of(p, &m.name) == Some(identity))
        .map(|m| m.name.clone())
}

fn joining(name: &str) -> TopologyEntry {
    TopologyEntry::Member(Membership::Joining, name.to_string())
}

fn add_peer(
    p: &mut Pass<'_>,
    on: &str,
    peer: &str,
    fingerprint: Option<&str>,
    copy_from: Option<&str>,
    entry: TopologyEntry,
) {
    if switchover_holds_peers(p, on) {
        return;
    }
    let mut n = NewStep::on(StepAction::AddPeer, on);
    n.message = match copy_from {
        Some(f) => format!("{on} accepts {peer} with the identity of {f}"),
        None => format!("{on} learns the identity of {peer}"),
    };
    n.peer = Some(PeerParams {
        peer: peer.to_string(),
        fingerprint: fingerprint.map(str::to_string),
        copy_from: copy_from.map(str::to_string),
    });
    n.topology = Some(entry);
    start::start(p, n);
}

/// Managed clients: each is given the identity of every member past its introduction, as
/// `spec.topology.clientIdentity` says.
fn give_clients(p: &mut Pass<'_>) {
    let clients = &p.declared().clients;
    if clients.is_empty() {
        return;
    }
    let strategy = p.declared().topology.client_identity;
    // Members whose identity clients should hold: settled ones, and joining ones once their
    // peers know them.
    let owed: Vec<(String, String)> =
        p.st.members
            .iter()
            .filter(|r| !p.topo.is_leaving(&r.name))
            .filter(|r| {
                r.topology
                    .as_ref()
                    .is_none_or(|t| t.stage >= TopologyStage::Replicate)
            })
            .filter_map(|r| Some((r.name.clone(), r.identity.clone()?)))
            .collect();
    let unreachable: Vec<&str> = clients
        .iter()
        .filter(|c| p.agent(&client_key(&c.name)).is_none())
        .map(|c| c.name.as_str())
        .collect();
    let any_missing = p.st.clients.iter().any(|c| !c.missing.is_empty());
    if !any_missing {
        log::close_clients(p);
        return;
    }
    if strategy == ClientIdentity::Distinct && !unreachable.is_empty() {
        p.wait(format!(
            "giving the managed clients the members' identities needs every client reachable (clientIdentity Distinct): {} unreachable",
            unreachable.join(", ")
        ));
        p.wake = p.wake.min(Wake::Busy);
        return;
    }
    if !unreachable.is_empty() {
        p.wait(format!(
            "managed clients {} are given the members' identities once reachable",
            unreachable.join(", ")
        ));
        p.wake = p.wake.min(Wake::Busy);
    }
    for c in clients {
        let key = client_key(&c.name);
        let Some(ca) = p.agent(&key) else {
            continue;
        };
        if p.busy(&key) || client_backing_off(p, &key) {
            continue;
        }
        let Some((member, identity)) = owed.iter().find(|(m, id)| !holds(ca, m, id)) else {
            continue;
        };
        let copy = match strategy {
            ClientIdentity::Shared => shared_with(p, member, identity).filter(|f| {
                ca.membership.peers.get(f.as_str()).map(String::as_str) == Some(identity)
            }),
            ClientIdentity::Distinct => None,
        };
        let (member, identity) = (member.clone(), identity.clone());
        let entry = if p.topo.is_joining(&member) {
            joining(&member)
        } else {
            TopologyEntry::Clients
        };
        match copy {
            Some(from) => add_peer(p, &key, &member, None, Some(&from), entry),
            None => add_peer(p, &key, &member, Some(&identity), None, entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::started;
    use super::*;
    use crate::api::{Health, MemberRole, Weekday, values::Duration};
    use crate::fixtures::cluster::{ClusterBuilder, NOW, Observed, observed, root_ca, step};
    use crate::plan::ClusterPlan;
    use crate::plan::observe::OpKind;

    /// Members a (active) and b, known from the last status, both accepting each other; `n`
    /// declared and not yet a member: a fresh standby replicating from nobody.
    fn joining() -> ClusterBuilder {
        ClusterBuilder::new("c")
            .members(["a", "b", "n"])
            .version("1.0.0")
            .upgrade(|u| u.preflight = false)
            .recorded(["a", "b"])
            .observe(settled_member("a").active())
            .observe(settled_member("b").follows("a:7000"))
            .observe(fresh("n"))
    }

    fn settled_member(name: &str) -> Observed {
        observed(name)
            .identity(&format!("id-{name}"))
            .config("cfg1")
            .accepts(&[("a", "id-a"), ("b", "id-b")])
    }

    fn fresh(name: &str) -> Observed {
        observed(name).identity(&format!("id-{name}")).applied(0, 0)
    }

    /// Every member accepts a, b and n.
    fn introduced(o: Observed) -> Observed {
        o.accepts(&[("a", "id-a"), ("b", "id-b"), ("n", "id-n")])
    }

    fn peer_steps(plan: &ClusterPlan) -> Vec<(String, String)> {
        plan.actions
            .iter()
            .filter(|a| a.request.kind == OpKind::AddPeer)
            .map(|a| {
                let peer = a.request.peer.as_ref().expect("peer params");
                (a.member.clone(), peer.peer.clone())
            })
            .collect()
    }

    fn topology_of(plan: &ClusterPlan, name: &str) -> Option<MemberTopology> {
        plan.status
            .members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.topology.clone())
    }

    use crate::fixtures::cluster::stalled_reason as stalled;

    #[test]
    fn a_first_apply_adopts_every_declared_member_as_it_is() {
        let plan = ClusterBuilder::new("c")
            .members(["a", "b", "n"])
            .version("1.0.0")
            .running("1.0.0")
            .build()
            .plan();
        assert!(plan.status.members.iter().all(|m| m.topology.is_none()));
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
    }

    #[test]
    fn a_new_member_copies_its_configuration_from_the_serving_active_only() {
        let plan = joining().build().plan();
        let sync = plan
            .actions
            .iter()
            .find(|a| a.member == "n" && a.request.kind == OpKind::SyncConfig)
            .expect("configuration copied");
        assert_eq!(sync.request.source.as_deref(), Some("a:7000"));
        let t = topology_of(&plan, "n").expect("joining");
        assert_eq!(
            (t.membership, t.stage),
            (Membership::Joining, TopologyStage::CopyConfig)
        );
        // The active does not serve: nothing is copied, and the status says why.
        let plan = joining()
            .observe(settled_member("a").active().serving(false))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        let t = topology_of(&plan, "n").expect("joining");
        assert!(
            t.waiting
                .as_deref()
                .unwrap_or("")
                .contains("does not serve"),
            "{t:?}"
        );
        assert!(
            plan.status.phase != crate::api::ClusterPhase::Ready,
            "a join pending is not Ready"
        );
    }

    #[test]
    fn identities_are_introduced_both_ways_partners_first_before_it_replicates() {
        let plan = joining().observe(fresh("n").config("cfg1")).build().plan();
        let mut got = peer_steps(&plan);
        got.sort();
        // a and b already accept each other: each learns n; n learns its source's first.
        assert_eq!(
            got,
            [
                ("a".to_string(), "n".to_string()),
                ("b".to_string(), "n".to_string()),
                ("n".to_string(), "a".to_string()),
            ]
        );
        let step = plan
            .actions
            .iter()
            .find(|a| a.member == "a" && a.request.kind == OpKind::AddPeer)
            .expect("a learns n");
        assert_eq!(
            step.request
                .peer
                .as_ref()
                .and_then(|p| p.fingerprint.as_deref()),
            Some("id-n")
        );
        assert!(!started(&plan).iter().any(|(a, _)| *a == StepAction::Join));
    }

    #[test]
    fn a_member_enforcing_a_list_learns_its_own_source_before_anyone_else() {
        // b enforces nothing yet: its first entry must be its source's, or it would refuse a.
        let plan = joining()
            .observe(
                observed("b")
                    .identity("id-b")
                    .config("cfg1")
                    .follows("a:7000"),
            )
            .observe(fresh("n").config("cfg1"))
            .build()
            .plan();
        let on_b: Vec<(String, String)> = peer_steps(&plan)
            .into_iter()
            .filter(|(m, _)| m == "b")
            .collect();
        assert_eq!(on_b, [("b".to_string(), "a".to_string())]);
    }

    #[test]
    fn once_introduced_it_joins_as_a_standby_or_a_forced_standby_on_other_software() {
        let base = || {
            joining()
                .observe(introduced(settled_member("a").active()))
                .observe(introduced(settled_member("b").follows("a:7000")))
        };
        let plan = base()
            .observe(introduced(fresh("n").config("cfg1")))
            .build()
            .plan();
        let join = plan
            .actions
            .iter()
            .find(|a| a.member == "n")
            .expect("n acted on");
        assert_eq!(join.request.kind, OpKind::Demote);
        assert_eq!(join.request.source.as_deref(), Some("a:7000"));
        assert_eq!(join.request.role.as_deref(), Some("standby"));
        // Neither the active's software nor the target's: moved to the active's first, while
        // outside the group (the cluster never becomes mixed by a join).
        let plan = base()
            .observe(introduced(fresh("n").config("cfg1").version("0.9.0")))
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Upgrade, "n".to_string())]);
        assert_eq!(plan.status.steps[0].version.as_deref(), Some("1.0.0"));
        // On the target mid-rollout (the active still on the old version): it joins held out
        // of failover, as an upgraded standby of the rollout.
        let plan = base()
            .version("2.0.0")
            .observe(introduced(
                settled_member("b")
                    .follows("a:7000")
                    .version("2.0.0")
                    .held(),
            ))
            .observe(introduced(fresh("n").config("cfg1").version("2.0.0")))
            .build()
            .plan();
        assert!(
            started(&plan).contains(&(StepAction::ForceStandby, "n".to_string())),
            "{:?}",
            started(&plan)
        );
    }

    #[test]
    fn it_becomes_a_member_only_once_in_sync() {
        let base = || {
            joining()
                .observe(introduced(settled_member("a").active()))
                .observe(introduced(settled_member("b").follows("a:7000")))
        };
        let behind = introduced(fresh("n").config("cfg1").follows("a:7000"))
            .applied(10, 500)
            .lag(40.0);
        let plan = base().observe(behind).build().plan();
        assert_eq!(started(&plan), [(StepAction::AwaitSync, "n".to_string())]);
        assert!(topology_of(&plan, "n").is_some());
        let caught_up = introduced(fresh("n").config("cfg1").follows("a:7000")).applied(100, 0);
        let plan = base().observe(caught_up).build().plan();
        assert_eq!(topology_of(&plan, "n"), None, "joined");
        assert!(plan.events.iter().any(|e| e.reason == "MemberJoined"));
        // The pass it joined in plans nothing else from it: the next one does, at once.
        assert_ne!(plan.status.phase, crate::api::ClusterPhase::Ready);
        assert_eq!(plan.wake, Wake::Busy);
    }

    #[test]
    fn a_switchover_target_must_be_known_to_every_peer_that_enforces_a_list() {
        // b is upgraded and in sync; a (active, on 1.0.0) accepts only itself.
        let case = |a: Observed| {
            ClusterBuilder::new("c")
                .members(["a", "b"])
                .version("2.0.0")
                .upgrade(|u| u.preflight = false)
                .recorded(["a", "b"])
                .observe(a.active().identity("id-a"))
                .observe(observed("b").version("2.0.0").held().identity("id-b"))
                .build()
                .plan()
        };
        let plan = case(observed("a").accepts(&[("a", "id-a")]));
        assert!(
            !started(&plan)
                .iter()
                .any(|(a, _)| *a == StepAction::Switchover),
            "{:?}",
            started(&plan)
        );
        let plan = case(observed("a").accepts(&[("a", "id-a"), ("b", "id-b")]));
        assert_eq!(started(&plan), [(StepAction::Switchover, "b".to_string())]);
    }

    #[test]
    fn switchovers_and_changes_of_a_members_peers_never_overlap() {
        // b is upgraded, in sync and known to a; an add-peer runs on b (its first peer turns
        // its checks on): the switchover to b waits for it.
        let mut adding = step(StepAction::AddPeer, "b", NOW);
        adding.peer = Some(PeerParams {
            peer: "a".into(),
            fingerprint: Some("id-a".into()),
            copy_from: None,
        });
        let switching = |steps: Vec<crate::api::StepRecord>| {
            let mut b = ClusterBuilder::new("c")
                .members(["a", "b"])
                .version("2.0.0")
                .upgrade(|u| u.preflight = false)
                .recorded(["a", "b"])
                .observe(
                    observed("a")
                        .active()
                        .identity("id-a")
                        .accepts(&[("a", "id-a"), ("b", "id-b")]),
                )
                .observe(observed("b").version("2.0.0").held().identity("id-b"));
            for s in steps {
                b = b.step(s);
            }
            b.build().plan()
        };
        let is_switchover = |plan: &ClusterPlan| {
            started(plan)
                .iter()
                .any(|(a, _)| *a == StepAction::Switchover)
        };
        assert!(is_switchover(&switching(vec![])));
        let plan = switching(vec![adding]);
        assert!(!is_switchover(&plan), "{:?}", started(&plan));
        // The other way: a switchover in flight holds the introductions of a joining member.
        let mut sw = step(StepAction::Switchover, "b", NOW);
        sw.from = Some("a".into());
        let configured = || joining().observe(fresh("n").config("cfg1"));
        assert!(!peer_steps(&configured().build().plan()).is_empty());
        let plan = configured().step(sw).build().plan();
        assert!(peer_steps(&plan).is_empty(), "{:?}", peer_steps(&plan));
    }

    #[test]
    fn a_return_to_the_primary_waits_until_every_peer_enforcing_a_list_accepts_it() {
        // Everyone on the target; b is the primary (returnToPrimary), a active and accepting
        // only itself: switching over to b would be refused.
        let case = |a: Observed| {
            ClusterBuilder::new("c")
                .members(["a", "b"])
                .primary("b")
                .version("1.0.0")
                .upgrade(|u| {
                    u.preflight = false;
                    u.return_to_primary = true;
                })
                .recorded(["a", "b"])
                .observe(a.active().identity("id-a"))
                .observe(observed("b").follows("a:7000").identity("id-b"))
                .build()
                .plan()
        };
        let plan = case(observed("a").accepts(&[("a", "id-a")]));
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        assert!(
            plan.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("waiting for primary b")),
            "{:?}",
            plan.status.message
        );
        let plan = case(observed("a").accepts(&[("a", "id-a"), ("b", "id-b")]));
        assert_eq!(started(&plan), [(StepAction::Switchover, "b".to_string())]);
    }

    /// a (active), b and x known; x no longer declared.
    fn leaving_x() -> ClusterBuilder {
        ClusterBuilder::new("c")
            .members(["a", "b"])
            .version("1.0.0")
            .upgrade(|u| u.preflight = false)
            .recorded(["a", "b", "x"])
            .observe(settled_member("a").active())
            .observe(settled_member("b").follows("a:7000"))
            .observe(settled_member("x").follows("a:7000"))
    }

    #[test]
    fn a_removed_standby_is_retired_within_the_gates() {
        let plan = leaving_x().build().plan();
        assert_eq!(started(&plan), [(StepAction::Retire, "x".to_string())]);
        let t = topology_of(&plan, "x").expect("leaving");
        assert_eq!(
            (t.membership, t.stage),
            (Membership::Leaving, TopologyStage::Retire)
        );
        // Another member out of service: maxUnavailable 1 holds the retirement.
        let plan = leaving_x()
            .observe(settled_member("b").role(MemberRole::OutOfService))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        // Outside the maintenance windows: it waits for the next.
        let tomorrow = Weekday::Sat;
        let plan = leaving_x()
            .window(&[tomorrow], "02:00", Duration::from_secs(3600))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        assert!(matches!(plan.wake, Wake::At(_)));
    }

    #[test]
    fn a_join_given_up_never_makes_the_cluster_part_way() {
        // x was joining on other software (2.0.0) and is no longer declared: leaving, marked as
        // never joined, and left out of `runningVersions` (the mesh would otherwise count the
        // cluster as moving and admit it beyond its tier's maxParallel).
        let gave_up = || {
            leaving_x()
                .observe(settled_member("x").version("2.0.0"))
                .with_status(|st| {
                    if let Some(x) = st.members.iter_mut().find(|m| m.name == "x") {
                        x.topology = Some(change(Membership::Joining, TopologyStage::Replicate));
                    }
                })
        };
        let plan = gave_up().build().plan();
        let t = topology_of(&plan, "x").expect("leaving");
        assert_eq!((t.membership, t.never_joined), (Membership::Leaving, true));
        assert_eq!(plan.status.running_versions.as_deref(), Some("1.0.0"));
        // The next pass (its record now leaving) keeps it so.
        let plan = gave_up().status(plan.status).build().plan();
        assert!(topology_of(&plan, "x").is_some_and(|t| t.never_joined));
        assert_eq!(plan.status.running_versions.as_deref(), Some("1.0.0"));
        // A member that had joined is the cluster's until it goes: its software counts.
        let plan = leaving_x()
            .observe(settled_member("x").version("2.0.0"))
            .build()
            .plan();
        assert!(topology_of(&plan, "x").is_some_and(|t| !t.never_joined));
        assert_eq!(plan.status.running_versions.as_deref(), Some("1.0.0,2.0.0"));
    }

    #[test]
    fn the_last_in_sync_standby_goes_only_with_permission_or_after_a_joiner() {
        let lone = || {
            ClusterBuilder::new("c")
                .members(["a"])
                .version("1.0.0")
                .recorded(["a", "x"])
                .observe(settled_member("a").active())
                .observe(settled_member("x").follows("a:7000"))
        };
        let plan = lone().build().plan();
        assert_eq!(stalled(&plan).as_deref(), Some("LastInSyncStandby"));
        assert!(plan.actions.is_empty() && plan.status.steps.is_empty());
        let plan = lone()
            .spec(|s| s.topology.allow_removing_last_standby = true)
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Retire, "x".to_string())]);
        // A member joining restores the redundancy: the removal waits for it, not stalled.
        let plan = lone()
            .spec(|s| s.members.push(crate::fixtures::cluster::member("n")))
            .observe(fresh("n"))
            .build()
            .plan();
        assert_eq!(stalled(&plan), None);
        assert!(!started(&plan).iter().any(|(a, _)| *a == StepAction::Retire));
        assert!(
            topology_of(&plan, "x")
                .and_then(|t| t.waiting)
                .is_some_and(|w| w.contains("once n has joined"))
        );
        // A standby that is not in sync is not the redundancy the rule keeps.
        let plan = lone()
            .observe(settled_member("x").follows("a:7000").lag(600.0))
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Retire, "x".to_string())]);
    }

    #[test]
    fn a_removed_active_hands_over_and_is_never_retired_while_active() {
        let plan = ClusterBuilder::new("c")
            .members(["b", "c2"])
            .version("1.0.0")
            .recorded(["a", "b", "c2"])
            .observe(settled_member("a").active())
            .observe(settled_member("b").follows("a:7000"))
            .observe(settled_member("c2").follows("a:7000"))
            .build()
            .plan();
        let got = started(&plan);
        assert_eq!(got, [(StepAction::Switchover, "b".to_string())], "{got:?}");
        assert!(!got.contains(&(StepAction::Retire, "a".to_string())));
        let t = topology_of(&plan, "a").expect("leaving");
        assert_eq!(t.stage, TopologyStage::HandOver);
    }

    /// The hand-over is the removal's first step: logged under `remove-member`, never under
    /// an `upgrade` entry of a rollout that is not happening (which would then close saying
    /// every member runs the version, as if an upgrade had taken place).
    #[test]
    fn a_removed_actives_hand_over_is_logged_under_its_removal_not_a_rollout() {
        let plan = ClusterBuilder::new("c")
            .members(["b", "c2"])
            .version("1.0.0")
            .recorded(["a", "b", "c2"])
            .observe(settled_member("a").active())
            .observe(settled_member("b").follows("a:7000"))
            .observe(settled_member("c2").follows("a:7000"))
            .build()
            .plan();
        let log = &plan.status.log;
        let switchover = log
            .iter()
            .find(|e| e.action == "switchover")
            .expect("a switchover entry");
        let parent = log
            .iter()
            .find(|e| Some(e.id) == switchover.parent)
            .map(|e| (e.action.as_str(), e.target.as_str()));
        assert_eq!(parent, Some(("remove-member", "a")), "{log:#?}");
        assert!(!log.iter().any(|e| e.action == "upgrade"), "{log:#?}");
    }

    #[test]
    fn a_retired_member_is_withdrawn_from_every_holder_then_forgotten() {
        let plan = leaving_x()
            .observe(settled_member("x").retired())
            .observe(settled_member("a").active().accepts(&[("x", "id-x")]))
            .observe(
                settled_member("b")
                    .follows("a:7000")
                    .accepts(&[("x", "id-x")]),
            )
            .build()
            .plan();
        let removed: Vec<(String, String)> = plan
            .actions
            .iter()
            .filter(|a| a.request.kind == OpKind::RemovePeer)
            .map(|a| {
                (
                    a.member.clone(),
                    a.request.peer.clone().map(|p| p.peer).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            removed,
            [
                ("a".to_string(), "x".to_string()),
                ("b".to_string(), "x".to_string())
            ]
        );
        // Nobody holds it any more: the record goes.
        let plan = leaving_x()
            .observe(settled_member("x").retired())
            .build()
            .plan();
        assert!(plan.status.members.iter().all(|m| m.name != "x"));
        assert!(plan.events.iter().any(|e| e.reason == "MemberRemoved"));
    }

    #[test]
    fn an_unreachable_member_is_removed_only_by_its_force_with_a_warning() {
        let base = || {
            leaving_x()
                .unreachable("x")
                .observe(settled_member("a").active().accepts(&[("x", "id-x")]))
        };
        let plan = base().build().plan();
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert!(
            plan.status
                .message
                .as_deref()
                .unwrap_or("")
                .contains("remove/c/x"),
            "{:?}",
            plan.status.message
        );
        let plan = base().force("remove/c/x").build().plan();
        let ev = plan
            .events
            .iter()
            .find(|e| e.reason == "RemovalForced")
            .expect("the force is announced");
        assert!(ev.warning);
        assert!(
            plan.actions
                .iter()
                .any(|a| a.member == "a" && a.request.kind == OpKind::RemovePeer)
        );
        assert!(
            plan.status
                .acknowledged
                .iter()
                .any(|a| a == "force:remove/c/x")
        );
    }

    #[test]
    fn distinct_client_identities_wait_for_every_client_then_go_to_each() {
        let joined = || {
            ClusterBuilder::new("c")
                .members(["a", "b"])
                .version("1.0.0")
                .recorded(["a", "b"])
                .observe(settled_member("a").active())
                .observe(settled_member("b").follows("a:7000"))
        };
        let with = |c2: Option<Observed>| {
            joined()
                .client("k1", Some(observed("k1").accepts(&[("a", "id-a")])))
                .client("k2", c2)
                .build()
                .plan()
        };
        let plan = with(None);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert!(plan.status.message.as_deref().unwrap_or("").contains("k2"));
        let k1 = plan
            .status
            .clients
            .iter()
            .find(|c| c.name == "k1")
            .expect("k1");
        assert_eq!(
            (k1.accepts.clone(), k1.missing.clone()),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        let plan = with(Some(observed("k2")));
        let mut got = peer_steps(&plan);
        got.sort();
        assert_eq!(
            got,
            [
                ("client/k1".to_string(), "b".to_string()),
                ("client/k2".to_string(), "a".to_string()),
            ]
        );
    }

    #[test]
    fn shared_client_identities_copy_an_existing_entry_and_refuse_a_stranger() {
        let shared = |n_identity: &str| {
            let all = [("a", "id-a"), ("b", "id-b"), ("n", n_identity)];
            joining()
                .spec(|s| s.topology.client_identity = ClientIdentity::Shared)
                .observe(settled_member("a").active().accepts(&all))
                .observe(settled_member("b").follows("a:7000").accepts(&all))
                .observe(
                    fresh("n")
                        .identity(n_identity)
                        .config("cfg1")
                        .follows("a:7000")
                        .applied(5, 0)
                        .accepts(&all),
                )
                .client(
                    "k1",
                    Some(observed("k1").accepts(&[("a", "id-a"), ("b", "id-b")])),
                )
                .build()
                .plan()
        };
        // n presents a's identity: the client copies a's entry under n's name.
        let plan = shared("id-a");
        let copy = plan
            .actions
            .iter()
            .find(|a| a.member == "client/k1")
            .and_then(|a| a.request.peer.clone())
            .expect("the client is given n");
        assert_eq!(
            (copy.peer.as_str(), copy.copy_from.as_deref()),
            ("n", Some("a"))
        );
        assert_eq!(copy.fingerprint, None);
        // An identity nobody has: the copied entries would not accept it.
        let plan = shared("id-stranger");
        assert_eq!(stalled(&plan).as_deref(), Some("IdentityMismatch"));
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn with_certificates_managed_a_new_member_is_bootstrapped_onto_the_cluster_ca() {
        let ca = root_ca("ca1", NOW.plus(Duration::from_secs(365 * 86_400)));
        let base = || {
            joining().certificates(ca.clone()).trust_everywhere(
                &["ca1"],
                "ca1",
                NOW.plus(Duration::from_secs(86_400 * 300)),
            )
        };
        let first = |n: Observed| {
            let plan = base().observe(n).build().plan();
            started(&plan)
                .into_iter()
                .filter(|(_, m)| m == "n")
                .map(|(a, _)| a)
                .collect::<Vec<_>>()
        };
        assert_eq!(first(fresh("n")), [StepAction::InstallTrust]);
        assert_eq!(
            first(fresh("n").trusts(&["ca1"]).presents("other", NOW)),
            [StepAction::InstallCertificate]
        );
        assert_eq!(
            first(
                fresh("n")
                    .trusts(&["ca1"])
                    .presents("ca1", NOW.plus(Duration::from_secs(86_400 * 300)))
            ),
            [StepAction::SyncConfig]
        );
    }

    #[test]
    fn without_managed_certificates_a_member_its_peers_do_not_trust_waits() {
        let plan = joining()
            .observe(settled_member("a").active().trusts(&["ca1"]))
            .observe(fresh("n").presents("rogue", NOW))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        let t = topology_of(&plan, "n").expect("joining");
        assert_eq!(t.stage, TopologyStage::Bootstrap);
        assert!(t.waiting.unwrap_or_default().contains("does not trust"));
        let _ = Health::Ok;
    }
}
