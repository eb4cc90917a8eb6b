//! Counting the operator's own API requests (`baton_kube_requests_total{verb,resource,code}`).
//!
//! The client the operator is given is wrapped in a service that sends every request through
//! it and counts the answer, so every call site (caches, status writes, events, the Lease,
//! the CRD check) is counted without being touched. A watch is counted once, when it opens.

use http::{Method, Request, Response, Uri};
use kube::Client;
use kube::client::Body;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, list, watch, create, update, patch, delete (Kubernetes verbs).
    pub verb: String,
    /// Plural resource, with the subresource: `clusters`, `clusters/status`, `leases`.
    pub resource: String,
    /// HTTP status code, or `error` when no answer came back.
    pub code: String,
}

pub type RequestCounter = Family<RequestLabels, Counter>;

/// A client that sends through `client` and counts each request in `counter`.
pub fn counted(client: Client, counter: RequestCounter) -> Client {
    let ns = client.default_namespace().to_string();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let (client, counter) = (client.clone(), counter.clone());
        let (verb, resource) = classify(req.method(), req.uri());
        async move {
            let res: Result<Response<Body>, kube::Error> = client.send(req).await;
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            counter
                .get_or_create(&RequestLabels {
                    verb: verb.to_string(),
                    resource,
                    code,
                })
                .inc();
            res
        }
    });
    Client::new(svc, ns)
}

/// The Kubernetes verb and the resource of a request, from its method and path.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let parts: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
    // /api/v1/... or /apis/group/version/...
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or(&[]),
        Some(&"apis") => parts.get(3..).unwrap_or(&[]),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => (uri.path().trim_start_matches('/').to_string(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    };
    let query = uri.query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources_follow_the_path() {
        let cl = "/apis/baton.dev/v1alpha1/namespaces/ns/clusters";
        let lease = "/apis/coordination.k8s.io/v1/namespaces/baton-system/leases/baton-operator";
        let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.baton.dev";
        let cases = [
            (Method::GET, cl.to_string(), "list", "clusters"),
            (
                Method::GET,
                format!("{cl}?watch=true&resourceVersion=5"),
                "watch",
                "clusters",
            ),
            (
                Method::PATCH,
                format!("{cl}/web/status?fieldManager=x"),
                "patch",
                "clusters/status",
            ),
            (
                Method::GET,
                "/apis/baton.dev/v1alpha1/clusters".into(),
                "list",
                "clusters",
            ),
            (Method::PUT, lease.into(), "update", "leases"),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/ns/events".into(),
                "create",
                "events",
            ),
            (Method::GET, crd.into(), "get", "customresourcedefinitions"),
            (Method::GET, "/version".into(), "list", "version"),
        ];
        for (method, uri, verb, resource) in cases {
            assert_eq!(c(method, &uri), (verb, resource.into()), "{uri}");
        }
    }
}
