//! A [`Swarm`] wrapper that records every call's operation, latency and error kind in [`Metrics`].
//!
//! Labels are the operation (the trait method's name: `list_services`, `create_volume`, …)
//! and, for failures, the error's kind ([`Error::kind`]): both closed sets spelled here, so no
//! object ID or name can reach a label. The events stream counts one `events` call when it is
//! opened and one `events` error per error item it yields.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::BoxStream;
use futures::StreamExt;
use metrics::Metrics;

use super::wrap::{Around, Op, Wrapped};
use super::{Error, Event, Result, Swarm, SwarmFuture};

/// A swarm whose calls are metered.
pub type MeteredSwarm = Wrapped<Meter>;

/// What [`MeteredSwarm`] does around a call: time it, record it.
#[derive(Debug, Clone)]
pub struct Meter {
    metrics: Metrics,
}

impl MeteredSwarm {
    /// Wraps `inner`; every call is recorded in `metrics`.
    pub fn new(inner: Arc<dyn Swarm>, metrics: Metrics) -> Self {
        Wrapped {
            inner,
            around: Meter { metrics },
        }
    }
}

impl Around for Meter {
    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        call: impl FnOnce() -> SwarmFuture<'a, T>,
    ) -> SwarmFuture<'a, T> {
        let fut = call();
        Box::pin(async move {
            let started = Instant::now();
            let result = fut.await;
            let error = result.as_ref().err().map(Error::kind);
            self.metrics
                .observe_docker_call(op.name, started.elapsed(), error);
            result
        })
    }

    fn events(
        &self,
        inner: BoxStream<'static, Result<Event>>,
    ) -> BoxStream<'static, Result<Event>> {
        let metrics = self.metrics.clone();
        metrics.observe_docker_call("events", std::time::Duration::ZERO, None);
        inner
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
    use crate::swarm::LabelFilter;

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
