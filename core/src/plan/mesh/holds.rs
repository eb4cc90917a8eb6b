//! Validation and holds: what keeps the mesh from deciding at all this pass.
//!
//! Owns: an invalid spec (`Stalled/InvalidSpec`, admissions withdrawn), a claimed cluster whose
//! object cannot be read (`Stalled/ClusterUnreadable`, admissions kept, nothing new), and the
//! wait for every cluster's first status. May use: `types`, `read`, `plan::validate`,
//! `plan::stall`.

use crate::api::{MeshSpec, MeshStatus};
use crate::plan::stall::Stall;
use crate::plan::validate::{Problem, validate_mesh_indexed};

use super::read::Clusters;
use super::types::{MeshInput, Outside, OutsideCluster};

/// What holds the mesh, read from the spec and the clusters around it.
pub(super) struct Holds<'a> {
    /// Validation problems of the spec against the clusters of its namespace.
    pub(super) problems: Vec<Problem>,
    /// Claimed clusters whose object cannot be read (`(cluster, error)`): their version is
    /// unknown, so the mesh can neither count them done nor check a rule against them.
    pub(super) unreadable: Vec<(&'a str, &'a str)>,
}

pub(super) fn check<'a>(input: &MeshInput<'a>, clusters: &Clusters<'a>) -> Holds<'a> {
    let spec = input.spec;
    let problems = validate_mesh_indexed(spec, &clusters.refs, &clusters.index, |name| {
        input
            .outside
            .iter()
            .find(|o| o.name == name)
            .map(|o| match o.why {
                Outside::Unreadable { .. } => None,
                Outside::OwnedBy { mesh } => Some(format!(
                    "cluster {name:?} belongs to mesh {mesh:?} (a cluster belongs to the first \
                 mesh, by name, that claims it)"
                )),
            })
    });
    Holds {
        problems,
        unreadable: unreadable(spec, input.outside),
    }
}

fn unreadable<'a>(spec: &MeshSpec, outside: &[OutsideCluster<'a>]) -> Vec<(&'a str, &'a str)> {
    outside
        .iter()
        .filter_map(|o| match o.why {
            Outside::Unreadable { error } if o.claimed_by(spec) => Some((o.name, error)),
            _ => None,
        })
        .collect()
}

impl Holds<'_> {
    /// The stall that holds the mesh, if any. An invalid spec withdraws every admission; an
    /// unreadable cluster only stops new ones (clusters already admitted finish their
    /// rollout) until the object is fixed, and the rollout is never called done without it.
    pub(super) fn stall(&self, st: &mut MeshStatus) -> Option<Stall> {
        if !self.problems.is_empty() {
            st.admitted.clear();
            Some(Stall::InvalidSpec(self.problems.clone()))
        } else if !self.unreadable.is_empty() {
            let clusters = self
                .unreadable
                .iter()
                .map(|(n, e)| (n.to_string(), e.to_string()))
                .collect();
            Some(Stall::ClusterUnreadable(clusters))
        } else {
            None
        }
    }
}

/// While nothing is admitted, the mesh never decides on clusters whose state is not known
/// yet: what it waits for then (None: every cluster reported a version).
pub(super) fn unreported(clusters: &Clusters<'_>, st: &MeshStatus) -> Option<String> {
    let unknown: Vec<&str> = clusters
        .sums
        .iter()
        .filter(|s| s.unreported())
        .map(|s| s.name())
        .collect();
    (!unknown.is_empty() && st.admitted.is_empty())
        .then(|| format!("waiting for the first status of {}", unknown.join(", ")))
}
