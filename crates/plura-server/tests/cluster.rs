//! Several servers as one: three real plura-server processes on one PostgreSQL database behind
//! a load balancer, with real agents and a simulated fleet heartbeating through it. The server
//! running the sweeps is killed with SIGKILL: another takes the sweeps over, no agent is lost or
//! falsely stopped, and a console's live stream on a surviving server keeps going and shows
//! what is changed through the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use plura_proto::{AgentList, AgentStatus, EventKind, EventList, LoginResponse};
use plura_testkit::balancer::Balancer;
use plura_testkit::process::Process;
use plura_testkit::served::{self, Served};
use plura_testkit::{Database, Db, eventually, login};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const SERVERS: usize = 3;
const REAL_AGENTS: usize = 4;
const SIMULATED_AGENTS: u32 = 300;
/// The heartbeat interval the servers tell agents; three of them are the silence limit.
const INTERVAL: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);

/// A real plura-agent with a hostname of its own (a UTS namespace), on loopback.
fn real_agent(n: usize, conf: &std::path::Path) -> Process {
    let mut command = Command::new("unshare");
    command
        .args([
            "--uts",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$1\" --config \"$2\"",
        ])
        .arg(format!("cluster-agent-{n}"))
        .arg(served::beside(BIN, "plura-agent"))
        .arg(conf)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    Process::spawn(command)
}

/// Simulated agents: each logs in through the balancer, then heartbeats every interval,
/// retrying at once when a connection breaks (a killed server behind the balancer); counts
/// the heartbeats that failed twice in a row.
async fn simulated_fleet(base: String, enrollment: String, stop: CancellationToken) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let failed = Arc::new(AtomicU64::new(0));
    let agents = (0..SIMULATED_AGENTS).map(|n| {
        let (http, base, enrollment, stop, failed) = (
            http.clone(),
            base.clone(),
            enrollment.clone(),
            stop.clone(),
            failed.clone(),
        );
        async move {
            let body = login(
                &format!("10.90.{}.{}", n / 200, n % 200 + 1),
                &format!("sim-{n}"),
            );
            let answer: LoginResponse = http
                .post(format!("{base}/api/v1/agents/login"))
                // Longer than a heartbeat's: 300 first logins at once on a busy machine.
                .timeout(Duration::from_secs(15))
                .bearer_auth(&enrollment)
                .json(&body)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("a simulated login")
                .json()
                .await
                .unwrap();
            // Spread over the interval, as a real fleet is.
            let offset = INTERVAL * n / SIMULATED_AGENTS;
            tokio::time::sleep(offset).await;
            let url = format!("{base}/api/v1/agents/{}/heartbeat", answer.agent_id);
            let mut tick = tokio::time::interval(INTERVAL);
            while !stop.is_cancelled() {
                tick.tick().await;
                let beat = || http.post(&url).bearer_auth(&answer.agent_key).send();
                let ok = |r: &Result<reqwest::Response, reqwest::Error>| {
                    r.as_ref()
                        .is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
                };
                if !ok(&beat().await) && !ok(&beat().await) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    futures::future::join_all(agents).await;
    failed.load(Ordering::Relaxed)
}

/// Whether `server` runs the sweeps now, from its metrics.
async fn leads(server: &Served, admin: &str) -> bool {
    server.metric(admin, "plura_sweep_leader").await == Some(1.0)
}

/// The live stream of `server`, as lines of `event: KIND` and `data: JSON`.
async fn watch(server: &Served, admin: &str) -> mpsc::UnboundedReceiver<String> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/events/stream", server.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (lines, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut pending = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if lines.send(line.trim_end().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    received
}

/// Waits for the stream to tell `event` of agent `id`; answers how long after `since`.
async fn told(
    stream: &mut mpsc::UnboundedReceiver<String>,
    event: &str,
    id: i64,
    since: Instant,
) -> Duration {
    let wanted = format!("\"agent_id\":{id},");
    let mut last_event = String::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = stream.recv().await {
            if let Some(kind) = line.strip_prefix("event: ") {
                last_event = kind.to_string();
            } else if line.starts_with("data: ") && last_event == event && line.contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(found == Ok(true), "the stream told {event} of agent {id}");
    since.elapsed()
}

#[tokio::test]
async fn three_servers_act_as_one_and_survive_losing_the_one_that_sweeps() {
    let uts = std::process::Command::new("unshare")
        .args(["--uts", "true"])
        .status();
    if !uts.is_ok_and(|s| s.success()) {
        eprintln!(
            "SKIPPED three_servers_act_as_one: real agents need hostnames of their own (unshare --uts, as root)"
        );
        return;
    }
    let database = Database::fresh(Db::Postgres).await;
    let enrollment = served::enrollment_token(BIN, &database.url).await;
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(served::start_fast(BIN, &database.url, "127.0.0.1:0").await);
    }
    let admin = servers[0]
        .first_start_token()
        .expect("the first start prints a token");
    let addresses = servers
        .iter()
        .map(|s| s.base.trim_start_matches("http://").parse().unwrap())
        .collect();
    let balancer = Balancer::start(addresses).await;

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("plura.conf");
    let text = format!(
        "server_url={}\nenrollment_token={enrollment}\ninterface=lo\nlogin_hostname_check=0\n",
        balancer.base
    );
    std::fs::write(&conf, text).unwrap();
    let mut agents: Vec<Process> = (0..REAL_AGENTS).map(|n| real_agent(n, &conf)).collect();
    let stop = CancellationToken::new();
    let fleet = tokio::spawn(simulated_fleet(
        balancer.base.clone(),
        enrollment.clone(),
        stop.clone(),
    ));
    let everyone = REAL_AGENTS + SIMULATED_AGENTS as usize;
    let running = eventually("every agent runs", WAIT, || async {
        let agents = servers[1].agents(&admin).await;
        let running = agents.iter().filter(|a| a.status == AgentStatus::Running);
        (running.count() == everyone).then_some(agents)
    })
    .await;
    let real_id = |n: usize| {
        let hostname = format!("cluster-agent-{n}");
        running.iter().find(|a| a.hostname == hostname).unwrap().id
    };

    // One server runs the sweeps.
    let leader = eventually("one server runs the sweeps", WAIT, || async {
        let mut leading = Vec::new();
        for (n, server) in servers.iter().enumerate() {
            if leads(server, &admin).await {
                leading.push(n);
            }
        }
        (leading.len() == 1).then(|| leading[0])
    })
    .await;
    let watcher = (leader + 1) % SERVERS;
    let changer = (leader + 2) % SERVERS;
    let mut stream = watch(&servers[watcher], &admin).await;
    // Each server's search index holds the agents registered through the others.
    for server in &servers {
        eventually("each search index holds every agent", WAIT, || async {
            let indexed = server.metric(&admin, "plura_search_index_agents").await;
            (indexed == Some(everyone as f64)).then_some(())
        })
        .await;
    }

    // A change made through one server shows, live, on another.
    let id = real_id(1);
    let sent = Instant::now();
    let patched = reqwest::Client::new()
        .patch(format!("{}/api/v1/agents/{id}", servers[changer].base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "group": "moved" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let across = told(&mut stream, EventKind::GroupChanged.as_str(), id, sent).await;
    println!("a change through server {changer} was on server {watcher}'s stream after {across:?}");
    // It is found there by its new group.
    let found: AgentList = servers[watcher].get("/api/v1/agents?q=MOVED", &admin).await;
    let found: Vec<i64> = found.items.iter().map(|a| a.id).collect();
    assert_eq!(found, [id], "a search on server {watcher}");

    // The server that sweeps dies; another takes over within the silence limit.
    servers[leader].process.signal("-KILL").await;
    let killed = Instant::now();
    let (watcher_server, changer_server) = (&servers[watcher], &servers[changer]);
    eventually("another server runs the sweeps", WAIT, || async {
        let now_leading = [watcher_server, changer_server];
        for server in now_leading {
            if leads(server, &admin).await {
                return Some(());
            }
        }
        None
    })
    .await;
    println!("sweeps taken over {:?} after the kill", killed.elapsed());

    // A real agent killed without a goodbye is stopped by the new sweeper, and the stream on a
    // surviving server tells it.
    let victim = real_id(0);
    agents[0].signal("-KILL").await;
    let stopped_after = told(
        &mut stream,
        EventKind::Stopped.as_str(),
        victim,
        Instant::now(),
    )
    .await;
    println!("a killed agent was told stopped after {stopped_after:?}");

    // Two more silence limits with one server fewer: nobody else stops.
    tokio::time::sleep(INTERVAL * 6).await;
    stop.cancel();
    let failed_twice = fleet.await.unwrap();
    let agents_now = watcher_server.agents(&admin).await;
    assert_eq!(agents_now.len(), everyone, "no agent lost");
    for agent in &agents_now {
        let events: EventList = watcher_server
            .get(&format!("/api/v1/agents/{}/events", agent.id), &admin)
            .await;
        let stops = events
            .items
            .iter()
            .filter(|e| e.event == EventKind::Stopped)
            .count();
        let expected = usize::from(agent.id == victim);
        assert_eq!(
            stops, expected,
            "agent {} ({}) stops",
            agent.id, agent.hostname
        );
    }
    println!(
        "{everyone} agents over {SERVERS} servers, one killed: 0 falsely stopped, \
         {failed_twice} simulated heartbeats failed twice in a row"
    );
    for agent in &mut agents[1..] {
        assert!(agent.signal("-TERM").await.success());
    }
    database.drop_database().await;
}
