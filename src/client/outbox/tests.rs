//! The outbox over its file: a store of the sled era is moved over whole, a second opener
//! and a damaged file are refused by name.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::client::model::ReadModel;
use crate::domain::tests::ev;
use crate::domain::{Realm, RejectCode};

fn order_event(id: u128, order: &str, version: u64, quantity: i64) -> Event {
    let kind = if version == 1 {
        "order.created"
    } else {
        "order.updated"
    };
    let items = json!({"items": [{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": quantity}]});
    let mut event = ev(id, "order", order, version, kind, "till-1", items);
    event.actor.user_id = None;
    event.clock.lamport = version;
    event
}

/// Writes a device store as versions before this one did: a sled database at
/// `device.sled` with the keys of `super`, as the old `queue`, `answered` and `committed`
/// wrote them. Returns the committed layer it holds.
fn write_sled_era_store(dir: &Path, queued: &[Queued], dead: &[DeadLetter]) -> Layer {
    let mut model = ReadModel::new(Realm::new("t-demo", "s-001"), Layer::default());
    let mut changes = Changes::default();
    let mut created = order_event(1, "o-1", 1, 1);
    created.seq = Some(1);
    created.hub_time = Some(1_800_000_000_000);
    model
        .apply_committed(&created, &mut changes)
        .expect("applies");

    let db = sled::open(dir.join(SLED_DIR)).expect("opens sled");
    for entry in queued {
        let k = key(b'q', &entry.number.to_be_bytes());
        db.insert(k, serde_json::to_vec(entry).expect("json"))
            .expect("inserts");
    }
    for letter in dead {
        let k = key(b'x', &letter.number.to_be_bytes());
        db.insert(k, serde_json::to_vec(letter).expect("json"))
            .expect("inserts");
    }
    for order in &changes.orders {
        let v = bincode::serialize(&crate::domain::format1::Order1::from(order)).expect("bincode");
        db.insert(key(b'o', order.id.as_bytes()), v)
            .expect("inserts");
    }
    for (id, seq) in &changes.event_ids {
        db.insert(key(b'e', id.as_bytes()), &seq.to_be_bytes())
            .expect("inserts");
    }
    db.insert(CURSOR, &1u64.to_be_bytes()).expect("inserts");
    db.insert(LAMPORT, &9u64.to_be_bytes()).expect("inserts");
    db.insert(STORE_LAMPORT, &1u64.to_be_bytes())
        .expect("inserts");
    db.insert(NEXT, &4u64.to_be_bytes()).expect("inserts");
    db.flush().expect("flushes");
    // What the store holds once moved over: format 1 recorded no times.
    let mut committed = model.committed().clone();
    for order in committed.orders.values_mut() {
        order.created_ms = 0;
        order.head.hub_time_ms = 0;
    }
    committed
}

fn sled_era_entries() -> (Vec<Queued>, Vec<DeadLetter>) {
    let queued = vec![
        Queued {
            number: 2,
            event: order_event(2, "o-1", 2, 3),
            seq: None,
        },
        Queued {
            number: 3,
            event: order_event(3, "o-2", 1, 1),
            seq: Some(7),
        },
    ];
    let dead = vec![DeadLetter {
        number: 1,
        event: order_event(4, "o-3", 2, 1),
        code: RejectCode::StaleVersion.into(),
        message: "version 2 is stale".into(),
        lock_holder: None,
    }];
    (queued, dead)
}

#[test]
fn a_sled_era_store_is_moved_into_the_file_at_first_open_losing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (queued, dead) = sled_era_entries();
    let committed = write_sled_era_store(dir.path(), &queued, &dead);
    assert!(!committed.orders.is_empty() && !committed.event_ids.is_empty());

    let check = |loaded: &Loaded| {
        let got: Vec<Queued> = loaded.queued.values().cloned().collect();
        assert_eq!(got, queued, "every queued event, in order, with its seq");
        let got: Vec<DeadLetter> = loaded.dead.values().cloned().collect();
        assert_eq!(got, dead, "every dead letter");
        assert_eq!(loaded.committed, committed, "the committed layer");
        assert_eq!((loaded.lamport, loaded.next), (9, 4));
    };
    let (outbox, loaded) = Outbox::open(dir.path()).expect("opens and imports");
    check(&loaded);
    assert!(
        !dir.path().join(SLED_DIR).exists(),
        "the sled store is gone"
    );
    assert!(dir.path().join(FILE).is_file());
    // The imported store takes writes like any other.
    let extra = Queued {
        number: 4,
        event: order_event(5, "o-4", 1, 2),
        seq: None,
    };
    outbox
        .queue(std::slice::from_ref(&extra), 10, 5)
        .expect("queues");
    drop(outbox);

    let (outbox, loaded) = Outbox::open(dir.path()).expect("reopens");
    assert_eq!(loaded.queued.len(), 3);
    assert_eq!(loaded.queued[&4], extra);
    assert_eq!(loaded.dead.len(), 1);
    assert_eq!((loaded.lamport, loaded.next), (10, 5));
    // The aggregates were bincode (format 1): the first open wrote them back in this
    // format, with the marker, and they read the same.
    assert_eq!(
        loaded.committed, committed,
        "the committed layer, re-encoded"
    );
    let kv = outbox.kv();
    assert_eq!(kv.get(FORMAT), Some(&2u64.to_be_bytes()[..]));
    let order = committed.orders.values().next().expect("an order");
    let stored = kv
        .get(&key(b'o', order.id.as_bytes()))
        .expect("the order's value");
    assert_eq!(stored, crate::codec::to_vec(order).expect("encodes"));
}

#[test]
fn a_store_of_a_format_this_build_does_not_know_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outbox, _) = Outbox::open(dir.path()).expect("opens");
    let mut batch = Batch::default();
    batch.insert(FORMAT, 9u64.to_be_bytes());
    outbox.kv().apply(batch, true).expect("writes");
    drop(outbox);
    let err = Outbox::open(dir.path())
        .err()
        .expect("a store of format 9 is refused");
    let text = err.to_string();
    assert!(
        text.contains("format 9; this build reads format 2"),
        "{text}"
    );
}

#[test]
fn a_sled_store_left_beside_an_imported_file_is_removed_not_imported_again() {
    // An import interrupted after the new file got its name but before the sled dir was
    // removed: the file is the truth (it may have taken writes since), the sled dir a
    // leftover.
    let dir = tempfile::tempdir().expect("tempdir");
    let (queued, dead) = sled_era_entries();
    write_sled_era_store(dir.path(), &queued, &dead);
    let (outbox, _) = Outbox::open(dir.path()).expect("imports");
    outbox.resolve(1).expect("resolves the dead letter");
    drop(outbox);
    write_sled_era_store(dir.path(), &queued, &dead);

    let (_, loaded) = Outbox::open(dir.path()).expect("opens");
    assert!(loaded.dead.is_empty(), "the resolved letter stays resolved");
    assert_eq!(loaded.queued.len(), 2);
    assert!(
        !dir.path().join(SLED_DIR).exists(),
        "the leftover is removed"
    );
}

#[test]
fn a_sled_store_that_cannot_be_read_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled_dir = dir.path().join(SLED_DIR);
    std::fs::create_dir(&sled_dir).expect("mkdir");
    // sled's config file, damaged: sled refuses (or panics on) the store.
    std::fs::write(sled_dir.join("conf"), b"not sled's config").expect("writes");
    std::fs::write(sled_dir.join("db"), vec![0x5a; 4096]).expect("writes");
    let err = Outbox::open(dir.path()).err().expect("refused");
    assert!(matches!(err, OutboxError::Import { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&sled_dir.display().to_string()),
        "{err}"
    );
    assert!(sled_dir.join("db").exists(), "the old store is kept");
    assert!(!dir.path().join(FILE).exists(), "no half-made new store");
}

#[test]
fn a_second_opener_of_the_same_dir_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, _) = Outbox::open(dir.path()).expect("opens");
    let err = Outbox::open(dir.path()).err().expect("refused");
    assert!(matches!(err, OutboxError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(first);
    Outbox::open(dir.path()).expect("opens once the first is closed");
}

#[test]
fn a_damaged_store_is_refused_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outbox, _) = Outbox::open(dir.path()).expect("opens");
    let (queued, _) = sled_era_entries();
    outbox.queue(&queued[..1], 2, 3).expect("queues");
    let (damaged_at, _) = outbox.sizes();
    outbox.queue(&queued[1..], 3, 4).expect("queues");
    outbox.queue(&[], 4, 4).expect("queues");
    drop(outbox);
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).expect("reads");
    bytes[damaged_at as usize + 30] ^= 0x04;
    std::fs::write(&path, &bytes).expect("writes");

    let err = Outbox::open(dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err:?}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(&format!("byte {damaged_at}")), "{text}");
}

/// The sizes of the files under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("lists")
        .map(|entry| {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dir_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Queues events one at a time (each synced) and reopens the store: every one comes back,
/// in order. Also the measurement in docs/PERF.md, printed, never asserted: with
/// `POS_HUB_OUTBOX_TIMING_EVENTS=10000`,
/// `cargo test --locked -p pos-hub --lib client::outbox::tests::queueing -- --nocapture`
/// (`POS_HUB_OUTBOX_BENCH_DIR` measures on another disk than the temp dir's). CI runs it
/// with 500.
#[test]
fn queueing_events_one_at_a_time_reopens_them_all_and_prints_timings() {
    let events: u64 = std::env::var("POS_HUB_OUTBOX_TIMING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let base = std::env::var("POS_HUB_OUTBOX_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let (outbox, _) = Outbox::open(dir.path()).expect("opens");
    let started = std::time::Instant::now();
    for number in 1..=events {
        let entry = Queued {
            number,
            event: order_event(u128::from(number), &format!("o-{number}"), 1, 2),
            seq: None,
        };
        outbox.queue(&[entry], number, number + 1).expect("queues");
    }
    let queueing = started.elapsed();
    drop(outbox);
    let started = std::time::Instant::now();
    let (_, loaded) = Outbox::open(dir.path()).expect("reopens");
    let opening = started.elapsed();
    let numbers: Vec<u64> = loaded.queued.values().map(|q| q.number).collect();
    assert_eq!(
        numbers,
        (1..=events).collect::<Vec<_>>(),
        "every queued event, in order"
    );
    eprintln!(
        "queue {events} one at a time: {:.2} s ({:.0} µs each); open with {events} queued: {:.1} ms; dir {} bytes",
        queueing.as_secs_f64(),
        queueing.as_micros() as f64 / events as f64,
        opening.as_secs_f64() * 1000.0,
        dir_bytes(dir.path())
    );
}
