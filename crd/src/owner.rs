//! The owner of a run or a slot lease: a process identified so that a reused PID is not mistaken for it.

use serde::{Deserialize, Serialize};

use crate::validation::{check_text, ValidationErrors};

/// A process that owns a run or a lease.
///
/// A PID alone is ambiguous (PIDs are reused), so the owner also records the process start
/// time exactly as `/proc/<pid>/stat` field 22 gives it (clock ticks since boot) and the boot
/// id (`/proc/sys/kernel/random/boot_id`): the owner is alive only if a process with this PID
/// exists on this host, in this boot, with this start time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
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
    /// Whether `self` and `other` are on the same host and boot, i.e. whether this host can
    /// check the owner's liveness directly (otherwise only lease expiry tells).
    pub fn same_machine_boot(&self, host: &str, boot_id: &str) -> bool {
        self.host == host && self.boot_id == boot_id
    }

    /// Adds every problem of this owner under `path`.
    pub fn validate_into(&self, errs: &mut ValidationErrors, path: &str) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner() -> Owner {
        Owner {
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
    fn only_owners_on_this_host_and_boot_can_be_checked_directly() {
        let o = owner();
        assert!(o.same_machine_boot("ci-1", &o.boot_id));
        assert!(!o.same_machine_boot("ci-2", &o.boot_id));
        assert!(!o.same_machine_boot("ci-1", "other"));
    }
}
