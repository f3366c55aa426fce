//! hearth's resource model: kinds, metadata, validation and naming rules. No I/O.

pub mod resource;

pub use resource::{Kind, ObjectMeta, Resource, API_VERSION};
