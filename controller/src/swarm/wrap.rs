//! One delegating [`Swarm`] implementation for the wrappers that act around every call of an
//! inner swarm ([`super::MeteredSwarm`] meters each call, [`super::FencedSwarm`] refuses
//! writes once this replica no longer leads): a wrapper says what it does around one call in
//! [`Around`]; [`Wrapped`] names each trait method once, with its operation name and, for a
//! write, the API call it makes.

use std::sync::Arc;

use futures::stream::BoxStream;

use super::{
    spec, Call, Config, Container, Event, Image, ImageFilter, LabelFilter, Network,
    NetworkEndpoint, Node, ObjectKind, Result, Secret, Service, Swarm, SwarmFuture, SwarmInfo,
    Task, Verb, Volume,
};

/// One call of the wrapped swarm, as the wrapper sees it.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The trait method's name (`list_services`, `create_volume`, …): a closed set.
    pub name: &'static str,
    /// For a call that changes the swarm: what it changes. `None` for reads.
    pub write: Option<Call>,
}

const fn read(name: &'static str) -> Op {
    Op { name, write: None }
}

const fn write(name: &'static str, verb: Verb, kind: ObjectKind) -> Op {
    Op {
        name,
        write: Some(Call::new(verb, kind)),
    }
}

/// What a wrapper does around each call of the inner swarm.
pub trait Around: Send + Sync + 'static {
    /// Runs `call` (the inner swarm's call, not started yet) as `op`, or answers instead of it.
    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        call: impl FnOnce() -> SwarmFuture<'a, T>,
    ) -> SwarmFuture<'a, T>;

    /// The events stream of the inner swarm, as the wrapper passes it on (as is by default).
    fn events(
        &self,
        inner: BoxStream<'static, Result<Event>>,
    ) -> BoxStream<'static, Result<Event>> {
        inner
    }
}

/// A swarm whose every call goes through `A` to an inner swarm.
#[derive(Clone)]
pub struct Wrapped<A> {
    pub(super) inner: Arc<dyn Swarm>,
    pub(super) around: A,
}

impl<A> std::fmt::Debug for Wrapped<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(std::any::type_name::<A>())
            .finish_non_exhaustive()
    }
}

impl<A: Around> Swarm for Wrapped<A> {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        self.around.around(read("ping"), || self.inner.ping())
    }
    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        self.around.around(read("info"), || self.inner.info())
    }
    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        self.around
            .around(read("list_services"), || self.inner.list_services(filter))
    }
    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        self.around
            .around(read("list_tasks"), || self.inner.list_tasks(filter))
    }
    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        self.around.around(read("list_containers"), || {
            self.inner.list_containers(filter)
        })
    }
    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        self.around
            .around(read("list_networks"), || self.inner.list_networks(filter))
    }
    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        self.around
            .around(read("list_volumes"), || self.inner.list_volumes(filter))
    }
    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        self.around
            .around(read("list_secrets"), || self.inner.list_secrets(filter))
    }
    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        self.around
            .around(read("list_configs"), || self.inner.list_configs(filter))
    }
    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        self.around
            .around(read("list_nodes"), || self.inner.list_nodes(filter))
    }
    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        let op = write("create_service", Verb::Create, ObjectKind::Service);
        self.around.around(op, || self.inner.create_service(spec))
    }
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        let op = write("update_service", Verb::Update, ObjectKind::Service);
        self.around
            .around(op, move || self.inner.update_service(id, version, spec))
    }
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        let op = write("force_update_service", Verb::Update, ObjectKind::Service);
        self.around
            .around(op, move || self.inner.force_update_service(id, version))
    }
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_service", Verb::Remove, ObjectKind::Service);
        self.around.around(op, || self.inner.remove_service(id))
    }
    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        let op = write("create_network", Verb::Create, ObjectKind::Network);
        self.around.around(op, || self.inner.create_network(spec))
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_network", Verb::Remove, ObjectKind::Network);
        self.around.around(op, || self.inner.remove_network(id))
    }
    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        let op = write("create_volume", Verb::Create, ObjectKind::Volume);
        self.around.around(op, || self.inner.create_volume(spec))
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_volume", Verb::Remove, ObjectKind::Volume);
        self.around.around(op, || self.inner.remove_volume(name))
    }
    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        let op = write("create_secret", Verb::Create, ObjectKind::Secret);
        self.around.around(op, || self.inner.create_secret(spec))
    }
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        let op = write("update_secret", Verb::Update, ObjectKind::Secret);
        self.around
            .around(op, move || self.inner.update_secret(id, version, spec))
    }
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_secret", Verb::Remove, ObjectKind::Secret);
        self.around.around(op, || self.inner.remove_secret(id))
    }
    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        let op = write("create_config", Verb::Create, ObjectKind::Config);
        self.around.around(op, || self.inner.create_config(spec))
    }
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        let op = write("update_config", Verb::Update, ObjectKind::Config);
        self.around
            .around(op, move || self.inner.update_config(id, version, spec))
    }
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_config", Verb::Remove, ObjectKind::Config);
        self.around.around(op, || self.inner.remove_config(id))
    }
    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        self.around
            .around(read("list_images"), || self.inner.list_images(filter))
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_image", Verb::Remove, ObjectKind::Image);
        self.around.around(op, || self.inner.remove_image(id))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let op = write("remove_container", Verb::Remove, ObjectKind::Container);
        self.around.around(op, || self.inner.remove_container(id))
    }
    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        self.around.around(read("inspect_container"), || {
            self.inner.inspect_container(id)
        })
    }
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        self.around.around(read("network_endpoints"), || {
            self.inner.network_endpoints(network)
        })
    }
    fn events(&self) -> BoxStream<'static, Result<Event>> {
        self.around.events(self.inner.events())
    }
}
