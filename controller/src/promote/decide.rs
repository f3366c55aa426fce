//! The pure half of promotion: may this version be promoted, what has the health gate decided, and where does a rollback go.

use std::cmp::Ordering;

use crd::condition::{find_condition, types};
use crd::promotion::{PromotionAttempt, PromotionResult, PromotionSource};
use crd::warmapp::{Promotion, PromotionTrigger, RefreshPolicy};
use crd::{ConditionStatus, RecipeVersion, WarmApp, WarmAppPhase};
use state::history::Entry;

use crate::warmapp::decide::reason as warm_reason;

/// One request to move an app's `spec.version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The WarmApp.
    pub app: String,
    /// The version to move to.
    pub to: String,
    /// What asked.
    pub source: PromotionSource,
    /// The green run, for [`PromotionSource::GreenRun`].
    pub run: Option<String>,
    /// The operator allows going backwards for this request (`--allow-downgrade`); the
    /// app's `allowDowngrade` allows it for every request.
    pub allow_downgrade: bool,
    /// The exact content to serve (a green run's snapshot, issue 16); `None`: `to` rendered
    /// from the catalogue.
    pub content: Option<crd::Content>,
}

/// What a request does to an app as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Refused; the lowercase reason names the rule.
    Refused(String),
    /// The app already runs that version: nothing to do.
    AlreadyCurrent,
    /// Set `spec.version` from `from` to `to` and let the reconciler gate it.
    Promote {
        /// The current `spec.version`.
        from: String,
        /// The target.
        to: String,
        /// The version the operator declared, kept in `status.promotion`.
        declared: String,
    },
}

/// Decides a request against the app.
///
/// # Guarantees
/// Pure.
/// - A green run promotes only under `promote: onGreen`, an operator (promote or rollback)
///   under anything but `never`, a nightly refresh only under `refresh: latest`.
/// - The version only moves forward in recipe-version order, unless the app has
///   `allowDowngrade`, the operator passed `--allow-downgrade`, or it is a rollback (going
///   back is its point). A refresh never goes backwards.
/// - The declared version survives a chain of promotions: it is the record's while a
///   promotion is in force, else `spec.version`.
pub fn plan(app: &WarmApp, req: &Request) -> Plan {
    let mut judged = app.clone();
    let trigger = match req.source {
        PromotionSource::GreenRun => PromotionTrigger::GreenRun,
        PromotionSource::Operator => {
            judged.spec.allow_downgrade |= req.allow_downgrade;
            PromotionTrigger::Operator
        }
        PromotionSource::Rollback => {
            judged.spec.allow_downgrade = true;
            PromotionTrigger::Operator
        }
        PromotionSource::Refresh => {
            if app.spec.refresh != RefreshPolicy::Latest {
                return Plan::Refused(format!(
                    "refresh of {} refused: its refresh policy is {:?}",
                    app.metadata.name, app.spec.refresh
                ));
            }
            return match (
                RecipeVersion::parse(&req.to),
                RecipeVersion::parse(&app.spec.version),
            ) {
                (Ok(to), Ok(from)) => match to.cmp(&from) {
                    Ordering::Greater => promote(app, &req.to),
                    Ordering::Equal => Plan::AlreadyCurrent,
                    Ordering::Less => Plan::Refused(format!(
                        "refresh of {} refused: {} is older than {}",
                        app.metadata.name, req.to, app.spec.version
                    )),
                },
                (Err(e), _) | (_, Err(e)) => {
                    Plan::Refused(format!("refresh of {} refused: {e}", app.metadata.name))
                }
            };
        }
    };
    let same_content = match (&req.content, &app.spec.content) {
        (Some(want), Some(have)) => want.same_as(have),
        (None, None) => true,
        _ => false,
    };
    match judged.check_promotion(&req.to, trigger) {
        Ok(Promotion::AlreadyCurrent) if same_content => Plan::AlreadyCurrent,
        // Same version, other content (a candidate, a re-tested tag): the content moves.
        Ok(Promotion::AlreadyCurrent) => promote(app, &req.to),
        Ok(Promotion::Upgrade | Promotion::Downgrade) => promote(app, &req.to),
        Err(e) => Plan::Refused(e.to_string()),
    }
}

fn promote(app: &WarmApp, to: &str) -> Plan {
    Plan::Promote {
        from: app.spec.version.clone(),
        to: to.to_string(),
        declared: app.declared_version().to_string(),
    }
}

/// What the health gate has decided about `attempt`, judged from the app as stored now;
/// `None` while it is still deciding.
///
/// # Guarantees
/// Pure.
/// - The app gone, or its `spec.version` no longer the promoted one → `Superseded`.
/// - Ready at the promoted version, with a status describing the promotion's generation (or
///   a later one) → `Ready`.
/// - The `Degraded` condition says `UpgradeFailed` for that generation (or later) and the
///   rollback is over (not `RollingBack`) → `RolledBack`.
pub fn outcome(app: Option<&WarmApp>, attempt: &PromotionAttempt) -> Option<PromotionResult> {
    let Some(app) = app else {
        return Some(PromotionResult::Superseded);
    };
    if app.spec.version != attempt.to {
        return Some(PromotionResult::Superseded);
    }
    let status = &app.status;
    if status.observed_generation < attempt.generation {
        return None;
    }
    if status.phase == WarmAppPhase::Ready
        && status.observed_version.as_deref() == Some(&attempt.to)
    {
        return Some(PromotionResult::Ready);
    }
    let failed = find_condition(&status.conditions, types::DEGRADED).is_some_and(|c| {
        c.status == ConditionStatus::True
            && c.reason == warm_reason::UPGRADE_FAILED
            && c.observed_generation >= attempt.generation
    });
    if failed && status.phase != WarmAppPhase::RollingBack {
        return Some(PromotionResult::RolledBack);
    }
    None
}

/// History details of a promotion entry.
pub fn details(attempt: &PromotionAttempt, declared: &str) -> serde_json::Value {
    serde_json::json!({
        "run": attempt.run,
        "from": attempt.from,
        "to": attempt.to,
        "source": attempt.source,
        "result": attempt.result,
        "declared": declared,
        "generation": attempt.generation,
        "content": attempt.content,
    })
}

/// Where `hearth rollback` goes: the version before the last promotion that took effect,
/// from the app's history entries (newest first). `None` when no promotion became Ready.
///
/// # Guarantees
/// Pure. Only `Promoted` entries whose result is `ready` count, so a rolled-back or
/// superseded promotion is never "undone"; a rollback that became Ready is itself such an
/// entry, so rolling back twice returns to where the first rollback started.
pub fn rollback_target(entries: &[Entry]) -> Option<(String, String)> {
    entries
        .iter()
        .filter(|e| e.reason == state::history::reason::PROMOTED)
        .find(|e| e.details.get("result").and_then(|r| r.as_str()) == Some("ready"))
        .and_then(|e| {
            let get = |k: &str| e.details.get(k).and_then(|v| v.as_str()).map(String::from);
            Some((get("from")?, get("to")?))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crd::promotion::PromotionRecord;
    use crd::warmapp::PromotePolicy;
    use crd::Condition;

    fn app(version: &str, promote: PromotePolicy) -> WarmApp {
        let mut a: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "web", "generation": 3},
            "spec": {"recipe": "webapp", "version": version}
        }))
        .unwrap();
        a.spec.promote = promote;
        a
    }

    fn req(to: &str, source: PromotionSource) -> Request {
        Request {
            app: "web".into(),
            to: to.into(),
            source,
            run: None,
            allow_downgrade: false,
            content: None,
        }
    }

    fn attempt(to: &str, generation: u64) -> PromotionAttempt {
        PromotionAttempt {
            source: PromotionSource::GreenRun,
            run: Some("r".into()),
            from: "1.0.0".into(),
            to: to.into(),
            generation,
            at_ms: 0,
            result: PromotionResult::Pending,
            content: None,
            from_content: None,
        }
    }

    #[test]
    fn a_green_run_promotes_forward_under_on_green_only() {
        let a = app("1.0.0", PromotePolicy::OnGreen);
        assert_eq!(
            plan(&a, &req("1.1.0", PromotionSource::GreenRun)),
            Plan::Promote {
                from: "1.0.0".into(),
                to: "1.1.0".into(),
                declared: "1.0.0".into()
            }
        );
        assert_eq!(
            plan(&a, &req("1.0.0", PromotionSource::GreenRun)),
            Plan::AlreadyCurrent
        );
        let Plan::Refused(why) = plan(&a, &req("0.9.0", PromotionSource::GreenRun)) else {
            panic!()
        };
        assert!(why.contains("allowDowngrade is false"), "{why}");
        let manual = app("1.0.0", PromotePolicy::Manual);
        assert!(matches!(
            plan(&manual, &req("1.1.0", PromotionSource::GreenRun)),
            Plan::Refused(_)
        ));
    }

    #[test]
    fn the_same_version_with_other_content_is_promoted_and_the_same_content_is_current() {
        let content = |digest: &str| crd::Content {
            kind: crd::ContentKind::Release,
            tag: Some("1.0.0".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            dirty: false,
            digest: digest.repeat(64),
            run: None,
        };
        let mut a = app("1.0.0", PromotePolicy::OnGreen);
        let mut r = req("1.0.0", PromotionSource::GreenRun);
        r.content = Some(content("a"));
        assert!(
            matches!(plan(&a, &r), Plan::Promote { .. }),
            "no content yet"
        );
        a.spec.content = Some(content("a"));
        // The run that tested it does not make it other content.
        r.content.as_mut().unwrap().run = Some("web-2".into());
        assert_eq!(plan(&a, &r), Plan::AlreadyCurrent);
        r.content = Some(content("b"));
        assert!(matches!(plan(&a, &r), Plan::Promote { .. }));
        // Backwards stays refused whatever the content.
        let mut old = req("0.9.0", PromotionSource::GreenRun);
        old.content = Some(content("c"));
        assert!(matches!(plan(&a, &old), Plan::Refused(_)));
    }

    #[test]
    fn an_operator_may_downgrade_only_when_asked_and_never_under_never() {
        let a = app("2.0.0", PromotePolicy::Manual);
        assert!(matches!(
            plan(&a, &req("1.0.0", PromotionSource::Operator)),
            Plan::Refused(_)
        ));
        let mut r = req("1.0.0", PromotionSource::Operator);
        r.allow_downgrade = true;
        assert!(matches!(plan(&a, &r), Plan::Promote { .. }));
        assert!(matches!(
            plan(&a, &req("1.0.0", PromotionSource::Rollback)),
            Plan::Promote { .. }
        ));
        let never = app("2.0.0", PromotePolicy::Never);
        assert!(matches!(plan(&never, &r), Plan::Refused(_)));
        assert!(matches!(
            plan(&never, &req("1.0.0", PromotionSource::Rollback)),
            Plan::Refused(_)
        ));
    }

    #[test]
    fn a_refresh_needs_refresh_latest_and_only_goes_forward() {
        let mut a = app("1.1.0", PromotePolicy::Never);
        assert!(matches!(
            plan(&a, &req("2.0.0", PromotionSource::Refresh)),
            Plan::Refused(_)
        ));
        a.spec.refresh = RefreshPolicy::Latest;
        assert!(matches!(
            plan(&a, &req("2.0.0", PromotionSource::Refresh)),
            Plan::Promote { .. }
        ));
        assert_eq!(
            plan(&a, &req("1.1.0", PromotionSource::Refresh)),
            Plan::AlreadyCurrent
        );
        assert!(matches!(
            plan(&a, &req("1.0.0", PromotionSource::Refresh)),
            Plan::Refused(_)
        ));
    }

    #[test]
    fn the_declared_version_survives_a_chain_of_promotions() {
        let mut a = app("1.1.0", PromotePolicy::OnGreen);
        a.status.promotion = Some(PromotionRecord {
            declared_version: "1.0.0".into(),
            version: "1.1.0".into(),
            last: attempt("1.1.0", 2),
        });
        let Plan::Promote { declared, from, .. } =
            plan(&a, &req("2.0.0", PromotionSource::GreenRun))
        else {
            panic!()
        };
        assert_eq!((declared.as_str(), from.as_str()), ("1.0.0", "1.1.0"));
    }

    #[test]
    fn the_gate_is_undecided_until_the_status_describes_the_promotions_generation() {
        let mut a = app("1.1.0", PromotePolicy::OnGreen);
        a.status.observed_generation = 2;
        a.status.phase = WarmAppPhase::Ready;
        a.status.observed_version = Some("1.1.0".into());
        assert_eq!(outcome(Some(&a), &attempt("1.1.0", 3)), None);
        a.status.observed_generation = 3;
        assert_eq!(
            outcome(Some(&a), &attempt("1.1.0", 3)),
            Some(PromotionResult::Ready)
        );
        a.status.phase = WarmAppPhase::Upgrading;
        a.status.observed_version = Some("1.0.0".into());
        assert_eq!(outcome(Some(&a), &attempt("1.1.0", 3)), None);
    }

    #[test]
    fn a_failed_upgrade_is_rolled_back_once_the_rollback_is_over() {
        let mut a = app("2.1.0-broken", PromotePolicy::OnGreen);
        a.status.observed_generation = 3;
        a.status.observed_version = Some("2.0.0".into());
        a.status.phase = WarmAppPhase::RollingBack;
        a.status.conditions.push(Condition::new(
            types::DEGRADED,
            ConditionStatus::True,
            warm_reason::UPGRADE_FAILED,
            "x",
            0,
            3,
        ));
        let at = attempt("2.1.0-broken", 3);
        assert_eq!(outcome(Some(&a), &at), None);
        a.status.phase = WarmAppPhase::Degraded;
        assert_eq!(outcome(Some(&a), &at), Some(PromotionResult::RolledBack));
        // A failure of an earlier generation says nothing about this promotion.
        assert_eq!(outcome(Some(&a), &attempt("2.1.0-broken", 4)), None);
    }

    #[test]
    fn a_changed_spec_or_a_deleted_app_supersedes_the_promotion() {
        let a = app("3.0.0", PromotePolicy::OnGreen);
        assert_eq!(
            outcome(Some(&a), &attempt("2.0.0", 3)),
            Some(PromotionResult::Superseded)
        );
        assert_eq!(
            outcome(None, &attempt("2.0.0", 3)),
            Some(PromotionResult::Superseded)
        );
    }

    fn entry(seq: u64, reason: &str, details: serde_json::Value) -> Entry {
        Entry {
            seq,
            time_ms: seq,
            reason: reason.into(),
            subject: None,
            message: String::new(),
            details,
            actor: None,
        }
    }

    #[test]
    fn a_rollback_goes_to_the_version_before_the_last_promotion_that_took_effect() {
        let newest_first = [
            entry(
                5,
                "Promoted",
                serde_json::json!({"from": "2.0.0", "to": "2.1.0-broken", "result": "rolledBack"}),
            ),
            entry(4, "Deployed", serde_json::json!({})),
            entry(
                3,
                "Promoted",
                serde_json::json!({"from": "1.1.0", "to": "2.0.0", "result": "ready"}),
            ),
            entry(
                2,
                "Promoted",
                serde_json::json!({"from": "1.0.0", "to": "1.1.0", "result": "ready"}),
            ),
        ];
        assert_eq!(
            rollback_target(&newest_first),
            Some(("1.1.0".into(), "2.0.0".into()))
        );
        assert_eq!(rollback_target(&newest_first[..2]), None);
    }
}
