//! Accepting connections on the client and peer ports, so that one device (or anyone on
//! the shop's Wi-Fi) cannot take every slot a node has:
//! - TLS handshakes run off the accept path, each cut off after `HANDSHAKE_TIMEOUT`, at
//!   most `HANDSHAKES_MAX` at once and `HANDSHAKES_PER_ADDRESS_MAX` from one address;
//! - the client port holds at most `CONNECTIONS_MAX` connections, and
//!   `CONNECTIONS_PER_ADDRESS_MAX` from one address;
//! - a client connection must send its first bytes, and each HTTP/1 request head, within
//!   `HEADER_READ_TIMEOUT`.
//!
//! A connection over a cap is accepted and closed at once (the accept loop never waits on
//! a cap, so the kernel's backlog does not fill up behind a stalled client).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake that has not finished in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once, from all addresses.
pub const HANDSHAKES_MAX: usize = 256;
/// TLS handshakes in progress at once from one address: a device needs one or two.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 8;
/// Open client-port connections, from all addresses.
pub const CONNECTIONS_MAX: usize = 1024;
/// Open client-port connections from one address. A browser keeps one per open gRPC-web
/// stream and a few more for calls; a shop's devices each have their own address.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 128;
/// How long a client connection may take to send its first bytes, and each HTTP/1 request
/// its head (an idle HTTP/1 keep-alive connection is closed after this too).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The first bytes that must arrive within `HEADER_READ_TIMEOUT`: the length of HTTP/2's
/// connection preface, which is also what tells HTTP/2 from HTTP/1.
const FIRST_BYTES: usize = 24;
/// HTTP/2 pings on an idle client connection, to find peers that went away.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Counts what each remote address holds (connections, or handshakes in progress), with a
/// cap per address and one in all.
#[derive(Clone)]
pub struct Slots {
    what: &'static str,
    per_address: usize,
    total: usize,
    taken: Arc<Mutex<(HashMap<IpAddr, usize>, usize)>>,
}

/// One slot of a `Slots`, given back when dropped.
pub struct Slot {
    ip: IpAddr,
    taken: Arc<Mutex<(HashMap<IpAddr, usize>, usize)>>,
}

impl Slots {
    pub fn new(what: &'static str, per_address: usize, total: usize) -> Self {
        Slots {
            what,
            per_address,
            total,
            taken: Arc::default(),
        }
    }

    /// A slot for `ip`, or why there is none.
    pub fn take(&self, ip: IpAddr) -> Result<Slot, String> {
        let mut guard = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (per_ip, total) = &mut *guard;
        let held = per_ip.get(&ip).copied().unwrap_or(0);
        if held >= self.per_address {
            return Err(format!(
                "{ip} already holds {held} {} (at most {} per address)",
                self.what, self.per_address
            ));
        }
        if *total >= self.total {
            return Err(format!(
                "the node already holds {} {} in all (the most it takes)",
                self.total, self.what
            ));
        }
        *total += 1;
        per_ip.insert(ip, held + 1);
        Ok(Slot {
            ip,
            taken: self.taken.clone(),
        })
    }

    /// Slots held now by `ip`.
    pub fn held(&self, ip: IpAddr) -> usize {
        let guard = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (per_ip, total) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A client connection: holds its slot while open, and must send its first bytes within
/// `HEADER_READ_TIMEOUT`.
pub struct Conn<IO> {
    io: IO,
    _slot: Slot,
    first_bytes: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl<IO> Conn<IO> {
    fn new(io: IO, slot: Slot) -> Self {
        Conn {
            io,
            _slot: slot,
            first_bytes: Some((
                FIRST_BYTES,
                Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
            )),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some((missing, deadline)) = &mut this.first_bytes {
            let got = buf.filled().len() - before;
            if got >= *missing {
                this.first_bytes = None;
            } else if got > 0 {
                *missing -= got;
            } else if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header read timeout",
                )));
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts one TCP connection; `None` once the receiving side is gone.
async fn accept<T>(
    listener: &TcpListener,
    ready: &mpsc::Sender<T>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            // The server is gone: release the port.
            _ = ready.closed() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                // Small gRPC answers must leave at once, not wait for the last one's ACK.
                let _ = tcp.set_nodelay(true);
                return Some((tcp, addr));
            }
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The client port's plaintext connections, within `connections`.
pub fn plaintext(
    listener: TcpListener,
    connections: Slots,
) -> mpsc::Receiver<(Conn<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, addr)) = accept(&listener, &tx).await {
            match connections.take(addr.ip()) {
                Ok(slot) => {
                    if tx.send((Conn::new(tcp, slot), addr)).await.is_err() {
                        return;
                    }
                }
                Err(why) => tracing::debug!(%addr, why, "client port: connection refused"),
            }
        }
    });
    rx
}

/// TLS connections: each handshake in its own task, within `handshakes` and with a
/// timeout; with `connections`, each connection also holds one of those from its accept
/// to its close.
pub fn tls(
    listener: TcpListener,
    config: rustls::ServerConfig,
    handshakes: Slots,
    connections: Option<Slots>,
    port: &'static str,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr, Option<Slot>)> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Some((tcp, addr)) = accept(&listener, &tx).await {
            let connection = match connections.as_ref().map(|c| c.take(addr.ip())) {
                None => None,
                Some(Ok(slot)) => Some(slot),
                Some(Err(why)) => {
                    tracing::debug!(%addr, why, port, "connection refused");
                    continue;
                }
            };
            let handshake = match handshakes.take(addr.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    tracing::debug!(%addr, why, port, "connection refused");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let ready = tx.clone();
            tokio::spawn(async move {
                let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(handshake);
                match accepted {
                    Ok(Ok(tls)) => {
                        let _ = ready.send((tls, addr, connection)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%addr, %err, port, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, port, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// The client port's connections, for `serve_http`.
pub fn client_tls(
    mut accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr, Option<Slot>)>,
) -> mpsc::Receiver<(Conn<TlsStream<TcpStream>>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Once the server is gone, dropping `accepted` releases the port.
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = accepted.recv() => next,
            };
            let Some((tls, addr, slot)) = next else {
                return;
            };
            let Some(slot) = slot else { continue };
            if tx.send((Conn::new(tls, slot), addr)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Serves `app` (HTTP/1 and HTTP/2) on the connections from `incoming` until `stopped`;
/// then lets open connections finish (the caller bounds how long).
pub async fn serve_http<IO>(
    mut incoming: mpsc::Receiver<(IO, SocketAddr)>,
    app: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; all are gone once every connection closed.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let (io, addr) = tokio::select! {
            _ = &mut stopped => break,
            next = incoming.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%addr, %err, "client connection ended");
                    }
                }
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(incoming);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_in_all_and_given_back() {
        let slots = Slots::new("connections", 2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let a1 = slots.take(a).expect("first");
        let _a2 = slots.take(a).expect("second");
        let err = slots
            .take(a)
            .err()
            .expect("a third from one address is refused");
        assert!(
            err.contains("10.0.0.1 already holds 2 connections"),
            "{err}"
        );
        let _b1 = slots.take(b).expect("another address");
        let err = slots.take(c).err().expect("over the total");
        assert!(err.contains("3 connections in all"), "{err}");
        drop(a1);
        assert_eq!(slots.held(a), 1);
        slots.take(c).expect("a slot given back is free again");
    }
}
