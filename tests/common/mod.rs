//! Helpers shared by the integration tests: run the real `pos-hub` binary, build events.

#![allow(dead_code)]

pub mod cluster;

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_pos-hub");

/// A request carrying `authorization: Bearer TOKEN` when a token is given.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value: tonic::metadata::MetadataValue<_> =
            format!("Bearer {token}").parse().expect("header text");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Runs `pos-hub log --data-dir DIR ARGS…` to completion.
pub fn log(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("log")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pos-hub runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The committed log as `pos-hub log dump --json` prints it.
pub fn dump_json(data_dir: &Path) -> Vec<serde_json::Value> {
    let output = log(data_dir, &["dump", "--json"]);
    assert!(output.status.success(), "dump failed: {}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("dump prints JSON lines"))
        .collect()
}

/// An event in the spec's JSON shape, realm t-demo/s-001.
pub fn event(
    event_id: &str,
    aggregate: (&str, &str),
    version: u64,
    event_type: &str,
    device: &str,
    lamport: u64,
    payload: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "eventId": event_id,
        "tenantId": "t-demo",
        "storeId": "s-001",
        "aggregateType": aggregate.0,
        "aggregateId": aggregate.1,
        "version": version,
        "type": event_type,
        "at": "2026-11-25T12:00:00.000Z",
        "actor": { "deviceId": device },
        "clock": { "lamport": lamport, "deviceId": device },
        "payload": payload,
    })
}

pub fn write_jsonl(path: &Path, events: &[serde_json::Value]) {
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, text).expect("writes the event file");
}
