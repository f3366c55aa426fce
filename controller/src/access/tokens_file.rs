//! The tokens file: one named, scoped token a line, only its SHA-256 stored; read with its mode checked, written as a whole (temp file, sync, rename).
//!
//! ```text
//! # NAME     SCOPE  SHA-256 OF THE TOKEN
//! ci-github  ci     sha256:3f1c…
//! alice      admin  sha256:9a0b…
//! ```
//!
//! Blank lines and `#` comments are ignored. Names are 1–63 characters of `a-z 0-9 . _ -`,
//! starting with a letter or digit, unique; `admin` is taken by the daemon's token file (see
//! [`super::LEGACY_NAME`]). The file must not be readable or writable by group or others
//! (mode `0600` or stricter): a hash of a high-entropy token reveals nothing, but whoever can
//! write the file can mint an admin token.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Scope;

/// The tokens file's name in the data directory.
pub const FILE_NAME: &str = "tokens";

/// `<data_dir>/tokens`.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Tokens file errors. None is retried: the message names the file (and line) and says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the tokens file {path}")]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error("the tokens file {path} has mode {mode:04o}; it must not be accessible to group or others (chmod 600 {path})")]
    FileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `NAME SCOPE sha256:HEX`.
    #[error("{path}:{line}: {message}")]
    LineRejected {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot write the tokens file {path}")]
    FileUnwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `token create` with a name the file (or the daemon's token file) already uses.
    #[error("a token named {0:?} exists already (revoke it first, or pick another name)")]
    NameTaken(String),
    /// `token revoke` of a name the file does not hold.
    #[error("no token named {0:?} in the tokens file")]
    NameUnknown(String),
    /// A name that is not 1–63 characters of `a-z 0-9 . _ -`.
    #[error("invalid token name {0:?}: 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit")]
    NameInvalid(String),
}

/// One line of the file: a token's name, scope and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The token's name (recorded in the history of what it changed).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `secret`.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Checks a token name.
///
/// # Errors
/// [`Error::NameInvalid`].
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::NameInvalid(name.to_string()))
    }
}

/// Parses the file's text (`path` only names it in errors).
///
/// # Errors
/// [`Error::LineRejected`] for the first bad line.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, Error> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rejected = |message: String| Error::LineRejected {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, scope, hash] = fields[..] else {
            return Err(rejected(format!(
                "expected `NAME SCOPE sha256:HEX`, found {} field(s)",
                fields.len()
            )));
        };
        check_name(name).map_err(|e| rejected(e.to_string()))?;
        if name == super::LEGACY_NAME {
            return Err(rejected(format!(
                "the name {:?} is the daemon's token file's",
                super::LEGACY_NAME
            )));
        }
        if out.iter().any(|e| e.name == name) {
            return Err(rejected(format!("the name {name:?} is used twice")));
        }
        let scope: Scope = scope.parse().map_err(rejected)?;
        let digest = hash
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| rejected("the hash must be `sha256:` and 64 hex digits".to_string()))?;
        out.push(Entry {
            name: name.to_string(),
            scope,
            hash: digest,
        });
    }
    Ok(out)
}

/// The file's text for `entries` (with a header comment).
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from(
        "# hearth API tokens: NAME SCOPE sha256:HEX (only hashes; `hearth token create` adds a line)\n",
    );
    for e in entries {
        out.push_str(&format!(
            "{} {} sha256:{}\n",
            e.name,
            e.scope,
            hex::encode(e.hash)
        ));
    }
    out
}

/// Reads the file: `None` when it does not exist (no named tokens).
///
/// # Errors
/// [`Error::FileUnreadable`], [`Error::FileTooOpen`], [`Error::LineRejected`].
pub fn read(path: &Path) -> Result<Option<Vec<Entry>>, Error> {
    let unreadable = |source| Error::FileUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::FileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    parse(path, &text).map(Some)
}

/// Writes `entries` to `path` as a whole: a temporary file (mode 0600) in the same directory,
/// synced, renamed into place — a reader never sees half a file.
///
/// # Errors
/// [`Error::FileUnwritable`].
pub fn write(path: &Path, entries: &[Entry]) -> Result<(), Error> {
    let unwritable = |source| Error::FileUnwritable {
        path: path.to_path_buf(),
        source,
    };
    super::write_private(path, render(entries).as_bytes()).map_err(unwritable)
}

/// A token just created: its secret, shown once. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken(String);

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(<redacted>)")
    }
}

impl NewToken {
    /// 32 random bytes, hex.
    fn random() -> NewToken {
        NewToken(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// The secret, to hand to its user.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Adds a new token named `name` with `scope` to the file (created if missing) and returns
/// its secret — the only time it is ever shown.
///
/// # Errors
/// [`Error::NameInvalid`], [`Error::NameTaken`], and as [`read`] and [`write`].
pub fn create(path: &Path, name: &str, scope: Scope) -> Result<NewToken, Error> {
    check_name(name)?;
    let mut entries = read(path)?.unwrap_or_default();
    if name == super::LEGACY_NAME || entries.iter().any(|e| e.name == name) {
        return Err(Error::NameTaken(name.to_string()));
    }
    let token = NewToken::random();
    entries.push(Entry {
        name: name.to_string(),
        scope,
        hash: hash(token.secret()),
    });
    write(path, &entries)?;
    Ok(token)
}

/// Removes the token named `name` from the file.
///
/// # Errors
/// [`Error::NameUnknown`], and as [`read`] and [`write`].
pub fn revoke(path: &Path, name: &str) -> Result<(), Error> {
    let mut entries = read(path)?.unwrap_or_default();
    let before = entries.len();
    entries.retain(|e| e.name != name);
    if entries.len() == before {
        return Err(Error::NameUnknown(name.to_string()));
    }
    write(path, &entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_are_stored_as_hashes_in_a_0600_file_and_revoked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        assert_eq!(read(&path).unwrap(), None);
        let ci = create(&path, "ci-github", Scope::Ci).unwrap();
        let alice = create(&path, "alice", Scope::Admin).unwrap();
        assert_ne!(ci.secret(), alice.secret());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(ci.secret()) && !text.contains(alice.secret()));
        let entries = read(&path).unwrap().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "ci-github");
        assert_eq!(entries[0].scope, Scope::Ci);
        assert_eq!(entries[0].hash, hash(ci.secret()));
        assert!(matches!(
            create(&path, "alice", Scope::Read),
            Err(Error::NameTaken(_))
        ));
        assert!(matches!(
            create(&path, "admin", Scope::Read),
            Err(Error::NameTaken(_))
        ));
        revoke(&path, "ci-github").unwrap();
        let entries = read(&path).unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "alice");
        assert!(matches!(
            revoke(&path, "ci-github"),
            Err(Error::NameUnknown(_))
        ));
    }

    #[test]
    fn a_file_open_to_group_or_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        create(&path, "a", Scope::Read).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read(&path).unwrap_err();
            assert!(matches!(err, Error::FileTooOpen { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn bad_lines_are_rejected_with_their_line_number() {
        let p = Path::new("t");
        let h = format!("sha256:{}", hex::encode([7u8; 32]));
        let ok = format!("# c\n\n  a read {h}\nb-2.x ci {h}\n");
        assert_eq!(parse(p, &ok).unwrap().len(), 2);
        for (text, want) in [
            (
                format!("a read {h}\na ci {h}\n"),
                "t:2: the name \"a\" is used twice",
            ),
            (format!("a root {h}\n"), "t:1: unknown scope \"root\""),
            ("a read sha256:abc\n".to_string(), "t:1: the hash must be"),
            (
                format!("a read {h} extra\n"),
                "t:1: expected `NAME SCOPE sha256:HEX`, found 4",
            ),
            (format!("A read {h}\n"), "t:1: invalid token name \"A\""),
            (
                format!("admin admin {h}\n"),
                "t:1: the name \"admin\" is the daemon's",
            ),
        ] {
            let err = parse(p, &text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_hash() {
        let e = Entry {
            name: "n".into(),
            scope: Scope::Ci,
            hash: [0xab; 32],
        };
        assert!(!format!("{e:?}").contains("abab"));
    }
}
