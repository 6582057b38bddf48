//! A bound on registrations: past `--max-agents` a new identity is refused (403 `agent_limit`),
//! alerted once and counted, while known agents still log in.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use plura_proto::{AlertKind, WebhookFormat};
use plura_server::server::Limits;
use plura_testkit::receiver::Receiver;
use plura_testkit::{Db, TestServer, expect_error, fast_policy, login, test_limits};

pub async fn registrations_past_the_bound_are_refused_alerted_once_and_counted(db: Db) {
    let limits = Limits {
        max_agents: Some(3),
        ..test_limits()
    };
    let server = TestServer::start_limited(db, fast_policy(), limits).await;
    let receiver = Receiver::start().await;
    server
        .add_webhook(&receiver.url, WebhookFormat::Json, None)
        .await;
    let first = server.login("10.60.0.1", "bound-1").await;
    server.login("10.60.0.2", "bound-2").await;
    server.login("10.60.0.3", "bound-3").await;

    // The fourth identity, by login or by hand, is refused; twice, but alerted once.
    for n in [4, 5] {
        let r = server
            .login_as(&login(&format!("10.60.0.{n}"), &format!("bound-{n}")))
            .await;
        let e = expect_error(r, StatusCode::FORBIDDEN, "agent_limit").await;
        assert!(e.message.contains("3 agents"), "{}", e.message);
    }
    let by_hand = json!({"ip": "10.60.0.9", "hostname": "by-hand"});
    let r = server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&server.admin),
            Some(&by_hand),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "agent_limit").await;

    // Known agents still log in.
    let again = server.login("10.60.0.1", "bound-1").await;
    assert_eq!((again.agent_id, again.created), (first.agent_id, false));
    assert_eq!(server.metric("plura_registrations_total").await, 3.0);
    assert_eq!(
        server.metric("plura_registrations_refused_total").await,
        3.0
    );

    let alerts = receiver
        .wait_for(Duration::from_secs(15), |r| {
            r.json()["event"] == AlertKind::RegistrationRefused.as_str()
        })
        .await
        .expect("the refusal is alerted");
    assert_eq!(alerts.json()["count"], 1, "{}", alerts.body);
    assert!(alerts.body.contains("bound-4"), "{}", alerts.body);

    // Room again once an agent is deleted: a new identity is taken.
    assert_eq!(
        server.delete_agent(first.agent_id).await,
        StatusCode::NO_CONTENT
    );
    let newcomer = server.login("10.60.0.5", "bound-5").await;
    assert!(newcomer.created);
    let r = server.login_as(&login("10.60.0.6", "bound-6")).await;
    expect_error(r, StatusCode::FORBIDDEN, "agent_limit").await;
    server.finish().await;
}
