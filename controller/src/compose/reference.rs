//! Reference test: hearth's translation against `docker stack config` (the docker CLI's own
//! loader, interpolation and merge; client-side only, it never talks to the daemon).
//!
//! For every corpus group and a file of edge cases, the fields `docker stack config` shows are
//! converted the way docker/cli's `convert` package converts them and compared with hearth's
//! [`StackSpec`]. Needs the docker CLI (28.x, as on this machine) on PATH: without it the test
//! fails when `CI=true` and is skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::tests::{corpus_dir, corpus_env, corpus_groups};
use super::units;
use super::{translate, Files, Options, Source};
use crate::swarm::spec::{ServiceSpec, StackSpec};

struct AnyFile;

impl Files for AnyFile {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path).or_else(|_| Ok(b"placeholder\n".to_vec()))
    }
}

/// The docker CLI, if it is there and has `stack config`.
fn docker_cli() -> Option<PathBuf> {
    let out = Command::new("docker")
        .args(["stack", "config", "--help"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from("docker"))
}

fn docker_config(dir: &Path, files: &[String], env: &BTreeMap<String, String>) -> Value {
    let mut cmd = Command::new("docker");
    cmd.current_dir(dir).env_clear().args(["stack", "config"]);
    for f in files {
        cmd.arg("-c").arg(dir.join(f));
    }
    cmd.envs(env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Client-side only: make sure nothing reaches a daemon.
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let out = cmd.output().expect("run docker stack config");
    assert!(
        out.status.success(),
        "docker stack config {files:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("docker's YAML")
}

fn hearth(dir: &Path, files: &[String], env: &BTreeMap<String, String>) -> StackSpec {
    let sources: Vec<Source> = files
        .iter()
        .map(|f| Source {
            name: f.clone(),
            text: std::fs::read_to_string(dir.join(f)).unwrap(),
        })
        .collect();
    translate(
        &sources,
        &Options {
            stack: "st",
            env,
            working_dir: dir.to_path_buf(),
            files: &AnyFile,
        },
    )
    .unwrap_or_else(|e| panic!("{files:?}: {e}"))
    .stack
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    let list: Vec<String> = v?.as_array()?.iter().filter_map(s).collect();
    (!list.is_empty()).then_some(list)
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), s(v).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn scoped(defs: &Value, key: &str) -> String {
    defs.get(key)
        .and_then(|d| d.get("name"))
        .and_then(s)
        .unwrap_or_else(|| format!("st_{key}"))
}

/// Compares one service; returns the differences.
fn compare_service(name: &str, want: &Value, top: &Value, got: &ServiceSpec) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{name}.{what}:\n  docker {a}\n  hearth {b}"));
        }
    };
    let task = got.task_template.as_ref().unwrap();
    let c = task.container_spec.as_ref().unwrap();
    let deploy = want.get("deploy").cloned().unwrap_or(Value::Null);

    // `docker stack config` shows the image as written; docker's API client tags it before
    // `ServiceCreate` (`image.rs` has the table test; the differential test checks it against
    // the daemon). The `com.docker.stack.image` label below keeps it as written.
    cmp(
        "image",
        format!(
            "{:?}",
            want.get("image")
                .and_then(s)
                .map(|i| super::image::with_default_tag(&i))
        ),
        format!("{:?}", c.image),
    );
    let mut env: Vec<String> = want
        .get("environment")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| match s(v) {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    env.sort();
    cmp(
        "env",
        format!("{:?}", (!env.is_empty()).then_some(env)),
        format!("{:?}", c.env),
    );
    cmp(
        "args",
        format!("{:?}", str_list(want.get("command"))),
        format!("{:?}", c.args),
    );
    cmp(
        "command",
        format!("{:?}", str_list(want.get("entrypoint"))),
        format!("{:?}", c.command),
    );
    let mut labels = str_map(want.get("labels"));
    labels.insert("com.docker.stack.namespace".into(), "st".into());
    cmp(
        "labels",
        format!("{labels:?}"),
        format!("{:?}", c.labels.clone().unwrap_or_default()),
    );
    let mut slabels = str_map(deploy.get("labels"));
    slabels.insert("com.docker.stack.namespace".into(), "st".into());
    slabels.insert(
        "com.docker.stack.image".into(),
        want.get("image").and_then(s).unwrap_or_default(),
    );
    cmp(
        "service labels",
        format!("{slabels:?}"),
        format!("{:?}", got.labels.clone().unwrap_or_default()),
    );

    let mut ports: Vec<String> = want
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{}>{} {} {}",
                        p.get("published").and_then(Value::as_u64).unwrap_or(0),
                        p.get("target").and_then(Value::as_u64).unwrap_or(0),
                        p.get("protocol").and_then(s).unwrap_or_default(),
                        p.get("mode").and_then(s).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    let mut hports: Vec<String> = got
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let j = serde_json::to_value(p).unwrap();
            format!(
                "{}>{} {} {}",
                p.published_port.unwrap_or(0),
                p.target_port.unwrap_or(0),
                j.get("Protocol").and_then(s).unwrap_or_default(),
                j.get("PublishMode").and_then(s).unwrap_or_default()
            )
        })
        .collect();
    hports.sort();
    cmp("ports", format!("{ports:?}"), format!("{hports:?}"));
    let emode = deploy.get("endpoint_mode").and_then(s);
    let hemode = got
        .endpoint_spec
        .as_ref()
        .and_then(|e| serde_json::to_value(e).ok())
        .and_then(|j| j.get("Mode").and_then(s));
    cmp("endpoint mode", format!("{emode:?}"), format!("{hemode:?}"));

    let volumes_def = top.get("volumes").cloned().unwrap_or(Value::Null);
    let mounts: Vec<String> = want
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    let kind = v.get("type").and_then(s).unwrap_or_default();
                    let mut src = v.get("source").and_then(s);
                    if kind == "volume" {
                        src = src.map(|k| scoped(&volumes_def, &k));
                    }
                    format!(
                        "{kind} {src:?} {:?} {}",
                        v.get("target").and_then(s),
                        v.get("read_only").and_then(Value::as_bool).unwrap_or(false)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let hmounts: Vec<String> = c
        .mounts
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let j = serde_json::to_value(m).unwrap();
            format!(
                "{} {:?} {:?} {}",
                j.get("Type").and_then(s).unwrap_or_default(),
                m.source,
                m.target,
                m.read_only.unwrap_or(false)
            )
        })
        .collect();
    cmp("mounts", format!("{mounts:?}"), format!("{hmounts:?}"));

    for (kind, defs_key) in [("secrets", "secrets"), ("configs", "configs")] {
        let defs = top.get(defs_key).cloned().unwrap_or(Value::Null);
        let mut want_refs: Vec<String> = want
            .get(kind)
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let src = r.get("source").and_then(s).unwrap_or_default();
                        format!(
                            "{} {} {}",
                            scoped(&defs, &src),
                            r.get("target").and_then(s).unwrap_or(src.clone()),
                            r.get("mode").and_then(Value::as_u64).unwrap_or(0o444)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        want_refs.sort();
        let mut got_refs: Vec<String> = if kind == "secrets" {
            c.secrets
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let f = r.file.clone().unwrap_or_default();
                    format!("{} {} {}", r.secret_name, f.name, f.mode)
                })
                .collect()
        } else {
            c.configs
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let f = r.file.clone().unwrap_or_default();
                    format!("{} {} {}", r.config_name, f.name, f.mode)
                })
                .collect()
        };
        got_refs.sort();
        cmp(kind, format!("{want_refs:?}"), format!("{got_refs:?}"));
    }

    let nets_def = top.get("networks").cloned().unwrap_or(Value::Null);
    let mut targets: Vec<String> = match want.get("networks").and_then(Value::as_object) {
        Some(m) => m.keys().map(|k| scoped(&nets_def, k)).collect(),
        None => vec![scoped(&nets_def, "default")],
    };
    targets.sort();
    let htargets: Vec<String> = task
        .networks
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|n| n.target.clone())
        .collect();
    cmp("networks", format!("{targets:?}"), format!("{htargets:?}"));

    let mode = deploy
        .get("mode")
        .and_then(s)
        .unwrap_or_else(|| "replicated".into());
    let hmode = serde_json::to_value(got.mode.as_ref().unwrap()).unwrap();
    let hmode_name = hmode
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_default()
        .to_ascii_lowercase();
    cmp("mode", mode.replace('-', ""), hmode_name);
    if mode == "replicated" {
        cmp(
            "replicas",
            format!("{:?}", deploy.get("replicas").and_then(Value::as_u64)),
            format!(
                "{:?}",
                got.mode
                    .as_ref()
                    .unwrap()
                    .replicated
                    .as_ref()
                    .unwrap()
                    .replicas
            ),
        );
    }
    let placement = task.placement.as_ref().unwrap();
    cmp(
        "constraints",
        format!(
            "{:?}",
            str_list(deploy.get("placement").and_then(|p| p.get("constraints")))
        ),
        format!("{:?}", placement.constraints),
    );
    cmp(
        "hostname",
        format!("{:?}", want.get("hostname").and_then(s)),
        format!("{:?}", c.hostname),
    );
    cmp(
        "user",
        format!("{:?}", want.get("user").and_then(s)),
        format!("{:?}", c.user),
    );
    cmp(
        "working_dir",
        format!("{:?}", want.get("working_dir").and_then(s)),
        format!("{:?}", c.dir),
    );
    let grace = want
        .get("stop_grace_period")
        .and_then(s)
        .map(|d| units::parse_duration(&d).unwrap());
    cmp(
        "stop_grace_period",
        format!("{grace:?}"),
        format!("{:?}", c.stop_grace_period),
    );
    if let Some(hc) = want.get("healthcheck") {
        let test = if hc.get("disable").and_then(Value::as_bool) == Some(true) {
            Some(vec!["NONE".to_string()])
        } else {
            str_list(hc.get("test"))
        };
        cmp(
            "healthcheck.test",
            format!("{test:?}"),
            format!("{:?}", c.health_check.as_ref().and_then(|h| h.test.clone())),
        );
    }
    let hosts: Option<Vec<String>> = str_list(want.get("extra_hosts")).map(|l| {
        l.iter()
            .filter_map(|h| h.split_once(':').map(|(host, ip)| format!("{ip} {host}")))
            .collect()
    });
    cmp("hosts", format!("{hosts:?}"), format!("{:?}", c.hosts));
    cmp(
        "dns",
        format!("{:?}", str_list(want.get("dns"))),
        format!(
            "{:?}",
            c.dns_config.as_ref().and_then(|d| d.nameservers.clone())
        ),
    );
    if let Some(u) = deploy.get("update_config") {
        let hu = serde_json::to_value(got.update_config.as_ref().unwrap()).unwrap();
        cmp(
            "update_config",
            format!(
                "{} {:?}",
                u.get("parallelism").and_then(Value::as_u64).unwrap_or(1),
                u.get("order").and_then(s)
            ),
            format!(
                "{} {:?}",
                hu.get("Parallelism").and_then(Value::as_u64).unwrap_or(0),
                hu.get("Order").and_then(s)
            ),
        );
    }
    let logging = want.get("logging").map(|l| {
        (
            l.get("driver").and_then(s).unwrap_or_default(),
            str_map(l.get("options")),
        )
    });
    let hlogging = task.log_driver.as_ref().map(|l| {
        (
            l.name.clone(),
            l.options
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        )
    });
    cmp("logging", format!("{logging:?}"), format!("{hlogging:?}"));
    let limits = deploy
        .get("resources")
        .and_then(|r| r.get("limits"))
        .cloned()
        .unwrap_or(Value::Null);
    let hlimits = task
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    let memory = limits
        .get("memory")
        .and_then(s)
        .map(|m| m.parse::<i64>().unwrap());
    cmp(
        "memory limit",
        format!("{memory:?}"),
        format!("{:?}", hlimits.memory_bytes),
    );
    let cpus = limits
        .get("cpus")
        .and_then(s)
        .map(|c| units::parse_cpus(&c).unwrap());
    cmp(
        "cpu limit",
        format!("{cpus:?}"),
        format!("{:?}", hlimits.nano_cpus),
    );
    diffs
}

fn compare(cfg: &Value, stack: &StackSpec) -> Vec<String> {
    let mut diffs = Vec::new();
    let services = cfg.get("services").and_then(Value::as_object).unwrap();
    let mut want_names: Vec<String> = services.keys().map(|k| format!("st_{k}")).collect();
    want_names.sort();
    let got_names: Vec<String> = stack
        .services
        .iter()
        .filter_map(|s| s.name.clone())
        .collect();
    if want_names != got_names {
        diffs.push(format!(
            "services: docker {want_names:?} hearth {got_names:?}"
        ));
        return diffs;
    }
    for (name, want) in services {
        let got = stack
            .services
            .iter()
            .find(|s| s.name.as_deref() == Some(&format!("st_{name}")))
            .unwrap();
        diffs.extend(compare_service(name, want, cfg, got));
    }
    for (section, got) in [
        (
            "secrets",
            stack
                .secrets
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        ),
        (
            "configs",
            stack
                .configs
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        ),
    ] {
        let defs = cfg.get(section).cloned().unwrap_or(Value::Null);
        let mut want: Vec<String> = defs
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, d)| d.get("external").and_then(Value::as_bool) != Some(true))
                    .map(|(k, _)| scoped(&defs, k))
                    .collect()
            })
            .unwrap_or_default();
        want.sort();
        if want != got {
            diffs.push(format!("{section}: docker {want:?} hearth {got:?}"));
        }
    }
    // Networks created: those some service uses, minus external ones.
    let nets = cfg.get("networks").cloned().unwrap_or(Value::Null);
    let mut used: Vec<String> = Vec::new();
    for svc in services.values() {
        match svc.get("networks").and_then(Value::as_object) {
            Some(m) => used.extend(m.keys().cloned()),
            None => used.push("default".into()),
        }
    }
    used.sort();
    used.dedup();
    let mut want: Vec<String> = used
        .iter()
        .filter(|k| {
            nets.get(k.as_str())
                .and_then(|n| n.get("external"))
                .and_then(Value::as_bool)
                != Some(true)
        })
        .map(|k| scoped(&nets, k))
        .collect();
    want.sort();
    let got: Vec<String> = stack.networks.iter().map(|n| n.name.clone()).collect();
    if want != got {
        diffs.push(format!("networks: docker {want:?} hearth {got:?}"));
    }
    // Network attributes, with the overlay default docker stack deploy fills in.
    for key in used.iter().filter(|k| {
        nets.get(k.as_str())
            .and_then(|n| n.get("external"))
            .and_then(Value::as_bool)
            != Some(true)
    }) {
        let def = nets.get(key.as_str()).cloned().unwrap_or(Value::Null);
        let mut labels = str_map(def.get("labels"));
        labels.insert("com.docker.stack.namespace".into(), "st".into());
        let want = format!(
            "{} attachable={} internal={} opts={:?} labels={labels:?}",
            def.get("driver")
                .and_then(s)
                .unwrap_or_else(|| "overlay".into()),
            def.get("attachable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            def.get("internal")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            str_map(def.get("driver_opts")),
        );
        let name = scoped(&nets, key);
        let Some(n) = stack.networks.iter().find(|n| n.name == name) else {
            continue;
        };
        let got = format!(
            "{} attachable={} internal={} opts={:?} labels={:?}",
            n.driver.clone().unwrap_or_default(),
            n.attachable.unwrap_or(false),
            n.internal.unwrap_or(false),
            n.options.clone().unwrap_or_default(),
            n.labels.clone().unwrap_or_default(),
        );
        if want != got {
            diffs.push(format!("network {name}:\n  docker {want}\n  hearth {got}"));
        }
    }
    diffs
}

const EDGE_CASES: &str = r#"version: "3.13"
x-common: &common
  logging:
    driver: json-file
    options: {max-size: "10m", max-file: 3}
services:
  a:
    <<: *common
    image: "busybox:${TAG:-1.36}"
    command: sh -c 'echo "$$HOME" && sleep 1' # comment
    entrypoint: ["/bin/sh"]
    environment:
      - A=1=2
      - B
      - C=
      - D=$UNSET-fallback text
      - E=${SET}
      - F=${UNSET:?a-b}
      - G=$$x
    labels: [x=1, "y= 2", z]
    extra_hosts: {db: 10.0.0.2, cache: "10.0.0.3"}
    ulimits: {nofile: {soft: 10, hard: 20}, core: 0}
    sysctls: [net.ipv4.ip_forward=1]
    dns: 8.8.8.8
    healthcheck: {test: "true", interval: 1m30s, retries: 2}
    stop_grace_period: 1m30s
    volumes:
      - type: bind
        source: ./data
        target: /data
        read_only: true
      - v1:/v1:ro
      - d:/x
      - ~/h:/h
      - type: tmpfs
        target: /t
    ports:
      - "3000-3002:3000-3002"
      - "9000:9000/udp"
      - "127.0.0.1:9100:9100"
      - 53
    secrets: [s1, {source: s2, target: renamed, mode: 0400}]
    deploy:
      mode: global
      labels: {traefik.enable: "true", n: 5, e: ""}
      resources: {limits: {cpus: "1.5", memory: 1G}}
  b:
    image: alpine
    networks:
      n1:
        aliases: [bee]
      n2:
    deploy:
      replicas: ${REPLICAS}
      endpoint_mode: dnsrr
      placement: {constraints: [node.role == manager]}
    healthcheck: {disable: true}
volumes:
  v1:
    driver: local
networks:
  n1: {driver: overlay, attachable: true}
  n2: {external: true, name: outside}
secrets:
  s1: {file: ./s1.txt}
  s2: {external: true, name: real-s2}
"#;

/// A base and an override exercising docker's merge rules.
const MERGE_BASE: &str = r#"version: "3.13"
services:
  web:
    image: nginx
    command: ["a", "b"]
    environment: {A: base, B: base, C: base}
    labels: [L=base, M=base]
    extra_hosts: ["h1:10.0.0.1"]
    dns: [1.1.1.1]
    ports: ["80:80", "443:443", "53"]
    volumes: ["data:/data", "/anon", "./b:/b"]
    secrets: [s1]
    configs: [{source: c1, target: /c1}]
    networks: {front: {aliases: [w1]}, back: null}
    logging: {driver: json-file, options: {max-size: 1m}}
    healthcheck: {test: [CMD, a], interval: 10s}
    deploy:
      replicas: 2
      labels: {D: base}
      resources: {limits: {cpus: "0.5", memory: 64M}}
      placement: {constraints: [node.role == manager]}
      update_config: {parallelism: 2, order: start-first}
  only-base:
    image: busybox
volumes:
  data: {}
networks:
  front: {}
  back: {}
secrets:
  s1: {file: ./s1}
  s2: {file: ./s2}
configs:
  c1: {file: ./c1}
"#;

const MERGE_OVERRIDE: &str = r#"version: "3.13"
services:
  web:
    image: nginx:1.27
    command: ""
    environment: [A=over, B, C=]
    labels: {M: over}
    extra_hosts: {h2: 10.0.0.2}
    dns: 8.8.8.8
    ports: [{target: 8443, published: 443, mode: host}, "54"]
    volumes: [{type: bind, source: /host, target: /data}]
    secrets: [{source: s1, target: renamed}, s2]
    networks: [back]
    logging: {options: {max-file: "2"}}
    healthcheck: {test: [CMD, b]}
    stop_grace_period: 5s
    deploy:
      replicas: 0
      labels: [E=over]
      resources: {limits: {memory: 128M}}
      placement: {constraints: [node.labels.x == y]}
      update_config: {order: stop-first}
  only-override:
    image: alpine
    logging: {driver: syslog}
networks:
  front: {driver: overlay, attachable: true}
secrets:
  s2: {external: true, name: ext-s2}
"#;

#[test]
fn translation_matches_docker_stack_config() {
    if docker_cli().is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the docker CLI (with `stack config`) is required when CI=true"
        );
        eprintln!("skipped: no docker CLI with `stack config` on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("rabbitmq.env"),
        "# RabbitMQ\nCAF_RABBITMQ_HOST\nCAF_RABBITMQ_PORT\nCAF_RABBITMQ_USERNAME\nCAF_RABBITMQ_PASSWORD\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("edge.yml"), EDGE_CASES).unwrap();
    std::fs::write(dir.path().join("merge-base.yml"), MERGE_BASE).unwrap();
    std::fs::write(dir.path().join("merge-override.yml"), MERGE_OVERRIDE).unwrap();
    let mut groups = corpus_groups();
    groups.push(vec!["edge.yml".to_string()]);
    groups.push(vec![
        "merge-base.yml".to_string(),
        "merge-override.yml".to_string(),
    ]);
    let mut failures = Vec::new();
    for group in &groups {
        let mut env: BTreeMap<String, String> = group
            .iter()
            .flat_map(|n| corpus_env(&n[..2]))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOME".into(), "/home/u".into());
        env.insert("SET".into(), "s".into());
        env.insert("REPLICAS".into(), "2".into());
        let cfg = docker_config(dir.path(), group, &env);
        let stack = hearth(dir.path(), group, &env);
        let diffs = compare(&cfg, &stack);
        if !diffs.is_empty() {
            failures.push(format!("{group:?}:\n{}", diffs.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
