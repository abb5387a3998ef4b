//! What every request and response of the client port passes through:
//! - browser security headers on every response that is not gRPC: a Content-Security-Policy
//!   that lets the app run its own scripts and styles only and talk to any hub node, no
//!   framing, no content-type sniffing, no referrer leaving the hub;
//! - a Host allow-list while the hub runs without authentication (`--dev`,
//!   `--insecure-no-auth`): a web page of another site whose name an attacker re-points at
//!   the hub (DNS rebinding) would otherwise be same-origin with the hub and could read and
//!   write the store's log from a browser on the shop's LAN.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The web app's policy: scripts, styles, images, the manifest and the service worker come
/// from the node itself; API calls may go to any node (the app moves to another node of
/// the group when its node stops answering, and the dashboard polls every node); nothing
/// may frame the app, and no plugin or `<base>` may change it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; font-src 'self'; manifest-src 'self'; worker-src 'self'; \
     connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// Which `Host` names may reach a hub that runs without authentication.
#[derive(Debug, Clone)]
pub struct HostAllowList {
    names: Vec<String>,
}

impl HostAllowList {
    /// Loopback names, IP addresses, and `names` (`--allow-host`, the node's advertised
    /// client host), each with or without a port.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        HostAllowList {
            names: names
                .into_iter()
                .map(|name| normalize(host_part(&name)))
                .filter(|name| !name.is_empty())
                .collect(),
        }
    }

    /// Whether a request with this `Host` (or `:authority`) may be served. An IP address
    /// cannot be a re-pointed name: a page whose origin is an IP address is the hub's own.
    pub fn allows(&self, authority: &str) -> bool {
        let host = normalize(host_part(authority));
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<std::net::IpAddr>().is_ok()
            || self.names.contains(&host)
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of `HOST[:PORT]` or `[V6][:PORT]`.
fn host_part(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// The request's authority: HTTP/2's `:authority`, else HTTP/1's `Host`.
fn authority(request: &Request) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    request
        .headers()
        .get(header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn is_grpc(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// A refusal in the caller's protocol: a gRPC (or gRPC-web) PERMISSION_DENIED status, or
/// an HTTP 403 for pages and the node's own endpoints.
fn refuse(content_type: Option<HeaderValue>, message: String) -> Response {
    if is_grpc(content_type.as_ref()) {
        let mut response = tonic::Status::permission_denied(message).into_http::<Body>();
        if let Some(content_type) = content_type {
            // gRPC-web clients check that the answer is in their own framing.
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        return response;
    }
    (
        StatusCode::FORBIDDEN,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{message}\n"),
    )
        .into_response()
}

/// The client port's middleware; `hosts` is `Some` when the hub runs without
/// authentication.
pub async fn guard(
    State(hosts): State<Arc<Option<HostAllowList>>>,
    request: Request,
    next: Next,
) -> Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = match (hosts.as_ref(), authority(&request)) {
        (Some(hosts), Some(host)) if !hosts.allows(&host) => refuse(
            content_type.clone(),
            format!(
                "host {host:?} is not allowed: this hub runs without authentication, so it \
                 answers only to loopback names, IP addresses and `serve --allow-host` names \
                 (a guard against DNS rebinding)"
            ),
        ),
        _ => next.run(request).await,
    };
    let grpc = is_grpc(response.headers().get(header::CONTENT_TYPE));
    if !grpc {
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_ip_addresses_and_listed_names_are_allowed() {
        let hosts = HostAllowList::new(["Hub-1.local".to_owned(), "10.0.0.2:4001".to_owned()]);
        for ok in [
            "127.0.0.1:4001",
            "127.0.0.1",
            "localhost:4001",
            "LOCALHOST",
            "till.localhost:80",
            "[::1]:4001",
            "::1",
            "192.168.1.20:4001",
            "[fd00::5]",
            "hub-1.local:4001",
            "HUB-1.LOCAL.",
        ] {
            assert!(hosts.allows(ok), "{ok} is allowed");
        }
        for no in [
            "evil.example:4001",
            "evil.example",
            "hub-2.local:4001",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!hosts.allows(no), "{no:?} is refused");
        }
    }
}
