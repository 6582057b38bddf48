//! The PLURA host agent: it logs in to plura-server as (IP of its interface, hostname), keeps
//! its status true with heartbeats, and says goodbye when the host shuts down.

mod agent;
mod backoff;
mod boot;
mod client;
pub mod host;
pub mod identity;
mod reload;

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
