//! pos-hub: the in-store hub of an offline-first point-of-sale system.
//!
//! A store runs a Raft group of 1–5 hub nodes that keeps one append-only event log.
//! Layout (dependencies point inward, `domain` imports nothing else of the crate):
//! - `domain`: pure rules — the event model, read models, `apply`;
//! - `proto`: the protobuf types (`pos.v1`) and the one place that converts them;
//! - `store`: sled-backed openraft log storage and state machine, snapshots;
//! - `raft`: openraft type configuration and the local node runner;
//! - `menu`: the store's menu file, checked at start and served by `GetMenu`;
//! - `cli`: command-line parsing and commands; `main.rs` only calls it.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod discovery;
pub mod domain;
pub mod http;
pub mod menu;
pub mod metrics;
pub mod proto;
pub mod raft;
pub mod store;
