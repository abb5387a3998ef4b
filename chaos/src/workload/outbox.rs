//! A till appending through the client SDK's durable outbox, alongside the devices.

use std::time::Duration;

use pos_hub::client::{Device, DeviceConfig, Draft, HubConfig};
use pos_hub::domain::Realm;
use serde_json::json;
use tokio::sync::watch;

use crate::group::{STORE, TENANT};

/// A till appending through the client SDK's durable outbox; returns the ids of the
/// events `append` confirmed (saved), which must all end up in the log exactly once.
pub async fn outbox_till(
    dir: std::path::PathBuf,
    addrs: Vec<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Device, Vec<String>)> {
    let device = Device::open(DeviceConfig {
        data_dir: dir,
        device_id: "till-outbox".into(),
        user_id: None,
        hub: HubConfig::new(addrs, Realm::new(TENANT, STORE)),
    })?;
    let running = device.start();
    let mut confirmed = Vec::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let sku = format!("SKU-OB-{}", n % 3);
        let draft = Draft::new(
            "inventory",
            &sku,
            "inventory.adjusted",
            json!({"sku": sku, "delta": 1}),
        );
        match device.append(draft) {
            Ok(appended) => confirmed.push(appended.event_id),
            Err(err) => tracing::warn!(%err, "outbox till: append refused"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
    drop(running);
    Ok((device, confirmed))
}
