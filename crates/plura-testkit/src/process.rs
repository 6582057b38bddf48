//! A program under test, run as a child process: its standard output and error collected line
//! by line as it runs, waits for a line, signals, and its end.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::within;

/// How long a program is given to print a line or to exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(20);

type Lines = Arc<Mutex<Vec<String>>>;

pub struct Process {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

/// Collects the lines of `stream` into `lines` as they come.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, lines: &Lines) {
    let sink = lines.clone();
    let mut reader = BufReader::new(stream).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
}

impl Process {
    /// Starts `command` with no input; it is killed if the test drops it.
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let (stdout, stderr) = (Lines::default(), Lines::default());
        collect(child.stdout.take().unwrap(), &stdout);
        collect(child.stderr.take().unwrap(), &stderr);
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// What it printed on standard output so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// What it logged (standard error) so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn logged(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Waits for a line of standard output that `matches`; answers it.
    pub async fn wait_for_output(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = within(PROCESS_WAIT, || async {
            self.stdout().into_iter().find(|l| matches(l))
        });
        found.await.unwrap_or_else(|| {
            panic!(
                "{what}: not printed; it logged:\n{}",
                self.stderr().join("\n")
            )
        })
    }

    /// Waits until it has logged a line containing `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let logged = within(PROCESS_WAIT, || async { self.logged(text).then_some(()) });
        logged.await.unwrap_or_else(|| {
            panic!(
                "it never logged {text:?}; it logged:\n{}",
                self.stderr().join("\n")
            )
        })
    }

    /// Sends `signal` (`-TERM`, `-KILL`, …) and waits for the exit.
    pub async fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        self.wait().await
    }

    /// Waits for the exit.
    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(PROCESS_WAIT, self.child.wait())
            .await
            .expect("the process exits")
            .unwrap()
    }
}
