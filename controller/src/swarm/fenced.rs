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

use super::wrap::{Around, Op, Wrapped};
use super::{Error, Swarm, SwarmFuture};

/// Whether this replica still leads (checked before every write).
pub type Leadership = Arc<dyn Fn() -> bool + Send + Sync>;

/// A swarm whose writes need `leads()`.
pub type FencedSwarm = Wrapped<Fence>;

/// What [`FencedSwarm`] does around a call: a write passes only while `leads()`.
#[derive(Clone)]
pub struct Fence {
    leads: Leadership,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence").finish_non_exhaustive()
    }
}

impl FencedSwarm {
    /// Wraps `inner`; writes pass only while `leads()` is true.
    pub fn new(inner: Arc<dyn Swarm>, leads: Leadership) -> Self {
        Wrapped {
            inner,
            around: Fence { leads },
        }
    }
}

impl Around for Fence {
    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        call: impl FnOnce() -> SwarmFuture<'a, T>,
    ) -> SwarmFuture<'a, T> {
        match op.write {
            Some(call_made) if !(self.leads)() => Box::pin(async move {
                Err(Error::Unavailable {
                    call: call_made,
                    message: "refused: this replica no longer leads (its etcd lease may have \
                              passed to another replica)"
                        .to_string(),
                })
            }),
            _ => call(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::swarm::sim::{SimConfig, SimSwarm};
    use crate::swarm::{spec, LabelFilter};

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
