//! `hearth serve` in-process on the simulated swarm: a temp data directory, an ephemeral port, the example catalogue.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use controller::access::admin_token::{self as auth, Token};
use controller::access::{tokens_file, Scope};
use controller::cli::ci::Client;
use controller::runtime::Shutdown;
use controller::serve::{self, AccessOptions, Options, Running};
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
    /// The tokens file the daemon follows.
    pub tokens_file: PathBuf,
    /// The named tokens created before the start ([`Setup::tokens`]), by name.
    pub tokens: std::collections::BTreeMap<String, Token>,
    /// The simulated swarm.
    pub swarm: Arc<SimSwarm>,
    /// The temp directory holding `state.yml` and `data/`.
    pub dir: tempfile::TempDir,
}

/// The example recipe catalogue (`deploy/examples/catalogue`).
pub fn example_catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
}

/// How [`SimDaemon::start_with`] sets the daemon up beyond its state file.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where the API listens (port 0: any free one).
    pub listen: SocketAddr,
    /// `--public-reads`.
    pub public_reads: bool,
    /// Named tokens written to the tokens file before the start: (name, scope).
    pub tokens: Vec<(String, Scope)>,
}

impl Default for Setup {
    /// `127.0.0.1:0`, reads as the address decides, no named tokens.
    fn default() -> Setup {
        Setup {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_reads: false,
            tokens: Vec::new(),
        }
    }
}

impl SimDaemon {
    /// Starts a daemon following `state` (a state file's text), with a passing prober.
    ///
    /// # Panics
    /// When the daemon does not start (a test failure).
    pub async fn start(state: &str) -> SimDaemon {
        SimDaemon::start_with(state, Setup::default()).await
    }

    /// [`SimDaemon::start`] listening and with tokens as `setup` says. A daemon listening on
    /// an unspecified address (`0.0.0.0`) is reached through `127.0.0.1`.
    ///
    /// # Panics
    /// When the daemon does not start (a test failure).
    pub async fn start_with(state: &str, setup: Setup) -> SimDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("state.yml"), state).expect("state file written");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let tokens_file = tokens_file::default_path(&data);
        let mut tokens = std::collections::BTreeMap::new();
        for (name, scope) in &setup.tokens {
            let token = tokens_file::create(&tokens_file, name, *scope).expect("token created");
            tokens.insert(name.clone(), Token::new(token.secret()));
        }
        let swarm = Arc::new(SimSwarm::new(SimConfig {
            start_delay: Duration::from_millis(50),
            stop_delay: Duration::from_millis(50),
            ..SimConfig::default()
        }));
        let options = Options {
            state_file: Some(dir.path().join("state.yml")),
            prune: true,
            data_dir: data,
            catalogue: example_catalogue(),
            docker_socket: "/nonexistent/docker.sock".into(),
            resync: Duration::from_secs(300),
            listen: Some(setup.listen),
            base_domain: BaseDomain::parse("hearth.test").expect("base domain"),
            extra_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
            token_file: None,
            access: AccessOptions {
                tokens_file: None,
                public_reads: setup.public_reads,
            },
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
        let mut addr = running.http_addr.expect("the API listens");
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let token_file = running.token_file.clone().expect("a token file");
        let token = auth::read(&token_file).expect("the daemon created its token file");
        SimDaemon {
            running,
            shutdown,
            addr,
            token,
            token_file,
            tokens_file,
            tokens,
            swarm,
            dir,
        }
    }

    /// A client carrying the token.
    pub fn client(&self) -> Client {
        Client::new(self.addr).with_token(Some(self.token.clone()))
    }

    /// A client carrying the named token `name` (one of [`Setup::tokens`]).
    ///
    /// # Panics
    /// When no such token was created.
    pub fn client_as(&self, name: &str) -> Client {
        let token = self.tokens.get(name).expect("a token of that name");
        Client::new(self.addr).with_token(Some(token.clone()))
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
