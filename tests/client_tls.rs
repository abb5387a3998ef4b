//! With `--client-tls`, the client port serves gRPC, gRPC-web and HTTP over TLS with the
//! node's certificate from the store CA. A device that pins the store CA gets in; one that
//! pins another CA, or speaks plaintext, gets nothing. The CLI refuses an https hub
//! without a pinned CA instead of trusting anything.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Process, free_ports, inventory_event, poll_until};
use common::{BIN, refused, succeeded, tls_channel};
use pos_hub::auth::tls;
use pos_hub::proto::pb;
use pos_hub::proto::pb::hub_client::HubClient;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

fn spawn_tls_node(dir: &Path, tls_dir: &Path, client: u16, peer: u16) -> Process {
    let data = dir.join("data");
    let args = [
        "serve",
        "--no-mdns",
        "--node-id",
        "1",
        "--insecure-no-auth",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
        "--listen",
        &format!("127.0.0.1:{client}"),
        "--peer-listen",
        &format!("127.0.0.1:{peer}"),
        "--client-tls",
        tls_dir.to_str().expect("a UTF-8 path"),
    ];
    Process::start(&args, dir, dir.join("node.log"))
}

async fn hello(channel: Channel) -> Result<pb::HelloResponse, String> {
    let request = pb::HelloRequest {
        device_id: "till-1".into(),
        cursor: 0,
    };
    match tokio::time::timeout(
        Duration::from_secs(3),
        HubClient::new(channel).hello(request),
    )
    .await
    {
        Err(_) => Err("timed out".into()),
        Ok(Err(status)) => Err(status.to_string()),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
    }
}

/// One HTTP/1.1 request over TLS (ALPN http/1.1 only, like a browser's fetch on an
/// HTTP/1.1 connection); returns the whole response, read until the server closes.
async fn https1(addr: &str, ca: &Path, request: Vec<u8>) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("reads the CA") {
        roots.add(cert.expect("a CA certificate")).expect("adds");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("a server name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(&request).await.expect("writes");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
        .await
        .expect("the response within 5 s")
        .ok(); // a peer closing without close_notify still leaves the bytes read
    response
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_serves_tls_to_devices_that_pin_the_store_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_ca = dir.path().join("store-ca");
    let other_ca = dir.path().join("other-ca");
    let tls_dir = dir.path().join("tls");
    tls::init_ca(&store_ca).expect("store CA");
    tls::init_ca(&other_ca).expect("another CA");
    tls::issue_node(&store_ca, 1, &["127.0.0.1".to_owned()], &tls_dir).expect("node cert");
    let ca = store_ca.join(tls::CA_CERT);
    let ports = free_ports(2);
    let node = spawn_tls_node(dir.path(), &tls_dir, ports[0], ports[1]);
    let addr = format!("127.0.0.1:{}", ports[0]);
    let url = format!("https://{addr}");

    // A device pinning the store CA: Hello, once the node has elected itself.
    let welcome = poll_until(Duration::from_secs(30), async || {
        let reply = hello(tls_channel(&url, &ca).await?).await?;
        match reply.leader_id {
            0 => Err(format!("no leader yet: {reply:?}")),
            _ => Ok(reply),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("no TLS Hello within 30 s: {last}\n{}", node.log_tail(40)));
    assert_eq!(welcome.leader_id, 1);

    // It appends over TLS.
    let channel = tls_channel(&url, &ca).await.expect("TLS channel");
    let reply = HubClient::new(channel)
        .append(pb::AppendRequest {
            events: vec![inventory_event("FRIES", 3, "till-1", 1)],
        })
        .await
        .expect("append over TLS")
        .into_inner();
    assert_eq!(reply.results.len(), 1);
    assert_eq!(reply.results[0].status, pb::AppendStatus::Accepted as i32);

    // Pinning another CA: the handshake fails, nothing is answered.
    let foreign = match tls_channel(&url, &other_ca.join(tls::CA_CERT)).await {
        Ok(channel) => hello(channel).await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert!(foreign.is_err(), "a device pinning another CA got in");

    // Plaintext gRPC to the TLS port gets nothing.
    let plain = match Endpoint::from_shared(format!("http://{addr}"))
        .expect("URL")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
    {
        Ok(channel) => hello(channel).await.map(|_| ()),
        Err(err) => Err(err.to_string()),
    };
    assert!(
        plain.is_err(),
        "plaintext gRPC got an answer from the TLS port"
    );

    // gRPC-web over TLS on HTTP/1.1, as a browser sends it.
    let message = pb::HelloRequest {
        device_id: "kds-1".into(),
        cursor: 0,
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = format!(
        "POST /pos.v1.Hub/Hello HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nOrigin: https://{addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let response = https1(&addr, &ca, request).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "gRPC-web over TLS: {text}"
    );
    assert!(
        contains(&response, b"grpc-status:0") || contains(&response, b"grpc-status: 0"),
        "gRPC-web over TLS ends with grpc-status 0: {text}"
    );

    // Plain HTTP routes are on TLS too.
    let health = https1(
        &addr,
        &ca,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes(),
    )
    .await;
    let health = String::from_utf8_lossy(&health);
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "/healthz over TLS: {health}"
    );

    // The CLI: with --ca it works; an https hub without --ca is refused with the reason;
    // --ca with an http:// hub is refused too.
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("client")
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("POS_HUB_CA")
            .output()
            .expect("runs pos-hub client")
    };
    let ca_arg = ca.to_str().expect("a UTF-8 path");
    let status = succeeded(
        &cli(&["--hub", &url, "--ca", ca_arg, "status"]),
        "client status over TLS",
    );
    assert!(status.contains("leader"), "{status}");
    refused(
        &cli(&["--hub", &url, "status"]),
        "an https hub without --ca",
        "pin the store CA with --ca",
    );
    refused(
        &cli(&["--hub", &format!("http://{addr}"), "--ca", ca_arg, "status"]),
        "--ca with an http hub",
        "must be an https:// URL",
    );
}
