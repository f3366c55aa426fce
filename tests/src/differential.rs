//! The raw-spec comparison behind the differential tests: what `docker stack deploy` and hearth
//! left on the real swarm, read back with `docker <kind> inspect`, normalised only where the
//! daemon assigns a value or the stack name differs, and compared `path = value` line by line.
//!
//! Used by `tests/stack_differential.rs` (the compose corpus) and `tests/recipe_differential.rs`
//! (the real recipes); see `docs/DIFFERENTIAL.md` for what is compared and every exclusion
//! with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use controller::stack::{self, TeardownOptions};
use controller::swarm::DockerSwarm;
use serde_json::Value;

/// The reference CLI: Debian's docker 20.10, the same version as the engine.
pub const DOCKER: &str = "/usr/bin/docker";
/// Placeholder for the stack name in normalised snapshots.
pub const STACK: &str = "<STACK>";

/// A difference hearth is allowed to have from docker, explained in `docs/DIFFERENTIAL.md`.
pub struct Allowed {
    /// Corpus groups (first file's prefix) it applies to; empty: every group.
    pub groups: &'static [&'static str],
    /// Object kind.
    pub kind: &'static str,
    /// Path with array indices written `[]`; a trailing `*` matches every path it starts.
    pub path: &'static str,
    /// Which values (JSON text, or `absent`/`present`) are allowed.
    pub values: fn(docker: &str, hearth: &str) -> bool,
    /// Why (one line; the docs have the full story).
    pub why: &'static str,
}

/// Runs the reference CLI.
pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new(DOCKER)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DOCKER} {args:?}: {e}"))
}

/// Runs the reference CLI; panics unless it succeeds; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "{DOCKER} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every object of a stack, normalised: kind + name → JSON.
pub type Snapshot = BTreeMap<(String, String), Value>;

/// IDs of every network, secret and config on the machine → `kind:name`.
pub fn id_names() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for kind in ["network", "secret", "config"] {
        let mut args = vec![kind, "ls", "--format", "{{.ID}}\t{{.Name}}"];
        if kind == "network" {
            args.push("--no-trunc");
        }
        for line in docker_ok(&args).lines() {
            if let Some((id, name)) = line.split_once('\t') {
                out.insert(id.to_string(), (kind.to_string(), name.to_string()));
            }
        }
    }
    out
}

pub fn inspect(kind: &str, namespace: &str) -> Vec<Value> {
    let filter = format!("label=com.docker.stack.namespace={namespace}");
    let ids = docker_ok(&[kind, "ls", "-q", "--filter", &filter]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![kind, "inspect"];
    args.extend(&ids);
    let v: Value = serde_json::from_str(&docker_ok(&args)).unwrap();
    v.as_array().cloned().unwrap_or_default()
}

pub fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            out.insert((*k).to_string(), x.clone());
        }
    }
    Value::Object(out)
}

/// Fields of `docker network inspect` the daemon assigns (not asked for by the deploy): the
/// ID, the creation time, the subnets and gateways it allocated, the containers and peers
/// attached at the moment, and the services running on it (`--verbose` only).
pub const NETWORK_ASSIGNED: &[&str] = &["Id", "Created", "Containers", "Peers", "Services"];
/// Fields of `docker volume inspect` the daemon assigns: where it put the volume, when, and
/// the driver's runtime status.
pub const VOLUME_ASSIGNED: &[&str] = &["Mountpoint", "CreatedAt", "Status", "UsageData"];
/// The overlay network option holding the VXLAN ID the daemon allocated.
pub const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// Reads and normalises everything of `namespace`, raw as the daemon stores it: a service's,
/// secret's and config's whole `Spec`; a network's and a volume's whole inspect object less the
/// daemon-assigned fields above. `null`s, empty maps and absent keys are kept as they are.
///
/// Normalisation (both sides): the stack name becomes [`STACK`]; IDs of networks, secrets and
/// configs become `<kind name>`; hearth's content-hash suffix `-<hash10>` is cut from the names
/// of hearth's secrets and configs — except those in `exact`, the explicitly named ones, whose
/// names must match exactly; hearth's own labels (`hearth.*`) are dropped from an object's
/// top-level `Labels` only — never from a task template (see `docs/DIFFERENTIAL.md`).
pub fn snapshot(namespace: &str, exact: &BTreeSet<String>) -> Snapshot {
    let ids = id_names();
    let mut raw: Vec<(String, Value)> = Vec::new();
    for s in inspect("service", namespace) {
        raw.push(("service".into(), s["Spec"].clone()));
    }
    for mut n in inspect("network", namespace) {
        if let Some(map) = n.as_object_mut() {
            map.retain(|k, _| !NETWORK_ASSIGNED.contains(&k.as_str()));
        }
        // The IPAM driver and options are asked for; subnets and gateways are assigned.
        if let Some(ipam) = n.get_mut("IPAM").and_then(Value::as_object_mut) {
            ipam.remove("Config");
        }
        if let Some(options) = n.get_mut("Options").and_then(Value::as_object_mut) {
            options.remove(VXLAN_OPTION);
        }
        raw.push(("network".into(), n));
    }
    for mut v in inspect("volume", namespace) {
        if let Some(map) = v.as_object_mut() {
            map.retain(|k, _| !VOLUME_ASSIGNED.contains(&k.as_str()));
        }
        raw.push(("volume".into(), v));
    }
    for s in inspect("secret", namespace) {
        raw.push(("secret".into(), s["Spec"].clone()));
    }
    for c in inspect("config", namespace) {
        raw.push(("config".into(), c["Spec"].clone()));
    }

    // hearth names secrets and configs without `name:` `<name>-<hash10>`; map them back to
    // `<name>`. Explicitly named ones must carry their name exactly.
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for (kind, v) in &raw {
        if kind != "secret" && kind != "config" {
            continue;
        }
        let hashed = v["Labels"].get("hearth.spec-hash").is_some();
        let name = v["Name"].as_str().unwrap_or_default();
        if let Some((base, hash)) = name.rsplit_once('-') {
            if hashed
                && !exact.contains(base)
                && hash.len() == 10
                && hash.chars().all(|c| c.is_ascii_hexdigit())
            {
                renamed.insert(name.to_string(), base.to_string());
            }
        }
    }
    let mut out = Snapshot::new();
    for (kind, mut v) in raw {
        drop_hearth_labels(v.get_mut("Labels"));
        normalise(&mut v, namespace, &ids, &renamed);
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        out.insert((kind, name), v);
    }
    out
}

/// Drops hearth's own label keys (`hearth.*`) from a label map (nothing else).
fn drop_hearth_labels(labels: Option<&mut Value>) {
    if let Some(map) = labels.and_then(Value::as_object_mut) {
        map.retain(|k, _| !k.starts_with("hearth."));
    }
}

/// Replaces IDs by `<kind name>`, hearth's hashed names by their base, and the stack name by
/// [`STACK`], in every string and key; changes nothing else.
pub fn normalise(
    v: &mut Value,
    namespace: &str,
    ids: &BTreeMap<String, (String, String)>,
    renamed: &BTreeMap<String, String>,
) {
    match v {
        Value::String(s) => {
            if let Some((kind, name)) = ids.get(s.as_str()) {
                let name = renamed.get(name).unwrap_or(name);
                *s = format!("<{kind} {name}>");
            } else if let Some(base) = renamed.get(s.as_str()) {
                *s = base.clone();
            }
            *s = s.replace(namespace, STACK);
        }
        Value::Array(items) => {
            for item in items {
                normalise(item, namespace, ids, renamed);
            }
        }
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (k, mut item) in entries {
                normalise(&mut item, namespace, ids, renamed);
                map.insert(k.replace(namespace, STACK), item);
            }
        }
        _ => {}
    }
}

/// `path = value` lines of a JSON value.
pub fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
    match v {
        // An empty map or list is a value of its own: `{}` and absent differ.
        Value::Object(map) if map.is_empty() => {
            out.insert(path, "{}".into());
        }
        Value::Array(items) if items.is_empty() => {
            out.insert(path, "[]".into());
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten(item, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path, other.to_string());
        }
    }
}

/// A difference: kind, object name, path, docker's value, hearth's value.
#[derive(Debug)]
pub struct Difference {
    pub kind: String,
    pub name: String,
    pub path: String,
    pub docker: String,
    pub hearth: String,
}

impl Difference {
    /// The first entry of `list` that allows this difference in `group`, by its reason.
    pub fn allowed(&self, group: &str, list: &[Allowed]) -> Option<&'static str> {
        let mut pattern = String::new();
        let mut in_index = false;
        for c in self.path.chars() {
            match c {
                '[' => {
                    in_index = true;
                    pattern.push_str("[]");
                }
                ']' => in_index = false,
                c if !in_index => pattern.push(c),
                _ => {}
            }
        }
        list.iter().find_map(|a| {
            let path = match a.path.strip_suffix('*') {
                Some(prefix) => pattern.starts_with(prefix),
                None => pattern == a.path,
            };
            let group = a.groups.is_empty() || a.groups.contains(&group);
            (group && a.kind == self.kind && path && (a.values)(&self.docker, &self.hearth))
                .then_some(a.why)
        })
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}: docker {} / hearth {}",
            self.kind, self.name, self.path, self.docker, self.hearth
        )
    }
}

pub fn compare(docker: &Snapshot, hearth: &Snapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    let keys: BTreeSet<&(String, String)> = docker.keys().chain(hearth.keys()).collect();
    for key in keys {
        let (kind, name) = key;
        let (d, h) = match (docker.get(key), hearth.get(key)) {
            (Some(d), Some(h)) => (d, h),
            (d, h) => {
                out.push(Difference {
                    kind: kind.clone(),
                    name: name.clone(),
                    path: "(exists)".into(),
                    docker: if d.is_some() { "present" } else { "absent" }.into(),
                    hearth: if h.is_some() { "present" } else { "absent" }.into(),
                });
                continue;
            }
        };
        let (mut fd, mut fh) = (BTreeMap::new(), BTreeMap::new());
        flatten(d, String::new(), &mut fd);
        flatten(h, String::new(), &mut fh);
        let paths: BTreeSet<&String> = fd.keys().chain(fh.keys()).collect();
        for path in paths {
            let (a, b) = (fd.get(path), fh.get(path));
            if a != b {
                out.push(Difference {
                    kind: kind.clone(),
                    name: name.clone(),
                    path: path.clone(),
                    docker: a.cloned().unwrap_or_else(|| "absent".into()),
                    hearth: b.cloned().unwrap_or_else(|| "absent".into()),
                });
            }
        }
    }
    out
}

/// Removes a stack with hearth's verified forced teardown.
///
/// A teardown that leaves residuals is reported on stderr and tried again, up to three times
/// (seen here: a volume still "in use" for a while after the containers of failing tasks
/// were removed). Residuals after that fail the test.
pub async fn remove(swarm: &DockerSwarm, namespace: &str) {
    let options = TeardownOptions {
        deadline: Duration::from_secs(20),
        ..TeardownOptions::forced()
    };
    for attempt in 1.. {
        let started = Instant::now();
        match stack::teardown(swarm, namespace, &options).await {
            Ok(_) => return,
            Err(e) if attempt < 3 => eprintln!(
                "differential: teardown {attempt} of {namespace} failed after {:.1?}: {}",
                started.elapsed(),
                chain(&e)
            ),
            Err(e) => panic!("removing {namespace} left residuals: {}", chain(&e)),
        }
    }
}

/// Whether anything labelled with the stack's namespace exists.
pub fn leftovers_of(namespace: &str) -> Vec<String> {
    let filter = format!("label=com.docker.stack.namespace={namespace}");
    let mut out = Vec::new();
    for kind in ["service", "network", "volume", "secret", "config"] {
        for name in docker_ok(&[kind, "ls", "-q", "--filter", &filter]).split_whitespace() {
            out.push(format!("{kind} {name}"));
        }
    }
    out
}

/// An error and its sources, joined by ": " (the controller's one formatter).
pub use controller::errors::chain;
