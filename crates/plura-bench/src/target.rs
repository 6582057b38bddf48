//! The server a benchmark runs against: a real plura-server started in this process on a
//! random loopback port, over a fresh SQLite file or the database URL given.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use plura_proto::Role;
use plura_server::auth;
use plura_server::registry::LivenessPolicy;
use plura_server::store;

pub struct Target {
    pub base: String,
    pub enrollment: String,
    pub admin: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// `database`: a URL, or `None` for a new SQLite file in a temporary folder.
    pub async fn start(database: Option<&str>) -> anyhow::Result<Self> {
        let (url, dir) = match database {
            Some(url) => (url.to_string(), None),
            None => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/bench.db", dir.path().display());
                (url, Some(dir))
            }
        };
        let store = store::open(&url)
            .await
            .with_context(|| format!("open {}", store::redact_url(&url)))?;
        let admin = auth::create_api_token(&store, Role::Admin, "bench").await?;
        let enrollment = auth::enrollment_token(&store, false).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(plura_server::server::serve(
            listener,
            Arc::new(store),
            LivenessPolicy::default(),
            shutdown.clone(),
        ));
        Ok(Self {
            base,
            enrollment,
            admin,
            shutdown,
            task,
            _dir: dir,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}
