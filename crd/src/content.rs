//! `Content`: exactly what a run tests or a warm app serves — a published version's tag commit, or a candidate (a commit, a working tree) — named by the digest of its snapshot.
//!
//! hearth snapshots a recipe's inputs (the files a render reads, and the run's env overrides)
//! into the store as an immutable artifact whose name is the SHA-256 of its content
//! ([`Content::digest`]); renders of that content read the snapshot only, so what a run tested
//! cannot change under it, and a promotion moves a warm app to exactly that artifact
//! (issue 16).

use serde::{Deserialize, Serialize};

use crate::resource::is_default;
use crate::validation::ValidationErrors;

/// What kind of content a run tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentKind {
    /// A published version: the files of its tag's commit.
    Release,
    /// A commit of a declared git `Recipe` that is not the version's tag (a chaos deploy).
    Commit,
    /// A recipe working tree as the CI job had it (`--candidate DIR`, a pull request's
    /// checkout; a chaos deploy, `+U` when it had uncommitted changes).
    WorkTree,
}

/// Exactly what was snapshotted: recorded on a run at its start (`spec.content`) and on a
/// warm app a promotion moved to it (`spec.content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Content {
    /// Release, commit or working tree.
    pub kind: ContentKind,
    /// The tag (for a release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The git commit (a release's tag commit, the commit asked for, a working tree's HEAD);
    /// absent for a working tree that is not a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A working tree with uncommitted changes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dirty: bool,
    /// SHA-256 (hex) of the snapshot: its files and env. Equal content, equal digest.
    pub digest: String,
    /// On a warm app: the run that tested this content and went green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

impl Content {
    /// Whether this is a candidate (unreleased: a commit or a working tree).
    pub fn is_candidate(&self) -> bool {
        self.kind != ContentKind::Release
    }

    /// Whether `other` is the same content (kind, commit and digest; not who tested it).
    pub fn same_as(&self, other: &Content) -> bool {
        self.kind == other.kind && self.commit == other.commit && self.digest == other.digest
    }

    /// The chaos version abra labels unreleased content with: the commit's first 8 hex digits
    /// (the digest's when there is no commit), `+U` when uncommitted changes were included.
    pub fn chaos_version(&self) -> String {
        let (id, dirty) = match &self.commit {
            Some(c) => (c.as_str(), self.dirty),
            None => (self.digest.as_str(), true),
        };
        let short: String = id.chars().take(8).collect();
        if dirty {
            format!("{short}+U")
        } else {
            short
        }
    }

    /// One line for humans: `release 1.0.0 @ 1a2b3c4d, digest 9f8e7d6c5b4a`.
    pub fn summary(&self) -> String {
        let what = match self.kind {
            ContentKind::Release => format!("release {}", self.tag.as_deref().unwrap_or("?")),
            ContentKind::Commit => "commit".to_string(),
            ContentKind::WorkTree if self.dirty => "working tree (uncommitted changes)".into(),
            ContentKind::WorkTree => "working tree".into(),
        };
        let commit = self
            .commit
            .as_deref()
            .map(|c| format!(" @ {}", c.chars().take(12).collect::<String>()))
            .unwrap_or_default();
        let digest: String = self.digest.chars().take(12).collect();
        format!("{what}{commit}, digest {digest}")
    }

    /// Checks the digest (64 lowercase hex digits), the commit (7–64 hex digits) and the tag.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
        if self.digest.len() != 64
            || !self
                .digest
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            errs.push(
                format!("{path}.digest"),
                "must be a SHA-256 digest (64 lowercase hex digits)",
            );
        }
        if let Some(c) = &self.commit {
            if !(7..=64).contains(&c.len()) || !c.chars().all(|c| c.is_ascii_hexdigit()) {
                errs.push(format!("{path}.commit"), "must be a git commit (hex)");
            }
        }
        match (&self.kind, &self.tag) {
            (ContentKind::Release, None) => {
                errs.push(format!("{path}.tag"), "a release names its tag")
            }
            (ContentKind::Release, Some(t)) if t.is_empty() || t.len() > 255 => {
                errs.push(format!("{path}.tag"), "must be 1-255 characters")
            }
            (ContentKind::Commit | ContentKind::WorkTree, Some(_)) => {
                errs.push(format!("{path}.tag"), "only a release names a tag")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn content(kind: ContentKind) -> Content {
        Content {
            kind,
            tag: (kind == ContentKind::Release).then(|| "1.0.0+1.29.0".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            dirty: false,
            digest: "ab".repeat(32),
            run: None,
        }
    }

    #[test]
    fn a_content_validates_and_round_trips_in_camel_case() {
        let c = content(ContentKind::WorkTree);
        let mut errs = ValidationErrors::default();
        c.validate_into(&mut errs, "spec.content");
        assert!(errs.errors.is_empty(), "{errs:?}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["kind"], "workTree");
        assert!(json.get("dirty").is_none());
        assert_eq!(serde_json::from_value::<Content>(json).unwrap(), c);
    }

    #[test]
    fn bad_digests_commits_and_tags_are_reported_with_their_paths() {
        let mut c = content(ContentKind::Commit);
        c.digest = "AB".repeat(32);
        c.commit = Some("xyz".into());
        c.tag = Some("1.0.0".into());
        let mut errs = ValidationErrors::default();
        c.validate_into(&mut errs, "spec.content");
        let paths: Vec<_> = errs.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.content.digest",
                "spec.content.commit",
                "spec.content.tag"
            ]
        );
    }

    #[test]
    fn the_chaos_version_is_the_short_commit_with_u_when_dirty() {
        let mut c = content(ContentKind::WorkTree);
        assert_eq!(c.chaos_version(), "01234567");
        c.dirty = true;
        assert_eq!(c.chaos_version(), "01234567+U");
        c.commit = None;
        assert_eq!(c.chaos_version(), "abababab+U");
        assert!(c.is_candidate());
        assert!(!content(ContentKind::Release).is_candidate());
    }

    #[test]
    fn sameness_ignores_the_run_that_tested_it() {
        let a = content(ContentKind::Release);
        let mut b = a.clone();
        b.run = Some("web-1".into());
        assert!(a.same_as(&b));
        b.digest = "cd".repeat(32);
        assert!(!a.same_as(&b));
    }
}
