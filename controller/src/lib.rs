//! The hearth controller: swarm adapter and simulated swarm, runtime, reconcilers, API and CLI.

pub mod catalogue;
pub mod compose;
pub mod runtime;
pub mod stack;
pub mod statefile;
pub mod swarm;
