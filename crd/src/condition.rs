//! Status conditions, kube-style: type, status, reason, message, lastTransitionTimeMs, observedGeneration.

use serde::{Deserialize, Serialize};

use crate::validation::{check_text, ValidationErrors};

/// Well-known condition types.
pub mod types {
    /// The object is serving / usable (WarmApp healthy, DepProvider resolvable, Run deployed).
    pub const READY: &str = "Ready";
    /// A change is being rolled out (WarmApp upgrade, Run deploy or teardown).
    pub const PROGRESSING: &str = "Progressing";
    /// The object is deployed but not healthy, or a rollback happened.
    pub const DEGRADED: &str = "Degraded";
    /// Teardown finished and was verified to leave nothing behind.
    pub const TORN_DOWN: &str = "TornDown";
}

/// Whether a condition holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// hearth does not know yet.
    #[default]
    Unknown,
}

/// One observation about an object, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What is observed, e.g. `Ready` (see [`types`]); unique within a status.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase machine-readable reason, e.g. `HealthCheckFailed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (unix milliseconds).
    #[serde(default)]
    pub last_transition_time_ms: u64,
    /// The `metadata.generation` this observation was made against.
    #[serde(default)]
    pub observed_generation: u64,
}

impl Condition {
    /// A condition observed now against `generation`.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
        now_ms: u64,
        generation: u64,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time_ms: now_ms,
            observed_generation: generation,
        }
    }
}

/// Sets `new` in `conditions`, replacing the condition of the same type.
///
/// # Guarantees
/// `lastTransitionTimeMs` only moves when `status` changes (kube semantics): re-asserting an
/// unchanged status keeps the earlier transition time. Returns whether anything changed, so
/// callers can skip a status write when nothing did.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time_ms = old.last_transition_time_ms;
            }
            if *old == new {
                false
            } else {
                *old = new;
                true
            }
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Checks a condition list: non-empty CamelCase-ish types, unique types, no control
/// characters in reason.
pub(crate) fn validate_conditions(
    errs: &mut ValidationErrors,
    path: &str,
    conditions: &[Condition],
) {
    for (i, c) in conditions.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c.type_.is_empty() || !c.type_.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            errs.push(
                format!("{p}.type"),
                "must be a non-empty alphanumeric word like Ready",
            );
        }
        errs.check(format!("{p}.reason"), check_text(&c.reason, 128));
    }
    crate::validation::check_unique(
        errs,
        path,
        conditions,
        |c| c.type_.clone(),
        "condition type",
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn setting_an_unchanged_status_keeps_the_transition_time() {
        let mut cs = vec![];
        assert!(set_condition(
            &mut cs,
            Condition::new("Ready", ConditionStatus::True, "Healthy", "", 100, 1)
        ));
        assert!(!set_condition(
            &mut cs,
            Condition::new("Ready", ConditionStatus::True, "Healthy", "", 200, 1)
        ));
        assert_eq!(cs[0].last_transition_time_ms, 100);
        // new generation observed: a change, but the transition time stays
        assert!(set_condition(
            &mut cs,
            Condition::new("Ready", ConditionStatus::True, "Healthy", "", 300, 2)
        ));
        assert_eq!(cs[0].last_transition_time_ms, 100);
        assert_eq!(cs[0].observed_generation, 2);
    }

    #[test]
    fn setting_a_changed_status_moves_the_transition_time() {
        let mut cs = vec![Condition::new(
            "Ready",
            ConditionStatus::True,
            "",
            "",
            100,
            1,
        )];
        assert!(set_condition(
            &mut cs,
            Condition::new(
                "Ready",
                ConditionStatus::False,
                "Unhealthy",
                "task exited",
                200,
                1
            )
        ));
        assert_eq!(cs.len(), 1);
        assert_eq!(
            find_condition(&cs, "Ready")
                .unwrap()
                .last_transition_time_ms,
            200
        );
        assert!(set_condition(
            &mut cs,
            Condition::new("Degraded", ConditionStatus::True, "", "", 200, 1)
        ));
        assert_eq!(cs.len(), 2);
    }

    #[test]
    fn conditions_serialise_with_kube_field_names() {
        let c = Condition::new("Ready", ConditionStatus::False, "Unhealthy", "x", 5, 2);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "Ready", "status": "False", "reason": "Unhealthy", "message": "x", "lastTransitionTimeMs": 5, "observedGeneration": 2})
        );
    }

    #[test]
    fn condition_lists_with_bad_or_duplicate_types_are_invalid() {
        let mut errs = ValidationErrors::default();
        let cs = vec![
            Condition::new("Ready", ConditionStatus::True, "", "", 0, 0),
            Condition::new("", ConditionStatus::True, "", "", 0, 0),
            Condition::new("Ready", ConditionStatus::True, "a\nb", "", 0, 0),
        ];
        validate_conditions(&mut errs, "status.conditions", &cs);
        assert_eq!(
            errs.paths(),
            [
                "status.conditions[1].type",
                "status.conditions[2].reason",
                "status.conditions[2]"
            ]
        );
    }
}
