//! End-to-end translation tests: whole compose files in, stack specs out, plus the shared corpus.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::swarm::spec::{self, MountType, PublishMode};

/// Side files served from memory; every path read is recorded.
#[derive(Default)]
struct MemFiles {
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Serve this content for any path not in `files` (the corpus does not ship side files).
    any: Option<Vec<u8>>,
    read: RefCell<Vec<PathBuf>>,
}

impl Files for MemFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read.borrow_mut().push(path.to_path_buf());
        match (self.files.get(path), &self.any) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(any)) => Ok(any.clone()),
            (None, None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(
    files: &[(&str, &str)],
    vars: &[(&str, &str)],
    side: &MemFiles,
) -> Result<Translation, Error> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            name: name.to_string(),
            text: text.to_string(),
        })
        .collect();
    let env = env(vars);
    translate(
        &sources,
        &Options {
            stack: "st",
            env: &env,
            working_dir: PathBuf::from("/w"),
            files: side,
        },
    )
}

fn one(text: &str) -> Result<Translation, Error> {
    run(&[("a.yml", text)], &[], &MemFiles::default())
}

fn service<'a>(t: &'a Translation, name: &str) -> &'a spec::ServiceSpec {
    t.stack
        .services
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap()
}

fn container(s: &spec::ServiceSpec) -> &spec::ContainerSpec {
    s.task_template
        .as_ref()
        .unwrap()
        .container_spec
        .as_ref()
        .unwrap()
}

#[test]
fn a_minimal_service_gets_stack_names_labels_and_the_default_network() {
    let t = one("version: '3.8'\nservices:\n  web:\n    image: busybox\n").unwrap();
    let s = service(&t, "st_web");
    let labels = s.labels.as_ref().unwrap();
    assert_eq!(labels["com.docker.stack.namespace"], "st");
    assert_eq!(labels["com.docker.stack.image"], "busybox");
    let c = container(s);
    // as docker's API client sends it; the label above keeps it as written
    assert_eq!(c.image.as_deref(), Some("busybox:latest"));
    assert_eq!(
        c.labels.as_ref().unwrap()["com.docker.stack.namespace"],
        "st"
    );
    let nets = s.task_template.as_ref().unwrap().networks.as_ref().unwrap();
    assert_eq!(nets[0].target, "st_default");
    assert_eq!(nets[0].aliases.as_deref(), Some(&["web".to_string()][..]));
    assert_eq!(t.stack.networks.len(), 1);
    assert_eq!(t.stack.networks[0].name, "st_default");
    assert_eq!(t.stack.networks[0].driver.as_deref(), Some("overlay"));
    assert_eq!(
        s.mode
            .as_ref()
            .unwrap()
            .replicated
            .as_ref()
            .unwrap()
            .replicas,
        None
    );
    assert!(t.warnings.is_empty());
}

#[test]
fn unknown_fields_are_errors_with_file_line_column_and_path() {
    let e = one("services:\n  web:\n    image: a\n    deploy:\n      replicaz: 2\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "a.yml:5:7: services.web.deploy.replicaz: unknown field"
    );
}

#[test]
fn yaml_errors_carry_the_position() {
    let e = one("services:\n  web:\n    image: [a\n").unwrap_err();
    assert!(matches!(e, Error::YamlRejected { .. }), "{e}");
    assert!(e.to_string().starts_with("a.yml:"), "{e}");
}

#[test]
fn ignored_keys_become_warnings_with_positions() {
    let t = one("services:\n  web:\n    image: a\n    build: .\n    depends_on: [db]\n    container_name: x\n  db:\n    image: b\n").unwrap();
    let got: Vec<(String, WarningKind)> = t
        .warnings
        .iter()
        .map(|w| (w.at.to_string(), w.kind))
        .collect();
    assert_eq!(
        got,
        [
            (
                "a.yml:4:5: services.web.build".to_string(),
                WarningKind::Unsupported
            ),
            (
                "a.yml:5:5: services.web.depends_on".to_string(),
                WarningKind::IgnoredByStackDeploy
            ),
            (
                "a.yml:6:5: services.web.container_name".to_string(),
                WarningKind::Deprecated
            ),
        ]
    );
}

#[test]
fn forbidden_keys_and_bad_versions_are_errors() {
    let e = one("services:\n  web:\n    image: a\n    extends: x\n").unwrap_err();
    assert!(matches!(e, Error::PropertyForbidden { .. }), "{e}");
    let e = one("version: '2'\nservices: {}\n").unwrap_err();
    assert!(matches!(e, Error::VersionRejected { .. }), "{e}");
    let e = run(
        &[
            ("a.yml", "version: '3.8'\nservices: {}\n"),
            ("b.yml", "version: '3.7'\nservices: {}\n"),
        ],
        &[],
        &MemFiles::default(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("b.yml:1:10: version:"), "{e}");
}

#[test]
fn missing_required_variables_name_the_field() {
    let e = run(
        &[("a.yml", "services:\n  web:\n    image: ${IMG?set IMG}\n")],
        &[],
        &MemFiles::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "a.yml:3:12: services.web.image: required variable IMG is missing a value: set IMG"
    );
}

#[test]
fn deploy_settings_convert_to_engine_fields() {
    let t = one(concat!(
        "services:\n  web:\n    image: a\n    deploy:\n",
        "      replicas: 3\n      endpoint_mode: dnsrr\n",
        "      labels: [a=1, b]\n",
        "      resources:\n        limits: {cpus: '0.5', memory: 512M, pids: 10}\n        reservations: {memory: 1G}\n",
        "      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}\n",
        "      update_config: {delay: 10s, failure_action: rollback, order: start-first}\n",
        "      rollback_config: {parallelism: 2, order: stop-first}\n",
        "      placement:\n        constraints: [node.role == manager]\n        preferences: [{spread: node.labels.zone}]\n        max_replicas_per_node: 1\n",
    ))
    .unwrap();
    let s = service(&t, "st_web");
    let labels = s.labels.as_ref().unwrap();
    assert_eq!((labels["a"].as_str(), labels["b"].as_str()), ("1", ""));
    let task = s.task_template.as_ref().unwrap();
    let res = task.resources.as_ref().unwrap();
    let limits = res.limits.as_ref().unwrap();
    assert_eq!(limits.nano_cpus, Some(500_000_000));
    assert_eq!(limits.memory_bytes, Some(512 * 1024 * 1024));
    assert_eq!(limits.pids, Some(10));
    assert_eq!(
        res.reservations.as_ref().unwrap().memory_bytes,
        Some(1 << 30)
    );
    let rp = task.restart_policy.as_ref().unwrap();
    assert_eq!(rp.condition, Some(spec::RestartCondition::OnFailure));
    assert_eq!(rp.delay, Some(5_000_000_000));
    assert_eq!(rp.max_attempts, Some(3));
    assert_eq!(rp.window, Some(120_000_000_000));
    let up = s.update_config.as_ref().unwrap();
    assert_eq!(up.parallelism, Some(1));
    assert_eq!(up.delay, Some(10_000_000_000));
    assert_eq!(up.failure_action, Some(spec::FailureAction::Rollback));
    assert_eq!(up.order, Some(spec::UpdateOrder::StartFirst));
    assert_eq!(s.rollback_config.as_ref().unwrap().parallelism, Some(2));
    let pl = task.placement.as_ref().unwrap();
    assert_eq!(
        pl.constraints.as_deref(),
        Some(&["node.role == manager".to_string()][..])
    );
    assert_eq!(
        pl.preferences.as_ref().unwrap()[0].spread.spread_descriptor,
        "node.labels.zone"
    );
    assert_eq!(pl.max_replicas, Some(1));
    assert_eq!(
        s.endpoint_spec.as_ref().unwrap().mode,
        Some(spec::EndpointMode::Dnsrr)
    );
    assert_eq!(
        s.mode
            .as_ref()
            .unwrap()
            .replicated
            .as_ref()
            .unwrap()
            .replicas,
        Some(3)
    );
}

#[test]
fn global_mode_with_replicas_is_rejected_at_the_mode() {
    let e = one("services:\n  web:\n    image: a\n    deploy: {mode: global, replicas: 2}\n")
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("a.yml:4:20: services.web.deploy.mode:"),
        "{e}"
    );
}

#[test]
fn container_fields_convert_like_docker() {
    let t = run(
        &[(
            "a.yml",
            concat!(
                "services:\n  web:\n    image: a\n",
                "    entrypoint: /bin/sh -c\n    command: [\"echo\", \"hi\"]\n",
                "    environment:\n      - B=2\n      - A\n      - PASS\n",
                "    env_file: ./web.env\n",
                "    healthcheck: {test: curl -f http://x, interval: 30s, timeout: 5s, retries: 3, start_period: 1m}\n",
                "    stop_grace_period: 1m30s\n    stop_signal: SIGINT\n    user: '1000'\n    working_dir: /app\n",
                "    hostname: '{{.Node.Hostname}}'\n    cap_add: [net_admin, CAP_SYS_TIME]\n    cap_drop: [NET_ADMIN, MKNOD]\n",
                "    extra_hosts: ['db:10.0.0.2']\n    dns: [1.1.1.1, not-an-ip]\n    dns_search: example.com\n",
                "    sysctls: {net.core.somaxconn: 1024}\n    ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}\n",
                "    init: true\n    tty: true\n    stdin_open: true\n    read_only: true\n",
                "    logging: {driver: json-file, options: {max-size: 10m}}\n",
            ),
        )],
        &[("PASS", "through"), ("FROMFILE", "env")],
        &MemFiles {
            files: BTreeMap::from([(
                PathBuf::from("/w/web.env"),
                b"# comment\nC=3\nFROMFILE\nB=from-file\n".to_vec(),
            )]),
            ..Default::default()
        },
    )
    .unwrap();
    let s = service(&t, "st_web");
    let c = container(s);
    assert_eq!(
        c.command.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..])
    );
    assert_eq!(
        c.args.as_deref(),
        Some(&["echo".to_string(), "hi".to_string()][..])
    );
    assert_eq!(
        c.env.as_ref().unwrap(),
        &["A", "B=2", "C=3", "FROMFILE=env", "PASS=through"]
    );
    let hc = c.health_check.as_ref().unwrap();
    assert_eq!(
        hc.test.as_deref(),
        Some(&["CMD-SHELL".to_string(), "curl -f http://x".to_string()][..])
    );
    assert_eq!(hc.interval, Some(30_000_000_000));
    assert_eq!(hc.retries, Some(3));
    assert_eq!(hc.start_period, Some(60_000_000_000));
    assert_eq!(c.stop_grace_period, Some(90_000_000_000));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(c.dir.as_deref(), Some("/app"));
    assert_eq!(c.hostname.as_deref(), Some("{{.Node.Hostname}}"));
    assert_eq!(
        c.capability_add.as_ref().unwrap(),
        &["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    );
    assert_eq!(c.capability_drop.as_ref().unwrap(), &["CAP_MKNOD"]);
    assert_eq!(c.hosts.as_ref().unwrap(), &["10.0.0.2 db"]);
    let dns = c.dns_config.as_ref().unwrap();
    assert_eq!(dns.nameservers.as_ref().unwrap(), &["1.1.1.1"]);
    assert_eq!(dns.search.as_ref().unwrap(), &["example.com"]);
    assert_eq!(c.sysctls.as_ref().unwrap()["net.core.somaxconn"], "1024");
    let ul = c.ulimits.as_ref().unwrap();
    assert_eq!(
        (ul[0].name.as_str(), ul[0].soft, ul[0].hard),
        ("nofile", 1, 2)
    );
    assert_eq!(
        (ul[1].name.as_str(), ul[1].soft, ul[1].hard),
        ("nproc", 5, 5)
    );
    assert_eq!(
        (c.init, c.tty, c.open_stdin, c.read_only),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let log = s
        .task_template
        .as_ref()
        .unwrap()
        .log_driver
        .as_ref()
        .unwrap();
    assert_eq!(log.name, "json-file");
    assert_eq!(log.options.as_ref().unwrap()["max-size"], "10m");
    // The invalid DNS entry is reported, not silently dropped.
    assert!(t
        .warnings
        .iter()
        .any(|w| w.at.path == "services.web.dns[1]" && w.kind == WarningKind::Adjusted));
}

#[test]
fn disabled_healthchecks_become_none() {
    let t = one("services:\n  web:\n    image: a\n    healthcheck: {disable: true}\n").unwrap();
    assert_eq!(
        container(service(&t, "st_web"))
            .health_check
            .as_ref()
            .unwrap()
            .test
            .as_deref(),
        Some(&["NONE".to_string()][..])
    );
}

#[test]
fn ports_short_ranges_and_long_host_mode_convert() {
    let t = one(concat!(
        "services:\n  web:\n    image: a\n    ports:\n",
        "      - '8000-8001:80-81/udp'\n      - 53\n",
        "      - {target: 443, published: 8443, mode: host, protocol: tcp}\n",
        "      - '127.0.0.1:9000:9000'\n",
    ))
    .unwrap();
    let ports = service(&t, "st_web")
        .endpoint_spec
        .as_ref()
        .unwrap()
        .ports
        .clone()
        .unwrap();
    let got: Vec<(Option<u32>, Option<u32>, Option<PublishMode>)> = ports
        .iter()
        .map(|p| (p.published_port, p.target_port, p.publish_mode))
        .collect();
    assert_eq!(
        got,
        [
            (None, Some(53), Some(PublishMode::Ingress)),
            (Some(8000), Some(80), Some(PublishMode::Ingress)),
            (Some(8001), Some(81), Some(PublishMode::Ingress)),
            (Some(8443), Some(443), Some(PublishMode::Host)),
            (Some(9000), Some(9000), Some(PublishMode::Ingress)),
        ]
    );
    assert!(t
        .warnings
        .iter()
        .any(|w| w.kind == WarningKind::Adjusted && w.at.path == "services.web.ports[3]"));
}

#[test]
fn volumes_short_long_tmpfs_bind_and_windows_paths_convert() {
    let t = run(
        &[(
            "a.yml",
            concat!(
                "services:\n  web:\n    image: a\n    volumes:\n",
                "      - data:/data:nocopy\n      - ./conf:/conf:ro\n      - d:/x\n      - /anon\n",
                "      - type: tmpfs\n        target: /tmp\n        tmpfs: {size: 1000}\n",
                "      - type: bind\n        source: ~/h\n        target: /h\n        bind: {propagation: rshared}\n",
                "      - type: volume\n        source: ext\n        target: /ext\n",
                "volumes:\n  data:\n    driver: local\n    driver_opts: {type: nfs}\n    labels: {a: b}\n  ext:\n    external: true\n    name: real-ext\n",
            ),
        )],
        &[("HOME", "/home/u")],
        &MemFiles::default(),
    )
    .unwrap();
    let mounts = container(service(&t, "st_web")).mounts.clone().unwrap();
    let data = &mounts[0];
    assert_eq!(data.r#type, Some(MountType::Volume));
    assert_eq!(data.source.as_deref(), Some("st_data"));
    let vo = data.volume_options.as_ref().unwrap();
    assert_eq!(vo.no_copy, Some(true));
    assert_eq!(
        vo.labels.as_ref().unwrap()["com.docker.stack.namespace"],
        "st"
    );
    assert_eq!(vo.driver_config.as_ref().unwrap().name, "local");
    assert_eq!(mounts[1].source.as_deref(), Some("/w/conf"));
    assert_eq!(mounts[1].read_only, Some(true));
    assert_eq!(mounts[1].r#type, Some(MountType::Bind));
    // `d:/x` is a Windows path to docker: an anonymous volume mounted at `d:/x`.
    assert_eq!(
        (
            mounts[2].r#type,
            mounts[2].source.clone(),
            mounts[2].target.as_deref()
        ),
        (Some(MountType::Volume), None, Some("d:/x"))
    );
    assert_eq!(mounts[3].target.as_deref(), Some("/anon"));
    assert_eq!(
        mounts[4].tmpfs_options.as_ref().unwrap().size_bytes,
        Some(1000)
    );
    assert_eq!(mounts[5].source.as_deref(), Some("/home/u/h"));
    assert_eq!(
        mounts[5]
            .bind_options
            .as_ref()
            .unwrap()
            .propagation
            .as_deref(),
        Some("rshared")
    );
    assert_eq!(mounts[6].source.as_deref(), Some("real-ext"));
    assert!(mounts[6].volume_options.as_ref().unwrap().labels.is_none());
    assert_eq!(t.stack.volumes.len(), 1);
    assert_eq!(t.stack.volumes[0].name, "st_data");
    assert_eq!(t.stack.externals.volumes, ["real-ext"]);
}

#[test]
fn undefined_references_are_errors_at_the_reference() {
    let e = one("services:\n  web:\n    image: a\n    networks: [missing]\n").unwrap_err();
    assert!(matches!(e, Error::ReferenceUndefined { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "a.yml:4:16: services.web.networks.missing: undefined network \"missing\""
    );
    let e = one("services:\n  web:\n    image: a\n    secrets: [nope]\n").unwrap_err();
    assert!(e.to_string().contains("undefined secret \"nope\""), "{e}");
}

#[test]
fn secrets_configs_and_networks_get_names_labels_and_data() {
    let side = MemFiles {
        files: BTreeMap::from([
            (PathBuf::from("/w/s.txt"), b"hunter2".to_vec()),
            (PathBuf::from("/abs/c.conf"), b"conf".to_vec()),
        ]),
        ..Default::default()
    };
    let t = run(
        &[(
            "a.yml",
            concat!(
                "services:\n  web:\n    image: a\n",
                "    secrets: [s, {source: ext, target: renamed, uid: '1', gid: '2', mode: 0400}]\n",
                "    configs: [{source: c, target: /etc/c.conf}]\n",
                "    networks:\n      front: {aliases: [w]}\n      hostnet:\n",
                "secrets:\n  s: {file: ./s.txt, labels: [k=v]}\n  ext: {external: {name: legacy}}\n",
                "configs:\n  c: {file: /abs/c.conf, template_driver: golang, name: fixed}\n  unused: {file: ./s.txt}\n",
                "networks:\n  front: {driver_opts: {encrypted: ''}, attachable: true, internal: true, ipam: {config: [{subnet: 10.1.0.0/24}]}}\n",
                "  hostnet: {external: true, name: host}\n",
            ),
        )],
        &[],
        &side,
    )
    .unwrap();
    let c = container(service(&t, "st_web"));
    let secrets = c.secrets.as_ref().unwrap();
    assert_eq!(secrets[0].secret_name, "legacy");
    let f = secrets[0].file.as_ref().unwrap();
    assert_eq!(
        (f.name.as_str(), f.uid.as_str(), f.gid.as_str(), f.mode),
        ("renamed", "1", "2", 0o400)
    );
    assert_eq!(secrets[1].secret_name, "st_s");
    assert_eq!(secrets[1].file.as_ref().unwrap().mode, 0o444);
    assert_eq!(c.configs.as_ref().unwrap()[0].config_name, "fixed");
    assert_eq!(t.stack.secrets.len(), 1);
    assert_eq!(t.stack.secrets[0].data.as_deref(), Some("aHVudGVyMg=="));
    assert_eq!(t.stack.secrets[0].labels.as_ref().unwrap()["k"], "v");
    // Unused configs are created too, as docker does.
    let names: Vec<&str> = t.stack.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fixed", "st_unused"]);
    assert_eq!(
        t.stack.configs[0].templating.as_ref().unwrap().name,
        "golang"
    );
    assert_eq!(t.stack.externals.secrets, ["legacy"]);
    assert_eq!(t.stack.externals.networks, ["host"]);
    let net = &t.stack.networks[0];
    assert_eq!(net.name, "st_front");
    assert_eq!((net.attachable, net.internal), (Some(true), Some(true)));
    assert_eq!(net.options.as_ref().unwrap()["encrypted"], "");
    assert_eq!(
        net.ipam.as_ref().unwrap().config.as_ref().unwrap()[0]
            .subnet
            .as_deref(),
        Some("10.1.0.0/24")
    );
    let attach = service(&t, "st_web")
        .task_template
        .as_ref()
        .unwrap()
        .networks
        .clone()
        .unwrap();
    // Sorted by target; no alias on the host network.
    assert_eq!(attach[0].target, "host");
    assert!(attach[0].aliases.is_none());
    assert_eq!(
        attach[1].aliases.as_deref(),
        Some(&["w".to_string(), "web".to_string()][..])
    );
    // The legacy `external: {name:}` form is reported as deprecated.
    assert!(t.warnings.iter().any(|w| w.kind == WarningKind::Deprecated));
}

#[test]
fn several_files_merge_in_order() {
    let t = run(
        &[
            (
                "a.yml",
                "version: '3.8'\nservices:\n  app:\n    image: traefik\n    ports: ['80:80', '443:443']\n    deploy:\n      update_config: {failure_action: rollback, order: start-first}\n",
            ),
            (
                "b.yml",
                "---\nversion: '3.8'\nservices:\n  app:\n    ports:\n      - {target: 80, published: 80, mode: host}\n      - {target: 2222, published: 2222, mode: host}\n    deploy:\n      update_config: {order: stop-first}\n",
            ),
        ],
        &[],
        &MemFiles::default(),
    )
    .unwrap();
    let s = service(&t, "st_app");
    let ports = s.endpoint_spec.as_ref().unwrap().ports.clone().unwrap();
    let got: Vec<(Option<u32>, Option<PublishMode>)> = ports
        .iter()
        .map(|p| (p.published_port, p.publish_mode))
        .collect();
    assert_eq!(
        got,
        [
            (Some(80), Some(PublishMode::Host)),
            (Some(443), Some(PublishMode::Ingress)),
            (Some(2222), Some(PublishMode::Host)),
        ]
    );
    let up = s.update_config.as_ref().unwrap();
    assert_eq!(up.failure_action, Some(spec::FailureAction::Rollback));
    assert_eq!(up.order, Some(spec::UpdateOrder::StopFirst));
}

#[test]
fn translation_is_deterministic_and_hashable() {
    let text = "services:\n  b:\n    image: x\n    environment: {Z: 1, A: 2}\n  a:\n    image: y\n";
    let t1 = one(text).unwrap();
    let t2 = one(text).unwrap();
    assert_eq!(t1, t2);
    assert_eq!(
        spec::content_hash(&t1.stack).unwrap(),
        spec::content_hash(&t2.stack).unwrap()
    );
    assert_eq!(t1.stack.services[0].name.as_deref(), Some("st_a"));
}

// ------------------------------------------------------------------------------------------
// The shared corpus (../shared/compose-corpus, described in its SOURCES.md).
// ------------------------------------------------------------------------------------------

pub(super) fn corpus_dir() -> PathBuf {
    // HEARTH_CORPUS_DIR lets a checkout elsewhere point at the corpus; the default is the
    // shared directory next to the workspace.
    std::env::var_os("HEARTH_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compose-corpus")
        })
}

/// Variables SOURCES.md lists for each file (harmless example values).
pub(super) fn corpus_env(prefix: &str) -> Vec<(&'static str, &'static str)> {
    let stack = [("STACK_NAME", "st")];
    let mut vars: Vec<(&str, &str)> = match prefix {
        "01" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
            ("TRAEFIK_YML_VERSION", "v1"),
            ("FILE_PROVIDER_YML_VERSION", "v1"),
            ("ENTRYPOINT_VERSION", "v1"),
            ("DASHBOARD_ENABLED", "false"),
            ("LOG_LEVEL", "WARN"),
        ],
        "03" => vec![
            ("DOMAIN", "room.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
        ],
        "04" => vec![
            ("DOMAIN", "bonfire.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
            ("EXTRA_DOMAINS", ""),
            ("PG_BACKUP_VERSION", "v1"),
        ],
        "06" => vec![
            ("DOMAIN", "site.example.com"),
            ("EXTRA_DOMAINS", ""),
            ("LETS_ENCRYPT_ENV", "production"),
            ("SECRET_DB_ROOT_PASSWORD_VERSION", "v1"),
            ("SECRET_DB_PASSWORD_VERSION", "v1"),
            ("ENTRYPOINT_CONF_VERSION", "v1"),
            ("NGINX_DEFAULT_CONF_VERSION", "v1"),
            ("PHP_UPLOADS_CONF_VERSION", "v1"),
            ("PHP_EXTENSIONS_TO_DISABLE", "calendar"),
        ],
        "11" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("USERNAME", "admin"),
            ("HASHED_PASSWORD", "not-a-real-hash"),
            ("EMAIL", "admin@example.com"),
        ],
        "16" => vec![("DOMAIN", "localhost")],
        "17" => vec![
            ("PWD", "/tmp/corpus"),
            ("ELASTICSEARCH_USERNAME", "elastic"),
            ("ELASTICSEARCH_PASSWORD", "changeme"),
        ],
        "18" => vec![("PWD", "/tmp/corpus")],
        "21" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("USERS", "admin:not-a-real-hash"),
        ],
        "25" => vec![
            ("JOB_SERVICE_DB_HOST", "db.example.internal"),
            ("JOB_SERVICE_DB_PORT", "5432"),
            ("JOB_SERVICE_DOCKER_HOST", "localhost"),
            ("JOB_SERVICE_PORT", "9411"),
            ("CAF_DATABASE_USERNAME", "postgres"),
            ("CAF_DATABASE_PASSWORD", "postgres"),
            ("CAF_RABBITMQ_HOST", "rabbit"),
            ("CAF_RABBITMQ_PORT", "5672"),
            ("CAF_RABBITMQ_USERNAME", "guest"),
            ("CAF_RABBITMQ_PASSWORD", "guest"),
        ],
        _ => vec![],
    };
    vars.extend(stack);
    vars
}

/// Which files are deployed together (`-c 01 -c 02`, `-c 04 -c 05`).
pub(super) fn corpus_groups() -> Vec<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory ../shared/compose-corpus must exist")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 25, "the corpus has 25 files");
    let mut groups = Vec::new();
    for name in &names {
        match &name[..2] {
            "02" | "05" => continue,
            "01" => groups.push(vec![name.clone(), names[1].clone()]),
            "04" => groups.push(vec![name.clone(), names[4].clone()]),
            _ => groups.push(vec![name.clone()]),
        }
    }
    groups
}

fn translate_corpus(group: &[String], stack: &str) -> (Result<Translation, Error>, Vec<PathBuf>) {
    let dir = corpus_dir();
    let sources: Vec<Source> = group
        .iter()
        .map(|n| Source {
            name: n.clone(),
            text: std::fs::read_to_string(dir.join(n)).unwrap(),
        })
        .collect();
    let vars = group
        .iter()
        .flat_map(|n| corpus_env(&n[..2]))
        .collect::<Vec<_>>();
    let env = env(&vars);
    // The corpus ships no side files; serve a placeholder and record what was read.
    let side = MemFiles {
        any: Some(b"corpus side file\n".to_vec()),
        files: BTreeMap::from([(
            PathBuf::from("/work/shared/compose-corpus/rabbitmq.env"),
            b"# RabbitMQ\nCAF_RABBITMQ_HOST\nCAF_RABBITMQ_PORT\nCAF_RABBITMQ_USERNAME\nCAF_RABBITMQ_PASSWORD\n".to_vec(),
        )]),
        ..Default::default()
    };
    let result = translate(
        &sources,
        &Options {
            stack,
            env: &env,
            working_dir: PathBuf::from("/work/shared/compose-corpus"),
            files: &side,
        },
    );
    let read = side.read.borrow().clone();
    (result, read)
}

/// Expected outcome per corpus group: services, networks created, external networks, and the
/// key paths of the warnings (everything docker stack deploy ignores). Documented in CORPUS.md.
struct Expect {
    prefix: &'static str,
    services: usize,
    networks: &'static [&'static str],
    external_networks: &'static [&'static str],
    warnings: &'static [&'static str],
}

const CORPUS: &[Expect] = &[
    Expect {
        prefix: "01",
        services: 1,
        networks: &[],
        external_networks: &["proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "03",
        services: 1,
        networks: &[],
        external_networks: &["proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "04",
        services: 2,
        networks: &["st_internal"],
        external_networks: &["proxy"],
        warnings: &["services.app.depends_on", "services.db.tmpfs"],
    },
    Expect {
        prefix: "06",
        services: 3,
        networks: &["st_internal"],
        external_networks: &["proxy"],
        warnings: &["services.app.depends_on", "services.frontend.depends_on"],
    },
    Expect {
        prefix: "07",
        services: 8,
        networks: &["st_net"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "08",
        services: 6,
        networks: &["st_backend", "st_default", "st_frontend"],
        external_networks: &[],
        warnings: &[
            "services.vote.depends_on",
            "services.result.depends_on",
            "services.worker.depends_on",
        ],
    },
    Expect {
        prefix: "09",
        services: 5,
        networks: &["st_back-tier", "st_default", "st_front-tier", "st_payment"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "10",
        services: 2,
        networks: &["st_agent_network"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "11",
        services: 1,
        networks: &[],
        external_networks: &["traefik-public"],
        warnings: &[],
    },
    Expect {
        prefix: "12",
        services: 4,
        networks: &["st_net"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "13",
        services: 4,
        networks: &["proxy", "st_traefik-consul", "st_traefik-docker"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "14",
        services: 3,
        networks: &["st_ghost"],
        external_networks: &["proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "15",
        services: 3,
        networks: &["st_elk"],
        external_networks: &["proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "16",
        services: 6,
        networks: &[],
        external_networks: &["logging_default", "monitor", "proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "17",
        services: 6,
        networks: &[],
        external_networks: &["elastic"],
        warnings: &[],
    },
    Expect {
        prefix: "18",
        services: 1,
        networks: &[],
        external_networks: &["host"],
        warnings: &[],
    },
    Expect {
        prefix: "19",
        services: 2,
        networks: &["st_default"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "20",
        services: 1,
        networks: &["docker_socket_proxy"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "21",
        services: 1,
        networks: &["traefik-public"],
        external_networks: &["docker_socket_proxy"],
        warnings: &[],
    },
    Expect {
        prefix: "22",
        services: 7,
        networks: &["st_functions"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "23",
        services: 11,
        networks: &["esnet", "proxy", "st_default"],
        external_networks: &[],
        warnings: &[],
    },
    Expect {
        prefix: "24",
        services: 4,
        networks: &["st_bookstack", "st_bookstack_db", "st_redis"],
        external_networks: &["traefik"],
        warnings: &[],
    },
    Expect {
        prefix: "25",
        services: 2,
        networks: &["st_default"],
        external_networks: &[],
        warnings: &[],
    },
];

#[test]
fn every_corpus_stack_translates_with_the_documented_outcome() {
    let groups = corpus_groups();
    assert_eq!(groups.len(), CORPUS.len());
    for (group, want) in groups.iter().zip(CORPUS) {
        assert_eq!(&group[0][..2], want.prefix);
        let (result, _) = translate_corpus(group, "st");
        let t = result.unwrap_or_else(|e| panic!("{group:?}: {e}"));
        assert_eq!(t.stack.services.len(), want.services, "{group:?}");
        for s in &t.stack.services {
            assert!(s.name.as_deref().unwrap().starts_with("st_"));
            let labels = s.labels.as_ref().unwrap();
            assert_eq!(labels["com.docker.stack.namespace"], "st");
        }
        let nets: Vec<&str> = t.stack.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nets, want.networks, "{group:?}");
        assert_eq!(
            t.stack.externals.networks, want.external_networks,
            "{group:?}"
        );
        let warned: Vec<&str> = t.warnings.iter().map(|w| w.at.path.as_str()).collect();
        assert_eq!(warned, want.warnings, "{group:?}");
    }
}

#[test]
fn corpus_side_files_are_read_where_docker_reads_them() {
    let groups = corpus_groups();
    let group = groups.iter().find(|g| g[0].starts_with("25")).unwrap();
    let (result, read) = translate_corpus(group, "st");
    let t = result.unwrap();
    // Both services list the env file; docker reads it once per service too.
    assert_eq!(
        read,
        vec![PathBuf::from("/work/shared/compose-corpus/rabbitmq.env"); 2]
    );
    // Bare names in the env file are taken from the environment.
    let env = container(&t.stack.services[0])
        .env
        .clone()
        .unwrap_or_default();
    let all: Vec<String> = t
        .stack
        .services
        .iter()
        .flat_map(|s| container(s).env.clone().unwrap_or_default())
        .collect();
    assert!(
        all.contains(&"CAF_RABBITMQ_HOST=rabbit".to_string()),
        "{env:?} / {all:?}"
    );
    // 17 reads its logstash config from $PWD, which interpolation made absolute.
    let group = groups.iter().find(|g| g[0].starts_with("17")).unwrap();
    let (_, read) = translate_corpus(group, "st");
    assert_eq!(
        read,
        [PathBuf::from(
            "/tmp/corpus/elk/logstash/config/pipeline/logstash.conf"
        )]
    );
}

#[test]
fn corpus_required_variables_fail_with_their_message() {
    let groups = corpus_groups();
    let group = groups.iter().find(|g| g[0].starts_with("11")).unwrap();
    let dir = corpus_dir();
    let sources = vec![Source {
        name: group[0].clone(),
        text: std::fs::read_to_string(dir.join(&group[0])).unwrap(),
    }];
    let env = env(&[]);
    let e = translate(
        &sources,
        &Options {
            stack: "st",
            env: &env,
            working_dir: dir,
            files: &MemFiles::default(),
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::InterpolationFailed { .. }), "{e}");
    assert!(e.to_string().contains("Variable not set"), "{e}");
}

#[test]
fn corpus_specs_match_their_snapshots() {
    for prefix in ["01", "08", "13", "23"] {
        let groups = corpus_groups();
        let group = groups.iter().find(|g| g[0].starts_with(prefix)).unwrap();
        let (result, _) = translate_corpus(group, "st");
        let t = result.unwrap();
        insta::assert_json_snapshot!(format!("corpus-{prefix}"), t.stack);
    }
}

#[test]
fn overlay_02_alone_is_rejected_for_its_missing_image() {
    let dir = corpus_dir();
    let name = "02-ahdinosaur-coop-cloud-traefik-compose-host-overlay.yml";
    let (result, _) = {
        let sources = vec![Source {
            name: name.into(),
            text: std::fs::read_to_string(dir.join(name)).unwrap(),
        }];
        let env = env(&[]);
        let side = MemFiles::default();
        (
            translate(
                &sources,
                &Options {
                    stack: "st",
                    env: &env,
                    working_dir: dir.clone(),
                    files: &side,
                },
            ),
            (),
        )
    };
    let e = result.unwrap_err();
    assert!(
        e.to_string()
            .contains("services.app.image: image is required"),
        "{e}"
    );
}

#[test]
fn errors_point_at_the_offending_value() {
    let cases: &[(&str, &str)] = &[
        (
            "services:\n  web:\n    image: a\n    stop_grace_period: 10\n",
            "a.yml:4:24: services.web.stop_grace_period: must be a string, not integer",
        ),
        (
            "services:\n  web:\n    image: a\n    stop_grace_period: 10x\n",
            "a.yml:4:24: services.web.stop_grace_period: unknown unit \"x\" in duration \"10x\"",
        ),
        (
            "services:\n  web:\n    image: a\n    ports: ['80:x']\n",
            "a.yml:4:13: services.web.ports[0]: invalid containerPort: x",
        ),
        (
            "services:\n  web:\n    image: 'a$'\n",
            "a.yml:3:12: services.web.image: invalid interpolation format: \"a$\"; you may need to escape any $ with another $",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      resources: {limits: {memory: lots}}\n",
            "a.yml:5:36: services.web.deploy.resources.limits.memory: invalid size: \"lots\"",
        ),
        (
            "services:\n  web:\n    image: a\n    volumes: [{source: x, target: /x}]\n",
            "a.yml:4:15: services.web.volumes[0]: type is required in the long volume syntax",
        ),
        (
            "version: '3.6'\nservices:\n  web:\n    image: a\n    init: true\n",
            "a.yml:5:5: services.web.init: needs compose file version 3.7 or later; the file declares 3.6",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      restart_policy: {condition: always}\n",
            "a.yml:5:35: services.web.deploy.restart_policy.condition: invalid restart condition \"always\": must be none, on-failure or any",
        ),
    ];
    for (text, want) in cases {
        let e = one(text).unwrap_err();
        assert_eq!(&e.to_string(), want);
    }
}

/// Compose-shaped fragments for the no-panic property below.
const FRAGMENTS: &[&str] = &[
    "services:",
    "\n",
    "  ",
    "    ",
    "web:",
    "image: a",
    "ports:",
    "- ",
    "'80:80'",
    "80-81:90",
    "$",
    "${A:-b}",
    "$$",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "deploy:",
    "replicas: 2",
    "mode: global",
    "&a ",
    "*a",
    "<<: *a",
    "x-a:",
    "volumes:",
    "/x:/y",
    "d:/x",
    "~/h:/h",
    "type: tmpfs",
    "networks:",
    "external: true",
    "name: n",
    "secrets:",
    "configs:",
    "file: ./f",
    "source: s",
    "environment:",
    "A=1",
    "labels:",
    "healthcheck:",
    "test: x",
    "disable: true",
    "0555",
    "1.5",
    "null",
    "true",
    "'",
    "\"",
    "#",
    "version: '3.8'",
    "stop_grace_period: 1m",
    "cpus: '0.5'",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    #[test]
    fn translation_never_panics_on_compose_like_input(
        picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..60)
    ) {
        let text: String = picks.iter().map(|i| FRAGMENTS[*i]).collect::<Vec<_>>().join("");
        let side = MemFiles { any: Some(b"x".to_vec()), ..Default::default() };
        // Either outcome is fine; a panic fails the property.
        let _ = run(&[("p.yml", &text)], &[("A", "1")], &side);
    }
}

#[test]
fn jobs_generic_resources_credential_specs_and_isolation_convert() {
    let t = one(concat!(
        "version: '3.13'\nservices:\n",
        "  job:\n    image: a\n    deploy: {mode: replicated-job, replicas: 3}\n",
        "  gjob:\n    image: a\n    deploy: {mode: global-job}\n",
        "  gpu:\n    image: a\n    isolation: process\n    credential_spec: {file: spec.json}\n",
        "    cap_add: [ALL, NET_ADMIN]\n",
        "    deploy:\n      resources:\n        reservations:\n          generic_resources:\n",
        "            - discrete_resource_spec: {kind: gpu, value: 2}\n",
    ))
    .unwrap();
    let job = service(&t, "st_job").mode.clone().unwrap();
    let rj = job.replicated_job.unwrap();
    assert_eq!(
        (rj.max_concurrent, rj.total_completions),
        (Some(3), Some(3))
    );
    assert!(service(&t, "st_gjob")
        .mode
        .as_ref()
        .unwrap()
        .global_job
        .is_some());
    let gpu = service(&t, "st_gpu");
    let c = container(gpu);
    assert_eq!(c.isolation.as_deref(), Some("process"));
    assert_eq!(
        c.privileges
            .as_ref()
            .unwrap()
            .credential_spec
            .as_ref()
            .unwrap()
            .file
            .as_deref(),
        Some("spec.json")
    );
    assert_eq!(c.capability_add.as_ref().unwrap(), &["ALL"]);
    let generic = gpu
        .task_template
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .reservations
        .as_ref()
        .unwrap()
        .generic_resources
        .clone()
        .unwrap();
    let d = generic[0].discrete_resource_spec.as_ref().unwrap();
    assert_eq!((d.kind.as_str(), d.value), ("gpu", 2));
    let e = one("services:\n  a:\n    image: a\n    credential_spec: {config: c}\n").unwrap_err();
    assert!(e.to_string().contains("credential_spec.config"), "{e}");
}
