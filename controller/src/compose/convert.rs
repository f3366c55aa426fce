//! The merged compose tree → Engine API specs, following docker/cli's `cli/compose/convert`
//! (and the defaults `docker stack deploy` adds when it creates networks).
//!
//! # Guarantees
//! - Names: services, and networks/volumes/secrets/configs without `name:`, are `<stack>_<key>`;
//!   a service with no `networks:` joins `<stack>_default` (an overlay network).
//! - Labels: `com.docker.stack.namespace=<stack>` on every service, container spec, network,
//!   volume, secret and config; `com.docker.stack.image=<image>` on the service.
//! - Images: the container spec's image is tagged the way docker's API client tags it before
//!   `ServiceCreate` (`busybox` → `busybox:latest`, see `image.rs`); the
//!   `com.docker.stack.image` label keeps the image as written.
//! - Only networks some service uses are created (as docker does); all non-external secrets
//!   and configs are created, used or not (as docker does); named volumes a service mounts are
//!   listed in [`StackSpec::volumes`] (docker lets the tasks create them with the same driver
//!   and labels, which the mounts' `VolumeOptions` also carry).
//! - Every list is sorted as docker sorts it (env, secrets, configs, networks, ports, ulimits).

use std::collections::BTreeSet;

use super::image;
use super::schema::join;
use super::units;
use super::{Ctx, Error, Warning};
use crate::swarm::spec::{
    self, BindOptions, ConfigReference, ConfigSpec, ContainerSpec, CredentialSpec,
    DiscreteResource, DnsConfig, Driver, EndpointMode, EndpointSpec, FailureAction, FileTarget,
    GenericResource, HealthCheck, Ipam, IpamConfig, Limit, Map, Mount, MountType,
    NetworkAttachment, NetworkSpec, Placement, PlacementPreference, PortConfig, PortProtocol,
    Privileges, PublishMode, Replicated, ReplicatedJob, Reservation, Resources, RestartCondition,
    RestartPolicy, SecretReference, SecretSpec, ServiceMode, ServiceSpec, Spread, StackSpec,
    TaskSpec, TmpfsOptions, Ulimit, UpdateConfig, UpdateOrder, VolumeOptions, VolumeSpec,
};
use crate::yaml::{Loc, Node, V};

pub use crate::swarm::labels::{IMAGE as LABEL_IMAGE, NAMESPACE as LABEL_NAMESPACE};

fn entries(node: Option<&Node>) -> Vec<(String, Node)> {
    match node.map(|n| &n.v) {
        Some(V::Map(e)) => e.iter().map(|(k, v)| (k.name.clone(), v.clone())).collect(),
        _ => Vec::new(),
    }
}

fn items(node: Option<&Node>) -> Vec<Node> {
    match node.map(|n| &n.v) {
        Some(V::Seq(list)) => list.clone(),
        _ => Vec::new(),
    }
}

fn text(node: &Node, key: &str) -> Option<String> {
    node.get(key)
        .and_then(Node::scalar_string)
        .filter(|s| !s.is_empty())
}

fn strings(node: Option<&Node>) -> Option<Vec<String>> {
    let list: Vec<String> = items(node).iter().filter_map(Node::scalar_string).collect();
    (!list.is_empty()).then_some(list)
}

fn string_map(node: Option<&Node>) -> Option<Map> {
    let map: Map = entries(node)
        .into_iter()
        .map(|(k, v)| (k, v.scalar_string().unwrap_or_default()))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn with_stack_label(ns: &str, labels: Option<Map>) -> Map {
    let mut labels = labels.unwrap_or_default();
    labels.insert(LABEL_NAMESPACE.into(), ns.into());
    labels
}

fn scope(ns: &str, name: &str) -> String {
    format!("{ns}_{name}")
}

struct Conv<'c, 'a> {
    ctx: &'c Ctx<'a>,
    ns: String,
    networks: Vec<(String, Node)>,
    volumes: Vec<(String, Node)>,
    secrets: Vec<(String, Node)>,
    configs: Vec<(String, Node)>,
}

impl Conv<'_, '_> {
    fn err(&self, at: Loc, path: &str, message: impl Into<String>) -> Error {
        self.ctx.value_err(at, path, message)
    }

    fn undefined(&self, at: Loc, path: &str, message: String) -> Error {
        Error::ReferenceUndefined {
            at: self.ctx.pos(at, path),
            message,
        }
    }

    fn duration(&self, node: &Node, key: &str, path: &str) -> Result<Option<i64>, Error> {
        match node.get(key) {
            None => Ok(None),
            Some(n) => {
                let s = n.scalar_string().unwrap_or_default();
                units::parse_duration(&s)
                    .map(Some)
                    .map_err(|m| self.err(n.at, &join(path, key), m))
            }
        }
    }

    fn uint(&self, node: &Node, key: &str, path: &str) -> Result<Option<u64>, Error> {
        match node.get(key) {
            None => Ok(None),
            Some(n) => match n.v {
                V::Int(i) if i >= 0 => Ok(Some(i.unsigned_abs())),
                V::UInt(u) => Ok(Some(u)),
                V::Float(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
                _ => Err(self.err(n.at, &join(path, key), "must be a non-negative integer")),
            },
        }
    }

    fn lookup<'n>(list: &'n [(String, Node)], name: &str) -> Option<&'n Node> {
        list.iter().find(|(k, _)| k == name).map(|(_, n)| n)
    }

    fn is_external(node: &Node) -> bool {
        matches!(node.get("external").map(|n| &n.v), Some(V::Bool(true)))
    }

    /// The name top-level secret or config `internal` is created under (its `name:`, else
    /// scoped to the stack), as `docker stack deploy` names secrets and configs alike: `None`
    /// when it is external (then listed in `externals`); a `name:` is kept exactly (listed in
    /// `exact`).
    fn object_name(
        &self,
        internal: &str,
        cfg: &Node,
        externals: &mut Vec<String>,
        exact: &mut BTreeSet<String>,
    ) -> Option<String> {
        let name = text(cfg, "name").unwrap_or_else(|| scope(&self.ns, internal));
        if Conv::is_external(cfg) {
            externals.push(name);
            return None;
        }
        if cfg.get("name").is_some() {
            exact.insert(name.clone());
        }
        Some(name)
    }
}

/// A secret's or config's `template_driver`.
fn templating(cfg: &Node) -> Option<Driver> {
    text(cfg, "template_driver").map(|d| Driver {
        name: d,
        options: None,
    })
}

/// Converts the merged tree.
pub(crate) fn convert(
    ctx: &Ctx<'_>,
    root: &Node,
    warnings: &mut Vec<Warning>,
) -> Result<StackSpec, Error> {
    let conv = Conv {
        ctx,
        ns: ctx.stack().to_string(),
        networks: entries(root.get("networks")),
        volumes: entries(root.get("volumes")),
        secrets: entries(root.get("secrets")),
        configs: entries(root.get("configs")),
    };
    let mut stack = StackSpec {
        namespace: conv.ns.clone(),
        ..Default::default()
    };
    let mut used_networks: BTreeSet<String> = BTreeSet::new();
    let mut used_volumes: BTreeSet<String> = BTreeSet::new();
    let mut services = entries(root.get("services"));
    services.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, svc) in &services {
        let path = join("services", name);
        let spec = conv.service(
            name,
            svc,
            &path,
            &mut used_networks,
            &mut used_volumes,
            warnings,
        )?;
        stack.services.push(spec);
    }

    // Networks used by services.
    for internal in &used_networks {
        let cfg = Conv::lookup(&conv.networks, internal);
        let empty = Node::new(V::Map(Vec::new()), root.at);
        let cfg = cfg.unwrap_or(&empty);
        if Conv::is_external(cfg) {
            stack
                .externals
                .networks
                .push(text(cfg, "name").unwrap_or_else(|| internal.clone()));
            continue;
        }
        let ipam_node = cfg.get("ipam");
        let ipam = ipam_node.and_then(|ipam| {
            let driver = text(ipam, "driver");
            let configs: Vec<IpamConfig> = items(ipam.get("config"))
                .iter()
                .map(|c| IpamConfig {
                    subnet: text(c, "subnet"),
                    ..Default::default()
                })
                .collect();
            (driver.is_some() || !configs.is_empty()).then(|| Ipam {
                driver,
                config: (!configs.is_empty()).then_some(configs),
                options: None,
            })
        });
        let bool_of =
            |key: &str| matches!(cfg.get(key).map(|n| &n.v), Some(V::Bool(true))).then_some(true);
        stack.networks.push(NetworkSpec {
            name: text(cfg, "name").unwrap_or_else(|| scope(&conv.ns, internal)),
            // docker stack deploy fills in the overlay driver when none is given.
            driver: Some(text(cfg, "driver").unwrap_or_else(|| "overlay".into())),
            internal: bool_of("internal"),
            attachable: bool_of("attachable"),
            ipam,
            options: string_map(cfg.get("driver_opts")),
            labels: Some(with_stack_label(&conv.ns, string_map(cfg.get("labels")))),
            ..Default::default()
        });
    }
    stack.networks.sort_by(|a, b| a.name.cmp(&b.name));

    // Named volumes mounted by services.
    for internal in &used_volumes {
        let Some(cfg) = Conv::lookup(&conv.volumes, internal) else {
            continue;
        };
        let name = text(cfg, "name").unwrap_or_else(|| scope(&conv.ns, internal));
        if Conv::is_external(cfg) {
            stack.externals.volumes.push(name);
            continue;
        }
        stack.volumes.push(VolumeSpec {
            name,
            driver: text(cfg, "driver"),
            driver_opts: string_map(cfg.get("driver_opts")),
            labels: Some(with_stack_label(&conv.ns, string_map(cfg.get("labels")))),
        });
    }
    stack.volumes.sort_by(|a, b| a.name.cmp(&b.name));

    // All secrets and configs the files define.
    for (internal, cfg) in &conv.secrets {
        let path = join("secrets", internal);
        let exact = &mut stack.exact_names.secrets;
        let Some(name) = conv.object_name(internal, cfg, &mut stack.externals.secrets, exact)
        else {
            continue;
        };
        let mut spec = SecretSpec {
            name,
            labels: Some(with_stack_label(&conv.ns, string_map(cfg.get("labels")))),
            templating: templating(cfg),
            ..Default::default()
        };
        if let Some(driver) = text(cfg, "driver") {
            spec.driver = Some(Driver {
                name: driver,
                options: string_map(cfg.get("driver_opts")),
            });
            spec.set_data(&[]);
        } else {
            spec.set_data(&conv.object_file(cfg, &path, "secret", internal)?);
        }
        stack.secrets.push(spec);
    }
    for (internal, cfg) in &conv.configs {
        let path = join("configs", internal);
        let exact = &mut stack.exact_names.configs;
        let Some(name) = conv.object_name(internal, cfg, &mut stack.externals.configs, exact)
        else {
            continue;
        };
        let mut spec = ConfigSpec {
            name,
            labels: Some(with_stack_label(&conv.ns, string_map(cfg.get("labels")))),
            templating: templating(cfg),
            ..Default::default()
        };
        spec.set_data(&conv.object_file(cfg, &path, "config", internal)?);
        stack.configs.push(spec);
    }
    stack.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    stack.configs.sort_by(|a, b| a.name.cmp(&b.name));
    for list in [
        &mut stack.externals.networks,
        &mut stack.externals.volumes,
        &mut stack.externals.secrets,
        &mut stack.externals.configs,
    ] {
        list.sort();
        list.dedup();
    }
    Ok(stack)
}

impl Conv<'_, '_> {
    fn object_file(
        &self,
        cfg: &Node,
        path: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<u8>, Error> {
        match cfg.get("file") {
            Some(file) => {
                let p = std::path::PathBuf::from(file.scalar_string().unwrap_or_default());
                self.ctx.read_file(file.at, &join(path, "file"), &p)
            }
            None => Err(self.err(
                cfg.at,
                path,
                format!(
                    "{kind} {name}: one of file, driver (secrets only) or external is required"
                ),
            )),
        }
    }

    #[allow(clippy::too_many_lines)]
    fn service(
        &self,
        name: &str,
        svc: &Node,
        path: &str,
        used_networks: &mut BTreeSet<String>,
        used_volumes: &mut BTreeSet<String>,
        warnings: &mut Vec<Warning>,
    ) -> Result<ServiceSpec, Error> {
        let ns = self.ns.as_str();
        let Some(image) = text(svc, "image") else {
            return Err(self.err(
                svc.at,
                &join(path, "image"),
                "image is required (hearth does not build images, and swarm needs an image)",
            ));
        };
        let empty = Node::new(V::Map(Vec::new()), svc.at);
        let deploy = svc.get("deploy").filter(|d| !d.is_null()).unwrap_or(&empty);
        let dpath = join(path, "deploy");

        // Networks.
        let mut attachments = Vec::new();
        let mut nets = entries(svc.get("networks"));
        if nets.is_empty() {
            nets.push(("default".into(), Node::new(V::Null, svc.at)));
        }
        for (net, attach) in &nets {
            let cfg = Self::lookup(&self.networks, net);
            if cfg.is_none() && net != "default" {
                return Err(self.undefined(
                    attach.at,
                    &join(&join(path, "networks"), net),
                    format!("undefined network {net:?}"),
                ));
            }
            used_networks.insert(net.clone());
            let target = cfg
                .and_then(|c| text(c, "name"))
                .unwrap_or_else(|| scope(ns, net));
            let mut aliases = strings(attach.get("aliases")).unwrap_or_default();
            let user_defined = !matches!(target.as_str(), "default" | "bridge" | "host" | "none")
                && !target.starts_with("container:");
            if user_defined {
                aliases.push(name.to_string());
            }
            attachments.push(NetworkAttachment {
                target,
                aliases: (!aliases.is_empty()).then_some(aliases),
                driver_opts: string_map(attach.get("driver_opts")),
            });
        }
        attachments.sort_by(|a, b| a.target.cmp(&b.target));

        // Mounts.
        let mut mounts = Vec::new();
        for (i, vol) in items(svc.get("volumes")).iter().enumerate() {
            let vpath = format!("{path}.volumes[{i}]");
            mounts.push(self.mount(vol, &vpath, used_volumes)?);
        }

        // Secrets and configs.
        let mut secrets = Vec::new();
        for (i, r) in items(svc.get("secrets")).iter().enumerate() {
            let rpath = format!("{path}.secrets[{i}]");
            let (file, name) = self.file_ref(r, &rpath, &self.secrets, "secret")?;
            secrets.push(SecretReference {
                file: Some(file),
                secret_id: None,
                secret_name: name,
            });
        }
        secrets.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
        let mut configs = Vec::new();
        for (i, r) in items(svc.get("configs")).iter().enumerate() {
            let rpath = format!("{path}.configs[{i}]");
            let (file, name) = self.file_ref(r, &rpath, &self.configs, "config")?;
            configs.push(ConfigReference {
                file: Some(file),
                config_id: None,
                config_name: name,
            });
        }
        configs.sort_by(|a, b| a.config_name.cmp(&b.config_name));

        // Environment, sorted as docker sorts it.
        let mut env: Vec<String> = entries(svc.get("environment"))
            .into_iter()
            .map(|(k, v)| match v.v {
                V::Null => k,
                _ => format!("{k}={}", v.scalar_string().unwrap_or_default()),
            })
            .collect();
        env.sort();

        // Extra hosts: `host:ip` → `ip host`.
        let hosts: Vec<String> = strings(svc.get("extra_hosts"))
            .unwrap_or_default()
            .iter()
            .filter_map(|h| h.split_once(':').map(|(host, ip)| format!("{ip} {host}")))
            .collect();

        // DNS: docker keeps only valid IP addresses as name servers.
        let mut nameservers = Vec::new();
        for (i, d) in items(svc.get("dns")).iter().enumerate() {
            let addr = d.scalar_string().unwrap_or_default();
            if addr.parse::<std::net::IpAddr>().is_ok() {
                nameservers.push(addr);
            } else {
                warnings.push(Warning {
                    at: self.ctx.pos(d.at, &format!("{path}.dns[{i}]")),
                    kind: super::WarningKind::Adjusted,
                    message: format!(
                        "ignored: {addr:?} is not an IP address (docker drops it too)"
                    ),
                });
            }
        }
        let search = strings(svc.get("dns_search"));
        let dns_config = (!nameservers.is_empty() || search.is_some()).then(|| DnsConfig {
            nameservers: (!nameservers.is_empty()).then_some(nameservers),
            search,
            options: None,
        });

        let health_check = match svc.get("healthcheck") {
            None => None,
            Some(hc) => Some(self.healthcheck(hc, &join(path, "healthcheck"))?),
        };

        let (cap_add, cap_drop) = effective_caps(
            strings(svc.get("cap_add")).unwrap_or_default(),
            strings(svc.get("cap_drop")).unwrap_or_default(),
        );

        let mut ulimits: Vec<Ulimit> = Vec::new();
        for (uname, u) in entries(svc.get("ulimits")) {
            let upath = join(&join(path, "ulimits"), &uname);
            let (soft, hard) = match u.v {
                V::Int(single) => (single, single),
                _ => {
                    let get = |k: &str| match u.get(k).map(|n| &n.v) {
                        Some(V::Int(i)) => Ok(*i),
                        _ => Err(self.err(u.at, &upath, format!("{k} is required"))),
                    };
                    (get("soft")?, get("hard")?)
                }
            };
            ulimits.push(Ulimit {
                name: uname,
                soft,
                hard,
            });
        }
        ulimits.sort_by(|a, b| a.name.cmp(&b.name));

        // docker/cli always sends `Privileges` (with null fields when nothing is set); the
        // daemon stores and shows it so, and a spec without it differs from docker's: a
        // `docker stack deploy` over hearth's stack would roll every task (#13).
        let privileges = match svc.get("credential_spec") {
            None => Some(Privileges::default()),
            Some(cs) => {
                let spec = CredentialSpec {
                    config: text(cs, "config"),
                    file: text(cs, "file"),
                    registry: text(cs, "registry"),
                };
                let set = [&spec.config, &spec.file, &spec.registry]
                    .iter()
                    .filter(|v| v.is_some())
                    .count();
                if set > 1 {
                    return Err(self.err(
                        cs.at,
                        &join(path, "credential_spec"),
                        "invalid credential spec: set only one of config, file and registry",
                    ));
                }
                if spec.config.is_some() {
                    return Err(self.err(
                        cs.at,
                        &join(path, "credential_spec.config"),
                        "hearth does not support credential specs stored in swarm configs (a Windows-only feature); use file or registry",
                    ));
                }
                Some(Privileges {
                    credential_spec: (set == 1).then_some(spec),
                    ..Privileges::default()
                })
            }
        };

        let bool_at =
            |key: &str| matches!(svc.get(key).map(|n| &n.v), Some(V::Bool(true))).then_some(true);
        let init = match svc.get("init").map(|n| &n.v) {
            Some(V::Bool(b)) => Some(*b),
            _ => None,
        };

        let container = ContainerSpec {
            image: Some(image::with_default_tag(&image)),
            labels: Some(with_stack_label(ns, string_map(svc.get("labels")))),
            command: strings(svc.get("entrypoint")),
            args: strings(svc.get("command")),
            hostname: text(svc, "hostname"),
            env: (!env.is_empty()).then_some(env),
            dir: text(svc, "working_dir"),
            user: text(svc, "user"),
            groups: None,
            privileges,
            tty: bool_at("tty"),
            open_stdin: bool_at("stdin_open"),
            read_only: bool_at("read_only"),
            mounts: (!mounts.is_empty()).then_some(mounts),
            stop_signal: text(svc, "stop_signal"),
            stop_grace_period: self.duration(svc, "stop_grace_period", path)?,
            health_check,
            hosts: (!hosts.is_empty()).then_some(hosts),
            dns_config,
            secrets: (!secrets.is_empty()).then_some(secrets),
            configs: (!configs.is_empty()).then_some(configs),
            init,
            sysctls: string_map(svc.get("sysctls")),
            capability_add: cap_add,
            capability_drop: cap_drop,
            ulimits: (!ulimits.is_empty()).then_some(ulimits),
            isolation: text(svc, "isolation"),
        };

        let log_driver = svc.get("logging").map(|l| Driver {
            name: text(l, "driver").unwrap_or_default(),
            options: string_map(l.get("options")),
        });

        let task = TaskSpec {
            container_spec: Some(container),
            resources: Some(self.resources(deploy, &dpath)?),
            restart_policy: match deploy.get("restart_policy") {
                None => None,
                Some(rp) => Some(self.restart_policy(rp, &join(&dpath, "restart_policy"))?),
            },
            placement: Some(self.placement(deploy, &dpath)?),
            networks: Some(attachments),
            log_driver,
        };

        let mut labels = with_stack_label(ns, string_map(deploy.get("labels")));
        labels.insert(LABEL_IMAGE.into(), image);

        Ok(ServiceSpec {
            name: Some(scope(ns, name)),
            labels: Some(labels),
            task_template: Some(task),
            mode: Some(self.mode(deploy, &dpath)?),
            update_config: match deploy.get("update_config") {
                None => None,
                Some(u) => Some(self.update_config(u, &join(&dpath, "update_config"), false)?),
            },
            rollback_config: match deploy.get("rollback_config") {
                None => None,
                Some(u) => Some(self.update_config(u, &join(&dpath, "rollback_config"), true)?),
            },
            endpoint_spec: Some(self.endpoint(svc, deploy, path, &dpath)?),
        })
    }

    fn file_ref(
        &self,
        r: &Node,
        path: &str,
        defined: &[(String, Node)],
        kind: &str,
    ) -> Result<(FileTarget, String), Error> {
        let source = text(r, "source").unwrap_or_default();
        let Some(cfg) = Self::lookup(defined, &source) else {
            return Err(self.undefined(
                r.at,
                &join(path, "source"),
                format!("undefined {kind} {source:?}"),
            ));
        };
        let name = text(cfg, "name").unwrap_or_else(|| scope(&self.ns, &source));
        let mode = match r.get("mode") {
            None => 0o444,
            Some(m) => match m.v {
                V::Int(i) => u32::try_from(i)
                    .map_err(|_| self.err(m.at, &join(path, "mode"), "invalid file mode"))?,
                V::Float(f) if f >= 0.0 && f <= f64::from(u32::MAX) => f as u32,
                _ => return Err(self.err(m.at, &join(path, "mode"), "invalid file mode")),
            },
        };
        Ok((
            FileTarget {
                name: text(r, "target").unwrap_or(source),
                uid: text(r, "uid").unwrap_or_else(|| "0".into()),
                gid: text(r, "gid").unwrap_or_else(|| "0".into()),
                mode,
            },
            name,
        ))
    }

    fn mount(
        &self,
        vol: &Node,
        path: &str,
        used_volumes: &mut BTreeSet<String>,
    ) -> Result<Mount, Error> {
        let kind = text(vol, "type").unwrap_or_else(|| "volume".into());
        let source = text(vol, "source");
        let target = text(vol, "target");
        let read_only =
            matches!(vol.get("read_only").map(|n| &n.v), Some(V::Bool(true))).then_some(true);
        let mut m = Mount {
            target,
            source: source.clone(),
            read_only,
            consistency: text(vol, "consistency"),
            ..Default::default()
        };
        let has = |k: &str| vol.get(k).is_some();
        let incompatible = |opt: &str, ty: &str| {
            self.err(
                vol.at,
                &join(path, opt),
                format!("{opt} options are incompatible with type {ty}"),
            )
        };
        match kind.as_str() {
            "volume" => {
                m.r#type = Some(MountType::Volume);
                if has("tmpfs") {
                    return Err(incompatible("tmpfs", "volume"));
                }
                if has("bind") {
                    return Err(incompatible("bind", "volume"));
                }
                let Some(src) = source else {
                    return Ok(m);
                };
                let Some(cfg) = Self::lookup(&self.volumes, &src) else {
                    return Err(self.undefined(vol.at, &join(path, "source"), format!("undefined volume {src:?}")));
                };
                used_volumes.insert(src.clone());
                m.source = Some(text(cfg, "name").unwrap_or_else(|| scope(&self.ns, &src)));
                let nocopy = matches!(
                    vol.get("volume").and_then(|v| v.get("nocopy")).map(|n| &n.v),
                    Some(V::Bool(true))
                );
                let mut options = VolumeOptions {
                    no_copy: nocopy.then_some(true),
                    ..Default::default()
                };
                if !Self::is_external(cfg) {
                    options.labels = Some(with_stack_label(&self.ns, string_map(cfg.get("labels"))));
                    let driver = text(cfg, "driver");
                    let opts = string_map(cfg.get("driver_opts"));
                    if driver.is_some() || cfg.get("driver_opts").is_some() {
                        options.driver_config = Some(Driver {
                            name: driver.unwrap_or_default(),
                            options: opts,
                        });
                    }
                }
                m.volume_options = Some(options);
            }
            "bind" => {
                m.r#type = Some(MountType::Bind);
                if source.is_none() {
                    return Err(self.err(vol.at, path, "invalid bind source, source cannot be empty"));
                }
                if has("volume") {
                    return Err(incompatible("volume", "bind"));
                }
                if has("tmpfs") {
                    return Err(incompatible("tmpfs", "bind"));
                }
                if let Some(b) = vol.get("bind") {
                    m.bind_options = Some(BindOptions {
                        propagation: text(b, "propagation"),
                        create_mountpoint: None,
                    });
                }
            }
            "tmpfs" => {
                m.r#type = Some(MountType::Tmpfs);
                if source.is_some() {
                    return Err(self.err(vol.at, &join(path, "source"), "invalid tmpfs source, source must be empty"));
                }
                if has("bind") {
                    return Err(incompatible("bind", "tmpfs"));
                }
                if has("volume") {
                    return Err(incompatible("volume", "tmpfs"));
                }
                if let Some(t) = vol.get("tmpfs") {
                    let size = match t.get("size").map(|n| &n.v) {
                        Some(V::Int(i)) if *i >= 0 => Some(*i),
                        Some(_) => return Err(self.err(t.at, &join(path, "tmpfs.size"), "must be a non-negative integer")),
                        None => None,
                    };
                    m.tmpfs_options = Some(TmpfsOptions {
                        size_bytes: size.filter(|s| *s != 0),
                        mode: None,
                    });
                }
            }
            "npipe" => {
                m.r#type = Some(MountType::Npipe);
                if source.is_none() {
                    return Err(self.err(vol.at, path, "invalid npipe source, source cannot be empty"));
                }
                if let Some(b) = vol.get("bind") {
                    m.bind_options = Some(BindOptions {
                        propagation: text(b, "propagation"),
                        create_mountpoint: None,
                    });
                }
            }
            "cluster" => {
                return Err(self.err(
                    vol.at,
                    &join(path, "type"),
                    "cluster volumes need Engine API 1.42; hearth targets 1.41 and does not support them",
                ))
            }
            other => {
                return Err(self.err(
                    vol.at,
                    &join(path, "type"),
                    format!("volume type must be volume, bind, tmpfs, npipe, or cluster, not {other:?}"),
                ))
            }
        }
        Ok(m)
    }

    fn healthcheck(&self, hc: &Node, path: &str) -> Result<HealthCheck, Error> {
        let test = strings(hc.get("test"));
        if matches!(hc.get("disable").map(|n| &n.v), Some(V::Bool(true))) {
            if test.is_some() {
                return Err(self.err(
                    hc.at,
                    path,
                    "test and disable can't be set at the same time",
                ));
            }
            return Ok(HealthCheck {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            });
        }
        let nonzero = |d: Option<i64>| d.filter(|v| *v != 0);
        let retries = match hc.get("retries") {
            None => None,
            Some(r) => match r.v {
                V::Int(i) if i >= 0 => Some(i),
                V::Float(f) if f >= 0.0 => Some(f as i64),
                _ => {
                    return Err(self.err(
                        r.at,
                        &join(path, "retries"),
                        "must be a non-negative number",
                    ))
                }
            },
        };
        Ok(HealthCheck {
            test,
            interval: nonzero(self.duration(hc, "interval", path)?),
            timeout: nonzero(self.duration(hc, "timeout", path)?),
            retries: retries.filter(|r| *r != 0),
            start_period: nonzero(self.duration(hc, "start_period", path)?),
            start_interval: nonzero(self.duration(hc, "start_interval", path)?),
        })
    }

    fn resources(&self, deploy: &Node, dpath: &str) -> Result<Resources, Error> {
        let mut out = Resources::default();
        let Some(res) = deploy.get("resources") else {
            return Ok(out);
        };
        let rpath = join(dpath, "resources");
        let cpus = |node: &Node, p: &str| -> Result<Option<i64>, Error> {
            match node.get("cpus") {
                None => Ok(None),
                Some(c) => {
                    let s = c.scalar_string().unwrap_or_default();
                    if s.is_empty() {
                        return Ok(None);
                    }
                    units::parse_cpus(&s)
                        .map(|v| Some(v).filter(|v| *v != 0))
                        .map_err(|m| self.err(c.at, &join(p, "cpus"), m))
                }
            }
        };
        let memory = |node: &Node, p: &str| -> Result<Option<i64>, Error> {
            match node.get("memory") {
                None => Ok(None),
                Some(m) => {
                    let s = m.scalar_string().unwrap_or_default();
                    units::parse_ram_bytes(&s)
                        .map(|v| Some(v).filter(|v| *v != 0))
                        .map_err(|e| self.err(m.at, &join(p, "memory"), e))
                }
            }
        };
        if let Some(l) = res.get("limits") {
            let p = join(&rpath, "limits");
            let pids = match l.get("pids").map(|n| &n.v) {
                Some(V::Int(i)) if *i != 0 => Some(*i),
                _ => None,
            };
            out.limits = Some(Limit {
                nano_cpus: cpus(l, &p)?,
                memory_bytes: memory(l, &p)?,
                pids,
            });
        }
        if let Some(r) = res.get("reservations") {
            let p = join(&rpath, "reservations");
            let mut generic = Vec::new();
            for g in items(r.get("generic_resources")) {
                if let Some(d) = g.get("discrete_resource_spec") {
                    let value = match d.get("value").map(|n| &n.v) {
                        Some(V::Int(i)) => *i,
                        Some(V::Float(f)) => *f as i64,
                        _ => 0,
                    };
                    generic.push(GenericResource {
                        named_resource_spec: None,
                        discrete_resource_spec: Some(DiscreteResource {
                            kind: text(d, "kind").unwrap_or_default(),
                            value,
                        }),
                    });
                } else {
                    generic.push(GenericResource::default());
                }
            }
            out.reservations = Some(Reservation {
                nano_cpus: cpus(r, &p)?,
                memory_bytes: memory(r, &p)?,
                generic_resources: (!generic.is_empty()).then_some(generic),
            });
        }
        Ok(out)
    }

    fn restart_policy(&self, rp: &Node, path: &str) -> Result<RestartPolicy, Error> {
        let condition = match text(rp, "condition").as_deref() {
            None => None,
            Some("none") => Some(RestartCondition::None),
            Some("on-failure") => Some(RestartCondition::OnFailure),
            Some("any") => Some(RestartCondition::Any),
            Some(other) => {
                return Err(self.err(
                    rp.get("condition").map(|n| n.at).unwrap_or(rp.at),
                    &join(path, "condition"),
                    format!("invalid restart condition {other:?}: must be none, on-failure or any"),
                ))
            }
        };
        Ok(RestartPolicy {
            condition,
            delay: self.duration(rp, "delay", path)?,
            max_attempts: self.uint(rp, "max_attempts", path)?,
            window: self.duration(rp, "window", path)?,
        })
    }

    fn placement(&self, deploy: &Node, dpath: &str) -> Result<Placement, Error> {
        let Some(p) = deploy.get("placement") else {
            return Ok(Placement::default());
        };
        let ppath = join(dpath, "placement");
        let prefs: Vec<PlacementPreference> = items(p.get("preferences"))
            .iter()
            .map(|pref| PlacementPreference {
                spread: Spread {
                    spread_descriptor: text(pref, "spread").unwrap_or_default(),
                },
            })
            .collect();
        Ok(Placement {
            constraints: strings(p.get("constraints")),
            preferences: (!prefs.is_empty()).then_some(prefs),
            max_replicas: self
                .uint(p, "max_replicas_per_node", &ppath)?
                .filter(|m| *m != 0),
        })
    }

    fn mode(&self, deploy: &Node, dpath: &str) -> Result<ServiceMode, Error> {
        let replicas = self.uint(deploy, "replicas", dpath)?;
        let mode_node = deploy.get("mode");
        let mode = text(deploy, "mode").unwrap_or_default();
        let at = mode_node.map(|n| n.at).unwrap_or(deploy.at);
        let global_with_replicas = || {
            self.err(
                at,
                &join(dpath, "mode"),
                "replicas can only be used with replicated or replicated-job mode",
            )
        };
        match mode.as_str() {
            "" | "replicated" => Ok(ServiceMode {
                replicated: Some(Replicated { replicas }),
                ..Default::default()
            }),
            "global" => {
                if replicas.is_some() {
                    return Err(global_with_replicas());
                }
                Ok(ServiceMode::global())
            }
            "replicated-job" => Ok(ServiceMode {
                replicated_job: Some(ReplicatedJob {
                    max_concurrent: replicas,
                    total_completions: replicas,
                }),
                ..Default::default()
            }),
            "global-job" => {
                if replicas.is_some() {
                    return Err(global_with_replicas());
                }
                Ok(ServiceMode {
                    global_job: Some(spec::Global {}),
                    ..Default::default()
                })
            }
            other => Err(self.err(at, &join(dpath, "mode"), format!("unknown mode: {other}"))),
        }
    }

    fn update_config(&self, u: &Node, path: &str, rollback: bool) -> Result<UpdateConfig, Error> {
        let failure_action = match text(u, "failure_action").as_deref() {
            None => None,
            Some("continue") => Some(FailureAction::Continue),
            Some("pause") => Some(FailureAction::Pause),
            Some("rollback") if !rollback => Some(FailureAction::Rollback),
            Some(other) => {
                return Err(self.err(
                    u.get("failure_action").map(|n| n.at).unwrap_or(u.at),
                    &join(path, "failure_action"),
                    format!(
                        "invalid failure action {other:?}: must be {}",
                        if rollback {
                            "continue or pause"
                        } else {
                            "continue, pause or rollback"
                        }
                    ),
                ))
            }
        };
        let order = match text(u, "order").as_deref() {
            None => None,
            Some("stop-first") => Some(UpdateOrder::StopFirst),
            Some("start-first") => Some(UpdateOrder::StartFirst),
            Some(other) => {
                return Err(self.err(
                    u.get("order").map(|n| n.at).unwrap_or(u.at),
                    &join(path, "order"),
                    format!("invalid order {other:?}: must be stop-first or start-first"),
                ))
            }
        };
        let ratio = match u.get("max_failure_ratio").map(|n| &n.v) {
            Some(V::Float(f)) => Some(*f),
            Some(V::Int(i)) => Some(*i as f64),
            _ => None,
        };
        Ok(UpdateConfig {
            // docker/cli defaults parallelism to 1 when an update_config is given.
            parallelism: Some(self.uint(u, "parallelism", path)?.unwrap_or(1)),
            delay: self.duration(u, "delay", path)?.filter(|d| *d != 0),
            failure_action,
            monitor: self.duration(u, "monitor", path)?.filter(|d| *d != 0),
            max_failure_ratio: ratio.filter(|r| *r != 0.0),
            order,
        })
    }

    fn endpoint(
        &self,
        svc: &Node,
        deploy: &Node,
        path: &str,
        dpath: &str,
    ) -> Result<EndpointSpec, Error> {
        let mode = match text(deploy, "endpoint_mode")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            None => None,
            Some("vip") => Some(EndpointMode::Vip),
            Some("dnsrr") => Some(EndpointMode::Dnsrr),
            Some(other) => {
                return Err(self.err(
                    deploy
                        .get("endpoint_mode")
                        .map(|n| n.at)
                        .unwrap_or(deploy.at),
                    &join(dpath, "endpoint_mode"),
                    format!("invalid endpoint mode {other:?}: must be vip or dnsrr"),
                ))
            }
        };
        let mut ports = Vec::new();
        for (i, p) in items(svc.get("ports")).iter().enumerate() {
            let ppath = format!("{path}.ports[{i}]");
            let protocol = match text(p, "protocol")
                .map(|s| s.to_ascii_lowercase())
                .as_deref()
            {
                None => None,
                Some("tcp") => Some(PortProtocol::Tcp),
                Some("udp") => Some(PortProtocol::Udp),
                Some("sctp") => Some(PortProtocol::Sctp),
                Some(other) => {
                    return Err(self.err(
                        p.at,
                        &join(&ppath, "protocol"),
                        format!("invalid protocol {other:?}"),
                    ))
                }
            };
            let publish_mode = match text(p, "mode").as_deref() {
                None => None,
                Some("ingress") => Some(PublishMode::Ingress),
                Some("host") => Some(PublishMode::Host),
                Some(other) => {
                    return Err(self.err(
                        p.at,
                        &join(&ppath, "mode"),
                        format!("invalid publish mode {other:?}: must be ingress or host"),
                    ))
                }
            };
            let port = |k: &str| -> Result<Option<u32>, Error> {
                match self.uint(p, k, &ppath)? {
                    None | Some(0) => Ok(None),
                    Some(v) => u32::try_from(v)
                        .ok()
                        .filter(|v| *v <= 65535)
                        .map(Some)
                        .ok_or_else(|| self.err(p.at, &join(&ppath, k), "port out of range")),
                }
            };
            ports.push(PortConfig {
                name: None,
                protocol,
                target_port: port("target")?,
                published_port: port("published")?,
                publish_mode,
            });
        }
        ports.sort_by_key(|p| (p.published_port, p.target_port, p.protocol, p.publish_mode));
        Ok(EndpointSpec {
            mode,
            ports: (!ports.is_empty()).then_some(ports),
        })
    }
}

/// docker's `opts.EffectiveCapAddCapDrop`: upper-case, `CAP_` prefix, sorted, de-duplicated;
/// `ALL` trumps the rest; a capability both added and dropped is only added.
fn effective_caps(
    add: Vec<String>,
    drop: Vec<String>,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    fn normalize(caps: Vec<String>) -> Vec<String> {
        let set: BTreeSet<String> = caps
            .into_iter()
            .map(|c| {
                let c = c.trim().to_ascii_uppercase();
                if c == "ALL" || c.starts_with("CAP_") {
                    c
                } else {
                    format!("CAP_{c}")
                }
            })
            .collect();
        if set.contains("ALL") {
            return vec!["ALL".into()];
        }
        set.into_iter().collect()
    }
    let add = normalize(add);
    let mut drop = normalize(drop);
    if !add.iter().any(|a| a == "ALL") {
        drop.retain(|d| !add.contains(d));
    }
    (
        (!add.is_empty()).then_some(add),
        (!drop.is_empty()).then_some(drop),
    )
}
