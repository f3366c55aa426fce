//! hearth's resource model: kinds, metadata, validation and naming rules. No I/O.
//!
//! - [`resource`]: the kube-like envelope (`apiVersion`, `kind`, `metadata`) and the
//!   [`Resource`] trait the store is generic over.
//! - [`warmapp`], [`run`], [`depprovider`], [`slotpool`], [`recipe`](mod@recipe): one module per kind.
//! - [`any`]: [`AnyResource`], one resource of any kind (mixed multi-document files).
//! - [`validation`]: the [`Validate`] trait and [`ValidationErrors`] (every problem, with its
//!   field path).
//! - [`names`]: stack names, run ids, dep names and domains that never collide.
//! - [`version`]: recipe versions (`1.11.0+1.29.0`) and their order.
//! - [`verdict`](mod@verdict): tier results and the green/not-green verdict.
//! - [`consistency`]: checks across resources (references, unique names and domains).
//! - [`content`]: exactly what a run tests or a warm app serves (a snapshot's digest).
//! - [`condition`], [`owner`], [`duration`]: shared status and spec building blocks.

pub mod any;
pub mod condition;
pub mod consistency;
pub mod content;
pub mod depprovider;
pub mod duration;
pub mod names;
pub mod owner;
pub mod promotion;
pub mod recipe;
pub mod resource;
pub mod run;
pub mod slotpool;
pub mod validation;
pub mod verdict;
pub mod version;
pub mod warmapp;

pub use any::{AnyResource, TypeMeta};
pub use condition::{Condition, ConditionStatus};
pub use content::{Content, ContentKind};
pub use depprovider::{DepMode, DepProvider, DepProviderPhase, DepProviderSpec, DepProviderStatus};
pub use owner::{Owner, OwnerKind};
pub use recipe::{Recipe, RecipeSpec, RecipeStatus};
pub use resource::{Kind, ObjectMeta, Resource, API_VERSION};
pub use run::{Run, RunPhase, RunSpec, RunStatus};
pub use slotpool::{SlotPool, SlotPoolPhase, SlotPoolSpec, SlotPoolStatus};
pub use validation::{FieldError, Validate, ValidationErrors};
pub use verdict::{verdict, TierOutcome, TierResult, Verdict, VerdictProblem};
pub use version::RecipeVersion;
pub use warmapp::{WarmApp, WarmAppPhase, WarmAppSpec, WarmAppStatus};
