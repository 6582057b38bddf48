//! The `plura-server` binary: a thin shell over the library's command line.

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    plura_proto::logging::init();
    match plura_server::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            plura_proto::logging::report_failure("plura-server", format_args!("{e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
