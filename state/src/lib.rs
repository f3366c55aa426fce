//! hearth's desired-state store: the `Store` layer, a sled engine and an in-memory engine.
//!
//! Layering (one concept per module):
//! - [`engine`]: the small key-value [`Engine`] trait raw backends implement
//!   ([`SledEngine`] in `sled_engine`, the only file that imports sled; [`MemoryEngine`]).
//! - [`store`]: the one shared layer over any engine — typed access per kind, optimistic
//!   concurrency, generation/resourceVersion bookkeeping, durability (group commit), the
//!   change feed and history. Both engines therefore behave identically.
//! - [`watch`]: the change feed types; [`history`]: the append-only history types;
//!   [`clock`]: the time source; [`error`]: the store's error type.

pub mod clock;
pub mod engine;
pub mod error;
pub mod history;
pub mod memory;
pub mod sled_engine;
pub mod store;
pub mod transaction;
pub mod watch;

mod dir_lock;
mod gate;
mod keys;
mod schema;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::Engine;
pub use error::{Error, Result};
pub use memory::MemoryEngine;
pub use schema::SCHEMA_VERSION;
pub use sled_engine::SledEngine;
pub use store::{Config, MaintenanceReport, ObjectList, Store};
pub use transaction::Transaction;
