//! Checks across resources: references resolve, names and domains are unique, promotion targets are unambiguous.
//!
//! [`Validate`](crate::validation::Validate) checks one resource alone; a state file (or the
//! whole store) must also hang together. [`check_set`] is pure and reports every problem with
//! the index of the resource it belongs to, so a loader can point at the document.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::any::AnyResource;
use crate::depprovider::DepProviderSpec;
use crate::names::BaseDomain;
use crate::resource::Kind;
use crate::warmapp::PromotePolicy;

/// One problem in a set of resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    /// Position of the offending resource in the input.
    pub index: usize,
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// The field, e.g. `spec.warmApp`.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: {}: {}",
            self.kind, self.name, self.path, self.message
        )
    }
}

/// Every problem found across a set of resources. Not retryable: the set must be fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Inconsistencies {
    /// The problems, in input order of the offending resource.
    pub problems: Vec<Inconsistency>,
}

impl fmt::Display for Inconsistencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inconsistent resources ({} problems)",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "; {p}")?;
        }
        Ok(())
    }
}

/// Checks that a set of resources hangs together.
///
/// # Rules
/// - no two resources of one kind share a name;
/// - a shared DepProvider names an existing WarmApp that has `provider: true`;
/// - a Run's deps name existing DepProviders and its slot pool an existing SlotPool;
/// - no two WarmApps serve the same domain (explicit `spec.domain`s, and, when `base` is
///   given, derived domains too);
/// - at most one WarmApp per recipe has `promote: onGreen`, so a green run has exactly one
///   promotion target.
///
/// # Errors
/// [`Inconsistencies`] listing every problem.
pub fn check_set(
    resources: &[AnyResource],
    base: Option<&BaseDomain>,
) -> Result<(), Inconsistencies> {
    let mut out = Inconsistencies::default();
    let mut push = |index: usize, r: &AnyResource, path: &str, message: String| {
        out.problems.push(Inconsistency {
            index,
            kind: r.kind(),
            name: r.name().to_string(),
            path: path.to_string(),
            message,
        });
    };

    let mut first: HashMap<(Kind, &str), usize> = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        if let Some(j) = first.get(&(r.kind(), r.name())) {
            push(
                i,
                r,
                "metadata.name",
                format!("duplicate {} name (first at resource {})", r.kind(), j + 1),
            );
        } else {
            first.insert((r.kind(), r.name()), i);
        }
    }
    let find = |kind: Kind, name: &str| first.get(&(kind, name)).map(|i| &resources[*i]);

    let mut domains: BTreeMap<String, usize> = BTreeMap::new();
    let mut on_green: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in resources.iter().enumerate() {
        match r {
            AnyResource::DepProvider(d) => {
                if let DepProviderSpec::Shared { warm_app } = &d.spec {
                    match find(Kind::WarmApp, warm_app) {
                        None => push(
                            i,
                            r,
                            "spec.warmApp",
                            format!("no WarmApp named {warm_app:?}"),
                        ),
                        Some(AnyResource::WarmApp(w)) if !w.spec.provider => push(
                            i,
                            r,
                            "spec.warmApp",
                            format!(
                                "WarmApp {warm_app:?} is not a provider (set provider: true on it)"
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            AnyResource::Run(run) => {
                for (k, dep) in run.spec.deps.iter().enumerate() {
                    if find(Kind::DepProvider, dep).is_none() {
                        push(
                            i,
                            r,
                            &format!("spec.deps[{k}]"),
                            format!("no DepProvider named {dep:?}"),
                        );
                    }
                }
                if let Some(pool) = &run.spec.slot_pool {
                    if find(Kind::SlotPool, pool).is_none() {
                        push(i, r, "spec.slotPool", format!("no SlotPool named {pool:?}"));
                    }
                }
            }
            AnyResource::WarmApp(w) => {
                let domain = match (&w.spec.domain, base) {
                    (Some(d), _) => Some(d.clone()),
                    (None, Some(b)) => w.domain(b).ok(),
                    (None, None) => None,
                };
                if let Some(d) = domain {
                    if let Some(j) = domains.get(&d) {
                        push(
                            i,
                            r,
                            "spec.domain",
                            format!(
                                "domain {d:?} is already served by WarmApp {:?}",
                                resources[*j].name()
                            ),
                        );
                    } else {
                        domains.insert(d, i);
                    }
                }
                if w.spec.promote == PromotePolicy::OnGreen {
                    if let Some(j) = on_green.get(w.spec.recipe.as_str()) {
                        push(
                            i,
                            r,
                            "spec.promote",
                            format!(
                                "WarmApp {:?} already takes green runs of recipe {:?} (promote: onGreen)",
                                resources[*j].name(),
                                w.spec.recipe
                            ),
                        );
                    } else {
                        on_green.insert(&w.spec.recipe, i);
                    }
                }
            }
            // A WarmApp may name a Recipe or a recipe of the `--catalogue` directory, so a
            // recipe name is checked when rendering, not here.
            AnyResource::SlotPool(_) | AnyResource::Recipe(_) => {}
        }
    }
    if out.problems.is_empty() {
        Ok(())
    } else {
        out.problems.sort_by_key(|p| p.index);
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(yaml: &str) -> Vec<AnyResource> {
        serde_saphyr::from_multiple(yaml).unwrap()
    }

    const GOOD: &str = r#"
apiVersion: hearth/v1
kind: WarmApp
metadata: { name: web }
spec: { recipe: web, version: 1.0.0, promote: onGreen }
---
apiVersion: hearth/v1
kind: WarmApp
metadata: { name: web-sso }
spec: { recipe: web, version: 1.0.0, provider: true }
---
apiVersion: hearth/v1
kind: DepProvider
metadata: { name: sso }
spec: { mode: shared, warmApp: web-sso }
---
apiVersion: hearth/v1
kind: SlotPool
metadata: { name: ci }
spec: { slots: 1, portBase: 20000 }
---
apiVersion: hearth/v1
kind: Run
metadata: { name: web-0123456789 }
spec:
  recipe: web
  version: 1.0.0
  owner: { pid: 1, processStartTime: 2, host: h, bootId: ab }
  deps: [sso]
  slotPool: ci
"#;

    fn messages(e: &Inconsistencies) -> Vec<String> {
        e.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_consistent_set_passes_even_with_a_canonical_and_a_provider_of_one_recipe() {
        let set = load(GOOD);
        check_set(&set, Some(&BaseDomain::parse("hearth.test").unwrap())).unwrap();
    }

    #[test]
    fn dangling_references_are_each_reported_at_their_field() {
        let mut set = load(GOOD);
        set.retain(|r| r.kind() == Kind::Run || r.kind() == Kind::WarmApp && r.name() == "web");
        set.push(load("apiVersion: hearth/v1\nkind: DepProvider\nmetadata: { name: other }\nspec: { mode: shared, warmApp: web }\n").remove(0));
        set.push(load("apiVersion: hearth/v1\nkind: DepProvider\nmetadata: { name: gone }\nspec: { mode: shared, warmApp: nope }\n").remove(0));
        let err = check_set(&set, None).unwrap_err();
        assert_eq!(
            messages(&err),
            [
                "Run/web-0123456789: spec.deps[0]: no DepProvider named \"sso\"",
                "Run/web-0123456789: spec.slotPool: no SlotPool named \"ci\"",
                "DepProvider/other: spec.warmApp: WarmApp \"web\" is not a provider (set provider: true on it)",
                "DepProvider/gone: spec.warmApp: no WarmApp named \"nope\"",
            ]
        );
        assert_eq!(err.problems[3].index, 3);
    }

    #[test]
    fn duplicate_names_of_one_kind_are_reported_but_equal_names_of_different_kinds_are_fine() {
        let mut set = load(GOOD);
        set.push(set[0].clone());
        let err = check_set(&set, None).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert_eq!(err.problems[0].path, "metadata.name");
        assert_eq!(
            err.problems[0].message,
            "duplicate WarmApp name (first at resource 1)"
        );
        assert_eq!(err.problems[1].path, "spec.promote");
    }

    #[test]
    fn two_warm_apps_on_one_domain_collide() {
        let set = load(
            "apiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: a }\nspec: { recipe: web, version: 1.0.0, domain: web.test }\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: b }\nspec: { recipe: web, version: 1.0.0, domain: web.test }\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: c }\nspec: { recipe: web, version: 1.0.0, domain: hw-d.hearth.test }\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: d }\nspec: { recipe: web, version: 1.0.0 }\n",
        );
        assert_eq!(check_set(&set, None).unwrap_err().problems.len(), 1);
        let err = check_set(&set, Some(&BaseDomain::parse("hearth.test").unwrap())).unwrap_err();
        assert_eq!(
            messages(&err),
            [
                "WarmApp/b: spec.domain: domain \"web.test\" is already served by WarmApp \"a\"",
                "WarmApp/d: spec.domain: domain \"hw-d.hearth.test\" is already served by WarmApp \"c\"",
            ]
        );
    }

    #[test]
    fn two_on_green_apps_of_one_recipe_make_promotion_ambiguous() {
        let set = load(
            "apiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: a }\nspec: { recipe: web, version: 1.0.0, promote: onGreen }\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: b }\nspec: { recipe: web, version: 1.0.0, promote: onGreen }\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata: { name: c }\nspec: { recipe: other, version: 1.0.0, promote: onGreen }\n",
        );
        let err = check_set(&set, None).unwrap_err();
        assert_eq!(messages(&err), ["WarmApp/b: spec.promote: WarmApp \"a\" already takes green runs of recipe \"web\" (promote: onGreen)"]);
    }
}
