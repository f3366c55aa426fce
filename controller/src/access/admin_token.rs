//! The daemon's token file (read, or created with mode 0600): one `admin` token; who may do what is decided in [`crate::access`].
//!
//! The daemon reads its token from `--token-file`; without one it uses `<data-dir>/token`,
//! creating it with a random token on first start and keeping it afterwards. CLI commands
//! read the same file (`--token-file`, `$HEARTH_TOKEN_FILE`, default `<data-dir>/token`), so
//! local use works without configuration. The token never appears in logs: [`Token`]'s
//! `Debug` is redacted and nothing formats its secret.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The token file's name in the data directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// `<data_dir>/token`.
pub fn default_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE_NAME)
}

/// Token file errors. None is retried: the message says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the token file {path}")]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no token (empty or only whitespace).
    #[error("the token file {path} is empty")]
    FileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A new token file could not be written.
    #[error("cannot create the token file {path}")]
    FileUncreatable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bearer token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token with this secret (surrounding whitespace removed).
    pub fn new(secret: &str) -> Token {
        Token(secret.trim().to_string())
    }

    /// A fresh random token: 32 random bytes, hex.
    pub fn random() -> Token {
        Token(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// The secret, for the `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ: both are
    /// hashed to fixed-length digests, compared with an OR of XORs.
    pub fn matches(&self, presented: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// Reads the token in `path`.
///
/// # Errors
/// [`Error::FileUnreadable`], [`Error::FileEmpty`].
pub fn read(path: &Path) -> Result<Token, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::FileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let token = Token::new(&text);
    if token.0.is_empty() {
        return Err(Error::FileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

/// Reads the token in `path`, or creates the file with a random token (mode 0600, written
/// to a temporary file, synced, then renamed into place) when it does not exist.
///
/// # Errors
/// As [`read`], and [`Error::FileUncreatable`].
pub fn read_or_create(path: &Path) -> Result<(Token, bool), Error> {
    match read(path) {
        Ok(token) => return Ok((token, false)),
        Err(Error::FileUnreadable { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let uncreatable = |source| Error::FileUncreatable {
        path: path.to_path_buf(),
        source,
    };
    let token = Token::random();
    super::write_private(path, format!("{}\n", token.0).as_bytes()).map_err(uncreatable)?;
    Ok((token, true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_token_file_is_created_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_token_file(dir.path());
        let (first, created) = read_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(first.secret().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = read_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, first);
        assert_eq!(read(&path).unwrap(), first);
    }

    #[test]
    fn an_empty_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(read(&path), Err(Error::FileEmpty { .. })));
        assert!(matches!(
            read_or_create(&path),
            Err(Error::FileEmpty { .. })
        ));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = Token::new("s3cret-value");
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
