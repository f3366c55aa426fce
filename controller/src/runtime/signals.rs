//! Shutdown: a graceful token (finish in-flight reconciles, start no new ones) and a force token (stop at once), driven by SIGINT/SIGTERM.

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// The two shutdown requests every task watches.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Finish in-flight work, start nothing new, then stop.
    pub graceful: CancellationToken,
    /// Stop at once (in-flight reconciles are aborted).
    pub force: CancellationToken,
}

impl Shutdown {
    /// Neither requested yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Requests a graceful stop.
    pub fn stop_gracefully(&self) {
        self.graceful.cancel();
    }

    /// Requests an immediate stop (implies graceful).
    pub fn stop_now(&self) {
        self.graceful.cancel();
        self.force.cancel();
    }

    /// The first signal of `signals` requests a graceful stop, the second an immediate one.
    /// Returns after the second signal or when the stream ends.
    pub async fn follow(&self, signals: impl Stream<Item = &'static str>) {
        let mut signals = std::pin::pin!(signals);
        let mut seen = 0u32;
        while let Some(name) = signals.next().await {
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    signal = name,
                    "shutting down: finishing in-flight reconciles (send it again to stop at once)"
                );
                self.stop_gracefully();
            } else {
                tracing::warn!(signal = name, "second signal: stopping at once");
                self.stop_now();
                return;
            }
        }
    }
}

/// SIGINT and SIGTERM as a stream of their names.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn os_signals() -> std::io::Result<impl Stream<Item = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(futures::stream::poll_fn(move |cx| {
        if int.poll_recv(cx).is_ready() {
            return std::task::Poll::Ready(Some("SIGINT"));
        }
        if term.poll_recv(cx).is_ready() {
            return std::task::Poll::Ready(Some("SIGTERM"));
        }
        std::task::Poll::Pending
    }))
}

/// Drives `shutdown` from SIGINT/SIGTERM until the second signal (what `hearth serve` runs in
/// a task of its own).
///
/// # Errors
/// When a signal handler cannot be installed.
pub async fn on_os_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let signals = os_signals()?;
    shutdown.follow(signals).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_should_stop_gracefully_and_the_second_at_once() {
        let shutdown = Shutdown::new();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let follower = tokio::spawn({
            let s = shutdown.clone();
            async move { s.follow(rx).await }
        });
        tx.unbounded_send("SIGTERM").expect("send");
        shutdown.graceful.cancelled().await;
        assert!(!shutdown.force.is_cancelled());
        tx.unbounded_send("SIGINT").expect("send");
        follower.await.expect("follower");
        assert!(shutdown.force.is_cancelled());
    }
}
