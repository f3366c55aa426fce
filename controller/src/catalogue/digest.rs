//! The one encoding render inputs are digested with: SHA-256 over NUL-terminated text fields,
//! env entries and length-prefixed files, so equal inputs give an equal digest wherever they
//! are hashed (a recipe tree, a git render, a snapshot and its render).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// A digest being built; [`InputDigest::hex`] ends it.
#[derive(Debug, Clone, Default)]
pub(crate) struct InputDigest(Sha256);

impl InputDigest {
    /// An empty digest.
    pub(crate) fn new() -> InputDigest {
        InputDigest::default()
    }

    /// Adds each of `fields`, NUL-terminated.
    pub(crate) fn fields<'a>(mut self, fields: impl IntoIterator<Item = &'a str>) -> InputDigest {
        for field in fields {
            self.0.update(field.as_bytes());
            self.0.update([0]);
        }
        self
    }

    /// Adds each env entry in key order: its key and its value, each NUL-terminated.
    pub(crate) fn env(self, env: &BTreeMap<String, String>) -> InputDigest {
        env.iter()
            .fold(self, |d, (k, v)| d.fields([k.as_str(), v.as_str()]))
    }

    /// Adds a file: its path NUL-terminated, its length (8 bytes, big-endian), its bytes.
    pub(crate) fn file(mut self, path: &str, bytes: &[u8]) -> InputDigest {
        self = self.fields([path]);
        self.0
            .update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// The SHA-256, hex.
    pub(crate) fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_env_and_files_are_hashed_as_nul_terminated_and_length_prefixed_bytes() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let built = InputDigest::new()
            .fields(["x", "y"])
            .env(&env)
            .file("f", b"ab")
            .hex();
        let mut h = Sha256::new();
        h.update(b"x\0y\0A\x001\0f\0");
        h.update(2u64.to_be_bytes());
        h.update(b"ab");
        assert_eq!(built, hex::encode(h.finalize()));
    }
}
