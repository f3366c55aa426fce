//! `$VAR` interpolation, as docker/cli's `template` and `interpolation` packages do it.
//!
//! # Guarantees
//! - Same grammar as docker/cli: `$$` is a literal `$`; `$NAME` and `${NAME}` substitute (unset
//!   → empty); `${NAME:-d}` / `${NAME-d}` default when unset-or-empty / unset; `${NAME:?e}` /
//!   `${NAME?e}` fail when unset-or-empty / unset. Default values are not interpolated again.
//!   Any other `$` is an error naming the field.
//! - The modifier is chosen as docker/cli chooses it: `:-` is tried first, then `-`, `:?`, `?`,
//!   each by "does the text contain it" (so `${A:?x-y}` is read as a `-` default, as in docker).
//! - An unbraced name takes a trailing modifier up to the next `}` or the end of the string, as
//!   docker's regular expression does (`$A-x y` defaults to `x y`).
//! - Only values are interpolated, never keys; after substitution, values at the paths docker
//!   casts (`deploy.replicas`, `ports[].published`, `external`, …) become numbers or booleans.

use std::collections::BTreeMap;

use crate::yaml::{Node, V};

/// A failed interpolation: the message, and whether it was a syntax error (vs a required var).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The string is not a valid template.
    Invalid,
    /// `${VAR?msg}` / `${VAR:?msg}` with the variable missing.
    Required { name: String, message: String },
}

/// Substitutes variables in one string.
pub(crate) fn substitute(
    template: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, Failure> {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&template[literal_start..i]);
        let rest = &template[i + 1..];
        let rb = rest.as_bytes();
        if rb.first() == Some(&b'$') {
            out.push('$');
            i += 2;
        } else if rb.first() == Some(&b'{') {
            let inner = &rest[1..];
            let len = match_subst(inner).ok_or(Failure::Invalid)?;
            if inner.as_bytes().get(len) != Some(&b'}') {
                return Err(Failure::Invalid);
            }
            out.push_str(&apply(&inner[..len], env)?);
            i += 1 + 1 + len + 1;
        } else {
            let len = match_subst(rest).ok_or(Failure::Invalid)?;
            out.push_str(&apply(&rest[..len], env)?);
            i += 1 + len;
        }
        literal_start = i;
    }
    out.push_str(&template[literal_start.min(template.len())..]);
    Ok(out)
}

/// Length of the longest match of `[_a-z][_a-z0-9]*(?::?[-?][^}]*)?` (case-insensitive) at the
/// start of `s`, or `None`.
fn match_subst(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let first = *b.first()?;
    if !(first == b'_' || first.is_ascii_alphabetic()) {
        return None;
    }
    let mut n = 1;
    while n < b.len() && (b[n] == b'_' || b[n].is_ascii_alphanumeric()) {
        n += 1;
    }
    // Optional modifier: `:` then `-`/`?`, or `-`/`?`, then anything but `}`.
    let mut m = n;
    if b.get(m) == Some(&b':') {
        m += 1;
    }
    if matches!(b.get(m), Some(b'-') | Some(b'?')) {
        m += 1;
        while m < b.len() && b[m] != b'}' {
            m += 1;
        }
        return Some(m);
    }
    Some(n)
}

fn apply(substitution: &str, env: &BTreeMap<String, String>) -> Result<String, Failure> {
    if let Some((name, default)) = substitution.split_once(":-") {
        return Ok(match env.get(name) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => default.to_string(),
        });
    }
    if let Some((name, default)) = substitution.split_once('-') {
        return Ok(match env.get(name) {
            Some(v) => v.clone(),
            None => default.to_string(),
        });
    }
    if let Some((name, message)) = substitution.split_once(":?") {
        return match env.get(name) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(Failure::Required {
                name: name.to_string(),
                message: message.to_string(),
            }),
        };
    }
    if let Some((name, message)) = substitution.split_once('?') {
        return match env.get(name) {
            Some(v) => Ok(v.clone()),
            None => Err(Failure::Required {
                name: name.to_string(),
                message: message.to_string(),
            }),
        };
    }
    Ok(env.get(substitution).cloned().unwrap_or_default())
}

/// What a value at a cast path becomes after substitution.
#[derive(Debug, Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// docker/cli's `interpolateTypeCastMapping` (`*` = any key, `[]` = any list item).
const CASTS: &[(&str, Cast)] = &[
    ("services.*.configs.[].mode", Cast::Int),
    ("services.*.secrets.[].mode", Cast::Int),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    (
        "services.*.deploy.update_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    (
        "services.*.deploy.rollback_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    (
        "services.*.deploy.placement.max_replicas_per_node",
        Cast::Int,
    ),
    ("services.*.ports.[].target", Cast::Int),
    ("services.*.ports.[].published", Cast::Int),
    ("services.*.ulimits.*", Cast::Int),
    ("services.*.ulimits.*.hard", Cast::Int),
    ("services.*.ulimits.*.soft", Cast::Int),
    ("services.*.privileged", Cast::Bool),
    ("services.*.read_only", Cast::Bool),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.volumes.[].read_only", Cast::Bool),
    ("services.*.volumes.[].volume.nocopy", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
];

fn cast_for(parts: &[String]) -> Option<Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let pat: Vec<&str> = pattern.split('.').collect();
        (pat.len() == parts.len()
            && pat
                .iter()
                .zip(parts)
                .all(|(p, part)| *p == "*" || *p == part.as_str()))
        .then_some(*cast)
    })
}

/// An interpolation error at a node, with the human path (`services.web.ports[0]`).
#[derive(Debug, Clone)]
pub(crate) struct TreeError {
    pub node: Node,
    pub path: String,
    pub message: String,
}

/// Interpolates every string value of a file's tree in place.
pub(crate) fn interpolate_tree(
    root: &mut Node,
    env: &BTreeMap<String, String>,
) -> Result<(), TreeError> {
    let mut parts = Vec::new();
    walk(root, env, &mut parts, "")
}

fn walk(
    node: &mut Node,
    env: &BTreeMap<String, String>,
    parts: &mut Vec<String>,
    path: &str,
) -> Result<(), TreeError> {
    match &mut node.v {
        V::Str(s) => {
            let original = s.clone();
            let new = substitute(&original, env).map_err(|f| TreeError {
                node: node.clone(),
                path: path.to_string(),
                message: match f {
                    Failure::Invalid => format!(
                        "invalid interpolation format: {original:?}; you may need to escape any $ with another $"
                    ),
                    Failure::Required { name, message } => {
                        format!("required variable {name} is missing a value: {message}")
                    }
                },
            })?;
            if new == original {
                return Ok(());
            }
            node.v = match cast_for(parts) {
                None => V::Str(new),
                Some(cast) => cast_value(&new, cast).ok_or_else(|| TreeError {
                    node: node.clone(),
                    path: path.to_string(),
                    message: format!("failed to cast {new:?} to expected type"),
                })?,
            };
            Ok(())
        }
        V::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                parts.push("[]".into());
                let r = walk(item, env, parts, &format!("{path}[{i}]"));
                parts.pop();
                r?;
            }
            Ok(())
        }
        V::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                parts.push(k.name.clone());
                let child = if path.is_empty() {
                    k.name.clone()
                } else {
                    format!("{path}.{}", k.name)
                };
                let r = walk(v, env, parts, &child);
                parts.pop();
                r?;
            }
            Ok(())
        }
        V::Null | V::Bool(_) | V::Int(_) | V::UInt(_) | V::Float(_) => Ok(()),
    }
}

fn cast_value(s: &str, cast: Cast) -> Option<V> {
    match cast {
        // Go's strconv.Atoi: optional sign, decimal digits only.
        Cast::Int => s.parse::<i64>().ok().map(V::Int),
        Cast::Float => s.trim().parse::<f64>().ok().map(V::Float),
        Cast::Bool => match s.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Some(V::Bool(true)),
            "n" | "no" | "false" | "off" => Some(V::Bool(false)),
            _ => None,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::compose::read::parse;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("SET".to_string(), "value".to_string()),
            ("EMPTY".to_string(), String::new()),
        ])
    }

    #[test]
    fn templates_follow_docker_cli_rules() {
        let table: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("x${SET}y", "xvaluey"),
            ("$SET/path", "value/path"),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("${UNSET:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${SET:-def}", "value"),
            ("${UNSET-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${SET?err}", "value"),
            ("${EMPTY?err}", ""),
            ("${SET:?err}", "value"),
            ("$$", "$"),
            ("$${SET}", "${SET}"),
            ("$$SET", "$SET"),
            ("a $$(b) c", "a $(b) c"),
            // Defaults are taken literally, never interpolated again (corpus file 15).
            ("${UNSET:-$2y$05$abc}", "$2y$05$abc"),
            // An unbraced name swallows a modifier up to `}` or the end, as docker's regex does.
            ("$UNSET-x y", "x y"),
            // docker tries `-` before `:?`, so a message with a dash becomes a default.
            ("${UNSET:?a-b}", "b"),
            ("${UNSET:-}", ""),
            ("%(protocol)s", "%(protocol)s"),
        ];
        for (input, want) in table {
            assert_eq!(substitute(input, &env()).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn invalid_templates_and_missing_required_variables_are_errors() {
        for bad in ["$", "a $ b", "${", "${}", "${SET", "$1", "$(x)", "${-x}"] {
            assert_eq!(substitute(bad, &env()), Err(Failure::Invalid), "{bad:?}");
        }
        assert_eq!(
            substitute("${UNSET?need it}", &env()),
            Err(Failure::Required {
                name: "UNSET".into(),
                message: "need it".into()
            })
        );
        assert!(matches!(
            substitute("${EMPTY:?x}", &env()),
            Err(Failure::Required { .. })
        ));
    }

    #[test]
    fn interpolated_values_at_cast_paths_become_typed() {
        let mut env = env();
        env.insert("R".into(), "3".into());
        env.insert("EXT".into(), "yes".into());
        let mut root = parse(
            "services:\n  a:\n    deploy:\n      replicas: ${R}\n    ports:\n      - published: ${R}\n        target: 80\n    image: ${R}\nnetworks:\n  n:\n    external: $EXT\n",
            0,
        )
        .unwrap();
        interpolate_tree(&mut root, &env).unwrap();
        let svc = root.get("services").unwrap().get("a").unwrap();
        assert_eq!(
            svc.get("deploy").unwrap().get("replicas").unwrap().v,
            V::Int(3)
        );
        assert_eq!(svc.get("image").unwrap().v, V::Str("3".into()));
        let port = match &svc.get("ports").unwrap().v {
            V::Seq(items) => items[0].clone(),
            _ => panic!(),
        };
        assert_eq!(port.get("published").unwrap().v, V::Int(3));
        assert_eq!(
            root.get("networks")
                .unwrap()
                .get("n")
                .unwrap()
                .get("external")
                .unwrap()
                .v,
            V::Bool(true)
        );
    }

    #[test]
    fn interpolation_errors_name_the_path() {
        let mut root = parse("services:\n  a:\n    command: [\"ok\", \"$(bad)\"]\n", 0).unwrap();
        let e = interpolate_tree(&mut root, &env()).unwrap_err();
        assert_eq!(e.path, "services.a.command[1]");
        assert_eq!((e.node.at.line, e.node.at.col), (3, 21));
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_always_comes_back_unchanged(text in ".{0,60}") {
            let escaped = text.replace('$', "$$");
            proptest::prop_assert_eq!(substitute(&escaped, &env()).unwrap(), text);
        }

        #[test]
        fn text_without_dollars_is_never_changed(text in "[^$]{0,60}") {
            proptest::prop_assert_eq!(substitute(&text, &env()).unwrap(), text);
        }
    }
}
