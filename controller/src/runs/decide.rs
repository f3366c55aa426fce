//! Pure run decisions: teardown order, the phase after a teardown, tier parsing, CI-facing output.

use std::collections::BTreeMap;

use crd::run::{DepBinding, SlotAssignment};
use crd::verdict::check_tier_name;
use crd::{DepMode, Run, RunPhase, TierOutcome, TierResult};
use serde::Serialize;

/// The stacks a finishing run tears down, in order: its own stack, then its per-run deps in
/// reverse order of `spec.deps` (shared providers are never torn down by a run).
pub fn teardown_order(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let own = run
        .status
        .stack_name
        .clone()
        .or_else(|| run.stack_name().ok().map(|s| s.into_string()));
    out.extend(own);
    out.extend(
        run.status
            .deps
            .iter()
            .rev()
            .filter(|d| d.mode == DepMode::PerRun)
            .map(|d| d.stack_name.clone()),
    );
    out
}

/// The phase a finishing run ends in: TeardownFailed while anything remains, else Succeeded
/// when the verdict is green, Failed otherwise.
pub fn phase_after_teardown(run: &Run, residuals: &[String]) -> RunPhase {
    if !residuals.is_empty() {
        RunPhase::TeardownFailed
    } else if run.compute_verdict().green {
        RunPhase::Succeeded
    } else {
        RunPhase::Failed
    }
}

/// Parses a `--tier` argument: `NAME=pass`, `NAME=fail[:reason]`, `NAME=skip[:reason]`.
/// `required` is set when the run lists the tier in `spec.requiredTiers`.
///
/// # Errors
/// A lowercase message naming what is wrong.
pub fn parse_tier(arg: &str, required_tiers: &[String]) -> Result<TierResult, String> {
    let (name, rest) = arg
        .split_once('=')
        .ok_or_else(|| format!("tier {arg:?}: expected NAME=pass|fail[:reason]|skip[:reason]"))?;
    check_tier_name(name).map_err(|e| format!("tier name {name:?}: {e}"))?;
    let (outcome, reason) = match rest.split_once(':') {
        Some((o, r)) => (o, Some(r.to_string()).filter(|r| !r.is_empty())),
        None => (rest, None),
    };
    let result = match outcome {
        "pass" => TierOutcome::Pass,
        "fail" => TierOutcome::Fail,
        "skip" => TierOutcome::Skip,
        other => {
            return Err(format!(
                "tier {name}: unknown result {other:?} (expected pass, fail or skip)"
            ))
        }
    };
    if result == TierOutcome::Pass && reason.is_some() {
        return Err(format!("tier {name}: a pass takes no reason"));
    }
    Ok(TierResult {
        name: name.to_string(),
        result,
        required: required_tiers.iter().any(|t| t == name),
        reason,
    })
}

/// What `hearth run start` prints (`-o json`, or `-o env` for `eval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The run id.
    pub run: String,
    /// The stack name assigned to the run.
    pub stack: String,
    /// The run's domain.
    pub domain: String,
    /// The slot held, if any.
    pub slot: Option<SlotAssignment>,
    /// Each dep's endpoint.
    pub deps: Vec<DepBinding>,
    /// What the run tests, as snapshotted at its start (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crd::Content>,
}

impl Started {
    /// From a started run's status.
    pub fn from_run(run: &Run) -> Started {
        Started {
            run: run.metadata.name.clone(),
            stack: run.status.stack_name.clone().unwrap_or_default(),
            domain: run.status.domain.clone().unwrap_or_default(),
            slot: run.status.slot.clone(),
            deps: run.status.deps.clone(),
            content: run.spec.content.clone(),
        }
    }

    /// `KEY=value` lines for `eval "$(hearth run start ... -o env)"`; values single-quoted.
    pub fn to_env(&self) -> String {
        self.env_vars()
            .iter()
            .map(|(k, v)| format!("{k}='{}'\n", v.replace('\'', r"'\''")))
            .collect()
    }

    /// The run's variables (`HEARTH_RUN_ID`, `HEARTH_STACK`, …), as [`Started::to_env`] prints
    /// them and `hearth run exec` exports them.
    pub fn env_vars(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("HEARTH_RUN_ID".into(), self.run.clone());
        vars.insert("HEARTH_STACK".into(), self.stack.clone());
        vars.insert("HEARTH_DOMAIN".into(), self.domain.clone());
        if let Some(s) = &self.slot {
            vars.insert("HEARTH_POOL".into(), s.pool.clone());
            vars.insert("HEARTH_SLOT".into(), s.index.to_string());
            vars.insert("HEARTH_PORT_BASE".into(), s.port_base.to_string());
            vars.insert("HEARTH_PORTS".into(), s.ports.to_string());
        }
        if let Some(c) = &self.content {
            vars.insert("HEARTH_CONTENT_DIGEST".into(), c.digest.clone());
            if let Some(commit) = &c.commit {
                vars.insert("HEARTH_CONTENT_COMMIT".into(), commit.clone());
            }
        }
        for d in &self.deps {
            let key = d.name.to_uppercase().replace('-', "_");
            vars.insert(format!("HEARTH_DEP_{key}_STACK"), d.stack_name.clone());
            if let Some(domain) = &d.domain {
                vars.insert(format!("HEARTH_DEP_{key}_DOMAIN"), domain.clone());
            }
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crd::{Owner, RunSpec};

    fn run() -> Run {
        let mut r = Run::new(
            "web-0123456789",
            RunSpec {
                recipe: "web".into(),
                version: "1.0.0".into(),
                git_ref: None,
                owner: Owner::default(),
                lease: None,
                slot_pool: None,
                deps: vec!["db".into(), "sso".into(), "cache".into()],
                required_tiers: vec!["install".into()],
                deploy: true,
                finish: false,
                failure: None,
                content: None,
                target: None,
            },
        );
        let dep = |name: &str, mode, stack: &str| DepBinding {
            name: name.into(),
            mode,
            stack_name: stack.into(),
            domain: Some(format!("{stack}.test")),
            ready: true,
        };
        r.status.deps = vec![
            dep("db", DepMode::PerRun, "hd-db-aaaaaaaaaaaa"),
            dep("sso", DepMode::Shared, "hp-sso"),
            dep("cache", DepMode::PerRun, "hd-cache-bbbbbbbbbbbb"),
        ];
        r
    }

    #[test]
    fn the_run_stack_goes_first_then_per_run_deps_in_reverse_and_shared_deps_never() {
        assert_eq!(
            teardown_order(&run()),
            [
                "hr-web-0123456789",
                "hd-cache-bbbbbbbbbbbb",
                "hd-db-aaaaaaaaaaaa"
            ]
        );
    }

    #[test]
    fn residuals_keep_a_run_in_teardown_failed_whatever_its_verdict() {
        let mut r = run();
        r.status
            .record_tier(parse_tier("install=pass", &r.spec.required_tiers).unwrap());
        assert_eq!(
            phase_after_teardown(&r, &["volume/x".into()]),
            RunPhase::TeardownFailed
        );
        assert_eq!(phase_after_teardown(&r, &[]), RunPhase::Succeeded);
        r.status
            .record_tier(parse_tier("install=skip:dep not ready", &r.spec.required_tiers).unwrap());
        assert_eq!(phase_after_teardown(&r, &[]), RunPhase::Failed);
    }

    #[test]
    fn tier_arguments_parse_with_reasons_and_bad_ones_say_why() {
        let t = parse_tier("custom=skip:sso not ready", &[]).unwrap();
        assert_eq!(t.result, TierOutcome::Skip);
        assert_eq!(t.reason.as_deref(), Some("sso not ready"));
        assert!(!t.required);
        assert!(
            parse_tier("install=pass", &["install".into()])
                .unwrap()
                .required
        );
        assert!(parse_tier("install", &[])
            .unwrap_err()
            .contains("expected NAME="));
        assert!(parse_tier("install=ok", &[])
            .unwrap_err()
            .contains("unknown result"));
        assert!(parse_tier("Bad=pass", &[]).is_err());
        assert!(parse_tier("x=pass:why", &[])
            .unwrap_err()
            .contains("no reason"));
    }

    #[test]
    fn env_output_is_eval_safe_and_names_each_dep() {
        let mut r = run();
        r.status.stack_name = Some("hr-web-0123456789".into());
        r.status.domain = Some("it's.test".into());
        let env = Started::from_run(&r).to_env();
        assert!(env.contains("HEARTH_RUN_ID='web-0123456789'\n"), "{env}");
        assert!(env.contains("HEARTH_DOMAIN='it'\\''s.test'\n"), "{env}");
        assert!(
            env.contains("HEARTH_DEP_DB_STACK='hd-db-aaaaaaaaaaaa'\n"),
            "{env}"
        );
        assert!(
            env.contains("HEARTH_DEP_SSO_DOMAIN='hp-sso.test'\n"),
            "{env}"
        );
    }
}
