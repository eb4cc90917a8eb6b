//! Writes the generated CRD documents (`baton crds`): `crds/` and the chart's CRD templates.
//! The documents themselves come from `api`, which does no I/O.

use crate::api::{CHART_CRD_DIR, chart_crd_files, crd_files};

/// Write the CRD files into `dir`, or with `check` only compare and list the stale files.
pub fn write_crds(dir: &std::path::Path, check: bool) -> anyhow::Result<Vec<String>> {
    write_generated(dir, crd_files()?, check)
}

/// Write the chart's CRD templates into `<chart>/templates/crds/`, or with `check` only compare
/// and list the stale files.
pub fn write_chart_crds(chart: &std::path::Path, check: bool) -> anyhow::Result<Vec<String>> {
    write_generated(&chart.join(CHART_CRD_DIR), chart_crd_files()?, check)
}

/// Bring `dir` to exactly `files`: rewrite what differs and, so that a renamed or dropped kind
/// leaves nothing behind, remove other `*.yaml` files. Returns the paths that were (or, with
/// `check`, would be) written or removed.
fn write_generated(
    dir: &std::path::Path,
    files: Vec<(String, String)>,
    check: bool,
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let mut stale = Vec::new();
    for (name, body) in &files {
        let path = dir.join(name);
        let current = match std::fs::read_to_string(&path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if current.as_deref() != Some(body.as_str()) {
            stale.push(path.display().to_string());
            if !check {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(&path, body)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stale),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".yaml") && !files.iter().any(|(f, _)| f == name) {
            stale.push(path.display().to_string());
            if !check {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    Ok(stale)
}
