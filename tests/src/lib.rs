//! Shared helpers for hearth's scenario and real-swarm tests.
