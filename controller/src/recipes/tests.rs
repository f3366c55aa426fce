#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crd::condition::ConditionStatus;
use state::history::Query;
use state::SystemClock;

use super::*;
use crate::catalogue::sources::tests::{declared, repo, sh};
use crate::catalogue::sources::Limits;

async fn world() -> (tempfile::TempDir, tempfile::TempDir, Fetcher) {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let store = Store::in_memory().await.unwrap();
    store
        .create(&declared(&format!("file://{}", repo.path().display())))
        .await
        .unwrap();
    let sources = Arc::new(Sources::new(data.path(), None, Limits::default()));
    let fetcher = Fetcher::new(
        store,
        sources,
        Metrics::new().unwrap(),
        Arc::new(SystemClock),
    );
    (repo, data, fetcher)
}

fn fetched_condition(r: &Recipe) -> ConditionStatus {
    r.status
        .conditions
        .iter()
        .find(|c| c.type_ == FETCHED)
        .unwrap()
        .status
}

#[tokio::test]
async fn a_good_fetch_writes_the_versions_and_a_failed_one_keeps_them_and_says_so() {
    let (repo, _data, fetcher) = world().await;
    let out = fetcher.fetch_all().await;
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].newest.as_deref(), Some("1.1.0+1.1"));
    let r = fetcher.store.get::<Recipe>("demo").unwrap();
    assert_eq!(r.status.newest.as_deref(), Some("1.1.0+1.1"));
    assert_eq!(r.status.versions.len(), 2);
    assert_eq!(r.status.ignored[0].tag, "not-a-version");
    assert_eq!(fetched_condition(&r), ConditionStatus::True);
    assert!(!fetcher.due(&r, r.status.last_fetch_ms.unwrap() + 1000));

    // A new tag upstream: the next fetch finds it.
    std::fs::write(repo.path().join("README.md"), "x").unwrap();
    sh(repo.path(), &["add", "-A"]);
    sh(repo.path(), &["commit", "-q", "-m", "three"]);
    sh(repo.path(), &["tag", "1.2.0+1.2"]);
    fetcher.fetch_all().await;
    let r = fetcher.store.get::<Recipe>("demo").unwrap();
    assert_eq!(r.status.newest.as_deref(), Some("1.2.0+1.2"));

    // The URL goes away: twice.
    std::fs::remove_dir_all(repo.path()).unwrap();
    for _ in 0..2 {
        let out = fetcher.fetch_all().await;
        assert!(
            out[0]
                .error
                .as_deref()
                .unwrap()
                .contains("git fetch failed"),
            "{out:?}"
        );
        assert_eq!(
            out[0].newest.as_deref(),
            Some("1.2.0+1.2"),
            "last good content in force"
        );
    }
    let r = fetcher.store.get::<Recipe>("demo").unwrap();
    assert_eq!(r.status.newest.as_deref(), Some("1.2.0+1.2"));
    assert_eq!(r.status.versions.len(), 3);
    assert!(r
        .status
        .last_fetch_error
        .as_deref()
        .unwrap()
        .contains("git fetch failed"));
    assert_eq!(fetched_condition(&r), ConditionStatus::False);
    let ready = r
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.status,
        ConditionStatus::True,
        "content stays in force"
    );
    let history = fetcher
        .store
        .history(&Query::newest(100).about(ObjectRef::new(Kind::Recipe, "demo")))
        .unwrap();
    let reasons: Vec<_> = history.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == FETCH_FAILED).count(),
        1,
        "one entry per failure streak: {reasons:?}"
    );
    assert_eq!(reasons.iter().filter(|r| **r == FETCHED_REASON).count(), 2);
    let text = fetcher.metrics.encode().unwrap();
    assert!(
        text.contains("hearth_recipe_fetch_failing{recipe=\"demo\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hearth_recipe_fetches_total{result=\"failed\"} 2"),
        "{text}"
    );
    // Renders keep working from the mirror.
    let env = Default::default();
    crate::catalogue::Catalogue::render(
        fetcher.sources().as_ref(),
        &crate::catalogue::RenderRequest {
            recipe: "demo",
            version: "1.2.0+1.2",
            stack: "hw-demo",
            domain: "d.test",
            env: &env,
        },
    )
    .unwrap();
}
