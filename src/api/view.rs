//! What a caller sees of the store, by its token's role: kitchen and bar screens get what
//! they cook from and not how guests paid; tills, managers, admins and tokenless (`--dev`)
//! callers see everything.
//!
//! - Orders (GetOrder, ListOrders) lose their `payments`.
//! - On Subscribe, an event whose payload carries payment details
//!   (`domain::kind::carries_payments`: `order.paid`) goes out as a redaction marker: the
//!   same event, seq, eventId, type, aggregate, version, clock, actor and times included,
//!   with `redacted` set and an empty payload. It is never left out: a missing seq would
//!   look like a gap to every client that checks one, and a device whose cursor cannot pass
//!   it would wait for it forever (or start over from seq 0). From the marker alone a
//!   screen's rules can still tell the order is paid (`OrderCommand::Paid(None)`).

use crate::auth::token::{Claims, Role};
use crate::domain::kind::carries_payments;
use crate::domain::order::Order;
use prost::Message;

use crate::proto::subscribe::EventFrames;
use crate::proto::{convert, pb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Everything, as committed.
    Full,
    /// Kitchen and bar screens: no payments.
    Kitchen,
}

impl View {
    /// The view of a caller with these claims (none: a node running without tokens).
    pub fn of(claims: Option<&Claims>) -> View {
        match claims.map(|c| c.role) {
            Some(Role::Kds | Role::Bds) => View::Kitchen,
            Some(Role::Till | Role::Manager | Role::Admin) | None => View::Full,
        }
    }

    pub fn order(self, order: Order) -> pb::Order {
        let mut order = convert::order(order);
        if self == View::Kitchen {
            order.payments.clear();
        }
        order
    }

    /// Turns committed events into what this view streams, in place. The full view leaves
    /// them as they are, without walking them.
    /// Whether this view would change any of `events` (`events` redacts them).
    pub fn changes_any(self, events: &[pb::Event]) -> bool {
        self == View::Kitchen
            && events
                .iter()
                .any(|e| carries_payments(&e.aggregate_type, &e.r#type))
    }

    pub fn events(self, events: &mut [pb::Event]) {
        if self == View::Full {
            return;
        }
        for event in events {
            if carries_payments(&event.aggregate_type, &event.r#type) {
                redact(event);
            }
        }
    }
}

/// The redaction marker of `event`: its payload emptied and `redacted` set; every other
/// field as it was.
/// The two fields of a stored event that say whether it carries payment details, decoded
/// without the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct EventKind {
    #[prost(string, tag = "4")]
    aggregate_type: String,
    #[prost(string, tag = "7")]
    r#type: String,
}

impl View {
    /// Adds an event, given as stored (its protobuf encoding), to `frames` in this view:
    /// as it is, unless this view redacts it. Only a redacted event is decoded.
    pub fn frame(self, encoded: &[u8], frames: &mut EventFrames) -> Result<(), prost::DecodeError> {
        if self == View::Kitchen {
            let kind = EventKind::decode(encoded)?;
            if carries_payments(&kind.aggregate_type, &kind.r#type) {
                let mut event = pb::Event::decode(encoded)?;
                redact(&mut event);
                frames.push(&event);
                return Ok(());
            }
        }
        frames.push_encoded(encoded);
        Ok(())
    }
}

fn redact(event: &mut pb::Event) {
    event.payload = Some(prost_types::Struct::default());
    event.redacted = true;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::tests::{create_o1, ev, paid_in_cash};

    fn claims(role: Role) -> Claims {
        Claims {
            aud: "pos-hub".into(),
            sub: "device-1".into(),
            tenant_id: "t-demo".into(),
            store_id: "s-001".into(),
            role,
            exp: 2,
            nbf: 1,
            iat: 1,
        }
    }

    fn committed(event: crate::domain::Event, seq: u64) -> pb::Event {
        let mut event = convert::event_to_pb(&event).expect("converts");
        event.seq = seq;
        event.hub_time = 1_000 + seq;
        event.rules = 2;
        event
    }

    /// Every payment-carrying type there is, each with a payload full of payment details.
    fn payment_events() -> Vec<pb::Event> {
        let mut paid = paid_in_cash(2, 2);
        paid.payload = json!({
            "payments": [{ "method": "card", "amount": 2500 }],
            "total": 2500,
            "currency": "USD",
        })
        .as_object()
        .cloned()
        .expect("an object");
        // `payment` has no event types yet; anything of it would carry payments.
        let reserved = ev(
            3,
            "payment",
            "p-1",
            1,
            "payment.captured",
            "till-1",
            json!({ "amount": 2500, "method": "card" }),
        );
        vec![committed(paid, 2), committed(reserved, 3)]
    }

    #[test]
    fn kitchen_and_bar_roles_get_the_kitchen_view_and_everyone_else_the_full_one() {
        assert_eq!(View::of(Some(&claims(Role::Kds))), View::Kitchen);
        assert_eq!(View::of(Some(&claims(Role::Bds))), View::Kitchen);
        assert_eq!(View::of(Some(&claims(Role::Till))), View::Full);
        assert_eq!(View::of(Some(&claims(Role::Manager))), View::Full);
        assert_eq!(View::of(Some(&claims(Role::Admin))), View::Full);
        assert_eq!(View::of(None), View::Full);
    }

    #[test]
    fn each_payment_carrying_type_becomes_a_marker_that_keeps_everything_but_the_payload() {
        let originals = payment_events();
        let mut kitchen = originals.clone();
        View::Kitchen.events(&mut kitchen);
        for (original, marker) in originals.iter().zip(&kitchen) {
            let what = &original.r#type;
            assert!(marker.redacted, "{what}: marked");
            assert_eq!(
                marker.payload,
                Some(prost_types::Struct::default()),
                "{what}: the payload is emptied"
            );
            let mut rest = marker.clone();
            rest.redacted = false;
            rest.payload = original.payload.clone();
            assert_eq!(&rest, original, "{what}: every other field as committed");
            assert!(
                original
                    .payload
                    .as_ref()
                    .is_some_and(|p| !p.fields.is_empty()),
                "{what}: the original had payment details to remove"
            );
        }
    }

    #[test]
    fn events_without_payments_and_the_full_view_are_left_as_committed() {
        let others = vec![
            committed(create_o1(1), 1),
            committed(
                ev(
                    4,
                    "kds",
                    "k-1",
                    1,
                    "kds.ticket.created",
                    "till-1",
                    json!({ "orderId": "o-1", "items": [{ "sku": "FRIES", "quantity": 1 }] }),
                ),
                4,
            ),
        ];
        let mut kitchen = others.clone();
        View::Kitchen.events(&mut kitchen);
        assert_eq!(kitchen, others, "nothing to redact");
        assert!(!View::Kitchen.changes_any(&others));

        assert!(View::Kitchen.changes_any(&payment_events()[1..]));
        assert!(!View::Full.changes_any(&payment_events()));

        let payments = payment_events();
        let mut full = payments.clone();
        View::Full.events(&mut full);
        assert_eq!(full, payments, "tills and managers see payments");
    }

    #[test]
    fn framing_stored_events_gives_each_view_what_it_gives_decoded_ones() {
        let mut events = payment_events();
        events.insert(1, committed(create_o1(1), 1));
        for view in [View::Full, View::Kitchen] {
            let mut frames = EventFrames::default();
            for event in &events {
                view.frame(&event.encode_to_vec(), &mut frames)
                    .expect("a stored event frames");
            }
            let sent = pb::SubscribeResponse::encoded(frames).encode_to_vec();
            let received = pb::SubscribeResponse::decode(sent.as_slice()).expect("decodes");
            let mut expected = events.clone();
            view.events(&mut expected);
            assert_eq!(received.events, expected, "{view:?}");
        }
        assert!(
            View::Kitchen
                .frame(b"\x22\x05or", &mut EventFrames::default())
                .is_err(),
            "a damaged stored event is an error, not a blank one"
        );
    }

    #[test]
    fn the_kitchen_view_of_an_order_has_no_payments() {
        let mut state = crate::domain::MemState::new(crate::domain::Realm::new("t-demo", "s-001"));
        state.apply(&create_o1(1), 1);
        state.apply(&paid_in_cash(2, 2), 2);
        let order = state.orders.get("o-1").cloned().expect("the order");
        assert_eq!(order.payments.len(), 1, "paid in cash");
        assert_eq!(View::Full.order(order.clone()).payments.len(), 1);
        let kitchen = View::Kitchen.order(order);
        assert!(kitchen.payments.is_empty());
        assert_eq!(kitchen.status, pb::OrderStatus::Paid as i32);
    }
}
