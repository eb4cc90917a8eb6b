//! The CA rotation of `spec.certificates`, as a stage of the cluster pass. Where the rotation
//! stands is derived from what the members report ([`crate::plan::trust`]), never from a
//! counter; the status remembers only what no member can show: which members hold a staged
//! certificate that waits for a restart, which re-signed their data, and the approvals given.
//!
//! The phases, each started only once the one before is observed complete on every member:
//! 1. `AddTrust` — every trust store gets the new root beside the roots it has;
//! 2. `Reissue` — each member gets a certificate the new issuer signed (staged), then restarts
//!    onto it: `Automatic` restarts standbys first and the active only after a switchover to a
//!    member that already presents a new certificate; `Manual` waits until a human restarted
//!    it (it then presents the new certificate);
//! 3. `RemoveOldTrust` — trust stores keep only the new root (skipped by `keepOldTrust`);
//! 4. `ResignData` — every member re-signs its stored data (skipped by `resignData: false`).
//!
//! Then, while nothing rotates, certificates that expire within `renewBefore` are renewed from
//! the same CA, through the same install-and-restart steps.
//!
//! Jobs run per site, at most `maxJobsPerSite` at once (a member busy with anything holds its
//! site's slot). Restarts are disruptive: inside maintenance windows and within
//! `maxUnavailable`. A rotation and an upgrade never run at once on a cluster: whichever is
//! under way finishes first; asked for together from rest, the rotation goes first (a CA
//! nearing expiry is a deadline, a version is not).
//!
//! Owns: `status.certificates`, the rotation's log entry, the approvals of phases in
//! `approvePhases`, and the waits and events of the rotation.
//!
//! May use: `state`, `view`, `log`, `record`, `start`, `gates`, `member` (backoff),
//! `handover` (the switchover before the active restarts). Used by `choose`, `outcome` (what a
//! finished rotation step records) and the pipeline (`super`).

use std::collections::BTreeMap;

use crate::api::{
    CertificatesSpec, CertificatesStatus, LogResult, MemberRole, RestartPolicy, RotationPhase,
    StepAction, StepRecord, Timestamp, TrustParams,
};
use crate::plan::observe::Wake;
use crate::plan::software::{Software, same_software};
use crate::plan::stall::Stall;
use crate::plan::trust::{self, CaInput, CaView, MemberTrust, Options, Phase, short_id as short};

use super::state::{NewStep, Pass};
use super::{gates, handover, log, member, record, start, view};

/// Members named in a status list at most (the rest are counted).
const MAX_NAMED: usize = 16;

/// Before the steps in flight advance: an unusable CA stalls the cluster (nothing about
/// certificates is sent; upgrade steps in flight finish), and `status.certificates` follows
/// `spec.certificates`. False when the cluster must not start anything.
pub(super) fn check_ca(p: &mut Pass<'_>) -> bool {
    if p.certificates().is_none() {
        p.st.certificates = None;
        return true;
    }
    if let Some(stall) = declared_in_mesh(p) {
        let st = p.st.certificates.get_or_insert_with(Default::default);
        st.phase = Some("Invalid".into());
        p.found.stalled = Some(stall);
        return false;
    }
    let (reason, message) = match p.inp.ca {
        Some(CaInput::Ready(_)) => return true,
        Some(CaInput::Unusable { reason, message }) => (*reason, message.clone()),
        None => (
            "CASecretNotRead",
            "the CA Secret has not been read yet".to_string(),
        ),
    };
    let st = p.st.certificates.get_or_insert_with(Default::default);
    st.phase = Some("Invalid".into());
    p.found.stalled = Some(Stall::CaUnusable { reason, message });
    false
}

/// A Cluster of a mesh declares its own `spec.certificates` (the same as its mesh's is
/// harmless: a template may write both).
fn declared_in_mesh(p: &Pass<'_>) -> Option<Stall> {
    let (adm, own) = (p.inp.admission, p.spec().certificates.as_ref()?);
    let mesh = adm.mesh.as_ref()?;
    match &adm.rotation {
        Some(g) if &g.certificates == own => None,
        g => Some(Stall::CertificatesInMesh {
            mesh: mesh.clone(),
            mesh_declares: g.is_some(),
        }),
    }
}

/// The rotation's turn, once nothing stands in the way of new steps (`active` is the single
/// active member). True when upgrade steps may be chosen after it (no rotation is due, or it
/// waits for the rollout under way).
pub(super) fn rotate(p: &mut Pass<'_>, active: &str) -> bool {
    let (Some(certs), Some(CaInput::Ready(ca))) = (p.certificates(), p.inp.ca) else {
        return true;
    };
    let r = Rotation::observe(p, certs, ca);
    r.write_status(p);
    match r.due {
        Due::Nothing => {
            as_rotation(p, |p| renew(p, &r, active));
            // Renewal steps belong to the entry too: it closes once none runs.
            if !p.st.steps.iter().any(StepRecord::is_rotation) {
                close_entry(p, "the members present certificates of the target CA");
            }
            true
        }
        Due::Phase(phase) => {
            // A mesh that grants the rotation has judged the cluster at rest (it sees versions,
            // not components): follow it unless an upgrade step is in flight, or neither moves.
            let granted = p
                .inp
                .admission
                .rotation
                .as_ref()
                .is_some_and(|g| g.waiting.is_none())
                && !p.st.steps.iter().any(|s| !s.is_rotation());
            if upgrade_under_way(p) && !rotation_under_way(p, &r) && !granted {
                p.wait(format!(
                    "the CA rotation ({}) waits for the rollout to {} to finish",
                    phase.as_str(),
                    p.target.version
                ));
                return true;
            }
            if !rotation_under_way(p, &r) && !preconditions_hold(p) {
                return false;
            }
            let forced = forced_phase(p, &r, phase);
            // Said in the status, so that the mesh grants this cluster the rotation ahead of
            // the mesh's phase.
            if let (Some(f), Some(st)) = (forced, p.st.certificates.as_mut()) {
                st.forcing = Some(f.as_str().to_string());
            }
            if !mesh_allows(p, &r, forced.unwrap_or(phase), forced.is_some()) {
                return false;
            }
            as_rotation(p, |p| match forced {
                Some(f) => run_forced(p, &r, f, active),
                None => run_phase(p, &r, phase, active),
            });
            false
        }
    }
}

/// Run `f` under the rotation's admission: a cluster of a mesh that declares certificates
/// starts rotation steps on its mesh's rotation grant (checked before), not on the rollout's
/// admission; a pause holds both.
fn as_rotation<'a>(p: &mut Pass<'a>, f: impl FnOnce(&mut Pass<'a>)) {
    let may_start = p.may_start;
    if p.inp.admission.rotation.is_some() {
        p.may_start = !gates::paused(p);
    }
    f(p);
    p.may_start = may_start;
}

/// A cluster of a mesh that declares certificates runs a phase only on the mesh's grant: the
/// mesh rotates to the same CA, is in this phase, and lets this cluster use its sites now.
fn mesh_allows(p: &mut Pass<'_>, r: &Rotation<'_>, phase: RotationPhase, forced: bool) -> bool {
    let (Some(g), Some(mesh)) = (&p.inp.admission.rotation, &p.inp.admission.mesh) else {
        return true;
    };
    let why = if let Some(why) = grant_withheld(p, r) {
        why
    } else if !forced && g.phase.is_none_or(|m| phase > m) {
        format!(
            "phase {} waits until every cluster of mesh {mesh} has finished the phase before",
            phase.as_str()
        )
    } else {
        return true;
    };
    p.wait(why);
    false
}

/// Why the cluster's mesh does not let it start rotation steps (phases or renewals) now, if
/// it does not: it rotates to another CA, or it says why this cluster waits. None outside a
/// mesh that declares certificates.
fn grant_withheld(p: &Pass<'_>, r: &Rotation<'_>) -> Option<String> {
    let (Some(g), Some(mesh)) = (&p.inp.admission.rotation, &p.inp.admission.mesh) else {
        return None;
    };
    if g.target.as_deref() != Some(r.id.as_str()) {
        Some(format!(
            "mesh {mesh} has not started the rotation to {} yet",
            short(&r.id)
        ))
    } else {
        g.waiting.clone()
    }
}

/// What the rotation has to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    Phase(RotationPhase),
}

/// The rotation as observed in this pass.
struct Rotation<'a> {
    certs: &'a CertificatesSpec,
    ca: &'a CaView,
    members: Vec<MemberTrust<'a>>,
    assessment: trust::Assessment<'a>,
    due: Due,
    /// `targetCa` of the status.
    id: String,
    options: Options,
}

impl<'a> Rotation<'a> {
    fn observe(p: &mut Pass<'a>, certs: &'a CertificatesSpec, ca: &'a CaView) -> Self {
        let id = ca.id();
        // A new target: what was remembered for the old one no longer holds.
        let st = p.st.certificates.get_or_insert_with(Default::default);
        if st.target_ca.as_deref() != Some(id.as_str()) {
            *st = CertificatesStatus {
                target_ca: Some(id.clone()),
                ..Default::default()
            };
        }
        let chains = ca.chain_pairs();
        // A member that leaves takes no part in the rotation.
        let members: Vec<MemberTrust<'a>> = p
            .settled()
            .map(|m| MemberTrust::observed(m, p.obs(&m.name), &chains, p.busy(&m.name)))
            .collect();
        let options = Options {
            keep_old_trust: certs.keep_old_trust,
            per_site: certs.max_jobs_per_site.max(1),
        };
        let assessment = trust::assess(ca.target(), &members, options);
        let resign =
            certs.resign_data && p.st.certificates.as_ref().is_some_and(|c| c.resign_pending);
        let due = if !assessment.complete {
            Due::Phase(phase_of(assessment.phase))
        } else if resign && !all_resigned(p, &members) {
            Due::Phase(RotationPhase::ResignData)
        } else {
            Due::Nothing
        };
        if let Some(st) = p.st.certificates.as_mut() {
            // Re-signing is owed by a rotation that ran, not by adopting members on the CA.
            st.resign_pending = certs.resign_data && due != Due::Nothing;
        }
        Rotation {
            certs,
            ca,
            members,
            assessment,
            due,
            id,
            options,
        }
    }

    /// When certificates of the target are renewed, as of this pass.
    fn renewal(&self, p: &Pass<'_>) -> trust::Renewal {
        trust::Renewal {
            now: p.now(),
            before: self.certs.renew_before,
            issuer_not_after: self.ca.not_after,
        }
    }

    /// `status.certificates` from the observation (the remembered lists kept as they are).
    fn write_status(&self, p: &mut Pass<'_>) {
        let a = &self.assessment;
        let expires = self
            .members
            .iter()
            .filter_map(|m| m.report.and_then(|r| r.not_after))
            .min();
        let phase = match self.due {
            Due::Nothing => "Done",
            Due::Phase(ph) => ph.as_str(),
        };
        let sites: BTreeMap<String, String> = a
            .sites
            .iter()
            .map(|(site, (done, total))| {
                let name = if site.is_empty() { "-" } else { site };
                (name.to_string(), format!("{done}/{total}"))
            })
            .collect();
        let presenting_old = named(&a.presenting_old);
        let old_phase = p.st.certificates.as_ref().and_then(|c| c.phase.clone());
        let renewal = self.renewal(p);
        let Some(st) = p.st.certificates.as_mut() else {
            return;
        };
        st.phase = Some(phase.to_string());
        st.forcing = None;
        st.renewal_due.clear();
        st.sites = sites;
        st.presenting_old = presenting_old;
        st.expires = expires;
        // A member that presents a certificate of the target CA has restarted onto it, unless
        // that certificate is the one being renewed (the same CA; it is still due).
        let target = self.ca.target();
        let presenting_new: Vec<&str> = self
            .members
            .iter()
            .filter(|m| {
                !a.presenting_old.contains(&m.name)
                    && m.report.is_some_and(|rep| !renewal.due(&rep, target))
            })
            .map(|m| m.name)
            .collect();
        st.restart_pending
            .retain(|m| !presenting_new.contains(&m.as_str()));
        if old_phase.as_deref() != Some(phase) {
            let msg = match self.due {
                // First sight, already there: nothing was rotated.
                Due::Nothing if old_phase.is_none() => format!(
                    "every member is on CA {} already (adopted, nothing to rotate)",
                    short(&self.id)
                ),
                Due::Nothing => format!("CA rotation to {} complete", short(&self.id)),
                Due::Phase(ph) => format!(
                    "CA rotation to {}: phase {} ({})",
                    short(&self.id),
                    ph.as_str(),
                    describe_sites(&a.sites)
                ),
            };
            p.event(false, "RotationPhase", msg);
        }
    }
}

/// A member list the status remembers for the rotation (empty before it starts).
fn remembered(p: &Pass<'_>, list: fn(&CertificatesStatus) -> &Vec<String>) -> Vec<String> {
    p.st.certificates
        .as_ref()
        .map(list)
        .cloned()
        .unwrap_or_default()
}

fn phase_of(p: Phase) -> RotationPhase {
    match p {
        Phase::AddTrust => RotationPhase::AddTrust,
        Phase::Reissue => RotationPhase::Reissue,
        // `Done` with members unobserved: nothing is known to be left but the removal.
        Phase::RemoveOldTrust | Phase::Done => RotationPhase::RemoveOldTrust,
    }
}

fn all_resigned(p: &Pass<'_>, members: &[MemberTrust<'_>]) -> bool {
    let done = remembered(p, |c| &c.resigned);
    members.iter().all(|m| done.iter().any(|d| d == m.name))
}

fn named(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .take(MAX_NAMED)
        .map(|n| n.to_string())
        .collect();
    if names.len() > MAX_NAMED {
        out.push(format!("… {} more", names.len() - MAX_NAMED));
    }
    out
}

fn describe_sites(sites: &BTreeMap<&str, (u32, u32)>) -> String {
    sites
        .iter()
        .map(|(s, (d, t))| {
            let s = if s.is_empty() { "-" } else { s };
            format!("site {s} {d}/{t}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upgrade steps in flight, or a rollout part-way: some members on the target and some not,
/// or members on different software (a layered rollout in which nobody has every component on
/// the target yet).
fn upgrade_under_way(p: &Pass<'_>) -> bool {
    if p.st.steps.iter().any(|s| !s.is_rotation()) {
        return true;
    }
    let (mut on, mut off) = (false, false);
    let mut first: Option<Software> = None;
    for m in p.settled() {
        if view::at_target(p, m) {
            on = true;
        } else {
            off = true;
        }
        if let Some(sw) = view::software_of(p, m) {
            match &first {
                Some(f) if !same_software(f, &sw) => return true,
                Some(_) => {}
                None => first = Some(sw),
            }
        }
    }
    on && off
}

/// The rotation has started: a rotation step in flight, or a member past `AddTrust`.
fn rotation_under_way(p: &Pass<'_>, r: &Rotation<'_>) -> bool {
    p.st.steps.iter().any(StepRecord::is_rotation)
        || r.assessment.phase > Phase::AddTrust
        || matches!(r.due, Due::Phase(RotationPhase::ResignData))
        || r.members.iter().any(|m| {
            m.report
                .is_some_and(|rep| rep.trusted.contains(&r.ca.anchor))
        })
}

/// The procedure's precondition for starting a rotation: no member reports replication
/// conflicts (a diverged log must be resolved by a human before trust and identities move).
/// A rotation already under way is not held by it.
fn preconditions_hold(p: &mut Pass<'_>) -> bool {
    let conflicted: Vec<&str> = p
        .spec()
        .members
        .iter()
        .filter(|m| p.agent(&m.name).is_some_and(|a| a.conflicts > 0))
        .map(|m| m.name.as_str())
        .collect();
    if conflicted.is_empty() {
        return true;
    }
    p.wait(format!(
        "the CA rotation does not start while {} report replication conflicts",
        conflicted.join(", ")
    ));
    false
}

/// A phase later than the one due that a force intent runs now: given (its name, the same as
/// the phase's approval name, in the force intents) or acknowledged earlier, while some member
/// still needs it. Acknowledged once, with a warning event saying what breaks; while it runs,
/// the `RotationForced` condition says it again.
fn forced_phase(p: &mut Pass<'_>, r: &Rotation<'_>, due: RotationPhase) -> Option<RotationPhase> {
    // In a mesh, the phase not yet complete may be the mesh's (an earlier one than the
    // cluster's own): forcing the cluster's own phase then runs it ahead of the mesh.
    let due = match &p.inp.admission.rotation {
        Some(g) if g.target.as_deref() == Some(r.id.as_str()) => {
            g.phase.map_or(due, |m| m.min(due))
        }
        _ => due,
    };
    for f in RotationPhase::ALL.into_iter().rev().filter(|f| *f > due) {
        let name = phase_approval_name(p.inp.cluster.name, f, &r.id);
        let ack = format!("force:{name}");
        let given = p.inp.intents.force.iter().any(|x| x == &name);
        let acked = p.st.acknowledged.contains(&ack);
        if !given && !acked {
            continue;
        }
        if forced_members(p, r, f).is_empty() {
            continue;
        }
        let breaks = what_breaks(p, r, f);
        if !acked {
            record::acknowledge(p, ack);
            p.event(
                true,
                "PhaseForced",
                format!(
                    "rotation phase {} forced before phase {} is complete ({name}): {breaks}",
                    f.as_str(),
                    due.as_str()
                ),
            );
        }
        p.found.forced = Some(format!(
            "phase {} forced before phase {} is complete: {breaks}",
            f.as_str(),
            due.as_str()
        ));
        return Some(f);
    }
    None
}

/// The members a forced phase still acts on.
fn forced_members<'a>(p: &Pass<'_>, r: &Rotation<'a>, f: RotationPhase) -> Vec<&'a str> {
    let t = r.ca.target();
    let mut out: Vec<&MemberTrust<'a>> = r
        .members
        .iter()
        .filter(|m| {
            let Some(rep) = m.report.as_ref() else {
                return false;
            };
            match f {
                RotationPhase::AddTrust => !rep.trusted.iter().any(|x| x.as_str() == t.anchor),
                RotationPhase::Reissue => rep.issuer != Some(t.issuer),
                RotationPhase::RemoveOldTrust => {
                    !r.certs.keep_old_trust && rep.trusted.iter().any(|x| *x != t.anchor)
                }
                RotationPhase::ResignData => {
                    r.certs.resign_data
                        && !remembered(p, |c| &c.resigned).iter().any(|d| d == m.name)
                }
            }
        })
        .collect();
    out.sort_by_key(|m| (m.rank, m.name));
    out.into_iter().map(|m| m.name).collect()
}

/// What a phase run early breaks, named member by member.
fn what_breaks(p: &Pass<'_>, r: &Rotation<'_>, f: RotationPhase) -> String {
    let t = r.ca.target();
    let list = |names: Vec<&str>| named(&names).join(", ");
    match f {
        RotationPhase::AddTrust => "nothing (it is the first phase)".into(),
        RotationPhase::Reissue => {
            let untrusting: Vec<&str> = r
                .members
                .iter()
                .filter(|m| {
                    m.report
                        .is_some_and(|rep| !rep.trusted.iter().any(|x| x.as_str() == t.anchor))
                })
                .map(|m| m.name)
                .collect();
            let mut out = if untrusting.is_empty() {
                "every member already trusts the new CA".to_string()
            } else {
                format!(
                    "{} do not trust the new CA yet and refuse the certificates of re-issued members (replication and client connections between them fail)",
                    list(untrusting)
                )
            };
            if let Some(mesh) = &p.inp.admission.mesh {
                out.push_str(&format!(
                    "; members of other clusters of mesh {mesh} that do not trust the new CA yet refuse them too"
                ));
            }
            out
        }
        RotationPhase::RemoveOldTrust => {
            let old = r.assessment.presenting_old.clone();
            let clients = presenting_old_to(p, r);
            let mut out = if old.is_empty() {
                "no member presents a certificate of the old CA".to_string()
            } else {
                format!(
                    "{} still present certificates of the old CA and lose contact with every member that stops trusting it, until they are re-issued",
                    list(old)
                )
            };
            if !clients.is_empty() {
                out.push_str(&format!(
                    "; peers or clients presenting old-CA certificates to {} are refused",
                    list(clients)
                ));
            }
            if let Some(mesh) = &p.inp.admission.mesh {
                out.push_str(&format!(
                    "; members of other clusters of mesh {mesh} still on the old CA lose contact too"
                ));
            }
            out
        }
        RotationPhase::ResignData => {
            "data is re-signed before every member left the old CA; members that still trust it keep accepting data signed under the old keys".into()
        }
    }
}

/// Run a forced phase on the members that still need it (per-site slots, backoff and the
/// restart gates still hold; the phase's own observation gates do not).
fn run_forced(p: &mut Pass<'_>, r: &Rotation<'_>, f: RotationPhase, active: &str) {
    let needers = forced_members(p, r, f);
    let next = per_site_slots(p, r, &needers);
    start_phase(p, r, f, &next, true, active);
    p.wait(format!(
        "rotating the CA to {}: phase {} (forced) on {}",
        short(&r.id),
        f.as_str(),
        named(&needers).join(", ")
    ));
}

/// The approval a phase in `approvePhases` waits for: `rotation/<cluster>/<phase>@<ca>`.
pub fn phase_approval_name(cluster: &str, phase: RotationPhase, ca_id: &str) -> String {
    format!("rotation/{cluster}/{}@{}", phase.as_str(), short(ca_id))
}

/// Approved (now or earlier): a phase in `approvePhases` starts only then.
fn approved(p: &mut Pass<'_>, r: &Rotation<'_>, phase: RotationPhase) -> bool {
    let id = r.id.as_str();
    if !r.certs.approve_phases.contains(&phase) {
        return true;
    }
    let name = phase_approval_name(p.inp.cluster.name, phase, id);
    let ack = format!("approve:{name}");
    if p.st.acknowledged.contains(&ack) {
        return true;
    }
    if !p.inp.intents.approve.iter().any(|a| a == &name) {
        p.wait(format!(
            "phase {} waits for approval {name}",
            phase.as_str()
        ));
        p.found.awaiting = Some(name);
        return false;
    }
    record::acknowledge(p, ack);
    p.event(false, "Approved", format!("rotation phase {name} approved"));
    true
}

fn params(ca: &CaView, keep: Vec<String>) -> TrustParams {
    TrustParams {
        anchor: ca.anchor.clone(),
        issuer: ca.issuer.clone(),
        keep,
    }
}

/// Start what `phase` allows now. What it waits for comes first among the waits (the status
/// message), then where the rotation stands.
fn run_phase(p: &mut Pass<'_>, r: &Rotation<'_>, phase: RotationPhase, active: &str) {
    let next = r.assessment.next.clone();
    start_phase(p, r, phase, &next, false, active);
    p.wait(format!(
        "rotating the CA to {}: phase {} ({})",
        short(&r.id),
        phase.as_str(),
        describe_sites(&r.assessment.sites)
    ));
}

/// Start the steps of `phase` for the members `next` picked. `forced`: a force intent runs
/// the phase before the one before it is complete (its own gates no longer hold it).
fn start_phase<'a>(
    p: &mut Pass<'_>,
    r: &Rotation<'a>,
    phase: RotationPhase,
    next: &[&'a str],
    forced: bool,
    active: &str,
) {
    let ca = r.ca;
    if !r.assessment.unobserved.is_empty() {
        let names = r.assessment.unobserved.join(", ");
        p.wait(format!("waiting for {names} to report their trust"));
        p.wake = p.wake.min(Wake::Busy);
    }
    // A forced phase was asked for by a human: it needs no approval of its own.
    if !forced && !approved(p, r, phase) {
        return;
    }
    match phase {
        RotationPhase::AddTrust => {
            for &name in next {
                let Some(m) = r.members.iter().find(|m| m.name == name) else {
                    continue;
                };
                if member::in_backoff(p, name) {
                    continue;
                }
                let keep: Vec<String> = m
                    .report
                    .map(|rep| {
                        rep.trusted
                            .iter()
                            .filter(|t| **t != ca.anchor)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let mut n = NewStep::on(StepAction::InstallTrust, name);
                n.message = format!(
                    "{name} trusts the new CA {} beside its own",
                    short(&ca.anchor)
                );
                n.trust = Some(params(ca, keep));
                start::start(p, n);
            }
        }
        RotationPhase::Reissue => reissue(p, r, next, active),
        RotationPhase::RemoveOldTrust => {
            let holding = presenting_old_to(p, r);
            if !holding.is_empty() && !forced {
                p.wait(format!(
                    "certificates of another CA are still presented to {} (within clientGrace {}); the old CA stays trusted",
                    holding.join(", "),
                    r.certs.client_grace
                ));
                p.wake = p.wake.min(Wake::At(p.now().plus(r.certs.client_grace)));
                return;
            }
            for &name in next {
                if member::in_backoff(p, name) {
                    continue;
                }
                let mut n = NewStep::on(StepAction::InstallTrust, name);
                n.message = format!("{name} stops trusting every CA but {}", short(&ca.anchor));
                n.trust = Some(params(ca, vec![ca.anchor.clone()]));
                start::start(p, n);
            }
        }
        RotationPhase::ResignData => {
            let done = remembered(p, |c| &c.resigned);
            let todo: Vec<&str> = r
                .members
                .iter()
                .filter(|m| !done.iter().any(|d| d == m.name))
                .map(|m| m.name)
                .collect();
            for name in per_site_slots(p, r, &todo) {
                let mut n = NewStep::on(StepAction::ResignData, name);
                n.message = format!("{name} re-signs its stored data with the new keys");
                n.trust = Some(params(ca, Vec::new()));
                start::start(p, n);
            }
        }
    }
}

/// Members to which a peer or client presented a certificate of another issuer than the
/// target chain's on a connection open now or within `clientGrace`: dropping the old CA
/// would cut those peers off.
fn presenting_old_to<'a>(p: &Pass<'a>, r: &Rotation<'a>) -> Vec<&'a str> {
    let since = Timestamp(
        p.now()
            .millis()
            .saturating_sub(r.certs.client_grace.millis() as i64),
    );
    let new: Vec<&str> =
        r.ca.chains
            .iter()
            .map(|(issuer, _)| issuer.as_str())
            .collect();
    r.members
        .iter()
        .filter(|m| {
            p.agent(m.name).is_some_and(|a| {
                a.tls.presented.iter().any(|x| {
                    !new.contains(&x.issuer.as_str()) && (x.open > 0 || x.last_seen >= since)
                })
            })
        })
        .map(|m| m.name)
        .collect()
}

/// Of `candidates` (in order), those that fit the per-site job slots now, not in backoff.
fn per_site_slots<'a>(p: &mut Pass<'_>, r: &Rotation<'a>, candidates: &[&'a str]) -> Vec<&'a str> {
    let mut used: BTreeMap<&str, u32> = BTreeMap::new();
    for m in &r.members {
        if m.busy {
            *used.entry(m.site).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for &name in candidates {
        let Some(m) = r.members.iter().find(|m| m.name == name) else {
            continue;
        };
        if m.busy || member::in_backoff(p, name) {
            continue;
        }
        let n = used.entry(m.site).or_default();
        if *n < r.options.per_site {
            *n += 1;
            out.push(name);
        }
    }
    out
}

/// Phase 2 (and renewals) for the members `next` picked: stage a certificate of the new
/// issuer, then the restart that presents it.
fn reissue(p: &mut Pass<'_>, r: &Rotation<'_>, next: &[&str], active: &str) {
    let ca = r.ca;
    let pending = remembered(p, |c| &c.restart_pending);
    let mut manual = Vec::new();
    for &name in next {
        if member::in_backoff(p, name) {
            continue;
        }
        if !pending.iter().any(|m| m == name) {
            let mut n = NewStep::on(StepAction::InstallCertificate, name);
            n.message = format!(
                "{name} gets a certificate from {} (presented after its restart)",
                short(&ca.issuer)
            );
            n.trust = Some(params(ca, Vec::new()));
            start::start(p, n);
            continue;
        }
        if r.certs.restart == RestartPolicy::Manual {
            manual.push(name);
            continue;
        }
        if name == active {
            restart_active(p, ca, name);
            continue;
        }
        if !gates::disruption_allowed_for_rotation(p) {
            continue;
        }
        let mut n = NewStep::on(StepAction::Restart, name);
        n.message = format!("{name} restarts to present its new certificate");
        n.trust = Some(params(ca, Vec::new()));
        start::start(p, n);
    }
    if !manual.is_empty() {
        p.wait(format!(
            "restart pending on {} (restart: Manual): restart them; each counts once it presents its new certificate",
            manual.join(", ")
        ));
    }
}

/// The active restarts only after a switchover to a member that already presents a
/// certificate of the new issuer and is in sync; alone, only with `allowOutage`.
fn restart_active(p: &mut Pass<'_>, ca: &CaView, active: &str) {
    let target = p.spec().members.iter().find(|m| {
        m.name != active
            && !p.busy(&m.name)
            && view::in_sync(p, &m.name)
            && p.agent(&m.name).is_some_and(|a| {
                matches!(
                    a.role,
                    MemberRole::Standby | MemberRole::ForcedStandby | MemberRole::Spare
                ) && a
                    .tls
                    .certificate
                    .as_ref()
                    .and_then(|c| c.issuer_fingerprint.as_deref())
                    == Some(ca.issuer.as_str())
            })
    });
    if let Some(to) = target {
        let to = to.name.clone();
        handover::request_switchover_with(
            p,
            active,
            &to,
            "hand over before the active restarts onto its new certificate",
            Some(params(ca, Vec::new())),
        );
        return;
    }
    if p.spec().members.len() > 1 {
        p.wait(format!(
            "{active} restarts after a switchover to a member that presents a new certificate and is in sync"
        ));
        return;
    }
    if !gates::allow_outage(p) {
        p.found.stalled = Some(Stall::RestartNeedsOutage {
            member: active.to_string(),
        });
        return;
    }
    if gates::disruption_allowed_for_rotation(p) {
        let mut n = NewStep::on(StepAction::Restart, active);
        n.message =
            format!("{active} restarts in place to present its new certificate (allowOutage)");
        n.trust = Some(params(ca, Vec::new()));
        start::start(p, n);
    }
}

/// Certificates of the target CA that expire within `renewBefore`: the same install and
/// restart steps, without a trust phase.
fn renew(p: &mut Pass<'_>, r: &Rotation<'_>, active: &str) {
    let ca = r.ca;
    let pending = remembered(p, |c| &c.restart_pending);
    let mut due = trust::renewals(ca.target(), &r.members, r.renewal(p), r.options);
    // A renewed certificate waiting for its restart is still the old one in the report.
    for m in &pending {
        if !due.contains(&m.as_str())
            && let Some(x) = r.members.iter().find(|x| x.name == m)
            && !x.busy
        {
            due.push(x.name);
        }
    }
    if due.is_empty() {
        return;
    }
    if let Some(st) = p.st.certificates.as_mut() {
        st.renewal_due = named(&due);
    }
    // In a mesh, renewals start on the mesh's grant too (one job per site across the mesh);
    // steps in flight finish.
    if !p.st.steps.iter().any(StepRecord::is_rotation)
        && let Some(why) = grant_withheld(p, r)
    {
        p.wait(format!("renewal of {} due: {why}", named(&due).join(", ")));
        return;
    }
    p.wait(format!("renewing the certificates of {}", due.join(", ")));
    reissue(p, r, &due, active);
}

/// Close the rotation's log entry when it is over.
fn close_entry(p: &mut Pass<'_>, msg: &str) {
    let now = p.now();
    if let Some(id) = log::rotation(p, false) {
        p.log().close(id, LogResult::Succeeded, msg, now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::started;
    use super::*;
    use crate::api::ClusterPhase;
    use crate::fixtures::cluster::{ClusterBuilder, NOW, observed, root_ca, step};
    use crate::plan::ClusterPlan;

    use crate::fixtures::{NEW_CA as NEW, OLD_CA as OLD, assert_says, in_a_year as far};

    const DAY: i64 = 86_400_000;

    /// Members a (active) and b in site x, c in site y, all on 1.0.0, trusting and presenting
    /// the old CA; the target is the new CA.
    fn rotating() -> ClusterBuilder {
        ClusterBuilder::new("c")
            .members(["a", "b", "c"])
            .site("a", "x")
            .site("b", "x")
            .site("c", "y")
            .version("1.0.0")
            .running("1.0.0")
            .trust_everywhere(&[OLD], OLD, far())
            .certificates(root_ca(NEW, far()))
    }

    /// Member `name` as observed in `b`'s default shape (active when `active`), trusting
    /// `trusted` and presenting a certificate of `issuer`.
    fn member(
        name: &str,
        active: bool,
        trusted: &[&str],
        issuer: &str,
    ) -> crate::fixtures::cluster::Observed {
        let o = observed(name)
            .version("1.0.0")
            .trusts(trusted)
            .presents(issuer, far());
        if active { o.active() } else { o }
    }

    /// What the last status remembers of the rotation to NEW, changed by `f`.
    fn remembered(st: &mut crate::api::ClusterStatus, f: impl FnOnce(&mut CertificatesStatus)) {
        let mut c = CertificatesStatus {
            target_ca: Some(NEW.into()),
            ..Default::default()
        };
        f(&mut c);
        st.certificates = Some(c);
    }

    /// A step of `action` was started.
    fn starts(plan: &ClusterPlan, action: StepAction) -> bool {
        plan.status.steps.iter().any(|s| s.action == action)
    }

    fn assert_not_started(plan: &ClusterPlan, action: StepAction) {
        assert!(!starts(plan, action), "{action:?} in {:?}", started(plan));
    }

    /// Upgrade steps start and no rotation step does.
    #[track_caller]
    fn the_rollout_goes_on_alone(plan: &ClusterPlan) {
        assert_not_started(plan, StepAction::InstallTrust);
        assert!(!started(plan).is_empty(), "the rollout goes on");
    }

    fn certs(plan: &ClusterPlan) -> CertificatesStatus {
        plan.status.certificates.clone().unwrap_or_default()
    }

    /// `b` with two layers (`os`, then `app`), every member on the old CA, and b's os ahead on
    /// 2.0.0 (held): a layered rollout part-way, nobody with every component on a target.
    fn layered(b: ClusterBuilder) -> ClusterBuilder {
        let comp = |name: &str, after: &[&str]| crate::api::ComponentSpec {
            name: name.into(),
            after: after.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        let on = |o: crate::fixtures::cluster::Observed, os: &str| {
            o.component("os", os).component("app", "1.0.0")
        };
        b.component(comp("os", &[]))
            .component(comp("app", &["os"]))
            .upgrade(|u| u.preflight = false)
            .observe(on(member("a", true, &[OLD], OLD), "1.0.0"))
            .observe(on(member("b", false, &[OLD], OLD).held(), "2.0.0"))
            .observe(on(member("c", false, &[OLD], OLD), "1.0.0"))
    }

    /// `rotating()` as a cluster of mesh `m` that declares the certificates (and not the
    /// cluster), with the grant `f` shapes (admitted in AddTrust for NEW by default). The mesh
    /// rolls nothing out: the cluster is not admitted for upgrades.
    fn in_mesh(f: impl FnOnce(&mut crate::plan::RotationGrant)) -> ClusterBuilder {
        let b = rotating();
        let certificates = b.spec_certificates().expect("rotating() declares them");
        let mut grant = crate::plan::RotationGrant {
            certificates,
            target: Some(NEW.into()),
            phase: Some(RotationPhase::AddTrust),
            waiting: None,
        };
        f(&mut grant);
        b.certificate_options_clear()
            .admission(crate::plan::Admission {
                mesh_version: Some("1.0.0".into()),
                admitted: false,
                reason: Some("mesh m: waiting for its turn (see its status)".into()),
                mesh: Some("m".into()),
                rotation: Some(grant),
                ..Default::default()
            })
    }

    #[test]
    fn a_cluster_of_a_mesh_rotates_on_the_mesh_grant_not_on_the_rollout_admission() {
        let plan = in_mesh(|_| {}).build().plan();
        assert_eq!(
            started(&plan),
            [
                (StepAction::InstallTrust, "b".to_string()),
                (StepAction::InstallTrust, "c".to_string())
            ],
            "admitted for the rotation, not for a rollout"
        );
        assert_eq!(certs(&plan).phase.as_deref(), Some("AddTrust"));
        // Not granted: the mesh's reason, nothing started, the phase still reported.
        let plan =
            in_mesh(|g| g.waiting = Some("mesh m: phase AddTrust: waiting for a site".into()))
                .build()
                .plan();
        assert!(plan.status.steps.is_empty(), "{:?}", started(&plan));
        assert_eq!(certs(&plan).phase.as_deref(), Some("AddTrust"));
        assert_eq!(
            plan.status.message.as_deref(),
            Some("mesh m: phase AddTrust: waiting for a site")
        );
        // Paused: nothing either.
        let plan = in_mesh(|_| {}).paused().build().plan();
        assert!(plan.status.steps.is_empty());
    }

    #[test]
    fn a_cluster_of_a_mesh_follows_the_grant_when_its_layers_differ_but_nothing_upgrades() {
        // Members on different software (a layered rollout part-way, b's os ahead): alone the
        // cluster waits for its rollout, which its mesh (rotating first, seeing versions only)
        // does not admit; with the grant it rotates.
        let plan = layered(in_mesh(|_| {})).build().plan();
        assert!(
            starts(&plan, StepAction::InstallTrust),
            "{:?}",
            started(&plan)
        );
        // Not granted: it waits, as a standalone cluster waits for its rollout.
        let plan = layered(in_mesh(|g| g.waiting = Some("mesh m: wait".into())))
            .build()
            .plan();
        assert_not_started(&plan, StepAction::InstallTrust);
        // An upgrade step in flight holds it even with the grant.
        let plan = layered(in_mesh(|_| {}))
            .step(step(StepAction::Backup, "c", NOW))
            .build()
            .plan();
        assert_not_started(&plan, StepAction::InstallTrust);
    }

    #[test]
    fn a_cluster_of_a_mesh_never_runs_a_phase_the_mesh_has_not_reached() {
        // Every member trusts NEW: the cluster is in Reissue, the mesh still in AddTrust.
        let plan = in_mesh(|_| {})
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], OLD))
            .observe(member("c", false, &[OLD, NEW], OLD))
            .build()
            .plan();
        assert_eq!(certs(&plan).phase.as_deref(), Some("Reissue"));
        assert_not_started(&plan, StepAction::InstallCertificate);
        assert_says(
            plan.status.message.as_deref(),
            "phase Reissue waits until every cluster of mesh m",
        );
        assert_eq!(certs(&plan).forcing, None);
        // Forced: the status says so (the mesh grants a forcing cluster ahead of its phase);
        // not granted yet, nothing starts; granted, the phase runs.
        let all_trust = |b: ClusterBuilder| {
            b.observe(member("a", true, &[OLD, NEW], OLD))
                .observe(member("b", false, &[OLD, NEW], OLD))
                .observe(member("c", false, &[OLD, NEW], OLD))
                .force("rotation/c/RemoveOldTrust@4e44e44e44e4")
        };
        let waiting = |g: &mut crate::plan::RotationGrant| {
            g.waiting = Some("mesh m: phase AddTrust runs on the other clusters first".into())
        };
        let plan = all_trust(in_mesh(waiting)).build().plan();
        assert_eq!(certs(&plan).forcing.as_deref(), Some("RemoveOldTrust"));
        assert!(plan.status.steps.is_empty(), "{:?}", started(&plan));
        let plan = all_trust(in_mesh(|_| {})).build().plan();
        assert_eq!(certs(&plan).forcing.as_deref(), Some("RemoveOldTrust"));
        assert!(
            starts(&plan, StepAction::InstallTrust),
            "{:?}",
            started(&plan)
        );
        // Its own phase (Reissue) held back by the mesh's (AddTrust) can be forced too.
        let plan = in_mesh(|_| {})
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], OLD))
            .observe(member("c", false, &[OLD, NEW], OLD))
            .force("rotation/c/Reissue@4e44e44e44e4")
            .build()
            .plan();
        assert_eq!(certs(&plan).forcing.as_deref(), Some("Reissue"));
        assert!(
            starts(&plan, StepAction::InstallCertificate),
            "{:?}",
            started(&plan)
        );
        let warned = plan.events.iter().find(|e| e.reason == "PhaseForced");
        assert!(
            warned.is_some_and(|e| e.message.contains("before phase AddTrust is complete")
                && e.message.contains("members of other clusters of mesh m")),
            "{warned:?}"
        );
        // The mesh rotates to another CA (it has not read the new Secret yet): wait.
        let plan = in_mesh(|g| g.target = Some(OLD.into())).build().plan();
        assert!(plan.status.steps.is_empty());
        assert_eq!(
            plan.status.message.as_deref(),
            Some("mesh m has not started the rotation to 4e44e44e44e4 yet")
        );
    }

    #[test]
    fn a_cluster_of_a_mesh_may_not_declare_other_certificates() {
        // Its own declaration beside the mesh's, different: stalled, nothing sent.
        let plan = in_mesh(|g| g.certificates.keep_old_trust = true)
            .certificates(root_ca(NEW, far()))
            .build()
            .plan();
        assert_eq!(plan.status.phase, ClusterPhase::Stalled);
        assert!(plan.actions.is_empty());
        let stalled = plan.status.conditions.iter().find(|c| c.type_ == "Stalled");
        assert_eq!(
            stalled.map(|c| c.reason.as_str()),
            Some("CertificatesInMesh")
        );
        // The same declaration as the mesh's is harmless.
        let plan = in_mesh(|_| {})
            .certificates(root_ca(NEW, far()))
            .build()
            .plan();
        assert!(starts(&plan, StepAction::InstallTrust));
        // A mesh without certificates: the cluster's own is refused too.
        let plan = rotating()
            .admission(crate::plan::Admission {
                mesh: Some("m".into()),
                mesh_version: Some("1.0.0".into()),
                admitted: true,
                ..Default::default()
            })
            .build()
            .plan();
        let stalled = plan.status.conditions.iter().find(|c| c.type_ == "Stalled");
        assert!(
            stalled.is_some_and(|c| c.reason == "CertificatesInMesh"
                && c.message.contains("declare it on the Mesh")),
            "{stalled:?}"
        );
    }

    /// Every member trusts both CAs and presents the old one: Reissue is due.
    fn reissue_due() -> ClusterBuilder {
        rotating()
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], OLD))
            .observe(member("c", false, &[OLD, NEW], OLD))
    }

    const FORCE_REMOVAL: &str = "rotation/c/RemoveOldTrust@4e44e44e44e4";

    #[test]
    fn a_forced_phase_runs_early_once_and_says_what_breaks() {
        // Unforced: Reissue stages certificates.
        let plan = reissue_due().build().plan();
        assert!(starts(&plan, StepAction::InstallCertificate));
        // Forced removal of the old CA before anyone is re-issued.
        let plan = reissue_due().force(FORCE_REMOVAL).build().plan();
        assert_not_started(&plan, StepAction::InstallCertificate);
        assert_eq!(
            started(&plan),
            [
                (StepAction::InstallTrust, "b".to_string()),
                (StepAction::InstallTrust, "c".to_string())
            ],
            "one job per site, standbys first"
        );
        let keep = plan.status.steps[0].trust.clone().unwrap_or_default().keep;
        assert_eq!(keep, [NEW.to_string()], "only the new root stays");
        assert!(
            plan.status
                .acknowledged
                .contains(&format!("force:{FORCE_REMOVAL}"))
        );
        let warned: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.warning && e.reason == "PhaseForced")
            .collect();
        assert_eq!(warned.len(), 1, "{:?}", plan.events);
        assert!(
            warned[0]
                .message
                .contains("a, b, c still present certificates of the old CA and lose contact"),
            "{}",
            warned[0].message
        );
        let forced = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::api::condition::ROTATION_FORCED);
        assert!(
            forced.is_some_and(|c| c.status == "True"
                && c.reason == "PhaseForced"
                && c.message
                    .starts_with("phase RemoveOldTrust forced before phase Reissue")),
            "{forced:?}"
        );
        // The next pass (intent gone, acknowledgement kept): b and c done, a is left; no
        // second warning.
        let st = plan.status.clone();
        let plan = rotating()
            .status(st)
            .with_status(|st| st.steps.clear())
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[NEW], OLD))
            .observe(member("c", false, &[NEW], OLD))
            .build()
            .plan();
        assert_eq!(
            started(&plan),
            [(StepAction::InstallTrust, "a".to_string())]
        );
        assert!(!plan.events.iter().any(|e| e.reason == "PhaseForced"));
        // Nobody trusts the old CA any more: the force is over, Reissue goes on and the
        // condition turns False.
        let st = plan.status.clone();
        let plan = rotating()
            .status(st)
            .with_status(|st| st.steps.clear())
            .observe(member("a", true, &[NEW], OLD))
            .observe(member("b", false, &[NEW], OLD))
            .observe(member("c", false, &[NEW], OLD))
            .build()
            .plan();
        assert!(starts(&plan, StepAction::InstallCertificate));
        let forced = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::api::condition::ROTATION_FORCED);
        assert!(forced.is_some_and(|c| c.status == "False"), "{forced:?}");
    }

    #[test]
    fn a_force_for_another_ca_or_a_phase_not_ahead_changes_nothing() {
        let plain = reissue_due().build().plan();
        for name in [
            "rotation/c/RemoveOldTrust@0ld0ld0ld0ld",
            "rotation/c/AddTrust@4e44e44e44e4",
            "rotation/other/RemoveOldTrust@4e44e44e44e4",
        ] {
            let plan = reissue_due().force(name).build().plan();
            assert_eq!(started(&plan), started(&plain), "{name}");
            assert!(plan.status.acknowledged.is_empty(), "{name}");
            assert!(
                !plan
                    .status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == crate::api::condition::ROTATION_FORCED),
                "{name}"
            );
        }
    }

    #[test]
    fn a_forced_reissue_names_the_members_that_refuse_the_new_certificates() {
        // c does not trust the new CA yet: AddTrust is due.
        let forced = |b: ClusterBuilder| {
            b.observe(member("a", true, &[OLD, NEW], OLD))
                .observe(member("b", false, &[OLD, NEW], OLD))
                .observe(member("c", false, &[OLD], OLD))
                .force("rotation/c/Reissue@4e44e44e44e4")
                .build()
                .plan()
        };
        let plan = forced(rotating());
        assert!(starts(&plan, StepAction::InstallCertificate));
        let warned = plan.events.iter().find(|e| e.reason == "PhaseForced");
        assert!(
            warned.is_some_and(|e| e.message.contains("c do not trust the new CA yet")),
            "{warned:?}"
        );
        assert!(
            warned.is_some_and(|e| !e.message.contains("other clusters")),
            "{warned:?}"
        );
        // In a mesh, members of the other clusters that do not trust the new CA refuse the
        // re-issued certificates too (the rotation soak's RotationForced found it unsaid).
        let plan = forced(in_mesh(|_| {}));
        let warned = plan.events.iter().find(|e| e.reason == "PhaseForced");
        assert!(
            warned.is_some_and(|e| e
                .message
                .contains("members of other clusters of mesh m that do not trust the new CA")),
            "{warned:?}"
        );
    }

    #[test]
    fn without_certificates_nothing_rotates_and_no_status_is_kept() {
        let plan = ClusterBuilder::pair("1.0.0")
            .running("1.0.0")
            .build()
            .plan();
        assert!(plan.status.certificates.is_none());
        assert_eq!(plan.status.phase, ClusterPhase::Ready);
    }

    #[test]
    fn an_unusable_ca_stalls_with_its_reason_and_sends_nothing() {
        let plan = rotating()
            .certificates(CaInput::Unusable {
                reason: "CAExpired",
                message: "CA certificate new expired at 2026-01-01".into(),
            })
            .build()
            .plan();
        assert_eq!(plan.status.phase, ClusterPhase::Stalled);
        assert!(plan.actions.is_empty());
        let stalled = plan.status.conditions.iter().find(|c| c.type_ == "Stalled");
        assert_eq!(stalled.map(|c| c.reason.as_str()), Some("CAExpired"));
        assert_eq!(certs(&plan).phase.as_deref(), Some("Invalid"));
    }

    #[test]
    fn add_trust_goes_one_job_per_site_and_keeps_the_old_root() {
        let plan = rotating().build().plan();
        // Standbys first within a site: b in x (a is active), c in y.
        assert_eq!(
            started(&plan),
            [
                (StepAction::InstallTrust, "b".to_string()),
                (StepAction::InstallTrust, "c".to_string())
            ]
        );
        let t = plan.status.steps[0].trust.clone().unwrap_or_default();
        assert_eq!(
            (t.anchor.as_str(), t.keep.as_slice()),
            (NEW, &[OLD.to_string()][..])
        );
        let st = certs(&plan);
        assert_eq!(st.phase.as_deref(), Some("AddTrust"));
        assert_eq!(st.sites.get("x").map(String::as_str), Some("0/2"));
        assert_eq!(st.presenting_old, ["a", "b", "c"]);
        assert!(plan.events.iter().any(|e| e.reason == "RotationPhase"));
    }

    #[test]
    fn nobody_is_reissued_while_one_member_does_not_trust_the_new_root() {
        let plan = rotating()
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], OLD))
            .build()
            .plan();
        assert_eq!(
            started(&plan),
            [(StepAction::InstallTrust, "c".to_string())]
        );
    }

    #[test]
    fn an_unobserved_member_holds_the_reissue_gate() {
        let plan = rotating()
            .trust_everywhere(&[OLD, NEW], OLD, far())
            .observe(crate::fixtures::cluster::observed("c").version("1.0.0"))
            .build()
            .plan();
        assert_not_started(&plan, StepAction::InstallCertificate);
        assert!(
            plan.status
                .message
                .unwrap_or_default()
                .contains("report their trust")
        );
    }

    #[test]
    fn reissue_stages_standbys_first_then_restarts_them() {
        let both = rotating().trust_everywhere(&[OLD, NEW], OLD, far());
        let plan = both.clone().build().plan();
        assert_eq!(
            started(&plan),
            [
                (StepAction::InstallCertificate, "b".to_string()),
                (StepAction::InstallCertificate, "c".to_string())
            ]
        );
        // b's certificate is staged: its restart is next; the active waits its turn.
        let plan = both
            .with_status(|st| remembered(st, |c| c.restart_pending = vec!["b".into()]))
            .build()
            .plan();
        assert!(started(&plan).contains(&(StepAction::Restart, "b".to_string())));
        assert!(!started(&plan).iter().any(|(_, m)| m == "a"));
    }

    #[test]
    fn the_active_restarts_only_after_a_switchover_to_a_member_presenting_the_new_ca() {
        let plan = rotating()
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], NEW))
            .observe(member("c", false, &[OLD, NEW], NEW))
            .with_status(|st| remembered(st, |c| c.restart_pending = vec!["a".into()]))
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Switchover, "b".to_string())]);
        let s = &plan.status.steps[0];
        assert_eq!(s.from.as_deref(), Some("a"));
        assert!(s.trust.is_some(), "the switchover is one of the rotation's");
    }

    #[test]
    fn manual_restarts_wait_for_a_human_and_count_once_the_new_certificate_shows() {
        let pending = |b: ClusterBuilder| {
            b.certificate_options(|c| c.restart = RestartPolicy::Manual)
                .with_status(|st| remembered(st, |c| c.restart_pending = vec!["b".into()]))
        };
        let both = rotating().trust_everywhere(&[OLD, NEW], OLD, far());
        let plan = pending(both.clone()).build().plan();
        assert!(!starts(&plan, StepAction::Restart));
        assert_eq!(certs(&plan).restart_pending, ["b"]);
        // With nothing else to do, the message says what the rotation waits for.
        let idle = pending(
            both.clone()
                .certificate_options(|c| c.max_jobs_per_site = 1),
        )
        .site("c", "x")
        .build()
        .plan();
        let message = idle.status.message.clone().unwrap_or_default();
        assert!(message.contains("restart pending on b"), "{message}");
        // A human restarted b: it presents the new certificate and leaves the list.
        let plan = pending(both.observe(member("b", false, &[OLD, NEW], NEW)))
            .build()
            .plan();
        assert!(certs(&plan).restart_pending.is_empty());
    }

    #[test]
    fn old_trust_goes_only_once_everyone_presents_the_new_ca_and_stays_with_keep_old_trust() {
        let done = rotating().trust_everywhere(&[OLD, NEW], NEW, far());
        let plan = done.clone().build().plan();
        let t = plan
            .status
            .steps
            .first()
            .and_then(|s| s.trust.clone())
            .unwrap_or_default();
        assert_eq!(plan.status.steps[0].action, StepAction::InstallTrust);
        assert_eq!(t.keep, [NEW.to_string()]);
        let kept = done
            .certificate_options(|c| c.keep_old_trust = true)
            .build()
            .plan();
        assert!(started(&kept).is_empty(), "{:?}", started(&kept));
        assert_eq!(certs(&kept).phase.as_deref(), Some("Done"));
    }

    #[test]
    fn old_trust_stays_while_a_client_presents_an_old_certificate_open_or_within_the_grace() {
        let done = || rotating().trust_everywhere(&[OLD, NEW], NEW, far());
        let with_client = |open: u32, at: Timestamp| {
            done()
                .observe(member("a", true, &[OLD, NEW], NEW).presented_to(OLD, open, at))
                .build()
                .plan()
        };
        // An open connection on an old certificate: nobody drops the old CA.
        let open = with_client(1, Timestamp(NOW.0 - 3_600_000));
        assert_not_started(&open, StepAction::InstallTrust);
        // Closed 10 s ago, inside the 5 min grace: still held, and the pass wakes after it.
        let recent = with_client(0, Timestamp(NOW.0 - 10_000));
        assert_not_started(&recent, StepAction::InstallTrust);
        // Closed an hour ago: the removal goes ahead.
        let old = with_client(0, Timestamp(NOW.0 - 3_600_000));
        assert!(starts(&old, StepAction::InstallTrust));
        // Certificates of the new CA presented to members hold nothing.
        let plan = done()
            .observe(member("a", true, &[OLD, NEW], NEW).presented_to(NEW, 3, NOW))
            .build()
            .plan();
        assert!(starts(&plan, StepAction::InstallTrust));
    }

    #[test]
    fn data_is_resigned_after_a_rotation_but_not_when_members_are_adopted_on_the_ca() {
        let on_new = rotating().trust_everywhere(&[NEW], NEW, far());
        let adopted = on_new.clone().build().plan();
        assert!(started(&adopted).is_empty());
        assert_eq!(adopted.status.phase, ClusterPhase::Ready);
        let after = on_new
            .with_status(|st| {
                remembered(st, |c| {
                    c.resign_pending = true;
                    c.resigned = vec!["b".into()];
                })
            })
            .build()
            .plan();
        assert_eq!(
            started(&after),
            [
                (StepAction::ResignData, "a".to_string()),
                (StepAction::ResignData, "c".to_string())
            ]
        );
        assert_eq!(certs(&after).phase.as_deref(), Some("ResignData"));
    }

    #[test]
    fn a_phase_in_approve_phases_waits_for_its_approval() {
        let case = || {
            rotating()
                .trust_everywhere(&[OLD, NEW], NEW, far())
                .certificate_options(|c| c.approve_phases = vec![RotationPhase::RemoveOldTrust])
        };
        let plan = case().build().plan();
        assert!(started(&plan).is_empty());
        let name = phase_approval_name("c", RotationPhase::RemoveOldTrust, NEW);
        assert!(
            plan.status
                .conditions
                .iter()
                .any(|c| c.type_ == "AwaitingApproval" && c.status == "True")
        );
        let plan = case().approve(&name).build().plan();
        assert!(!started(&plan).is_empty());
        assert!(
            plan.status
                .acknowledged
                .contains(&format!("approve:{name}"))
        );
    }

    #[test]
    fn a_rollout_under_way_finishes_before_the_rotation_starts_and_the_rotation_goes_first_from_rest()
     {
        // From rest, both asked for: the rotation first, no upgrade step.
        let both = rotating().version("2.0.0").upgrade(|u| u.preflight = false);
        let plan = both.clone().build().plan();
        assert!(
            started(&plan)
                .iter()
                .all(|(a, _)| *a == StepAction::InstallTrust)
        );
        // b already upgraded: the rollout is under way and the rotation waits.
        let plan = both
            .observe(member("b", false, &[OLD], OLD).version("2.0.0").held())
            .build()
            .plan();
        the_rollout_goes_on_alone(&plan);
    }

    #[test]
    fn certificates_near_expiry_are_renewed_from_the_same_ca() {
        let soon = Timestamp(NOW.0 + 10 * DAY);
        let plan = rotating()
            .trust_everywhere(&[NEW], NEW, far())
            .observe(member("c", false, &[NEW], NEW).presents(NEW, soon))
            .build()
            .plan();
        assert_eq!(
            started(&plan),
            [(StepAction::InstallCertificate, "c".to_string())]
        );
        assert!(plan.status.steps[0].trust.is_some());
        // The certificate is staged (c still presents the old one, of the same CA): the next
        // pass restarts c, it does not install again (it did, every pass, for ever).
        let renewing = || {
            rotating()
                .trust_everywhere(&[NEW], NEW, far())
                .observe(member("c", false, &[NEW], NEW).presents(NEW, soon))
                .with_status(|st| remembered(st, |c| c.restart_pending = vec!["c".into()]))
        };
        let plan = renewing().build().plan();
        assert_eq!(started(&plan), [(StepAction::Restart, "c".to_string())]);
        assert_eq!(certs(&plan).restart_pending, ["c"]);
        // Once c presents its renewed certificate, nothing is due and the entry closes.
        let plan = renewing()
            .observe(member("c", false, &[NEW], NEW).presents(NEW, far()))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        assert!(certs(&plan).restart_pending.is_empty());
    }

    /// In a mesh, a renewal is one job per site across the mesh too: the cluster says which
    /// members are due (`renewalDue`, which the mesh grants on) and starts on the grant only.
    #[test]
    fn in_a_mesh_renewals_wait_for_the_mesh_grant() {
        let soon = Timestamp(NOW.0 + 10 * DAY);
        let due = |b: ClusterBuilder| {
            b.trust_everywhere(&[NEW], NEW, far())
                .observe(member("c", false, &[NEW], NEW).presents(NEW, soon))
        };
        let plan = due(in_mesh(|g| {
            g.phase = None;
            g.waiting = Some("mesh m: rotates no cluster now".into());
        }))
        .build()
        .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        assert_eq!(certs(&plan).renewal_due, ["c"]);
        // Converged on the version and the CA: Ready, the renewal due in the certificates.
        assert_eq!(plan.status.phase, ClusterPhase::Ready);
        let plan = due(in_mesh(|g| g.phase = None)).build().plan();
        assert_eq!(
            started(&plan),
            [(StepAction::InstallCertificate, "c".to_string())]
        );
        assert_eq!(certs(&plan).renewal_due, ["c"]);
        // Standalone, nothing to wait for; nothing due, nothing said.
        let plan = due(rotating()).build().plan();
        assert_eq!(started(&plan).len(), 1);
        let plan = in_mesh(|g| g.phase = None)
            .trust_everywhere(&[NEW], NEW, far())
            .build()
            .plan();
        assert!(certs(&plan).renewal_due.is_empty());
    }

    #[test]
    fn a_certificate_that_expires_with_its_ca_is_not_renewed_again_and_adoption_says_so() {
        // The CA itself expires in 10 days, like c's certificate: a new one would be the same.
        let soon = Timestamp(NOW.0 + 10 * DAY);
        let plan = rotating()
            .certificates(root_ca(NEW, soon))
            .trust_everywhere(&[NEW], NEW, far())
            .observe(member("c", false, &[NEW], NEW).presents(NEW, soon))
            .build()
            .plan();
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        // Members already on the CA at first sight: adopted, not "rotated".
        let said: Vec<&str> = plan
            .events
            .iter()
            .filter(|e| e.reason == "RotationPhase")
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("adopted, nothing to rotate"),
            "{}",
            said[0]
        );
    }

    #[test]
    fn a_rotation_does_not_start_while_a_member_reports_conflicts_but_one_under_way_goes_on() {
        let conflicted = |b: ClusterBuilder| {
            let mut case = b.build();
            if let Some(a) = case.observed.get_mut("c").and_then(|o| o.agent.as_mut()) {
                a.conflicts = 1;
            }
            case.plan()
        };
        let plan = conflicted(rotating());
        assert!(started(&plan).is_empty(), "{:?}", started(&plan));
        let message = plan.status.message.clone().unwrap_or_default();
        assert!(message.contains("replication conflicts"), "{message}");
        // Every member already trusts the new root: the rotation is under way and goes on.
        let plan = conflicted(rotating().trust_everywhere(&[OLD, NEW], OLD, far()));
        assert!(starts(&plan, StepAction::InstallCertificate));
    }

    #[test]
    fn a_busy_member_holds_its_sites_slot() {
        let mut b_trusts = step(StepAction::InstallTrust, "b", NOW);
        b_trusts.trust = Some(params(
            match &root_ca(NEW, far()) {
                CaInput::Ready(v) => v,
                CaInput::Unusable { .. } => unreachable!(),
            },
            vec![OLD.into()],
        ));
        let plan = rotating().step(b_trusts).build().plan();
        // b busy in site x: a (the other member of x) waits; c in y goes.
        assert_eq!(
            started(&plan),
            [
                (StepAction::InstallTrust, "b".to_string()),
                (StepAction::InstallTrust, "c".to_string())
            ]
        );
    }

    /// Found by the simulator (RotationDuringRollout): the rotation went first from rest, so
    /// its switchover hands over between members still on the old version while the target
    /// is the new one. The switchover took that as a target changed mid-way and cancelled
    /// itself on every pass: the active never restarted and the rollout never started.
    #[test]
    fn the_rotations_switchover_goes_ahead_while_a_new_version_waits() {
        let ca = match &root_ca(NEW, far()) {
            CaInput::Ready(v) => params(v, Vec::new()),
            CaInput::Unusable { .. } => unreachable!(),
        };
        let mut sw = step(StepAction::Switchover, "b", NOW);
        sw.from = Some("a".into());
        sw.trust = Some(ca);
        let plan = rotating()
            .version("2.0.0")
            .upgrade(|u| u.preflight = false)
            .observe(member("a", true, &[OLD, NEW], OLD))
            .observe(member("b", false, &[OLD, NEW], NEW))
            .observe(member("c", false, &[OLD, NEW], NEW))
            .with_status(|st| remembered(st, |c| c.restart_pending = vec!["a".into()]))
            .step(sw)
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Switchover, "b".to_string())]);
        assert!(
            plan.actions
                .iter()
                .any(|a| a.member == "a" && a.request.kind == crate::plan::OpKind::Demote),
            "the old active steps down: {:?}",
            plan.actions
        );
    }

    /// Found by the simulator (RotationDuringRollout, seed 210): a layered rollout part-way in
    /// which no member had every component on the target yet (b upgraded os, not app) did not
    /// count as under way, so the rotation started inside it and its switchover demoted the
    /// old active to a plain standby beside an active on other software.
    #[test]
    fn a_layered_rollout_part_way_holds_the_rotation_though_nobody_is_on_the_target_yet() {
        let plan = layered(rotating().version("2.0.0")).build().plan();
        the_rollout_goes_on_alone(&plan);
    }

    #[test]
    fn an_upgrade_step_in_flight_holds_the_rotation() {
        let plan = rotating()
            .step(step(StepAction::Backup, "b", NOW))
            .build()
            .plan();
        assert_eq!(started(&plan), [(StepAction::Backup, "b".to_string())]);
    }
}
