//! The version table of one decision: each distinct version string parsed and compared once.
//!
//! Owns: [`VersionTable`] (string → id, id → rank in version order) and [`NONE`]. May use:
//! `api::values::cmp_versions` and the hashing helpers of `plan::validate`. A leaf: no other
//! stage module.

use crate::api::values::cmp_versions;
use crate::plan::validate::{FastMap, same_str};

/// "No such id": no version known, no role, no rank.
pub(super) const NONE: u32 = u32::MAX;

/// Versions met in one decision, each distinct string parsed and compared once: a large mesh
/// reports tens of thousands of member versions and a handful of distinct strings.
#[derive(Default)]
pub(super) struct VersionTable<'a> {
    ids: FastMap<&'a str, u32>,
    pub(super) strs: Vec<&'a str>,
    /// The two ids found last: neighbouring members mostly run the same version, and the
    /// targets of neighbouring clusters are mostly the same string.
    recent: [u32; 2],
}

impl<'a> VersionTable<'a> {
    pub(super) fn id(&mut self, v: &'a str) -> u32 {
        for &i in &self.recent {
            if let Some(s) = self.strs.get(i as usize)
                && same_str(s, v)
            {
                return i;
            }
        }
        let i = match self.ids.get(v) {
            Some(&i) => i,
            None => {
                let i = self.strs.len() as u32;
                self.strs.push(v);
                self.ids.insert(v, i);
                i
            }
        };
        self.recent = [i, self.recent[0]];
        i
    }

    /// The string of an id (None for [`NONE`]).
    pub(super) fn str(&self, id: u32) -> Option<&'a str> {
        self.strs.get(id as usize).copied()
    }

    /// The rank of each id in version order; versions that compare equal (`1.2`, `1.2.0`)
    /// share a rank, so comparing ranks is comparing with `cmp_versions`.
    pub(super) fn ranks(&self) -> Vec<u32> {
        let cmp = |a: u32, b: u32| cmp_versions(self.strs[a as usize], self.strs[b as usize]);
        let mut order: Vec<u32> = (0..self.strs.len() as u32).collect();
        order.sort_by(|&a, &b| cmp(a, b));
        let mut rank = vec![0; self.strs.len()];
        let mut r = 0;
        for (i, &id) in order.iter().enumerate() {
            if i > 0 && !cmp(order[i - 1], id).is_eq() {
                r += 1;
            }
            rank[id as usize] = r;
        }
        rank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_versions_share_an_id_per_string_and_a_rank() {
        let mut t = VersionTable::default();
        let (a, b, c, a2) = (t.id("1.2"), t.id("1.10.0"), t.id("1.2.0"), t.id("1.2"));
        assert_eq!(a, a2, "one id per distinct string");
        assert_ne!(a, c);
        let rank = t.ranks();
        assert_eq!(rank[a as usize], rank[c as usize], "1.2 == 1.2.0");
        assert!(
            rank[a as usize] < rank[b as usize],
            "1.2 < 1.10.0 (not by text)"
        );
        assert_eq!(t.str(NONE), None);
        assert_eq!(t.str(b), Some("1.10.0"));
    }
}
