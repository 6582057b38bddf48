//! What the PLURA agent and server say to each other: the JSON wire types of the `/api/v1` API,
//! the timestamp format they share, and the agent's `plura.conf`.
//!
//! This crate stays free of runtimes and databases so that the agent, the server and any script
//! written in Rust can share one definition of the protocol.

mod alerts;
mod cloud;
pub mod config;
mod credentials;
mod fingerprint;
#[cfg(feature = "logging")]
pub mod logging;
mod rules;
mod text_enum;
mod time;
mod wire;

pub use alerts::*;
pub use cloud::*;
pub use credentials::*;
pub use fingerprint::Fingerprint;
pub use rules::{
    FieldError, MAX_HOSTNAME_LEN, MAX_TEXT_LEN, normal_hostname, validate_filter,
    validate_hostname, validate_text,
};
pub use time::Timestamp;
pub use wire::*;
