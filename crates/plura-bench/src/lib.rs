//! Load generators for PLURA Fleet. Each benchmark runs a bounded amount of work against a real
//! server on loopback, prints what it does, and ends with one line of `key=value` figures.

pub mod cloud;
pub mod disk;
pub mod fleet;
pub mod registry;
pub mod report;
pub mod scale;
pub mod usage;
pub mod wire;
