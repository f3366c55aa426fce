//! `WarmApp`: a long-lived canonical deployment of a recipe at its last known-good version.
//!
//! ```yaml
//! apiVersion: hearth/v1
//! kind: WarmApp
//! metadata: { name: web }
//! spec:
//!   recipe: web
//!   version: 1.11.0+1.29.0
//!   health:
//!     http: { service: app, port: 8080, path: /healthz, expectedCodes: [200, 204] }
//!     readyTimeout: 2m
//!   promote: onGreen
//!   refresh: pinned
//!   env: { LOG_LEVEL: debug }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::condition::{validate_conditions, Condition};
use crate::names::{self, BaseDomain, StackName};
use crate::names::{check_service_name, MAX_RECIPE_NAME_LEN, MAX_WARM_APP_NAME_LEN};
use crate::resource::{impl_resource, is_default, validate_envelope, Kind, ObjectMeta};
use crate::validation::{
    check_dns_label, check_domain, check_env_key, check_port, Validate, ValidationErrors,
};
use crate::version::{check_version, RecipeVersion};

/// A warm app resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmApp {
    /// Always `hearth/v1`.
    pub api_version: String,
    /// Always `WarmApp`.
    pub kind: Kind,
    /// Name (≤ 39 characters, see `names`), labels, generation, resourceVersion.
    pub metadata: ObjectMeta,
    /// What the operator wants.
    pub spec: WarmAppSpec,
    /// What hearth observed; omitted when empty.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: WarmAppStatus,
}

impl_resource!(WarmApp, WarmAppSpec, WarmAppStatus);

/// The desired state of a warm app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmAppSpec {
    /// The recipe (catalogue entry) to deploy.
    pub recipe: String,
    /// The canonical version to keep deployed (a recipe version, e.g. `1.11.0+1.29.0`).
    pub version: String,
    /// The domain to serve under; derived from the stack name and the base domain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// How hearth decides the app is healthy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: HealthProbe,
    /// Whether this app serves as a dependency provider for runs (its stack is `hp-<name>`
    /// instead of `hw-<name>`, so a provider never collides with a canonical app).
    #[serde(default, skip_serializing_if = "is_default")]
    pub provider: bool,
    /// What happens when a run of this recipe goes green.
    #[serde(default)]
    pub promote: PromotePolicy,
    /// Allow promotions (automatic or by `hearth promote`) to an older version.
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_downgrade: bool,
    /// What the nightly refresh does with the version.
    #[serde(default)]
    pub refresh: RefreshPolicy,
    /// Environment overrides passed to the recipe's stack.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whether a green run of a candidate (an unreleased commit or working tree) may become
    /// this app's content; by default only runs of published versions are promoted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub promote_candidates: bool,
    /// The exact content served (a snapshot's digest), written by a promotion of a run that
    /// tested it; in force while `version` is the version it was promoted with (a state file
    /// that declares another version drops it). Absent: `version` rendered from the catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::content::Content>,
}

/// How a warm app's health is judged. Swarm task health (every task running and, where the
/// image has a healthcheck, healthy) is always required; at most one extra probe may be added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthProbe {
    /// An HTTP GET that must answer with one of the expected codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP port that must accept connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// How long a new version has to prove healthy before hearth rolls back
    /// (humantime, e.g. `2m`); [`HealthProbe::DEFAULT_READY_TIMEOUT`] when absent.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ready_timeout: Option<Duration>,
}

impl HealthProbe {
    /// The health deadline when `readyTimeout` is not set.
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

    /// The effective health deadline.
    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout.unwrap_or(Self::DEFAULT_READY_TIMEOUT)
    }
}

/// An HTTP health probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// The recipe service to probe; the recipe's first service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The container port (default 80).
    #[serde(default = "default_http_port")]
    pub port: u32,
    /// The request path; must start with `/`.
    pub path: String,
    /// Status codes that count as healthy (default `[200]`).
    #[serde(default = "default_expected_codes")]
    pub expected_codes: Vec<u32>,
}

fn default_http_port() -> u32 {
    80
}

fn default_expected_codes() -> Vec<u32> {
    vec![200]
}

/// A TCP health probe: the port must accept a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// The recipe service to probe; the recipe's first service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The container port.
    pub port: u32,
}

/// What happens when a run of the app's recipe goes green.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PromotePolicy {
    /// A green run's version becomes the canonical version (forward only unless
    /// `allowDowngrade`), through the health-gated upgrade.
    OnGreen,
    /// Only `hearth promote` changes the version (the default: nothing moves by surprise).
    #[default]
    Manual,
    /// The version is changed only by editing the spec.
    Never,
}

/// What the nightly refresh does with the version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RefreshPolicy {
    /// Keep `spec.version`; the refresh only repairs drift.
    #[default]
    Pinned,
    /// Advance to the newest catalogue version (health-gated, rolled back on failure).
    Latest,
}

/// Where a warm app is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WarmAppPhase {
    /// Accepted, nothing deployed yet.
    #[default]
    Pending,
    /// The first deployment is in progress.
    Deploying,
    /// Deployed at `observedVersion` and healthy.
    Ready,
    /// A new version is proving healthy; the previous one keeps serving.
    Upgrading,
    /// The new version failed its health deadline; going back to `previousKnownGood`.
    RollingBack,
    /// Deployed but not healthy, or drifted; hearth is repairing it.
    Degraded,
    /// hearth cannot deploy it (e.g. unknown recipe or version); needs the operator.
    Failed,
    /// The resource was deleted; its stack is being torn down.
    Deleting,
}

/// What hearth observed about a warm app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmAppStatus {
    /// Where the app is in its life.
    #[serde(default)]
    pub phase: WarmAppPhase,
    /// Ready, Progressing, Degraded...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The version actually deployed and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_version: Option<String>,
    /// The last version that was Ready before the current one (rollback target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_known_good: Option<String>,
    /// The stack hearth deploys the app as (`hw-<name>` or `hp-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_name: Option<String>,
    /// The domain the app is served under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The last error, lowercase, cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The declared version and the last promotion hearth made (see [`crate::promotion`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<crate::promotion::PromotionRecord>,
}

impl Validate for WarmApp {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        validate_envelope(
            &mut errs,
            &self.api_version,
            self.kind,
            Kind::WarmApp,
            &self.metadata,
            MAX_WARM_APP_NAME_LEN,
        );
        self.spec.validate_into(&mut errs, "spec");
        validate_conditions(&mut errs, "status.conditions", &self.status.conditions);
        for (path, v) in [
            ("status.observedVersion", &self.status.observed_version),
            ("status.previousKnownGood", &self.status.previous_known_good),
        ] {
            if let Some(v) = v {
                errs.check(path, check_version(v));
            }
        }
        errs.into_result()
    }
}

/// What asked for a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromotionTrigger {
    /// A green run of the app's recipe finished (automatic; needs `promote: onGreen`).
    GreenRun,
    /// An operator ran `hearth promote` (refused only by `promote: never`).
    Operator,
}

/// What a permitted promotion does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Promotion {
    /// The app is already at that version: nothing to do.
    AlreadyCurrent,
    /// Forward in version order.
    Upgrade,
    /// Backward in version order (only with `allowDowngrade`).
    Downgrade,
}

/// Why a promotion was refused. Not retryable as is: the policy, the spec or the version
/// must change first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The app's promote policy does not allow this trigger.
    #[error(
        "promotion of {app} refused: promote policy is {policy:?} and the trigger was {trigger:?}"
    )]
    PolicyForbadePromotion {
        /// The WarmApp.
        app: String,
        /// Its policy.
        policy: PromotePolicy,
        /// What asked.
        trigger: PromotionTrigger,
    },
    /// The target (or the current spec) version did not parse.
    #[error("promotion of {app} refused: {source}")]
    VersionRejected {
        /// The WarmApp.
        app: String,
        /// The parse error.
        #[source]
        source: crate::version::Error,
    },
    /// The target is older than the current version and `allowDowngrade` is false.
    #[error("promotion of {app} refused: {to} is older than {from} and allowDowngrade is false")]
    DowngradeRefused {
        /// The WarmApp.
        app: String,
        /// The current `spec.version`.
        from: String,
        /// The requested version.
        to: String,
    },
}

impl WarmApp {
    /// The stack this app is deployed as: `hw-<name>`, or `hp-<name>` when `provider`.
    ///
    /// # Errors
    /// [`names::Error`] when the name is invalid (validate first).
    pub fn stack_name(&self) -> Result<StackName, names::Error> {
        names::warm_stack(&self.metadata.name, self.spec.provider)
    }

    /// The domain the app serves under: `spec.domain` when set, else `<stack>.<base>`.
    ///
    /// # Errors
    /// [`names::Error`] when the name is invalid (validate first).
    pub fn domain(&self, base: &BaseDomain) -> Result<String, names::Error> {
        match &self.spec.domain {
            Some(d) => Ok(d.clone()),
            None => Ok(names::domain(&self.stack_name()?, base)),
        }
    }

    /// Decides whether `trigger` may set `spec.version` to `to`.
    ///
    /// # Guarantees
    /// Pure. A green run promotes only under `promote: onGreen`; an operator promotes under
    /// anything but `never`. Either way the version only moves forward in recipe-version
    /// order unless `allowDowngrade` is set. (`hearth rollback` to `previousKnownGood` is not
    /// a promotion and is not decided here.)
    ///
    /// # Errors
    /// [`Error`] naming why the promotion is refused.
    pub fn check_promotion(&self, to: &str, trigger: PromotionTrigger) -> Result<Promotion, Error> {
        let app = || self.metadata.name.clone();
        let allowed = match (self.spec.promote, trigger) {
            (PromotePolicy::OnGreen, _) => true,
            (PromotePolicy::Manual, PromotionTrigger::Operator) => true,
            (PromotePolicy::Manual, PromotionTrigger::GreenRun) => false,
            (PromotePolicy::Never, _) => false,
        };
        if !allowed {
            return Err(Error::PolicyForbadePromotion {
                app: app(),
                policy: self.spec.promote,
                trigger,
            });
        }
        let parse = |v: &str| {
            RecipeVersion::parse(v).map_err(|source| Error::VersionRejected { app: app(), source })
        };
        let (from, target) = (parse(&self.spec.version)?, parse(to)?);
        match target.cmp(&from) {
            std::cmp::Ordering::Equal => Ok(Promotion::AlreadyCurrent),
            std::cmp::Ordering::Greater => Ok(Promotion::Upgrade),
            std::cmp::Ordering::Less if self.spec.allow_downgrade => Ok(Promotion::Downgrade),
            std::cmp::Ordering::Less => Err(Error::DowngradeRefused {
                app: app(),
                from: self.spec.version.clone(),
                to: to.into(),
            }),
        }
    }
}

impl WarmAppSpec {
    /// Adds every problem of this spec under `path`.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
        errs.check(
            format!("{path}.recipe"),
            check_dns_label(&self.recipe, MAX_RECIPE_NAME_LEN),
        );
        errs.check(format!("{path}.version"), check_version(&self.version));
        if let Some(d) = &self.domain {
            errs.check(format!("{path}.domain"), check_domain(d, 253));
        }
        self.health.validate_into(errs, &format!("{path}.health"));
        validate_env(errs, &format!("{path}.env"), &self.env);
        if let Some(c) = &self.content {
            c.validate_into(errs, &format!("{path}.content"));
        }
    }
}

impl HealthProbe {
    /// Adds every problem of this probe under `path`.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
        if self.http.is_some() && self.tcp.is_some() {
            errs.push(path, "set either http or tcp, not both");
        }
        if let Some(h) = &self.http {
            let p = format!("{path}.http");
            if let Some(s) = &h.service {
                errs.check(format!("{p}.service"), check_service_name(s));
            }
            errs.check(format!("{p}.port"), check_port(h.port));
            if !h.path.starts_with('/') {
                errs.push(format!("{p}.path"), "must start with '/'");
            } else if h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errs.push(
                    format!("{p}.path"),
                    "must not contain whitespace or control characters",
                );
            } else if h.path.len() > 2048 {
                errs.push(format!("{p}.path"), "must be at most 2048 characters");
            }
            if h.expected_codes.is_empty() {
                errs.push(
                    format!("{p}.expectedCodes"),
                    "must list at least one status code",
                );
            }
            for (i, code) in h.expected_codes.iter().enumerate() {
                if !(100..=599).contains(code) {
                    errs.push(
                        format!("{p}.expectedCodes[{i}]"),
                        format!("must be an HTTP status code 100-599 (got {code})"),
                    );
                }
            }
            crate::validation::check_unique(
                errs,
                &format!("{p}.expectedCodes"),
                &h.expected_codes,
                |c| *c,
                "status code",
            );
        }
        if let Some(t) = &self.tcp {
            let p = format!("{path}.tcp");
            if let Some(s) = &t.service {
                errs.check(format!("{p}.service"), check_service_name(s));
            }
            errs.check(format!("{p}.port"), check_port(t.port));
        }
        if self.ready_timeout == Some(Duration::ZERO) {
            errs.push(format!("{path}.readyTimeout"), "must be greater than zero");
        }
    }
}

/// What a caller that may not see env values sees in their place (issue 19).
pub const REDACTED_VALUE: &str = "<redacted>";

impl WarmApp {
    /// Replaces every env value with [`REDACTED_VALUE`]; the names stay visible.
    pub fn redact_env(&mut self) {
        for value in self.spec.env.values_mut() {
            *value = REDACTED_VALUE.to_string();
        }
    }
}

/// Variables hearth sets for every stack it deploys; overriding them would break the naming
/// guarantees (e.g. an overridden `STACK_NAME` could collide with another stack).
pub const RESERVED_ENV_KEYS: [&str; 3] = ["STACK_NAME", "VERSION", "DOMAIN"];

/// Checks env overrides: valid keys that hearth does not reserve (see [`RESERVED_ENV_KEYS`],
/// plus every `HEARTH_*` key); values may be multi-line but without NUL, ≤ 32 KiB.
pub(crate) fn validate_env(
    errs: &mut ValidationErrors,
    path: &str,
    env: &BTreeMap<String, String>,
) {
    for (k, v) in env {
        errs.check(format!("{path}[{k:?}]"), check_env_key(k));
        if RESERVED_ENV_KEYS.contains(&k.as_str()) || k.starts_with("HEARTH_") {
            errs.push(
                format!("{path}[{k:?}]"),
                "is set by hearth and cannot be overridden",
            );
        }
        if v.contains('\0') {
            errs.push(format!("{path}[{k:?}]"), "value must not contain NUL");
        } else if v.len() > 32 * 1024 {
            errs.push(
                format!("{path}[{k:?}]"),
                "value must be at most 32768 bytes",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn app() -> WarmApp {
        WarmApp::new(
            "web",
            WarmAppSpec {
                recipe: "web".into(),
                version: "1.11.0+1.29.0".into(),
                domain: None,
                health: HealthProbe::default(),
                provider: false,
                promote: PromotePolicy::OnGreen,
                allow_downgrade: false,
                refresh: RefreshPolicy::Pinned,
                env: BTreeMap::new(),
                promote_candidates: false,
                content: None,
            },
        )
    }

    fn paths(app: &WarmApp) -> Vec<String> {
        app.validate()
            .err()
            .map(|e| e.errors.into_iter().map(|e| e.path).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_minimal_yaml_like_document_parses_with_defaults_and_validates() {
        let a: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
            "spec": {"recipe": "web", "version": "1.0.0"}
        }))
        .unwrap();
        assert_eq!(a.spec.promote, PromotePolicy::Manual);
        assert_eq!(a.spec.refresh, RefreshPolicy::Pinned);
        assert_eq!(
            a.spec.health.ready_timeout(),
            HealthProbe::DEFAULT_READY_TIMEOUT
        );
        assert_eq!(a.status, WarmAppStatus::default());
        a.validate().unwrap();
    }

    #[test]
    fn the_full_example_round_trips_through_json_in_camel_case() {
        let mut a = app();
        a.spec.health.http = Some(HttpProbe {
            service: Some("app".into()),
            port: 8080,
            path: "/healthz".into(),
            expected_codes: vec![200, 204],
        });
        a.spec.health.ready_timeout = Some(Duration::from_secs(120));
        a.spec.env.insert("LOG_LEVEL".into(), "debug".into());
        a.spec.allow_downgrade = true;
        a.status.previous_known_good = Some("1.10.0".into());
        a.status.phase = WarmAppPhase::Ready;
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["apiVersion"], "hearth/v1");
        assert_eq!(json["kind"], "WarmApp");
        assert_eq!(json["spec"]["promote"], "onGreen");
        assert_eq!(json["spec"]["allowDowngrade"], true);
        assert_eq!(json["spec"]["health"]["http"]["expectedCodes"][1], 204);
        assert_eq!(json["spec"]["health"]["readyTimeout"], "2m");
        assert_eq!(json["status"]["previousKnownGood"], "1.10.0");
        assert_eq!(json["status"]["phase"], "Ready");
        let back: WarmApp = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
        back.validate().unwrap();
    }

    #[test]
    fn an_empty_status_is_omitted_when_serialised() {
        let json = serde_json::to_value(app()).unwrap();
        assert!(json.get("status").is_none(), "{json}");
    }

    #[test]
    fn unknown_spec_fields_are_parse_errors_so_typos_are_caught() {
        let err = serde_json::from_value::<WarmApp>(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
            "spec": {"recipe": "web", "version": "1.0.0", "promte": "onGreen"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `promte`"), "{err}");
        let err = serde_json::from_value::<WarmApp>(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
            "spec": {"recipe": "web", "version": "1.0.0", "promote": "always"}
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `always`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_api_version_kind_and_name_are_each_reported() {
        let mut a = app();
        a.api_version = "hearth/v2".into();
        a.kind = Kind::Run;
        a.metadata.name = "Web".into();
        a.metadata.labels.insert("bad key".into(), "v".into());
        assert_eq!(
            paths(&a),
            [
                "apiVersion",
                "kind",
                "metadata.name",
                "metadata.labels[\"bad key\"]"
            ]
        );
        a.metadata.name = "w".repeat(MAX_WARM_APP_NAME_LEN + 1);
        assert!(paths(&a).contains(&"metadata.name".to_string()));
    }

    #[test]
    fn recipe_version_and_domain_are_checked() {
        let mut a = app();
        a.spec.recipe = "r".repeat(MAX_RECIPE_NAME_LEN + 1);
        a.spec.version = "latest".into();
        a.spec.domain = Some("Web.Example".into());
        assert_eq!(paths(&a), ["spec.recipe", "spec.version", "spec.domain"]);
        a.spec.recipe = "web".into();
        a.spec.version = "1.0.0+x".into();
        a.spec.domain = Some("web.example.test".into());
        assert_eq!(paths(&a), ["spec.version"]);
    }

    #[test]
    fn every_http_probe_problem_is_reported_with_its_path() {
        let mut a = app();
        a.spec.health.http = Some(HttpProbe {
            service: Some("_bad".into()),
            port: 0,
            path: "healthz".into(),
            expected_codes: vec![200, 700, 99, 200],
        });
        a.spec.health.ready_timeout = Some(Duration::ZERO);
        let err = a.validate().unwrap_err();
        assert_eq!(
            err.paths(),
            [
                "spec.health.http.service",
                "spec.health.http.port",
                "spec.health.http.path",
                "spec.health.http.expectedCodes[1]",
                "spec.health.http.expectedCodes[2]",
                "spec.health.http.expectedCodes[3]",
                "spec.health.readyTimeout"
            ]
        );
        assert_eq!(
            err.errors[3].message,
            "must be an HTTP status code 100-599 (got 700)"
        );
        assert_eq!(err.errors[5].message, "duplicate status code");
        for e in &err.errors {
            assert!(e.message.starts_with(char::is_lowercase), "{e}");
        }
    }

    #[test]
    fn http_paths_with_spaces_and_empty_code_lists_are_invalid() {
        let mut a = app();
        a.spec.health.http = Some(HttpProbe {
            service: None,
            port: 65536,
            path: "/a b".into(),
            expected_codes: vec![],
        });
        assert_eq!(
            paths(&a),
            [
                "spec.health.http.port",
                "spec.health.http.path",
                "spec.health.http.expectedCodes"
            ]
        );
    }

    #[test]
    fn http_and_tcp_probes_are_mutually_exclusive_and_tcp_ports_are_checked() {
        let mut a = app();
        a.spec.health.http = Some(HttpProbe {
            service: None,
            port: 80,
            path: "/".into(),
            expected_codes: vec![200],
        });
        a.spec.health.tcp = Some(TcpProbe {
            service: None,
            port: 70000,
        });
        assert_eq!(paths(&a), ["spec.health", "spec.health.tcp.port"]);
        a.spec.health.http = None;
        a.spec.health.tcp = Some(TcpProbe {
            service: Some("db".into()),
            port: 5432,
        });
        a.validate().unwrap();
    }

    #[test]
    fn env_override_keys_must_be_shell_names() {
        let mut a = app();
        a.spec.env.insert("GOOD_1".into(), "x\ny".into());
        a.spec.env.insert("1BAD".into(), "x".into());
        a.spec.env.insert("BAD-KEY".into(), "x".into());
        a.spec.env.insert("NUL".into(), "a\0b".into());
        assert_eq!(
            paths(&a),
            [
                "spec.env[\"1BAD\"]",
                "spec.env[\"BAD-KEY\"]",
                "spec.env[\"NUL\"]"
            ]
        );
    }

    #[test]
    fn canonical_and_provider_apps_get_different_stacks_and_domains() {
        let base = BaseDomain::parse("hearth.test").unwrap();
        let mut a = app();
        assert_eq!(a.stack_name().unwrap().as_str(), "hw-web");
        assert_eq!(a.domain(&base).unwrap(), "hw-web.hearth.test");
        a.spec.provider = true;
        assert_eq!(a.stack_name().unwrap().as_str(), "hp-web");
        assert_eq!(a.domain(&base).unwrap(), "hp-web.hearth.test");
        a.spec.domain = Some("web.example.test".into());
        assert_eq!(a.domain(&base).unwrap(), "web.example.test");
    }

    #[test]
    fn green_runs_promote_only_forward_and_only_under_on_green() {
        let mut a = app();
        assert_eq!(
            a.check_promotion("1.11.0+1.30.0", PromotionTrigger::GreenRun),
            Ok(Promotion::Upgrade)
        );
        assert_eq!(
            a.check_promotion("1.11.0+1.29.0", PromotionTrigger::GreenRun),
            Ok(Promotion::AlreadyCurrent)
        );
        let err = a
            .check_promotion("1.11.0+1.28.0", PromotionTrigger::GreenRun)
            .unwrap_err();
        assert_eq!(err.to_string(), "promotion of web refused: 1.11.0+1.28.0 is older than 1.11.0+1.29.0 and allowDowngrade is false");
        a.spec.allow_downgrade = true;
        assert_eq!(
            a.check_promotion("1.11.0+1.28.0", PromotionTrigger::GreenRun),
            Ok(Promotion::Downgrade)
        );
        a.spec.promote = PromotePolicy::Manual;
        assert!(matches!(
            a.check_promotion("2.0.0", PromotionTrigger::GreenRun),
            Err(Error::PolicyForbadePromotion { .. })
        ));
        assert_eq!(
            a.check_promotion("2.0.0", PromotionTrigger::Operator),
            Ok(Promotion::Upgrade)
        );
        a.spec.promote = PromotePolicy::Never;
        assert!(matches!(
            a.check_promotion("2.0.0", PromotionTrigger::Operator),
            Err(Error::PolicyForbadePromotion { .. })
        ));
    }

    #[test]
    fn promotion_to_an_unparsable_version_is_refused() {
        let err = app()
            .check_promotion("latest", PromotionTrigger::Operator)
            .unwrap_err();
        assert!(matches!(err, Error::VersionRejected { .. }), "{err}");
        assert!(err.to_string().contains("recipe part \"latest\""), "{err}");
    }

    #[test]
    fn env_overrides_cannot_change_what_hearth_sets() {
        let mut a = app();
        for k in ["STACK_NAME", "VERSION", "DOMAIN", "HEARTH_RUN"] {
            a.spec.env.insert(k.into(), "x".into());
        }
        a.spec.env.insert("STACK_NAME_SUFFIX".into(), "x".into());
        let err = a.validate().unwrap_err();
        assert_eq!(
            err.paths(),
            [
                "spec.env[\"DOMAIN\"]",
                "spec.env[\"HEARTH_RUN\"]",
                "spec.env[\"STACK_NAME\"]",
                "spec.env[\"VERSION\"]"
            ]
        );
        assert_eq!(
            err.errors[0].message,
            "is set by hearth and cannot be overridden"
        );
    }

    #[test]
    fn status_versions_must_parse_too() {
        let mut a = app();
        a.status.observed_version = Some("1.0.0".into());
        a.status.previous_known_good = Some("nope".into());
        assert_eq!(paths(&a), ["status.previousKnownGood"]);
    }
}
