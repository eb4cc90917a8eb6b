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
        /// Also write the Helm chart's CRD templates into CHART/templates/crds/.
        #[arg(long, value_name = "CHART")]
        chart: Option<PathBuf>,
        /// Only check that the files are up to date; exit 1 when they are not.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out, chart, check } => {
            let written = baton::api::write_crds(&out, check).and_then(|mut stale| {
                if let Some(chart) = &chart {
                    stale.extend(baton::api::write_chart_crds(chart, check)?);
                }
                Ok(stale)
            });
            match written {
                Ok(stale) if check && !stale.is_empty() => {
                    eprintln!(
                        "stale CRD files (run `{}`): {}",
                        baton::api::REGENERATE,
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
            }
        }
    }
}
