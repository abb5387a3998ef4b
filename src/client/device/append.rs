//! Appending: a draft becomes an event in the device's envelope, checked against the
//! device's own view (the hub's rules, `domain::apply`), written to the durable outbox,
//! applied to the view, and handed to the send loop.

use uuid::Uuid;

use super::{Appended, Device, Draft};
use crate::client::ClientError;
use crate::client::model::ReadModel;
use crate::client::outbox::Queued;
use crate::clock::{now_ms, now_rfc3339};
use crate::domain::rules::LAMPORT_MAX;
use crate::domain::ticket::TicketKind;
use crate::domain::{Actor, Clock, Event, Outcome, RejectCode};
use crate::proto::convert;

impl Device {
    /// Appends one event: checked against the device's view, written to the outbox and
    /// on disk, applied to the view. Refused here (with the reason, and the lock holder
    /// for LOCKED) when the device's own view already rejects it.
    pub fn append(&self, draft: Draft) -> Result<Appended, ClientError> {
        let mut appended = self.append_all(vec![draft])?;
        appended
            .pop()
            .ok_or_else(|| ClientError::Config("nothing appended".into()))
    }

    /// Appends several events with one disk flush; all or none are queued.
    pub fn append_all(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, ClientError> {
        let mut state = self.state();
        // A hub from before rules V2 may report a clock over the bound: not one to follow.
        let lamport_floor = Some(self.inner.hub.lamport_seen()).filter(|&l| l <= LAMPORT_MAX);
        // The events are stamped past the reported clock: checked against it too, or a
        // device that has had Hello but not yet the events behind that clock refuses its
        // own event as too far ahead.
        state.model.observe_hub_clock(lamport_floor.unwrap_or(0));
        state.fresh_model();
        let mut lamport = state.lamport.max(lamport_floor.unwrap_or(0));
        let mut next = state.next;
        let mut entries = Vec::with_capacity(drafts.len());
        let mut appended = Vec::with_capacity(drafts.len());
        let now = now_ms();
        for draft in drafts {
            let version = match draft.version {
                Some(v) => v,
                None => next_version(&state.model, &draft),
            };
            // Never wraps: past the bound, the rules below refuse it (CLOCK_OUT_OF_RANGE).
            lamport = lamport.saturating_add(1);
            let event_id = Uuid::now_v7().to_string();
            let event = Event {
                event_id: event_id.clone(),
                tenant_id: self.inner.realm.tenant_id.clone(),
                store_id: self.inner.realm.store_id.clone(),
                aggregate_type: draft.aggregate_type,
                aggregate_id: draft.aggregate_id,
                version,
                event_type: draft.event_type,
                at: now_rfc3339(),
                actor: Actor {
                    device_id: self.inner.device_id.clone(),
                    user_id: self.inner.user_id.clone(),
                },
                clock: Clock {
                    lamport,
                    device_id: self.inner.device_id.clone(),
                },
                payload: draft.payload,
                force: draft.force,
                seq: None,
                hub_time: None,
                rules: None,
                redacted: false,
            };
            // The event must also survive the trip to protobuf.
            if let Err(err) = convert::event_to_pb(&event) {
                state.model.rebuild_needed();
                return Err(ClientError::Refused {
                    code: RejectCode::MalformedEvent.into(),
                    message: err.to_string(),
                    lock_holder: None,
                });
            }
            match state.model.apply_local(&event, now) {
                Outcome::Accepted { .. } => {}
                Outcome::Duplicate { .. } => {}
                Outcome::Rejected {
                    code,
                    message,
                    lock_holder,
                } => {
                    // Undo the earlier drafts of this call in the view.
                    state.model.rebuild_needed();
                    return Err(ClientError::Refused {
                        code: code.into(),
                        message,
                        lock_holder,
                    });
                }
            }
            appended.push(Appended {
                number: next,
                event_id,
                version,
                lamport,
            });
            entries.push(Queued {
                number: next,
                event,
                seq: None,
            });
            next += 1;
        }
        if let Err(err) = self.inner.outbox.queue(&entries, lamport, next) {
            state.model.rebuild_needed();
            return Err(err.into());
        }
        state.lamport = lamport;
        state.next = next;
        for entry in entries {
            if let Ok(id) = Uuid::parse_str(&entry.event.event_id) {
                state.by_id.insert(id, entry.number);
            }
            state.queued.insert(entry.number, entry);
        }
        drop(state);
        self.inner.queued_tx.notify_one();
        self.publish(None, None);
        Ok(appended)
    }
}

/// The next version for a draft: one past the device's view of the aggregate (1 creates).
fn next_version(model: &ReadModel, draft: &Draft) -> u64 {
    let current = match draft.aggregate_type.as_str() {
        "order" => model.order(&draft.aggregate_id).map(|o| o.head.version),
        "kds" => model
            .ticket(TicketKind::Kds, &draft.aggregate_id)
            .map(|t| t.head.version),
        "bds" => model
            .ticket(TicketKind::Bds, &draft.aggregate_id)
            .map(|t| t.head.version),
        _ => None, // stock counters and payments take version 1
    };
    current.map_or(1, |v| v + 1)
}
