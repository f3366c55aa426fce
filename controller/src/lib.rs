//! The hearth controller: swarm adapter and simulated swarm, runtime, reconcilers, API and CLI.

pub mod access;
pub mod candidates;
pub mod catalogue;
pub mod cli;
pub mod compose;
pub mod errors;
#[cfg(test)]
pub(crate) mod fuzzing;
pub mod gauges;
pub mod http;
pub mod leader;
pub mod liveness;
#[cfg(test)]
mod malformed;
pub mod nightly;
pub mod promote;
pub mod recipes;
pub mod runs;
pub mod runtime;
pub mod serve;
pub mod slots;
pub mod stack;
pub mod statefile;
pub mod swarm;
pub mod sweeper;
pub mod warmapp;
pub mod yaml;
