//! The server cannot be held open: the real binary, attacked from one loopback address
//! (127.0.0.9) with 10,000 idle connections, 50 slowloris senders and a flood of logins, while 100
//! agents keep heartbeating from another (127.0.0.2). No agent may be taken for silent, and
//! `/healthz` must keep answering. Figures are printed, not asserted beyond generous bounds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use plura_proto::{EventKind, EventList, LoginResponse};
use plura_testkit::login;
use plura_testkit::served::{self, Served};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const ATTACKER: [u8; 4] = [127, 0, 0, 9];
const FLEET: [u8; 4] = [127, 0, 0, 2];
const AGENTS: usize = 100;
/// Idle connections held open, where the open-file limit allows as many on both sides.
const IDLE: usize = 10_000;
const SLOWLORIS: usize = 50;
/// The server's default header timeout, and some time to act on it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect_from(source: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(source), 0))?;
    socket.connect(server).await
}

fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
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
    let args = ["--listen", "127.0.0.1:0", "--database", &database];
    let mut server =
        Served::start(BIN, &[&args[..], &["--heartbeat-interval", "1s"]].concat()).await;
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
