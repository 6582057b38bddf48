//! A real plura-server in the test's own process, on a random loopback port over a fresh
//! database, and the calls tests make to it as agents and people do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use plura_proto::{
    Agent, AgentList, AgentStatus, CreatedWebhook, Delivery, DeliveryList, Event, EventList,
    LoginRequest, LoginResponse, NewWebhook, Role, Timestamp, WebhookFormat,
};
use plura_server::credentials;
use plura_server::enrollment::{self, Issued};
use plura_server::fleet::LivenessPolicy;
use plura_server::server::Limits;
use plura_server::store::{self, Actor, SqlStore};

use crate::{Database, Db, eventually, json_ok, login, metric_value, tls, unique_name, within};

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
        let carried = Carried {
            limits,
            ..Carried::default()
        };
        Self::start_on(db, policy, loopback().await, carried).await
    }

    /// A server that serves HTTPS with `ca`'s certificate; its `http` client trusts that CA.
    pub async fn start_tls(db: Db, policy: LivenessPolicy, ca: Arc<tls::TestCa>) -> Self {
        let db = Arc::new(Database::fresh(db).await);
        let carried = Carried {
            tls: Some(ca),
            ..Carried::default()
        };
        Self::start_on(db, policy, loopback().await, carried).await
    }

    /// A server listening on `listener` (e.g. one made inside a network namespace).
    pub async fn start_listening(db: Db, listener: std::net::TcpListener) -> Self {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        let db = Arc::new(Database::fresh(db).await);
        Self::start_on(db, fast_policy(), listener, Carried::default()).await
    }

    /// Another server on the same database, as when several share one PostgreSQL.
    pub async fn another(&self) -> Self {
        let carried = Carried {
            enrollment: Some(self.enrollment.clone()),
            admin: Some(self.admin.clone()),
            keys: Default::default(),
            limits: self.limits,
            tls: self.tls.clone(),
        };
        Self::start_on(self.db.clone(), self.policy, loopback().await, carried).await
    }

    async fn start_on(
        db: Arc<Database>,
        policy: LivenessPolicy,
        listener: TcpListener,
        carried: Carried,
    ) -> Self {
        let store = Arc::new(store::open(&db.url).await.expect("open the test database"));
        let admin = match carried.admin {
            Some(token) => token,
            None => credentials::create_lasting_token(store.as_ref(), "test-admin", Role::Admin)
                .await
                .unwrap(),
        };
        let enrollment = match carried.enrollment {
            Some(token) => token,
            None => match enrollment::issue(store.as_ref()).await.unwrap() {
                Issued::Created(token) => token,
                Issued::Exists => panic!("a fresh database has no enrollment token yet"),
            },
        };
        let addr = listener.local_addr().unwrap();
        let (base, http) = match &carried.tls {
            Some(ca) => (format!("https://{addr}"), ca.http()),
            None => (format!("http://{addr}"), reqwest::Client::new()),
        };
        let front = plura_server::server::Front {
            tls: carried.tls.as_ref().map(|ca| ca.certified()),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(plura_server::server::serve(
            listener,
            front,
            store.clone(),
            policy,
            carried.limits,
            None,
            shutdown.clone(),
        ));
        Self {
            base,
            addr,
            admin,
            enrollment,
            http,
            keys: std::sync::Mutex::new(carried.keys),
            store,
            db,
            policy,
            limits: carried.limits,
            tls: carried.tls,
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
            carried: Carried {
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
struct Carried {
    enrollment: Option<String>,
    /// The admin token of the servers before on this database.
    admin: Option<String>,
    keys: std::collections::HashMap<i64, String>,
    limits: Limits,
    /// Serve HTTPS with this CA's certificate.
    tls: Option<Arc<tls::TestCa>>,
}

impl Default for Carried {
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
    carried: Carried,
}

impl StoppedServer {
    /// To start again with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.carried.limits = limits;
        self
    }

    pub async fn start(self) -> TestServer {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the stopped server's address is free again");
        TestServer::start_on(self.db, self.policy, listener, self.carried).await
    }
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}
