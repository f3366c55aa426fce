//! YAML → a located value tree: every node and key keeps its file, line and column.
//!
//! docker/cli parses compose files with go-yaml v3 into untyped maps, then validates and converts
//! them. We do the same so that every later error can point at the exact place: serde-saphyr
//! parses into [`Node`]s via `Spanned`, with options chosen to read scalars as go-yaml v3 does:
//! YAML 1.1 octal (`0555` = 365), only `true`/`false` as booleans (`yes` stays a string),
//! duplicate keys rejected, `<<` merge keys and anchors expanded. Parsing has input budgets.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Largest compose file accepted, in bytes.
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting accepted.
pub(crate) const MAX_DEPTH: usize = 32;

/// Where a node came from: index into the list of compose files, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    pub file: usize,
    pub line: u64,
    pub col: u64,
}

/// A mapping key with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub at: Loc,
}

/// A located YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub v: V,
    pub at: Loc,
}

/// YAML value kinds, as go-yaml v3 produces them for `interface{}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub(crate) fn new(v: V, at: Loc) -> Self {
        Self { v, at }
    }

    /// Value of `key` in a mapping node.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.v {
            V::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// Mutable value of `key` in a mapping node.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.v {
            V::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.name == key)
                .map(|(_, n)| n),
            _ => None,
        }
    }

    /// Sets `key` (replacing an existing entry in place, or appending).
    pub(crate) fn set(&mut self, key: Key, value: Node) {
        if let V::Map(entries) = &mut self.v {
            if let Some(slot) = entries.iter_mut().find(|(k, _)| k.name == key.name) {
                slot.1 = value;
            } else {
                entries.push((key, value));
            }
        }
    }

    /// Removes `key` from a mapping node.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Node> {
        if let V::Map(entries) = &mut self.v {
            if let Some(i) = entries.iter().position(|(k, _)| k.name == key) {
                return Some(entries.remove(i).1);
            }
        }
        None
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.v, V::Null)
    }

    /// Scalars rendered as Go's `fmt.Sprint` renders the go-yaml value (`None` for collections
    /// and null).
    pub(crate) fn scalar_string(&self) -> Option<String> {
        match &self.v {
            V::Str(s) => Some(s.clone()),
            V::Bool(b) => Some(b.to_string()),
            V::Int(i) => Some(i.to_string()),
            V::UInt(u) => Some(u.to_string()),
            V::Float(f) => Some(go_float(*f)),
            V::Null | V::Seq(_) | V::Map(_) => None,
        }
    }

    /// Kind name for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self.v {
            V::Null => "null",
            V::Bool(_) => "boolean",
            V::Int(_) | V::UInt(_) => "integer",
            V::Float(_) => "number",
            V::Str(_) => "string",
            V::Seq(_) => "array",
            V::Map(_) => "mapping",
        }
    }
}

/// Formats a float as Go's `fmt.Sprint(float64)` does (`%g` with the shortest representation,
/// exponent form when the decimal exponent is < -4 or >= 6, as Go's shortest `%g` does).
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}` (e.g. "1.5e3").
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    // Plain decimal notation.
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}", digits, "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{body}")
}

/// Why a YAML document could not be read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub line: u64,
    pub col: u64,
    pub message: String,
}

/// Parses one compose file into a located tree. The top level must be a mapping.
pub(crate) fn parse(text: &str, file: usize) -> Result<Node, ParseError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError {
            line: 1,
            col: 1,
            message: format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES}-byte limit",
                text.len()
            ),
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
            line: 1,
            col: 1,
            message: "top-level object must be a mapping (the file is empty)".into(),
        });
    }
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ParseError {
            line,
            col,
            message: first_line(&e.to_string()),
        }
    })?;
    let node = lower(raw, file).map_err(|(at, message)| ParseError {
        line: at.line,
        col: at.col,
        message,
    })?;
    match node.v {
        V::Map(_) => Ok(node),
        _ => Err(ParseError {
            line: node.at.line,
            col: node.at.col,
            message: "top-level object must be a mapping".into(),
        }),
    }
}

/// The parser's message without the position (we print our own) or library advice.
fn first_line(s: &str) -> String {
    let mut line = s.lines().next().unwrap_or_default().trim().to_string();
    if let Some(i) = line.rfind(" at line ") {
        if line[i..].contains(", column ") {
            line.truncate(i);
        }
    }
    if let Some(i) = line.find(", set DuplicateKeyPolicy") {
        line.truncate(i);
    }
    // A budget error on an alias breaks its "(used at …)" over lines; the position is ours.
    if let Some(cut) = line.strip_suffix(" (used") {
        line = cut.to_string();
    }
    if line.starts_with("recursive references") {
        line = "recursive alias: an anchor refers to itself".into();
    }
    line
}

/// The raw tree serde-saphyr fills; [`lower`] turns it into [`Node`]s.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn loc_of<T>(s: &Spanned<T>, file: usize) -> Loc {
    // Prefer the definition site: for aliases and merged values it is the text that holds
    // the value.
    let d = s.defined;
    let r = s.referenced;
    let (line, col) = if d.line() > 0 {
        (d.line(), d.column())
    } else {
        (r.line(), r.column())
    };
    Loc { file, line, col }
}

fn lower(raw: Spanned<Raw>, file: usize) -> Result<Node, (Loc, String)> {
    let at = loc_of(&raw, file);
    let v = match raw.value {
        Raw::Null => V::Null,
        Raw::Bool(b) => V::Bool(b),
        Raw::Int(i) => V::Int(i),
        Raw::UInt(u) => V::UInt(u),
        Raw::Float(f) => V::Float(f),
        Raw::Str(s) => V::Str(s),
        Raw::Seq(items) => V::Seq(
            items
                .into_iter()
                .map(|i| lower(i, file))
                .collect::<Result<_, _>>()?,
        ),
        Raw::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let kat = loc_of(&k, file);
                let name = match k.value {
                    Raw::Str(s) => s,
                    Raw::Null => return Err((kat, "non-string key: null".into())),
                    Raw::Bool(b) => return Err((kat, format!("non-string key: {b}"))),
                    Raw::Int(i) => return Err((kat, format!("non-string key: {i}"))),
                    Raw::UInt(u) => return Err((kat, format!("non-string key: {u}"))),
                    Raw::Float(f) => return Err((kat, format!("non-string key: {}", go_float(f)))),
                    Raw::Seq(_) | Raw::Map(_) => {
                        return Err((kat, "non-string key: a collection".into()))
                    }
                };
                out.push((Key { name, at: kat }, lower(v, file)?));
            }
            V::Map(out)
        }
    };
    Ok(Node { v, at })
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Raw::Int(i)),
            Err(_) => match u64::try_from(v) {
                Ok(u) => Ok(Raw::UInt(u)),
                Err(_) => Ok(Raw::Float(v as f64)),
            },
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Raw::Int(i)),
            Err(_) => Ok(Raw::UInt(v)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Ok(Raw::Float(v as f64)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Raw::Str(s.to_string())),
            Err(_) => Err(E::custom("binary values are not supported")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
    fn nodes_and_keys_carry_lines_and_columns() {
        let n = parse("services:\n  web:\n    image: busybox\n", 3).unwrap();
        let services = n.get("services").unwrap();
        let web = services.get("web").unwrap();
        let image = web.get("image").unwrap();
        assert_eq!((image.at.file, image.at.line, image.at.col), (3, 3, 12));
        if let V::Map(entries) = &web.v {
            assert_eq!((entries[0].0.at.line, entries[0].0.at.col), (3, 5));
        } else {
            panic!("web is not a map");
        }
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
        assert_eq!((e.line, e.col), (2, 1));
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

    #[test]
    fn floats_format_like_go() {
        assert_eq!(go_float(1000.0), "1000");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(123456789.0), "1.23456789e+08");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(-2.5), "-2.5");
    }
}
