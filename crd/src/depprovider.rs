//! `DepProvider`: a dependency runs may request — a shared warm app, or a recipe deployed per run.
//!
//! ```yaml
//! apiVersion: hearth/v1
//! kind: DepProvider
//! metadata: { name: sso }
//! spec: { mode: shared, warmApp: sso }
//! ---
//! apiVersion: hearth/v1
//! kind: DepProvider
//! metadata: { name: db }
//! spec: { mode: perRun, recipe: postgres, version: 16.2.0, env: { POSTGRES_DB: app } }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::condition::{validate_conditions, Condition};
use crate::names::{self, StackName};
use crate::names::{MAX_DEP_PROVIDER_NAME_LEN, MAX_RECIPE_NAME_LEN, MAX_WARM_APP_NAME_LEN};
use crate::resource::{impl_resource, is_default, validate_envelope, Kind, ObjectMeta};
use crate::run::Run;
use crate::validation::{check_dns_label, Validate, ValidationErrors};
use crate::version::check_version;
use crate::warmapp::validate_env;

/// A dependency provider resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepProvider {
    /// Always `hearth/v1`.
    pub api_version: String,
    /// Always `DepProvider`.
    pub kind: Kind,
    /// Name (at most 26 characters: it is part of per-run dep stack names).
    pub metadata: ObjectMeta,
    /// How the dependency is provided.
    pub spec: DepProviderSpec,
    /// What hearth observed; omitted when empty.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: DepProviderStatus,
}

impl_resource!(DepProvider, DepProviderSpec, DepProviderStatus);

/// How a dependency is provided, tagged by `mode`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "mode",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum DepProviderSpec {
    /// One long-lived instance shared by all runs: a WarmApp with `provider: true`.
    Shared {
        /// The WarmApp serving the dependency.
        warm_app: String,
    },
    /// A fresh instance per parent run, named `hd-<dep>-<hash(run, dep, ref)>`.
    PerRun {
        /// The recipe to deploy.
        recipe: String,
        /// Its version.
        version: String,
        /// Environment overrides.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
}

impl DepProvider {
    /// The stack that serves this dependency for `run`: the warm provider's `hp-<warmApp>`
    /// in shared mode, `hd-<dep>-<hash(run, dep, ref)>` in per-run mode.
    ///
    /// # Errors
    /// [`names::Error`] when a name is invalid (validate first).
    pub fn stack_for_run(&self, run: &Run) -> Result<StackName, names::Error> {
        match &self.spec {
            DepProviderSpec::Shared { warm_app } => names::warm_stack(warm_app, true),
            DepProviderSpec::PerRun { .. } => names::dep_stack(
                &run.metadata.name,
                &self.metadata.name,
                run.spec.git_ref.as_deref(),
            ),
        }
    }
}

impl DepProviderSpec {
    /// The mode without its parameters.
    pub fn mode(&self) -> DepMode {
        match self {
            DepProviderSpec::Shared { .. } => DepMode::Shared,
            DepProviderSpec::PerRun { .. } => DepMode::PerRun,
        }
    }
}

/// The two ways a dependency is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DepMode {
    /// Shared warm provider.
    Shared,
    /// Deployed per parent run.
    PerRun,
}

/// Whether a provider can be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepProviderPhase {
    /// Not checked yet.
    #[default]
    Pending,
    /// Usable: the shared warm app is Ready, or the per-run recipe/version is in the catalogue.
    Ready,
    /// Not usable now (warm app missing/not ready, not a provider, unknown recipe); runs
    /// requesting it wait or fail with `lastError`.
    Unavailable,
}

/// What hearth observed about a provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepProviderStatus {
    /// Whether it can be used.
    #[serde(default)]
    pub phase: DepProviderPhase,
    /// Ready...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The last error, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Validate for DepProvider {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        validate_envelope(
            &mut errs,
            &self.api_version,
            self.kind,
            Kind::DepProvider,
            &self.metadata,
            MAX_DEP_PROVIDER_NAME_LEN,
        );
        match &self.spec {
            DepProviderSpec::Shared { warm_app } => {
                errs.check(
                    "spec.warmApp",
                    check_dns_label(warm_app, MAX_WARM_APP_NAME_LEN),
                );
            }
            DepProviderSpec::PerRun {
                recipe,
                version,
                env,
            } => {
                errs.check("spec.recipe", check_dns_label(recipe, MAX_RECIPE_NAME_LEN));
                errs.check("spec.version", check_version(version));
                validate_env(&mut errs, "spec.env", env);
            }
        }
        validate_conditions(&mut errs, "status.conditions", &self.status.conditions);
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(spec: serde_json::Value) -> Result<DepProvider, serde_json::Error> {
        serde_json::from_value(
            serde_json::json!({"apiVersion": "hearth/v1", "kind": "DepProvider", "metadata": {"name": "sso"}, "spec": spec}),
        )
    }

    #[test]
    fn shared_and_per_run_modes_parse_from_a_mode_tag() {
        let d = parse(serde_json::json!({"mode": "shared", "warmApp": "sso"})).unwrap();
        assert_eq!(
            d.spec,
            DepProviderSpec::Shared {
                warm_app: "sso".into()
            }
        );
        assert_eq!(d.spec.mode(), DepMode::Shared);
        d.validate().unwrap();
        let d = parse(serde_json::json!({"mode": "perRun", "recipe": "postgres", "version": "16.2.0", "env": {"POSTGRES_DB": "app"}})).unwrap();
        assert_eq!(d.spec.mode(), DepMode::PerRun);
        d.validate().unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({"mode": "perRun", "recipe": "postgres", "version": "16.2.0", "env": {"POSTGRES_DB": "app"}})
        );
        assert!(json.get("status").is_none());
        assert_eq!(serde_json::from_value::<DepProvider>(json).unwrap(), d);
    }

    #[test]
    fn unknown_modes_missing_fields_and_typos_are_parse_errors() {
        let err = parse(serde_json::json!({"mode": "global", "warmApp": "sso"})).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `global`"),
            "{err}"
        );
        let err = parse(serde_json::json!({"mode": "perRun", "recipe": "postgres"})).unwrap_err();
        assert!(err.to_string().contains("missing field `version`"), "{err}");
        let err = parse(serde_json::json!({"mode": "shared", "warmapp": "sso"})).unwrap_err();
        assert!(err.to_string().contains("warmapp"), "{err}");
        let err = parse(serde_json::json!({"warmApp": "sso"})).unwrap_err();
        assert!(err.to_string().contains("missing field `mode`"), "{err}");
    }

    #[test]
    fn provider_names_leave_room_for_the_dep_stack_hash() {
        let mut d = DepProvider::new(
            "d".repeat(MAX_DEP_PROVIDER_NAME_LEN),
            DepProviderSpec::Shared {
                warm_app: "sso".into(),
            },
        );
        d.validate().unwrap();
        d.metadata.name.push('d');
        assert_eq!(d.validate().unwrap_err().paths(), ["metadata.name"]);
    }

    #[test]
    fn shared_deps_resolve_to_the_warm_provider_and_per_run_deps_to_a_run_specific_stack() {
        use crate::owner::Owner;
        use crate::run::RunSpec;
        let mk_run = |name: &str, git_ref: Option<&str>| {
            Run::new(
                name,
                RunSpec {
                    recipe: "web".into(),
                    version: "1.0.0".into(),
                    git_ref: git_ref.map(Into::into),
                    owner: Owner {
                        kind: crate::OwnerKind::Pid,
                        pid: 1,
                        process_start_time: 1,
                        host: "h".into(),
                        boot_id: "ab".into(),
                    },
                    lease: None,
                    slot_pool: None,
                    deps: vec![],
                    required_tiers: vec![],
                    deploy: false,
                    finish: false,
                    failure: None,
                    content: None,
                    target: None,
                },
            )
        };
        let shared = DepProvider::new(
            "sso",
            DepProviderSpec::Shared {
                warm_app: "keycloak".into(),
            },
        );
        let a = mk_run("web-aaaaaaaaaa", Some("abc"));
        let b = mk_run("web-bbbbbbbbbb", Some("abc"));
        assert_eq!(shared.stack_for_run(&a).unwrap().as_str(), "hp-keycloak");
        assert_eq!(
            shared.stack_for_run(&a).unwrap(),
            shared.stack_for_run(&b).unwrap()
        );
        let per_run = DepProvider::new(
            "db",
            DepProviderSpec::PerRun {
                recipe: "postgres".into(),
                version: "16.2.0".into(),
                env: BTreeMap::new(),
            },
        );
        let sa = per_run.stack_for_run(&a).unwrap();
        assert!(sa.as_str().starts_with("hd-db-"));
        assert_eq!(sa, per_run.stack_for_run(&a).unwrap());
        assert_ne!(sa, per_run.stack_for_run(&b).unwrap());
        assert_ne!(
            sa,
            per_run
                .stack_for_run(&mk_run("web-aaaaaaaaaa", Some("def")))
                .unwrap()
        );
    }

    #[test]
    fn every_per_run_problem_is_reported() {
        let d = DepProvider::new(
            "db",
            DepProviderSpec::PerRun {
                recipe: "Postgres".into(),
                version: "16".into(),
                env: [("A-B".to_string(), "x".to_string())].into(),
            },
        );
        assert_eq!(
            d.validate().unwrap_err().paths(),
            ["spec.recipe", "spec.version", "spec.env[\"A-B\"]"]
        );
        let d = DepProvider::new(
            "sso",
            DepProviderSpec::Shared {
                warm_app: "-sso".into(),
            },
        );
        assert_eq!(d.validate().unwrap_err().paths(), ["spec.warmApp"]);
    }
}
