//! Naming rules: stack names, run ids, dep names and domains that never collide.
//!
//! # The arithmetic
//! Docker names a service `<stack>_<service>` and that name must fit in 63 characters (it
//! becomes a DNS name on the overlay network). hearth reserves [`MAX_SERVICE_NAME_LEN`] = 20
//! characters for recipe service names, so a stack name may use
//! `63 - 1 ('_') - 20 = 42` characters ([`MAX_STACK_NAME_LEN`]). The same 20-character budget
//! covers the other stack-scoped names (`<stack>_<network|volume|secret|config>`; Docker caps
//! secret and config names at 64), so a recipe's object names must fit 20 characters too.
//!
//! Every stack name hearth assigns is `<role prefix><rest>`, the prefix being 3 characters:
//!
//! | role                     | form                          | resource name limit |
//! |--------------------------|-------------------------------|---------------------|
//! | warm canonical app       | `hw-<warmapp>`                | 42 - 3 = 39         |
//! | warm provider app        | `hp-<warmapp>`                | 39                  |
//! | run                      | `hr-<run>`                    | 39                  |
//! | per-run dep              | `hd-<dep>-<12 hex>`           | 42 - 3 - 1 - 12 = 26|
//! | slot namespace           | `hs-<pool>-<slot index>`      | 42 - 3 - 1 - 5 = 33 |
//!
//! Run ids are `<recipe>-<10 hex>`, so recipe names may use `39 - 1 - 10 = 28` characters.
//!
//! A domain is `<stack>.<base domain>`: its first label is ≤ 42 (≤ 63) characters, and the
//! whole name stays ≤ 253 when the base domain is ≤ `253 - 42 - 1 = 210` characters
//! ([`MAX_BASE_DOMAIN_LEN`]); the base domain's own labels are checked to be ≤ 63.
//!
//! # Why names cannot collide
//! - Across roles: the 3-character prefix differs, and the prefix is the start of the name,
//!   so two names of different roles differ at their second character.
//! - Within a role: warm, run and slot names embed their inputs unchanged (injective; slot
//!   indexes contain no `-`, so `<pool>-<index>` splits at its last `-` uniquely). Dep names
//!   carry a 48-bit SHA-256 prefix of (parent run, dep, ref): deterministic, and distinct per
//!   parent unless the prefixes collide — 2^-48 for any two runs; a collision among n live
//!   deps of the same name only becomes likely near n = 2^24, far above what one host runs.
//! - Warm canonical vs warm provider of the same recipe (or even the same WarmApp name):
//!   `hw-` vs `hp-`, so stack names and derived domains differ.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::validation::{check_dns_label, check_domain};

/// Characters reserved for a recipe's service names inside `<stack>_<service>`.
pub const MAX_SERVICE_NAME_LEN: usize = 20;
/// Docker's limit for a service name (`<stack>_<service>`).
pub const MAX_DOCKER_SERVICE_NAME_LEN: usize = 63;
/// Longest stack name hearth assigns: `63 - 1 - 20`.
pub const MAX_STACK_NAME_LEN: usize = MAX_DOCKER_SERVICE_NAME_LEN - 1 - MAX_SERVICE_NAME_LEN;
/// Length of every role prefix (`hw-`, `hp-`, `hr-`, `hd-`, `hs-`).
pub const ROLE_PREFIX_LEN: usize = 3;
/// Longest WarmApp name: `42 - 3`.
pub const MAX_WARM_APP_NAME_LEN: usize = MAX_STACK_NAME_LEN - ROLE_PREFIX_LEN;
/// Longest Run name (run id): `42 - 3`.
pub const MAX_RUN_NAME_LEN: usize = MAX_STACK_NAME_LEN - ROLE_PREFIX_LEN;
/// Hex characters of the hash in a run id.
pub const RUN_ID_HASH_LEN: usize = 10;
/// Longest recipe name: `39 - 1 - 10`, so generated run ids fit [`MAX_RUN_NAME_LEN`].
pub const MAX_RECIPE_NAME_LEN: usize = MAX_RUN_NAME_LEN - 1 - RUN_ID_HASH_LEN;
/// Hex characters of the hash in a per-run dep stack name.
pub const DEP_HASH_LEN: usize = 12;
/// Longest DepProvider name: `42 - 3 - 1 - 12`.
pub const MAX_DEP_PROVIDER_NAME_LEN: usize =
    MAX_STACK_NAME_LEN - ROLE_PREFIX_LEN - 1 - DEP_HASH_LEN;
/// Most digits of a slot index (slots ≤ 65535).
pub const MAX_SLOT_INDEX_DIGITS: usize = 5;
/// Longest SlotPool name: `42 - 3 - 1 - 5`.
pub const MAX_SLOT_POOL_NAME_LEN: usize =
    MAX_STACK_NAME_LEN - ROLE_PREFIX_LEN - 1 - MAX_SLOT_INDEX_DIGITS;
/// Longest base domain: `253 - 42 - 1`, so `<stack>.<base>` fits 253.
pub const MAX_BASE_DOMAIN_LEN: usize = crate::validation::MAX_DOMAIN_LEN - MAX_STACK_NAME_LEN - 1;

/// Why a name could not be derived. Not retryable: the inputs are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An input name broke the DNS-label rules or its length limit.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInputGiven {
        /// Which input (e.g. `recipe name`).
        what: &'static str,
        /// The value given.
        value: String,
        /// The rule it broke.
        reason: String,
    },
    /// A slot index too large for a slot namespace.
    #[error("slot index {0} is out of range (at most 65534)")]
    SlotIndexOutOfRange(u32),
}

fn input(what: &'static str, value: &str, max_len: usize) -> Result<(), Error> {
    check_dns_label(value, max_len).map_err(|reason| Error::InvalidInputGiven {
        what,
        value: value.into(),
        reason,
    })
}

/// What a hearth stack is for; encoded as the stack name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackRole {
    /// The canonical deployment of a WarmApp (`hw-`).
    WarmCanonical,
    /// A WarmApp that serves as a dependency provider (`hp-`).
    WarmProvider,
    /// A run's own stack (`hr-`).
    Run,
    /// A dependency deployed for one parent run (`hd-`).
    RunDep,
    /// The namespace of a slot held outside a run, e.g. by `hearth slot exec` (`hs-`).
    SlotNamespace,
}

impl StackRole {
    /// All roles.
    pub const ALL: [StackRole; 5] = [
        StackRole::WarmCanonical,
        StackRole::WarmProvider,
        StackRole::Run,
        StackRole::RunDep,
        StackRole::SlotNamespace,
    ];

    /// The prefix of stack names of this role.
    pub fn prefix(self) -> &'static str {
        match self {
            StackRole::WarmCanonical => "hw-",
            StackRole::WarmProvider => "hp-",
            StackRole::Run => "hr-",
            StackRole::RunDep => "hd-",
            StackRole::SlotNamespace => "hs-",
        }
    }

    /// The role as a label value ([`labels::ROLE`]): `warm`, `provider`, `run`, `dep`, `slot`.
    pub fn as_str(self) -> &'static str {
        match self {
            StackRole::WarmCanonical => "warm",
            StackRole::WarmProvider => "provider",
            StackRole::Run => "run",
            StackRole::RunDep => "dep",
            StackRole::SlotNamespace => "slot",
        }
    }
}

/// Docker label keys hearth puts on the objects it manages (services, networks, volumes,
/// secrets, configs). The sweeper only ever removes objects carrying [`labels::MANAGED_BY`] =
/// [`labels::MANAGED_BY_VALUE`] (or in a stack namespace hearth assigned to a recorded run).
pub mod labels {
    /// Marks an object as managed by hearth.
    pub const MANAGED_BY: &str = "hearth.managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "hearth";
    /// The stack role ([`super::StackRole::as_str`]).
    pub const ROLE: &str = "hearth.role";
    /// The kind of the owning resource (`WarmApp`, `Run`, ...).
    pub const KIND: &str = "hearth.kind";
    /// The name of the owning resource.
    pub const NAME: &str = "hearth.name";
    /// For per-run deps: the parent run.
    pub const PARENT_RUN: &str = "hearth.parent-run";
    /// Hash of the desired spec hearth deployed (compare this, never the inspected spec).
    pub const SPEC_HASH: &str = "hearth.spec-hash";
    /// On a secret hearth generated (a recipe's versioned external secret): its length.
    pub const GENERATED: &str = "hearth.generated";
    /// Objects created by hearth's test suites (`hearth.test=1`); the test bed removes these.
    pub const TEST: &str = "hearth.test";
    /// The data directory (store) that deployed a stack: a random ID kept in the store.
    /// Cleanup tears down only stacks carrying this daemon's ID, so a daemon never removes
    /// warm-app stacks another hearth (another data directory, a test) deployed.
    pub const INSTANCE: &str = "hearth.instance";
    /// On every warm-app task container: the recipe version it runs (tells the new version's
    /// tasks from the old one's during a start-first update).
    pub const WARM_VERSION: &str = "hearth.warm-version";
}

/// A stack name hearth assigned: a valid DNS label of at most [`MAX_STACK_NAME_LEN`] characters
/// starting with its role's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackName {
    name: String,
    // A function of `name` (its prefix), so deriving Eq/Ord/Hash stays consistent.
    role: StackRole,
}

impl StackName {
    fn new(role: StackRole, rest: &str) -> StackName {
        StackName {
            name: format!("{}{rest}", role.prefix()),
            role,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.name
    }

    /// The role encoded in the prefix.
    pub fn role(&self) -> StackRole {
        self.role
    }

    /// Recognises a stack name hearth could have assigned (for adoption and sweeping): a
    /// valid label within the limit, with a known role prefix and a non-empty rest.
    pub fn recognise(name: &str) -> Option<StackName> {
        check_dns_label(name, MAX_STACK_NAME_LEN).ok()?;
        let role = StackRole::ALL
            .into_iter()
            .find(|r| name.starts_with(r.prefix()))?;
        (name.len() > role.prefix().len()).then(|| StackName {
            name: name.into(),
            role,
        })
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for StackName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// The stack of a WarmApp: `hw-<name>` for a canonical app, `hp-<name>` for a provider.
///
/// # Errors
/// [`Error::InvalidInputGiven`] when `warm_app` is not a label of ≤ [`MAX_WARM_APP_NAME_LEN`].
pub fn warm_stack(warm_app: &str, provider: bool) -> Result<StackName, Error> {
    input("warm app name", warm_app, MAX_WARM_APP_NAME_LEN)?;
    let role = if provider {
        StackRole::WarmProvider
    } else {
        StackRole::WarmCanonical
    };
    Ok(StackName::new(role, warm_app))
}

/// The stack of a run: `hr-<run>`.
///
/// # Errors
/// [`Error::InvalidInputGiven`] when `run` is not a label of ≤ [`MAX_RUN_NAME_LEN`].
pub fn run_stack(run: &str) -> Result<StackName, Error> {
    input("run name", run, MAX_RUN_NAME_LEN)?;
    Ok(StackName::new(StackRole::Run, run))
}

/// The stack of a per-run dependency: `hd-<dep>-<12 hex of sha256(parent run, dep, ref)>`.
///
/// # Guarantees
/// Deterministic: the same (parent, dep, ref) always gives the same name, so a leftover of a
/// killed earlier attempt is found under it. Different parents give different names (up to
/// a 48-bit hash-prefix collision). `None` and `Some("")` refs hash differently.
///
/// # Errors
/// [`Error::InvalidInputGiven`] for an invalid parent run or dep name.
pub fn dep_stack(parent_run: &str, dep: &str, git_ref: Option<&str>) -> Result<StackName, Error> {
    input("run name", parent_run, MAX_RUN_NAME_LEN)?;
    input("dep provider name", dep, MAX_DEP_PROVIDER_NAME_LEN)?;
    let mut h = Sha256::new();
    // Labels cannot contain NUL, so the encoding is unambiguous.
    h.update(b"hearth-dep\0");
    h.update(parent_run.as_bytes());
    h.update(b"\0");
    h.update(dep.as_bytes());
    match git_ref {
        Some(r) => {
            h.update(b"\0some\0");
            h.update(r.as_bytes());
        }
        None => h.update(b"\0none"),
    }
    let digest = hex::encode(h.finalize());
    Ok(StackName::new(
        StackRole::RunDep,
        &format!("{dep}-{}", &digest[..DEP_HASH_LEN]),
    ))
}

/// The namespace of slot `index` of `pool`, used when a slot is held outside a run:
/// `hs-<pool>-<index>`.
///
/// # Errors
/// [`Error::InvalidInputGiven`] for an invalid pool name, [`Error::SlotIndexOutOfRange`] for
/// an index above 65534.
pub fn slot_namespace(pool: &str, index: u32) -> Result<StackName, Error> {
    input("slot pool name", pool, MAX_SLOT_POOL_NAME_LEN)?;
    if index > 65534 {
        return Err(Error::SlotIndexOutOfRange(index));
    }
    Ok(StackName::new(
        StackRole::SlotNamespace,
        &format!("{pool}-{index}"),
    ))
}

/// A run id: `<recipe>-<10 hex of sha256(recipe, nonce)>`.
///
/// Pure: the caller supplies the randomness (`nonce`, e.g. 16 random bytes, or the CI job's
/// id for idempotent retries). The result is a valid Run name.
///
/// # Errors
/// [`Error::InvalidInputGiven`] when `recipe` is not a label of ≤ [`MAX_RECIPE_NAME_LEN`].
pub fn run_id(recipe: &str, nonce: &[u8]) -> Result<String, Error> {
    input("recipe name", recipe, MAX_RECIPE_NAME_LEN)?;
    let mut h = Sha256::new();
    h.update(b"hearth-run\0");
    h.update(recipe.as_bytes());
    h.update(b"\0");
    h.update(nonce);
    let digest = hex::encode(h.finalize());
    Ok(format!("{recipe}-{}", &digest[..RUN_ID_HASH_LEN]))
}

/// The Docker service name of `service` in `stack`: `<stack>_<service>` (≤ 63 characters).
///
/// `service` may use letters, digits, `-`, `_` and `.`, start with a letter or digit, and
/// have at most [`MAX_SERVICE_NAME_LEN`] characters.
///
/// # Errors
/// [`Error::InvalidInputGiven`] for a service name breaking those rules.
pub fn service_name(stack: &StackName, service: &str) -> Result<String, Error> {
    check_service_name(service).map_err(|reason| Error::InvalidInputGiven {
        what: "service name",
        value: service.into(),
        reason,
    })?;
    Ok(format!("{stack}_{service}"))
}

/// Checks a recipe's service name (see [`service_name`]).
///
/// # Errors
/// A lowercase message naming the broken rule.
pub fn check_service_name(service: &str) -> Result<(), String> {
    crate::validation::check_length(service, MAX_SERVICE_NAME_LEN)?;
    crate::validation::check_chars(
        service,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
        "letters, digits, '-', '_' and '.'",
    )?;
    if !service.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

/// The base domain under which hearth derives domains (configurable, e.g. `hearth.test`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseDomain(String);

impl BaseDomain {
    /// Parses a base domain: a lowercase DNS name of at most [`MAX_BASE_DOMAIN_LEN`] characters.
    ///
    /// # Errors
    /// [`Error::InvalidInputGiven`] naming the broken rule.
    pub fn parse(s: &str) -> Result<BaseDomain, Error> {
        check_domain(s, MAX_BASE_DOMAIN_LEN).map_err(|reason| Error::InvalidInputGiven {
            what: "base domain",
            value: s.into(),
            reason,
        })?;
        Ok(BaseDomain(s.into()))
    }

    /// The base domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BaseDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The domain of a stack: `<stack>.<base>`; always a valid DNS name of ≤ 253 characters.
pub fn domain(stack: &StackName, base: &BaseDomain) -> String {
    format!("{stack}.{base}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn the_length_arithmetic_leaves_room_for_service_suffixes() {
        assert_eq!(MAX_STACK_NAME_LEN, 42);
        assert_eq!(MAX_WARM_APP_NAME_LEN, 39);
        assert_eq!(MAX_RUN_NAME_LEN, 39);
        assert_eq!(MAX_RECIPE_NAME_LEN, 28);
        assert_eq!(MAX_DEP_PROVIDER_NAME_LEN, 26);
        assert_eq!(MAX_SLOT_POOL_NAME_LEN, 33);
        assert_eq!(MAX_BASE_DOMAIN_LEN, 210);
    }

    #[test]
    fn longest_inputs_give_names_that_fit_every_docker_and_dns_limit() {
        let warm = "w".repeat(MAX_WARM_APP_NAME_LEN);
        let recipe = "r".repeat(MAX_RECIPE_NAME_LEN);
        let run = run_id(&recipe, b"n").unwrap();
        assert_eq!(run.len(), MAX_RUN_NAME_LEN);
        let dep = "d".repeat(MAX_DEP_PROVIDER_NAME_LEN);
        let pool = "p".repeat(MAX_SLOT_POOL_NAME_LEN);
        let base = BaseDomain::parse(
            &[
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(18),
            ]
            .join("."),
        )
        .unwrap();
        assert_eq!(base.as_str().len(), MAX_BASE_DOMAIN_LEN);
        let stacks = [
            warm_stack(&warm, false).unwrap(),
            warm_stack(&warm, true).unwrap(),
            run_stack(&run).unwrap(),
            dep_stack(&run, &dep, Some("0123abc")).unwrap(),
            slot_namespace(&pool, 65534).unwrap(),
        ];
        for s in &stacks {
            assert_eq!(s.as_str().len(), MAX_STACK_NAME_LEN, "{s}");
            check_dns_label(s.as_str(), MAX_STACK_NAME_LEN).unwrap();
            let svc = service_name(s, &"s".repeat(MAX_SERVICE_NAME_LEN)).unwrap();
            assert_eq!(svc.len(), MAX_DOCKER_SERVICE_NAME_LEN);
            let d = domain(s, &base);
            assert_eq!(d.len(), 253);
            check_domain(&d, 253).unwrap();
        }
    }

    #[test]
    fn inputs_one_character_too_long_are_rejected() {
        assert!(warm_stack(&"w".repeat(MAX_WARM_APP_NAME_LEN + 1), false).is_err());
        assert!(run_stack(&"r".repeat(MAX_RUN_NAME_LEN + 1)).is_err());
        assert!(run_id(&"r".repeat(MAX_RECIPE_NAME_LEN + 1), b"").is_err());
        assert!(dep_stack("run", &"d".repeat(MAX_DEP_PROVIDER_NAME_LEN + 1), None).is_err());
        assert!(slot_namespace(&"p".repeat(MAX_SLOT_POOL_NAME_LEN + 1), 0).is_err());
        assert!(BaseDomain::parse(&format!("{}.b", "a".repeat(MAX_BASE_DOMAIN_LEN - 1))).is_err());
        assert_eq!(
            slot_namespace("pool", 65535),
            Err(Error::SlotIndexOutOfRange(65535))
        );
        assert!(service_name(
            &run_stack("r").unwrap(),
            &"s".repeat(MAX_SERVICE_NAME_LEN + 1)
        )
        .is_err());
    }

    #[test]
    fn invalid_inputs_are_rejected_with_the_input_named() {
        let err = warm_stack("Bad_Name", false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid warm app name \"Bad_Name\":"),
            "{err}"
        );
        assert!(run_stack("-x").is_err());
        assert!(run_id("9lives", b"").is_err());
        assert!(dep_stack("run", "sso-", None).is_err());
        assert!(dep_stack("Run", "sso", None).is_err());
        assert!(BaseDomain::parse("Example.COM").is_err());
        assert!(BaseDomain::parse("").is_err());
        let s = run_stack("r").unwrap();
        assert!(service_name(&s, "").is_err());
        assert!(service_name(&s, "_x").is_err());
        assert!(service_name(&s, "a b").is_err());
        assert_eq!(service_name(&s, "web_1.x").unwrap(), "hr-r_web_1.x");
    }

    #[test]
    fn a_warm_provider_and_a_warm_canonical_of_the_same_app_never_share_a_name_or_domain() {
        let base = BaseDomain::parse("hearth.test").unwrap();
        let canonical = warm_stack("sso", false).unwrap();
        let provider = warm_stack("sso", true).unwrap();
        assert_eq!(canonical.as_str(), "hw-sso");
        assert_eq!(provider.as_str(), "hp-sso");
        assert_ne!(canonical, provider);
        assert_ne!(domain(&canonical, &base), domain(&provider, &base));
        assert_eq!(domain(&provider, &base), "hp-sso.hearth.test");
        assert_eq!(canonical.role(), StackRole::WarmCanonical);
        assert_eq!(provider.role(), StackRole::WarmProvider);
    }

    #[test]
    fn names_that_look_alike_across_roles_still_differ() {
        // A run named like a dep stack's rest, a warm app named like a run stack, etc.
        let dep = dep_stack("run-a", "sso", None).unwrap();
        let rest = &dep.as_str()[ROLE_PREFIX_LEN..];
        assert_ne!(run_stack(rest).unwrap(), dep);
        assert_ne!(warm_stack(rest, false).unwrap(), dep);
        assert_ne!(warm_stack("x", false).unwrap(), run_stack("x").unwrap());
        assert_ne!(slot_namespace("ci", 1).unwrap(), run_stack("ci-1").unwrap());
        // even a run whose name itself starts with a prefix
        assert_ne!(
            run_stack("hw-x").unwrap().as_str(),
            warm_stack("x", false).unwrap().as_str()
        );
    }

    #[test]
    fn dep_names_are_deterministic_per_parent_dep_and_ref() {
        let a = dep_stack("web-0123456789", "sso", Some("abc123")).unwrap();
        assert_eq!(
            a,
            dep_stack("web-0123456789", "sso", Some("abc123")).unwrap()
        );
        assert!(a.as_str().starts_with("hd-sso-"));
        assert_eq!(a.as_str().len(), "hd-sso-".len() + DEP_HASH_LEN);
        assert_eq!(a.role(), StackRole::RunDep);
        // any part changing changes the name
        assert_ne!(
            a,
            dep_stack("web-0123456788", "sso", Some("abc123")).unwrap()
        );
        assert_ne!(
            a,
            dep_stack("web-0123456789", "sso", Some("abc124")).unwrap()
        );
        assert_ne!(a, dep_stack("web-0123456789", "sso", None).unwrap());
        assert_ne!(
            dep_stack("r", "sso", None).unwrap(),
            dep_stack("r", "sso", Some("")).unwrap()
        );
        // the hash input is unambiguous where plain concatenation would not be
        assert_ne!(
            dep_stack("a-b", "c", None).unwrap().as_str()[..],
            dep_stack("a", "b-c", None).unwrap().as_str()[..]
        );
    }

    #[test]
    fn run_ids_start_with_the_recipe_and_are_valid_run_names() {
        let id = run_id("web", b"nonce-1").unwrap();
        assert!(id.starts_with("web-"));
        assert_eq!(id.len(), 4 + RUN_ID_HASH_LEN);
        assert_eq!(id, run_id("web", b"nonce-1").unwrap());
        assert_ne!(id, run_id("web", b"nonce-2").unwrap());
        check_dns_label(&id, MAX_RUN_NAME_LEN).unwrap();
        run_stack(&id).unwrap();
    }

    #[test]
    fn hearth_stack_names_are_recognised_and_others_are_not() {
        for s in [
            warm_stack("a", false).unwrap(),
            warm_stack("a", true).unwrap(),
            run_stack("a").unwrap(),
            dep_stack("a", "b", None).unwrap(),
            slot_namespace("a", 3).unwrap(),
        ] {
            let again = StackName::recognise(s.as_str()).unwrap();
            assert_eq!(again, s);
        }
        for other in [
            "web",
            "hx-a",
            "hr-",
            "hr_a",
            "HR-a",
            "",
            &format!("hr-{}", "a".repeat(40)),
        ] {
            assert_eq!(StackName::recognise(other), None, "{other}");
        }
    }

    fn label(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-z]([a-z0-9-]{{0,{}}}[a-z0-9])?", max - 2))
            .expect("valid regex")
    }

    /// A stack name of a random role built from random valid inputs.
    fn any_stack() -> impl Strategy<Value = (StackRole, Vec<String>, StackName)> {
        prop_oneof![
            label(MAX_WARM_APP_NAME_LEN).prop_map(|n| (
                StackRole::WarmCanonical,
                vec![n.clone()],
                warm_stack(&n, false).expect("valid")
            )),
            label(MAX_WARM_APP_NAME_LEN).prop_map(|n| (
                StackRole::WarmProvider,
                vec![n.clone()],
                warm_stack(&n, true).expect("valid")
            )),
            label(MAX_RUN_NAME_LEN).prop_map(|n| (
                StackRole::Run,
                vec![n.clone()],
                run_stack(&n).expect("valid")
            )),
            (
                label(MAX_RUN_NAME_LEN),
                label(MAX_DEP_PROVIDER_NAME_LEN),
                proptest::option::of("[0-9a-f]{0,8}")
            )
                .prop_map(|(r, d, g)| {
                    let s = dep_stack(&r, &d, g.as_deref()).expect("valid");
                    (StackRole::RunDep, vec![r, d, format!("{g:?}")], s)
                }),
            (label(MAX_SLOT_POOL_NAME_LEN), 0u32..65535).prop_map(|(p, i)| (
                StackRole::SlotNamespace,
                vec![p.clone(), i.to_string()],
                slot_namespace(&p, i).expect("valid")
            )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn stack_names_of_different_roles_or_inputs_never_collide(a in any_stack(), b in any_stack()) {
            let (role_a, in_a, name_a) = a;
            let (role_b, in_b, name_b) = b;
            if role_a != role_b {
                prop_assert_ne!(&name_a, &name_b);
            } else if in_a != in_b {
                // injective roles are exact; the dep role relies on its 48-bit hash
                prop_assert_ne!(&name_a, &name_b);
            } else {
                prop_assert_eq!(&name_a, &name_b);
            }
            prop_assert_eq!(name_a.role(), role_a);
        }

        #[test]
        fn every_derived_name_is_a_valid_label_within_the_stack_limit(a in any_stack()) {
            let name = a.2;
            prop_assert!(check_dns_label(name.as_str(), MAX_STACK_NAME_LEN).is_ok(), "{}", name);
            prop_assert_eq!(StackName::recognise(name.as_str()), Some(name.clone()));
            let d = domain(&name, &BaseDomain::parse("ci.hearth.test").expect("valid"));
            prop_assert!(check_domain(&d, 253).is_ok());
        }

        #[test]
        fn dep_names_of_different_parents_differ(p1 in label(MAX_RUN_NAME_LEN), p2 in label(MAX_RUN_NAME_LEN), dep in label(MAX_DEP_PROVIDER_NAME_LEN)) {
            prop_assume!(p1 != p2);
            prop_assert_ne!(dep_stack(&p1, &dep, None).expect("valid"), dep_stack(&p2, &dep, None).expect("valid"));
        }

        #[test]
        fn run_ids_are_always_valid_run_names(recipe in label(MAX_RECIPE_NAME_LEN), nonce in proptest::collection::vec(any::<u8>(), 0..32)) {
            let id = run_id(&recipe, &nonce).expect("valid");
            prop_assert!(check_dns_label(&id, MAX_RUN_NAME_LEN).is_ok());
        }
    }

    #[test]
    fn role_label_values_and_prefixes_are_distinct() {
        let prefixes: HashSet<_> = StackRole::ALL.iter().map(|r| r.prefix()).collect();
        let values: HashSet<_> = StackRole::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(prefixes.len(), StackRole::ALL.len());
        assert_eq!(values.len(), StackRole::ALL.len());
        for p in prefixes {
            assert_eq!(p.len(), ROLE_PREFIX_LEN);
        }
        for key in [
            labels::MANAGED_BY,
            labels::ROLE,
            labels::KIND,
            labels::NAME,
            labels::PARENT_RUN,
            labels::SPEC_HASH,
            labels::TEST,
        ] {
            crate::validation::check_label_key(key).unwrap();
        }
    }

    #[test]
    fn many_dep_names_for_one_dep_across_parents_are_all_distinct() {
        let names: HashSet<_> = (0..20_000)
            .map(|i| dep_stack(&format!("run-{i}"), "sso", Some("abc")).unwrap())
            .collect();
        assert_eq!(names.len(), 20_000);
    }
}
