//! Plain HTTP on the client port: `/healthz`, `/status` (JSON) and `/metrics`
//! (Prometheus text), for operators, load balancers and the spec's runbooks; and the
//! browser app (`web`); the security headers and Host allow-list every request passes
//! (`guard`).

pub mod guard;
pub mod web;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use openraft::ServerState;
use serde_json::json;

use crate::raft::node::Node;

/// The node's own endpoints; the web app's files may not take these paths.
pub const API_PATHS: [&str; 3] = ["/healthz", "/status", "/metrics"];

pub fn routes(node: Arc<Node>) -> Router {
    let [healthz_path, status_path, metrics_path] = API_PATHS;
    Router::new()
        .route(healthz_path, get(healthz))
        .route(status_path, get(status))
        .route(metrics_path, get(metrics))
        .with_state(node)
        .merge(web::routes(&API_PATHS))
}

/// 200 while the node serves: it runs and knows a leader (so appends can be served).
async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let metrics = node.raft_metrics();
    match (&metrics.running_state, metrics.current_leader) {
        (Ok(()), Some(_)) => (StatusCode::OK, "ok\n".to_owned()),
        (Ok(()), None) => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".to_owned()),
        (Err(fatal), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        ),
    }
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

async fn status(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let metrics = node.raft_metrics();
    let applied = node.reader.applied();
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let peers: Vec<_> = metrics
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, member)| {
            // Replication progress is known only on the leader.
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|m| m.map(|l| l.index));
            json!({
                "id": id,
                "peerAddr": member.peer_addr,
                "clientAddr": member.client_addr,
                "matchedIndex": matched,
                "lag": matched.map(|m| last_log_index.saturating_sub(m)),
            })
        })
        .collect();
    let body = json!({
        "nodeId": node.id,
        "role": role(metrics.state),
        "term": metrics.current_term,
        "leaderId": metrics.current_leader,
        "lastLogIndex": last_log_index,
        "commitIndex": node.committed_index(),
        "appliedIndex": metrics.last_applied.map_or(0, |id| id.index),
        // The last snapshot taken or installed here, and how far the log was purged.
        "snapshotIndex": metrics.snapshot.map(|id| id.index),
        "purgedIndex": metrics.purged.map(|id| id.index),
        "lastSeq": applied.as_ref().map(|a| a.last_seq).ok(),
        "peers": peers,
        "subscribers": node.metrics.subscribers.load(Ordering::Relaxed),
        "version": env!("CARGO_PKG_VERSION"),
        "realm": node.reader.realm().to_string(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let raft = node.raft_metrics();
    let last_seq = node.reader.applied().map(|a| a.last_seq).unwrap_or(0);
    let m = &node.metrics;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    // (name, help, type, value), in the order they are exported.
    let series: [(&str, &str, &str, u64); 10] = [
        (
            "pos_hub_term",
            "Current Raft term.",
            "gauge",
            raft.current_term,
        ),
        (
            "pos_hub_is_leader",
            "1 if this node leads.",
            "gauge",
            u64::from(raft.state == ServerState::Leader),
        ),
        (
            "pos_hub_last_log_index",
            "Last Raft log index on this node.",
            "gauge",
            raft.last_log_index.unwrap_or(0),
        ),
        (
            "pos_hub_commit_index",
            "Last committed Raft log index known here.",
            "gauge",
            node.committed_index(),
        ),
        (
            "pos_hub_applied_index",
            "Last Raft log index applied here.",
            "gauge",
            raft.last_applied.map_or(0, |l| l.index),
        ),
        (
            "pos_hub_last_seq",
            "Seq of the last event in the store's log.",
            "gauge",
            last_seq,
        ),
        (
            "pos_hub_append_requests_total",
            "Append calls served by this node.",
            "counter",
            load(&m.append_requests),
        ),
        (
            "pos_hub_appended_events_total",
            "Events accepted through this node.",
            "counter",
            load(&m.appended_events),
        ),
        (
            "pos_hub_forwarded_appends_total",
            "Appends forwarded to the leader.",
            "counter",
            load(&m.forwarded_appends),
        ),
        (
            "pos_hub_subscribers",
            "Open Subscribe streams.",
            "gauge",
            u64::try_from(m.subscribers.load(Ordering::Relaxed)).unwrap_or(0),
        ),
    ];
    let heap = crate::memory::heap();
    let heap_series = heap.iter().flat_map(|heap| {
        [
            (
                "pos_hub_heap_in_use_bytes",
                "Heap bytes in use (the C allocator's count).",
                "gauge",
                heap.in_use,
            ),
            (
                "pos_hub_heap_free_held_bytes",
                "Free heap bytes the allocator holds (their pages are given back every 5 s).",
                "gauge",
                heap.free_held,
            ),
        ]
    });
    let mut out = String::new();
    for (name, help, kind, value) in series.into_iter().chain(heap_series) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    m.render_latency("pos_hub_append_latency_seconds", &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
