use clap::{Parser, Subcommand};

/// Load generators for PLURA Fleet. Each benchmark's last line is its figures as key=value.
#[derive(Debug, Parser)]
#[command(name = "plura-bench")]
struct Cli {
    /// Database for the server under test (default: a new SQLite file in a temporary folder).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Registrations of new agents, then re-logins of the same agents.
    Logins {
        #[arg(long, default_value_t = 2000)]
        agents: u32,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Heartbeats of logged-in agents, as fast as they are answered, for a bounded time.
    Heartbeats {
        #[arg(long, default_value_t = 1000)]
        agents: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let database = cli.database.as_deref();
    let figures = match cli.bench {
        Bench::Logins {
            agents,
            concurrency,
        } => plura_bench::registry::logins(database, agents, concurrency).await?,
        Bench::Heartbeats {
            agents,
            seconds,
            concurrency,
        } => plura_bench::registry::heartbeats(database, agents, seconds, concurrency).await?,
    };
    println!("{figures}");
    Ok(())
}
