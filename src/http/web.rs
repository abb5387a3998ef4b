//! The browser app on every node's client port: the Vite build committed in `web/dist/`,
//! embedded by `build.rs` at compile time, so a node needs no files beside its binary and
//! a till can load the app from whichever node it reaches.
//!
//! Each file is its own GET route rather than one `/{*path}` catch-all: a GET-only
//! catch-all would also match the gRPC and gRPC-web POSTs and answer them 405, where they
//! must fall through to the gRPC router.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Files under here have a content hash in their names (Vite's `[name]-[hash]`): a new
/// build is new URLs, so browsers may keep them for good.
const HASHED_PREFIX: &str = "/assets/";
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else keeps its URL across builds (index.html, sw.js, the manifest): the
/// browser asks again each time, so a new build reaches the tills at their next load.
const CACHE_REVALIDATE: &str = "no-cache";

/// The Content-Type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with(HASHED_PREFIX) {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    }
}

fn file_response(path: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control(path)),
            ),
            // The types above are the real ones; a browser must not guess others.
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// One GET route per embedded file, and `/` for `index.html`. A file whose path is one of
/// `reserved` (the node's own HTTP endpoints) is left out: the endpoint wins.
pub fn routes(reserved: &[&str]) -> Router {
    let mut router = Router::new();
    for &(path, bytes) in WEB_ASSETS {
        if reserved.contains(&path) {
            tracing::warn!(
                path,
                "web/dist has a file at a path the node serves itself; not serving the file"
            );
            continue;
        }
        let handler = move || async move { file_response(path, bytes) };
        router = router.route(path, get(handler));
        if path == "/index.html" {
            router = router.route("/", get(handler));
        }
    }
    router
}

/// What a GET (or any method but POST, which is gRPC's) to an unknown path gets.
pub async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        format!("not found: {}\n", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        for (path, want) in [
            ("/index.html", "text/html; charset=utf-8"),
            ("/assets/index-3fA_x-9.js", "text/javascript; charset=utf-8"),
            ("/assets/worker.MJS", "text/javascript; charset=utf-8"),
            ("/assets/index-abc.css", "text/css; charset=utf-8"),
            ("/icon.svg", "image/svg+xml"),
            ("/icons/icon-192.png", "image/png"),
            ("/favicon.ico", "image/x-icon"),
            ("/data.json", "application/json"),
            ("/manifest.webmanifest", "application/manifest+json"),
            ("/robots.txt", "text/plain; charset=utf-8"),
            ("/assets/inter-abc.woff2", "font/woff2"),
            ("/assets/blob.wasm", "application/octet-stream"),
            ("/LICENSE", "application/octet-stream"),
        ] {
            assert_eq!(content_type(path), want, "{path}");
        }
    }

    #[test]
    fn only_hashed_assets_are_cached_for_good() {
        assert_eq!(
            cache_control("/assets/index-abc.js"),
            "public, max-age=31536000, immutable"
        );
        for path in ["/index.html", "/sw.js", "/manifest.webmanifest", "/assets"] {
            assert_eq!(cache_control(path), "no-cache", "{path}");
        }
    }

    #[test]
    fn the_embedded_app_has_an_index_and_sorted_paths_clear_of_the_node_s_own() {
        assert!(
            WEB_ASSETS.iter().any(|(path, _)| *path == "/index.html"),
            "build.rs embeds web/dist/index.html"
        );
        assert!(
            WEB_ASSETS.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, without duplicates"
        );
        for (path, _) in WEB_ASSETS {
            assert!(path.starts_with('/'), "{path}");
            assert!(
                !super::super::API_PATHS.contains(path),
                "web/dist/{path} would be hidden by the node's own endpoint"
            );
            // A GET route at a gRPC method's path would answer that method's POSTs 405.
            assert!(
                !path.starts_with("/pos.v1.") && !path.starts_with("/grpc."),
                "{path} is where gRPC methods live"
            );
        }
    }
}
