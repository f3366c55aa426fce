//! Declared tiers: the tier names a run may require and report, declared by its slot pool and its recipe in the state file, and the bounded label values its tier results are counted under.
//!
//! Why (issue 16): tier names were whatever the client sent, so
//! `hearth_tier_results_total{recipe,tier}` grew a series per client-chosen string. Now a
//! tier name is a label value only when the run's pool or recipe declares it (`spec.tiers`),
//! and the recipe only when it is a declared `Recipe` or in the catalogue; anything else is
//! counted under [`UNDECLARED`], a value no declared name can take (names are DNS labels).
//!
//! A run whose pool and recipe declare no tiers may report any tier (the run's verdict still
//! uses them) — such a run is counted under `tier="_undeclared"`; once either declares tiers,
//! any other tier name is refused ([`Undeclared`], API 422 naming the declared ones).

use std::collections::BTreeSet;

use crd::{Recipe, SlotPool};
use state::Store;

use crate::catalogue::Catalogue;

/// The label value of a tier or recipe that is not declared ([`metrics::UNDECLARED`]).
pub use metrics::UNDECLARED;

/// The tier names declared for one run, and by whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// The union of the pool's and the recipe's `spec.tiers`.
    pub names: BTreeSet<String>,
    /// Who declared them (`SlotPool/ci`, `Recipe/webapp`), for error messages.
    pub by: Vec<String>,
}

/// A tier the run's pool or recipe does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: tier {tier:?} is not declared (declared by {}: {})",
    by.join(" and "),
    names.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
)]
pub struct Undeclared {
    /// The request field that named it (`requiredTiers`, `tiers`).
    pub field: &'static str,
    /// The tier.
    pub tier: String,
    /// The declared names.
    pub names: BTreeSet<String>,
    /// Who declared them.
    pub by: Vec<String>,
}

impl Declared {
    /// What `pool` (if any) and `recipe` declare, read from the store; `None` when neither
    /// declares tiers (then any tier name is accepted and counted as [`UNDECLARED`]).
    ///
    /// # Errors
    /// The store's.
    pub fn of(store: &Store, recipe: &str, pool: Option<&str>) -> state::Result<Option<Declared>> {
        let mut declared = Declared::default();
        if let Some(pool) = pool {
            if let Some(p) = store.get_opt::<SlotPool>(pool)? {
                if !p.spec.tiers.is_empty() {
                    declared.names.extend(p.spec.tiers);
                    declared.by.push(format!("SlotPool/{pool}"));
                }
            }
        }
        if let Some(r) = store.get_opt::<Recipe>(recipe)? {
            if !r.spec.tiers.is_empty() {
                declared.names.extend(r.spec.tiers);
                declared.by.push(format!("Recipe/{recipe}"));
            }
        }
        Ok((!declared.by.is_empty()).then_some(declared))
    }

    /// Checks that every one of `tiers` is declared.
    ///
    /// # Errors
    /// [`Undeclared`] for the first that is not.
    pub fn check<'a>(
        &self,
        field: &'static str,
        tiers: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Undeclared> {
        match tiers.into_iter().find(|t| !self.names.contains(*t)) {
            None => Ok(()),
            Some(t) => Err(Undeclared {
                field,
                tier: t.to_string(),
                names: self.names.clone(),
                by: self.by.clone(),
            }),
        }
    }
}

/// The `recipe` label value for a run of `recipe`: the name when it is a declared `Recipe` or
/// in the catalogue (both the operator's), else [`UNDECLARED`].
pub fn recipe_label<'a>(
    store: &Store,
    catalogue: Option<&dyn Catalogue>,
    recipe: &'a str,
) -> &'a str {
    let declared = matches!(store.get_opt::<Recipe>(recipe), Ok(Some(_)));
    let in_catalogue = || {
        catalogue
            .and_then(|c| c.recipes().ok())
            .is_some_and(|names| names.iter().any(|n| n == recipe))
    };
    if declared || in_catalogue() {
        recipe
    } else {
        UNDECLARED
    }
}

/// The `tier` label value of `tier` for a run with `declared` tiers.
pub fn tier_label<'a>(declared: Option<&Declared>, tier: &'a str) -> &'a str {
    match declared {
        Some(d) if d.names.contains(tier) => tier,
        _ => UNDECLARED,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn declared(names: &[&str]) -> Declared {
        Declared {
            names: names.iter().map(ToString::to_string).collect(),
            by: vec!["SlotPool/ci".into(), "Recipe/webapp".into()],
        }
    }

    #[test]
    fn an_undeclared_tier_is_refused_naming_the_declared_ones() {
        let d = declared(&["install", "upgrade"]);
        d.check("tiers", ["install", "upgrade"]).unwrap();
        let e = d.check("tiers", ["install", "e2e"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tiers: tier \"e2e\" is not declared (declared by SlotPool/ci and Recipe/webapp: install, upgrade)"
        );
    }

    #[test]
    fn only_declared_tiers_become_label_values() {
        let d = declared(&["install"]);
        assert_eq!(tier_label(Some(&d), "install"), "install");
        assert_eq!(tier_label(Some(&d), "e2e"), UNDECLARED);
        assert_eq!(tier_label(None, "install"), UNDECLARED);
        assert!(crd::verdict::check_tier_name(UNDECLARED).is_err());
    }
}
