//! plura-eni against a real EC2 emulator: moto's server on a random loopback port, one per test,
//! and an IMDSv2 fixture per simulated instance. The binary runs as at boot, one process per
//! instance.

mod boot;
mod claim;
mod cloud;
mod provision;
mod watch;
