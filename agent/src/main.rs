use clap::Parser;
use tracing_subscriber::EnvFilter;

use baton_agent::cli::{Cli, Command, gen_certs, run};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Some(Command::GenCerts(args)) => gen_certs(&args).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
        None => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run(cli.run)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("baton-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
