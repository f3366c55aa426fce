//! What hearth records about promotions in a WarmApp's status, and how a state file's version meets a promoted one.
//!
//! A promotion (a green run, `hearth promote`, `hearth rollback`, the nightly `refresh:
//! latest`) writes the WarmApp's `spec.version`; the reconciler then performs the health-gated
//! upgrade. The operator's state file is intent too, so hearth remembers in
//! `status.promotion` which version the operator *declared* when it promoted over it:
//! re-applying an unchanged file (or one with unrelated edits) keeps the promoted version,
//! while a file that declares a different version wins ([`version_intent`]).

use serde::{Deserialize, Serialize};

use crate::warmapp::WarmApp;

/// What asked for a version change hearth made by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PromotionSource {
    /// A green run of the app's recipe finished (`promote: onGreen`).
    GreenRun,
    /// `hearth promote APP --to V`.
    Operator,
    /// `hearth rollback APP`: back to the version before the last effective promotion.
    Rollback,
    /// The nightly refresh of a `refresh: latest` app advanced it to the newest catalogue
    /// version.
    Refresh,
}

impl PromotionSource {
    /// The camelCase name used in history details and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionSource::GreenRun => "greenRun",
            PromotionSource::Operator => "operator",
            PromotionSource::Rollback => "rollback",
            PromotionSource::Refresh => "refresh",
        }
    }
}

/// How a promotion ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PromotionResult {
    /// `spec.version` was set; the health-gated upgrade is under way.
    Pending,
    /// The new version became Ready.
    Ready,
    /// The new version failed its health gate; the previous one was restored and
    /// `spec.version` set back to it.
    RolledBack,
    /// Something else changed `spec.version` (an operator's state file) or deleted the app
    /// before the gate decided.
    Superseded,
    /// Neither Ready nor rolled back within the promotion's deadline (the reconciler was not
    /// making progress).
    TimedOut,
}

impl PromotionResult {
    /// The snake_case name used as the promotions metric's label.
    pub fn metric_label(self) -> &'static str {
        match self {
            PromotionResult::Pending => "pending",
            PromotionResult::Ready => "ready",
            PromotionResult::RolledBack => "rolled_back",
            PromotionResult::Superseded => "superseded",
            PromotionResult::TimedOut => "timed_out",
        }
    }
}

/// The last promotion hearth made of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionAttempt {
    /// What asked.
    pub source: PromotionSource,
    /// The run that went green, for [`PromotionSource::GreenRun`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// `spec.version` before.
    pub from: String,
    /// The version promoted to.
    pub to: String,
    /// The `metadata.generation` the promotion's spec write produced (the gate's verdict is
    /// read at this generation).
    pub generation: u64,
    /// When it was made (unix ms).
    pub at_ms: u64,
    /// How it ended.
    pub result: PromotionResult,
    /// The exact content promoted to (a green run's snapshot), when the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::content::Content>,
    /// `spec.content` before, restored with `from` when the promotion is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_content: Option<crate::content::Content>,
}

/// `status.promotion`: which version the operator declared and which one hearth promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    /// The version the operator declared (state file or `hearth apply`) when hearth first
    /// promoted over it.
    pub declared_version: String,
    /// The promoted version; it is in force while it equals `spec.version`.
    pub version: String,
    /// The last promotion made.
    pub last: PromotionAttempt,
}

/// Which version is in force: the declared one or a promoted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InForce {
    /// `spec.version` is what the operator declared.
    Declared,
    /// `spec.version` was promoted by hearth over the declared version.
    Promoted,
}

/// The versions of an app as `get`, `describe` and the API show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    /// What the operator declared.
    pub declared: String,
    /// The promoted version, when one is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<String>,
    /// Which of the two `spec.version` is.
    pub in_force: InForce,
}

impl WarmApp {
    /// The promotion record when its version is the one in force (`spec.version`) and differs
    /// from the declared one.
    pub fn promotion_in_force(&self) -> Option<&PromotionRecord> {
        self.status
            .promotion
            .as_ref()
            .filter(|p| p.version == self.spec.version && p.version != p.declared_version)
    }

    /// The version the operator declared: the record's when a promotion is in force, else
    /// `spec.version`.
    pub fn declared_version(&self) -> &str {
        match self.promotion_in_force() {
            Some(p) => &p.declared_version,
            None => &self.spec.version,
        }
    }

    /// Declared, promoted and which is in force.
    pub fn version_view(&self) -> VersionView {
        match self.promotion_in_force() {
            Some(p) => VersionView {
                declared: p.declared_version.clone(),
                promoted: Some(p.version.clone()),
                in_force: InForce::Promoted,
            },
            None => VersionView {
                declared: self.spec.version.clone(),
                promoted: None,
                in_force: InForce::Declared,
            },
        }
    }
}

/// What a state file's `spec.version` means for an app already in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionIntent {
    /// No promotion in force: the file's version is the version, as always.
    Declared,
    /// The file still declares what it declared when hearth promoted: the promoted version
    /// stays (re-applying or editing something else never reverts a promotion).
    KeepPromoted {
        /// The declared version (the file's).
        declared: String,
        /// The promoted version kept.
        promoted: String,
    },
    /// The file now declares exactly the promoted version: nothing changes, and the
    /// promotion is no longer needed (declared and in force agree).
    AdoptedPromoted {
        /// The version (declared and promoted).
        version: String,
    },
    /// The file declares another version: explicit operator intent wins over the promotion.
    Overridden {
        /// The promoted version given up.
        promoted: String,
        /// The newly declared version.
        declared: String,
    },
}

/// Decides what the state file's version `file_version` means for `current`, the stored app.
///
/// # Guarantees
/// Pure. Without a promotion in force the answer is [`VersionIntent::Declared`]. With one,
/// the file's version is compared with the version declared when hearth promoted: the same
/// → the promotion stays; the promoted version → adopted; anything else → the operator wins.
pub fn version_intent(current: &WarmApp, file_version: &str) -> VersionIntent {
    let Some(p) = current.promotion_in_force() else {
        return VersionIntent::Declared;
    };
    if file_version == p.declared_version {
        VersionIntent::KeepPromoted {
            declared: p.declared_version.clone(),
            promoted: p.version.clone(),
        }
    } else if file_version == p.version {
        VersionIntent::AdoptedPromoted {
            version: p.version.clone(),
        }
    } else {
        VersionIntent::Overridden {
            promoted: p.version.clone(),
            declared: file_version.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn app(spec_version: &str, record: Option<(&str, &str)>) -> WarmApp {
        let mut a: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "web"},
            "spec": {"recipe": "webapp", "version": spec_version}
        }))
        .unwrap();
        a.status.promotion = record.map(|(declared, version)| PromotionRecord {
            declared_version: declared.into(),
            version: version.into(),
            last: PromotionAttempt {
                source: PromotionSource::GreenRun,
                run: Some("r-1".into()),
                from: declared.into(),
                to: version.into(),
                generation: 2,
                at_ms: 1,
                result: PromotionResult::Ready,
                content: None,
                from_content: None,
            },
        });
        a
    }

    #[test]
    fn an_app_without_a_promotion_shows_its_spec_version_as_declared() {
        let a = app("1.0.0", None);
        assert_eq!(a.declared_version(), "1.0.0");
        assert_eq!(
            a.version_view(),
            VersionView {
                declared: "1.0.0".into(),
                promoted: None,
                in_force: InForce::Declared
            }
        );
        assert_eq!(version_intent(&a, "2.0.0"), VersionIntent::Declared);
    }

    #[test]
    fn a_promotion_is_in_force_only_while_spec_version_is_the_promoted_one() {
        let a = app("1.1.0", Some(("1.0.0", "1.1.0")));
        assert_eq!(a.declared_version(), "1.0.0");
        assert_eq!(a.version_view().in_force, InForce::Promoted);
        assert_eq!(a.version_view().promoted.as_deref(), Some("1.1.0"));
        // spec.version moved on (an operator override): the stale record no longer counts.
        let b = app("2.0.0", Some(("1.0.0", "1.1.0")));
        assert!(b.promotion_in_force().is_none());
        assert_eq!(b.declared_version(), "2.0.0");
        // A record whose promoted version is the declared one promotes nothing.
        let c = app("1.0.0", Some(("1.0.0", "1.0.0")));
        assert_eq!(c.version_view().in_force, InForce::Declared);
    }

    #[test]
    fn an_unchanged_file_keeps_the_promotion_and_a_changed_version_wins() {
        let a = app("1.1.0", Some(("1.0.0", "1.1.0")));
        assert_eq!(
            version_intent(&a, "1.0.0"),
            VersionIntent::KeepPromoted {
                declared: "1.0.0".into(),
                promoted: "1.1.0".into()
            }
        );
        assert_eq!(
            version_intent(&a, "1.1.0"),
            VersionIntent::AdoptedPromoted {
                version: "1.1.0".into()
            }
        );
        assert_eq!(
            version_intent(&a, "0.9.0"),
            VersionIntent::Overridden {
                promoted: "1.1.0".into(),
                declared: "0.9.0".into()
            }
        );
    }

    #[test]
    fn records_serialise_in_camel_case() {
        let a = app("1.1.0", Some(("1.0.0", "1.1.0")));
        let v = serde_json::to_value(a.status.promotion.as_ref().unwrap()).unwrap();
        assert_eq!(v["declaredVersion"], "1.0.0");
        assert_eq!(v["last"]["source"], "greenRun");
        assert_eq!(v["last"]["result"], "ready");
        assert_eq!(v["last"]["atMs"], 1);
        assert_eq!(PromotionResult::RolledBack.metric_label(), "rolled_back");
    }
}
