//! The mesh planner's input and output types: data only.
//!
//! Owns: [`MeshInput`] (with [`MeshClusterView`], [`OutsideCluster`], [`MeshIntents`]) and
//! [`MeshPlan`]. May use: the API types and `plan::{object, observe}`. Every stage may read these; none
//! of them calls anything.

use std::collections::BTreeMap;

use crate::api::{ClusterSpec, ClusterStatus, MeshSpec, MeshStatus, Timestamp};
use crate::plan::object::ObjectView;
use crate::plan::observe::{PlanEvent, Wake};

/// A cluster as the mesh planner sees it.
pub struct MeshClusterView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ClusterSpec,
    pub status: Option<&'a ClusterStatus>,
}

/// Imperative intent for a mesh.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MeshIntents {
    /// Start the rollout even though preconditions fail (token, acknowledged once).
    pub force: Option<String>,
    /// Admit no cluster (those admitted finish their steps) without changing the spec.
    pub pause: bool,
    /// Approvals given (`tier/<mesh>/<tier>@<version>`: a deferred tier may start).
    pub approve: Vec<String>,
}

/// Everything one mesh decision reads: the mesh, the clusters it plans and the ones it only
/// sees. Like the cluster planner, no clock and no I/O.
pub struct MeshInput<'a> {
    /// The Mesh: its name, generation, spec and the status the last decision wrote (the
    /// admissions and the log).
    pub mesh: ObjectView<'a, MeshSpec, MeshStatus>,
    /// The clusters of the namespace the mesh may plan, with the status each last wrote.
    pub clusters: &'a [MeshClusterView<'a>],
    /// Clusters of the namespace that exist but are not this mesh's to plan: unreadable ones
    /// (which the mesh may claim: it cannot know their version) and ones another mesh owns.
    pub outside: &'a [OutsideCluster<'a>],
    pub intents: &'a MeshIntents,
    /// The CA the mesh's `spec.certificates` names, as the host read it (None without
    /// `spec.certificates`, or when the host has not read it).
    pub ca: Option<&'a crate::plan::trust::CaInput>,
    /// The instant of the decision: stagger and the preconditions' timeouts count from it.
    pub now: Timestamp,
}

/// A cluster of the mesh's namespace that the mesh sees but does not plan.
#[derive(Clone, Copy, Debug)]
pub struct OutsideCluster<'a> {
    pub name: &'a str,
    /// Labels from its metadata (readable even when the spec is not).
    pub labels: &'a BTreeMap<String, String>,
    pub why: Outside<'a>,
}

/// Why a cluster is outside the mesh's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside<'a> {
    /// Its object does not deserialize (the error says why): its version is unknown.
    Unreadable { error: &'a str },
    /// Another mesh, first by name, claims it.
    OwnedBy { mesh: &'a str },
}

impl OutsideCluster<'_> {
    /// The mesh names it in a tier or selects it by its labels.
    pub(super) fn claimed_by(&self, spec: &MeshSpec) -> bool {
        spec.tiers.iter().any(|t| {
            t.clusters.iter().any(|c| c == self.name)
                || t.selector.as_ref().is_some_and(|s| s.matches(self.labels))
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MeshPlan {
    pub status: MeshStatus,
    pub events: Vec<PlanEvent>,
    pub wake: Wake,
}
