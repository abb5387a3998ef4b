//! The send loop: the outbox goes to the hub in order, in batches, each event under its
//! own eventId (a resend is answered DUPLICATE); answers settle events or make them dead
//! letters.

use uuid::Uuid;

use super::backoff::Backoff;
use super::{Device, Final, SEND_BATCH_MAX};
use crate::client::hub::CallError;
use crate::client::outbox::{DeadLetter, Queued};
use crate::client::{Refusal, RefusalCode};
use crate::domain::RejectCode;
use crate::domain::rules::LAMPORT_MAX;
use crate::proto::convert::{self, Answer};
use crate::proto::pb;

impl Device {
    pub(super) async fn send_loop(self) {
        let mut backoff = Backoff::new();
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                let notified = self.inner.queued_tx.notified();
                // Re-check: an append may have landed between the two.
                if self.next_batch().is_empty() {
                    notified.await;
                }
                continue;
            }
            let mut events = Vec::with_capacity(batch.len());
            for entry in &batch {
                match convert::event_to_pb(&entry.event) {
                    Ok(event) => events.push(event),
                    Err(err) => {
                        // Checked at append; a store written by another version may differ.
                        let why = (entry, refusal(RejectCode::MalformedEvent.into(), err));
                        self.settle_answers(Vec::new(), vec![why]);
                        events.clear();
                        break;
                    }
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.inner.hub.append(events).await {
                Ok(results) => {
                    backoff.reset();
                    self.record_results(&batch, results);
                    self.publish(Some(self.inner.hub.current()), Some(None));
                }
                Err(CallError::RateLimited(delay)) => {
                    self.publish(None, Some(Some(format!("rate limited for {delay:?}"))));
                    tokio::time::sleep(delay).await;
                }
                Err(CallError::Refused(status))
                    if refuses_the_request(status.code()) && batch.len() > 1 =>
                {
                    // Find the one event the hub refuses to even decode: send singly.
                    self.state().single = true;
                }
                Err(CallError::Refused(status)) if refuses_the_request(status.code()) => {
                    let code = RefusalCode::Request(status.code());
                    let why = (&batch[0], refusal(code, status.message()));
                    self.settle_answers(Vec::new(), vec![why]);
                }
                Err(err) => {
                    tracing::debug!(%err, "outbox: send failed; backing off");
                    self.publish(Some(None), Some(Some(err.to_string())));
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// The first unanswered events, in outbox order.
    fn next_batch(&self) -> Vec<Queued> {
        let state = self.state();
        let max = if state.single { 1 } else { SEND_BATCH_MAX };
        state
            .queued
            .values()
            .filter(|q| q.seq.is_none())
            .take(max)
            .cloned()
            .collect()
    }

    fn record_results(&self, batch: &[Queued], results: Vec<pb::AppendResult>) {
        let mut acked = Vec::new();
        let mut dead = Vec::new();
        let mut restamp = Vec::new();
        let floor = self.store_clock();
        for (entry, result) in batch.iter().zip(results) {
            match convert::read_result(result) {
                Answer::Committed { seq } => acked.push((entry, seq)),
                // The device's clock ran ahead of the store's (or the store was reset):
                // the event is fine, its stamp is not. Re-stamped once from the store's
                // clock; refused again at that stamp, it is a dead letter like any other.
                Answer::Refused(refusal)
                    if refusal.code == RefusalCode::Rule(RejectCode::ClockOutOfRange)
                        && entry.event.clock.lamport > floor.saturating_add(1) =>
                {
                    restamp.push(entry.clone());
                }
                Answer::Refused(refusal) => dead.push((entry, refusal)),
            }
        }
        self.settle_answers(acked, dead);
        if !restamp.is_empty() {
            self.restamp(restamp, floor);
        }
        self.state().single = false;
    }

    /// The store's clock as the hub last reported it, if it is one every client holds.
    /// The last report, not the highest ever seen: after a store reset the highest is the
    /// old store's, and re-stamping from it would be refused again.
    fn store_clock(&self) -> u64 {
        Some(self.inner.hub.lamport_reported())
            .filter(|&l| l <= LAMPORT_MAX)
            .unwrap_or(0)
    }

    /// Gives `entries` fresh clocks just past `floor` and moves the device's clock back
    /// there, on disk first; the send loop sends them again under their own eventIds.
    fn restamp(&self, entries: Vec<Queued>, floor: u64) {
        let mut state = self.state();
        let mut lamport = floor;
        let mut updated = Vec::with_capacity(entries.len());
        for mut entry in entries {
            if !state.queued.contains_key(&entry.number) {
                continue;
            }
            lamport += 1;
            tracing::warn!(event = %entry.event.event_id, from = entry.event.clock.lamport, to = lamport, "outbox: the hub refused the event's clock; re-stamped from the store's");
            entry.event.clock.lamport = lamport;
            updated.push(entry);
        }
        if let Err(err) = self.inner.outbox.queue(&updated, lamport, state.next) {
            // Not re-stamped on disk: sent again as it was, refused again, retried.
            tracing::warn!(%err, "outbox: cannot record re-stamped events");
            return;
        }
        state.lamport = lamport;
        for entry in updated {
            state.queued.insert(entry.number, entry);
        }
        state.model.rebuild_needed();
    }

    /// Records answered events (their seqs) and refused ones (dead letters), on disk and
    /// in memory; a refusal makes the view replay without the refused events.
    fn settle_answers(&self, acked: Vec<(&Queued, u64)>, dead: Vec<(&Queued, Refusal)>) {
        let mut state = self.state();
        let acked: Vec<Queued> = acked
            .into_iter()
            .filter(|(q, _)| state.queued.contains_key(&q.number))
            .map(|(q, seq)| Queued {
                seq: Some(seq),
                ..q.clone()
            })
            .collect();
        let letters: Vec<DeadLetter> = dead
            .into_iter()
            .filter(|(q, _)| state.queued.contains_key(&q.number))
            .map(|(q, refusal)| DeadLetter {
                number: q.number,
                event: q.event.clone(),
                code: refusal.code,
                message: refusal.message,
                lock_holder: refusal.lock_holder,
            })
            .collect();
        if let Err(err) = self.inner.outbox.answered(&acked, &letters) {
            // Unrecorded answers are asked for again: the hub answers DUPLICATE or the
            // same rejection, so nothing is lost.
            tracing::warn!(%err, "outbox: cannot record the hub's answers");
            return;
        }
        for entry in acked {
            let seq = entry.seq.unwrap_or(0);
            state.acked_seq = state.acked_seq.max(seq);
            // Already past it: the model has it, nothing left to settle.
            if seq <= state.model.cursor() {
                state.queued.remove(&entry.number);
                if let Ok(id) = Uuid::parse_str(&entry.event.event_id) {
                    state.by_id.remove(&id);
                }
                state.remember(entry.number, Final::Committed { seq });
            } else {
                state.queued.insert(entry.number, entry);
            }
        }
        if !letters.is_empty() {
            state.model.rebuild_needed();
        }
        for letter in letters {
            tracing::warn!(event = %letter.event.event_id, code = %letter.code, message = %letter.message, "outbox: the hub rejected an event");
            state.queued.remove(&letter.number);
            if let Ok(id) = Uuid::parse_str(&letter.event.event_id) {
                state.by_id.remove(&id);
            }
            state.remember(
                letter.number,
                Final::Rejected {
                    code: letter.code.clone(),
                    message: letter.message.clone(),
                    lock_holder: letter.lock_holder.clone(),
                },
            );
            state.dead.insert(letter.number, letter);
        }
    }
}

/// A refusal decided on this device, with no lock holder.
fn refusal(code: RefusalCode, message: impl ToString) -> Refusal {
    Refusal {
        code,
        message: message.to_string(),
        lock_holder: None,
    }
}

/// Codes by which the hub refuses a request for what it carries (it cannot be decoded,
/// or is too large): sent again unchanged it would be refused again.
fn refuses_the_request(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::InvalidArgument | tonic::Code::OutOfRange)
}
