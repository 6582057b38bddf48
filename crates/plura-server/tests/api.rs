//! The server's behaviour over HTTP, as agents and operators see it, on SQLite and PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use plura_proto::{
    Agent, AgentList, AgentStatus, AuditList, Change, EventKind, LoginResponse, Role, Session,
    Summary, WhoAmI,
};
use plura_server::registry::LivenessPolicy;
use plura_testkit::{Db, TestServer, expect_error, fast_policy, json_ok, login};

const STOP_WITHIN: Duration = Duration::from_secs(15);

plura_testkit::on_both_backends!(
    first_login_registers_and_relogin_finds_the_same_entry,
    new_machine_id_on_a_known_identity_is_a_takeover,
    silent_agent_turns_stopped_and_comes_back_on_heartbeat,
    logout_stops_at_once_without_deleting,
    restart_keeps_every_agent_and_its_last_seen,
    roles_are_enforced_on_every_route,
    bad_input_gets_a_clear_4xx,
    list_filters_searches_sorts_and_pages,
    csv_holds_the_filtered_rows,
    summary_counts_the_fleet,
    patch_switches_and_groups_with_history,
    delete_keeps_an_audit_record_and_the_agent_can_return,
    manual_registration_is_unknown_until_login,
    concurrent_first_logins_of_one_identity_make_one_entry,
    live_stream_tells_changes,
    ops_routes_answer,
    prune_policy_deletes_long_stopped_agents_with_an_audit_record,
    servers_sharing_a_database_agree,
    console_is_served_from_the_binary_with_a_strict_policy,
    users_sign_in_with_a_password_and_sign_out,
    old_history_is_deleted_but_the_agent_stays,
);

async fn first_login_registers_and_relogin_finds_the_same_entry(db: Db) {
    let server = TestServer::start(db).await;
    let first = server.login("172.31.64.4", "waf-1").await;
    assert!(first.created);
    assert_eq!(first.heartbeat_interval_s, 1);

    let again = server.login("172.31.64.4", "waf-1").await;
    assert!(!again.created);
    assert_eq!(again.agent_id, first.agent_id);

    // Same IP, other hostname: another agent (the pair is the identity).
    let other = server.login("172.31.64.4", "waf-2").await;
    assert!(other.created);
    assert_ne!(other.agent_id, first.agent_id);

    let list = server.agents("").await;
    assert_eq!(list.total, 2);
    let agent = server.agent(first.agent_id).await;
    assert_eq!(
        (agent.ip.as_str(), agent.hostname.as_str()),
        ("172.31.64.4", "waf-1")
    );
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(agent.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(agent.enabled);
    let kinds: Vec<EventKind> = server
        .events(first.agent_id)
        .await
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, [EventKind::Login, EventKind::Registered]);
    server.finish().await;
}

async fn new_machine_id_on_a_known_identity_is_a_takeover(db: Db) {
    let server = TestServer::start(db).await;
    let mut body = login("172.31.80.4", "waf-2");
    body.machine_id = Some("i-0aaa".into());
    let first: LoginResponse = json_ok(server.login_as(&body).await).await;
    body.machine_id = Some("i-0bbb".into());
    let second: LoginResponse = json_ok(server.login_as(&body).await).await;
    assert_eq!(first.agent_id, second.agent_id);
    assert!(!second.created);

    let events = server.events(first.agent_id).await;
    assert_eq!(events[0].event, EventKind::Takeover);
    assert!(
        events[0].detail.contains("i-0aaa") && events[0].detail.contains("i-0bbb"),
        "{:?}",
        events[0]
    );
    assert_eq!(
        server.agent(first.agent_id).await.machine_id.as_deref(),
        Some("i-0bbb")
    );
    server.finish().await;
}

async fn silent_agent_turns_stopped_and_comes_back_on_heartbeat(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.1", "edr-1").await.agent_id;
    assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);

    let stopped = server
        .wait_for_status(id, AgentStatus::Stopped, STOP_WITHIN)
        .await;
    assert_eq!(stopped.hostname, "edr-1", "a stop is never a delete");
    assert_eq!(server.agents("").await.total, 1);
    assert_eq!(server.events(id).await[0].event, EventKind::Stopped);

    assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    assert_eq!(server.events(id).await[0].event, EventKind::Resumed);
    server.finish().await;
}

async fn logout_stops_at_once_without_deleting(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.2", "siem-1").await.agent_id;
    assert_eq!(server.logout(id).await, StatusCode::NO_CONTENT);
    let agent = server.agent(id).await;
    assert_eq!(agent.status, AgentStatus::Stopped);
    assert_eq!(server.events(id).await[0].event, EventKind::Logout);

    // The next boot of the same host is the same entry, running again.
    let again = server.login("10.0.0.2", "siem-1").await;
    assert_eq!((again.agent_id, again.created), (id, false));
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    server.finish().await;
}

async fn restart_keeps_every_agent_and_its_last_seen(db: Db) {
    let server = TestServer::start(db).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            server
                .login(&format!("10.1.0.{n}"), &format!("waf-{n}"))
                .await
                .agent_id,
        );
    }
    let logged_in = server.agent(ids[0]).await.last_seen_at.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.heartbeat(ids[0]).await, StatusCode::NO_CONTENT);
    let heard = server.agent(ids[0]).await.last_seen_at.unwrap();
    assert!(heard > logged_in);

    // Graceful shutdown flushes the heartbeat held in memory.
    let server = server.restart().await;
    let list = server.agents("?sort=id").await;
    let restored: Vec<i64> = list.items.iter().map(|a| a.id).collect();
    assert_eq!(restored, ids);
    assert!(list.items.iter().all(|a| a.status == AgentStatus::Running));
    assert_eq!(server.agent(ids[0]).await.last_seen_at, Some(heard));

    // Agents keep their ids: heartbeats go on without a new login.
    for id in &ids {
        assert_eq!(server.heartbeat(*id).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(server.agents("").await.total, 3);
    server.finish().await;
}

async fn roles_are_enforced_on_every_route(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.3", "waf-3").await.agent_id;
    let monitor = server.token(Role::Monitor).await;
    let operator = server.token(Role::Operator).await;
    let agent_path = format!("/api/v1/agents/{id}");
    let patch = json!({"enabled": false});
    let register = json!({"ip": "10.9.9.9", "hostname": "manual"});

    // Everyone with a role token reads.
    for token in [&monitor, &operator, &server.admin] {
        for path in [
            "/api/v1/agents",
            "/api/v1/agents.csv",
            "/api/v1/summary",
            "/api/v1/me",
            agent_path.as_str(),
        ] {
            let response = server.request(Method::GET, path, Some(token)).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }
    let me: WhoAmI = json_ok(
        server
            .request(Method::GET, "/api/v1/me", Some(&monitor))
            .await,
    )
    .await;
    assert_eq!(me.role, Role::Monitor);

    // A monitor changes nothing.
    let r = server
        .call(Method::PATCH, &agent_path, Some(&monitor), Some(&patch))
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = server
        .request(Method::DELETE, &agent_path, Some(&monitor))
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    // An operator switches, but does not register or delete.
    let r = server
        .call(Method::PATCH, &agent_path, Some(&operator), Some(&patch))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = server
        .request(Method::DELETE, &agent_path, Some(&operator))
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&operator),
            Some(&register),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = server
        .request(Method::GET, "/api/v1/audit", Some(&operator))
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;

    // No token, a wrong token, or the wrong kind of token: 401.
    for token in [
        None,
        Some("plura_not-a-token"),
        Some(server.enrollment.as_str()),
    ] {
        let r = server.request(Method::GET, "/api/v1/agents", token).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = server
        .request(Method::GET, "/api/v1/events/stream", None)
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for token in [None, Some(server.admin.as_str()), Some("wrong")] {
        let body = login("10.0.0.4", "x");
        let r = server
            .call(Method::POST, "/api/v1/agents/login", token, Some(&body))
            .await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = server
            .request(Method::POST, &format!("{agent_path}/heartbeat"), token)
            .await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = server.request(Method::GET, "/api/v1/agents", None).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The admin does it all.
    let r = server
        .request(Method::DELETE, &agent_path, Some(&server.admin))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    server.finish().await;
}

async fn bad_input_gets_a_clear_4xx(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.5", "waf-5").await.agent_id;
    let login_url = server.url("/api/v1/agents/login");
    let send = |body: String| {
        server
            .http
            .post(&login_url)
            .bearer_auth(&server.enrollment)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = send("{\"ip\": ".into()).await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "bad_json").await;
    let r = send(json!({"ip": "10.0.0.6"}).to_string()).await.unwrap();
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "bad_json").await;
    assert!(e.message.contains("hostname"), "{}", e.message);
    let mut body = login("not-an-ip", "waf-6");
    let r = server.login_as(&body).await;
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert!(e.message.starts_with("ip:"), "{}", e.message);
    body.ip = "10.0.0.6".into();
    body.hostname = String::new();
    let r = server.login_as(&body).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    // A 10 MB body is refused from its Content-Length, before the server reads it.
    let head = too_large_answer(&server, &login_url).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("\"error\":\"too_large\""), "{head}");
    let r = server
        .http
        .post(&login_url)
        .bearer_auth(&server.enrollment)
        .body(json!(login("10.0.0.6", "waf-6")).to_string())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_json").await;

    // Unknown and malformed agent ids.
    assert_eq!(server.heartbeat(999_999).await, StatusCode::NOT_FOUND);
    assert_eq!(server.logout(999_999).await, StatusCode::NOT_FOUND);
    let admin = Some(server.admin.as_str());
    let r = server
        .request(Method::GET, "/api/v1/agents/999999", admin)
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .request(Method::GET, "/api/v1/agents/999999/events", admin)
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .call(
            Method::PATCH,
            "/api/v1/agents/999999",
            admin,
            Some(&json!({"enabled": true})),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .request(Method::DELETE, "/api/v1/agents/999999", admin)
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .request(Method::GET, "/api/v1/agents/abc", admin)
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_path").await;

    // A patch with a typo or a wrong type is refused, and changes nothing.
    let path = format!("/api/v1/agents/{id}");
    for body in [json!({"enabeld": false}), json!({"enabled": "no"})] {
        let r = server.call(Method::PATCH, &path, admin, Some(&body)).await;
        expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "bad_json").await;
    }
    assert!(server.agent(id).await.enabled);

    // Bad list queries.
    for (query, code) in [
        ("?status=sleeping", "bad_request"),
        ("?sort=password", "bad_request"),
        ("?page=0", "bad_request"),
        ("?per_page=5000", "bad_request"),
        ("?page=abc", "bad_query"),
        ("?enabled=maybe", "bad_query"),
    ] {
        let r = server
            .request(Method::GET, &format!("/api/v1/agents{query}"), admin)
            .await;
        expect_error(r, StatusCode::BAD_REQUEST, code).await;
    }

    // Routes and methods that do not exist.
    let r = server.request(Method::GET, "/api/v1/nothing", admin).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server.request(Method::PUT, "/api/v1/summary", admin).await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    // None of it disturbed the registry.
    assert_eq!(server.agents("").await.total, 1);
    server.finish().await;
}

/// Sends only the head of a 10 MB login request and reads what the server answers.
async fn too_large_answer(server: &TestServer, url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"ip\":",
        url.trim_start_matches(&server.base),
        server.enrollment,
        10 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Logs in a small mixed fleet: 3 waf on Ubuntu, 2 edr on Rocky, one of the edr stopped.
async fn small_fleet(server: &TestServer) -> Vec<i64> {
    let mut ids = Vec::new();
    for (ip, host, kind, os) in [
        ("10.0.0.10", "waf-10", "waf", "Ubuntu 24.04"),
        ("10.0.0.9", "waf-9", "waf", "Ubuntu 24.04"),
        ("10.0.1.1", "web-gateway", "waf", "Ubuntu 24.04"),
        ("10.0.2.1", "edr-a", "edr", "Rocky 9"),
        ("10.0.2.2", "edr-b", "edr", "Rocky 9"),
    ] {
        let mut body = login(ip, host);
        body.kind = kind.into();
        body.os = os.into();
        let response: LoginResponse = json_ok(server.login_as(&body).await).await;
        ids.push(response.agent_id);
    }
    assert_eq!(server.logout(ids[4]).await, StatusCode::NO_CONTENT);
    ids
}

fn hostnames(list: &AgentList) -> Vec<&str> {
    list.items.iter().map(|a| a.hostname.as_str()).collect()
}

async fn list_filters_searches_sorts_and_pages(db: Db) {
    let server = TestServer::start(db).await;
    small_fleet(&server).await;

    assert_eq!(server.agents("?kind=edr").await.total, 2);
    assert_eq!(server.agents("?status=stopped").await.total, 1);
    assert_eq!(server.agents("?status=running&kind=edr").await.total, 1);
    assert_eq!(server.agents("?os=Rocky%209").await.total, 2);
    assert_eq!(
        server.agents("?status=&kind=").await.total,
        5,
        "empty means any"
    );
    // Search is case-insensitive, over ip and hostname among others, and literal.
    assert_eq!(
        hostnames(&server.agents("?q=GATEWAY").await),
        ["web-gateway"]
    );
    assert_eq!(server.agents("?q=10.0.2.").await.total, 2);
    assert_eq!(server.agents("?q=waf_").await.total, 0, "_ is no wildcard");
    assert_eq!(server.agents("?q=%25").await.total, 0, "% is no wildcard");

    // IPs sort by value, not as text.
    let by_ip = server.agents("?sort=ip&kind=waf").await;
    assert_eq!(hostnames(&by_ip), ["waf-9", "waf-10", "web-gateway"]);
    let by_host_desc = server.agents("?sort=-hostname").await;
    assert_eq!(hostnames(&by_host_desc)[0], "web-gateway");

    // Pages: total counts every match; pages do not overlap.
    let page1 = server.agents("?sort=hostname&per_page=2&page=1").await;
    let page3 = server.agents("?sort=hostname&per_page=2&page=3").await;
    assert_eq!(
        (page1.total, page1.items.len(), page3.items.len()),
        (5, 2, 1)
    );
    assert_eq!(hostnames(&page1), ["edr-a", "edr-b"]);
    assert_eq!(hostnames(&page3), ["web-gateway"]);
    assert!(server.agents("?per_page=2&page=9").await.items.is_empty());
    server.finish().await;
}

async fn csv_holds_the_filtered_rows(db: Db) {
    let server = TestServer::start(db).await;
    small_fleet(&server).await;
    json_ok::<Agent>(
        server
            .call(
                Method::POST,
                "/api/v1/agents",
                Some(&server.admin),
                Some(&json!({"ip": "10.0.3.1", "hostname": "=cmd|' /C calc'!A0", "kind": "waf"})),
            )
            .await,
    )
    .await;
    let response = server
        .request(
            Method::GET,
            "/api/v1/agents.csv?kind=waf&sort=ip",
            Some(&server.admin),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,ip,hostname,status,enabled,group"));
    assert_eq!(lines.len(), 1 + 4, "{text}");
    assert!(lines[1].contains(",10.0.0.9,waf-9,running,on,"));
    assert!(lines[4].contains(",'=cmd|' /C calc'!A0,unknown,"), "{text}");
    assert!(!text.contains("edr-"));
    server.finish().await;
}

async fn summary_counts_the_fleet(db: Db) {
    let server = TestServer::start(db).await;
    let ids = small_fleet(&server).await;
    let r = server
        .call(
            Method::PATCH,
            &format!("/api/v1/agents/{}", ids[0]),
            Some(&server.admin),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let summary: Summary = server.get("/api/v1/summary").await;
    assert_eq!(summary.registered, 5);
    assert_eq!(
        (summary.running, summary.stopped, summary.unknown),
        (4, 1, 0)
    );
    assert_eq!((summary.enabled, summary.disabled), (4, 1));
    assert_eq!(summary.by_kind["waf"], 3);
    assert_eq!(summary.by_kind["edr"], 2);
    assert_eq!(summary.by_os["Rocky 9"], 2);
    server.finish().await;
}

async fn patch_switches_and_groups_with_history(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.7", "waf-7").await.agent_id;
    let operator = server.token(Role::Operator).await;
    let path = format!("/api/v1/agents/{id}");
    let patch = |body: serde_json::Value| {
        let (server, path, operator) = (&server, &path, &operator);
        async move {
            json_ok::<Agent>(
                server
                    .call(Method::PATCH, path, Some(operator), Some(&body))
                    .await,
            )
            .await
        }
    };

    let agent = patch(json!({"enabled": false, "group": "web"})).await;
    assert!(!agent.enabled);
    assert_eq!(agent.group.as_deref(), Some("web"));
    assert_eq!(agent.status, AgentStatus::Running, "OFF is not a status");
    assert_eq!(server.agents("?group=web").await.total, 1);
    assert_eq!(server.agents("?enabled=false").await.total, 1);

    let agent = patch(json!({"enabled": false})).await;
    assert_eq!(agent.group.as_deref(), Some("web"), "absent fields stay");
    let agent = patch(json!({"group": null, "enabled": true})).await;
    assert_eq!((agent.enabled, agent.group), (true, None));

    let events = server.events(id).await;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::GroupChanged,
            EventKind::Enabled,
            EventKind::GroupChanged,
            EventKind::Disabled,
            EventKind::Registered,
        ],
        "{events:?}"
    );
    assert!(events[0].detail.contains("web -> (none)"), "{events:?}");
    assert!(events[3].detail.contains("test-operator"), "{events:?}");
    server.finish().await;
}

async fn delete_keeps_an_audit_record_and_the_agent_can_return(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.8", "waf-8").await.agent_id;
    assert_eq!(server.delete_agent(id).await, StatusCode::NO_CONTENT);
    assert_eq!(server.agents("").await.total, 0);

    let audit: AuditList = server.get("/api/v1/audit").await;
    assert_eq!(audit.items.len(), 1);
    let record = &audit.items[0];
    assert_eq!(record.action, EventKind::Deleted);
    assert_eq!((record.agent_id, record.hostname.as_str()), (id, "waf-8"));
    assert_eq!(record.actor, "test-admin");

    // The deleted agent's heartbeat is refused, so it logs in and is registered anew.
    assert_eq!(server.heartbeat(id).await, StatusCode::NOT_FOUND);
    let back = server.login("10.0.0.8", "waf-8").await;
    assert!(back.created);
    assert_ne!(back.agent_id, id);
    let kinds: Vec<EventKind> = server
        .events(back.agent_id)
        .await
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::Registered],
        "the old history went with the old entry"
    );
    server.finish().await;
}

async fn manual_registration_is_unknown_until_login(db: Db) {
    let server = TestServer::start(db).await;
    let body = json!({"ip": "172.31.64.5", "hostname": "waf-3", "kind": "waf", "group": "dmz"});
    let created: Agent = json_ok(
        server
            .call(
                Method::POST,
                "/api/v1/agents",
                Some(&server.admin),
                Some(&body),
            )
            .await,
    )
    .await;
    assert_eq!(created.status, AgentStatus::Unknown);
    assert_eq!(created.last_seen_at, None);
    let r = server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&server.admin),
            Some(&body),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;

    let login = server.login("172.31.64.5", "waf-3").await;
    assert_eq!((login.agent_id, login.created), (created.id, false));
    let agent = server.agent(created.id).await;
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(
        agent.group.as_deref(),
        Some("dmz"),
        "the operator's group stays"
    );
    server.finish().await;
}

async fn concurrent_first_logins_of_one_identity_make_one_entry(db: Db) {
    let server = TestServer::start(db).await;
    let logins = (0..24).map(|_| server.login("10.2.0.1", "burst"));
    let answers = futures::future::join_all(logins).await;
    let created = answers.iter().filter(|a| a.created).count();
    assert_eq!(created, 1, "exactly one login registers");
    assert!(answers.iter().all(|a| a.agent_id == answers[0].agent_id));

    let distinct = (0..24).map(|n| {
        let server = &server;
        async move {
            server
                .login(&format!("10.2.1.{n}"), &format!("host-{n}"))
                .await
        }
    });
    let answers = futures::future::join_all(distinct).await;
    assert!(answers.iter().all(|a| a.created));
    assert_eq!(server.agents("").await.total, 25);
    server.finish().await;
}

async fn live_stream_tells_changes(db: Db) {
    let server = TestServer::start(db).await;
    let monitor = server.token(Role::Monitor).await;
    let response = server
        .request(Method::GET, "/api/v1/events/stream", Some(&monitor))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();

    let id = server.login("10.3.0.1", "live-1").await.agent_id;
    assert_eq!(server.logout(id).await, StatusCode::NO_CONTENT);

    let mut seen = Vec::new();
    let mut buffer = String::new();
    while seen.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the stream sends the changes")
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                let change: Change = serde_json::from_str(data).unwrap();
                assert!(
                    frame.starts_with(&format!("event: {}", change.event)),
                    "{frame}"
                );
                seen.push(change);
            }
        }
    }
    assert_eq!(seen[0].event, EventKind::Registered);
    assert_eq!(seen[0].agent.as_ref().unwrap().hostname, "live-1");
    assert_eq!(seen[1].event, EventKind::Logout);
    assert_eq!(seen[1].agent.as_ref().unwrap().status, AgentStatus::Stopped);
    // Shutdown ends open streams instead of waiting for them.
    server.finish().await;
}

async fn ops_routes_answer(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.4.0.1", "ops-1").await.agent_id;
    for _ in 0..20 {
        assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
    }

    let health: serde_json::Value =
        json_ok(server.request(Method::GET, "/healthz", None).await).await;
    assert_eq!(health, json!({"status": "ok", "database": "ok"}));

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
    let flushed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("plura_last_seen_flushed_rows_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(flushed < 20, "{flushed} rows written for 20 heartbeats");

    let openapi: serde_json::Value =
        json_ok(server.request(Method::GET, "/api/openapi.json", None).await).await;
    for path in [
        "/api/v1/agents/login",
        "/api/v1/agents/{id}/heartbeat",
        "/api/v1/agents/{id}/logout",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/agents/{id}/events",
        "/api/v1/summary",
        "/api/v1/agents.csv",
        "/api/v1/events/stream",
        "/metrics",
        "/healthz",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
    assert!(openapi["components"]["schemas"]["Agent"].is_object());
    server.finish().await;
}

async fn prune_policy_deletes_long_stopped_agents_with_an_audit_record(db: Db) {
    let policy = LivenessPolicy {
        prune_stopped_after: Some(Duration::from_secs(1)),
        ..fast_policy()
    };
    let server = TestServer::start_with(db, policy).await;
    let gone = server.login("10.5.0.1", "short-lived").await.agent_id;
    let kept = server.login("10.5.0.2", "long-lived").await.agent_id;
    assert_eq!(server.logout(gone).await, StatusCode::NO_CONTENT);

    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    while server.agents("").await.total > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped agent is pruned"
        );
        assert_eq!(server.heartbeat(kept).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.agents("").await.items[0].id,
        kept,
        "running agents stay"
    );
    let audit: AuditList = server.get("/api/v1/audit").await;
    assert_eq!(audit.items[0].action, EventKind::Pruned);
    assert_eq!(audit.items[0].hostname, "short-lived");
    assert_eq!(audit.items[0].actor, "system");
    server.finish().await;
}

async fn servers_sharing_a_database_agree(db: Db) {
    let a = TestServer::start(db).await;
    let b = a.another().await;
    let id = a.login("10.6.0.1", "shared-1").await.agent_id;
    assert_eq!(b.login("10.6.0.1", "shared-1").await.agent_id, id);

    // Heartbeats taken by B only keep the agent running for A too, past the silence limit.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        assert_eq!(b.heartbeat(id).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(a.agent(id).await.status, AgentStatus::Running);
    assert!(
        a.events(id)
            .await
            .iter()
            .all(|e| e.event != EventKind::Stopped),
        "never taken for silent"
    );

    // Deleted through A: B stops taking its heartbeats once it has flushed.
    assert_eq!(a.delete_agent(id).await, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    while b.heartbeat(id).await != StatusCode::NOT_FOUND {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B learns of the delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
    a.finish().await;
}

async fn console_is_served_from_the_binary_with_a_strict_policy(db: Db) {
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
        ("app.css", "text/css"),
    ] {
        let asset = server
            .request(Method::GET, &format!("/console/{file}"), None)
            .await;
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let missing = server
        .request(Method::GET, "/console/secrets.txt", None)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.finish().await;
}

async fn users_sign_in_with_a_password_and_sign_out(db: Db) {
    let server = TestServer::start(db).await;
    let (name, password) = server.user(Role::Operator).await;
    let sign_in = |username: &str, password: &str| {
        let body = json!({"username": username, "password": password});
        let server = &server;
        async move {
            server
                .call(Method::POST, "/api/v1/session", None, Some(&body))
                .await
        }
    };

    // Unknown user and wrong password: the same answer.
    for (user, pass) in [
        (name.as_str(), "wrong-password!"),
        ("nobody", password.as_str()),
    ] {
        let e = expect_error(
            sign_in(user, pass).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        assert_eq!(e.message, "unknown user or wrong password");
    }
    let r = server
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(&json!({"username": name})),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "bad_json").await;

    let session: Session = json_ok(sign_in(&name, &password).await).await;
    assert_eq!(
        (session.name.as_str(), session.role),
        (name.as_str(), Role::Operator)
    );
    assert!(session.expires_at > plura_proto::Timestamp::now());
    let me: WhoAmI = json_ok(
        server
            .request(Method::GET, "/api/v1/me", Some(&session.token))
            .await,
    )
    .await;
    assert_eq!(me.role, Role::Operator);
    // The session's role is enforced like any token's.
    let r = server
        .request(Method::GET, "/api/v1/audit", Some(&session.token))
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;

    let r = server
        .request(Method::DELETE, "/api/v1/session", Some(&session.token))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = server
        .request(Method::GET, "/api/v1/me", Some(&session.token))
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Guessing is slowed down: after five failures even the right password waits.
    for _ in 0..5 {
        let r = sign_in(&name, "guess-guess-guess").await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = sign_in(&name, &password).await;
    let e = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert!(
        e.message.starts_with("too many failed sign-ins"),
        "{}",
        e.message
    );
    server.finish().await;
}

async fn old_history_is_deleted_but_the_agent_stays(db: Db) {
    let policy = LivenessPolicy {
        keep_events_for: Some(Duration::from_secs(1)),
        ..fast_policy()
    };
    let server = TestServer::start_with(db, policy).await;
    let id = server.login("10.8.0.1", "long-lived").await.agent_id;
    assert_eq!(server.events(id).await.len(), 1);
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    while !server.events(id).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old events are deleted"
        );
        assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent = server.agent(id).await;
    assert_eq!(
        (agent.hostname.as_str(), agent.status),
        ("long-lived", AgentStatus::Running)
    );
    server.finish().await;
}
