// The purity test (src/purity.rs) asks `cargo metadata` for this platform's dependency graph.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=BATON_TARGET={target}");
}
