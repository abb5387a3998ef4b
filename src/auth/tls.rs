//! The store's own certificate authority and node certificates (rcgen), and the tonic TLS
//! configurations of the peer port: with a TLS dir, the peer port serves TLS and requires
//! a client certificate from the store CA, so a machine without one cannot even send a
//! Raft message.
//!
//! The client port serves TLS from the same kind of dir (`serve --client-tls`): the
//! handshake runs off the accept path ([`TlsListener`]) so a slow or hostile client cannot
//! hold up the others, and devices pin the store CA (`pos-hub client --ca`).
//!
//! A TLS dir holds `ca.pem` (the store CA), `node.pem` and `node.key.pem` (this node's
//! certificate, for both serving and connecting to peers).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key.pem";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0} exists; refusing to overwrite")]
    Exists(String),
    #[error("{path}: not a PEM {what}: {detail}")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(dir: &Path, name: &str) -> Result<String, TlsError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), TlsError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The CA's parameters: rebuilt identically when issuing, so the issuer name of a node
/// certificate matches the CA certificate's subject.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "pos-hub store CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// `pos-hub certs init`: a new store CA in `dir` (`ca.pem`, `ca.key.pem`).
pub fn init_ca(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    if dir.join(CA_KEY).exists() {
        return Err(TlsError::Exists(dir.join(CA_KEY).display().to_string()));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write(dir, CA_CERT, &cert.pem())?;
    write(dir, CA_KEY, &key.serialize_pem())
}

/// `pos-hub certs issue`: a certificate for node `node` valid for `hosts` (names or IPs),
/// written with a copy of the CA certificate into `out_dir`, which becomes the node's TLS dir.
pub fn issue_node(
    ca_dir: &Path,
    node: u64,
    hosts: &[String],
    out_dir: &Path,
) -> Result<(), TlsError> {
    let ca_key = KeyPair::from_pem(&read(ca_dir, CA_KEY)?)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("pos-hub node {node}"));
    params.distinguished_name = name;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out_dir).map_err(|source| TlsError::Io {
        path: out_dir.display().to_string(),
        source,
    })?;
    write(out_dir, CA_CERT, &read(ca_dir, CA_CERT)?)?;
    write(out_dir, NODE_CERT, &cert.pem())?;
    write(out_dir, NODE_KEY, &key.serialize_pem())
}

/// The peer port's server side: TLS with this node's certificate, and a client
/// certificate from the store CA required of every caller.
pub fn peer_server_config(dir: &Path) -> Result<ServerTlsConfig, TlsError> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(dir, NODE_CERT)?,
            read(dir, NODE_KEY)?,
        ))
        .client_ca_root(Certificate::from_pem(read(dir, CA_CERT)?)))
}

/// The peer port's client side: trust only the store CA, present this node's certificate.
pub fn peer_client_config(dir: &Path) -> Result<ClientTlsConfig, TlsError> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir, CA_CERT)?))
        .identity(Identity::from_pem(
            read(dir, NODE_CERT)?,
            read(dir, NODE_KEY)?,
        )))
}

/// The client port's TLS: this node's certificate, no client certificates (devices
/// authenticate with tokens). ALPN offers HTTP/2 for gRPC and HTTP/1.1 for browsers and
/// `/healthz`.
pub fn client_server_config(dir: &Path) -> Result<rustls::ServerConfig, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem_error = |name: &str, what: &'static str| {
        let path = dir.join(name).display().to_string();
        move |err: rustls_pki_types::pem::Error| TlsError::Pem {
            path,
            what,
            detail: err.to_string(),
        }
    };
    let certs = CertificateDer::pem_slice_iter(read(dir, NODE_CERT)?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(NODE_CERT, "certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(read(dir, NODE_KEY)?.as_bytes())
        .map_err(pem_error(NODE_KEY, "private key"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A handshake that has not finished in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const HANDSHAKES_MAX: usize = 256;

/// A TLS listener for `axum::serve`: a task accepts TCP connections and runs each
/// handshake in its own task, with a timeout; finished ones are handed to the server.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_MAX);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            tx,
        ));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            // The server is gone: release the port.
            _ = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%err, "client port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small gRPC answers must leave at once, not wait for the last one's ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(err)) => tracing::debug!(%addr, %err, "client port: TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "client port: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A device's TLS to the client port: trust the store CA only (pinning), no public roots.
pub fn device_client_config(ca_file: &Path) -> Result<ClientTlsConfig, TlsError> {
    let pem = std::fs::read_to_string(ca_file).map_err(|source| TlsError::Io {
        path: ca_file.display().to_string(),
        source,
    })?;
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
}
