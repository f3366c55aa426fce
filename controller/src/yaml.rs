//! Located YAML: one value tree for compose files and the state file, every node and key with its file, line and column, and field paths both ways.
//!
//! Each reader chooses its own serde-saphyr [`Options`](serde_saphyr::Options) (compose reads
//! scalars as go-yaml v3 does, the state file as YAML 1.2) and its own budgets; the tree, the
//! positions, the error messages and the field-path lookups are the same for both.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Where a node came from: index into the reader's list of files, 1-based line and column
/// (0 when unknown). Orders by file, then line, then column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    /// Index of the file among those read together (0 for a single file).
    pub file: usize,
    /// Line.
    pub line: u64,
    /// Column.
    pub col: u64,
}

impl Loc {
    /// Line 1, column 1 of file number `file`: where a problem with the whole file is said.
    pub fn start(file: usize) -> Loc {
        Loc {
            file,
            line: 1,
            col: 1,
        }
    }
}

/// What is said of a file longer than `max` bytes; `None` when it is not.
pub fn too_large(text: &str, max: usize) -> Option<String> {
    (text.len() > max).then(|| {
        format!(
            "file is {} bytes, more than the {max}-byte limit",
            text.len()
        )
    })
}

/// A mapping key with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key starts.
    pub at: Loc,
}

/// A located YAML value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub v: V,
    /// Where the value starts.
    pub at: Loc,
}

/// YAML value kinds, as go-yaml v3 produces them for `interface{}`.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// `~`, `null` or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A larger integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

/// What a mapping key may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Only strings: another scalar or a collection as a key is a parse error (compose, as
    /// docker/cli refuses it).
    Strings,
    /// Any scalar, kept as its text (the state file: serde reports the bad field itself).
    Scalars,
}

/// Why a document could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where (line and column 0 when the parser did not say).
    pub at: Loc,
    /// The parser's message, first line, without its own position.
    pub message: String,
}

impl Node {
    /// A node at `at`.
    pub fn new(v: V, at: Loc) -> Self {
        Self { v, at }
    }

    /// Value of `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, n)| n)
    }

    /// The entry of `key` in a mapping node: the key (with its position) and its value.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.v {
            V::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, n)| (k, n)),
            _ => None,
        }
    }

    /// Mutable value of `key` in a mapping node.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.v {
            V::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.name == key)
                .map(|(_, n)| n),
            _ => None,
        }
    }

    /// Sets `key` (replacing an existing entry in place, or appending).
    pub fn set(&mut self, key: Key, value: Node) {
        if let V::Map(entries) = &mut self.v {
            if let Some(slot) = entries.iter_mut().find(|(k, _)| k.name == key.name) {
                slot.1 = value;
            } else {
                entries.push((key, value));
            }
        }
    }

    /// Removes `key` from a mapping node.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        if let V::Map(entries) = &mut self.v {
            if let Some(i) = entries.iter().position(|(k, _)| k.name == key) {
                return Some(entries.remove(i).1);
            }
        }
        None
    }

    /// Whether the node is null.
    pub fn is_null(&self) -> bool {
        matches!(self.v, V::Null)
    }

    /// Whether the node is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.v, V::Map(_))
    }

    /// Scalars rendered as Go's `fmt.Sprint` renders the go-yaml value (`None` for collections
    /// and null).
    pub fn scalar_string(&self) -> Option<String> {
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
    pub fn kind(&self) -> &'static str {
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

    /// The position of field `path` (as [`crd::FieldError`] writes it: `spec.env["KEY"]`,
    /// `spec.health.http.expectedCodes[1]`): the value when it exists, else the deepest part of
    /// the path that does (a missing field points at its parent).
    pub fn locate(&self, path: &str) -> Loc {
        let mut node = self;
        for segment in parse_path(path) {
            let next = match (&segment, &node.v) {
                (Segment::Key(k), V::Map(_)) => node.get(k),
                (Segment::Index(i), V::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.at
    }

    /// The field path of the key or value at `at` (or, when none starts there exactly, the
    /// last one starting before it): how a parse error's position becomes a path.
    pub fn path_at(&self, at: Loc) -> String {
        let mut best: (Loc, String) = (self.at, String::new());
        self.walk(String::new(), &mut |here, path| {
            if here <= at && here >= best.0 {
                best = (here, path.to_string());
            }
        });
        best.1
    }

    fn walk(&self, path: String, f: &mut impl FnMut(Loc, &str)) {
        f(self.at, &path);
        match &self.v {
            V::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.walk(format!("{path}[{i}]"), f);
                }
            }
            V::Map(entries) => {
                for (k, v) in entries {
                    let child = if path.is_empty() {
                        k.name.clone()
                    } else if is_plain(&k.name) {
                        format!("{path}.{}", k.name)
                    } else {
                        format!("{path}[{:?}]", k.name)
                    };
                    f(k.at, &child);
                    v.walk(child, f);
                }
            }
            _ => {}
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

/// Formats a float as Go's `fmt.Sprint(float64)` does (`%g` with the shortest representation,
/// exponent form when the decimal exponent is < -4 or >= 6, as Go's shortest `%g` does).
pub fn go_float(f: f64) -> String {
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

/// How much of the parser's input budget a small hand-written file (a state file, a
/// `recipe.yml`) may use; see [`strict_options`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Parser events.
    pub events: usize,
    /// Aliases, and as many anchors.
    pub aliases: usize,
    /// Nodes, aliases expanded.
    pub nodes: usize,
    /// Bytes of all scalars together.
    pub scalar_bytes: usize,
}

/// Parser settings for small hand-written files: one document at a time, at most 32 levels
/// deep, the budgets in `limits`, duplicate keys rejected, no source snippet in errors (we
/// print `file:line:col`).
pub fn strict_options(limits: Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = limits.events;
    budget.max_aliases = limits.aliases;
    budget.max_anchors = limits.aliases;
    budget.max_depth = 32;
    budget.max_documents = 1;
    budget.max_nodes = limits.nodes;
    budget.max_total_scalar_bytes = limits.scalar_bytes;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    options.with_snippet = false;
    options
}

/// Parses one YAML document of file number `file` into a located tree.
///
/// # Errors
/// [`ParseError`] with the parser's position and message; with [`Keys::Strings`], also a key
/// that is not a string (`non-string key: 1`).
pub fn parse(
    text: &str,
    options: serde_saphyr::Options,
    file: usize,
    keys: Keys,
) -> Result<Node, ParseError> {
    let raw: Spanned<Raw> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ParseError {
            at: error_loc(&e, file),
            message: error_message(&e),
        })?;
    lower(raw, file, keys).map_err(|(at, message)| ParseError { at, message })
}

/// The position of a serde-saphyr error in file number `file`.
pub fn error_loc(e: &serde_saphyr::Error, file: usize) -> Loc {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    Loc { file, line, col }
}

/// The first line of a serde-saphyr error, without the position (we print `file:line:col`)
/// or advice meant for programmers using the parser.
pub fn error_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let mut message = strip_position(first).to_string();
    // A trailing ` at line N, column M` repeats what `file:line:col` already says.
    if let Some(i) = message.rfind(" at line ") {
        let tail = &message[i + " at line ".len()..];
        if tail.contains(", column ")
            && tail
                .chars()
                .all(|c| c.is_ascii_digit() || ", column".contains(c))
        {
            message.truncate(i);
        }
    }
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(i);
    }
    // A budget error on an alias may break its "(used at …)" over lines: keep whole lines.
    if let Some(cut) = message.strip_suffix(" (used") {
        message = cut.to_string();
    }
    if message.starts_with("recursive references") {
        message = "recursive alias: an anchor refers to itself".into();
    }
    message
}

/// Drops a leading `line N column M: ` (serde-saphyr's own prefix).
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
    let (d, r) = (s.defined, s.referenced);
    let l = if d.line() > 0 { d } else { r };
    Loc {
        file,
        line: l.line(),
        col: l.column(),
    }
}

fn lower(raw: Spanned<Raw>, file: usize, keys: Keys) -> Result<Node, (Loc, String)> {
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
                .map(|i| lower(i, file, keys))
                .collect::<Result<_, _>>()?,
        ),
        Raw::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let kat = loc_of(&k, file);
                let name = key_name(k.value, keys).map_err(|m| (kat, m))?;
                out.push((Key { name, at: kat }, lower(v, file, keys)?));
            }
            V::Map(out)
        }
    };
    Ok(Node { v, at })
}

/// A key's text; with [`Keys::Strings`], an error for anything but a string.
fn key_name(raw: Raw, keys: Keys) -> Result<String, String> {
    let text = match raw {
        Raw::Str(s) => return Ok(s),
        Raw::Null => "null".to_string(),
        Raw::Bool(b) => b.to_string(),
        Raw::Int(i) => i.to_string(),
        Raw::UInt(u) => u.to_string(),
        Raw::Float(f) => go_float(f),
        Raw::Seq(_) | Raw::Map(_) => match keys {
            Keys::Strings => "a collection".to_string(),
            Keys::Scalars => "<collection>".to_string(),
        },
    };
    match keys {
        Keys::Strings => Err(format!("non-string key: {text}")),
        Keys::Scalars => Ok(text),
    }
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
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree(text: &str) -> Node {
        parse(text, serde_saphyr::Options::default(), 0, Keys::Scalars).unwrap()
    }

    fn at(line: u64, col: u64) -> Loc {
        Loc { file: 0, line, col }
    }

    const DOC: &str = "spec:\n  env:\n    A_B: x\n  codes: [200, 700]\n  \"odd.key\": 1\n";

    #[test]
    fn field_paths_should_locate_values_and_fall_back_to_their_parent() {
        let t = tree(DOC);
        let at = |p: &str| {
            let pos = t.locate(p);
            (pos.line, pos.col)
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
        assert_eq!(t.path_at(at(3, 5)), "spec.env.A_B");
        assert_eq!(t.path_at(at(4, 16)), "spec.codes[1]");
        assert_eq!(t.path_at(at(5, 3)), "spec[\"odd.key\"]");
    }

    #[test]
    fn the_parsers_own_position_prefix_should_be_dropped() {
        assert_eq!(
            strip_position("line 6 column 3: unknown field `x`"),
            "unknown field `x`"
        );
        assert_eq!(strip_position("unknown field"), "unknown field");
    }

    #[test]
    fn nodes_and_keys_carry_their_file_lines_and_columns() {
        let n = parse(
            "services:\n  web:\n    image: busybox\n",
            serde_saphyr::Options::default(),
            3,
            Keys::Strings,
        )
        .unwrap();
        let web = n.get("services").unwrap().get("web").unwrap();
        let image = web.get("image").unwrap();
        assert_eq!((image.at.file, image.at.line, image.at.col), (3, 3, 12));
        let (key, _) = web.entry("image").unwrap();
        assert_eq!((key.at.line, key.at.col), (3, 5));
    }

    #[test]
    fn keys_should_be_strings_only_when_the_reader_asks() {
        let strict = parse("1: a\n", serde_saphyr::Options::default(), 0, Keys::Strings);
        assert_eq!(strict.unwrap_err().message, "non-string key: 1");
        assert_eq!(tree("1: a\n").get("1").unwrap().v, V::Str("a".into()));
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
