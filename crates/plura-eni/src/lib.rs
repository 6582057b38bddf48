//! plura-eni: the Auto Scaling side of PLURA Fleet. A bounded pool of fixed-IP network
//! interfaces; at boot each new instance claims one (eth1) and takes its hostname, so a
//! re-created instance comes back as the same agent and the agent list stays bounded. And the
//! watch, which asks EC2 why agents went silent and which instances have no agent.

pub mod aws;
pub mod claim;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod host;
pub mod lifecycle;
pub mod pool;
pub mod provision;
pub mod status;
pub mod templates;
pub mod watch;
