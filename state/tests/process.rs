//! Cross-process guarantees of the sled store: acknowledged writes survive SIGKILL, and a
//! second process is told which pid holds the data directory.
//!
//! Both tests re-execute this test binary as a child (selected by an environment variable),
//! so they work under `cargo test` and under nextest alike.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::App;
use rand::Rng;
use state::history::{NewEntry, ObjectRef, Query};
use state::Store;

const CHILD_WRITER_DIR: &str = "HEARTH_STATE_TEST_WRITER_DIR";
const CHILD_WRITER_START: &str = "HEARTH_STATE_TEST_WRITER_START";
const CHILD_HOLDER_DIR: &str = "HEARTH_STATE_TEST_HOLDER_DIR";
const ITERATIONS: usize = 25;
/// A child stops by itself after this long, so a crashed parent never leaves it running.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// Re-runs test `name` of this binary in a child process with `env` set.
fn spawn_child(name: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Forwards the child's stdout lines to a channel (ends when the child's stdout closes).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn sigkill(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
}

// ----- the workload and its model ----------------------------------------------------------

/// Operation `i` (1-based) of the deterministic workload; each is exactly one store write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkOp {
    Create {
        name: String,
        version: String,
    },
    UpdateSpec {
        name: String,
        version: String,
    },
    UpdateStatus {
        name: String,
        phase: String,
    },
    Delete {
        name: String,
    },
    History {
        message: String,
        subject: String,
    },
    /// One atomic transaction: create `create`, set the status of `name` to `phase`, and
    /// append the history entry `<create> committed` (objects and history in one batch).
    Transaction {
        create: String,
        name: String,
        phase: String,
    },
}

fn name_of(i: u64) -> String {
    format!("app-{i}")
}

fn work_op(i: u64) -> WorkOp {
    match i % 5 {
        1 => WorkOp::Create {
            name: name_of(i),
            version: format!("v{i}"),
        },
        2 => WorkOp::UpdateSpec {
            name: name_of(i - 1),
            version: format!("u{i}"),
        },
        3 => WorkOp::UpdateStatus {
            name: name_of(i - 2),
            phase: format!("s{i}"),
        },
        4 if i % 10 == 4 => WorkOp::Delete {
            name: name_of(i - 3),
        },
        0 if i.is_multiple_of(10) => WorkOp::Transaction {
            create: format!("tx-{i}"),
            name: name_of(i - 4),
            phase: format!("t{i}"),
        },
        _ => WorkOp::History {
            message: format!("op {i}"),
            subject: name_of(i - (i % 5) + 1),
        },
    }
}

/// What the store must hold after operations `1..=n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    /// name -> (spec version, status phase)
    apps: BTreeMap<String, (String, String)>,
    history: BTreeSet<String>,
}

fn model(n: u64) -> Model {
    let mut m = Model::default();
    for i in 1..=n {
        match work_op(i) {
            WorkOp::Create { name, version } => {
                m.apps.insert(name, (version, String::new()));
            }
            WorkOp::UpdateSpec { name, version } => {
                if let Some(app) = m.apps.get_mut(&name) {
                    app.0 = version;
                }
            }
            WorkOp::UpdateStatus { name, phase } => {
                if let Some(app) = m.apps.get_mut(&name) {
                    app.1 = phase;
                }
            }
            WorkOp::Delete { name } => {
                m.apps.remove(&name);
            }
            WorkOp::History { message, .. } => {
                m.history.insert(message);
            }
            WorkOp::Transaction {
                create,
                name,
                phase,
            } => {
                m.history.insert(format!("{create} committed"));
                m.apps.insert(create, (String::new(), String::new()));
                if let Some(app) = m.apps.get_mut(&name) {
                    app.1 = phase;
                }
            }
        }
    }
    m
}

async fn observe(store: &Store) -> Model {
    let apps = store
        .list::<App>()
        .unwrap()
        .items
        .into_iter()
        .map(|a| (a.metadata.name, (a.spec.version, a.status.phase)))
        .collect();
    let history = store
        .history(&Query::newest(usize::MAX))
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    Model { apps, history }
}

/// Child: performs operations from `start + 1` on, printing `ACK <i> <revision-or-seq>` only
/// after each store call returned.
async fn run_writer(dir: &Path, start: u64) {
    let store = Store::open(dir).await.unwrap();
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut i = start;
    while Instant::now() < deadline {
        i += 1;
        let stamp = match work_op(i) {
            WorkOp::Create { name, version } => {
                let app = store.create(&App::new(&name, &version)).await.unwrap();
                app.metadata.resource_version
            }
            WorkOp::UpdateSpec { name, version } => {
                let mut app = store.get::<App>(&name).unwrap();
                app.spec.version = version;
                store.update(&app).await.unwrap().metadata.resource_version
            }
            WorkOp::UpdateStatus { name, phase } => {
                let mut app = store.get::<App>(&name).unwrap();
                app.status.phase = phase;
                store
                    .update_status(&app)
                    .await
                    .unwrap()
                    .metadata
                    .resource_version
            }
            WorkOp::Delete { name } => {
                store.delete::<App>(&name, None).await.unwrap();
                store.revision()
            }
            WorkOp::History { message, subject } => {
                let entry = NewEntry::new("Tested", message)
                    .subject(ObjectRef::new(crd::Kind::WarmApp, subject));
                store.append_history(entry).await.unwrap().seq
            }
            WorkOp::Transaction {
                create,
                name,
                phase,
            } => {
                let mut app = store.get::<App>(&name).unwrap();
                app.status.phase = phase;
                let mut tx = store.transaction();
                tx.create(&App::new(&create, ""))
                    .update_status(&app)
                    .append_history(NewEntry::new("Tested", format!("{create} committed")));
                let changes = tx.commit().await.unwrap();
                assert_eq!(changes.len(), 2);
                changes[1].resource_version
            }
        };
        println!("ACK {i} {stamp}");
    }
}

/// `(op, stamp)` from an `ACK <op> <stamp>` line (libtest may prefix the first line).
fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let at = line.find("ACK ")?;
    let mut parts = line.get(at + 4..)?.split_whitespace();
    let i = parts.next()?.parse().ok()?;
    let stamp = parts.next()?.parse().ok()?;
    Some((i, stamp))
}

#[test]
fn acknowledged_writes_should_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_WRITER_DIR) {
        let start = std::env::var(CHILD_WRITER_START).unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_writer(Path::new(&dir), start));
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    // The state index the data directory is known to be at.
    let mut at: u64 = 0;
    let mut last_stamp: BTreeMap<bool, u64> = BTreeMap::new();
    let mut total_acks = 0;
    let mut tx_count = 0u64;
    let started = Instant::now();
    for iteration in 0..ITERATIONS {
        let mut child = spawn_child(
            "acknowledged_writes_should_survive_sigkill",
            &[
                (CHILD_WRITER_DIR, dir.display().to_string()),
                (CHILD_WRITER_START, at.to_string()),
            ],
        );
        let lines = lines_of(&mut child);
        let mut acked: Vec<(u64, u64)> = Vec::new();
        // Kill at a random point: mostly after a random number of acknowledgements (plus a
        // random delay so the kill lands inside a write or flush), sometimes by time alone
        // (possibly while the store is still opening).
        if rng.random_bool(0.2) {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..60)));
        } else {
            let wanted = rng.random_range(1..80);
            while acked.len() < wanted {
                let line = lines
                    .recv_timeout(Duration::from_secs(30))
                    .expect("child acknowledges writes");
                acked.extend(parse_ack(&line));
            }
            std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        }
        sigkill(&child);
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");

        // Every line printed before death is an acknowledgement (including the ones above).
        let mut last_acked = at;
        let mut acks = 0;
        acked.extend(lines.iter().filter_map(|line| parse_ack(&line)));
        for (i, stamp) in acked {
            assert_eq!(i, last_acked + 1, "acks are sequential");
            last_acked = i;
            acks += 1;
            // Revisions (objects) and sequence numbers (history) only grow, across crashes.
            let is_history = matches!(work_op(i), WorkOp::History { .. });
            tx_count += u64::from(matches!(work_op(i), WorkOp::Transaction { .. }));
            let last = last_stamp.entry(is_history).or_insert(0);
            assert!(stamp > *last, "op {i}: stamp {stamp} after {last}");
            *last = stamp;
        }
        total_acks += acks;

        // Reopen and compare with the model: all acknowledged operations are there; the one
        // in flight may or may not be.
        let observed = rt.block_on(async {
            let store = Store::open(&dir).await.unwrap();
            observe(&store).await
        });
        at =
            if observed == model(last_acked) {
                last_acked
            } else if observed == model(last_acked + 1) {
                last_acked + 1
            } else {
                let want = model(last_acked);
                panic!(
                "iteration {iteration}: after {last_acked} acknowledged ops the store lost data\n\
                 missing apps: {:?}\nmissing history: {:?}",
                want.apps
                    .iter()
                    .filter(|(k, v)| observed.apps.get(*k) != Some(v))
                    .collect::<Vec<_>>(),
                want.history.difference(&observed.history).collect::<Vec<_>>()
            );
            };
    }
    eprintln!(
        "{ITERATIONS} SIGKILLs, {total_acks} acknowledged writes ({tx_count} transactions) \
         verified, final op {at}, {:?}",
        started.elapsed()
    );
    assert!(total_acks > ITERATIONS as u64, "the children made progress");
}

const CHILD_GROUP_DIR: &str = "HEARTH_STATE_TEST_GROUP_DIR";
const GROUP_WRITERS: u64 = 8;
const GROUP_ITERATIONS: usize = 20;

/// Per writer, the objects `g<w>-<k>` present: `k` runs without gaps from 0 to the returned
/// count (exclusive).
fn group_progress(store: &Store) -> BTreeMap<u64, u64> {
    let mut seen: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for app in store.list::<App>().unwrap().items {
        let (w, k) = app.metadata.name[1..].split_once('-').unwrap();
        seen.entry(w.parse().unwrap())
            .or_default()
            .insert(k.parse().unwrap());
    }
    seen.into_iter()
        .map(|(w, ks)| {
            let n = u64::try_from(ks.len()).unwrap();
            assert_eq!(
                ks.iter().next_back().map_or(0, |k| k + 1),
                n,
                "writer {w}: gap in {ks:?}"
            );
            (w, n)
        })
        .collect()
}

/// Child: `GROUP_WRITERS` concurrent writers (sharing flushes), each creating its next objects
/// and printing `ACK <writer> <k>` after each create returned.
async fn run_group_writers(dir: &Path) {
    let store = Store::open(dir).await.unwrap();
    let progress = group_progress(&store);
    let deadline = Instant::now() + CHILD_LIFETIME;
    let tasks: Vec<_> = (0..GROUP_WRITERS)
        .map(|w| {
            let store = store.clone();
            let mut k = progress.get(&w).copied().unwrap_or(0);
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    store
                        .create(&App::new(&format!("g{w}-{k}"), "v"))
                        .await
                        .unwrap();
                    println!("ACK {w} {k}");
                    k += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn acknowledged_concurrent_writes_should_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_GROUP_DIR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_group_writers(Path::new(&dir)));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0;
    for iteration in 0..GROUP_ITERATIONS {
        let mut child = spawn_child(
            "acknowledged_concurrent_writes_should_survive_sigkill",
            &[(CHILD_GROUP_DIR, dir.display().to_string())],
        );
        let lines = lines_of(&mut child);
        let mut record = |line: &str| {
            if let Some((w, k)) = parse_ack(line) {
                let next = acked.entry(w).or_insert(0);
                *next = (*next).max(k + 1);
                total += 1;
            }
        };
        let wanted = rng.random_range(1..200);
        let mut seen = 0;
        while seen < wanted {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("child acknowledges writes");
            seen += usize::from(parse_ack(&line).is_some());
            record(&line);
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        sigkill(&child);
        child.wait().unwrap();
        for line in lines.iter() {
            record(&line);
        }
        let present = rt.block_on(async { group_progress(&Store::open(&dir).await.unwrap()) });
        for (w, n) in &acked {
            let have = present.get(w).copied().unwrap_or(0);
            // Every acknowledged create is there; at most the one in flight besides.
            assert!(
                have >= *n && have <= n + 1,
                "iteration {iteration}: writer {w} acknowledged {n} creates, store has {have}"
            );
        }
        // Continue from what is there (an unacknowledged but durable create counts).
        acked = present;
    }
    eprintln!("{GROUP_ITERATIONS} SIGKILLs, {total} acknowledged concurrent creates verified");
}

#[test]
fn a_second_process_should_be_told_which_pid_holds_the_directory() {
    if let Ok(dir) = std::env::var(CHILD_HOLDER_DIR) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let _store = Store::open(&dir).await.unwrap();
            println!("READY");
            tokio::time::sleep(CHILD_LIFETIME).await;
        });
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("data");
    let mut child = spawn_child(
        "a_second_process_should_be_told_which_pid_holds_the_directory",
        &[(CHILD_HOLDER_DIR, dir.display().to_string())],
    );
    let lines = lines_of(&mut child);
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("child opens the store");
        // libtest prints "test <name> ... " without a newline before the child's output.
        if line.ends_with("READY") {
            break;
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(Store::open(&dir)).unwrap_err();
    let expected = format!(
        "data directory {} is already in use by pid {}",
        dir.display(),
        child.id()
    );
    assert_eq!(err.to_string(), expected);
    assert!(matches!(
        err,
        state::Error::EngineFailed(state::engine::Error::DirectoryInUse { pid: Some(p), .. })
            if p == child.id()
    ));

    // The kernel releases the lock when the holder dies, even by SIGKILL.
    sigkill(&child);
    child.wait().unwrap();
    rt.block_on(Store::open(&dir)).unwrap();
}
