//! The `plura-eni` binary: a thin shell over the library's command line.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    plura_proto::logging::init();
    match plura_eni::cli::Cli::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            plura_proto::logging::report_failure("plura-eni", &e);
            e.exit_code()
        }
    }
}
