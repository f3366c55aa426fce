//! Test-only helpers of the bad-input fuzz targets: case counts, a per-case deadline, and text mutations of real files.
//!
//! The fuzz targets are proptest properties (no nightly toolchain, so no cargo-fuzz). A short
//! run is part of the normal suite; `scripts/fuzz.sh` runs them long with `PROPTEST_CASES` set.

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The per-case deadline: `HEARTH_FUZZ_CASE_LIMIT_MS` when set, else 5 s (a case takes
/// milliseconds; the bound is loose so a loaded CI machine does not fail it).
pub(crate) fn case_limit() -> Duration {
    Duration::from_millis(
        std::env::var("HEARTH_FUZZ_CASE_LIMIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5_000),
    )
}

/// How one case ended.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// It returned in time.
    Returned(T),
    /// It panicked (the message is on stderr).
    Panicked,
    /// It did not return within the deadline (its thread is left running).
    Hung,
}

/// Runs `f` on its own thread under [`case_limit`]: a hang becomes [`Outcome::Hung`] instead of
/// a stuck test, a panic becomes [`Outcome::Panicked`].
pub(crate) fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Outcome<T> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return Outcome::Panicked;
    }
    match rx.recv_timeout(case_limit()) {
        Ok(v) => Outcome::Returned(v),
        Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Panicked,
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::Hung,
    }
}

/// One edit of a text file, its positions taken modulo the file's size.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Delete a line.
    DeleteLine(usize),
    /// Duplicate a line (duplicate keys, duplicate list items).
    DuplicateLine(usize),
    /// Swap two lines.
    SwapLines(usize, usize),
    /// Indent a line by two more spaces.
    Indent(usize),
    /// Remove up to two leading spaces of a line.
    Dedent(usize),
    /// Replace a line's leading spaces by a tab.
    Tab(usize),
    /// Replace the value after a line's first `: ` (or append a line) with a scalar.
    Scalar(usize, String),
    /// Put an anchor `&aN` on a line's value.
    Anchor(usize, u8),
    /// Replace a line's value with the alias `*aN`, or insert `<<: *aN` at its indentation.
    Alias(usize, u8, bool),
    /// Cut the text at a byte (on a character boundary).
    Truncate(usize),
    /// Overwrite one byte with an ASCII byte.
    Byte(usize, u8),
}

/// Scalars that YAML readers and compose/state-file converters find awkward.
const SCALARS: &[&str] = &[
    "",
    "~",
    "null",
    "true",
    "yes",
    "0",
    "-1",
    "0555",
    "0x1F",
    "1e400",
    ".inf",
    "-.nan",
    "99999999999999999999999",
    "1.5",
    "2001-12-14",
    "'unterminated",
    "\"unterminated",
    "[",
    "{a: [1, {b: }]}",
    "[1, 2, [3]]",
    "{}",
    "[]",
    "- a",
    "? k",
    "|",
    ">-",
    "!!binary AAAA",
    "!!str 1",
    "!custom x",
    "&",
    "*",
    "*nope",
    "${X:?boom}",
    "${",
    "$${X}",
    "${X:-${Y}}",
    "10000000000h",
    "1x",
    "-5s",
    "1.2.3.4.5",
    "v1",
    "not a version",
    "*/0 * * * *",
    "Mars/Olympus",
    "80:80:80:80",
    "65536:1",
    "a:b:c:d",
    "\u{0}",
    "\u{feff}",
    "é",
    "#",
    "%",
    "@",
    "`",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(SCALARS).prop_map(str::to_string),
        1 => "[ -~]{0,24}",
        1 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

/// Any single [`Mutation`].
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        at.prop_map(Mutation::DeleteLine),
        at.prop_map(Mutation::DuplicateLine),
        (at, any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        at.prop_map(Mutation::Indent),
        at.prop_map(Mutation::Dedent),
        at.prop_map(Mutation::Tab),
        (at, scalar()).prop_map(|(a, s)| Mutation::Scalar(a, s)),
        (at, 0u8..4).prop_map(|(a, n)| Mutation::Anchor(a, n)),
        (at, 0u8..4, any::<bool>()).prop_map(|(a, n, m)| Mutation::Alias(a, n, m)),
        at.prop_map(Mutation::Truncate),
        (at, 0x09u8..0x7f).prop_map(|(a, b)| Mutation::Byte(a, b)),
    ]
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start_matches(' ').len()]
}

/// `text` with `mutations` applied in order.
pub(crate) fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut out_text: Option<String> = None;
    for m in mutations {
        if let Some(t) = out_text.take() {
            lines = t.lines().map(str::to_string).collect();
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match m {
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
            Mutation::Indent(i) => lines[i % n].insert_str(0, "  "),
            Mutation::Dedent(i) => {
                let l = &mut lines[i % n];
                let strip = indent_of(l).len().min(2);
                l.drain(..strip);
            }
            Mutation::Tab(i) => {
                let l = &mut lines[i % n];
                let ind = indent_of(l).len();
                l.replace_range(..ind, "\t");
            }
            Mutation::Scalar(i, s) => {
                let l = &mut lines[i % n];
                match l.find(": ") {
                    Some(k) => l.replace_range(k + 2.., s),
                    None => {
                        let ind = indent_of(l).to_string();
                        lines.insert(i % n, format!("{ind}{s}"));
                    }
                }
            }
            Mutation::Anchor(i, a) => {
                let l = &mut lines[i % n];
                match l.find(": ") {
                    Some(k) => l.insert_str(k + 2, &format!("&a{a} ")),
                    None => l.push_str(&format!(" &a{a}")),
                }
            }
            Mutation::Alias(i, a, merge) => {
                let l = &mut lines[i % n];
                if *merge {
                    let ind = indent_of(l).to_string();
                    lines.insert(i % n, format!("{ind}<<: *a{a}"));
                } else {
                    match l.find(": ") {
                        Some(k) => l.replace_range(k + 2.., &format!("*a{a}")),
                        None => l.push_str(&format!(" *a{a}")),
                    }
                }
            }
            Mutation::Truncate(at) => {
                let mut t = lines.join("\n");
                let mut cut = at % (t.len() + 1);
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
                out_text = Some(t);
            }
            Mutation::Byte(at, b) => {
                let mut bytes = lines.join("\n").into_bytes();
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = *b;
                }
                out_text = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    out_text.unwrap_or_else(|| lines.join("\n") + "\n")
}

/// Arbitrary bytes read as a file would be (lossy UTF-8), biased towards YAML punctuation.
pub(crate) fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[-:{}\\[\\],&*!|>'\"#%@` \n\ta-z0-9$]{0,400}",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_edit_the_lines_they_name() {
        let text = "a: 1\nb: 2\nc: 3\n";
        assert_eq!(mutate(text, &[Mutation::DeleteLine(1)]), "a: 1\nc: 3\n");
        assert_eq!(
            mutate(text, &[Mutation::DuplicateLine(4)]),
            "a: 1\nb: 2\nb: 2\nc: 3\n"
        );
        assert_eq!(
            mutate(
                text,
                &[Mutation::Anchor(0, 1), Mutation::Alias(2, 1, false)]
            ),
            "a: &a1 1\nb: 2\nc: *a1\n"
        );
        assert_eq!(mutate(text, &[Mutation::Truncate(6)]), "a: 1\nb");
    }

    #[test]
    fn bounded_reports_returns_and_panics() {
        assert!(matches!(bounded(|| 1), Outcome::Returned(1)));
        assert!(matches!(
            bounded(|| -> u8 { panic!("expected by the test") }),
            Outcome::Panicked
        ));
    }
}
