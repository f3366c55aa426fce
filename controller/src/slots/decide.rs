//! Pure slot decisions: grant or wait (first come, first served), heartbeat, release, reclaim.

use std::time::Duration;

use crd::slotpool::{SlotLease, SlotWaiter};
use crd::{Owner, SlotPool, SlotPoolPhase};

use crate::liveness::Liveness;

/// Who asks for a slot: a process, optionally on behalf of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The owning process; its death frees the slot.
    pub owner: Owner,
    /// The run the slot is for, if any.
    pub run: Option<String>,
}

/// What an acquisition attempt decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A free slot is granted: this lease joins the pool's status (and the holder's waiter
    /// entry, if any, leaves it).
    Grant(SlotLease),
    /// No slot for this holder yet: it waits at `position` (0 = next in line). `waiter` is its
    /// entry in the status, added now when `enqueued` is true.
    Wait {
        /// The waiter entry (identified by owner, run and `enqueued_at_ms`).
        waiter: SlotWaiter,
        /// How many live waiters are ahead.
        position: usize,
        /// Whether this attempt added the entry.
        enqueued: bool,
    },
    /// The holder's wait deadline passed: its entry leaves the status and it gets no slot.
    TimedOut(SlotWaiter),
}

fn same_waiter(w: &SlotWaiter, holder: &Holder, enqueued_at_ms: u64) -> bool {
    w.owner == holder.owner && w.run == holder.run && w.enqueued_at_ms == enqueued_at_ms
}

/// Decides one acquisition attempt.
///
/// `ticket` is the `enqueued_at_ms` of the holder's waiter entry from an earlier attempt
/// (`None` on the first attempt, or when the entry is gone).
///
/// # Guarantees
/// - A grant takes a slot that has no lease, so applying it never makes more holders than
///   slots.
/// - First come, first served: with `k` free slots, only the first `k` live waiters (by
///   `enqueued_at_ms`, i.e. arrival) may be granted; a newcomer is granted only when the free
///   slots outnumber everyone already waiting.
/// - Waiter entries are unique: a new entry's `enqueued_at_ms` is after every existing one.
pub fn decide_acquire(
    pool: &SlotPool,
    holder: &Holder,
    ticket: Option<u64>,
    ttl: Option<Duration>,
    now_ms: u64,
) -> Decision {
    let live: Vec<&SlotWaiter> = pool
        .status
        .waiters
        .iter()
        .filter(|w| w.deadline_ms > now_ms)
        .collect();
    let mine = ticket.and_then(|t| {
        pool.status
            .waiters
            .iter()
            .find(|w| same_waiter(w, holder, t))
    });
    if let Some(w) = mine {
        if w.deadline_ms <= now_ms {
            return Decision::TimedOut(w.clone());
        }
    }
    let position = match mine {
        Some(w) => live
            .iter()
            .position(|l| same_waiter(l, holder, w.enqueued_at_ms))
            .unwrap_or(live.len()),
        None => live.len(),
    };
    let free = pool.free_slots() as usize;
    if free > position {
        if let Some(slot) = pool.lowest_free_slot() {
            let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
            return Decision::Grant(SlotLease {
                slot,
                owner: holder.owner.clone(),
                run: holder.run.clone(),
                acquired_at_ms: now_ms,
                expires_at_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            });
        }
    }
    match mine {
        Some(w) => Decision::Wait {
            waiter: w.clone(),
            position,
            enqueued: false,
        },
        None => {
            let after_last = pool
                .status
                .waiters
                .iter()
                .map(|w| w.enqueued_at_ms.saturating_add(1))
                .max()
                .unwrap_or(0);
            let enqueued_at_ms = now_ms.max(after_last);
            let wait_ms = u64::try_from(pool.spec.wait_timeout.as_millis()).unwrap_or(u64::MAX);
            Decision::Wait {
                waiter: SlotWaiter {
                    owner: holder.owner.clone(),
                    run: holder.run.clone(),
                    enqueued_at_ms,
                    deadline_ms: now_ms.saturating_add(wait_ms),
                },
                position,
                enqueued: true,
            }
        }
    }
}

/// Applies a decision to the pool's status (and refreshes its phase).
pub fn apply_acquire(
    pool: &mut SlotPool,
    decision: &Decision,
    holder: &Holder,
    ticket: Option<u64>,
) {
    match decision {
        Decision::Grant(lease) => {
            if let Some(t) = ticket {
                pool.status.waiters.retain(|w| !same_waiter(w, holder, t));
            }
            pool.status.leases.push(lease.clone());
            pool.status.leases.sort_by_key(|l| l.slot);
        }
        Decision::Wait {
            waiter, enqueued, ..
        } => {
            if *enqueued {
                pool.status.waiters.push(waiter.clone());
            }
        }
        Decision::TimedOut(w) => pool.status.waiters.retain(|x| x != w),
    }
    refresh_phase(pool);
}

/// Sets the pool's phase from its leases.
pub fn refresh_phase(pool: &mut SlotPool) {
    pool.status.phase = if pool.free_slots() > 0 {
        SlotPoolPhase::Available
    } else {
        SlotPoolPhase::Full
    };
}

/// Removes the holder's waiter entry (a waiter that gives up); whether one was removed.
pub fn withdraw(pool: &mut SlotPool, holder: &Holder, ticket: u64) -> bool {
    let before = pool.status.waiters.len();
    pool.status
        .waiters
        .retain(|w| !same_waiter(w, holder, ticket));
    before != pool.status.waiters.len()
}

/// The lease of `slot` if `owner` holds it.
pub fn held<'a>(pool: &'a SlotPool, slot: u32, owner: &Owner) -> Option<&'a SlotLease> {
    pool.status
        .leases
        .iter()
        .find(|l| l.slot == slot && &l.owner == owner)
}

/// Renews the lease of `slot` held by `owner` to expire `ttl` from `now_ms`; the renewed
/// lease, or `None` when `owner` does not hold it (released or reclaimed).
pub fn renew(
    pool: &mut SlotPool,
    slot: u32,
    owner: &Owner,
    ttl: Duration,
    now_ms: u64,
) -> Option<SlotLease> {
    let lease = pool
        .status
        .leases
        .iter_mut()
        .find(|l| l.slot == slot && &l.owner == owner)?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    lease.expires_at_ms = Some(now_ms.saturating_add(ttl_ms));
    Some(lease.clone())
}

/// Removes the lease of `slot` held by `owner`; the removed lease, or `None`.
pub fn release(pool: &mut SlotPool, slot: u32, owner: &Owner) -> Option<SlotLease> {
    let at = pool
        .status
        .leases
        .iter()
        .position(|l| l.slot == slot && &l.owner == owner)?;
    let lease = pool.status.leases.remove(at);
    refresh_phase(pool);
    Some(lease)
}

/// What hearth knows about the run a lease is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunHold {
    /// The run exists and is not terminal: the runs logic releases its slot after teardown.
    Active,
    /// The run is terminal or unknown: nothing will release the slot but the reclaimer.
    Gone,
}

/// Why a lease is reclaimed or a waiter dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ReclaimReason {
    /// The owner process is dead (same host and boot).
    OwnerDead,
    /// The lease (or the waiter's deadline) expired.
    Expired,
    /// The lease was held for a run that is terminal or no longer recorded.
    RunGone,
    /// The request that waited is gone: its entry predates this process (a restart cut the
    /// request off; its client retries as a new request, behind it in line).
    RequestGone,
}

/// What a reclaim pass decided for one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimPlan {
    /// Leases to remove, with why.
    pub leases: Vec<(SlotLease, ReclaimReason)>,
    /// Waiters to remove, with why.
    pub waiters: Vec<(SlotWaiter, ReclaimReason)>,
}

impl ReclaimPlan {
    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty() && self.waiters.is_empty()
    }
}

/// Decides which leases and waiters of `pool` to reclaim at `now_ms`.
///
/// # Guarantees
/// - A lease held for a run that is still [`RunHold::Active`] is never reclaimed here (the run
///   is torn down first and then releases its slot, so a new holder never meets leftovers).
/// - Other leases go when their owner is [`Liveness::Dead`] or their expiry passed; an owner on
///   another host ([`Liveness::Unknown`]) is only ever reclaimed by expiry.
/// - Waiters go when their deadline passed or their owner is dead.
pub fn decide_reclaim(
    pool: &SlotPool,
    now_ms: u64,
    liveness: &dyn Fn(&Owner) -> Liveness,
    run: &dyn Fn(&str) -> RunHold,
) -> ReclaimPlan {
    let mut plan = ReclaimPlan::default();
    for lease in &pool.status.leases {
        let reason = match &lease.run {
            Some(r) if run(r) == RunHold::Active => None,
            Some(_) => Some(ReclaimReason::RunGone),
            None if liveness(&lease.owner) == Liveness::Dead => Some(ReclaimReason::OwnerDead),
            None if lease.expires_at_ms.is_some_and(|at| now_ms >= at) => {
                Some(ReclaimReason::Expired)
            }
            None => None,
        };
        if let Some(reason) = reason {
            plan.leases.push((lease.clone(), reason));
        }
    }
    for w in &pool.status.waiters {
        let reason = if w.deadline_ms <= now_ms {
            Some(ReclaimReason::Expired)
        } else if liveness(&w.owner) == Liveness::Dead {
            Some(ReclaimReason::OwnerDead)
        } else {
            None
        };
        if let Some(reason) = reason {
            plan.waiters.push((w.clone(), reason));
        }
    }
    plan
}

/// Waiters of `pool` that no request of this process can be serving: entries enqueued
/// before `line_since_ms`, when this process's slot service was created (before its API
/// served a request). Every waiter entry belongs to a request waiting in the process that
/// made it; after a restart nobody polls the old entries, yet they keep their place in line
/// (their owners, the CI jobs retrying, are alive) until their deadline, so every later
/// request waits behind them (issue 14: the `crash_real` run that met no answer for 90 s).
pub fn stale_waiters(pool: &SlotPool, line_since_ms: u64) -> Vec<SlotWaiter> {
    pool.status
        .waiters
        .iter()
        .filter(|w| w.enqueued_at_ms < line_since_ms)
        .cloned()
        .collect()
}

/// Applies a reclaim plan to the pool's status.
pub fn apply_reclaim(pool: &mut SlotPool, plan: &ReclaimPlan) {
    pool.status
        .leases
        .retain(|l| !plan.leases.iter().any(|(x, _)| x == l));
    pool.status
        .waiters
        .retain(|w| !plan.waiters.iter().any(|(x, _)| x == w));
    refresh_phase(pool);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crd::SlotPoolSpec;
    use proptest::prelude::*;

    fn pool(slots: u32) -> SlotPool {
        SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(60),
                tiers: Vec::new(),
            },
        )
    }

    fn holder(pid: u32) -> Holder {
        Holder {
            owner: Owner {
                kind: crd::OwnerKind::Pid,
                pid,
                process_start_time: 1,
                host: "h".into(),
                boot_id: "b".into(),
            },
            run: None,
        }
    }

    /// Drives one attempt like the store layer does; returns the new ticket or the slot.
    fn attempt(
        p: &mut SlotPool,
        h: &Holder,
        ticket: Option<u64>,
        now: u64,
    ) -> Result<u32, Option<u64>> {
        let d = decide_acquire(p, h, ticket, None, now);
        apply_acquire(p, &d, h, ticket);
        match d {
            Decision::Grant(l) => Ok(l.slot),
            Decision::Wait { waiter, .. } => Err(Some(waiter.enqueued_at_ms)),
            Decision::TimedOut(_) => Err(None),
        }
    }

    #[test]
    fn free_slots_are_granted_lowest_first_then_requests_wait() {
        let mut p = pool(2);
        assert_eq!(attempt(&mut p, &holder(1), None, 10), Ok(0));
        assert_eq!(attempt(&mut p, &holder(2), None, 10), Ok(1));
        assert_eq!(p.status.phase, SlotPoolPhase::Full);
        assert_eq!(attempt(&mut p, &holder(3), None, 10), Err(Some(10)));
        assert_eq!(p.status.waiters.len(), 1);
    }

    #[test]
    fn waiters_are_served_first_come_first_served() {
        let mut p = pool(1);
        attempt(&mut p, &holder(1), None, 0).unwrap();
        let t2 = attempt(&mut p, &holder(2), None, 1).unwrap_err();
        let t3 = attempt(&mut p, &holder(3), None, 2).unwrap_err();
        release(&mut p, 0, &holder(1).owner).unwrap();
        // The later waiter asks first, but the earlier one is ahead of it.
        assert_eq!(attempt(&mut p, &holder(3), t3, 3), Err(t3));
        // A newcomer does not jump the queue either.
        assert!(attempt(&mut p, &holder(4), None, 3).is_err());
        assert_eq!(attempt(&mut p, &holder(2), t2, 4), Ok(0));
        release(&mut p, 0, &holder(2).owner).unwrap();
        assert_eq!(attempt(&mut p, &holder(3), t3, 5), Ok(0));
    }

    #[test]
    fn one_process_may_wait_twice_with_distinct_entries() {
        let mut p = pool(1);
        attempt(&mut p, &holder(9), None, 0).unwrap();
        let a = attempt(&mut p, &holder(1), None, 5).unwrap_err().unwrap();
        let b = attempt(&mut p, &holder(1), None, 5).unwrap_err().unwrap();
        assert_ne!(a, b);
        assert_eq!(p.status.waiters.len(), 2);
    }

    #[test]
    fn a_waiter_past_its_deadline_times_out_and_leaves_the_queue() {
        let mut p = pool(1);
        attempt(&mut p, &holder(1), None, 0).unwrap();
        let t = attempt(&mut p, &holder(2), None, 0).unwrap_err();
        assert_eq!(attempt(&mut p, &holder(2), t, 60_000), Err(None));
        assert!(p.status.waiters.is_empty());
    }

    #[test]
    fn dead_owners_and_expired_leases_are_reclaimed_but_active_runs_are_left_to_their_teardown() {
        let mut p = pool(4);
        for pid in 1..=4 {
            let mut h = holder(pid);
            if pid == 3 {
                h.run = Some("r-active".into());
            }
            if pid == 4 {
                h.run = Some("r-gone".into());
            }
            let d = decide_acquire(&p, &h, None, Some(Duration::from_secs(10)), 0);
            apply_acquire(&mut p, &d, &h, None);
        }
        p.status.leases[1].expires_at_ms = None; // pid 2: no lease expiry, alive
        let dead = |o: &Owner| {
            if o.pid == 1 || o.pid == 3 {
                Liveness::Dead
            } else {
                Liveness::Unknown
            }
        };
        let runs = |r: &str| {
            if r == "r-active" {
                RunHold::Active
            } else {
                RunHold::Gone
            }
        };
        let plan = decide_reclaim(&p, 5_000, &dead, &runs);
        let got: Vec<(u32, ReclaimReason)> =
            plan.leases.iter().map(|(l, r)| (l.slot, *r)).collect();
        assert_eq!(
            got,
            [(0, ReclaimReason::OwnerDead), (3, ReclaimReason::RunGone)]
        );
        // Owners on another host (liveness unknown): only expiry reclaims, and slot 1 (pid 2)
        // has no expiry at all.
        let unknown = |_: &Owner| Liveness::Unknown;
        let plan = decide_reclaim(&p, 9_999, &unknown, &|_| RunHold::Active);
        assert!(plan.is_empty(), "{plan:?}");
        let plan = decide_reclaim(&p, 10_000, &unknown, &|_| RunHold::Active);
        let got: Vec<(u32, ReclaimReason)> =
            plan.leases.iter().map(|(l, r)| (l.slot, *r)).collect();
        assert_eq!(got, [(0, ReclaimReason::Expired)]);
        apply_reclaim(&mut p, &plan);
        assert_eq!(p.free_slots(), 1);
    }

    #[test]
    fn waiters_whose_owner_died_are_dropped_so_they_block_no_one() {
        let mut p = pool(1);
        attempt(&mut p, &holder(1), None, 0).unwrap();
        attempt(&mut p, &holder(2), None, 0).unwrap_err();
        let plan = decide_reclaim(
            &p,
            1,
            &|o| {
                if o.pid == 2 {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                }
            },
            &|_| RunHold::Active,
        );
        assert_eq!(plan.waiters.len(), 1);
        assert!(plan.leases.is_empty());
    }

    #[test]
    fn renew_and_release_only_touch_the_owners_own_lease() {
        let mut p = pool(2);
        attempt(&mut p, &holder(1), None, 0).unwrap();
        assert!(renew(&mut p, 0, &holder(2).owner, Duration::from_secs(5), 1).is_none());
        let l = renew(&mut p, 0, &holder(1).owner, Duration::from_secs(5), 1).unwrap();
        assert_eq!(l.expires_at_ms, Some(5_001));
        assert!(release(&mut p, 0, &holder(2).owner).is_none());
        assert!(release(&mut p, 0, &holder(1).owner).is_some());
        assert!(release(&mut p, 0, &holder(1).owner).is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ask(u8),
        Release(u8),
        Die(u8),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12).prop_map(Op::Ask),
            2 => (0u8..12).prop_map(Op::Release),
            1 => (0u8..12).prop_map(Op::Die),
            1 => (0u16..30_000).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Any interleaving of asks, releases, deaths, reclaims and time: never two leases on
        /// one slot, never a lease outside the pool, never more holders than slots, and no grant
        /// overtakes an earlier waiter so far that it would be left without a slot.
        #[test]
        fn no_sequence_of_operations_over_grants_or_breaks_fifo(slots in 1u32..5, ops in proptest::collection::vec(op(), 1..120)) {
            let mut p = pool(slots);
            let mut now = 0u64;
            let mut tickets: std::collections::BTreeMap<u8, u64> = Default::default();
            let mut dead: std::collections::BTreeSet<u32> = Default::default();
            for op in ops {
                match op {
                    Op::Ask(i) => {
                        let h = holder(u32::from(i) + 1);
                        if dead.contains(&h.owner.pid) || held_by(&p, &h) { continue; }
                        let t = tickets.get(&i).copied();
                        let d = decide_acquire(&p, &h, t, None, now);
                        apply_acquire(&mut p, &d, &h, t);
                        match d {
                            Decision::Grant(_) => {
                                // Everyone who arrived earlier and still waits keeps a slot.
                                let ahead = p.status.waiters.iter()
                                    .filter(|w| w.deadline_ms > now && t.is_none_or(|t| w.enqueued_at_ms < t))
                                    .count();
                                prop_assert!(p.free_slots() as usize >= ahead, "a grant overtook {} earlier waiter(s)", ahead);
                                tickets.remove(&i);
                            }
                            Decision::Wait { waiter, .. } => { tickets.insert(i, waiter.enqueued_at_ms); }
                            Decision::TimedOut(_) => { tickets.remove(&i); }
                        }
                    }
                    Op::Release(i) => {
                        let o = holder(u32::from(i) + 1).owner;
                        let slot = p.status.leases.iter().find(|l| l.owner == o).map(|l| l.slot);
                        if let Some(s) = slot { release(&mut p, s, &o); }
                    }
                    Op::Die(i) => {
                        dead.insert(u32::from(i) + 1);
                        tickets.remove(&i);
                        let plan = decide_reclaim(&p, now, &|o| if dead.contains(&o.pid) { Liveness::Dead } else { Liveness::Alive }, &|_| RunHold::Gone);
                        apply_reclaim(&mut p, &plan);
                    }
                    Op::Tick(ms) => now += u64::from(ms),
                }
                prop_assert!(p.status.leases.len() <= slots as usize);
                let mut seen = std::collections::BTreeSet::new();
                for l in &p.status.leases {
                    prop_assert!(l.slot < slots);
                    prop_assert!(seen.insert(l.slot), "slot {} leased twice", l.slot);
                }
            }
        }
    }

    fn held_by(p: &SlotPool, h: &Holder) -> bool {
        p.status.leases.iter().any(|l| l.owner == h.owner)
    }
}
