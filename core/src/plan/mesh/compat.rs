//! Compatibility rules `role notNewerThan otherRole`: on the way up a `role` cluster waits
//! until every `otherRole` cluster runs at least the target; on the way down an `otherRole`
//! cluster waits until no `role` cluster runs anything newer than its target.
//!
//! Owns: [`RoleVersions`] (lowest and highest version running per role) and the rule check.
//! May use: `read`, `versions`, `plan::validate` (roles).

use std::cmp::Ordering;

use crate::api::{Direction, MeshSpec, values::cmp_versions};
use crate::plan::validate::{FastMap, MeshIndex, Roles};

use super::read::Summary;
use super::versions::VersionTable;

/// Lowest and highest version running per role, for compatibility rules.
pub(super) struct RoleVersions<'a> {
    min: FastMap<&'a str, Option<&'a str>>,
    max: FastMap<&'a str, Option<&'a str>>,
}

impl<'a> RoleVersions<'a> {
    pub(super) fn of(
        spec: &MeshSpec,
        sums: &[Summary<'a>],
        index: &MeshIndex<'a>,
        versions: &VersionTable<'a>,
    ) -> Self {
        type Bound<'a> = Option<(u32, &'a str)>;
        // Per role id: its name, lowest and highest bound.
        let mut bounds: Vec<Option<(&'a str, Bound<'a>, Bound<'a>)>> =
            vec![None; index.roles.len()];
        // Only rules read these bounds.
        let sums = if spec.compatibility.is_empty() {
            &[]
        } else {
            sums
        };
        for s in sums {
            let Some(r) = index.roles.name(s.role) else {
                continue;
            };
            let lo = s.lo_rank().zip(versions.str(s.lo));
            let hi = s.hi_rank().zip(versions.str(s.hi));
            let e = bounds[s.role as usize].get_or_insert((r, lo, hi));
            // A cluster without observed versions makes the role's bound unknown (None); of
            // equal versions the first stays.
            e.1 = match (e.1, lo) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                _ => None,
            };
            e.2 = match (e.2, hi) {
                (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
                _ => None,
            };
        }
        let bounds = bounds.into_iter().flatten();
        RoleVersions {
            min: bounds.clone().map(|b| (b.0, b.1.map(|(_, v)| v))).collect(),
            max: bounds.map(|b| (b.0, b.2.map(|(_, v)| v))).collect(),
        }
    }

    /// Why moving `s` to its target would break a rule, if it would.
    pub(super) fn incompatible(
        &self,
        spec: &MeshSpec,
        s: &Summary<'_>,
        direction: Direction,
        roles: &Roles<'_>,
    ) -> Option<String> {
        let role = roles.name(s.role)?;
        for r in &spec.compatibility {
            // The bound to read, of which role, and what it must be to the target.
            let (bounds, other, ok): (_, &str, fn(Ordering) -> bool) = match direction {
                // Every `notNewerThan` cluster must already run at least the target.
                Direction::Upgrade if r.role == role => {
                    (&self.min, r.not_newer_than.as_str(), Ordering::is_ge)
                }
                // No `role` cluster may still run something newer than the backout target.
                Direction::Backout if r.not_newer_than == role => {
                    (&self.max, r.role.as_str(), Ordering::is_le)
                }
                _ => continue,
            };
            match bounds.get(other) {
                None => {}
                Some(Some(v)) if ok(cmp_versions(v, s.target(spec))) => {}
                Some(Some(v)) => {
                    return Some(match direction {
                        Direction::Upgrade => format!(
                            "{} clusters may not run a newer version than {} clusters, which still run {v}",
                            r.role, r.not_newer_than
                        ),
                        Direction::Backout => format!(
                            "{} clusters still run {v}, newer than {}; they back out first",
                            r.role,
                            s.target(spec)
                        ),
                    });
                }
                Some(None) => {
                    return Some(format!("versions of {other} clusters are not known yet"));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mesh::{ClusterBuilder, cluster, mesh};
    use crate::plan::mesh::read;

    /// Why `who` may not move in `direction` under "worker notNewerThan mgmt".
    fn check(
        version: &str,
        m: ClusterBuilder,
        w: ClusterBuilder,
        who: &str,
        d: Direction,
    ) -> Option<String> {
        let scene = mesh(version)
            .tier("mgmt", &["m"])
            .tier("workers", &["w"])
            .rule("worker", "mgmt")
            .scene()
            .with(m.role("mgmt"))
            .with(w.role("worker"));
        scene.with_input(|input| {
            let c = read::read(input);
            let rv = RoleVersions::of(input.mesh.spec, &c.sums, &c.index, &c.versions);
            rv.incompatible(input.mesh.spec, c.find(who).unwrap(), d, &c.index.roles)
        })
    }

    /// A cluster as a case writes it: `""` has reported no version, `"ready 2.0.0"` is Ready on
    /// it, `"2.0.0 1.0.0"` has members on those, and `"1.0.0"` runs that.
    fn state(name: &str, s: &str) -> ClusterBuilder {
        let versions: Vec<&str> = s.split(' ').collect();
        match versions[..] {
            [""] => cluster(name),
            ["ready", v] => cluster(name).ready(v),
            [v] => cluster(name).runs(v),
            _ => cluster(name).members_run(&versions),
        }
    }

    /// What a case expects of the check.
    enum Expect {
        /// `who` may move.
        Free,
        /// `who` is held, whatever the message.
        Held,
        /// `who` is held, saying this.
        Refused(&'static str),
    }

    #[test]
    fn each_role_waits_for_the_other_in_the_order_of_the_direction() {
        use Direction::{Backout as Down, Upgrade as Up};
        use Expect::{Free, Held, Refused};
        const UP_FIRST: &str =
            "worker clusters may not run a newer version than mgmt clusters, which still run 1.0.0";
        const DOWN_FIRST: &str =
            "worker clusters still run 2.0.0, newer than 1.0.0; they back out first";
        const UNKNOWN: &str = "versions of mgmt clusters are not known yet";
        // The mesh's target, what mgmt (`m`) and the worker (`w`) run, who asks, which way.
        let cases = [
            // On the way up a worker waits until mgmt runs the target (unknown versions hold)...
            ("2.0.0", "1.0.0", "1.0.0", "w", Up, Refused(UP_FIRST)),
            ("2.0.0", "2.0.0 1.0.0", "1.0.0", "w", Up, Held),
            ("2.0.0", "ready 2.0.0", "1.0.0", "w", Up, Free),
            ("2.0.0", "", "1.0.0", "w", Up, Refused(UNKNOWN)),
            // ...and mgmt is never held by the rule.
            ("2.0.0", "1.0.0", "1.0.0", "m", Up, Free),
            // On the way down mgmt waits until no worker runs anything newer...
            ("1.0.0", "2.0.0", "2.0.0", "m", Down, Refused(DOWN_FIRST)),
            ("1.0.0", "2.0.0", "1.0.0 2.0.0", "m", Down, Held),
            ("1.0.0", "2.0.0", "1.0.0", "m", Down, Free),
            // ...and the workers back out first, unheld.
            ("1.0.0", "2.0.0", "2.0.0", "w", Down, Free),
        ];
        for (version, m, w, who, d, expect) in cases {
            let why = check(version, state("m", m), state("w", w), who, d);
            let case = format!("{who} {d:?} to {version}, mgmt on {m:?}, worker on {w:?}");
            match expect {
                Free => assert_eq!(why, None, "{case}"),
                Held => assert!(why.is_some(), "{case}"),
                Refused(msg) => assert_eq!(why.as_deref(), Some(msg), "{case}"),
            }
        }
    }
}
