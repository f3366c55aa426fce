//! hearth's desired-state store: the `Store` layer, a sled engine and an in-memory engine.
//!
//! Layering (one concept per module):
//! - [`engine`]: the small key-value [`Engine`] trait raw backends implement — get, ordered
//!   scan, atomic batch, flush, size. [`SledEngine`] (`sled_engine`, the only file that
//!   imports sled) and [`MemoryEngine`] (`memory`).
//! - [`store`]: [`Store`], the one shared layer over any `Arc<dyn Engine>`: typed access per
//!   kind, optimistic concurrency, generation/resourceVersion bookkeeping, durability with
//!   group commit, the change feed, history and small named values. Because all semantics
//!   live here, both engines behave identically (one conformance suite proves it), and a
//!   future engine only has to implement [`Engine`].
//! - [`transaction`]: atomic multi-object writes ([`Transaction`]).
//! - `follow` (private): a follower store's change feed — what an [`EtcdFollower`] (a
//!   standby's read mirror) applied, turned into change events.
//! - [`watch`]: the change feed ([`watch::Subscription`], [`watch::Change`]).
//! - [`history`]: the append-only history's types and retention.
//! - [`clock`]: the time source; [`error`]: the store's [`Error`].
//!
//! Typical use:
//! ```no_run
//! # async fn demo(app: crd::WarmApp) -> state::Result<()> {
//! let store = state::Store::open("/var/lib/hearth").await?; // or Store::in_memory()
//! let mut feed = store.subscribe();
//! let created = store.create(&app).await?; // durable when it returns
//! let mut edit = created.clone();
//! edit.spec.version = "1.12.0".into();
//! match store.update(&edit).await {
//!     Ok(updated) => assert_eq!(updated.metadata.generation, 2),
//!     Err(e) if e.is_conflict() => { /* re-read, re-apply, retry */ }
//!     Err(e) => return Err(e),
//! }
//! let change = feed.recv().await; // Created, then Updated (or Lagged: relist)
//! # Ok(()) }
//! ```

pub mod clock;
pub mod conflict;
pub mod engine;
pub mod error;
pub mod etcd_engine;
pub mod history;
pub mod memory;
pub mod sled_engine;
pub mod store;
pub mod transaction;
pub mod watch;

mod dir_lock;
mod follow;
mod gate;
mod keys;
mod schema;

pub use clock::{Clock, ManualClock, SystemClock};
pub use conflict::{retry_conflicts, CONFLICT_ATTEMPTS};
pub use engine::Engine;
pub use error::{Error, Result};
pub use etcd_engine::{EtcdEngine, EtcdFollower};
pub use memory::MemoryEngine;
pub use schema::SCHEMA_VERSION;
pub use sled_engine::SledEngine;
pub use store::{Config, MaintenanceReport, ObjectList, Store};
pub use transaction::Transaction;
