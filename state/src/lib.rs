//! hearth's desired-state store: the `Store` trait, a sled engine and an in-memory engine.
