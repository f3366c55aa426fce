//! Pure validation: every problem of a resource, each with its field path and a lowercase message.
//!
//! Validation never stops at the first problem: an operator fixing a state file sees all of
//! them at once (`spec.health.http.expectedCodes[1]: must be an HTTP status code 100-599`).

use std::fmt;

/// One problem found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, e.g. `spec.health.http.expectedCodes[1]`.
    pub path: String,
    /// What is wrong, lowercase, e.g. `must be an HTTP status code 100-599 (got 700)`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found while validating one resource. Empty means valid.
///
/// Not retryable: the input itself is wrong and must be fixed by whoever wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in the order the fields were checked.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.len() {
            0 => f.write_str("no validation problems"),
            1 => write!(f, "invalid resource: {}", self.errors[0]),
            n => {
                write!(f, "invalid resource ({n} problems): ")?;
                for (i, e) in self.errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl ValidationErrors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records the problem of `check`, if any, at `path`.
    pub fn check(&mut self, path: impl Into<String>, check: Result<(), String>) {
        if let Err(message) = check {
            self.push(path, message);
        }
    }

    /// Appends all problems of `other`.
    pub fn extend(&mut self, other: ValidationErrors) {
        self.errors.extend(other.errors);
    }

    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when empty, otherwise `Err(self)`.
    ///
    /// # Errors
    /// Returns `self` when it holds at least one problem.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The paths of all problems, in order (handy in tests and logs).
    pub fn paths(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.path.as_str()).collect()
    }
}

/// Pure validation of a resource (or a part of one).
pub trait Validate {
    /// Checks every rule and returns every problem found, each with its field path.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every problem; never just the first.
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// Checks that `s` is a DNS label of at most `max_len` characters in hearth's strict form:
/// lowercase ASCII letters, digits and `-`, starting with a letter, not ending with `-`.
///
/// Starting with a letter (stricter than RFC 1123) keeps names distinct from numbers and
/// lets names be used as Docker stack/service names and hostnames alike.
///
/// # Errors
/// A lowercase message describing the first rule the string breaks.
pub fn check_dns_label(s: &str, max_len: usize) -> Result<(), String> {
    check_length(s, max_len)?;
    if let Some((i, c)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "must contain only lowercase letters, digits and '-' (found {c:?} at {i})"
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".into());
    }
    if s.ends_with('-') {
        return Err("must not end with '-'".into());
    }
    Ok(())
}

/// Longest DNS name (RFC 1035, without the trailing dot).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest label inside a DNS name.
pub const MAX_DOMAIN_LABEL_LEN: usize = 63;

/// Checks that `s` is a lowercase DNS name of at most `max_len` (≤ 253) characters: dot-separated
/// labels of 1–63 letters, digits and `-`, none starting or ending with `-` (RFC 1123).
///
/// # Errors
/// A lowercase message describing the first rule the string breaks.
pub fn check_domain(s: &str, max_len: usize) -> Result<(), String> {
    check_length(s, max_len.min(MAX_DOMAIN_LEN))?;
    for (n, label) in s.split('.').enumerate() {
        let which = n + 1;
        if label.is_empty() {
            return Err(format!(
                "label {which} is empty (no leading, trailing or double dots)"
            ));
        }
        if label.len() > MAX_DOMAIN_LABEL_LEN {
            return Err(format!(
                "label {which} must be at most {MAX_DOMAIN_LABEL_LEN} characters (got {})",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "label {which} must contain only lowercase letters, digits and '-' (found {c:?})"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {which} must not start or end with '-'"));
        }
    }
    Ok(())
}

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 characters.
///
/// # Errors
/// A lowercase message describing the first rule the name breaks.
pub fn check_env_key(s: &str) -> Result<(), String> {
    check_length(s, 255)?;
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("must not start with a digit".into());
    }
    check_chars(
        s,
        |c| c.is_ascii_alphanumeric() || c == '_',
        "letters, digits and '_'",
    )
}

/// Checks a metadata label key: 1–253 characters of letters, digits, `.`, `-`, `_` and `/`,
/// starting and ending with a letter or digit (Docker label keys follow the same spirit).
///
/// # Errors
/// A lowercase message describing the first rule the key breaks.
pub fn check_label_key(s: &str) -> Result<(), String> {
    check_length(s, 253)?;
    check_chars(
        s,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'),
        "letters, digits, '.', '-', '_' and '/'",
    )?;
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks that `s` is not empty and at most `max_len` characters (bytes) long: the first
/// rules of every name and key check.
///
/// # Errors
/// `must not be empty`, or `must be at most N characters (got L)`.
pub fn check_length(s: &str, max_len: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max_len {
        return Err(format!(
            "must be at most {max_len} characters (got {})",
            s.len()
        ));
    }
    Ok(())
}

/// Checks that every character of `s` is `allowed` (described as `what` in the message).
///
/// # Errors
/// `must contain only <what> (found <the first other character>)`.
pub fn check_chars(s: &str, allowed: impl Fn(char) -> bool, what: &str) -> Result<(), String> {
    match s.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!("must contain only {what} (found {c:?})")),
        None => Ok(()),
    }
}

/// Checks a free-text value that ends up in labels, logs and tables: at most `max_len`
/// characters and no control characters.
///
/// # Errors
/// A lowercase message describing the first rule the text breaks.
pub fn check_text(s: &str, max_len: usize) -> Result<(), String> {
    if s.len() > max_len {
        return Err(format!(
            "must be at most {max_len} characters (got {})",
            s.len()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Checks a TCP port number (1–65535; 0 means "any" to the kernel and is never what is meant).
///
/// # Errors
/// A lowercase message when the port is out of range.
pub fn check_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("must be a port number 1-65535 (got {port})"))
    }
}

/// Adds problems for duplicate entries of `items` (by `key`) at `path[i]` of each later copy.
pub fn check_unique<T, K: PartialEq>(
    errors: &mut ValidationErrors,
    path: &str,
    items: &[T],
    key: impl Fn(&T) -> K,
    what: &str,
) {
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        if items[..i].iter().any(|earlier| key(earlier) == k) {
            errors.push(format!("{path}[{i}]"), format!("duplicate {what}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dns_labels_accept_lowercase_alnum_and_dashes_starting_with_a_letter() {
        for ok in ["a", "web", "my-app-2", "a1", "x-y-z"] {
            assert_eq!(check_dns_label(ok, 63), Ok(()), "{ok}");
        }
    }

    #[test]
    fn dns_labels_reject_every_broken_rule_with_a_lowercase_message() {
        let cases = [
            ("", "must not be empty"),
            ("1abc", "must start with a lowercase letter"),
            ("-abc", "must start with a lowercase letter"),
            ("abc-", "must not end with '-'"),
            ("Abc", "must contain only"),
            ("a_b", "must contain only"),
            ("a.b", "must contain only"),
            ("aé", "must contain only"),
            ("abcdef", "must be at most 5 characters (got 6)"),
        ];
        for (input, want) in cases {
            let err = check_dns_label(input, 5).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(err.starts_with(char::is_lowercase), "{err}");
        }
    }

    #[test]
    fn domains_allow_labels_starting_with_digits_but_not_empty_or_long_labels() {
        assert_eq!(check_domain("hearth.example.test", 253), Ok(()));
        assert_eq!(check_domain("1.2.example", 253), Ok(()));
        assert!(check_domain("a..b", 253)
            .unwrap_err()
            .contains("label 2 is empty"));
        assert!(check_domain(".a", 253)
            .unwrap_err()
            .contains("label 1 is empty"));
        assert!(check_domain("a.", 253).is_err());
        assert!(check_domain("-a.b", 253)
            .unwrap_err()
            .contains("must not start or end"));
        assert!(check_domain("A.b", 253).unwrap_err().contains("lowercase"));
        let long_label = "a".repeat(64);
        assert!(check_domain(&format!("{long_label}.test"), 253)
            .unwrap_err()
            .contains("at most 63"));
        let long_name = ["abcdefghi"; 26].join("."); // 26*9 + 25 = 259
        assert!(check_domain(&long_name, 253)
            .unwrap_err()
            .contains("at most 253"));
        assert!(check_domain("abc.de", 5).unwrap_err().contains("at most 5"));
    }

    #[test]
    fn env_keys_follow_posix_shell_rules() {
        assert_eq!(check_env_key("DOMAIN"), Ok(()));
        assert_eq!(check_env_key("_x1"), Ok(()));
        assert!(check_env_key("").is_err());
        assert!(check_env_key("1X").unwrap_err().contains("digit"));
        assert!(check_env_key("A-B").unwrap_err().contains("'-'"));
        assert!(check_env_key("A=B").is_err());
        assert!(check_env_key(&"A".repeat(256)).is_err());
    }

    #[test]
    fn label_keys_allow_reverse_dns_keys_and_reject_spaces() {
        assert_eq!(check_label_key("com.example/team"), Ok(()));
        assert_eq!(check_label_key("hearth.managed-by"), Ok(()));
        assert!(check_label_key("").is_err());
        assert!(check_label_key("a b").is_err());
        assert!(check_label_key(".a").is_err());
        assert!(check_label_key("a/").is_err());
    }

    #[test]
    fn ports_must_be_between_1_and_65535() {
        assert_eq!(check_port(1), Ok(()));
        assert_eq!(check_port(65535), Ok(()));
        assert!(check_port(0).is_err());
        assert!(check_port(65536).unwrap_err().contains("65536"));
    }

    #[test]
    fn text_rejects_control_characters_and_overlong_values() {
        assert_eq!(check_text("a reason", 10), Ok(()));
        assert!(check_text("a\nb", 10).is_err());
        assert!(check_text("abcdefghijk", 10).is_err());
    }

    #[test]
    fn duplicates_are_reported_at_every_later_copy() {
        let mut errs = ValidationErrors::default();
        check_unique(&mut errs, "spec.deps", &["a", "b", "a", "a"], |s| *s, "dep");
        assert_eq!(errs.paths(), ["spec.deps[2]", "spec.deps[3]"]);
    }

    #[test]
    fn validation_errors_display_every_problem_with_its_path() {
        let mut errs = ValidationErrors::default();
        assert!(errs.clone().into_result().is_ok());
        errs.push("metadata.name", "must not be empty");
        errs.push("spec.slots", "must be at least 1");
        let text = errs.clone().into_result().unwrap_err().to_string();
        assert_eq!(
            text,
            "invalid resource (2 problems): metadata.name: must not be empty; spec.slots: must be at least 1"
        );
    }
}
