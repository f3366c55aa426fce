//! A [`Swarm`] wrapper that counts the calls and writes it passes on, and can keep a timed log.
//!
//! The real swarm has no call log (the simulated one has); tests and benchmarks that count
//! the calls of an operation on the real swarm wrap the bollard adapter in [`Counting`].
//! With [`Counting::timed`] every call is also recorded with its start and duration, to see
//! where an operation's time goes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use controller::swarm::spec::{ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec, VolumeSpec};
use controller::swarm::{
    Call, Config, Container, DockerSwarm, Event, Image, ImageFilter, LabelFilter, Network,
    NetworkEndpoint, Node, ObjectKind, Secret, Service, Swarm, SwarmFuture, SwarmInfo, Task, Verb,
    Volume,
};
use futures::stream::BoxStream;

/// One call of a timed log.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedCall {
    /// The call.
    pub call: Call,
    /// When it started, from the wrapper's creation (or its last [`Counting::take_log`]).
    pub started: Duration,
    /// How long it took until its answer.
    pub took: Duration,
    /// Whether it failed.
    pub failed: bool,
}

/// A [`Swarm`] that counts the calls it passes on to `S` (by default the bollard adapter).
pub struct Counting<S = DockerSwarm> {
    inner: S,
    calls: AtomicUsize,
    writes: AtomicUsize,
    /// `Some` when timed: the origin and the calls so far.
    log: Option<Mutex<(Instant, Vec<TimedCall>)>>,
}

impl<S: Swarm> Counting<S> {
    /// Counts the calls to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            log: None,
        }
    }

    /// Counts the calls to `inner` and logs each with its start and duration.
    pub fn timed(inner: S) -> Self {
        Self {
            log: Some(Mutex::new((Instant::now(), Vec::new()))),
            ..Self::new(inner)
        }
    }

    /// The wrapped swarm.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Calls since creation or the last reset.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Write calls (create, update, remove) since creation or the last reset.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Sets both counters to zero.
    pub fn reset(&self) {
        self.take();
    }

    /// Returns `(calls, writes)` and sets both to zero.
    pub fn take(&self) -> (usize, usize) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.writes.swap(0, Ordering::Relaxed),
        )
    }

    /// Returns the timed log (in order of answers) and starts a new one from now; empty if
    /// the wrapper is not [`Counting::timed`].
    pub fn take_log(&self) -> Vec<TimedCall> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.0 = Instant::now();
        std::mem::take(&mut log.1)
    }

    fn count<'a, T: Send + 'a>(
        &'a self,
        verb: Verb,
        kind: ObjectKind,
        fut: impl Future<Output = controller::swarm::Result<T>> + Send + 'a,
    ) -> SwarmFuture<'a, T> {
        let call = Call::new(verb, kind);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if call.is_write() {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = fut.await;
            if let Some(log) = &self.log {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let entry = TimedCall {
                    call,
                    started: started.saturating_duration_since(log.0),
                    took: started.elapsed(),
                    failed: result.is_err(),
                };
                log.1.push(entry);
            }
            result
        })
    }
}

impl<S: Swarm> Swarm for Counting<S> {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        self.count(Verb::Ping, ObjectKind::Daemon, self.inner.ping())
    }
    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        self.count(Verb::Info, ObjectKind::Daemon, self.inner.info())
    }
    fn list_services<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        self.count(Verb::List, ObjectKind::Service, self.inner.list_services(f))
    }
    fn list_tasks<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        self.count(Verb::List, ObjectKind::Task, self.inner.list_tasks(f))
    }
    fn list_containers<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        let fut = self.inner.list_containers(f);
        self.count(Verb::List, ObjectKind::Container, fut)
    }
    fn list_networks<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        self.count(Verb::List, ObjectKind::Network, self.inner.list_networks(f))
    }
    fn list_volumes<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        self.count(Verb::List, ObjectKind::Volume, self.inner.list_volumes(f))
    }
    fn list_secrets<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        self.count(Verb::List, ObjectKind::Secret, self.inner.list_secrets(f))
    }
    fn list_configs<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        self.count(Verb::List, ObjectKind::Config, self.inner.list_configs(f))
    }
    fn list_nodes<'a>(&'a self, f: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        self.count(Verb::List, ObjectKind::Node, self.inner.list_nodes(f))
    }
    fn create_service<'a>(&'a self, s: &'a ServiceSpec) -> SwarmFuture<'a, String> {
        self.count(
            Verb::Create,
            ObjectKind::Service,
            self.inner.create_service(s),
        )
    }
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        s: &'a ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        let fut = self.inner.update_service(id, version, s);
        self.count(Verb::Update, ObjectKind::Service, fut)
    }
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        let fut = self.inner.force_update_service(id, version);
        self.count(Verb::Update, ObjectKind::Service, fut)
    }
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.count(
            Verb::Remove,
            ObjectKind::Service,
            self.inner.remove_service(id),
        )
    }
    fn create_network<'a>(&'a self, s: &'a NetworkSpec) -> SwarmFuture<'a, String> {
        self.count(
            Verb::Create,
            ObjectKind::Network,
            self.inner.create_network(s),
        )
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.count(
            Verb::Remove,
            ObjectKind::Network,
            self.inner.remove_network(id),
        )
    }
    fn create_volume<'a>(&'a self, s: &'a VolumeSpec) -> SwarmFuture<'a, String> {
        self.count(
            Verb::Create,
            ObjectKind::Volume,
            self.inner.create_volume(s),
        )
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        self.count(
            Verb::Remove,
            ObjectKind::Volume,
            self.inner.remove_volume(name),
        )
    }
    fn create_secret<'a>(&'a self, s: &'a SecretSpec) -> SwarmFuture<'a, String> {
        self.count(
            Verb::Create,
            ObjectKind::Secret,
            self.inner.create_secret(s),
        )
    }
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        s: &'a SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        let fut = self.inner.update_secret(id, version, s);
        self.count(Verb::Update, ObjectKind::Secret, fut)
    }
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.count(
            Verb::Remove,
            ObjectKind::Secret,
            self.inner.remove_secret(id),
        )
    }
    fn create_config<'a>(&'a self, s: &'a ConfigSpec) -> SwarmFuture<'a, String> {
        self.count(
            Verb::Create,
            ObjectKind::Config,
            self.inner.create_config(s),
        )
    }
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        s: &'a ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        let fut = self.inner.update_config(id, version, s);
        self.count(Verb::Update, ObjectKind::Config, fut)
    }
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.count(
            Verb::Remove,
            ObjectKind::Config,
            self.inner.remove_config(id),
        )
    }
    fn list_images<'a>(&'a self, f: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        self.count(Verb::List, ObjectKind::Image, self.inner.list_images(f))
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.count(Verb::Remove, ObjectKind::Image, self.inner.remove_image(id))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let fut = self.inner.remove_container(id);
        self.count(Verb::Remove, ObjectKind::Container, fut)
    }
    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        let fut = self.inner.inspect_container(id);
        self.count(Verb::Inspect, ObjectKind::Container, fut)
    }
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        let fut = self.inner.network_endpoints(network);
        self.count(Verb::Inspect, ObjectKind::Network, fut)
    }
    fn events(&self) -> BoxStream<'static, controller::swarm::Result<Event>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller::swarm::sim::SimSwarm;

    #[tokio::test]
    async fn calls_and_writes_are_counted_and_timed() {
        let swarm = Counting::timed(SimSwarm::new(Default::default()));
        let filter = LabelFilter::all();
        swarm.list_services(&filter).await.expect("list");
        let missing = swarm.remove_volume("hearth-test-nothing").await;
        assert!(missing.is_err(), "removing a missing volume must fail");
        assert_eq!((swarm.calls(), swarm.writes()), (2, 1));
        let log = swarm.take_log();
        let calls: Vec<Call> = log.iter().map(|c| c.call).collect();
        assert_eq!(
            calls,
            vec![
                Call::new(Verb::List, ObjectKind::Service),
                Call::new(Verb::Remove, ObjectKind::Volume)
            ]
        );
        assert_eq!(
            log.iter().map(|c| c.failed).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(swarm.take(), (2, 1));
        assert_eq!((swarm.calls(), swarm.writes()), (0, 0));
        assert!(swarm.take_log().is_empty());
    }

    #[tokio::test]
    async fn an_untimed_wrapper_keeps_no_log() {
        let swarm = Counting::new(SimSwarm::new(Default::default()));
        swarm
            .list_networks(&LabelFilter::all())
            .await
            .expect("list");
        assert_eq!(swarm.calls(), 1);
        assert!(swarm.take_log().is_empty());
    }
}
