//! `plura-eni watch` against the emulated cloud and a real server: a group of four, where one
//! agent heartbeats, one instance is scaled in with its agent silent, one agent goes silent on a
//! running instance, and one instance never gets an agent.

use std::sync::Arc;
use std::time::Duration;

use plura_proto::{AgentList, AgentStatus, Coverage, Role, Verdict, WebhookFormat};
use plura_server::fleet::{CloudPolicy, LivenessPolicy};
use plura_testkit::receiver::Receiver;
use plura_testkit::{Db, TestServer, fast_policy};

use crate::cloud::*;

const GROUP: &str = "web";

#[tokio::test]
async fn the_watch_tells_a_scale_in_from_a_silent_agent_and_finds_instances_without_one_on_sqlite()
{
    scale_in_silence_and_coverage(Db::Sqlite).await;
}

#[tokio::test]
async fn the_watch_tells_a_scale_in_from_a_silent_agent_and_finds_instances_without_one_on_postgres()
 {
    scale_in_silence_and_coverage(Db::Postgres).await;
}

/// One round of the watch, as cron would run it; with the group's coverage unless `alone`.
async fn watch_once(cloud: &Cloud, server: &TestServer, token: &str, alone: bool) -> Run {
    let mut args = vec!["watch", "--server", &server.base, "--once"];
    if !alone {
        args.extend(["--asg", GROUP]);
    }
    let run = cloud.eni_with_env(&args, &[("PLURA_TOKEN", token)]).await;
    assert_eq!(run.code, 0, "watch: {}", run.stderr);
    run
}

async fn scale_in_silence_and_coverage(db: Db) {
    let cloud = Cloud::start().await;
    cloud.create_group(GROUP, 4).await;
    let instances = cloud.group_instances(GROUP).await;
    let policy = LivenessPolicy {
        cloud: CloudPolicy {
            // Longer than the test: a stop alert that goes out did so by its verdict.
            verdict_wait: Duration::from_secs(600),
            coverage_grace: Duration::ZERO,
            ..CloudPolicy::default()
        },
        ..fast_policy()
    };
    let server = Arc::new(TestServer::start_with(db, policy).await);
    let receiver = Receiver::start().await;
    server
        .add_webhook(&receiver.url, WebhookFormat::Json, None)
        .await;
    let token = server.token(Role::Operator).await;
    // A first round, of verdicts alone, before anything stops: from now on, stop alerts wait
    // for their verdict.
    let first = watch_once(&cloud, &server, &token, true).await;
    assert!(
        first.stdout.contains("no silent agents on EC2"),
        "{}",
        first.stdout
    );

    // Agents on the first three instances; the fourth never gets one.
    let mut agents = Vec::new();
    for (n, instance) in instances.iter().take(3).enumerate() {
        let mut login = plura_testkit::login(&format!("172.31.64.{}", n + 10), &format!("web-{n}"));
        login.cloud.instance_id = Some(instance.clone());
        login.cloud.zone = Some(ZONE_A.into());
        login.cloud.asg = Some(GROUP.into());
        agents.push(server.login_with(&login).await.agent_id);
    }
    let (beating, scaled_in, silenced) = (agents[0], agents[1], agents[2]);
    let heartbeats = tokio::spawn({
        let server = server.clone();
        async move {
            loop {
                server.heartbeat(beating).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    // Scale-in takes the second instance; the third's agent is killed on a running instance.
    cloud
        .autoscaling()
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&instances[1])
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    for agent in [scaled_in, silenced] {
        server
            .wait_for_status(agent, AgentStatus::Stopped, Duration::from_secs(30))
            .await;
    }

    let round = watch_once(&cloud, &server, &token, false).await;
    assert!(
        round.stdout.contains("1 running") && round.stdout.contains("1 terminated"),
        "{}",
        round.stdout
    );
    let verdict = |id| {
        let server = &server;
        async move { server.agent(id).await.cloud.verdict }
    };
    assert_eq!(verdict(scaled_in).await, Some(Verdict::Terminated));
    assert_eq!(verdict(silenced).await, Some(Verdict::Running));
    assert_eq!(verdict(beating).await, None);
    assert!(server.agent(silenced).await.cloud.verdict_at.is_some());
    let running: AgentList = server.get("/api/v1/agents?verdict=running").await;
    let ids: Vec<i64> = running.items.iter().map(|a| a.id).collect();
    assert_eq!(ids, [silenced]);
    assert_eq!(
        server
            .metric(r#"plura_agents_by_verdict{verdict="running"}"#)
            .await,
        1.0
    );

    // Coverage: the live instances are the first, third and fourth; the first alone has a
    // running agent.
    let coverage: Coverage = server.get("/api/v1/coverage").await;
    assert_eq!(coverage.groups.len(), 1, "{coverage:?}");
    let group = &coverage.groups[0];
    assert_eq!(
        (group.asg.as_str(), group.instances, group.covered),
        (GROUP, 3, 1)
    );
    let uncovered: Vec<(&str, Option<i64>, bool)> = group
        .uncovered
        .iter()
        .map(|i| (i.instance_id.as_str(), i.agent_id, i.in_grace))
        .collect();
    let mut expected = vec![
        (instances[2].as_str(), Some(silenced), false),
        (instances[3].as_str(), None, false),
    ];
    expected.sort();
    let mut uncovered = uncovered;
    uncovered.sort();
    assert_eq!(uncovered, expected);
    assert_eq!(
        server
            .metric(r#"plura_cloud_group_uncovered_instances{asg="web"}"#)
            .await,
        2.0
    );

    // The alerts: the agent silent on a running instance, the instances without an agent, and
    // no plain stop (the scale-in's is dropped, the silent one's became its own kind).
    let silent_alert = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.json()["event"] == "agent_silent_on_running_instance"
        })
        .await
        .expect("an alert for the agent silent on a running instance");
    let body = silent_alert.json();
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["agents"][0]["agent"]["id"], silenced, "{body}");
    let uncovered_alert = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.json()["event"] == "instances_without_agent"
        })
        .await
        .expect("an alert for the instances without an agent");
    assert_eq!(
        uncovered_alert.json()["count"],
        2,
        "{}",
        uncovered_alert.body
    );
    // A few more ticks, and another round: nothing else goes out.
    watch_once(&cloud, &server, &token, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut events: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    // Sent side by side, in no set order.
    events.sort();
    assert_eq!(
        events,
        [
            "agent_silent_on_running_instance",
            "instances_without_agent"
        ],
        "{events:?}"
    );

    // The silent agent comes back: its verdict is cleared, and its instance covered again.
    server
        .login_with(&{
            let mut login = plura_testkit::login("172.31.64.12", "web-2");
            login.cloud.instance_id = Some(instances[2].clone());
            login
        })
        .await;
    assert_eq!(verdict(silenced).await, None);
    let coverage: Coverage = server.get("/api/v1/coverage").await;
    assert_eq!(coverage.groups[0].covered, 2);
    heartbeats.abort();
}

#[tokio::test]
async fn the_watch_says_clearly_when_the_server_cannot_be_told() {
    let cloud = Cloud::start().await;
    let server = TestServer::start(Db::Sqlite).await;
    // A monitor reads, but may not report.
    let monitor = server.token(Role::Monitor).await;
    let run = cloud
        .eni_with_env(
            &["watch", "--server", &server.base, "--once"],
            &[("PLURA_TOKEN", &monitor)],
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("/api/v1/cloud/report: 403 Forbidden"),
        "{}",
        run.stderr
    );
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = cloud
        .eni_with_env(
            &["watch", "--server", &nobody, "--once"],
            &[("PLURA_TOKEN", &monitor)],
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "plura-eni: the PLURA server {nobody}: /api/v1/cloud/silent"
        )),
        "{}",
        run.stderr
    );
    // No token at all.
    let run = cloud
        .eni_with_env(&["watch", "--server", &server.base, "--once"], &[])
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("PLURA_TOKEN"), "{}", run.stderr);
}

#[tokio::test]
async fn the_watch_trusts_the_server_as_the_agent_does() {
    let cloud = Cloud::start().await;
    let ca = Arc::new(plura_testkit::tls::TestCa::new());
    let server = TestServer::start_tls(Db::Sqlite, fast_policy(), ca.clone()).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let operator = server.token(Role::Operator).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{operator}\n")).unwrap();
    let token_file = token_file.path().to_str().unwrap();
    let ca_file = ca.ca_file.to_str().unwrap();
    let watch = |trust: &[&str]| {
        let mut args = vec![
            "watch",
            "--server",
            &server.base,
            "--once",
            "--token-file",
            token_file,
        ];
        args.extend(trust);
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    // The private CA that signed the server's certificate: trusted.
    let run = eni_owned(&cloud, watch(&["--ca-file", ca_file])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Neither the system's store nor a pin of another certificate trusts it.
    let run = eni_owned(&cloud, watch(&[])).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
    assert!(run.stderr.contains("check --ca-file"), "{}", run.stderr);
    let other = "sha256:".to_string() + &"ab".repeat(32);
    let pinned = watch(&["--ca-file", ca_file, "--server-fingerprint", &other]);
    let run = eni_owned(&cloud, pinned).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("PinMismatch"), "{}", run.stderr);
}

async fn eni_owned(cloud: &Cloud, args: Vec<String>) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cloud.eni_with_env(&args, &[]).await
}
