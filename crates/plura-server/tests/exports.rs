//! CSV exports that their readers stop reading: the real binary, on SQLite and PostgreSQL, with a
//! fleet large enough that an export cannot fit in the sockets' buffers. Only a few run at once,
//! none holds what logins, the summary, the list or `/readyz` need, and a stalled one is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;

use plura_proto::LoginRequest;
use plura_testkit::served::{self, Served};
use plura_testkit::{Database, Db, on_both_backends};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const AGENTS: usize = 10_000;
/// Monitors with tokens of their own, each asking for two exports.
const MONITORS: usize = 4;

/// A login whose text fields are as long as the rules allow, so the export is large.
fn long_login(n: usize) -> LoginRequest {
    let mut login = plura_testkit::login(
        &format!("10.{}.{}.{}", n / 65536, n / 256 % 256, n % 256),
        &format!(
            "{n}-{}.{}.{}",
            "h".repeat(56),
            "h".repeat(56),
            "h".repeat(56)
        ),
    );
    login.os = "o".repeat(plura_proto::MAX_TEXT_LEN);
    login.version = "v".repeat(plura_proto::MAX_TEXT_LEN);
    login
}

async fn token(database: &str, name: &str) -> String {
    let create = ["token", "create", "--role", "monitor", "--name", name];
    served::last_line(
        Command::new(BIN)
            .args(create)
            .args(["--database", database]),
    )
    .await
}

/// Asks for the export on a connection whose receive buffer is small, reads its status line,
/// then reads nothing more.
async fn stalled_export(addr: SocketAddr, token: &str) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/agents.csv HTTP/1.1\r\nhost: plura\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    (stream, String::from_utf8_lossy(&head).to_string())
}

/// Whether the server closes `stream` within `limit` (what it sent before is read and dropped).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn stalled_exports_hold_nothing_the_others_need(db: Db) {
    let database = Database::fresh(db).await;
    let enrollment = served::enrollment_token(BIN, &database.url).await;
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database.url,
        "--logins-per-source",
        "0",
    ];
    let mut server = Served::start(BIN, &args).await;
    let admin = server.first_start_token().unwrap();
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let registered = futures::stream::iter(0..AGENTS)
        .map(|n| {
            let (http, base, enrollment) = (http.clone(), base.clone(), enrollment.clone());
            async move {
                http.post(format!("{base}/api/v1/agents/login"))
                    .bearer_auth(&enrollment)
                    .json(&long_login(n))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(32)
        .filter(|status| futures::future::ready(matches!(status, Ok(StatusCode::OK))))
        .count()
        .await;
    assert_eq!(registered, AGENTS);

    // Every monitor asks for two exports and reads none.
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut stalled = Vec::new();
    let mut refused = 0;
    for n in 0..MONITORS {
        let token = token(&database.url, &format!("monitor-{n}")).await;
        for _ in 0..2 {
            let (stream, status) = stalled_export(addr, &token).await;
            match &status[9..12] {
                "200" => stalled.push(stream),
                "429" => refused += 1,
                other => panic!("an export answered {other}"),
            }
        }
    }
    assert_eq!(
        stalled.len(),
        plura_server::api::MAX_EXPORTS,
        "a few at once in all"
    );
    assert_eq!(refused, 2 * MONITORS - plura_server::api::MAX_EXPORTS);
    let refused_again = http
        .get(format!("{base}/api/v1/agents.csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused_again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused_again.headers().contains_key("retry-after"));

    // Meanwhile everything else answers.
    let asked = Instant::now();
    for path in [
        "/readyz",
        "/api/v1/summary",
        "/api/v1/agents?per_page=50",
        "/api/v1/agents?q=9999",
    ] {
        let response = http
            .get(format!("{base}{path}"))
            .bearer_auth(&admin)
            .send()
            .await;
        assert_eq!(response.unwrap().status(), StatusCode::OK, "{path}");
    }
    let login = http
        .post(format!("{base}/api/v1/agents/login"))
        .bearer_auth(&enrollment)
        .json(&long_login(AGENTS + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let answered_in = asked.elapsed();

    // The stalled exports are dropped, and their places are free again.
    let watched = stalled
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_secs(30)));
    let closed = futures::future::join_all(watched).await;
    assert!(
        closed.iter().all(|c| *c),
        "stalled exports are dropped: {closed:?}"
    );
    let whole =
        plura_testkit::eventually("an export runs again", Duration::from_secs(10), || async {
            let response = http
                .get(format!("{base}/api/v1/agents.csv"))
                .bearer_auth(&admin)
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::OK).then_some(response)
        })
        .await;
    let lines = whole.text().await.unwrap().lines().count();
    eprintln!(
        "exports ({db:?}): {} stalled, {refused} refused; the others answered in {answered_in:.1?}; an export after has {lines} lines",
        plura_server::api::MAX_EXPORTS
    );
    assert_eq!(lines, AGENTS + 2, "the header and every agent");
    let status = server.process.signal("-TERM").await;
    assert!(status.success(), "{status}");
    database.drop_database().await;
}

on_both_backends!(stalled_exports_hold_nothing_the_others_need);
