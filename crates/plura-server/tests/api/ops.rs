//! The routes for the people who run the server, and the console's files.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plura_testkit::{Db, TestServer, assert_content_type, json_ok};

pub async fn ops_routes_answer(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.4.0.1", "ops-1").await.agent_id;
    for _ in 0..20 {
        assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
    }

    let health: serde_json::Value =
        json_ok(server.request(Method::GET, "/healthz", None).await).await;
    assert_eq!(health, json!({"status": "ok"}));
    let ready: serde_json::Value =
        json_ok(server.request(Method::GET, "/readyz", None).await).await;
    assert_eq!(ready, json!({"status": "ready", "database": "ok"}));

    let metrics = server.request(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("plura_heartbeats_total 20"), "{text}");
    assert!(
        text.contains("plura_agent_events_total{event=\"registered\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("plura_agents{status=\"running\"} 1"),
        "{text}"
    );
    // Heartbeats are batched: far fewer last-seen rows were written than heartbeats taken.
    let flushed = server.metric("plura_last_seen_flushed_rows_total").await;
    assert!(flushed < 20.0, "{flushed} rows written for 20 heartbeats");

    // The document is made from the router itself; it names every route the API promises.
    let openapi: Value =
        json_ok(server.request(Method::GET, "/api/openapi.json", None).await).await;
    let mut operations: Vec<String> = Vec::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{method} {path}"));
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /api/v1/agents/{id}",
            "delete /api/v1/session",
            "delete /api/v1/tokens/{token}",
            "delete /api/v1/users/{name}",
            "delete /api/v1/webhooks/{id}",
            "get /api/v1/agents",
            "get /api/v1/agents.csv",
            "get /api/v1/agents/{id}",
            "get /api/v1/agents/{id}/events",
            "get /api/v1/alerts/deliveries",
            "get /api/v1/audit",
            "get /api/v1/cloud/silent",
            "get /api/v1/coverage",
            "get /api/v1/events/stream",
            "get /api/v1/fleet/history",
            "get /api/v1/me",
            "get /api/v1/session/sso",
            "get /api/v1/summary",
            "get /api/v1/tokens",
            "get /api/v1/users",
            "get /api/v1/webhooks",
            "get /healthz",
            "get /metrics",
            "get /readyz",
            "patch /api/v1/agents/{id}",
            "patch /api/v1/users/{name}",
            "post /api/v1/agents",
            "post /api/v1/agents/login",
            "post /api/v1/agents/{id}/heartbeat",
            "post /api/v1/agents/{id}/logout",
            "post /api/v1/cloud/report",
            "post /api/v1/session",
            "post /api/v1/session/sso",
            "post /api/v1/tokens",
            "post /api/v1/users",
            "post /api/v1/webhooks",
        ]
    );
    for schema in ["Agent", "AgentList", "LoginRequest", "Change", "ErrorBody"] {
        assert!(
            openapi["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    server.finish().await;
}

pub async fn console_is_served_from_the_binary_with_a_strict_policy(db: Db) {
    let server = TestServer::start(db).await;
    let page = server.request(Method::GET, "/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"));
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("dom.js", "text/javascript"),
        ("chart.js", "text/javascript"),
        ("admin.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let asset = server
            .request(Method::GET, &format!("/console/{file}"), None)
            .await;
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert_content_type(&asset, kind);
    }
    let missing = server
        .request(Method::GET, "/console/secrets.txt", None)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.finish().await;
}

/// PostgreSQL: a fleet registering at once outgrows the planner's statistics of the agents
/// within autovacuum's minute; the sweeping server analyses them again itself.
pub async fn a_fleet_registering_at_once_is_analysed_again() {
    use futures::StreamExt;

    let server = TestServer::start(Db::Postgres).await;
    let logins = (0..1200).map(|n| {
        let server = &server;
        async move {
            let ip = format!("10.9.{}.{}", n / 200, n % 200);
            server.login(&ip, &format!("grow-{n}")).await
        }
    });
    futures::stream::iter(logins)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let db = sqlx::PgPool::connect(server.database_url()).await.unwrap();
    // Set by an ANALYZE statement only; autovacuum's own sets `last_autoanalyze`.
    plura_testkit::eventually("the agents analysed again", super::STOP_WITHIN, || async {
        let analysed: bool = sqlx::query_scalar(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'agents'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        analysed.then_some(())
    })
    .await;
    let counted: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'agents'::regclass")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(counted >= 1000.0, "the statistics count {counted} agents");
    db.close().await;
    server.finish().await;
}

/// Live streams are held to a number per credential: one token cannot open them without end.
#[tokio::test]
async fn live_streams_are_capped_per_credential() {
    let server = TestServer::start(Db::Sqlite).await;
    let cap = plura_server::api::MAX_STREAMS_PER_CREDENTIAL;
    let mut open = Vec::new();
    for _ in 0..cap {
        let stream = server
            .request(Method::GET, "/api/v1/events/stream", Some(&server.admin))
            .await;
        assert_eq!(stream.status(), StatusCode::OK);
        open.push(stream);
    }
    let refused = server
        .request(Method::GET, "/api/v1/events/stream", Some(&server.admin))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let monitor = server.token(plura_proto::Role::Monitor).await;
    let other = server
        .request(Method::GET, "/api/v1/events/stream", Some(&monitor))
        .await;
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another credential has its own"
    );
    open.pop();
    plura_testkit::eventually(
        "a closed stream gives its slot back",
        crate::STOP_WITHIN,
        || async {
            let again = server
                .request(Method::GET, "/api/v1/events/stream", Some(&server.admin))
                .await;
            (again.status() == StatusCode::OK).then_some(again)
        },
    )
    .await;
}
