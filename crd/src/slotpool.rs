//! `SlotPool`: slots capping how many runs share the host, each with a port block; leases with owners.
//!
//! ```yaml
//! apiVersion: hearth/v1
//! kind: SlotPool
//! metadata: { name: ci }
//! spec: { slots: 3, portBase: 20000, portsPerSlot: 10, waitTimeout: 10m }
//! ```
//! Slot `i` owns ports `portBase + i*portsPerSlot .. portBase + (i+1)*portsPerSlot`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::condition::{validate_conditions, Condition};
use crate::names::{MAX_RUN_NAME_LEN, MAX_SLOT_POOL_NAME_LEN};
use crate::owner::Owner;
use crate::resource::{impl_resource, is_default, validate_envelope, Kind, ObjectMeta};
use crate::validation::{check_dns_label, check_port, Validate, ValidationErrors};
use crate::verdict::check_tier_names;

/// Most slots a pool may have (slot indexes must fit the namespace naming rule).
pub const MAX_SLOTS: u32 = 65535;

/// A slot pool resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlotPool {
    /// Always `hearth/v1`.
    pub api_version: String,
    /// Always `SlotPool`.
    pub kind: Kind,
    /// Name (at most 33 characters: it is part of slot namespaces).
    pub metadata: ObjectMeta,
    /// Capacity and port blocks.
    pub spec: SlotPoolSpec,
    /// Current leases and waiters; omitted when empty.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: SlotPoolStatus,
}

impl_resource!(SlotPool, SlotPoolSpec, SlotPoolStatus);

/// A pool's capacity and port blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlotPoolSpec {
    /// Number of slots (≥ 1): never more holders than this.
    pub slots: u32,
    /// First port of slot 0's block.
    pub port_base: u32,
    /// Ports per slot (≥ 1).
    #[serde(default = "default_ports_per_slot")]
    pub ports_per_slot: u32,
    /// How long a waiter waits for a free slot before giving up (humantime, e.g. `10m`).
    #[serde(default = "default_wait_timeout", with = "crate::duration")]
    pub wait_timeout: Duration,
    /// The tier names runs in this pool may require and report (DNS labels, unique). When a
    /// run's pool or recipe declares tiers, any other tier is refused (API 422); they are
    /// also the only values of the `tier` label of `hearth_tier_results_total`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
}

fn default_ports_per_slot() -> u32 {
    1
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(600)
}

impl SlotPoolSpec {
    /// The first port and the number of ports of slot `index`, or `None` for an index outside
    /// the pool.
    pub fn port_block(&self, index: u32) -> Option<(u32, u32)> {
        if index >= self.slots {
            return None;
        }
        let first = index
            .checked_mul(self.ports_per_slot)?
            .checked_add(self.port_base)?;
        Some((first, self.ports_per_slot))
    }
}

/// Whether a pool has room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotPoolPhase {
    /// Not observed yet.
    #[default]
    Pending,
    /// At least one slot is free.
    Available,
    /// Every slot is leased; new requests wait (first come, first served).
    Full,
}

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotLease {
    /// The slot index (0-based, < `spec.slots`).
    pub slot: u32,
    /// The owning process; the lease is reclaimed when it dies.
    pub owner: Owner,
    /// The run holding the slot, if held for a run (else e.g. `hearth slot exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// When the lease was granted (unix milliseconds).
    pub acquired_at_ms: u64,
    /// When the lease expires unless renewed (unix milliseconds); never when absent (owner
    /// liveness alone decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// Someone waiting for a slot; served in `enqueuedAtMs` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotWaiter {
    /// The waiting process.
    pub owner: Owner,
    /// The run waiting, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// When it started waiting (unix milliseconds).
    pub enqueued_at_ms: u64,
    /// When it gives up (unix milliseconds): `enqueuedAtMs + waitTimeout`.
    pub deadline_ms: u64,
}

/// Leases and waiters of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotPoolStatus {
    /// Whether there is room.
    #[serde(default)]
    pub phase: SlotPoolPhase,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The last error, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Current leases, at most one per slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<SlotLease>,
    /// Waiters, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiters: Vec<SlotWaiter>,
}

impl SlotPool {
    /// The lowest slot index with no lease, or `None` when every slot is leased.
    pub fn lowest_free_slot(&self) -> Option<u32> {
        (0..self.spec.slots).find(|i| !self.status.leases.iter().any(|l| l.slot == *i))
    }

    /// Number of slots without a lease (leases on slots outside the pool are not counted).
    pub fn free_slots(&self) -> u32 {
        let used = (0..self.spec.slots)
            .filter(|i| self.status.leases.iter().any(|l| l.slot == *i))
            .count();
        self.spec.slots - u32::try_from(used).unwrap_or(self.spec.slots)
    }

    /// Leases that expired at `now_ms` (owner liveness is checked elsewhere).
    pub fn expired_leases(&self, now_ms: u64) -> impl Iterator<Item = &SlotLease> {
        self.status
            .leases
            .iter()
            .filter(move |l| l.expires_at_ms.is_some_and(|at| now_ms >= at))
    }
}

impl Validate for SlotPool {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        validate_envelope(
            &mut errs,
            &self.api_version,
            self.kind,
            Kind::SlotPool,
            &self.metadata,
            MAX_SLOT_POOL_NAME_LEN,
        );
        let s = &self.spec;
        if s.slots == 0 {
            errs.push("spec.slots", "must be at least 1");
        } else if s.slots > MAX_SLOTS {
            errs.push(
                "spec.slots",
                format!("must be at most {MAX_SLOTS} (got {})", s.slots),
            );
        }
        errs.check("spec.portBase", check_port(s.port_base));
        if s.ports_per_slot == 0 {
            errs.push("spec.portsPerSlot", "must be at least 1");
        }
        let end = u64::from(s.port_base) + u64::from(s.slots) * u64::from(s.ports_per_slot);
        if end > 65535 {
            errs.push(
                "spec",
                format!(
                    "portBase + slots * portsPerSlot must be at most 65535 (got {} + {} * {} = {end})",
                    s.port_base, s.slots, s.ports_per_slot
                ),
            );
        }
        if s.wait_timeout.is_zero() {
            errs.push("spec.waitTimeout", "must be greater than zero");
        }
        check_tier_names(&mut errs, "spec.tiers", &s.tiers);

        let st = &self.status;
        validate_conditions(&mut errs, "status.conditions", &st.conditions);
        for (i, l) in st.leases.iter().enumerate() {
            let p = format!("status.leases[{i}]");
            if l.slot >= s.slots {
                errs.push(
                    format!("{p}.slot"),
                    format!("must be below spec.slots ({})", s.slots),
                );
            }
            l.owner.validate_into(&mut errs, &format!("{p}.owner"));
            if let Some(r) = &l.run {
                errs.check(format!("{p}.run"), check_dns_label(r, MAX_RUN_NAME_LEN));
            }
            if l.expires_at_ms.is_some_and(|e| e < l.acquired_at_ms) {
                errs.push(
                    format!("{p}.expiresAtMs"),
                    "must not be before acquiredAtMs",
                );
            }
        }
        crate::validation::check_unique(
            &mut errs,
            "status.leases",
            &st.leases,
            |l| l.slot,
            "lease of the same slot",
        );
        for (i, w) in st.waiters.iter().enumerate() {
            let p = format!("status.waiters[{i}]");
            w.owner.validate_into(&mut errs, &format!("{p}.owner"));
            if let Some(r) = &w.run {
                errs.check(format!("{p}.run"), check_dns_label(r, MAX_RUN_NAME_LEN));
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool() -> SlotPool {
        SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots: 3,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(600),
                tiers: Vec::new(),
            },
        )
    }

    fn owner(pid: u32) -> Owner {
        Owner {
            kind: crate::OwnerKind::Pid,
            pid,
            process_start_time: 1,
            host: "h".into(),
            boot_id: "ab-cd".into(),
        }
    }

    fn lease(slot: u32) -> SlotLease {
        SlotLease {
            slot,
            owner: owner(10 + slot),
            run: None,
            acquired_at_ms: 5,
            expires_at_ms: Some(10),
        }
    }

    #[test]
    fn a_pool_document_parses_with_defaults_and_humantime_wait() {
        let p: SlotPool = serde_json::from_value(serde_json::json!({"apiVersion": "hearth/v1", "kind": "SlotPool", "metadata": {"name": "ci"}, "spec": {"slots": 2, "portBase": 30000}})).unwrap();
        assert_eq!(p.spec.ports_per_slot, 1);
        assert_eq!(p.spec.wait_timeout, Duration::from_secs(600));
        p.validate().unwrap();
        let json = serde_json::to_value(pool()).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({"slots": 3, "portBase": 20000, "portsPerSlot": 10, "waitTimeout": "10m"})
        );
    }

    #[test]
    fn zero_slots_zero_ports_and_zero_wait_are_invalid() {
        let mut p = pool();
        p.spec = SlotPoolSpec {
            slots: 0,
            port_base: 0,
            ports_per_slot: 0,
            wait_timeout: Duration::ZERO,
            tiers: Vec::new(),
        };
        assert_eq!(
            p.validate().unwrap_err().paths(),
            [
                "spec.slots",
                "spec.portBase",
                "spec.portsPerSlot",
                "spec.waitTimeout"
            ]
        );
    }

    #[test]
    fn declared_tiers_must_be_unique_dns_labels_and_few() {
        let mut p = pool();
        p.spec.tiers = vec!["install".into(), "Up_grade".into(), "install".into()];
        assert_eq!(
            p.validate().unwrap_err().paths(),
            ["spec.tiers[1]", "spec.tiers[2]"]
        );
        p.spec.tiers = (0..=crate::verdict::MAX_DECLARED_TIERS)
            .map(|i| format!("t{i}"))
            .collect();
        assert_eq!(p.validate().unwrap_err().paths(), ["spec.tiers"]);
        p.spec.tiers = vec!["install".into(), "upgrade".into()];
        p.validate().unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["spec"]["tiers"],
            serde_json::json!(["install", "upgrade"])
        );
    }

    #[test]
    fn port_blocks_at_the_boundary_are_accepted_and_one_past_rejected() {
        let mut p = pool();
        p.spec.port_base = 65535 - 30;
        p.validate().unwrap();
        p.spec.port_base += 1;
        let err = p.validate().unwrap_err();
        assert_eq!(err.paths(), ["spec"]);
        assert!(err.errors[0].message.contains("= 65536"), "{err}");
        p.spec.port_base = 70000;
        p.spec.slots = 70000;
        assert_eq!(
            p.validate().unwrap_err().paths(),
            ["spec.slots", "spec.portBase", "spec"]
        );
    }

    #[test]
    fn port_blocks_are_contiguous_and_disjoint() {
        let p = pool();
        assert_eq!(p.spec.port_block(0), Some((20000, 10)));
        assert_eq!(p.spec.port_block(2), Some((20020, 10)));
        assert_eq!(p.spec.port_block(3), None);
    }

    #[test]
    fn two_leases_on_one_slot_or_a_slot_outside_the_pool_are_invalid() {
        let mut p = pool();
        p.status.leases = vec![lease(0), lease(0), lease(3)];
        p.status.leases[1].expires_at_ms = Some(1);
        assert_eq!(
            p.validate().unwrap_err().paths(),
            [
                "status.leases[1].expiresAtMs",
                "status.leases[2].slot",
                "status.leases[1]"
            ]
        );
    }

    #[test]
    fn free_slots_and_expired_leases_are_computed_from_status() {
        let mut p = pool();
        assert_eq!(p.lowest_free_slot(), Some(0));
        p.status.leases = vec![lease(0), lease(2)];
        p.status.leases[1].expires_at_ms = None;
        assert_eq!(p.lowest_free_slot(), Some(1));
        assert_eq!(p.free_slots(), 1);
        assert_eq!(
            p.expired_leases(10).map(|l| l.slot).collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(p.expired_leases(9).count(), 0);
        p.status.leases.push(lease(1));
        assert_eq!(p.lowest_free_slot(), None);
        assert_eq!(p.free_slots(), 0);
        p.validate().unwrap();
    }

    #[test]
    fn waiters_and_lease_runs_are_validated() {
        let mut p = pool();
        p.status.leases = vec![SlotLease {
            run: Some("Bad".into()),
            owner: Owner::default(),
            ..lease(0)
        }];
        p.status.waiters = vec![SlotWaiter {
            owner: owner(1),
            run: Some("r-1".into()),
            enqueued_at_ms: 1,
            deadline_ms: 2,
        }];
        assert_eq!(
            p.validate().unwrap_err().paths(),
            [
                "status.leases[0].owner.pid",
                "status.leases[0].owner.host",
                "status.leases[0].owner.bootId",
                "status.leases[0].run"
            ]
        );
    }
}
