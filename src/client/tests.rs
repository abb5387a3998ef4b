//! The SDK without a hub: the read model's layers, the outbox's persistence, and what
//! `append` refuses. The networked behaviour is tested against real groups in
//! `tests/device.rs`, `tests/device_kill.rs` and `tests/discovery.rs`.

use serde_json::json;

use super::model::{Changes, Layer, ReadModel};
use super::outbox::{DeadLetter, Outbox, Queued};
use super::{ClientError, Device, DeviceConfig, Draft, HubConfig};
use crate::domain::tests::ev;
use crate::domain::{Event, Outcome, Realm, RejectCode};

fn realm() -> Realm {
    Realm::new("t-demo", "s-001")
}

/// Event `id` on `order` by till-1, its Lamport time its version.
fn event(
    id: u128,
    order: &str,
    version: u64,
    event_type: &str,
    payload: serde_json::Value,
) -> Event {
    let mut event = ev(id, "order", order, version, event_type, "till-1", payload);
    event.actor.user_id = None;
    event.clock.lamport = version;
    event
}

fn items(quantity: i64) -> serde_json::Value {
    json!({"items": [{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": quantity}]})
}

/// As the hub streams it: with its seq and hub time.
fn committed(mut e: Event, seq: u64) -> Event {
    e.seq = Some(seq);
    e.hub_time = Some(1_800_000_000_000);
    e
}

#[test]
fn queued_edits_sit_on_top_of_the_committed_state_and_vanish_when_the_hub_decides_otherwise() {
    let mut model = ReadModel::new(realm(), Layer::default());
    let mut changes = Changes::default();
    let created = event(1, "o-1", 1, "order.created", items(1));
    model
        .apply_committed(&committed(created, 1), &mut changes)
        .expect("applies");
    assert_eq!(changes.orders.len(), 1);
    assert_eq!(changes.event_ids.len(), 1);

    // The device's own edit, v2: optimistic view.
    let mine = event(2, "o-1", 2, "order.updated", items(5));
    model.rebuild([&mine], 0);
    assert_eq!(model.order("o-1").map(|o| o.total), Some(5 * 350));
    assert_eq!(
        model.committed().orders["o-1"].total,
        350,
        "committed is untouched"
    );

    // Another device's v2 commits first: the replay rejects the device's edit, the view
    // shows the committed truth.
    let theirs = event(3, "o-1", 2, "order.updated", items(2));
    model
        .apply_committed(&committed(theirs, 2), &mut Changes::default())
        .expect("applies");
    assert!(model.is_stale());
    model.rebuild([&mine], 0);
    assert_eq!(model.order("o-1").map(|o| o.total), Some(2 * 350));
    assert_eq!(model.order("o-1").map(|o| o.head.version), Some(2));
}

#[test]
fn an_event_stamped_past_the_clock_hello_reported_passes_the_devices_own_check() {
    // The device has had Hello (the store's clock at 1,800,000) but not yet the events
    // that carry that clock: its committed copy is still at 0.
    let mut model = ReadModel::new(realm(), Layer::default());
    let mut stamped = event(1, "o-1", 1, "order.created", items(1));
    stamped.clock.lamport = 1_800_001;
    match model.apply_local(&stamped, 0) {
        Outcome::Rejected { code, .. } => assert_eq!(code, RejectCode::ClockOutOfRange),
        other => panic!("without the reported clock the check refuses it: {other:?}"),
    }
    model.observe_hub_clock(1_800_000);
    model.rebuild_needed();
    model.rebuild([], 0);
    assert!(
        matches!(model.apply_local(&stamped, 0), Outcome::Accepted { .. }),
        "checked against the clock the stamp came from"
    );
    assert_eq!(model.order("o-1").map(|o| o.head.version), Some(1));
}

#[test]
fn a_committed_event_that_does_not_continue_the_copy_is_reported() {
    let mut model = ReadModel::new(realm(), Layer::default());
    let gap = committed(event(1, "o-1", 1, "order.created", items(1)), 2);
    let err = model
        .apply_committed(&gap, &mut Changes::default())
        .expect_err("seq 2 after nothing");
    assert!(err.to_string().contains("expected seq 1"), "{err}");
    // An event the device's rules reject cannot be committed either.
    let stale = committed(event(1, "o-1", 3, "order.updated", items(1)), 1);
    let err = model
        .apply_committed(&stale, &mut Changes::default())
        .expect_err("an update of a missing order");
    assert!(err.to_string().contains("Rejected"), "{err}");
    assert_eq!(model.cursor(), 0, "nothing was applied");
}

#[test]
fn the_outbox_keeps_queued_answered_dead_and_committed_state_across_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = event(1, "o-1", 1, "order.created", items(1));
    let second = event(2, "o-1", 2, "order.updated", items(3));
    let mut model = ReadModel::new(realm(), Layer::default());
    {
        let (outbox, loaded) = Outbox::open(dir.path()).expect("opens");
        assert!(loaded.queued.is_empty() && loaded.dead.is_empty());
        assert_eq!(
            (loaded.lamport, loaded.next, loaded.committed.last_seq),
            (0, 1, 0)
        );
        let q1 = Queued {
            number: 1,
            event: first.clone(),
            seq: None,
        };
        let q2 = Queued {
            number: 2,
            event: second.clone(),
            seq: None,
        };
        outbox
            .queue(&[q1.clone(), q2.clone()], 7, 3)
            .expect("queues");
        // The first is answered, the second refused.
        let letter = DeadLetter {
            number: 2,
            event: second.clone(),
            code: RejectCode::StaleVersion.into(),
            message: "version 2 is stale".into(),
            lock_holder: None,
        };
        outbox
            .answered(&[Queued { seq: Some(1), ..q1 }], &[letter])
            .expect("records answers");
        let mut changes = Changes::default();
        model
            .apply_committed(&committed(first.clone(), 1), &mut changes)
            .expect("applies");
        outbox.committed(&changes, 1, 7, &[]).expect("records");
        outbox.flush().expect("flushes");
    }
    let (outbox, loaded) = Outbox::open(dir.path()).expect("reopens");
    assert_eq!((loaded.lamport, loaded.next), (7, 3));
    assert_eq!(loaded.queued.len(), 1);
    assert_eq!(loaded.queued[&1].seq, Some(1));
    assert_eq!(loaded.queued[&1].event, first);
    assert_eq!(loaded.dead.len(), 1);
    assert_eq!(loaded.dead[&2].code, RejectCode::StaleVersion);
    assert_eq!(
        &loaded.committed,
        model.committed(),
        "the committed layer comes back whole"
    );

    // Settling the answered entry and resolving the dead letter remove them for good.
    outbox
        .committed(&Changes::default(), 1, 7, &[1])
        .expect("settles");
    assert!(outbox.resolve(2).expect("resolves"));
    assert!(!outbox.resolve(2).expect("resolves again"), "only once");
    outbox.reset_committed().expect("resets");
    drop(outbox);
    let (_, loaded) = Outbox::open(dir.path()).expect("reopens");
    assert!(loaded.queued.is_empty() && loaded.dead.is_empty());
    assert_eq!(loaded.committed, Layer::default());
}

/// A device's committed copy follows rules V3 as the hub does: a paid order leaves it
/// `CLOSED_KEPT_EVENTS` events later, and the device dir forgets it too.
#[test]
fn a_paid_order_leaves_the_devices_copy_and_its_dir_when_the_hub_lets_it_go() {
    use crate::domain::Rules;
    use crate::domain::rules::CLOSED_KEPT_EVENTS;
    let stamped = |mut e: Event, seq: u64| {
        e.rules = Some(Rules::V3);
        committed(e, seq)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (outbox, _) = Outbox::open(dir.path()).expect("opens");
    let mut model = ReadModel::new(realm(), Layer::default());
    let paid = json!({ "payments": [{ "method": "cash", "amount": 350 }] });
    let mut flow = vec![
        event(1, "o-1", 1, "order.created", items(1)),
        event(2, "o-1", 2, "order.paid", paid),
        event(3, "o-2", 1, "order.created", items(2)),
    ];
    flow.extend((0..CLOSED_KEPT_EVENTS - 1).map(|i| {
        let n = 100 + u128::from(i);
        ev(
            n,
            "inventory",
            "FRIES",
            1,
            "inventory.adjusted",
            "till-2",
            json!({ "sku": "FRIES", "delta": 1 }),
        )
    }));
    let mut changes = Changes::default();
    for (seq, e) in (1..).zip(flow) {
        model
            .apply_committed(&stamped(e, seq), &mut changes)
            .expect("applies");
    }
    let last = model.cursor();
    assert_eq!(last, CLOSED_KEPT_EVENTS + 2, "o-1 was paid at seq 2");
    assert_eq!(changes.expired_orders, ["o-1"]);
    assert!(
        changes.orders.iter().all(|o| o.id != "o-1"),
        "nothing left to write for it"
    );
    assert!(!model.committed().orders.contains_key("o-1"));
    assert!(model.committed().orders.contains_key("o-2"), "open: stays");
    outbox.committed(&changes, last, 1, &[]).expect("records");
    outbox.flush().expect("flushes");
    drop(outbox);
    let (_, loaded) = Outbox::open(dir.path()).expect("reopens");
    assert_eq!(&loaded.committed, model.committed());
}

fn offline_config(dir: &std::path::Path, device_id: &str) -> DeviceConfig {
    DeviceConfig {
        data_dir: dir.to_path_buf(),
        device_id: device_id.into(),
        user_id: Some("u-anna".into()),
        hub: HubConfig::new(Vec::new(), realm()),
    }
}

fn offline_device(dir: &std::path::Path) -> Device {
    Device::open(offline_config(dir, "till-1")).expect("opens the device")
}

#[test]
fn append_refuses_what_the_devices_view_refuses_and_queues_nothing_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = offline_device(dir.path());
    let cases = [
        (
            Draft::order("o-1", "order.shipped", json!({})),
            RejectCode::UnknownEventType,
        ),
        (
            Draft::order("o-1", "order.updated", items(1)),
            RejectCode::AggregateNotFound,
        ),
        (
            Draft::order("o-1", "order.created", json!({"items": "many"})),
            RejectCode::MalformedPayload,
        ),
        (
            Draft::new("menu", "m-1", "menu.changed", json!({})),
            RejectCode::UnknownAggregateType,
        ),
        (
            Draft::order("", "order.created", json!({"items": []})),
            RejectCode::MalformedEvent,
        ),
    ];
    for (draft, code) in cases {
        match device.append(draft.clone()) {
            Err(ClientError::Refused {
                code: got, message, ..
            }) => {
                assert_eq!(got, code, "{draft:?}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{draft:?}: {other:?}"),
        }
    }
    assert!(device.queued().is_empty(), "nothing refused was queued");

    // A batch with one bad draft queues none of it.
    let batch = vec![
        Draft::order("o-2", "order.created", json!({"items": []})),
        Draft::order(
            "o-2",
            "order.paid",
            json!({"payments": [{"method": "cash", "amount": 999}], "total": 999}),
        ),
    ];
    assert!(matches!(
        device.append_all(batch),
        Err(ClientError::Refused { code, .. }) if code == RejectCode::PaymentMismatch
    ));
    assert!(device.queued().is_empty());
    assert!(
        device.order("o-2").is_none(),
        "the view shows none of the refused batch"
    );
}

#[test]
fn appends_are_durable_stamped_and_numbered_and_the_clock_only_moves_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = {
        let device = offline_device(dir.path());
        let a = device
            .append(Draft::order("o-1", "order.created", json!({"items": []})))
            .expect("queues");
        let b = device
            .append(Draft::order("o-1", "order.updated", items(2)))
            .expect("queues");
        assert_eq!((a.version, b.version), (1, 2), "versions follow the view");
        assert!(b.lamport > a.lamport);
        let queued = device.queued();
        assert_eq!(queued.len(), 2);
        let e = &queued[1].event;
        assert_eq!(e.actor.device_id, "till-1");
        assert_eq!(e.actor.user_id.as_deref(), Some("u-anna"));
        assert_eq!(e.clock.device_id, "till-1");
        assert_eq!(
            (e.tenant_id.as_str(), e.store_id.as_str()),
            ("t-demo", "s-001")
        );
        assert!(uuid::Uuid::parse_str(&e.event_id).is_ok());
        b
    };
    // Reopened (a restart): the queue, the view and the clock are back.
    let device = offline_device(dir.path());
    assert_eq!(device.queued().len(), 2);
    assert_eq!(device.order("o-1").map(|o| o.total), Some(700));
    let c = device
        .append(Draft::order("o-1", "order.parked", json!({})))
        .expect("queues");
    assert_eq!(c.number, first.number + 1);
    assert_eq!(c.version, 3);
    assert!(c.lamport > first.lamport, "the clock survived the restart");
    assert_eq!(device.progress().borrow().unsent, 3);
}

#[test]
fn a_device_needs_an_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Device::open(offline_config(dir.path(), " "))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("device id is empty"), "{err}");
}

/// A kitchen screen's stream: `order.paid` arrives as the hub's redaction marker (payload
/// emptied, `redacted` set, seq kept).
fn redacted(mut e: Event) -> Event {
    e.payload = serde_json::Map::new();
    e.redacted = true;
    e
}

#[test]
fn a_kitchen_screen_follows_a_redacted_payment_to_a_paid_order_without_payments() {
    let created = committed(event(1, "o-1", 1, "order.created", items(2)), 1);
    let locked = committed(event(2, "o-1", 2, "order.locked", json!({})), 2);
    let paid = committed(
        event(
            3,
            "o-1",
            3,
            "order.paid",
            json!({ "payments": [{ "method": "card", "amount": 700 }], "total": 700 }),
        ),
        3,
    );
    let mut ticket = ev(
        4,
        "kds",
        "k-1",
        1,
        "kds.ticket.created",
        "till-1",
        json!({ "orderId": "o-1", "items": [{ "name": "Fries", "quantity": 2 }] }),
    );
    ticket.clock.lamport = 4;
    let ticket = committed(ticket, 4);

    // A till follows the full stream: the reference.
    let mut till = ReadModel::new(realm(), Layer::default());
    for e in [&created, &locked, &paid, &ticket] {
        till.apply_committed(e, &mut Changes::default())
            .expect("the till applies");
    }
    // The kitchen follows the same seqs, order.paid as a marker, never starting over.
    let mut kitchen = ReadModel::new(realm(), Layer::default());
    let mut changes = Changes::default();
    for e in [&created, &locked, &redacted(paid.clone()), &ticket] {
        kitchen
            .apply_committed(e, &mut changes)
            .expect("the kitchen applies the marker like any committed event");
    }
    assert_eq!(kitchen.cursor(), 4, "the cursor moved past the marker");
    assert_eq!(
        changes
            .event_ids
            .iter()
            .map(|(_, seq)| *seq)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "every seq recorded, the marker's included"
    );
    let order = &kitchen.committed().orders["o-1"];
    assert_eq!(order.status, crate::domain::order::OrderStatus::Paid);
    assert!(order.payments.is_empty(), "no payments reach the kitchen");
    assert_eq!(order.lock, None, "paying released the lock");
    let mut expected = till.committed().orders["o-1"].clone();
    assert_eq!(expected.payments.len(), 1, "the till has the card payment");
    expected.payments.clear();
    assert_eq!(order, &expected, "the till's order, payments aside");
    assert_eq!(
        kitchen.committed().lamport,
        till.committed().lamport,
        "the clock followed the marker"
    );
}

#[test]
fn a_marker_is_never_an_edit_and_a_bad_one_is_reported() {
    let created = committed(event(1, "o-1", 1, "order.created", items(2)), 1);
    let mut model = ReadModel::new(realm(), Layer::default());
    model
        .apply_committed(&created, &mut Changes::default())
        .expect("applies");

    // As the device's own queued edit (the overlay), a marker is refused as a hub would.
    let marker = redacted(event(2, "o-1", 2, "order.paid", json!({})));
    match model.apply_local(&marker, 0) {
        crate::domain::Outcome::Rejected { code, message, .. } => {
            assert_eq!(code, RejectCode::MalformedEvent, "{message}");
            assert!(message.contains("marked redacted"), "{message}");
        }
        other => panic!("a queued marker must be refused, got {other:?}"),
    }

    // A marker that still has a payload, or on a type without payments, is not what a hub
    // sends: reported as not following the copy, and nothing applied.
    let mut leaky = committed(marker.clone(), 2);
    leaky.payload.insert("total".into(), json!(700));
    let err = model
        .apply_committed(&leaky, &mut Changes::default())
        .expect_err("a redacted payload must be empty");
    assert!(err.to_string().contains("empty payload"), "{err}");
    let not_payment = committed(redacted(event(2, "o-1", 2, "order.parked", json!({}))), 2);
    let err = model
        .apply_committed(&not_payment, &mut Changes::default())
        .expect_err("order.parked is never redacted");
    assert!(err.to_string().contains("no hub redacts it"), "{err}");
    assert_eq!(model.cursor(), 1, "nothing was applied");
}
