//! The store's own certificate authority and node certificates (rcgen), and the tonic TLS
//! configurations of the peer port: with a TLS dir, the peer port serves TLS and requires
//! a client certificate from the store CA, so a machine without one cannot even send a
//! Raft message.
//!
//! A TLS dir holds `ca.pem` (the store CA), `node.pem` and `node.key.pem` (this node's
//! certificate, for both serving and connecting to peers).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
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
