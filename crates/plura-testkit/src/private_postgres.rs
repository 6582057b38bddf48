//! A PostgreSQL server of one test's own, in a temporary folder on a loopback port of its own,
//! for tests that stop, kill, restart it or turn it read-only: the server the other tests share
//! must not go down under them. Made with the binaries of the installed PostgreSQL (Debian's
//! `postgresql` package, which `scripts/ensure-postgres` installs), run as the `postgres` user
//! when the tests run as root, as PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::{Connection, Executor};
use tokio::process::Command;

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// A new cluster, started, with the `postgres` role's password `postgres`.
    pub async fn start() -> Self {
        let bin = installed_bin();
        let dir = tempfile::Builder::new()
            .prefix("plura-pg-")
            .tempdir()
            .expect("a temporary folder");
        let this = Self {
            bin,
            port: crate::served::free_port(),
            dir,
        };
        if as_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(this.dir.path())
                .status()
                .await
                .expect("chown runs");
            assert!(chown.success(), "chown of {:?}", this.dir.path());
        }
        let data = this.data();
        this.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("a UTF-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )
        .await;
        this.start_again().await;
        this
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            self.port
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it (again), on the same port, and waits until it takes connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("a UTF-8 path"),
                "-o",
                &options,
                "-l",
                log.to_str().expect("a UTF-8 path"),
                "-w",
                "start",
            ],
        )
        .await;
    }

    /// Stops it as `pg_ctl stop -m fast` does: connections are ended at once.
    pub async fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("a UTF-8 path"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .await;
    }

    /// Kills the postmaster and its children with SIGKILL, as a crash would: the next start
    /// recovers from the write-ahead log.
    pub async fn kill(&self) {
        let pid_file = self.data().join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .expect("postmaster.pid")
            .lines()
            .next()
            .expect("a pid")
            .trim()
            .to_string();
        // The backends go with their postmaster's process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .await;
        let _ = Command::new("kill").args(["-KILL", &pid]).status().await;
        for _ in 0..100 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What a crash leaves; the next start finds no postmaster behind it and recovers.
        let _ = std::fs::remove_file(pid_file);
    }

    /// Makes every new transaction read-only (`on`), as a primary demoted to a standby after a
    /// failover refuses writes, or writable again.
    pub async fn set_read_only(&self, on: bool) {
        let mut conn = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connects");
        let value = if on { "on" } else { "off" };
        conn.execute(format!("ALTER SYSTEM SET default_transaction_read_only = {value}").as_str())
            .await
            .expect("ALTER SYSTEM");
        conn.execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        // Sessions read the configuration again at their next statement.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("{} does not run: {e}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = if as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn as_root() -> bool {
    // The effective user id of this process.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// The newest installed PostgreSQL's `bin` folder.
fn installed_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; install Debian's postgresql (./scripts/ensure-postgres does)",
                root.display()
            )
        })
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version installed").1
}
