//! The optional HTTP/TCP health probe: reaches each task's container from the host through `docker_gwbridge`.
//!
//! # How the probe reaches the app
//! This host has no ip_vs: service VIPs and ingress ports do not work, and a container's
//! overlay address is not routable from the host. But every container attached to an overlay
//! network also gets an interface on the node-local `docker_gwbridge` bridge (its way out),
//! and the host *can* reach that address. So the probe asks the swarm for the endpoints of
//! `docker_gwbridge` ([`Swarm::network_endpoints`], the Engine's network inspect), which give
//! each container's gateway address, and connects to `<that address>:<port>` directly: one probe per running task of
//! the probed service, all must pass. Nothing is published and no `docker exec` is needed.
//!
//! # Caveats
//! Only containers on this node are probed (a multi-node swarm would need a probe per node).
//! A service that is not on any overlay network (e.g. `network_mode: host`) has no gateway
//! address and fails the probe with a message saying so.

use std::sync::Arc;
use std::time::Duration;

use crd::warmapp::HealthProbe;
use futures::future::BoxFuture;
use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::net::TcpStream;

use crate::swarm::Swarm;

/// The Engine API's gateway bridge on every swarm node.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// What to probe, resolved for one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// HTTP GET `path` expecting one of `codes`, or a TCP connect.
    pub kind: ProbeKind,
    /// The container port.
    pub port: u16,
    /// IDs of the running containers of the probed service.
    pub containers: Vec<String>,
}

/// The kind of probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// HTTP/1.1 GET.
    Http {
        /// Request path.
        path: String,
        /// Status codes that count as healthy.
        codes: Vec<u16>,
    },
    /// A TCP connection that is accepted.
    Tcp,
}

/// Which service of the recipe the spec's probe names (the first service when unnamed), its
/// port and kind; `None` when the app has no probe.
pub fn probe_spec(health: &HealthProbe) -> Option<(Option<String>, u16, ProbeKind)> {
    if let Some(h) = &health.http {
        let port = u16::try_from(h.port).ok()?;
        let codes = h
            .expected_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect();
        return Some((
            h.service.clone(),
            port,
            ProbeKind::Http {
                path: h.path.clone(),
                codes,
            },
        ));
    }
    if let Some(t) = &health.tcp {
        let port = u16::try_from(t.port).ok()?;
        return Some((t.service.clone(), port, ProbeKind::Tcp));
    }
    None
}

/// Runs probes. Object-safe: `Arc<dyn Prober>`.
pub trait Prober: Send + Sync {
    /// Probes every container of `target`; `Err` says (lowercase) which one failed and why.
    fn probe<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<(), String>>;
}

/// The real prober: gateway addresses from the swarm, then TCP/HTTP from the host.
#[derive(Clone)]
pub struct GatewayProber {
    swarm: Arc<dyn Swarm>,
    timeout: Duration,
}

impl std::fmt::Debug for GatewayProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayProber")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GatewayProber {
    /// A prober asking `swarm` (the daemon of the node it runs on) for gateway addresses,
    /// each probe bounded by `timeout`.
    pub fn new(swarm: Arc<dyn Swarm>, timeout: Duration) -> Self {
        Self { swarm, timeout }
    }

    /// Container ID → gateway IPv4 address, from the endpoints of `docker_gwbridge`.
    async fn gateway_addresses(&self) -> Result<Vec<(String, String)>, String> {
        let endpoints = self
            .swarm
            .network_endpoints(GATEWAY_BRIDGE)
            .await
            .map_err(|e| format!("cannot list {GATEWAY_BRIDGE}: {}", crate::errors::chain(&e)))?;
        Ok(endpoints
            .into_iter()
            .filter_map(|e| Some((e.container_id, e.ipv4?)))
            .collect())
    }
}

impl Prober for GatewayProber {
    fn probe<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if target.containers.is_empty() {
                return Err("no running container to probe".into());
            }
            let addresses = tokio::time::timeout(self.timeout, self.gateway_addresses())
                .await
                .map_err(|_| format!("listing {GATEWAY_BRIDGE} timed out"))??;
            for id in &target.containers {
                let short: String = id.chars().take(12).collect();
                let ip = addresses
                    .iter()
                    .find(|(cid, _)| cid == id)
                    .map(|(_, ip)| ip.clone())
                    .ok_or_else(|| {
                        format!("container {short} has no {GATEWAY_BRIDGE} address (not on an overlay network?)")
                    })?;
                let addr = format!("{ip}:{}", target.port);
                let outcome = tokio::time::timeout(self.timeout, probe_one(&addr, &target.kind))
                    .await
                    .map_err(|_| format!("probe of {short} at {addr} timed out"))?;
                outcome.map_err(|e| format!("probe of {short} at {addr}: {e}"))?;
            }
            Ok(())
        })
    }
}

/// One probe of one address.
async fn probe_one(addr: &str, kind: &ProbeKind) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let ProbeKind::Http { path, codes } = kind else {
        return Ok(());
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(path.as_str())
        .header(hyper::header::HOST, addr)
        .header(hyper::header::USER_AGENT, "hearth-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let result = sender.send_request(request).await;
    driver.abort();
    let code = result
        .map_err(|e| format!("GET {path} failed: {e}"))?
        .status()
        .as_u16();
    if codes.contains(&code) {
        Ok(())
    } else {
        Err(format!(
            "GET {path} answered {code}, expected one of {codes:?}"
        ))
    }
}

/// A prober with a fixed answer, for the simulated swarm (which has no network).
#[derive(Debug, Clone, Default)]
pub struct FixedProber {
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl FixedProber {
    /// A prober that passes every probe.
    pub fn passing() -> Self {
        Self::default()
    }

    /// Makes every probe fail with `why` (or pass again with `None`).
    pub fn set_failure(&self, why: Option<String>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = why;
        }
    }
}

impl Prober for FixedProber {
    fn probe<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<(), String>> {
        let failure = self.failure.lock().map(|f| f.clone()).unwrap_or(None);
        Box::pin(async move {
            if target.containers.is_empty() {
                return Err("no running container to probe".into());
            }
            failure.map_or(Ok(()), Err)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crd::warmapp::{HttpProbe, TcpProbe};

    #[test]
    fn probe_specs_take_the_http_or_tcp_settings() {
        let mut h = HealthProbe::default();
        assert_eq!(probe_spec(&h), None);
        h.http = Some(HttpProbe {
            service: Some("app".into()),
            port: 8080,
            path: "/healthz".into(),
            expected_codes: vec![200, 204],
        });
        assert_eq!(
            probe_spec(&h),
            Some((
                Some("app".into()),
                8080,
                ProbeKind::Http {
                    path: "/healthz".into(),
                    codes: vec![200, 204]
                }
            ))
        );
        h.http = None;
        h.tcp = Some(TcpProbe {
            service: None,
            port: 5432,
        });
        assert_eq!(probe_spec(&h), Some((None, 5432, ProbeKind::Tcp)));
    }

    #[tokio::test]
    async fn an_http_probe_checks_the_status_code_of_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let answer = if req.starts_with("GET /ok ") {
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                } else {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                };
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let http = |p: &str| ProbeKind::Http {
            path: p.into(),
            codes: vec![200],
        };
        probe_one(&addr, &http("/ok")).await.unwrap();
        let err = probe_one(&addr, &http("/bad")).await.unwrap_err();
        assert!(err.contains("answered 503"), "{err}");
        probe_one(&addr, &ProbeKind::Tcp).await.unwrap();
        let err = probe_one("127.0.0.1:1", &ProbeKind::Tcp).await.unwrap_err();
        assert!(err.starts_with("connect failed"), "{err}");
    }
}
