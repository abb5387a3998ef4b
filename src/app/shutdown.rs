//! Step 4 of `serve`: run until the shutdown signal or a fatal Raft error, then stop in
//! order: withdraw the mDNS advertisement, tell both servers to stop accepting, shut Raft
//! down (which ends every Subscribe stream, so devices move to another node), and give
//! open connections a bounded grace before closing them.

use std::future::Future;
use std::time::Duration;

use super::AppError;
use super::client::ClientTask;
use super::peer::PeerTask;
use crate::discovery::Advertiser;
use crate::raft_types::{NodeId, Raft};

/// How long a stopping node lets open connections finish before it closes them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The signal both servers watch to stop accepting.
pub(super) struct Stop {
    tx: tokio::sync::watch::Sender<bool>,
}

impl Stop {
    pub(super) fn new() -> Self {
        Self {
            tx: tokio::sync::watch::channel(false).0,
        }
    }

    /// Resolves once `stop` was called.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// The two servers' tasks.
pub(super) struct Tasks {
    pub peer: PeerTask,
    pub client: ClientTask,
}

/// Resolves with the error once the Raft core has stopped by itself.
async fn raft_stopped(raft: Raft) -> openraft::error::Fatal<NodeId> {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.clone();
        }
        if metrics.changed().await.is_err() {
            return openraft::error::Fatal::Stopped;
        }
    }
}

/// Runs until `shutdown` resolves or Raft stops by itself, then stops the node.
pub(super) async fn run(
    raft: Raft,
    shutdown: impl Future<Output = ()>,
    stop: Stop,
    tasks: Tasks,
    advertiser: Option<Advertiser>,
) -> Result<(), AppError> {
    // A node whose Raft core has stopped (a storage error: the disk is full or failing)
    // must not go on answering from stale state: it stops with the error, and its
    // supervisor restarts it once the disk is usable again.
    let fatal = tokio::select! {
        () = shutdown => None,
        fatal = raft_stopped(raft.clone()) => Some(fatal),
    };
    match &fatal {
        None => tracing::info!("shutting down"),
        Some(err) => tracing::error!(%err, "raft stopped: shutting the node down"),
    }
    drop(advertiser);
    stop.stop();
    // Raft first: its state machine's feed closes, which ends every Subscribe stream
    // (devices move to another node); then the servers get a bounded grace to finish.
    if let Err(err) = raft.shutdown().await {
        tracing::warn!(%err, "raft did not shut down cleanly");
    }
    let (peer_abort, client_abort) = (tasks.peer.abort_handle(), tasks.client.abort_handle());
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        (tasks.peer.await, tasks.client.await)
    })
    .await;
    let Ok((peer_result, client_result)) = finished else {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
        peer_abort.abort();
        client_abort.abort();
        return fatal.map_or(Ok(()), |fatal| Err(fatal.into()));
    };
    if let Some(fatal) = fatal {
        return Err(fatal.into());
    }
    server_result("peer", peer_result)?;
    server_result("client", client_result)
}

/// A server task's end: its own error, or the task's (a panic).
fn server_result<E: std::fmt::Display>(
    what: &'static str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), AppError> {
    let detail = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    Err(AppError::Server { what, detail })
}
