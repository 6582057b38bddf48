//! Alerts by webhook, end to end: a real server posts to a real receiver on loopback, on SQLite
//! and PostgreSQL. Stops without a goodbye, takeovers and returns are alerted, signed; a mass
//! stop is one message; a graceful logout is none; a failing receiver gets the alert again,
//! across a server restart.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use plura_proto::{AuditAction, AuditList, DeliveryState, WebhookFormat, WebhookList};
use plura_server::server::Limits;
use plura_testkit::receiver::{Received, Receiver};
use plura_testkit::{Db, TestServer, eventually, expect_error, fast_policy, login, test_limits};

/// Long enough for the silence limit (3 s), a tick and a restart, on a busy machine.
const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "a-test-secret-0123456789";

/// The receiver's copy of the signature, computed here from the secret and the body.
fn signed_by(received: &Received, secret: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(received.body.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    received.header("x-plura-signature-256") == format!("sha256={expected}")
}

fn event(received: &Received) -> String {
    received.header("x-plura-event").to_string()
}

fn hostnames(message: &Value) -> Vec<String> {
    message["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"]["hostname"].as_str().unwrap().to_string())
        .collect()
}

async fn stops_takeovers_and_returns_are_alerted_once_and_signed(db: Db) {
    let server = TestServer::start(db).await;
    let receiver = Receiver::start().await;
    let slack = Receiver::start().await;
    let created = server
        .add_webhook(&receiver.url, WebhookFormat::Json, Some(SECRET))
        .await;
    assert_eq!(created.secret, SECRET);
    let made = server
        .add_webhook(&slack.url, WebhookFormat::Slack, None)
        .await;
    assert!(made.secret.starts_with("plura_whsec_"), "a secret is made");
    // The list hides the URLs' paths and never shows a secret.
    let listed: WebhookList = server.get("/api/v1/webhooks").await;
    assert_eq!(listed.items.len(), 2);
    let port = receiver.url.trim_end_matches("/hook");
    assert_eq!(listed.items[0].url, format!("{port}/…"));
    assert!(!serde_json::to_string(&listed).unwrap().contains(SECRET));
    // The same URL and format twice is a conflict.
    let again = json!({"url": receiver.url, "secret": SECRET});
    let r = server
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(&server.admin),
            Some(&again),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;

    // Thirty agents log in and go silent while the server is down; the first sweep after the
    // restart stops them together: one message naming thirty.
    let mut ids = Vec::new();
    for n in 0..30 {
        let hostname = format!("scale-in-{n:02}");
        ids.push(
            server
                .login(&format!("10.9.0.{n}"), &hostname)
                .await
                .agent_id,
        );
    }
    // One says goodbye: never alerted.
    let graceful = server.login("10.9.1.1", "graceful").await.agent_id;
    assert_eq!(server.logout(graceful).await, StatusCode::NO_CONTENT);
    let server = server.restart().await;
    let stops = receiver
        .wait_for(WAIT, |r| event(r) == "agent_stopped")
        .await
        .expect("the stop is alerted");
    assert!(
        signed_by(&stops, SECRET),
        "signed with the webhook's secret"
    );
    let message = stops.json();
    assert_eq!(message["count"], 30, "{message}");
    let mut named = hostnames(&message);
    named.sort();
    assert_eq!(named.len(), 30);
    assert_eq!(named[0], "scale-in-00");
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .starts_with("30 agents stopped without saying goodbye"),
        "{message}"
    );
    let slack_stops = slack
        .wait_for(WAIT, |r| event(r) == "agent_stopped")
        .await
        .expect("Slack gets it too");
    let text = slack_stops.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("30 agents stopped"), "{text}");

    // A stopped agent comes back: its return is alerted.
    let mut returning = login("10.9.0.7", "scale-in-07");
    returning.machine_id = Some("i-0first".into());
    server.login_with(&returning).await;
    let back = receiver
        .wait_for(WAIT, |r| event(r) == "agent_back")
        .await
        .expect("the return is alerted");
    assert_eq!(hostnames(&back.json()), ["scale-in-07"]);

    // Another machine takes over a running identity: suspicious, and said so.
    let mut thief = login("10.9.0.7", "scale-in-07");
    thief.machine_id = Some("i-0another".into());
    server.login_with(&thief).await;
    let takeover = receiver
        .wait_for(WAIT, |r| event(r) == "agent_taken_over")
        .await
        .expect("the takeover is alerted");
    let message = takeover.json();
    assert_eq!(
        message["agents"][0]["holder_was_running"], true,
        "{message}"
    );
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("while its holder was still running"),
        "{message}"
    );

    // The new holder says goodbye: no alert for that.
    let id = takeover.json()["agents"][0]["agent"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(server.logout(id).await, StatusCode::NO_CONTENT);

    // Nothing else was sent: one stop message (the goodbye was none), one return, one takeover,
    // to each webhook.
    tokio::time::sleep(server_policy_wait()).await;
    let events: Vec<String> = receiver.received().iter().map(event).collect();
    assert_eq!(
        events,
        ["agent_stopped", "agent_back", "agent_taken_over"],
        "{events:?}"
    );
    for received in receiver.received() {
        assert!(!received.body.contains("graceful"), "a goodbye is no alert");
    }
    assert_eq!(slack.received().len(), 3);

    // The console's record: six deliveries, each delivered at the first try.
    let deliveries = server.deliveries().await;
    assert_eq!(deliveries.len(), 6);
    for delivery in &deliveries {
        assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
        assert_eq!(delivery.attempts, 1);
        assert!(delivery.webhook_url.ends_with("/…"), "{delivery:?}");
    }
    assert_eq!(deliveries[0].count, 1);
    server.finish().await;
}

/// A silence limit and a few ticks: long enough for a wrongly sent alert to show.
fn server_policy_wait() -> Duration {
    let policy = plura_testkit::fast_policy();
    policy.silence_limit() + policy.tick() * 4
}

async fn a_failing_receiver_gets_the_alert_on_the_third_try_across_a_restart(db: Db) {
    let server = TestServer::start(db).await;
    let receiver = Receiver::failing(2).await;
    server
        .add_webhook(&receiver.url, WebhookFormat::Json, Some(SECRET))
        .await;
    let mut holder = login("10.9.2.1", "held");
    holder.machine_id = Some("i-0holder".into());
    server.login_with(&holder).await;
    let mut thief = login("10.9.2.1", "held");
    thief.machine_id = Some("i-0thief".into());
    server.login_with(&thief).await;

    // The first try fails, and is recorded; the server restarts before the next. (A try cut
    // off by a shutdown before its answer is recorded is not counted, and goes again.)
    eventually("the first try, recorded", WAIT, || async {
        let deliveries = server.deliveries().await;
        deliveries.iter().any(|d| d.attempts == 1).then_some(())
    })
    .await;
    let server = server.restart().await;
    let delivered = receiver
        .wait_for(WAIT, |r| event(r) == "agent_taken_over")
        .await
        .expect("delivered at last");
    let tries: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| event(r) == "agent_taken_over")
        .collect();
    let answers: Vec<u16> = tries.iter().map(|r| r.answered.as_u16()).collect();
    assert_eq!(answers, [500, 500, 204]);
    let ids: Vec<&str> = tries.iter().map(|r| r.header("x-plura-delivery")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one delivery: {ids:?}");
    assert!(tries.iter().all(|r| r.body == delivered.body));
    assert!(signed_by(&delivered, SECRET));

    let record = eventually("the record says delivered", WAIT, || async {
        let deliveries = server.deliveries().await;
        deliveries.into_iter().find(|d| {
            d.state == DeliveryState::Delivered && d.event == plura_proto::AlertKind::AgentTakenOver
        })
    })
    .await;
    assert_eq!(record.attempts, 3);
    assert_eq!(
        record.last_error.as_deref(),
        Some("answered 500 Internal Server Error")
    );

    // Deleting the webhook stops its deliveries; only an admin may.
    let operator = server.token(plura_proto::Role::Operator).await;
    let path = format!("/api/v1/webhooks/{}", record.webhook_id);
    let r = server.request(Method::DELETE, &path, Some(&operator)).await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = server
        .request(Method::DELETE, &path, Some(&server.admin))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(server.deliveries().await.is_empty());
    let r = server
        .request(Method::DELETE, &path, Some(&server.admin))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // The audit log says who added and deleted it.
    let audit: AuditList = server.get("/api/v1/audit").await;
    let actions: Vec<(AuditAction, &str)> = audit
        .items
        .iter()
        .filter(|r| r.detail.contains("webhook") || r.action == AuditAction::WebhookAdded)
        .map(|r| (r.action, r.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::WebhookDeleted, "test-admin"),
            (AuditAction::WebhookAdded, "test-admin")
        ]
    );
    server.finish().await;
}

async fn bad_webhooks_are_refused(db: Db) {
    let server = TestServer::start(db).await;
    for (body, problem) in [
        (
            json!({"url": "ftp://example.com/x"}),
            "url: must start with http",
        ),
        (
            json!({"url": "http://127.0.0.1/x", "secret": "short"}),
            "secret: is 5",
        ),
        (
            json!({"url": "http://user:pw@127.0.0.1/x"}),
            "no user or password",
        ),
    ] {
        let r = server
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(&server.admin),
                Some(&body),
            )
            .await;
        let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert!(error.message.contains(problem), "{}", error.message);
    }
    let r = server
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(&server.admin),
            Some(&json!({"url": "http://127.0.0.1/x", "format": "teams"})),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_json").await;
    server.finish().await;
}

/// Webhooks added through the API cannot reach the server's own host, link-local addresses or
/// cloud metadata, in any spelling, when added or (for one added while it was allowed) when
/// delivered; the command line's webhooks are the operator's own; why a delivery failed is for
/// admins.
async fn webhooks_stay_away_from_the_servers_own_host_and_metadata(db: Db) {
    let strict = Limits {
        webhooks_to_loopback: false,
        ..test_limits()
    };
    let server = TestServer::start_limited(db, fast_policy(), strict).await;
    let add = |url: &str| {
        let body = json!({ "url": url });
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    "/api/v1/webhooks",
                    Some(&server.admin),
                    Some(&body),
                )
                .await
        }
    };
    for (url, why) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://0x7f000001:9/hook", "loopback"),
        ("http://2130706433:9/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
    ] {
        let error = expect_error(
            add(url).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert!(error.message.contains(why), "{url}: {}", error.message);
    }
    // Private ranges are where alerting lives.
    let private = add("http://10.255.0.1:9/hook").await;
    assert_eq!(private.status(), StatusCode::CREATED);
    let hooks: WebhookList = server.get("/api/v1/webhooks").await;
    for hook in hooks.items {
        server
            .request(
                Method::DELETE,
                &format!("/api/v1/webhooks/{}", hook.id),
                Some(&server.admin),
            )
            .await;
    }

    // Added while loopback was allowed, then the server restarted without: not delivered, by
    // address or by name; the command line's webhook to the same receiver is.
    let server = server.stop().await.with_limits(test_limits()).start().await;
    let receiver = Receiver::start().await;
    let port = receiver.url.trim_start_matches("http://127.0.0.1:");
    server
        .add_webhook(
            &format!("http://localhost:{port}"),
            WebhookFormat::Json,
            None,
        )
        .await;
    server
        .add_webhook(&receiver.url, WebhookFormat::Json, None)
        .await;
    plura_server::alerts::set_command_line_webhooks(
        server.store(),
        &[format!("{}?from=cli", receiver.url)],
        &[],
        SECRET,
    )
    .await
    .unwrap();
    let server = server.stop().await.with_limits(strict).start().await;
    let mut taken = login("10.70.0.1", "rebound");
    taken.machine_id = Some("i-first".into());
    server.login_with(&taken).await;
    taken.machine_id = Some("i-second".into());
    server.login_with(&taken).await;
    let delivered = receiver
        .wait_for(WAIT, |r| r.header("x-plura-event") == "agent_taken_over")
        .await
        .expect("the command line's webhook is delivered");
    assert!(signed_by(&delivered, SECRET));
    let refused = eventually("both API webhooks are refused", WAIT, || async {
        let deliveries = server.deliveries().await;
        let refused: Vec<String> = deliveries
            .iter()
            .filter_map(|d| d.last_error.clone())
            .filter(|e| e.contains("loopback"))
            .collect();
        (refused.len() == 2).then_some(refused)
    })
    .await;
    assert!(
        refused.iter().any(|e| e.contains("localhost")),
        "{refused:?}"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "only the command line's webhook was reached"
    );

    // Monitors see that a delivery failed, not why.
    let monitor = server.token(plura_proto::Role::Monitor).await;
    let r = server
        .request(Method::GET, "/api/v1/alerts/deliveries", Some(&monitor))
        .await;
    let seen: plura_proto::DeliveryList = plura_testkit::json_ok(r).await;
    let errors: Vec<&str> = seen
        .items
        .iter()
        .filter_map(|d| d.last_error.as_deref())
        .collect();
    assert_eq!(errors, ["not delivered (admins see why)"; 2], "{errors:?}");
    server.finish().await;
}

plura_testkit::on_both_backends!(
    stops_takeovers_and_returns_are_alerted_once_and_signed,
    a_failing_receiver_gets_the_alert_on_the_third_try_across_a_restart,
    bad_webhooks_are_refused,
    webhooks_stay_away_from_the_servers_own_host_and_metadata,
);

/// A deleted webhook's URL and secret leave the SQLite file and its write-ahead log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_leaves_no_secret_in_the_sqlite_file() {
    let server = TestServer::start(Db::Sqlite).await;
    let secret = "erase-me-0123456789-abcdefghij";
    let path = "T00000000/B00000000/XXXXerasemeXXXXXXXXXXXX";
    let url = format!("http://10.255.0.2/services/{path}");
    let created = server
        .add_webhook(&url, WebhookFormat::Slack, Some(secret))
        .await;
    let file = server
        .database_url()
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let holds = |needle: &str| {
        ["", "-wal"].iter().any(|suffix| {
            std::fs::read(format!("{file}{suffix}"))
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
    };
    assert!(holds(secret), "the secret is stored until then");
    let r = server
        .request(
            Method::DELETE,
            &format!("/api/v1/webhooks/{}", created.webhook.id),
            Some(&server.admin),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!holds(secret), "the secret is erased");
    assert!(!holds(path), "the URL's path is erased");
    server.finish().await;
}
