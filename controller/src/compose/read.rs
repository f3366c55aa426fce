//! Compose's reading of YAML: go-yaml v3's scalar rules and input budgets over the shared located tree ([`crate::yaml`]).
//!
//! docker/cli parses compose files with go-yaml v3 into untyped maps, then validates and converts
//! them. We do the same so that every later error can point at the exact place, with options
//! chosen to read scalars as go-yaml v3 does: YAML 1.1 octal (`0555` = 365), only
//! `true`/`false` as booleans (`yes` stays a string), duplicate keys rejected, `<<` merge keys and
//! anchors expanded, only strings as keys.

use crate::yaml::{self, Keys, Loc, Node, ParseError};

/// Largest compose file accepted, in bytes.
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting accepted.
pub(crate) const MAX_DEPTH: usize = 32;

/// Parses one compose file into a located tree. The top level must be a mapping.
pub(crate) fn parse(text: &str, file: usize) -> Result<Node, ParseError> {
    if let Some(message) = yaml::too_large(text, MAX_FILE_BYTES) {
        return Err(ParseError {
            at: Loc::start(file),
            message,
        });
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 500_000;
    budget.max_aliases = 10_000;
    budget.max_anchors = 10_000;
    // 64 levels overflowed a 2 MiB thread stack (tokio's workers, debug build) before the
    // budget refused them: found by the malformed-input table (src/malformed.rs). Compose
    // files nest about 8 deep; 32 is what the state file and the catalogue allow.
    budget.max_depth = MAX_DEPTH;
    budget.max_documents = 1;
    // An alias bomb is refused when its expansion passes this many nodes; 250,000 took 8 s
    // of a debug build to reach (found by the malformed-input table). The largest corpus file
    // (10 KB) has about a thousand nodes.
    budget.max_nodes = 50_000;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES * 4;
    budget.max_merge_keys = 10_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    options.merge_keys = serde_saphyr::options::MergeKeyPolicy::Merge;
    options.legacy_octal_numbers = true;
    options.strict_booleans = true;
    options.with_snippet = false;
    options.crop_radius = 0;
    // An empty document (or one holding only comments) is null, which docker rejects too.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Err(ParseError {
            at: Loc::start(file),
            message: "top-level object must be a mapping (the file is empty)".into(),
        });
    }
    let node = yaml::parse(text, options, file, Keys::Strings).map_err(|mut e| {
        // An alias's budget error ends with "(used at line L, column C)": the position compose
        // prints (docker's `line L`), so not said twice. The state file keeps it.
        if let Some(i) = e.message.rfind(" (used at line ") {
            e.message.truncate(i);
        }
        e
    })?;
    if node.is_map() {
        Ok(node)
    } else {
        Err(ParseError {
            at: node.at,
            message: "top-level object must be a mapping".into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::yaml::V;

    #[test]
    fn nesting_at_the_depth_budget_parses_on_a_2_mib_stack_and_deeper_is_refused() {
        let doc = |depth: usize| {
            format!(
                "services:\n  web:\n    labels: {}{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        for (depth, accepted) in [(MAX_DEPTH - 3, true), (MAX_DEPTH * 8, false)] {
            let text = doc(depth);
            let parsed = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || parse(&text, 0).map(|_| ()))
                .unwrap()
                .join()
                .expect("parsing does not overflow the stack");
            assert_eq!(parsed.is_ok(), accepted, "depth {depth}: {parsed:?}");
        }
    }

    #[test]
    fn scalars_are_read_as_go_yaml_v3_reads_them() {
        let n = parse(
            "a: 0555\nb: yes\nc: 1.50\nd: true\ne: \"0555\"\nf: ~\ng: 12345678901234567890\n",
            0,
        )
        .unwrap();
        assert_eq!(n.get("a").unwrap().v, V::Int(365));
        assert_eq!(n.get("b").unwrap().v, V::Str("yes".into()));
        assert_eq!(n.get("c").unwrap().scalar_string().unwrap(), "1.5");
        assert_eq!(n.get("d").unwrap().v, V::Bool(true));
        assert_eq!(n.get("e").unwrap().v, V::Str("0555".into()));
        assert!(n.get("f").unwrap().is_null());
        assert_eq!(n.get("g").unwrap().v, V::UInt(12345678901234567890));
    }

    #[test]
    fn merge_keys_and_anchors_are_expanded() {
        let n = parse(
            "x-a: &a\n  logging: {driver: json-file}\n  b: 1\nservices:\n  s:\n    <<: *a\n    b: 2\n",
            0,
        )
        .unwrap();
        let s = n.get("services").unwrap().get("s").unwrap();
        assert_eq!(s.get("b").unwrap().v, V::Int(2));
        assert_eq!(
            s.get("logging").unwrap().get("driver").unwrap().v,
            V::Str("json-file".into())
        );
    }

    #[test]
    fn duplicate_keys_and_non_mapping_documents_are_errors() {
        let e = parse("a: 1\na: 2\n", 0).unwrap_err();
        assert_eq!((e.at.line, e.at.col), (2, 1));
        assert_eq!(e.message, "duplicate mapping key: a");
        assert!(parse("- a\n", 0).is_err());
        assert!(parse("1: a\n", 0)
            .unwrap_err()
            .message
            .contains("non-string key"));
    }

    #[test]
    fn empty_documents_are_rejected_as_docker_rejects_them() {
        let e = parse("# nothing\n", 0).unwrap_err();
        assert!(e.message.starts_with("top-level object must be a mapping"));
    }
}
