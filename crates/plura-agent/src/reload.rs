//! Rereads `plura.conf` when it changes (looked at every few seconds) or on SIGHUP, so a rotated
//! enrollment token or a moved server takes effect without a restart. A file that no longer
//! parses is reported (file and line) and the configuration in use is kept.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use plura_proto::config::AgentConfig;

/// How often the file's size and modification time are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `path`, whose contents gave `current`; answers a receiver of each new valid
/// configuration. The watch ends with the runtime.
pub fn watch(path: PathBuf, current: AgentConfig) -> watch::Receiver<AgentConfig> {
    let (sender, receiver) = watch::channel(current);
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}); watching the file only");
                None
            }
        };
        let mut last = stamp(&path);
        loop {
            let asked = tokio::select! {
                () = tokio::time::sleep(LOOK_EVERY) => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = stamp(&path);
            if !asked && now == last {
                continue;
            }
            last = now;
            match crate::load_config(&path) {
                Ok(config) if config == *sender.borrow() => {
                    tracing::info!("{}: reread, nothing changed", path.display());
                }
                Ok(config) => {
                    tracing::info!("{}: reread, using the new configuration", path.display());
                    if sender.send(config).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("{e}; keeping the configuration in use"),
            }
        }
    });
    receiver
}
