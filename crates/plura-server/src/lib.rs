//! PLURA Fleet's management server: the registry of agents by (ip, hostname), their liveness,
//! the HTTP API over them, and the storage beneath. What each module owns, in one sentence:
//!
//! - `server`: connections (accepting, TLS, trusted proxies, limits per source, shutdown).
//! - `api`: the HTTP routes, the role each needs, the error body, the OpenAPI document.
//! - `auth`, `credentials`, `enrollment`: who is calling, and the credentials' life cycle.
//! - `oidc`: sign-in through the company's identity provider (OpenID Connect).
//! - `fleet`: the domain's rules over the agents, and the one way to see and change them.
//! - `read_model`: what this server keeps of the agents in memory (running agents, the index,
//!   the summary's cache).
//! - `cluster`: the servers sharing one database (the sweep lease, the change feed).
//! - `alerts`: alert messages, webhook destinations, signed deliveries.
//! - `store`: persistence, and nothing else.
//! - `metrics`, `tls`, `secret`, `cli`: the Prometheus exposition, certificates, hashing and
//!   random secrets, the command line.

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
pub mod oidc;
mod rate;
pub mod read_model;
pub mod secret;
pub mod server;
mod slots;
pub mod store;
mod throttle;
pub mod tls;
