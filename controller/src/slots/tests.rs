#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crd::{Owner, SlotPool, SlotPoolSpec};
use state::history::Query;
use state::{ManualClock, Store};

use super::*;
use crate::liveness::{self, Liveness, ProcLiveness};

async fn store_with_pool(slots: u32, wait: Duration) -> Store {
    let store = Store::in_memory().await.unwrap();
    store
        .create(&SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: wait,
                tiers: Vec::new(),
            },
        ))
        .await
        .unwrap();
    store
}

fn req(owner: Owner) -> SlotRequest {
    SlotRequest {
        pool: "ci".into(),
        owner,
        run: None,
        ttl: None,
    }
}

fn me() -> Owner {
    liveness::current_owner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_racing_for_three_slots_never_hold_more_than_three() {
    let store = store_with_pool(3, Duration::from_secs(60)).await;
    let slots = Slots::new(store.clone());
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let g = slots.acquire(&req(me())).await.unwrap();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // The store agrees: no more leases than slots, each slot once.
            let pool: SlotPool = slots.store().get("ci").unwrap();
            assert!(pool.status.leases.len() <= 3);
            tokio::time::sleep(Duration::from_millis(5)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            slots.release("ci", g.slot, &g.owner).await.unwrap();
            g.slot
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap() < 3);
    }
    assert!(most.load(Ordering::SeqCst) <= 3);
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "the pool was used to capacity"
    );
    let pool: SlotPool = store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty() && pool.status.waiters.is_empty());
}

#[tokio::test]
async fn a_grant_carries_the_slots_port_block_and_namespace() {
    let slots = Slots::new(store_with_pool(3, Duration::from_secs(60)).await);
    let a = slots.acquire(&req(me())).await.unwrap();
    let b = slots.acquire(&req(me())).await.unwrap();
    assert_eq!((a.slot, a.port_base, a.ports), (0, 20000, 10));
    assert_eq!(
        (b.slot, b.port_base, b.namespace.as_str()),
        (1, 20010, "hs-ci-1")
    );
    slots.release("ci", a.slot, &a.owner).await.unwrap();
    let err = slots.release("ci", a.slot, &a.owner).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotHeld { slot: 0, .. }), "{err}");
}

#[tokio::test]
async fn a_waiter_gives_up_after_the_pools_wait_timeout_and_leaves_the_line() {
    let store = store_with_pool(1, Duration::from_millis(300)).await;
    let slots = Slots::new(store.clone());
    let _held = slots.acquire(&req(me())).await.unwrap();
    let err = slots.acquire(&req(me())).await.unwrap_err();
    assert!(matches!(err, Error::WaitTimedOut { .. }), "{err}");
    let pool: SlotPool = store.get("ci").unwrap();
    assert!(pool.status.waiters.is_empty());
}

#[tokio::test]
async fn an_unknown_pool_is_a_clear_error() {
    let slots = Slots::new(Store::in_memory().await.unwrap());
    let mut r = req(me());
    r.pool = "nope".into();
    let err = slots.acquire(&r).await.unwrap_err();
    assert_eq!(err.to_string(), "slot pool nope was not found");
}

#[tokio::test]
async fn a_lease_of_an_owner_on_another_host_is_reclaimed_only_when_it_expires_unless_renewed() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = store_with_pool(1, Duration::from_secs(60)).await;
    let slots = Slots::with_clock(store.clone(), clock.clone());
    let remote = Owner {
        kind: crd::OwnerKind::Pid,
        pid: 1,
        process_start_time: 1,
        host: "other-host".into(),
        boot_id: "x".into(),
    };
    let mut r = req(remote.clone());
    r.ttl = Some(Duration::from_secs(30));
    let g = slots.acquire(&r).await.unwrap();
    let checker = ProcLiveness::new().unwrap();
    assert_eq!(checker.check(&remote), Liveness::Unknown);
    clock.advance(20_000);
    slots
        .heartbeat("ci", g.slot, &remote, Duration::from_secs(30))
        .await
        .unwrap();
    clock.advance(20_000); // 40 s after the grant, 20 s after the heartbeat
    assert!(slots.reclaim(&checker).await.unwrap().is_empty());
    clock.advance(10_000);
    let got = slots.reclaim(&checker).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].reason, decide::ReclaimReason::Expired);
    let err = slots
        .heartbeat("ci", g.slot, &remote, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotHeld { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_holders_slot_is_reclaimed_promptly_and_the_waiter_gets_it() {
    let store = store_with_pool(1, Duration::from_secs(60)).await;
    let slots = Slots::new(store.clone());
    // The holder is a separate process (as a `hearth slot exec` wrapper is).
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let owner = liveness::owner_of(holder.id()).unwrap();
    let g = slots.acquire(&req(owner.clone())).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut reclaimer = crate::runtime::workers::Supervisor::new(
        cancel.clone(),
        crate::runtime::workers::DEFAULT_POLICY,
        None,
    );
    reclaimer.spawn(ReclaimWorker::new(
        slots.clone(),
        Arc::new(ProcLiveness::new().unwrap()),
        DEFAULT_RECLAIM_INTERVAL,
    ));
    let waiter = {
        let slots = slots.clone();
        tokio::spawn(async move { slots.acquire(&req(me())).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the slot is held by a live process");
    let killed = Instant::now();
    holder.kill().unwrap(); // SIGKILL; not reaped yet: a zombie counts as dead
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("reclaimed within 10 s")
        .unwrap()
        .unwrap();
    let took = killed.elapsed();
    assert_eq!(got.slot, g.slot);
    eprintln!("slot reclaimed and re-granted {took:?} after SIGKILL");
    holder.wait().unwrap();
    cancel.cancel();
    reclaimer.join().await;
    let history = store.history(&Query::newest(10).reason(RECLAIMED)).unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].message.contains(&format!("pid {}", owner.pid)));
    assert_eq!(history[0].details["reason"], "ownerDead");
}

/// Replays an append-only log of `enter <job> <slot>` / `exit <job> <slot>` lines written by
/// the jobs themselves; returns the most jobs inside at once and the order of entries.
fn replay(log: &str) -> (usize, Vec<usize>) {
    let (mut inside, mut most, mut order) = (std::collections::BTreeMap::new(), 0, Vec::new());
    for line in log.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let job: usize = parts[1].parse().unwrap();
        let slot: u32 = parts[2].parse().unwrap();
        match parts[0] {
            "enter" => {
                assert!(
                    !inside.values().any(|s| *s == slot),
                    "slot {slot} entered twice: {log}"
                );
                inside.insert(job, slot);
                order.push(job);
            }
            "exit" => {
                inside.remove(&job);
            }
            other => panic!("bad line {other}"),
        }
        most = most.max(inside.len());
    }
    (most, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slot_exec_with_three_slots_and_ten_jobs_never_has_more_than_three_inside_and_serves_in_order(
) {
    let store = store_with_pool(3, Duration::from_secs(120)).await;
    let slots = Slots::new(store.clone());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut jobs = Vec::new();
    for job in 0..10usize {
        let slots = slots.clone();
        let script = format!(
            "echo \"enter {job} $HEARTH_SLOT\" >> {log}; \
             test \"$HEARTH_NAMESPACE\" = \"hs-ci-$HEARTH_SLOT\" || exit 90; \
             test \"$HEARTH_PORT_BASE\" = \"$((20000 + HEARTH_SLOT * 10))\" || exit 91; \
             sleep {hold}; echo \"exit {job} $HEARTH_SLOT\" >> {log}; exit {code}",
            log = log.display(),
            code = job % 3,
            // Staggered holds, so releases (and therefore grants) are >= 150 ms apart and the
            // order of `enter` lines is the order of grants, not of shell start-up.
            hold = 0.25 + 0.15 * job as f64,
        );
        let options = ExecOptions {
            pool: "ci".into(),
            owner: me(),
            ttl: Some(Duration::from_secs(5)),
            command: vec!["sh".into(), "-c".into(), script.into()],
        };
        jobs.push(tokio::spawn(async move { exec(&slots, &options).await }));
        // Start the next job only once this one holds a slot or waits in line, so arrival
        // order is the job order.
        let want = job + 1;
        loop {
            let pool: SlotPool = store.get("ci").unwrap();
            let finished = jobs.iter().filter(|j| j.is_finished()).count();
            if finished + pool.status.leases.len() + pool.status.waiters.len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (job, j) in jobs.into_iter().enumerate() {
        let outcome = j.await.unwrap().unwrap();
        assert_eq!(
            outcome.exit_code,
            i32::try_from(job % 3).unwrap(),
            "exit code propagated"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (most, order) = replay(&text);
    assert_eq!(most, 3, "{text}");
    // The first three get slots at once (in any order); the rest are served in arrival order.
    let mut first: Vec<usize> = order[..3].to_vec();
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2], "{text}");
    assert_eq!(order[3..], [3, 4, 5, 6, 7, 8, 9], "{text}");
    let pool: SlotPool = store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty() && pool.status.waiters.is_empty());
}

#[tokio::test]
async fn slot_exec_releases_the_slot_when_the_command_cannot_start() {
    let store = store_with_pool(1, Duration::from_secs(5)).await;
    let slots = Slots::new(store.clone());
    let options = ExecOptions {
        pool: "ci".into(),
        owner: me(),
        ttl: None,
        command: vec!["/nonexistent/hearth-test-cmd".into()],
    };
    let err = exec(&slots, &options).await.unwrap_err();
    assert!(matches!(err, exec::Error::SpawnFailed { .. }), "{err}");
    let pool: SlotPool = store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty());
    let err = exec(
        &slots,
        &ExecOptions {
            command: vec![],
            ..options
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, exec::Error::CommandMissing));
}

#[tokio::test]
async fn slot_exec_reports_a_signal_as_128_plus_its_number() {
    let slots = Slots::new(store_with_pool(1, Duration::from_secs(5)).await);
    let options = ExecOptions {
        pool: "ci".into(),
        owner: me(),
        ttl: None,
        command: vec!["sh".into(), "-c".into(), "kill -9 $$".into()],
    };
    assert_eq!(exec(&slots, &options).await.unwrap().exit_code, 137);
}

#[tokio::test]
async fn waiters_an_earlier_process_left_are_dropped_and_hold_up_nobody() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = store_with_pool(1, Duration::from_secs(120)).await;
    let checker = ProcLiveness::new().unwrap();
    // The earlier process: a slot held, a request waiting in line when the process dies.
    let earlier = Slots::with_clock(store.clone(), clock.clone());
    let held = earlier.acquire(&req(me())).await.unwrap();
    let cut_off = earlier.try_acquire(&req(me()), None).await.unwrap();
    assert!(matches!(cut_off, Attempt::Waiting { position: 0, .. }));
    earlier.release("ci", held.slot, &held.owner).await.unwrap();
    clock.advance(1_000);
    // The next process: the client's retry is a new request, behind the dead entry whose
    // owner (the CI job, retrying) is alive — the slot is free, yet it waits.
    let next = Slots::with_clock(store.clone(), clock.clone());
    let Attempt::Waiting {
        ticket, position, ..
    } = next.try_acquire(&req(me()), None).await.unwrap()
    else {
        panic!("the retry should wait behind the dead entry");
    };
    assert_eq!(position, 1);
    let got = next.reclaim(&checker).await.unwrap();
    let reasons: Vec<_> = got.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, [decide::ReclaimReason::RequestGone]);
    let granted = next.try_acquire(&req(me()), Some(ticket)).await.unwrap();
    assert!(matches!(granted, Attempt::Granted(_)), "{granted:?}");
    // This process's own waiters are kept.
    let Attempt::Waiting { .. } = next.try_acquire(&req(me()), None).await.unwrap() else {
        panic!("the pool is full again");
    };
    assert!(next.reclaim(&checker).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_the_line() {
    let store = store_with_pool(1, Duration::from_secs(120)).await;
    let slots = Slots::new(store.clone());
    let _held = slots.acquire(&req(me())).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), slots.acquire(&req(me()))).await;
    assert!(waited.is_err(), "the pool is full: the wait is cancelled");
    let started = Instant::now();
    loop {
        let pool: SlotPool = store.get("ci").unwrap();
        if pool.status.waiters.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cancelled wait's entry stayed: {:?}",
            pool.status.waiters
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue 14 (serve's `wait()` returned before the store was released): a cancelled wait leaves
/// the line in a task of its own, which holds the store until its write is durable; `settle`
/// returns only once it has, so the data directory opens again at once. Untracked, the
/// withdrawal was still waiting for its flush when `settle` returned (this current-thread
/// runtime had not run it to the end), and the reopen met `DirectoryInUse`.
#[tokio::test]
async fn settle_returns_once_every_cancelled_wait_has_left_the_line_and_let_go_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    store
        .create(&SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots: 1,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(120),
                tiers: Vec::new(),
            },
        ))
        .await
        .unwrap();
    let slots = Slots::new(store.clone());
    let _held = slots.acquire(&req(me())).await.unwrap();
    let waiting = {
        let slots = slots.clone();
        tokio::spawn(async move { slots.acquire(&req(me())).await })
    };
    let started = Instant::now();
    while store
        .get::<SlotPool>("ci")
        .unwrap()
        .status
        .waiters
        .is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(5), "never in line");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Parked between attempts (its entry written and durable).
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    slots.settle().await;
    let pool: SlotPool = store.get("ci").unwrap();
    assert!(pool.status.waiters.is_empty(), "{:?}", pool.status.waiters);
    drop((slots, store));
    let reopened = Store::open(dir.path()).await;
    assert!(reopened.is_ok(), "still held: {:?}", reopened.err());
}
