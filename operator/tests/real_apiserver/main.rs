//! Integration tests against a real Kubernetes API server, run by `tests/e2e/apiserver.sh`
//! (which sets `BATON_E2E_KUBECONFIG`); without one, the tests that need it skip themselves.
//! `e2e_kube` and `e2e_kube_scale` share the chart's Lease and agent client Secret and run one
//! at a time (the `kube-apiserver` test group of `.config/nextest.toml`); `schema_parity` also
//! checks the local validator, which needs no server.

#[path = "../bad_manifests/mod.rs"]
mod bad_manifests;
#[path = "../k8s_mock/mod.rs"]
mod k8s_mock;
#[path = "../kube_e2e/mod.rs"]
mod kube_e2e;

mod e2e_kube;
mod e2e_kube_scale;
mod schema_parity;
