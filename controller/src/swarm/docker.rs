//! The bollard adapter: [`Swarm`] over the local Docker daemon (the only module importing bollard).
//!
//! Specs go to bollard's models by a serde_json round trip: hearth's [`spec`] types are written
//! in the Engine API's JSON shape, so fields flow through without hand mapping. A field the
//! model does not know would be dropped silently by that round trip, so [`to_model`] checks it
//! and fails with [`Error::Invalid`] naming the field instead.
//!
//! bollard sends the API version it negotiated with the daemon ([`DockerSwarm::connect`]):
//! 1.41 on this host, while bollard 0.21's models describe 1.53. Fields a 1.41 daemon does not
//! send are `None`; fields hearth sends that 1.41 does not know are never set by hearth's specs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::bollard::errors::Error as BollardError;
use ::bollard::models;
use ::bollard::query_parameters as qp;
use ::bollard::Docker;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::{Error, Result};
use super::spec;
use super::types::*;
use super::{with_deadline, Swarm, SwarmFuture, DEFAULT_CALL_TIMEOUT};

/// bollard's own timeout (until response headers): a backstop behind the per-call deadline.
const BOLLARD_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach the daemon.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Unix socket of the daemon.
    pub socket: PathBuf,
    /// Deadline of every call (not of the events stream). bollard's own 120 s timeout bounds
    /// it as well.
    pub call_timeout: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/var/run/docker.sock"),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// [`Swarm`] backed by the Docker Engine API through bollard.
#[derive(Debug, Clone)]
pub struct DockerSwarm {
    docker: Docker,
    call_timeout: Duration,
    api_version: String,
}

impl DockerSwarm {
    /// Connects to the daemon's socket and negotiates the API version (the engine here speaks
    /// 1.41; bollard 0.21 would otherwise send 1.53 and be refused).
    ///
    /// # Errors
    /// [`Error::Transport`] if the socket is missing or the daemon does not answer,
    /// [`Error::Timeout`] if negotiation takes longer than the call deadline.
    pub async fn connect(options: DockerOptions) -> Result<Self> {
        let call = Call::new(Verb::Ping, ObjectKind::Daemon);
        let socket = options.socket.to_string_lossy().into_owned();
        let docker = Docker::connect_with_socket(
            &socket,
            BOLLARD_TIMEOUT.as_secs(),
            ::bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| map_err(call, "", None, e))?;
        let docker = with_deadline(call, options.call_timeout, async {
            docker
                .negotiate_version()
                .await
                .map_err(|e| map_err(call, "", None, e))
        })
        .await?;
        let v = docker.client_version();
        Ok(Self {
            api_version: format!("{}.{}", v.major_version, v.minor_version),
            docker,
            call_timeout: options.call_timeout,
        })
    }

    /// Connects with [`DockerOptions::default`] (`/var/run/docker.sock`, 30 s per call).
    ///
    /// # Errors
    /// As [`DockerSwarm::connect`].
    pub async fn connect_local() -> Result<Self> {
        Self::connect(DockerOptions::default()).await
    }

    /// The API version negotiated with the daemon (`1.41` here).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    async fn deadline<T>(
        &self,
        call: Call,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        with_deadline(call, self.call_timeout, fut).await
    }

    /// Fills in missing `SecretID`/`ConfigID`s of a service spec by name: at most one list
    /// call per kind, only when a reference lacks its ID (Docker requires IDs).
    async fn resolve_references(&self, spec: &spec::ServiceSpec) -> Result<spec::ServiceSpec> {
        let mut spec = spec.clone();
        let Some(container) = spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        else {
            return Ok(spec);
        };
        if let Some(secrets) = container.secrets.as_mut() {
            if secrets.iter().any(|s| s.secret_id.is_none()) {
                let known = self.list_secrets_raw(&LabelFilter::all()).await?;
                for r in secrets.iter_mut().filter(|s| s.secret_id.is_none()) {
                    let found = known.iter().find(|s| s.meta.name == r.secret_name);
                    let Some(found) = found else {
                        return Err(Error::NotFound {
                            call: Call::new(Verb::Create, ObjectKind::Secret),
                            id: r.secret_name.clone(),
                        });
                    };
                    r.secret_id = Some(found.meta.id.clone());
                }
            }
        }
        if let Some(configs) = container.configs.as_mut() {
            if configs.iter().any(|c| c.config_id.is_none()) {
                let known = self.list_configs_raw(&LabelFilter::all()).await?;
                for r in configs.iter_mut().filter(|c| c.config_id.is_none()) {
                    let found = known.iter().find(|c| c.meta.name == r.config_name);
                    let Some(found) = found else {
                        return Err(Error::NotFound {
                            call: Call::new(Verb::Create, ObjectKind::Config),
                            id: r.config_name.clone(),
                        });
                    };
                    r.config_id = Some(found.meta.id.clone());
                }
            }
        }
        Ok(spec)
    }

    async fn list_secrets_raw(&self, filter: &LabelFilter) -> Result<Vec<Secret>> {
        let call = Call::new(Verb::List, ObjectKind::Secret);
        let opts = qp::ListSecretsOptions {
            filters: label_filters("label", filter),
        };
        let raw = self
            .docker
            .list_secrets(Some(opts))
            .await
            .map_err(|e| map_err(call, "", None, e))?;
        Ok(raw
            .into_iter()
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                Secret {
                    meta: meta(
                        s.id,
                        spec.name,
                        s.version,
                        spec.labels,
                        s.created_at,
                        s.updated_at,
                    ),
                }
            })
            .collect())
    }

    async fn list_configs_raw(&self, filter: &LabelFilter) -> Result<Vec<Config>> {
        let call = Call::new(Verb::List, ObjectKind::Config);
        let opts = qp::ListConfigsOptions {
            filters: label_filters("label", filter),
        };
        let raw = self
            .docker
            .list_configs(Some(opts))
            .await
            .map_err(|e| map_err(call, "", None, e))?;
        Ok(raw
            .into_iter()
            .map(|c| {
                let spec = c.spec.unwrap_or_default();
                Config {
                    meta: meta(
                        c.id,
                        spec.name,
                        c.version,
                        spec.labels,
                        c.created_at,
                        c.updated_at,
                    ),
                }
            })
            .collect())
    }
}

impl Swarm for DockerSwarm {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        let call = Call::new(Verb::Ping, ObjectKind::Daemon);
        self.deadline(call, async move {
            self.docker
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| map_err(call, "", None, e))
        })
        .boxed()
    }

    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        let call = Call::new(Verb::Info, ObjectKind::Daemon);
        self.deadline(call, async move {
            let info = self
                .docker
                .info()
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            let swarm = info.swarm.unwrap_or_default();
            Ok(SwarmInfo {
                node_id: swarm.node_id.unwrap_or_default(),
                local_node_state: swarm
                    .local_node_state
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                control_available: swarm.control_available.unwrap_or(false),
                nodes: count(swarm.nodes),
                managers: count(swarm.managers),
                server_version: info.server_version.unwrap_or_default(),
                api_version: self.api_version.clone(),
            })
        })
        .boxed()
    }

    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        let call = Call::new(Verb::List, ObjectKind::Service);
        self.deadline(call, async move {
            let opts = qp::ListServicesOptions {
                filters: label_filters("label", filter),
                status: None,
            };
            let raw = self
                .docker
                .list_services(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw.into_iter().map(service_from).collect())
        })
        .boxed()
    }

    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        let call = Call::new(Verb::List, ObjectKind::Task);
        self.deadline(call, async move {
            let opts = qp::ListTasksOptions {
                filters: label_filters("label", filter),
            };
            let raw = self
                .docker
                .list_tasks(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw.into_iter().map(task_from).collect())
        })
        .boxed()
    }

    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        let call = Call::new(Verb::List, ObjectKind::Container);
        self.deadline(call, async move {
            let opts = qp::ListContainersOptions {
                all: true,
                filters: label_filters("label", filter),
                ..Default::default()
            };
            let raw = self
                .docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw.into_iter().map(container_from).collect())
        })
        .boxed()
    }

    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        let call = Call::new(Verb::List, ObjectKind::Network);
        self.deadline(call, async move {
            let opts = qp::ListNetworksOptions {
                filters: label_filters("label", filter),
            };
            let raw = self
                .docker
                .list_networks(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw
                .into_iter()
                .map(|n| Network {
                    id: n.id.unwrap_or_default(),
                    name: n.name.unwrap_or_default(),
                    driver: n.driver.unwrap_or_default(),
                    scope: n.scope.unwrap_or_default(),
                    labels: labels(n.labels),
                    created_at: n.created.as_deref().and_then(parse_time),
                })
                .collect())
        })
        .boxed()
    }

    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        let call = Call::new(Verb::List, ObjectKind::Volume);
        self.deadline(call, async move {
            let opts = qp::ListVolumesOptions {
                filters: label_filters("label", filter),
            };
            let raw = self
                .docker
                .list_volumes(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| Volume {
                    name: v.name,
                    driver: v.driver,
                    labels: v.labels.into_iter().collect(),
                    created_at: v.created_at.as_deref().and_then(parse_time),
                })
                .collect())
        })
        .boxed()
    }

    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        let call = Call::new(Verb::List, ObjectKind::Secret);
        self.deadline(call, self.list_secrets_raw(filter)).boxed()
    }

    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        let call = Call::new(Verb::List, ObjectKind::Config);
        self.deadline(call, self.list_configs_raw(filter)).boxed()
    }

    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        let call = Call::new(Verb::List, ObjectKind::Node);
        self.deadline(call, async move {
            let opts = qp::ListNodesOptions {
                filters: label_filters("node.label", filter),
            };
            let raw = self
                .docker
                .list_nodes(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw.into_iter().map(node_from).collect())
        })
        .boxed()
    }

    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Service);
        self.deadline(call, async move {
            let name = spec.name.clone().unwrap_or_default();
            let spec = self.resolve_references(spec).await?;
            let model: models::ServiceSpec = to_model(call, &spec)?;
            let created = self
                .docker
                .create_service(model, None)
                .await
                .map_err(|e| map_err(call, &name, None, e))?;
            warn_all(call, &name, created.warnings);
            created.id.ok_or_else(|| Error::Invalid {
                call,
                message: "create response carries no ID".into(),
            })
        })
        .boxed()
    }

    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Service);
        self.deadline(call, async move {
            let spec = self.resolve_references(spec).await?;
            let model: models::ServiceSpec = to_model(call, &spec)?;
            let opts = qp::UpdateServiceOptions {
                version: version_i32(call, version)?,
                ..Default::default()
            };
            let updated = self
                .docker
                .update_service(id, model, opts, None)
                .await
                .map_err(|e| map_err(call, id, Some(version), e))?;
            warn_all(call, id, updated.warnings);
            Ok(())
        })
        .boxed()
    }

    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Service);
        self.deadline(call, async move {
            let current = self
                .docker
                .inspect_service(id, None::<qp::InspectServiceOptions>)
                .await
                .map_err(|e| map_err(call, id, Some(version), e))?;
            let mut model = current.spec.ok_or_else(|| Error::Invalid {
                call,
                message: format!("service {id} has no spec"),
            })?;
            let mut template = model.task_template.take().unwrap_or_default();
            template.force_update = Some(template.force_update.unwrap_or(0).wrapping_add(1));
            model.task_template = Some(template);
            let opts = qp::UpdateServiceOptions {
                version: version_i32(call, version)?,
                ..Default::default()
            };
            let updated = self
                .docker
                .update_service(id, model, opts, None)
                .await
                .map_err(|e| map_err(call, id, Some(version), e))?;
            warn_all(call, id, updated.warnings);
            Ok(())
        })
        .boxed()
    }

    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Service);
        self.deadline(call, async move {
            self.docker
                .delete_service(id)
                .await
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Network);
        self.deadline(call, async move {
            let model: models::NetworkCreateRequest = to_model(call, spec)?;
            let created = self
                .docker
                .create_network(model)
                .await
                .map_err(|e| map_err(call, &spec.name, None, e))?;
            if !created.warning.is_empty() {
                tracing::warn!(%call, name = %spec.name, warning = %created.warning, "docker warned");
            }
            Ok(created.id)
        })
        .boxed()
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Network);
        self.deadline(call, async move {
            self.docker
                .remove_network(id)
                .await
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Volume);
        self.deadline(call, async move {
            let model: models::VolumeCreateRequest = to_model(call, spec)?;
            let created = self
                .docker
                .create_volume(model)
                .await
                .map_err(|e| map_err(call, &spec.name, None, e))?;
            Ok(created.name)
        })
        .boxed()
    }

    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Volume);
        self.deadline(call, async move {
            self.docker
                .remove_volume(name, Some(qp::RemoveVolumeOptions { force: false }))
                .await
                .map_err(|e| map_err(call, name, None, e))
        })
        .boxed()
    }

    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Secret);
        self.deadline(call, async move {
            let model: models::SecretSpec = to_model(call, spec)?;
            let created = self
                .docker
                .create_secret(model)
                .await
                .map_err(|e| map_err(call, &spec.name, None, e))?;
            Ok(created.id)
        })
        .boxed()
    }

    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Secret);
        self.deadline(call, async move {
            let model: models::SecretSpec = to_model(call, spec)?;
            let opts = qp::UpdateSecretOptions {
                version: i64::try_from(version).map_err(|_| Error::Invalid {
                    call,
                    message: format!("version {version} out of range"),
                })?,
            };
            self.docker
                .update_secret(id, model, opts)
                .await
                .map_err(|e| map_err(call, id, Some(version), e))
        })
        .boxed()
    }

    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Secret);
        self.deadline(call, async move {
            self.docker
                .delete_secret(id)
                .await
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Config);
        self.deadline(call, async move {
            let model: models::ConfigSpec = to_model(call, spec)?;
            let created = self
                .docker
                .create_config(model)
                .await
                .map_err(|e| map_err(call, &spec.name, None, e))?;
            Ok(created.id)
        })
        .boxed()
    }

    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Config);
        self.deadline(call, async move {
            let model: models::ConfigSpec = to_model(call, spec)?;
            let opts = qp::UpdateConfigOptions {
                version: i64::try_from(version).map_err(|_| Error::Invalid {
                    call,
                    message: format!("version {version} out of range"),
                })?,
            };
            self.docker
                .update_config(id, model, opts)
                .await
                .map_err(|e| map_err(call, id, Some(version), e))
        })
        .boxed()
    }

    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Config);
        self.deadline(call, async move {
            self.docker
                .delete_config(id)
                .await
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        let call = Call::new(Verb::List, ObjectKind::Image);
        self.deadline(call, async move {
            let mut filters = label_filters("label", &filter.labels).unwrap_or_default();
            if let Some(dangling) = filter.dangling {
                filters.insert("dangling".into(), vec![dangling.to_string()]);
            }
            let opts = qp::ListImagesOptions {
                filters: (!filters.is_empty()).then_some(filters),
                ..Default::default()
            };
            let raw = self
                .docker
                .list_images(Some(opts))
                .await
                .map_err(|e| map_err(call, "", None, e))?;
            Ok(raw
                .into_iter()
                .map(|i| Image {
                    id: i.id,
                    repo_tags: i.repo_tags,
                    repo_digests: i.repo_digests,
                    labels: i.labels.into_iter().collect(),
                    size: u64::try_from(i.size).unwrap_or(0),
                    created_at: u64::try_from(i.created)
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
                })
                // the daemon filtered already; this keeps the contract if it did not
                .filter(|i| filter.matches(i))
                .collect())
        })
        .boxed()
    }

    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Image);
        self.deadline(call, async move {
            self.docker
                .remove_image(
                    id,
                    Some(qp::RemoveImageOptions {
                        force: false,
                        noprune: false,
                        platforms: None,
                    }),
                    None,
                )
                .await
                .map(|_| ())
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        let call = Call::new(Verb::Inspect, ObjectKind::Network);
        self.deadline(call, async move {
            let inspected = self
                .docker
                .inspect_network(network, None::<qp::InspectNetworkOptions>)
                .await
                .map_err(|e| map_err(call, network, None, e))?;
            let mut out: Vec<NetworkEndpoint> = inspected
                .containers
                .unwrap_or_default()
                .into_iter()
                .map(|(container_id, endpoint)| NetworkEndpoint {
                    container_id,
                    ipv4: endpoint
                        .ipv4_address
                        .filter(|a| !a.is_empty())
                        .map(|a| a.split('/').next().unwrap_or(&a).to_string()),
                })
                .collect();
            out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
            Ok(out)
        })
        .boxed()
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Container);
        self.deadline(call, async move {
            let opts = qp::RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            };
            self.docker
                .remove_container(id, Some(opts))
                .await
                .map_err(|e| map_err(call, id, None, e))
        })
        .boxed()
    }

    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        let call = Call::new(Verb::Inspect, ObjectKind::Container);
        self.deadline(call, async move {
            let c = self
                .docker
                .inspect_container(id, None::<qp::InspectContainerOptions>)
                .await
                .map_err(|e| map_err(call, id, None, e))?;
            let state = c.state.unwrap_or_default();
            let config = c.config.unwrap_or_default();
            Ok(Container {
                id: c.id.unwrap_or_default(),
                name: c
                    .name
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: labels(config.labels),
                image_id: c.image.filter(|i| !i.is_empty()),
                state: ContainerState::parse(
                    &state.status.map(|s| s.to_string()).unwrap_or_default(),
                ),
                health: None,
                status: String::new(),
                created_at: None,
            })
        })
        .boxed()
    }

    fn events(&self) -> BoxStream<'static, Result<Event>> {
        let call = Call::new(Verb::Events, ObjectKind::Daemon);
        let types = [
            "service",
            "container",
            "network",
            "volume",
            "secret",
            "config",
            "node",
        ];
        // bollard connects on the first poll; `since` makes the daemon replay what happened
        // from this call on, so nothing between `events()` and that poll is lost.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .ok();
        let opts = qp::EventsOptions {
            since,
            filters: Some(HashMap::from([(
                "type".to_string(),
                types.iter().map(|t| t.to_string()).collect(),
            )])),
            ..Default::default()
        };
        let docker = self.docker.clone();
        let mut failed = false;
        docker
            .events(Some(opts))
            // The stream ends after its first error (dockerd went away): reconnect and relist.
            .take_while(move |item| {
                let keep = !failed;
                failed = failed || item.is_err();
                futures::future::ready(keep)
            })
            .filter_map(move |item| {
                futures::future::ready(match item {
                    Ok(message) => event_from(message).map(Ok),
                    Err(e) => Some(Err(map_err(call, "", None, e))),
                })
            })
            .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

/// Converts a hearth spec into a bollard model through JSON, failing if the model would drop
/// or change any field hearth set.
fn to_model<S: Serialize, M: Serialize + DeserializeOwned>(call: Call, spec: &S) -> Result<M> {
    let invalid = |message: String| Error::Invalid { call, message };
    let ours = serde_json::to_value(spec).map_err(|e| invalid(e.to_string()))?;
    let model: M = serde_json::from_value(ours.clone()).map_err(|e| invalid(e.to_string()))?;
    let back = serde_json::to_value(&model).map_err(|e| invalid(e.to_string()))?;
    if let Some(path) = first_loss(&ours, &back, String::new()) {
        return Err(invalid(format!(
            "field {path} does not survive conversion to the engine model"
        )));
    }
    Ok(model)
}

/// The path of the first value in `ours` that `back` lacks or holds differently.
fn first_loss(ours: &Value, back: &Value, path: String) -> Option<String> {
    match (ours, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match b.get(k) {
                Some(w) => first_loss(v, w, p),
                None if v.is_null() => None,
                None => Some(p),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_loss(v, w, format!("{path}[{i}]"))),
        (Value::Number(a), Value::Number(b)) => (a.as_f64() != b.as_f64()).then_some(path),
        (a, b) => (a != b).then_some(path),
    }
}

fn label_filters(key: &str, filter: &LabelFilter) -> Option<HashMap<String, Vec<String>>> {
    let values = filter.to_docker();
    (!values.is_empty()).then(|| HashMap::from([(key.to_string(), values)]))
}

fn labels(raw: Option<HashMap<String, String>>) -> Labels {
    raw.unwrap_or_default().into_iter().collect()
}

fn count(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn version_i32(call: Call, version: u64) -> Result<i32> {
    i32::try_from(version).map_err(|_| Error::Invalid {
        call,
        message: format!("version {version} out of range"),
    })
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

fn meta(
    id: Option<String>,
    name: Option<String>,
    version: Option<models::ObjectVersion>,
    raw_labels: Option<HashMap<String, String>>,
    created_at: Option<String>,
    updated_at: Option<String>,
) -> Meta {
    Meta {
        id: id.unwrap_or_default(),
        name: name.unwrap_or_default(),
        version: version.and_then(|v| v.index).unwrap_or(0),
        labels: labels(raw_labels),
        created_at: created_at.as_deref().and_then(parse_time),
        updated_at: updated_at.as_deref().and_then(parse_time),
    }
}

fn service_from(s: models::Service) -> Service {
    let spec = s.spec.unwrap_or_default();
    let mode = match spec.mode {
        Some(models::ServiceSpecMode {
            replicated: Some(r),
            ..
        }) => ServiceMode::Replicated(count(r.replicas)),
        Some(models::ServiceSpecMode {
            global: Some(_), ..
        }) => ServiceMode::Global,
        // The daemon defaults an absent mode to one replica.
        None => ServiceMode::Replicated(1),
        Some(_) => ServiceMode::Other,
    };
    let template_digest = spec
        .task_template
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .map(|v| crate::swarm::spec::template_digest(&v));
    let container = spec.task_template.and_then(|t| t.container_spec);
    let volume_sources = container
        .as_ref()
        .and_then(|c| c.mounts.as_ref())
        .into_iter()
        .flatten()
        .filter(|m| m.typ == Some(models::MountType::VOLUME))
        .filter_map(|m| m.source.clone())
        .filter(|s| !s.is_empty())
        .collect();
    let image = container.and_then(|c| c.image);
    Service {
        meta: meta(
            s.id,
            spec.name,
            s.version,
            spec.labels,
            s.created_at,
            s.updated_at,
        ),
        image,
        mode,
        volume_sources,
        template_digest,
    }
}

fn task_from(t: models::Task) -> Task {
    let status = t.status.unwrap_or_default();
    let template_digest = t
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .map(|v| crate::swarm::spec::template_digest(&v));
    Task {
        id: t.id.unwrap_or_default(),
        version: t.version.and_then(|v| v.index).unwrap_or(0),
        service_id: t.service_id.unwrap_or_default(),
        slot: t.slot.and_then(|s| u64::try_from(s).ok()),
        node_id: t.node_id.filter(|n| !n.is_empty()),
        state: status
            .state
            .map(|s| TaskState::parse(&s.to_string()))
            .unwrap_or(TaskState::New),
        desired_state: t
            .desired_state
            .map(|s| TaskState::parse(&s.to_string()))
            .unwrap_or(TaskState::New),
        message: status.message.filter(|m| !m.is_empty()),
        error: status.err.filter(|m| !m.is_empty()),
        container_id: status
            .container_status
            .and_then(|c| c.container_id)
            .filter(|c| !c.is_empty()),
        labels: labels(t.labels),
        container_labels: labels(t.spec.and_then(|s| s.container_spec).and_then(|c| c.labels)),
        created_at: t.created_at.as_deref().and_then(parse_time),
        template_digest,
    }
}

fn container_from(c: models::ContainerSummary) -> Container {
    let status = c.status.unwrap_or_default();
    Container {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        labels: labels(c.labels),
        image_id: c.image_id.filter(|i| !i.is_empty()),
        state: ContainerState::parse(&c.state.map(|s| s.to_string()).unwrap_or_default()),
        health: health_from_status(&status),
        status,
        created_at: c
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
    }
}

fn node_from(n: models::Node) -> Node {
    let spec = n.spec.unwrap_or_default();
    let hostname = n.description.and_then(|d| d.hostname);
    Node {
        meta: meta(
            n.id,
            hostname,
            n.version,
            spec.labels,
            n.created_at,
            n.updated_at,
        ),
        role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
        availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
        state: n
            .status
            .and_then(|s| s.state)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        leader: n.manager_status.and_then(|m| m.leader).unwrap_or(false),
    }
}

fn event_from(m: models::EventMessage) -> Option<Event> {
    let kind = ObjectKind::parse(m.typ?.as_ref())?;
    let action = m.action.unwrap_or_default();
    // Healthcheck execs fire three container events per interval; they say nothing new.
    if action.starts_with("exec_") {
        return None;
    }
    let actor = m.actor.unwrap_or_default();
    let name = actor.attributes.and_then(|mut a| a.remove("name"));
    let time = m
        .time_nano
        .and_then(|n| u64::try_from(n).ok())
        .map(|n| UNIX_EPOCH + Duration::from_nanos(n));
    Some(Event {
        kind,
        action,
        id: actor.id.unwrap_or_default(),
        name,
        time,
    })
}

fn warn_all(call: Call, name: &str, warnings: Option<Vec<String>>) {
    for warning in warnings.unwrap_or_default() {
        tracing::warn!(%call, name, %warning, "docker warned");
    }
}

fn map_err(call: Call, id: &str, version: Option<u64>, e: BollardError) -> Error {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Error::from_response(call, id, version, status_code, message),
        BollardError::RequestTimeoutError => Error::Timeout {
            call,
            after: BOLLARD_TIMEOUT,
        },
        e @ (BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {
            Error::Invalid {
                call,
                message: e.to_string(),
            }
        }
        other => Error::Transport {
            call,
            source: Box::new(other),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_service_spec_survives_conversion_to_the_engine_model() {
        let spec = spec::ServiceSpec {
            name: Some("hearth-test-x".into()),
            labels: Some(std::collections::BTreeMap::from([(
                "hearth.test".into(),
                "1".into(),
            )])),
            task_template: Some(spec::TaskSpec {
                container_spec: Some(spec::ContainerSpec {
                    image: Some("hearth-fixture/webapp:1.0.0".into()),
                    args: Some(vec!["/bin/serve".into()]),
                    health_check: Some(spec::HealthCheck {
                        test: Some(vec!["CMD".into(), "/bin/healthcheck".into()]),
                        interval: Some(1_000_000_000),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(spec::ServiceMode::global()),
            ..Default::default()
        };
        let model: models::ServiceSpec =
            to_model(Call::new(Verb::Create, ObjectKind::Service), &spec).unwrap();
        assert_eq!(model.name.as_deref(), Some("hearth-test-x"));
        assert!(model.mode.unwrap().global.is_some());
    }

    #[test]
    fn a_field_the_model_drops_is_an_error_naming_it() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct WithExtra {
            name: String,
            no_such_field: bool,
        }
        let err = to_model::<_, models::SecretSpec>(
            Call::new(Verb::Create, ObjectKind::Secret),
            &WithExtra {
                name: "s".into(),
                no_such_field: true,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("NoSuchField"), "{err}");
    }

    #[test]
    fn docker_timestamps_parse_with_nanoseconds() {
        let t = parse_time("2026-11-22T14:37:24.101970416Z").unwrap();
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs % 60, 24);
        assert!(parse_time("2026-11-22T14:37:24Z").is_some());
    }
}
