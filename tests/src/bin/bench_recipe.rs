//! Benchmark: fetch + render of a git recipe at a new tag, and a cached render (same inputs digest), against the git CLI + `docker stack config` doing the same by hand.
//!
//! Run once, in release mode, on the test bed (see `BENCHMARKS.md`, "Recipe fetch and render"):
//!
//! ```text
//! cargo build --release -p hearth-tests --bin bench_recipe
//! target/release/bench_recipe [--runs N] [--cached N] [--docker PATH]
//! ```
//!
//! Each run starts from a fresh copy of the test bed's fixture recipe repository
//! (`scripts/testbed.sh` step 4b: tags 1.0.0+1.0.0 and 1.1.0+1.1.0, an `.env.sample` whose
//! `COMPOSE_FILE` adds an overlay, `abra.sh` exports, a versioned secret and a config), which
//! hearth has fetched once (its mirror exists, as on a daemon that has been running) and the
//! peer has cloned once. Then a new tag `1.2.0+1.2.0` is committed upstream, and, untimed
//! otherwise, the following are timed:
//!
//! - **hearth fetch**: `Sources::fetch` — `git fetch` of the tags and the default branch into
//!   the bare mirror, the tag listing with commit times, the size check, the version order;
//! - **hearth render**: `Sources::render` of the new version — its tree written out of the
//!   mirror (`git checkout` into the tree cache), `.env.sample` + the app's env + `abra.sh`
//!   exports, the compose files `COMPOSE_FILE` names translated to a stack spec, labels and
//!   generated secrets;
//! - **hearth cached render**: the same render again, `--cached` times (default 1,000); the
//!   median call. The render cache's counters are printed before and after: every call is a
//!   hit, none renders;
//! - **peer fetch**: in the peer's clone, `git fetch --tags` then `git archive <tag> | tar -x`
//!   into a new directory (what a script does to get a tag's files);
//! - **peer render**: `bash` sourcing `.env.sample` with `set -a` (so `COMPOSE_FILE`
//!   accumulates as it does for abra), the `abra.sh` export lines, then `docker stack config`
//!   (the current CLI, `--docker`, default `/usr/local/bin/docker`: Debian's 20.10 has no
//!   `stack config`) of the files `COMPOSE_FILE` names — the merged, interpolated compose file.
//!
//! The peer has no render cache: its every render is a full one, so the cached render is
//! compared with the peer's render only to show what the cache saves. hearth and the peer
//! alternate which goes first. Nothing here touches the swarm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use controller::catalogue::sources::Limits;
use controller::catalogue::{Catalogue, RenderRequest, Sources};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NEW_TAG: &str = "1.2.0+1.2.0";

struct Settings {
    runs: usize,
    cached: usize,
    docker: PathBuf,
    fixture: PathBuf,
}

fn settings() -> Result<Settings, BoxError> {
    let mut s = Settings {
        runs: 5,
        cached: 1000,
        docker: PathBuf::from("/usr/local/bin/docker"),
        fixture: std::env::var_os("HEARTH_FIXTURE_RECIPE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/hearth-testbed/webapp-recipe")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => s.runs = value()?.parse()?,
            "--cached" => s.cached = value()?.parse()?,
            "--docker" => s.docker = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if s.runs == 0 || s.cached == 0 {
        return Err("--runs and --cached must be at least 1".into());
    }
    if s.runs < 5 {
        eprintln!("--runs {}: a smoke run; medians need at least 5", s.runs);
    }
    if !s.fixture.join(".git").is_dir() {
        return Err(format!(
            "{} is not the fixture recipe repository: run scripts/testbed.sh",
            s.fixture.display()
        )
        .into());
    }
    Ok(s)
}

fn git(dir: &Path, args: &[&str]) -> Result<(), BoxError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@hearth.invalid",
            "-c",
            "commit.gpgSign=false",
            "-c",
            "tag.gpgSign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

fn timed(
    what: &str,
    script: &str,
    dir: &Path,
    envs: &[(&str, &str)],
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(took)
}

/// The peer's render: the env as bash and abra read it, then `docker stack config`.
const PEER_RENDER: &str = r#"set -euo pipefail
set -a
. ./.env.sample
eval "$(grep -E '^export [A-Za-z_][A-Za-z0-9_]*=' abra.sh)"
STACK_NAME=bench_recipe
DOMAIN=bench.hearth.test
set +a
args=()
IFS=: read -ra files <<<"${COMPOSE_FILE:-compose.yml}"
for f in "${files[@]}"; do args+=(-c "$f"); done
"$DOCKER" stack config "${args[@]}" >/dev/null
"#;

#[derive(Default)]
struct Figures {
    hearth_fetch: Vec<Duration>,
    hearth_render: Vec<Duration>,
    hearth_cached: Vec<Duration>,
    peer_fetch: Vec<Duration>,
    peer_render: Vec<Duration>,
}

async fn one_run(s: &Settings, i: usize, f: &mut Figures) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let upstream = tmp.path().join("upstream");
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(&s.fixture)
        .arg(&upstream)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let url = format!("file://{}", upstream.display());
    let peer = tmp.path().join("peer");
    git(tmp.path(), &["clone", "-q", &url, "peer"])?;

    let sources = Sources::new(tmp.path().join("data/recipes"), None, Limits::default());
    sources.declare(&[crd::Recipe::new(
        "webapp",
        crd::RecipeSpec {
            git: Some(crd::recipe::GitSource {
                url: url.clone(),
                ..Default::default()
            }),
            ..crd::RecipeSpec::default()
        },
    )]);
    sources.fetch("webapp").await?;

    // The new tag: the compose file pins a new image.
    let compose = std::fs::read_to_string(upstream.join("compose.yml"))?
        .replace("webapp:1.1.0", "webapp:2.0.0")
        .replace("version=1.1.0+1.1.0", &format!("version={NEW_TAG}"));
    std::fs::write(upstream.join("compose.yml"), compose)?;
    git(&upstream, &["commit", "-q", "-am", "publish 1.2.0"])?;
    git(&upstream, &["tag", NEW_TAG])?;

    let env = std::collections::BTreeMap::new();
    let request = RenderRequest {
        recipe: "webapp",
        version: NEW_TAG,
        stack: "bench_recipe",
        domain: "bench.hearth.test",
        env: &env,
    };
    let peer_side = |f: &mut Figures| -> Result<(), BoxError> {
        let files = tmp.path().join("peer-files");
        let took = timed(
            "peer fetch",
            &format!(
                "set -euo pipefail; git fetch -q --tags origin && mkdir '{0}' && git archive '{NEW_TAG}' | tar -x -C '{0}'",
                files.display()
            ),
            &peer,
            &[],
        )?;
        f.peer_fetch.push(took);
        let docker = s.docker.display().to_string();
        let took = timed("peer render", PEER_RENDER, &files, &[("DOCKER", &docker)])?;
        f.peer_render.push(took);
        Ok(())
    };
    if i.is_multiple_of(2) {
        hearth_side(s, &sources, &request, i, f).await?;
        peer_side(f)?;
    } else {
        peer_side(f)?;
        hearth_side(s, &sources, &request, i, f).await?;
    }
    eprintln!(
        "run {i}: hearth fetch {:?} render {:?} cached {:?}; peer fetch {:?} render {:?}",
        f.hearth_fetch.last(),
        f.hearth_render.last(),
        f.hearth_cached.last(),
        f.peer_fetch.last(),
        f.peer_render.last()
    );
    Ok(())
}

async fn hearth_side(
    s: &Settings,
    sources: &Sources,
    request: &RenderRequest<'_>,
    i: usize,
    f: &mut Figures,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let published = sources.fetch("webapp").await?;
    f.hearth_fetch.push(started.elapsed());
    if published.newest().map(|v| v.version.as_str()) != Some(NEW_TAG) {
        return Err("the fetch did not find the new tag".into());
    }
    let before = sources.stats();
    let started = Instant::now();
    let rendered = sources.render(request)?;
    f.hearth_render.push(started.elapsed());
    let after_first = sources.stats();
    if after_first.renders != before.renders + 1 {
        return Err("the first render at the new tag was not computed".into());
    }
    let mut calls = Vec::with_capacity(s.cached);
    for _ in 0..s.cached {
        let started = Instant::now();
        let again = sources.render(request)?;
        calls.push(started.elapsed());
        if again.digest != rendered.digest {
            return Err("a cached render changed".into());
        }
    }
    let after = sources.stats();
    eprintln!(
        "run {i}: render cache before the first render {before:?}, after it {after_first:?}, after {} more: {after:?}",
        s.cached
    );
    if after.renders != after_first.renders || after.hits != after_first.hits + s.cached as u64 {
        return Err("a render with the same inputs digest was computed again".into());
    }
    calls.sort();
    f.hearth_cached.push(calls[calls.len() / 2]);
    Ok(())
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn row(name: &str, v: &[Duration]) -> String {
    let ms = |d: &Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!(
        "| {name} | {} | {}–{} | {} |",
        ms(&median(v)),
        ms(&min),
        ms(&max),
        v.iter().map(ms).collect::<Vec<_>>().join(", ")
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let s = settings()?;
    let mut f = Figures::default();
    for i in 0..s.runs {
        one_run(&s, i, &mut f).await?;
    }
    let sum = |a: &[Duration], b: &[Duration]| -> Vec<Duration> {
        a.iter().zip(b).map(|(x, y)| *x + *y).collect()
    };
    let hearth_total = sum(&f.hearth_fetch, &f.hearth_render);
    let peer_total = sum(&f.peer_fetch, &f.peer_render);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "recipe fetch + render at a new tag, {} runs, cached render median of {} calls per run, load {}",
        s.runs,
        s.cached,
        load.trim()
    );
    println!("| step (ms) | median | min–max | all runs |");
    println!("|---|---|---|---|");
    println!("{}", row("hearth: fetch (new tag found)", &f.hearth_fetch));
    println!("{}", row("hearth: render at the new tag", &f.hearth_render));
    println!("{}", row("hearth: fetch + render", &hearth_total));
    println!(
        "{}",
        row(
            "hearth: cached render (same inputs digest)",
            &f.hearth_cached
        )
    );
    println!(
        "{}",
        row(
            "peer: git fetch --tags + git archive \\| tar -x",
            &f.peer_fetch
        )
    );
    println!(
        "{}",
        row("peer: bash env + docker stack config", &f.peer_render)
    );
    println!("{}", row("peer: fetch + render", &peer_total));
    let ratio = |a: &[Duration], b: &[Duration]| median(a).as_secs_f64() / median(b).as_secs_f64();
    println!(
        "ratios hearth / peer (medians): fetch {:.2}, render {:.2}, fetch + render {:.2}; cached render / peer render {:.5}",
        ratio(&f.hearth_fetch, &f.peer_fetch),
        ratio(&f.hearth_render, &f.peer_render),
        ratio(&hearth_total, &peer_total),
        ratio(&f.hearth_cached, &f.peer_render)
    );
    Ok(())
}
