//! Key layout inside each keyspace (private): objects by kind prefix, history by sequence.

use crd::Kind;

/// Objects keyspace: the store-wide revision counter (big-endian u64).
pub(crate) const REVISION: &[u8] = b"r";
/// History keyspace: the next sequence number (big-endian u64).
pub(crate) const HISTORY_NEXT: &[u8] = b"n";
/// History keyspace: prefix of entries, followed by the big-endian sequence number.
pub(crate) const HISTORY_ENTRIES: &[u8] = b"e/";
/// Meta keyspace: the schema version (big-endian u32).
pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";

/// `v/<key>` in the meta keyspace: small named values.
pub(crate) fn value(key: &str) -> Vec<u8> {
    format!("v/{key}").into_bytes()
}

/// Longest name the store accepts (DNS subdomain length; crd enforces stricter rules).
pub(crate) const MAX_NAME_LEN: usize = 253;

/// `o/<Kind>/` — every object of one kind, and nothing else.
pub(crate) fn object_prefix(kind: Kind) -> Vec<u8> {
    format!("o/{}/", kind.as_str()).into_bytes()
}

/// `o/<Kind>/<name>`.
pub(crate) fn object(kind: Kind, name: &str) -> Vec<u8> {
    let mut key = object_prefix(kind);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The kind and name of an object key (`o/<Kind>/<name>`), or `None` for any other key.
pub(crate) fn parse_object(key: &[u8]) -> Option<(Kind, String)> {
    let rest = key.strip_prefix(b"o/")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (kind, name) = text.split_once('/')?;
    Some((Kind::parse(kind)?, name.to_string()))
}

/// `e/<seq>`.
pub(crate) fn history_entry(seq: u64) -> Vec<u8> {
    let mut key = HISTORY_ENTRIES.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `i/<Kind>/<name>/` — the per-object history index.
pub(crate) fn history_index_prefix(kind: Kind, name: &str) -> Vec<u8> {
    format!("i/{}/{}/", kind.as_str(), name).into_bytes()
}

/// `i/<Kind>/<name>/<seq>`.
pub(crate) fn history_index(kind: Kind, name: &str, seq: u64) -> Vec<u8> {
    let mut key = history_index_prefix(kind, name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The big-endian u64 at the end of a key or value.
pub(crate) fn trailing_u64(bytes: &[u8]) -> Option<u64> {
    let start = bytes.len().checked_sub(8)?;
    let tail: [u8; 8] = bytes.get(start..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Why a name cannot be a key, if it cannot.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("names must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("names must be at most 253 bytes")
    } else if name.chars().any(|c| c == '/' || c.is_control()) {
        Some("names must not contain '/' or control characters")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_of_one_kind_should_share_a_prefix_no_other_kind_has() {
        let run = object(Kind::Run, "a");
        assert!(run.starts_with(&object_prefix(Kind::Run)));
        for other in Kind::ALL.into_iter().filter(|k| *k != Kind::Run) {
            assert!(!run.starts_with(&object_prefix(other)));
        }
    }

    #[test]
    fn history_keys_should_sort_by_sequence() {
        assert!(history_entry(2) < history_entry(10));
        assert!(history_entry(255) < history_entry(256));
        assert!(history_index(Kind::Run, "a", 9) < history_index(Kind::Run, "a", 300));
        assert_eq!(trailing_u64(&history_entry(77)), Some(77));
        assert_eq!(trailing_u64(b"short"), None);
    }

    #[test]
    fn names_with_slashes_or_nothing_should_be_rejected() {
        assert!(name_problem("").is_some());
        assert!(name_problem("a/b").is_some());
        assert!(name_problem("a\nb").is_some());
        assert!(name_problem(&"x".repeat(254)).is_some());
        assert!(name_problem("web-1").is_none());
    }
}
