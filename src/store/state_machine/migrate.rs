//! Data dirs from before the history files kept each committed event in the state
//! machine's tree (`e` + seq), and the eventId index too (`i` + eventId). At open they are moved out: appended to the history, which
//! is synced, and only then deleted from the tree, which is flushed. A crash anywhere in
//! between leaves them in one place or both; the next open finishes the move (events the
//! history already holds are checked, not appended twice).

use prost::Message;
use serde::de::DeserializeOwned;

use super::extend_history;
use crate::domain::order::Order;
use crate::domain::ticket::Ticket;
use crate::proto::pb;
use crate::store::disk::Disk;
use crate::store::history::History;
use crate::store::keys;
use crate::store::{StoreError, decode};

/// Events moved per history append and per tree batch.
const MOVE_BATCH: usize = 4096;

pub(super) async fn events_out_of_tree(
    disk: &Disk,
    tree: &crate::store::tree::Tree,
    history: &History,
) -> Result<(), StoreError> {
    let start = keys::event_key(1);
    let end = keys::event_key(u64::MAX);
    let Some(first) = tree.range(start..=end).next() else {
        return Ok(());
    };
    let (key, _) = first?;
    let first_seq = keys::event_seq(&key).unwrap_or(0);
    if first_seq > history.last_seq() + 1 {
        return Err(StoreError::corrupt(
            "history",
            format!(
                "moving the tree's events out: they begin at seq {first_seq}, the history \
                 ends at {}",
                history.last_seq()
            ),
        ));
    }
    tracing::info!(
        first_seq,
        "moving committed events from the state machine's tree to the history files"
    );
    let mut moved = 0u64;
    let mut batch = Vec::with_capacity(MOVE_BATCH);
    for (expected, item) in (first_seq..).zip(tree.range(start..=end)) {
        let (key, bytes) = item?;
        let event =
            pb::Event::decode(bytes.as_ref()).map_err(|e| StoreError::corrupt("event", e))?;
        if keys::event_seq(&key) != Some(event.seq) || event.seq != expected {
            return Err(StoreError::corrupt(
                "event log",
                format!(
                    "expected seq {expected}, found key {key:?} holding seq {}",
                    event.seq
                ),
            ));
        }
        batch.push(event);
        if batch.len() == MOVE_BATCH {
            extend_history(history, &batch)?;
            moved += batch.len() as u64;
            batch.clear();
        }
    }
    extend_history(history, &batch)?;
    moved += batch.len() as u64;
    history.sync()?;
    loop {
        let chunk = tree
            .range(start..=end)
            .keys()
            .take(MOVE_BATCH)
            .collect::<Result<Vec<_>, _>>()?;
        if chunk.is_empty() {
            break;
        }
        let mut delete = crate::kv::Batch::default();
        for key in chunk {
            delete.remove(key);
        }
        tree.apply_batch(delete)?;
    }
    disk.flush().await?;
    tracing::info!(
        moved,
        last_seq = history.last_seq(),
        "moved the committed events to the history files"
    );
    Ok(())
}

/// Deletes the tree's eventId index (`i` + eventId), which the history's own index
/// replaced. Run after the events are in the history; a crash part way leaves keys that
/// nothing reads, deleted at the next open.
pub(super) async fn ids_out_of_tree(
    disk: &Disk,
    tree: &crate::store::tree::Tree,
) -> Result<(), StoreError> {
    let mut deleted = 0usize;
    loop {
        let chunk = tree
            .scan_prefix([keys::PREFIX_EVENT_ID])
            .keys()
            .take(MOVE_BATCH)
            .collect::<Result<Vec<_>, _>>()?;
        if chunk.is_empty() {
            break;
        }
        deleted += chunk.len();
        let mut delete = crate::kv::Batch::default();
        for key in chunk {
            delete.remove(key);
        }
        tree.apply_batch(delete)?;
    }
    if deleted > 0 {
        disk.flush().await?;
        tracing::info!(
            deleted,
            "dropped the tree's eventId index: the history files index eventIds now"
        );
    }
    Ok(())
}

/// Indexes the closed orders and done tickets of a tree written before the `x` index
/// (`keys::PREFIX_CLOSED`), by the head seq that closed each, so that rules `V3` remove
/// them like the ones they close themselves. The marker is written last: a crash part way
/// runs it again, and each key it writes is the same the second time.
pub(super) async fn index_closed(
    disk: &Disk,
    tree: &crate::store::tree::Tree,
) -> Result<(), StoreError> {
    if tree.contains_key(keys::KEY_CLOSED_INDEXED)? {
        return Ok(());
    }
    let mut batch = crate::kv::Batch::default();
    let mut indexed = 0usize;
    let orders = closed_seqs::<Order>(tree, keys::PREFIX_ORDER, "order", |o| {
        o.status.is_closed().then_some(o.head.seq)
    });
    let tickets = closed_seqs::<Ticket>(tree, keys::PREFIX_TICKET, "ticket", |t| {
        t.status.is_done().then_some(t.head.seq)
    });
    for found in orders.chain(tickets) {
        let (seq, record_key) = found?;
        batch.insert(keys::closed_key(seq, &record_key), []);
        indexed += 1;
        if indexed.is_multiple_of(MOVE_BATCH) {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    batch.insert(keys::KEY_CLOSED_INDEXED, []);
    tree.apply_batch(batch)?;
    disk.flush().await?;
    if indexed > 0 {
        tracing::info!(
            indexed,
            "indexed the closed orders and done tickets by closing seq"
        );
    }
    Ok(())
}

/// (closing seq, record key) of each record under `prefix` that `closed_at` says is closed.
fn closed_seqs<'a, T: DeserializeOwned>(
    tree: &'a crate::store::tree::Tree,
    prefix: u8,
    what: &'static str,
    closed_at: impl Fn(&T) -> Option<u64> + 'a,
) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + 'a {
    tree.scan_prefix([prefix]).filter_map(move |item| {
        let (key, bytes) = match item {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e)),
        };
        match decode::<T>(what, &bytes) {
            Ok(record) => closed_at(&record).map(|seq| Ok((seq, key.to_vec()))),
            Err(e) => Some(Err(e)),
        }
    })
}
