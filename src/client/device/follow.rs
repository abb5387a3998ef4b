//! The follow loop: the committed log from the device's cursor, applied to the read model
//! and settling the queued events it contains; a silent, stalled or ended subscription
//! moves to another node. A device with nothing committed, or whose cursor the store's
//! retention passed, first takes the live state at one seq (`Hub/Bootstrap`) and follows
//! from there.

use tokio::time::Instant;

use super::backoff::Backoff;
use super::{Device, STALL_CHECK_EVERY, SUBSCRIPTION_SILENCE, SUBSCRIPTION_STALL};
use crate::client::ClientError;
use crate::client::hub::CallError;
use crate::client::model::{Changes, Layer};
use crate::domain::rules::LAMPORT_MAX;
use crate::proto::{convert, pb};

impl Device {
    pub(super) async fn follow_loop(self) {
        let mut backoff = Backoff::new();
        // A device with nothing committed starts from the live state, not from seq 1; so
        // does one whose cursor the store's retention passed.
        let mut bootstrap = self.cursor() == 0;
        loop {
            if bootstrap {
                if let Err(err) = self.bootstrap().await {
                    tracing::info!(%err, "bootstrap failed; trying again");
                    self.publish(None, Some(Some(err.to_string())));
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
                bootstrap = false;
            }
            let cursor = self.cursor();
            let mut subscription = match self.inner.hub.subscribe(cursor).await {
                Ok(subscription) => subscription,
                Err(CallError::Refused(status)) if below_retention(&status) => {
                    self.cursor_below_retention(cursor, &status);
                    bootstrap = true;
                    continue;
                }
                Err(err) => {
                    self.publish(None, Some(Some(err.to_string())));
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            if subscription.hello.snapshot_needed {
                tracing::warn!(
                    cursor,
                    "the hub's log is behind this device's copy; starting over"
                );
                self.reset_model();
                bootstrap = true;
                continue;
            }
            self.publish(Some(Some(subscription.node.clone())), None);
            // Any message, heartbeats included, shows the node is alive; only events
            // applied show the stream keeps up.
            let mut last_message = Instant::now();
            let mut last_progress = Instant::now();
            let mut seen_cursor = cursor;
            let mut stall_check = tokio::time::interval(STALL_CHECK_EVERY);
            loop {
                let message = tokio::select! {
                    message = subscription.stream.message() => message,
                    () = tokio::time::sleep_until(last_message + SUBSCRIPTION_SILENCE) => {
                        // Not even a heartbeat: the node is paused, or the link is gone
                        // without closing. The next node, at once.
                        tracing::info!(node = %subscription.node, silent = ?SUBSCRIPTION_SILENCE, "subscription silent; moving to another node");
                        self.inner.hub.failed(&subscription.node);
                        self.publish(None, Some(Some(format!("{} fell silent", subscription.node))));
                        break;
                    }
                    _ = stall_check.tick() => {
                        let (cursor, acked) = {
                            let state = self.state();
                            (state.model.cursor(), state.acked_seq)
                        };
                        if cursor > seen_cursor {
                            seen_cursor = cursor;
                            last_progress = Instant::now();
                        }
                        if acked > cursor && last_progress.elapsed() >= SUBSCRIPTION_STALL {
                            tracing::info!(node = %subscription.node, cursor, acked, "subscription stalled; moving to another node");
                            self.inner.hub.failed(&subscription.node);
                            break;
                        }
                        continue;
                    }
                };
                match message {
                    // A heartbeat: the node is alive; nothing to apply, no cursor moved.
                    Ok(Some(batch)) if batch.events.is_empty() => {
                        last_message = Instant::now();
                    }
                    Ok(Some(batch)) => {
                        backoff.reset();
                        last_message = Instant::now();
                        last_progress = Instant::now();
                        if let Err(err) = self.apply_committed(&batch.events) {
                            tracing::warn!(%err, "resetting the device's read model");
                            self.reset_model();
                            bootstrap = true;
                            break;
                        }
                    }
                    Ok(None) => {
                        // The node ended the stream (shutting down): another one, after a pause.
                        self.inner.hub.failed(&subscription.node);
                        tokio::time::sleep(backoff.next()).await;
                        break;
                    }
                    Err(status) if below_retention(&status) => {
                        self.cursor_below_retention(self.cursor(), &status);
                        bootstrap = true;
                        break;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "subscription ended");
                        self.inner.hub.failed(&subscription.node);
                        self.publish(None, Some(Some(status.message().to_owned())));
                        tokio::time::sleep(backoff.next()).await;
                        break;
                    }
                }
            }
        }
    }

    /// Replaces the committed model with a hub's live state (`Hub/Bootstrap`) and settles
    /// the queued events the hub answered at or below its seq; never with a state older
    /// than the device's copy (`HubClient::bootstrap`). A hub without Bootstrap (an older
    /// release) leaves the model as it is: the device follows from its cursor.
    async fn bootstrap(&self) -> Result<(), CallError> {
        let live = match self.inner.hub.bootstrap(self.cursor()).await {
            Ok(live) => live,
            Err(CallError::Refused(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!("the hub has no Bootstrap; following its log from the cursor");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let seq = live.seq;
        let diverged =
            |e: convert::WireModelError| CallError::Retry(format!("bootstrap at seq {seq}: {e}"));
        let mut layer = Layer {
            last_seq: live.seq,
            lamport: live.lamport.min(LAMPORT_MAX),
            ..Layer::default()
        };
        for order in live.orders {
            let order = convert::order_from_pb(order).map_err(diverged)?;
            layer.orders.insert(order.id.clone(), order);
        }
        for ticket in live.tickets {
            let ticket = convert::ticket_from_pb(ticket).map_err(diverged)?;
            layer
                .tickets
                .insert((ticket.kind, ticket.id.clone()), ticket);
        }
        for stock in live.stocks {
            let stock = convert::stock_from_pb(stock);
            layer.stock.insert(stock.sku.clone(), stock);
        }
        let (orders, tickets) = (layer.orders.len(), layer.tickets.len());
        {
            let mut state = self.state();
            let lamport = state.lamport.max(layer.lamport);
            let settled: Vec<(u64, u64)> = state
                .queued
                .values()
                .filter_map(|entry| entry.seq.filter(|s| *s <= seq).map(|s| (entry.number, s)))
                .collect();
            let numbers: Vec<u64> = settled.iter().map(|(n, _)| *n).collect();
            if let Err(err) = self
                .inner
                .outbox
                .replace_committed(&layer, lamport, &numbers)
            {
                return Err(CallError::Retry(format!("storing the live state: {err}")));
            }
            state.model.replace_committed(layer);
            state.lamport = lamport;
            state.settle(settled);
        }
        tracing::info!(
            seq,
            orders,
            tickets,
            "bootstrapped from the hub's live state"
        );
        self.publish(None, Some(None));
        Ok(())
    }

    fn cursor_below_retention(&self, cursor: u64, status: &tonic::Status) {
        tracing::warn!(
            cursor,
            reason = status.message(),
            "the store's retention passed this device's cursor; bootstrapping from the live state"
        );
    }

    fn reset_model(&self) {
        let mut state = self.state();
        if let Err(err) = self.inner.outbox.reset_committed() {
            tracing::error!(%err, "cannot reset the device's read model");
            return;
        }
        state.model.reset();
    }

    /// Applies a batch of committed events to the read model, settles the queued events
    /// they contain, and records it all in one write.
    fn apply_committed(&self, events: &[pb::Event]) -> Result<(), ClientError> {
        let mut state = self.state();
        let mut changes = Changes::default();
        let mut lamport = state.lamport;
        for event in events {
            let event =
                convert::event_from_pb(event).map_err(|e| ClientError::Diverged(e.to_string()))?;
            if event.seq.is_some_and(|seq| seq <= state.model.cursor()) {
                continue; // a resent batch: already applied
            }
            // A clock over the bound (accepted before rules V2) must not carry this
            // device's clock out of the range every client holds.
            if event.clock.lamport <= LAMPORT_MAX {
                lamport = lamport.max(event.clock.lamport);
            }
            state
                .model
                .apply_committed(&event, &mut changes)
                .map_err(|e| ClientError::Diverged(e.to_string()))?;
        }
        let cursor = state.model.cursor();
        // Settled: queued events now in the committed model, and answered ones it passed.
        let mut settled = Vec::new();
        for (id, seq) in &changes.event_ids {
            if let Some(number) = state.by_id.get(id).copied() {
                settled.push((number, *seq));
            }
        }
        for entry in state.queued.values() {
            if entry.seq.is_some_and(|seq| seq <= cursor)
                && !settled.iter().any(|(n, _)| *n == entry.number)
            {
                settled.push((entry.number, entry.seq.unwrap_or(0)));
            }
        }
        let numbers: Vec<u64> = settled.iter().map(|(n, _)| *n).collect();
        self.inner
            .outbox
            .committed(&changes, cursor, lamport, &numbers)?;
        state.lamport = lamport;
        state.settle(settled);
        drop(state);
        self.publish(None, Some(None));
        Ok(())
    }
}

/// Subscribe's answer to a cursor the store's retention passed (`wire::CURSOR_BELOW_RETENTION`).
fn below_retention(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .starts_with(crate::wire::CURSOR_BELOW_RETENTION)
}
