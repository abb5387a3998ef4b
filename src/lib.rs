//! pos-hub: the in-store hub of an offline-first point-of-sale system.
//!
//! A store runs a Raft group of 1–5 hub nodes that keeps one append-only event log.
//! Layout, bottom up; a module imports only modules above it in this list (`domain` and the
//! three leaf modules import nothing of the crate). `docs/architecture.md` draws it, with
//! the path of one event from Append to Subscribe.
//! - `domain`: pure rules — the event model, read models, `apply(state, event, hub_time)`;
//! - `clock`: the wall clock, read in one place; `wire`: the API's bounds and metadata
//!   keys; `metrics`: a node's counters;
//! - `auth`: device tokens (Ed25519), the store's keys, TLS configuration;
//! - `menu`: the store's menu file, checked at start and served by `GetMenu`;
//! - `discovery`: mDNS advertisement and browsing; `wan`: whether the hub reaches the
//!   internet (the offline grace of expired tokens);
//! - `proto`: the protobuf types (`pos.v1`) and every conversion to and from them;
//! - `raft_types`: what the group replicates — openraft's type configuration, the
//!   `Command` a log entry carries and its `Response`;
//! - `store`: one node's storage — the Raft log in segment files, the sled state machine,
//!   snapshots;
//! - `raft`: the group at run time — `Node` (propose, forward, read barriers), group
//!   commit, the peer service and network, a single-node local group;
//! - `api`: the client API (`pos.v1.Hub`, `pos.v1.Cluster`), its caller check, `ApiError`
//!   and per-device limits; `http`: `/healthz`, `/status`, `/metrics` and the web app;
//! - `client`: the device SDK (`Device`: outbox, read model, locks; `HubClient`:
//!   failover, discovery) — it talks to the hub over `proto` only;
//! - `app`: wires a node together (`serve`: open, peer port, client port, shutdown);
//! - `cli`: command-line parsing and commands; `main.rs` only calls it.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod discovery;
pub mod domain;
pub mod http;
pub mod kv;
pub mod memory;
pub mod menu;
pub mod metrics;
pub mod proto;
pub mod raft;
pub mod raft_types;
pub mod store;
pub mod wan;
pub mod wire;
