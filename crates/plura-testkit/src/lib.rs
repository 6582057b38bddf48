//! The test harness: a real plura-server on a random loopback port, over a fresh SQLite file or a
//! fresh PostgreSQL database, and an HTTP client that talks to it as agents and people do.
//! Shared by the integration tests of every crate and by the benchmarks.

pub mod balancer;
pub mod imds;
pub mod process;
pub mod receiver;
pub mod served;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Connection, Executor};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use plura_proto::{
    Agent, AgentList, AgentStatus, CreatedWebhook, Delivery, DeliveryList, ErrorBody, Event,
    EventList, LoginRequest, LoginResponse, NewWebhook, Role, Timestamp, WebhookFormat,
};
use plura_server::credentials;
use plura_server::enrollment::{self, Issued};
use plura_server::fleet::LivenessPolicy;
use plura_server::server::Limits;
use plura_server::store::{self, Actor, SqlStore};

pub const DEFAULT_PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database made for one test: a SQLite file in a temporary folder, or a new PostgreSQL
/// database on the server `PLURA_TEST_PG_URL` names (dropped when the test ends well).
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl Database {
    pub async fn fresh(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}/plura.db", dir.path().display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_admin: None,
                }
            }
            Db::Postgres => {
                let admin = std::env::var("PLURA_TEST_PG_URL").unwrap_or(DEFAULT_PG_URL.into());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL does not answer at {} ({e}); run ./scripts/test, which \
                         starts it, or set PLURA_TEST_PG_URL",
                            store::redact_url(&admin)
                        )
                    });
                let name = format!(
                    "plura_test_{}",
                    &plura_server::secret::new_token("x")[2..18]
                );
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
                let server = &base[..base.rfind('/').expect("a database URL has a path")];
                let url = if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                };
                Self {
                    url,
                    _dir: None,
                    pg_admin: Some((admin, name)),
                }
            }
        }
    }

    /// The folder the database writes to: the SQLite file's, or PostgreSQL's data directory
    /// when the server runs on this machine (reached over loopback or a local socket) and says
    /// where it is. A server elsewhere has its folder on a disk this process cannot see.
    pub async fn data_directory(&self) -> Option<std::path::PathBuf> {
        if let Some(dir) = &self._dir {
            return Some(dir.path().to_path_buf());
        }
        let (admin, _) = self.pg_admin.as_ref()?;
        let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
        let (dir, here): (String, bool) = sqlx::query_as(
            "SELECT current_setting('data_directory'), \
             COALESCE(inet_server_addr() <<= '127.0.0.0/8' OR inet_server_addr() = '::1', true)",
        )
        .fetch_one(&mut conn)
        .await
        .ok()?;
        here.then(|| dir.into())
    }

    /// Drops the PostgreSQL database (a SQLite file goes with its folder).
    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// A heartbeat each second: a silent agent is stopped after 3 s, fast enough for tests; the
/// fleet's counts sampled each second too.
pub fn fast_policy() -> LivenessPolicy {
    LivenessPolicy {
        heartbeat_interval: Duration::from_secs(1),
        sample_every: Duration::from_secs(1),
        ..LivenessPolicy::default()
    }
}

pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub admin: String,
    pub enrollment: String,
    pub http: reqwest::Client,
    /// The agent key of each agent logged in through this server, as an agent keeps it.
    keys: std::sync::Mutex<std::collections::HashMap<i64, String>>,
    store: Arc<SqlStore>,
    db: Arc<Database>,
    policy: LivenessPolicy,
    limits: Limits,
    tls: Option<Arc<tls::TestCa>>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, fast_policy()).await
    }

    pub async fn start_with(db: Db, policy: LivenessPolicy) -> Self {
        Self::start_limited(db, policy, test_limits()).await
    }

    /// A server with these limits on connections and requests.
    pub async fn start_limited(db: Db, policy: LivenessPolicy, limits: Limits) -> Self {
        let db = Arc::new(Database::fresh(db).await);
        let known = Known {
            limits,
            ..Known::default()
        };
        Self::start_on(db, policy, loopback().await, known).await
    }

    /// A server that serves HTTPS with `ca`'s certificate; its `http` client trusts that CA.
    pub async fn start_tls(db: Db, policy: LivenessPolicy, ca: Arc<tls::TestCa>) -> Self {
        let db = Arc::new(Database::fresh(db).await);
        let known = Known {
            tls: Some(ca),
            ..Known::default()
        };
        Self::start_on(db, policy, loopback().await, known).await
    }

    /// A server listening on `listener` (e.g. one made inside a network namespace).
    pub async fn start_listening(db: Db, listener: std::net::TcpListener) -> Self {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        let db = Arc::new(Database::fresh(db).await);
        Self::start_on(db, fast_policy(), listener, Known::default()).await
    }

    /// Another server on the same database, as when several share one PostgreSQL.
    pub async fn another(&self) -> Self {
        let known = Known {
            enrollment: Some(self.enrollment.clone()),
            admin: Some(self.admin.clone()),
            keys: Default::default(),
            limits: self.limits,
            tls: self.tls.clone(),
        };
        Self::start_on(self.db.clone(), self.policy, loopback().await, known).await
    }

    async fn start_on(
        db: Arc<Database>,
        policy: LivenessPolicy,
        listener: TcpListener,
        known: Known,
    ) -> Self {
        let store = Arc::new(store::open(&db.url).await.expect("open the test database"));
        let admin = match known.admin {
            Some(token) => token,
            None => credentials::create_lasting_token(store.as_ref(), "test-admin", Role::Admin)
                .await
                .unwrap(),
        };
        let enrollment = match known.enrollment {
            Some(token) => token,
            None => match enrollment::issue(store.as_ref()).await.unwrap() {
                Issued::Created(token) => token,
                Issued::Exists => panic!("a fresh database has no enrollment token yet"),
            },
        };
        let addr = listener.local_addr().unwrap();
        let (base, http) = match &known.tls {
            Some(ca) => (format!("https://{addr}"), ca.http()),
            None => (format!("http://{addr}"), reqwest::Client::new()),
        };
        let front = plura_server::server::Front {
            tls: known.tls.as_ref().map(|ca| ca.certified()),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(plura_server::server::serve(
            listener,
            front,
            store.clone(),
            policy,
            known.limits,
            shutdown.clone(),
        ));
        Self {
            base,
            addr,
            admin,
            enrollment,
            http,
            keys: std::sync::Mutex::new(known.keys),
            store,
            db,
            policy,
            limits: known.limits,
            tls: known.tls,
            shutdown,
            task,
        }
    }

    /// Stops the server gracefully, as SIGTERM would, keeping its database and address.
    pub async fn stop(self) -> StoppedServer {
        self.shutdown.cancel();
        self.task
            .await
            .expect("server task")
            .expect("server ends cleanly");
        StoppedServer {
            db: self.db,
            policy: self.policy,
            addr: self.addr,
            known: Known {
                enrollment: Some(self.enrollment),
                admin: Some(self.admin),
                keys: self.keys.into_inner().unwrap(),
                limits: self.limits,
                tls: self.tls,
            },
        }
    }

    /// Stops it and starts a new server on the same database and address.
    pub async fn restart(self) -> Self {
        self.stop().await.start().await
    }

    /// Stops it and drops its database.
    pub async fn finish(self) {
        self.stop().await.db.drop_database().await;
    }

    /// The server's storage, for checks a client cannot make (e.g. from another namespace).
    /// Where its database writes (see [`Database::data_directory`]).
    pub async fn data_directory(&self) -> Option<std::path::PathBuf> {
        self.db.data_directory().await
    }

    /// The URL of this server's database, for a test to look into it.
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// rustls settings trusting this server's certificate, when it serves HTTPS.
    pub fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|ca| ca.client_config())
    }

    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    pub async fn token(&self, role: Role) -> String {
        let name = unique_name(&format!("test-{role}"));
        credentials::create_lasting_token(self.store.as_ref(), &name, role)
            .await
            .unwrap()
    }

    /// A console user with this role; answers its name and password.
    pub async fn user(&self, role: Role) -> (String, String) {
        let name = unique_name(&format!("{role}-user"));
        let by = Actor {
            name: credentials::COMMAND_LINE,
            at: Timestamp::now(),
        };
        let (_, password) = credentials::create_user(self.store.as_ref(), &name, role, None, by)
            .await
            .unwrap();
        (
            name,
            password.expect("a password is made when none is given"),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("the server answers")
    }

    /// A request without a body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        self.call(method, path, token, None::<&()>).await
    }

    /// Deletes an agent as admin.
    pub async fn delete_agent(&self, id: i64) -> StatusCode {
        let path = format!("/api/v1/agents/{id}");
        self.request(Method::DELETE, &path, Some(&self.admin))
            .await
            .status()
    }

    /// GET as admin, expecting 200 and JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let response = self
            .call(Method::GET, path, Some(&self.admin), None::<&()>)
            .await;
        json_ok(response).await
    }

    /// Adds a webhook as admin; answers it with its signing secret.
    pub async fn add_webhook(
        &self,
        url: &str,
        format: WebhookFormat,
        secret: Option<&str>,
    ) -> CreatedWebhook {
        let new = NewWebhook {
            url: url.into(),
            format,
            secret: secret.map(String::from),
        };
        let response = self
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(&self.admin),
                Some(&new),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_ok(response).await
    }

    /// The newest deliveries of alerts first.
    pub async fn deliveries(&self) -> Vec<Delivery> {
        self.get::<DeliveryList>("/api/v1/alerts/deliveries")
            .await
            .items
    }

    pub async fn login_as(&self, login: &LoginRequest) -> reqwest::Response {
        self.call(
            Method::POST,
            "/api/v1/agents/login",
            Some(&self.enrollment),
            Some(login),
        )
        .await
    }

    /// Logs in as `login` says, expecting success; keeps the agent key it answers.
    pub async fn login_with(&self, login: &LoginRequest) -> LoginResponse {
        let answer: LoginResponse = json_ok(self.login_as(login).await).await;
        self.keys
            .lock()
            .unwrap()
            .insert(answer.agent_id, answer.agent_key.clone());
        answer
    }

    pub async fn login(&self, ip: &str, hostname: &str) -> LoginResponse {
        self.login_with(&login(ip, hostname)).await
    }

    /// The key of the last login of agent `id` through this server.
    pub fn key(&self, id: i64) -> Option<String> {
        self.keys.lock().unwrap().get(&id).cloned()
    }

    /// `heartbeat` or `logout` of agent `id`, with `token` for credential.
    pub async fn agent_post_with(&self, id: i64, action: &str, token: &str) -> StatusCode {
        let path = format!("/api/v1/agents/{id}/{action}");
        self.request(Method::POST, &path, Some(token))
            .await
            .status()
    }

    /// `heartbeat` or `logout` of agent `id`, with its key as this server gave it.
    pub async fn agent_post(&self, id: i64, action: &str) -> StatusCode {
        let key = self.key(id).unwrap_or_else(|| "plura_agent_unknown".into());
        self.agent_post_with(id, action, &key).await
    }

    pub async fn heartbeat(&self, id: i64) -> StatusCode {
        self.agent_post(id, "heartbeat").await
    }

    pub async fn logout(&self, id: i64) -> StatusCode {
        self.agent_post(id, "logout").await
    }

    pub async fn agent(&self, id: i64) -> Agent {
        self.get(&format!("/api/v1/agents/{id}")).await
    }

    pub async fn agents(&self, query: &str) -> AgentList {
        self.get(&format!("/api/v1/agents{query}")).await
    }

    pub async fn events(&self, id: i64) -> Vec<Event> {
        self.get::<EventList>(&format!("/api/v1/agents/{id}/events"))
            .await
            .items
    }

    /// The value of the unlabelled metric `name` on `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let response = self.request(Method::GET, "/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("the metrics");
        metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    /// Polls until the server's in-memory agent index holds `agents`, so searches and deep
    /// pages are answered from it; panics after `limit`.
    pub async fn wait_for_agent_index(&self, agents: usize, limit: Duration) {
        eventually("the agent index is loaded", limit, || async {
            (self.metric("plura_search_index_agents").await == agents as f64).then_some(())
        })
        .await;
    }

    /// Polls until the agent has `status`; panics after `limit`.
    pub async fn wait_for_status(&self, id: i64, status: AgentStatus, limit: Duration) -> Agent {
        eventually(&format!("agent {id} turns {status}"), limit, || async {
            Some(self.agent(id).await).filter(|a| a.status == status)
        })
        .await
    }

    /// Polls the list (by id) until `check` holds for it; answers that list.
    pub async fn wait_for_agents(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&[Agent]) -> bool,
    ) -> Vec<Agent> {
        let last = std::sync::Mutex::new(Vec::new());
        let found = within(limit, || async {
            let agents = self.agents("?sort=id").await.items;
            let ok = check(&agents);
            *last.lock().unwrap() = agents.clone();
            ok.then_some(agents)
        })
        .await;
        found.unwrap_or_else(|| panic!("{what}; agents: {:#?}", last.lock().unwrap()))
    }
}

/// The secrets a test holds across servers on one database, as agents hold them: the
/// enrollment token (shown once) and each agent's key.
struct Known {
    enrollment: Option<String>,
    /// The admin token of the servers before on this database.
    admin: Option<String>,
    keys: std::collections::HashMap<i64, String>,
    limits: Limits,
    /// Serve HTTPS with this CA's certificate.
    tls: Option<Arc<tls::TestCa>>,
}

impl Default for Known {
    fn default() -> Self {
        Self {
            enrollment: None,
            admin: None,
            keys: Default::default(),
            limits: test_limits(),
            tls: None,
        }
    }
}

/// The server's limits, but for the login rate: tests and benchmarks log in many agents from
/// one address.
pub fn test_limits() -> Limits {
    Limits {
        logins_per_source: None,
        // Tests' webhook receivers listen on loopback, as tests must.
        webhooks_to_loopback: true,
        ..Limits::default()
    }
}

/// A server that was stopped, and can start again where it was.
pub struct StoppedServer {
    db: Arc<Database>,
    policy: LivenessPolicy,
    addr: SocketAddr,
    known: Known,
}

impl StoppedServer {
    /// To start again with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.known.limits = limits;
        self
    }

    pub async fn start(self) -> TestServer {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the stopped server's address is free again");
        TestServer::start_on(self.db, self.policy, listener, self.known).await
    }
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}

/// Polls `check` (every 100 ms) until it answers something, for at most `limit`.
pub async fn within<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the unlabelled metric `name` in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.parse().ok())?
    })
}

/// Polls `check` until it answers something; panics, saying `what` did not happen, after
/// `limit`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    check: impl FnMut() -> F,
) -> T {
    within(limit, check)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// A login as the agent of `ip` and `hostname` would send it (a WAF on Ubuntu).
pub fn login(ip: &str, hostname: &str) -> LoginRequest {
    LoginRequest {
        ip: ip.into(),
        hostname: hostname.into(),
        machine_id: None,
        version: "5.0.1".into(),
        os: "Ubuntu 24.04".into(),
        kind: "waf".into(),
        cloud: Default::default(),
    }
}

pub async fn json_ok<T: DeserializeOwned>(response: reqwest::Response) -> T {
    let status = response.status();
    let text = response.text().await.expect("a body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the expected JSON ({e}): {text}"))
}

/// Checks the response's content type starts with `expected` (parameters may follow).
pub fn assert_content_type(response: &reqwest::Response, expected: &str) {
    let got = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        got.starts_with(expected),
        "content type {got:?}, not {expected}"
    );
}

/// Checks the answer is the JSON error the API promises, with this status and code.
pub async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    let got = response.status();
    let text = response.text().await.expect("a body");
    assert_eq!(got, status, "body: {text}");
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    assert_eq!(body.error, code, "{text}");
    assert!(!body.message.is_empty(), "an error says what went wrong");
    body
}

/// Declares each named scenario (an `async fn(Db)`) as one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::Db::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::Db::Postgres).await
            })+
        }
    };
}

/// `prefix` and a number no other call in this process gets: credential names are unique.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}
