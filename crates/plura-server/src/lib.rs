//! PLURA Fleet's management server: the registry of agents by (ip, hostname), their liveness,
//! the HTTP API over them, and the storage beneath.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod credentials;
mod csv;
pub mod enrollment;
pub mod fleet;
pub mod metrics;
mod rate;
pub mod read_model;
pub mod secret;
pub mod server;
mod slots;
pub mod store;
mod throttle;
pub mod tls;
