//! `Run`: one CI run — its recipe/version, owner, lease, slot, deps, stack, tier results and verdict.
//!
//! Who writes what: `hearth run start` creates the spec (owner, lease, deps, required tiers);
//! `hearth run finish` sets `spec.finish`; heartbeats, tier reports and everything hearth
//! observes go to `status`, so they never bump `metadata.generation`.
//!
//! The lease is split accordingly: `spec.lease.ttl` (a humantime string such as `10m`) is the
//! contract, `status.lastHeartbeatMs` (unix milliseconds) is renewed by heartbeats; the lease
//! expires `ttl` after the last heartbeat (or after creation when none came yet).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::condition::{validate_conditions, Condition};
use crate::content::Content;
use crate::depprovider::DepMode;
use crate::names::{self, BaseDomain, StackName};
use crate::names::{
    MAX_DEP_PROVIDER_NAME_LEN, MAX_RECIPE_NAME_LEN, MAX_RUN_NAME_LEN, MAX_SLOT_POOL_NAME_LEN,
};
use crate::owner::{Owner, OwnerKind};
use crate::resource::{impl_resource, is_default, validate_envelope, Kind, ObjectMeta};
use crate::validation::{check_dns_label, check_unique, Validate, ValidationErrors};
use crate::verdict::{check_tier_name, verdict, TierResult, Verdict};
use crate::version::check_version;

/// A run resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Run {
    /// Always `hearth/v1`.
    pub api_version: String,
    /// Always `Run`.
    pub kind: Kind,
    /// Name: the run id (see `names::run_id`), at most 39 characters.
    pub metadata: ObjectMeta,
    /// What the CI job asked for.
    pub spec: RunSpec,
    /// What happened; omitted when empty.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: RunStatus,
}

impl_resource!(Run, RunSpec, RunStatus);

/// What a CI job asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunSpec {
    /// The recipe under test.
    pub recipe: String,
    /// The recipe version under test.
    pub version: String,
    /// The source revision (e.g. a git SHA); part of per-run dep names.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The process that owns the run; when it dies, the run is orphaned and swept.
    pub owner: Owner,
    /// An optional lease that must be renewed by heartbeats (for owners on other hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseSpec>,
    /// The slot pool to take a slot from; no slot when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_pool: Option<String>,
    /// DepProvider names the run needs, deployed/resolved in this order, torn down in reverse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
    /// Tiers that must pass for the run to be green (more may be reported as required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_tiers: Vec<String>,
    /// Whether hearth deploys the run's stack from the catalogue (else the CI harness deploys
    /// under the assigned stack name and hearth adopts it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub deploy: bool,
    /// Set by `hearth run finish`: tear down the stack, then the deps, then release the slot.
    #[serde(default, skip_serializing_if = "is_default")]
    pub finish: bool,
    /// Set with `finish` when the CI job itself failed (`hearth run exec`: its command exited
    /// non-zero), why: such a run is never green, whatever its tiers said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What the run tests, snapshotted by hearth at start (a release's tag commit, a commit,
    /// a working tree): what its stack is rendered from and what a green finish promotes.
    /// Absent for a recipe hearth cannot snapshot (a `recipe.yml` catalogue directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Set by `hearth run deploy`: what the run's stack is to run now (another version, a
    /// candidate, the warm canonical); the reconciler redeploys it in place. Absent: the
    /// run's own `version`/`content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DeployTarget>,
}

/// What `hearth run deploy` asked the run's stack to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployTarget {
    /// The version rendered (a published version, or the version a candidate carries).
    pub version: String,
    /// The exact content, when hearth snapshotted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Where it came from, for humans: `version`, `candidate`, `commit`, `canonical`, `run`.
    pub from: String,
}

/// The lease contract of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    /// How long the run lives without a heartbeat (humantime, e.g. `10m`); must be > 0.
    #[serde(with = "crate::duration")]
    pub ttl: Duration,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunPhase {
    /// Accepted; waiting for a slot.
    #[default]
    Pending,
    /// Slot held; per-run deps (and the stack, with `deploy`) are being deployed.
    Deploying,
    /// Deployed (or handed to the CI harness); tiers are being run and reported.
    Running,
    /// `finish` requested: graceful teardown of the stack, then deps, then slot release.
    Finishing,
    /// Finished, teardown verified, verdict green. Terminal.
    Succeeded,
    /// Finished, teardown verified, verdict not green (or the deploy failed). Terminal.
    Failed,
    /// Teardown left objects behind (`status.residuals`); hearth keeps retrying. Not terminal.
    TeardownFailed,
    /// The lease expired without a heartbeat; swept with forced teardown. Terminal.
    Expired,
    /// The owner process died; swept with forced teardown. Terminal.
    Orphaned,
}

impl RunPhase {
    /// Whether the run is over and everything of it is gone (no more reconciles needed).
    pub fn is_terminal(self) -> bool {
        // exhaustive on purpose: a new phase must decide
        match self {
            RunPhase::Pending | RunPhase::Deploying | RunPhase::Running => false,
            RunPhase::Finishing | RunPhase::TeardownFailed => false,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Expired | RunPhase::Orphaned => true,
        }
    }
}

/// The slot a run holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotAssignment {
    /// The pool.
    pub pool: String,
    /// The slot index (0-based).
    pub index: u32,
    /// First port of the slot's block.
    pub port_base: u32,
    /// Number of ports in the block.
    pub ports: u32,
}

/// How one requested dep was resolved for this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepBinding {
    /// The DepProvider name.
    pub name: String,
    /// Shared (a warm provider) or deployed for this run.
    pub mode: DepMode,
    /// The stack serving it (`hp-<warmapp>` or `hd-<dep>-<hash>`).
    pub stack_name: String,
    /// The domain to reach it under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Whether it is ready.
    #[serde(default)]
    pub ready: bool,
}

/// What happened to a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Where the run is.
    #[serde(default)]
    pub phase: RunPhase,
    /// Ready, Progressing, TornDown...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The last error, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The stack name hearth assigned (`hr-<run>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_name: Option<String>,
    /// The run's domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The slot held, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotAssignment>,
    /// Resolved deps, in `spec.deps` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<DepBinding>,
    /// Reported tier results, one per tier name (a new report replaces the old one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierResult>,
    /// The verdict, computed when the run finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Last heartbeat (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms: Option<u64>,
    /// When the slot was granted and deployment began (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When the run became Running (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at_ms: Option<u64>,
    /// When the run reached a terminal phase (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Objects a teardown left behind (`kind/name`), cleared when a retry removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residuals: Vec<String>,
    /// What the run's stack runs now (set by each deploy the reconciler made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DeployTarget>,
}

impl RunStatus {
    /// Records a tier result, replacing an earlier report of the same tier.
    pub fn record_tier(&mut self, result: TierResult) {
        match self.tiers.iter_mut().find(|t| t.name == result.name) {
            Some(t) => *t = result,
            None => self.tiers.push(result),
        }
    }
}

impl Run {
    /// The stack assigned to this run: `hr-<name>`.
    ///
    /// # Errors
    /// [`names::Error`] when the name is invalid (validate first).
    pub fn stack_name(&self) -> Result<StackName, names::Error> {
        names::run_stack(&self.metadata.name)
    }

    /// The run's domain: `<stack>.<base>`.
    ///
    /// # Errors
    /// [`names::Error`] when the name is invalid (validate first).
    pub fn domain(&self, base: &BaseDomain) -> Result<String, names::Error> {
        Ok(names::domain(&self.stack_name()?, base))
    }

    /// The verdict from `spec.requiredTiers` and `status.tiers` (see [`verdict`]).
    /// A job failure (`spec.failure`) makes it not green too
    /// ([`VerdictProblem::JobFailed`](crate::verdict::VerdictProblem::JobFailed)).
    pub fn compute_verdict(&self) -> Verdict {
        let mut v = verdict(&self.spec.required_tiers, &self.status.tiers);
        if let Some(reason) = &self.spec.failure {
            v.green = false;
            v.problems.push(crate::verdict::VerdictProblem::JobFailed {
                reason: reason.clone(),
            });
        }
        v
    }

    /// When the lease expires (unix milliseconds): `ttl` after the last heartbeat, or after
    /// creation when no heartbeat came yet. `None` when the run has no lease.
    pub fn lease_expires_at_ms(&self) -> Option<u64> {
        let lease = self.spec.lease.as_ref()?;
        let since = self
            .status
            .last_heartbeat_ms
            .unwrap_or(self.metadata.creation_timestamp_ms);
        let ttl = u64::try_from(lease.ttl.as_millis()).unwrap_or(u64::MAX);
        Some(since.saturating_add(ttl))
    }

    /// Whether the lease has expired at `now_ms` (never, for runs without a lease).
    pub fn lease_expired(&self, now_ms: u64) -> bool {
        self.lease_expires_at_ms().is_some_and(|at| now_ms >= at)
    }
}

/// Checks a source ref: 1–255 characters, no whitespace or control characters.
fn check_ref(r: &str) -> Result<(), String> {
    if r.is_empty() {
        return Err("must not be empty (omit it instead)".into());
    }
    if r.len() > 255 {
        return Err(format!("must be at most 255 characters (got {})", r.len()));
    }
    if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

impl Validate for Run {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        validate_envelope(
            &mut errs,
            &self.api_version,
            self.kind,
            Kind::Run,
            &self.metadata,
            MAX_RUN_NAME_LEN,
        );
        let s = &self.spec;
        errs.check(
            "spec.recipe",
            check_dns_label(&s.recipe, MAX_RECIPE_NAME_LEN),
        );
        errs.check("spec.version", check_version(&s.version));
        if let Some(r) = &s.git_ref {
            errs.check("spec.ref", check_ref(r));
        }
        s.owner.validate_into(&mut errs, "spec.owner");
        if let Some(l) = &s.lease {
            if l.ttl.is_zero() {
                errs.push("spec.lease.ttl", "must be greater than zero");
            }
        } else if s.owner.kind == OwnerKind::Lease {
            errs.push(
                "spec.lease",
                "required when spec.owner.kind is lease (the run lives as long as its heartbeats: give a ttl)",
            );
        }
        if let Some(p) = &s.slot_pool {
            errs.check("spec.slotPool", check_dns_label(p, MAX_SLOT_POOL_NAME_LEN));
        }
        for (i, d) in s.deps.iter().enumerate() {
            errs.check(
                format!("spec.deps[{i}]"),
                check_dns_label(d, MAX_DEP_PROVIDER_NAME_LEN),
            );
        }
        check_unique(&mut errs, "spec.deps", &s.deps, |d| d.clone(), "dep");
        for (i, t) in s.required_tiers.iter().enumerate() {
            errs.check(format!("spec.requiredTiers[{i}]"), check_tier_name(t));
        }
        check_unique(
            &mut errs,
            "spec.requiredTiers",
            &s.required_tiers,
            |t| t.clone(),
            "tier",
        );
        if let Some(c) = &s.content {
            c.validate_into(&mut errs, "spec.content");
        }
        if let Some(f) = &s.failure {
            errs.check("spec.failure", crate::validation::check_text(f, 1024));
        }
        if let Some(t) = &s.target {
            errs.check("spec.target.version", check_version(&t.version));
            if let Some(c) = &t.content {
                c.validate_into(&mut errs, "spec.target.content");
            }
        }

        let st = &self.status;
        validate_conditions(&mut errs, "status.conditions", &st.conditions);
        for (i, t) in st.tiers.iter().enumerate() {
            t.validate_into(&mut errs, &format!("status.tiers[{i}]"));
        }
        check_unique(
            &mut errs,
            "status.tiers",
            &st.tiers,
            |t| t.name.clone(),
            "tier",
        );
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::verdict::TierOutcome;

    fn run() -> Run {
        let mut r = Run::new(
            "web-0123456789",
            RunSpec {
                recipe: "web".into(),
                version: "1.2.0+1.29.0".into(),
                git_ref: Some("9f8e7d6c".into()),
                owner: Owner {
                    kind: crate::OwnerKind::Pid,
                    pid: 4242,
                    process_start_time: 987654,
                    host: "ci-1".into(),
                    boot_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
                },
                lease: Some(LeaseSpec {
                    ttl: Duration::from_secs(600),
                }),
                slot_pool: Some("ci".into()),
                deps: vec!["sso".into(), "db".into()],
                required_tiers: vec!["install".into()],
                deploy: true,
                finish: false,
                failure: None,
                content: None,
                target: None,
            },
        );
        r.metadata.creation_timestamp_ms = 1_000_000;
        r
    }

    fn paths(r: &Run) -> Vec<String> {
        r.validate()
            .err()
            .map(|e| e.errors.into_iter().map(|e| e.path).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_complete_run_validates_and_round_trips_with_ref_and_humantime_ttl() {
        let mut r = run();
        r.status.record_tier(TierResult {
            name: "install".into(),
            result: TierOutcome::Pass,
            required: true,
            reason: None,
        });
        r.status.phase = RunPhase::TeardownFailed;
        r.status.residuals = vec!["volume/hr-web-0123456789_data".into()];
        r.validate().unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["spec"]["ref"], "9f8e7d6c");
        assert_eq!(json["spec"]["lease"]["ttl"], "10m");
        assert_eq!(json["spec"]["owner"]["processStartTime"], 987654);
        assert_eq!(json["spec"]["slotPool"], "ci");
        assert_eq!(json["spec"]["requiredTiers"][0], "install");
        assert_eq!(json["status"]["phase"], "TeardownFailed");
        assert_eq!(json["status"]["tiers"][0]["result"], "pass");
        assert_eq!(serde_json::from_value::<Run>(json).unwrap(), r);
    }

    #[test]
    fn a_lease_owned_run_needs_a_lease() {
        let mut r = run();
        r.spec.owner.kind = OwnerKind::Lease;
        r.spec.lease = None;
        assert_eq!(paths(&r), ["spec.lease"]);
        r.spec.lease = Some(LeaseSpec {
            ttl: Duration::from_secs(30),
        });
        assert!(paths(&r).is_empty());
    }

    #[test]
    fn every_spec_problem_is_reported_with_its_path() {
        let mut r = run();
        r.metadata.name = "r".repeat(MAX_RUN_NAME_LEN + 1);
        r.spec.recipe = "Web".into();
        r.spec.version = "1.2".into();
        r.spec.git_ref = Some("a b".into());
        r.spec.owner.pid = 0;
        r.spec.lease = Some(LeaseSpec {
            ttl: Duration::ZERO,
        });
        r.spec.slot_pool = Some("ci_pool".into());
        r.spec.deps = vec!["sso".into(), "SSO".into(), "sso".into()];
        r.spec.required_tiers = vec!["install".into(), "install".into(), "".into()];
        assert_eq!(
            paths(&r),
            [
                "metadata.name",
                "spec.recipe",
                "spec.version",
                "spec.ref",
                "spec.owner.pid",
                "spec.lease.ttl",
                "spec.slotPool",
                "spec.deps[1]",
                "spec.deps[2]",
                "spec.requiredTiers[2]",
                "spec.requiredTiers[1]"
            ]
        );
    }

    #[test]
    fn an_empty_ref_and_overlong_dep_names_are_invalid() {
        let mut r = run();
        r.spec.git_ref = Some(String::new());
        r.spec.deps = vec!["d".repeat(MAX_DEP_PROVIDER_NAME_LEN + 1)];
        assert_eq!(paths(&r), ["spec.ref", "spec.deps[0]"]);
    }

    #[test]
    fn duplicate_or_invalid_tier_reports_are_invalid() {
        let mut r = run();
        r.status.tiers = vec![
            TierResult {
                name: "install".into(),
                result: TierOutcome::Pass,
                required: true,
                reason: None,
            },
            TierResult {
                name: "install".into(),
                result: TierOutcome::Fail,
                required: true,
                reason: None,
            },
            TierResult {
                name: "Bad".into(),
                result: TierOutcome::Skip,
                required: false,
                reason: None,
            },
        ];
        assert_eq!(paths(&r), ["status.tiers[2].name", "status.tiers[1]"]);
    }

    #[test]
    fn recording_a_tier_again_replaces_the_earlier_report() {
        let mut r = run();
        r.status.record_tier(TierResult {
            name: "install".into(),
            result: TierOutcome::Fail,
            required: true,
            reason: None,
        });
        assert!(!r.compute_verdict().green);
        r.status.record_tier(TierResult {
            name: "install".into(),
            result: TierOutcome::Pass,
            required: true,
            reason: None,
        });
        assert_eq!(r.status.tiers.len(), 1);
        assert!(r.compute_verdict().green);
    }

    #[test]
    fn the_lease_expires_ttl_after_the_last_heartbeat_or_creation() {
        let mut r = run();
        assert_eq!(r.lease_expires_at_ms(), Some(1_600_000));
        assert!(!r.lease_expired(1_599_999));
        assert!(r.lease_expired(1_600_000));
        r.status.last_heartbeat_ms = Some(2_000_000);
        assert_eq!(r.lease_expires_at_ms(), Some(2_600_000));
        assert!(!r.lease_expired(2_000_001));
        r.spec.lease = None;
        assert!(!r.lease_expired(u64::MAX));
    }

    #[test]
    fn a_run_gets_an_hr_stack_and_domain() {
        let r = run();
        assert_eq!(r.stack_name().unwrap().as_str(), "hr-web-0123456789");
        let base = BaseDomain::parse("ci.test").unwrap();
        assert_eq!(r.domain(&base).unwrap(), "hr-web-0123456789.ci.test");
    }

    #[test]
    fn only_finished_swept_or_verified_runs_are_terminal() {
        use RunPhase::*;
        for p in [Pending, Deploying, Running, Finishing, TeardownFailed] {
            assert!(!p.is_terminal(), "{p:?}");
        }
        for p in [Succeeded, Failed, Expired, Orphaned] {
            assert!(p.is_terminal(), "{p:?}");
        }
    }

    #[test]
    fn a_run_without_owner_or_with_a_bad_ttl_string_does_not_parse() {
        let base = serde_json::json!({"apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": "r"},
            "spec": {"recipe": "web", "version": "1.0.0"}});
        let err = serde_json::from_value::<Run>(base).unwrap_err();
        assert!(err.to_string().contains("missing field `owner`"), "{err}");
        let bad = serde_json::json!({"apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": "r"},
            "spec": {"recipe": "web", "version": "1.0.0", "owner": {"pid": 1, "processStartTime": 1, "host": "h", "bootId": "ab"}, "lease": {"ttl": "soon"}}});
        let err = serde_json::from_value::<Run>(bad).unwrap_err();
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn a_job_failure_makes_a_run_with_every_tier_passed_not_green_and_is_validated() {
        let mut r = run();
        r.status.record_tier(TierResult {
            name: "install".into(),
            result: TierOutcome::Pass,
            required: false,
            reason: None,
        });
        assert!(r.compute_verdict().green);
        r.spec.failure = Some("command exited 3".into());
        let v = r.compute_verdict();
        assert!(!v.green);
        assert_eq!(
            v.problems,
            [crate::verdict::VerdictProblem::JobFailed {
                reason: "command exited 3".into()
            }]
        );
        assert!(paths(&r).is_empty(), "{:?}", paths(&r));
        r.spec.failure = Some("a\nb".into());
        assert_eq!(paths(&r), ["spec.failure"]);
    }
}
