//! The store's own certificate authority and node certificates (rcgen), and the tonic TLS
//! configurations of the peer port: with a TLS dir, the peer port serves TLS and requires
//! a client certificate from the store CA, so a machine without one cannot even send a
//! Raft message.
//!
//! The client port serves TLS from the same kind of dir (`serve --client-tls`), and devices
//! pin the store CA (`pos-hub client --ca`). Handshakes on both ports run off the accept
//! path, bounded per address (`app::listen`).
//!
//! A node certificate names its node in a subjectAltName URI, `pos-hub-node:ID`
//! ([`node_id_of`]), so a certificate of one node cannot speak for another.
//!
//! A TLS dir holds `ca.pem` (the store CA), `node.pem` and `node.key.pem` (this node's
//! certificate, for both serving and connecting to peers).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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
    #[error("{0} exists; refusing to overwrite it (--force replaces it)")]
    Exists(String),
    #[error("{path}: not a PEM {what}: {detail}")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("peer certificate: {0}")]
    NodeIdentity(String),
}

fn read(dir: &Path, name: &str) -> Result<String, TlsError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// What to do when a file about to be written already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, naming the file (the default: a second `certs init` must not replace the
    /// store CA every node trusts).
    Refuse,
    /// Replace it (`--force`).
    Replace,
}

/// Who may read a file: private keys only their owner, certificates anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    OwnerOnly,
    Public,
}

/// Refuses when any of `names` exists in `dir` (unless replacing), before anything is
/// written, so a refused command leaves the dir as it was.
fn check_absent(dir: &Path, names: &[&str], existing: Existing) -> Result<(), TlsError> {
    if existing == Existing::Replace {
        return Ok(());
    }
    for name in names {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(TlsError::Exists(path.display().to_string()));
        }
    }
    Ok(())
}

/// Creates `dir` (owner-only when new) and any missing parents.
fn create_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| TlsError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes a new file, created with its final mode (a key is never readable by others,
/// not even for a moment), and never over an existing one unless replacing.
fn write(
    dir: &Path,
    name: &str,
    contents: &str,
    access: Access,
    existing: Existing,
) -> Result<(), TlsError> {
    use std::io::Write;
    let path = dir.join(name);
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    if existing == Existing::Replace {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(err)),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(
        &mut options,
        match access {
            Access::OwnerOnly => 0o600,
            Access::Public => 0o644,
        },
    );
    let mut file = options.open(&path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.display().to_string())
        } else {
            io(err)
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)
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

/// `pos-hub certs init`: a new store CA in `dir` (`ca.pem`, `ca.key.pem`), refusing to
/// replace an existing one.
pub fn init_ca(dir: &Path) -> Result<(), TlsError> {
    init_ca_with(dir, Existing::Refuse)
}

pub fn init_ca_with(dir: &Path, existing: Existing) -> Result<(), TlsError> {
    create_dir(dir)?;
    check_absent(dir, &[CA_KEY, CA_CERT], existing)?;
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write(
        dir,
        CA_KEY,
        &key.serialize_pem(),
        Access::OwnerOnly,
        existing,
    )?;
    write(dir, CA_CERT, &cert.pem(), Access::Public, existing)
}

/// The URI a node certificate carries (a subjectAltName) to say which node it is:
/// `pos-hub-node:ID`. The peer service holds every Raft message to it.
pub const NODE_ID_URI_PREFIX: &str = "pos-hub-node:";

/// `pos-hub certs issue`: a certificate for node `node` valid for `hosts` (names or IPs),
/// written with a copy of the CA certificate into `out_dir`, which becomes the node's TLS
/// dir; refuses to replace an existing one.
pub fn issue_node(
    ca_dir: &Path,
    node: u64,
    hosts: &[String],
    out_dir: &Path,
) -> Result<(), TlsError> {
    issue_node_with(ca_dir, node, hosts, out_dir, Existing::Refuse)
}

pub fn issue_node_with(
    ca_dir: &Path,
    node: u64,
    hosts: &[String],
    out_dir: &Path,
    existing: Existing,
) -> Result<(), TlsError> {
    let ca_key = KeyPair::from_pem(&read(ca_dir, CA_KEY)?)?;
    let ca_cert = read(ca_dir, CA_CERT)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let uri = format!("{NODE_ID_URI_PREFIX}{node}");
    params
        .subject_alt_names
        .push(SanType::URI(uri.as_str().try_into()?));
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("pos-hub node {node}"));
    params.distinguished_name = name;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    create_dir(out_dir)?;
    check_absent(out_dir, &[NODE_KEY, NODE_CERT, CA_CERT], existing)?;
    write(
        out_dir,
        NODE_KEY,
        &key.serialize_pem(),
        Access::OwnerOnly,
        existing,
    )?;
    write(out_dir, NODE_CERT, &cert.pem(), Access::Public, existing)?;
    write(out_dir, CA_CERT, &ca_cert, Access::Public, existing)
}

/// The node id a peer's certificate (DER) names in its `pos-hub-node:ID` URI.
pub fn node_id_of(cert_der: &[u8]) -> Result<u64, TlsError> {
    use x509_parser::extensions::GeneralName;
    let bad = |detail: String| TlsError::NodeIdentity(detail);
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|err| bad(format!("not an X.509 certificate: {err}")))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|err| bad(format!("bad subjectAltName: {err}")))?;
    let mut ids = names
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(NODE_ID_URI_PREFIX),
            _ => None,
        });
    let (Some(id), None) = (ids.next(), ids.next()) else {
        return Err(bad(format!(
            "the certificate must name exactly one node as {NODE_ID_URI_PREFIX}ID \
             (reissue it with `pos-hub certs issue`)"
        )));
    };
    match id.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(bad(format!("{NODE_ID_URI_PREFIX}{id} is not a node id"))),
    }
}

/// The peer port's server side: TLS with this node's certificate, and a client
/// certificate from the store CA required of every caller (the peer service then holds
/// each caller to the node its certificate names). HTTP/2 only: peers speak gRPC.
pub fn peer_server_config(dir: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(dir, CA_CERT)? {
        roots.add(cert)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|err| TlsError::Verifier(err.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(dir, NODE_CERT)?, pem_key(dir)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn pem_error(
    dir: &Path,
    name: &str,
    what: &'static str,
) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError {
    let path = dir.join(name).display().to_string();
    move |err| TlsError::Pem {
        path,
        what,
        detail: err.to_string(),
    }
}

fn pem_certs(
    dir: &Path,
    name: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(read(dir, name)?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(dir, name, "certificate"))
}

fn pem_key(dir: &Path) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(read(dir, NODE_KEY)?.as_bytes())
        .map_err(pem_error(dir, NODE_KEY, "private key"))
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pem_certs(dir, NODE_CERT)?, pem_key(dir)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A device's TLS to the client port: trust the store CA only (pinning), no public roots.
pub fn device_client_config(ca_file: &Path) -> Result<ClientTlsConfig, TlsError> {
    let pem = std::fs::read_to_string(ca_file).map_err(|source| TlsError::Io {
        path: ca_file.display().to_string(),
        source,
    })?;
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
}
