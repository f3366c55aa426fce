//! Recipe versions such as `1.11.0+1.29.0` and their total order (semver, then the upstream part).
//!
//! A recipe version is a semver version of the recipe itself, optionally followed by `+` and
//! the version of the upstream software it packages. Semver ignores build metadata when
//! ordering, but hearth must not: `1.11.0+1.29.0 < 1.11.0+1.30.0` (the recipe did not change,
//! the upstream image did). So the `+upstream` part is parsed and compared as a version too.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version string was rejected. Not retryable: the input must be fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string was empty (or only whitespace).
    #[error("version is empty")]
    EmptyVersionGiven,
    /// The recipe part (before `+`) is not a semver version.
    #[error(
        "version {input:?}: recipe part {part:?} is not a semver version like 1.2.3 ({reason})"
    )]
    RecipePartRejected {
        /// The whole input.
        input: String,
        /// The part before `+`.
        part: String,
        /// The semver parser's explanation.
        reason: String,
    },
    /// The upstream part (after `+`) is not a version.
    #[error(
        "version {input:?}: upstream part {part:?} is not a version like 1.29.0, 1.29 or 1.29.0-rc.1 ({reason})"
    )]
    UpstreamPartRejected {
        /// The whole input.
        input: String,
        /// The part after `+`.
        part: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed recipe version: `<recipe semver>[+<upstream version>]`.
///
/// # Guarantees
/// - Total order: recipe part by semver precedence (pre-releases before releases), then the
///   upstream part by semver precedence; a version without an upstream part sorts before the
///   same recipe version with one. `1.11.0+1.29.0 < 1.11.0+1.30.0 < 1.12.0+1.0.0`.
/// - `a == b` exactly when `a.cmp(&b) == Equal` (so `1.0.0+1.29` equals `1.0.0+1.29.0`);
///   [`fmt::Display`] prints the text as it was given.
#[derive(Debug, Clone)]
pub struct RecipeVersion {
    recipe: semver::Version,
    upstream: Option<semver::Version>,
    text: String,
}

impl RecipeVersion {
    /// Parses `1.2.3`, `1.2.3-rc.1`, `1.11.0+1.29.0`, `1.11.0+1.29` or `1.11.0+1.29.0-alpine`.
    ///
    /// The upstream part may have one, two or three numeric components (missing ones are 0)
    /// and a `-pre.release` suffix; a leading `v` is accepted (`+v1.29.0`), since upstream
    /// projects often tag that way.
    ///
    /// # Errors
    /// [`Error`] naming the part that is wrong and why.
    pub fn parse(input: &str) -> Result<RecipeVersion, Error> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(Error::EmptyVersionGiven);
        }
        if trimmed != input {
            return Err(Error::RecipePartRejected {
                input: input.into(),
                part: input.into(),
                reason: "leading or trailing whitespace".into(),
            });
        }
        let (recipe_part, upstream_part) = match input.split_once('+') {
            Some((r, u)) => (r, Some(u)),
            None => (input, None),
        };
        let recipe =
            semver::Version::parse(recipe_part).map_err(|e| Error::RecipePartRejected {
                input: input.into(),
                part: recipe_part.into(),
                reason: e.to_string(),
            })?;
        let upstream = upstream_part
            .map(|u| {
                parse_upstream(u).map_err(|reason| Error::UpstreamPartRejected {
                    input: input.into(),
                    part: u.into(),
                    reason,
                })
            })
            .transpose()?;
        Ok(RecipeVersion {
            recipe,
            upstream,
            text: input.into(),
        })
    }

    /// The recipe's own semver version (without the upstream part).
    pub fn recipe(&self) -> &semver::Version {
        &self.recipe
    }

    /// The upstream version, normalised to three components, if one was given.
    pub fn upstream(&self) -> Option<&semver::Version> {
        self.upstream.as_ref()
    }

    /// The text as it was given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Parses the upstream part leniently: `[v]MAJOR[.MINOR[.PATCH]][-PRE]`.
fn parse_upstream(u: &str) -> Result<semver::Version, String> {
    if u.is_empty() {
        return Err("it is empty".into());
    }
    if u.contains('+') {
        return Err("a version may contain only one '+'".into());
    }
    let body = u.strip_prefix('v').unwrap_or(u);
    let (core, pre) = match body.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (body, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err("more than three numeric components".into());
    }
    let mut nums = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("component {p:?} is not a number"));
        }
        if p.len() > 1 && p.starts_with('0') {
            return Err(format!("component {p:?} has a leading zero"));
        }
        nums[i] = p
            .parse()
            .map_err(|_| format!("component {p:?} is too large"))?;
    }
    let mut v = semver::Version::new(nums[0], nums[1], nums[2]);
    if let Some(pre) = pre {
        v.pre = semver::Prerelease::new(pre).map_err(|e| format!("pre-release {pre:?}: {e}"))?;
    }
    Ok(v)
}

impl Ord for RecipeVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // semver::Version's Ord also compares build metadata; ours never has any, so this is
        // pure precedence (major, minor, patch, pre-release).
        self.recipe
            .cmp(&other.recipe)
            .then_with(|| self.upstream.cmp(&other.upstream))
    }
}

impl PartialOrd for RecipeVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RecipeVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for RecipeVersion {}

impl fmt::Display for RecipeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RecipeVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecipeVersion::parse(s)
    }
}

/// Compares two version strings in recipe-version order.
///
/// # Errors
/// The parse error of the first string that is not a version.
pub fn compare(a: &str, b: &str) -> Result<Ordering, Error> {
    Ok(RecipeVersion::parse(a)?.cmp(&RecipeVersion::parse(b)?))
}

/// The newest of `versions` in recipe-version order, skipping strings that do not parse.
/// Pre-releases are skipped unless `include_prerelease` (for `refresh: latest`).
pub fn newest<'a>(
    versions: impl IntoIterator<Item = &'a str>,
    include_prerelease: bool,
) -> Option<RecipeVersion> {
    versions
        .into_iter()
        .filter_map(|v| RecipeVersion::parse(v).ok())
        .filter(|v| {
            include_prerelease
                || (v.recipe.pre.is_empty() && v.upstream.as_ref().is_none_or(|u| u.pre.is_empty()))
        })
        .max()
}

/// Validation helper: `Ok` when `s` parses as a recipe version, else the error as a lowercase
/// message for a field path.
///
/// # Errors
/// The parse error's message.
pub fn check_version(s: &str) -> Result<(), String> {
    RecipeVersion::parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> RecipeVersion {
        RecipeVersion::parse(s).unwrap()
    }

    #[test]
    fn the_upstream_part_orders_versions_with_the_same_recipe_version() {
        assert!(v("1.11.0+1.29.0") < v("1.11.0+1.30.0"));
        assert!(v("1.11.0+1.30.0") < v("1.12.0+1.0.0"));
        assert!(v("1.11.0+1.29.0") < v("1.12.0+1.0.0"));
        assert!(
            v("1.11.0+1.9.0") < v("1.11.0+1.10.0"),
            "numeric, not lexical"
        );
    }

    #[test]
    fn the_recipe_part_wins_over_the_upstream_part() {
        assert!(v("1.12.0+0.1.0") > v("1.11.0+99.0.0"));
        assert!(v("2.0.0") > v("1.99.99+5.0.0"));
    }

    #[test]
    fn pre_releases_sort_before_their_release_in_both_parts() {
        assert!(v("1.0.0-rc.1") < v("1.0.0"));
        assert!(v("1.0.0-alpha") < v("1.0.0-beta"));
        assert!(v("1.0.0-rc.2") < v("1.0.0-rc.10"));
        assert!(v("1.0.0+1.29.0-rc.1") < v("1.0.0+1.29.0"));
        assert!(v("1.0.0-rc.1+9.0.0") < v("1.0.0+1.0.0"));
    }

    #[test]
    fn a_version_without_upstream_sorts_before_one_with_upstream() {
        assert!(v("1.0.0") < v("1.0.0+0.0.1"));
        assert!(v("1.0.0") < v("1.0.0+0.0.0"));
    }

    #[test]
    fn short_and_v_prefixed_upstream_versions_are_padded() {
        assert_eq!(v("1.0.0+1.29"), v("1.0.0+1.29.0"));
        assert_eq!(v("1.0.0+v1.29.0"), v("1.0.0+1.29.0"));
        assert_eq!(v("1.0.0+2"), v("1.0.0+2.0.0"));
        assert_eq!(
            v("1.0.0+1.29").to_string(),
            "1.0.0+1.29",
            "display keeps the text"
        );
        assert_eq!(v("1.0.0+1.29").upstream().unwrap().to_string(), "1.29.0");
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_error_naming_the_part() {
        assert_eq!(RecipeVersion::parse(""), Err(Error::EmptyVersionGiven));
        for bad in [
            "latest", "1.0", "v1.0.0", "1.0.0.0", "01.0.0", " 1.0.0", "1.0.0 ",
        ] {
            let err = RecipeVersion::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::RecipePartRejected { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("recipe part"), "{err}");
        }
        for bad in [
            "1.0.0+",
            "1.0.0+abc",
            "1.0.0+1.2.3.4",
            "1.0.0+1..2",
            "1.0.0+1.2+3",
            "1.0.0+01.2",
        ] {
            let err = RecipeVersion::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::UpstreamPartRejected { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("version "), "{err}");
        }
    }

    #[test]
    fn newest_skips_garbage_and_prereleases_unless_asked() {
        let list = ["1.0.0+1.0.0", "junk", "1.1.0-rc.1", "1.0.0+1.2.0"];
        assert_eq!(newest(list, false).unwrap().as_str(), "1.0.0+1.2.0");
        assert_eq!(newest(list, true).unwrap().as_str(), "1.1.0-rc.1");
        assert_eq!(newest(["x"], true), None);
    }

    #[test]
    fn compare_reports_the_first_unparsable_input() {
        assert_eq!(compare("1.0.0", "1.0.1"), Ok(Ordering::Less));
        assert!(compare("x", "1.0.0").is_err());
    }

    fn version_text() -> impl Strategy<Value = String> {
        (
            0u64..4,
            0u64..4,
            0u64..4,
            proptest::option::of((0u64..4, 0u64..4, 0u64..4)),
            proptest::option::of(0u64..3),
        )
            .prop_map(|(a, b, c, up, pre)| {
                let mut s = format!("{a}.{b}.{c}");
                if let Some(p) = pre {
                    s.push_str(&format!("-rc.{p}"));
                }
                if let Some((x, y, z)) = up {
                    s.push_str(&format!("+{x}.{y}.{z}"));
                }
                s
            })
    }

    proptest! {
        #[test]
        fn ordering_is_a_total_order_consistent_with_equality(a in version_text(), b in version_text(), c in version_text()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn ordering_matches_semver_when_the_recipe_parts_differ(a in version_text(), b in version_text()) {
            let (ra, rb) = (v(&a), v(&b));
            if ra.recipe() != rb.recipe() {
                prop_assert_eq!(ra.cmp(&rb), ra.recipe().cmp(rb.recipe()));
            }
        }

        #[test]
        fn parsing_never_panics_on_arbitrary_text(s in ".{0,40}") {
            let _ = RecipeVersion::parse(&s);
        }
    }
}
