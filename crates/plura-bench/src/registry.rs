//! Benchmarks of the agent registry: logins (registrations and re-logins) and heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use plura_proto::{LoginRequest, LoginResponse, Role};

use plura_server::fleet::LivenessPolicy;
use plura_testkit::{Db, TestServer};

use crate::report::Timings;
use crate::usage::Usage;
use crate::wire::Connection;
use tokio_rustls::rustls::ClientConfig;

/// A real server on loopback over a fresh database, with production liveness settings.
async fn server(db: Db) -> TestServer {
    TestServer::start_with(db, LivenessPolicy::default()).await
}

/// The `n`th agent of the fleet: its own address, hostname and instance id.
pub(crate) fn agent(n: u32) -> LoginRequest {
    let [_, a, b, c] = (0x0a00_0000u32 + n).to_be_bytes();
    LoginRequest {
        machine_id: Some(format!("i-{n:017x}")),
        ..plura_testkit::login(&format!("10.{a}.{b}.{c}"), &format!("bench-{n}"))
    }
}

/// Runs `concurrency` workers, each with a connection of its own to `base` (over TLS with
/// `tls`), until each says it is done; answers what they gave, in no particular order.
async fn workers<T, W, F>(
    base: &str,
    tls: Option<Arc<ClientConfig>>,
    concurrency: usize,
    work: W,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    W: Fn(Connection) -> F,
    F: Future<Output = anyhow::Result<Vec<T>>> + Send + 'static,
{
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(work(Connection::new(base, tls.clone()))))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// Logs in `agents` agents, `concurrency` at a time; answers each one's id and the timings.
async fn login_all(
    target: &TestServer,
    agents: u32,
    concurrency: usize,
) -> anyhow::Result<(Vec<LoginResponse>, Timings)> {
    login_each(target, agents, concurrency, agent).await
}

/// Logs in `agents` agents as `agent` makes them, `concurrency` at a time.
pub(crate) async fn login_each(
    target: &TestServer,
    agents: u32,
    concurrency: usize,
    agent: fn(u32) -> LoginRequest,
) -> anyhow::Result<(Vec<LoginResponse>, Timings)> {
    let next = Arc::new(AtomicU32::new(0));
    let enrollment: Arc<str> = target.enrollment.clone().into();
    let started = Instant::now();
    let results = workers(
        &target.base,
        target.client_tls(),
        concurrency,
        |mut connection| {
            let (next, enrollment) = (next.clone(), enrollment.clone());
            async move {
                let mut done = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= agents {
                        return Ok(done);
                    }
                    let body = serde_json::to_vec(&agent(n))?;
                    let sent = Instant::now();
                    let status = connection
                        .post("/api/v1/agents/login", &enrollment, Some(&body))
                        .await?;
                    ensure!(
                        (200..300).contains(&status),
                        "a login: {status} {}",
                        String::from_utf8_lossy(connection.body())
                    );
                    let login: LoginResponse = serde_json::from_slice(connection.body())?;
                    done.push((login, sent.elapsed()));
                }
            }
        },
    )
    .await
    .context("a login failed")?;
    let elapsed = started.elapsed();
    let (logins, latencies) = results.into_iter().unzip();
    Ok((logins, Timings::new(latencies, elapsed)))
}

/// `rounds` reads of `url` one after another, with `token`.
pub(crate) async fn timed_gets(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    rounds: u32,
) -> anyhow::Result<Timings> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let sent = Instant::now();
        http.get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(sent.elapsed());
    }
    Ok(Timings::new(latencies, started.elapsed()))
}

/// `agents` first logins (registrations), then the same agents logging in again; beside them, the
/// disk's flush rate in the database's folder, which a login per transaction could not beat.
pub async fn logins(db: Db, agents: u32, concurrency: usize) -> anyhow::Result<String> {
    let target = server(db).await;
    let (fsync_per_s, fsync_measured_by) = flush_rate(&target, db).await?;
    println!("  fsync_per_s={fsync_per_s:.0} fsync_measured_by={fsync_measured_by}");
    println!("registering {agents} agents, {concurrency} at a time");
    let cpu_before = Usage::current().cpu_s;
    let (first, registrations) = login_all(&target, agents, concurrency).await?;
    // Client and server together: on a small machine the CPU, not the disk, is the ceiling.
    let cpu_us_per_registration = (Usage::current().cpu_s - cpu_before) * 1e6 / f64::from(agents);
    ensure!(
        first.iter().all(|l| l.created),
        "every first login registers"
    );
    println!("  {}", registrations.figures("registrations"));
    println!("logging the same {agents} agents in again");
    let (again, relogins) = login_all(&target, agents, concurrency).await?;
    ensure!(again.iter().all(|l| !l.created), "no re-login registers");
    println!("  {}", relogins.figures("relogins"));
    target.finish().await;
    Ok(format!(
        "bench=logins db={db:?} agents={agents} concurrency={concurrency} {} {} \
         fsync_per_s={fsync_per_s:.0} fsync_measured_by={fsync_measured_by} \
         registrations_per_fsync={:.2} relogins_per_fsync={:.2} \
         cpu_us_per_registration={cpu_us_per_registration:.0} cores={}",
        registrations.figures("registrations"),
        relogins.figures("relogins"),
        registrations.per_second() / fsync_per_s,
        relogins.per_second() / fsync_per_s,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ))
}

/// The database's flush rate, and how it was measured: on the disk beside it when it is here,
/// else through a PostgreSQL server on another host, by its commits one after another.
async fn flush_rate(target: &TestServer, db: Db) -> anyhow::Result<(f64, &'static str)> {
    let time = Duration::from_secs(2);
    match target.data_directory().await {
        None if db == Db::Postgres => {
            println!("measuring the database's commits one after another (its disk is not here)");
            let rate = crate::disk::commit_rate(target.database_url(), time).await?;
            Ok((rate, "commits"))
        }
        dir => {
            println!("measuring the disk's flush rate beside the database");
            Ok((crate::disk::fsync_rate_near(dir, time)?, "disk"))
        }
    }
}

/// The console's list queries (one page, sorted, filtered, searched) over a fleet of `agents`,
/// each query `rounds` times.
pub async fn list(db: Db, agents: u32, rounds: u32, concurrency: usize) -> anyhow::Result<String> {
    let target = server(db).await;
    let http = reqwest::Client::new();
    println!("registering {agents} agents, {concurrency} at a time");
    let (_, registrations) = login_all(&target, agents, concurrency).await?;
    println!("  {}", registrations.figures("registrations"));
    let mut figures = format!("bench=list db={db:?} agents={agents} rounds={rounds}");
    for (name, query) in [
        ("first_page", "per_page=20"),
        ("by_ip_desc", "per_page=100&sort=-ip&page=50"),
        (
            "running_by_seen",
            "status=running&sort=-last_seen_at&per_page=50",
        ),
        ("search", "q=bench-1234&per_page=20"),
        ("summary", ""),
    ] {
        let url = if name == "summary" {
            format!("{}/api/v1/summary", target.base)
        } else {
            format!("{}/api/v1/agents?{query}", target.base)
        };
        let timings = timed_gets(&http, &url, &target.admin, rounds).await?;
        println!("  {}", timings.figures(name));
        figures.push(' ');
        figures.push_str(&timings.figures(name));
    }
    target.finish().await;
    Ok(figures)
}

/// `parallel` CSV exports of a fleet of `agents` at once: how long they take, and how much the
/// server's memory grows for them (it streams, so it should not grow with the fleet).
pub async fn csv(
    db: Db,
    agents: u32,
    parallel: usize,
    concurrency: usize,
) -> anyhow::Result<String> {
    let target = server(db).await;
    let http = reqwest::Client::new();
    println!("registering {agents} agents, {concurrency} at a time");
    login_all(&target, agents, concurrency).await?;
    let Usage {
        rss_mib: before,
        peak_rss_mib: peak_before,
        ..
    } = Usage::current();
    println!(
        "{parallel} CSV exports at once (resident {before} MiB, peak so far {peak_before} MiB)"
    );
    ensure!(
        parallel <= plura_server::api::MAX_EXPORTS,
        "the server runs at most {} exports at once",
        plura_server::api::MAX_EXPORTS
    );
    // A token each: a credential may run only a few exports at once.
    let mut tokens = Vec::new();
    for n in 0..parallel {
        let name = format!("bench-export-{n}");
        tokens.push(
            plura_server::credentials::create_lasting_token(target.store(), &name, Role::Monitor)
                .await?,
        );
    }
    let url = format!("{}/api/v1/agents.csv", target.base);
    let started = Instant::now();
    let exports = tokens.iter().map(|token| {
        let request = http.get(&url).bearer_auth(token);
        async move {
            let mut response = request.send().await?.error_for_status()?;
            let (mut bytes, mut lines) = (0usize, 0usize);
            while let Some(chunk) = response.chunk().await? {
                bytes += chunk.len();
                lines += chunk.iter().filter(|b| **b == b'\n').count();
            }
            anyhow::Ok((bytes, lines))
        }
    });
    let results = futures::future::join_all(exports).await;
    let elapsed = started.elapsed();
    for result in &results {
        let (_, lines) = result
            .as_ref()
            .map_err(|e| anyhow::anyhow!("an export failed: {e}"))?;
        ensure!(*lines == agents as usize + 1, "an export has {lines} lines");
    }
    let bytes = results[0].as_ref().map(|r| r.0).unwrap_or(0);
    let Usage {
        rss_mib: after,
        peak_rss_mib: peak_after,
        ..
    } = Usage::current();
    target.finish().await;
    Ok(format!(
        "bench=csv db={db:?} agents={agents} parallel={parallel} csv_bytes={bytes} \
         seconds={:.2} rss_before_mib={before} rss_after_mib={after} \
         peak_growth_mib={}",
        elapsed.as_secs_f64(),
        peak_after.saturating_sub(peak_before)
    ))
}

/// Sends `calls` (path, bearer) to `base` round and round as fast as `concurrency` allows, for
/// `seconds`.
async fn flood(
    base: &str,
    tls: Option<Arc<ClientConfig>>,
    calls: Vec<(String, String)>,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Timings> {
    let calls = Arc::new(calls);
    let next = Arc::new(AtomicU32::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let latencies = workers(base, tls, concurrency, |mut connection| {
        let (calls, next) = (calls.clone(), next.clone());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let (path, key) = &calls[n % calls.len()];
                let sent = Instant::now();
                let status = connection.post_empty(path, key).await?;
                ensure!((200..300).contains(&status), "a call to {path}: {status}");
                latencies.push(sent.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
    .context("a call failed")?;
    Ok(Timings::new(latencies, started.elapsed()))
}

/// The ceiling for a heartbeat on this machine: an axum handler that does nothing (204) on the
/// same route, over the same kind of loopback connection, driven the same way.
async fn trivial_handler(agents: u32, seconds: u64, concurrency: usize) -> anyhow::Result<Timings> {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/api/v1/agents/{id}/heartbeat",
        post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let served = tokio::spawn(async move { axum::serve(listener, router).await });
    let calls: Vec<(String, String)> = (1..=agents)
        .map(|id| (format!("/api/v1/agents/{id}/heartbeat"), "key".into()))
        .collect();
    let timings = flood(&base, None, calls, seconds, concurrency).await;
    served.abort();
    timings
}

/// `agents` logged-in agents send heartbeats as fast as `concurrency` allows, for `seconds`;
/// then a trivial handler the same way, for the ceiling; with `tls`, then the heartbeats again
/// over HTTPS, beside the plain ones.
pub async fn heartbeats(
    db: Db,
    agents: u32,
    seconds: u64,
    concurrency: usize,
    tls: bool,
) -> anyhow::Result<String> {
    let plain = heartbeats_to(server(db).await, agents, seconds, concurrency).await?;
    println!("  {}", plain.figures("heartbeats"));
    println!("a handler that does nothing, the same way");
    let trivial = trivial_handler(agents, seconds, concurrency).await?;
    println!("  {}", trivial.figures("trivial"));
    let mut figures = format!(
        "bench=heartbeats db={db:?} agents={agents} seconds={seconds} concurrency={concurrency} \
         {} {} of_trivial={:.2}",
        plain.figures("heartbeats"),
        trivial.figures("trivial"),
        plain.per_second() / trivial.per_second()
    );
    if tls {
        println!("the same heartbeats over TLS");
        let ca = Arc::new(plura_testkit::tls::TestCa::new());
        let target = TestServer::start_tls(db, LivenessPolicy::default(), ca).await;
        let over_tls = heartbeats_to(target, agents, seconds, concurrency).await?;
        println!("  {}", over_tls.figures("tls_heartbeats"));
        figures += &format!(
            " {} tls_of_plain={:.2}",
            over_tls.figures("tls_heartbeats"),
            over_tls.per_second() / plain.per_second()
        );
    }
    Ok(figures)
}

/// Logs `agents` in to `target`, then floods it with their heartbeats; finishes it.
async fn heartbeats_to(
    target: TestServer,
    agents: u32,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Timings> {
    let (logins, _) = login_all(&target, agents, concurrency).await?;
    let calls: Vec<(String, String)> = logins
        .into_iter()
        .map(|l| {
            (
                format!("/api/v1/agents/{}/heartbeat", l.agent_id),
                l.agent_key,
            )
        })
        .collect();
    println!(
        "{agents} agents sending heartbeats to {} for {seconds}s, {concurrency} at a time",
        target.base
    );
    let timings = flood(
        &target.base,
        target.client_tls(),
        calls,
        seconds,
        concurrency,
    )
    .await?;
    target.finish().await;
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_benchmarks_run_and_report_figures() {
        let figures = logins(Db::Sqlite, 40, 8).await.unwrap();
        assert!(figures.contains("registrations=40 "), "{figures}");
        assert!(figures.contains("relogins=40 "), "{figures}");
        assert!(figures.contains(" fsync_measured_by=disk "), "{figures}");
        let figures = list(Db::Sqlite, 30, 2, 4).await.unwrap();
        assert!(figures.contains("first_page=2 "), "{figures}");
        let figures = csv(Db::Sqlite, 30, 2, 4).await.unwrap();
        assert!(figures.contains(" agents=30 parallel=2 "), "{figures}");
        let figures = heartbeats(Db::Sqlite, 10, 1, 4, true).await.unwrap();
        assert!(figures.contains(" tls_heartbeats_per_s="), "{figures}");
        assert!(figures.contains(" agents=10 "), "{figures}");
        let count: u64 = figures
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("heartbeats="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(count > 0, "{figures}");
    }

    #[tokio::test]
    async fn the_scale_and_fleet_benchmarks_run_against_the_real_server() {
        let figures = crate::scale::scale(Db::Sqlite, 2000, 2).await.unwrap();
        assert!(figures.contains(" agents=2000 "), "{figures}");
        assert!(figures.contains(" search_p99_ms="), "{figures}");
        let shape = crate::fleet::Shape {
            agents: 300,
            interval: Duration::from_secs(1),
            seconds: 3,
            connections: 4,
        };
        let figures = crate::fleet::fleet(Db::Sqlite, shape, true).await.unwrap();
        assert!(figures.contains(" false_stops=0 "), "{figures}");
        assert!(figures.contains(" failed=0 "), "{figures}");
        assert!(figures.contains(" tls_false_stops=0 "), "{figures}");
        assert!(figures.contains(" tls_failed=0 "), "{figures}");
    }
}
