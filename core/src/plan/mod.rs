//! The pure planner: no I/O, no clock, no randomness. Time is an input.

pub mod cluster;
pub mod conditions;
pub mod mesh;
pub mod object;
pub mod observe;
pub mod persist;
pub mod software;
pub mod stall;
pub mod trust;
pub mod validate;
pub mod window;

pub use cluster::{
    Admission, ClusterInput, ClusterPlan, Intents, RotationGrant, TaskGrant, cluster_agents,
    plan_cluster, plan_cluster_from, removal_force_name, switchover_step_name,
};
pub use mesh::{
    MeshClusterView, MeshInput, MeshIntents, MeshPlan, admission_for, plan_mesh, plan_mesh_from,
    task_id,
};
pub use object::ObjectView;
pub use observe::*;
