//! The real binary behind a real nginx (Debian's) with `--trusted-proxy`, and behind a TCP
//! balancer's PROXY protocol: each client counts as itself (its logins, the agent's source,
//! `/metrics`), a client that is not a trusted proxy cannot claim another address, and logins
//! with a wrong token never use up the real agents' logins. And the shipped nginx sample's
//! upstream settings keep servers answering 503 (a database outage) in use.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use plura_proto::{Agent, LoginResponse};
use plura_testkit::process::Process;
use plura_testkit::served::{self, Served, client_from, connect_from};
use plura_testkit::{eventually, login};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const NGINX: &str = "/usr/sbin/nginx";

/// nginx as one process on a loopback port, proxying to `upstream` as the shipped sample does.
struct Nginx {
    _process: Process,
    base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Proxying to `upstream` (an address, or the name of an upstream block in `http_extra`).
    async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, "", "").await
    }

    /// Proxying to `upstream`, with `http_extra` in the `http` block and `location_extra` in
    /// the proxied location.
    async fn start_with(upstream: &str, http_extra: &str, location_extra: &str) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is missing: scripts/ensure-tools installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = served::free_port();
        let root = dir.path().display();
        let conf = format!(
            "master_process off;\n\
             error_log stderr warn;\n\
             pid {root}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {root}/body;\n\
               proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fastcgi;\n\
               uwsgi_temp_path {root}/uwsgi;\n\
               scgi_temp_path {root}/scgi;\n\
               {http_extra}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://{upstream};\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                   {location_extra}\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut command = Command::new(NGINX);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]);
        let process = Process::spawn(command);
        let address = format!("127.0.0.1:{port}");
        eventually("nginx listens", Duration::from_secs(10), || async {
            TcpStream::connect(&address).await.ok().map(drop)
        })
        .await;
        Self {
            _process: process,
            base: format!("http://{address}"),
            _dir: dir,
        }
    }
}

async fn log_in(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    n: usize,
    extra: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/api/v1/agents/login"))
        .bearer_auth(token)
        .json(&login(&format!("10.70.0.{n}"), &format!("proxied-{n}")));
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// The server with `args` beside its database; answers it with the admin and enrollment tokens.
async fn serve(dir: &Path, args: &[&str]) -> (Served, String, String) {
    let database = format!("sqlite://{}/proxies.db", dir.display());
    let enrollment = served::enrollment_token(BIN, &database).await;
    let common = ["--listen", "127.0.0.1:0", "--database", &database];
    let server = Served::start(BIN, &[&common[..], args].concat()).await;
    let admin = server.first_start_token().unwrap();
    (server, admin, enrollment)
}

async fn source_of(server: &Served, admin: &str, response: reqwest::Response) -> Option<String> {
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.json::<LoginResponse>().await.unwrap().agent_id;
    let agent: Agent = server.get(&format!("/api/v1/agents/{id}"), admin).await;
    agent.source_ip
}

#[tokio::test]
async fn behind_nginx_each_client_counts_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--trusted-proxy",
        "127.0.0.1/32",
        "--logins-per-source",
        "1",
    ];
    let (server, admin, enrollment) = serve(dir.path(), &args).await;
    let nginx = Nginx::start(server.base.trim_start_matches("http://")).await;

    // One client spends its logins (a burst of ten); another behind the same proxy still logs in.
    let (busy, other) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let mut statuses = Vec::new();
    for n in 0..12 {
        statuses.push(
            log_in(&busy, &nginx.base, &enrollment, n, None)
                .await
                .status(),
        );
    }
    assert_eq!(statuses[..10], [StatusCode::OK; 10]);
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS);
    let response = log_in(&other, &nginx.base, &enrollment, 20, None).await;
    assert_eq!(
        source_of(&server, &admin, response).await.as_deref(),
        Some("127.0.0.3"),
        "the agent's source is the client, not the proxy"
    );

    // A client's own X-Forwarded-For is not believed (nginx appends the real address to it).
    let forged = Some(("x-forwarded-for", "198.51.100.9"));
    let response = log_in(&other, &nginx.base, &enrollment, 21, forged).await;
    assert_eq!(
        source_of(&server, &admin, response).await.as_deref(),
        Some("127.0.0.3")
    );
    // Nor from a client that is not a trusted proxy, straight to the server.
    let direct = client_from([127, 0, 0, 5]);
    let response = log_in(&direct, &server.base, &enrollment, 22, forged).await;
    assert_eq!(
        source_of(&server, &admin, response).await.as_deref(),
        Some("127.0.0.5")
    );

    // /metrics: open to a scraper on this machine, not to whoever comes through the proxy.
    let through = other
        .get(format!("{}/metrics", nginx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), StatusCode::UNAUTHORIZED);
    let local = direct
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), StatusCode::OK);
}

#[tokio::test]
async fn junk_logins_with_a_wrong_token_do_not_spend_the_agents_logins() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, enrollment) = serve(dir.path(), &["--logins-per-source", "1"]).await;
    let host = client_from([127, 0, 0, 9]);
    let mut refused = 0;
    for n in 0..50 {
        let status = log_in(&host, &server.base, "plura_enroll_wrong", n, None)
            .await
            .status();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
        refused += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(
        refused >= 30,
        "wrong tokens have a budget: {refused} of 50 got 429"
    );
    for n in 0..10 {
        let status = log_in(&host, &server.base, &enrollment, n, None)
            .await
            .status();
        assert_eq!(
            status,
            StatusCode::OK,
            "real login {n} from the same address"
        );
    }
}

/// Sends `preamble`, then a login over HTTP/1.1; answers the status line (empty if the server
/// closed the connection).
async fn raw_login(stream: &mut TcpStream, preamble: &[u8], token: &str, n: usize) -> String {
    let body = serde_json::to_string(&login(&format!("10.80.0.{n}"), &format!("nlb-{n}"))).unwrap();
    let request = format!(
        "POST /api/v1/agents/login HTTP/1.1\r\nhost: plura\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream
        .write_all(&[preamble, request.as_bytes()].concat())
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_proxy_protocol_states_the_client_for_trusted_balancers_only() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--trusted-proxy", "127.0.0.1", "--proxy-protocol"];
    let (server, admin, enrollment) = serve(dir.path(), &args).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();

    let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
    let mut balancer = connect_from([127, 0, 0, 1], addr).await.unwrap();
    let status = raw_login(&mut balancer, v1, &enrollment, 1).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // The operator reads the list from an address that is not the balancer's.
    let operator = client_from([127, 0, 0, 4]);
    let response = operator
        .get(format!("{}/api/v1/agents?q=nlb-1", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let agents: plura_proto::AgentList = plura_testkit::json_ok(response).await;
    assert_eq!(agents.items[0].source_ip.as_deref(), Some("203.0.113.7"));

    // A balancer's connection without the header is refused; a header from anyone else is
    // not a header (it is a malformed request).
    let mut bare = connect_from([127, 0, 0, 1], addr).await.unwrap();
    assert_eq!(raw_login(&mut bare, b"", &enrollment, 2).await, "");
    let mut stranger = connect_from([127, 0, 0, 6], addr).await.unwrap();
    let status = raw_login(&mut stranger, v1, &enrollment, 3).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

/// The shipped nginx sample's upstream settings (`packaging/nginx/plura-fleet.conf`): each
/// server line's parameters, and its `proxy_next_upstream`.
fn shipped_nginx_settings() -> (String, String) {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/nginx/plura-fleet.conf"
    ))
    .unwrap();
    let lines: Vec<&str> = sample.lines().map(str::trim).collect();
    let server = lines
        .iter()
        .find(|l| l.starts_with("server ") && l.contains(':'))
        .expect("an upstream server line");
    let parameters = server
        .trim_end_matches(';')
        .split_whitespace()
        .skip(2)
        .collect::<Vec<_>>()
        .join(" ");
    let next = lines
        .iter()
        .find(|l| l.starts_with("proxy_next_upstream "))
        .expect("a proxy_next_upstream line");
    (parameters, next.to_string())
}

/// Two servers through a database outage: both answer logins 503 and heartbeats 204 (from
/// memory). Behind the shipped nginx settings the heartbeats still get through: a 503 must not
/// mark the servers down, or nginx answers every call 502 until they are back.
#[tokio::test]
async fn the_shipped_nginx_settings_do_not_take_a_503_for_a_dead_server() {
    use axum::Router;
    use axum::http::HeaderValue;
    use axum::routing::post;
    let in_outage = || {
        Router::new()
            .route(
                "/api/v1/agents/login",
                post(|| async {
                    let mut response = axum::response::IntoResponse::into_response((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the database is unreachable",
                    ));
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from_static("5"));
                    response
                }),
            )
            .route(
                "/api/v1/agents/{id}/heartbeat",
                post(|| async { StatusCode::NO_CONTENT }),
            )
    };
    let mut upstreams = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        upstreams.push(listener.local_addr().unwrap());
        let app = in_outage();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let (parameters, next_upstream) = shipped_nginx_settings();
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("server {addr} {parameters};"))
        .collect();
    let nginx = Nginx::start_with(
        "plura_fleet",
        &format!("upstream plura_fleet {{ {servers} }}"),
        &next_upstream,
    )
    .await;
    let client = reqwest::Client::new();
    for round in 0..3 {
        let login = client
            .post(format!("{}/api/v1/agents/login", nginx.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            login.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "round {round}"
        );
        assert_eq!(login.headers()["retry-after"], "5");
        let heartbeat = client
            .post(format!("{}/api/v1/agents/1/heartbeat", nginx.base))
            .send()
            .await
            .unwrap();
        assert_eq!(heartbeat.status(), StatusCode::NO_CONTENT, "round {round}");
    }
}
