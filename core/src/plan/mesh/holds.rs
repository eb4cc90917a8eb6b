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
    let spec = input.mesh.spec;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Admitted, Direction, MeshPhase};
    use crate::fixtures::mesh::{NOW, Scene, cluster, mesh};
    use crate::plan::mesh::read;
    use crate::plan::observe::Wake;

    fn holds_of(scene: &Scene, st: &mut MeshStatus) -> (Option<Stall>, Option<String>) {
        scene.with_input(|input| {
            let c = read::read(input);
            let stall = check(input, &c).stall(st);
            (stall, unreported(&c, st))
        })
    }

    /// One tier of a, b and c admitted all at once, with a still on 1.0.0.
    fn three_wide_a_behind() -> Scene {
        Scene::new(
            mesh("2.0.0")
                .tier("t", &["a", "b", "c"])
                .max_parallel(3)
                .build(),
        )
        .with(cluster("a").runs("1.0.0"))
    }

    fn admitted_a() -> MeshStatus {
        MeshStatus {
            admitted: vec![Admitted {
                cluster: "a".into(),
                version: "2.0.0".into(),
                direction: Direction::Upgrade,
                since: NOW,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_mesh_never_decides_before_every_cluster_reported() {
        let scene = three_wide_a_behind().with(cluster("b")).with(cluster("c"));
        let (stall, wait) = holds_of(&scene, &mut MeshStatus::default());
        assert_eq!(stall, None);
        assert_eq!(
            wait.as_deref(),
            Some("waiting for the first status of b, c")
        );
        let plan = scene.plan();
        assert!(
            plan.status.admitted.is_empty(),
            "{:?}",
            plan.status.admitted
        );
        assert_eq!(plan.status.phase, MeshPhase::Waiting);
        assert_eq!(plan.wake, Wake::Busy);
        // Once clusters move, the rollout goes on (their admissions are kept).
        let (_, wait) = holds_of(&scene, &mut admitted_a());
        assert_eq!(wait, None);
    }

    #[test]
    fn an_unreadable_cluster_holds_the_mesh() {
        let scene = three_wide_a_behind()
            .with(cluster("b").ready("2.0.0"))
            .with_unreadable("c", "spec.members: invalid type");
        let mut st = admitted_a();
        let (stall, _) = holds_of(&scene, &mut st);
        assert_eq!(
            stall,
            Some(Stall::ClusterUnreadable(vec![(
                "c".into(),
                "spec.members: invalid type".into()
            )]))
        );
        assert_eq!(st.admitted.len(), 1, "clusters already admitted finish");
        let plan = scene.plan();
        assert_eq!(plan.status.phase, MeshPhase::Stalled);
        assert!(plan.status.admitted.is_empty(), "nothing new is admitted");
        assert_eq!(
            plan.status.progress.as_deref(),
            Some("1/3"),
            "c is not done"
        );
        // An unreadable cluster the mesh does not claim is none of its business.
        let unclaimed = Scene::new(mesh("2.0.0").tier("t", &["a"]).build())
            .with(cluster("a").runs("1.0.0"))
            .with_unreadable("x", "bad");
        assert_eq!(holds_of(&unclaimed, &mut MeshStatus::default()).0, None);
    }

    #[test]
    fn an_invalid_spec_withdraws_every_admission() {
        let scene = Scene::new(mesh("2.0.0").tier("t", &["a", "ghost"]).build())
            .with(cluster("a").runs("1.0.0"))
            .with_owned_by("other", "mesh-b");
        let mut st = admitted_a();
        let (stall, _) = holds_of(&scene, &mut st);
        let Some(Stall::InvalidSpec(problems)) = stall else {
            panic!("{stall:?}")
        };
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("unknown cluster \"ghost\""),
            "{problems:?}"
        );
        assert!(st.admitted.is_empty());
        // A listed cluster another mesh owns is named as such.
        let scene = Scene::new(mesh("2.0.0").tier("t", &["a", "other"]).build())
            .with(cluster("a").runs("1.0.0"))
            .with_owned_by("other", "mesh-b");
        let (stall, _) = holds_of(&scene, &mut MeshStatus::default());
        assert!(
            stall
                .unwrap()
                .message()
                .contains("belongs to mesh \"mesh-b\""),
            "owned by another mesh"
        );
    }
}
