//! `Recipe`: where a recipe comes from — a git repository whose tags are its published versions (as Co-op Cloud recipes are published), or a local directory.
//!
//! ```yaml
//! apiVersion: hearth/v1
//! kind: Recipe
//! metadata: { name: bonfire }
//! spec:
//!   git:
//!     url: https://git.coopcloud.tech/coop-cloud/bonfire.git
//!     ref: { branch: main }          # optional: the branch followed for unreleased work
//!     sshKeyFile: /etc/hearth/deploy-key   # optional, for ssh:// URLs (a path, never the key)
//!   versions: ">=1.0.0"             # optional semver range of the part before `+`
//!   prerelease: false               # pre-releases (`2.0.0-rc.1+…`) count only when true
//!   interval: 1h                    # how often to fetch (default 1h)
//! ---
//! apiVersion: hearth/v1
//! kind: Recipe
//! metadata: { name: webapp }
//! spec: { path: /srv/recipes/webapp }   # a directory recipe (recipe.yml), read in place
//! ```
//!
//! # Version order
//! A tag is a version when it parses as semver, optionally prefixed `v` (`v2.4.8`, as older
//! recipes tag). Versions are ordered by the semver of the part before `+` only: build metadata
//! (the upstream version after `+`) does not order, and two tags equal there are ordered by
//! the time of their tag's commit (as Flux orders them), then by tag name. A tag that does not
//! parse is listed as ignored with the reason, never guessed at. See [`order_tags`].

use std::cmp::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::condition::{validate_conditions, Condition};
use crate::names::MAX_RECIPE_NAME_LEN;
use crate::resource::{impl_resource, is_default, validate_envelope, Kind, ObjectMeta};
use crate::validation::{check_text, Validate, ValidationErrors};
use crate::verdict::check_tier_names;

/// How often a git recipe is fetched when `spec.interval` is absent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest fetch interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Condition type: the last fetch succeeded.
pub const FETCHED: &str = "Fetched";

/// A recipe resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipe {
    /// Always `hearth/v1`.
    pub api_version: String,
    /// Always `Recipe`.
    pub kind: Kind,
    /// Name: what `WarmApp.spec.recipe` and runs refer to (a DNS label of ≤ 28 characters).
    pub metadata: ObjectMeta,
    /// Where the recipe comes from.
    pub spec: RecipeSpec,
    /// What the last fetch found; omitted when empty.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: RecipeStatus,
}

impl_resource!(Recipe, RecipeSpec, RecipeStatus);

/// Where a recipe comes from: exactly one of `git` and `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecipeSpec {
    /// A git repository; its tags are the published versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// A local directory recipe (`recipe.yml` with a `versions:` list), read in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which tags count: a semver range of the part before `+` (e.g. `>=1.0.0, <3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<String>,
    /// Pre-release tags (`2.0.0-rc.1`) count only when true.
    #[serde(default, skip_serializing_if = "is_default")]
    pub prerelease: bool,
    /// How often to fetch (humantime); [`DEFAULT_INTERVAL`] when absent.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// The tier names runs of this recipe may require and report (DNS labels, unique). When a
    /// run's recipe or pool declares tiers, any other tier is refused (API 422); they are
    /// also the only values of the `tier` label of `hearth_tier_results_total`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
}

impl RecipeSpec {
    /// The effective fetch interval.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }
}

/// A git repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    /// `file://`, `https://` or `ssh://` URL.
    pub url: String,
    /// The branch followed for unreleased work (its tip is the recipe's unreleased commit).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,
    /// A private key file for `ssh://` URLs (a path; the key is never written in the state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<String>,
    /// A file holding a token (password) for `https://` URLs, given to git through a
    /// credential helper that reads the file (the token never appears on a command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// The user name sent with `tokenFile` (default `git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A git reference to follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRef {
    /// A branch name.
    pub branch: String,
}

/// One published version: a tag that parsed and passed `spec.versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedVersion {
    /// The version (the tag without a leading `v`), e.g. `2.0.1+1.0.6-social-amd64`.
    pub version: String,
    /// The tag as written.
    pub tag: String,
    /// The commit the tag points at (full SHA).
    pub commit: String,
    /// The commit's time (unix seconds).
    pub commit_time: i64,
}

/// A tag that is not a version, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredTag {
    /// The tag as written.
    pub tag: String,
    /// Why it does not count, lowercase.
    pub reason: String,
}

/// What hearth observed about a recipe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeStatus {
    /// `Fetched` (and `Ready`: a usable content is in force).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The commit of the followed branch (or the default branch) at the last good fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Published versions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<PublishedVersion>,
    /// Tags that are not versions (or are outside `spec.versions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<IgnoredTag>,
    /// The newest published version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    /// When the last fetch was attempted (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_ms: Option<u64>,
    /// When a fetch last succeeded (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    /// Why the last fetch failed; cleared by a good one. The last good content stays in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_error: Option<String>,
}

impl Validate for Recipe {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        validate_envelope(
            &mut errs,
            &self.api_version,
            self.kind,
            Kind::Recipe,
            &self.metadata,
            MAX_RECIPE_NAME_LEN,
        );
        let spec = &self.spec;
        match (&spec.git, &spec.path) {
            (Some(_), Some(_)) => errs.push("spec", "give one of git and path, not both"),
            (None, None) => errs.push("spec", "one of git and path is required"),
            _ => {}
        }
        if let Some(git) = &spec.git {
            errs.check("spec.git.url", check_git_url(&git.url));
            if let Some(r) = &git.git_ref {
                errs.check("spec.git.ref.branch", check_branch(&r.branch));
            }
            for (field, file) in [
                ("spec.git.sshKeyFile", &git.ssh_key_file),
                ("spec.git.tokenFile", &git.token_file),
            ] {
                if let Some(f) = file {
                    errs.check(field, check_absolute_path(f));
                }
            }
            if git.ssh_key_file.is_some() && !git.url.starts_with("ssh://") {
                errs.push("spec.git.sshKeyFile", "only for ssh:// URLs");
            }
            if git.token_file.is_some() && !git.url.starts_with("https://") {
                errs.push("spec.git.tokenFile", "only for https:// URLs");
            }
            if let Some(u) = &git.username {
                errs.check("spec.git.username", check_text(u, 256));
                if git.token_file.is_none() {
                    errs.push("spec.git.username", "only with tokenFile");
                }
            }
        }
        if let Some(p) = &spec.path {
            errs.check("spec.path", check_absolute_path(p));
            for (field, set) in [
                ("spec.versions", spec.versions.is_some()),
                ("spec.prerelease", spec.prerelease),
                ("spec.interval", spec.interval.is_some()),
            ] {
                if set {
                    errs.push(
                        field,
                        "only for git recipes (a directory recipe lists its versions)",
                    );
                }
            }
        }
        if let Some(range) = &spec.versions {
            if let Err(e) = semver::VersionReq::parse(range) {
                errs.push(
                    "spec.versions",
                    format!("not a semver range ({e}); write e.g. \">=1.0.0, <3\""),
                );
            }
        }
        if let Some(i) = spec.interval {
            if i < MIN_INTERVAL {
                errs.push(
                    "spec.interval",
                    format!("must be at least {}", crate::duration::format(MIN_INTERVAL)),
                );
            }
        }
        check_tier_names(&mut errs, "spec.tiers", &spec.tiers);
        validate_conditions(&mut errs, "status.conditions", &self.status.conditions);
        errs.into_result()
    }
}

fn check_git_url(url: &str) -> Result<(), String> {
    check_text(url, 2048)?;
    let rest = ["file://", "https://", "ssh://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| format!("{url:?} must start with file://, https:// or ssh://"))?;
    if rest.is_empty() {
        return Err(format!("{url:?} names no repository"));
    }
    if url.starts_with("https://") && rest.split('/').next().is_some_and(|h| h.contains('@')) {
        return Err("credentials in the URL are refused: give tokenFile instead".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Ok(())
}

fn check_branch(b: &str) -> Result<(), String> {
    let bad = b.is_empty()
        || b.len() > 255
        || b.starts_with('-')
        || b.starts_with('/')
        || b.ends_with('/')
        || b.ends_with(".lock")
        || b.contains("..")
        || b.contains("@{")
        || b.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        Err(format!("{b:?} is not a git branch name"))
    } else {
        Ok(())
    }
}

fn check_absolute_path(p: &str) -> Result<(), String> {
    check_text(p, 4096)?;
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path"));
    }
    Ok(())
}

/// A tag as listed by git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The tag's name.
    pub name: String,
    /// The commit it points at (peeled).
    pub commit: String,
    /// The commit's time (unix seconds).
    pub commit_time: i64,
}

/// The semver of a tag's name: the name itself, or without one leading `v`.
///
/// # Errors
/// A lowercase reason when the name is not a version.
pub fn tag_semver(tag: &str) -> Result<(String, semver::Version), String> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    semver::Version::parse(text)
        .map(|v| (text.to_string(), v))
        .map_err(|e| format!("not a semver version ({e})"))
}

/// Whether `a` orders before `b`: semver of the part before `+`, then tag commit time, then
/// the name (so the order is total and stable).
fn tag_order(a: &(Tag, semver::Version), b: &(Tag, semver::Version)) -> Ordering {
    let sem = |v: &semver::Version| (v.major, v.minor, v.patch, v.pre.clone());
    sem(&a.1)
        .cmp(&sem(&b.1))
        .then(a.0.commit_time.cmp(&b.0.commit_time))
        .then(a.0.name.cmp(&b.0.name))
}

/// Sorts tags into published versions (oldest first) and ignored tags, by the rules in the
/// module docs: `range` filters on the part before `+`; pre-releases count only when asked.
///
/// # Guarantees
/// Pure and total: every tag lands in exactly one of the two lists.
pub fn order_tags(
    tags: &[Tag],
    range: Option<&semver::VersionReq>,
    prerelease: bool,
) -> (Vec<PublishedVersion>, Vec<IgnoredTag>) {
    let mut kept = Vec::new();
    let mut ignored = Vec::new();
    for tag in tags {
        let (version, sem) = match tag_semver(&tag.name) {
            Ok(v) => v,
            Err(reason) => {
                ignored.push(IgnoredTag {
                    tag: tag.name.clone(),
                    reason,
                });
                continue;
            }
        };
        if let Err(e) = crate::version::RecipeVersion::parse(&version) {
            ignored.push(IgnoredTag {
                tag: tag.name.clone(),
                reason: e.to_string(),
            });
            continue;
        }
        if !sem.pre.is_empty() && !prerelease {
            ignored.push(IgnoredTag {
                tag: tag.name.clone(),
                reason: "a pre-release (spec.prerelease is false)".into(),
            });
            continue;
        }
        if let Some(r) = range {
            // `matches` ignores build metadata: the range is about the part before `+`.
            if !r.matches(&sem) {
                ignored.push(IgnoredTag {
                    tag: tag.name.clone(),
                    reason: format!("outside spec.versions {r}"),
                });
                continue;
            }
        }
        // Two tags naming the same version (`v1.0.0` and `1.0.0`): the later-listed is
        // ignored, so a version always means one commit.
        if let Some((same, _)) = kept.iter().find(|(t, _): &&(Tag, semver::Version)| {
            tag_semver(&t.name).is_ok_and(|(text, _)| text == version)
        }) {
            ignored.push(IgnoredTag {
                tag: tag.name.clone(),
                reason: format!("names the same version as tag {}", same.name),
            });
            continue;
        }
        kept.push((tag.clone(), sem));
    }
    kept.sort_by(tag_order);
    let versions = kept
        .into_iter()
        .map(|(t, _)| PublishedVersion {
            version: tag_semver(&t.name).map(|x| x.0).unwrap_or_default(),
            tag: t.name,
            commit: t.commit,
            commit_time: t.commit_time,
        })
        .collect();
    ignored.sort_by(|a, b| a.tag.cmp(&b.tag));
    (versions, ignored)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tag(name: &str, time: i64) -> Tag {
        Tag {
            name: name.into(),
            commit: format!("c-{name}"),
            commit_time: time,
        }
    }

    fn names(v: &[PublishedVersion]) -> Vec<&str> {
        v.iter().map(|p| p.tag.as_str()).collect()
    }

    #[test]
    fn build_metadata_does_not_order_ties_go_by_tag_commit_time() {
        // The upstream part says 1.0.6 > 1.0.5, but the older commit was tagged 1.0.6.
        let tags = [
            tag("2.0.0+1.0.6-social-amd64", 100),
            tag("2.0.0+1.0.5-social-amd64", 200),
            tag("1.0.0+9.9.9", 300),
        ];
        let (v, ignored) = order_tags(&tags, None, false);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(
            names(&v),
            [
                "1.0.0+9.9.9",
                "2.0.0+1.0.6-social-amd64",
                "2.0.0+1.0.5-social-amd64"
            ]
        );
    }

    #[test]
    fn the_real_recipes_tags_are_versions_and_garbage_is_ignored_with_a_reason() {
        let tags = [
            tag("v2.4.8", 1),
            tag("v1.0.3", 2),
            tag("2.0.1+1.0.6-social-amd64", 3),
            tag("latest", 4),
            tag("release-1", 5),
            tag("1.0", 6),
        ];
        let (v, ignored) = order_tags(&tags, None, false);
        assert_eq!(names(&v), ["v1.0.3", "2.0.1+1.0.6-social-amd64", "v2.4.8"]);
        assert_eq!(
            v[0].version, "1.0.3",
            "the leading v is not part of the version"
        );
        let ignored: Vec<_> = ignored.iter().map(|i| i.tag.as_str()).collect();
        assert_eq!(ignored, ["1.0", "latest", "release-1"]);
    }

    #[test]
    fn pre_releases_and_versions_outside_the_range_are_ignored_unless_asked() {
        let tags = [tag("1.0.0", 1), tag("2.0.0-rc.1", 2), tag("3.0.0", 3)];
        let range = semver::VersionReq::parse("<3").unwrap();
        let (v, ignored) = order_tags(&tags, Some(&range), false);
        assert_eq!(names(&v), ["1.0.0"]);
        assert_eq!(ignored.len(), 2);
        assert!(ignored[0].reason.contains("pre-release"), "{ignored:?}");
        assert!(ignored[1].reason.contains("outside"), "{ignored:?}");
        let range = semver::VersionReq::parse(">=2.0.0-rc.0, <3").unwrap();
        let (v, _) = order_tags(&tags, Some(&range), true);
        assert_eq!(names(&v), ["2.0.0-rc.1"]);
    }

    #[test]
    fn two_tags_of_one_version_keep_the_first_listed() {
        let tags = [tag("1.0.0", 1), tag("v1.0.0", 2)];
        let (v, ignored) = order_tags(&tags, None, false);
        assert_eq!(names(&v), ["1.0.0"]);
        assert!(ignored[0].reason.contains("same version"), "{ignored:?}");
    }

    fn recipe(spec: RecipeSpec) -> Recipe {
        Recipe::new("bonfire", spec)
    }

    #[test]
    fn a_recipe_needs_exactly_one_source_and_sane_fields() {
        let git = |url: &str| GitSource {
            url: url.into(),
            ..GitSource::default()
        };
        assert!(recipe(RecipeSpec {
            git: Some(git("file:///srv/r.git")),
            ..RecipeSpec::default()
        })
        .validate()
        .is_ok());
        let paths = |spec| recipe(spec).validate().unwrap_err().paths().join(",");
        assert_eq!(paths(RecipeSpec::default()), "spec");
        assert_eq!(
            paths(RecipeSpec {
                git: Some(git("git@github.com:x/y")),
                path: Some("/srv".into()),
                ..RecipeSpec::default()
            }),
            "spec,spec.git.url"
        );
        assert_eq!(
            paths(RecipeSpec {
                git: Some(GitSource {
                    url: "https://user:pw@example.com/r.git".into(),
                    git_ref: Some(GitRef {
                        branch: "a..b".into()
                    }),
                    ssh_key_file: Some("key".into()),
                    ..GitSource::default()
                }),
                versions: Some("not a range".into()),
                interval: Some(Duration::from_secs(1)),
                ..RecipeSpec::default()
            }),
            "spec.git.url,spec.git.ref.branch,spec.git.sshKeyFile,spec.git.sshKeyFile,spec.versions,spec.interval"
        );
        assert_eq!(
            paths(RecipeSpec {
                path: Some("relative".into()),
                prerelease: true,
                ..RecipeSpec::default()
            }),
            "spec.path,spec.prerelease"
        );
    }

    #[test]
    fn a_recipe_loads_from_yaml() {
        let r: Recipe = serde_saphyr::from_str(
            "apiVersion: hearth/v1\nkind: Recipe\nmetadata: {name: bonfire}\nspec:\n  git:\n    url: file:///srv/bonfire.git\n    ref: {branch: main}\n  versions: \">=1.0.0\"\n  interval: 5m\n",
        )
        .unwrap();
        assert_eq!(r.spec.interval(), Duration::from_secs(300));
        assert_eq!(r.spec.git.unwrap().git_ref.unwrap().branch, "main");
    }
}
