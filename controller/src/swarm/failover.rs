//! A swarm reached through several managers' sockets: every call goes to one of them; when it
//! stops answering, the next manager that answers as an active swarm manager takes over.
//!
//! Why: a swarm with three managers survives losing one, and hearth must too (issue 17). The
//! runtime already relists when the events stream ends, so failing over is only "reconnect
//! elsewhere": the failed call's error reaches its caller as usual (a reconcile requeues, a
//! teardown retries), the next call and the reopened events stream go to the new manager.
//!
//! # Guarantees
//! - A call is sent once, to one manager: a failed write is never resent here (whether it
//!   took effect is unknown; callers relist before deciding again).
//! - After a [`Error::Transport`], [`Error::Timeout`] or [`Error::Unavailable`] (no leader,
//!   not a manager) the next call connects anew, trying the other sockets first, in order,
//!   then the failed one; a socket is used only if its daemon is an active swarm manager.
//!
//! # Caveats
//! The Engine API of a manager lists containers and volumes of its own node only, so the node
//! hearth's calls reach changes with a failover: give every node an `--node-endpoint` so that
//! teardowns reach each node the same way whichever manager hearth talks to.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::stream::{BoxStream, StreamExt};
use tracing::{info, warn};

use super::{
    spec, Call, Config, Container, DockerOptions, DockerSwarm, Error, Event, Image, ImageFilter,
    LabelFilter, Network, NetworkEndpoint, Node, ObjectKind, Result, Secret, Service, Swarm,
    SwarmFuture, SwarmInfo, Task, Verb, Volume,
};

/// See the module docs.
#[derive(Clone)]
pub struct FailoverSwarm {
    inner: Arc<Inner>,
}

struct Inner {
    sockets: Vec<PathBuf>,
    options: DockerOptions,
    /// The manager in use (index into `sockets`), or the one that failed last (`None` daemon).
    current: Mutex<(usize, Option<DockerSwarm>)>,
}

impl std::fmt::Debug for FailoverSwarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverSwarm")
            .field("sockets", &self.inner.sockets)
            .finish_non_exhaustive()
    }
}

/// Whether an error means "this manager cannot serve us now; another may".
fn fails_over(e: &Error) -> bool {
    matches!(
        e,
        Error::Transport { .. } | Error::Timeout { .. } | Error::Unavailable { .. }
    )
}

impl FailoverSwarm {
    /// Connects to the first of `sockets` that answers as an active swarm manager.
    ///
    /// # Errors
    /// The last socket's error when none does ([`Error::Unavailable`] for a daemon that
    /// answers but is not an active manager).
    pub async fn connect(sockets: Vec<PathBuf>, options: DockerOptions) -> Result<Self> {
        let this = FailoverSwarm {
            inner: Arc::new(Inner {
                current: Mutex::new((sockets.len().saturating_sub(1), None)),
                sockets,
                options,
            }),
        };
        this.inner.daemon().await?;
        Ok(this)
    }

    /// The socket of the manager in use (or of the one that failed last).
    pub fn socket(&self) -> PathBuf {
        let index = self.inner.lock().0;
        self.inner.sockets.get(index).cloned().unwrap_or_default()
    }

    /// The API version negotiated with the manager in use.
    pub fn api_version(&self) -> String {
        self.inner
            .lock()
            .1
            .as_ref()
            .map(|d| d.api_version().to_string())
            .unwrap_or_default()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<DockerSwarm>)> {
        // A panic while holding this lock cannot leave the pair inconsistent.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The manager in use, connecting to the next one that answers when there is none.
    async fn daemon(&self) -> Result<(usize, DockerSwarm)> {
        let failed = {
            let guard = self.lock();
            if let (i, Some(d)) = &*guard {
                return Ok((*i, d.clone()));
            }
            guard.0
        };
        let n = self.sockets.len();
        let mut last = Error::Unavailable {
            call: Call::new(Verb::Ping, ObjectKind::Daemon),
            message: "no manager socket given".into(),
        };
        // The ones after the failed one first, the failed one last.
        for step in 1..=n {
            let i = (failed + step) % n;
            let socket = &self.sockets[i];
            let connected = DockerSwarm::connect(DockerOptions {
                socket: socket.clone(),
                ..self.options.clone()
            })
            .await;
            let daemon = match connected {
                Ok(d) => d,
                Err(e) => {
                    warn!(socket = %socket.display(), error = %e, "manager does not answer");
                    last = e;
                    continue;
                }
            };
            match daemon.info().await {
                Ok(info) if info.is_active_manager() => {
                    info!(socket = %socket.display(), node = %info.node_id, "talking to this swarm manager");
                    *self.lock() = (i, Some(daemon.clone()));
                    return Ok((i, daemon));
                }
                Ok(info) => {
                    warn!(socket = %socket.display(), state = ?info.local_node_state, "not an active swarm manager");
                    last = Error::Unavailable {
                        call: Call::new(Verb::Ping, ObjectKind::Daemon),
                        message: format!("{} is not an active swarm manager", socket.display()),
                    };
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Forgets manager `index` after an error that says it cannot serve us.
    fn observe<T>(&self, index: usize, result: &Result<T>) {
        if let Err(e) = result {
            if fails_over(e) {
                let mut guard = self.lock();
                if guard.0 == index && guard.1.is_some() {
                    warn!(socket = %self.sockets[index].display(), error = %e, "swarm manager failed; the next call fails over");
                    *guard = (index, None);
                }
            }
        }
    }
}

/// Sends one call to the manager in use and notes whether it failed over.
macro_rules! via {
    ($self:ident, $d:ident => $call:expr) => {
        Box::pin(async move {
            let (index, $d) = $self.inner.daemon().await?;
            let result = $call.await;
            $self.inner.observe(index, &result);
            result
        })
    };
}

impl Swarm for FailoverSwarm {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        via!(self, d => d.ping())
    }
    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        via!(self, d => d.info())
    }
    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        via!(self, d => d.list_services(filter))
    }
    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        via!(self, d => d.list_tasks(filter))
    }
    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        via!(self, d => d.list_containers(filter))
    }
    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        via!(self, d => d.list_networks(filter))
    }
    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        via!(self, d => d.list_volumes(filter))
    }
    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        via!(self, d => d.list_secrets(filter))
    }
    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        via!(self, d => d.list_configs(filter))
    }
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        via!(self, d => d.network_endpoints(network))
    }
    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        via!(self, d => d.list_nodes(filter))
    }
    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        via!(self, d => d.create_service(spec))
    }
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        via!(self, d => d.update_service(id, version, spec))
    }
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        via!(self, d => d.force_update_service(id, version))
    }
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_service(id))
    }
    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        via!(self, d => d.create_network(spec))
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_network(id))
    }
    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        via!(self, d => d.create_volume(spec))
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_volume(name))
    }
    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        via!(self, d => d.create_secret(spec))
    }
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        via!(self, d => d.update_secret(id, version, spec))
    }
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_secret(id))
    }
    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        via!(self, d => d.create_config(spec))
    }
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        via!(self, d => d.update_config(id, version, spec))
    }
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_config(id))
    }
    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        via!(self, d => d.list_images(filter))
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_image(id))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        via!(self, d => d.remove_container(id))
    }

    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        via!(self, d => d.inspect_container(id))
    }

    /// The events of the manager in use; an error of the stream (its manager went away) makes
    /// the next call, and the runtime's reopened stream, fail over.
    fn events(&self) -> BoxStream<'static, Result<Event>> {
        let inner = Arc::clone(&self.inner);
        futures::stream::once(async move {
            match inner.daemon().await {
                Ok((index, daemon)) => daemon
                    .events()
                    .inspect(move |r| inner.observe(index, r))
                    .boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}
