//! Shared helpers for hearth's scenario and real-swarm tests.
//!
//! - [`support`]: connecting to the real swarm (fails under `CI=true` when Docker is
//!   unreachable, never skips there), unique names and labels, polling.
//! - [`ci_kill`]: the CI-kill scenario (a SIGKILLed CI script's run, every object kind
//!   polled until gone), shared by `tests/cli_runs_real.rs` and `bench_sweep`.
//! - [`process`]: `hearth serve` as a restartable child process, and an isolated dockerd in
//!   its own network namespace (for tests that restart Docker).
//! - [`scale`]: worlds of N converged warm apps on the simulated swarm and one resync pass
//!   measured (the CI scale test and `bench_scale`).
//! - [`differential`]: raw-spec snapshots of a stack as the daemon stores them and their
//!   comparison (docker's side against hearth's), for the differential tests.
//! - [`served`]: the versions a stack's running containers answer at `/version`.
//! - [`counting`]: a [`controller::swarm::Swarm`] wrapper counting calls and writes (and
//!   optionally timing each), for the real swarm, which has no call log.
//! - [`conformance`]: behaviours every [`controller::swarm::Swarm`] must show, run against the
//!   simulated swarm (`tests/sim_conformance.rs`) and the real one (`tests/real_swarm.rs`).
//! - [`leaks`]: planted random values, their raw and base64 forms, raw HTTP requests, and the
//!   search of logs and answers for them (the security and access tests).
//! - [`ha`]: the HA stack (`deploy/ha`) on the 3-manager test cluster: deploy, reach each
//!   replica, find the leader, Swarm's service events (`tests/ha_real.rs`, `bench_failover`).
//! - [`gitrecipe`]: the test bed's git fixture recipe cloned, edited, released.
//! - [`daemon`]: `hearth serve` in-process on the simulated swarm (temp data dir, ephemeral
//!   port) for fast API, CLI and status-page tests.
//! - [`real_serve`]: `hearth serve` in-process on the real engine with the real-swarm tests'
//!   options, and the warm-app waits they share.

pub mod ci_kill;
pub mod cluster;
pub mod conformance;
pub mod counting;
pub mod daemon;
pub mod differential;
pub mod etcd;
pub mod gitrecipe;
pub mod ha;
pub mod leaks;
pub mod process;
pub mod real_serve;
pub mod scale;
pub mod served;
pub mod support;
