//! The `plura-server` binary as an operator runs it: first start, token subcommands beside a
//! running server, SIGTERM, and a bad database URL.

use std::os::unix::fs::PermissionsExt;

use tokio::process::Command;

use plura_proto::{Role, WhoAmI};
use plura_testkit::process::PROCESS_WAIT;
use plura_testkit::served::Served;
use plura_testkit::{eventually, login};
use reqwest::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");

/// A `plura-server serve` process on a port of its choosing.
async fn start(database: &str) -> Served {
    Served::start(BIN, &["--listen", "127.0.0.1:0", "--database", database]).await
}

/// SIGTERM; answers its log once it exited (successfully).
async fn terminate(mut server: Served) -> Vec<String> {
    let status = server.process.signal("-TERM").await;
    assert!(status.success(), "exit status {status}");
    server.process.stderr()
}

/// Runs a subcommand to its end and answers its stdout.
async fn run_all(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a subcommand to its end and answers its stdout's last line.
async fn run(args: &[&str]) -> String {
    let stdout = run_all(args).await;
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// Runs a subcommand that must fail; answers its stderr.
async fn run_failing(command: &mut Command) -> String {
    let output = command.output().await.unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn whoami(base: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn log_in(base: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/agents/login"))
        .bearer_auth(token)
        .json(&login("192.168.7.1", "cli-host"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn first_start_token_subcommands_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/fleet.db", dir.path().display());
    let server = start(&database).await;

    // The first start writes one admin token to an owner-only file in its state directory,
    // and shows it nowhere else.
    let file = server
        .first_start_token_file()
        .unwrap_or_else(|| panic!("no admin token file in {:?}", server.process.stdout()));
    assert_eq!(file.parent(), Some(server.state.path()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let admin = server.first_start_token().unwrap();
    let output = [server.process.stdout(), server.process.stderr()].concat();
    assert!(output.iter().all(|l| !l.contains(&admin)), "{output:?}");
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
    // Listed without secrets; revoked by name, refused by the running server within a second.
    let listed = run_all(&[&["token", "list"][..], &db].concat()).await;
    assert!(
        listed.contains("ci") && listed.contains("monitor"),
        "{listed}"
    );
    assert!(
        !listed.contains(&monitor) && !listed.contains(&admin),
        "{listed}"
    );
    run(&[&["token", "revoke", "ci"][..], &db].concat()).await;
    eventually(
        "a token revoked on the command line is refused",
        PROCESS_WAIT,
        || async {
            (whoami(&server.base, &monitor).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    let stderr =
        run_failing(Command::new(BIN).args([&["token", "revoke", "ci"][..], &db].concat())).await;
    assert!(stderr.contains("no API token is named \"ci\""), "{stderr}");
    let enroll = run(&[&["enrollment-token"][..], &db].concat()).await;
    assert_eq!(log_in(&server.base, &enroll).await, StatusCode::OK);
    // Only its hash is kept: it is shown once.
    let stderr =
        run_failing(Command::new(BIN).args([&["enrollment-token"][..], &db].concat())).await;
    assert!(stderr.contains("cannot be shown again"), "{stderr}");
    assert!(stderr.contains("--rotate"), "{stderr}");

    // A rotation: the new token works at once, the old one for the grace period (1 h).
    let rotated = run(&[&["enrollment-token", "--rotate"][..], &db].concat()).await;
    assert_ne!(rotated, enroll);
    assert_eq!(log_in(&server.base, &rotated).await, StatusCode::OK);
    assert_eq!(
        log_in(&server.base, &enroll).await,
        StatusCode::OK,
        "within its grace"
    );
    // Without grace, the one before is refused once the running server's cache of it expires
    // (5 s).
    let args = ["enrollment-token", "--rotate", "--grace", "0s"];
    let last = run(&[&args[..], &db].concat()).await;
    assert_eq!(log_in(&server.base, &last).await, StatusCode::OK);
    eventually(
        "the rotated-out enrollment token is refused",
        PROCESS_WAIT,
        || async {
            (log_in(&server.base, &rotated).await == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;

    let last_words = terminate(server).await;
    assert!(
        last_words
            .iter()
            .any(|l| l.contains("plura-server stopped")),
        "{last_words:?}"
    );

    // A second start prints no token, and the agent is still there.
    let server = start(&database).await;
    assert_eq!(server.first_start_token(), None);
    let list: serde_json::Value = server.get("/api/v1/agents", &admin).await;
    assert_eq!(list["total"], 1);
    terminate(server).await;
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error_without_its_password() {
    let stderr = run_failing(Command::new(BIN).args([
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "x",
        "--database",
        "mysql://root:hunter2@db/x",
    ]))
    .await;
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let stderr =
        run_failing(Command::new(BIN).args(["token", "create", "--role", "root", "--name", "x"]))
            .await;
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

    let stderr = run_failing(Command::new(BIN).args([&create[..], &db].concat())).await;
    assert!(stderr.contains("\"alice\" exists already"), "{stderr}");

    // Listed, disabled, enabled, given a new password, deleted: each by name.
    let listed = run_all(&[&["user", "list"][..], &db].concat()).await;
    assert!(
        listed.contains("alice") && listed.contains("operator"),
        "{listed}"
    );
    run(&[&["user", "disable", "alice"][..], &db].concat()).await;
    let listed: serde_json::Value =
        serde_json::from_str(&run_all(&[&["user", "list", "--json"][..], &db].concat()).await)
            .unwrap();
    assert!(listed[0]["disabled_at"].is_string(), "{listed}");
    run(&[&["user", "enable", "alice"][..], &db].concat()).await;
    let new_password = run(&[&["user", "set-password", "alice"][..], &db].concat()).await;
    assert!(new_password.len() >= 12 && new_password != password);
    run(&[&["user", "delete", "alice"][..], &db].concat()).await;
    let stderr =
        run_failing(Command::new(BIN).args([&["user", "enable", "alice"][..], &db].concat())).await;
    assert!(stderr.contains("no user is named \"alice\""), "{stderr}");

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
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

/// With its log's reader gone (journald restarted, or the parent that read it killed), the
/// server still serves and still stops on SIGTERM: a log line it cannot write is dropped, and
/// must not take down the task that wrote it (here, the one waiting for the signal).
#[tokio::test]
async fn a_server_whose_log_reader_is_gone_still_serves_and_stops() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/plura.db", dir.path().display());
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
        .env("PLURA_LOG", "debug")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap()).lines();
    let base = loop {
        let line = stdout
            .next_line()
            .await
            .unwrap()
            .expect("it says where it listens");
        if let Some(base) = line.strip_prefix("Listening on ") {
            break base.to_string();
        }
    };
    drop(stdout);
    drop(server.stderr.take());

    for _ in 0..3 {
        let response = whoami(&base, "plura_not-a-token").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let pid = server.id().unwrap().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(sent.unwrap().success());
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), server.wait()).await;
    let status = stopped.expect("it stops on SIGTERM").unwrap();
    assert!(status.success(), "exit status {status}");
    // Without systemd's $STATE_DIRECTORY, the first admin token is beside the database.
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert!(token.starts_with("plura_"), "{token}");
}

/// A server that fails while nobody reads its stderr still says so with its own exit code (1),
/// not a panic's (101) on the way out.
#[tokio::test]
async fn a_failure_with_its_reader_gone_exits_with_its_own_code() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(BIN)
        .args(["serve", "--database", "mysql://nowhere/plura"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}

/// Slack's URL is a secret: it can come from the environment or a file, not only the command
/// line that `ps` shows.
#[tokio::test]
async fn slack_urls_come_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/slack.db", dir.path().display());
    let file = dir.path().join("slack-urls");
    std::fs::write(
        &file,
        "# the ops channel\nhttp://10.255.0.3/services/T1/B1/fromfile\n\n",
    )
    .unwrap();
    let server = Served::start_with_env(
        BIN,
        &["--listen", "127.0.0.1:0", "--database", &database],
        &[
            (
                "PLURA_ALERT_SLACK_URL",
                "http://10.255.0.3/services/T1/B1/fromenv",
            ),
            ("PLURA_ALERT_SLACK_URL_FILE", file.to_str().unwrap()),
        ],
    )
    .await;
    let admin = server.first_start_token().unwrap();
    let hooks: serde_json::Value = server.get("/api/v1/webhooks", &admin).await;
    let hooks = hooks["items"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert!(
        hooks
            .iter()
            .all(|h| h["origin"] == "command line" && h["format"] == "slack")
    );
    terminate(server).await;
}

#[tokio::test]
async fn an_online_backup_is_owner_only_and_serves_the_same_agents() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/fleet.db", dir.path().display());
    let server = start(&database).await;
    let admin = server.first_start_token().unwrap();
    let db = ["--database", database.as_str()];
    let enroll = run(&[&["enrollment-token"][..], &db].concat()).await;
    assert_eq!(log_in(&server.base, &enroll).await, StatusCode::OK);

    // Taken while the server runs.
    let copy = dir.path().join("backups/fleet-copy.db");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    let to = copy.to_str().unwrap();
    run_all(&[&["backup", "--to", to][..], &db].concat()).await;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.path().join("backups/fleet-copy.db.partial").exists());
    // A backup never overwrites a file.
    let stderr =
        run_failing(Command::new(BIN).args([&["backup", "--to", to][..], &db].concat())).await;
    assert!(stderr.contains("exists already"), "{stderr}");
    terminate(server).await;

    // The source is only read: a backup of a stopped server's file leaves it byte for byte.
    let source = dir.path().join("fleet.db");
    let before = std::fs::read(&source).unwrap();
    let second = dir.path().join("backups/second.db");
    run_all(&[&["backup", "--to", second.to_str().unwrap()][..], &db].concat()).await;
    assert_eq!(std::fs::read(&source).unwrap(), before);

    // A server started on the copy serves the same agent, and the admin token of the original.
    let restored = start(&format!("sqlite://{to}")).await;
    let agents = restored.agents(&admin).await;
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0].hostname, "cli-host");
    terminate(restored).await;

    // What cannot be backed up says why.
    let missing = format!("sqlite://{}/none.db", dir.path().display());
    let third = dir.path().join("third.db");
    let stderr = run_failing(Command::new(BIN).args([
        "backup",
        "--database",
        &missing,
        "--to",
        third.to_str().unwrap(),
    ]))
    .await;
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(!dir.path().join("none.db").exists(), "not created");
    let stderr = run_failing(Command::new(BIN).args([
        "backup",
        "--database",
        "postgres://plura:secret@db.example/plura",
        "--to",
        third.to_str().unwrap(),
    ]))
    .await;
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[tokio::test]
async fn single_sign_on_settings_are_checked_and_a_provider_down_keeps_the_rest_working() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/sso.db", dir.path().display());
    let serve = |extra: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
            .args(extra);
        command
    };
    let issuer = [
        "--oidc-issuer",
        "https://idp.example.com",
        "--oidc-client-id",
        "fleet",
    ];
    let stderr = run_failing(&mut serve(
        &[&issuer[..], &["--oidc-admin", "ops"]].concat(),
    ))
    .await;
    assert!(stderr.contains("--public-url"), "{stderr}");
    let plain = ["--public-url", "http://10.1.2.3", "--oidc-admin", "ops"];
    let stderr = run_failing(&mut serve(&[&issuer[..], &plain].concat())).await;
    assert!(stderr.contains("plain HTTP"), "{stderr}");
    let no_roles = ["--public-url", "https://fleet.example.com"];
    let stderr = run_failing(&mut serve(&[&issuer[..], &no_roles].concat())).await;
    assert!(stderr.contains("--oidc-admin"), "{stderr}");

    // A provider that does not answer: the server starts, offers SSO, says the provider is
    // down at sign-in, and its tokens still work. Role values come from the environment too.
    let server = Served::start_with_env(
        BIN,
        &[
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--public-url",
            "http://127.0.0.1:9",
            "--oidc-issuer",
            "http://127.0.0.1:9/realms/x",
            "--oidc-client-id",
            "fleet",
        ],
        &[("PLURA_OIDC_MONITOR", "noc,soc")],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let offer = http
        .get(format!("{}/api/v1/session/sso", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(offer.status(), StatusCode::OK);
    let login = http
        .get(format!("{}/auth/oidc/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::BAD_GATEWAY);
    assert!(login.text().await.unwrap().contains("cannot be reached"));
    let token = run(&[
        "token",
        "create",
        "--role",
        "monitor",
        "--name",
        "noc",
        "--database",
        &database,
    ])
    .await;
    assert_eq!(whoami(&server.base, &token).await.status(), StatusCode::OK);
    terminate(server).await;
}
