//! Resync at scale on the simulated swarm: a full pass costs the same Docker API calls at 10 and 1,000 warm apps (one list per kind, never per stack).
//!
//! Counts, not times: speed is measured by `bench_scale` (BENCHMARKS.md).

#![allow(clippy::unwrap_used)]

use hearth_tests::scale::{self, Pass, Renders};
use state::Store;

async fn steady_pass(n: usize) -> Pass {
    let world = scale::world(n, Store::in_memory().await.unwrap(), Renders::Memoized)
        .await
        .unwrap();
    assert!(
        world.all_ready().unwrap(),
        "the first pass records every app Ready"
    );
    let pass = world.pass().await.unwrap();
    assert_eq!(
        pass.reconciles, n as u64,
        "every app reconciled once: {pass:?}"
    );
    assert_eq!(pass.writes, 0, "a converged world needs no write: {pass:?}");
    assert!(world.all_ready().unwrap());
    world.stop().await;
    pass
}

#[tokio::test(start_paused = true)]
async fn a_full_resync_costs_the_same_calls_at_ten_and_a_thousand_warm_apps() {
    let small = steady_pass(10).await;
    let large = steady_pass(1000).await;
    assert_eq!(
        small.calls, large.calls,
        "calls per pass must not grow with the stacks: 10 → {small:?}, 1000 → {large:?}"
    );
    // The relist's one service listing plus one snapshot of every stack (7 kinds).
    assert_eq!(large.calls, 8, "{large:?}");
    assert_eq!((large.refreshes, large.stack_reads), (1, 0), "{large:?}");
}
