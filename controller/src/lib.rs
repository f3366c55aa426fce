//! The hearth controller: swarm adapter and simulated swarm, runtime, reconcilers, API and CLI.

pub mod compose;
pub mod swarm;
