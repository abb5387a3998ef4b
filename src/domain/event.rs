//! The event envelope (spec §3 `EventBase`) as the domain sees it.
//!
//! An `Event` holds what the device sent, unvalidated: `apply` is the one place that
//! decides whether it is well formed, so that every node reaches the same verdict.
//! Its serde form is the spec's camelCase JSON; the wire and storage form is the
//! protobuf `pos.v1.Event` (see `crate::proto`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::rules::Rules;

/// A realm is the isolation boundary: one event log per `{tenantId, storeId}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Realm {
    pub tenant_id: String,
    pub store_id: String,
}

impl Realm {
    pub fn new(tenant_id: impl Into<String>, store_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            store_id: store_id.into(),
        }
    }
}

impl std::fmt::Display for Realm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.store_id)
    }
}

/// Who wrote the event: the device (always) and the signed-in user (when there is one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The writer's Lamport clock when it wrote the event; `(lamport, eventId)` orders forced
/// writes ("higher Lamport wins, then eventId").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clock {
    pub lamport: u64,
    pub device_id: String,
}

/// One event as a device sent it, plus the two fields the hub stamps once it is committed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// A UUID chosen by the device (v7 preferred); retrying with the same id is safe.
    pub event_id: String,
    pub tenant_id: String,
    pub store_id: String,
    /// `order`, `kds`, `bds`, `inventory` or `payment`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Monotonic per aggregate: 1 creates, then exactly current + 1.
    pub version: u64,
    /// E.g. `order.created`; must belong to `aggregate_type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The device's own ISO-8601 time. Kept as sent, never judged against the hub's clock:
    /// an offline till may queue events for days.
    pub at: String,
    pub actor: Actor,
    pub clock: Clock,
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// pos-hub extension: skip the lock and version checks; accepted only when this event's
    /// `(lamport, eventId)` is higher than the aggregate's last accepted one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Global position in the store's log, from 1; set by the hub when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Milliseconds since the Unix epoch, stamped once by the Raft leader for the whole
    /// entry that carried this event; the only clock `apply` ever uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_time: Option<u64>,
    /// The rules version that accepted the event, stamped with `seq`; `None` on an event
    /// not yet accepted, and on events accepted before versions were recorded (`V1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Rules>,
    /// Set only by a hub on what it streams to a kitchen or bar screen: the payload held
    /// payment details and was emptied (`redacted_payload`). Only a device's committed
    /// layer applies such an event (`State::follows_redacted`); a hub refuses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Event {
    pub fn realm(&self) -> Realm {
        Realm::new(self.tenant_id.clone(), self.store_id.clone())
    }
}
