//! The compose v3 schema hearth accepts (docker/cli's `config_schema_v3.13.json`, as code), and
//! what hearth does with each key docker stack deploy ignores.
//!
//! Validation runs per file after interpolation, as in docker/cli, and reports the first
//! problem with its file:line:col and key path. Unlike docker's JSON schema, every object here
//! rejects unknown keys (docker lets a few, such as secret references, through unchecked).

use crate::yaml::{Node, V};

/// The expected type of a value.
#[derive(Debug)]
pub(crate) enum T {
    /// Anything (`x-` extension values).
    Any,
    Str,
    Int,
    /// Integer or float.
    Num,
    Bool,
    Null,
    /// A duration string (`1m30s`), checked when converted.
    Duration,
    /// A list whose items all have the given type.
    Seq(&'static T),
    /// A list whose items all have the given type and are pairwise different (`uniqueItems`).
    USeq(&'static T),
    /// A mapping with arbitrary keys whose values have the given type.
    MapOf(&'static T),
    /// A mapping with known keys; `x-` keys are allowed when the flag is set.
    Obj(&'static [Field], bool),
    /// The first alternative whose top-level kind matches is used for validation.
    OneOf(&'static [T]),
    /// An alternative that exists only from compose file version `3.N` on.
    Since(u8, &'static T),
}

/// What hearth does with a key that docker stack deploy does not turn into a swarm object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Translated.
    Used,
    /// docker prints "Ignoring unsupported options: KEY"; hearth warns and ignores it.
    IgnoredUnsupported,
    /// docker prints a deprecation notice; hearth warns and ignores it.
    IgnoredDeprecated(&'static str),
    /// docker accepts the key but stack deploy never uses it; hearth warns and ignores it.
    IgnoredSilently(&'static str),
    /// docker refuses the file ("forbidden properties"); so does hearth.
    Forbidden(&'static str),
}

/// One known key of an object.
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: T,
    pub use_: Use,
    /// The key exists from compose file version `3.since` on.
    pub since: u8,
}

const fn f(name: &'static str, ty: T) -> Field {
    fv(name, ty, 0)
}

/// A key added in compose file version `3.since`.
const fn fv(name: &'static str, ty: T, since: u8) -> Field {
    Field {
        name,
        ty,
        use_: Use::Used,
        since,
    }
}

const fn fu(name: &'static str, ty: T, use_: Use) -> Field {
    fuv(name, ty, use_, 0)
}

const fn fuv(name: &'static str, ty: T, use_: Use, since: u8) -> Field {
    Field {
        name,
        ty,
        use_,
        since,
    }
}

const STR_LIST: T = T::USeq(&T::Str);
const STR_OR_LIST: T = T::OneOf(&[T::Str, T::USeq(&T::Str)]);
const LIST_OR_DICT: T = T::OneOf(&[
    T::MapOf(&T::OneOf(&[T::Str, T::Num, T::Null])),
    T::USeq(&T::Str),
]);
const STR_OR_NUM_MAP: T = T::MapOf(&T::OneOf(&[T::Str, T::Num]));
const EXTERNAL: T = T::OneOf(&[T::Bool, T::Obj(&[f("name", T::Str)], false)]);

const FILE_REF: T = T::OneOf(&[
    T::Str,
    T::Obj(
        &[
            f("source", T::Str),
            f("target", T::Str),
            f("uid", T::Str),
            f("gid", T::Str),
            f("mode", T::Num),
        ],
        false,
    ),
]);

const UPDATE_CONFIG: T = T::Obj(
    &[
        f("parallelism", T::Int),
        f("delay", T::Duration),
        f("failure_action", T::Str),
        f("monitor", T::Duration),
        f("max_failure_ratio", T::Num),
        fv("order", T::Str, 4),
    ],
    false,
);

const DEPLOY: T = T::OneOf(&[
    T::Null,
    T::Obj(
        &[
            f("mode", T::Str),
            fv("endpoint_mode", T::Str, 2),
            f("replicas", T::Int),
            f("labels", LIST_OR_DICT),
            fv("rollback_config", UPDATE_CONFIG, 7),
            f("update_config", UPDATE_CONFIG),
            f(
                "resources",
                T::Obj(
                    &[
                        f(
                            "limits",
                            T::Obj(
                                &[
                                    f("cpus", T::Str),
                                    f("memory", T::Str),
                                    fv("pids", T::Int, 9),
                                ],
                                false,
                            ),
                        ),
                        f(
                            "reservations",
                            T::Obj(
                                &[
                                    f("cpus", T::Str),
                                    f("memory", T::Str),
                                    fv(
                                        "generic_resources",
                                        T::Seq(&T::Obj(
                                            &[f(
                                                "discrete_resource_spec",
                                                T::Obj(
                                                    &[f("kind", T::Str), f("value", T::Num)],
                                                    false,
                                                ),
                                            )],
                                            false,
                                        )),
                                        5,
                                    ),
                                ],
                                false,
                            ),
                        ),
                    ],
                    false,
                ),
            ),
            f(
                "restart_policy",
                T::Obj(
                    &[
                        f("condition", T::Str),
                        f("delay", T::Duration),
                        f("max_attempts", T::Int),
                        f("window", T::Duration),
                    ],
                    false,
                ),
            ),
            f(
                "placement",
                T::Obj(
                    &[
                        f("constraints", T::Seq(&T::Str)),
                        fv(
                            "preferences",
                            T::Seq(&T::Obj(&[f("spread", T::Str)], false)),
                            3,
                        ),
                        fv("max_replicas_per_node", T::Int, 8),
                    ],
                    false,
                ),
            ),
        ],
        false,
    ),
]);

const HEALTHCHECK: T = T::Obj(
    &[
        f("disable", T::Bool),
        f("interval", T::Duration),
        f("retries", T::Num),
        f("test", STR_OR_LIST),
        f("timeout", T::Duration),
        fv("start_period", T::Duration, 4),
        fv("start_interval", T::Duration, 12),
    ],
    false,
);

const SERVICE_VOLUME: T = T::OneOf(&[
    T::Str,
    T::Since(
        2,
        &T::Obj(
            &[
                f("type", T::Str),
                f("source", T::Str),
                f("target", T::Str),
                f("read_only", T::Bool),
                f("consistency", T::Str),
                f("bind", T::Obj(&[f("propagation", T::Str)], false)),
                f("volume", T::Obj(&[f("nocopy", T::Bool)], false)),
                fv("tmpfs", T::Obj(&[f("size", T::Int)], false), 6),
            ],
            false,
        ),
    ),
]);

const IGNORED: Use = Use::IgnoredUnsupported;

/// A service definition.
pub(crate) const SERVICE: T = T::Obj(
    &[
        f("deploy", DEPLOY),
        fu("build", T::Any, IGNORED),
        f("cap_add", STR_LIST),
        f("cap_drop", STR_LIST),
        fuv("cgroupns_mode", T::Str, IGNORED, 9),
        fu("cgroup_parent", T::Str, IGNORED),
        f("command", STR_OR_LIST),
        fv("configs", T::Seq(&FILE_REF), 3),
        fu(
            "container_name",
            T::Str,
            Use::IgnoredDeprecated("Setting the container name is not supported."),
        ),
        fv(
            "credential_spec",
            T::Obj(
                &[
                    fv("config", T::Str, 8),
                    f("file", T::Str),
                    f("registry", T::Str),
                ],
                false,
            ),
            3,
        ),
        fu(
            "depends_on",
            STR_LIST,
            Use::IgnoredSilently("docker stack deploy does not order service start-up"),
        ),
        fu("devices", STR_LIST, IGNORED),
        f("dns", STR_OR_LIST),
        f("dns_search", STR_OR_LIST),
        fu("domainname", T::Str, IGNORED),
        f("entrypoint", STR_OR_LIST),
        f("env_file", STR_OR_LIST),
        f("environment", LIST_OR_DICT),
        fu(
            "expose",
            T::USeq(&T::OneOf(&[T::Str, T::Num])),
            Use::IgnoredDeprecated("Exposing ports is unnecessary - services on the same network can access each other's containers on any port."),
        ),
        fu("external_links", STR_LIST, IGNORED),
        f("extra_hosts", LIST_OR_DICT),
        fu(
            "group_add",
            T::USeq(&T::OneOf(&[T::Str, T::Num])),
            Use::IgnoredSilently("docker stack deploy does not read group_add"),
        ),
        f("healthcheck", HEALTHCHECK),
        f("hostname", T::Str),
        f("image", T::Str),
        fv("init", T::Bool, 7),
        fu("ipc", T::Str, IGNORED),
        fv("isolation", T::Str, 5),
        f("labels", LIST_OR_DICT),
        fu("links", STR_LIST, IGNORED),
        f(
            "logging",
            T::Obj(
                &[
                    f("driver", T::Str),
                    f("options", T::MapOf(&T::OneOf(&[T::Str, T::Num, T::Null]))),
                ],
                false,
            ),
        ),
        fu("mac_address", T::Str, IGNORED),
        fu("network_mode", T::Str, IGNORED),
        f(
            "networks",
            T::OneOf(&[
                STR_LIST,
                T::MapOf(&T::OneOf(&[
                    T::Obj(
                        &[
                            f("aliases", STR_LIST),
                            fv("driver_opts", STR_OR_NUM_MAP, 13),
                            f("ipv4_address", T::Str),
                            f("ipv6_address", T::Str),
                        ],
                        false,
                    ),
                    T::Null,
                ])),
            ]),
        ),
        fuv(
            "oom_score_adj",
            T::Int,
            Use::IgnoredSilently("the Engine API 1.41 has no OomScoreAdj for services"),
            13,
        ),
        fu("pid", T::OneOf(&[T::Str, T::Null]), IGNORED),
        f(
            "ports",
            T::USeq(&T::OneOf(&[
                T::Num,
                T::Str,
                T::Since(
                    2,
                    &T::Obj(
                    &[
                        f("mode", T::Str),
                        f("target", T::Int),
                        f("published", T::Int),
                        f("protocol", T::Str),
                    ],
                    false,
                ),
                ),
            ])),
        ),
        fu("privileged", T::Bool, IGNORED),
        f("read_only", T::Bool),
        fu("restart", T::Str, IGNORED),
        fu("security_opt", STR_LIST, IGNORED),
        fu("shm_size", T::OneOf(&[T::Num, T::Str]), IGNORED),
        fv("secrets", T::Seq(&FILE_REF), 1),
        f("sysctls", LIST_OR_DICT),
        f("stdin_open", T::Bool),
        f("stop_grace_period", T::Duration),
        f("stop_signal", T::Str),
        fu(
            "tmpfs",
            STR_OR_LIST,
            Use::IgnoredSilently(
                "docker stack deploy does not turn service-level tmpfs into mounts; use a volume of type tmpfs",
            ),
        ),
        f("tty", T::Bool),
        f(
            "ulimits",
            T::MapOf(&T::OneOf(&[
                T::Int,
                T::Obj(&[f("hard", T::Int), f("soft", T::Int)], false),
            ])),
        ),
        f("user", T::Str),
        fu("userns_mode", T::Str, IGNORED),
        f("volumes", T::Seq(&SERVICE_VOLUME)),
        f("working_dir", T::Str),
        fu("extends", T::Any, Use::Forbidden("Support for `extends` is not implemented yet.")),
        fu("volume_driver", T::Any, Use::Forbidden("Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.")),
        fu("volumes_from", T::Any, Use::Forbidden("To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.")),
        fu("cpu_quota", T::Any, Use::Forbidden("Set resource limits using deploy.resources")),
        fu("cpu_shares", T::Any, Use::Forbidden("Set resource limits using deploy.resources")),
        fu("cpuset", T::Any, Use::Forbidden("Set resource limits using deploy.resources")),
        fu("mem_limit", T::Any, Use::Forbidden("Set resource limits using deploy.resources")),
        fu("memswap_limit", T::Any, Use::Forbidden("Set resource limits using deploy.resources")),
    ],
    true,
);

const NETWORK: T = T::OneOf(&[
    T::Null,
    T::Obj(
        &[
            fv("name", T::Str, 5),
            f("driver", T::Str),
            f("driver_opts", STR_OR_NUM_MAP),
            f(
                "ipam",
                T::Obj(
                    &[
                        f("driver", T::Str),
                        f("config", T::Seq(&T::Obj(&[f("subnet", T::Str)], false))),
                    ],
                    false,
                ),
            ),
            f("external", EXTERNAL),
            f("internal", T::Bool),
            fv("attachable", T::Bool, 2),
            f("labels", LIST_OR_DICT),
        ],
        true,
    ),
]);

const VOLUME: T = T::OneOf(&[
    T::Null,
    T::Obj(
        &[
            fv("name", T::Str, 4),
            f("driver", T::Str),
            f("driver_opts", STR_OR_NUM_MAP),
            f("external", EXTERNAL),
            f("labels", LIST_OR_DICT),
        ],
        true,
    ),
]);

const SECRET: T = T::Obj(
    &[
        fv("name", T::Str, 5),
        f("file", T::Str),
        f("external", EXTERNAL),
        f("labels", LIST_OR_DICT),
        fv("driver", T::Str, 8),
        fv("driver_opts", STR_OR_NUM_MAP, 8),
        fv("template_driver", T::Str, 8),
    ],
    true,
);

const CONFIG: T = T::Obj(
    &[
        fv("name", T::Str, 5),
        f("file", T::Str),
        f("external", EXTERNAL),
        f("labels", LIST_OR_DICT),
        fv("template_driver", T::Str, 8),
    ],
    true,
);

/// The top level of a compose file.
pub(crate) const TOP: T = T::Obj(
    &[
        f("version", T::Str),
        f("services", T::MapOf(&SERVICE)),
        f("networks", T::MapOf(&NETWORK)),
        f("volumes", T::MapOf(&VOLUME)),
        fv("secrets", T::MapOf(&SECRET), 1),
        fv("configs", T::MapOf(&CONFIG), 3),
    ],
    true,
);

/// A schema violation.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub at: crate::yaml::Loc,
    pub path: String,
    pub kind: ViolationKind,
}

/// Kinds of violations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ViolationKind {
    /// A key that the schema does not know.
    Unknown,
    /// A value of the wrong type; the text says what was expected.
    Type(String),
    /// A key docker refuses outright.
    Forbidden(&'static str),
    /// A key (or syntax) that needs a newer compose file version than the file declares.
    TooNew { since: u8, declared: u8 },
    /// A service, volume, secret or config name outside `[a-zA-Z0-9._-]`.
    NameInvalid,
}

/// A key that is accepted but not translated.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub at: crate::yaml::Loc,
    pub path: String,
    pub use_: Use,
}

/// Validates `node` against `ty` for compose file version `3.minor`, collecting notices for
/// ignored keys.
pub(crate) fn validate(
    node: &Node,
    ty: &T,
    path: &str,
    minor: u8,
    notices: &mut Vec<Notice>,
) -> Result<(), Violation> {
    let mismatch = |what: &str| Violation {
        at: node.at,
        path: path.to_string(),
        kind: ViolationKind::Type(format!("must be {what}, not {}", node.kind())),
    };
    match ty {
        T::Any => Ok(()),
        T::Str | T::Duration => match node.v {
            V::Str(_) => Ok(()),
            _ => Err(mismatch("a string")),
        },
        T::Int => match node.v {
            V::Int(_) | V::UInt(_) => Ok(()),
            V::Float(x) if x.fract() == 0.0 => Ok(()),
            _ => Err(mismatch("an integer")),
        },
        T::Num => match node.v {
            V::Int(_) | V::UInt(_) | V::Float(_) => Ok(()),
            _ => Err(mismatch("a number")),
        },
        T::Bool => match node.v {
            V::Bool(_) => Ok(()),
            _ => Err(mismatch("a boolean")),
        },
        T::Null => match node.v {
            V::Null => Ok(()),
            _ => Err(mismatch("null")),
        },
        T::Seq(item) | T::USeq(item) => match &node.v {
            V::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    validate(it, item, &format!("{path}[{i}]"), minor, notices)?;
                    if matches!(ty, T::USeq(_)) {
                        if let Some(first) = items[..i].iter().position(|earlier| same(earlier, it))
                        {
                            return Err(Violation {
                                at: it.at,
                                path: format!("{path}[{i}]"),
                                kind: ViolationKind::Type(format!(
                                    "array items must be unique: this item equals item [{first}]"
                                )),
                            });
                        }
                    }
                }
                Ok(())
            }
            _ => Err(mismatch("an array")),
        },
        T::MapOf(value) => match &node.v {
            V::Map(entries) => {
                let named = matches!(path, "services" | "volumes" | "secrets" | "configs");
                for (k, v) in entries {
                    let valid_name = !k.name.is_empty()
                        && k.name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                    if named && !valid_name {
                        return Err(Violation {
                            at: k.at,
                            path: join(path, &k.name),
                            kind: ViolationKind::NameInvalid,
                        });
                    }
                    validate(v, value, &join(path, &k.name), minor, notices)?;
                }
                Ok(())
            }
            _ => Err(mismatch("a mapping")),
        },
        T::Obj(fields, extensions) => match &node.v {
            V::Map(entries) => {
                for (k, v) in entries {
                    let child = join(path, &k.name);
                    if *extensions && k.name.starts_with("x-") {
                        // docker's schemas allow `x-` keys at the top from 3.4 and inside
                        // services, networks, volumes, secrets and configs from 3.7.
                        let since = if path.is_empty() { 4 } else { 7 };
                        if minor < since {
                            return Err(Violation {
                                at: k.at,
                                path: child,
                                kind: ViolationKind::TooNew {
                                    since,
                                    declared: minor,
                                },
                            });
                        }
                        continue;
                    }
                    let Some(field) = fields.iter().find(|fl| fl.name == k.name) else {
                        return Err(Violation {
                            at: k.at,
                            path: child,
                            kind: ViolationKind::Unknown,
                        });
                    };
                    if minor < field.since {
                        return Err(Violation {
                            at: k.at,
                            path: child,
                            kind: ViolationKind::TooNew {
                                since: field.since,
                                declared: minor,
                            },
                        });
                    }
                    if let Use::Forbidden(why) = field.use_ {
                        return Err(Violation {
                            at: k.at,
                            path: child,
                            kind: ViolationKind::Forbidden(why),
                        });
                    }
                    validate(v, &field.ty, &child, minor, notices)?;
                    if field.use_ != Use::Used {
                        notices.push(Notice {
                            at: k.at,
                            path: child,
                            use_: field.use_,
                        });
                    }
                }
                Ok(())
            }
            _ => Err(mismatch("a mapping")),
        },
        T::Since(since, inner) => {
            if minor < *since {
                return Err(Violation {
                    at: node.at,
                    path: path.to_string(),
                    kind: ViolationKind::TooNew {
                        since: *since,
                        declared: minor,
                    },
                });
            }
            validate(node, inner, path, minor, notices)
        }
        T::OneOf(alternatives) => {
            let chosen = alternatives.iter().find(|alt| kind_matches(node, alt));
            match chosen {
                Some(alt) => validate(node, alt, path, minor, notices),
                None => {
                    let names: Vec<&str> = alternatives.iter().map(kind_name).collect();
                    Err(mismatch(&names.join(" or ")))
                }
            }
        }
    }
}

fn kind_matches(node: &Node, ty: &T) -> bool {
    match ty {
        T::Any => true,
        T::Str | T::Duration => matches!(node.v, V::Str(_)),
        T::Int => matches!(node.v, V::Int(_) | V::UInt(_)),
        T::Num => matches!(node.v, V::Int(_) | V::UInt(_) | V::Float(_)),
        T::Bool => matches!(node.v, V::Bool(_)),
        T::Null => matches!(node.v, V::Null),
        T::Seq(_) | T::USeq(_) => matches!(node.v, V::Seq(_)),
        T::MapOf(_) | T::Obj(..) => matches!(node.v, V::Map(_)),
        T::OneOf(alts) => alts.iter().any(|a| kind_matches(node, a)),
        T::Since(_, inner) => kind_matches(node, inner),
    }
}

fn kind_name(ty: &T) -> &'static str {
    match ty {
        T::Any => "anything",
        T::Str | T::Duration => "a string",
        T::Int => "an integer",
        T::Num => "a number",
        T::Bool => "a boolean",
        T::Null => "null",
        T::Seq(_) | T::USeq(_) => "an array",
        T::MapOf(_) | T::Obj(..) => "a mapping",
        T::OneOf(_) => "one of several types",
        T::Since(_, inner) => kind_name(inner),
    }
}

/// Structural equality, ignoring where the values are.
fn same(a: &Node, b: &Node) -> bool {
    match (&a.v, &b.v) {
        (V::Seq(x), V::Seq(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (V::Map(x), V::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| k.name == k2.name && same(v, v2)))
        }
        (V::Int(x), V::Float(y)) | (V::Float(y), V::Int(x)) => (*x as f64) == *y,
        (x, y) => x == y,
    }
}

/// `a.b` path join (no leading dot at the top).
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::compose::read::parse;

    fn check(text: &str) -> Result<Vec<Notice>, Violation> {
        let n = parse(text, 0).unwrap();
        let mut notices = Vec::new();
        validate(&n, &TOP, "", 13, &mut notices).map(|_| notices)
    }

    #[test]
    fn unknown_keys_are_reported_at_the_key() {
        let v =
            check("services:\n  web:\n    image: a\n    deploy:\n      replicaz: 2\n").unwrap_err();
        assert_eq!(v.path, "services.web.deploy.replicaz");
        assert_eq!(v.kind, ViolationKind::Unknown);
        assert_eq!((v.at.line, v.at.col), (5, 7));
    }

    #[test]
    fn wrong_types_are_reported_at_the_value() {
        let v = check("services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits:\n          cpus: 0.5\n").unwrap_err();
        assert_eq!(v.path, "services.web.deploy.resources.limits.cpus");
        assert!(matches!(v.kind, ViolationKind::Type(ref m) if m.contains("string")));
        let v = check("services:\n  web:\n    environment: {A: true}\n").unwrap_err();
        assert_eq!(v.path, "services.web.environment.A");
    }

    #[test]
    fn extension_fields_are_allowed_where_docker_allows_them() {
        assert!(check("x-top: 1\nservices:\n  web:\n    x-svc: {a: 1}\n    image: a\nnetworks:\n  n:\n    x-n: 1\n").is_ok());
        let v = check("services:\n  web:\n    image: a\n    deploy:\n      x-no: 1\n").unwrap_err();
        assert_eq!(v.kind, ViolationKind::Unknown);
    }

    #[test]
    fn ignored_keys_produce_notices_and_forbidden_keys_fail() {
        let notices =
            check("services:\n  web:\n    image: a\n    build: .\n    depends_on: [db]\n").unwrap();
        let paths: Vec<_> = notices.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, ["services.web.build", "services.web.depends_on"]);
        let v = check("services:\n  web:\n    image: a\n    volumes_from: [x]\n").unwrap_err();
        assert!(matches!(v.kind, ViolationKind::Forbidden(_)));
    }

    #[test]
    fn keys_newer_than_the_declared_version_are_rejected() {
        let n = parse("services:\n  web:\n    image: a\n    init: true\n", 0).unwrap();
        let v = validate(&n, &TOP, "", 6, &mut Vec::new()).unwrap_err();
        assert_eq!(v.path, "services.web.init");
        assert_eq!(
            v.kind,
            ViolationKind::TooNew {
                since: 7,
                declared: 6
            }
        );
        assert!(validate(&n, &TOP, "", 7, &mut Vec::new()).is_ok());
        // Long-syntax ports arrived in 3.2.
        let n = parse(
            "services:\n  web:\n    image: a\n    ports: [{target: 80}]\n",
            0,
        )
        .unwrap();
        let v = validate(&n, &TOP, "", 1, &mut Vec::new()).unwrap_err();
        assert_eq!(v.path, "services.web.ports[0]");
        // Extension keys inside a service arrived in 3.7.
        let n = parse("services:\n  web:\n    image: a\n    x-a: 1\n", 0).unwrap();
        assert!(validate(&n, &TOP, "", 6, &mut Vec::new()).is_err());
    }

    #[test]
    fn object_names_must_be_docker_names() {
        let v = check("services:\n  'web app':\n    image: a\n").unwrap_err();
        assert_eq!(v.kind, ViolationKind::NameInvalid);
    }

    #[test]
    fn unique_lists_reject_duplicates() {
        let v =
            check("services:\n  web:\n    image: a\n    ports: ['80:80', '80:80']\n").unwrap_err();
        assert_eq!(v.path, "services.web.ports[1]");
        assert!(check(
            "services:\n  web:\n    image: a\n    deploy: {placement: {constraints: [a, a]}}\n"
        )
        .is_ok());
    }
}
