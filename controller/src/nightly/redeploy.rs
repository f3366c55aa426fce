//! The nightly refresh of unhealthy warm apps: which apps to redeploy (pure) and the forced update.
//!
//! A warm app deployed at its version whose tasks are failing or not running at the desired
//! count is `Degraded` with the `Degraded` condition's reason `Unhealthy` (the WarmApp
//! reconciler judges that from tasks, containers and the probe, and has nothing to write:
//! the stack matches its spec). Swarm restarts failing tasks by itself, but a task stuck
//! (e.g. a volume or network state that a fresh task would not inherit) stays that way. The
//! nightly forces a redeploy of every service of such an app ([`Swarm::force_update_service`],
//! Swarm's `ForceUpdate` counter, following the recipe's update order — start-first by
//! default, so a task that still serves keeps serving) and triggers a reconcile: the app
//! becomes `Ready` only once the reconciler's health gate sees every task healthy again.
//!
//! Drifted apps need no special handling: the reconcile the refresh triggers repairs them.

use crd::condition::{find_condition, types};
use crd::{ConditionStatus, WarmApp, WarmAppPhase};

use crate::stack::{self, Depth};
use crate::swarm::Swarm;
use crate::warmapp::decide::reason;

/// Why `app` should be redeployed, if it should: `Degraded` with `Degraded=True` reason
/// `Unhealthy` (not an upgrade in progress, not a failed upgrade's hold — those have their own
/// path).
pub fn unhealthy(app: &WarmApp) -> Option<String> {
    if app.status.phase != WarmAppPhase::Degraded {
        return None;
    }
    find_condition(&app.status.conditions, types::DEGRADED)
        .filter(|c| c.status == ConditionStatus::True && c.reason == reason::UNHEALTHY)
        .map(|c| {
            if c.message.is_empty() {
                "unhealthy".to_string()
            } else {
                c.message.clone()
            }
        })
}

/// Forces a redeploy of every service of the stack `namespace`; returns the services'
/// names.
///
/// # Errors
/// The first failing call, as text (observing the stack or updating a service; services
/// before it were redeployed).
pub async fn redeploy(swarm: &dyn Swarm, namespace: &str) -> Result<Vec<String>, String> {
    let observed = stack::observe(swarm, namespace, Depth::Objects)
        .await
        .map_err(|e| e.to_string())?;
    if observed.services.is_empty() {
        return Err(format!("stack {namespace} has no services"));
    }
    let mut done = Vec::new();
    for s in &observed.services {
        swarm
            .force_update_service(&s.meta.id, s.meta.version)
            .await
            .map_err(|e| e.to_string())?;
        done.push(s.meta.name.clone());
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crd::condition::set_condition;
    use crd::Condition;

    fn app(phase: WarmAppPhase, degraded_reason: Option<&str>) -> WarmApp {
        let mut app: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "shop"},
            "spec": {"recipe": "shop", "version": "1.0.0"}
        }))
        .unwrap();
        app.status.phase = phase;
        if let Some(r) = degraded_reason {
            let mut c: Condition = serde_json::from_value(serde_json::json!({
                "type": types::DEGRADED, "status": "True", "reason": r,
                "message": "1/2 tasks running", "lastTransitionTimeMs": 0
            }))
            .unwrap();
            c.reason = r.to_string();
            set_condition(&mut app.status.conditions, c);
        }
        app
    }

    #[test]
    fn only_a_degraded_unhealthy_app_is_redeployed() {
        assert_eq!(
            unhealthy(&app(WarmAppPhase::Degraded, Some(reason::UNHEALTHY))).as_deref(),
            Some("1/2 tasks running")
        );
        // a failed upgrade's hold is not redeployed by the nightly
        assert_eq!(
            unhealthy(&app(WarmAppPhase::Degraded, Some(reason::UPGRADE_FAILED))),
            None
        );
        for phase in [
            WarmAppPhase::Ready,
            WarmAppPhase::Upgrading,
            WarmAppPhase::Deploying,
            WarmAppPhase::RollingBack,
        ] {
            assert_eq!(unhealthy(&app(phase, Some(reason::UNHEALTHY))), None);
        }
    }
}
