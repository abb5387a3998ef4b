//! A Subscribe stream on one node, recording every batch it delivers.

use std::sync::Arc;
use std::time::Duration;

use pos_hub::proto::pb;
use tokio::sync::watch;

use super::{OP_TIMEOUT, Workload};
use crate::history::Entry;

/// A stream silent this long (two heartbeats missed) is reopened.
const SILENCE: Duration = Duration::from_millis(pos_hub::wire::SUBSCRIBE_SILENCE_MS);

impl Workload {
    /// A Subscribe stream on one node, reopened from the last seq seen after every error
    /// and after two seconds without a message (heartbeats included).
    pub async fn stream(self: Arc<Self>, stream: u32, node: u64, mut stop: watch::Receiver<bool>) {
        let mut cursor = 0;
        while !*stop.borrow() {
            let request = pb::SubscribeRequest { cursor };
            let mut client = self.client(node);
            let opened = tokio::time::timeout(OP_TIMEOUT, client.subscribe(request)).await;
            let mut messages = match opened {
                Ok(Ok(reply)) => reply.into_inner(),
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = messages.message() => m,
                    _ = stop.changed() => return,
                    // Not even a heartbeat: the node is paused or unreachable; reopen.
                    _ = tokio::time::sleep(SILENCE) => break,
                };
                match message {
                    // A heartbeat: nothing delivered.
                    Ok(Some(batch)) if batch.events.is_empty() => {}
                    Ok(Some(batch)) => {
                        let events: Vec<(u64, String)> = batch
                            .events
                            .iter()
                            .map(|e| (e.seq, e.event_id.clone()))
                            .collect();
                        let from = cursor;
                        if let Some((last, _)) = events.last() {
                            cursor = *last;
                        }
                        self.recorder.record(Entry::Deliver {
                            stream,
                            node,
                            t: self.recorder.now(),
                            from,
                            events,
                        });
                    }
                    _ => break,
                }
            }
        }
    }
}
