//! Who may call what, and what bad input gets: roles on every documented route, console sign-in,
//! clear 4xx answers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plura_proto::{Role, Session, WhoAmI};
use plura_testkit::{Db, TestServer, expect_error, json_ok, login};

/// Who may call a route, as its OpenAPI operation declares it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    /// No credential needed (or, for /metrics, none from this machine).
    Open,
    Enrollment,
    /// The agent's own key.
    AgentKey,
    /// A role token of at least this role.
    AtLeast(Role),
}

fn access(path: &str, operation: &Value) -> Access {
    let Some(alternatives) = operation["security"].as_array() else {
        return Access::Open;
    };
    if alternatives
        .iter()
        .any(|a| a.as_object().is_some_and(|a| a.is_empty()))
    {
        return Access::Open;
    }
    let requirement = &alternatives[0];
    if requirement.get("enrollment_token").is_some() {
        return Access::Enrollment;
    }
    if requirement.get("agent_key").is_some() {
        return Access::AgentKey;
    }
    let role = requirement["api_token"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{path} states the least role it needs: {requirement}"));
    Access::AtLeast(role.parse().unwrap())
}

/// A valid body for the routes that take one.
fn body_for(method: &str, path: &str, user: &(String, String)) -> Option<Value> {
    match (method, path) {
        ("post", "/api/v1/agents/login") => Some(json!(login("10.0.0.4", "roles"))),
        ("post", "/api/v1/agents") => Some(json!({"ip": "10.9.9.9", "hostname": "manual"})),
        ("patch", "/api/v1/agents/{id}") => Some(json!({"enabled": false})),
        ("post", "/api/v1/session") => Some(json!({"username": user.0, "password": user.1})),
        ("post", "/api/v1/webhooks") => Some(json!({"url": "http://127.0.0.1:9/hook"})),
        ("post", "/api/v1/tokens") => Some(json!({"name": "roles-made", "role": "monitor"})),
        ("post", "/api/v1/users") => Some(json!({"name": "roles-made", "role": "monitor"})),
        ("patch", "/api/v1/users/{name}") => Some(json!({"disabled": false})),
        ("post", "/api/v1/cloud/report") => Some(json!({})),
        _ => None,
    }
}

pub async fn roles_are_enforced_on_every_route(db: Db) {
    let server = TestServer::start(db).await;
    let user = server.user(Role::Monitor).await;
    let doc: Value = server.get("/api/openapi.json").await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // An agent of its own for each operation: deletes and logouts change it.
            let host = format!("roles-{checked}");
            let id = server
                .login(&format!("10.0.1.{checked}"), &host)
                .await
                .agent_id;
            let url = path
                .replace("{id}", &id.to_string())
                .replace("{token}", "nothing-of-that-name")
                .replace("{name}", "nobody-of-that-name");
            let access = access(path, operation);
            let body = body_for(method, path, &user);
            // Weakest first: the admin's delete comes last. Tokens are fresh for every call,
            // since signing out revokes the token it is sent with.
            for held in [
                None,
                Some("wrong"),
                Some("enrollment"),
                Some("agent key"),
                Some("monitor"),
                Some("operator"),
                Some("admin"),
            ] {
                let role: Option<Role> = held.and_then(|h| h.parse().ok());
                let token = match (held, role) {
                    (_, Some(role)) => Some(server.token(role).await),
                    (Some("enrollment"), None) => Some(server.enrollment.clone()),
                    (Some("agent key"), None) => server.key(id),
                    (Some(other), None) => Some(format!("plura_{other}")),
                    (None, _) => None,
                };
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let response = server
                    .call(method.clone(), &url, token.as_deref(), body.as_ref())
                    .await;
                let status = response.status();
                // Not the body of a success: the live stream's never ends.
                let text = if status.is_success() {
                    String::new()
                } else {
                    response.text().await.unwrap_or_default()
                };
                let what = format!(
                    "{method} {path} with {}: {status} {text}",
                    held.unwrap_or("no token")
                );
                let expected = match (access, held, role) {
                    (Access::Open, _, _) => None,
                    (Access::Enrollment, Some("enrollment"), _) => None,
                    (Access::AgentKey, Some("agent key"), _) => None,
                    (Access::AtLeast(needed), _, Some(role)) if role >= needed => None,
                    (Access::AtLeast(_), _, Some(_)) => Some(StatusCode::FORBIDDEN),
                    _ => Some(StatusCode::UNAUTHORIZED),
                };
                match expected {
                    Some(refused) => assert_eq!(status, refused, "{what}"),
                    None => {
                        assert!(
                            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                            "{what}"
                        );
                        assert!(!text.contains("no such route"), "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 36, "every documented operation was tried");
    server.finish().await;
}

pub async fn users_sign_in_with_a_password_and_sign_out(db: Db) {
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
    expect_error(r, StatusCode::BAD_REQUEST, "bad_json").await;

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

    // Signing out with an API token made by the CLI does not revoke it.
    let r = server
        .request(Method::DELETE, "/api/v1/session", Some(&server.admin))
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = server
        .request(Method::GET, "/api/v1/me", Some(&server.admin))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the CLI's token still works");

    // Guessing is slowed down: after five failures even the right password waits.
    for _ in 0..5 {
        let r = sign_in(&name, "guess-guess-guess").await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = sign_in(&name, &password).await;
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let e = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert!(
        e.message.starts_with("too many failed sign-ins"),
        "{}",
        e.message
    );

    // A burst of guesses sent at once, the right password among them, from one address: at most
    // five passwords are checked.
    let (other, right) = server.user(Role::Admin).await;
    let guesses = (0..40).map(|n| {
        let password = if n == 20 {
            right.clone()
        } else {
            format!("guess-{n:02}-guess")
        };
        let (other, sign_in) = (&other, &sign_in);
        async move { sign_in(other, &password).await.status() }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 5, "{checked} passwords checked: {answers:?}");
    server.finish().await;
}

pub async fn bad_input_gets_a_clear_4xx(db: Db) {
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
    let e = expect_error(r, StatusCode::BAD_REQUEST, "bad_json").await;
    assert!(e.message.contains("hostname"), "{}", e.message);
    let mut body = login("not-an-ip", "waf-6");
    let r = server.login_as(&body).await;
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert!(e.message.starts_with("ip:"), "{}", e.message);
    body.ip = "10.0.0.6".into();
    body.hostname = String::new();
    let r = server.login_as(&body).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    // Names that would show as something else, and addresses no host has.
    for (ip, hostname) in [
        ("10.0.0.6", " "),
        ("10.0.0.6", "x\u{202e}gnp.exe"),
        ("10.0.0.6", "zw\u{200b}sp"),
        ("255.255.255.255", "waf-6"),
        ("239.1.1.1", "waf-6"),
        ("::", "waf-6"),
    ] {
        let r = server.login_as(&login(ip, hostname)).await;
        let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert!(
            e.message.starts_with("ip:") || e.message.starts_with("hostname:"),
            "{}",
            e.message
        );
    }
    // An IPv4-mapped IPv6 address is the IPv4 agent, not another one.
    let mapped = server.login("::ffff:10.0.0.5", "waf-5").await;
    assert_eq!((mapped.agent_id, mapped.created), (id, false));
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

    // Unknown and malformed agent ids: an agent key of no agent is as wrong as another agent's,
    // so ids cannot be counted without a key.
    assert_eq!(server.heartbeat(999_999).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.logout(999_999).await, StatusCode::UNAUTHORIZED);
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
        expect_error(r, StatusCode::BAD_REQUEST, "bad_json").await;
    }
    assert!(server.agent(id).await.enabled);

    // Bad list queries, on the list and on its CSV export alike (a NUL once broke the search
    // index's query mid-export).
    let both = ["/api/v1/agents", "/api/v1/agents.csv"].as_slice();
    let paged = &both[..1];
    for (lists, query, code) in [
        (both, "?status=sleeping", "bad_request"),
        (both, "?sort=password", "bad_request"),
        (paged, "?page=0", "bad_request"),
        (paged, "?per_page=5000", "bad_request"),
        (paged, "?page=abc", "bad_query"),
        (both, "?enabled=maybe", "bad_query"),
        (both, "?q=%00%12%C2%87", "bad_request"),
        (both, "?q=web%00", "bad_request"),
        (both, "?group=a%07b", "bad_request"),
    ] {
        for list in lists {
            let r = server
                .request(Method::GET, &format!("{list}{query}"), admin)
                .await;
            expect_error(r, StatusCode::BAD_REQUEST, code).await;
        }
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

/// Sends only the head of a 10 MB request to `url` and reads what the server answers.
pub async fn too_large_answer(server: &TestServer, url: &str) -> String {
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
