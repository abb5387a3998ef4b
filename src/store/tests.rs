//! The store under openraft's own storage suite, then our own checks of what the suite does
//! not cover: applying real events, snapshots of them, restarts, corruption, realms.

// openraft's suite returns its (large) `StorageError`; boxing it in tests would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::path::Path;

use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
use prost::Message;
use tempfile::TempDir;

use super::*;
use crate::domain::{Event, Outcome, Realm, RejectCode, Rules};
use crate::proto::{convert, pb};
use crate::raft_types::{Command, Response, TypeConfig};
use crate::raft_types::{Entry, Snapshot, StorageError};

fn realm() -> Realm {
    Realm::new("t-demo", "s-001")
}

/// Builds a store in a fresh temporary directory, removed when the guard drops.
struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| storage_error_of(StoreError::io(Path::new("tempdir"), e)))?;
        let (log, sm) = open(dir.path(), &realm()).await.map_err(storage_error_of)?;
        Ok((dir, log, sm))
    }
}

/// Another store's history as the source an install fetches the events it lacks from (a
/// peer does it in a group, `raft::history`); small pages, so that installs take several.
struct ReaderSource(StateReader);

impl HistorySource for ReaderSource {
    fn fetch<'a>(
        &'a self,
        _membership: &'a crate::raft_types::StoredMembership,
        after: u64,
        upto: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let records = self
                .0
                .history_records(after, upto, 64 << 10)
                .map_err(|e| e.to_string())?;
            if records.is_empty() {
                return Err(format!("no event after seq {after}"));
            }
            Ok(records)
        })
    }
}

/// Lets `target` fetch the history it lacks from `source`'s.
fn fed_by(target: &mut StateMachine, source: &StateMachine) {
    target.set_history_source(std::sync::Arc::new(ReaderSource(source.reader())));
}

/// A store on a fresh temporary directory (removed when the guard drops).
async fn fresh() -> (TempDir, LogStore, StateMachine) {
    TempStore.build().await.expect("opens a fresh store")
}

/// The current snapshot of a state machine that has one.
async fn current_snapshot(sm: &mut StateMachine) -> Snapshot {
    sm.get_current_snapshot()
        .await
        .expect("reads")
        .expect("has one")
}

fn storage_error_of(err: StoreError) -> StorageError {
    storage_error(
        openraft::ErrorVerb::Write,
        openraft::ErrorSubject::Store,
        &err,
    )
}

type StoreSuite = Suite<TypeConfig, LogStore, StateMachine, TempStore, TempDir>;

/// One `#[test]` per case of openraft's storage suite, so each shows by name.
macro_rules! openraft_suite {
    ($($case:ident),* $(,)?) => {
        mod openraft_suite {
            use super::*;
            $(
                #[test]
                fn $case() -> Result<(), StorageError> {
                    let runtime = tokio::runtime::Runtime::new().map_err(|e| storage_error_of(StoreError::io(Path::new("runtime"), e)))?;
                    runtime.block_on(async {
                        let (_dir, log, sm) = TempStore.build().await?;
                        StoreSuite::$case(log, sm).await
                    })
                }
            )*

            #[test]
            fn transfer_snapshot() -> Result<(), StorageError> {
                let runtime = tokio::runtime::Runtime::new().map_err(|e| storage_error_of(StoreError::io(Path::new("runtime"), e)))?;
                runtime.block_on(StoreSuite::transfer_snapshot(&TempStore))
            }
        }
    };
}

openraft_suite!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

// ---- our own checks ----

const ORDER_FLOW: &str = include_str!("../../examples/order-flow.jsonl");

fn example_events() -> Vec<pb::Event> {
    ORDER_FLOW
        .lines()
        .map(|line| {
            let event: Event = serde_json::from_str(line).expect("example line is an event");
            convert::event_to_pb(&event).expect("example converts")
        })
        .collect()
}

/// `count` inventory adjustments from three devices over two SKUs.
fn adjustments(count: u64) -> Vec<pb::Event> {
    (0..count)
        .map(|i| {
            let sku = if i % 2 == 0 { "FRIES" } else { "LEMONADE" };
            let device = format!("till-{}", i % 3);
            let line = serde_json::json!({
                "eventId": uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)).to_string(),
                "tenantId": "t-demo", "storeId": "s-001",
                "aggregateType": "inventory", "aggregateId": sku, "version": 1,
                "type": "inventory.adjusted", "at": "2026-11-24T12:00:00Z",
                "actor": { "deviceId": device }, "clock": { "lamport": i + 1, "deviceId": device },
                "payload": { "sku": sku, "delta": if i % 5 == 0 { -1 } else { 2 } }
            });
            let event: Event = serde_json::from_value(line).expect("an event");
            convert::event_to_pb(&event).expect("converts")
        })
        .collect()
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

fn command_entry(index: u64, hub_time_ms: u64, events: Vec<pb::Event>) -> Entry {
    entry(
        index,
        EntryPayload::Normal(Command {
            hub_time_ms,
            rules: Rules::CURRENT,
            events,
        }),
    )
}

fn membership_entry(index: u64) -> Entry {
    entry(
        index,
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], None)),
    )
}

/// Applies `events` in entries of `per_entry`, starting at log index `first_index`;
/// returns every outcome and the next free index.
async fn apply_events(
    sm: &mut StateMachine,
    events: Vec<pb::Event>,
    per_entry: usize,
    first_index: u64,
) -> (Vec<Outcome>, u64) {
    let mut index = first_index;
    let mut outcomes = Vec::new();
    for chunk in events.chunks(per_entry) {
        let replies: Vec<Response> = sm
            .apply([command_entry(
                index,
                1_764_000_000_000 + index,
                chunk.to_vec(),
            )])
            .await
            .expect("applies");
        outcomes.extend(replies.into_iter().flat_map(|r| r.outcomes));
        index += 1;
    }
    (outcomes, index)
}

/// Everything a reader can see, for comparing two state machines.
/// What `contents` reads.
type Contents = (
    Vec<pb::Event>,
    Vec<crate::domain::order::Order>,
    Vec<crate::domain::inventory::Stock>,
    u64,
);

fn contents(reader: &StateReader) -> Contents {
    let events = reader
        .events_after(0, usize::MAX, usize::MAX)
        .expect("events");
    (
        events,
        reader.orders().expect("orders"),
        reader.stocks().expect("stocks"),
        reader.applied().expect("applied").last_seq,
    )
}

/// `contents` with the orders' times as data format 1 left them: not recorded (0).
fn times_unrecorded(mut contents: Contents) -> Contents {
    for order in &mut contents.1 {
        order.created_ms = 0;
        order.head.hub_time_ms = 0;
    }
    contents
}

#[tokio::test]
async fn applying_the_example_flow_assigns_seqs_and_builds_read_models() {
    let (_dir, _log, mut sm) = fresh().await;
    let (outcomes, next) = apply_events(&mut sm, example_events(), 4, 1).await;
    let expected: Vec<Outcome> = (1..=15).map(|seq| Outcome::Accepted { seq }).collect();
    assert_eq!(outcomes, expected);

    let reader = sm.reader();
    let order = reader
        .order("o-1001")
        .expect("reads")
        .expect("order exists");
    assert_eq!(order.status, crate::domain::order::OrderStatus::Paid);
    assert_eq!(order.total, 3750);
    assert_eq!(
        reader
            .stock("BURGER-CLASSIC")
            .expect("reads")
            .expect("stock exists")
            .total(),
        22
    );
    let events = reader.events_after(0, 100, usize::MAX).expect("events");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    assert!(
        events.iter().all(|e| e.hub_time >= 1_764_000_000_000),
        "every event carries its hub time"
    );
    // Pages bounded in bytes: the event that reaches the bound is the last, and the first
    // always comes.
    let one = reader.events_after(0, 100, 1).expect("events");
    assert_eq!(one.len(), 1);
    let two_bytes = events[0].encoded_len() + events[1].encoded_len();
    let two = reader.events_after(0, 100, two_bytes).expect("events");
    assert_eq!(two.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);

    // The same events again, in one entry: all duplicates with their first seq, nothing new.
    let before = contents(&reader);
    let (again, _) = apply_events(&mut sm, example_events(), 15, next).await;
    let expected: Vec<Outcome> = (1..=15).map(|seq| Outcome::Duplicate { seq }).collect();
    assert_eq!(again, expected);
    assert_eq!(contents(&reader), before);
}

#[tokio::test]
async fn a_later_event_in_the_same_entry_sees_the_earlier_ones() {
    let (_dir, _log, mut sm) = fresh().await;
    let mut events = example_events();
    events.truncate(3); // created, locked, updated: each depends on the one before
    let duplicate = events[0].clone();
    events.push(duplicate);
    let (outcomes, _) = apply_events(&mut sm, events, 4, 1).await;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Accepted { seq: 1 },
            Outcome::Accepted { seq: 2 },
            Outcome::Accepted { seq: 3 },
            Outcome::Duplicate { seq: 1 }
        ]
    );
}

#[tokio::test]
async fn a_payload_number_that_json_cannot_hold_is_rejected_in_apply() {
    let (_dir, _log, mut sm) = fresh().await;
    let mut event = adjustments(1).remove(0);
    let payload = event.payload.get_or_insert_with(Default::default);
    payload.fields.insert(
        "delta".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::INFINITY)),
        },
    );
    let (outcomes, _) = apply_events(&mut sm, vec![event], 1, 1).await;
    assert!(
        matches!(&outcomes[..], [Outcome::Rejected { code: RejectCode::MalformedPayload, message, .. }] if message.contains("delta")),
        "{outcomes:?}"
    );
    assert_eq!(
        sm.reader().applied().expect("applied").last_seq,
        0,
        "nothing was appended"
    );
}

#[tokio::test]
async fn state_survives_reopening_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        apply_events(&mut sm, example_events(), 5, 1).await;
        apply_events(&mut sm, adjustments(50), 7, 10).await;
        contents(&sm.reader())
    };
    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("reopens");
    assert_eq!(contents(&sm.reader()), before);
    let (last_applied, _) = sm.applied_state().await.expect("applied state");
    assert!(last_applied.is_some_and(|id| id.index > 10));
}

#[tokio::test]
async fn a_data_dir_refuses_another_realm() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), &realm()).await.expect("opens"));
    let err = open(dir.path(), &Realm::new("t-other", "s-001"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::RealmMismatch { .. }), "{err}");
    assert!(err.to_string().contains("t-demo/s-001"), "{err}");
}

/// Builds a snapshot of `events` on one state machine and installs it on a fresh one.
async fn build_and_install(events: u64) -> (TempDir, StateMachine, TempDir, StateMachine) {
    let (dir_a, _log, mut a) = fresh().await;
    a.apply([membership_entry(1)]).await.expect("membership");
    apply_events(&mut a, example_events(), 3, 2).await;
    apply_events(&mut a, adjustments(events), 256, 100).await;
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    assert_eq!(
        snapshot.meta.last_log_id,
        a.applied_state().await.expect("state").0
    );

    let current = current_snapshot(&mut a).await;
    let (dir_b, b) = installed_fresh(current, &a).await;
    (dir_a, a, dir_b, b)
}

/// `snapshot` installed into a fresh store that fetches the history it lacks from `from`.
async fn installed_fresh(snapshot: Snapshot, from: &StateMachine) -> (TempDir, StateMachine) {
    let (dir, _log, mut sm) = fresh().await;
    fed_by(&mut sm, from);
    let mut receiving = sm.begin_receiving_snapshot().await.expect("receives");
    *receiving = *snapshot.snapshot;
    sm.install_snapshot(&snapshot.meta, receiving)
        .await
        .expect("installs");
    (dir, sm)
}

#[tokio::test]
async fn a_snapshot_of_thousands_of_events_installs_into_an_identical_state() {
    let (_da, a, dir_b, mut b) = build_and_install(5_000).await;
    let installed = contents(&b.reader());
    assert_eq!(installed, contents(&a.reader()));
    assert_eq!(installed.3, 5_015);
    assert_eq!(
        b.applied_state().await.expect("state"),
        a.reader()
            .applied()
            .map(|ap| (ap.last_applied, ap.last_membership))
            .expect("applied")
    );
    assert!(
        b.get_current_snapshot().await.expect("reads").is_some(),
        "the installed snapshot is now current"
    );

    // The installed state is durable: it is what a restart finds.
    drop(b);
    let (_log, reopened) = open(dir_b.path(), &realm()).await.expect("reopens");
    assert_eq!(contents(&reopened.reader()), installed);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_leaves_the_state_machine_untouched() {
    let (_da, _a, snapshot, mut bytes) = snapshot_bytes(100).await;

    let (dir, _log, mut c) = fresh().await;
    apply_events(&mut c, adjustments(3), 1, 1).await;
    let before = contents(&c.reader());

    // Flip one bit in the middle of a copy of the snapshot.
    let path = dir.path().join("corrupt.snap");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, &bytes).expect("writes");
    let file = tokio::fs::File::open(&path).await.expect("opens");
    let err = c
        .install_snapshot(&snapshot.meta, Box::new(file))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("corrupt") || err.to_string().contains("snapshot"),
        "{err}"
    );
    assert_eq!(
        contents(&c.reader()),
        before,
        "the live state machine is unchanged"
    );
    assert_eq!(
        c.applied_state().await.expect("state").0.map(|id| id.index),
        Some(3)
    );
}

#[tokio::test]
async fn a_snapshot_of_another_realm_is_refused() {
    let (_da, _a, current) = built_snapshot(10).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut other) = open(dir.path(), &Realm::new("t-other", "s-009"))
        .await
        .expect("opens");
    let err = other
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("realm"), "{err}");
    assert_eq!(other.reader().applied().expect("applied").last_seq, 0);
}

/// Found by the chaos harness's corrupt fault when the state machine was in sled: sled
/// panicked on some damaged files instead of returning an error, so a node with a damaged
/// data dir died with a stack trace. Opening a damaged state file must fail with an error
/// that names the damage, or cut a tail that was never synced: never panic.
#[tokio::test]
async fn a_damaged_database_file_is_refused_with_an_error_not_a_panic() {
    let mut refused = 0;
    for cut_tenths in [2u64, 5, 8] {
        for flip in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
                apply_events(&mut sm, adjustments(2000), 50, 1).await;
            }
            let file = dir.path().join(STATE_DIR).join("sm.0.kv");
            let mut bytes = std::fs::read(&file).expect("reads the state file");
            if flip {
                let len = bytes.len();
                for i in 0..64 {
                    bytes[(len / 64) * i + (cut_tenths as usize * 7) % (len / 64)] ^= 0x5a;
                }
            } else {
                bytes.truncate(bytes.len() * cut_tenths as usize / 10);
            }
            std::fs::write(&file, &bytes).expect("damages it");
            let opened = tokio::spawn({
                let path = dir.path().to_path_buf();
                async move { open(&path, &realm()).await.map(|_| ()) }
            })
            .await;
            match opened {
                Err(join) => panic!("opening a damaged db panicked: {join}"),
                Ok(Err(err)) => {
                    refused += 1;
                    let text = err.to_string();
                    assert!(
                        text.contains("damaged") || text.contains("corrupt"),
                        "{text}"
                    );
                }
                // A damaged tail that was never synced is cut: the state goes back to an
                // earlier apply, which openraft applies again from the log.
                Ok(Ok(())) => {}
            }
        }
    }
    eprintln!("{refused} of 6 damaged databases were refused");
}

#[tokio::test]
async fn a_data_dir_open_in_another_handle_is_refused_as_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = open(dir.path(), &realm()).await.expect("opens");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    assert!(matches!(err, StoreError::InUse(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(held);
}

/// A snapshot of `events` built on a fresh store, with its meta.
async fn built_snapshot(events: u64) -> (TempDir, StateMachine, Snapshot) {
    let (dir, _log, mut sm) = fresh().await;
    sm.apply([membership_entry(1)]).await.expect("membership");
    apply_events(&mut sm, adjustments(events), 16, 2).await;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    let current = current_snapshot(&mut sm).await;
    (dir, sm, current)
}

async fn purged(log: &LogStore) -> Option<crate::raft_types::LogId> {
    let mut log = log.clone();
    log.get_log_state()
        .await
        .expect("reads the log state")
        .last_purged_log_id
}

/// Found by the chaos harness (disk-full, then restarts): openraft 0.9 purges a follower's
/// log up to a snapshot as soon as it decides to install it, before the install is done.
/// When the install failed, the log had been purged past every snapshot on disk and the
/// node could never start again. The purge now waits for the install.
/// A fresh store that has begun receiving a snapshot of `events` (built elsewhere), with a
/// purge up to that snapshot already asked for, as openraft does.
struct PurgeDuringInstall {
    snapshot: Snapshot,
    last: crate::raft_types::LogId,
    log: LogStore,
    sm: StateMachine,
    receiving: Box<tokio::fs::File>,
    purge: tokio::task::JoinHandle<Result<(), StorageError>>,
    _dirs: (TempDir, TempDir),
}

async fn purge_during_install(events: u64) -> PurgeDuringInstall {
    let (dir_a, a, snapshot) = built_snapshot(events).await;
    let last = snapshot.meta.last_log_id.expect("a last log id");
    let (dir, log, mut sm) = fresh().await;
    fed_by(&mut sm, &a);
    let receiving = sm.begin_receiving_snapshot().await.expect("receives");
    let mut purging = log.clone();
    let purge = tokio::spawn(async move { purging.purge(last).await });
    tokio::task::yield_now().await;
    PurgeDuringInstall {
        snapshot,
        last,
        log,
        sm,
        receiving,
        purge,
        _dirs: (dir_a, dir),
    }
}

/// Found by the chaos harness (disk-full, then restarts): openraft 0.9 purges a follower's
/// log up to a snapshot as soon as it decides to install it, before the install is done.
/// When the install failed, the log had been purged past every snapshot on disk and the
/// node could never start again. The purge now waits for the install.
#[tokio::test]
async fn a_purge_up_to_a_snapshot_being_installed_waits_for_the_install() {
    let mut t = purge_during_install(200).await;
    // However long it waits, it must not purge before the snapshot is durable.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!t.purge.is_finished(), "purged before the install was done");
    assert_eq!(purged(&t.log).await, None);

    *t.receiving = *t.snapshot.snapshot;
    t.sm.install_snapshot(&t.snapshot.meta, t.receiving)
        .await
        .expect("installs");
    t.purge
        .await
        .expect("joins")
        .expect("purges once installed");
    assert_eq!(purged(&t.log).await, Some(t.last));
}

#[tokio::test]
async fn a_purge_waiting_for_an_install_that_fails_fails_and_purges_nothing() {
    let mut t = purge_during_install(50).await;
    // Nothing was received into the file: the install refuses it.
    t.sm.install_snapshot(&t.snapshot.meta, t.receiving)
        .await
        .expect_err("an empty snapshot is refused");
    let err = t.purge.await.expect("joins").expect_err("the purge fails");
    assert!(err.to_string().contains("failed to install"), "{err}");
    assert_eq!(purged(&t.log).await, None);
}

/// A crash after an install's generation switch but before its file became the current
/// snapshot left a state machine ahead of every snapshot on disk; reopening finishes it.
#[tokio::test]
async fn an_install_interrupted_after_its_switch_is_finished_when_the_store_reopens() {
    let (_da, a, dir_b, b) = build_and_install(300).await;
    let installed = contents(&b.reader());
    drop(b);
    let snapshots = dir_b.path().join("snapshots");
    std::fs::rename(
        snapshots.join("current.snap"),
        snapshots.join("installing.tmp"),
    )
    .expect("moves the snapshot back to where the install left it");

    let (log, mut reopened) = open(dir_b.path(), &realm()).await.expect("reopens");
    assert_eq!(contents(&reopened.reader()), installed);
    let current = reopened
        .get_current_snapshot()
        .await
        .expect("reads")
        .expect("the interrupted install's snapshot is current");
    let applied = a.reader().applied().expect("applied").last_applied;
    assert_eq!(current.meta.last_log_id, applied);
    assert_eq!(log.durable_snapshot(), applied);
    assert!(!snapshots.join("installing.tmp").exists());
}

/// The bytes of a snapshot of `events` built on a fresh store, with that store.
async fn snapshot_bytes(events: u64) -> (TempDir, StateMachine, Snapshot, Vec<u8>) {
    let (dir, mut sm, snapshot) = built_snapshot(events).await;
    let mut bytes = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let mut file = *current_snapshot(&mut sm).await.snapshot;
        file.read_to_end(&mut bytes).await.expect("reads");
    }
    (dir, sm, snapshot, bytes)
}

/// A store that a crash left with `copy` received into `snapshots/installing.tmp`,
/// reopened; the path of that file.
async fn reopened_with_a_received_copy(
    copy: &[u8],
    history: Option<&Path>,
) -> (TempDir, LogStore, StateMachine, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), &realm()).await.expect("opens"));
    if let Some(history) = history {
        std::fs::remove_dir_all(dir.path().join("history")).expect("removes the history");
        copy_dir(history, &dir.path().join("history"));
    }
    let installing = dir.path().join("snapshots").join("installing.tmp");
    std::fs::write(&installing, copy).expect("writes the copy");
    let (log, reopened) = open(dir.path(), &realm()).await.expect("reopens");
    (dir, log, reopened, installing)
}

/// A copy cut short by a crash is not used: the live state never depended on it.
#[tokio::test]
async fn a_half_copied_install_is_discarded_when_the_store_reopens() {
    let (_da, _a, _snapshot, bytes) = snapshot_bytes(100).await;
    let (_dir, log, mut reopened, installing) =
        reopened_with_a_received_copy(&bytes[..bytes.len() / 2], None).await;
    let current = reopened.get_current_snapshot().await.expect("reads");
    assert!(current.is_none(), "half a snapshot was promoted");
    assert_eq!(log.durable_snapshot(), None);
    assert_eq!(reopened.reader().applied().expect("applied").last_seq, 0);
    assert!(!installing.exists());
}

/// A whole received copy is finished after a crash: the log may already have been purged
/// up to it (the purge waits only for the copy), so the node must stand on it.
#[tokio::test]
async fn a_received_snapshot_whose_install_a_crash_cut_short_is_finished_when_the_store_reopens() {
    let (dir_a, a, snapshot, bytes) = snapshot_bytes(300).await;
    // The crash came after the history was filled up to the snapshot's seq.
    let history = |dir: &Path| dir.join("history");
    let (_dir, log, mut reopened, installing) =
        reopened_with_a_received_copy(&bytes, Some(&history(dir_a.path()))).await;
    assert_eq!(contents(&reopened.reader()), contents(&a.reader()));
    let current = reopened
        .get_current_snapshot()
        .await
        .expect("reads")
        .expect("the received snapshot is current");
    assert_eq!(current.meta.last_log_id, snapshot.meta.last_log_id);
    assert_eq!(log.durable_snapshot(), snapshot.meta.last_log_id);
    assert_eq!(
        reopened.applied_state().await.expect("state").0,
        snapshot.meta.last_log_id
    );
    assert!(!installing.exists());
}

/// A crash while the history was being filled for a received snapshot of live state: the
/// copy is whole, but the history does not reach its seq. The log was never purged for it
/// (the purge waits for the history too), so it is dropped and the node stands where it was.
#[tokio::test]
async fn a_received_snapshot_whose_history_a_crash_cut_short_is_dropped_when_the_store_reopens() {
    let (_da, _a, _snapshot, bytes) = snapshot_bytes(300).await;
    let (_dir, log, mut reopened, installing) = reopened_with_a_received_copy(&bytes, None).await;
    assert!(
        reopened
            .get_current_snapshot()
            .await
            .expect("reads")
            .is_none()
    );
    assert_eq!(log.durable_snapshot(), None);
    assert_eq!(reopened.reader().applied().expect("applied").last_seq, 0);
    assert!(!installing.exists());
}

/// Found by the chaos harness (`corrupt`, then the leader panicked with "follower log
/// reversion is not allowed"): sled recovered a bit-flipped file to an earlier state
/// without an error, and the node came back holding fewer log entries than it had
/// acknowledged. The log mark kept outside sled catches that at start.
#[tokio::test]
async fn a_log_that_comes_back_shorter_than_it_acknowledged_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = log_of_twenty(dir.path()).await;
        // A conflicting suffix is removed: the mark comes down with it.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 18))
            .await
            .expect("truncates");
    }
    // A clean restart: the log reaches the mark (17).
    drop(open(dir.path(), &realm()).await.expect("reopens"));

    // The log comes back whole but short (a restore from an old copy, or a file system
    // that lost the end of the file): entries the node acknowledged are gone.
    let segment = only_segment(dir.path());
    let cut = record_boundary(&segment, 14);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(cut))
        .expect("cuts the segment");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    assert!(
        matches!(
            err,
            StoreError::LogLost {
                held: 14,
                acknowledged: 17
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("wipe it and add the node"),
        "{err}"
    );
}

#[tokio::test]
async fn a_damaged_log_mark_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), &realm()).await.expect("opens"));
    let mark = dir.path().join("log.mark");
    std::fs::write(&mark, [1u8; 12]).expect("damages the mark");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    assert!(
        err.to_string().contains("log.mark fails its checksum"),
        "{err}"
    );
    std::fs::write(&mark, [1u8; 5]).expect("truncates the mark");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    assert!(err.to_string().contains("holds 5 bytes"), "{err}");
}

/// The one segment file of a small log.
fn only_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("log"))
        .expect("the log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.remove(0)
}

/// The byte offset just after the first `records` records of a segment.
fn record_boundary(segment: &std::path::Path, records: usize) -> u64 {
    let bytes = std::fs::read(segment).expect("reads the segment");
    // After the segment's 8-byte head.
    let mut offset = 8usize;
    for _ in 0..records {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + len as usize;
    }
    offset as u64
}

/// Entries 1..=`count`, one adjustment each.
fn one_adjustment_each(count: u64) -> Vec<Entry> {
    (1..=count)
        .map(|i| command_entry(i, 1_764_000_000_000, adjustments(1)))
        .collect()
}

/// A store in `dir` whose log holds `one_adjustment_each(20)`, still open.
/// sled can hand back an earlier copy of a value from a damaged page: the five-node chaos
/// run of 2026-11-28 met a commit index behind the snapshot, and openraft panicked at
/// start. A commit index behind what the state machine applied is raised to it at open.
#[tokio::test]
async fn a_commit_index_behind_what_was_applied_is_raised_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    {
        let (mut log, mut sm) = log_of_twenty(dir.path()).await;
        let entries = log.try_get_log_entries(1..=20).await.expect("reads");
        sm.apply(entries).await.expect("applies");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("builds");
        log.save_committed(Some(id(5))).await.expect("saves");
        // Flushes sled, the stale commit index with it.
        log.save_vote(&crate::raft_types::Vote::new(1, 1))
            .await
            .expect("votes");
    }
    let (mut log, sm) = open(dir.path(), &realm()).await.expect("reopens");
    assert_eq!(sm.last_applied(), Some(id(20)));
    assert_eq!(log.read_committed().await.expect("reads"), Some(id(20)));
}

/// A vote older than the log (sled handing back an earlier copy) could let the node vote
/// twice in a term: the start is refused, naming the damage and the way out.
#[tokio::test]
async fn a_vote_older_than_the_log_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = log_of_twenty(dir.path()).await;
        log.save_vote(&crate::raft_types::Vote::new(1, 2))
            .await
            .expect("votes");
    }
    drop(
        open(dir.path(), &realm())
            .await
            .expect("a vote of the log's term opens"),
    );
    {
        let (mut log, _sm) = open(dir.path(), &realm()).await.expect("reopens");
        log.save_vote(&crate::raft_types::Vote::new(0, 2))
            .await
            .expect("votes");
    }
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    let said = err.to_string();
    assert!(
        said.contains("the stored vote is for term 0, older than the log's entry")
            && said.contains("wipe this data dir"),
        "{said}"
    );
}

/// A data dir from before `raft.vote` kept its vote in sled (moved into the meta tree by
/// the move to format 2): it moves to the file at open, and leaves the tree.
#[tokio::test]
async fn a_vote_kept_in_the_meta_tree_moves_into_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(log_of_twenty(dir.path()).await);
    let vote = crate::raft_types::Vote::new_committed(4, 3);
    {
        let db = state_db(dir.path());
        let meta = db.open_tree(keys::TREE_RAFT_META).expect("the meta tree");
        meta.insert(keys::KEY_VOTE, encode("vote", &vote).expect("encodes"))
            .expect("inserts");
        db.flush().expect("flushes");
    }
    std::fs::remove_file(dir.path().join("raft.vote")).expect("no vote file yet");
    {
        let (mut log, _sm) = open(dir.path(), &realm()).await.expect("reopens");
        assert_eq!(log.read_vote().await.expect("reads"), Some(vote));
    }
    assert!(dir.path().join("raft.vote").exists());
    let db = state_db(dir.path());
    let meta = db.open_tree(keys::TREE_RAFT_META).expect("the meta tree");
    assert_eq!(
        meta.get(keys::KEY_VOTE).expect("reads"),
        None,
        "gone from the tree"
    );
    let file = super::vote::VoteFile::open(dir.path()).expect("opens the file");
    assert_eq!(file.get(), Some(vote), "and in its file");
}

async fn log_of_twenty(dir: &std::path::Path) -> (LogStore, StateMachine) {
    use openraft::storage::RaftLogStorageExt;
    let (mut log, sm) = open(dir, &realm()).await.expect("opens");
    log.blocking_append(one_adjustment_each(20))
        .await
        .expect("appends");
    (log, sm)
}

async fn last_index(dir: &std::path::Path) -> Option<u64> {
    let (mut log, _sm) = open(dir, &realm()).await.expect("reopens");
    log.get_log_state()
        .await
        .expect("log state")
        .last_log_id
        .map(|id| id.index)
}

/// A crash in the middle of an append leaves a torn record at the end of the last segment:
/// half a record, or zeros where the file grew before its data reached the disk. It was
/// never acknowledged (the append syncs first), so it is cut off and the log opens whole.
#[tokio::test]
async fn a_torn_append_at_the_end_of_the_log_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_of_twenty(dir.path()).await;
    let segment = only_segment(dir.path());
    let whole = std::fs::metadata(&segment).expect("stat").len();
    // Half a record: a header that promises 300 bytes, and 10 of them.
    let mut torn = 300u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7u8; 14]);
    super::wal::write_raw(&segment, &torn).expect("writes");
    assert_eq!(last_index(dir.path()).await, Some(20));
    assert_eq!(std::fs::metadata(&segment).expect("stat").len(), whole);
    // Zeros.
    super::wal::write_raw(&segment, &[0u8; 4096]).expect("writes");
    assert_eq!(last_index(dir.path()).await, Some(20));
    assert_eq!(std::fs::metadata(&segment).expect("stat").len(), whole);
}

/// Damage inside the log, with whole records after it, is not a torn append: the node
/// refuses to start and names the file, rather than serve around a hole.
#[tokio::test]
async fn a_damaged_record_inside_the_log_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_of_twenty(dir.path()).await;
    let segment = only_segment(dir.path());
    let at = record_boundary(&segment, 5) as usize + 20;
    let mut bytes = std::fs::read(&segment).expect("reads");
    bytes[at] ^= 0x10;
    std::fs::write(&segment, &bytes).expect("writes");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("checksum does not match"), "{text}");
    assert!(text.contains(&segment.display().to_string()), "{text}");
    // Nothing was cut: the evidence stays for whoever restores the node.
    assert_eq!(std::fs::read(&segment).expect("reads"), bytes);
}

/// A data dir from before the log moved out of sled (its entries in a tree, moved into the
/// state files by the move to format 2): its entries move into segment files at the first
/// open (finishing a migration a crash interrupted), and the log reads the same.
#[tokio::test]
async fn a_log_kept_in_a_tree_moves_into_segment_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), &realm()).await.expect("creates"));
    let entries = one_adjustment_each(7);
    {
        let db = state_db(dir.path());
        let tree = db.open_tree(keys::TREE_LOG).expect("the log tree");
        for entry in &entries {
            let index = openraft::RaftLogId::get_log_id(entry).index;
            tree.insert(
                keys::log_key(index),
                super::encode("entry", entry).expect("encodes"),
            )
            .expect("inserts");
        }
        db.flush().expect("flushes");
    }
    // A first migration that a crash cut short: the segments hold entries 1..=3 only.
    {
        let mut wal = super::wal::Wal::open(&dir.path().join("log")).expect("opens the log");
        let files = wal.append(entries[..3].to_vec()).expect("appends");
        super::wal::sync(&files, dir.path()).expect("syncs");
    }
    let (mut log, _sm) = open(dir.path(), &realm())
        .await
        .expect("opens and migrates");
    let read = openraft::storage::RaftLogReader::try_get_log_entries(&mut log, 1..8)
        .await
        .expect("reads");
    assert_eq!(read, entries);
    drop((log, _sm));
    let db = state_db(dir.path());
    assert!(db.open_tree(keys::TREE_LOG).expect("tree").is_empty());
    drop(db);
    assert_eq!(last_index(dir.path()).await, Some(7));
}

/// A copy of `tests/fixtures/data-v1`: a data dir written by the release before rules
/// versions (by `pos-hub log append --batch 1 --snapshot-every 4` of
/// `data-v1.events.jsonl`). Its nine events were all accepted under rules V1; four of them
/// V2 refuses (an unknown payload field, a 2^64 − 1 clock, 150 lines, a 600-byte reason).
fn data_v1_copy() -> TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates the copy");
    for entry in std::fs::read_dir(from).expect("reads the fixture") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copies a fixture file");
        }
    }
}

#[tokio::test]
async fn a_data_dir_written_before_rules_versions_opens_replays_and_installs_identically() {
    let dir = data_v1_copy();
    // The snapshot the old release built, opened before the open moves the dir to data
    // format 2 (and builds the snapshot again in it).
    let old_snapshot = snapshot::open_current(&dir.path().join("snapshots"))
        .await
        .expect("reads the old snapshot")
        .expect("the fixture has a snapshot");
    let (mut log, mut old) = open(dir.path(), &realm()).await.expect("opens");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).expect("FORMAT"),
        "pos-hub data format 2\n"
    );
    assert!(
        !snapshot::current_is_legacy(&dir.path().join("snapshots")).expect("reads"),
        "the open built the snapshot again in format 2"
    );
    let written = contents(&old.reader());
    assert_eq!(written.3, 9, "the nine events of the fixture");
    let clocks: Vec<u64> = written
        .0
        .iter()
        .map(|e| e.clock.as_ref().map_or(0, |c| c.lamport))
        .collect();
    assert_eq!(clocks[2], u64::MAX, "the V1 event keeps its clock");
    assert!(
        written.0.iter().all(|e| e.rules == 0),
        "V1 events are unstamped"
    );
    assert_eq!(
        old.reader().applied().expect("applied").lamport,
        8,
        "the store's clock leaves out the clock over 2^53 - 1"
    );

    // Replay: every entry of the log, applied again from nothing, under its own rules.
    let entries = log.try_get_log_entries(0..).await.expect("reads the log");
    assert!(
        entries
            .iter()
            .any(|e| matches!(&e.payload, EntryPayload::Normal(c) if c.rules == Rules::V1)),
        "the fixture's entries decode as rules V1"
    );
    let (_d, _l, mut replayed) = fresh().await;
    replayed.apply(entries.clone()).await.expect("replays");
    // Format 1 did not record when an order was created or last changed: the open moves
    // them over as 0, where a replay records the events' hub times.
    let replayed_orders = replayed.reader().orders().expect("orders");
    for order in &replayed_orders {
        let last = written
            .0
            .iter()
            .find(|e| e.seq == order.head.seq)
            .expect("the order's last event");
        assert_eq!(order.head.hub_time_ms, last.hub_time, "{}", order.id);
        assert!(order.created_ms > 0 && order.created_ms <= order.head.hub_time_ms);
    }
    assert!(
        written
            .1
            .iter()
            .all(|o| o.created_ms == 0 && o.head.hub_time_ms == 0),
        "moved over from format 1 without times"
    );
    assert_eq!(
        times_unrecorded(contents(&replayed.reader())),
        written,
        "replay under V1"
    );

    // Install the snapshot the old release built, then the entries after it.
    let since = old_snapshot
        .meta
        .last_log_id
        .expect("a snapshot of entries");
    let (_d, _l, mut installed) = fresh().await;
    let mut receiving = installed
        .begin_receiving_snapshot()
        .await
        .expect("receives");
    *receiving = *old_snapshot.snapshot;
    installed
        .install_snapshot(&old_snapshot.meta, receiving)
        .await
        .expect("installs the old snapshot");
    let after: Vec<Entry> = entries
        .into_iter()
        .filter(|e| e.log_id.index > since.index)
        .collect();
    installed.apply(after).await.expect("applies the rest");
    assert_eq!(
        times_unrecorded(contents(&installed.reader())),
        written,
        "old snapshot + log"
    );

    // And a snapshot this release builds of the same state.
    let built = old
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    let (_d, _l, mut rebuilt) = fresh().await;
    fed_by(&mut rebuilt, &old);
    let mut receiving = rebuilt.begin_receiving_snapshot().await.expect("receives");
    *receiving = *built.snapshot;
    rebuilt
        .install_snapshot(&built.meta, receiving)
        .await
        .expect("installs the new snapshot");
    assert_eq!(
        times_unrecorded(contents(&rebuilt.reader())),
        written,
        "new snapshot"
    );
    assert_eq!(rebuilt.reader().applied().expect("applied").lamport, 8);
}

/// Flips one byte in the middle of `dir`'s current snapshot (its events, past the header).
fn damage_current_snapshot(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("snapshots").join("current.snap");
    let mut bytes = std::fs::read(&path).expect("reads the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&path, &bytes).expect("writes it back damaged");
    path
}

/// A snapshot handed out must be whole: read it back and install it into a fresh store,
/// which replays and checks every event; its contents must be `expected`.
async fn assert_installs_as(snapshot: Snapshot, expected: &StateMachine) {
    let (_dir, fresh) = installed_fresh(snapshot, expected).await;
    assert_eq!(contents(&fresh.reader()), contents(&expected.reader()));
}

/// Bit rot in `current.snap` while the node was down: found at open, the file is set aside
/// and a whole snapshot is built from the state machine in its place.
#[tokio::test]
async fn a_snapshot_damaged_at_rest_is_set_aside_and_rebuilt_when_the_store_reopens() {
    let (dir, sm, built) = built_snapshot(300).await;
    drop(sm);
    damage_current_snapshot(dir.path());
    snapshot::check_current(&dir.path().join("snapshots"))
        .await
        .expect_err("the damage is there to find");

    let (log, mut reopened) = open(dir.path(), &realm()).await.expect("reopens");
    let snapshots = dir.path().join("snapshots");
    assert!(snapshots.join("current.snap.damaged").exists(), "set aside");
    snapshot::check_current(&snapshots)
        .await
        .expect("the current snapshot is whole again");
    let current = current_snapshot(&mut reopened).await;
    assert_eq!(current.meta.last_log_id, built.meta.last_log_id);
    assert_eq!(log.durable_snapshot(), built.meta.last_log_id);
    assert_installs_as(current, &reopened).await;
}

/// Damage that appears while the node runs is found before the snapshot is sent: it is
/// rebuilt, and what goes to the follower is whole.
#[tokio::test]
async fn a_snapshot_damaged_while_the_node_runs_is_rebuilt_before_it_is_sent() {
    let (dir, mut sm, built) = built_snapshot(300).await;
    damage_current_snapshot(dir.path());
    let sent = current_snapshot(&mut sm).await;
    assert_eq!(sent.meta.last_log_id, built.meta.last_log_id);
    assert!(
        dir.path()
            .join("snapshots")
            .join("current.snap.damaged")
            .exists()
    );
    assert_installs_as(sent, &sm).await;
}

/// A store whose log is purged up to its snapshot, and whose state machine file is then
/// cut back to nothing applied (damage the file's checksums could not tell from a torn
/// write). Returns the dir, the snapshot's last log id and the state before the damage.
async fn state_cut_behind_the_purge_point() -> (TempDir, crate::raft_types::LogId, Contents) {
    let (dir, sm, built) = built_snapshot(300).await;
    let expected = contents(&sm.reader());
    drop(sm);
    let last = built.meta.last_log_id.expect("a snapshot of entries");
    {
        let (mut log, _sm) = open(dir.path(), &realm()).await.expect("reopens");
        log.purge(last).await.expect("purges up to the snapshot");
    }
    let (db, trees) = state_machine_trees(dir.path());
    for tree in &trees {
        tree.clear().expect("clears");
    }
    db.flush().expect("flushes");
    drop((db, trees));
    (dir, last, expected)
}

/// Found by the five-node chaos run on the state files: a truncated state machine file came
/// back behind the log's purge point, and openraft, asked to apply entries the log no longer
/// held, stopped the node with "Failed to get log entries". The open now rebuilds the state
/// from the snapshot, which covers the purged entries.
#[tokio::test]
async fn a_state_machine_cut_back_behind_the_purge_point_is_rebuilt_from_the_snapshot() {
    let (dir, last, expected) = state_cut_behind_the_purge_point().await;
    let (log, reopened) = open(dir.path(), &realm())
        .await
        .expect("reopens and rebuilds");
    assert_eq!(reopened.last_applied(), Some(last));
    assert_eq!(contents(&reopened.reader()), expected);
    assert_eq!(purged(&log).await, Some(last));
}

/// Without a snapshot that reaches the purge point, the start is refused by name.
#[tokio::test]
async fn a_state_machine_behind_the_purge_point_with_no_snapshot_to_rebuild_from_is_refused() {
    let (dir, _last, _) = state_cut_behind_the_purge_point().await;
    std::fs::remove_file(dir.path().join("snapshots").join("current.snap"))
        .expect("removes the snapshot");
    let err = open(dir.path(), &realm()).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("the state cannot be rebuilt here") && text.contains("purged up to"),
        "{text}"
    );
}

/// The trees of the data dir `data_dir` (the store must be closed).
fn state_db(data_dir: &Path) -> super::tree::Db {
    super::tree::Db::open(&data_dir.join(STATE_DIR)).expect("opens the closed store's trees")
}

/// The state machine trees of `data_dir` (the store must be closed).
fn state_machine_trees(data_dir: &Path) -> (super::tree::Db, Vec<super::tree::Tree>) {
    let db = state_db(data_dir);
    let trees = db
        .tree_names()
        .expect("lists the trees")
        .into_iter()
        .filter(|name| name.starts_with("sm.") && name != keys::TREE_SM_META)
        .map(|name| db.open_tree(name).expect("opens a tree"))
        .collect();
    (db, trees)
}

fn event_keys(tree: &super::tree::Tree) -> usize {
    tree.scan_prefix([keys::PREFIX_EVENT]).count()
}

#[tokio::test]
async fn committed_events_live_in_the_history_files_not_in_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        apply_events(&mut sm, adjustments(40), 3, 1).await;
        contents(&sm.reader())
    };
    assert_eq!(before.0.len(), 40);
    let (_db, trees) = state_machine_trees(dir.path());
    assert_eq!(trees.len(), 1);
    let segments = std::fs::read_dir(dir.path().join("history"))
        .expect("a history dir")
        .count();
    assert!(segments >= 1);
    assert_eq!(event_keys(&trees[0]), 0, "no event in the key-value store");
    assert_eq!(
        trees[0].scan_prefix([keys::PREFIX_EVENT_ID]).count(),
        0,
        "nor an eventId index"
    );
    drop((_db, trees));
    // The history's index still finds every eventId after a reopen: resent, each is a
    // duplicate of its first seq.
    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("reopens");
    let (outcomes, _) = apply_events(&mut sm, adjustments(40), 7, 100).await;
    let firsts: Vec<Outcome> = (1..=40).map(|seq| Outcome::Duplicate { seq }).collect();
    assert_eq!(outcomes, firsts);
}

/// Puts every event of the history back into the state machine's tree, as a data dir
/// written before the history files (or a move a crash cut short) holds them.
async fn events_back_into_the_tree(data_dir: &Path) -> Vec<pb::Event> {
    let events = {
        let (_log, sm) = open(data_dir, &realm()).await.expect("opens");
        sm.reader()
            .events_after(0, usize::MAX, usize::MAX)
            .expect("events")
    };
    let (db, trees) = state_machine_trees(data_dir);
    for event in &events {
        trees[0]
            .insert(keys::event_key(event.seq), event.encode_to_vec())
            .expect("inserts");
    }
    db.flush().expect("flushes");
    events
}

#[tokio::test]
async fn a_move_of_the_events_out_of_the_tree_that_a_crash_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        apply_events(&mut sm, example_events(), 4, 1).await;
        apply_events(&mut sm, adjustments(30), 5, 10).await;
        contents(&sm.reader())
    };

    // Crashed after the history was synced, before the tree's copies were deleted.
    events_back_into_the_tree(dir.path()).await;
    {
        let (_log, sm) = open(dir.path(), &realm()).await.expect("reopens");
        assert_eq!(contents(&sm.reader()), before);
    }
    let (db, trees) = state_machine_trees(dir.path());
    assert_eq!(event_keys(&trees[0]), 0, "the move finished");
    drop((db, trees));

    // Crashed before anything reached the history: the whole history comes from the tree.
    events_back_into_the_tree(dir.path()).await;
    std::fs::remove_dir_all(dir.path().join("history")).expect("removes the history");
    {
        let (_log, sm) = open(dir.path(), &realm()).await.expect("reopens");
        assert_eq!(contents(&sm.reader()), before);
    }
    let (_db, trees) = state_machine_trees(dir.path());
    assert_eq!(event_keys(&trees[0]), 0, "the move finished");
}

#[tokio::test]
async fn tree_events_that_differ_from_the_history_refuse_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        apply_events(&mut sm, adjustments(10), 2, 1).await;
    }
    let mut events = events_back_into_the_tree(dir.path()).await;
    let (db, trees) = state_machine_trees(dir.path());
    events[4].event_id = uuid::Uuid::from_u128(7).to_string();
    trees[0]
        .insert(keys::event_key(5), events[4].encode_to_vec())
        .expect("inserts");
    db.flush().expect("flushes");
    drop((db, trees));
    let err = match open(dir.path(), &realm()).await {
        Ok(_) => panic!("a tree that disagrees with the history must refuse the open"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("seq 5 is event"), "{err}");
}

/// The history segment of `data_dir` cut to its first `keep` events (as a power cut that
/// kept a flush of the tree but not the history's unsynced tail leaves it).
fn cut_history(data_dir: &Path, keep: u64) {
    let dir = data_dir.join("history");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 1, "one segment");
    let bytes = std::fs::read(&files[0]).expect("reads");
    let mut offset = 16usize;
    for _ in 0..keep {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 16 + len as usize;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .and_then(|f| f.set_len(offset as u64))
        .expect("cuts");
}

#[tokio::test]
async fn a_state_machine_ahead_of_its_history_is_rebuilt_from_the_snapshot_and_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = adjustments(60);
    let entries: Vec<Entry> = events
        .chunks(3)
        .enumerate()
        .map(|(i, chunk)| {
            let index = i as u64 + 1;
            command_entry(index, 1_764_000_000_000 + index, chunk.to_vec())
        })
        .collect();
    let (before, snapshot_at) = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        sm.apply(entries[..10].to_vec()).await.expect("applies");
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("builds");
        sm.apply(entries[10..].to_vec()).await.expect("applies");
        (contents(&sm.reader()), built.meta.last_log_id)
    };
    assert_eq!(before.3, 60);
    cut_history(dir.path(), 45);

    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("reopens");
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, snapshot_at, "rebuilt from the snapshot");
    assert_eq!(sm.reader().applied().expect("applied").last_seq, 30);
    // openraft re-applies the log after the snapshot: the same events, the lost ones
    // appended again.
    sm.apply(entries[10..].to_vec()).await.expect("re-applies");
    assert_eq!(contents(&sm.reader()), before);
}

#[tokio::test]
async fn without_a_snapshot_a_state_machine_ahead_of_its_history_starts_over_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        apply_events(&mut sm, adjustments(20), 2, 1).await;
        contents(&sm.reader())
    };
    cut_history(dir.path(), 7);
    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("reopens");
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, None, "nothing to stand on but the log");
    assert!(sm.reader().orders().expect("orders").is_empty());
    apply_events(&mut sm, adjustments(20), 2, 1).await;
    assert_eq!(contents(&sm.reader()), before);
}

/// `order.created` and `order.paid` for `o-<n>`, for each n in `orders`.
fn paid_orders(orders: std::ops::Range<u64>) -> Vec<pb::Event> {
    let event = |n: u64, k: u64, version: u64, event_type: &str, payload| {
        let id = 0x0194_0000_0000_7000_8000_0000_0000_0000 + u128::from(n * 2 + k);
        let line = serde_json::json!({
            "eventId": uuid::Uuid::from_u128(id).to_string(),
            "tenantId": "t-demo", "storeId": "s-001",
            "aggregateType": "order", "aggregateId": format!("o-{n}"), "version": version,
            "type": event_type, "at": "2026-11-24T12:00:00Z",
            "actor": { "deviceId": "till-1" }, "clock": { "lamport": 1, "deviceId": "till-1" },
            "payload": payload
        });
        let event: Event = serde_json::from_value(line).expect("an event");
        convert::event_to_pb(&event).expect("converts")
    };
    orders
        .flat_map(|n| {
            let items = serde_json::json!({ "items": [
                { "id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 300, "quantity": 1 }
            ] });
            let paid = serde_json::json!({ "payments": [{ "method": "cash", "amount": 300 }] });
            [
                event(n, 0, 1, "order.created", items),
                event(n, 1, 2, "order.paid", paid),
            ]
        })
        .collect()
}

fn closed_index_keys(tree: &super::tree::Tree) -> usize {
    tree.scan_prefix([keys::PREFIX_CLOSED]).count()
}

fn order_ids(reader: &StateReader) -> Vec<String> {
    reader
        .orders()
        .expect("orders")
        .into_iter()
        .map(|o| o.id)
        .collect()
}

/// Rules V3 on the sled store: paid orders leave the tree (and its `x` index) once
/// `CLOSED_KEPT_EVENTS` more events are accepted, and a snapshot of that state installs
/// into the same state.
#[tokio::test]
async fn paid_orders_leave_the_tree_after_the_window_and_a_snapshot_installs_the_same_state() {
    use crate::domain::rules::CLOSED_KEPT_EVENTS;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
    // o-0 and o-1 paid at seqs 2 and 4; an open order after them.
    let mut events = paid_orders(0..2);
    events.push(paid_orders(2..3).remove(0));
    let (_, next) = apply_events(&mut sm, events, 2, 1).await;
    let fill = usize::try_from(CLOSED_KEPT_EVENTS).expect("fits") - 3;
    let (_, next) = apply_events(&mut sm, adjustments(fill as u64), 1024, next).await;
    // Last seq is CLOSED_KEPT_EVENTS + 2: o-0 (closed at seq 2) has just left.
    assert_eq!(order_ids(&sm.reader()), ["o-1", "o-2"]);
    let (_, next) = apply_events(
        &mut sm,
        adjustments(fill as u64 + 2)[fill..].to_vec(),
        1,
        next,
    )
    .await;
    assert_eq!(
        order_ids(&sm.reader()),
        ["o-2"],
        "o-1 left two events later"
    );
    let written = contents(&sm.reader());
    assert_eq!(
        written.0.len() as u64,
        CLOSED_KEPT_EVENTS + 4,
        "every event stays"
    );

    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    let (_d, installed) = installed_fresh(built, &sm).await;
    assert_eq!(contents(&installed.reader()), written);
    drop((sm, _log, installed, next));
    let (_db, trees) = state_machine_trees(dir.path());
    assert_eq!(
        closed_index_keys(&trees[0]),
        0,
        "the index left with the orders"
    );
}

/// A tree written before the closed index (the release before rules V3) gets it at open,
/// so that its closed orders leave like the ones closed after the upgrade.
#[tokio::test]
async fn a_tree_written_before_the_closed_index_is_indexed_at_open() {
    use crate::domain::rules::CLOSED_KEPT_EVENTS;
    let dir = tempfile::tempdir().expect("tempdir");
    let next = {
        let (_log, mut sm) = open(dir.path(), &realm()).await.expect("opens");
        let (_, next) = apply_events(&mut sm, paid_orders(0..3), 2, 1).await;
        next
    };
    {
        let (db, trees) = state_machine_trees(dir.path());
        assert_eq!(closed_index_keys(&trees[0]), 3);
        for key in trees[0].scan_prefix([keys::PREFIX_CLOSED]).keys() {
            trees[0].remove(key.expect("a key")).expect("removes");
        }
        trees[0].remove(keys::KEY_CLOSED_INDEXED).expect("removes");
        db.flush().expect("flushes");
    }
    {
        let (_log, _sm) = open(dir.path(), &realm()).await.expect("reopens");
    }
    {
        let (_db, trees) = state_machine_trees(dir.path());
        assert_eq!(closed_index_keys(&trees[0]), 3, "indexed again at open");
        assert!(
            trees[0]
                .contains_key(keys::KEY_CLOSED_INDEXED)
                .expect("reads")
        );
    }
    let (_log, mut sm) = open(dir.path(), &realm()).await.expect("reopens");
    apply_events(&mut sm, adjustments(CLOSED_KEPT_EVENTS - 2), 1024, next).await;
    // Last seq is CLOSED_KEPT_EVENTS + 4: the orders paid at seqs 2 and 4 are gone.
    assert_eq!(order_ids(&sm.reader()), ["o-2"]);
}

/// What `raft::compaction` reads to bound the log by bytes: the bytes after an index, and
/// the purge point that keeps at least so many bytes.
#[tokio::test]
async fn the_log_reports_its_bytes_and_the_purge_point_that_keeps_a_given_amount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _sm) = log_of_twenty(dir.path()).await;
    let records = std::fs::metadata(only_segment(dir.path()))
        .expect("the segment")
        .len()
        - record_boundary(&only_segment(dir.path()), 0);
    assert_eq!(log.bytes_after(0), records, "every record after index 0");
    assert_eq!(log.bytes_after(20), 0);
    let last_two = log.bytes_after(18);
    let last_three = log.bytes_after(17);
    assert!(0 < last_two && last_two < last_three);
    // Keeping exactly the last two entries' bytes: purge up to 18.
    assert_eq!(log.purge_point_keeping(last_two), Some(18));
    // One byte more needs the third-last too: purge up to 17.
    assert_eq!(log.purge_point_keeping(last_two + 1), Some(17));
    assert_eq!(
        log.purge_point_keeping(records + 1),
        None,
        "the log is smaller"
    );
}

/// Replication reads stop at the bytes one AppendEntries carries, always with one entry.
#[test]
fn a_replication_read_stops_at_its_byte_bound_and_takes_at_least_one_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = wal::Wal::open(dir.path()).expect("opens");
    wal.append(one_adjustment_each(10)).expect("appends");
    let size = |from: u64, to: u64| wal.bytes_after(from - 1) - wal.bytes_after(to - 1);
    let three = size(1, 4);
    assert_eq!(wal.end_within(1, 11, three), 4, "entries 1..=3 fit exactly");
    assert_eq!(wal.end_within(1, 11, three - 1), 3);
    assert_eq!(wal.end_within(1, 11, 0), 2, "at least the first");
    assert_eq!(
        wal.end_within(5, 8, u64::MAX),
        8,
        "never past the end asked"
    );
    assert_eq!(wal.end_within(5, 11, u64::MAX), 11);
}
