//! The owner of a run or a slot lease: a process (identified so that a reused PID is not mistaken for it), a container on the swarm's engine, or the lease alone.

use serde::{Deserialize, Serialize};

use crate::resource::is_default;
use crate::validation::{check_text, ValidationErrors};

/// What a run or a lease lives as long as.
///
/// Serialised as `"pid"` (the default, omitted), `{"container": "ID"}` or `"lease"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OwnerKind {
    /// The process recorded in [`Owner`] (pid, start time, host, boot): alive while that
    /// process runs. Only checkable on its own host; elsewhere only a lease tells.
    #[default]
    Pid,
    /// A container on the swarm's engine (a CI step run as a container): alive while it runs,
    /// dead from the moment Docker reports it died or was removed (even if a restart policy
    /// starts it again). Its full ID once hearth accepted the run.
    Container(String),
    /// Nothing but the lease: alive while heartbeats come within the lease TTL (multi-step
    /// jobs, remote runners). The creating process may exit.
    Lease,
}

/// Longest container reference accepted (a full ID is 64 hex digits; names are shorter).
const MAX_CONTAINER_REF_LEN: usize = 128;

/// The owner of a run or a lease.
///
/// The process fields always record the process that created the run or lease (`hearth run
/// start`'s parent, or the process it named); `kind` says what the run lives as long as.
///
/// A PID alone is ambiguous (PIDs are reused), so the owner also records the process start
/// time exactly as `/proc/<pid>/stat` field 22 gives it (clock ticks since boot) and the boot
/// id (`/proc/sys/kernel/random/boot_id`): a `pid` owner is alive only if a process with this
/// PID exists on this host, in this boot, with this start time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    /// What the run or lease lives as long as; `pid` (this process) when omitted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: OwnerKind,
    /// The owner's process id.
    pub pid: u32,
    /// Start time of the process, in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub process_start_time: u64,
    /// Hostname of the machine the process runs on.
    pub host: String,
    /// The kernel's boot id on that machine; a different boot id means the process is gone.
    pub boot_id: String,
}

impl Owner {
    /// This owner, owning as `kind`.
    pub fn with_kind(mut self, kind: OwnerKind) -> Owner {
        self.kind = kind;
        self
    }

    /// Whether `self` and `other` are on the same host and boot, i.e. whether this host can
    /// check the owner's liveness directly (otherwise only lease expiry tells).
    pub fn same_machine_boot(&self, host: &str, boot_id: &str) -> bool {
        self.host == host && self.boot_id == boot_id
    }

    /// Adds every problem of this owner under `path`.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
        if let OwnerKind::Container(id) = &self.kind {
            errs.check(format!("{path}.kind.container"), check_container_ref(id));
        }
        if self.pid == 0 {
            errs.push(format!("{path}.pid"), "must be a process id (at least 1)");
        }
        if self.host.is_empty() {
            errs.push(format!("{path}.host"), "must not be empty");
        } else {
            errs.check(format!("{path}.host"), check_text(&self.host, 253));
        }
        if self.boot_id.is_empty() {
            errs.push(format!("{path}.bootId"), "must not be empty");
        } else if self.boot_id.len() > 64
            || self
                .boot_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errs.push(
                format!("{path}.bootId"),
                "must be at most 64 characters without whitespace (e.g. the uuid in /proc/sys/kernel/random/boot_id)",
            );
        }
    }
}

impl std::fmt::Display for Owner {
    /// `pid 42 on ci-1`, `container 3f2a9c0d1e2f (started by pid 42 on ci-1)`, `lease
    /// (started by pid 42 on ci-1)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let process = format!("pid {} on {}", self.pid, self.host);
        match &self.kind {
            OwnerKind::Pid => f.write_str(&process),
            OwnerKind::Container(id) => {
                let short = id.get(..12).unwrap_or(id);
                write!(f, "container {short} (started by {process})")
            }
            OwnerKind::Lease => write!(f, "lease (started by {process})"),
        }
    }
}

/// Checks a container reference: an ID (full or a unique prefix) or a name, as Docker accepts
/// them: 1–128 characters of `[a-zA-Z0-9_.-]`, starting with a letter or digit.
fn check_container_ref(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must name a container (its ID or name, e.g. `container:$HOSTNAME`)".into());
    }
    if id.len() > MAX_CONTAINER_REF_LEN {
        return Err(format!(
            "must be at most {MAX_CONTAINER_REF_LEN} characters (got {})",
            id.len()
        ));
    }
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(
            "must be a container ID or name: letters, digits, `_`, `.`, `-`, starting with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner() -> Owner {
        Owner {
            kind: OwnerKind::Pid,
            pid: 42,
            process_start_time: 123456,
            host: "ci-1".into(),
            boot_id: "8f0c5b3e-2a7c-4f0e-9a55-0d3c2b1a0f9e".into(),
        }
    }

    #[test]
    fn a_complete_owner_is_valid() {
        let mut errs = ValidationErrors::default();
        owner().validate_into(&mut errs, "spec.owner");
        assert!(errs.is_empty(), "{errs}");
    }

    #[test]
    fn an_owner_without_pid_host_or_boot_id_reports_each_field() {
        let mut errs = ValidationErrors::default();
        Owner::default().validate_into(&mut errs, "spec.owner");
        assert_eq!(
            errs.paths(),
            ["spec.owner.pid", "spec.owner.host", "spec.owner.bootId"]
        );
        let mut errs = ValidationErrors::default();
        Owner {
            boot_id: "not a uuid".into(),
            host: "a\tb".into(),
            ..owner()
        }
        .validate_into(&mut errs, "o");
        assert_eq!(errs.paths(), ["o.host", "o.bootId"]);
    }

    #[test]
    fn owners_serialise_in_camel_case_and_reject_unknown_fields() {
        let json = serde_json::to_value(owner()).unwrap();
        assert_eq!(json["processStartTime"], 123456);
        assert_eq!(json["bootId"], "8f0c5b3e-2a7c-4f0e-9a55-0d3c2b1a0f9e");
        let err = serde_json::from_str::<Owner>(
            r#"{"pid":1,"processStartTime":1,"host":"h","bootId":"a","hots":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `hots`"), "{err}");
    }

    #[test]
    fn owner_kinds_serialise_as_pid_by_omission_container_with_its_id_and_lease() {
        let json = serde_json::to_value(owner()).unwrap();
        assert!(json.get("kind").is_none(), "{json}");
        let c = owner().with_kind(OwnerKind::Container("abc123".into()));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["kind"], serde_json::json!({"container": "abc123"}));
        assert_eq!(serde_json::from_value::<Owner>(json).unwrap(), c);
        let l = owner().with_kind(OwnerKind::Lease);
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["kind"], "lease");
        assert_eq!(serde_json::from_value::<Owner>(json).unwrap(), l);
        // Records written before owner kinds existed read as pid owners.
        let old: Owner =
            serde_json::from_str(r#"{"pid":1,"processStartTime":2,"host":"h","bootId":"b"}"#)
                .unwrap();
        assert_eq!(old.kind, OwnerKind::Pid);
    }

    #[test]
    fn a_container_owner_must_name_a_container() {
        for bad in ["", "-x", "a b", "a/b", &"a".repeat(129)] {
            let mut errs = ValidationErrors::default();
            owner()
                .with_kind(OwnerKind::Container(bad.to_string()))
                .validate_into(&mut errs, "spec.owner");
            assert_eq!(errs.paths(), ["spec.owner.kind.container"], "{bad:?}");
        }
        for good in ["3f2a9c", "ci_step-1.build", &"f".repeat(64)] {
            let mut errs = ValidationErrors::default();
            owner()
                .with_kind(OwnerKind::Container(good.to_string()))
                .validate_into(&mut errs, "spec.owner");
            assert!(errs.is_empty(), "{good:?}: {errs}");
        }
    }

    #[test]
    fn only_owners_on_this_host_and_boot_can_be_checked_directly() {
        let o = owner();
        assert!(o.same_machine_boot("ci-1", &o.boot_id));
        assert!(!o.same_machine_boot("ci-2", &o.boot_id));
        assert!(!o.same_machine_boot("ci-1", "other"));
    }
}
