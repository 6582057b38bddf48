//! The agent's life: wait for boot to settle, log in, heartbeat at the interval the server
//! gives, log in again when the server forgets the agent, its key is revoked or the host's
//! identity changes, take a changed `plura.conf` as it comes, and say goodbye on shutdown.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use plura_proto::config::AgentConfig;
use plura_proto::{CloudLabels, LoginRequest};

use crate::backoff::Backoff;
use crate::boot::LoginWait;
use crate::client::{CallError, ServerClient};
use crate::host::{self, Host};
use crate::identity::{self, Identity};

/// How long the goodbye may take: shutdown of the instance does not wait for a dead server.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// A logged-in agent.
struct LoggedIn {
    agent_id: i64,
    /// This agent's own key, for its heartbeats and logout; kept in memory only.
    key: String,
    identity: Identity,
    heartbeat_interval: Duration,
}

pub struct Agent<'a> {
    /// The configuration in use.
    config: AgentConfig,
    /// New configurations, as `plura.conf` changes.
    updates: watch::Receiver<AgentConfig>,
    host: &'a dyn Host,
    client: ServerClient,
    shutdown: CancellationToken,
    machine_id: Option<String>,
    cloud: CloudLabels,
    backoff: Backoff,
}

/// Waits for a new configuration; forever if none can come any more.
async fn config_changed(updates: &mut watch::Receiver<AgentConfig>) {
    if updates.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<'a> Agent<'a> {
    pub fn new(
        mut updates: watch::Receiver<AgentConfig>,
        host: &'a dyn Host,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let config = updates.borrow_and_update().clone();
        Ok(Self {
            client: ServerClient::new(&config)?,
            config,
            updates,
            host,
            shutdown,
            machine_id: None,
            cloud: CloudLabels::default(),
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
        })
    }

    /// Takes the newest configuration if one came; answers whether the agent must log in anew
    /// (another server, or another kind to report). A new enrollment token alone changes
    /// nothing until the next login: the agent's key stays valid.
    fn take_update(&mut self) -> bool {
        // The newest one, whether or not a wait already saw the change.
        if *self.updates.borrow_and_update() == self.config {
            return false;
        }
        let new = self.updates.borrow().clone();
        let client = match ServerClient::new(&new) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!("cannot use the new configuration ({e:#}); keeping the old one");
                return false;
            }
        };
        let relogin = new.server_url != self.config.server_url || new.kind != self.config.kind;
        self.client = client;
        self.config = new;
        relogin
    }

    /// Runs until shutdown; answers once the goodbye is said (or given up on).
    pub async fn run(mut self) -> anyhow::Result<()> {
        let wait = LoginWait {
            host: self.host,
            interface: self.config.interface.as_deref(),
            delay: self.config.login_delay,
            hostname_changes: self.config.login_hostname_check,
        };
        let identity = tokio::select! {
            identity = wait.identity() => identity,
            () = self.shutdown.cancelled() => return Ok(()),
        };
        self.cloud = host::cloud_labels().await;
        if self.config.login_with_machine_id {
            self.machine_id = host::machine_id(&self.cloud);
        }
        let Some(mut session) = self.login(identity).await else {
            return Ok(());
        };
        let mut next = session.heartbeat_interval;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(next) => {}
                () = config_changed(&mut self.updates) => {}
            }
            if self.take_update() {
                tracing::info!("the configuration names another server or kind: logging in anew");
                self.logout(&session).await;
                match self.login(session.identity.clone()).await {
                    Some(new) => session = new,
                    None => return Ok(()),
                }
                next = session.heartbeat_interval;
                continue;
            }
            match identity::current(self.host, self.config.interface.as_deref()) {
                Ok(now) if now != session.identity => {
                    tracing::info!(
                        "identity changed from {} to {now}: logging in as the new one",
                        session.identity
                    );
                    self.logout(&session).await;
                    match self.login(now).await {
                        Some(new) => session = new,
                        None => return Ok(()),
                    }
                    next = session.heartbeat_interval;
                    continue;
                }
                Ok(_) => {}
                Err(reason) => tracing::warn!("{reason}; keeping identity {}", session.identity),
            }
            let heartbeat = self
                .client
                .as_agent(session.agent_id, &session.key, "heartbeat");
            next = match heartbeat.await {
                Ok(()) => {
                    self.backoff.reset();
                    session.heartbeat_interval
                }
                Err(e @ (CallError::Gone | CallError::Unauthorized(_))) => {
                    tracing::warn!("agent {}: {e}; logging in again", session.agent_id);
                    match self.login(session.identity.clone()).await {
                        Some(new) => session = new,
                        None => return Ok(()),
                    }
                    session.heartbeat_interval
                }
                Err(e) => {
                    let delay = self.backoff.next_delay().max(e.retry_after());
                    tracing::warn!("heartbeat failed ({e}); next try in {delay:.1?}");
                    delay
                }
            };
        }
        self.logout(&session).await;
        Ok(())
    }

    /// Logs in, retrying with backoff until it works; `None` if shutdown came first.
    async fn login(&mut self, identity: Identity) -> Option<LoggedIn> {
        let request = LoginRequest {
            ip: identity.ip.to_string(),
            hostname: identity.hostname.clone(),
            machine_id: self.machine_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            os: host::os_name(),
            kind: self.config.kind.clone(),
            cloud: self.cloud.clone(),
        };
        loop {
            self.take_update();
            let request = LoginRequest {
                kind: self.config.kind.clone(),
                ..request.clone()
            };
            let result = match request.validate() {
                Ok(()) => self.client.login(&request).await,
                Err(e) => Err(CallError::Refused {
                    status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                    message: format!("this host's identity cannot be sent: {e}"),
                }),
            };
            let delay = match result {
                Ok(response) => {
                    self.backoff.reset();
                    let interval = Duration::from_secs(response.heartbeat_interval_s.max(1));
                    tracing::info!(
                        agent_id = response.agent_id,
                        created = response.created,
                        "logged in to {} as {identity}, heartbeat every {interval:?}",
                        self.config.server_url
                    );
                    return Some(LoggedIn {
                        agent_id: response.agent_id,
                        key: response.agent_key,
                        identity,
                        heartbeat_interval: interval,
                    });
                }
                Err(e @ (CallError::Refused { .. } | CallError::Unauthorized(_))) => {
                    let delay = self.backoff.next_delay();
                    tracing::error!("login refused ({e}); next try in {delay:.1?}");
                    delay
                }
                Err(e) => {
                    let delay = self.backoff.next_delay().max(e.retry_after());
                    tracing::warn!(
                        "cannot log in to {} ({e}); next try in {delay:.1?}",
                        self.config.server_url
                    );
                    delay
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
                () = config_changed(&mut self.updates) => {}
            }
        }
    }

    async fn logout(&self, session: &LoggedIn) {
        let logout = self
            .client
            .as_agent(session.agent_id, &session.key, "logout");
        match tokio::time::timeout(LOGOUT_TIMEOUT, logout).await {
            Ok(Ok(())) => tracing::info!("logged out as {}", session.identity),
            Ok(Err(e)) => tracing::warn!("logout of {} failed: {e}", session.identity),
            Err(_) => tracing::warn!(
                "logout of {} timed out after {LOGOUT_TIMEOUT:?}",
                session.identity
            ),
        }
    }
}
