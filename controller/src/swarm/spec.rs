//! Desired swarm objects in the Docker Engine API's own JSON shape (API 1.41), plus their content hash.
//!
//! These are plain serde structs whose JSON field names match the Engine API exactly, so a
//! `serde_json` round trip turns them into the bollard models the adapter sends (this module does
//! not import bollard; only the adapter does). Every optional field is omitted when unset, so the
//! JSON hearth sends contains only what hearth decided, and the daemon fills in its defaults.
//!
//! Maps are [`BTreeMap`]s so serialisation order, and therefore [`content_hash`], is stable.
//! Durations are nanoseconds (`i64`), as in the Engine API; byte sizes are bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Label/option maps: sorted, so their JSON is canonical.
pub type Map = BTreeMap<String, String>;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec could not be turned into JSON (a map key that is not a string). Not retryable:
    /// the same spec fails the same way.
    #[error("spec serialization failed")]
    SerializationFailed(#[source] serde_json::Error),
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

/// A service, as `POST /services/create` takes it (`ServiceSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    /// Full service name (`<stack>_<service>` for stack services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Service labels (compose `deploy.labels` plus the stack namespace label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
    /// What each task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_template: Option<TaskSpec>,
    /// Replicated or global.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServiceMode>,
    /// How updates roll out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    /// How rollbacks roll out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// VIP or DNS round robin, and published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
}

/// `Mode`: exactly one of the two fields is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    /// A fixed number of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated: Option<Replicated>,
    /// One task per eligible node (serialised as `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Global>,
    /// A job run to a number of completions (compose `mode: replicated-job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_job: Option<ReplicatedJob>,
    /// A job run once per node (compose `mode: global-job`; serialised as `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_job: Option<Global>,
}

/// `Mode.ReplicatedJob`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicatedJob {
    /// Tasks run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Successful completions wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_completions: Option<u64>,
}

impl ServiceMode {
    /// `{"Replicated": {"Replicas": n}}`.
    pub fn replicated(replicas: Option<u64>) -> Self {
        Self {
            replicated: Some(Replicated { replicas }),
            ..Default::default()
        }
    }

    /// `{"Global": {}}`.
    pub fn global() -> Self {
        Self {
            global: Some(Global {}),
            ..Default::default()
        }
    }
}

/// `Mode.Replicated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    /// Desired task count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

/// `Mode.Global`: an empty object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Global {}

/// `UpdateConfig` and `RollbackConfig` (same shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfig {
    /// Tasks updated at once (0 = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    /// Pause between batches, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    /// What to do when an update fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
    /// How long to watch each task after it is updated, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<i64>,
    /// Tolerated failure ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    /// Stop the old task first, or start the new one first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
}

/// `UpdateConfig.FailureAction` (`rollback` is not valid in a `RollbackConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Keep going.
    Continue,
    /// Pause the update.
    Pause,
    /// Roll back to the previous spec.
    Rollback,
}

/// `UpdateConfig.Order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    StopFirst,
    /// Start the new task, then stop the old one.
    StartFirst,
}

/// `EndpointSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    /// `vip` or `dnsrr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EndpointMode>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortConfig>>,
}

/// `EndpointSpec.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// A virtual IP load-balances (needs ip_vs).
    Vip,
    /// DNS round robin over task IPs.
    Dnsrr,
}

/// `EndpointPortConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    /// Optional port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// tcp, udp or sctp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
    /// Port inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
    /// Port on the node / routing mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u32>,
    /// `ingress` or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<PublishMode>,
}

/// `EndpointPortConfig.Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// `EndpointPortConfig.PublishMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Routing mesh (needs ip_vs).
    Ingress,
    /// Bound on the node running the task.
    Host,
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

/// `TaskSpec` (the service's `TaskTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    /// The container each task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
    /// Limits and reservations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// When tasks are restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Where tasks may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Networks the tasks attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    /// Log driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
}

/// `TaskSpec.Resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// Upper bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservation>,
}

/// `Limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// CPU in units of 1e-9 CPUs.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Memory in bytes.
    #[serde(
        rename = "MemoryBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_bytes: Option<i64>,
    /// Maximum number of PIDs.
    #[serde(rename = "Pids", default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

/// `ResourceObject` (reservations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// CPU in units of 1e-9 CPUs.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Memory in bytes.
    #[serde(
        rename = "MemoryBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_bytes: Option<i64>,
    /// Generic resources (e.g. GPUs).
    #[serde(
        rename = "GenericResources",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generic_resources: Option<Vec<GenericResource>>,
}

/// One entry of `GenericResources`: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenericResource {
    /// A named resource (`Kind` + string `Value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_resource_spec: Option<NamedResource>,
    /// A counted resource (`Kind` + integer `Value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrete_resource_spec: Option<DiscreteResource>,
}

/// `NamedResourceSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamedResource {
    /// Resource kind.
    pub kind: String,
    /// Resource value.
    pub value: String,
}

/// `DiscreteResourceSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiscreteResource {
    /// Resource kind.
    pub kind: String,
    /// Resource count.
    pub value: i64,
}

/// `TaskSpec.RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// none, on-failure or any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RestartCondition>,
    /// Delay between restarts, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    /// Maximum attempts (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// Window used to evaluate the policy, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
}

/// `RestartPolicy.Condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never restart.
    None,
    /// Restart when the task exits non-zero.
    OnFailure,
    /// Always restart.
    Any,
}

/// `TaskSpec.Placement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    /// Constraint expressions (`node.role == manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    /// Spread preferences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Vec<PlacementPreference>>,
    /// Maximum replicas per node (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u64>,
}

/// `Placement.Preferences[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PlacementPreference {
    /// Spread over the values of a node label.
    pub spread: Spread,
}

/// `Preferences[].Spread`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Spread {
    /// The label (`node.labels.zone`).
    pub spread_descriptor: String,
}

/// `NetworkAttachmentConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    /// Network name or ID.
    pub target: String,
    /// DNS aliases on that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// Driver options for the attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Map>,
}

/// A named driver with options: `LogDriver`, `Secret.Driver`, `Templating`, IPAM driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Driver {
    /// Driver name.
    pub name: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map>,
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

/// `TaskSpec.ContainerSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// Image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments (CMD override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Container hostname (may be a swarm template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `KEY=value` or bare `KEY` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// User (`name`, `uid` or `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Security options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Privileges>,
    /// Allocate a pseudo-TTY.
    #[serde(rename = "TTY", default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Keep stdin open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_stdin: Option<bool>,
    /// Read-only root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    /// Signal sent to stop the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Time to wait before killing, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<i64>,
    /// Health check.
    #[serde(
        rename = "HealthCheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub health_check: Option<HealthCheck>,
    /// `/etc/hosts` entries, `IP host...` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// resolv.conf settings.
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Secrets mounted as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretReference>>,
    /// Configs mounted as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<ConfigReference>>,
    /// Run an init process as PID 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Namespaced kernel parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<Map>,
    /// Capabilities added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_add: Option<Vec<String>>,
    /// Capabilities dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_drop: Option<Vec<String>>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<Ulimit>>,
    /// Isolation technology (`default`, `process`, `hyperv`; Windows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// `ContainerSpec.Privileges` (what compose can express, in the shape docker/cli sends it).
///
/// Both fields are sent even when `null`, as docker/cli's Go structs send them: the daemon
/// stores a present `Privileges` (shown as `{"CredentialSpec": null, "SELinuxContext": null}`)
/// differently from an absent one, and a spec that differs from docker's makes a later
/// `docker stack deploy` roll every task (#13).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Privileges {
    /// Windows credential spec.
    #[serde(default)]
    pub credential_spec: Option<CredentialSpec>,
    /// SELinux labels (compose cannot set them; always `null`).
    #[serde(rename = "SELinuxContext", default)]
    pub selinux_context: Option<SeLinuxContext>,
}

/// `Privileges.SELinuxContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SeLinuxContext {
    /// Disable SELinux labelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
    /// SELinux user label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SELinux role label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// SELinux type label.
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// SELinux level label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// `Privileges.CredentialSpec`: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialSpec {
    /// A swarm config holding the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A file on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A registry value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// `Mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    /// Path in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Volume name or host path (absent for anonymous volumes and tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// bind, volume, tmpfs or npipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<MountType>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Consistency (ignored on Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// Bind options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    /// Volume options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    /// Tmpfs options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// `Mount.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    Volume,
    /// An in-memory filesystem.
    Tmpfs,
    /// A Windows named pipe.
    Npipe,
}

/// `Mount.BindOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BindOptions {
    /// rprivate, private, rshared, shared, rslave or slave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// Create the host path if it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_mountpoint: Option<bool>,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeOptions {
    /// Do not copy the image's data into a new volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_copy: Option<bool>,
    /// Labels given to the volume when the task creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
    /// Driver used when the task creates the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<Driver>,
    /// Sub-path of the volume to mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `HealthConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// ns (API ≥ 1.44; compose 3.x cannot set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
}

/// `ContainerSpec.DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<String>>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<String>>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// Where a secret or config appears in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTarget {
    /// File name (relative: under /run/secrets; configs may be absolute).
    #[serde(rename = "Name")]
    pub name: String,
    /// Owner uid, as a string.
    #[serde(rename = "UID")]
    pub uid: String,
    /// Owner gid, as a string.
    #[serde(rename = "GID")]
    pub gid: String,
    /// Permission bits.
    #[serde(rename = "Mode")]
    pub mode: u32,
}

/// `ContainerSpec.Secrets[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretReference {
    /// Where the file appears.
    #[serde(rename = "File", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    /// Secret ID; the adapter resolves it from the name before creating the service.
    #[serde(rename = "SecretID", default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// Secret name.
    #[serde(rename = "SecretName")]
    pub secret_name: String,
}

/// `ContainerSpec.Configs[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReference {
    /// Where the file appears.
    #[serde(rename = "File", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    /// Config ID; the adapter resolves it from the name before creating the service.
    #[serde(rename = "ConfigID", default, skip_serializing_if = "Option::is_none")]
    pub config_id: Option<String>,
    /// Config name.
    #[serde(rename = "ConfigName")]
    pub config_name: String,
}

/// `ContainerSpec.Ulimits[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    /// nofile, nproc, ...
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

// ---------------------------------------------------------------------------------------------
// Networks, volumes, secrets, configs
// ---------------------------------------------------------------------------------------------

/// A network, as `POST /networks/create` takes it (`NetworkCreateRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Full network name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Driver (`overlay` for stacks).
    #[serde(rename = "Driver", default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Scope (`swarm` for overlay networks made by a stack).
    #[serde(rename = "Scope", default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// No external connectivity.
    #[serde(rename = "Internal", default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// Standalone containers may attach.
    #[serde(
        rename = "Attachable",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub attachable: Option<bool>,
    /// The routing-mesh network.
    #[serde(rename = "Ingress", default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    /// Address management.
    #[serde(rename = "IPAM", default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// IPv6 networking.
    #[serde(
        rename = "EnableIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv6: Option<bool>,
    /// Driver options.
    #[serde(rename = "Options", default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map>,
    /// Labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
}

/// `IPAM`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// IPAM driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<IpamConfig>>,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map>,
}

/// `IPAM.Config[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// CIDR subnet.
    #[serde(rename = "Subnet", default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Allocation range.
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Gateway.
    #[serde(rename = "Gateway", default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Reserved addresses.
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auxiliary_addresses: Option<Map>,
}

/// A volume, as `POST /volumes/create` takes it (`VolumeCreateOptions`).
///
/// `docker stack deploy` does not create volumes itself: the mount's `VolumeOptions` create them
/// on the node that first runs a task. hearth keeps the same spec here so teardown and drift
/// checks know what the stack owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeSpec {
    /// Full volume name.
    pub name: String,
    /// Driver (`local` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Map>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
}

/// A secret, as `POST /secrets/create` takes it (`SecretSpec`). `Debug` shows the data's
/// length only, never the data.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretSpec {
    /// Full secret name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
    /// Content, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// External secret-store driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// Templating driver (`golang`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

impl std::fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self
            .data
            .as_ref()
            .map(|d| format!("<{} base64 characters, redacted>", d.len()));
        f.debug_struct("SecretSpec")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &data)
            .field("driver", &self.driver)
            .field("templating", &self.templating)
            .finish()
    }
}

/// A config, as `POST /configs/create` takes it (`ConfigSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigSpec {
    /// Full config name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map>,
    /// Content, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Templating driver (`golang`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

// ---------------------------------------------------------------------------------------------
// Stacks
// ---------------------------------------------------------------------------------------------

/// Everything one stack deploy creates, plus what it needs to exist already.
///
/// Each list is sorted by object name, so equal stacks compare and hash equal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Stack name (`com.docker.stack.namespace`).
    pub namespace: String,
    /// Services to create.
    pub services: Vec<ServiceSpec>,
    /// Networks to create.
    pub networks: Vec<NetworkSpec>,
    /// Named volumes the stack owns (created by tasks, removed by teardown).
    pub volumes: Vec<VolumeSpec>,
    /// Secrets to create.
    pub secrets: Vec<SecretSpec>,
    /// Configs to create.
    pub configs: Vec<ConfigSpec>,
    /// Objects the stack uses but does not own: they must already exist.
    pub externals: Externals,
    /// Secrets and configs named explicitly (compose `name:`): created under exactly that
    /// name, as docker does, instead of hearth's `<name>-<hash10>` (#13).
    #[serde(default, skip_serializing_if = "ExactNames::is_empty")]
    pub exact_names: ExactNames,
    /// Secrets the stack uses by their exact name that hearth creates with a random value
    /// when missing (the recipe ecosystem's versioned secrets, `<stack>_<name>_v1`): kept
    /// while they exist, owned by the stack (removed with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated_secrets: Vec<GeneratedSecret>,
}

/// Names of the secrets and configs a stack names explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactNames {
    /// Secret names.
    pub secrets: std::collections::BTreeSet<String>,
    /// Config names.
    pub configs: std::collections::BTreeSet<String>,
}

impl ExactNames {
    /// Whether no name is exact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.configs.is_empty()
    }
}

/// A secret hearth generates (see [`StackSpec::generated_secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSecret {
    /// The exact secret name.
    pub name: String,
    /// How many random characters (letters and digits).
    pub length: usize,
}

/// Names of external objects a stack refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Externals {
    /// External networks (built-in `host`/`bridge`/`ingress` included as named).
    pub networks: Vec<String>,
    /// External volumes.
    pub volumes: Vec<String>,
    /// External secrets.
    pub secrets: Vec<String>,
    /// External configs.
    pub configs: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Hashing and encoding
// ---------------------------------------------------------------------------------------------

/// Stable content hash of a spec: lowercase hex SHA-256 of its canonical JSON.
///
/// # Guarantees
/// Canonical JSON = object keys sorted bytewise at every level, no whitespace, omitted fields
/// absent. Equal specs hash equal regardless of map insertion order or serde_json features.
///
/// # Caveats
/// A spec that carries its own hash in a label must be hashed before the label is added.
///
/// # Errors
/// [`Error::SerializationFailed`] if the value does not serialise to JSON (non-string map keys).
pub fn content_hash<T: Serialize + ?Sized>(spec: &T) -> Result<String, Error> {
    let value = serde_json::to_value(spec).map_err(Error::SerializationFailed)?;
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// The fields of a task template that [`template_digest`] covers: what a task runs. Left
/// out: what the daemon shows differently on a service's `TaskTemplate` and on its tasks'
/// `Spec` (seen on Engine 20.10: `StopGracePeriod` and `DNSConfig` of the container spec,
/// `RestartPolicy` and `Runtime` of the template, shown on the service only).
const DIGEST_CONTAINER_FIELDS: &[&str] = &[
    "Image",
    "Labels",
    "Command",
    "Args",
    "Hostname",
    "Env",
    "Dir",
    "User",
    "Groups",
    "Privileges",
    "TTY",
    "OpenStdin",
    "ReadOnly",
    "Mounts",
    "StopSignal",
    "HealthCheck",
    "Hosts",
    "Secrets",
    "Configs",
    "Init",
    "Sysctls",
    "CapabilityAdd",
    "CapabilityDrop",
    "Ulimits",
];
/// Template fields (besides the container spec) [`template_digest`] covers.
const DIGEST_TEMPLATE_FIELDS: &[&str] = &[
    "Resources",
    "Placement",
    "Networks",
    "LogDriver",
    "ForceUpdate",
];

/// A digest of what a task template runs, the same for a service's `TaskTemplate` and the
/// `Spec` of each task made from it (both as the Engine API shows them, as JSON): a task whose
/// digest differs from its service's runs an older spec. It replaces a hash label in the
/// container spec, which would make hearth's task template differ from docker's (#13).
pub fn template_digest(template: &serde_json::Value) -> String {
    let mut picked = serde_json::Map::new();
    for k in DIGEST_TEMPLATE_FIELDS {
        if let Some(v) = template.get(*k).filter(|v| !v.is_null()) {
            picked.insert((*k).to_string(), v.clone());
        }
    }
    let mut container = serde_json::Map::new();
    if let Some(c) = template.get("ContainerSpec") {
        for k in DIGEST_CONTAINER_FIELDS {
            if let Some(v) = c.get(*k).filter(|v| !v.is_null()) {
                container.insert((*k).to_string(), v.clone());
            }
        }
    }
    picked.insert("ContainerSpec".into(), serde_json::Value::Object(container));
    let mut canonical = String::new();
    write_canonical(&serde_json::Value::Object(picked), &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Canonical JSON text of a value: sorted keys, no whitespace.
pub fn canonical_json<T: Serialize + ?Sized>(spec: &T) -> Result<String, Error> {
    let value = serde_json::to_value(spec).map_err(Error::SerializationFailed)?;
    let mut out = String::new();
    write_canonical(&value, &mut out);
    Ok(out)
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string always serialises; fall back to an empty pair of quotes otherwise.
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Standard, padded base64 of `bytes` (the encoding of `SecretSpec.Data` / `ConfigSpec.Data`).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

impl SecretSpec {
    /// Sets `Data` from raw bytes.
    pub fn set_data(&mut self, bytes: &[u8]) {
        self.data = Some(base64_encode(bytes));
    }
}

impl ConfigSpec {
    /// Sets `Data` from raw bytes.
    pub fn set_data(&mut self, bytes: &[u8]) {
        self.data = Some(base64_encode(bytes));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample_service() -> ServiceSpec {
        ServiceSpec {
            name: Some("s_web".into()),
            labels: Some(Map::from([(
                "com.docker.stack.namespace".into(),
                "s".into(),
            )])),
            task_template: Some(TaskSpec {
                container_spec: Some(ContainerSpec {
                    image: Some("busybox".into()),
                    tty: Some(true),
                    stop_grace_period: Some(10_000_000_000),
                    health_check: Some(HealthCheck {
                        test: Some(vec!["CMD-SHELL".into(), "true".into()]),
                        ..Default::default()
                    }),
                    dns_config: Some(DnsConfig {
                        nameservers: Some(vec!["1.1.1.1".into()]),
                        ..Default::default()
                    }),
                    capability_add: Some(vec!["NET_ADMIN".into()]),
                    secrets: Some(vec![SecretReference {
                        file: Some(FileTarget {
                            name: "x".into(),
                            uid: "0".into(),
                            gid: "0".into(),
                            mode: 0o444,
                        }),
                        secret_id: None,
                        secret_name: "s_x".into(),
                    }]),
                    mounts: Some(vec![Mount {
                        target: Some("/t".into()),
                        r#type: Some(MountType::Tmpfs),
                        tmpfs_options: Some(TmpfsOptions {
                            size_bytes: Some(1024),
                            mode: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                resources: Some(Resources {
                    limits: Some(Limit {
                        nano_cpus: Some(500_000_000),
                        memory_bytes: Some(1 << 20),
                        pids: None,
                    }),
                    reservations: None,
                }),
                ..Default::default()
            }),
            mode: Some(ServiceMode::global()),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointMode::Dnsrr),
                ports: Some(vec![PortConfig {
                    protocol: Some(PortProtocol::Tcp),
                    target_port: Some(80),
                    published_port: Some(8080),
                    publish_mode: Some(PublishMode::Host),
                    name: None,
                }]),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn unset_fields_are_omitted_and_engine_names_are_used() {
        let json = serde_json::to_value(sample_service()).unwrap();
        let cs = &json["TaskTemplate"]["ContainerSpec"];
        assert_eq!(cs["TTY"], true);
        assert_eq!(cs["StopGracePeriod"], 10_000_000_000_i64);
        assert!(cs.get("HealthCheck").is_some());
        assert!(cs.get("DNSConfig").is_some());
        assert!(cs.get("CapabilityAdd").is_some());
        assert!(cs.get("Env").is_none());
        assert_eq!(cs["Secrets"][0]["SecretName"], "s_x");
        assert!(cs["Secrets"][0].get("SecretID").is_none());
        assert_eq!(cs["Mounts"][0]["Type"], "tmpfs");
        assert_eq!(
            json["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"],
            500_000_000
        );
        assert_eq!(json["Mode"]["Global"], serde_json::json!({}));
        assert!(json["Mode"].get("Replicated").is_none());
        assert_eq!(json["EndpointSpec"]["Ports"][0]["PublishMode"], "host");
    }

    #[test]
    fn specs_round_trip_through_json() {
        let spec = sample_service();
        let back: ServiceSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let net = NetworkSpec {
            name: "s_default".into(),
            driver: Some("overlay".into()),
            enable_ipv6: Some(false),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some("10.0.0.0/24".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&net).unwrap();
        assert_eq!(json["EnableIPv6"], false);
        assert_eq!(json["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    }

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let a = sample_service();
        let h1 = content_hash(&a).unwrap();
        assert_eq!(h1, content_hash(&a.clone()).unwrap());
        assert_eq!(h1.len(), 64);
        let mut b = a.clone();
        b.name = Some("s_other".into());
        assert_ne!(h1, content_hash(&b).unwrap());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": {"z": 1, "a": [ {"y": 2, "x": 3} ]}, "a": "q"});
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"a":"q","b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn a_secret_specs_debug_output_never_shows_its_data() {
        let spec = SecretSpec {
            name: "s".into(),
            data: Some(base64_encode(b"hunter2-very-secret")),
            ..SecretSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(
            !shown.contains(&base64_encode(b"hunter2-very-secret")),
            "{shown}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
        }
    }
}
