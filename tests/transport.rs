//! The transport's defences, against the real binary: key files only their owner reads and
//! nothing overwritten unasked; no plaintext peer port other machines reach; TLS
//! handshakes and plaintext connections capped per address, and a client that sends
//! nothing (or half a request) cut off; browser security headers; and a Host allow-list
//! while the hub runs without authentication (DNS rebinding).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::cluster::{Process, free_ports, hello_at, http_exchange, inventory_event, poll_until};
use common::{phase, refused, succeeded, tls_channel};
use pos_hub::app::listen;
use pos_hub::auth::tls;
use pos_hub::proto::pb;
use pos_hub::proto::pb::hub_client::HubClient;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Endpoint;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn cli(args: &[&str], cwd: &Path) -> std::process::Output {
    common::cluster::run_cli(args, cwd, Duration::from_secs(30))
}

#[test]
fn certs_keys_are_owner_only_and_nothing_is_overwritten_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    succeeded(&cli(&["certs", "init", "--out-dir", "ca"], d), "certs init");
    assert_eq!(mode(&d.join("ca").join(tls::CA_KEY)), 0o600, "the CA key");
    assert_eq!(
        mode(&d.join("ca").join(tls::CA_CERT)),
        0o644,
        "the CA certificate"
    );
    assert_eq!(mode(&d.join("ca")), 0o700, "the CA dir");
    let ca_key = std::fs::read(d.join("ca").join(tls::CA_KEY)).expect("reads");

    phase("a second init refuses, naming the file, and leaves the CA as it was");
    refused(
        &cli(&["certs", "init", "--out-dir", "ca"], d),
        "a second certs init",
        "ca/ca.key.pem exists; refusing to overwrite it",
    );
    assert_eq!(
        std::fs::read(d.join("ca").join(tls::CA_KEY)).expect("reads"),
        ca_key
    );

    let issue = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--node",
            "2",
            "--host",
            "127.0.0.1",
            "--out-dir",
            "tls-2",
        ];
        args.extend_from_slice(extra);
        cli(&args, d)
    };
    succeeded(&issue(&[]), "certs issue");
    let tls_dir = d.join("tls-2");
    assert_eq!(mode(&tls_dir.join(tls::NODE_KEY)), 0o600, "the node key");
    assert_eq!(
        mode(&tls_dir.join(tls::NODE_CERT)),
        0o644,
        "the node certificate"
    );
    let node_key = std::fs::read(tls_dir.join(tls::NODE_KEY)).expect("reads");

    phase("a second issue into the same dir refuses; --force replaces, still owner-only");
    refused(
        &issue(&[]),
        "a second certs issue",
        "tls-2/node.key.pem exists; refusing to overwrite it",
    );
    assert_eq!(
        std::fs::read(tls_dir.join(tls::NODE_KEY)).expect("reads"),
        node_key
    );
    succeeded(&issue(&["--force"]), "certs issue --force");
    assert_ne!(
        std::fs::read(tls_dir.join(tls::NODE_KEY)).expect("reads"),
        node_key,
        "a new key"
    );
    assert_eq!(
        mode(&tls_dir.join(tls::NODE_KEY)),
        0o600,
        "the replaced key"
    );
    succeeded(
        &cli(&["certs", "init", "--out-dir", "ca", "--force"], d),
        "certs init --force",
    );
    assert_ne!(
        std::fs::read(d.join("ca").join(tls::CA_KEY)).expect("reads"),
        ca_key
    );
    assert_eq!(
        mode(&d.join("ca").join(tls::CA_KEY)),
        0o600,
        "the replaced CA key"
    );
}

#[test]
fn node_certificates_name_their_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    tls::init_ca(&dir.path().join("ca")).expect("CA");
    tls::issue_node(
        &dir.path().join("ca"),
        7,
        &["127.0.0.1".to_owned(), "hub-7.local".to_owned()],
        &dir.path().join("tls"),
    )
    .expect("issues");
    let pem = std::fs::read(dir.path().join("tls").join(tls::NODE_CERT)).expect("reads");
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|cert: rustls_pki_types::CertificateDer<'static>| cert.to_vec())
        .expect("a PEM certificate");
    assert_eq!(tls::node_id_of(&der).expect("names a node"), 7);
    let ca_pem = std::fs::read(dir.path().join("ca").join(tls::CA_CERT)).expect("reads");
    let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(&ca_pem)
        .map(|cert: rustls_pki_types::CertificateDer<'static>| cert.to_vec())
        .expect("a PEM certificate");
    let err = tls::node_id_of(&ca_der).expect_err("the CA names no node");
    assert!(err.to_string().contains("pos-hub-node:ID"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_peer_port_other_machines_reach_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let (client, peer) = (ports[0], ports[1]);
    let out = common::cluster::run_cli_async(
        [
            "serve",
            "--no-mdns",
            "--node-id",
            "1",
            "--insecure-no-auth",
            "--data-dir",
            "data",
            "--listen",
            &format!("127.0.0.1:{client}"),
            "--peer-listen",
            &format!("0.0.0.0:{peer}"),
        ]
        .map(String::from)
        .to_vec(),
        dir.path().to_owned(),
        Duration::from_secs(30),
    )
    .await;
    refused(
        &out,
        "serve with a plaintext 0.0.0.0 peer port",
        &format!("--peer-listen 0.0.0.0:{peer} is reachable from other machines"),
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("--peer-tls") && err.contains("--insecure-plaintext-peers"),
        "{err}"
    );
    for port in [client, peer] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "nothing listens on {port}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "no data dir was made before the refusal"
    );
}

fn spawn_node(dir: &Path, client: u16, peer: u16, extra: &[&str]) -> Process {
    let mut args = vec![
        "serve".to_owned(),
        "--no-mdns".into(),
        "--node-id".into(),
        "1".into(),
        "--insecure-no-auth".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{client}"),
        "--peer-listen".into(),
        format!("127.0.0.1:{peer}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::start(&args, dir, dir.join("node.log"))
}

/// A plaintext node (`spawn_node` with `extra`) that answers Hello; its guard, its ports
/// (client, peer) and its client address.
async fn answering_node(dir: &Path, extra: &[&str]) -> (Process, Vec<u16>, String) {
    let ports = free_ports(2);
    let node = spawn_node(dir, ports[0], ports[1], extra);
    let addr = format!("127.0.0.1:{}", ports[0]);
    poll_until(Duration::from_secs(30), async || {
        hello_at(&addr, 0).await.map(|_| ())
    })
    .await
    .expect("the node answers");
    (node, ports, addr)
}

/// A TCP connection to `port` from the loopback address `from`, that sends nothing.
async fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("binds a loopback source address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connects")
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_from_one_address_hold_up_no_one_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    tls::init_ca(&ca).expect("CA");
    tls::issue_node(&ca, 1, &["127.0.0.1".to_owned()], &dir.path().join("tls")).expect("cert");
    let ports = free_ports(2);
    let tls_dir = dir.path().join("tls").display().to_string();
    let _node = spawn_node(dir.path(), ports[0], ports[1], &["--client-tls", &tls_dir]);
    let url = format!("https://127.0.0.1:{}", ports[0]);
    let ca_cert = ca.join(tls::CA_CERT);
    let channel = || tls_channel(&url, &ca_cert);
    poll_until(Duration::from_secs(30), async || {
        channel().await.map(|_| ())
    })
    .await
    .expect("the node serves TLS");

    phase("more stalled handshakes from 127.0.0.2 than the node holds in all");
    let stalled_count = listen::HANDSHAKES_MAX + 44;
    let mut stalled = Vec::new();
    for _ in 0..stalled_count {
        stalled.push(connect_from([127, 0, 0, 2], ports[0]).await);
    }

    phase("a device at 127.0.0.1 still completes its handshake and is answered");
    let channel = channel().await.expect("a handshake while the others stall");
    let hello = tokio::time::timeout(
        Duration::from_secs(5),
        HubClient::new(channel).hello(pb::HelloRequest {
            device_id: "till-1".into(),
            cursor: 0,
        }),
    )
    .await
    .expect("answered while the others stall")
    .expect("Hello");
    assert_eq!(hello.into_inner().leader_id, 1);

    phase("the stalled connections over the per-address cap were closed at once");
    let mut closed = 0;
    for stream in &mut stalled {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= stalled_count - listen::HANDSHAKES_PER_ADDRESS_MAX,
        "{closed} of {stalled_count} closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_connections_are_capped_per_address_and_silent_ones_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, ports, addr) = answering_node(dir.path(), &[]).await;

    phase("more idle connections from 127.0.0.2 than one address may hold");
    let over = 20;
    let mut idle = Vec::new();
    for _ in 0..listen::CONNECTIONS_PER_ADDRESS_MAX + over {
        idle.push(connect_from([127, 0, 0, 2], ports[0]).await);
    }
    let mut half = connect_from([127, 0, 0, 3], ports[0]).await;
    tokio::io::AsyncWriteExt::write_all(
        &mut half,
        b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n",
    )
    .await
    .expect("writes half a request");

    phase("a device at 127.0.0.1 is still answered, and can append");
    hello_at(&addr, 0)
        .await
        .expect("Hello while the others idle");
    let reply = HubClient::new(common::cluster::channel(&addr))
        .append(pb::AppendRequest {
            events: vec![inventory_event("FRIES", 1, "till-1", 1)],
        })
        .await
        .expect("an append while the others idle")
        .into_inner();
    assert_eq!(reply.results.len(), 1);

    phase("the connections over the cap were closed at once");
    let mut closed = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert!(closed >= over, "{closed} closed, {over} over the cap");

    phase("a connection that sends nothing, or half a request head, is cut off");
    let bound = listen::HEADER_READ_TIMEOUT * 3;
    assert!(
        closed_within(&mut idle[0], bound).await,
        "a silent connection is closed"
    );
    assert!(
        closed_within(&mut half, bound).await,
        "half a request head is not waited for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_responses_carry_the_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, _ports, addr) = answering_node(dir.path(), &[]).await;
    for path in ["/", "/index.html", "/status", "/healthz", "/no-such-page"] {
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let response = http_exchange(&addr, request.as_bytes(), Duration::from_secs(5))
            .await
            .expect("answers");
        let csp = response
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP: {response:?}"));
        for directive in [
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "connect-src 'self' http: https:",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-"), "{path}: {csp}");
        assert_eq!(response.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            response.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_authentication_answers_only_to_allowed_host_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, ports, addr) = answering_node(dir.path(), &["--allow-host", "hub-1.local"]).await;
    let get = |host: String| {
        let addr = addr.clone();
        async move {
            let request = format!("GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n");
            http_exchange(&addr, request.as_bytes(), Duration::from_secs(5))
                .await
                .expect("answers")
        }
    };

    phase("a re-pointed name is refused with 403, naming the host");
    let response = get(format!("rebind.example:{}", ports[0])).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(
        response.text().contains("rebind.example") && response.text().contains("DNS rebinding"),
        "{}",
        response.text()
    );
    assert!(response.header("content-security-policy").is_some());

    phase("loopback names, IP addresses and --allow-host names are served");
    for host in [
        format!("127.0.0.1:{}", ports[0]),
        format!("localhost:{}", ports[0]),
        format!("192.168.1.20:{}", ports[0]),
        format!("hub-1.local:{}", ports[0]),
    ] {
        let response = get(host.clone()).await;
        assert_eq!(response.status, 200, "{host}: {response:?}");
    }

    phase("gRPC with a re-pointed :authority: PERMISSION_DENIED, and nothing appended");
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .origin(
            format!("http://rebind.example:{}", ports[0])
                .parse()
                .expect("a URI"),
        )
        .connect()
        .await
        .expect("connects");
    let refused = HubClient::new(channel)
        .append(pb::AppendRequest {
            events: vec![inventory_event("FRIES", 1, "till-1", 1)],
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("rebind.example"), "{refused:?}");
    let hello = hello_at(&addr, 0).await.expect("Hello by IP address");
    assert_eq!(hello.last_seq, 0, "nothing was appended");
}
