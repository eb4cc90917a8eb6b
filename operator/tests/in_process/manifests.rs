//! Manifest loading: every problem reported with file, object and field; parsing never loops.

use std::path::Path;

use baton::local::manifests::{Manifests, parse_into};

fn parse(text: &str) -> (Manifests, Vec<String>) {
    let mut out = Manifests::default();
    let mut errors = Vec::new();
    parse_into(Path::new("f.yaml"), text, &mut out, &mut errors);
    (out, errors.iter().map(|e| e.to_string()).collect())
}

/// The one error parsing `text` reports.
fn only_error(text: &str) -> String {
    let (_, mut errors) = parse(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn a_syntax_error_is_reported_once_and_parsing_stops() {
    let error = only_error("kind: Cluster\nmetadata: [unclosed\n---\nkind: Mesh\n");
    assert!(
        error.starts_with("f.yaml: document 1: invalid YAML"),
        "{error}"
    );
}

#[test]
fn documents_are_read_in_order_and_empty_ones_skipped() {
    let doc = |n: &str| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {n}\nspec:\n  members:\n  - name: a\n    endpoint: h:1\n"
        )
    };
    let (m, errors) = parse(&format!("---\n{}---\n---\n{}", doc("one"), doc("two")));
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<_> = m
        .clusters
        .iter()
        .map(|(_, c)| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["one", "two"]);
}

#[test]
fn a_wrong_type_names_the_field_path() {
    let error = only_error(
        "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  members:\n  - name: a\n    endpoint: h:1\n    spare: maybe\n",
    );
    assert!(
        error.contains("Cluster/c: spec.members[0].spare"),
        "{error}"
    );
}

#[test]
fn names_must_be_present_and_dns_subdomains() {
    let (_, errors) = parse(
        "apiVersion: baton.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: Bad_Name\nspec: {}\n",
    );
    assert!(errors[0].contains("metadata.name"), "{errors:?}");
    let (_, errors) = parse("apiVersion: baton.dev/v1alpha1\nkind: Mesh\nspec: {}\n");
    assert!(
        errors[0].contains("document 1: metadata.name"),
        "{errors:?}"
    );
}
