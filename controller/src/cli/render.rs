//! What the kubectl-like commands print: tables with AGE columns, `describe` pages, JSON and YAML — pure functions of the objects and `now`.
//!
//! Every function takes the current time as `now_ms` (unix milliseconds) instead of reading
//! the clock, so the snapshot tests at the bottom are stable.

use crd::condition::{find_condition, types};
use crd::verdict::{TierOutcome, TierResult, VerdictProblem};
use crd::{Run, SlotPool, WarmApp};
use serde::Serialize;
use state::history::Entry;

pub use crd::duration::age;

/// Output formats of `get`, `describe`, `apply` and `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns (`describe`: a readable page).
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Rendering errors (a bug: the objects always serialize).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// JSON serialization failed.
    #[error("cannot write JSON")]
    JsonFailed(#[from] serde_json::Error),
    /// YAML serialization failed.
    #[error("cannot write YAML: {0}")]
    YamlFailed(String),
}

/// `value` as pretty JSON or YAML, ending in a newline.
///
/// # Errors
/// [`Error`] when the value does not serialize.
pub fn structured<T: Serialize>(value: &T, output: Output) -> Result<String, Error> {
    match output {
        Output::Yaml => {
            let text =
                serde_saphyr::to_string(value).map_err(|e| Error::YamlFailed(e.to_string()))?;
            Ok(if text.ends_with('\n') {
                text
            } else {
                format!("{text}\n")
            })
        }
        Output::Json | Output::Table => Ok(format!("{}\n", serde_json::to_string_pretty(value)?)),
    }
}

/// Left-aligned columns, three spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            s.push_str(cell);
            let pad = widths
                .get(i)
                .map_or(0, |w| w.saturating_sub(cell.chars().count()) + 3);
            s.extend(std::iter::repeat_n(' ', pad));
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn ready_of(app: &WarmApp) -> String {
    find_condition(&app.status.conditions, types::READY)
        .map(|c| format!("{:?}", c.status))
        .unwrap_or_else(|| "Unknown".into())
}

/// `NAME RECIPE VERSION DECLARED OBSERVED PHASE READY STACK AGE LAST-ERROR`: VERSION is the
/// version in force, DECLARED the operator's (they differ while a promotion is in force).
pub fn warmapps_table(apps: &[WarmApp], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.metadata.name.clone(),
                a.spec.recipe.clone(),
                a.spec.version.clone(),
                a.declared_version().to_string(),
                or_dash(a.status.observed_version.as_deref()),
                format!("{:?}", a.status.phase),
                ready_of(a),
                or_dash(a.status.stack_name.as_deref()),
                age(now_ms, a.metadata.creation_timestamp_ms),
                a.status.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "RECIPE",
            "VERSION",
            "DECLARED",
            "OBSERVED",
            "PHASE",
            "READY",
            "STACK",
            "AGE",
            "LAST-ERROR",
        ],
        &rows,
    )
}

/// `install=pass` / `e2e=fail`, required tiers marked with `*`.
pub fn tier_text(t: &TierResult, required: &[String]) -> String {
    let outcome = match t.result {
        TierOutcome::Pass => "pass",
        TierOutcome::Fail => "fail",
        TierOutcome::Skip => "skip",
    };
    let star = if t.required || required.contains(&t.name) {
        "*"
    } else {
        ""
    };
    format!("{}{star}={outcome}", t.name)
}

/// `green`, `not green`, or `-` before a verdict.
fn verdict_text(run: &Run) -> String {
    match &run.status.verdict {
        Some(v) if v.green => "green".into(),
        Some(_) => "not green".into(),
        None => "-".into(),
    }
}

fn slot_text(run: &Run) -> String {
    run.status
        .slot
        .as_ref()
        .map(|s| format!("{}#{}", s.pool, s.index))
        .unwrap_or_else(|| "-".into())
}

/// `NAME RECIPE VERSION PHASE SLOT TIERS VERDICT AGE`.
pub fn runs_table(runs: &[Run], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let tiers: Vec<String> = r
                .status
                .tiers
                .iter()
                .map(|t| tier_text(t, &r.spec.required_tiers))
                .collect();
            vec![
                r.metadata.name.clone(),
                r.spec.recipe.clone(),
                r.spec.version.clone(),
                format!("{:?}", r.status.phase),
                slot_text(r),
                if tiers.is_empty() {
                    "-".into()
                } else {
                    tiers.join(",")
                },
                verdict_text(r),
                age(now_ms, r.metadata.creation_timestamp_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "RECIPE", "VERSION", "PHASE", "SLOT", "TIERS", "VERDICT", "AGE",
        ],
        &rows,
    )
}

/// `NAME IN-USE WAITING PORTS PHASE WAIT-TIMEOUT AGE` (IN-USE as `used/slots`).
pub fn slotpools_table(pools: &[SlotPool], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            let last = p.spec.port_base + p.spec.slots * p.spec.ports_per_slot;
            vec![
                p.metadata.name.clone(),
                format!("{}/{}", p.status.leases.len(), p.spec.slots),
                p.status.waiters.len().to_string(),
                format!("{}-{}", p.spec.port_base, last.saturating_sub(1)),
                format!("{:?}", p.status.phase),
                humantime::format_duration(p.spec.wait_timeout).to_string(),
                age(now_ms, p.metadata.creation_timestamp_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "IN-USE",
            "WAITING",
            "PORTS",
            "PHASE",
            "WAIT-TIMEOUT",
            "AGE",
        ],
        &rows,
    )
}

/// `AGE REASON OBJECT BY MESSAGE` (newest first, as given); `BY` is the name of the API token
/// whose request wrote the entry, `-` for the daemon's own doing.
pub fn history_table(entries: &[Entry], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                age(now_ms, e.time_ms),
                e.reason.clone(),
                e.subject
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.actor.clone().unwrap_or_else(|| "-".into()),
                e.message.lines().next().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(&["AGE", "REASON", "OBJECT", "BY", "MESSAGE"], &rows)
}

/// A `describe` page under construction: `Key:  value` lines, sections, indented lists.
struct Page {
    out: String,
}

impl Page {
    fn new() -> Page {
        Page { out: String::new() }
    }

    /// A page about `obj`, starting with its name, kind and age.
    fn about<R: crd::Resource>(obj: &R, now_ms: u64) -> Page {
        let mut p = Page::new();
        p.field("Name", obj.name());
        p.field("Kind", R::KIND.as_str());
        p.field("Age", age(now_ms, obj.meta().creation_timestamp_ms));
        p
    }

    fn field(&mut self, key: &str, value: impl std::fmt::Display) {
        let label = format!("{key}:");
        self.out.push_str(&format!("{label:<20}{value}\n"));
    }

    fn section(&mut self, title: &str) {
        self.out.push_str(&format!("{title}:\n"));
    }

    fn indented(&mut self, text: &str) {
        for line in text.lines() {
            self.out.push_str(&format!("  {line}\n"));
        }
    }

    /// A section holding a table of `rows` under `headers`, or `<none>`.
    fn table(&mut self, title: &str, headers: &[&str], rows: &[Vec<String>]) {
        self.section(title);
        if rows.is_empty() {
            self.indented("<none>");
        } else {
            self.indented(&table(headers, rows));
        }
    }

    fn conditions(&mut self, conditions: &[crd::condition::Condition], now_ms: u64) {
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    format!("{:?}", c.status),
                    c.reason.clone(),
                    age(now_ms, c.last_transition_time_ms),
                    c.message.clone(),
                ]
            })
            .collect();
        let headers = ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"];
        self.table("Conditions", &headers, &rows);
    }

    fn events(&mut self, history: &[Entry], now_ms: u64) {
        let rows: Vec<Vec<String>> = history
            .iter()
            .map(|e| {
                vec![
                    age(now_ms, e.time_ms),
                    e.reason.clone(),
                    e.message.lines().next().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        self.table("History", &["AGE", "REASON", "MESSAGE"], &rows);
    }
}

/// `hearth describe warmapp NAME`.
pub fn describe_warmapp(app: &WarmApp, history: &[Entry], now_ms: u64) -> String {
    let mut p = Page::about(app, now_ms);
    p.field("Recipe", &app.spec.recipe);
    p.field("Version", &app.spec.version);
    p.field("Declared version", app.declared_version());
    p.field(
        "Observed version",
        or_dash(app.status.observed_version.as_deref()),
    );
    // The version before the current one that was Ready (`status.previousKnownGood`); "Known
    // good" read as the current version's verdict (issue 14).
    p.field(
        "Previous good",
        or_dash(app.status.previous_known_good.as_deref()),
    );
    p.field("Phase", format!("{:?}", app.status.phase));
    p.field("Ready", ready_of(app));
    p.field("Stack", or_dash(app.status.stack_name.as_deref()));
    p.field("Domain", or_dash(app.status.domain.as_deref()));
    // Exactly what it serves (issue 16): the promoted snapshot, or the version's catalogue render.
    // Absent: the catalogue's render of the version.
    if let Some(c) = &app.spec.content {
        p.field("Content", c.summary());
        p.field("Commit", or_dash(c.commit.as_deref()));
        p.field("Digest", &c.digest);
        p.field("Tested by run", or_dash(c.run.as_deref()));
    }
    p.field("Promote", format!("{:?}", app.spec.promote));
    if app.spec.promote_candidates {
        p.field("Promote candidates", true);
    }
    p.field("Refresh", format!("{:?}", app.spec.refresh));
    p.field("Provider", app.spec.provider);
    p.field(
        "Generation",
        format!(
            "{} (observed {})",
            app.metadata.generation, app.status.observed_generation
        ),
    );
    if let Some(e) = &app.status.last_error {
        p.field("Last error", e);
    }
    p.conditions(&app.status.conditions, now_ms);
    p.events(history, now_ms);
    p.out
}

fn problem_text(p: &VerdictProblem) -> String {
    match p {
        VerdictProblem::RequiredTierFailed { tier, reason } => format!(
            "required tier {tier} failed{}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        VerdictProblem::RequiredTierSkipped { tier, reason } => format!(
            "required tier {tier} was skipped{}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        VerdictProblem::RequiredTierMissing { tier } => {
            format!("required tier {tier} has no result")
        }
        VerdictProblem::NoRequiredTier => "no tier is required".into(),
        VerdictProblem::JobFailed { reason } => format!("the job failed: {reason}"),
    }
}

/// `hearth describe run NAME`.
pub fn describe_run(run: &Run, history: &[Entry], now_ms: u64) -> String {
    let mut p = Page::about(run, now_ms);
    p.field("Recipe", &run.spec.recipe);
    p.field("Version", &run.spec.version);
    p.field("Ref", or_dash(run.spec.git_ref.as_deref()));
    // What the run tests, snapshotted at its start (issue 16), and what its stack runs now.
    if let Some(c) = &run.spec.content {
        p.field("Content", c.summary());
        p.field("Digest", &c.digest);
    }
    if let Some(d) = &run.status.deployed {
        p.field("Deployed", crate::runs::describe_target(d));
    }
    p.field("Phase", format!("{:?}", run.status.phase));
    p.field("Owner", run.spec.owner.to_string());
    p.field(
        "Lease",
        run.spec
            .lease
            .as_ref()
            .map(|l| format!("ttl {}", humantime::format_duration(l.ttl)))
            .unwrap_or_else(|| "while the owner lives".into()),
    );
    p.field("Slot", slot_text(run));
    p.field("Stack", or_dash(run.status.stack_name.as_deref()));
    p.field("Domain", or_dash(run.status.domain.as_deref()));
    p.field(
        "Deps",
        if run.spec.deps.is_empty() {
            "-".into()
        } else {
            run.spec.deps.join(", ")
        },
    );
    p.field("Verdict", verdict_text(run));
    if let Some(e) = &run.status.last_error {
        p.field("Last error", e);
    }
    let mut rows: Vec<Vec<String>> = run
        .status
        .tiers
        .iter()
        .map(|t| {
            let required = t.required || run.spec.required_tiers.contains(&t.name);
            vec![
                t.name.clone(),
                format!("{:?}", t.result).to_lowercase(),
                if required { "yes" } else { "no" }.into(),
                t.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    for name in &run.spec.required_tiers {
        if !run.status.tiers.iter().any(|t| &t.name == name) {
            rows.push(vec![
                name.clone(),
                "missing".into(),
                "yes".into(),
                String::new(),
            ]);
        }
    }
    p.table("Tiers", &["TIER", "RESULT", "REQUIRED", "REASON"], &rows);
    if let Some(v) = &run.status.verdict {
        if !v.problems.is_empty() {
            p.section("Not green because");
            for problem in &v.problems {
                p.indented(&format!("- {}", problem_text(problem)));
            }
        }
    }
    if !run.status.residuals.is_empty() {
        p.section("Residuals");
        for r in &run.status.residuals {
            p.indented(&format!("- {r}"));
        }
    }
    p.conditions(&run.status.conditions, now_ms);
    p.events(history, now_ms);
    p.out
}

/// `hearth describe slotpool NAME`.
pub fn describe_slotpool(pool: &SlotPool, history: &[Entry], now_ms: u64) -> String {
    let mut p = Page::about(pool, now_ms);
    p.field(
        "In use",
        format!("{}/{}", pool.status.leases.len(), pool.spec.slots),
    );
    p.field("Waiting", pool.status.waiters.len());
    p.field(
        "Ports",
        format!(
            "{} per slot from {}",
            pool.spec.ports_per_slot, pool.spec.port_base
        ),
    );
    p.field(
        "Wait timeout",
        humantime::format_duration(pool.spec.wait_timeout),
    );
    p.field("Phase", format!("{:?}", pool.status.phase));
    let rows: Vec<Vec<String>> = pool
        .status
        .leases
        .iter()
        .map(|l| {
            vec![
                l.slot.to_string(),
                format!("pid {} on {}", l.owner.pid, l.owner.host),
                or_dash(l.run.as_deref()),
                age(now_ms, l.acquired_at_ms),
                l.expires_at_ms
                    .map(|e| {
                        if e > now_ms {
                            format!("in {}", age(e, now_ms))
                        } else {
                            "expired".into()
                        }
                    })
                    .unwrap_or_else(|| "with its owner".into()),
            ]
        })
        .collect();
    p.table(
        "Leases",
        &["SLOT", "OWNER", "RUN", "HELD", "EXPIRES"],
        &rows,
    );
    if !pool.status.waiters.is_empty() {
        p.section("Waiters");
        let rows: Vec<Vec<String>> = pool
            .status
            .waiters
            .iter()
            .map(|w| {
                vec![
                    format!("pid {} on {}", w.owner.pid, w.owner.host),
                    or_dash(w.run.as_deref()),
                    age(now_ms, w.enqueued_at_ms),
                ]
            })
            .collect();
        p.indented(&table(&["OWNER", "RUN", "WAITING"], &rows));
    }
    p.conditions(&pool.status.conditions, now_ms);
    p.events(history, now_ms);
    p.out
}

/// The source of a recipe, short: its git URL (and followed branch) or its directory.
fn recipe_source(r: &crd::Recipe) -> String {
    match (&r.spec.git, &r.spec.path) {
        (Some(g), _) => match &g.git_ref {
            Some(b) => format!("{} ({})", g.url, b.branch),
            None => g.url.clone(),
        },
        (None, Some(p)) => p.clone(),
        (None, None) => "-".into(),
    }
}

fn short(commit: Option<&str>) -> String {
    commit
        .map(|c| c.chars().take(12).collect())
        .unwrap_or_else(|| "-".into())
}

/// `NAME SOURCE VERSIONS NEWEST COMMIT FETCHED ERROR`.
pub fn recipes_table(recipes: &[crd::Recipe], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = recipes
        .iter()
        .map(|r| {
            let s = &r.status;
            let versions = if r.spec.path.is_some() {
                "(directory)".to_string()
            } else {
                s.versions.len().to_string()
            };
            vec![
                r.metadata.name.clone(),
                recipe_source(r),
                versions,
                or_dash(s.newest.as_deref()),
                short(s.commit.as_deref()),
                s.last_fetch_ms
                    .map(|t| age(now_ms, t))
                    .unwrap_or_else(|| "-".into()),
                match &s.last_fetch_error {
                    Some(_) => "fetch failed".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME", "SOURCE", "VERSIONS", "NEWEST", "COMMIT", "FETCHED", "ERROR",
        ],
        &rows,
    )
}

/// `hearth get workers`: every background worker of the daemon, what it is doing, its last
/// run and its last error.
pub fn workers_table(workers: &[crate::runtime::workers::Status], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.state.to_string(),
                w.runs.to_string(),
                w.errors.to_string(),
                w.last_run_ms
                    .map(|t| format!("{} ago", age(now_ms, t)))
                    .unwrap_or_else(|| "never".into()),
                match w.next_run_ms {
                    Some(t) if t > now_ms => format!("in {}", age(t, now_ms)),
                    Some(_) => "now".into(),
                    None => "-".into(),
                },
                w.schedule.clone(),
                match (&w.last_error, w.last_error_ms) {
                    (Some(e), Some(t)) => format!("{} ago: {e}", age(now_ms, t)),
                    (Some(e), None) => e.clone(),
                    (None, _) => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "RUNS",
            "ERRORS",
            "LAST RUN",
            "NEXT RUN",
            "SCHEDULE",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// `hearth describe recipe NAME`: source, versions newest first, ignored tags, fetch status.
pub fn describe_recipe(r: &crd::Recipe, history: &[Entry], now_ms: u64) -> String {
    let s = &r.status;
    let mut p = Page::about(r, now_ms);
    p.field("Source", recipe_source(r));
    if r.spec.git.is_some() {
        p.field("Versions range", or_dash(r.spec.versions.as_deref()));
        p.field(
            "Pre-releases",
            if r.spec.prerelease {
                "counted"
            } else {
                "ignored"
            },
        );
        p.field("Interval", humantime::format_duration(r.spec.interval()));
        p.field("Newest", or_dash(s.newest.as_deref()));
        p.field("Commit", or_dash(s.commit.as_deref()));
        p.field(
            "Last fetch",
            s.last_fetch_ms
                .map(|t| format!("{} ago", age(now_ms, t)))
                .unwrap_or_else(|| "never".into()),
        );
        p.field(
            "Last success",
            s.last_success_ms
                .map(|t| format!("{} ago", age(now_ms, t)))
                .unwrap_or_else(|| "never".into()),
        );
        if let Some(e) = &s.last_fetch_error {
            p.field("Fetch error", e);
        }
        let rows: Vec<Vec<String>> = s
            .versions
            .iter()
            .rev()
            .map(|v| {
                vec![
                    v.version.clone(),
                    v.tag.clone(),
                    short(Some(&v.commit)),
                    chrono::DateTime::from_timestamp(v.commit_time, 0)
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let headers = ["VERSION", "TAG", "COMMIT", "COMMITTED (UTC)"];
        p.table("Versions (newest first)", &headers, &rows);
        if !s.ignored.is_empty() {
            p.section("Ignored tags");
            let rows: Vec<Vec<String>> = s
                .ignored
                .iter()
                .map(|i| vec![i.tag.clone(), i.reason.clone()])
                .collect();
            p.indented(&table(&["TAG", "WHY"], &rows));
        }
    }
    p.conditions(&s.conditions, now_ms);
    p.events(history, now_ms);
    p.out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
