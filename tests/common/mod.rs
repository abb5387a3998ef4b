//! Helpers shared by the integration tests: run the real `pos-hub` binary, build events
//! and tokens, check refusals.

#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use cluster::{STORE, TENANT};
use pos_hub::auth::keys;
use pos_hub::auth::token::{AUDIENCE, Claims, Role};

pub const BIN: &str = env!("CARGO_BIN_EXE_pos-hub");

/// xorshift64*: a small deterministic generator for the kill schedules of
/// `device_kill.rs` and `format_migration.rs` (a seed replays the same schedule).
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

/// Marks the start of a test's next step in its output.
pub fn phase(what: &str) {
    eprintln!("--- {what}");
}

/// Seconds since the epoch, the clock of tokens.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A new key pair of a store (or of a tenant), its public half written to a file for the
/// nodes' `--public-key`.
pub struct StoreKey {
    pub signing: ed25519_dalek::SigningKey,
    pub public_pem: String,
    pub public_path: PathBuf,
}

/// A new `StoreKey`, its public key in `dir/store.pub.pem`.
pub fn store_key(dir: &Path) -> StoreKey {
    let (private_pem, public_pem) = keys::generate().expect("generates a key pair");
    let public_path = dir.join("store.pub.pem");
    std::fs::write(&public_path, &public_pem).expect("writes the public key");
    let signing = keys::signing_key_from_pem(&private_pem, "test key").expect("loads the key");
    StoreKey {
        signing,
        public_pem,
        public_path,
    }
}

/// The claims of `device` with `role` in realm TENANT/STORE, valid from a minute ago for an
/// hour.
pub fn claims(device: &str, role: Role) -> Claims {
    Claims {
        aud: AUDIENCE.into(),
        sub: device.into(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        role,
        exp: now() + 3_600,
        nbf: now() - 60,
        iat: now() - 60,
    }
}

/// The status of a refused call: it has `code`, and its message contains `words`.
pub fn expect_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    words: &str,
) -> tonic::Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "message {:?} should say {words:?}",
        status.message()
    );
    status
}

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

/// Runs `pos-hub keygen --out-dir DIR` to completion.
pub fn keygen(out_dir: &Path) -> Output {
    Command::new(BIN)
        .arg("keygen")
        .arg("--out-dir")
        .arg(out_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pos-hub runs")
}

/// Runs `pos-hub token issue` to completion: with the store key `key`, for `device` of
/// TENANT/STORE with `role` (as the CLI spells it), then the `extra` flags.
pub fn token_issue(key: &Path, device: &str, role: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["token", "issue", "--key"])
        .arg(key)
        .args(["--tenant", TENANT, "--store", STORE])
        .args(["--device", device, "--role", role])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pos-hub runs")
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

/// The stdout of `what`, a run that must have succeeded.
pub fn succeeded(output: &Output, what: &str) -> String {
    let out = stdout(output);
    assert!(
        output.status.success(),
        "{what} failed: {out}{}",
        stderr(output)
    );
    out
}

/// The stderr of `what`, a run that must have failed.
pub fn failed(output: &Output, what: &str) -> String {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "{what} must fail: {}{err}",
        stdout(output)
    );
    err
}

/// The stderr of `what`, a run that must have failed naming `reason` there.
pub fn refused(output: &Output, what: &str, reason: &str) -> String {
    let err = failed(output, what);
    assert!(err.contains(reason), "{what}: {reason:?} is not in: {err}");
    err
}

/// The report of appending the 15 events of the example (`log append`, `client append`):
/// `OUTCOME seq=N …` for each in order, then the totals line.
pub fn assert_example_report(report: &str, outcome: &str, totals: &str) {
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 16, "{report}");
    for (i, line) in lines[..15].iter().enumerate() {
        assert!(
            line.starts_with(&format!("{outcome:<9} seq={} ", i + 1)),
            "line {}: {line}",
            i + 1
        );
    }
    assert_eq!(lines[15], totals);
}

/// The committed log as `pos-hub log dump --json` prints it.
pub fn dump_json(data_dir: &Path) -> Vec<serde_json::Value> {
    succeeded(&log(data_dir, &["dump", "--json"]), "dump")
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

/// A channel to `url` (`https://…`) that trusts only the store CA at `ca`, connected now.
pub async fn tls_channel(url: &str, ca: &Path) -> Result<tonic::transport::Channel, String> {
    let config = pos_hub::auth::tls::device_client_config(ca).map_err(|e| e.to_string())?;
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .tls_config(config)
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}
