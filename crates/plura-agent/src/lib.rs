//! The PLURA host agent: it logs in to plura-server as (IP of its interface, hostname), keeps
//! its status true with heartbeats, and says goodbye when the host shuts down.

mod agent;
mod backoff;
mod boot;
mod client;
pub mod host;
pub mod identity;
mod reload;
pub mod trust;

use std::path::Path;

use plura_proto::config::{self, AgentConfig, ConfigError};

pub use agent::Agent;
pub use reload::watch as watch_config;

/// Reads and checks the configuration file.
pub fn load_config(path: &Path) -> Result<AgentConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: shown.clone(),
        line: None,
        message: format!("cannot read it: {e}"),
    })?;
    config::parse(&shown, &text)
}

/// Why the configuration file (which holds the enrollment token) should be made private, if it
/// can be read by users other than its owner.
pub fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "it is readable by other users (mode {:o}) and holds the enrollment token; \
             chmod 600 it",
            mode & 0o777
        )
    })
}
