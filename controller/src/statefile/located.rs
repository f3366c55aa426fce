//! A located view of one YAML document: every key and value with its line and column, and lookups by field path.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// 1-based line and column (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

/// A located YAML value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub at: Pos,
    /// The value.
    pub value: Value,
}

/// YAML values; scalars keep only what lookups need.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, as text (`None` for null).
    Scalar(Option<String>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping: (key text, key position, value).
    Map(Vec<(String, Pos, Node)>),
}

impl Node {
    /// The value of `key` in a mapping, with the key's position.
    pub fn get(&self, key: &str) -> Option<(Pos, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, at, n)| (*at, n)),
            _ => None,
        }
    }

    /// A string scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => s.as_deref(),
            _ => None,
        }
    }

    /// The position of field `path` (as [`crd::FieldError`] writes it: `spec.env["KEY"]`,
    /// `spec.health.http.expectedCodes[1]`): the value when it exists, else the deepest part of
    /// the path that does (a missing field points at its parent).
    pub fn locate(&self, path: &str) -> Pos {
        let mut node = self;
        let mut at = self.at;
        for segment in parse_path(path) {
            let next = match (&segment, &node.value) {
                (Segment::Key(k), Value::Map(_)) => node.get(k).map(|(_, n)| n),
                (Segment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    at = n.at;
                }
                None => break,
            }
        }
        at
    }

    /// The field path of the key or value at `pos` (or, when none starts there exactly, the
    /// last one starting before it): how a parse error's position becomes a path.
    pub fn path_at(&self, pos: Pos) -> String {
        let mut best: (Pos, String) = (self.at, String::new());
        self.walk(String::new(), &mut |at, path| {
            if at <= pos && at >= best.0 {
                best = (at, path.to_string());
            }
        });
        best.1
    }

    fn walk(&self, path: String, f: &mut impl FnMut(Pos, &str)) {
        f(self.at, &path);
        match &self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.walk(format!("{path}[{i}]"), f);
                }
            }
            Value::Map(entries) => {
                for (k, kat, v) in entries {
                    let child = if path.is_empty() {
                        k.clone()
                    } else if is_plain(k) {
                        format!("{path}.{k}")
                    } else {
                        format!("{path}[{k:?}]")
                    };
                    f(*kat, &child);
                    v.walk(child, f);
                }
            }
        }
    }
}

/// The path without its last segment (`a.b[2]` → `a.b`, `a["k"]` → `a`, `a` → ``).
pub fn parent(path: &str) -> &str {
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return &path[..i];
        }
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

fn is_plain(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2]["k.x"].c` into segments.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Segment>| {
        if !word.is_empty() {
            out.push(Segment::Key(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => flush(&mut word, &mut out),
            '[' => {
                flush(&mut word, &mut out);
                if chars.peek() == Some(&'"') {
                    chars.next();
                    let mut key = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(e) = chars.next() {
                                    key.push(e);
                                }
                            }
                            '"' => break,
                            c => key.push(c),
                        }
                    }
                    // The closing `]`.
                    chars.next();
                    out.push(Segment::Key(key));
                } else {
                    let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                    match digits.parse() {
                        Ok(i) => out.push(Segment::Index(i)),
                        Err(_) => out.push(Segment::Key(digits)),
                    }
                }
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Why a document could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where.
    pub at: Pos,
    /// The parser's message (first line).
    pub message: String,
}

/// Parses one YAML document into a located tree.
///
/// # Errors
/// [`ParseError`] with the parser's position and message.
pub fn parse(text: &str, options: serde_saphyr::Options) -> Result<Node, ParseError> {
    let raw: Spanned<Raw> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ParseError {
            at: error_pos(&e),
            message: error_message(&e),
        })?;
    Ok(lower(raw))
}

/// The position of a serde-saphyr error.
pub fn error_pos(e: &serde_saphyr::Error) -> Pos {
    e.location()
        .map(|l| Pos {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or_default()
}

/// The first line of a serde-saphyr error, without its own position prefix.
pub fn error_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let mut message = strip_position(first);
    // A trailing ` at line N, column M` repeats what `file:line:col` already says.
    if let Some(i) = message.rfind(" at line ") {
        let tail = &message[i + " at line ".len()..];
        if tail.contains(", column ")
            && tail
                .chars()
                .all(|c| c.is_ascii_digit() || ", column".contains(c))
        {
            message = &message[..i];
        }
    }
    // Advice meant for programmers using the parser, not for operators.
    let message = message.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable");
    message.to_string()
}

/// Drops a leading `line N column M: ` (serde-saphyr's own prefix; we print `file:line:col`).
fn strip_position(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("line ") else {
        return s;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix(" column ") else {
        return s;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.strip_prefix(':').map(str::trim_start).unwrap_or(s)
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    // Prefer the definition site: for aliases it is the text that holds the value.
    let (d, r) = (s.defined, s.referenced);
    let l = if d.line() > 0 { d } else { r };
    Pos {
        line: l.line(),
        column: l.column(),
    }
}

/// The raw tree serde-saphyr fills; [`lower`] turns it into [`Node`]s.
enum Raw {
    Scalar(Option<String>),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn lower(raw: Spanned<Raw>) -> Node {
    let at = pos_of(&raw);
    let value = match raw.value {
        Raw::Scalar(s) => Value::Scalar(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(lower).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let kat = pos_of(&k);
                    let name = match k.value {
                        Raw::Scalar(Some(s)) => s,
                        Raw::Scalar(None) => "null".into(),
                        Raw::Seq(_) | Raw::Map(_) => "<collection>".into(),
                    };
                    (name, kat, lower(v))
                })
                .collect(),
        ),
    };
    Node { at, value }
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
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Scalar(Some(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(None))
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
        while let Some(entry) = map.next_entry::<Spanned<Raw>, Spanned<Raw>>()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree(text: &str) -> Node {
        parse(text, serde_saphyr::Options::default()).unwrap()
    }

    const DOC: &str = "spec:\n  env:\n    A_B: x\n  codes: [200, 700]\n  \"odd.key\": 1\n";

    #[test]
    fn field_paths_should_locate_values_and_fall_back_to_their_parent() {
        let t = tree(DOC);
        let at = |p: &str| {
            let pos = t.locate(p);
            (pos.line, pos.column)
        };
        assert_eq!(at("spec.env[\"A_B\"]"), (3, 10));
        assert_eq!(at("spec.env.A_B"), (3, 10));
        assert_eq!(at("spec.codes[1]"), (4, 16));
        assert_eq!(at("spec[\"odd.key\"]"), (5, 14));
        assert_eq!(at("spec.missing.deeper"), (2, 3), "the parent mapping");
    }

    #[test]
    fn a_position_should_map_back_to_its_field_path() {
        let t = tree(DOC);
        assert_eq!(t.path_at(Pos { line: 3, column: 5 }), "spec.env.A_B");
        assert_eq!(
            t.path_at(Pos {
                line: 4,
                column: 16
            }),
            "spec.codes[1]"
        );
        assert_eq!(t.path_at(Pos { line: 5, column: 3 }), "spec[\"odd.key\"]");
    }

    #[test]
    fn the_parsers_own_position_prefix_should_be_dropped() {
        assert_eq!(
            strip_position("line 6 column 3: unknown field `x`"),
            "unknown field `x`"
        );
        assert_eq!(strip_position("unknown field"), "unknown field");
    }
}
