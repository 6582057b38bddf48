//! One million registered: a fleet bulk-loaded through the storage layer, then the real server
//! binary started on it, its memory and time to ready, and the console's queries over HTTP.

use std::time::{Duration, Instant};

use anyhow::Context;

use plura_proto::{Agent, AgentCloud, AgentStatus, CloudLabels, Role, Timestamp};
use plura_server::credentials;
use plura_server::store::{self, AgentStore, Imported, ListStore, Store};
use plura_testkit::served::Served;
use plura_testkit::{Database, Db};

use crate::report::Timings;
use crate::usage::Usage;

/// Agents loaded per transaction.
const LOAD_CHUNK: usize = 20_000;
const KINDS: [&str; 3] = ["waf", "siem", "edr"];
const OSES: [&str; 4] = [
    "Ubuntu 24.04",
    "Amazon Linux 2023",
    "Rocky Linux 9",
    "Debian 12",
];
const GROUPS: usize = 40;

/// The `n`th agent of a large fleet: most running, some stopped, a few never heard from; spread
/// over kinds, systems and groups.
pub(crate) fn agent(n: u32, now: Timestamp) -> Agent {
    let [_, a, b, c] = (0x0a00_0000u32 + n).to_be_bytes();
    let status = match n % 20 {
        0 => AgentStatus::Unknown,
        1..=3 => AgentStatus::Stopped,
        _ => AgentStatus::Running,
    };
    let heard = status != AgentStatus::Unknown;
    let n_usize = n as usize;
    Agent {
        id: 0,
        ip: format!("10.{a}.{b}.{c}"),
        hostname: format!("scale-{n}"),
        status,
        enabled: n % 50 != 0,
        group: (n % 8 != 0).then(|| format!("group-{}", n_usize % GROUPS)),
        kind: KINDS[n_usize % KINDS.len()].into(),
        os: OSES[n_usize % OSES.len()].into(),
        version: format!("5.{}.{}", n % 3, n % 7),
        machine_id: Some(format!("i-{n:017x}")),
        source_ip: Some(format!("10.{a}.{b}.{c}")),
        registered_at: now.minus(Duration::from_secs(86_400)),
        last_login_at: heard.then_some(now),
        last_seen_at: heard.then(|| now.minus(Duration::from_millis(u64::from(n % 10_000)))),
        last_takeover_at: None,
        cloud: AgentCloud {
            labels: CloudLabels {
                instance_id: Some(format!("i-{n:017x}")),
                zone: Some(format!(
                    "ap-northeast-2{}",
                    ['a', 'b', 'c', 'd'][n_usize % 4]
                )),
                instance_type: Some("c6i.large".into()),
                asg: Some(format!("{}-asg", KINDS[n_usize % KINDS.len()])),
            },
            ..AgentCloud::default()
        },
    }
}

/// The plura-server binary built beside this one (or beside the folder of a test binary).
pub(crate) fn server_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("plura-server");
    let above = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("plura-server"));
    let found = [Some(beside.clone()), above]
        .into_iter()
        .flatten()
        .find(|p| p.exists());
    found.with_context(|| {
        format!(
            "{} is missing: cargo build --release -p plura-server -p plura-bench",
            beside.display()
        )
    })
}

/// Loads agents `0..agents` as `agent` makes them, with the key hash `key_hash` gives each,
/// through the storage layer; answers how long it took.
pub(crate) async fn load(
    store: &dyn Store,
    agents: u32,
    agent: impl Fn(u32) -> Agent,
    key_hash: impl Fn(u32) -> Option<String>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut n = 0;
    while n < agents {
        let chunk: Vec<Imported> = (n..agents.min(n + LOAD_CHUNK as u32))
            .map(|n| Imported {
                agent: agent(n),
                key_hash: key_hash(n),
            })
            .collect();
        n += chunk.len() as u32;
        store.import(&chunk).await?;
    }
    store.after_bulk_load().await?;
    Ok(started.elapsed())
}

/// Runs `query` `rounds` times; its timings.
async fn timed<F, Fut>(rounds: u32, mut query: F) -> anyhow::Result<Timings>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let sent = Instant::now();
        query().await?;
        latencies.push(sent.elapsed());
    }
    Ok(Timings::new(latencies, started.elapsed()))
}

/// How long after now the server's in-memory search index (PostgreSQL) holds all `agents`.
async fn search_indexed(server: &Served, admin: &str, agents: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let indexed = server
            .metric(admin, "plura_search_index_agents")
            .await
            .context("no plura_search_index_agents on /metrics")?;
        if indexed >= f64::from(agents) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the search index was not loaded within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn scale(db: Db, agents: u32, rounds: u32) -> anyhow::Result<String> {
    let bin = server_bin()?;
    let database = Database::fresh(db).await;
    let store = store::open(&database.url).await?;
    let now = Timestamp::now();
    println!("loading {agents} agents through the storage layer");
    let load = load(&store, agents, |n| agent(n, now), |_| None).await?;
    // As the running server's sweeper would, before anyone asks.
    store.fold_counts().await?;
    println!("  load_s={:.1}", load.as_secs_f64());
    let admin = credentials::create_lasting_token(&store, "bench", Role::Admin).await?;
    let summary_uncached = timed(rounds, || async {
        store.summary().await?;
        Ok(())
    })
    .await?;
    println!("  {}", summary_uncached.figures("summary_uncached"));
    store.close().await;

    println!("starting the server on it");
    let started = Instant::now();
    // A long interval: no agent of the loaded fleet is due to be stopped while it is measured.
    let args = ["--listen", "127.0.0.1:0", "--database", &database.url];
    let server = Served::start(
        &bin.to_string_lossy(),
        &[&args[..], &["--heartbeat-interval", "1h"]].concat(),
    )
    .await;
    let ready = started.elapsed();
    println!("  ready_ms={}", ready.as_millis());

    let http = reqwest::Client::new();
    // The searches are measured once the server's own agent index is loaded.
    let indexed = (ready + search_indexed(&server, &admin, agents).await?).as_millis();
    println!("  search_index_ms={indexed}");
    let mut figures = format!(
        "bench=scale db={db:?} agents={agents} load_s={:.1} load_per_s={:.0} ready_ms={} \
         search_index_ms={indexed} {}",
        load.as_secs_f64(),
        f64::from(agents) / load.as_secs_f64(),
        ready.as_millis(),
        summary_uncached.figures("summary_uncached"),
    );
    let deep_page = (agents / 100 / 2).max(1);
    let queries = [
        ("first_page", "/api/v1/agents?per_page=20".to_string()),
        (
            "sorted_deep",
            format!("/api/v1/agents?per_page=100&sort=-ip&page={deep_page}"),
        ),
        (
            "status_filter",
            "/api/v1/agents?status=stopped&sort=-last_seen_at&per_page=50".into(),
        ),
        ("search", "/api/v1/agents?q=scale-12345&per_page=20".into()),
        (
            "search_common",
            "/api/v1/agents?q=group-17&per_page=20".into(),
        ),
        ("summary", "/api/v1/summary".into()),
    ];
    for (name, path) in queries {
        let url = format!("{}{path}", server.base);
        let timings = timed(rounds, || async {
            http.get(&url)
                .bearer_auth(&admin)
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("GET {path}"))?
                .bytes()
                .await?;
            Ok(())
        })
        .await?;
        println!("  {}", timings.figures(name));
        figures.push(' ');
        figures.push_str(&timings.figures(name));
    }
    let usage = Usage::of(server.process.id());
    figures.push_str(&format!(
        " server_rss_mib={} server_peak_rss_mib={} server_cpu_s={:.1}",
        usage.rss_mib, usage.peak_rss_mib, usage.cpu_s
    ));
    drop(server);
    database.drop_database().await;
    Ok(figures)
}
