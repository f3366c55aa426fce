//! Desired swarm objects in the Docker Engine API's own shape (filled in by the swarm-driver work).
