//! The plura-server binary run as an operator runs it (`serve` on a port it prints), and the
//! calls tests make to it over HTTP.

use serde::de::DeserializeOwned;
use tokio::process::Command;

use crate::process::Process;

pub struct Served {
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its `$STATE_DIRECTORY` (where a first start writes the admin token), gone with it.
    pub state: tempfile::TempDir,
}

impl Served {
    /// Runs `bin serve` with `args` (at least `--listen` and `--database`) until it listens.
    pub async fn start(bin: &str, args: &[&str]) -> Self {
        Self::start_with_env(bin, args, &[]).await
    }

    /// `start`, with these variables in its environment.
    pub async fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let state = tempfile::tempdir().expect("a state directory");
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .args(args)
            .env("PLURA_LOG", "info")
            .env("STATE_DIRECTORY", state.path())
            .envs(env.iter().copied());
        let process = Process::spawn(command);
        let listening = process
            .wait_for_output("plura-server says where it listens", |l| {
                l.starts_with("Listening on ")
            })
            .await;
        let base = listening.trim_start_matches("Listening on ").to_string();
        Self {
            process,
            base,
            state,
        }
    }

    /// The file a first start says it wrote the admin token to.
    pub fn first_start_token_file(&self) -> Option<std::path::PathBuf> {
        self.process
            .stdout()
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("First start: the admin API token is in ")
            })
            .map(std::path::PathBuf::from)
    }

    /// The admin token a first start wrote.
    pub fn first_start_token(&self) -> Option<String> {
        let file = self.first_start_token_file()?;
        let token = std::fs::read_to_string(&file).expect("the admin token file is readable");
        Some(token.trim().to_string())
    }

    /// The value of the unlabelled metric `name` on `/metrics`, read with `token`; `None` if the
    /// server does not answer (it may have been killed) or has no such metric.
    pub async fn metric(&self, token: &str, name: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.base))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        crate::metric_value(&response.text().await.ok()?, name)
    }

    /// Every agent, page by page.
    pub async fn agents(&self, token: &str) -> Vec<plura_proto::Agent> {
        let mut agents = Vec::new();
        for page in 1.. {
            let path = format!("/api/v1/agents?per_page=1000&page={page}");
            let list: plura_proto::AgentList = self.get(&path, token).await;
            let done = list.items.len() < 1000;
            agents.extend(list.items);
            if done {
                break;
            }
        }
        agents
    }

    /// GET `path` with `token`, expecting success and JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> T {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers");
        crate::json_ok(response).await
    }
}

/// `bin serve` on `listen` over `database` as tests want it: a heartbeat each second (a silent
/// agent stops after 3 s) and no login rate.
pub async fn start_fast(bin: &str, database: &str, listen: &str) -> Served {
    let args = [
        "--listen",
        listen,
        "--database",
        database,
        "--heartbeat-interval",
        "1s",
        "--logins-per-source",
        "0",
    ];
    Served::start(bin, &args).await
}

/// A loopback port free now, for a server that must come back on the same one.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("its address").port()
}

/// The binary `name` built beside `bin` by `cargo test --workspace`.
pub fn beside(bin: &str, name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(bin).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with cargo build -p {name}",
        path.display()
    );
    path
}

/// Runs `command` to its end, expecting success; answers the last line it printed (where the
/// server's subcommands print a token or a fingerprint).
pub async fn last_line(command: &mut Command) -> String {
    let output = command.output().await.expect("the command runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// Makes the enrollment token of `database` with `bin` and answers it.
pub async fn enrollment_token(bin: &str, database: &str) -> String {
    last_line(Command::new(bin).args(["enrollment-token", "--database", database])).await
}

/// A client whose connections come from `source`, a loopback address of its own.
pub fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a client")
}

/// A TCP connection to `server` from `source`, a loopback address of its own.
pub async fn connect_from(
    source: [u8; 4],
    server: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(std::net::IpAddr::from(source), 0))?;
    socket.connect(server).await
}
