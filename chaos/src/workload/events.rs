//! The events the workload's devices send, in the hub's domain form, with the wall-clock
//! `at` a device would stamp.

use serde_json::{Value, json};

use crate::group::{STORE, TENANT};

pub(super) fn event(
    device: &str,
    aggregate_type: &str,
    aggregate: &str,
    version: u64,
    event_type: &str,
    payload: Value,
) -> pos_hub::domain::Event {
    pos_hub::domain::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate.into(),
        version,
        event_type: event_type.into(),
        at: chrono_now(),
        actor: pos_hub::domain::Actor {
            device_id: device.into(),
            user_id: None,
        },
        clock: pos_hub::domain::Clock {
            lamport: 0,
            device_id: device.into(),
        },
        payload: payload.as_object().cloned().unwrap_or_default(),
        force: false,
        seq: None,
        hub_time: None,
    }
}

fn chrono_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // RFC 3339 with milliseconds, computed without a date library: the hub keeps `at` as
    // sent and only checks its shape.
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(super) fn items(quantity: u64) -> Value {
    json!({"items": [{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": quantity}]})
}
