//! A database outage is the server's blindness, not the agents' silence: real servers on a
//! PostgreSQL of the test's own that is stopped, killed and turned read-only under them, and a
//! SQLite file on a file system that fills up and turns read-only. Agents heard through any
//! server stay running; what cannot be written is answered 503 with the reason and a time to try
//! again, never 500 and never a hang; everything comes back by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use plura_proto::{AgentStatus, LoginResponse};
use plura_testkit::link::Link;
use plura_testkit::private_postgres::PrivatePostgres;
use plura_testkit::served::{self, Served};
use plura_testkit::{eventually, login};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
/// The agents' heartbeat interval: the silence limit is three of them.
const INTERVAL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(60);

async fn start(database: &str) -> Served {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        database,
        "--heartbeat-interval",
        "2s",
        "--logins-per-source",
        "0",
    ];
    Served::start(BIN, &args).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn log_in(base: &str, enrollment: &str, n: u32) -> reqwest::Response {
    http()
        .post(format!("{base}/api/v1/agents/login"))
        .bearer_auth(enrollment)
        .json(&login(&format!("10.70.0.{n}"), &format!("outage-{n}")))
        .send()
        .await
        .unwrap()
}

/// Agents `first..first + count` logged in through `base`, each heartbeating every interval
/// until `stop`; counts the heartbeats not answered 204.
async fn heartbeating(
    base: String,
    enrollment: String,
    first: u32,
    count: u32,
    stop: CancellationToken,
) -> u64 {
    let refused = Arc::new(AtomicU64::new(0));
    let agents = (first..first + count).map(|n| {
        let (base, enrollment, stop, refused) = (
            base.clone(),
            enrollment.clone(),
            stop.clone(),
            refused.clone(),
        );
        async move {
            let answer: LoginResponse = log_in(&base, &enrollment, n).await.json().await.unwrap();
            let url = format!("{base}/api/v1/agents/{}/heartbeat", answer.agent_id);
            tokio::time::sleep(INTERVAL * (n - first) / count).await;
            let mut tick = tokio::time::interval(INTERVAL);
            let http = http();
            while !stop.is_cancelled() {
                tick.tick().await;
                let beat = http.post(&url).bearer_auth(&answer.agent_key).send().await;
                if !beat.is_ok_and(|r| r.status() == StatusCode::NO_CONTENT) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    futures::future::join_all(agents).await;
    refused.load(Ordering::Relaxed)
}

/// A 503 that says why and when to try again.
async fn assert_unavailable(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{body}");
}

async fn status_of(base: &str, path: &str) -> StatusCode {
    http()
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_or(StatusCode::GATEWAY_TIMEOUT, |r| r.status())
}

/// How many `stopped` events the database holds.
async fn stops(database: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM agent_events WHERE event = 'stopped'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The case that raised false alarms over half a fleet: PostgreSQL stops under two servers, and
/// when it comes back, the one that takes the sweep lease reaches it seconds before the other
/// (whose link to it stays cut a little longer) has written what it heard meanwhile.
#[tokio::test]
async fn a_postgres_outage_stops_no_agent_heard_through_any_server() {
    let pg = PrivatePostgres::start().await;
    let database = pg.url();
    let link = Link::to(format!("127.0.0.1:{}", pg.port).parse().unwrap()).await;
    let through_link = database.replace(
        &format!(":{}/", pg.port),
        &format!(":{}/", link.addr.port()),
    );
    let enrollment = served::enrollment_token(BIN, &database).await;
    let servers = [start(&database).await, start(&through_link).await];
    let stop = CancellationToken::new();
    let fleets: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(n, server)| {
            tokio::spawn(heartbeating(
                server.base.clone(),
                enrollment.clone(),
                1 + 20 * n as u32,
                20,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(INTERVAL * 4).await;

    link.cut();
    pg.stop().await;
    // Meanwhile: the process lives, readiness says the database cannot serve, a login is
    // answered 503 with the reason (within the bounded wait for a connection), and the
    // running agents' heartbeats are answered from memory.
    for server in &servers {
        assert_eq!(status_of(&server.base, "/healthz").await, StatusCode::OK);
        eventually("readiness tells the outage", WAIT, || async {
            (status_of(&server.base, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        })
        .await;
    }
    assert_unavailable(
        log_in(&servers[0].base, &enrollment, 99).await,
        "the database is unreachable",
    )
    .await;
    // A key this server does not hold is for the database to judge: 503, not 401, which would
    // send the agent to log in, into the outage.
    let unknown_key = http()
        .post(format!("{}/api/v1/agents/1/heartbeat", servers[0].base))
        .bearer_auth("plura_ak_not-held-here")
        .send()
        .await
        .unwrap();
    assert_unavailable(unknown_key, "the database is unreachable").await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    pg.start_again().await;
    // The first server is back (and takes the lease); the second, a little later.
    eventually("the first server is ready again", WAIT, || async {
        (status_of(&servers[0].base, "/readyz").await == StatusCode::OK).then_some(())
    })
    .await;
    tokio::time::sleep(INTERVAL / 2).await;
    link.mend();
    eventually("the second server is ready again", WAIT, || async {
        (status_of(&servers[1].base, "/readyz").await == StatusCode::OK).then_some(())
    })
    .await;
    // Two silence limits after the return: nobody was stopped.
    tokio::time::sleep(INTERVAL * 6).await;
    stop.cancel();
    let mut refused = 0;
    for fleet in fleets {
        refused += fleet.await.unwrap();
    }
    assert_eq!(refused, 0, "heartbeats not answered 204");
    assert_eq!(stops(&database).await, 0, "agents stopped by the outage");
    let admin = servers[0].first_start_token().unwrap();
    let agents = servers[1].agents(&admin).await;
    assert_eq!(agents.len(), 40);
    assert!(agents.iter().all(|a| a.status == AgentStatus::Running));
    // The change feed came back with the database: a change through one server is found
    // through the other's index.
    let patched = http()
        .patch(format!(
            "{}/api/v1/agents/{}",
            servers[0].base, agents[0].id
        ))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "group": "after-the-outage" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    eventually("the other server's index follows", WAIT, || async {
        let found: plura_proto::AgentList = servers[1]
            .get("/api/v1/agents?q=AFTER-THE-OUTAGE", &admin)
            .await;
        (found.items.len() == 1).then_some(())
    })
    .await;
    // A login goes through again.
    assert_eq!(
        log_in(&servers[1].base, &enrollment, 99).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_crashed_or_read_only_postgres_is_waited_out() {
    let pg = PrivatePostgres::start().await;
    let database = pg.url();
    let enrollment = served::enrollment_token(BIN, &database).await;
    let server = start(&database).await;
    assert_eq!(
        log_in(&server.base, &enrollment, 1).await.status(),
        StatusCode::OK
    );

    // Killed with SIGKILL, then started: it recovers, and the server's pool connects again.
    pg.kill().await;
    assert_unavailable(
        log_in(&server.base, &enrollment, 2).await,
        "the database is unreachable",
    )
    .await;
    pg.start_again().await;
    eventually("a login after crash recovery", WAIT, || async {
        (log_in(&server.base, &enrollment, 2).await.status() == StatusCode::OK).then_some(())
    })
    .await;

    // A primary turned read-only, as after a failover: writes are refused saying so, readiness
    // fails, until it is writable again.
    pg.set_read_only(true).await;
    assert_unavailable(log_in(&server.base, &enrollment, 3).await, "read-only").await;
    assert_eq!(
        status_of(&server.base, "/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    pg.set_read_only(false).await;
    eventually("a login on a writable primary", WAIT, || async {
        (log_in(&server.base, &enrollment, 3).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(status_of(&server.base, "/readyz").await, StatusCode::OK);
}

/// A small tmpfs of the test's own, unmounted when dropped; `None` where mounting is not allowed
/// (not root).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        mounted.is_ok_and(|s| s.success()).then_some(Self(dir))
    }

    /// Fills what is left with a file of its own; answers the file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // The last partial block, byte by byte as far as it goes.
        while file.write_all(&[0]).is_ok() {}
        let _ = file.flush();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_under_sqlite_is_answered_503_and_recovered_from() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    };
    let database = format!("sqlite://{}/plura.db", disk.0.path().display());
    let enrollment = served::enrollment_token(BIN, &database).await;
    let server = start(&database).await;
    let admin = server.first_start_token().unwrap();
    let known: LoginResponse = log_in(&server.base, &enrollment, 1)
        .await
        .json()
        .await
        .unwrap();
    let beat = || {
        http()
            .post(format!(
                "{}/api/v1/agents/{}/heartbeat",
                server.base, known.agent_id
            ))
            .bearer_auth(&known.agent_key)
            .send()
    };

    let filler = disk.fill();
    // New agents log in until the disk cannot take another: each answered 200 (on disk) or
    // 503 saying the disk is full; never 500.
    let (mut registered, mut refused) = (1, None);
    for n in 2..2000 {
        let response = log_in(&server.base, &enrollment, n).await;
        match response.status() {
            StatusCode::OK => registered += 1,
            status => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "login {n}");
                refused = Some(n);
                assert_unavailable(response, "disk is full").await;
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses a login");
    // A known agent's heartbeat is answered from memory meanwhile; readiness tells.
    assert_eq!(beat().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_of(&server.base, "/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Space comes back: the next write succeeds, with nothing acknowledged lost.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        log_in(&server.base, &enrollment, refused).await.status(),
        StatusCode::OK
    );
    assert_eq!(status_of(&server.base, "/readyz").await, StatusCode::OK);
    let agents = server.agents(&admin).await;
    assert_eq!(agents.len(), registered + 1);
    assert!(
        server.metric(&admin, "plura_database_failures_total").await >= Some(1.0),
        "the failures are counted"
    );
    let mut server = server;
    server.process.signal("-TERM").await;
}
