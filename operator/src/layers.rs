//! The layering rule, checked: imports between the folders of this crate run downward only,
//! app → (k8s, local, kubectl, cli, demo) → reconcile → plan/api (`docs/architecture.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The `crate::<module>` paths each folder of `src/` uses outside comments.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("source folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for e in std::fs::read_dir(&src).expect("src").flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let folder = e.file_name().to_string_lossy().into_owned();
        let mut files = Vec::new();
        walk(&e.path(), &mut files);
        let mut used = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source file");
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != folder {
                        used.insert(name);
                    }
                }
            }
        }
        graph.insert(folder, used);
    }
    graph
}

#[test]
fn reconcile_imports_no_host() {
    let graph = imports();
    let reconcile = &graph["reconcile"];
    let allowed: BTreeSet<String> = ["api", "plan", "sim"].map(String::from).into();
    assert!(
        reconcile.is_subset(&allowed),
        "reconcile/ may only use api, plan and sim, uses {reconcile:?}"
    );
}

#[test]
fn no_two_folders_import_each_other() {
    let graph = imports();
    for (folder, used) in &graph {
        assert!(
            folder == "app" || !used.contains("app"),
            "{folder}/ imports app/, which sits above every layer"
        );
    }
    // No cycle of any length between folders.
    fn visit<'a>(
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        at: &'a str,
        path: &mut Vec<&'a str>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == at) {
            panic!(
                "folders import each other: {}",
                path[i..].join(" → ") + " → " + at
            );
        }
        path.push(at);
        for next in graph.get(at).into_iter().flatten() {
            if graph.contains_key(next) {
                visit(graph, next, path);
            }
        }
        path.pop();
    }
    for folder in graph.keys() {
        visit(&graph, folder, &mut Vec::new());
    }
}
