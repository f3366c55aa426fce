//! hearth's Prometheus metrics: a `Metrics` struct that owns its registry.
