//! Integration tests that run in this process alone, with no agent, no `baton` process and no
//! Kubernetes API server: the planner through the simulator, validation and the CRDs' CEL
//! rules, manifest loading (and its fuzzing), the generated CRDs and the Argo CD health checks.
//! One binary, so the crate is linked once for all of them.

mod argocd_health;
mod cel_rules;
mod crds_in_sync;
mod e2e_manifests;
mod fuzz_manifests;
mod manifests;
mod sim_log_parents;
mod sim_properties;
mod sim_scenarios;
mod sim_topology;
mod validation;
