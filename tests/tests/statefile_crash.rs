//! A state-file apply is one transaction (issue 14, item 6): the real `hearth apply`, applying
//! a valid file that changes many objects to its data directory, is SIGKILLed at varied
//! moments; the store then holds exactly the old or exactly the new desired state — every
//! object, and the `Applied` history entry with it — never a mix.
//!
//! No daemon and no Docker: with nobody listening on `--server`, `hearth apply` applies to
//! `--data-dir` itself (the path an operator takes with the daemon stopped). The daemon's
//! `POST /api/v1/apply` calls the same `statefile::apply`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crd::{DepProvider, SlotPool, WarmApp};
use hearth_tests::process::free_addr;
use hearth_tests::support::hearth_bin;
use rand::{Rng, SeedableRng};
use state::history::Query;
use state::Store;

/// SIGKILLed applies checked.
const ITERATIONS: usize = 24;

/// Objects of one generation: warm apps `w<i>` and slot pools `p<i>` for `i` in `range`, each
/// carrying the generation in its spec (env `GEN` / the slot count).
fn generation(name: &str, range: std::ops::Range<u32>) -> String {
    let (version, slots) = if name == "old" {
        ("1.0.0", 2)
    } else {
        ("1.1.0", 3)
    };
    let mut text = String::new();
    for i in range {
        text.push_str(&format!(
            "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: w{i}\nspec:\n  recipe: webapp\n  \
             version: {version}\n  env:\n    GEN: {name}\n---\n\
             apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: p{i}\nspec:\n  slots: {slots}\n  \
             portBase: {}\n---\n",
            20000 + i * 100
        ));
    }
    text
}

/// What the store holds: `kind/name` → generation marker.
fn observe(store: &Store) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for w in store.list::<WarmApp>().unwrap().items {
        let generation = w.spec.env.get("GEN").cloned().unwrap_or_default();
        out.insert(format!("WarmApp/{}", w.metadata.name), generation);
    }
    for p in store.list::<SlotPool>().unwrap().items {
        let generation = match p.spec.slots {
            2 => "old".to_string(),
            3 => "new".to_string(),
            n => format!("slots {n}"),
        };
        out.insert(format!("SlotPool/{}", p.metadata.name), generation);
    }
    assert!(store.list::<DepProvider>().unwrap().items.is_empty());
    out
}

/// What the store must hold after applying generation `name` over `range`.
fn expected(name: &str, range: std::ops::Range<u32>) -> BTreeMap<String, String> {
    range
        .flat_map(|i| {
            [
                (format!("WarmApp/w{i}"), name.to_string()),
                (format!("SlotPool/p{i}"), name.to_string()),
            ]
        })
        .collect()
}

/// `hearth apply -f <file> --prune` against `data` (nobody listens on `--server`).
fn apply_command(file: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(hearth_bin());
    cmd.arg("apply")
        .arg("-f")
        .arg(file)
        .arg("--prune")
        .arg("--server")
        .arg(free_addr().to_string())
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The number of `Applied` history entries and the file named by the newest.
fn applied(store: &Store) -> (usize, Option<String>) {
    let entries = store
        .history(&Query::newest(10_000).reason(controller::statefile::APPLIED))
        .unwrap();
    let newest = entries.first().map(|e| {
        e.details
            .get("file")
            .and_then(|f| f.as_str())
            .unwrap_or_default()
            .to_string()
    });
    (entries.len(), newest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_state_file_apply_leaves_the_old_or_the_new_desired_state_never_a_mix() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // old: w0..w39, p0..p39. new: 0..29 updated, 30..39 deleted, 40..59 created.
    let old_file = work.path().join("old.yml");
    let new_file = work.path().join("new.yml");
    std::fs::write(&old_file, generation("old", 0..40)).unwrap();
    std::fs::write(
        &new_file,
        generation("new", 0..30) + &generation("new", 40..60),
    )
    .unwrap();
    let old = expected("old", 0..40);
    let new = {
        let mut m = expected("new", 0..30);
        m.extend(expected("new", 40..60));
        m
    };
    let file_name = |p: &Path| p.display().to_string();

    // The starting point, and how long an unkilled apply takes (the kills land within it).
    let status = apply_command(&old_file, &data).status().unwrap();
    assert!(status.success());
    // The slowest of three unkilled applies (new, old, new): one sample taken while the
    // machine was briefly quiet put every kill before the commit once (0 landed / 24 cut off).
    let mut full = Duration::ZERO;
    for file in [&new_file, &old_file, &new_file] {
        let started = Instant::now();
        let status = apply_command(file, &data).status().unwrap();
        assert!(status.success());
        full = full.max(started.elapsed());
    }
    let store = Store::open(&data).await.unwrap();
    assert_eq!(observe(&store), new, "an unkilled apply lands whole");
    drop(store);

    let seed: u64 = rand::random();
    println!("seed {seed}; an unkilled apply takes {full:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut now_new, mut landed, mut cut_off, mut finished) = (true, 0, 0, 0);
    let test_started = Instant::now();
    // At least ITERATIONS kills; more (up to 3×) while the kills have not yet landed on both
    // sides of the commit.
    let mut iterations = 0;
    for iteration in 0..3 * ITERATIONS {
        if iteration >= ITERATIONS && landed > 0 && cut_off > 0 {
            break;
        }
        iterations += 1;
        let (target, target_file, previous) = if now_new {
            (&old, &old_file, &new)
        } else {
            (&new, &new_file, &old)
        };
        let store = Store::open(&data).await.unwrap();
        let (applied_before, _) = applied(&store);
        drop(store);
        let mut child = apply_command(target_file, &data).spawn().unwrap();
        // Kill points spread over the whole run: process start, store open, read, diff,
        // commit, flush, exit.
        let wait = full.mul_f64(rng.random_range(0.0..1.1));
        std::thread::sleep(wait);
        let exited = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if exited {
            finished += 1;
        }

        let store = Store::open(&data).await.unwrap();
        let state = observe(&store);
        let (applied_after, newest) = applied(&store);
        if &state == target {
            landed += 1;
            assert_eq!(
                (applied_after, newest),
                (applied_before + 1, Some(file_name(target_file))),
                "iteration {iteration}: the new state is in force, so its Applied entry is there"
            );
            now_new = !now_new;
        } else if &state == previous {
            cut_off += 1;
            assert_eq!(
                applied_after, applied_before,
                "iteration {iteration}: the old state is in force, so no Applied entry was added"
            );
        } else {
            let mut mixed: Vec<String> = state
                .iter()
                .filter(|(k, v)| target.get(*k) != Some(v) && previous.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            mixed.extend(
                target
                    .keys()
                    .chain(previous.keys())
                    .filter(|k| !state.contains_key(*k))
                    .map(|k| format!("{k} missing")),
            );
            mixed.truncate(10);
            let of_target = state
                .iter()
                .filter(|(k, v)| target.get(*k) == Some(v))
                .count();
            panic!(
                "iteration {iteration} (seed {seed}, killed after {wait:?}): a mix of old and new — \
                 {of_target} of {} objects as in {}, e.g. {mixed:?}",
                state.len(),
                file_name(target_file)
            );
        }
    }
    println!(
        "MEASURE statefile_crash iterations={iterations} landed_whole={landed} \
         cut_off_whole={cut_off} exited_before_the_kill={finished} mixed=0 \
         unkilled_apply_ms={} test_s={:.1}",
        full.as_millis(),
        test_started.elapsed().as_secs_f64()
    );
    assert!(
        landed > 0 && cut_off > 0,
        "the kills should land both before and after the commit ({landed} / {cut_off})"
    );
}
