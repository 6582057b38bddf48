//! The `plura-server` binary as an operator runs it: first start, token subcommands beside a
//! running server, SIGTERM, and a bad database URL.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use plura_proto::{LoginRequest, Role, WhoAmI};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const WAIT: Duration = Duration::from_secs(20);

/// A `plura-server serve` process on a random port, with its output lines.
struct ServerProcess {
    child: Child,
    base: String,
    stdout: Vec<String>,
    stderr: mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    async fn start(database: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .env("PLURA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start plura-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, mut stderr) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr_lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let base = tokio::time::timeout(WAIT, async {
            while let Some(line) = stderr.recv().await {
                if let Some(rest) = line.split("address=").nth(1) {
                    let address = rest.split_whitespace().next().unwrap();
                    return format!("http://{address}");
                }
            }
            panic!("plura-server exited before listening");
        })
        .await
        .expect("plura-server listens");
        // Whatever it printed on stdout before listening (the first-start token) is complete.
        let mut printed = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(200), stdout.next_line()).await
        {
            printed.push(line);
        }
        Self {
            child,
            base,
            stdout: printed,
            stderr,
        }
    }

    async fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("plura-server stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "exit status {status}");
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr.try_recv() {
            rest.push(line);
        }
        rest
    }
}

/// Runs a subcommand to its end and answers its stdout's last line.
async fn run(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .last()
        .expect("a last line")
        .trim()
        .to_string()
}

async fn whoami(base: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn login(base: &str, token: &str) -> StatusCode {
    let body = LoginRequest {
        ip: "192.168.7.1".into(),
        hostname: "cli-host".into(),
        machine_id: None,
        version: "1".into(),
        os: "Linux".into(),
        kind: "waf".into(),
    };
    reqwest::Client::new()
        .post(format!("{base}/api/v1/agents/login"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn first_start_token_subcommands_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/fleet.db", dir.path().display());
    let server = ServerProcess::start(&database).await;

    // The first start prints one admin token.
    let admin = server
        .stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("plura_"))
        .unwrap_or_else(|| panic!("no admin token in {:?}", server.stdout))
        .to_string();
    let me: WhoAmI = whoami(&server.base, &admin).await.json().await.unwrap();
    assert_eq!(me.role, Role::Admin);

    // Tokens made by the CLI work on the running server at once.
    let db = ["--database", database.as_str()];
    let monitor = run(&[
        &["token", "create", "--role", "monitor", "--name", "ci"][..],
        &db,
    ]
    .concat())
    .await;
    let me: WhoAmI = whoami(&server.base, &monitor).await.json().await.unwrap();
    assert_eq!((me.name.as_str(), me.role), ("ci", Role::Monitor));
    let enroll = run(&[&["enrollment-token"][..], &db].concat()).await;
    assert_eq!(
        run(&[&["enrollment-token"][..], &db].concat()).await,
        enroll,
        "stable"
    );
    assert_eq!(login(&server.base, &enroll).await, StatusCode::OK);

    // A rotation: the new token works at once, the old one is refused once the running
    // server's cache of it expires (5 s).
    let rotated = run(&[&["enrollment-token", "--rotate"][..], &db].concat()).await;
    assert_ne!(rotated, enroll);
    assert_eq!(login(&server.base, &rotated).await, StatusCode::OK);
    tokio::time::timeout(WAIT, async {
        while login(&server.base, &enroll).await != StatusCode::UNAUTHORIZED {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("the old enrollment token is refused after a rotation");

    let last_words = server.terminate().await;
    assert!(
        last_words
            .iter()
            .any(|l| l.contains("plura-server stopped")),
        "{last_words:?}"
    );

    // A second start prints no token, and the agent is still there.
    let server = ServerProcess::start(&database).await;
    assert!(
        !server.stdout.iter().any(|l| l.contains("plura_")),
        "{:?}",
        server.stdout
    );
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/agents", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1);
    server.terminate().await;
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error_without_its_password() {
    let output = Command::new(BIN)
        .args([
            "token",
            "create",
            "--role",
            "admin",
            "--database",
            "mysql://root:hunter2@db/x",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let output = Command::new(BIN)
        .args(["token", "create", "--role", "root"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("monitor, operator, admin"), "{stderr}");
}

#[tokio::test]
async fn user_create_prints_a_generated_password_once_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/users.db", dir.path().display());
    let db = ["--database", database.as_str()];
    let create = ["user", "create", "--name", "alice", "--role", "operator"];
    let password = run(&[&create[..], &db].concat()).await;
    assert!(password.len() >= 12, "{password}");

    let again = Command::new(BIN)
        .args([&create[..], &db].concat())
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("\"alice\" exists already"));

    let mut short = Command::new(BIN)
        .args([
            "user",
            "create",
            "--name",
            "bob",
            "--role",
            "monitor",
            "--password-stdin",
        ])
        .args(db)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    short
        .stdin
        .take()
        .unwrap()
        .write_all(b"short\n")
        .await
        .unwrap();
    let output = short.wait_with_output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 12 characters"));
}
