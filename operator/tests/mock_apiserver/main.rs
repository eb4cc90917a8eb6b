//! Integration tests of the Kubernetes host and the kubectl plugin against a mock API server
//! (`k8s_mock`: the kube-rs client over a tower-test service), some with real agents.

#[path = "../k8s_mock/mod.rs"]
mod k8s_mock;

mod k8s_controllers;
mod k8s_http;
mod k8s_lease;
mod k8s_operator_wiring;
mod k8s_real_agents;
mod k8s_relations;
mod kubectl_plugin;
