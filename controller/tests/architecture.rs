//! The module graph of `controller/src`: no cycle between top-level modules, and only `cli/` (and `main.rs`) imports the daemon wiring `serve/` (issue 14).
//!
//! Every `crate::…` path in code (comments, doc links and string literals are skipped) is an
//! edge from the file's top-level module to the one the path names; grouped imports
//! (`use crate::{a, b::c}`) count each group member. A cycle fails the test with the modules
//! in order and, for each edge, the first file and line that makes it.
//!
//! # Caveats
//! `super::super::…` paths that climb out of a top-level module are not followed (none do
//! today; `crate::` is the house style for leaving a module). `main.rs` is the binary's own
//! crate and is not part of the library's graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One edge's evidence: the first place where module `from` names module `to`.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn top_level_modules_of_the_controller_import_each_other_one_way_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = module_edges(&src);
    assert!(
        edges.len() > 10,
        "the check must see the controller's modules: {:?}",
        edges.keys()
    );
    let cycles = cycles(&edges);
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_the_cli_imports_the_daemon_wiring() {
    // `serve/` wires the daemon; routes live in `http/`, commands and printing in `cli/`.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let importers: Vec<String> = module_edges(&src)
        .iter()
        .filter(|(from, _)| from.as_str() != "cli")
        .filter_map(|(from, to)| to.get("serve").map(|at| format!("{from} ({at})")))
        .collect();
    assert!(
        importers.is_empty(),
        "serve/ is imported by more than cli/: {importers:?}"
    );
}

#[test]
fn comments_and_strings_are_not_imports() {
    let code = r###"
        // crate::a in a line comment
        /* crate::b /* nested crate::c */ crate::d */
        /// [`crate::e`]
        let s = "crate::f // not a comment";
        let r = r#"crate::g "quoted" "#;
        let c = '"'; let l: &'static str = "x";
        use crate::{h, i::j, k::{l, m}};
        pub(crate) fn n() -> crate::o::P { crate::q::r() }
        let u = "http://example/"; crate::s::t();
    "###;
    let names: Vec<String> = crate_paths(code).into_iter().map(|(m, _)| m).collect();
    assert_eq!(names, ["h", "i", "k", "o", "q", "s"]);
}

#[test]
fn a_cycle_is_named_with_the_lines_that_make_it() {
    let mut edges = Edges::new();
    let mut edge = |from: &str, to: &str, at: &str| {
        edges
            .entry(from.into())
            .or_default()
            .insert(to.into(), at.into());
    };
    edge("serve", "cli", "serve/cli.rs:14");
    edge("cli", "serve", "cli/ci.rs:25");
    edge("cli", "swarm", "cli/stack.rs:3");
    edge("a", "b", "a.rs:1");
    edge("b", "c", "b.rs:1");
    edge("c", "a", "c.rs:1");
    edge("c", "d", "c.rs:2");
    edge("d", "b", "d.rs:1");
    let found = cycles(&edges);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        "a -> b -> c -> a (a.rs:1 uses crate::b; b.rs:1 uses crate::c; c.rs:1 uses crate::a); \
         all of a, b, c, d reach each other"
    );
    assert_eq!(
        found[1],
        "cli -> serve -> cli (cli/ci.rs:25 uses crate::serve; serve/cli.rs:14 uses crate::cli)"
    );
}

/// Edges between top-level modules, with the first `file:line` of each.
fn module_edges(src: &Path) -> Edges {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut edges = Edges::new();
    for file in files {
        let relative = file
            .strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        if relative == "main.rs" || relative == "lib.rs" {
            continue;
        }
        let module = relative
            .split('/')
            .next()
            .expect("a path has a first component")
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable source");
        let out = edges.entry(module.clone()).or_default();
        for (target, line) in crate_paths(&text) {
            if target != module {
                out.entry(target)
                    .or_insert_with(|| format!("{relative}:{line}"));
            }
        }
    }
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for targets in edges.values_mut() {
        // `crate::Item` at the root or a macro's `$crate::` names no module.
        targets.retain(|t, _| modules.contains(t));
    }
    edges
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment after every `crate::` in code, with its 1-based line.
fn crate_paths(text: &str) -> Vec<(String, usize)> {
    let code = strip_comments_and_strings(text);
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = code[at..].find("crate::") {
        let start = at + offset;
        at = start + "crate::".len();
        if start > 0 && (ident(bytes[start - 1]) || bytes[start - 1] == b':') {
            continue;
        }
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of each comma-separated item at depth one.
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.push((name, line_of(at + 1 + i)));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((name, line_of(start)));
            }
        }
    }
    found
}

/// The text with comments and the contents of string and char literals blanked (newlines kept).
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && !prev_ident && {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            chars.get(j) == Some(&'"')
        } {
            // A raw string: r#"…"# with as many hashes at the end as at the start.
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while chars[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            out.push_str("  ");
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every cycle, one per strongly connected component of more than one module, named from
/// its smallest module, with the evidence of each edge.
fn cycles(edges: &Edges) -> Vec<String> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|t| t.keys()))
        .collect();
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for t in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for &start in &nodes {
        if done.contains(start) || !reach[start].contains(start) {
            continue;
        }
        let component: BTreeSet<&String> = nodes
            .iter()
            .copied()
            .filter(|n| reach[start].contains(*n) && reach[*n].contains(start))
            .collect();
        done.extend(component.iter().map(|n| (*n).clone()));
        // A shortest cycle through `start` inside the component (breadth-first).
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(n) = queue.pop_front() {
            for t in edges.get(n).into_iter().flat_map(|t| t.keys()) {
                if t == start {
                    last = Some(n);
                    break 'search;
                }
                if component.contains(t) && !parent.contains_key(t) {
                    parent.insert(t, n);
                    queue.push_back(t);
                }
            }
        }
        let mut path = vec![last.expect("a node that reaches itself has a cycle")];
        while let Some(p) = parent.get(path[path.len() - 1]) {
            path.push(p);
        }
        path.reverse();
        path.push(start);
        let names: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
        let evidence: Vec<String> = path
            .windows(2)
            .map(|w| format!("{} uses crate::{}", edges[w[0]][w[1]], w[1]))
            .collect();
        let mut line = format!("{} ({})", names.join(" -> "), evidence.join("; "));
        if component.len() + 1 > path.len() {
            let all: Vec<&str> = component.iter().map(|s| s.as_str()).collect();
            line.push_str(&format!("; all of {} reach each other", all.join(", ")));
        }
        out.push(line);
    }
    out
}

/// The simulated swarm and the test-only modules are compiled only for tests (issue 14): a
/// plain `cargo build -p hearth-controller --bin hearth` does not build them.
#[test]
fn a_plain_build_of_hearth_compiles_no_simulated_swarm_and_no_test_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let gated = |file: &str, module: &str, gate: &str| {
        let text = std::fs::read_to_string(src.join(file)).expect("readable source");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| l.ends_with(&format!("mod {module};")))
            .unwrap_or_else(|| panic!("{file} declares no `mod {module};`"));
        assert_eq!(
            at.checked_sub(1).map(|i| lines[i]),
            Some(gate),
            "{file}: `mod {module}` must sit behind {gate}"
        );
    };
    gated(
        "swarm/mod.rs",
        "sim",
        "#[cfg(any(test, feature = \"sim\"))]",
    );
    gated("lib.rs", "fuzzing", "#[cfg(test)]");
    gated("lib.rs", "malformed", "#[cfg(test)]");

    // The gate holds only if nothing turns `sim` on for the binary: cargo's own feature
    // resolution for a build of the controller alone, and for the tests crate (which must).
    let features = |packages: &[&str]| -> String {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tree", "--offline", "-e", "features,normal", "--depth", "0"])
            .args(["-f", "{p} features=[{f}]"]);
        for p in packages {
            command.args(["-p", p]);
        }
        let out = command.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("hearth-controller "))
            .unwrap_or_else(|| panic!("no hearth-controller in:\n{text}"))
            .to_string()
    };
    let alone = features(&["hearth-controller"]);
    assert!(alone.ends_with("features=[]"), "{alone}");
    let with_tests = features(&["hearth-controller", "hearth-tests"]);
    assert!(with_tests.ends_with("features=[sim]"), "{with_tests}");
}

/// Issue 14: runs are reconciled. Deploying and tearing down a run's stacks (and closing a run
/// the sweeper marked) happen in the run reconciler only (`runs/reconcile.rs`); the API
/// (`http/runs.rs`, `Runs::start`/`finish` in `runs/mod.rs`) records and waits, with no Docker
/// call; the sweeper marks runs and never closes one itself.
#[test]
fn the_run_reconciler_is_the_only_caller_of_stack_apply_and_teardown_for_runs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The stack writes a run's work could use, and the closing of a marked run.
    let writes = [
        "stack::apply(",
        "stack::teardown(",
        "stack::execute_observed(",
        "stack::execute(",
        "remove_forced(",
        "sweeper.close(",
    ];
    let mut callers: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for file in &files {
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        // Run code: what the runs API, the run reconciler, the sweeper and the daemon's CI
        // side are made of (tests excluded).
        let run_code = ["runs/", "http/", "serve/", "sweeper/", "slots/"]
            .iter()
            .any(|d| relative.starts_with(d));
        if !run_code || relative.ends_with("tests.rs") {
            continue;
        }
        let code = strip_comments_and_strings(&std::fs::read_to_string(file).expect("readable"));
        // `#[cfg(test)] mod tests { … }` inline: only the code before it.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for w in writes {
            if code.contains(w) {
                callers.entry(relative.clone()).or_default().insert(w);
            }
        }
    }
    let expected: BTreeMap<String, BTreeSet<&str>> = [
        (
            "runs/reconcile.rs".to_string(),
            ["stack::apply(", "stack::teardown(", "sweeper.close("]
                .into_iter()
                .collect(),
        ),
        // The sweeper's own removal of objects no run is left to close (runs over or unknown),
        // shared by `Sweeper::close`.
        (
            "sweeper/mod.rs".to_string(),
            ["remove_forced("].into_iter().collect(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(callers, expected);
    // The API side of runs makes no Docker call at all.
    for file in ["http/runs.rs", "runs/mod.rs"] {
        let code =
            strip_comments_and_strings(&std::fs::read_to_string(src.join(file)).expect("readable"));
        for call in ["self.swarm.", ".swarm.as_ref()", "s.swarm"] {
            assert!(!code.contains(call), "{file} calls the swarm ({call})");
        }
    }
}
