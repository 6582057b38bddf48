//! Nothing acknowledged is lost: the real server binary is killed with SIGKILL 20 times at
//! random moments while agents register and heartbeat (a real plura-agent process among them),
//! on SQLite and on PostgreSQL. After each restart every registration the server acknowledged is
//! there with the id it answered, no identity is there twice, and the real agent comes back to
//! running by itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use plura_proto::{AgentStatus, LoginResponse};
use plura_testkit::process::Process;
use plura_testkit::served::{self, Served};
use plura_testkit::{Database, Db, eventually, login};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const KILLS: usize = 20;
const WAIT: Duration = Duration::from_secs(20);

async fn start_server(database: &str, port: u16) -> Served {
    served::start_fast(BIN, database, &format!("127.0.0.1:{port}")).await
}

/// Registers new identities one after another until cancelled, keeping each acknowledged one
/// (identity -> id and key), and heartbeats for them.
async fn register_and_beat(
    base: String,
    enrollment: String,
    acknowledged: Arc<Mutex<BTreeMap<String, LoginResponse>>>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut n = 0u32;
    while !stop.is_cancelled() {
        n += 1;
        let host = format!("load-{n}");
        let sent = http
            .post(format!("{base}/api/v1/agents/login"))
            .bearer_auth(&enrollment)
            .json(&login(&format!("10.70.{}.{}", n / 250, n % 250), &host))
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == StatusCode::OK
            && let Ok(answer) = response.json::<LoginResponse>().await
        {
            acknowledged.lock().unwrap().insert(host, answer);
        }
        let beating: Vec<(i64, String)> = {
            let acked = acknowledged.lock().unwrap();
            acked
                .values()
                .rev()
                .take(5)
                .map(|a| (a.agent_id, a.agent_key.clone()))
                .collect()
        };
        for (id, key) in beating {
            let _ = http
                .post(format!("{base}/api/v1/agents/{id}/heartbeat"))
                .bearer_auth(&key)
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn kill_nine_times_twenty(db: Db) {
    let database = Database::fresh(db).await;
    let enrollment = served::enrollment_token(BIN, &database.url).await;
    let port = served::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_server(&database.url, port).await;
    let admin = server
        .first_start_token()
        .expect("a first start prints a token");

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("plura.conf");
    let text = format!("server_url={base}\nenrollment_token={enrollment}\ninterface=lo\n");
    std::fs::write(&conf, text).unwrap();
    let mut agent_command = Command::new(served::beside(BIN, "plura-agent"));
    agent_command
        .arg("--config")
        .arg(&conf)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let mut agent = Process::spawn(agent_command);

    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = CancellationToken::new();
    let load = tokio::spawn(register_and_beat(
        base.clone(),
        enrollment.clone(),
        acknowledged.clone(),
        stop.clone(),
    ));

    let mut restarts = Vec::new();
    for _ in 0..KILLS {
        let pause = rand::rng().random_range(100..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.process.signal("-KILL").await;
        let down = std::time::Instant::now();
        server = start_server(&database.url, port).await;
        restarts.push(down.elapsed());

        // Every acknowledged registration is there, with the id it was given, once.
        let acked = acknowledged.lock().unwrap().clone();
        let agents = server.agents(&admin).await;
        let mut by_identity: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for agent in &agents {
            by_identity
                .entry((agent.ip.clone(), agent.hostname.clone()))
                .or_default()
                .push(agent.id);
        }
        assert!(
            by_identity.values().all(|ids| ids.len() == 1),
            "an identity is there twice: {by_identity:?}"
        );
        let ids: HashMap<&str, i64> = agents.iter().map(|a| (a.hostname.as_str(), a.id)).collect();
        for (host, answer) in &acked {
            assert_eq!(
                ids.get(host.as_str()),
                Some(&answer.agent_id),
                "{host} was acknowledged as agent {}",
                answer.agent_id
            );
        }
    }
    stop.cancel();
    load.await.unwrap();

    // The real agent is back to running by itself.
    let hostname = nix_hostname();
    eventually("the real agent runs again", WAIT, || async {
        let agents = server.agents(&admin).await;
        agents
            .iter()
            .any(|a| a.hostname == hostname && a.status == AgentStatus::Running)
            .then_some(())
    })
    .await;
    let registered = acknowledged.lock().unwrap().len();
    let slowest = restarts.iter().max().unwrap();
    eprintln!(
        "crash {db:?}: {KILLS} SIGKILLs, {registered} registrations acknowledged, none lost or \
         doubled; restarts took at most {slowest:.1?}"
    );
    assert!(agent.signal("-TERM").await.success());
    assert!(server.process.signal("-TERM").await.success());
    database.drop_database().await;
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_registration_on_sqlite() {
    kill_nine_times_twenty(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_registration_on_postgres() {
    kill_nine_times_twenty(Db::Postgres).await;
}
