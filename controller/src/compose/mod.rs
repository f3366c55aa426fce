//! Compose files → swarm stack specs, as `docker stack deploy` reads them (in progress).
