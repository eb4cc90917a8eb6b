fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    let changed = baton::api::write_crds(&out, false)?;
    println!("{changed:?}");
    Ok(())
}
