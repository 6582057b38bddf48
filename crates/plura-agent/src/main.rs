//! The `plura-agent` binary: its command line (run, or `--check` the config), logging, and the
//! signals that end it; the agent itself is the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use plura_agent::host::SystemHost;
use plura_proto::config::DEFAULT_CONFIG_PATH;

/// sysexits' EX_CONFIG: the unit file does not restart an agent whose configuration is wrong.
const EXIT_CONFIG: u8 = 78;

/// The PLURA host agent.
#[derive(Debug, Parser)]
#[command(name = "plura-agent", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration (and the CA file it names) and print the identity the agent would
    /// log in with, then exit; the server is not contacted.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    plura_proto::logging::init();
    let cli = Cli::parse();
    let config = match plura_agent::load_config(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            plura_proto::logging::report_failure("plura-agent", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check {
        if let Err(e) = plura_agent::trust::client_config((&config).into()) {
            println!("{}: {e:#}", cli.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
        if let Some(warning) = plura_agent::readable_by_others(&cli.config) {
            println!("{}: warning: {warning}", cli.config.display());
        }
        return match plura_agent::identity::current(&SystemHost, config.interface.as_deref()) {
            Ok(identity) => match plura_proto::validate_hostname(&plura_proto::normal_hostname(
                &identity.hostname,
            )) {
                Ok(()) => {
                    println!("{}: ok; identity now {identity}", cli.config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!(
                        "{}: ok; but the server will refuse this host's name {:?}: {e}",
                        cli.config.display(),
                        identity.hostname
                    );
                    ExitCode::FAILURE
                }
            },
            Err(reason) => {
                println!("{}: ok; no identity yet: {reason}", cli.config.display());
                ExitCode::FAILURE
            }
        };
    }
    // One thread is plenty for one heartbeat every few seconds, and keeps the agent small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let config = plura_agent::watch_config(cli.config.clone(), config);
        plura_agent::Agent::new(config, &SystemHost, shutdown)?
            .run()
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            plura_proto::logging::report_failure("plura-agent", format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: saying goodbye"),
        _ = int.recv() => tracing::info!("SIGINT: saying goodbye"),
    }
    token.cancel();
}
