//! Tier results of a run and the verdict: green only if every required tier passed.

use serde::{Deserialize, Serialize};

use crate::validation::{check_dns_label, check_text, ValidationErrors};

/// Longest tier name.
pub const MAX_TIER_NAME_LEN: usize = 63;

/// The outcome of one tier (install, upgrade, custom checks...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TierOutcome {
    /// The tier ran and passed.
    Pass,
    /// The tier ran and failed.
    Fail,
    /// The tier did not run (e.g. a dependency was not ready); never counts as a pass.
    Skip,
}

/// One reported tier result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierResult {
    /// The tier's name, a DNS label such as `install` or `custom-sso`.
    pub name: String,
    /// What happened.
    pub result: TierOutcome,
    /// Whether the tier must pass for the run to be green (tiers listed in the run's
    /// `spec.requiredTiers` are required whatever this says).
    #[serde(default)]
    pub required: bool,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TierResult {
    /// Adds every problem of this result under `path`.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
        errs.check(format!("{path}.name"), check_tier_name(&self.name));
        if let Some(r) = &self.reason {
            errs.check(format!("{path}.reason"), check_text(r, 1024));
        }
    }
}

/// Checks a tier name: a DNS label of at most [`MAX_TIER_NAME_LEN`] characters.
///
/// # Errors
/// A lowercase message naming the broken rule.
pub fn check_tier_name(name: &str) -> Result<(), String> {
    check_dns_label(name, MAX_TIER_NAME_LEN)
}

/// Most tier names a pool or recipe may declare: the bound of the `tier` label.
pub const MAX_DECLARED_TIERS: usize = 32;

/// Checks a declared tier list (`spec.tiers` of a SlotPool or Recipe): at most
/// [`MAX_DECLARED_TIERS`] unique tier names.
pub fn check_tier_names(errs: &mut ValidationErrors, path: &str, tiers: &[String]) {
    if tiers.len() > MAX_DECLARED_TIERS {
        errs.push(
            path,
            format!("at most {MAX_DECLARED_TIERS} tiers (got {})", tiers.len()),
        );
    }
    for (i, t) in tiers.iter().enumerate() {
        errs.check(format!("{path}[{i}]"), check_tier_name(t));
    }
    crate::validation::check_unique(errs, path, tiers, String::clone, "tier");
}

/// Why a run is not green.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "problem",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VerdictProblem {
    /// A required tier ran and failed.
    RequiredTierFailed {
        /// The tier.
        tier: String,
        /// The reported reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A required tier was skipped (a skip never counts as a pass).
    RequiredTierSkipped {
        /// The tier.
        tier: String,
        /// The reported reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A tier listed as required was never reported.
    RequiredTierMissing {
        /// The tier.
        tier: String,
    },
    /// No tier is required at all, so nothing proves the run good.
    NoRequiredTier,
    /// The CI job itself failed (`spec.failure`: e.g. `hearth run exec`'s command exited
    /// non-zero), whatever its tiers reported.
    JobFailed {
        /// Why (`command exited 3`).
        reason: String,
    },
}

/// The verdict of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Green: every required tier passed (and there was at least one).
    pub green: bool,
    /// Why not green; empty when green.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<VerdictProblem>,
}

/// Computes a run's verdict from the tiers it must pass and the results it reported.
///
/// # Guarantees
/// - Green only if every required tier has a `pass` result. A tier is required when it is in
///   `required_tiers` or was reported with `required: true`.
/// - A required tier that failed, was skipped, or was never reported makes the run not green,
///   each named in `problems` (in `required_tiers` order, then report order).
/// - A run with no required tier at all is *not* green ([`VerdictProblem::NoRequiredTier`]):
///   a run that proved nothing must never be promoted.
/// - Non-required tiers never affect the verdict. If a tier was reported more than once, the
///   last report counts.
pub fn verdict(required_tiers: &[String], results: &[TierResult]) -> Verdict {
    let last = |name: &str| results.iter().rev().find(|r| r.name == name);
    let mut required: Vec<&str> = Vec::new();
    for name in required_tiers.iter().map(String::as_str).chain(
        results
            .iter()
            .filter(|r| r.required)
            .map(|r| r.name.as_str()),
    ) {
        if !required.contains(&name) {
            required.push(name);
        }
    }
    if required.is_empty() {
        return Verdict {
            green: false,
            problems: vec![VerdictProblem::NoRequiredTier],
        };
    }
    let problems: Vec<VerdictProblem> = required
        .into_iter()
        .filter_map(|tier| match last(tier) {
            None => Some(VerdictProblem::RequiredTierMissing { tier: tier.into() }),
            Some(r) => match r.result {
                TierOutcome::Pass => None,
                TierOutcome::Fail => Some(VerdictProblem::RequiredTierFailed {
                    tier: tier.into(),
                    reason: r.reason.clone(),
                }),
                TierOutcome::Skip => Some(VerdictProblem::RequiredTierSkipped {
                    tier: tier.into(),
                    reason: r.reason.clone(),
                }),
            },
        })
        .collect();
    Verdict {
        green: problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn t(name: &str, result: TierOutcome, required: bool) -> TierResult {
        TierResult {
            name: name.into(),
            result,
            required,
            reason: None,
        }
    }

    fn req(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_run_is_green_when_every_required_tier_passed() {
        let v = verdict(
            &req(&["install", "upgrade"]),
            &[
                t("install", TierOutcome::Pass, false),
                t("upgrade", TierOutcome::Pass, true),
                t("lint", TierOutcome::Fail, false),
            ],
        );
        assert_eq!(
            v,
            Verdict {
                green: true,
                problems: vec![]
            }
        );
    }

    #[test]
    fn a_failed_required_tier_makes_the_run_not_green() {
        let mut r = t("install", TierOutcome::Fail, true);
        r.reason = Some("exit 1".into());
        let v = verdict(&[], &[r]);
        assert!(!v.green);
        assert_eq!(
            v.problems,
            [VerdictProblem::RequiredTierFailed {
                tier: "install".into(),
                reason: Some("exit 1".into())
            }]
        );
    }

    #[test]
    fn a_skipped_required_tier_makes_the_run_not_green_even_when_the_dep_was_not_ready() {
        let mut r = t("custom", TierOutcome::Skip, false);
        r.reason = Some("dependency sso not ready".into());
        let v = verdict(&req(&["custom"]), &[r]);
        assert!(!v.green);
        assert!(
            matches!(&v.problems[0], VerdictProblem::RequiredTierSkipped { tier, .. } if tier == "custom")
        );
    }

    #[test]
    fn a_missing_required_tier_makes_the_run_not_green() {
        let v = verdict(
            &req(&["install", "upgrade"]),
            &[t("install", TierOutcome::Pass, true)],
        );
        assert_eq!(
            v.problems,
            [VerdictProblem::RequiredTierMissing {
                tier: "upgrade".into()
            }]
        );
        assert!(!v.green);
    }

    #[test]
    fn a_run_with_no_required_tier_is_not_green() {
        assert_eq!(verdict(&[], &[]).problems, [VerdictProblem::NoRequiredTier]);
        let v = verdict(&[], &[t("lint", TierOutcome::Pass, false)]);
        assert!(!v.green);
    }

    #[test]
    fn the_spec_list_makes_a_tier_required_even_if_reported_as_optional() {
        let v = verdict(
            &req(&["install"]),
            &[t("install", TierOutcome::Skip, false)],
        );
        assert!(!v.green);
    }

    #[test]
    fn non_required_failures_do_not_matter_and_the_last_report_counts() {
        let v = verdict(
            &req(&["install"]),
            &[
                t("install", TierOutcome::Fail, true),
                t("lint", TierOutcome::Fail, false),
                t("install", TierOutcome::Pass, true),
            ],
        );
        assert!(v.green, "{v:?}");
    }

    #[test]
    fn every_problem_is_listed_in_order() {
        let v = verdict(
            &req(&["a", "b", "c"]),
            &[
                t("b", TierOutcome::Skip, false),
                t("a", TierOutcome::Fail, false),
                t("d", TierOutcome::Fail, true),
            ],
        );
        let tiers: Vec<String> = v
            .problems
            .iter()
            .map(|p| match p {
                VerdictProblem::RequiredTierFailed { tier, .. }
                | VerdictProblem::RequiredTierSkipped { tier, .. }
                | VerdictProblem::RequiredTierMissing { tier } => tier.clone(),
                VerdictProblem::NoRequiredTier | VerdictProblem::JobFailed { .. } => String::new(),
            })
            .collect();
        assert_eq!(tiers, ["a", "b", "c", "d"]);
    }

    #[test]
    fn verdicts_serialise_with_a_problem_tag() {
        let v = verdict(&req(&["install"]), &[]);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"green": false, "problems": [{"problem": "requiredTierMissing", "tier": "install"}]})
        );
        let back: Verdict = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn tier_names_and_reasons_are_validated() {
        let mut errs = ValidationErrors::default();
        TierResult {
            name: "Install".into(),
            result: TierOutcome::Pass,
            required: true,
            reason: Some("a\u{7}".into()),
        }
        .validate_into(&mut errs, "status.tiers[0]");
        assert_eq!(
            errs.paths(),
            ["status.tiers[0].name", "status.tiers[0].reason"]
        );
    }

    fn outcome() -> impl Strategy<Value = TierOutcome> {
        prop_oneof![
            Just(TierOutcome::Pass),
            Just(TierOutcome::Fail),
            Just(TierOutcome::Skip)
        ]
    }

    proptest! {
        #[test]
        fn green_means_every_required_tier_last_reported_pass(
            required in proptest::collection::vec("[a-d]", 0..4),
            reports in proptest::collection::vec(("[a-f]", outcome(), any::<bool>()), 0..8),
        ) {
            let results: Vec<TierResult> = reports.iter().map(|(n, o, r)| t(n, *o, *r)).collect();
            let v = verdict(&required, &results);
            let all_required: Vec<&String> = required.iter().chain(results.iter().filter(|r| r.required).map(|r| &r.name)).collect();
            let expected = !all_required.is_empty() && all_required.iter().all(|name| {
                results.iter().rev().find(|r| &&r.name == name).is_some_and(|r| r.result == TierOutcome::Pass)
            });
            prop_assert_eq!(v.green, expected);
            prop_assert_eq!(v.green, v.problems.is_empty());
        }
    }
}
