//! Who may do what (issue 19): named tokens with a scope (`read` ⊂ `ci` ⊂ `admin`), what each route requires, the decision for one request, and the redaction of env values for callers that are not `admin`.
//!
//! # Guarantees
//! - A request passes when its route is [`Access::Open`] (`/healthz`, `/readyz`, `/metrics`),
//!   or when it carries a token whose scope covers the route's, or — without any
//!   credentials — when it is a read (GET/HEAD) and reads are open (a loopback listen address,
//!   or `--public-reads`). Credentials that name no token are refused (401) even where
//!   anonymous reads pass, so a mistyped or revoked token is noticed.
//! - Tokens are compared as SHA-256 digests, every known digest each time, with an OR of XORs:
//!   the time taken does not depend on where or whether a token matches.
//! - The tokens file is re-read when it changes ([`TokensWorker`]); a file that cannot be
//!   read or is rejected leaves the tokens in force unchanged (logged as an error), except a
//!   deleted file, which removes every named token.
//! - Callers that are not `admin` see env values as [`REDACTED`] (names stay visible).
//!
//! Credentials are `Authorization: Bearer <token>`, or — for reads only — HTTP Basic with the
//! token as the password (any user name): what a browser sends after the `WWW-Authenticate:
//! Basic` challenge, so the status page works with a read token and no token ever goes into a
//! URL. Basic never authorizes a mutation: a browser sends cached credentials with any
//! request, including one a foreign page makes it send (CSRF).

pub mod admin_token;
pub mod tokens_file;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Writes `bytes` to `path` as a whole, readable by its owner only: a temporary file (mode
/// 0600) in the same directory, synced, then renamed into place — a reader never sees half a
/// file. (The admin token file and the tokens file hold secrets.)
///
/// # Errors
/// The first I/O error.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The name under which the daemon's single token file (`--token-file`, `<data-dir>/token`)
/// is an `admin` token.
pub const LEGACY_NAME: &str = "admin";

/// What a non-admin caller sees in place of an env value.
pub const REDACTED: &str = crd::warmapp::REDACTED_VALUE;

/// What a token may do. Ordered: `Read < Ci < Admin`, each covering the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Scope {
    /// Every read (GET).
    Read,
    /// Reads, and runs and slots: start, heartbeat, report, finish, acquire, heartbeat, release.
    Ci,
    /// Everything: apply, delete, promote, rollback, sweep, nightly.
    Admin,
}

impl Scope {
    /// `read`, `ci`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ci => "ci",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "ci" => Ok(Scope::Ci),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?} (one of read, ci, admin)")),
        }
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Nothing, ever (health, readiness, metrics).
    Open,
    /// A token of at least this scope (reads: [`Scope::Read`], which anonymous callers pass
    /// where reads are open).
    Needs(Scope),
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("open"),
            Access::Needs(s) => s.fmt(f),
        }
    }
}

/// Who is asking: put in each request's extensions by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials (passed only on open routes and open reads).
    Anonymous,
    /// A known token.
    Token {
        /// Its name.
        name: String,
        /// Its scope.
        scope: Scope,
    },
}

impl Principal {
    /// Whether this caller sees env values (only `admin` does).
    pub fn sees_env_values(&self) -> bool {
        matches!(
            self,
            Principal::Token {
                scope: Scope::Admin,
                ..
            }
        )
    }

    /// The token's name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::Token { name, .. } => Some(name),
        }
    }
}

/// The decision about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through as this principal.
    Pass(Principal),
    /// No credentials where they are needed: 401.
    Missing,
    /// Credentials that name no known token (or are malformed): 401.
    Wrong,
    /// A known token whose scope does not cover the route: 403.
    Forbidden {
        /// The token's name.
        name: String,
        /// Its scope.
        scope: Scope,
        /// What the route needs.
        needs: Scope,
    },
}

/// The known tokens at one moment: name, scope and SHA-256 of each.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<tokens_file::Entry>,
}

impl TokenSet {
    /// A set of `entries`.
    pub fn new(entries: Vec<tokens_file::Entry>) -> TokenSet {
        TokenSet { entries }
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token `secret` is, compared against every entry's digest in constant time.
    pub fn find(&self, secret: &str) -> Option<(&str, Scope)> {
        let presented = tokens_file::hash(secret);
        let mut found = None;
        for e in &self.entries {
            let diff = e
                .hash
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some((e.name.as_str(), e.scope));
            }
        }
        found
    }
}

/// The secret an `Authorization` header carries, and whether it came as HTTP Basic:
/// `Bearer <token>`, or `Basic` with the token as the password. `None` for anything else.
pub fn presented_secret(authorization: &[u8]) -> Option<(String, bool)> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| (rest.to_string(), false));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(base64_decode(rest)?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| (password.to_string(), true));
    }
    None
}

/// Standard base64 (padded or not) to bytes; `None` for any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// Decides one request, without I/O: the route's `access`, whether it is a read (GET/HEAD),
/// its `Authorization` header, whether anonymous reads are open, and the known `tokens`.
pub fn check(
    tokens: &TokenSet,
    access: Access,
    is_read: bool,
    authorization: Option<&[u8]>,
    reads_open: bool,
) -> Verdict {
    let needs = match access {
        Access::Open => return Verdict::Pass(Principal::Anonymous),
        Access::Needs(scope) => scope,
    };
    let Some(header) = authorization else {
        return if is_read && reads_open && needs == Scope::Read {
            Verdict::Pass(Principal::Anonymous)
        } else {
            Verdict::Missing
        };
    };
    // Basic credentials are for reads only: a browser caches them and sends them with any
    // request to the origin, so a page elsewhere could make it POST with them (CSRF). Bearer
    // tokens are never sent by a browser on its own.
    let Some((name, scope)) = presented_secret(header)
        .filter(|(_, basic)| is_read || !basic)
        .and_then(|(secret, _)| tokens.find(&secret))
    else {
        return Verdict::Wrong;
    };
    if scope >= needs {
        Verdict::Pass(Principal::Token {
            name: name.to_string(),
            scope,
        })
    } else {
        Verdict::Forbidden {
            name: name.to_string(),
            scope,
            needs,
        }
    }
}

/// Errors setting up the keyring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tokens file is unreadable or rejected.
    #[error(transparent)]
    TokensFileFailed(#[from] tokens_file::Error),
    /// The tokens file's directory cannot be watched.
    #[error("cannot follow the tokens file")]
    TokensFileUnwatchable(#[source] crate::statefile::Error),
}

/// The daemon's live tokens: the token file's `admin` token and the tokens file's, swapped as
/// a whole when the tokens file changes.
#[derive(Debug)]
pub struct Keyring {
    legacy: Option<tokens_file::Entry>,
    file: Option<PathBuf>,
    current: RwLock<Arc<TokenSet>>,
}

impl Keyring {
    /// Loads the keyring: `legacy` (the token file's secret, an `admin` token named
    /// [`LEGACY_NAME`]) and the tokens in `file` (none when it does not exist).
    ///
    /// # Errors
    /// [`Error::TokensFileFailed`]: a daemon does not start on a file it would refuse.
    pub fn load(legacy: Option<&str>, file: Option<&Path>) -> Result<Keyring, Error> {
        let keyring = Keyring {
            legacy: legacy.map(|secret| tokens_file::Entry {
                name: LEGACY_NAME.to_string(),
                scope: Scope::Admin,
                hash: tokens_file::hash(secret),
            }),
            file: file.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(TokenSet::default())),
        };
        keyring.reload()?;
        Ok(keyring)
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<TokenSet> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The tokens file followed, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the tokens file and puts its tokens in force; on an error the tokens in force
    /// stay as they were. Returns how many tokens are in force.
    ///
    /// # Errors
    /// [`Error::TokensFileFailed`].
    pub fn reload(&self) -> Result<usize, Error> {
        let mut entries: Vec<tokens_file::Entry> = self.legacy.iter().cloned().collect();
        if let Some(file) = &self.file {
            entries.extend(tokens_file::read(file)?.unwrap_or_default());
        }
        let set = Arc::new(TokenSet::new(entries));
        let n = set.len();
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(n)
    }

    /// A watch of the tokens file (`None` without one).
    ///
    /// # Errors
    /// [`Error::TokensFileUnwatchable`].
    pub fn watch(file: &Path) -> Result<crate::statefile::watch::FileWatch, Error> {
        crate::statefile::watch::FileWatch::new(file, RELOAD_DEBOUNCE)
            .map_err(Error::TokensFileUnwatchable)
    }
}

/// Following the tokens file as a background worker: reloads the [`Keyring`] after every
/// change. A rejected file is logged and the tokens in force stay (not the worker's error:
/// the next edit is tried again).
pub struct TokensWorker {
    keyring: Arc<Keyring>,
    watch: crate::statefile::watch::FileWatch,
    file: PathBuf,
}

impl std::fmt::Debug for TokensWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensWorker")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl TokensWorker {
    /// Reloads `keyring` on every change `watch` (of `file`, see [`Keyring::watch`], set up
    /// before the first load so no change is missed in between) reports.
    pub fn new(
        keyring: Arc<Keyring>,
        watch: crate::statefile::watch::FileWatch,
        file: PathBuf,
    ) -> Self {
        TokensWorker {
            keyring,
            watch,
            file,
        }
    }
}

impl crate::runtime::workers::Worker for TokensWorker {
    fn name(&self) -> &'static str {
        "tokens-file"
    }

    fn schedule(&self) -> String {
        format!("on change of {}", self.file.display())
    }

    fn first(&self) -> crate::runtime::workers::Next {
        crate::runtime::workers::Next::OnTrigger
    }

    async fn step(
        &mut self,
    ) -> Result<crate::runtime::workers::Next, crate::runtime::workers::Failure> {
        match self.keyring.reload() {
            Ok(n) => {
                tracing::info!(file = %self.file.display(), tokens = n, "tokens file reloaded")
            }
            Err(e) => tracing::error!(
                error = %crate::errors::chain(&e),
                "tokens file rejected; the tokens in force are unchanged"
            ),
        }
        Ok(crate::runtime::workers::Next::OnTrigger)
    }

    async fn triggered(&mut self) -> Result<(), crate::runtime::workers::Failure> {
        if self.watch.changed().await {
            return Ok(());
        }
        // The watch ended: set it up again; the retry after the backoff reloads.
        self.watch = Keyring::watch(&self.file)?;
        Err(crate::runtime::workers::Failure::msg(format!(
            "the watch of {} ended (set up again)",
            self.file.display()
        )))
    }
}

/// Quiet time before a burst of tokens file events counts as one change (a revocation is in
/// force well within a second).
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(100);

/// Replaces every env value of `app` with [`REDACTED`] (the names stay).
pub fn redact_warmapp(app: &mut crd::WarmApp) {
    app.redact_env();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set() -> TokenSet {
        let entry = |name: &str, scope, secret: &str| tokens_file::Entry {
            name: name.into(),
            scope,
            hash: tokens_file::hash(secret),
        };
        TokenSet::new(vec![
            entry("admin", Scope::Admin, "abc"),
            entry("reader", Scope::Read, "r-secret"),
            entry("ci-bot", Scope::Ci, "c-secret"),
        ])
    }

    fn token(name: &str, scope: Scope) -> Verdict {
        Verdict::Pass(Principal::Token {
            name: name.into(),
            scope,
        })
    }

    #[test]
    fn scopes_cover_the_ones_before_them() {
        assert!(Scope::Read < Scope::Ci && Scope::Ci < Scope::Admin);
        for s in [Scope::Read, Scope::Ci, Scope::Admin] {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
        }
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn reads_pass_and_mutations_need_the_exact_bearer_token() {
        // The assertions of the single-token check this module replaced, on the same token.
        let t = set();
        let admin = Access::Needs(Scope::Admin);
        let read = Access::Needs(Scope::Read);
        assert_eq!(
            check(&t, read, true, None, true),
            Verdict::Pass(Principal::Anonymous)
        );
        assert_eq!(check(&t, admin, false, None, true), Verdict::Missing);
        assert_eq!(
            check(&t, admin, false, Some(b"Bearer abc"), true),
            token("admin", Scope::Admin)
        );
        assert_eq!(
            check(&t, admin, false, Some(b"bearer  abc "), true),
            token("admin", Scope::Admin)
        );
        for wrong in [
            b"Bearer abd".as_slice(),
            b"Bearer ab",
            b"Bearer ",
            b"Basic abc",
            b"abc",
            b"Bearer \xff",
        ] {
            assert_eq!(check(&t, admin, false, Some(wrong), true), Verdict::Wrong);
        }
    }

    #[test]
    fn each_scope_passes_exactly_the_routes_it_covers() {
        let t = set();
        for (secret, name, scope) in [
            ("r-secret", "reader", Scope::Read),
            ("c-secret", "ci-bot", Scope::Ci),
            ("abc", "admin", Scope::Admin),
        ] {
            let header = format!("Bearer {secret}");
            for needs in [Scope::Read, Scope::Ci, Scope::Admin] {
                let got = check(
                    &t,
                    Access::Needs(needs),
                    false,
                    Some(header.as_bytes()),
                    false,
                );
                let want = if scope >= needs {
                    token(name, scope)
                } else {
                    Verdict::Forbidden {
                        name: name.into(),
                        scope,
                        needs,
                    }
                };
                assert_eq!(got, want, "{name} on a {needs} route");
            }
        }
    }

    #[test]
    fn reads_need_a_token_unless_open_and_open_routes_need_nothing() {
        let t = set();
        let read = Access::Needs(Scope::Read);
        assert_eq!(check(&t, read, true, None, false), Verdict::Missing);
        assert_eq!(
            check(&t, Access::Open, true, None, false),
            Verdict::Pass(Principal::Anonymous)
        );
        assert_eq!(
            check(&t, Access::Open, true, Some(b"Bearer nope"), false),
            Verdict::Pass(Principal::Anonymous)
        );
        // A wrong token is refused even where anonymous reads pass.
        assert_eq!(
            check(&t, read, true, Some(b"Bearer nope"), true),
            Verdict::Wrong
        );
        // A mutation never passes anonymously, open reads or not.
        assert_eq!(
            check(&t, Access::Needs(Scope::Ci), false, None, true),
            Verdict::Missing
        );
    }

    #[test]
    fn basic_auth_carries_the_token_as_password() {
        // "anyone:r-secret"
        assert_eq!(
            presented_secret(b"Basic YW55b25lOnItc2VjcmV0"),
            Some(("r-secret".to_string(), true))
        );
        // ":r-secret" (no user name), unpadded.
        assert_eq!(
            presented_secret(b"basic OnItc2VjcmV0"),
            Some(("r-secret".to_string(), true))
        );
        assert_eq!(presented_secret(b"Basic dXNlcg=="), None, "no password");
        assert_eq!(presented_secret(b"Basic !!!"), None);
        let t = set();
        assert_eq!(
            check(
                &t,
                Access::Needs(Scope::Read),
                true,
                Some(b"Basic YW55b25lOnItc2VjcmV0"),
                false
            ),
            token("reader", Scope::Read)
        );
        // Never for a mutation, even with an admin token: "x:abc".
        let admin_basic = b"Basic eDphYmM=";
        assert_eq!(
            check(
                &t,
                Access::Needs(Scope::Read),
                true,
                Some(admin_basic),
                false
            ),
            token("admin", Scope::Admin)
        );
        assert_eq!(
            check(&t, Access::Needs(Scope::Ci), false, Some(admin_basic), true),
            Verdict::Wrong
        );
    }

    #[test]
    fn base64_decoding_matches_the_encoder() {
        for text in ["", "a", "ab", "abc", "abcd", "user:pässwörd"] {
            let encoded = crate::swarm::spec::base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn a_keyring_reload_revokes_and_a_rejected_file_keeps_the_tokens_in_force() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = tokens_file::default_path(dir.path());
        let ring = Keyring::load(Some("legacy"), Some(&file)).unwrap();
        assert_eq!(ring.tokens().len(), 1);
        assert_eq!(
            ring.tokens().find("legacy"),
            Some((LEGACY_NAME, Scope::Admin))
        );
        let ci = tokens_file::create(&file, "ci", Scope::Ci).unwrap();
        assert_eq!(ring.reload().unwrap(), 2);
        assert_eq!(ring.tokens().find(ci.secret()), Some(("ci", Scope::Ci)));
        // A file opened to others is refused: the tokens in force stay.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ring.reload().is_err());
        assert_eq!(ring.tokens().find(ci.secret()), Some(("ci", Scope::Ci)));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        tokens_file::revoke(&file, "ci").unwrap();
        assert_eq!(ring.reload().unwrap(), 1);
        assert_eq!(ring.tokens().find(ci.secret()), None);
        // A daemon does not start on a file it would refuse.
        std::fs::write(&file, "bad line\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Keyring::load(None, Some(&file)).is_err());
    }

    #[test]
    fn redaction_keeps_names_and_hides_values() {
        let mut app: crd::WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "w"},
            "spec": {"recipe": "r", "version": "1.0.0", "env": {"SMTP_PASSWORD": "hunter2"}}
        }))
        .unwrap();
        redact_warmapp(&mut app);
        assert_eq!(app.spec.env["SMTP_PASSWORD"], REDACTED);
    }
}
