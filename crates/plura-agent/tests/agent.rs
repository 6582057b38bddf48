//! The real agent binary against a real server on loopback (or inside a network namespace the
//! test makes): registration, re-runs, SIGTERM, SIGKILL, server restarts, deletes, identity
//! changes, a missing server, bad configuration, the machine id from IMDS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::process::Command;

use plura_proto::{Agent, AgentStatus, AlertMessage, EventKind, WebhookFormat};
use plura_server::enrollment;
use plura_server::store::{ListFilter, ListStore};
use plura_testkit::imds::{Imds, Instance};
use plura_testkit::process::Process;
use plura_testkit::receiver::Receiver;
use plura_testkit::{Db, TestServer, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_plura-agent");
const WAIT: Duration = Duration::from_secs(20);

/// This host's name as the server keeps it (its normal form).
fn hostname() -> String {
    plura_proto::normal_hostname(&nix::unistd::gethostname().unwrap().into_string().unwrap())
}

/// Writes a plura.conf for `server` with the extra lines given.
fn config(dir: &Path, server: &TestServer, extra: &str) -> PathBuf {
    let path = dir.join("plura.conf");
    let text = format!(
        "# written by the test\nserver_url={}\nenrollment_token={}\nkind=waf\n{extra}",
        server.base, server.enrollment
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts plura-agent with `config` (and the extra environment `env`) as `command` runs it.
fn agent_in(mut command: Command, config: &Path, env: &[(&str, &str)]) -> Process {
    command
        .arg("--config")
        .arg(config)
        // Nothing but loopback is ever asked: no instance metadata unless a test serves it.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PLURA_LOG", "info")
        .envs(env.iter().copied());
    Process::spawn(command)
}

fn start_agent(config: &Path) -> Process {
    agent_in(Command::new(BIN), config, &[])
}

/// Waits until `check` holds for the server's list of agents (by id); answers that list.
async fn wait_for_agents(
    server: &TestServer,
    what: &str,
    check: impl Fn(&[Agent]) -> bool,
) -> Vec<Agent> {
    server.wait_for_agents(what, WAIT, check).await
}

fn running(agents: &[Agent]) -> bool {
    agents.len() == 1 && agents[0].status == AgentStatus::Running
}

#[tokio::test]
async fn registers_once_reruns_as_the_same_entry_and_sigterm_stops_at_once() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &server, "interface=lo\n");

    let mut agent = start_agent(&conf);
    let agents = wait_for_agents(&server, "the agent registers", running).await;
    assert_eq!(agents[0].ip, "127.0.0.1", "the address of interface=lo");
    assert_eq!(agents[0].hostname, hostname());
    assert_eq!(agents[0].kind, "waf");
    let id = agents[0].id;
    agent.wait_for_log("logged in to").await;

    // SIGTERM: goodbye, exit 0, and the server shows it stopped at once.
    assert!(agent.signal("-TERM").await.success());
    let stopped = server.agent(id).await;
    assert_eq!(stopped.status, AgentStatus::Stopped);
    assert_eq!(server.events(id).await[0].event, EventKind::Logout);

    // The next run of the same host is the same entry.
    let mut again = start_agent(&conf);
    let agents = wait_for_agents(&server, "the agent logs in again", running).await;
    assert_eq!(agents[0].id, id);
    again.wait_for_log("created=false").await;
    assert!(again.signal("-TERM").await.success());
    server.finish().await;
}

#[tokio::test]
async fn sigkill_leaves_the_stop_to_the_heartbeat_timeout() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&config(dir.path(), &server, "interface=lo\n"));
    let id = wait_for_agents(&server, "the agent registers", running).await[0].id;

    agent.signal("-KILL").await;
    assert_eq!(
        server.agent(id).await.status,
        AgentStatus::Running,
        "no goodbye was said"
    );
    server.wait_for_status(id, AgentStatus::Stopped, WAIT).await;
    assert_eq!(server.events(id).await[0].event, EventKind::Stopped);
    server.finish().await;
}

/// The alert of a stop arrives within the silence limit and one tick of the kill (and a margin
/// for a busy machine); its return is alerted; a goodbye is not.
#[tokio::test]
async fn a_killed_agent_is_alerted_and_a_graceful_one_is_not() {
    let server = TestServer::start(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    server
        .add_webhook(&receiver.url, WebhookFormat::Json, None)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &server, "interface=lo\n");
    let mut agent = start_agent(&conf);
    wait_for_agents(&server, "the agent registers", running).await;

    let killed = std::time::Instant::now();
    agent.signal("-KILL").await;
    let stop = receiver
        .wait_for(WAIT, |r| r.header("x-plura-event") == "agent_stopped")
        .await
        .expect("the kill is alerted");
    // Reported, not asserted against the clock: the machine is shared.
    println!(
        "alert of a SIGKILL arrived {:?} after it (silence limit 3 s)",
        killed.elapsed()
    );
    let message: AlertMessage = serde_json::from_str(&stop.body).unwrap();
    let alerted = &message.agents[0];
    assert_eq!(alerted.agent.hostname, hostname());
    // The server's own record: the sweep stopped it within the silence limit and two ticks of
    // its last heartbeat written (which lags the last one heard by up to a tick).
    let last_seen = alerted
        .agent
        .last_seen_at
        .expect("it was heard")
        .as_millis();
    let silent = Duration::from_millis((alerted.at.as_millis() - last_seen) as u64);
    let policy = plura_testkit::fast_policy();
    let latest = policy.silence_limit() + policy.tick() * 2;
    assert!(
        silent >= policy.silence_limit() && silent <= latest,
        "stopped after {silent:?} of silence; the policy says {:?} to {latest:?}",
        policy.silence_limit()
    );

    // It comes back, then shuts down properly: the return is alerted, the goodbye is not.
    let mut again = start_agent(&conf);
    receiver
        .wait_for(WAIT, |r| r.header("x-plura-event") == "agent_back")
        .await
        .expect("the return is alerted");
    assert!(again.signal("-TERM").await.success());
    let policy_wait = policy.silence_limit() + policy.tick() * 4;
    tokio::time::sleep(policy_wait).await;
    let events: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-plura-event").to_string())
        .collect();
    assert_eq!(events, ["agent_stopped", "agent_back"]);
    server.finish().await;
}

#[tokio::test]
async fn survives_a_server_restart_and_logs_in_again_after_a_delete() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&config(dir.path(), &server, "interface=lo\n"));
    let id = wait_for_agents(&server, "the agent registers", running).await[0].id;

    // The server goes away for a while; the agent keeps trying, then carries on.
    let stopped = server.stop().await;
    agent.wait_for_log("heartbeat failed").await;
    let server = stopped.start().await;
    let before = server.agent(id).await.last_seen_at.unwrap();
    eventually("heartbeats resume", WAIT, || async {
        (server.agent(id).await.last_seen_at.unwrap() > before).then_some(())
    })
    .await;
    assert_eq!(server.agents("").await.total, 1, "no new entry");

    // Deleted by an operator: the agent's next heartbeat is refused and it registers anew.
    assert_eq!(server.delete_agent(id).await, StatusCode::NO_CONTENT);
    let agents = wait_for_agents(&server, "the agent registers again", |a| {
        running(a) && a[0].id != id
    })
    .await;
    assert_eq!(agents[0].hostname, hostname());
    agent.wait_for_log("; logging in again").await;
    assert!(agent.signal("-TERM").await.success());
    server.finish().await;
}

#[tokio::test]
async fn a_key_revoked_by_a_newer_login_makes_the_agent_log_in_again() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&config(dir.path(), &server, "interface=lo\n"));
    let first = wait_for_agents(&server, "the agent registers", running).await;
    let id = first[0].id;

    // Someone else logs in as this identity: the agent's key is revoked.
    server.login(&first[0].ip, &first[0].hostname).await;
    agent.wait_for_log("refused the credential").await;
    agent.wait_for_log("logging in again").await;
    eventually("the agent logs in again", WAIT, || async {
        let logins = server.events(id).await;
        (logins
            .iter()
            .filter(|e| e.event == EventKind::Login)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    assert!(agent.signal("-TERM").await.success());
    assert_eq!(
        server.agent(id).await.status,
        AgentStatus::Stopped,
        "its goodbye counted"
    );
    server.finish().await;
}

#[tokio::test]
async fn a_rotated_enrollment_token_is_taken_from_the_changed_config_without_an_outage() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &server, "interface=lo\n");
    let mut agent = start_agent(&conf);
    let first = wait_for_agents(&server, "the agent registers", running).await;
    let id = first[0].id;

    // The old token stops working at once: the agent's key is untouched.
    let (token, _) = enrollment::rotate(server.store(), Duration::ZERO)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&server.enrollment, &token);
    std::fs::write(&conf, text).unwrap();
    agent.wait_for_log("using the new configuration").await;

    // Its next login (here: its key revoked by another login) uses the new token.
    let other = plura_testkit::login(&first[0].ip, &first[0].hostname);
    let path = "/api/v1/agents/login";
    let r = server
        .call(reqwest::Method::POST, path, Some(&token), Some(&other))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let logins = || async {
        let events = server.events(id).await;
        let logins = events.iter().filter(|e| e.event == EventKind::Login);
        (logins.count() >= 2).then_some(())
    };
    let again = plura_testkit::within(WAIT, logins).await;
    assert!(again.is_some(), "it logs in again: {:#?}", agent.stderr());
    assert!(!agent.logged("login refused"), "{:?}", agent.stderr());
    let events = server.events(id).await;
    assert!(
        events.iter().all(|e| e.event != EventKind::Stopped),
        "{events:?}"
    );

    // SIGHUP rereads at once; a broken file is reported and the configuration kept.
    std::fs::write(&conf, "server_url http://nowhere\n").unwrap();
    let pid = agent.id().to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    agent.wait_for_log("keeping the configuration in use").await;
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    assert!(agent.signal("-TERM").await.success());
    server.finish().await;
}

#[tokio::test]
async fn waits_for_a_missing_server_and_logs_in_when_it_comes() {
    let server = TestServer::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &server, "interface=lo\n");
    let stopped = server.stop().await;

    let mut agent = start_agent(&conf);
    agent.wait_for_log("cannot log in to").await;
    let server = stopped.start().await;
    wait_for_agents(
        &server,
        "the agent logs in once the server is there",
        running,
    )
    .await;
    assert!(agent.signal("-TERM").await.success());
    server.finish().await;
}

#[tokio::test]
async fn sends_the_ec2_instance_id_and_cloud_labels_when_imds_answers() {
    let server = TestServer::start(Db::Sqlite).await;
    let imds = Imds::start(Instance {
        availability_zone: "ap-northeast-2c".into(),
        asg: Some("waf-asg".into()),
        ..Instance::in_seoul("i-0123456789abcdef0")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(
        dir.path(),
        &server,
        "interface=lo\nlogin_with_machine_id=1\n",
    );
    let mut agent = agent_in(
        Command::new(BIN),
        &conf,
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint.as_str()),
        ],
    );
    let agents = wait_for_agents(&server, "the agent registers", running).await;
    assert_eq!(agents[0].machine_id.as_deref(), Some("i-0123456789abcdef0"));
    let cloud = &agents[0].cloud;
    assert_eq!(
        cloud.labels.instance_id.as_deref(),
        Some("i-0123456789abcdef0")
    );
    assert_eq!(cloud.labels.zone.as_deref(), Some("ap-northeast-2c"));
    assert_eq!(cloud.labels.instance_type.as_deref(), Some("c6i.large"));
    assert_eq!(cloud.labels.asg.as_deref(), Some("waf-asg"));
    assert!(agent.signal("-TERM").await.success());

    // Metadata tags off (or no group): the tag is a 404, and the group is simply unknown.
    let untagged = Imds::start(Instance::in_seoul("i-0fedcba9876543210")).await;
    let mut agent = agent_in(
        Command::new(BIN),
        &conf,
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                untagged.endpoint.as_str(),
            ),
        ],
    );
    let agents = wait_for_agents(&server, "the agent logs in again", |agents| {
        running(agents)
            && agents[0].cloud.labels.instance_id.as_deref() == Some("i-0fedcba9876543210")
    })
    .await;
    assert_eq!(
        agents[0].cloud.labels.zone.as_deref(),
        Some("ap-northeast-2a")
    );
    assert_eq!(agents[0].cloud.labels.asg, None);
    assert!(agent.signal("-TERM").await.success());
    server.finish().await;
}

#[tokio::test]
async fn a_bad_config_names_the_file_and_line_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plura.conf");
    std::fs::write(
        &path,
        "server_url=http://127.0.0.1:9\nenrollment_token=x\ninterfcae=eth1\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: unknown key \"interfcae\"", path.display())),
        "{stderr}"
    );

    let missing = dir.path().join("nope.conf");
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&missing)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read it"));
}

/// A network namespace of this test's own, removed when dropped.
struct Netns {
    name: String,
}

impl Netns {
    /// `eth1` (one end of a veth pair) carrying `address`, and loopback up; `None` (with the
    /// reason) where namespaces cannot be made here.
    fn create(address: &str) -> Result<Self, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("network namespaces need root".into());
        }
        let name = format!("plura-agent-test-{}", std::process::id());
        let ns = Self { name };
        ns.ip(&["netns", "add", &ns.name])?;
        for args in [
            &[
                "link",
                "add",
                "eth1",
                "type",
                "veth",
                "peer",
                "name",
                "eth1-peer",
            ][..],
            &["addr", "add", address, "dev", "eth1"],
            &["link", "set", "eth1", "up"],
            &["link", "set", "eth1-peer", "up"],
            &["link", "set", "lo", "up"],
        ] {
            ns.exec_ip(args)?;
        }
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let output = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        self.ip(&[&["netns", "exec", &self.name, "ip"][..], args].concat())
    }

    /// A TCP listener on the namespace's own loopback.
    fn listener(&self) -> std::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace file");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the namespace");
            std::net::TcpListener::bind("127.0.0.1:0").expect("a port inside the namespace")
        })
        .join()
        .unwrap()
    }

    fn agent(&self, config: &Path) -> Process {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, BIN]);
        agent_in(command, config, &[])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.ip(&["netns", "del", &self.name]);
    }
}

async fn agents_in(server: &TestServer) -> Vec<Agent> {
    server
        .store()
        .list(&ListFilter::default())
        .await
        .unwrap()
        .agents
}

#[tokio::test]
async fn in_a_namespace_eth1_gives_the_identity_and_a_new_address_is_a_new_login() {
    let ns = match Netns::create("10.213.0.2/24") {
        Ok(ns) => ns,
        Err(reason) => {
            eprintln!("SKIPPED in_a_namespace_eth1_gives_the_identity: {reason}");
            return;
        }
    };
    // The server listens on the namespace's loopback, where the agent can reach it; the test
    // reads the registry through the server's storage.
    let server = TestServer::start_listening(Db::Sqlite, ns.listener()).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(
        dir.path(),
        &server,
        "interface=eth1\nlogin_hostname_check=0\n",
    );
    let mut agent = ns.agent(&conf);

    let first = eventually("the agent registers", WAIT, || async {
        match agents_in(&server).await.as_slice() {
            [agent] => Some(agent.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(first.ip, "10.213.0.2", "the address of eth1, not of lo");

    // The interface gets another address: the agent says goodbye as the old identity and
    // logs in as the new one.
    ns.exec_ip(&["addr", "del", "10.213.0.2/24", "dev", "eth1"])
        .unwrap();
    ns.exec_ip(&["addr", "add", "10.213.0.3/24", "dev", "eth1"])
        .unwrap();
    eventually(
        "a logout as the old address, a login as the new",
        WAIT,
        || async {
            let agents = agents_in(&server).await;
            let by_ip = |ip: &str| agents.iter().find(|a| a.ip == ip).map(|a| a.status);
            (by_ip("10.213.0.2") == Some(AgentStatus::Stopped)
                && by_ip("10.213.0.3") == Some(AgentStatus::Running))
            .then_some(())
        },
    )
    .await;
    agent.wait_for_log("identity changed").await;
    assert!(agent.signal("-TERM").await.success());
    server.finish().await;
}
