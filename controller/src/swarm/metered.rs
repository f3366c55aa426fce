//! A [`Swarm`] wrapper that records every call's operation, latency and error kind in [`Metrics`].
//!
//! Labels are the operation (the trait method's name: `list_services`, `create_volume`, …)
//! and, for failures, the error's kind ([`Error::kind`]): both closed sets spelled here, so no
//! object ID or name can reach a label. The events stream counts one `events` call when it is
//! opened and one `events` error per error item it yields.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use metrics::Metrics;

use super::{
    spec, Config, Container, Error, Event, Image, ImageFilter, LabelFilter, Network,
    NetworkEndpoint, Node, Result, Secret, Service, Swarm, SwarmFuture, SwarmInfo, Task, Volume,
};

/// A swarm whose calls are metered.
#[derive(Clone)]
pub struct MeteredSwarm {
    inner: Arc<dyn Swarm>,
    metrics: Metrics,
}

impl std::fmt::Debug for MeteredSwarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredSwarm").finish_non_exhaustive()
    }
}

impl MeteredSwarm {
    /// Wraps `inner`; every call is recorded in `metrics`.
    pub fn new(inner: Arc<dyn Swarm>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    /// Runs `fut` and records it as `operation`.
    fn meter<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        fut: impl Future<Output = Result<T>> + Send + 'a,
    ) -> SwarmFuture<'a, T> {
        Box::pin(async move {
            let started = Instant::now();
            let result = fut.await;
            let error = result.as_ref().err().map(Error::kind);
            self.metrics
                .observe_docker_call(operation, started.elapsed(), error);
            result
        })
    }
}

impl Swarm for MeteredSwarm {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        self.meter("ping", self.inner.ping())
    }
    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        self.meter("info", self.inner.info())
    }
    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        self.meter("list_services", self.inner.list_services(filter))
    }
    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        self.meter("list_tasks", self.inner.list_tasks(filter))
    }
    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        self.meter("list_containers", self.inner.list_containers(filter))
    }
    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        self.meter("list_networks", self.inner.list_networks(filter))
    }
    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        self.meter("list_volumes", self.inner.list_volumes(filter))
    }
    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        self.meter("list_secrets", self.inner.list_secrets(filter))
    }
    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        self.meter("list_configs", self.inner.list_configs(filter))
    }
    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        self.meter("list_nodes", self.inner.list_nodes(filter))
    }
    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        self.meter("create_service", self.inner.create_service(spec))
    }
    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        self.meter(
            "update_service",
            self.inner.update_service(id, version, spec),
        )
    }
    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        self.meter(
            "force_update_service",
            self.inner.force_update_service(id, version),
        )
    }
    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_service", self.inner.remove_service(id))
    }
    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        self.meter("create_network", self.inner.create_network(spec))
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_network", self.inner.remove_network(id))
    }
    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        self.meter("create_volume", self.inner.create_volume(spec))
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_volume", self.inner.remove_volume(name))
    }
    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        self.meter("create_secret", self.inner.create_secret(spec))
    }
    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        self.meter("update_secret", self.inner.update_secret(id, version, spec))
    }
    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_secret", self.inner.remove_secret(id))
    }
    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        self.meter("create_config", self.inner.create_config(spec))
    }
    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        self.meter("update_config", self.inner.update_config(id, version, spec))
    }
    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_config", self.inner.remove_config(id))
    }
    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        self.meter("list_images", self.inner.list_images(filter))
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_image", self.inner.remove_image(id))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        self.meter("remove_container", self.inner.remove_container(id))
    }
    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        self.meter("inspect_container", self.inner.inspect_container(id))
    }
    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        self.meter("network_endpoints", self.inner.network_endpoints(network))
    }
    fn events(&self) -> futures::stream::BoxStream<'static, Result<Event>> {
        let metrics = self.metrics.clone();
        metrics.observe_docker_call("events", std::time::Duration::ZERO, None);
        self.inner
            .events()
            .inspect(move |item| {
                if let Err(e) = item {
                    metrics.observe_docker_call(
                        "events",
                        std::time::Duration::ZERO,
                        Some(e.kind()),
                    );
                }
            })
            .boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::sim::{SimConfig, SimSwarm};

    fn value(m: &Metrics, series: &str) -> Option<f64> {
        let text = m.encode().unwrap();
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn metered_calls_are_counted_per_operation_and_failures_per_error_kind() {
        let metrics = Metrics::new().unwrap();
        let swarm = MeteredSwarm::new(
            Arc::new(SimSwarm::new(SimConfig::default())),
            metrics.clone(),
        );
        swarm.ping().await.unwrap();
        swarm.list_services(&LabelFilter::all()).await.unwrap();
        swarm.list_services(&LabelFilter::all()).await.unwrap();
        let err = swarm.remove_service("no-such-service").await.unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            value(
                &metrics,
                "hearth_docker_api_calls_total{operation=\"list_services\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &metrics,
                "hearth_docker_api_calls_total{operation=\"remove_service\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &metrics,
                "hearth_docker_api_errors_total{error=\"not_found\",operation=\"remove_service\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &metrics,
                "hearth_docker_api_call_duration_seconds_count{operation=\"ping\"}"
            ),
            Some(1.0)
        );
        // no ID or name reached a label
        assert_eq!(
            metrics.label_values("docker_api_calls_total", "operation"),
            ["list_services", "ping", "remove_service"]
        );
        let text = metrics.encode().unwrap();
        assert!(!text.contains("no-such-service"), "{text}");
    }
}
