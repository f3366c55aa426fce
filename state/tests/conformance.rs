//! One conformance suite, run against every engine (memory, sled and etcd: a 3-member etcd
//! cluster from scripts/etcd.sh, which the etcd cases start when it is not up).
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, Backend, EtcdBackend, Job, MemoryBackend, SledBackend};

/// The cases; each takes a fresh backend.
mod cases {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use crd::{Kind, Resource};
    use futures::FutureExt;
    use serde_json::json;
    use state::engine::{Keyspace, Op};
    use state::history::{NewEntry, ObjectRef, Query, Retention};
    use state::watch::{self, ChangeType};
    use state::{Config, Error, ManualClock, Store, SCHEMA_VERSION};

    use super::common::{open, App, Backend, Job};

    fn config_at(clock: &Arc<ManualClock>) -> Config {
        Config {
            clock: clock.clone(),
            ..Config::default()
        }
    }

    pub async fn crud_should_round_trip(b: impl Backend) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store = open(&b, config_at(&clock)).await;
        assert!(store.get_opt::<App>("web").unwrap().is_none());
        assert!(store.get::<App>("web").unwrap_err().is_not_found());

        let created = store.create(&App::new("web", "1.0.0")).await.unwrap();
        assert_eq!(created.metadata.generation, 1);
        assert!(created.metadata.resource_version > 0);
        assert_eq!(created.metadata.creation_timestamp_ms, 1_700_000_000_000);
        assert_eq!(store.get::<App>("web").unwrap(), created);

        let again = store.create(&App::new("web", "2.0.0")).await.unwrap_err();
        assert!(matches!(
            again,
            Error::ObjectAlreadyExists {
                kind: Kind::WarmApp,
                ..
            }
        ));

        clock.advance(5_000);
        let mut edit = created.clone();
        edit.spec.version = "1.1.0".into();
        let updated = store.update(&edit).await.unwrap();
        assert_eq!(updated.spec.version, "1.1.0");
        assert_eq!(updated.metadata.generation, 2);
        assert!(updated.metadata.resource_version > created.metadata.resource_version);
        assert_eq!(updated.metadata.creation_timestamp_ms, 1_700_000_000_000);
        assert_eq!(store.get::<App>("web").unwrap(), updated);

        let deleted: App = store.delete("web", None).await.unwrap();
        assert_eq!(deleted, updated);
        assert!(store.get_opt::<App>("web").unwrap().is_none());
        assert!(store
            .delete::<App>("web", None)
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store.update(&updated).await.unwrap_err().is_not_found());

        let bad = store.create(&App::new("a/b", "1")).await.unwrap_err();
        assert!(matches!(bad, Error::NameRejected { .. }));
    }

    pub async fn stale_resource_versions_should_be_rejected(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let v1 = store.create(&App::new("web", "1")).await.unwrap();
        let mut edit = v1.clone();
        edit.spec.version = "2".into();
        let v2 = store.update(&edit).await.unwrap();

        let mut stale = v1.clone();
        stale.spec.version = "3".into();
        match store.update(&stale).await.unwrap_err() {
            Error::ResourceVersionMismatched {
                kind,
                name,
                expected,
                actual,
            } => {
                assert_eq!((kind, name.as_str()), (Kind::WarmApp, "web"));
                assert_eq!(expected, v1.metadata.resource_version);
                assert_eq!(actual, v2.metadata.resource_version);
            }
            other => panic!("unexpected: {other}"),
        }
        stale.status.phase = "Ready".into();
        assert!(store.update_status(&stale).await.unwrap_err().is_conflict());
        let err = store
            .delete::<App>("web", Some(v1.metadata.resource_version))
            .await
            .unwrap_err();
        assert!(err.is_conflict());
        assert_eq!(store.get::<App>("web").unwrap(), v2);
        store
            .delete::<App>("web", Some(v2.metadata.resource_version))
            .await
            .unwrap();
        assert!(store.get_opt::<App>("web").unwrap().is_none());
    }

    pub async fn generation_should_bump_only_on_spec_change(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let v1 = store.create(&App::new("web", "1")).await.unwrap();

        let mut labelled = v1.clone();
        labelled.metadata.labels.insert("team".into(), "a".into());
        let v2 = store.update(&labelled).await.unwrap();
        assert_eq!(v2.metadata.generation, 1, "labels are not spec");
        assert!(v2.metadata.resource_version > v1.metadata.resource_version);

        let v3 = store.update(&v2).await.unwrap();
        assert_eq!(v3, v2, "an unchanged write is a no-op");
        assert_eq!(store.revision(), v2.metadata.resource_version);

        let mut spec = v3.clone();
        spec.spec.version = "2".into();
        spec.metadata.generation = 99; // callers cannot set generation
        let v4 = store.update(&spec).await.unwrap();
        assert_eq!(v4.metadata.generation, 2);
        assert_eq!(
            v4.metadata.labels.get("team").map(String::as_str),
            Some("a")
        );
    }

    pub async fn status_writes_should_not_bump_generation(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let v1 = store.create(&App::new("web", "1")).await.unwrap();
        let mut s = v1.clone();
        s.status.phase = "Ready".into();
        s.spec.version = "ignored".into();
        let v2 = store.update_status(&s).await.unwrap();
        assert_eq!(v2.metadata.generation, 1);
        assert_eq!(v2.spec.version, "1", "update_status ignores spec");
        assert_eq!(v2.status.phase, "Ready");
        assert!(v2.metadata.resource_version > v1.metadata.resource_version);

        let same = store.update_status(&v2).await.unwrap();
        assert_eq!(same, v2, "an unchanged status is a no-op");

        let mut spec = v2.clone();
        spec.spec.version = "2".into();
        spec.status.phase = "ignored".into();
        let v3 = store.update(&spec).await.unwrap();
        assert_eq!(v3.status.phase, "Ready", "update keeps the stored status");
        assert_eq!(v3.metadata.generation, 2);
    }

    pub async fn lists_should_be_isolated_per_kind(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        store.create(&App::new("b", "1")).await.unwrap();
        store.create(&App::new("a", "1")).await.unwrap();
        store.create(&Job::new("a", 1)).await.unwrap();
        let last = store.create(&Job::new("c", 1)).await.unwrap();
        let apps = store.list::<App>().unwrap();
        let names: Vec<_> = apps
            .items
            .iter()
            .map(|a| a.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let jobs = store.list::<Job>().unwrap();
        let names: Vec<_> = jobs
            .items
            .iter()
            .map(|j| j.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(jobs.revision, last.metadata.resource_version);
        store.delete::<Job>("a", None).await.unwrap();
        assert_eq!(store.list::<App>().unwrap().items.len(), 2);
        assert_eq!(store.list::<Job>().unwrap().items.len(), 1);
    }

    pub async fn the_change_feed_should_deliver_every_write_in_order(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let mut feed = store.subscribe();
        let a = store.create(&App::new("web", "1")).await.unwrap();
        let j = store.create(&Job::new("r1", 0)).await.unwrap();
        let mut edit = a.clone();
        edit.spec.version = "2".into();
        let a2 = store.update(&edit).await.unwrap();
        store.update(&a2).await.unwrap(); // no-op: no event
        let mut s = j.clone();
        s.status.done = true;
        let j2 = store.update_status(&s).await.unwrap();
        store.delete::<App>("web", None).await.unwrap();

        let mut got = Vec::new();
        while let Some(c) = feed.try_recv().unwrap() {
            got.push((c.kind, c.name, c.generation, c.change, c.resource_version));
        }
        let kinds: Vec<_> = got
            .iter()
            .map(|(k, n, g, c, _)| (*k, n.as_str(), *g, *c))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::WarmApp, "web", 1, ChangeType::Created),
                (Kind::Run, "r1", 1, ChangeType::Created),
                (Kind::WarmApp, "web", 2, ChangeType::Updated),
                (Kind::Run, "r1", 1, ChangeType::StatusUpdated),
                (Kind::WarmApp, "web", 2, ChangeType::Deleted),
            ]
        );
        let revs: Vec<u64> = got.iter().map(|g| g.4).collect();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "increasing: {revs:?}");
        assert_eq!(revs[3], j2.metadata.resource_version);
        assert_eq!(*revs.last().unwrap(), store.revision());

        // The per-kind trigger: resolves for a later write of that kind only.
        let r = store.revision();
        assert!(store.changed(Kind::Run, r).now_or_never().is_none());
        assert_eq!(store.changed(Kind::Run, 0).now_or_never(), Some(revs[3]));
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.changed(Kind::Run, r).await })
        };
        store.create(&App::new("other", "1")).await.unwrap();
        let job = store.create(&Job::new("r2", 0)).await.unwrap();
        assert_eq!(waiter.await.unwrap(), job.metadata.resource_version);
    }

    pub async fn a_lagging_subscriber_should_be_told_to_relist(b: impl Backend) {
        let config = Config {
            feed_capacity: 4,
            ..Config::default()
        };
        let store = open(&b, config).await;
        let mut feed = store.subscribe();
        for i in 0..10 {
            store.create(&Job::new(&format!("j{i}"), i)).await.unwrap();
        }
        assert_eq!(feed.recv().await, Err(watch::Error::Lagged { missed: 6 }));
        // After relisting, the subscription keeps delivering newer changes.
        assert_eq!(store.list::<Job>().unwrap().items.len(), 10);
        assert_eq!(feed.recv().await.unwrap().name, "j6");
    }

    pub async fn history_should_append_list_and_filter(b: impl Backend) {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = open(&b, config_at(&clock)).await;
        let web = ObjectRef::new(Kind::WarmApp, "web");
        let run = ObjectRef::new(Kind::Run, "r1");
        for i in 0..10u64 {
            clock.advance(1);
            let (reason, subject) = if i % 2 == 0 {
                ("Deployed", web.clone())
            } else {
                ("Swept", run.clone())
            };
            let e = store
                .append_history(
                    NewEntry::new(reason, format!("event {i}"))
                        .subject(subject)
                        .details(json!({ "i": i })),
                )
                .await
                .unwrap();
            assert_eq!(e.seq, i + 1);
            assert_eq!(e.time_ms, 1_001 + i);
        }
        store
            .append_history(NewEntry::new("Rejected", "bad state file"))
            .await
            .unwrap();

        let newest = store.history(&Query::newest(3)).unwrap();
        let seqs: Vec<u64> = newest.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [11, 10, 9]);
        assert_eq!(newest[0].subject, None);
        assert_eq!(newest[1].details, json!({ "i": 9 }));

        let about_web = store
            .history(&Query::newest(100).about(web.clone()))
            .unwrap();
        let seqs: Vec<u64> = about_web.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [9, 7, 5, 3, 1]);
        let page = store
            .history(&Query::newest(2).about(web.clone()).before(7))
            .unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 3]);
        let swept = store.history(&Query::newest(2).reason("Swept")).unwrap();
        assert_eq!(swept.iter().map(|e| e.seq).collect::<Vec<_>>(), [10, 8]);
        let none = store
            .history(&Query::newest(5).about(ObjectRef::new(Kind::Run, "nope")))
            .unwrap();
        assert!(none.is_empty());
    }

    pub async fn history_retention_should_drop_the_oldest_entries(b: impl Backend) {
        let clock = Arc::new(ManualClock::new(0));
        let config = Config {
            history_retention: Retention {
                max_entries: Some(5),
                max_age: Some(Duration::from_secs(60)),
            },
            ..config_at(&clock)
        };
        let store = open(&b, config).await;
        let web = ObjectRef::new(Kind::WarmApp, "web");
        for i in 0..12 {
            store
                .append_history(NewEntry::new("Deployed", format!("{i}")).subject(web.clone()))
                .await
                .unwrap();
        }
        let all = store.history(&Query::newest(100)).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [12, 11, 10, 9, 8]
        );
        let indexed = store
            .history(&Query::newest(100).about(web.clone()))
            .unwrap();
        assert_eq!(indexed.len(), 5, "the index is pruned with the entries");

        // Age: everything older than 60 s goes at maintenance, but never the newest entry.
        clock.advance(30_000);
        store
            .append_history(NewEntry::new("Swept", "recent"))
            .await
            .unwrap();
        clock.advance(40_000);
        let report = store.maintenance().await.unwrap();
        assert_eq!(report.history_pruned, 4);
        assert_eq!(report.history_entries, 1);
        let left = store.history(&Query::newest(100)).unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [13]);
        assert!(report.size_on_disk > 0);
        clock.advance(600_000);
        assert_eq!(
            store.prune_history().await.unwrap(),
            0,
            "the newest entry stays"
        );
        let next = store
            .append_history(NewEntry::new("Swept", "later"))
            .await
            .unwrap();
        assert_eq!(next.seq, 14, "sequence numbers are never reused");
        assert_eq!(store.history(&Query::newest(100)).unwrap().len(), 1);
    }

    pub async fn concurrent_updates_of_one_key_should_have_one_winner_per_revision(
        b: impl Backend,
    ) {
        let store = open(&b, Config::default()).await;
        let base = store.create(&Job::new("counter", 0)).await.unwrap();

        // One race: every task writes from the same copy; exactly one may win.
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                let store = store.clone();
                let mut copy = base.clone();
                copy.spec.n = 100 + i;
                tokio::spawn(async move { store.update(&copy).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert!(e.is_conflict(), "{e}"),
            }
        }
        assert_eq!(wins, 1);

        // Many read-modify-write loops: no increment is lost, each success owns its revision.
        let start = store.get::<Job>("counter").unwrap().spec.n;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut revisions = Vec::new();
                    let mut conflicts = 0u32;
                    for _ in 0..25 {
                        loop {
                            let mut job = store.get::<Job>("counter").unwrap();
                            job.spec.n += 1;
                            match store.update(&job).await {
                                Ok(done) => {
                                    revisions.push(done.metadata.resource_version);
                                    break;
                                }
                                Err(e) if e.is_conflict() => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    (revisions, conflicts)
                })
            })
            .collect();
        let mut all = BTreeSet::new();
        for t in tasks {
            let (revs, _conflicts) = t.await.unwrap();
            for r in revs {
                assert!(all.insert(r), "revision {r} won twice");
            }
        }
        assert_eq!(all.len(), 200);
        let end = store.get::<Job>("counter").unwrap();
        assert_eq!(end.spec.n, start + 200);
        assert_eq!(end.metadata.generation, 2 + 200);
    }

    pub async fn an_unknown_schema_version_should_be_refused(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        store.create(&App::new("web", "1")).await.unwrap();
        drop(store);
        let engine = b.engine();
        let newer = SCHEMA_VERSION + 41;
        engine
            .apply(
                Keyspace::Meta,
                vec![Op::Put(
                    b"schema_version".to_vec(),
                    newer.to_be_bytes().to_vec(),
                )],
            )
            .unwrap();
        engine.flush().await.unwrap();
        drop(engine);
        let err = Store::with_engine(b.engine(), Config::default())
            .await
            .unwrap_err();
        match &err {
            Error::SchemaVersionUnsupported {
                found, supported, ..
            } => assert_eq!((*found, *supported), (newer, SCHEMA_VERSION)),
            other => panic!("unexpected: {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("schema version {newer}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("supports version {SCHEMA_VERSION}")),
            "{message}"
        );
    }

    pub async fn a_reopened_store_should_keep_data_and_counters(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let a = store.create(&App::new("web", "1")).await.unwrap();
        let mut s = store.create(&Job::new("r1", 7)).await.unwrap();
        s.status.done = true;
        store.update_status(&s).await.unwrap();
        let gone = store.create(&Job::new("gone", 1)).await.unwrap();
        let deleted_rev = store.revision();
        store.delete::<Job>("gone", None).await.unwrap();
        assert!(store.revision() > gone.metadata.resource_version);
        let last_rev = store.revision();
        assert!(last_rev > deleted_rev);
        let h = store
            .append_history(NewEntry::new("Deployed", "web 1").subject(ObjectRef::to(&a)))
            .await
            .unwrap();
        drop(store);

        let store = open(&b, Config::default()).await;
        assert_eq!(store.get::<App>("web").unwrap(), a);
        let job = store.get::<Job>("r1").unwrap();
        assert!(job.status.done);
        assert!(store.get_opt::<Job>("gone").unwrap().is_none());
        assert_eq!(store.revision(), last_rev);
        // Revisions never go back, even when the newest write was a delete.
        let next = store.create(&Job::new("gone", 2)).await.unwrap();
        assert_eq!(next.metadata.resource_version, last_rev + 1);
        let h2 = store
            .append_history(NewEntry::new("Deployed", "again"))
            .await
            .unwrap();
        assert_eq!(h2.seq, h.seq + 1);
        let about = store
            .history(&Query::newest(10).about(ObjectRef::to(&a)))
            .unwrap();
        assert_eq!(about.len(), 1);
        assert!(store.size_on_disk().unwrap() > 0);
        if b.durable() {
            assert!(store.location().ends_with("data"));
        }
    }

    pub async fn transactions_should_apply_all_writes_or_none(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let pool = store.create(&App::new("pool", "1")).await.unwrap();
        let mut feed = store.subscribe();

        // All: a new run and the pool's lease, atomically, one revision each.
        let mut leased = pool.clone();
        leased.status.phase = "leased-to-r1".into();
        let mut tx = store.transaction();
        tx.create(&Job::new("r1", 1)).update_status(&leased);
        let changes = tx.commit().await.unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            (changes[0].kind, changes[0].change),
            (Kind::Run, ChangeType::Created)
        );
        assert_eq!(changes[1].change, ChangeType::StatusUpdated);
        assert_eq!(changes[1].resource_version, changes[0].resource_version + 1);
        assert_eq!(store.revision(), changes[1].resource_version);
        let r1 = store.get::<Job>("r1").unwrap();
        assert_eq!(r1.metadata.resource_version, changes[0].resource_version);
        assert_eq!(
            store.get::<App>("pool").unwrap().status.phase,
            "leased-to-r1"
        );
        for expected in &changes {
            assert_eq!(&feed.recv().await.unwrap(), expected);
        }

        // None: the stale pool copy fails the whole transaction.
        let before = store.revision();
        let mut tx = store.transaction();
        tx.create(&Job::new("r2", 2)).update_status(&leased);
        assert!(tx.commit().await.unwrap_err().is_conflict());
        assert!(store.get_opt::<Job>("r2").unwrap().is_none());
        assert_eq!(store.revision(), before);
        assert_eq!(feed.try_recv().unwrap(), None);
        let mut tx = store.transaction();
        tx.create(&Job::new("ok", 2))
            .create(&Job::new("bad/name", 2));
        assert!(matches!(tx.commit().await, Err(Error::NameRejected { .. })));
        assert!(store.get_opt::<Job>("ok").unwrap().is_none());

        // Later writes see earlier ones: replace r1 by delete + create in one transaction.
        let mut tx = store.transaction();
        tx.delete::<Job>("r1", Some(r1.metadata.resource_version))
            .create(&Job::new("r1", 9));
        let changes = tx.commit().await.unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.change).collect();
        assert_eq!(kinds, [ChangeType::Deleted, ChangeType::Created]);
        let r1 = store.get::<Job>("r1").unwrap();
        assert_eq!((r1.spec.n, r1.metadata.generation), (9, 1));
        assert_eq!(store.transaction().commit().await.unwrap(), []);
        drop(store);
        let store = open(&b, Config::default()).await;
        assert_eq!(store.get::<Job>("r1").unwrap(), r1);
    }

    pub async fn transactions_should_append_history_with_their_writes_or_not_at_all(
        b: impl Backend,
    ) {
        let store = open(&b, Config::default()).await;
        let pool = store.create(&App::new("pool", "1")).await.unwrap();
        let before = store.history(&Query::newest(100)).unwrap().len();

        // None: a failing write leaves the history as it was.
        let mut stale = pool.clone();
        stale.metadata.resource_version += 7;
        let mut tx = store.transaction();
        tx.create(&Job::new("j1", 1))
            .update(&stale)
            .append_history(NewEntry::new("Applied", "never"));
        assert!(tx.commit().await.unwrap_err().is_conflict());
        assert_eq!(store.history(&Query::newest(100)).unwrap().len(), before);
        let mut tx = store.transaction();
        tx.append_history(
            NewEntry::new("Applied", "bad subject").subject(ObjectRef::new(Kind::Run, "a/b")),
        );
        assert!(matches!(tx.commit().await, Err(Error::NameRejected { .. })));
        assert_eq!(store.history(&Query::newest(100)).unwrap().len(), before);

        // All: objects and entries together, entries in recorded order, indexed by subject.
        let mut tx = store.transaction();
        tx.create(&Job::new("j1", 1))
            .append_history(NewEntry::new("Created", "j1").subject(ObjectRef::new(Kind::Run, "j1")))
            .append_history(NewEntry::new("Applied", "one job"));
        assert_eq!(tx.commit().await.unwrap().len(), 1);
        let newest = store.history(&Query::newest(2)).unwrap();
        assert_eq!(newest[0].reason, "Applied");
        assert_eq!(newest[1].reason, "Created");
        assert_eq!(newest[0].seq, newest[1].seq + 1);
        let about = store
            .history(&Query::newest(10).about(ObjectRef::new(Kind::Run, "j1")))
            .unwrap();
        assert_eq!(about.len(), 1);

        // History alone commits too, and later appends continue the sequence.
        let mut tx = store.transaction();
        tx.append_history(NewEntry::new("Applied", "nothing changed"));
        assert_eq!(tx.commit().await.unwrap(), []);
        let next = store
            .append_history(NewEntry::new("After", "single append"))
            .await
            .unwrap();
        assert_eq!(next.seq, newest[0].seq + 2);

        // Spec and status from one read in one write; a stale copy conflicts.
        let pool = store.get::<App>("pool").unwrap();
        let mut both = pool.clone();
        both.spec.version = "2".into();
        both.status.phase = "declared".into();
        let mut tx = store.transaction();
        tx.update_with_status(&both);
        let changes = tx.commit().await.unwrap();
        assert_eq!(changes[0].change, ChangeType::Updated);
        let stored = store.get::<App>("pool").unwrap();
        assert_eq!(
            (stored.spec.version.as_str(), stored.status.phase.as_str()),
            ("2", "declared")
        );
        assert_eq!(stored.metadata.generation, pool.metadata.generation + 1);
        let mut status_only = stored.clone();
        status_only.status.phase = "cleared".into();
        let mut tx = store.transaction();
        tx.update_with_status(&status_only);
        let changes = tx.commit().await.unwrap();
        assert_eq!(changes[0].change, ChangeType::StatusUpdated);
        assert_eq!(
            store.get::<App>("pool").unwrap().metadata.generation,
            stored.metadata.generation
        );
        let mut tx = store.transaction();
        tx.update_with_status(&both);
        assert!(tx.commit().await.unwrap_err().is_conflict());

        // Durable together.
        drop(store);
        let store = open(&b, Config::default()).await;
        assert!(store.get_opt::<Job>("j1").unwrap().is_some());
        let reasons: Vec<String> = store
            .history(&Query::newest(4))
            .unwrap()
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["After", "Applied", "Applied", "Created"]);
    }

    pub async fn named_values_should_persist_and_stay_off_the_feed(b: impl Backend) {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Nightly {
            last_window_ms: u64,
            cursor: String,
        }
        let store = open(&b, Config::default()).await;
        let mut feed = store.subscribe();
        assert_eq!(store.get_value::<Nightly>("nightly").unwrap(), None);
        let v = Nightly {
            last_window_ms: 86_400_000,
            cursor: "app-7".into(),
        };
        store.put_value("nightly", &v).await.unwrap();
        assert_eq!(
            store.get_value::<Nightly>("nightly").unwrap().as_ref(),
            Some(&v)
        );
        assert_eq!(feed.try_recv().unwrap(), None);
        assert_eq!(store.revision(), 0);
        assert!(store.put_value("a/b", &1).await.is_err());
        drop(store);
        let store = open(&b, Config::default()).await;
        assert_eq!(store.get_value::<Nightly>("nightly").unwrap(), Some(v));
        assert!(matches!(
            store.get_value::<u64>("nightly"),
            Err(Error::DecodeFailed { .. })
        ));
    }

    pub async fn every_acknowledged_concurrent_write_should_be_readable(b: impl Backend) {
        let store = open(&b, Config::default()).await;
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.create(&Job::new(&format!("j{i}"), i)).await })
            })
            .collect();
        let mut revs = BTreeSet::new();
        for t in tasks {
            revs.insert(t.await.unwrap().unwrap().metadata.resource_version);
        }
        assert_eq!(revs.len(), 64);
        drop(store);
        let store = open(&b, Config::default()).await;
        let jobs = store.list::<Job>().unwrap();
        assert_eq!(jobs.items.len(), 64);
        for j in jobs.items {
            assert_eq!(format!("j{}", j.spec.n), j.metadata.name);
            assert_eq!(j.meta().generation, 1);
        }
    }
}

macro_rules! conformance_suite {
    ($engine:ident, $backend:expr) => {
        mod $engine {
            use super::*;

            #[tokio::test]
            async fn crud_should_round_trip() {
                cases::crud_should_round_trip($backend).await
            }

            #[tokio::test]
            async fn stale_resource_versions_should_be_rejected() {
                cases::stale_resource_versions_should_be_rejected($backend).await
            }

            #[tokio::test]
            async fn generation_should_bump_only_on_spec_change() {
                cases::generation_should_bump_only_on_spec_change($backend).await
            }

            #[tokio::test]
            async fn status_writes_should_not_bump_generation() {
                cases::status_writes_should_not_bump_generation($backend).await
            }

            #[tokio::test]
            async fn lists_should_be_isolated_per_kind() {
                cases::lists_should_be_isolated_per_kind($backend).await
            }

            #[tokio::test]
            async fn the_change_feed_should_deliver_every_write_in_order() {
                cases::the_change_feed_should_deliver_every_write_in_order($backend).await
            }

            #[tokio::test]
            async fn a_lagging_subscriber_should_be_told_to_relist() {
                cases::a_lagging_subscriber_should_be_told_to_relist($backend).await
            }

            #[tokio::test]
            async fn history_should_append_list_and_filter() {
                cases::history_should_append_list_and_filter($backend).await
            }

            #[tokio::test]
            async fn history_retention_should_drop_the_oldest_entries() {
                cases::history_retention_should_drop_the_oldest_entries($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_updates_of_one_key_should_have_one_winner_per_revision() {
                cases::concurrent_updates_of_one_key_should_have_one_winner_per_revision($backend)
                    .await
            }

            #[tokio::test]
            async fn an_unknown_schema_version_should_be_refused() {
                cases::an_unknown_schema_version_should_be_refused($backend).await
            }

            #[tokio::test]
            async fn a_reopened_store_should_keep_data_and_counters() {
                cases::a_reopened_store_should_keep_data_and_counters($backend).await
            }

            #[tokio::test]
            async fn transactions_should_apply_all_writes_or_none() {
                cases::transactions_should_apply_all_writes_or_none($backend).await
            }

            #[tokio::test]
            async fn transactions_should_append_history_with_their_writes_or_not_at_all() {
                cases::transactions_should_append_history_with_their_writes_or_not_at_all($backend)
                    .await
            }

            #[tokio::test]
            async fn named_values_should_persist_and_stay_off_the_feed() {
                cases::named_values_should_persist_and_stay_off_the_feed($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn every_acknowledged_concurrent_write_should_be_readable() {
                cases::every_acknowledged_concurrent_write_should_be_readable($backend).await
            }
        }
    };
}

conformance_suite!(memory, MemoryBackend::new());
conformance_suite!(sled, SledBackend::new());
// Outside CI without etcd the etcd cases print a loud SKIP and return; under CI=true they fail.
conformance_suite!(
    etcd,
    match common::etcd_available(module_path!()) {
        true => EtcdBackend::new(),
        false => return,
    }
);

/// Cases that only make sense for a replicated engine (etcd only): a standby's follower store
/// keeps a read mirror through an etcd watch and publishes the holder's writes on its own
/// change feed — through writes of another holder, a cut watch stream, and a compaction during
/// the cut.
mod etcd_follow {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crd::Kind;
    use state::watch::{Change, ChangeType, Subscription};
    use state::{Config, EtcdEngine, EtcdFollower, Store, Transaction};

    use super::common::{compact_etcd, etcd_available, EtcdBackend, Proxy};
    use super::{App, Job};

    async fn holder(b: &EtcdBackend) -> Store {
        let engine = EtcdEngine::open(b.config()).unwrap();
        Store::with_engine(Arc::new(engine), Config::default())
            .await
            .unwrap()
    }

    async fn follower(config: state::etcd_engine::Config) -> (Store, Arc<EtcdFollower>) {
        let engine = Arc::new(EtcdFollower::open(config).await.unwrap());
        let store = Store::with_engine(engine.clone(), Config::default())
            .await
            .unwrap();
        (store, engine)
    }

    type Seen = (Kind, String, u64, ChangeType, u64);

    fn seen(c: Change) -> Seen {
        (c.kind, c.name, c.generation, c.change, c.resource_version)
    }

    /// Receives exactly `n` changes within 10 s, then checks nothing more arrives for 300 ms.
    async fn receive(feed: &mut Subscription, n: usize) -> Vec<Seen> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, feed.recv()).await {
                Ok(c) => got.push(seen(c.unwrap())),
                Err(_) => panic!("only {} of {n} changes within 10 s: {got:?}", got.len()),
            }
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await;
        assert!(extra.is_err(), "a change too many: {extra:?} after {got:?}");
        got
    }

    fn drain(feed: &mut Subscription) -> Vec<Seen> {
        std::iter::from_fn(|| feed.try_recv().unwrap())
            .map(seen)
            .collect()
    }

    async fn wait_revision(store: &Store, revision: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.revision() < revision {
            assert!(
                Instant::now() < deadline,
                "revision {} < {revision}",
                store.revision()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn same_objects(a: &Store, b: &Store) {
        assert_eq!(
            a.list::<App>().unwrap().items,
            b.list::<App>().unwrap().items
        );
        assert_eq!(
            a.list::<Job>().unwrap().items,
            b.list::<Job>().unwrap().items
        );
    }

    #[tokio::test]
    async fn a_follower_should_publish_the_writes_of_another_holder() {
        if !etcd_available(module_path!()) {
            return;
        }
        let b = EtcdBackend::new();
        let leader = holder(&b).await;
        let before = leader.create(&App::new("old", "1")).await.unwrap();
        let (standby, _engine) = follower(b.config()).await;
        assert_eq!(standby.get::<App>("old").unwrap(), before);
        assert_eq!(standby.revision(), leader.revision());
        let mut mine = leader.subscribe();
        let mut theirs = standby.subscribe();

        let a = leader.create(&App::new("web", "1")).await.unwrap();
        let j = leader.create(&Job::new("r1", 0)).await.unwrap();
        let mut edit = a.clone();
        edit.spec.version = "2".into();
        let a2 = leader.update(&edit).await.unwrap();
        let mut labelled = a2.clone();
        labelled.metadata.labels.insert("team".into(), "x".into());
        leader.update(&labelled).await.unwrap();
        let mut s = j.clone();
        s.status.done = true;
        leader.update_status(&s).await.unwrap();
        leader.delete::<App>("old", None).await.unwrap();
        let mut txn: Transaction = leader.transaction();
        txn.create(&Job::new("r2", 0));
        txn.delete::<App>("web", None);
        txn.commit().await.unwrap();
        leader
            .append_history(state::history::NewEntry::new("Tested", "not a change"))
            .await
            .unwrap();

        let expected = drain(&mut mine);
        assert_eq!(expected.len(), 8, "{expected:?}");
        let got = receive(&mut theirs, expected.len()).await;
        assert_eq!(got, expected, "the standby's feed is the holder's");
        wait_revision(&standby, leader.revision()).await;
        same_objects(&leader, &standby);
        assert_eq!(
            standby
                .history(&state::history::Query::newest(5))
                .unwrap()
                .len(),
            1
        );
        // The follower never writes.
        let refused = standby.create(&App::new("nope", "1")).await.unwrap_err();
        assert!(refused.to_string().contains("read-only"), "{refused}");
        assert!(leader.get_opt::<App>("nope").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_follower_should_resume_after_its_watch_stream_is_cut() {
        if !etcd_available(module_path!()) {
            return;
        }
        let b = EtcdBackend::new();
        let leader = holder(&b).await;
        let proxy = Proxy::start().await;
        let (standby, engine) = follower(proxy.route(b.config())).await;
        let mut mine = leader.subscribe();
        let mut theirs = standby.subscribe();
        leader.create(&Job::new("before", 0)).await.unwrap();
        receive(&mut theirs, 1).await;

        proxy.cut();
        mine.recv().await.unwrap(); // "before", seen by both
        for i in 0..5 {
            let job = leader
                .create(&Job::new(&format!("cut{i}"), i))
                .await
                .unwrap();
            let mut done = job.clone();
            done.status.done = true;
            leader.update_status(&done).await.unwrap();
        }
        leader.delete::<Job>("before", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            theirs.try_recv().unwrap().is_none(),
            "nothing reaches a cut standby"
        );
        proxy.restore();
        let expected = drain(&mut mine);
        assert_eq!(expected.len(), 11);
        let got = receive(&mut theirs, expected.len()).await;
        assert_eq!(
            got, expected,
            "every change once, in order, after the resume"
        );
        assert!(engine.status().resumes >= 1, "{:?}", engine.status());
        assert_eq!(engine.status().reloads, 0);
        wait_revision(&standby, leader.revision()).await;
        same_objects(&leader, &standby);
    }

    #[tokio::test]
    async fn a_follower_should_reload_after_a_compaction_during_a_cut() {
        if !etcd_available(module_path!()) {
            return;
        }
        let b = EtcdBackend::new();
        let leader = holder(&b).await;
        leader.create(&App::new("gone", "1")).await.unwrap();
        leader.create(&App::new("kept", "1")).await.unwrap();
        let status_only = leader.create(&Job::new("s", 0)).await.unwrap();
        let proxy = Proxy::start().await;
        let (standby, engine) = follower(proxy.route(b.config())).await;
        let mut theirs = standby.subscribe();

        proxy.cut();
        let c1 = leader.create(&App::new("c1", "1")).await.unwrap();
        let mut edit = c1.clone();
        edit.spec.version = "2".into();
        let c1 = leader.update(&edit).await.unwrap();
        let mut edit = c1.clone();
        edit.spec.version = "3".into();
        let c1 = leader.update(&edit).await.unwrap();
        leader.delete::<App>("gone", None).await.unwrap();
        let mut s = status_only.clone();
        s.status.done = true;
        let s = leader.update_status(&s).await.unwrap();
        let c2 = leader.create(&App::new("c2", "1")).await.unwrap();
        let compacted = compact_etcd();
        assert!(compacted >= 0);
        proxy.restore();

        // One change per object that differs, with its latest state; "kept" has none.
        let mut got = receive(&mut theirs, 4).await;
        got.sort_by(|a, b| a.1.cmp(&b.1));
        let names: Vec<(&str, ChangeType, u64)> = got
            .iter()
            .map(|(_, n, g, c, _)| (n.as_str(), *c, *g))
            .collect();
        assert_eq!(
            names,
            [
                ("c1", ChangeType::Created, 3),
                ("c2", ChangeType::Created, 1),
                ("gone", ChangeType::Deleted, 1),
                ("s", ChangeType::StatusUpdated, 1),
            ]
        );
        let rv = |name: &str| got.iter().find(|g| g.1 == name).unwrap().4;
        assert_eq!(rv("c1"), c1.metadata.resource_version);
        assert_eq!(rv("c2"), c2.metadata.resource_version);
        assert_eq!(rv("s"), s.metadata.resource_version);
        assert!(engine.status().reloads >= 1, "{:?}", engine.status());
        wait_revision(&standby, leader.revision()).await;
        same_objects(&leader, &standby);

        // And it follows on from there.
        leader.create(&Job::new("after", 1)).await.unwrap();
        let after = receive(&mut theirs, 1).await;
        assert_eq!(
            (after[0].1.as_str(), after[0].3),
            ("after", ChangeType::Created)
        );
    }
}

/// Compile-time check: store futures can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn store_futures_are_send(store: state::Store, app: App, job: Job) {
    fn is_send<T: Send>(_: T) {}
    is_send(store.create(&app));
    is_send(store.update(&job));
    is_send(store.update_status(&job));
    is_send(store.delete::<App>("x", None));
    is_send(store.append_history(state::history::NewEntry::new("A", "b")));
    is_send(store.maintenance());
    is_send(store.changed(crd::Kind::Run, 0));
}

#[allow(dead_code)]
fn backends_are_usable_as_trait_objects(_: &dyn Backend) {}
