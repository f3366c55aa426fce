//! Per-file normalisation, as docker/cli's loader transforms do it before merging: short syntaxes
//! become long ones, list-or-map fields become maps, `env_file` is read into `environment`, bind
//! paths become absolute, external objects get their names.

use std::path::{Component, Path, PathBuf};

use super::schema::join;
use super::units;
use super::{Ctx, Error, Warning, WarningKind};
use crate::yaml::{Key, Loc, Node, V};

fn key(name: &str, at: Loc) -> Key {
    Key {
        name: name.to_string(),
        at,
    }
}

fn s(text: impl Into<String>, at: Loc) -> Node {
    Node::new(V::Str(text.into()), at)
}

fn items(node: &Node) -> &[Node] {
    match &node.v {
        V::Seq(i) => i,
        _ => &[],
    }
}

/// Normalises one validated file tree.
pub(crate) fn normalize(
    ctx: &Ctx<'_>,
    mut root: Node,
    warnings: &mut Vec<Warning>,
) -> Result<Node, Error> {
    if let Some(services) = root.get_mut("services") {
        if let V::Map(list) = &mut services.v {
            for (k, svc) in list.iter_mut() {
                let path = join("services", &k.name);
                let taken = std::mem::replace(svc, Node::new(V::Null, svc.at));
                *svc = normalize_service(ctx, &path, taken, warnings)?;
            }
        }
    }
    for section in ["networks", "volumes", "secrets", "configs"] {
        if let Some(objects) = root.get_mut(section) {
            if let V::Map(list) = &mut objects.v {
                for (k, obj) in list.iter_mut() {
                    let path = join(section, &k.name);
                    if obj.is_null() {
                        obj.v = V::Map(Vec::new());
                    }
                    normalize_object(ctx, section, &k.name, &path, obj, warnings)?;
                }
            }
        }
    }
    Ok(root)
}

/// `labels`-like maps: list `k=v` (no `=` → "") or map (null → "", numbers as Go prints them).
fn string_map(node: &Node, sep: char) -> Node {
    let out: Vec<(Key, Node)> = match &node.v {
        V::Seq(list) => list
            .iter()
            .map(|item| {
                let text = item.scalar_string().unwrap_or_default();
                let (k, v) = text.split_once(sep).unwrap_or((text.as_str(), ""));
                (key(k, item.at), s(v, item.at))
            })
            .collect(),
        V::Map(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), s(v.scalar_string().unwrap_or_default(), v.at)))
            .collect(),
        _ => Vec::new(),
    };
    Node::new(V::Map(dedup(out)), node.at)
}

/// Later entries with the same key win (as when a Go map is filled in order).
fn dedup(list: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    let mut out: Vec<(Key, Node)> = Vec::with_capacity(list.len());
    for (k, v) in list {
        if let Some(slot) = out.iter_mut().find(|(ok, _)| ok.name == k.name) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    }
    out
}

fn string_or_list(node: &Node) -> Node {
    match &node.v {
        V::Str(_) => Node::new(V::Seq(vec![node.clone()]), node.at),
        _ => node.clone(),
    }
}

fn normalize_service(
    ctx: &Ctx<'_>,
    path: &str,
    mut svc: Node,
    warnings: &mut Vec<Warning>,
) -> Result<Node, Error> {
    // environment, with env_file read first (docker's resolveEnvironment).
    let mut env: Vec<(Key, Node)> = Vec::new();
    if let Some(files) = svc.remove("env_file") {
        let files = string_or_list(&files);
        for (i, f) in items(&files).iter().enumerate() {
            let p = format!("{path}.env_file[{i}]");
            let name = f.scalar_string().unwrap_or_default();
            let file = abs_path(ctx.working_dir(), &name);
            let bytes = ctx.read_file(f.at, &p, &file)?;
            let vars = units::parse_env_file(&bytes, ctx.env())
                .map_err(|m| ctx.value_err(f.at, &p, format!("{}: {m}", file.display())))?;
            for (k, v) in vars {
                let value = v.map(|v| s(v, f.at)).unwrap_or(Node::new(V::Null, f.at));
                update_env(ctx, &mut env, key(&k, f.at), value);
            }
        }
    }
    if let Some(environment) = svc.get("environment").cloned() {
        let pairs: Vec<(Key, Node)> = match &environment.v {
            V::Seq(list) => list
                .iter()
                .map(|item| {
                    let text = item.scalar_string().unwrap_or_default();
                    match text.split_once('=') {
                        Some((k, v)) => (key(k, item.at), s(v, item.at)),
                        None => (key(&text, item.at), Node::new(V::Null, item.at)),
                    }
                })
                .collect(),
            V::Map(map) => map
                .iter()
                .map(|(k, v)| {
                    let value = match v.scalar_string() {
                        Some(text) => s(text, v.at),
                        None => Node::new(V::Null, v.at),
                    };
                    (k.clone(), value)
                })
                .collect(),
            _ => Vec::new(),
        };
        for (k, v) in pairs {
            update_env(ctx, &mut env, k, v);
        }
    }
    if !env.is_empty() || svc.get("environment").is_some() {
        let at = svc.get("environment").map(|n| n.at).unwrap_or(svc.at);
        svc.set(key("environment", at), Node::new(V::Map(env), at));
    }

    for field in ["labels", "sysctls"] {
        if let Some(n) = svc.get_mut(field) {
            *n = string_map(n, '=');
        }
    }
    if let Some(deploy) = svc.get_mut("deploy") {
        if let Some(labels) = deploy.get_mut("labels") {
            *labels = string_map(labels, '=');
        }
    }
    if let Some(logging) = svc.get_mut("logging") {
        if let Some(options) = logging.get_mut("options") {
            *options = string_map(options, '=');
        }
    }
    for field in ["dns", "dns_search"] {
        if let Some(n) = svc.get_mut(field) {
            *n = string_or_list(n);
        }
    }
    if let Some(hosts) = svc.get_mut("extra_hosts") {
        if let V::Map(map) = &hosts.v {
            let mut list: Vec<Node> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    s(
                        format!("{}:{}", k.name, v.scalar_string().unwrap_or_default()),
                        v.at,
                    )
                })
                .collect();
            list.sort_by_key(Node::scalar_string);
            hosts.v = V::Seq(list);
        }
    }
    for field in ["command", "entrypoint"] {
        if let Some(n) = svc.get_mut(field) {
            if let V::Str(text) = &n.v {
                let words = units::shell_split(text)
                    .map_err(|m| ctx.value_err(n.at, &join(path, field), m))?;
                n.v = V::Seq(words.into_iter().map(|w| s(w, n.at)).collect());
            }
        }
    }
    if let Some(hc) = svc.get_mut("healthcheck") {
        if let Some(test) = hc.get_mut("test") {
            if let V::Str(text) = &test.v {
                let at = test.at;
                test.v = V::Seq(vec![s("CMD-SHELL", at), s(text.clone(), at)]);
            }
        }
    }
    if let Some(nets) = svc.get_mut("networks") {
        if let V::Seq(list) = &nets.v {
            let map = list
                .iter()
                .map(|n| {
                    (
                        key(&n.scalar_string().unwrap_or_default(), n.at),
                        Node::new(V::Null, n.at),
                    )
                })
                .collect();
            nets.v = V::Map(map);
        }
        if let V::Map(map) = &mut nets.v {
            for (_, attachment) in map.iter_mut() {
                if let Some(opts) = attachment.get_mut("driver_opts") {
                    *opts = string_map(opts, '=');
                }
            }
        }
    }
    for field in ["secrets", "configs"] {
        if let Some(refs) = svc.get_mut(field) {
            if let V::Seq(list) = &mut refs.v {
                for r in list.iter_mut() {
                    if let V::Str(name) = &r.v {
                        let at = r.at;
                        r.v = V::Map(vec![(key("source", at), s(name.clone(), at))]);
                    }
                }
            }
        }
    }
    if let Some(ports) = svc.get("ports").cloned() {
        let mut out = Vec::new();
        for (i, p) in items(&ports).iter().enumerate() {
            let ppath = format!("{path}.ports[{i}]");
            match &p.v {
                V::Map(_) => out.push(p.clone()),
                _ => {
                    let spec = p.scalar_string().unwrap_or_default();
                    let parsed = units::parse_port_spec(&spec)
                        .map_err(|m| ctx.value_err(p.at, &ppath, m))?;
                    for sp in parsed {
                        if let Some(ip) = &sp.ignored_ip {
                            warnings.push(Warning {
                                at: ctx.pos(p.at, &ppath),
                                kind: WarningKind::Adjusted,
                                message: format!(
                                    "ignoring IP-address {ip}: the service will listen on 0.0.0.0 (as docker stack deploy does)"
                                ),
                            });
                        }
                        let mut m = vec![
                            (key("mode", p.at), s("ingress", p.at)),
                            (
                                key("target", p.at),
                                Node::new(V::Int(i64::from(sp.target)), p.at),
                            ),
                        ];
                        if sp.published != 0 {
                            m.push((
                                key("published", p.at),
                                Node::new(V::Int(i64::from(sp.published)), p.at),
                            ));
                        }
                        m.push((key("protocol", p.at), s(sp.protocol, p.at)));
                        out.push(Node::new(V::Map(m), p.at));
                    }
                }
            }
        }
        svc.set(key("ports", ports.at), Node::new(V::Seq(out), ports.at));
    }
    if let Some(volumes) = svc.get("volumes").cloned() {
        let mut out = Vec::new();
        for (i, v) in items(&volumes).iter().enumerate() {
            let vpath = format!("{path}.volumes[{i}]");
            let mut long = match &v.v {
                V::Str(spec) => {
                    let sv = units::parse_volume_spec(spec)
                        .map_err(|m| ctx.value_err(v.at, &vpath, m))?;
                    if !sv.ignored_options.is_empty() {
                        warnings.push(Warning {
                            at: ctx.pos(v.at, &vpath),
                            kind: WarningKind::IgnoredByStackDeploy,
                            message: format!(
                                "ignored volume options {:?}: docker stack deploy does not use them",
                                sv.ignored_options
                            ),
                        });
                    }
                    let at = v.at;
                    let mut m = vec![(key("type", at), s(sv.kind, at))];
                    if !sv.source.is_empty() {
                        m.push((key("source", at), s(sv.source, at)));
                    }
                    m.push((key("target", at), s(sv.target, at)));
                    if sv.read_only {
                        m.push((key("read_only", at), Node::new(V::Bool(true), at)));
                    }
                    if let Some(prop) = sv.propagation {
                        m.push((
                            key("bind", at),
                            Node::new(V::Map(vec![(key("propagation", at), s(prop, at))]), at),
                        ));
                    }
                    if sv.nocopy {
                        m.push((
                            key("volume", at),
                            Node::new(
                                V::Map(vec![(key("nocopy", at), Node::new(V::Bool(true), at))]),
                                at,
                            ),
                        ));
                    }
                    Node::new(V::Map(m), at)
                }
                _ => {
                    // docker's schema requires `type` in the long syntax.
                    if v.get("type").is_none() {
                        return Err(ctx.value_err(
                            v.at,
                            &vpath,
                            "type is required in the long volume syntax",
                        ));
                    }
                    v.clone()
                }
            };
            let kind = long.get("type").and_then(Node::scalar_string);
            if kind.as_deref() == Some("bind") {
                let source = long
                    .get("source")
                    .and_then(Node::scalar_string)
                    .unwrap_or_default();
                if source.is_empty() {
                    return Err(ctx.value_err(
                        v.at,
                        &vpath,
                        "invalid mount config for type \"bind\": field Source must not be empty",
                    ));
                }
                let expanded = match source.strip_prefix('~') {
                    Some(rest) => match ctx.env().get("HOME") {
                        Some(home) => format!("{home}{rest}"),
                        None => {
                            warnings.push(Warning {
                                at: ctx.pos(v.at, &vpath),
                                kind: WarningKind::Adjusted,
                                message: "cannot expand '~', because the environment lacks HOME"
                                    .into(),
                            });
                            source.clone()
                        }
                    },
                    None => source.clone(),
                };
                let absolute = if expanded.starts_with('/') || is_windows_abs(&expanded) {
                    expanded
                } else {
                    abs_path(ctx.working_dir(), &expanded).display().to_string()
                };
                let at = long.get("source").map(|n| n.at).unwrap_or(v.at);
                long.set(key("source", at), s(absolute, at));
            }
            out.push(long);
        }
        svc.set(
            key("volumes", volumes.at),
            Node::new(V::Seq(out), volumes.at),
        );
    }
    Ok(svc)
}

/// docker's `updateEnvironment`: a value from the environment wins over a missing or empty one.
fn update_env(ctx: &Ctx<'_>, env: &mut Vec<(Key, Node)>, k: Key, v: Node) {
    let empty = match &v.v {
        V::Null => true,
        V::Str(text) => text.is_empty(),
        _ => false,
    };
    let value = match ctx.env().get(&k.name) {
        Some(found) if empty => s(found.clone(), v.at),
        _ => v,
    };
    if let Some(slot) = env.iter_mut().find(|(ek, _)| ek.name == k.name) {
        slot.1 = value;
    } else {
        env.push((k, value));
    }
}

fn is_windows_abs(p: &str) -> bool {
    let b = p.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/'))
        || p.starts_with("\\\\")
}

/// Go's `filepath.Join(dir, p)` when `p` is relative (cleaned), else `p`.
pub(crate) fn abs_path(dir: &Path, p: &str) -> PathBuf {
    let joined = if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        dir.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn normalize_object(
    ctx: &Ctx<'_>,
    section: &str,
    name: &str,
    path: &str,
    obj: &mut Node,
    warnings: &mut Vec<Warning>,
) -> Result<(), Error> {
    for field in ["labels", "driver_opts"] {
        if let Some(n) = obj.get_mut(field) {
            *n = string_map(n, '=');
        }
    }
    let singular = section.trim_end_matches('s');
    if let Some(ext) = obj.get("external").cloned() {
        let (is_external, legacy_name) = match &ext.v {
            V::Bool(b) => (*b, None),
            V::Map(_) => (true, ext.get("name").and_then(Node::scalar_string)),
            _ => (false, None),
        };
        obj.set(
            key("external", ext.at),
            Node::new(V::Bool(is_external), ext.at),
        );
        if is_external {
            if section == "volumes" {
                for conflicting in ["driver", "driver_opts", "labels"] {
                    let set = match obj.get(conflicting) {
                        Some(n) => match &n.v {
                            V::Str(t) => !t.is_empty(),
                            V::Map(m) => !m.is_empty(),
                            _ => false,
                        },
                        None => false,
                    };
                    if set {
                        return Err(ctx.value_err(
                            ext.at,
                            &join(path, "external"),
                            format!("conflicting parameters \"external\" and {conflicting:?} specified for volume {name:?}"),
                        ));
                    }
                }
            }
            match legacy_name {
                Some(legacy) => {
                    if obj.get("name").is_some() {
                        return Err(ctx.value_err(
                            ext.at,
                            &join(path, "external.name"),
                            format!("{singular} {name}: {singular}.external.name and {singular}.name conflict; only use {singular}.name"),
                        ));
                    }
                    warnings.push(Warning {
                        at: ctx.pos(ext.at, &join(path, "external.name")),
                        kind: WarningKind::Deprecated,
                        message: format!(
                            "{singular}.external.name is deprecated in favor of {singular}.name"
                        ),
                    });
                    obj.set(key("name", ext.at), s(legacy, ext.at));
                }
                None => {
                    if obj.get("name").is_none() {
                        obj.set(key("name", ext.at), s(name, ext.at));
                    }
                }
            }
            return Ok(());
        }
    }
    if section == "secrets" || section == "configs" {
        let has_driver = obj
            .get("driver")
            .and_then(Node::scalar_string)
            .is_some_and(|d| !d.is_empty());
        if has_driver {
            if let Some(file) = obj.get("file") {
                return Err(ctx.value_err(
                    file.at,
                    &join(path, "file"),
                    format!("{singular} {name}: {singular}.driver and {singular}.file conflict; only use {singular}.driver"),
                ));
            }
        } else if let Some(file) = obj.get("file").cloned() {
            let absolute = abs_path(ctx.working_dir(), &file.scalar_string().unwrap_or_default());
            obj.set(
                key("file", file.at),
                s(absolute.display().to_string(), file.at),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_joined_and_cleaned_like_go() {
        assert_eq!(
            abs_path(Path::new("/w/d"), "./a/../b"),
            PathBuf::from("/w/d/b")
        );
        assert_eq!(abs_path(Path::new("/w/d"), "/abs"), PathBuf::from("/abs"));
        assert_eq!(abs_path(Path::new("/w/d"), "../x"), PathBuf::from("/w/x"));
    }
}
