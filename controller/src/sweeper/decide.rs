//! The pure sweep decision: which observed objects belong to a run that is over, and may be removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crd::names::{labels as keys, StackName, StackRole};
use crd::{DepMode, Owner, Run, RunPhase};
use serde::Serialize;

use crate::liveness::Liveness;
use crate::stack::NAMESPACE_LABEL;
use crate::swarm::{Labels, ObjectKind};

/// One object as a list call returned it, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// Its kind (service, network, volume, secret, config).
    #[serde(serialize_with = "kind_str")]
    pub kind: ObjectKind,
    /// Its ID (a volume's ID is its name).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(skip)]
    pub labels: Labels,
    /// When it was created (unix ms), if the daemon said.
    pub created_at_ms: Option<u64>,
    /// The node endpoint (`--node-endpoint` key: node ID or hostname) it was listed through;
    /// `None` for the daemon hearth talks to. Only volumes (node-local) have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn kind_str<S: serde::Serializer>(kind: &ObjectKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        match &self.node {
            Some(node) => write!(f, " on node {node}"),
            None => Ok(()),
        }
    }
}

/// Why an object is swept (or why a run is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// No run of that name is recorded (and the object is older than the creation guard).
    RunUnknown,
    /// The run is terminal: its teardown should have removed this; it is a leak.
    RunFinished,
    /// The run's lease expired without a heartbeat.
    LeaseExpired,
    /// The run's owner process is dead.
    OwnerDead,
}

/// What becomes of a run the sweeper closes.
impl Reason {
    /// The reason in words, as history and errors print it (`owner dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RunUnknown => "run unknown",
            Reason::RunFinished => "run finished",
            Reason::LeaseExpired => "lease expired",
            Reason::OwnerDead => "owner dead",
        }
    }

    /// The reason as a CamelCase condition reason (`OwnerDead`).
    pub fn code(self) -> &'static str {
        match self {
            Reason::RunUnknown => "RunUnknown",
            Reason::RunFinished => "RunFinished",
            Reason::LeaseExpired => "LeaseExpired",
            Reason::OwnerDead => "OwnerDead",
        }
    }

    /// The reason of a [`Reason::code`].
    pub fn from_code(code: &str) -> Option<Reason> {
        [
            Reason::RunUnknown,
            Reason::RunFinished,
            Reason::LeaseExpired,
            Reason::OwnerDead,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    /// The terminal phase a recorded, not yet terminal run gets for this reason.
    pub fn closing_phase(self) -> Option<RunPhase> {
        match self {
            Reason::LeaseExpired => Some(RunPhase::Expired),
            Reason::OwnerDead => Some(RunPhase::Orphaned),
            Reason::RunUnknown | Reason::RunFinished => None,
        }
    }
}

/// One object to remove with forced teardown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepAction {
    /// The object.
    pub object: Object,
    /// The run it belongs to.
    pub run: String,
    /// Why it goes.
    pub reason: Reason,
    /// Whether it is owned through adoption (no managed-by label, but in the stack namespace
    /// hearth assigned to the recorded run).
    pub adopted: bool,
}

/// A recorded run the sweeper closes once nothing of it is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseRun {
    /// The run.
    pub run: String,
    /// Why (owner dead or lease expired).
    pub reason: Reason,
}

/// The sweep decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Objects to remove.
    pub remove: Vec<SweepAction>,
    /// Runs to close (phase Orphaned/Expired, slot released) once their objects are gone.
    pub close: Vec<CloseRun>,
    /// Objects of over runs spared by the creation guard (looked at again next sweep).
    pub guarded: Vec<Object>,
}

/// Settings of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Objects of an unrecorded run younger than this are left alone: the run may be about to
    /// be recorded (Ryuk's creation guard).
    pub creation_guard: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            creation_guard: Duration::from_secs(30),
        }
    }
}

/// The fate of a recorded run.
fn fate(run: &Run, now_ms: u64, liveness: &dyn Fn(&Owner) -> Liveness) -> Option<Reason> {
    if run.status.phase.is_terminal() {
        return Some(Reason::RunFinished);
    }
    if liveness(&run.spec.owner) == Liveness::Dead {
        return Some(Reason::OwnerDead);
    }
    if run.lease_expired(now_ms) {
        return Some(Reason::LeaseExpired);
    }
    None
}

/// The stack names hearth assigned to recorded runs (their own and their per-run deps'),
/// mapped to the run.
pub fn assigned_stacks(runs: &[Run]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in runs {
        let name = r.metadata.name.clone();
        if let Some(s) = &r.status.stack_name {
            out.insert(s.clone(), name.clone());
        } else if let Ok(s) = r.stack_name() {
            out.insert(s.into_string(), name.clone());
        }
        for d in &r.status.deps {
            if d.mode == DepMode::PerRun {
                out.insert(d.stack_name.clone(), name.clone());
            }
        }
    }
    out
}

/// Which run an object belongs to, and whether hearth owns it at all.
///
/// Owned means: it carries `hearth.managed-by=hearth`, or its stack namespace is a stack name
/// hearth assigned to a recorded run (adoption). Returns `(run, adopted)`; `None` for objects
/// hearth does not own or that belong to no run (warm apps, operator stacks).
pub(crate) fn owning_run(
    object: &Object,
    assigned: &BTreeMap<String, String>,
) -> Option<(String, bool)> {
    let managed =
        object.labels.get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGED_BY_VALUE);
    let namespace = object.labels.get(NAMESPACE_LABEL);
    if !managed {
        // Adoption: only in a namespace hearth assigned to a run it recorded.
        let run = namespace.and_then(|ns| assigned.get(ns))?;
        return Some((run.clone(), true));
    }
    if let Some(run) = object.labels.get(keys::PARENT_RUN) {
        return Some((run.clone(), false));
    }
    match object.labels.get(keys::KIND).map(String::as_str) {
        Some("Run") => return object.labels.get(keys::NAME).map(|n| (n.clone(), false)),
        // A warm app's, a provider's or an operator's stack: not a run's object.
        Some(_) => return None,
        None => {}
    }
    let ns = namespace?;
    if let Some(run) = assigned.get(ns) {
        return Some((run.clone(), false));
    }
    // A managed object in a run-stack namespace of a run not recorded (any more).
    match StackName::recognise(ns)?.role() {
        StackRole::Run => ns
            .strip_prefix(StackRole::Run.prefix())
            .map(|r| (r.to_string(), false)),
        StackRole::RunDep
        | StackRole::WarmCanonical
        | StackRole::WarmProvider
        | StackRole::SlotNamespace => None,
    }
}

/// Decides what to sweep.
///
/// `objects` are everything the list calls returned (one list per kind, no filter); `runs` is
/// the store's snapshot of runs; `liveness` says whether an owner lives.
///
/// # Guarantees
/// - Only objects hearth owns are ever selected: carrying `hearth.managed-by=hearth`, or
///   adopted (in the namespace of a stack hearth assigned to a recorded run). Warm apps'
///   objects and operator stacks are never selected.
/// - An object of a recorded run is selected only when that run is terminal, its owner is
///   dead or its lease expired; an object of an unrecorded run only once it is older than
///   the creation guard (an object without a creation time is treated as new).
/// - Every recorded non-terminal run whose owner is dead or whose lease expired is listed in
///   `close`, with or without objects.
pub fn decide(
    objects: &[Object],
    runs: &[Run],
    now_ms: u64,
    liveness: &dyn Fn(&Owner) -> Liveness,
    config: &Config,
) -> Decision {
    let assigned = assigned_stacks(runs);
    let by_name: BTreeMap<&str, &Run> =
        runs.iter().map(|r| (r.metadata.name.as_str(), r)).collect();
    let fates: BTreeMap<&str, Option<Reason>> = runs
        .iter()
        .map(|r| (r.metadata.name.as_str(), fate(r, now_ms, liveness)))
        .collect();
    let guard_ms = u64::try_from(config.creation_guard.as_millis()).unwrap_or(u64::MAX);
    let mut decision = Decision::default();
    for object in objects {
        let Some((run, adopted)) = owning_run(object, &assigned) else {
            continue;
        };
        let reason = match by_name.get(run.as_str()) {
            Some(_) => match fates.get(run.as_str()).copied().flatten() {
                Some(r) => r,
                None => continue,
            },
            None => {
                let old = object
                    .created_at_ms
                    .is_some_and(|c| now_ms.saturating_sub(c) >= guard_ms);
                if !old {
                    decision.guarded.push(object.clone());
                    continue;
                }
                Reason::RunUnknown
            }
        };
        decision.remove.push(SweepAction {
            object: object.clone(),
            run,
            reason,
            adopted,
        });
    }
    let mut closing = BTreeSet::new();
    for r in runs {
        if let Some(reason) = fates.get(r.metadata.name.as_str()).copied().flatten() {
            if reason.closing_phase().is_some() && closing.insert(r.metadata.name.clone()) {
                decision.close.push(CloseRun {
                    run: r.metadata.name.clone(),
                    reason,
                });
            }
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crd::run::{DepBinding, LeaseSpec};
    use crd::RunSpec;
    use proptest::prelude::*;

    const NOW: u64 = 10_000_000;

    fn owner(pid: u32) -> Owner {
        Owner {
            kind: crd::OwnerKind::Pid,
            pid,
            process_start_time: 1,
            host: "h".into(),
            boot_id: "b".into(),
        }
    }

    fn run(name: &str, pid: u32) -> Run {
        let mut r = Run::new(
            name,
            RunSpec {
                recipe: "web".into(),
                version: "1.0.0".into(),
                git_ref: None,
                owner: owner(pid),
                lease: None,
                slot_pool: None,
                deps: vec![],
                required_tiers: vec![],
                deploy: false,
                finish: false,
                failure: None,
                content: None,
                target: None,
            },
        );
        r.metadata.creation_timestamp_ms = NOW - 60_000;
        r.status.phase = RunPhase::Running;
        r
    }

    fn obj(kind: ObjectKind, name: &str, labels: &[(&str, &str)], age_ms: u64) -> Object {
        Object {
            kind,
            id: format!("id-{name}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at_ms: Some(NOW - age_ms),
            node: None,
        }
    }

    fn managed(ns: &str, run: &str) -> Vec<(&'static str, String)> {
        vec![
            (keys::MANAGED_BY, "hearth".into()),
            (NAMESPACE_LABEL, ns.into()),
            (keys::PARENT_RUN, run.into()),
        ]
    }

    fn labels<'a>(l: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
        l.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn alive_unless(dead: &'static [u32]) -> impl Fn(&Owner) -> Liveness {
        move |o| {
            if dead.contains(&o.pid) {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
    }

    #[test]
    fn objects_of_a_dead_owners_run_are_swept_and_the_run_closed_as_orphaned() {
        let runs = vec![run("web-a", 1), run("web-b", 2)];
        let la = managed("hr-web-a", "web-a");
        let lb = managed("hr-web-b", "web-b");
        let objects = vec![
            obj(ObjectKind::Service, "hr-web-a_app", &labels(&la), 1),
            obj(ObjectKind::Volume, "hr-web-a_data", &labels(&la), 1),
            obj(ObjectKind::Service, "hr-web-b_app", &labels(&lb), 1),
        ];
        let d = decide(
            &objects,
            &runs,
            NOW,
            &alive_unless(&[1]),
            &Config::default(),
        );
        let names: Vec<&str> = d.remove.iter().map(|a| a.object.name.as_str()).collect();
        assert_eq!(names, ["hr-web-a_app", "hr-web-a_data"]);
        assert!(d.remove.iter().all(|a| a.reason == Reason::OwnerDead));
        assert_eq!(
            d.close,
            [CloseRun {
                run: "web-a".into(),
                reason: Reason::OwnerDead
            }]
        );
        assert_eq!(Reason::OwnerDead.closing_phase(), Some(RunPhase::Orphaned));
    }

    #[test]
    fn an_expired_lease_closes_the_run_as_expired() {
        let mut r = run("web-a", 1);
        r.spec.lease = Some(LeaseSpec {
            ttl: Duration::from_secs(30),
        });
        r.status.last_heartbeat_ms = Some(NOW - 31_000);
        let d = decide(
            &[],
            &[r.clone()],
            NOW,
            &|_| Liveness::Unknown,
            &Config::default(),
        );
        assert_eq!(d.close[0].reason, Reason::LeaseExpired);
        r.status.last_heartbeat_ms = Some(NOW - 29_000);
        assert!(
            decide(&[], &[r], NOW, &|_| Liveness::Unknown, &Config::default())
                .close
                .is_empty()
        );
    }

    #[test]
    fn an_unlabelled_stack_is_adopted_only_in_a_namespace_assigned_to_a_recorded_run() {
        let mut r = run("web-a", 1);
        r.status.deps = vec![DepBinding {
            name: "db".into(),
            mode: DepMode::PerRun,
            stack_name: "hd-db-0123456789ab".into(),
            domain: None,
            ready: true,
        }];
        let objects = vec![
            obj(
                ObjectKind::Service,
                "hr-web-a_app",
                &[(NAMESPACE_LABEL, "hr-web-a")],
                1,
            ),
            obj(
                ObjectKind::Secret,
                "hd-db-0123456789ab_pw",
                &[(NAMESPACE_LABEL, "hd-db-0123456789ab")],
                1,
            ),
            // Same shape of name, but no run of that name is recorded and no hearth label.
            obj(
                ObjectKind::Service,
                "hr-web-z_app",
                &[(NAMESPACE_LABEL, "hr-web-z")],
                1_000_000,
            ),
            obj(
                ObjectKind::Network,
                "foreign_default",
                &[(NAMESPACE_LABEL, "foreign")],
                1_000_000,
            ),
            obj(ObjectKind::Volume, "unlabelled", &[], 1_000_000),
        ];
        let d = decide(&objects, &[r], NOW, &alive_unless(&[1]), &Config::default());
        let got: Vec<(&str, bool)> = d
            .remove
            .iter()
            .map(|a| (a.object.name.as_str(), a.adopted))
            .collect();
        assert_eq!(
            got,
            [("hr-web-a_app", true), ("hd-db-0123456789ab_pw", true)]
        );
    }

    #[test]
    fn objects_of_an_unrecorded_run_are_spared_by_the_creation_guard_until_old_enough() {
        let l = managed("hr-web-new", "web-new");
        let young = obj(ObjectKind::Service, "hr-web-new_app", &labels(&l), 5_000);
        let old = obj(ObjectKind::Service, "hr-web-new_db", &labels(&l), 31_000);
        let mut unknown_age = young.clone();
        unknown_age.created_at_ms = None;
        let d = decide(
            &[young, old, unknown_age],
            &[],
            NOW,
            &|_| Liveness::Alive,
            &Config::default(),
        );
        assert_eq!(d.remove.len(), 1);
        assert_eq!(d.remove[0].object.name, "hr-web-new_db");
        assert_eq!(d.remove[0].reason, Reason::RunUnknown);
        assert_eq!(d.guarded.len(), 2);
    }

    #[test]
    fn warm_apps_operator_stacks_and_live_runs_are_never_swept() {
        let warm = [
            (keys::MANAGED_BY, "hearth"),
            (keys::KIND, "WarmApp"),
            (keys::NAME, "web"),
            (NAMESPACE_LABEL, "hw-web"),
        ];
        let op = [
            (keys::MANAGED_BY, "hearth"),
            (keys::KIND, "Stack"),
            (NAMESPACE_LABEL, "mystack"),
        ];
        let l = managed("hr-web-a", "web-a");
        let objects = vec![
            obj(ObjectKind::Service, "hw-web_app", &warm, 1_000_000),
            obj(ObjectKind::Service, "mystack_app", &op, 1_000_000),
            obj(ObjectKind::Service, "hr-web-a_app", &labels(&l), 1_000_000),
        ];
        let d = decide(
            &objects,
            &[run("web-a", 1)],
            NOW,
            &|_| Liveness::Alive,
            &Config::default(),
        );
        assert!(d.remove.is_empty() && d.close.is_empty(), "{d:?}");
    }

    #[test]
    fn leftovers_of_a_finished_run_are_swept_without_closing_it_again() {
        let mut r = run("web-a", 1);
        r.status.phase = RunPhase::Succeeded;
        let l = managed("hr-web-a", "web-a");
        let o = obj(ObjectKind::Volume, "hr-web-a_data", &labels(&l), 1);
        let d = decide(&[o], &[r], NOW, &|_| Liveness::Alive, &Config::default());
        assert_eq!(d.remove[0].reason, Reason::RunFinished);
        assert!(d.close.is_empty());
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        let key = prop_oneof![
            Just(keys::MANAGED_BY.to_string()),
            Just(NAMESPACE_LABEL.to_string()),
            Just(keys::PARENT_RUN.to_string()),
            Just(keys::KIND.to_string()),
            Just(keys::NAME.to_string()),
            Just("other".to_string()),
        ];
        let value = prop_oneof![
            Just("hearth".to_string()),
            Just("Hearth".to_string()),
            Just("Run".to_string()),
            Just("r0".to_string()),
            Just("r1".to_string()),
            Just("hr-r0".to_string()),
            Just("hr-r9".to_string()),
            Just("hd-db-000000000000".to_string()),
            Just("foreign".to_string()),
        ];
        proptest::collection::btree_map(key, value, 0..5).prop_map(Labels::from)
    }

    proptest! {
        /// Whatever the labels, runs, owners and ages: every selected object carries
        /// `hearth.managed-by=hearth`, or sits in the namespace of a stack hearth assigned to a
        /// recorded run.
        #[test]
        fn decide_never_selects_an_object_hearth_does_not_own(
            objects in proptest::collection::vec((arb_labels(), 0u64..100_000, any::<bool>()), 0..30),
            recorded in proptest::collection::vec((0u8..3, any::<bool>(), 0u8..3), 0..3),
        ) {
            let mut runs = Vec::new();
            for (i, dead, phase) in recorded {
                let mut r = run(&format!("r{i}"), if dead { 1 } else { 2 });
                r.status.phase = [RunPhase::Running, RunPhase::Failed, RunPhase::TeardownFailed][phase as usize];
                if i == 0 {
                    r.status.deps = vec![DepBinding { name: "db".into(), mode: DepMode::PerRun, stack_name: "hd-db-000000000000".into(), domain: None, ready: false }];
                }
                if runs.iter().all(|x: &Run| x.metadata.name != r.metadata.name) { runs.push(r); }
            }
            let objects: Vec<Object> = objects.into_iter().enumerate().map(|(i, (labels, age, known))| Object {
                kind: ObjectKind::Service,
                id: format!("id{i}"),
                name: format!("o{i}"),
                labels,
                created_at_ms: known.then_some(NOW - age),
                node: None,
            }).collect();
            let assigned = assigned_stacks(&runs);
            let d = decide(&objects, &runs, NOW, &alive_unless(&[1]), &Config::default());
            for a in &d.remove {
                let managed = a.object.labels.get(keys::MANAGED_BY).map(String::as_str) == Some("hearth");
                let adopted = a.object.labels.get(NAMESPACE_LABEL).is_some_and(|ns| assigned.contains_key(ns));
                prop_assert!(managed || adopted, "selected {:?}", a.object.labels);
                prop_assert!(a.object.labels.get(keys::KIND).map(String::as_str) != Some("WarmApp"));
                if !runs.iter().any(|r| r.metadata.name == a.run) {
                    prop_assert!(a.object.created_at_ms.is_some_and(|c| NOW - c >= 30_000));
                }
            }
        }
    }
}
