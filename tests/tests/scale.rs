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
    // One snapshot of every stack (7 kinds), shared by the relist (which finds a stack with
    // only networks or volumes left too) and every reconcile.
    assert_eq!(large.calls, 7, "{large:?}");
    assert_eq!((large.refreshes, large.stack_reads), (1, 0), "{large:?}");
}

#[tokio::test(start_paused = true)]
async fn a_resync_of_unchanged_warm_apps_renders_nothing_and_writes_nothing() {
    // More apps than the catalogue's render cache keeps (256), rendered by the directory
    // catalogue as `hearth serve` does: a pass decides from each app's inputs digest.
    let n = 300;
    let world = scale::world(n, Store::in_memory().await.unwrap(), Renders::Catalogue)
        .await
        .unwrap();
    assert!(world.all_ready().unwrap());
    for _ in 0..2 {
        let pass = world.pass().await.unwrap();
        assert_eq!(pass.reconciles, n as u64, "{pass:?}");
        assert_eq!(pass.renders, 0, "no render for unchanged inputs: {pass:?}");
        assert_eq!(pass.writes, 0, "no Docker write: {pass:?}");
        assert_eq!(pass.store_writes, 0, "no store write: {pass:?}");
        // O(kinds): one snapshot of every stack, shared by the relist and the reconciles.
        assert_eq!(pass.calls, 7, "{pass:?}");
        assert_eq!((pass.refreshes, pass.stack_reads), (1, 0), "{pass:?}");
    }
    assert!(world.all_ready().unwrap());
    world.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_edited_recipe_file_is_rendered_again_by_the_next_resync() {
    // A copy of the example catalogue whose compose file changes between two passes.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&scale::examples(), dir.path());
    let n = 3;
    let world = scale::world_in(dir.path(), n, Store::in_memory().await.unwrap())
        .await
        .unwrap();
    let quiet = world.pass().await.unwrap();
    assert_eq!((quiet.renders, quiet.writes), (0, 0), "{quiet:?}");
    let compose = dir.path().join("webapp/compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(&compose, format!("{text}\n# edited\n")).unwrap();
    let edited = world.pass().await.unwrap();
    // Every app renders again (a comment changes no spec: nothing to write).
    assert_eq!(edited.renders, n as u64, "{edited:?}");
    assert_eq!(edited.writes, 0, "{edited:?}");
    let again = world.pass().await.unwrap();
    assert_eq!(again.renders, 0, "{again:?}");
    world.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
