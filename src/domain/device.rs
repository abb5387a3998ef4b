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
//! admin may write these events (`api::auth::check_admin_events`); the domain decides
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::domain::outcome::Outcome;
    use crate::domain::rules::Rules;
    use crate::domain::state::MemState;
    use crate::domain::tests::ev;
    use crate::domain::{Realm, RejectCode};

    const T0: u64 = 1_700_000_000_000;

    fn revoke(n: u128, device: &str, payload: serde_json::Value) -> crate::domain::Event {
        ev(
            n,
            "device",
            device,
            1,
            "device.revoked",
            "operator",
            payload,
        )
    }

    /// The code and message of a rejection.
    fn refused(outcome: &Outcome) -> (RejectCode, &str) {
        match outcome {
            Outcome::Rejected { code, message, .. } => (*code, message.as_str()),
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn a_revocation_puts_the_device_on_the_deny_list_at_its_hub_time() {
        let mut state = MemState::new(Realm::new("t-demo", "s-001"));
        let outcome = state.apply(&revoke(1, "till-1", json!({"reason": "stolen"})), T0);
        assert_eq!(outcome, Outcome::Accepted { seq: 1 });
        assert_eq!(
            state.revoked.get("till-1"),
            Some(&super::Revocation {
                device_id: "till-1".into(),
                revoked_at_ms: T0,
                seq: 1,
                by: "operator".into(),
                reason: Some("stolen".into()),
            })
        );
        // Revoked again later (the device was re-admitted and lost again): the time moves.
        let again = state.apply(&revoke(2, "till-1", json!({})), T0 + 5_000);
        assert_eq!(again, Outcome::Accepted { seq: 2 });
        let entry = &state.revoked["till-1"];
        assert_eq!(
            (entry.revoked_at_ms, entry.seq, entry.reason.clone()),
            (T0 + 5_000, 2, None)
        );
        assert_eq!(state.revoked.len(), 1);
    }

    #[test]
    fn under_v1_the_device_aggregate_stays_unknown() {
        let mut state = MemState::new(Realm::new("t-demo", "s-001"));
        let outcome = state.apply_under(&revoke(1, "till-1", json!({})), T0, Rules::V1);
        let (code, message) = refused(&outcome);
        assert_eq!(code, RejectCode::UnknownAggregateType, "{message}");
        assert!(
            message.contains("known: order, kds, bds, inventory, payment")
                && !message.ends_with("device"),
            "{message}"
        );
        assert!(state.revoked.is_empty() && state.events.is_empty());
    }

    #[test]
    fn a_bad_revocation_is_refused_naming_the_field_and_changes_nothing() {
        let mut state = MemState::new(Realm::new("t-demo", "s-001"));
        for (n, payload, field) in [
            (1, json!({"reason": 7}), "reason"),
            (2, json!({"reason": "x".repeat(257)}), "reason"),
            (3, json!({"until": "forever"}), "until"),
        ] {
            let outcome = state.apply(&revoke(n, "till-1", payload), T0);
            let (code, message) = refused(&outcome);
            assert_eq!(code, RejectCode::MalformedPayload, "{message}");
            assert!(message.contains(field), "{message}");
        }
        let unknown_type = ev(
            4,
            "device",
            "till-1",
            1,
            "device.restored",
            "operator",
            json!({}),
        );
        let outcome = state.apply(&unknown_type, T0);
        assert_eq!(refused(&outcome).0, RejectCode::UnknownEventType);
        assert!(state.revoked.is_empty() && state.events.is_empty());
    }
}
