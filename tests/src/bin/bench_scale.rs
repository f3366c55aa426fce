//! Benchmark: a full resync at 100, 1,000 and 10,000 warm apps on the simulated swarm, and the memory and disk of a store with 10,000 runs and 1,000 warm apps.
//!
//! Run in release mode (see `BENCHMARKS.md`, "Resync at scale"):
//!
//! ```text
//! cargo build --release -p hearth-tests --bin bench_scale
//! target/release/bench_scale [--runs N] [--sizes 100,1000,10000]
//! ```
//!
//! Each part runs in a child process of its own (the binary re-runs itself with `--part`), so
//! the peak RSS (`VmHWM`) of one part is not inflated by another.
//!
//! - **resync N**: a world of N converged warm apps (`hearth_tests::scale`, recipes rendered
//!   by the directory catalogue as `hearth serve` does), a controller running; `--runs`
//!   passes started with `Handle::resync_now`, each timed until every app was reconciled and
//!   nothing runs or waits; Docker API calls and writes counted by the simulated swarm. Then
//!   the observation alone: one listing of every stack (what a pass now costs) against one
//!   listing per stack (what each reconcile made before, 7 calls per app), `--runs` times each.
//! - **state**: 1,000 warm apps and 10,000 finished runs written to a sled store (64
//!   concurrent writers); bytes on disk; the store closed, reopened and listed `--runs` times;
//!   RSS after writing and after reopening and listing.

use std::process::Command;
use std::time::{Duration, Instant};

use controller::stack::{self, Depth};
use controller::swarm::LabelFilter;
use hearth_tests::scale::{self, Renders};
use state::Store;

/// The allocator `hearth` runs on (controller/src/main.rs), so a pass here allocates as it
/// does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Settings {
    runs: usize,
    sizes: Vec<usize>,
    part: Option<String>,
}

fn settings() -> Result<Settings, BoxError> {
    let mut s = Settings {
        runs: 5,
        sizes: vec![100, 1_000, 10_000],
        part: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => s.runs = value()?.parse()?,
            "--sizes" => {
                s.sizes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--part" => s.part = Some(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if s.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if s.runs < 5 {
        eprintln!("--runs {}: a smoke run; medians need at least 5", s.runs);
    }
    Ok(s)
}

/// `VmHWM` and `VmRSS` of this process, in MiB.
fn rss() -> Result<(f64, f64), BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<f64, BoxError> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or(format!("{name} missing in /proc/self/status"))?;
        let kib: f64 = line.split_whitespace().nth(1).ok_or("no value")?.parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time (user + system, every thread) this process has used, in seconds: a pass's CPU
/// depends less on what else runs on the machine than its wall time does.
fn cpu_secs() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at its closing ')'.
    let after = stat.rsplit_once(')').ok_or("no ')' in /proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .ok_or("short /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    // USER_HZ is 100 on Linux (`getconf CLK_TCK`).
    Ok(ticks / 100.0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Median and min–max of `xs`.
fn summary(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn fmt_ms(xs: &[f64]) -> String {
    let (m, lo, hi) = summary(xs);
    format!("{:.1} ms ({:.1}–{:.1})", m * 1e3, lo * 1e3, hi * 1e3)
}

/// One world of `n` apps: passes and observation costs. Prints one `RESULT` line (key=value).
async fn part_resync(n: usize, runs: usize) -> Result<(), BoxError> {
    let built = Instant::now();
    let world = scale::world(n, Store::in_memory().await?, Renders::Catalogue).await?;
    let build = built.elapsed();
    if !world.all_ready()? {
        return Err("not every app is Ready after the first pass".into());
    }
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut calls = Vec::new();
    let (mut renders, mut store_writes) = (0, 0);
    for _ in 0..runs {
        let cpu_before = cpu_secs()?;
        let pass = world.pass().await?;
        cpu.push(cpu_secs()? - cpu_before);
        // Unchanged warm apps: every app reconciled, nothing rendered, nothing written (to
        // Docker or to the store).
        if pass.reconciles != n as u64
            || pass.writes != 0
            || pass.renders != 0
            || pass.store_writes != 0
        {
            return Err(format!("unexpected pass at {n}: {pass:?}").into());
        }
        renders += pass.renders;
        store_writes += pass.store_writes;
        eprintln!("  resync {n}: {pass:?}");
        times.push(secs(pass.elapsed));
        calls.push(pass.calls);
    }
    let swarm = world.swarm.clone();
    // The observation alone: every stack at once against each stack on its own.
    let mut snapshot = Vec::new();
    let mut per_stack = Vec::new();
    let mut per_stack_calls = 0;
    let names: Vec<String> = (0..n)
        .map(|i| format!("hw-{}", scale::app_name(i)))
        .collect();
    for _ in 0..runs {
        swarm.clear_calls();
        let t = Instant::now();
        let all = stack::observe_all(swarm.as_ref(), &LabelFilter::all(), Depth::WithTasks).await?;
        snapshot.push(secs(t.elapsed()));
        if all.len() != n {
            return Err(format!("{} stacks observed, {n} expected", all.len()).into());
        }
        swarm.clear_calls();
        let t = Instant::now();
        for ns in &names {
            stack::observe(swarm.as_ref(), ns, Depth::WithTasks).await?;
        }
        per_stack.push(secs(t.elapsed()));
        per_stack_calls = swarm.call_count();
    }
    let (hwm, now) = rss()?;
    world.stop().await;
    let (pm, plo, phi) = summary(&times);
    let (cm, clo, chi) = summary(&cpu);
    let (sm, _, _) = summary(&snapshot);
    let (om, _, _) = summary(&per_stack);
    println!(
        "RESULT part=resync n={n} build_s={:.1} pass_ms={:.1} pass_min_ms={:.1} pass_max_ms={:.1} \
         pass_cpu_ms={:.0} pass_cpu_min_ms={:.0} pass_cpu_max_ms={:.0} \
         calls={} calls_all_equal={} renders={renders} store_writes={store_writes} snapshot={} \
         per_stack={} per_stack_calls={per_stack_calls} \
         ratio={:.4} hwm_mib={hwm:.0} rss_mib={now:.0}",
        secs(build),
        pm * 1e3,
        plo * 1e3,
        phi * 1e3,
        cm * 1e3,
        clo * 1e3,
        chi * 1e3,
        calls[0],
        calls.iter().all(|c| *c == calls[0]),
        fmt_ms(&snapshot).replace(' ', "_"),
        fmt_ms(&per_stack).replace(' ', "_"),
        sm / om,
    );
    Ok(())
}

fn finished_run(i: usize) -> Result<crd::Run, BoxError> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": format!("web-{i:010}")},
        "spec": {"recipe": "web", "version": "1.0.0", "ref": "0123456789abcdef", "slotPool": "ci",
                 "owner": {"pid": 4242, "processStartTime": 777, "host": "ci-host-1",
                           "bootId": "6c1e2a8c-8d7e-4a0e-9f7d-0d6c1b6f4a11"},
                 "lease": {"ttl": "10m"}, "deps": ["db", "sso"],
                 "requiredTiers": ["install", "smoke", "custom"], "finish": true},
        "status": {"phase": "Succeeded", "stackName": format!("hr-web-{i:010}"),
                   "domain": format!("hr-web-{i:010}.hearth.test"),
                   "tiers": [{"name": "install", "result": "pass", "required": true},
                             {"name": "smoke", "result": "pass", "required": true},
                             {"name": "custom", "result": "pass", "required": true}]}
    }))?)
}

/// The store part: 1,000 warm apps + 10,000 runs in sled.
async fn part_state(runs: usize) -> Result<(), BoxError> {
    const APPS: usize = 1_000;
    const RUNS: usize = 10_000;
    const WRITERS: usize = 64;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let (hwm0, rss0) = rss()?;
    let store = Store::open(&dir).await?;
    let t = Instant::now();
    for i in 0..APPS {
        let app = scale::warm_app(&scale::app_name(i))?;
        store.create(&app).await?;
    }
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let mut i = w;
            while i < RUNS {
                let mut run = finished_run(i)?;
                run = store.create(&run).await?;
                let mut done = finished_run(i)?;
                done.metadata = run.metadata.clone();
                store.update_status(&done).await?;
                i += WRITERS;
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let write = t.elapsed();
    let (hwm_written, rss_written) = rss()?;
    drop(store);
    let disk = dir_size(&dir)?;
    let mut opens = Vec::new();
    let mut lists = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let store = Store::open(&dir).await?;
        opens.push(secs(t.elapsed()));
        let t = Instant::now();
        let r = store.list::<crd::Run>()?.items.len();
        let a = store.list::<crd::WarmApp>()?.items.len();
        lists.push(secs(t.elapsed()));
        if (r, a) != (RUNS, APPS) {
            return Err(format!("listed {r} runs, {a} apps").into());
        }
        drop(store);
    }
    let (hwm, rss_end) = rss()?;
    println!(
        "RESULT part=state write_s={:.1} disk_mib={:.1} open={} list={} \
         rss_start_mib={rss0:.0} hwm_start_mib={hwm0:.0} rss_written_mib={rss_written:.0} \
         hwm_written_mib={hwm_written:.0} rss_end_mib={rss_end:.0} hwm_end_mib={hwm:.0}",
        secs(write),
        disk as f64 / (1024.0 * 1024.0),
        fmt_ms(&opens).replace(' ', "_"),
        fmt_ms(&lists).replace(' ', "_"),
    );
    Ok(())
}

fn dir_size(dir: &std::path::Path) -> Result<u64, BoxError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn child(args: &[String]) -> Result<String, BoxError> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let stdout = String::from_utf8(out.stdout)?;
    stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .map(str::to_string)
        .ok_or_else(|| "no RESULT line".into())
}

fn main() -> Result<(), BoxError> {
    let s = settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match s.part.as_deref() {
        Some("state") => return runtime.block_on(part_state(s.runs)),
        Some(n) => return runtime.block_on(part_resync(n.parse()?, s.runs)),
        None => {}
    }
    let load_before = std::fs::read_to_string("/proc/loadavg")?;
    let t = Instant::now();
    let runs = s.runs.to_string();
    for n in &s.sizes {
        eprintln!("resync at {n} warm apps…");
        let line = child(&[
            "--part".into(),
            n.to_string(),
            "--runs".into(),
            runs.clone(),
        ])?;
        println!("{line}");
    }
    eprintln!("store with 10,000 runs and 1,000 warm apps…");
    println!(
        "{}",
        child(&["--part".into(), "state".into(), "--runs".into(), runs])?
    );
    let load_after = std::fs::read_to_string("/proc/loadavg")?;
    println!(
        "runs: {}; took {:.0} s; /proc/loadavg before: {}; after: {}",
        s.runs,
        t.elapsed().as_secs_f64(),
        load_before.trim(),
        load_after.trim()
    );
    Ok(())
}
