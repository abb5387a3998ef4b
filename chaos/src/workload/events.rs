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
        // The run's clock: in a soak, as fast as the nodes'.
        event_id: crate::soak::event_id(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate.into(),
        version,
        event_type: event_type.into(),
        at: pos_hub::clock::rfc3339_at(crate::soak::now_ms()),
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
        rules: None,
        redacted: false,
    }
}

pub(super) fn items(quantity: u64) -> Value {
    json!({"items": [{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": quantity}]})
}
