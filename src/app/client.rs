//! Step 3 of `serve`: the client port. One listener serves gRPC and gRPC-web (the same
//! services), the plain HTTP routes and the web app; every gRPC call passes the caller
//! check (`api::auth`) before its handler. Browsers on the shop's LAN may call it (CORS);
//! every response carries the browser security headers, and a hub without authentication
//! answers only to Host names on its allow-list (`http::guard`). TLS when `--client-tls`
//! is given; connections are capped per address and in all (`listen`). Also the mDNS
//! advertisement of this port.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::listen;
use super::shutdown::Stop;
use super::{AppError, ServeConfig};
use crate::api::auth::AccessPolicy;
use crate::api::cluster::ClusterService;
use crate::api::hub::HubService;
use crate::api::limits::{
    RATE_BURST_READS, RATE_READS_PER_S, RateLimiter, ReadLimiter, SubscriptionSlots,
};
use crate::discovery::Advertiser;
use crate::http::guard::HostAllowList;
use crate::proto::pb;
use crate::raft::node::Node;
use crate::wire::CLIENT_MESSAGE_BYTES_MAX;

/// Encoded protobuf descriptors, for gRPC server reflection.
const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pos_descriptor");

/// The client server's task; it stops serving when `stop` fires.
pub(super) type ClientTask = JoinHandle<std::io::Result<()>>;

/// Browsers on the shop's LAN may call the client port (gRPC-web). An origin counts as LAN
/// when its host is localhost, a `.local` name, or a private, loopback or link-local IP.
pub fn is_lan_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    if host == "localhost" || host.ends_with(".local") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(is_lan_origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("authorization"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The gRPC services of the client port, each behind the caller check, and reflection.
fn grpc_routes(config: &ServeConfig, node: &Arc<Node>) -> Result<tonic::service::Routes, AppError> {
    let wan = match &config.wan_probe {
        Some(target) => crate::wan::Wan::probe(target.clone()),
        None => {
            if config.public_keys.is_some() && config.offline_grace_s > 0 {
                tracing::info!(
                    "no --wan-probe: this hub cannot tell whether it is online, so expired tokens of known devices get the offline grace"
                );
            }
            crate::wan::Wan::unprobed()
        }
    };
    let access = AccessPolicy::new(
        config.public_keys.clone(),
        config.realm.clone(),
        node.reader.clone(),
        config.offline_grace_s,
        wan,
    );
    if access.is_open() {
        tracing::warn!("NO AUTHENTICATION: the client API accepts any caller (no --public-key)");
    }
    let hub = HubService {
        node: node.clone(),
        limiter: Arc::new(RateLimiter::new(
            config.rate_events_per_s,
            config.rate_burst_events,
        )),
        reads: Arc::new(ReadLimiter::new(RATE_READS_PER_S, RATE_BURST_READS)),
        subscriptions: Arc::new(SubscriptionSlots::new(config.subscriptions_per_device)),
        menu: config.menu.clone(),
    };
    let hub = InterceptedService::new(
        pb::hub_server::HubServer::new(hub).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
        access.devices(),
    );
    let cluster = pb::cluster_server::ClusterServer::with_interceptor(
        ClusterService { node: node.clone() },
        access.admin(),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::service::Routes::new(hub)
        .add_service(cluster)
        .add_service(reflection)
        .prepare())
}

pub(super) fn start(
    config: &ServeConfig,
    node: Arc<Node>,
    listener: TcpListener,
    stop: &Stop,
) -> Result<ClientTask, AppError> {
    // Plain HTTP routes and the web app first; every other POST is gRPC, or gRPC-web
    // translated to gRPC (both only ever POST). Any other method on an unknown path is a
    // browser asking for a page that does not exist: 404, not a gRPC error.
    let grpc = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebLayer::new())
        .service(grpc_routes(config, &node)?);
    // Without authentication, only names that cannot be re-pointed at this node by
    // another site (DNS rebinding) may reach it.
    let hosts = config.public_keys.is_none().then(|| {
        HostAllowList::new(
            config
                .allowed_hosts
                .iter()
                .cloned()
                .chain([config.advertise.client_addr.clone()]),
        )
    });
    let app = crate::http::routes(node)
        .fallback_service(axum::routing::post_service(grpc).fallback(crate::http::web::not_found))
        .layer(cors())
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            crate::http::guard::guard,
        ));
    let connections = listen::Slots::new(
        "connections",
        listen::CONNECTIONS_PER_ADDRESS_MAX,
        listen::CONNECTIONS_MAX,
    );
    let task = match &config.client_tls {
        Some(dir) => {
            let tls = crate::auth::tls::client_server_config(dir)?;
            let handshakes = listen::Slots::new(
                "TLS handshakes",
                listen::HANDSHAKES_PER_ADDRESS_MAX,
                listen::HANDSHAKES_MAX,
            );
            let accepted = listen::tls(listener, tls, handshakes, Some(connections), "client port");
            tokio::spawn(listen::serve_http(
                listen::client_tls(accepted),
                app,
                stop.stopped(),
            ))
        }
        None => {
            tracing::warn!(
                "the client port is plaintext (no --client-tls): tokens cross the network readable"
            );
            tokio::spawn(listen::serve_http(
                listen::plaintext(listener, connections),
                app,
                stop.stopped(),
            ))
        }
    };
    Ok(task)
}

/// Advertises the client port on mDNS when asked to; a failure only costs discovery.
pub(super) fn advertise(config: &ServeConfig) -> Option<Advertiser> {
    if !config.mdns {
        return None;
    }
    match crate::discovery::advertise(
        &config.realm,
        config.node_id,
        &config.advertise.client_addr,
        config.client_tls.is_some(),
    ) {
        Ok(advertiser) => Some(advertiser),
        Err(err) => {
            tracing::warn!(%err, "not advertising on mDNS; devices need the address");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_lan_origin;

    #[test]
    fn only_lan_origins_may_call_from_a_browser() {
        for ok in [
            "http://192.168.1.20:5173",
            "http://10.0.0.7",
            "https://172.20.1.1:443",
            "http://localhost:3000",
            "http://till-3.local",
            "http://127.0.0.1:8080",
            "http://[::1]:4001",
            "http://[fd00::5]:80",
        ] {
            assert!(is_lan_origin(ok), "{ok} is a LAN origin");
        }
        for no in [
            "https://example.com",
            "http://8.8.8.8",
            "http://172.32.0.1",
            "null",
            "file://",
            "http://[2001:db8::1]",
        ] {
            assert!(!is_lan_origin(no), "{no} is not a LAN origin");
        }
    }
}
