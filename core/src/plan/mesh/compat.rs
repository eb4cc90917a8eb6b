//! Compatibility rules `role notNewerThan otherRole`: on the way up a `role` cluster waits
//! until every `otherRole` cluster runs at least the target; on the way down an `otherRole`
//! cluster waits until no `role` cluster runs anything newer than its target.
//!
//! Owns: [`RoleVersions`] (lowest and highest version running per role) and the rule check.
//! May use: `read`, `versions`, `plan::validate` (roles).

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
            match direction {
                Direction::Upgrade if r.role == role => {
                    // Every `notNewerThan` cluster must already run at least the target.
                    if let Some(bound) = self.min.get(r.not_newer_than.as_str()) {
                        match bound {
                            Some(v) if !cmp_versions(v, s.target).is_lt() => {}
                            Some(v) => {
                                return Some(format!(
                                    "{} clusters may not run a newer version than {} clusters, which still run {v}",
                                    r.role, r.not_newer_than
                                ));
                            }
                            None => {
                                return Some(format!(
                                    "versions of {} clusters are not known yet",
                                    r.not_newer_than
                                ));
                            }
                        }
                    }
                }
                Direction::Backout if r.not_newer_than == role => {
                    // No `role` cluster may still run something newer than the backout target.
                    if let Some(bound) = self.max.get(r.role.as_str()) {
                        match bound {
                            Some(v) if !cmp_versions(v, s.target).is_gt() => {}
                            Some(v) => {
                                return Some(format!(
                                    "{} clusters still run {v}, newer than {}; they back out first",
                                    r.role, s.target
                                ));
                            }
                            None => {
                                return Some(format!(
                                    "versions of {} clusters are not known yet",
                                    r.role
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}
