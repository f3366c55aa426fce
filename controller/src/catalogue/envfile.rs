//! Env files the way the recipe ecosystem reads them: `.env.sample` with dotenv semantics, and `abra.sh`'s `export NAME=value` lines read as data (never run).
//!
//! # Dotenv semantics (as abra's dotenv reader)
//! - Blank lines and lines starting with `#` are skipped; a leading `export ` is allowed.
//! - `KEY=value`: an unquoted value ends at ` #` (what follows is a comment) and is trimmed;
//!   `"double quoted"` values know `\n`, `\"`, `\\` and `\$`; `'single quoted'` values are
//!   literal.
//! - Unquoted and double-quoted values expand `$NAME` and `${NAME}` from the lines *above*
//!   (so `COMPOSE_FILE="$COMPOSE_FILE:compose.x.yml"` accumulates); an unknown name expands to
//!   the empty string. `${NAME:-default}` is left for compose interpolation to resolve.
//! - A later line of the same key wins.
//! - The comment after a value carries *modifiers*: `SECRET_X_VERSION=v1 # length=128` gives
//!   `length` = `128`. Words without `=` are not modifiers.
//!
//! # Errors
//! A line that is not `KEY=value` or has an unclosed quote is a problem with `file:line:col`;
//! every problem is reported.

use std::collections::BTreeMap;

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value, unquoted and expanded.
    pub value: String,
    /// 1-based line.
    pub line: usize,
    /// `name=value` words of the comment after the value.
    pub modifiers: BTreeMap<String, String>,
}

/// Parses a dotenv file. `file` names it in problems.
///
/// # Errors
/// Every malformed line, as `file:line:col: message`.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, Vec<String>> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw, &entries) {
            Ok(Some(e)) => entries.push(Entry { line, ..e }),
            Ok(None) => {}
            Err((col, message)) => problems.push(format!("{file}:{line}:{col}: {message}")),
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

/// The `export NAME=value` lines of an `abra.sh` (at the start of a line; everything else —
/// functions, commands, indented exports inside functions — is ignored, never run). Values are
/// read like dotenv values, expanding only earlier exports.
pub fn abra_sh_exports(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let Some(rest) = raw.strip_prefix("export ") else {
            continue;
        };
        if let Ok(Some(e)) = parse_line(rest, &entries) {
            entries.push(Entry { line: i + 1, ..e });
        }
    }
    entries
}

/// The entries as a map, a later key winning.
pub fn to_map(entries: &[Entry]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

fn lookup<'a>(entries: &'a [Entry], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

type LineResult = Result<Option<Entry>, (usize, String)>;

fn parse_line(raw: &str, earlier: &[Entry]) -> LineResult {
    let indent = raw.len() - raw.trim_start().len();
    let mut s = raw.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    let mut col = indent + 1;
    if let Some(rest) = s.strip_prefix("export ") {
        col += s.len() - rest.trim_start().len();
        s = rest.trim_start();
    }
    let Some(eq) = s.find('=') else {
        return Err((col, format!("expected KEY=value, got {:?}", s.trim_end())));
    };
    let key = s[..eq].trim_end();
    if key.is_empty() || !key.chars().all(is_key_char) {
        return Err((col, format!("{key:?} is not a variable name")));
    }
    let value_col = col + eq + 1;
    let rest = s[eq + 1..].trim_start();
    let (value, comment) = match rest.chars().next() {
        Some('"') => {
            let (v, after) = double_quoted(&rest[1..])
                .ok_or((value_col, format!("{key}: unclosed double quote")))?;
            (expand(&v, earlier), after)
        }
        Some('\'') => {
            let body = &rest[1..];
            let end = body
                .find('\'')
                .ok_or((value_col, format!("{key}: unclosed single quote")))?;
            (body[..end].to_string(), &body[end + 1..])
        }
        _ => {
            let (v, comment) = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None if rest.starts_with('#') => ("", rest),
                None => (rest, ""),
            };
            (expand(v.trim(), earlier), comment)
        }
    };
    Ok(Some(Entry {
        key: key.to_string(),
        value,
        line: 0,
        modifiers: modifiers(comment),
    }))
}

/// The body of a double-quoted value (after the opening quote): the value and what follows
/// the closing quote; `None` when it is not closed.
fn double_quoted(body: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, '$')) => out.push_str("\\$"),
                Some((_, c)) => out.push(c),
                None => return None,
            },
            c => out.push(c),
        }
    }
    None
}

/// Expands `$NAME` and `${NAME}` from `earlier`; leaves `${NAME:-…}` and other `${…}` forms,
/// and `\$`, for compose interpolation.
pub(crate) fn expand(text: &str, earlier: &[Entry]) -> String {
    let mut out = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = bytes[i];
        if c == b'\\' && bytes.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != b'$' {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let rest = &text[i + 1..];
        if let Some(inner) = rest.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                let name = &inner[..end];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push_str(lookup(earlier, name).unwrap_or(""));
                    i += 2 + end + 1;
                    continue;
                }
            }
            out.push('$');
            i += 1;
            continue;
        }
        let len = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        if len == 0 {
            out.push('$');
            i += 1;
            continue;
        }
        out.push_str(lookup(earlier, &rest[..len]).unwrap_or(""));
        i += 1 + len;
    }
    out
}

/// The `name=value` words of a comment.
fn modifiers(comment: &str) -> BTreeMap<String, String> {
    let text = comment.trim_start().trim_start_matches('#');
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(text: &str) -> BTreeMap<String, String> {
        to_map(&parse(text, ".env.sample").unwrap())
    }

    #[test]
    fn compose_file_accumulates_and_commented_lines_do_not_count() {
        let env = map(
            "TYPE=bonfire\n\nCOMPOSE_FILE=\"compose.yml\"\n# a comment\nCOMPOSE_FILE=\"$COMPOSE_FILE:compose.postgres.yml\"\n#COMPOSE_FILE=\"$COMPOSE_FILE:compose.sonic.yml\"\n  # COMPOSE_FILE=\"$COMPOSE_FILE:compose.mail.yml\"\nCOMPOSE_FILE=\"${COMPOSE_FILE}:compose.s3.yml\"\n",
        );
        assert_eq!(
            env["COMPOSE_FILE"],
            "compose.yml:compose.postgres.yml:compose.s3.yml"
        );
        assert_eq!(env["TYPE"], "bonfire");
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn values_comments_quotes_and_modifiers() {
        let entries = parse(
            "SECRET_KEY_BASE_VERSION=v1 # length=128\nA=plain value  # trailing\nB='single $A #kept'\nC=\"x # inside\" # charset=hex,length=8\nexport D=exported\nE=\nF=a#b\nG=\"tab\\tnewline\\n\\\"q\\\"\"\nH=${NOPE:-default}\nI=$UNKNOWN-x\nJ=\\$A\n",
            "e",
        )
        .unwrap();
        let m = to_map(&entries);
        assert_eq!(m["SECRET_KEY_BASE_VERSION"], "v1");
        assert_eq!(entries[0].modifiers["length"], "128");
        assert_eq!(m["A"], "plain value");
        assert_eq!(m["B"], "single $A #kept");
        assert_eq!(m["C"], "x # inside");
        assert_eq!(entries[3].modifiers["charset"], "hex");
        assert_eq!(entries[3].modifiers["length"], "8");
        assert_eq!(m["D"], "exported");
        assert_eq!(m["E"], "");
        assert_eq!(
            m["F"], "a#b",
            "a # without a space before is part of the value"
        );
        assert_eq!(m["G"], "tabtnewline\n\"q\"");
        assert_eq!(m["H"], "${NOPE:-default}", "left for compose interpolation");
        assert_eq!(m["I"], "-x");
        assert_eq!(m["J"], "$A");
    }

    #[test]
    fn malformed_lines_are_every_one_reported_with_their_place() {
        let err = parse("OK=1\nnot a pair\nX=\"open\n  bad key=1\n", ".env.sample").unwrap_err();
        assert_eq!(
            err,
            [
                ".env.sample:2:1: expected KEY=value, got \"not a pair\"",
                ".env.sample:3:3: X: unclosed double quote",
                ".env.sample:4:3: \"bad key\" is not a variable name",
            ]
        );
    }

    #[test]
    fn abra_sh_exports_are_data_and_the_rest_is_ignored() {
        let text = "export APP_ENTRYPOINT_VERSION=v4\nexport PG_BACKUP_VERSION=\"v6\"\n\nfunction f() {\n  export INSIDE=1\n  rm -rf /\n}\necho $(whoami)\nexport BAD LINE\n";
        let m = to_map(&abra_sh_exports(text));
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m["APP_ENTRYPOINT_VERSION"], "v4");
        assert_eq!(m["PG_BACKUP_VERSION"], "v6");
    }
}
