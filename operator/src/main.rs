//! The `baton` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Declarative, failover-ordered upgrades of HA clusters and meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions generated from the Rust types.
    Crds {
        /// Directory to write into (one file per CRD).
        #[arg(long, default_value = "crds")]
        out: PathBuf,
        /// Only check that the files are up to date; exit 1 when they are not.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out, check } => match baton::api::write_crds(&out, check) {
            Ok(stale) if check && !stale.is_empty() => {
                eprintln!(
                    "stale CRD files (run `baton crds --out {}`): {}",
                    out.display(),
                    stale.join(", ")
                );
                ExitCode::from(1)
            }
            Ok(stale) => {
                if !check {
                    for s in &stale {
                        println!("wrote {s}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
