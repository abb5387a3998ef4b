//! The deny-list of revoked devices, replicated through the log like everything else.
//!
//! `device.revoked` (aggregateType `device`, aggregateId = the device's id, payload
//! `{"reason"?: text}`) records that an admin revoked the device at the event's hub time.
//! Every hub then refuses that device's tokens issued up to that time (see
//! `auth::token::Standing`), its offline grace included; a token issued afterwards is the
//! device's new credential. So there is no `device.restored`: un-revoking would also
//! revive the stolen token the revocation was for, while issuing a new token restores the
//! device and nothing else.
//!
//! The rules take no prior state: any version ≥ 1 is accepted (like inventory, there is
//! nothing to conflict with), and a later revocation of the same device replaces the
//! earlier one, moving its time forward (hub times applied never go backwards). Only an
//! admin may write these events (`api::auth::check_device_events`); the domain decides
//! them the same for every writer, as replay must.

use serde::{Deserialize, Serialize};

use super::apply::Ctx;

/// `device.revoked`'s validated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Revoke {
    pub reason: Option<String>,
}

/// The deny-list entry of one device, as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// The revoked device.
    pub device_id: String,
    /// Hub time of the revocation, ms since the Unix epoch: tokens issued up to then are
    /// refused.
    pub revoked_at_ms: u64,
    /// Seq of the `device.revoked` event.
    pub seq: u64,
    /// The device (an admin's) that wrote the revocation.
    pub by: String,
    pub reason: Option<String>,
}

/// The deny-list entry `device.revoked` writes.
pub(crate) fn decide(revoke: Revoke, ctx: &Ctx) -> Revocation {
    Revocation {
        device_id: ctx.event.aggregate_id.clone(),
        revoked_at_ms: ctx.hub_time_ms,
        seq: ctx.seq,
        by: ctx.event.actor.device_id.clone(),
        reason: revoke.reason,
    }
}
