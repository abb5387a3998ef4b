//! Subscribe: every committed event after the cursor, in seq order, once each — first
//! from storage in pages, then live from the state machine's feed. A subscriber that
//! falls behind the feed (or sees a gap, e.g. after a snapshot install) reads storage
//! again instead of being dropped or dropping events. When there is nothing to send for
//! `SUBSCRIBE_HEARTBEAT`, a heartbeat (a message with no events) goes out, so a client
//! finds a dead stream (a paused node, a dropped link) by its silence. What goes out is
//! the subscriber's `View` of each event: kitchen and bar screens get payment-carrying
//! events as redaction markers, same seq, so their cursors never see a gap.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc};
use tokio::time::{Duration, Instant};
use tonic::Status;

use super::error::ApiError;
use super::limits::SubscriptionSlot;
use super::view::View;
use crate::proto::pb;
use crate::proto::subscribe::EventFrames;
use crate::raft::node::Node;
use crate::store::StoreError;
use crate::wire::SUBSCRIBE_HEARTBEAT_MS;

/// Events per message while catching up from storage.
pub const SUBSCRIBE_PAGE_EVENTS: usize = 512;
/// Catch-up pages stop at about this many encoded bytes too (512 events of the largest
/// valid size would be 32 MiB).
pub const SUBSCRIBE_PAGE_BYTES: usize = 1 << 20;
/// Messages buffered towards one client before its stream applies backpressure.
pub const SUBSCRIBE_BUFFER_MESSAGES: usize = 16;
/// The longest a stream stays silent: after this long without a message, a heartbeat (a
/// `SubscribeResponse` with no events) is sent. Clients treat a stream silent for twice
/// this (`wire::SUBSCRIBE_SILENCE_MS`) as dead and move to another node.
pub const SUBSCRIBE_HEARTBEAT: Duration = Duration::from_millis(SUBSCRIBE_HEARTBEAT_MS);

pub type Outbound = mpsc::Receiver<Result<pb::SubscribeResponse, Status>>;

/// Starts streaming `view` to a new subscriber from `cursor`. `slot` (if any) is held for
/// the stream's life, so the device's subscription count drops when it ends.
pub fn start(node: Arc<Node>, cursor: u64, slot: Option<SubscriptionSlot>, view: View) -> Outbound {
    let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER_MESSAGES);
    // Subscribe to the feed before reading storage, so nothing falls between the two.
    let feed = node.reader.subscribe();
    tokio::spawn(async move {
        node.metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        let out = Out {
            tx: &tx,
            view,
            last_sent: Instant::now(),
        };
        if let Err(err) = stream(&node, cursor, feed, out).await {
            let _ = tx.send(Err(err)).await;
        }
        node.metrics.subscribers.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
    });
    rx
}

/// Why streaming stopped without an error for the client.
enum Stop {
    ClientGone,
}

/// The client's end of the stream, what it may see, and when it was last sent anything.
struct Out<'a> {
    tx: &'a mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    view: View,
    last_sent: Instant,
}

impl Out<'_> {
    /// Sends events in the subscriber's view (redacted in place, never dropped), or a
    /// heartbeat when `events` is empty.
    async fn send(&mut self, mut events: Vec<pb::Event>) -> Result<(), Stop> {
        self.view.events(&mut events);
        self.send_message(pb::SubscribeResponse::of(events)).await
    }

    async fn send_message(&mut self, message: pb::SubscribeResponse) -> Result<(), Stop> {
        self.tx
            .send(Ok(message))
            .await
            .map_err(|_| Stop::ClientGone)?;
        self.last_sent = Instant::now();
        Ok(())
    }
}

/// Sends everything in storage after `*cursor`, advancing it. Events go out as the history
/// stores them, in the subscriber's view, without being decoded (`View::frame`).
async fn catch_up(
    node: &Node,
    cursor: &mut u64,
    tx: &mut Out<'_>,
) -> Result<Result<(), Stop>, Status> {
    // The first call of a stream and every later one (a lagging subscriber reads storage
    // again): retention may have deleted what the cursor needs since.
    let first = node.reader.history_first_seq();
    if *cursor + 1 < first {
        return Err(ApiError::CursorBelowRetention {
            cursor: *cursor,
            deleted_through: first - 1,
        }
        .into());
    }
    loop {
        let mut frames = EventFrames::default();
        let mut first_seq = None;
        let mut last_seq = None;
        let view = tx.view;
        node.reader
            .events_encoded_after(
                *cursor,
                SUBSCRIBE_PAGE_EVENTS,
                SUBSCRIBE_PAGE_BYTES,
                |seq, encoded| {
                    view.frame(encoded, &mut frames)
                        .map_err(|err| StoreError::Corrupt {
                            what: "history",
                            detail: format!("seq {seq}: {err}"),
                        })?;
                    first_seq.get_or_insert(seq);
                    last_seq = Some(seq);
                    Ok(())
                },
            )
            .map_err(ApiError::from)?;
        let (Some(first_seq), Some(last_seq)) = (first_seq, last_seq) else {
            return Ok(Ok(()));
        };
        if first_seq != *cursor + 1 {
            // Retention deleted the next events while this stream read the ones before.
            return Err(ApiError::CursorBelowRetention {
                cursor: *cursor,
                deleted_through: first_seq - 1,
            }
            .into());
        }
        if let Err(stop) = tx
            .send_message(pb::SubscribeResponse::encoded(frames))
            .await
        {
            return Ok(Err(stop));
        }
        *cursor = last_seq;
    }
}

async fn stream(
    node: &Node,
    mut cursor: u64,
    mut feed: broadcast::Receiver<crate::store::EventBatch>,
    mut out: Out<'_>,
) -> Result<(), Status> {
    let tx = &mut out;
    if catch_up(node, &mut cursor, tx).await?.is_err() {
        return Ok(());
    }
    loop {
        let heartbeat_due = tx.last_sent + SUBSCRIBE_HEARTBEAT;
        let batch = tokio::select! {
            received = feed.recv() => received,
            () = tx.tx.closed() => return Ok(()),
            () = tokio::time::sleep_until(heartbeat_due) => {
                if tx.send_message(pb::SubscribeResponse::default()).await.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        match batch {
            Ok(batch) => {
                let events = &batch.events;
                // Seqs are contiguous within a batch: skip those the client has.
                let skip = events.partition_point(|e| e.seq <= cursor);
                match events.get(skip) {
                    // Contiguous with what the client has: send straight from memory, the
                    // batch's one encoding unless this view changes an event in it.
                    Some(first) if first.seq == cursor + 1 => {
                        let last_seq = events.last().map_or(cursor, |e| e.seq);
                        let sent = if tx.view.changes_any(&events[skip..]) {
                            tx.send(events[skip..].to_vec()).await
                        } else {
                            tx.send_message(pb::SubscribeResponse::shared(&batch.frames, skip))
                                .await
                        };
                        if sent.is_err() {
                            return Ok(());
                        }
                        cursor = last_seq;
                    }
                    // Already sent (read from storage before it was published).
                    None if !events.is_empty() => {}
                    // A gap, or a snapshot install: storage has the truth.
                    _ => {
                        if catch_up(node, &mut cursor, tx).await?.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    cursor,
                    "subscriber fell behind the feed; reading storage"
                );
                if catch_up(node, &mut cursor, tx).await?.is_err() {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                return Err(ApiError::ShuttingDown.into());
            }
        }
    }
}
