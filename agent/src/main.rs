fn main() -> std::process::ExitCode {
    baton_agent::cli::main_entry(&baton_agent::cli::BATON_AGENT, std::env::args_os())
}
