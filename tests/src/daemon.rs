//! `hearth serve` in-process on the simulated swarm: a temp data directory, an ephemeral port, the example catalogue.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use controller::cli::ci::Client;
use controller::runtime::Shutdown;
use controller::serve::auth::{self, Token};
use controller::serve::{self, Options, Running};
use controller::swarm::sim::{SimConfig, SimSwarm};
use controller::swarm::{Labels, Swarm};
use controller::warmapp::probe::FixedProber;
use crd::names::BaseDomain;

/// A daemon on the simulated swarm.
pub struct SimDaemon {
    /// The started daemon.
    pub running: Running,
    /// Stops it.
    pub shutdown: Shutdown,
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The API token (from the token file the daemon created).
    pub token: Token,
    /// The token file.
    pub token_file: PathBuf,
    /// The simulated swarm.
    pub swarm: Arc<SimSwarm>,
    /// The temp directory holding `state.yml` and `data/`.
    pub dir: tempfile::TempDir,
}

/// The example recipe catalogue (`deploy/examples/catalogue`).
pub fn example_catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
}

impl SimDaemon {
    /// Starts a daemon following `state` (a state file's text), with a passing prober.
    ///
    /// # Panics
    /// When the daemon does not start (a test failure).
    pub async fn start(state: &str) -> SimDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("state.yml"), state).expect("state file written");
        let swarm = Arc::new(SimSwarm::new(SimConfig {
            start_delay: Duration::from_millis(50),
            stop_delay: Duration::from_millis(50),
            ..SimConfig::default()
        }));
        let options = Options {
            state_file: Some(dir.path().join("state.yml")),
            prune: true,
            data_dir: dir.path().join("data"),
            catalogue: example_catalogue(),
            docker_socket: "/nonexistent/docker.sock".into(),
            resync: Duration::from_secs(300),
            listen: Some("127.0.0.1:0".parse().expect("address")),
            base_domain: BaseDomain::parse("hearth.test").expect("base domain"),
            extra_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
            token_file: None,
            // never prune images of others on the shared test machine
            nightly_prune_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
            node_endpoints: Default::default(),
        };
        let shutdown = Shutdown::new();
        let dyn_swarm: Arc<dyn Swarm> = swarm.clone();
        let running = serve::start(
            options,
            dyn_swarm,
            Arc::new(FixedProber::passing()),
            shutdown.clone(),
        )
        .await
        .expect("hearth serve starts");
        let addr = running.http_addr.expect("the API listens");
        let token_file = running.token_file.clone().expect("a token file");
        let token = auth::read(&token_file).expect("the daemon created its token file");
        SimDaemon {
            running,
            shutdown,
            addr,
            token,
            token_file,
            swarm,
            dir,
        }
    }

    /// A client carrying the token.
    pub fn client(&self) -> Client {
        Client::new(self.addr).with_token(Some(self.token.clone()))
    }

    /// A client without a token.
    pub fn anonymous(&self) -> Client {
        Client::new(self.addr)
    }

    /// Waits (up to `within`) until `GET /readyz` answers 200.
    ///
    /// # Panics
    /// When it does not.
    pub async fn wait_ready(&self, within: Duration) {
        let client = self.anonymous();
        crate::support::eventually(
            "the daemon is ready",
            within,
            Duration::from_millis(50),
            || async {
                match client
                    .send(hyper_get(), "/readyz", Vec::new(), "application/json")
                    .await
                {
                    Ok((200, _)) => Some(()),
                    _ => None,
                }
            },
        )
        .await;
    }

    /// Stops the daemon and waits for it.
    pub async fn stop(self) {
        self.shutdown.stop_gracefully();
        self.running.wait().await;
    }
}

fn hyper_get() -> controller::cli::ci::Method {
    controller::cli::ci::Method::GET
}
