//! The plura-server binary run as an operator runs it (`serve` on a port it prints), and the
//! calls tests make to it over HTTP.

use serde::de::DeserializeOwned;
use tokio::process::Command;

use crate::process::Process;

pub struct Served {
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Served {
    /// Runs `bin serve` with `args` (at least `--listen` and `--database`) until it listens.
    pub async fn start(bin: &str, args: &[&str]) -> Self {
        let mut command = Command::new(bin);
        command.arg("serve").args(args).env("PLURA_LOG", "info");
        let process = Process::spawn(command);
        let listening = process
            .wait_for_output("plura-server says where it listens", |l| {
                l.starts_with("Listening on ")
            })
            .await;
        let base = listening.trim_start_matches("Listening on ").to_string();
        Self { process, base }
    }

    /// The admin token a first start prints.
    pub fn first_start_token(&self) -> Option<String> {
        self.process
            .stdout()
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("plura_"))
            .map(str::to_string)
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

/// Makes the enrollment token of `database` with `bin` and answers it.
pub async fn enrollment_token(bin: &str, database: &str) -> String {
    let output = Command::new(bin)
        .args(["enrollment-token", "--database", database])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
