//! The schema-version key: a fresh data directory gets the current version; others must match.

use crate::engine::{Engine, KeyRange, Keyspace, Op, Order};
use crate::error::{Error, Result};
use crate::keys;

/// The store layout this build reads and writes. Bump it (and add a migration) whenever the
/// key layout or the encoding of stored values changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// What opening must do about the schema key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The data directory matches this build.
    Matches,
    /// The data directory is empty: record the current version.
    Initialise,
}

/// Decides from the stored key (raw bytes, if any) and whether any other data exists.
pub(crate) fn decide(location: &str, stored: Option<&[u8]>, has_data: bool) -> Result<Decision> {
    let Some(bytes) = stored else {
        if has_data {
            return Err(Error::MetadataCorrupted {
                location: location.to_string(),
                detail: "data present but no schema version recorded".to_string(),
            });
        }
        return Ok(Decision::Initialise);
    };
    let raw: [u8; 4] = bytes.try_into().map_err(|_| Error::MetadataCorrupted {
        location: location.to_string(),
        detail: format!("schema version has {} bytes, expected 4", bytes.len()),
    })?;
    let found = u32::from_be_bytes(raw);
    if found == SCHEMA_VERSION {
        Ok(Decision::Matches)
    } else {
        // Older versions have no migration yet; newer ones are unknown to this build.
        Err(Error::SchemaVersionUnsupported {
            location: location.to_string(),
            found,
            supported: SCHEMA_VERSION,
        })
    }
}

/// The raw bytes stored for `version`.
pub(crate) fn encode(version: u32) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

/// Checks the engine's schema version, initialising a fresh engine durably (unless
/// `initialise` is false: a follower leaves that to the writer it follows).
pub(crate) async fn ensure(engine: &dyn Engine, initialise: bool) -> Result<()> {
    let location = engine.location();
    let stored = engine.get(Keyspace::Meta, keys::SCHEMA_VERSION)?;
    let mut has_data = false;
    for space in [Keyspace::Objects, Keyspace::History] {
        let any = engine.scan(space, &KeyRange::prefix(b""), Order::Ascending, 1)?;
        has_data |= !any.is_empty();
    }
    match decide(&location, stored.as_deref(), has_data)? {
        Decision::Matches => Ok(()),
        Decision::Initialise if !initialise => Ok(()),
        Decision::Initialise => {
            let op = Op::Put(keys::SCHEMA_VERSION.to_vec(), encode(SCHEMA_VERSION));
            engine.apply(Keyspace::Meta, vec![op])?;
            engine.flush().await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_should_be_initialised() {
        assert_eq!(decide("/d", None, false).ok(), Some(Decision::Initialise));
    }

    #[test]
    fn the_current_version_should_match() {
        let bytes = encode(SCHEMA_VERSION);
        assert_eq!(
            decide("/d", Some(&bytes), true).ok(),
            Some(Decision::Matches)
        );
    }

    #[test]
    fn a_newer_version_should_name_found_and_supported() {
        let bytes = encode(SCHEMA_VERSION + 1);
        match decide("/d", Some(&bytes), true) {
            Err(Error::SchemaVersionUnsupported {
                found, supported, ..
            }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn data_without_a_version_or_a_garbled_version_should_be_corruption() {
        assert!(matches!(
            decide("/d", None, true),
            Err(Error::MetadataCorrupted { .. })
        ));
        assert!(matches!(
            decide("/d", Some(b"xx"), false),
            Err(Error::MetadataCorrupted { .. })
        ));
    }
}
