//! How every PLURA binary logs: to stderr (stdout carries the results scripts read, such as
//! tokens and claimed identities), filtered by `PLURA_LOG` (default `info`), in colour only on a
//! terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PLURA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A line that cannot be written (its reader gone: journald restarted, a parent killed)
        // is dropped. By default the failure is reported with eprintln!, which panics on that
        // same broken stderr, inside whatever task was logging.
        .log_internal_errors(false)
        .init();
}

/// Says on stderr why `program` ends. A stderr that cannot be written (its reader gone) is no
/// reason to panic on the way out, which eprintln! would, turning a failure's exit code into 101.
pub fn report_failure(program: &str, error: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{program}: {error}");
}
