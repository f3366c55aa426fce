//! The example state file against a real (sled) store: applied once, then unchanged across a restart; a bad edit changes nothing.

use std::path::PathBuf;

use controller::statefile::{self, ApplyOptions, Error};
use crd::{SlotPool, WarmApp};
use state::history::{reason, Query};
use state::Store;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/state.yml")
}

async fn objects(store: &Store) -> String {
    let w = store.list::<WarmApp>().expect("list").items;
    let s = store.list::<SlotPool>().expect("list").items;
    let d = store.list::<crd::DepProvider>().expect("list").items;
    serde_json::to_string(&(w, s, d)).expect("json")
}

#[tokio::test]
async fn the_example_state_file_should_apply_once_and_be_unchanged_after_a_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Store::open(data.path()).await.expect("open");
    let diff = statefile::apply_file(&store, &example(), None, ApplyOptions::default())
        .await
        .expect("apply");
    assert_eq!(diff.counts(), (4, 0, 0, 0, 0), "{diff}");
    let before = objects(&store).await;
    drop(store);

    // A restart: the same file against the reopened store writes nothing.
    let store = Store::open(data.path()).await.expect("reopen");
    let revision = store.revision();
    let diff = statefile::apply_file(&store, &example(), None, ApplyOptions::default())
        .await
        .expect("apply again");
    assert!(diff.is_noop(), "{diff}");
    assert_eq!(objects(&store).await, before);
    assert_eq!(store.revision(), revision, "no object was written");
}

#[tokio::test]
async fn a_broken_edit_of_the_example_should_change_nothing_and_be_recorded() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Store::open(data.path()).await.expect("open");
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("state.yml");
    let text = std::fs::read_to_string(example()).expect("read");
    std::fs::write(&file, &text).expect("write");
    statefile::apply_file(&store, &file, None, ApplyOptions::default())
        .await
        .expect("apply");
    let before = objects(&store).await;

    // Bump one version (fine) and break the slot pool (not fine): nothing may change.
    let broken = text
        .replace("version: 1.1.0", "version: 2.0.0")
        .replace("slots: 3", "slots: -3");
    std::fs::write(&file, broken).expect("write");
    let err = statefile::apply_file(
        &store,
        &file,
        None,
        ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .expect_err("rejected");
    let Error::FileRejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err}");
    };
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].path, "spec.slots", "{err}");
    assert!(problems[0].line > 40, "{err}");
    assert_eq!(objects(&store).await, before);
    let history = store.history(&Query::newest(5)).expect("history");
    assert_eq!(history[0].reason, reason::REJECTED);
}
