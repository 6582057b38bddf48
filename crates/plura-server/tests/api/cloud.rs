//! What the cloud watch reports, as the server keeps it: verdicts only for agents still silent
//! on the instance asked about, stop alerts that wait for them (or not, when no watch runs),
//! the coverage grace, and reports that are checked and bounded. The watch itself runs against
//! the EC2 emulator in plura-eni's tests; here reports are posted as it would.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plura_proto::{AgentStatus, CloudReportOutcome, Coverage, Role, SilentAgentList, Verdict};
use plura_server::fleet::{CloudPolicy, LivenessPolicy};
use plura_testkit::receiver::Receiver;
use plura_testkit::{Db, TestServer, expect_error, fast_policy, login};

use super::STOP_WITHIN;

async fn start(db: Db, cloud: CloudPolicy) -> (TestServer, Receiver, String) {
    let policy = LivenessPolicy {
        cloud,
        ..fast_policy()
    };
    let server = TestServer::start_with(db, policy).await;
    let receiver = Receiver::start().await;
    server
        .add_webhook(&receiver.url, plura_proto::WebhookFormat::Json, None)
        .await;
    let operator = server.token(Role::Operator).await;
    (server, receiver, operator)
}

/// Logs in an agent on EC2 instance `instance`; answers its id.
async fn on_instance(server: &TestServer, n: u8, instance: &str) -> i64 {
    let mut request = login(&format!("10.70.0.{n}"), &format!("cloud-{n}"));
    request.cloud.instance_id = Some(instance.into());
    request.cloud.zone = Some("ap-northeast-2a".into());
    server.login_with(&request).await.agent_id
}

async fn report(server: &TestServer, token: &str, body: &Value) -> reqwest::Response {
    server
        .call(
            Method::POST,
            "/api/v1/cloud/report",
            Some(token),
            Some(body),
        )
        .await
}

async fn kept(server: &TestServer, token: &str, body: Value) -> CloudReportOutcome {
    let response = report(server, token, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn verdict(agent: i64, instance: &str, verdict: &str) -> Value {
    json!({"agent_id": agent, "instance_id": instance, "verdict": verdict})
}

pub async fn verdicts_decide_the_held_stop_alerts_and_a_return_clears_them(db: Db) {
    let wait = Duration::from_secs(4);
    let cloud = CloudPolicy {
        verdict_wait: wait,
        ..CloudPolicy::default()
    };
    let (server, receiver, operator) = start(db, cloud).await;

    // No watch has reported: a stop alert goes out as it always did.
    let unwatched = on_instance(&server, 1, "i-unwatched").await;
    server
        .wait_for_status(unwatched, AgentStatus::Stopped, STOP_WITHIN)
        .await;
    receiver
        .wait_for(STOP_WITHIN, |r| r.json()["event"] == "agent_stopped")
        .await
        .expect("the stop alert, not held");

    // A watch reports (an empty round counts): stops of agents on EC2 wait for their verdict.
    kept(&server, &operator, json!({})).await;
    let gone = on_instance(&server, 2, "i-gone").await;
    let waiting = on_instance(&server, 3, "i-waiting").await;
    let off_ec2 = server.login("10.70.0.4", "on-premises").await.agent_id;
    let rebooted = on_instance(&server, 5, "i-rebooted").await;
    for id in [gone, waiting, off_ec2, rebooted] {
        server
            .wait_for_status(id, AgentStatus::Stopped, STOP_WITHIN)
            .await;
    }
    // Back within the wait (a reboot): neither its stop nor its return is news.
    on_instance(&server, 5, "i-rebooted").await;
    // The agent off EC2 is alerted at once; the two on EC2 wait.
    receiver
        .wait_for(STOP_WITHIN, |r| {
            r.json()["agents"][0]["agent"]["id"] == off_ec2
        })
        .await
        .expect("the stop alert of the agent off EC2");
    let silent: SilentAgentList = server.get("/api/v1/cloud/silent").await;
    let listed: Vec<i64> = silent.items.iter().map(|a| a.agent_id).collect();
    assert_eq!(listed, [unwatched, gone, waiting]);

    // Verdicts: the first's instance moved on (another instance id), the second's is gone,
    // the third's is unknown; and one of an agent that does not exist.
    let outcome = kept(
        &server,
        &operator,
        json!({"verdicts": [
            verdict(unwatched, "i-another", "running"),
            verdict(gone, "i-gone", "terminated"),
            verdict(waiting, "i-waiting", "unknown"),
            verdict(999_999, "i-nobody", "running"),
        ]}),
    )
    .await;
    assert_eq!(outcome.verdicts_kept, 2);
    assert_eq!(server.agent(unwatched).await.cloud.verdict, None);
    assert_eq!(
        server.agent(gone).await.cloud.verdict,
        Some(Verdict::Terminated)
    );
    assert_eq!(
        server.agent(waiting).await.cloud.verdict,
        Some(Verdict::Unknown)
    );
    // A terminated verdict is settled: the watch no longer asks about it.
    let silent: SilentAgentList = server.get("/api/v1/cloud/silent").await;
    let listed: Vec<i64> = silent.items.iter().map(|a| a.agent_id).collect();
    assert_eq!(listed, [unwatched, waiting]);
    let monitor = server.token(Role::Monitor).await;
    let csv = server
        .request(
            Method::GET,
            "/api/v1/agents.csv?verdict=terminated",
            Some(&monitor),
        )
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(r#""verdict","verdict_at""#), "{csv}");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].contains(r#""cloud-2""#) && lines[1].contains(r#""terminated""#),
        "{csv}"
    );

    // The unknown one's alert goes out as a plain stop once the wait is over; the scale-in's
    // never does.
    tokio::time::sleep(wait).await;
    receiver
        .wait_for(STOP_WITHIN, |r| {
            r.json()["agents"][0]["agent"]["id"] == waiting
        })
        .await
        .expect("the held alert, sent as it is after the wait");
    let stops_of_gone = receiver
        .delivered()
        .iter()
        .filter(|r| r.body.contains("\"i-gone\""))
        .count();
    assert_eq!(stops_of_gone, 0, "a scale-in raises no alert");
    let of_rebooted = receiver
        .delivered()
        .iter()
        .filter(|r| r.body.contains("\"cloud-5\""))
        .count();
    assert_eq!(of_rebooted, 0, "a reboot within the wait raises no alert");

    // A return clears the verdict.
    on_instance(&server, 2, "i-gone").await;
    assert_eq!(server.agent(gone).await.cloud.verdict, None);
}

pub async fn scale_in_is_alerted_as_information_when_asked(db: Db) {
    let cloud = CloudPolicy {
        verdict_wait: Duration::from_secs(600),
        alert_on_scale_in: true,
        ..CloudPolicy::default()
    };
    let (server, receiver, operator) = start(db, cloud).await;
    kept(&server, &operator, json!({})).await;
    let ids = [
        on_instance(&server, 1, "i-1").await,
        on_instance(&server, 2, "i-2").await,
    ];
    for id in ids {
        server
            .wait_for_status(id, AgentStatus::Stopped, STOP_WITHIN)
            .await;
    }
    let outcome = kept(
        &server,
        &operator,
        json!({"verdicts": [
            verdict(ids[0], "i-1", "terminated"),
            verdict(ids[1], "i-2", "instance_stopped"),
        ]}),
    )
    .await;
    assert_eq!(outcome.verdicts_kept, 2);
    let gone = receiver
        .wait_for(STOP_WITHIN, |r| r.json()["event"] == "agent_instance_gone")
        .await
        .expect("one informational message");
    let body = gone.json();
    assert_eq!(body["count"], 2, "{body}");
    assert!(
        body["text"].as_str().unwrap().contains("scale-in"),
        "{body}"
    );
    let stopped: plura_proto::AgentList =
        server.get("/api/v1/agents?verdict=instance_stopped").await;
    assert_eq!(stopped.items.len(), 1);
    assert_eq!(stopped.items[0].id, ids[1]);
}

pub async fn young_instances_are_in_their_grace(db: Db) {
    let cloud = CloudPolicy {
        coverage_grace: Duration::from_secs(300),
        ..CloudPolicy::default()
    };
    let (server, receiver, operator) = start(db, cloud).await;
    let now = plura_proto::Timestamp::now();
    let old = now.minus(Duration::from_secs(3600));
    let covered = on_instance(&server, 1, "i-covered").await;
    let instance = |id: &str, at: plura_proto::Timestamp| json!({"instance_id": id, "zone": "ap-northeast-2a", "launched_at": at});
    kept(
        &server,
        &operator,
        json!({"groups": [{"asg": "web", "instances": [
            instance("i-covered", old),
            instance("i-young", now),
            instance("i-bare", old),
        ]}, {"asg": "empty", "instances": []}]}),
    )
    .await;
    let coverage: Coverage = server.get("/api/v1/coverage").await;
    assert!(coverage.reported_at.is_some());
    let names: Vec<&str> = coverage.groups.iter().map(|g| g.asg.as_str()).collect();
    assert_eq!(names, ["empty", "web"]);
    let web = &coverage.groups[1];
    assert_eq!((web.instances, web.covered), (3, 1));
    let uncovered: Vec<(&str, bool)> = web
        .uncovered
        .iter()
        .map(|i| (i.instance_id.as_str(), i.in_grace))
        .collect();
    assert_eq!(uncovered, [("i-bare", false), ("i-young", true)]);
    let bounded: Coverage = server.get("/api/v1/coverage?limit=1").await;
    let listed: Vec<&str> = bounded.groups[1]
        .uncovered
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    assert_eq!(
        (listed, bounded.groups[1].uncovered_more),
        (vec!["i-bare"], 1)
    );
    assert_eq!(
        server
            .metric(r#"plura_cloud_group_uncovered_instances{asg="web"}"#)
            .await,
        1.0
    );
    let alert = receiver
        .wait_for(STOP_WITHIN, |r| {
            r.json()["event"] == "instances_without_agent"
        })
        .await
        .expect("the bare instance's alert");
    assert_eq!(alert.json()["count"], 1, "{}", alert.body);
    assert_eq!(
        alert.json()["instances"][0]["instance"]["instance_id"],
        "i-bare"
    );

    // The next round: the scaled-in instance is gone from the group, and nothing is alerted
    // twice.
    kept(
        &server,
        &operator,
        json!({"groups": [{"asg": "web", "instances": [
            instance("i-covered", old),
            instance("i-bare", old),
        ]}]}),
    )
    .await;
    let coverage: Coverage = server.get("/api/v1/coverage").await;
    assert_eq!(coverage.groups[1].instances, 2);
    // The list is bounded; what is left out is counted.
    let first: Coverage = server.get("/api/v1/coverage?limit=1").await;
    let web = &first.groups[1];
    assert_eq!((web.uncovered.len(), web.uncovered_more), (1, 0));
    assert_eq!(web.uncovered[0].instance_id, "i-bare");
    for limit in ["0", "10001", "x"] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/v1/coverage?limit={limit}"),
                Some(&server.admin),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{limit}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = receiver
        .delivered()
        .iter()
        .filter(|r| r.json()["event"] == "instances_without_agent")
        .count();
    assert_eq!(alerts, 1);
    // Its agent stops: the instance it covered is uncovered, and named with its agent.
    server
        .wait_for_status(covered, AgentStatus::Stopped, STOP_WITHIN)
        .await;
    let coverage: Coverage = server.get("/api/v1/coverage").await;
    let web = &coverage.groups[1];
    assert_eq!(web.covered, 0);
    assert!(
        web.uncovered
            .iter()
            .any(|i| i.instance_id == "i-covered" && i.agent_id == Some(covered)),
        "{web:?}"
    );
}

pub async fn cloud_reports_are_checked_and_bounded(db: Db) {
    let (server, _receiver, operator) = start(db, CloudPolicy::default()).await;
    let monitor = server.token(Role::Monitor).await;
    expect_error(
        report(&server, &monitor, &json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    for (body, problem) in [
        (
            json!({"verdicts": [verdict(1, "i-1", "vanished")]}),
            "vanished",
        ),
        (
            json!({"groups": [{"asg": "web", "instances": []}, {"asg": "web", "instances": []}]}),
            "twice",
        ),
        (json!({"verdicts": [], "extra": 1}), "extra"),
        (
            json!({"verdicts": [verdict(1, "i-1\nforged", "running")]}),
            "instance_id",
        ),
    ] {
        let response = report(&server, &operator, &body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status.is_client_error() && text.contains(problem),
            "{body}: {status} {text}"
        );
    }
    let many: Vec<Value> = (0..10_001).map(|n| verdict(n, "i-1", "running")).collect();
    let response = report(&server, &operator, &json!({"verdicts": many})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Larger than an agent's call may be, within a report's bound: taken.
    let instances: Vec<Value> = (0..2_000)
        .map(|n| json!({"instance_id": format!("i-{n:017x}"), "zone": "ap-northeast-2a", "launched_at": plura_proto::Timestamp::now()}))
        .collect();
    let outcome = kept(
        &server,
        &operator,
        json!({"groups": [{"asg": "big", "instances": instances}]}),
    )
    .await;
    assert_eq!(outcome.groups, 1);
    // Past it: refused from its Content-Length, before it is read.
    let head = super::too_large_answer(&server, &server.url("/api/v1/cloud/report")).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    for query in ["limit=0", "limit=10001", "after=x"] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/v1/cloud/silent?{query}"),
                Some(&monitor),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let response = server
        .request(Method::GET, "/api/v1/agents?verdict=maybe", Some(&monitor))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// On a shared database a watch may report to any server: the one that sweeps holds the stop
/// alert, and the verdict posted to another decides it.
pub async fn a_watch_may_report_to_any_server() {
    let cloud = CloudPolicy {
        verdict_wait: Duration::from_secs(600),
        ..CloudPolicy::default()
    };
    let (server, receiver, operator) = start(Db::Postgres, cloud).await;
    let other = server.another().await;
    kept(&other, &operator, json!({})).await;
    let id = on_instance(&server, 1, "i-shared").await;
    server
        .wait_for_status(id, AgentStatus::Stopped, STOP_WITHIN)
        .await;
    // Held: a few ticks go by without it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.delivered().is_empty(), "the stop alert waits");
    kept(
        &other,
        &operator,
        json!({"verdicts": [verdict(id, "i-shared", "running")]}),
    )
    .await;
    let alert = receiver
        .wait_for(STOP_WITHIN, |r| {
            r.json()["event"] == "agent_silent_on_running_instance"
        })
        .await
        .expect("the verdict given through the other server decides the held alert");
    assert_eq!(alert.json()["agents"][0]["agent"]["id"], id);
    assert_eq!(server.agent(id).await.cloud.verdict, Some(Verdict::Running));
}
