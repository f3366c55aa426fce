//! Processes the reliability tests drive: `hearth serve` as a child process that can be SIGKILLed and restarted, and an isolated dockerd in its own network namespace.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;

use crate::support::hearth_bin;

/// A free loopback address for a daemon (bound, read, released).
///
/// # Panics
/// When no port can be bound.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("bound address")
}

/// `hearth serve` as a child process, restartable on the same data directory and port. Each
/// start ("incarnation") logs to `<dir>/serve-<n>.log`. Dropping it SIGKILLs the child.
#[derive(Debug)]
pub struct ServeProcess {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    listen: Option<String>,
    incarnation: u32,
}

impl ServeProcess {
    /// A daemon that will run `hearth serve --data-dir <dir>/data --listen <addr> <args…>`
    /// (not started yet).
    pub fn new(dir: &Path, addr: SocketAddr, args: Vec<OsString>) -> ServeProcess {
        ServeProcess {
            child: None,
            dir: dir.to_path_buf(),
            addr,
            args,
            env: Vec::new(),
            listen: None,
            incarnation: 0,
        }
    }

    /// Sets an environment variable of the daemon (after the default `RUST_LOG=info`, so
    /// `RUST_LOG` can be overridden).
    #[must_use]
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Listens on `listen` (e.g. `0.0.0.0:<port of addr>`) instead of `addr`, which clients
    /// still connect to.
    #[must_use]
    pub fn listening_on(mut self, listen: impl Into<String>) -> Self {
        self.listen = Some(listen.into());
        self
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of it carrying the token of `<dir>/data/token` (created by its first start).
    ///
    /// # Panics
    /// When the token file cannot be read (the daemon never started).
    pub fn client(&self) -> controller::cli::ci::Client {
        let token = controller::access::admin_token::read(
            &controller::access::admin_token::default_token_file(&self.dir.join("data")),
        )
        .expect("the daemon created its token file");
        controller::cli::ci::Client::new(self.addr).with_token(Some(token))
    }

    /// How many times it was started.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The current incarnation's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("serve-{}.log", self.incarnation))
    }

    /// Starts a new incarnation.
    ///
    /// # Panics
    /// When the log cannot be created or the binary cannot be started.
    pub fn spawn(&mut self) {
        self.incarnation += 1;
        let log = File::create(self.log_path()).expect("create the daemon's log");
        let child = Command::new(hearth_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args([
                "--listen",
                &self.listen.clone().unwrap_or_else(|| self.addr.to_string()),
            ])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start hearth serve");
        self.child = Some(child);
    }

    /// SIGKILL, then reap: once this returns the process is gone and the kernel has released
    /// the data directory's lock.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the daemon answers a read (store open, HTTP listening) — or refuses it for
    /// want of a token, off loopback; the time it took.
    ///
    /// # Panics
    /// When it exits or does not answer `within`, with the tail of its log.
    pub async fn ready(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        let client = Client::new(self.addr);
        loop {
            if matches!(
                client.get::<serde_json::Value>("/api/v1/runs").await,
                Ok(_) | Err(controller::cli::ci::Error::RequestRefused { status: 401, .. })
            ) {
                return started.elapsed();
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
                None => Some("not started".into()),
            };
            if let Some(status) = exited {
                panic!(
                    "hearth serve (incarnation {}) exited: {status}\n{}",
                    self.incarnation,
                    self.log_tail(40)
                );
            }
            assert!(
                started.elapsed() < within,
                "hearth serve (incarnation {}) did not answer within {within:?}\n{}",
                self.incarnation,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of the current incarnation's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A second dockerd with its own single-node swarm in its own network namespace, set up and
/// torn down by `scripts/dind-netns.sh` (see there). Dropping it runs `down`, which removes
/// its processes, mounts, namespace and directory — also when the test failed.
#[derive(Debug)]
pub struct IsolatedDocker {
    dir: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dind-netns.sh")
}

fn run_script(cmd: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .arg(cmd)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "dind-netns.sh {cmd} {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl IsolatedDocker {
    /// Starts it under `dir` (absolute and short: the socket path is limited to 107 bytes).
    ///
    /// # Errors
    /// The script's message when it could not be started (it cleaned up after itself).
    pub fn up(dir: &Path) -> Result<IsolatedDocker, String> {
        let this = IsolatedDocker {
            dir: dir.to_path_buf(),
        };
        run_script("up", dir)?;
        Ok(this)
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Its dockerd's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// Stops dockerd (SIGTERM, waits until it is gone).
    ///
    /// # Errors
    /// The script's message.
    pub fn stop(&self) -> Result<(), String> {
        run_script("stop", &self.dir).map(drop)
    }

    /// Starts dockerd again and waits until it answers.
    ///
    /// # Errors
    /// The script's message.
    pub fn start(&self) -> Result<(), String> {
        run_script("start", &self.dir).map(drop)
    }
}

impl Drop for IsolatedDocker {
    fn drop(&mut self) {
        if let Err(e) = run_script("down", &self.dir) {
            eprintln!("{e}");
        }
    }
}
