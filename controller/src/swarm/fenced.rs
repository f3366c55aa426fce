//! A [`Swarm`] wrapper that refuses every write once this replica may no longer lead: the swarm-side half of leader fencing.
//!
//! The etcd store fences the leader's *store* writes in etcd itself. Docker cannot check an
//! etcd lease, so the leader checks its own before every Docker write: the engine's
//! leadership is valid until half a lease after its last successful renewal, which is before
//! etcd can let another replica take over. A replica that was paused or partitioned past
//! that point finds every write refused here the moment it runs again — before its shutdown
//! (which the engine triggers at the same time) has stopped its tasks. Reads pass through.
//!
//! # Caveats
//! A write checked just before the process is frozen is sent when it thaws; the window is the
//! time between this check and the request leaving the process (microseconds), not a lease.

use std::sync::Arc;

use super::{
    spec, Call, Config, Container, Error, Event, Image, ImageFilter, LabelFilter, Network,
    NetworkEndpoint, Node, ObjectKind, Result, Secret, Service, Swarm, SwarmFuture, SwarmInfo,
    Task, Verb, Volume,
};

/// Whether this replica still leads (checked before every write).
pub type Leadership = Arc<dyn Fn() -> bool + Send + Sync>;

/// A swarm whose writes need `leads()`.
#[derive(Clone)]
pub struct FencedSwarm {
    inner: Arc<dyn Swarm>,
    leads: Leadership,
}

impl std::fmt::Debug for FencedSwarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedSwarm").finish_non_exhaustive()
    }
}

impl FencedSwarm {
    /// Wraps `inner`; writes pass only while `leads()` is true.
    pub fn new(inner: Arc<dyn Swarm>, leads: Leadership) -> Self {
        Self { inner, leads }
    }

    fn write<'a, T: Send + 'a>(
        &'a self,
        verb: Verb,
        kind: ObjectKind,
        call: impl FnOnce() -> SwarmFuture<'a, T>,
    ) -> SwarmFuture<'a, T> {
        if (self.leads)() {
            call()
        } else {
            Box::pin(async move {
                Err(Error::Unavailable {
                    call: Call::new(verb, kind),
                    message: "refused: this replica no longer leads (its etcd lease may have \
                              passed to another replica)"
                        .to_string(),
                })
            })
        }
    }
}

impl Swarm for FencedSwarm {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        self.inner.ping()
    }
    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        self.inner.info()
    }
    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        self.inner.list_services(filter)
    }
    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        self.inner.list_tasks(filter)
    }
    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        self.inner.list_containers(filter)
    }
    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        self.inner.list_networks(filter)
    }
    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        self.inner.list_volumes(filter)
    }
    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        self.inner.list_secrets(filter)
    }
    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        self.inner.list_configs(filter)
    }
    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        self.inner.list_nodes(filter)
    }
    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        self.write(Verb::Create, ObjectKind::Service, || {
            self.inner.create_service(spec)
        })
    }
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        self.write(Verb::Update, ObjectKind::Service, || {
            self.inner.update_service(id, version, spec)
        })
    }
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        self.write(Verb::Update, ObjectKind::Service, || {
            self.inner.force_update_service(id, version)
        })
    }
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Service, || {
            self.inner.remove_service(id)
        })
    }
    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        self.write(Verb::Create, ObjectKind::Network, || {
            self.inner.create_network(spec)
        })
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Network, || {
            self.inner.remove_network(id)
        })
    }
    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        self.write(Verb::Create, ObjectKind::Volume, || {
            self.inner.create_volume(spec)
        })
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Volume, || {
            self.inner.remove_volume(name)
        })
    }
    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        self.write(Verb::Create, ObjectKind::Secret, || {
            self.inner.create_secret(spec)
        })
    }
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        self.write(Verb::Update, ObjectKind::Secret, || {
            self.inner.update_secret(id, version, spec)
        })
    }
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Secret, || {
            self.inner.remove_secret(id)
        })
    }
    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        self.write(Verb::Create, ObjectKind::Config, || {
            self.inner.create_config(spec)
        })
    }
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        self.write(Verb::Update, ObjectKind::Config, || {
            self.inner.update_config(id, version, spec)
        })
    }
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Config, || {
            self.inner.remove_config(id)
        })
    }
    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        self.inner.list_images(filter)
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Image, || {
            self.inner.remove_image(id)
        })
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.write(Verb::Remove, ObjectKind::Container, || {
            self.inner.remove_container(id)
        })
    }
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        self.inner.network_endpoints(network)
    }
    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        self.inner.inspect_container(id)
    }
    fn events(&self) -> futures::stream::BoxStream<'static, Result<Event>> {
        self.inner.events()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::swarm::sim::{SimConfig, SimSwarm};

    #[tokio::test]
    async fn writes_should_pass_only_while_leading_and_reads_always() {
        let leading = Arc::new(AtomicBool::new(true));
        let flag = leading.clone();
        let sim = Arc::new(SimSwarm::new(SimConfig::default()));
        let swarm = FencedSwarm::new(sim.clone(), Arc::new(move || flag.load(Ordering::SeqCst)));
        let spec = spec::NetworkSpec {
            name: "fenced-net".into(),
            ..Default::default()
        };
        swarm.create_network(&spec).await.unwrap();
        leading.store(false, Ordering::SeqCst);
        let err = swarm
            .create_network(&spec::NetworkSpec {
                name: "late-net".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no longer leads"), "{err}");
        let all = swarm.list_networks(&LabelFilter::default()).await.unwrap();
        let names: Vec<_> = all.iter().map(|n| n.name.as_str()).collect();
        assert!(
            names.contains(&"fenced-net") && !names.contains(&"late-net"),
            "{names:?}"
        );
    }
}
