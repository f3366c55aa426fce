//! The swarm: what hearth asks of Docker Swarm, the bollard adapter and the simulated swarm.

pub mod spec;
