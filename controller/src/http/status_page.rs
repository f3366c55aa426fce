//! The status page at `/`: server-rendered HTML (no script, no external asset) of warm apps, runs, slot pools and recent history.
//!
//! [`render`] is a pure function of a [`Snapshot`] and `now`; the handler only reads the
//! store ([`snapshot`]) and the clock. Every text that comes from users or the store (names,
//! versions, messages) goes through [`escape`]. The page reloads itself every
//! [`REFRESH_SECS`] seconds (a `<meta>` refresh, no script).
//!
//! The daemon serves it at `GET /` (open like every GET); [`router`] serves the same page from
//! any store on its own (the headless-browser test uses it on a store it fills).

use std::fmt::Write as _;

use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use crd::condition::{find_condition, types, ConditionStatus};
use crd::promotion::{PromotionResult, PromotionSource};
use crd::verdict::TierOutcome;
use crd::{Owner, Run, RunPhase, SlotPool, WarmApp, WarmAppPhase};
use state::history::{Entry, Query};
use state::Store;

use crd::duration::age;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 10;

/// How many runs the page lists (active ones first, then the newest finished).
pub const RUNS_SHOWN: usize = 15;

/// How many history entries the page lists.
pub const HISTORY_SHOWN: usize = 20;

/// What the page shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every warm app.
    pub warmapps: Vec<WarmApp>,
    /// Runs: every active one, then the newest finished ones, at most [`RUNS_SHOWN`].
    pub runs: Vec<Run>,
    /// How many runs the store holds (the page says when it shows fewer).
    pub runs_total: usize,
    /// Every slot pool.
    pub pools: Vec<SlotPool>,
    /// The newest history entries, newest first.
    pub history: Vec<Entry>,
    /// This daemon's instance ID (empty when unknown).
    pub instance: String,
    /// The leader of the etcd store, `host pid N` (empty with sled).
    pub leader: String,
}

/// Reads what the page shows from `store`.
///
/// # Errors
/// A store read that failed.
pub fn snapshot(store: &Store) -> Result<Snapshot, state::Error> {
    let runs = store.list::<Run>()?.items;
    Ok(Snapshot {
        warmapps: store.list::<WarmApp>()?.items,
        runs_total: runs.len(),
        runs: pick_runs(runs, RUNS_SHOWN),
        pools: store.list::<SlotPool>()?.items,
        history: store.history(&Query::newest(HISTORY_SHOWN))?,
        instance: store
            .get_value::<String>(crate::warmapp::INSTANCE_KEY)?
            .unwrap_or_default(),
        leader: store
            .get_value::<state::etcd_engine::Holder>(crate::leader::LEADER_KEY)
            .ok()
            .flatten()
            .map(|h| h.to_string())
            .unwrap_or_default(),
    })
}

/// Orders runs for the page: active first, then by creation, newest first; keeps `limit`.
pub fn pick_runs(mut runs: Vec<Run>, limit: usize) -> Vec<Run> {
    runs.sort_by_key(|r| {
        (
            r.status.phase.is_terminal(),
            std::cmp::Reverse(r.metadata.creation_timestamp_ms),
        )
    });
    runs.truncate(limit);
    runs
}

/// HTML-escapes `s` for text and for double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's colours: `good` green, `warn` amber, `bad` red, `idle` grey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Good,
    Warn,
    Bad,
    Idle,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Good => "good",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
            Tone::Idle => "idle",
        }
    }
}

/// A coloured badge holding `text` (escaped).
fn badge(text: &str, tone: Tone) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        tone.class(),
        escape(text)
    )
}

/// An en dash in muted grey: "nothing here".
const NONE: &str = "<span class=\"muted\">–</span>";

fn warmapp_tone(phase: WarmAppPhase) -> Tone {
    match phase {
        // serving the declared version
        WarmAppPhase::Ready => Tone::Good,
        // on the way somewhere, or serving an older version after a rollback
        WarmAppPhase::Pending
        | WarmAppPhase::Deploying
        | WarmAppPhase::Upgrading
        | WarmAppPhase::RollingBack
        | WarmAppPhase::Degraded
        | WarmAppPhase::Deleting => Tone::Warn,
        // not serving
        WarmAppPhase::Failed => Tone::Bad,
    }
}

fn run_tone(phase: RunPhase) -> Tone {
    match phase {
        // finished and torn down
        RunPhase::Succeeded => Tone::Good,
        // still going
        RunPhase::Pending | RunPhase::Deploying | RunPhase::Running | RunPhase::Finishing => {
            Tone::Warn
        }
        // ended badly
        RunPhase::Failed | RunPhase::TeardownFailed | RunPhase::Expired | RunPhase::Orphaned => {
            Tone::Bad
        }
    }
}

fn history_tone(reason: &str) -> Tone {
    use state::history::reason;
    match reason {
        reason::DEPLOYED | reason::PROMOTED | reason::TORN_DOWN => Tone::Good,
        reason::ROLLED_BACK | reason::SWEPT => Tone::Warn,
        reason::REJECTED | reason::TEARDOWN_FAILED => Tone::Bad,
        _ => Tone::Idle,
    }
}

/// `pid 4242 @ ci-1`.
fn owner_text(owner: &Owner) -> String {
    match owner.kind {
        crd::OwnerKind::Pid => format!("pid {} @ {}", owner.pid, owner.host),
        _ => owner.to_string(),
    }
}

fn section(title: &str, count: usize, class: &str, body: &str) -> String {
    let class = if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{class}\"")
    };
    format!(
        "<section{class}><h2>{} <span class=\"count\">{count}</span></h2>\n{body}</section>\n",
        escape(title)
    )
}

fn empty(what: &str) -> String {
    format!("<p class=\"empty\">{}</p>\n", escape(what))
}

/// The last promotion of `app`: `from → to`, its result, what asked and when.
fn promotion_html(app: &WarmApp, now_ms: u64) -> String {
    let Some(record) = &app.status.promotion else {
        return NONE.into();
    };
    let last = &record.last;
    let (word, tone) = match last.result {
        PromotionResult::Pending => ("pending", Tone::Warn),
        PromotionResult::Ready => ("ready", Tone::Good),
        PromotionResult::RolledBack => ("rolled back", Tone::Bad),
        PromotionResult::Superseded => ("superseded", Tone::Idle),
        PromotionResult::TimedOut => ("timed out", Tone::Bad),
    };
    let by = match (last.source, &last.run) {
        (PromotionSource::GreenRun, Some(run)) => format!("green run {}", escape(run)),
        (PromotionSource::GreenRun, None) => "green run".into(),
        (PromotionSource::Operator, _) => "operator".into(),
        (PromotionSource::Rollback, _) => "rollback".into(),
        (PromotionSource::Refresh, _) => "nightly refresh".into(),
    };
    format!(
        "{} → <b>{}</b> {}<div class=\"muted\">by {by} · {} ago</div>",
        escape(&last.from),
        escape(&last.to),
        badge(word, tone),
        escape(&age(now_ms, last.at_ms)),
    )
}

fn warmapps_html(apps: &[WarmApp], now_ms: u64) -> String {
    if apps.is_empty() {
        return empty("No warm apps.");
    }
    let mut rows = String::new();
    for a in apps {
        let ready = find_condition(&a.status.conditions, types::READY);
        let health = match ready.map(|c| c.status) {
            Some(ConditionStatus::True) => badge("healthy", Tone::Good),
            Some(ConditionStatus::False) => badge("unhealthy", Tone::Bad),
            _ => badge("unknown", Tone::Idle),
        };
        let health_note = ready
            .filter(|c| !c.message.is_empty())
            .map(|c| format!("<div class=\"muted\">{}</div>", escape(&c.message)))
            .unwrap_or_default();
        let running = match a.status.observed_version.as_deref() {
            Some(v) => format!("<b>{}</b>", escape(v)),
            None => NONE.into(),
        };
        let view = a.version_view();
        let wanted = match &view.promoted {
            Some(promoted) => format!(
                "<b>{}</b><div class=\"muted\">promoted over declared {}</div>",
                escape(promoted),
                escape(&view.declared)
            ),
            None => format!(
                "{}<div class=\"muted\">declared</div>",
                escape(&a.spec.version)
            ),
        };
        // since the Ready condition last changed; an app never observed counts from creation
        let since = ready
            .map(|c| c.last_transition_time_ms)
            .filter(|t| *t > 0)
            .unwrap_or(a.metadata.creation_timestamp_ms);
        let _ = writeln!(
            rows,
            "<tr class=\"app\"><td class=\"name\">{}<div class=\"muted\">recipe {}</div></td>\
             <td>{running}</td><td>{wanted}</td><td>{}</td><td>{health}{health_note}</td>\
             <td class=\"muted\">{}</td><td>{}</td></tr>",
            escape(&a.metadata.name),
            escape(&a.spec.recipe),
            badge(
                &format!("{:?}", a.status.phase),
                warmapp_tone(a.status.phase)
            ),
            escape(&age(now_ms, since)),
            promotion_html(a, now_ms),
        );
        if let Some(error) = &a.status.last_error {
            let _ = writeln!(
                rows,
                "<tr class=\"error\"><td></td><td colspan=\"6\">{}</td></tr>",
                escape(error)
            );
        }
    }
    format!(
        "<table><thead><tr><th>App</th><th>Running</th><th>Wanted</th><th>Phase</th>\
         <th>Health</th><th>Since</th><th>Last promotion</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    )
}

fn tiers_html(run: &Run) -> String {
    let mut chips = String::new();
    for t in &run.status.tiers {
        let (tone, word) = match t.result {
            TierOutcome::Pass => (Tone::Good, "pass"),
            TierOutcome::Fail => (Tone::Bad, "fail"),
            TierOutcome::Skip => (Tone::Warn, "skipped"),
        };
        let required = t.required || run.spec.required_tiers.contains(&t.name);
        let title = t
            .reason
            .as_deref()
            .map(|r| format!(" title=\"{}\"", escape(r)))
            .unwrap_or_default();
        let _ = write!(
            chips,
            "<span class=\"tier {} {}\"{title}>{} {word} <small>{}</small></span>",
            tone.class(),
            if required { "req" } else { "opt" },
            escape(&t.name),
            if required { "required" } else { "optional" },
        );
    }
    for name in &run.spec.required_tiers {
        if !run.status.tiers.iter().any(|t| &t.name == name) {
            let word = if run.status.phase.is_terminal() {
                "missing"
            } else {
                "not yet"
            };
            let tone = if run.status.phase.is_terminal() {
                Tone::Bad
            } else {
                Tone::Idle
            };
            let _ = write!(
                chips,
                "<span class=\"tier {} req\">{} {word} <small>required</small></span>",
                tone.class(),
                escape(name)
            );
        }
    }
    if chips.is_empty() {
        NONE.into()
    } else {
        chips
    }
}

fn runs_html(runs: &[Run], total: usize, now_ms: u64) -> String {
    if runs.is_empty() {
        return empty("No runs.");
    }
    let mut rows = String::new();
    for r in runs {
        let verdict = match &r.status.verdict {
            Some(v) if v.green => badge("green", Tone::Good),
            Some(_) => badge("not green", Tone::Bad),
            None => NONE.into(),
        };
        let slot = match &r.status.slot {
            Some(s) => format!("{} #{}", escape(&s.pool), s.index),
            None => NONE.into(),
        };
        let error = r
            .status
            .last_error
            .as_deref()
            .map(|e| format!("<div class=\"note\">{}</div>", escape(e)))
            .unwrap_or_default();
        let _ = writeln!(
            rows,
            "<tr class=\"run\"><td class=\"name\">{}<div class=\"muted\">{} {}</div></td>\
             <td>{}{error}</td><td class=\"tiers\">{}</td><td>{verdict}</td>\
             <td class=\"muted\">{}</td><td class=\"muted\">{slot}</td><td class=\"muted\">{}</td></tr>",
            escape(&r.metadata.name),
            escape(&r.spec.recipe),
            escape(&r.spec.version),
            badge(&format!("{:?}", r.status.phase), run_tone(r.status.phase)),
            tiers_html(r),
            escape(&owner_text(&r.spec.owner)),
            escape(&age(now_ms, r.metadata.creation_timestamp_ms)),
        );
    }
    let more = if total > runs.len() {
        format!(
            "<p class=\"muted\">showing {} of {total} runs (active first, then the newest): \
             <a href=\"/api/v1/runs\">all runs</a></p>\n",
            runs.len()
        )
    } else {
        String::new()
    };
    format!(
        "<table><thead><tr><th>Run</th><th>Phase</th><th>Tiers</th><th>Verdict</th>\
         <th>Owner</th><th>Slot</th><th>Age</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n{more}"
    )
}

fn pools_html(pools: &[SlotPool], now_ms: u64) -> String {
    if pools.is_empty() {
        return empty("No slot pools.");
    }
    let mut out = String::new();
    for p in pools {
        let used = p.status.leases.len();
        let cap = p.spec.slots;
        let mut cells = String::new();
        for i in 0..cap.min(64) {
            let held = p.status.leases.iter().any(|l| l.slot == i);
            cells.push_str(if held {
                "<i class=\"slot held\"></i>"
            } else {
                "<i class=\"slot\"></i>"
            });
        }
        let mut leases: Vec<_> = p.status.leases.iter().collect();
        leases.sort_by_key(|l| l.slot);
        let mut holders = String::new();
        for l in leases {
            let _ = writeln!(
                holders,
                "<li><b>#{}</b> {} <span class=\"muted\">{} · {}</span></li>",
                l.slot,
                escape(l.run.as_deref().unwrap_or("(no run)")),
                escape(&owner_text(&l.owner)),
                escape(&age(now_ms, l.acquired_at_ms)),
            );
        }
        if holders.is_empty() {
            holders = "<li class=\"muted\">no holders</li>\n".into();
        }
        let mut waiters = String::new();
        for w in &p.status.waiters {
            let _ = writeln!(
                waiters,
                "<li class=\"waiting\">waiting: {} <span class=\"muted\">{} · {}</span></li>",
                escape(w.run.as_deref().unwrap_or("(no run)")),
                escape(&owner_text(&w.owner)),
                escape(&age(now_ms, w.enqueued_at_ms)),
            );
        }
        let waiting = match p.status.waiters.len() {
            0 => " · no one waiting".to_string(),
            n => format!(" · <b class=\"warnfg\">{n} waiting</b>"),
        };
        let _ = writeln!(
            out,
            "<div class=\"pool\"><div class=\"name\">{}</div><div class=\"slots\">{cells}</div>\
             <div><b>{used} / {cap}</b> in use{waiting}</div>\n<ul>\n{holders}{waiters}</ul></div>",
            escape(&p.metadata.name)
        );
    }
    out
}

/// `2026-11-22 11:57:00 UTC`.
fn utc(ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
    .to_string();
    format!("{} UTC", t.trim_end_matches('Z').replacen('T', " ", 1))
}

fn history_html(history: &[Entry], now_ms: u64) -> String {
    if history.is_empty() {
        return empty("Nothing happened yet.");
    }
    let mut rows = String::new();
    for e in history {
        let subject = match &e.subject {
            Some(s) => escape(&s.to_string()),
            None => NONE.into(),
        };
        // The API token that asked for it, if any (issue 19).
        let by = e
            .actor
            .as_deref()
            .map(|name| format!(" <span class=\"by\">by {}</span>", escape(name)))
            .unwrap_or_default();
        let _ = writeln!(
            rows,
            "<tr><td class=\"when\" title=\"{}\">{} ago</td><td>{}</td><td class=\"object\">{subject}</td><td class=\"message\">{}{by}</td></tr>",
            escape(&utc(e.time_ms)),
            escape(&age(now_ms, e.time_ms)),
            badge(&e.reason, history_tone(&e.reason)),
            escape(e.message.lines().next().unwrap_or_default()),
        );
    }
    format!(
        "<table><thead><tr><th>When</th><th>What</th><th>Object</th><th>Message</th></tr>\
         </thead>\n<tbody>\n{rows}</tbody></table>\n"
    )
}

const STYLE: &str = "
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#6b7280;--line:#e5e7eb;
--good:#15803d;--goodbg:#dcfce7;--warn:#b45309;--warnbg:#fef3c7;--bad:#b91c1c;--badbg:#fee2e2;
--idle:#475569;--idlebg:#e2e8f0}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header h1{margin:0;font-size:20px;letter-spacing:.5px}
header .stat{color:#d1d5db}
header .stat b{color:#fff}
main{padding:16px 24px;display:grid;grid-template-columns:minmax(0,2fr) minmax(0,3fr);gap:16px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;overflow:hidden}
section.wide{grid-column:1/-1}
h2{margin:0 0 8px;font-size:14px;text-transform:uppercase;letter-spacing:.6px;color:#374151}
.count{background:var(--idlebg);color:var(--idle);border-radius:10px;padding:0 8px;font-size:12px;margin-left:4px}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.4px;padding:4px 8px;border-bottom:1px solid var(--line)}
td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:none}
tr.app:has(+ tr.error) td{border-bottom:none;padding-bottom:2px}
tr.error td{color:var(--bad);font-size:12px;padding-top:0}
.name{font-weight:600}
.muted{color:var(--muted);font-weight:400;font-size:12px}
.note{color:var(--bad);font-size:12px;margin-top:2px}
.badge{display:inline-block;border-radius:999px;padding:1px 10px;font-size:12px;font-weight:600;white-space:nowrap}
.badge.good,.tier.good{background:var(--goodbg);color:var(--good)}
.badge.warn,.tier.warn{background:var(--warnbg);color:var(--warn)}
.badge.bad,.tier.bad{background:var(--badbg);color:var(--bad)}
.badge.idle,.tier.idle{background:var(--idlebg);color:var(--idle)}
.tier{display:inline-block;border-radius:4px;padding:0 6px;margin:0 4px 3px 0;font-size:12px;white-space:nowrap;border:1px solid transparent}
.tier.req{border-color:currentColor;font-weight:600}
.tier.opt{border-style:dashed;border-color:currentColor;opacity:.85}
.tier small{font-weight:400;opacity:.8}
.pool{padding:6px 0;border-bottom:1px solid var(--line)}
.pool:last-child{border-bottom:none}
.pool .name{margin-bottom:4px}
.pool ul{margin:6px 0 0;padding-left:18px}
.pool li{margin:2px 0}
.slots{display:flex;flex-wrap:wrap;gap:4px;margin-bottom:4px}
.slot{display:inline-block;width:26px;height:14px;border-radius:3px;background:var(--idlebg)}
.slot.held{background:#2563eb}
.waiting,.warnfg{color:var(--warn)}
.when{white-space:nowrap;color:var(--muted);font-size:12px}
.object{white-space:nowrap;font-weight:600;font-size:13px}
.message{font-size:13px}
.empty{color:var(--muted);font-style:italic;margin:4px 0}
footer{padding:0 24px 16px;color:var(--muted);font-size:12px}
a{color:#2563eb}
";

/// The whole page for `s` at `now_ms` (unix milliseconds).
///
/// # Guarantees
/// Pure: the same snapshot and time give the same bytes. No `<script>`, no external asset;
/// every text from the store is escaped.
pub fn render(s: &Snapshot, now_ms: u64) -> String {
    // Ready as `hearth get warmapps` says it: the Ready condition, so a Degraded app that
    // still serves (a rolled-back upgrade) counts.
    let ready = s
        .warmapps
        .iter()
        .filter(|a| {
            find_condition(&a.status.conditions, types::READY)
                .is_some_and(|c| c.status == ConditionStatus::True)
        })
        .count();
    let active = s
        .runs
        .iter()
        .filter(|r| !r.status.phase.is_terminal())
        .count();
    let used: usize = s.pools.iter().map(|p| p.status.leases.len()).sum();
    let cap: u64 = s.pools.iter().map(|p| u64::from(p.spec.slots)).sum();
    let waiting: usize = s.pools.iter().map(|p| p.status.waiters.len()).sum();
    let instance = if s.instance.is_empty() {
        String::new()
    } else {
        format!("instance {} · ", escape(&s.instance))
    };
    let instance = if s.leader.is_empty() {
        instance
    } else {
        format!("{instance}leader {} · ", escape(&s.leader))
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>hearth status</title><style>{STYLE}</style></head>\n<body>\n\
         <header><h1>hearth</h1>\
         <span class=\"stat\"><b>{ready}/{apps}</b> warm apps ready</span>\
         <span class=\"stat\"><b>{active}</b> active runs</span>\
         <span class=\"stat\"><b>{used}/{cap}</b> slots in use, <b>{waiting}</b> waiting</span>\
         </header>\n<main>\n{}{}{}{}</main>\n\
         <footer>{instance}rendered {} · refreshes every {REFRESH_SECS}s · \
         <a href=\"/api/v1/warmapps\">API</a> · <a href=\"/metrics\">metrics</a></footer>\n\
         </body></html>\n",
        section(
            "Warm apps",
            s.warmapps.len(),
            "wide",
            &warmapps_html(&s.warmapps, now_ms)
        ),
        section(
            "Runs",
            s.runs_total,
            "wide",
            &runs_html(&s.runs, s.runs_total, now_ms)
        ),
        section(
            "Slot pools",
            s.pools.len(),
            "",
            &pools_html(&s.pools, now_ms)
        ),
        section(
            "Recent history",
            s.history.len(),
            "",
            &history_html(&s.history, now_ms)
        ),
        escape(&utc(now_ms)),
        apps = s.warmapps.len(),
    )
}

/// The current time in unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The page from `store`'s current contents, at the current time.
fn page_of(store: &Store) -> Response {
    match snapshot(store) {
        Ok(s) => (
            [(header::CACHE_CONTROL, "no-store")],
            Html(render(&s, now_ms())),
        )
            .into_response(),
        Err(e) => super::store_error(&e).into_response(),
    }
}

/// `GET /` of the daemon.
pub(crate) async fn page(AxumState(s): AxumState<super::State>) -> Response {
    page_of(&s.store)
}

/// The status page alone: `GET /` served from `store` (what the daemon serves at `/`,
/// without the rest of the API).
pub fn router(store: Store) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|AxumState(store): AxumState<Store>| async move { page_of(&store) }),
        )
        .with_state(store)
}

#[cfg(test)]
mod tests;
