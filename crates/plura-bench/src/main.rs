//! The `plura-bench` binary: the command line naming each benchmark and its bounds; the loads
//! themselves are the library.

use clap::{Parser, Subcommand};
use plura_testkit::Db;

/// The same allocator as the server binary: the registry benchmarks run the server in-process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generators for PLURA Fleet. Each benchmark's last line is its figures as key=value.
#[derive(Debug, Parser)]
#[command(name = "plura-bench")]
struct Cli {
    /// The server's database: a new SQLite file, or a new database on the PostgreSQL that
    /// PLURA_TEST_PG_URL names (default postgres://postgres:postgres@127.0.0.1:5432/postgres).
    #[arg(long, global = true, default_value = "sqlite", value_parser = database_kind)]
    backend: Db,
    /// heartbeats and fleet: run over HTTPS too (a private CA made for the run), after the same
    /// run in plain HTTP; the figures of both are on the last line, the TLS ones as tls_*.
    #[arg(long, global = true)]
    tls: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Registrations of new agents, then re-logins of the same agents.
    Logins {
        #[arg(long, default_value_t = 20_000)]
        agents: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// The console's list queries over a large fleet (server-side paging).
    List {
        #[arg(long, default_value_t = 100_000)]
        agents: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Parallel CSV exports of a large fleet: time, and the server's memory growth.
    Csv {
        #[arg(long, default_value_t = 50_000)]
        agents: u32,
        /// Exports at once, each with a token of its own (at most the server's limit).
        #[arg(long, default_value_t = plura_server::api::MAX_EXPORTS)]
        parallel: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// A fleet bulk-loaded through the storage layer, then the real server on it: its memory,
    /// time to ready, and the console's queries (needs the plura-server binary built beside).
    Scale {
        #[arg(long, default_value_t = 1_000_000)]
        agents: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// A paced fleet: each agent heartbeats once per interval, spread evenly, to the real server
    /// binary; whether it keeps up and whether any agent is falsely stopped.
    Fleet {
        #[arg(long, default_value_t = 100_000)]
        agents: u32,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Client connections the heartbeats are spread over.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// The cloud watch's reports: a round of verdicts on a silent fleet, steady rounds with the
    /// watched groups' instances, and the coverage and metrics read after them.
    Cloud {
        #[arg(long, default_value_t = 10_000)]
        agents: u32,
        /// Instances of the watched groups (half of them the agents', half with none).
        #[arg(long, default_value_t = 20_000)]
        instances: u32,
        #[arg(long, default_value_t = 10)]
        rounds: u32,
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

/// `sqlite` or `postgres`: the kind of fresh database a bench runs on.
fn database_kind(text: &str) -> Result<Db, String> {
    match text {
        "sqlite" => Ok(Db::Sqlite),
        "postgres" => Ok(Db::Postgres),
        other => Err(format!("{other:?} is not sqlite or postgres")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let database = cli.backend;
    let figures = match cli.bench {
        Bench::Logins {
            agents,
            concurrency,
        } => plura_bench::registry::logins(database, agents, concurrency).await?,
        Bench::Fleet {
            agents,
            interval,
            seconds,
            connections,
        } => {
            let shape = plura_bench::fleet::Shape {
                agents,
                interval,
                seconds,
                connections,
            };
            plura_bench::fleet::fleet(database, shape, cli.tls).await?
        }
        Bench::Scale { agents, rounds } => {
            plura_bench::scale::scale(database, agents, rounds).await?
        }
        Bench::List {
            agents,
            rounds,
            concurrency,
        } => plura_bench::registry::list(database, agents, rounds, concurrency).await?,
        Bench::Csv {
            agents,
            parallel,
            concurrency,
        } => plura_bench::registry::csv(database, agents, parallel, concurrency).await?,
        Bench::Cloud {
            agents,
            instances,
            rounds,
        } => plura_bench::cloud::cloud(database, agents, instances, rounds).await?,
        Bench::Heartbeats {
            agents,
            seconds,
            concurrency,
        } => {
            plura_bench::registry::heartbeats(database, agents, seconds, concurrency, cli.tls)
                .await?
        }
    };
    println!("{figures}");
    Ok(())
}
