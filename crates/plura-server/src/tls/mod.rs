//! TLS on the server's own listener: a certificate chain and key from PEM files, read again when
//! either file changes on disk or on SIGHUP, so a renewed certificate reaches new handshakes
//! without a restart while open connections keep theirs.
//!
//! The files are watched by path (their metadata polled each second), not by open descriptor:
//! certbot, cert-manager and `mv` replace a file by renaming another over it, which an inotify
//! watch on the old file would miss. A pair that does not load is reported and the previous one
//! kept; a half-finished renewal (new certificate, old key) is such a pair until the key follows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub mod quick_start;

/// How often the files' metadata is compared with what was loaded.
const POLL: Duration = Duration::from_secs(1);

/// The certificate chain and private key files, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What identifies a version of a file without reading it: a rename brings a new inode, an edit
/// in place a new modification time or length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The TLS settings new connections get; swapped whole when the files change.
pub struct Certified {
    files: TlsFiles,
    current: RwLock<TlsAcceptor>,
    /// The files' stamps when last read, loaded or not, so a broken pair is reported once.
    seen: std::sync::Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl Certified {
    /// Loads the pair; an error says which file and what is wrong with it.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let config = server_config(&files)?;
        Ok(Self {
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            seen: std::sync::Mutex::new(seen),
            files,
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap().clone()
    }

    /// Reads the pair again if either file changed since it was last read (or always, when
    /// `forced`); answers whether new connections now get a new pair.
    pub fn reload(&self, forced: bool) -> bool {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut seen = self.seen.lock().unwrap();
            if !forced && *seen == now {
                return false;
            }
            *seen = now;
        }
        match server_config(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap() = TlsAcceptor::from(Arc::new(config));
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate loaded again; new connections get it"
                );
                true
            }
            Err(e) => {
                tracing::error!("{e:#}; new connections keep the previous certificate");
                false
            }
        }
    }

    /// Polls the files, and reloads on SIGHUP, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP (the files are still watched): {e}");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            let this = self.clone();
            // Reading and parsing files blocks; keep it off the request threads.
            let _ = tokio::task::spawn_blocking(move || this.reload(forced)).await;
        }
    }
}

/// TLS 1.2 and 1.3 only, with ring as the crypto provider (the lock file also carries aws-lc-rs,
/// through the AWS SDK of plura-eni; naming one keeps the choice from depending on features
/// another crate turns on), and HTTP/2 or HTTP/1.1 by ALPN.
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the certificate file {} holds no PEM certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read the private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the certificate {} and the key {} do not make a pair",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Answers SIGHUP with a log line until `shutdown`, when there are no TLS files to read again.
pub async fn ignore_hangups(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hangup.recv() => tracing::info!("SIGHUP: no TLS files to read again"),
        }
    }
}
