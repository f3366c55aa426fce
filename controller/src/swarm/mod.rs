//! The swarm: what hearth asks of Docker Swarm, the bollard adapter and the simulated swarm.
//!
//! [`Swarm`] is the whole surface the controller uses. Two implementations:
//! [`DockerSwarm`] talks to the local Docker daemon through bollard (the only module that
//! imports bollard), and [`sim::SimSwarm`] is an in-memory, deterministic swarm for scale,
//! fault and virtual-time tests. Both run the same conformance suite (`tests/`).
//!
//! Desired objects are written as [`spec`] types (the Engine API's JSON shape); observed
//! objects come back as hearth's own [`types`]. Reads are one list call per object kind with a
//! label filter, so a resync costs the same number of calls however many stacks there are.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

mod docker;
mod error;
mod failover;
mod fenced;
pub mod labels;
mod metered;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod spec;
mod types;
mod wrap;

pub use docker::{DockerOptions, DockerSwarm};
pub use error::{Error, Result};
pub use failover::FailoverSwarm;
pub use fenced::{Fence, FencedSwarm, Leadership};
pub use metered::{Meter, MeteredSwarm};
pub use types::{
    health_from_status, task_health, Call, Config, Container, ContainerState, Event, Health, Image,
    ImageFilter, LabelFilter, Labels, Meta, Network, NetworkEndpoint, Node, ObjectKind, Secret,
    Service, ServiceMode, SwarmInfo, Task, TaskState, Verb, Volume,
};
pub use wrap::{Around, Op, Wrapped};

/// The future every [`Swarm`] call returns.
pub type SwarmFuture<'a, T> = BoxFuture<'a, Result<T>>;

/// Default deadline of one call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What hearth needs from Docker Swarm. Object-safe: use it as `Arc<dyn Swarm>`.
///
/// # Guarantees
/// Every call finishes within the implementation's deadline ([`Error::Timeout`] otherwise),
/// and every failure is a typed [`Error`] that says whether retrying may help.
///
/// # Caveats
/// Lists read one kind each and filter by labels on the daemon side. Containers and volumes
/// are those of the node the client talks to; teardown reaches other nodes through one
/// `Swarm` per node (`stack::nodes`).
pub trait Swarm: Send + Sync {
    /// Checks that the daemon answers.
    fn ping(&self) -> SwarmFuture<'_, ()>;
    /// Reads daemon and swarm state.
    fn info(&self) -> SwarmFuture<'_, SwarmInfo>;

    /// Services whose labels match `filter`.
    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>>;
    /// Tasks whose labels match `filter` (tasks carry their service's labels).
    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>>;
    /// Containers (running or not) whose labels match `filter`.
    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>>;
    /// Networks whose labels match `filter`.
    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>>;
    /// Volumes whose labels match `filter`.
    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>>;
    /// Secrets whose labels match `filter`.
    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>>;
    /// Configs whose labels match `filter`.
    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>>;
    /// The containers of this node attached to the network `network` (name or ID), with
    /// their addresses on it; [`Error::NotFound`] when there is no such network here.
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>>;
    /// Nodes whose node labels match `filter`.
    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>>;

    /// Creates a service; returns its ID. Secret and config references without an ID are
    /// resolved by name first.
    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String>;
    /// Replaces a service's spec; `version` must be its current version index.
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()>;
    /// Redeploys a service's tasks with its current spec (Swarm's `ForceUpdate` counter + 1,
    /// as `docker service update --force`), following its update config (e.g. start-first);
    /// `version` must be its current version index.
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()>;
    /// Removes a service (its tasks stop gracefully, in the background).
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// Creates a network; returns its ID. (Docker cannot update networks.)
    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String>;
    /// Removes a network.
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// Creates a volume on this node; returns its name. (Docker cannot update volumes.)
    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String>;
    /// Removes a volume from this node; [`Error::InUse`] while a container uses it.
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()>;

    /// Creates a secret; returns its ID.
    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String>;
    /// Updates a secret at `version` (Docker accepts label changes only; data is immutable).
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()>;
    /// Removes a secret; [`Error::InUse`] while a service refers to it.
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// Creates a config; returns its ID.
    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String>;
    /// Updates a config at `version` (labels only; data is immutable).
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()>;
    /// Removes a config; [`Error::InUse`] while a service refers to it.
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// Images on this node that pass `filter` (dangling or not, labels).
    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>>;
    /// Removes an image by ID (never forced, children are pruned as Docker does);
    /// [`Error::InUse`] while a container (even a stopped one) uses it or it has dependent
    /// child images.
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// Kills and removes a container at once (forced teardown of a dead owner's tasks).
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()>;

    /// One container of this node by ID, unique ID prefix or name, running or not (a run's
    /// `container:ID` owner: its full ID and state); [`Error::NotFound`] when there is none.
    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container>;

    /// Change hints for services, tasks' containers, networks, volumes, secrets, configs and
    /// nodes. Opening it makes one [`Verb::Events`] call; the stream has no deadline, yields an
    /// error if opening fails, and ends when the daemon restarts or drops it: relist, then open
    /// it again. It carries every event from the moment `events()` is called, even if the
    /// first poll comes later.
    fn events(&self) -> BoxStream<'static, Result<Event>>;
}

/// Runs `fut` under a deadline, mapping expiry to [`Error::Timeout`] for `call`.
pub(crate) async fn with_deadline<T>(
    call: Call,
    after: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout { call, after }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_its_deadline_times_out() {
        let call = Call::new(Verb::List, ObjectKind::Service);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let err = with_deadline(call, Duration::from_secs(1), slow)
            .await
            .expect_err("deadline must fire");
        assert!(matches!(err, Error::Timeout { .. }) && err.is_retryable());
    }

    #[test]
    fn the_trait_is_object_safe() {
        fn takes(_: Option<std::sync::Arc<dyn Swarm>>) {}
        takes(None);
    }
}
