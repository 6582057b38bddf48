//! What the PLURA agent and server say to each other: the JSON wire types of the `/api/v1` API
//! and the timestamp format they share.
//!
//! This crate stays free of runtimes and databases so that the agent, the server and any script
//! written in Rust can share one definition of the protocol.

mod time;
mod wire;

pub use time::Timestamp;
pub use wire::*;
