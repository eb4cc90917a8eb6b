//! Where a CA rotation stands, derived from what the members report (the CAs each trusts, the
//! CA its presented certificate is issued by), never from a stored counter: after a restart at
//! any instant the operator looks again and continues from where the mesh really is.
//!
//! A member's *stage* is the first phase it has not finished: it does not trust the new root
//! yet (`AddTrust`), it trusts it but presents a certificate of another issuer (`Reissue`), it
//! presents a new certificate but still trusts an old root (`RemoveOldTrust`), or `Done`. The
//! rotation's phase is the lowest stage among the members observed. The two gates that keep
//! every handshake working are checked against *every* member, so a member that cannot be
//! observed holds them: nobody presents a new certificate before all trust the new root, and
//! no old root leaves a trust store while anyone presents a certificate it signed.
//!
//! Owns: [`CaInput`] (the CA as the host read it), [`Phase`], [`MemberTrust`],
//! [`Assessment`], [`assess`], [`renewals`], [`TrustStep`], [`next_steps`], [`handshake_ok`].
//! The cluster planner's rotation stage (`plan::cluster::rotation`) acts on it.

use std::collections::BTreeMap;

use crate::api::{Health, MemberRole, MemberSpec, Timestamp};
use crate::plan::observe::MemberObservation;

/// The phases of a rotation, in order. Data re-signing and removal of old material come after
/// `RemoveOldTrust` and are steps of their own (not visible in a member's trust).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Install old + new roots in every trust store.
    AddTrust,
    /// Members present certificates issued by the new CA (then restart as configured).
    Reissue,
    /// Trust stores keep only the new root.
    RemoveOldTrust,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::AddTrust => "AddTrust",
            Phase::Reissue => "Reissue",
            Phase::RemoveOldTrust => "RemoveOldTrust",
            Phase::Done => "Done",
        }
    }
}

/// The first 12 hex digits of each fingerprint of a CA id: enough to tell CAs apart in text.
pub fn short_id(id: &str) -> String {
    id.split('/')
        .map(|f| f.get(..12).unwrap_or(f))
        .collect::<Vec<_>>()
        .join("/")
}

/// The CA `spec.certificates` names, as the host read and checked it. The planner sees
/// fingerprints and dates only: PEMs and keys stay with the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaInput {
    Ready(CaView),
    /// The Secret is missing or cannot be used: a stable reason (`CAExpired`,
    /// `CASecretNotFound`, …) and what is wrong. Nothing is sent to any member.
    Unusable {
        reason: &'static str,
        message: String,
    },
}

/// A checked CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaView {
    /// The root trust stores hold.
    pub anchor: String,
    /// The CA that issues member certificates (the anchor itself without intermediates).
    pub issuer: String,
    /// Each CA of the chain (issuer, intermediates, root) paired with its root.
    pub chains: Vec<(String, String)>,
    /// When the first certificate of the chain expires.
    pub not_after: Timestamp,
}

impl CaView {
    /// The rotation's name for this CA: the root's fingerprint, and the issuer's after a `/`
    /// when they differ (what `status.certificates.targetCa` shows).
    pub fn id(&self) -> String {
        if self.anchor == self.issuer {
            self.anchor.clone()
        } else {
            format!("{}/{}", self.anchor, self.issuer)
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            anchor: &self.anchor,
            issuer: &self.issuer,
        }
    }

    /// `chains` as borrowed pairs, as [`MemberTrust::observed`] takes them.
    pub fn chain_pairs(&self) -> Vec<(&str, &str)> {
        self.chains
            .iter()
            .map(|(i, a)| (i.as_str(), a.as_str()))
            .collect()
    }
}

/// The CA rotated to, by SHA-256 fingerprints: the root trust stores hold and the CA that
/// issues member certificates (the same when the root issues them itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub anchor: &'a str,
    pub issuer: &'a str,
}

/// What one member reports about its trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustReport<'a> {
    /// Fingerprints of the roots in its trust store.
    pub trusted: &'a [String],
    /// The issuer of the certificate it presents, and the root that issuer chains to (None:
    /// not known, e.g. an issuer outside every known chain).
    pub issuer: Option<&'a str>,
    pub anchor: Option<&'a str>,
    /// When the presented certificate expires (None: not reported).
    pub not_after: Option<Timestamp>,
}

/// One member as the rotation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberTrust<'a> {
    pub name: &'a str,
    /// Agent-wide phases run per site, a bounded number of jobs at a time.
    pub site: &'a str,
    /// None: not observed (unreachable, or its agent reports no trust).
    pub report: Option<TrustReport<'a>>,
    /// A step of this rotation is in flight on it.
    pub busy: bool,
    /// Order within a site: lower first (standbys before the active, whose restart needs a
    /// switchover first).
    pub rank: u32,
}

impl<'a> MemberTrust<'a> {
    /// A member as the agents report it. `chains` pairs each known issuer fingerprint with the
    /// root it chains to (the CA rotated to and the one rotated from; a root that issues its
    /// own leaves pairs with itself). A member that is unreachable, reports no trust, or is
    /// Critical (its agent cannot say what it holds) is unobserved. `busy`: a step of the
    /// rotation is in flight on it. The active goes after the standbys of its site (its restart
    /// needs a switchover first).
    pub fn observed(
        spec: &'a MemberSpec,
        obs: Option<&'a MemberObservation>,
        chains: &[(&'a str, &'a str)],
        busy: bool,
    ) -> Self {
        let agent = obs
            .and_then(|o| o.agent.as_ref())
            .filter(|a| a.health < Health::Critical && !a.tls.trust.is_empty());
        let report = agent.map(|a| {
            let issuer = a
                .tls
                .certificate
                .as_ref()
                .and_then(|c| c.issuer_fingerprint.as_deref());
            TrustReport {
                trusted: &a.tls.trust,
                issuer,
                anchor: issuer.and_then(|i| {
                    chains
                        .iter()
                        .find(|(iss, _)| *iss == i)
                        .map(|&(_, anchor)| anchor)
                }),
                not_after: a.tls.certificate.as_ref().map(|c| c.not_after),
            }
        });
        let active = agent.is_some_and(|a| a.role == MemberRole::Active);
        MemberTrust {
            name: &spec.name,
            site: spec.site.as_deref().unwrap_or(""),
            report,
            busy,
            rank: u32::from(active),
        }
    }
}

/// Options that change what counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Keep trusting the old roots: `RemoveOldTrust` is skipped (old-CA certificates stay
    /// accepted; stated in status and the docs).
    pub keep_old_trust: bool,
    /// Jobs at a time per site (the procedure: one).
    pub per_site: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_old_trust: false,
            per_site: 1,
        }
    }
}

/// Where the rotation stands and what may be done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment<'a> {
    /// The lowest stage among observed members.
    pub phase: Phase,
    /// Every member observed and done: the rotation is over.
    pub complete: bool,
    /// Per site: members past the phase / members.
    pub sites: BTreeMap<&'a str, (u32, u32)>,
    /// Members to act on now for the phase: per site at most `per_site` minus those busy,
    /// lowest rank first, then by name. Empty when a gate holds.
    pub next: Vec<&'a str>,
    /// Members not observed: they hold every gate and the end of the rotation.
    pub unobserved: Vec<&'a str>,
    /// Members whose presented certificate is not issued by the new CA.
    pub presenting_old: Vec<&'a str>,
}

fn stage(r: &TrustReport<'_>, t: Target<'_>, o: Options) -> Phase {
    let trusts_new = r.trusted.iter().any(|f| f == t.anchor);
    if !trusts_new {
        Phase::AddTrust
    } else if r.issuer != Some(t.issuer) {
        Phase::Reissue
    } else if !o.keep_old_trust && r.trusted.iter().any(|f| f != t.anchor) {
        Phase::RemoveOldTrust
    } else {
        Phase::Done
    }
}

/// Where the rotation to `target` stands among `members`.
pub fn assess<'a>(target: Target<'_>, members: &[MemberTrust<'a>], o: Options) -> Assessment<'a> {
    let stages: Vec<Option<Phase>> = members
        .iter()
        .map(|m| m.report.as_ref().map(|r| stage(r, target, o)))
        .collect();
    let unobserved: Vec<&str> = members
        .iter()
        .zip(&stages)
        .filter(|(_, s)| s.is_none())
        .map(|(m, _)| m.name)
        .collect();
    let lowest = stages.iter().flatten().min().copied();
    let phase = match lowest {
        Some(p) => p,
        None if members.is_empty() => Phase::Done,
        // Nothing observed: nothing is known to be done.
        None => Phase::AddTrust,
    };
    let complete = phase == Phase::Done && unobserved.is_empty();
    let mut sites: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (m, s) in members.iter().zip(&stages) {
        let e = sites.entry(m.site).or_default();
        e.1 += 1;
        if s.is_some_and(|s| s > phase || s == Phase::Done) {
            e.0 += 1;
        }
    }
    // Gates: adding trust is always safe; presenting a new certificate needs every member to
    // trust the new root, dropping old roots needs every member to present a new certificate.
    // Both are facts about all members, so an unobserved one holds them.
    let gate_open = match phase {
        Phase::AddTrust => true,
        Phase::Reissue | Phase::RemoveOldTrust => unobserved.is_empty(),
        Phase::Done => false,
    };
    let next = if gate_open {
        pick(members, |i, _| stages[i] == Some(phase), o.per_site)
    } else {
        Vec::new()
    };
    let presenting_old = members
        .iter()
        .filter(|m| m.report.is_some_and(|r| r.issuer != Some(target.issuer)))
        .map(|m| m.name)
        .collect();
    Assessment {
        phase,
        complete,
        sites,
        next,
        unobserved,
        presenting_old,
    }
}

/// At most `per_site` jobs at a time in each site: a busy member (whatever it is busy with)
/// holds a slot; candidates go lowest rank first, then by name.
fn pick<'a>(
    members: &[MemberTrust<'a>],
    candidate: impl Fn(usize, &MemberTrust<'a>) -> bool,
    per_site: u32,
) -> Vec<&'a str> {
    let mut sites: BTreeMap<&str, (u32, Vec<&MemberTrust<'a>>)> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        let e = sites.entry(m.site).or_default();
        if m.busy {
            e.0 += 1;
        } else if candidate(i, m) {
            e.1.push(m);
        }
    }
    let mut out = Vec::new();
    for (_, (busy, mut ms)) in sites {
        ms.sort_by_key(|m| (m.rank, m.name));
        let slots = per_site.saturating_sub(busy) as usize;
        out.extend(ms.iter().take(slots).map(|m| m.name));
    }
    out
}

/// Members whose certificate to renew from the current CA (no trust phase): once a rotation
/// is complete, those presenting a certificate of `target`'s issuer that expires within
/// `renew_before` of `now`, in per-site slots like the rotation's jobs.
pub fn renewals<'a>(
    target: Target<'_>,
    members: &[MemberTrust<'a>],
    when: Renewal,
    o: Options,
) -> Vec<&'a str> {
    if !assess(target, members, o).complete {
        return Vec::new();
    }
    pick(
        members,
        |_, m| m.report.is_some_and(|r| when.due(&r, target)),
        o.per_site,
    )
}

/// When a certificate of the current CA is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub now: Timestamp,
    /// `renewBefore`.
    pub before: crate::api::values::Duration,
    /// The issuer's own expiry: a member certificate never outlives it, so one that already
    /// expires with the issuer is not renewed again (it would come back the same, for ever).
    pub issuer_not_after: Timestamp,
}

/// A renewed certificate lasting less than this much longer is not worth a restart.
const RENEWAL_GAIN_MS: i64 = 60_000;

impl Renewal {
    /// The certificate `r` presents is the target issuer's and expires within `before`, and a
    /// new one would last longer.
    pub fn due(&self, r: &TrustReport<'_>, target: Target<'_>) -> bool {
        let soon = self.now.plus(self.before);
        r.issuer == Some(target.issuer)
            && r.not_after.is_some_and(|t| {
                t <= soon && t.0.saturating_add(RENEWAL_GAIN_MS) < self.issuer_not_after.0
            })
    }
}

/// What to ask of one member next, for the rotation's phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustStep<'a> {
    /// Install these roots (what it trusts now and the new root): old and new both verify.
    Trust {
        member: &'a str,
        anchors: Vec<String>,
    },
    /// Install a certificate the new issuer signed (then restart, as configured).
    Reissue { member: &'a str },
    /// Keep only the new root.
    DropOld { member: &'a str, anchor: String },
}

/// The steps [`assess`] allows now: one per member of `next`, for the phase it is in.
pub fn next_steps<'a>(
    target: Target<'_>,
    members: &[MemberTrust<'a>],
    o: Options,
) -> Vec<TrustStep<'a>> {
    let a = assess(target, members, o);
    a.next
        .iter()
        .filter_map(|&name| {
            let m = members.iter().find(|m| m.name == name)?;
            Some(match a.phase {
                Phase::AddTrust => {
                    let now = m.report.map_or(&[][..], |r| r.trusted);
                    let mut anchors: Vec<String> = now.to_vec();
                    anchors.push(target.anchor.to_string());
                    anchors.sort();
                    anchors.dedup();
                    TrustStep::Trust {
                        member: m.name,
                        anchors,
                    }
                }
                Phase::Reissue => TrustStep::Reissue { member: m.name },
                Phase::RemoveOldTrust => TrustStep::DropOld {
                    member: m.name,
                    anchor: target.anchor.to_string(),
                },
                Phase::Done => return None,
            })
        })
        .collect()
}

/// Whether a peer trusting `trusted` accepts a certificate chaining to `presented_anchor`
/// (unknown: refused). Every link is checked both ways: the simulator's invariant.
pub fn handshake_ok(presented_anchor: Option<&str>, trusted: &[String]) -> bool {
    presented_anchor.is_some_and(|a| trusted.iter().any(|f| f == a))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old-root";
    const NEW: &str = "new-root";
    const NEW_ISSUER: &str = "new-issuing";
    const T: Target<'static> = Target {
        anchor: NEW,
        issuer: NEW_ISSUER,
    };

    /// A member with an owned trust list: (name, site, trusted, presents new?).
    struct M {
        name: &'static str,
        site: &'static str,
        trusted: Vec<String>,
        new_cert: bool,
        seen: bool,
        busy: bool,
        rank: u32,
        not_after: Option<Timestamp>,
    }

    fn m(name: &'static str, site: &'static str, trusted: &[&str], new_cert: bool) -> M {
        M {
            name,
            site,
            trusted: trusted.iter().map(|s| s.to_string()).collect(),
            new_cert,
            seen: true,
            busy: false,
            rank: 0,
            not_after: None,
        }
    }

    fn views(ms: &[M]) -> Vec<MemberTrust<'_>> {
        ms.iter()
            .map(|x| MemberTrust {
                name: x.name,
                site: x.site,
                report: x.seen.then_some(TrustReport {
                    trusted: &x.trusted,
                    issuer: Some(if x.new_cert {
                        NEW_ISSUER
                    } else {
                        "old-issuing"
                    }),
                    anchor: Some(if x.new_cert { NEW } else { OLD }),
                    not_after: x.not_after,
                }),
                busy: x.busy,
                rank: x.rank,
            })
            .collect()
    }

    fn run(ms: &[M], o: Options) -> Assessment<'_> {
        assess(T, &views(ms), o)
    }

    #[test]
    fn the_phase_is_the_lowest_stage_and_sites_count_members_past_it() {
        let ms = [
            m("a1", "east", &[OLD, NEW], false),
            m("a2", "east", &[OLD], false),
            m("b1", "west", &[OLD, NEW], false),
        ];
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::AddTrust);
        assert_eq!(a.sites["east"], (1, 2));
        assert_eq!(a.sites["west"], (1, 1));
        assert_eq!(a.next, ["a2"]);
        let ms = [
            m("a1", "east", &[OLD, NEW], true),
            m("a2", "east", &[OLD, NEW], false),
        ];
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::Reissue);
        assert_eq!(a.next, ["a2"]);
        assert_eq!(a.presenting_old, ["a2"]);
        let done = [m("a1", "east", &[NEW], true), m("b1", "west", &[NEW], true)];
        let a = run(&done, Options::default());
        assert_eq!(a.phase, Phase::Done);
        assert!(a.complete);
        assert!(a.next.is_empty());
        assert_eq!(a.sites["west"], (1, 1));
    }

    #[test]
    fn at_most_per_site_jobs_run_and_busy_members_take_their_slot() {
        let mut ms = vec![
            m("e1", "east", &[OLD], false),
            m("e2", "east", &[OLD], false),
            m("e3", "east", &[OLD], false),
            m("w1", "west", &[OLD], false),
        ];
        let a = run(&ms, Options::default());
        assert_eq!(a.next, ["e1", "w1"], "one job per site");
        ms[0].busy = true;
        let a = run(&ms, Options::default());
        assert_eq!(a.next, ["w1"], "east's slot is taken by e1 in flight");
        let two = Options {
            per_site: 2,
            ..Options::default()
        };
        assert_eq!(run(&ms, two).next, ["e2", "w1"]);
        // Standbys before the active within a site.
        ms[0].busy = false;
        ms[0].rank = 1;
        assert_eq!(run(&ms, Options::default()).next, ["e2", "w1"]);
    }

    #[test]
    fn nobody_is_reissued_while_any_member_is_unobserved_or_lacks_the_new_root() {
        let mut ms = vec![
            m("a", "s", &[OLD, NEW], false),
            m("b", "s", &[OLD, NEW], false),
        ];
        ms[1].seen = false;
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::Reissue, "from what is observed");
        assert_eq!(a.unobserved, ["b"]);
        assert!(a.next.is_empty(), "b might not trust the new root");
        // A member that does not trust the new root puts the rotation back to AddTrust, even if
        // another already presents a new certificate (a member added late, or a forced phase).
        let ms = [
            m("a", "s", &[OLD, NEW], true),
            m("late", "s", &[OLD], false),
        ];
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::AddTrust);
        assert_eq!(a.next, ["late"]);
    }

    #[test]
    fn the_old_root_goes_only_when_everyone_presents_a_new_certificate() {
        let mut ms = vec![
            m("a", "s", &[OLD, NEW], true),
            m("b", "t", &[OLD, NEW], true),
        ];
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::RemoveOldTrust);
        assert_eq!(a.next, ["a", "b"]);
        ms[1].seen = false;
        assert!(
            run(&ms, Options::default()).next.is_empty(),
            "b unobserved: it might still present an old certificate"
        );
        let keep = Options {
            keep_old_trust: true,
            ..Options::default()
        };
        ms[1].seen = true;
        let a = run(&ms, keep);
        assert_eq!(a.phase, Phase::Done, "keepOldTrust skips the removal");
    }

    #[test]
    fn a_rotation_nobody_can_be_seen_in_is_not_done() {
        let mut ms = vec![m("a", "s", &[NEW], true)];
        ms[0].seen = false;
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::AddTrust, "nothing is known to be done");
        assert!(!a.complete);
        let mut ms = vec![m("a", "s", &[NEW], true), m("b", "s", &[NEW], true)];
        ms[1].seen = false;
        let a = run(&ms, Options::default());
        assert_eq!(a.phase, Phase::Done, "a is done");
        assert!(!a.complete, "b holds the end");
        assert_eq!(a.unobserved, ["b"]);
        assert_eq!(a.sites["s"], (1, 2));
    }

    #[test]
    fn steps_add_the_new_root_beside_the_old_then_reissue_then_drop_the_old() {
        let o = Options::default();
        let ms = [m("a", "s", &[OLD], false), m("b", "t", &[OLD, NEW], false)];
        assert_eq!(
            next_steps(T, &views(&ms), o),
            [TrustStep::Trust {
                member: "a",
                anchors: vec![NEW.to_string(), OLD.to_string()]
            }],
            "b already trusts both; the old root stays"
        );
        let ms = [
            m("a", "s", &[OLD, NEW], false),
            m("b", "t", &[OLD, NEW], true),
        ];
        assert_eq!(
            next_steps(T, &views(&ms), o),
            [TrustStep::Reissue { member: "a" }]
        );
        let ms = [m("a", "s", &[OLD, NEW], true), m("b", "t", &[NEW], true)];
        assert_eq!(
            next_steps(T, &views(&ms), o),
            [TrustStep::DropOld {
                member: "a",
                anchor: NEW.to_string()
            }]
        );
        let done = [m("a", "s", &[NEW], true)];
        assert!(next_steps(T, &views(&done), o).is_empty());
    }

    #[test]
    fn a_member_busy_with_another_stage_still_holds_its_sites_slot() {
        let mut ms = vec![
            m("a", "s", &[OLD, NEW], true),
            m("b", "s", &[OLD], false),
            m("c", "s", &[OLD], false),
        ];
        ms[0].busy = true; // a's last job is still being looked at
        assert!(
            run(&ms, Options::default()).next.is_empty(),
            "one job per site"
        );
    }

    #[test]
    fn certificates_near_expiry_are_renewed_from_the_same_ca_once_the_rotation_is_over() {
        use crate::api::values::Duration;
        let now = Timestamp(1_000_000_000_000);
        let day = 86_400_000;
        let month = Duration::from_secs(30 * 86_400);
        let mut ms = vec![
            m("a", "s", &[NEW], true),
            m("b", "s", &[NEW], true),
            m("c", "t", &[NEW], true),
        ];
        ms[0].not_after = Some(Timestamp(now.0 + 10 * day));
        ms[1].not_after = Some(Timestamp(now.0 + 5 * day));
        ms[2].not_after = Some(Timestamp(now.0 + 90 * day));
        let o = Options::default();
        let when = Renewal {
            now,
            before: month,
            issuer_not_after: Timestamp(now.0 + 365 * day),
        };
        assert_eq!(renewals(T, &views(&ms), when, o), ["a"], "one per site");
        ms[0].rank = 1;
        assert_eq!(renewals(T, &views(&ms), when, o), ["b"]);
        // The issuer itself expires with b's certificate: a new one would last no longer than
        // b's or a's (which outlives it), so nobody is renewed; with the issuer a day later, b
        // is (a would still gain nothing).
        let capped = |days: i64| Renewal {
            issuer_not_after: Timestamp(now.0 + days * day),
            ..when
        };
        assert!(renewals(T, &views(&ms), capped(5), o).is_empty());
        assert_eq!(renewals(T, &views(&ms), capped(6), o), ["b"]);
        // c expires in 90 days: not due. A rotation in progress renews nobody separately.
        ms[2].trusted = vec![OLD.to_string(), NEW.to_string()];
        assert!(renewals(T, &views(&ms), when, o).is_empty());
    }

    #[test]
    fn members_are_read_from_their_agents_reports() {
        use crate::fixtures::cluster::observed;
        use crate::plan::observe::CertView;
        let spec = MemberSpec {
            name: "m1".into(),
            site: Some("east".into()),
            endpoint: "m1:9443".into(),
            ..Default::default()
        };
        let chains = [(NEW_ISSUER, NEW), (OLD, OLD)];
        let mut obs = observed("m1").role(MemberRole::Active).build();
        let agent = obs.agent.as_mut().expect("reachable");
        agent.tls.trust = vec![OLD.to_string(), NEW.to_string()];
        agent.tls.certificate = Some(CertView {
            fingerprint: "leaf".into(),
            issuer_fingerprint: Some(NEW_ISSUER.into()),
            not_after: Timestamp(42),
        });
        let m = MemberTrust::observed(&spec, Some(&obs), &chains, false);
        assert_eq!(
            (m.name, m.site, m.rank),
            ("m1", "east", 1),
            "the active goes last"
        );
        let r = m.report.expect("observed");
        assert_eq!(r.trusted, [OLD.to_string(), NEW.to_string()]);
        assert_eq!((r.issuer, r.anchor), (Some(NEW_ISSUER), Some(NEW)));
        assert_eq!(r.not_after, Some(Timestamp(42)));
        // Critical, or no trust reported, or unreachable: unobserved, never "trusts nothing".
        let mut critical = obs.clone();
        if let Some(a) = critical.agent.as_mut() {
            a.health = Health::Critical;
        }
        assert!(
            MemberTrust::observed(&spec, Some(&critical), &chains, false)
                .report
                .is_none()
        );
        let mut silent = obs.clone();
        if let Some(a) = silent.agent.as_mut() {
            a.tls.trust.clear();
        }
        assert!(
            MemberTrust::observed(&spec, Some(&silent), &chains, false)
                .report
                .is_none()
        );
        assert!(
            MemberTrust::observed(&spec, None, &chains, true)
                .report
                .is_none()
        );
        // An issuer outside the known chains has no root: no handshake can be judged for it.
        let mut foreign = obs;
        if let Some(c) = foreign
            .agent
            .as_mut()
            .and_then(|a| a.tls.certificate.as_mut())
        {
            c.issuer_fingerprint = Some("someone-else".into());
        }
        let r = MemberTrust::observed(&spec, Some(&foreign), &chains, false).report;
        assert_eq!(r.and_then(|r| r.anchor), None);
    }

    #[test]
    fn a_handshake_needs_the_presented_root_in_the_peers_trust() {
        let both = [OLD.to_string(), NEW.to_string()];
        let new_only = [NEW.to_string()];
        assert!(handshake_ok(Some(OLD), &both));
        assert!(handshake_ok(Some(NEW), &new_only));
        assert!(!handshake_ok(Some(OLD), &new_only));
        assert!(!handshake_ok(None, &both));
    }
}
