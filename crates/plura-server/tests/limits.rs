//! The server cannot be held open: the real binary, attacked from one loopback address
//! (127.0.0.9) with 10,000 idle connections, 50 slowloris senders and a flood of logins, while 100
//! agents keep heartbeating from another (127.0.0.2). No agent may be taken for silent, and
//! `/healthz` must keep answering. Figures are printed, not asserted beyond generous bounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use plura_proto::{EventKind, EventList, LoginResponse};
use plura_testkit::login;
use plura_testkit::served::{self, Served, client_from, connect_from};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const ATTACKER: [u8; 4] = [127, 0, 0, 9];
const FLEET: [u8; 4] = [127, 0, 0, 2];
const AGENTS: usize = 100;
/// Idle connections held open, where the open-file limit allows as many on both sides.
const IDLE: usize = 10_000;
const SLOWLORIS: usize = 50;
/// The server's default header timeout, and some time to act on it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2's connection preface and an empty SETTINGS frame: what a client sends before its
/// first request.
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Whether the server closes `stream` within `limit`, whatever it sends before (HTTP/2 frames).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// How many of `streams` the server closes within `limit`, all watched at once.
async fn closed_count(streams: &mut [TcpStream], limit: Duration) -> usize {
    let watched = streams.iter_mut().map(|s| closed_within(s, limit));
    futures::future::join_all(watched)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_are_closed_and_one_source_gets_only_its_share() {
    const SLOTS: usize = 300;
    const SHARE: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/h2.db", dir.path().display());
    let (slots, share) = (SLOTS.to_string(), SHARE.to_string());
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
        "--max-connections",
        &slots,
        "--max-connections-per-source",
        &share,
    ];
    let mut server = Served::start(BIN, &args).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();

    // Every slot asked for from one address, silently: past its share, the source's
    // connections are closed as they come, before they say anything; the rest of the server's
    // slots stay free for everyone else.
    let mut flood = Vec::with_capacity(SLOTS);
    for _ in 0..SLOTS {
        flood.push(connect_from(ATTACKER, addr).await.unwrap());
    }
    let refused = closed_count(&mut flood, Duration::from_secs(1)).await;
    // Those let in send HTTP/2's preface and then nothing.
    for stream in &mut flood {
        let _ = stream.write_all(HTTP2_PREFACE).await;
    }
    let fleet = client_from(FLEET);
    let health = fleet.get(format!("{}/healthz", server.base)).send().await;
    assert_eq!(
        health.unwrap().status(),
        StatusCode::OK,
        "another source is served"
    );

    // The silent HTTP/2 connections are closed after the header timeout, as HTTP/1 ones are.
    let closed_late = closed_count(&mut flood, HEADER_TIMEOUT + Duration::from_secs(5)).await;
    eprintln!(
        "http2 flood: {refused} of {SLOTS} refused past the share, {closed_late} closed when idle"
    );
    assert_eq!(
        refused,
        SLOTS - SHARE,
        "one source gets its share and no more"
    );
    assert_eq!(
        closed_late, SLOTS,
        "silent HTTP/2 connections are closed too"
    );
    let status = server.process.signal("-TERM").await;
    assert!(status.success(), "{status}");
}

/// Whether the server closed `stream` (it reads end of file, or the connection was reset).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_and_a_login_flood_do_not_hold_the_server() {
    let files = plura_server::server::raise_file_limit();
    // Both ends of every connection live on this machine: the server and this test each need a
    // descriptor per connection.
    let idle_count = IDLE.min(usize::try_from(files.saturating_sub(1024)).unwrap_or(IDLE));
    assert!(
        idle_count >= 1000,
        "the open-file limit ({files}) is too low for this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/limits.db", dir.path().display());
    let enrollment = served::enrollment_token(BIN, &database).await;
    // No share per source here: this is about what the timeouts close (the share has its own
    // test below).
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
        "--heartbeat-interval",
        "1s",
        "--max-connections-per-source",
        "0",
    ];
    let mut server = Served::start(BIN, &args).await;
    let base = server.base.clone();
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();

    // The fleet logs in from its own address: within that address's burst.
    let fleet = client_from(FLEET);
    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let response = fleet
            .post(format!("{base}/api/v1/agents/login"))
            .bearer_auth(&enrollment)
            .json(&login(&format!("10.50.0.{n}"), &format!("fleet-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        agents.push(response.json::<LoginResponse>().await.unwrap());
    }

    // The agents heartbeat every second until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeats_failed = Arc::new(AtomicU64::new(0));
    let mut beating = Vec::new();
    for agent in &agents {
        let (client, base, stop, failed) = (
            fleet.clone(),
            base.clone(),
            stop.clone(),
            heartbeats_failed.clone(),
        );
        let (id, key) = (agent.agent_id, agent.agent_key.clone());
        beating.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .post(format!("{base}/api/v1/agents/{id}/heartbeat"))
                    .bearer_auth(&key)
                    .send()
                    .await;
                if !sent.is_ok_and(|r| r.status() == StatusCode::NO_CONTENT) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    // The attack: a login flood, idle connections, slowloris senders.
    let attacker = client_from(ATTACKER);
    let mut throttled = 0;
    let mut retry_after = None;
    for n in 0..300 {
        let response = attacker
            .post(format!("{base}/api/v1/agents/login"))
            .bearer_auth(&enrollment)
            .json(&login(
                &format!("10.60.{}.{}", n / 250, n % 250),
                &format!("flood-{n}"),
            ))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
            retry_after = response.headers().get("retry-after").cloned();
        }
    }
    let started = Instant::now();
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        match connect_from(ATTACKER, addr).await {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connection {} refused by the system: {e}", idle.len()),
        }
    }
    let opened_in = started.elapsed();
    // Some go idle after a request, on a kept-alive connection.
    for stream in idle.iter_mut().take(100) {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: plura\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    let mut slow = Vec::with_capacity(SLOWLORIS);
    for _ in 0..SLOWLORIS {
        let mut stream = connect_from(ATTACKER, addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }

    // Meanwhile /healthz answers, and the slowloris senders trickle a header line a second.
    let health = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let until = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(3);
    let mut tick = 0u32;
    while Instant::now() < until {
        let asked = Instant::now();
        let answer = health.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        worst = worst.max(asked.elapsed());
        tick += 1;
        if tick % 5 == 0 {
            for stream in &mut slow {
                let _ = stream
                    .write_all(format!("X-Slow-{tick}: 1\r\n").as_bytes())
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The server closed what held it: the idle connections and the slow senders.
    let mut idle_closed = 0;
    let mut kept_alive_closed = 0;
    for stream in idle.iter_mut().step_by(100) {
        idle_closed += usize::from(closed(stream).await);
    }
    for stream in idle.iter_mut().skip(1).take(99) {
        kept_alive_closed += usize::from(closed(stream).await);
    }
    let mut slow_closed = 0;
    for stream in &mut slow {
        slow_closed += usize::from(closed(stream).await);
    }
    stop.store(true, Ordering::Relaxed);
    for task in beating {
        task.await.unwrap();
    }

    // No agent was taken for silent.
    let admin = server
        .first_start_token()
        .expect("a first start prints a token");
    let mut falsely_stopped = 0;
    for agent in &agents {
        let path = format!("/api/v1/agents/{}/events", agent.agent_id);
        let events: EventList = server.get(&path, &admin).await;
        falsely_stopped += events
            .items
            .iter()
            .filter(|e| e.event == EventKind::Stopped)
            .count();
    }
    eprintln!(
        "limits: {idle_count} idle connections opened in {opened_in:.1?}; {SLOWLORIS} slowloris; \
         healthz worst {worst:.1?}; {throttled}/300 flood logins got 429 (Retry-After {retry_after:?}); \
         idle closed {idle_closed}/{}, kept-alive idle closed {kept_alive_closed}/99; slow closed {slow_closed}/{SLOWLORIS}; \
         heartbeats failed {}; agents falsely stopped {falsely_stopped}",
        idle_count.div_ceil(100),
        heartbeats_failed.load(Ordering::Relaxed),
    );
    assert_eq!(falsely_stopped, 0, "no agent was taken for silent");
    assert!(worst < Duration::from_secs(1), "healthz took {worst:?}");
    assert!(throttled >= 100, "{throttled} of 300 flood logins refused");
    assert!(retry_after.is_some(), "429 says when to come back");
    assert_eq!(
        idle_closed,
        idle_count.div_ceil(100),
        "idle connections are closed"
    );
    assert_eq!(
        kept_alive_closed, 99,
        "idle kept-alive connections are closed"
    );
    assert_eq!(slow_closed, SLOWLORIS, "slowloris senders are cut off");
    let status = server.process.signal("-TERM").await;
    assert!(status.success(), "{status}");
}

/// The server's peak resident memory so far, in bytes (`VmHWM`).
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

async fn sign_in(client: &reqwest::Client, base: &str, user: &str, password: &str) -> StatusCode {
    client
        .post(format!("{base}/api/v1/session"))
        .json(&plura_proto::SignIn {
            username: user.to_string(),
            password: password.to_string(),
        })
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_cannot_exhaust_memory_and_a_spray_slows_down_without_locking_the_admin_out() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/sign-in.db", dir.path().display());
    let mut create = tokio::process::Command::new(BIN);
    create
        .args(["user", "create", "--name", "boss", "--role", "admin"])
        .args(["--password-stdin", "--database", &database])
        .stdin(std::process::Stdio::piped());
    let mut child = create.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"the real admin's password\n")
        .await
        .unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
    let args = ["--listen", "127.0.0.1:0", "--database", &database];
    let mut server = Served::start(BIN, &args).await;
    let base = server.base.clone();
    let before = peak_memory(server.process.id());

    // 120 sign-ins at once, each for a new user name (a fresh password check each), and one
    // with a name of 60 KB.
    let crowd = client_from(ATTACKER);
    let tries = (0..120).map(|n| {
        let (crowd, base) = (crowd.clone(), base.clone());
        async move { sign_in(&crowd, &base, &format!("guess-{n}"), "password").await }
    });
    let statuses = futures::future::join_all(tries).await;
    let peak = peak_memory(server.process.id());
    let long = sign_in(&crowd, &base, &"x".repeat(60_000), "password").await;
    assert_eq!(long, StatusCode::BAD_REQUEST, "a 60 KB user name");
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)),
        "{statuses:?}"
    );

    // A spray: 50 addresses, five guesses each, for one account.
    let mut admitted = 0;
    for n in 0..50u8 {
        let from = client_from([127, 0, 1, n + 1]);
        for _ in 0..5 {
            let status = sign_in(&from, &base, "boss", "a guess").await;
            admitted += usize::from(status == StatusCode::UNAUTHORIZED);
        }
    }
    // The real admin, from an address that has not failed, gets in after at most a short wait.
    let admin = client_from([127, 0, 2, 1]);
    let waited = Instant::now();
    let got_in = plura_testkit::within(Duration::from_secs(30), || async {
        (sign_in(&admin, &base, "boss", "the real admin's password").await == StatusCode::OK)
            .then_some(())
    })
    .await;
    eprintln!(
        "sign-ins: peak memory {} MB before, {} MB after 120 at once; a spray of 250 guesses from \
         50 addresses had {admitted} checked; the admin got in after {:.1?}",
        before / 1_000_000,
        peak / 1_000_000,
        waited.elapsed()
    );
    assert!(
        peak < before + 200_000_000,
        "password checks at once are bounded: {before} -> {peak} bytes"
    );
    assert!(admitted <= 25, "{admitted} of 250 guesses were checked");
    assert!(got_in.is_some(), "the admin is not locked out");
    let status = server.process.signal("-TERM").await;
    assert!(status.success(), "{status}");
}
