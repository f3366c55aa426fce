//! Merging normalised files in order, with docker/cli's `loader/merge.go` rules (mergo with
//! override and append-slice, plus its special cases), as observed with docker 28.2.
//!
//! - Services merge by name, field by field. Scalars are overridden only by a non-empty value
//!   (`false`, `0`, `""` do not override), except pointer fields (`replicas`, `parallelism`,
//!   `retries`, `max_attempts`, `init`) which any set value overrides. Maps merge by key.
//!   Other lists are appended (including `healthcheck.test`, as docker does).
//! - `ports` merge keyed by published port, `volumes` by target, `secrets`/`configs` by source;
//!   the result is sorted by that key.
//! - `environment`: a null or empty value in a later file keeps the earlier value.
//! - `logging`: same (or unset) driver → options merged; different driver → replaced.
//! - `networks`: an attachment given again replaces the aliases (and addresses) but keeps the
//!   earlier `driver_opts`, as docker's `mergeServiceNetworkConfig` does.
//! - `command`/`entrypoint` are replaced when the later one is non-empty.
//! - Top-level networks, volumes, secrets and configs are replaced whole, by name.

use crate::yaml::{Key, Node, V};

/// Merges `over` into `base` (both whole normalised files).
pub(crate) fn merge(mut base: Node, over: Node) -> Node {
    let V::Map(over_entries) = over.v else {
        return base;
    };
    for (k, v) in over_entries {
        match k.name.as_str() {
            "services" => {
                let Some(target) = section_mut(&mut base, &k, v.at) else {
                    continue;
                };
                if let V::Map(services) = v.v {
                    for (name, svc) in services {
                        match target.get_mut(&name.name) {
                            Some(existing) => {
                                let old = std::mem::replace(existing, Node::new(V::Null, svc.at));
                                *existing = merge_service(old, svc);
                            }
                            None => target.set(name, svc),
                        }
                    }
                }
            }
            "networks" | "volumes" | "secrets" | "configs" => {
                let Some(target) = section_mut(&mut base, &k, v.at) else {
                    continue;
                };
                if let V::Map(objects) = v.v {
                    for (name, obj) in objects {
                        target.set(name, obj);
                    }
                }
            }
            _ => base.set(k, v),
        }
    }
    base
}

/// The mapping under `k`, created (or replaced, if it is not a mapping) when needed.
fn section_mut<'a>(node: &'a mut Node, k: &Key, at: crate::yaml::Loc) -> Option<&'a mut Node> {
    if node.get(&k.name).is_none_or(|n| !matches!(n.v, V::Map(_))) {
        node.set(k.clone(), Node::new(V::Map(Vec::new()), at));
    }
    node.get_mut(&k.name)
}

fn port_key(n: &Node) -> String {
    n.get("published")
        .and_then(Node::scalar_string)
        .unwrap_or_else(|| "0".into())
}

fn target_key(n: &Node) -> String {
    n.get("target")
        .and_then(Node::scalar_string)
        .unwrap_or_default()
}

fn source_key(n: &Node) -> String {
    n.get("source")
        .and_then(Node::scalar_string)
        .unwrap_or_default()
}

fn merge_service(mut base: Node, over: Node) -> Node {
    let V::Map(entries) = over.v else {
        return base;
    };
    // mergo runs docker's slice transformers on every merged service, so these lists are
    // de-duplicated by key and sorted even when the later file does not mention them.
    for list in ["ports", "volumes", "secrets", "configs"] {
        if let Some(existing) = base.get(list).cloned() {
            let empty = Node::new(V::Seq(Vec::new()), existing.at);
            let normalized = match list {
                "ports" => keyed(existing, empty, port_key, true),
                "volumes" => keyed(existing, empty, target_key, false),
                _ => keyed(existing, empty, source_key, false),
            };
            if let Some(slot) = base.get_mut(list) {
                *slot = normalized;
            }
        }
    }
    for (k, v) in entries {
        let Some(existing) = base.get(&k.name).cloned() else {
            base.set(k, v);
            continue;
        };
        let merged = match k.name.as_str() {
            "ports" => keyed(existing, v, port_key, true),
            "volumes" => keyed(existing, v, target_key, false),
            "secrets" | "configs" => keyed(existing, v, source_key, false),
            "logging" => merge_logging(existing, v),
            "command" | "entrypoint" => match &v.v {
                V::Seq(list) if !list.is_empty() => v,
                _ => existing,
            },
            "environment" => merge_environment(existing, v),
            "networks" => merge_networks(existing, v),
            "ulimits" => replace_entries(existing, v),
            _ => deep(existing, v, &k.name),
        };
        base.set(k, merged);
    }
    base
}

/// Maps of strings (`map[string]string` in docker's types): every later entry overrides,
/// even an empty one.
const STRING_MAPS: &[&str] = &["labels", "sysctls", "driver_opts", "options"];

/// mergo's default: maps merge by key, lists append, non-empty scalars override.
fn deep(base: Node, over: Node, key: &str) -> Node {
    if STRING_MAPS.contains(&key) && matches!(base.v, V::Map(_)) && matches!(over.v, V::Map(_)) {
        return replace_entries(base, over);
    }
    match (base.v, over.v) {
        (V::Map(mut b), V::Map(o)) => {
            for (k, v) in o {
                match b.iter().position(|(bk, _)| bk.name == k.name) {
                    Some(i) => {
                        let old = std::mem::replace(&mut b[i].1, Node::new(V::Null, v.at));
                        b[i].1 = deep(old, v, &k.name);
                    }
                    None => b.push((k, v)),
                }
            }
            Node::new(V::Map(b), base.at)
        }
        (V::Seq(mut b), V::Seq(o)) => {
            b.extend(o);
            Node::new(V::Seq(b), base.at)
        }
        (bv, ov) => {
            let pointer = matches!(
                key,
                "replicas" | "parallelism" | "retries" | "max_attempts" | "init"
            );
            let empty = match &ov {
                V::Null => true,
                V::Bool(b) => !b,
                V::Int(i) => *i == 0,
                V::UInt(u) => *u == 0,
                V::Float(f) => *f == 0.0,
                V::Str(s) => s.is_empty(),
                V::Seq(l) => l.is_empty(),
                V::Map(m) => m.is_empty(),
            };
            let take_over = if pointer {
                !matches!(ov, V::Null)
            } else {
                !empty
            };
            if take_over {
                Node::new(ov, over.at)
            } else {
                Node::new(bv, base.at)
            }
        }
    }
}

fn keyed(base: Node, over: Node, key_of: impl Fn(&Node) -> String, numeric: bool) -> Node {
    let at = base.at;
    let mut list: Vec<(String, Node)> = Vec::new();
    for item in items_of(base).into_iter().chain(items_of(over)) {
        let k = key_of(&item);
        if let Some(slot) = list.iter_mut().find(|(sk, _)| *sk == k) {
            slot.1 = item;
        } else {
            list.push((k, item));
        }
    }
    if numeric {
        list.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0));
    } else {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Node::new(V::Seq(list.into_iter().map(|(_, n)| n).collect()), at)
}

fn items_of(node: Node) -> Vec<Node> {
    match node.v {
        V::Seq(list) => list,
        _ => Vec::new(),
    }
}

fn merge_logging(base: Node, over: Node) -> Node {
    let driver = |n: &Node| {
        n.get("driver")
            .and_then(Node::scalar_string)
            .unwrap_or_default()
    };
    let (bd, od) = (driver(&base), driver(&over));
    if bd == od || bd.is_empty() || od.is_empty() {
        let mut merged = base.clone();
        if bd.is_empty() {
            if let Some(d) = over.get("driver") {
                merged.set(
                    Key {
                        name: "driver".into(),
                        at: d.at,
                    },
                    d.clone(),
                );
            }
        }
        if let Some(opts) = over.get("options") {
            let combined = match merged.get("options") {
                Some(existing) => replace_entries(existing.clone(), opts.clone()),
                None => opts.clone(),
            };
            merged.set(
                Key {
                    name: "options".into(),
                    at: opts.at,
                },
                combined,
            );
        }
        merged
    } else {
        over
    }
}

/// Map merge where a later entry replaces the earlier one whole.
fn replace_entries(base: Node, over: Node) -> Node {
    let mut out = base;
    if let V::Map(entries) = over.v {
        for (k, v) in entries {
            out.set(k, v);
        }
    }
    out
}

fn merge_environment(base: Node, over: Node) -> Node {
    let mut out = base;
    if let V::Map(entries) = over.v {
        for (k, v) in entries {
            let empty = match &v.v {
                V::Null => true,
                V::Str(s) => s.is_empty(),
                _ => false,
            };
            if out.get(&k.name).is_none() || !empty {
                out.set(k, v);
            }
        }
    }
    out
}

fn merge_networks(base: Node, over: Node) -> Node {
    let mut out = base;
    if let V::Map(entries) = over.v {
        for (k, v) in entries {
            match out.get_mut(&k.name) {
                None => out.set(k, v),
                Some(existing) => {
                    if v.is_null() || matches!(&v.v, V::Map(m) if m.is_empty()) {
                        continue;
                    }
                    if existing.is_null() {
                        existing.v = V::Map(Vec::new());
                    }
                    match v.get("aliases") {
                        Some(a) => existing.set(
                            Key {
                                name: "aliases".into(),
                                at: a.at,
                            },
                            a.clone(),
                        ),
                        None => {
                            existing.remove("aliases");
                        }
                    }
                    for addr in ["ipv4_address", "ipv6_address"] {
                        if let Some(a) = v.get(addr) {
                            if a.scalar_string().is_some_and(|s| !s.is_empty()) {
                                existing.set(
                                    Key {
                                        name: addr.into(),
                                        at: a.at,
                                    },
                                    a.clone(),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::compose::read::parse;

    fn svc(merged: &Node) -> &Node {
        merged.get("services").unwrap().get("w").unwrap()
    }

    fn strings(n: &Node) -> Vec<String> {
        match &n.v {
            V::Seq(l) => l.iter().map(|i| i.scalar_string().unwrap()).collect(),
            _ => panic!("not a list"),
        }
    }

    #[test]
    fn services_merge_like_docker_stack_config_shows() {
        // Expected values were read from `docker stack config -c e1.yml -c e2.yml` (28.2.2).
        let a = parse("services:\n  w:\n    image: b\n    environment: {A: base, B: base, C: base}\n    labels: {L: base}\n    deploy: {replicas: 2, placement: {constraints: [a]}}\n    read_only: true\n    healthcheck: {test: [CMD, a]}\n    networks: {n1: {aliases: [x], driver_opts: {o: '1'}}}\n", 0).unwrap();
        let b = parse("services:\n  w:\n    image: c\n    environment: {A: over, B: null, C: ''}\n    labels: {L: ''}\n    deploy: {replicas: 0, placement: {constraints: [b]}}\n    read_only: false\n    healthcheck: {test: [CMD, b]}\n    networks: {n1: {driver_opts: {p: '2'}}}\n", 1).unwrap();
        let m = merge(a, b);
        let w = svc(&m);
        assert_eq!(w.get("image").unwrap().scalar_string().unwrap(), "c");
        let env = w.get("environment").unwrap();
        assert_eq!(env.get("A").unwrap().scalar_string().unwrap(), "over");
        assert_eq!(env.get("B").unwrap().scalar_string().unwrap(), "base");
        assert_eq!(env.get("C").unwrap().scalar_string().unwrap(), "base");
        assert_eq!(
            w.get("labels")
                .unwrap()
                .get("L")
                .unwrap()
                .scalar_string()
                .unwrap(),
            ""
        );
        let deploy = w.get("deploy").unwrap();
        assert_eq!(deploy.get("replicas").unwrap().v, V::Int(0));
        assert_eq!(
            strings(deploy.get("placement").unwrap().get("constraints").unwrap()),
            ["a", "b"]
        );
        assert_eq!(w.get("read_only").unwrap().v, V::Bool(true));
        assert_eq!(
            strings(w.get("healthcheck").unwrap().get("test").unwrap()),
            ["CMD", "a", "CMD", "b"]
        );
        let n1 = w.get("networks").unwrap().get("n1").unwrap();
        assert!(n1.get("aliases").is_none());
        assert!(n1.get("driver_opts").unwrap().get("o").is_some());
        assert!(n1.get("driver_opts").unwrap().get("p").is_none());
    }

    #[test]
    fn keyed_lists_replace_by_key_and_sort() {
        let a = parse("services:\n  w:\n    ports: [{published: 80, target: 80, protocol: tcp}, {target: 53}, {target: 54}]\n    volumes: [{type: volume, target: /y}, {type: volume, source: a, target: /x}]\n", 0).unwrap();
        let b = parse("services:\n  w:\n    ports: [{published: 80, target: 80, protocol: udp}, {target: 55}]\n    volumes: [{type: bind, source: /y, target: /x}]\n", 1).unwrap();
        let m = merge(a, b);
        let w = svc(&m);
        let ports = items_of(w.get("ports").unwrap().clone());
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].get("target").unwrap().v, V::Int(55));
        assert_eq!(
            ports[1].get("protocol").unwrap().scalar_string().unwrap(),
            "udp"
        );
        let vols = items_of(w.get("volumes").unwrap().clone());
        assert_eq!(
            vols[0].get("type").unwrap().scalar_string().unwrap(),
            "bind"
        );
        assert_eq!(
            vols[1].get("target").unwrap().scalar_string().unwrap(),
            "/y"
        );
    }

    #[test]
    fn logging_options_merge_for_the_same_driver_and_reset_for_another() {
        let a = parse(
            "services:\n  w:\n    logging: {driver: json-file, options: {a: '1'}}\n",
            0,
        )
        .unwrap();
        let b = parse("services:\n  w:\n    logging: {options: {b: '2'}}\n", 1).unwrap();
        let m = merge(a.clone(), b);
        let opts = svc(&m)
            .get("logging")
            .unwrap()
            .get("options")
            .unwrap()
            .clone();
        assert!(opts.get("a").is_some() && opts.get("b").is_some());
        let c = parse("services:\n  w:\n    logging: {driver: syslog}\n", 1).unwrap();
        let m = merge(a, c);
        assert!(svc(&m).get("logging").unwrap().get("options").is_none());
    }

    #[test]
    fn top_level_objects_are_replaced_whole() {
        let a = parse("networks:\n  n: {driver: overlay, attachable: true}\n", 0).unwrap();
        let b = parse("networks:\n  n: {internal: true}\n", 1).unwrap();
        let m = merge(a, b);
        let n = m.get("networks").unwrap().get("n").unwrap();
        assert!(n.get("driver").is_none());
        assert_eq!(n.get("internal").unwrap().v, V::Bool(true));
    }
}
