//! A paced fleet, not a flood: N agents each send a heartbeat once per interval, spread evenly
//! over it, as a real fleet does, to the real server binary, for a bounded time. What counts is
//! whether the server keeps up (the schedule holds, latency stays low) and whether any agent is
//! falsely taken for stopped.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::ensure;
use tokio::time::sleep_until;

use plura_proto::{Agent, AgentStatus, Role, Summary, Timestamp};
use plura_server::store::{self, ListFilter, ListStore, Store};
use plura_server::{credentials, secret};
use plura_testkit::served::Served;
use plura_testkit::tls::TestCa;
use plura_testkit::{Database, Db};

use crate::report::Timings;
use crate::usage::Usage;
use crate::wire::Connection;

/// What one client connection saw.
#[derive(Default)]
struct Sent {
    latencies: Vec<Duration>,
    failed: u64,
    /// The most a heartbeat was sent after its time.
    worst_lag: Duration,
    /// The same over the last interval of the run: whether the schedule holds in the end,
    /// after the first round (when a fresh server looks every agent up once) is absorbed.
    last_lag: Duration,
}

/// Sends the heartbeats of `agents` (id, key, offset in the interval) over one connection,
/// each at its time, until `end`.
async fn pace(
    mut connection: Connection,
    agents: Vec<(i64, String, Duration)>,
    interval: Duration,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Sent {
    let mut sent = Sent::default();
    let mut round = 0u32;
    let mut path = String::new();
    loop {
        for (id, key, offset) in &agents {
            let due = start + interval * round + *offset;
            if due >= end {
                return sent;
            }
            // A client that fell behind stops at the end too (the run is bounded in time),
            // still owing this heartbeat.
            let now = tokio::time::Instant::now();
            if now >= end {
                sent.last_lag = sent.last_lag.max(now - due);
                return sent;
            }
            sleep_until(due).await;
            let lag = due.elapsed();
            sent.worst_lag = sent.worst_lag.max(lag);
            if due + interval >= end {
                sent.last_lag = sent.last_lag.max(lag);
            }
            let began = Instant::now();
            path.clear();
            let _ = write!(path, "/api/v1/agents/{id}/heartbeat");
            match connection.post_empty(&path, key).await {
                Ok(204) => sent.latencies.push(began.elapsed()),
                _ => sent.failed += 1,
            }
        }
        round += 1;
    }
}

/// How large a fleet, how often it beats, for how long, over how many connections.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub agents: u32,
    pub interval: Duration,
    pub seconds: u64,
    pub connections: usize,
}

/// The paced fleet in plain HTTP; with `tls`, then again over HTTPS, its figures beside the
/// plain ones as `tls_*`.
pub async fn fleet(db: Db, shape: Shape, tls: bool) -> anyhow::Result<String> {
    let plain = paced_fleet(db, shape, None).await?;
    if !tls {
        return Ok(plain);
    }
    println!("  {plain}");
    println!("the same fleet over TLS");
    let over_tls = paced_fleet(db, shape, Some(&TestCa::new())).await?;
    let prefixed: Vec<String> = over_tls
        .split_whitespace()
        .filter(|kv| !kv.starts_with("bench=") && !kv.starts_with("db="))
        .map(|kv| format!("tls_{kv}"))
        .collect();
    Ok(format!("{plain} {}", prefixed.join(" ")))
}

async fn paced_fleet(db: Db, shape: Shape, tls: Option<&TestCa>) -> anyhow::Result<String> {
    let Shape {
        agents,
        interval,
        seconds,
        connections,
    } = shape;
    let bin = crate::scale::server_bin()?;
    let database = Database::fresh(db).await;
    // The fleet is loaded with keys through the storage layer, as if each agent had logged in
    // just now: registering half a million over HTTP would take longer than the silence limit,
    // and the first ones would be stopped before the last ones were in.
    println!("loading {agents} running agents with their keys");
    let keys: Vec<String> = (0..agents).map(|_| secret::new_agent_key()).collect();
    let store = store::open(&database.url).await?;
    let now = Timestamp::now();
    let running = |n| Agent {
        status: AgentStatus::Running,
        enabled: true,
        last_login_at: Some(now),
        last_seen_at: Some(now),
        ..crate::scale::agent(n, now)
    };
    let took = crate::scale::load(&store, agents, running, |n| {
        Some(secret::hash_token(&keys[n as usize]))
    })
    .await?;
    println!("  load_s={:.1}", took.as_secs_f64());
    let listed = store.list(&ListFilter::default()).await?.agents;
    let admin = credentials::create_lasting_token(&store, "bench", Role::Admin).await?;
    store.close().await;
    let ids: HashMap<String, i64> = listed.into_iter().map(|a| (a.hostname, a.id)).collect();

    let interval_arg = format!("{}ms", interval.as_millis());
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database.url,
        "--heartbeat-interval",
        &interval_arg,
    ];
    if let Some(ca) = tls {
        args.extend([
            "--tls-cert",
            path(&ca.files.cert)?,
            "--tls-key",
            path(&ca.files.key)?,
        ]);
    }
    let server = Served::start(&bin.to_string_lossy(), &args).await;
    let client_tls = tls.map(TestCa::client_config);

    // Agent i beats at i/N of the interval; each connection takes every k-th agent.
    let mut shares: Vec<Vec<(i64, String, Duration)>> = vec![Vec::new(); connections];
    for (n, key) in keys.into_iter().enumerate() {
        let id = ids[&crate::scale::agent(n as u32, now).hostname];
        let offset = interval.mul_f64(n as f64 / f64::from(agents));
        shares[n % connections].push((id, key, offset));
    }
    println!(
        "{agents} agents beating every {interval:?} for {seconds} s over {connections} connections"
    );
    let before = Usage::of(server.process.id());
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let connection = Connection::new(&server.base, client_tls.clone());
            tokio::spawn(pace(connection, share, interval, start, end))
        })
        .collect();
    let mut all = Sent::default();
    for task in tasks {
        let sent = task.await?;
        all.latencies.extend(sent.latencies);
        all.failed += sent.failed;
        all.worst_lag = all.worst_lag.max(sent.worst_lag);
        all.last_lag = all.last_lag.max(sent.last_lag);
    }
    let elapsed = start.elapsed();
    let after = Usage::of(server.process.id());
    let http = tls.map_or_else(reqwest::Client::new, TestCa::http);
    let summary: Summary = http
        .get(format!("{}/api/v1/summary", server.base))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let timings = Timings::new(all.latencies, elapsed);
    let cpu = (after.cpu_s - before.cpu_s) / elapsed.as_secs_f64();
    drop(server);
    database.drop_database().await;
    ensure!(
        summary.registered == u64::from(agents),
        "every agent registered"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(format!(
        "bench=fleet db={db:?} agents={agents} interval_s={} seconds={seconds} \
         connections={connections} heartbeats_per_s={:.0} target_per_s={:.0} \
         heartbeat_p50_ms={:.2} heartbeat_p99_ms={:.2} worst_lag_ms={:.0} last_interval_lag_ms={:.0} failed={} \
         false_stops={} server_rss_mib={} server_cpu_cores={cpu:.2}",
        interval.as_secs_f64(),
        timings.per_second(),
        f64::from(agents) / interval.as_secs_f64(),
        ms(timings.quantile(0.5)),
        ms(timings.quantile(0.99)),
        ms(all.worst_lag),
        ms(all.last_lag),
        all.failed,
        summary.stopped,
        after.rss_mib,
    ))
}

fn path(path: &std::path::Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}
