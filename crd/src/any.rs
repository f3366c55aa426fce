//! `AnyResource`: one resource of any kind, tagged by `kind`, for mixed multi-document files and API bodies.
//!
//! # Caveats
//! Deserialising an [`AnyResource`] first reads the document into a `serde_json::Value` (the
//! `kind` may come after `spec`), so format errors inside it lose line/column information. A
//! loader that wants `file:line:col` for every problem should deserialise a [`TypeMeta`]
//! first, then the same document again as the concrete kind (see [`TypeMeta::kind`]).

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

use crate::depprovider::DepProvider;
use crate::recipe::Recipe;
use crate::resource::{Kind, ObjectMeta, Resource, API_VERSION};
use crate::run::Run;
use crate::slotpool::SlotPool;
use crate::validation::{Validate, ValidationErrors};
use crate::warmapp::WarmApp;

/// The `apiVersion` and `kind` of a document, ignoring everything else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    /// `hearth/v1`, if the document says so.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The `kind` as written.
    #[serde(default)]
    pub kind: Option<String>,
}

impl TypeMeta {
    /// The kind, checked: `apiVersion` must be `hearth/v1` and `kind` a kind hearth knows.
    ///
    /// # Errors
    /// A lowercase message with the field path (`apiVersion: ...` or `kind: ...`).
    pub fn kind(&self) -> Result<Kind, String> {
        match self.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "apiVersion: must be {API_VERSION:?} (got {other:?})"
                ))
            }
            None => return Err(format!("apiVersion: missing (must be {API_VERSION:?})")),
        }
        let known = || Kind::ALL.map(Kind::as_str).join(", ");
        match self.kind.as_deref() {
            Some(k) => Kind::parse(k)
                .ok_or_else(|| format!("kind: unknown kind {k:?} (expected one of {})", known())),
            None => Err(format!("kind: missing (expected one of {})", known())),
        }
    }
}

/// One resource of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    /// A warm app.
    WarmApp(WarmApp),
    /// A run.
    Run(Run),
    /// A dependency provider.
    DepProvider(DepProvider),
    /// A slot pool.
    SlotPool(SlotPool),
    /// A recipe source.
    Recipe(Recipe),
}

impl AnyResource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyResource::WarmApp(_) => Kind::WarmApp,
            AnyResource::Run(_) => Kind::Run,
            AnyResource::DepProvider(_) => Kind::DepProvider,
            AnyResource::SlotPool(_) => Kind::SlotPool,
            AnyResource::Recipe(_) => Kind::Recipe,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            AnyResource::WarmApp(r) => r.meta(),
            AnyResource::Run(r) => r.meta(),
            AnyResource::DepProvider(r) => r.meta(),
            AnyResource::SlotPool(r) => r.meta(),
            AnyResource::Recipe(r) => r.meta(),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// Parses a JSON value of any kind, dispatching on `kind` (after checking `apiVersion`).
    ///
    /// # Errors
    /// A lowercase message: a missing/unknown `apiVersion` or `kind`, or the concrete kind's
    /// parse error.
    pub fn from_value(value: serde_json::Value) -> Result<AnyResource, String> {
        let tm = TypeMeta::deserialize(&value).map_err(|e| e.to_string())?;
        let kind = tm.kind()?;
        let r = match kind {
            Kind::WarmApp => serde_json::from_value(value).map(AnyResource::WarmApp),
            Kind::Run => serde_json::from_value(value).map(AnyResource::Run),
            Kind::DepProvider => serde_json::from_value(value).map(AnyResource::DepProvider),
            Kind::SlotPool => serde_json::from_value(value).map(AnyResource::SlotPool),
            Kind::Recipe => serde_json::from_value(value).map(AnyResource::Recipe),
        };
        r.map_err(|e| format!("{kind}: {e}"))
    }
}

impl Validate for AnyResource {
    fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            AnyResource::WarmApp(r) => r.validate(),
            AnyResource::Run(r) => r.validate(),
            AnyResource::DepProvider(r) => r.validate(),
            AnyResource::SlotPool(r) => r.validate(),
            AnyResource::Recipe(r) => r.validate(),
        }
    }
}

impl Serialize for AnyResource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Each kind already writes its own `kind` field.
        match self {
            AnyResource::WarmApp(r) => r.serialize(s),
            AnyResource::Run(r) => r.serialize(s),
            AnyResource::DepProvider(r) => r.serialize(s),
            AnyResource::SlotPool(r) => r.serialize(s),
            AnyResource::Recipe(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AnyResource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        AnyResource::from_value(value).map_err(D::Error::custom)
    }
}

macro_rules! from_kind {
    ($ty:ident) => {
        impl From<$ty> for AnyResource {
            fn from(r: $ty) -> Self {
                AnyResource::$ty(r)
            }
        }
    };
}
from_kind!(WarmApp);
from_kind!(Run);
from_kind!(DepProvider);
from_kind!(SlotPool);
from_kind!(Recipe);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::depprovider::DepProviderSpec;

    #[test]
    fn a_mixed_list_of_documents_parses_by_kind_and_round_trips() {
        let docs = serde_json::json!([
            {"apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "sso"}, "spec": {"recipe": "keycloak", "version": "1.0.0+26.0.0", "provider": true}},
            {"spec": {"mode": "shared", "warmApp": "sso"}, "metadata": {"name": "sso"}, "kind": "DepProvider", "apiVersion": "hearth/v1"},
            {"apiVersion": "hearth/v1", "kind": "SlotPool", "metadata": {"name": "ci"}, "spec": {"slots": 3, "portBase": 20000, "portsPerSlot": 10}}
        ]);
        let all: Vec<AnyResource> = serde_json::from_value(docs.clone()).unwrap();
        assert_eq!(
            all.iter().map(AnyResource::kind).collect::<Vec<_>>(),
            [Kind::WarmApp, Kind::DepProvider, Kind::SlotPool]
        );
        assert_eq!(
            all[1],
            AnyResource::DepProvider(DepProvider::new(
                "sso",
                DepProviderSpec::Shared {
                    warm_app: "sso".into()
                }
            ))
        );
        for r in &all {
            r.validate().unwrap();
        }
        let back = serde_json::to_value(&all).unwrap();
        let again: Vec<AnyResource> = serde_json::from_value(back.clone()).unwrap();
        assert_eq!(again, all);
        assert_eq!(back[1]["kind"], "DepProvider");
        assert_eq!(
            back[1]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k == "kind")
                .count(),
            1
        );
    }

    #[test]
    fn unknown_or_missing_kinds_and_api_versions_are_clear_errors() {
        let err = AnyResource::from_value(serde_json::json!({"apiVersion": "hearth/v1", "kind": "Pod", "metadata": {"name": "x"}})).unwrap_err();
        assert!(
            err.starts_with(
                "kind: unknown kind \"Pod\" (expected one of WarmApp, Run, DepProvider, SlotPool, Recipe)"
            ),
            "{err}"
        );
        let err =
            AnyResource::from_value(serde_json::json!({"apiVersion": "hearth/v1"})).unwrap_err();
        assert!(err.starts_with("kind: missing"), "{err}");
        let err = AnyResource::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Run"}))
            .unwrap_err();
        assert!(
            err.starts_with("apiVersion: must be \"hearth/v1\""),
            "{err}"
        );
        let err = AnyResource::from_value(serde_json::json!({"kind": "Run"})).unwrap_err();
        assert!(err.starts_with("apiVersion: missing"), "{err}");
        let err = AnyResource::from_value(serde_json::json!("text")).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn errors_inside_a_kind_name_the_kind_and_the_field() {
        let err = AnyResource::from_value(serde_json::json!({"apiVersion": "hearth/v1", "kind": "SlotPool", "metadata": {"name": "ci"}, "spec": {"slots": 3, "portbase": 1}})).unwrap_err();
        assert!(
            err.starts_with("SlotPool: unknown field `portbase`"),
            "{err}"
        );
    }

    #[test]
    fn type_meta_ignores_everything_but_api_version_and_kind() {
        let tm: TypeMeta = serde_json::from_value(
            serde_json::json!({"apiVersion": "hearth/v1", "kind": "Run", "spec": {"x": 1}}),
        )
        .unwrap();
        assert_eq!(tm.kind(), Ok(Kind::Run));
    }

    const STATE_FILE: &str = r#"
apiVersion: hearth/v1
kind: WarmApp
metadata:
  name: web
  labels: { team: qa }
spec:
  recipe: web
  version: 1.11.0+1.29.0
  health:
    http: { service: app, port: 8080, path: /healthz, expectedCodes: [200, 204] }
    readyTimeout: 2m
  promote: onGreen
  refresh: latest
  env:
    LOG_LEVEL: debug
---
apiVersion: hearth/v1
kind: WarmApp
metadata: { name: sso }
spec: { recipe: keycloak, version: 1.0.0+26.0.0, provider: true, health: { tcp: { port: 8443 } } }
---
apiVersion: hearth/v1
kind: DepProvider
metadata: { name: sso }
spec: { mode: shared, warmApp: sso }
---
apiVersion: hearth/v1
kind: DepProvider
metadata: { name: db }
spec:
  mode: perRun
  recipe: postgres
  version: 16.2.0
---
apiVersion: hearth/v1
kind: SlotPool
metadata: { name: ci }
spec: { slots: 3, portBase: 20000, portsPerSlot: 10, waitTimeout: 15m }
"#;

    #[test]
    fn a_yaml_state_file_with_every_operator_kind_loads_and_validates() {
        let all: Vec<AnyResource> = serde_saphyr::from_multiple(STATE_FILE).unwrap();
        assert_eq!(
            all.iter().map(|r| (r.kind(), r.name())).collect::<Vec<_>>(),
            [
                (Kind::WarmApp, "web"),
                (Kind::WarmApp, "sso"),
                (Kind::DepProvider, "sso"),
                (Kind::DepProvider, "db"),
                (Kind::SlotPool, "ci")
            ]
        );
        for r in &all {
            r.validate().unwrap();
        }
        let AnyResource::WarmApp(web) = &all[0] else {
            panic!("not a warm app")
        };
        assert_eq!(
            web.spec.health.http.as_ref().unwrap().expected_codes,
            [200, 204]
        );
        assert_eq!(
            web.spec.health.ready_timeout,
            Some(std::time::Duration::from_secs(120))
        );
        // and back to YAML and in again
        let yaml = serde_saphyr::to_string_multiple(&all).unwrap();
        let again: Vec<AnyResource> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(again, all);
    }

    #[test]
    fn a_yaml_typo_read_as_the_concrete_kind_is_reported_with_its_line() {
        let doc = "apiVersion: hearth/v1\nkind: SlotPool\nmetadata: { name: ci }\nspec:\n  slots: 3\n  portbase: 20000\n";
        let tm: TypeMeta = serde_saphyr::from_str(doc).unwrap();
        assert_eq!(tm.kind(), Ok(Kind::SlotPool));
        let err = serde_saphyr::from_str::<SlotPool>(doc)
            .unwrap_err()
            .to_string();
        assert!(err.contains("portbase"), "{err}");
        assert!(err.contains("line 6 column 3"), "{err}");
        // through AnyResource the problem is still named, without the line
        let err = serde_saphyr::from_str::<AnyResource>(doc)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `portbase`"), "{err}");
    }

    fn one_of_each() -> Vec<AnyResource> {
        serde_saphyr::from_multiple(
            r#"
apiVersion: hearth/v1
kind: WarmApp
metadata: { name: x }
spec: { recipe: web, version: 1.0.0 }
---
apiVersion: hearth/v1
kind: Run
metadata: { name: x }
spec: { recipe: web, version: 1.0.0, owner: { pid: 1, processStartTime: 1, host: h, bootId: ab } }
---
apiVersion: hearth/v1
kind: DepProvider
metadata: { name: x }
spec: { mode: perRun, recipe: db, version: 1.0.0 }
---
apiVersion: hearth/v1
kind: SlotPool
metadata: { name: x }
spec: { slots: 1, portBase: 1000 }
---
apiVersion: hearth/v1
kind: Recipe
metadata: { name: x }
spec: { git: { url: "file:///srv/x.git" } }
"#,
        )
        .unwrap()
    }

    fn rename(r: &mut AnyResource, name: String) {
        match r {
            AnyResource::WarmApp(x) => x.metadata.name = name,
            AnyResource::Run(x) => x.metadata.name = name,
            AnyResource::DepProvider(x) => x.metadata.name = name,
            AnyResource::SlotPool(x) => x.metadata.name = name,
            AnyResource::Recipe(x) => x.metadata.name = name,
        }
    }

    #[test]
    fn every_kind_accepts_names_up_to_its_limit_and_rejects_one_more() {
        use crate::names::*;
        for mut r in one_of_each() {
            let limit = match r.kind() {
                Kind::WarmApp => MAX_WARM_APP_NAME_LEN,
                Kind::Run => MAX_RUN_NAME_LEN,
                Kind::DepProvider => MAX_DEP_PROVIDER_NAME_LEN,
                Kind::SlotPool => MAX_SLOT_POOL_NAME_LEN,
                Kind::Recipe => MAX_RECIPE_NAME_LEN,
            };
            rename(&mut r, "n".repeat(limit));
            r.validate().unwrap();
            for bad in [
                "n".repeat(limit + 1),
                "N".into(),
                "n_1".into(),
                "1n".into(),
                "n-".into(),
                String::new(),
            ] {
                rename(&mut r, bad.clone());
                assert_eq!(
                    r.validate().unwrap_err().paths(),
                    ["metadata.name"],
                    "{} {bad:?}",
                    r.kind()
                );
            }
        }
    }

    #[test]
    fn a_document_whose_kind_field_disagrees_with_its_type_is_invalid() {
        for r in one_of_each() {
            let mut v = serde_json::to_value(&r).unwrap();
            v["apiVersion"] = "hearth/v2".into();
            let other = if r.kind() == Kind::Run {
                "WarmApp"
            } else {
                "Run"
            };
            v["kind"] = other.into();
            let err = match r.kind() {
                Kind::WarmApp => serde_json::from_value::<WarmApp>(v).unwrap().validate(),
                Kind::Run => serde_json::from_value::<Run>(v).unwrap().validate(),
                Kind::DepProvider => serde_json::from_value::<DepProvider>(v).unwrap().validate(),
                Kind::SlotPool => serde_json::from_value::<SlotPool>(v).unwrap().validate(),
                Kind::Recipe => serde_json::from_value::<Recipe>(v).unwrap().validate(),
            }
            .unwrap_err();
            assert_eq!(err.paths(), ["apiVersion", "kind"], "{}", r.kind());
        }
    }

    proptest::proptest! {
        #[test]
        fn env_values_of_any_text_survive_a_yaml_round_trip(
            values in proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,8}", "\\PC{0,20}|yes|no|null|~|1\\.0|0x1F|'q'|\"d\"|: x|- y|#c", 0..6)
        ) {
            let mut all = one_of_each();
            if let AnyResource::WarmApp(w) = &mut all[0] {
                w.spec.env = values.into_iter().collect();
            }
            let yaml = serde_saphyr::to_string_multiple(&all).expect("serialises");
            let again: Vec<AnyResource> = serde_saphyr::from_multiple(&yaml).expect("parses back");
            proptest::prop_assert_eq!(again, all);
        }
    }
}
