//! Step 2 of `serve`: the peer port, where the group's other nodes send Raft RPCs,
//! forwarded appends and read-index requests. Mutual TLS with the store CA when
//! `--peer-tls` is given; plaintext (with a warning) otherwise, which `serve` allows only
//! on a loopback address or with `--insecure-plaintext-peers`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use super::listen;
use super::shutdown::Stop;
use super::{AppError, ServeConfig};
use crate::raft::node::Node;
use crate::raft::peer;

/// Streams a peer may reset before they are accepted, before h2 closes the connection.
const PEER_MAX_PENDING_RESETS: usize = 1024;

/// The peer server's task; it stops serving when `stop` fires.
pub(super) type PeerTask = JoinHandle<Result<(), tonic::transport::Error>>;

pub(super) fn start(
    config: &ServeConfig,
    node: Arc<Node>,
    listener: TcpListener,
    stop: &Stop,
) -> Result<PeerTask, AppError> {
    // Raft cancels every RPC that misses its deadline (a heartbeat after 50 ms), which
    // resets an HTTP/2 stream. On a slow or lossy link that is many resets, and h2's
    // reset-flood guard (20 by default) then closed the whole peer connection with
    // GOAWAY `too_many_resets`, found by the chaos harness under netem. Peers are the
    // group's own nodes, so the guard is raised, not removed.
    let mut builder = tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(PEER_MAX_PENDING_RESETS));
    let task = match &config.peer_tls {
        Some(dir) => {
            // Mutual TLS: a caller without a certificate from the store CA is refused during
            // the handshake, before any Raft message is read; the handshakes run off the
            // accept path, a few at a time per address.
            let tls = crate::auth::tls::peer_server_config(dir)?;
            let handshakes = listen::Slots::new(
                "TLS handshakes",
                listen::HANDSHAKES_PER_ADDRESS_MAX,
                listen::HANDSHAKES_MAX,
            );
            let accepted = listen::tls(listener, tls, handshakes, None, "peer port");
            let incoming =
                ReceiverStream::new(accepted).map(|(tls, _, _)| Ok::<_, std::io::Error>(tls));
            tokio::spawn(
                builder
                    .add_service(peer::server(node, true))
                    .serve_with_incoming_shutdown(incoming, stop.stopped()),
            )
        }
        None => {
            tracing::warn!(
                "the peer port is plaintext (no --peer-tls): keep it off networks guests can reach"
            );
            let incoming = TcpListenerStream::new(listener).map(|accepted| {
                accepted.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
            tokio::spawn(
                builder
                    .add_service(peer::server(node, false))
                    .serve_with_incoming_shutdown(incoming, stop.stopped()),
            )
        }
    };
    Ok(task)
}
