//! The pure half of the WarmApp reconciler: which version to run, and (spec, status, observation, now) → (effect, next status).

use std::time::Duration;

use crd::condition::{find_condition, set_condition, types};
use crd::{Condition, ConditionStatus, WarmApp, WarmAppPhase, WarmAppStatus};

/// Condition reasons the reconciler writes (CamelCase, machine-readable).
pub mod reason {
    /// Every task runs healthy at the desired version and the probe passes.
    pub const HEALTHY: &str = "Healthy";
    /// The first deployment is under way.
    pub const DEPLOYING: &str = "Deploying";
    /// A new version is proving healthy while the previous one keeps serving.
    pub const UPGRADING: &str = "Upgrading";
    /// The stack differed from the desired spec (removed or changed by hand) and is repaired.
    pub const DRIFT_REPAIRED: &str = "DriftRepaired";
    /// The stack matches the spec but is not healthy (tasks failing, probe failing).
    pub const UNHEALTHY: &str = "Unhealthy";
    /// A new version did not prove healthy in time; the previous one is restored.
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
    /// The previous version is being restored.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// The previous version was restored and serves.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The catalogue cannot render the version (unknown recipe or version, bad variables).
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// Nothing in progress.
    pub const IDLE: &str = "Idle";
}

/// How often a converging app is looked at again while something is in progress.
pub const PROGRESS_POLL: Duration = Duration::from_secs(2);
/// How often an app the catalogue cannot render is retried (the catalogue may be fixed).
pub const FAILED_POLL: Duration = Duration::from_secs(60);
/// How often an unhealthy app that hearth cannot fix by writing is looked at again.
pub const UNHEALTHY_POLL: Duration = Duration::from_secs(5);

/// Which version the reconciler drives the stack to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `spec.version`: deploy, repair or upgrade to it.
    Spec(String),
    /// The version that served before a failed upgrade of this generation: the app is held
    /// there (rolling back, then serving) until the operator changes the spec.
    Hold {
        /// The version to restore and keep.
        version: String,
        /// The version that failed.
        failed: String,
    },
}

impl Target {
    /// The version to run.
    pub fn version(&self) -> &str {
        match self {
            Target::Spec(v) => v,
            Target::Hold { version, .. } => version,
        }
    }
}

/// Decides which version to run.
///
/// # Guarantees
/// Pure. A failed upgrade is sticky for the generation it failed at (the `Degraded`
/// condition with reason [`reason::UPGRADE_FAILED`] records it): hearth does not retry the
/// broken version in a loop, and the next spec change (a new generation) is tried afresh.
pub fn target(app: &WarmApp) -> Target {
    let status = &app.status;
    let failed_here = find_condition(&status.conditions, types::DEGRADED).filter(|c| {
        c.status == ConditionStatus::True
            && c.reason == reason::UPGRADE_FAILED
            && c.observed_generation == app.metadata.generation
    });
    match (failed_here, &status.observed_version) {
        (Some(_), Some(serving)) if *serving != app.spec.version => Target::Hold {
            version: serving.clone(),
            failed: app.spec.version.clone(),
        },
        _ => Target::Spec(app.spec.version.clone()),
    }
}

/// Whether a stack is ready, as far as the reconciler could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every task of every service runs (healthy where a healthcheck exists) at the target
    /// version, and the optional HTTP/TCP probe passed.
    Ready,
    /// Something is not ready yet; the text says what (lowercase).
    NotReady(String),
}

/// What the executor observed, relative to the [`Target`] version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The catalogue could not render the target version (lowercase reason). Nothing was
    /// observed.
    RenderFailed(String),
    /// The stack was observed against the rendered target.
    Seen {
        /// Writes `stack::apply` would make (0: the stack matches the target exactly).
        writes_needed: usize,
        /// Readiness at the target version (judged only when `writes_needed == 0`).
        readiness: Readiness,
        /// During an upgrade: the stack matches the version that served before it (the
        /// swarm rolled the update back by itself, `failure_action: rollback`).
        at_serving_version: bool,
    },
}

/// The one write the executor may make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing to write to Docker: the stack already matches, or only waiting helps.
    None,
    /// Converge the stack to this version with `stack::apply` (create, repair, upgrade or roll
    /// back: the planner writes only what differs).
    Apply(String),
}

/// A history entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `state::history::reason::*` or [`REPAIRED`].
    pub reason: &'static str,
    /// One sentence.
    pub message: String,
}

/// History reason of a drift repair.
pub const REPAIRED: &str = "Repaired";

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to write to Docker.
    pub effect: Effect,
    /// The status to store (written only when it differs from the current one).
    pub status: WarmAppStatus,
    /// What to append to the history.
    pub note: Option<Note>,
    /// When to look again (`None`: only on a change, event or resync).
    pub requeue: Option<Duration>,
}

/// Inputs besides the object.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix milliseconds.
    pub ms: u64,
}

/// Decides one reconcile of `app`.
///
/// # Guarantees
/// - Pure and total: every (phase, observation) pair has exactly one arm.
/// - An app whose stack matches its target and is ready yields [`Effect::None`] and an
///   unchanged status when it was already Ready: the second reconcile writes nothing.
/// - A working version is never given up before its successor is ready: an upgrade is applied
///   in place with start-first updates, and when the successor misses its deadline (or the
///   swarm rolls it back) the effect is `Apply(serving version)`.
/// - Deadlines are measured from the `Progressing` condition's transition time, so they
///   survive restarts.
pub fn step(app: &WarmApp, target: &Target, observation: &Observation, now: Now) -> Decision {
    let case = Case::new(app, now);
    let (writes_needed, readiness, at_serving) = match observation {
        // The catalogue cannot render: nothing to apply; keep whatever serves.
        Observation::RenderFailed(why) => return case.render_failed(target.version(), why),
        Observation::Seen {
            writes_needed,
            readiness,
            at_serving_version,
        } => (*writes_needed, readiness, *at_serving_version),
    };
    match (target, readiness) {
        // Held at the version that served before a failed upgrade: restore (or repair) it.
        (Target::Hold { version, .. }, _) if writes_needed > 0 => case.restore_held(version),
        // The held version serves: Degraded (spec not met), Ready=True.
        (Target::Hold { version, failed }, Readiness::Ready) => case.held_serving(version, failed),
        // Still coming back (or the held version itself is unhealthy): wait.
        (Target::Hold { .. }, Readiness::NotReady(why)) => case.held_not_ready(why),
        (Target::Spec(version), _) => {
            // An upgrade under way failed (the swarm rolled it back, or it missed its
            // deadline): restore the serving version.
            if let Some((from, why)) =
                case.failed_upgrade(version, writes_needed, readiness, at_serving)
            {
                return rollback(app, case.status, version, &from, &why, now);
            }
            match readiness {
                // The stack differs from the target: deploy, upgrade or repair it.
                _ if writes_needed > 0 => case.converge(version),
                // At the target and ready: Ready (completing a deploy or upgrade if one ran).
                Readiness::Ready => case.ready(version),
                // At the target, not ready yet.
                Readiness::NotReady(why) => case.not_ready(version, why),
            }
        }
    }
}

/// What every case of [`step`] reads, and the status it builds on.
struct Case<'a> {
    app: &'a WarmApp,
    now: Now,
    generation: u64,
    /// The version that served before this reconcile.
    serving: Option<String>,
    timeout: Duration,
    /// The next status (starts as the current one at this generation).
    status: WarmAppStatus,
    /// The `Progressing=True` condition of this generation: the rollout under way.
    progressing: Option<Condition>,
    /// Whether the rollout under way has run longer than the app's ready timeout.
    deadline_passed: bool,
}

impl<'a> Case<'a> {
    fn new(app: &'a WarmApp, now: Now) -> Self {
        let generation = app.metadata.generation;
        let mut status = app.status.clone();
        status.observed_generation = generation;
        let timeout = app.spec.health.ready_timeout();
        // When the current rollout (deploy/upgrade/rollback) started, if it is this
        // generation's.
        let progressing = find_condition(&status.conditions, types::PROGRESSING)
            .filter(|c| c.status == ConditionStatus::True && c.observed_generation == generation)
            .cloned();
        let started_ms = progressing
            .as_ref()
            .map(|c| c.last_transition_time_ms)
            .unwrap_or(now.ms);
        Case {
            app,
            now,
            generation,
            serving: app.status.observed_version.clone(),
            timeout,
            deadline_passed: now.ms >= started_ms.saturating_add(duration_ms(timeout)),
            status,
            progressing,
        }
    }

    /// Sets condition `type_` of the next status.
    fn set(&mut self, type_: &str, st: ConditionStatus, reason: &str, message: String) {
        set_condition(
            &mut self.status.conditions,
            Condition::new(type_, st, reason, message, self.now.ms, self.generation),
        );
    }

    fn decide(self, effect: Effect, note: Option<Note>, requeue: Option<Duration>) -> Decision {
        Decision {
            effect,
            status: self.status,
            note,
            requeue,
        }
    }

    /// The catalogue cannot render `want`: Failed, nothing written; Ready=False only if
    /// nothing served yet.
    fn render_failed(mut self, want: &str, why: &str) -> Decision {
        let message = format!("cannot render {} {}: {why}", self.app.spec.recipe, want);
        self.status.phase = WarmAppPhase::Failed;
        self.status.last_error = Some(message.clone());
        self.set(
            types::PROGRESSING,
            ConditionStatus::False,
            reason::RENDER_FAILED,
            message.clone(),
        );
        if self.serving.is_none() {
            self.set(
                types::READY,
                ConditionStatus::False,
                reason::RENDER_FAILED,
                message,
            );
        }
        self.decide(Effect::None, None, Some(FAILED_POLL))
    }

    /// Held at `version` and the stack differs: apply it (a repair unless rolling back).
    fn restore_held(mut self, version: &str) -> Decision {
        let was_rolling_back = self.status.phase == WarmAppPhase::RollingBack;
        if !was_rolling_back {
            self.status.phase = WarmAppPhase::Degraded;
        }
        let note = (!was_rolling_back).then(|| Note {
            reason: REPAIRED,
            message: format!("repairing drift of held version {version}"),
        });
        self.decide(
            Effect::Apply(version.to_string()),
            note,
            Some(PROGRESS_POLL),
        )
    }

    /// Held at `version`, which serves: Degraded with Ready=True; the rollback is recorded
    /// when it just completed.
    fn held_serving(mut self, version: &str, failed: &str) -> Decision {
        let was_rolling_back = self.status.phase == WarmAppPhase::RollingBack;
        self.status.phase = WarmAppPhase::Degraded;
        self.status.observed_version = Some(version.to_string());
        self.set(
            types::READY,
            ConditionStatus::True,
            reason::ROLLED_BACK,
            format!("serving {version}; {failed} was rolled back"),
        );
        self.set(
            types::PROGRESSING,
            ConditionStatus::False,
            reason::ROLLED_BACK,
            format!("rolled back to {version}"),
        );
        let note = was_rolling_back.then(|| Note {
            reason: state::history::reason::ROLLED_BACK,
            message: format!("upgrade to {failed} failed; {version} restored and serving"),
        });
        self.decide(Effect::None, note, None)
    }

    /// Held, at the held version, not ready: wait (while rolling back) or say it is
    /// unhealthy.
    fn held_not_ready(mut self, why: &str) -> Decision {
        let was_rolling_back = self.status.phase == WarmAppPhase::RollingBack;
        if !was_rolling_back {
            self.status.phase = WarmAppPhase::Degraded;
            self.set(
                types::READY,
                ConditionStatus::False,
                reason::UNHEALTHY,
                why.to_string(),
            );
        }
        let requeue = if was_rolling_back {
            PROGRESS_POLL
        } else {
            UNHEALTHY_POLL
        };
        self.decide(Effect::None, None, Some(requeue))
    }

    /// The version being upgraded from and why, if an upgrade to `version` under way failed:
    /// the swarm rolled it back by itself, or its deadline passed before it was ready.
    fn failed_upgrade(
        &self,
        version: &str,
        writes_needed: usize,
        readiness: &Readiness,
        at_serving: bool,
    ) -> Option<(String, String)> {
        let from = self.serving.clone().filter(|s| s != version)?;
        let in_upgrade = self.status.phase == WarmAppPhase::Upgrading
            && self
                .progressing
                .as_ref()
                .is_some_and(|c| c.reason == reason::UPGRADING);
        if !in_upgrade {
            return None;
        }
        let why = if at_serving && writes_needed > 0 {
            "the swarm rolled the update back (new tasks failed)".to_string()
        } else if self.deadline_passed && !(writes_needed == 0 && readiness == &Readiness::Ready) {
            match readiness {
                Readiness::NotReady(w) if writes_needed == 0 => {
                    format!("not ready within {}: {w}", fmt_duration(self.timeout))
                }
                _ => format!("not converged within {}", fmt_duration(self.timeout)),
            }
        } else {
            return None;
        };
        Some((from, why))
    }

    /// The stack differs from `version`: the first deployment, an upgrade (the serving
    /// version keeps serving), or a repair of drift.
    fn converge(mut self, version: &str) -> Decision {
        let upgrading_from = self.serving.clone().filter(|s| s != version);
        let (phase, reason_, message, note) = match (&self.serving, &upgrading_from) {
            // Never deployed: the first deployment.
            (None, _) => (
                WarmAppPhase::Deploying,
                reason::DEPLOYING,
                format!("deploying {version}"),
                None,
            ),
            // A new version: start (or continue) the health-gated upgrade.
            (Some(_), Some(from)) => (
                WarmAppPhase::Upgrading,
                reason::UPGRADING,
                format!("upgrading from {from} to {version}; {from} keeps serving"),
                None,
            ),
            // Same version, stack differs: drift (removed or changed by hand).
            (Some(_), None) => (
                WarmAppPhase::Degraded,
                reason::DRIFT_REPAIRED,
                format!("stack drifted from {version}; repairing"),
                Some(Note {
                    reason: REPAIRED,
                    message: format!("stack drifted from {version}; re-applied"),
                }),
            ),
        };
        // A rollout of a different kind (or generation) starts its clock now.
        let same_rollout = self
            .progressing
            .as_ref()
            .is_some_and(|c| c.reason == reason_);
        if !same_rollout {
            self.status
                .conditions
                .retain(|c| c.type_ != types::PROGRESSING);
        }
        self.set(types::PROGRESSING, ConditionStatus::True, reason_, message);
        self.status.phase = phase;
        self.decide(
            Effect::Apply(version.to_string()),
            note,
            Some(PROGRESS_POLL),
        )
    }

    /// At `version` and ready: Ready, completing a deploy or upgrade if one ran.
    fn ready(mut self, version: &str) -> Decision {
        let note = match &self.serving {
            None => Some(Note {
                reason: state::history::reason::DEPLOYED,
                message: format!("deployed {version}; ready"),
            }),
            Some(from) if from != version => Some(Note {
                reason: state::history::reason::DEPLOYED,
                message: format!("upgraded from {from} to {version}; ready"),
            }),
            Some(_) => None,
        };
        if let Some(from) = self.serving.clone().filter(|s| s != version) {
            self.status.previous_known_good = Some(from);
        }
        self.status.phase = WarmAppPhase::Ready;
        self.status.observed_version = Some(version.to_string());
        self.status.last_error = None;
        self.set(
            types::READY,
            ConditionStatus::True,
            reason::HEALTHY,
            format!("serving {version}"),
        );
        self.set(
            types::PROGRESSING,
            ConditionStatus::False,
            reason::IDLE,
            String::new(),
        );
        self.set(
            types::DEGRADED,
            ConditionStatus::False,
            reason::HEALTHY,
            String::new(),
        );
        self.decide(Effect::None, note, None)
    }

    /// At the target, not ready: the first deployment still coming up, an upgrade proving
    /// itself, or a deployed version that is unhealthy (swarm restarts tasks; hearth has
    /// nothing to write).
    fn not_ready(mut self, version: &str, why: &str) -> Decision {
        let upgrading = self.serving.as_deref().is_some_and(|s| s != version);
        match (&self.serving, upgrading) {
            // First deployment still coming up; after the deadline say so.
            (None, _) => {
                self.status.phase = WarmAppPhase::Deploying;
                if self.deadline_passed {
                    self.status.last_error = Some(format!(
                        "not ready within {}: {why}",
                        fmt_duration(self.timeout)
                    ));
                }
                self.set(
                    types::READY,
                    ConditionStatus::False,
                    reason::DEPLOYING,
                    why.to_string(),
                );
            }
            // Upgrade in progress: the new version is proving itself.
            (Some(_), true) => self.status.phase = WarmAppPhase::Upgrading,
            // Deployed at the version but unhealthy.
            (Some(_), false) => {
                self.status.phase = WarmAppPhase::Degraded;
                for type_ in [types::READY, types::DEGRADED] {
                    let st = if type_ == types::READY {
                        ConditionStatus::False
                    } else {
                        ConditionStatus::True
                    };
                    self.set(type_, st, reason::UNHEALTHY, why.to_string());
                }
            }
        }
        let requeue = if self.status.phase == WarmAppPhase::Degraded {
            UNHEALTHY_POLL
        } else {
            PROGRESS_POLL
        };
        self.decide(Effect::None, None, Some(requeue))
    }
}

/// The decision to give up `failed` and restore `serving`.
fn rollback(
    app: &WarmApp,
    mut status: WarmAppStatus,
    failed: &str,
    serving: &str,
    why: &str,
    now: Now,
) -> Decision {
    let generation = app.metadata.generation;
    let message = format!("upgrade to {failed} failed: {why}; rolling back to {serving}");
    status.phase = WarmAppPhase::RollingBack;
    status.last_error = Some(message.clone());
    status.conditions.retain(|c| c.type_ != types::PROGRESSING);
    for (type_, st, reason_) in [
        (
            types::PROGRESSING,
            ConditionStatus::True,
            reason::ROLLING_BACK,
        ),
        (
            types::DEGRADED,
            ConditionStatus::True,
            reason::UPGRADE_FAILED,
        ),
    ] {
        set_condition(
            &mut status.conditions,
            Condition::new(type_, st, reason_, message.clone(), now.ms, generation),
        );
    }
    Decision {
        effect: Effect::Apply(serving.to_string()),
        status,
        note: Some(Note {
            reason: state::history::reason::ROLLED_BACK,
            message: message.clone(),
        }),
        requeue: Some(PROGRESS_POLL),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crd::ObjectMeta;

    fn app(version: &str) -> WarmApp {
        let mut a: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "web"},
            "spec": {"recipe": "webapp", "version": version,
                     "health": {"readyTimeout": "60s"}}
        }))
        .unwrap();
        a.metadata = ObjectMeta {
            generation: 1,
            ..ObjectMeta::named("web")
        };
        a
    }

    fn seen(writes: usize, ready: bool) -> Observation {
        Observation::Seen {
            writes_needed: writes,
            readiness: if ready {
                Readiness::Ready
            } else {
                Readiness::NotReady("health: starting".into())
            },
            at_serving_version: false,
        }
    }

    /// Runs `step` and stores its status back, as the executor does.
    fn run(a: &mut WarmApp, obs: Observation, ms: u64) -> Decision {
        let d = step(a, &target(a), &obs, Now { ms });
        a.status = d.status.clone();
        d
    }

    #[test]
    fn a_new_app_is_deployed_then_ready_and_then_left_alone() {
        let mut a = app("1.0.0");
        let d = run(&mut a, seen(3, false), 1_000);
        assert_eq!(d.effect, Effect::Apply("1.0.0".into()));
        assert_eq!(a.status.phase, WarmAppPhase::Deploying);
        let d = run(&mut a, seen(0, false), 2_000);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(a.status.phase, WarmAppPhase::Deploying);
        let d = run(&mut a, seen(0, true), 3_000);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(a.status.phase, WarmAppPhase::Ready);
        assert_eq!(a.status.observed_version.as_deref(), Some("1.0.0"));
        assert_eq!(d.note.unwrap().reason, "Deployed");
        let before = a.status.clone();
        let d = run(&mut a, seen(0, true), 9_000);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(d.status, before, "an unchanged ready app changes nothing");
        assert!(d.note.is_none() && d.requeue.is_none());
    }

    #[test]
    fn an_upgrade_keeps_the_old_version_as_previous_known_good_once_ready() {
        let mut a = app("1.0.0");
        run(&mut a, seen(0, true), 1_000);
        a.spec.version = "2.0.0".into();
        a.metadata.generation = 2;
        let d = run(&mut a, seen(1, false), 2_000);
        assert_eq!(d.effect, Effect::Apply("2.0.0".into()));
        assert_eq!(a.status.phase, WarmAppPhase::Upgrading);
        assert_eq!(a.status.observed_version.as_deref(), Some("1.0.0"));
        run(&mut a, seen(0, false), 3_000);
        assert_eq!(a.status.phase, WarmAppPhase::Upgrading);
        let d = run(&mut a, seen(0, true), 4_000);
        assert_eq!(a.status.phase, WarmAppPhase::Ready);
        assert_eq!(a.status.observed_version.as_deref(), Some("2.0.0"));
        assert_eq!(a.status.previous_known_good.as_deref(), Some("1.0.0"));
        assert!(d
            .note
            .unwrap()
            .message
            .contains("upgraded from 1.0.0 to 2.0.0"));
    }

    #[test]
    fn an_upgrade_that_misses_its_deadline_rolls_back_and_stays_rolled_back() {
        let mut a = app("1.0.0");
        run(&mut a, seen(0, true), 1_000);
        a.spec.version = "2.1.0-broken".into();
        a.metadata.generation = 2;
        run(&mut a, seen(1, false), 10_000);
        // Before the deadline (60 s): waiting.
        let d = run(&mut a, seen(0, false), 69_000);
        assert_eq!(d.effect, Effect::None);
        // After it: roll back to the serving version.
        let d = run(&mut a, seen(0, false), 70_001);
        assert_eq!(d.effect, Effect::Apply("1.0.0".into()));
        assert_eq!(a.status.phase, WarmAppPhase::RollingBack);
        let err = a.status.last_error.clone().unwrap();
        assert!(
            err.contains("upgrade to 2.1.0-broken failed: not ready within 1m: health: starting"),
            "{err}"
        );
        assert_eq!(d.note.unwrap().reason, "RolledBack");
        // The target is now held at 1.0.0.
        assert_eq!(
            target(&a),
            Target::Hold {
                version: "1.0.0".into(),
                failed: "2.1.0-broken".into()
            }
        );
        let d = run(&mut a, seen(1, false), 71_000);
        assert_eq!(d.effect, Effect::Apply("1.0.0".into()));
        let d = run(&mut a, seen(0, true), 72_000);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(a.status.phase, WarmAppPhase::Degraded);
        assert_eq!(a.status.observed_version.as_deref(), Some("1.0.0"));
        let ready = find_condition(&a.status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        let degraded = find_condition(&a.status.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.reason, reason::UPGRADE_FAILED);
        assert!(a.status.last_error.is_some());
        // Steady afterwards: nothing to do, no note.
        let before = a.status.clone();
        let d = run(&mut a, seen(0, true), 90_000);
        assert_eq!((d.effect, d.note), (Effect::None, None));
        assert_eq!(d.status, before);
        // A new spec generation is tried afresh.
        a.spec.version = "2.0.0".into();
        a.metadata.generation = 3;
        assert_eq!(target(&a), Target::Spec("2.0.0".into()));
        let d = run(&mut a, seen(1, false), 91_000);
        assert_eq!(d.effect, Effect::Apply("2.0.0".into()));
        assert_eq!(a.status.phase, WarmAppPhase::Upgrading);
        run(&mut a, seen(0, true), 92_000);
        assert_eq!(a.status.phase, WarmAppPhase::Ready);
        assert_eq!(a.status.last_error, None);
        assert_eq!(
            find_condition(&a.status.conditions, types::DEGRADED)
                .unwrap()
                .status,
            ConditionStatus::False
        );
    }

    #[test]
    fn a_swarm_side_rollback_is_taken_as_a_failed_upgrade_at_once() {
        let mut a = app("1.0.0");
        run(&mut a, seen(0, true), 1_000);
        a.spec.version = "2.1.0-broken".into();
        a.metadata.generation = 2;
        run(&mut a, seen(1, false), 2_000);
        let obs = Observation::Seen {
            writes_needed: 1,
            readiness: Readiness::NotReady("not converged".into()),
            at_serving_version: true,
        };
        let d = run(&mut a, obs, 3_000);
        assert_eq!(d.effect, Effect::Apply("1.0.0".into()));
        assert!(a
            .status
            .last_error
            .unwrap()
            .contains("the swarm rolled the update back"));
    }

    #[test]
    fn drift_at_the_same_version_is_repaired_and_noted() {
        let mut a = app("1.0.0");
        run(&mut a, seen(0, true), 1_000);
        let d = run(&mut a, seen(2, false), 2_000);
        assert_eq!(d.effect, Effect::Apply("1.0.0".into()));
        assert_eq!(a.status.phase, WarmAppPhase::Degraded);
        assert_eq!(d.note.unwrap().reason, REPAIRED);
        run(&mut a, seen(0, true), 3_000);
        assert_eq!(a.status.phase, WarmAppPhase::Ready);
    }

    #[test]
    fn an_unrenderable_version_fails_without_writes() {
        let mut a = app("9.9.9");
        let d = run(&mut a, Observation::RenderFailed("not published".into()), 1);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(a.status.phase, WarmAppPhase::Failed);
        assert!(a.status.last_error.unwrap().contains("not published"));
    }

    #[test]
    fn an_unhealthy_app_at_its_version_is_degraded_without_writes() {
        let mut a = app("1.0.0");
        run(&mut a, seen(0, true), 1_000);
        let d = run(&mut a, seen(0, false), 2_000);
        assert_eq!(d.effect, Effect::None);
        assert_eq!(a.status.phase, WarmAppPhase::Degraded);
        assert_eq!(d.requeue, Some(UNHEALTHY_POLL));
    }
}
