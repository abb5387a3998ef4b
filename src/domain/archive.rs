//! The archive mark: how far the store's history has been archived elsewhere, and for how
//! many days the store keeps deduplicating eventIds (rules `V4`).
//!
//! `store.archived` (aggregateType `store`, aggregateId = the store's id, payload
//! `{"throughSeq": N, "retainDays": D}`) says that the events up to seq N are kept
//! somewhere else (the cloud, issue 19; until then an admin's `pos-hub cluster
//! archive-mark`), so that a hub may delete its history files behind N once they are older
//! than D days. Only an admin may write it (`api::auth::check_admin_events`); the mark only
//! moves forward, and only over seqs already in the log.
//!
//! Once a store has a mark, an event whose eventId is a UUIDv7 made more than D days
//! before the hub's time is refused `EVENT_BEYOND_RETENTION` (after dedupe: an id the
//! history still holds is answered `DUPLICATE` as always). That is what makes deleting
//! history safe for dedupe, with every node deciding alike whether or not it has deleted
//! its own files yet: a file goes only once its last event is `ID_CLOCK_AHEAD_MS` older
//! than the horizon, so a resend of any event in it (whose id its device made at most that
//! far ahead of the hub) carries an id time at or before the horizon, and is refused
//! everywhere. Ids that carry no time (not v7) and ids made further ahead are kept in the
//! live state from their acceptance on (`outlives_its_history`, `State::keep_id`), so dedupe
//! finds them on every node, a fresh one included, whatever history it holds. Before the
//! first mark nothing is refused, whatever its age, since nothing can have been deleted.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::apply::Ctx;
use super::outcome::{RejectCode, Rejection};
use super::rules::ID_CLOCK_AHEAD_MS;

pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// `store.archived`'s validated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub through_seq: u64,
    pub retain_days: u64,
}

/// The store's archive mark, as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Archive {
    /// The events up to this seq are archived elsewhere.
    pub through_seq: u64,
    /// How many days eventIds stay deduplicated: history files older than this (and
    /// behind `through_seq`) may be deleted, and events made before it are refused.
    pub retain_days: u64,
    /// Hub time of the `store.archived` event, ms since the Unix epoch.
    pub marked_at_ms: u64,
    /// Seq of the `store.archived` event.
    pub seq: u64,
    /// The device (an admin's) that wrote the mark.
    pub by: String,
}

impl Archive {
    /// The retention horizon at hub time `hub_time_ms`: events whose ids were made at or
    /// before it are refused, ms since the Unix epoch.
    pub fn horizon_ms(&self, hub_time_ms: u64) -> u64 {
        hub_time_ms.saturating_sub(self.retain_days.saturating_mul(DAY_MS))
    }
}

/// The time a UUIDv7 carries (its first 48 bits, Unix ms); `None` for other versions.
pub fn id_time_ms(id: &Uuid) -> Option<u64> {
    (id.get_version_num() == 7).then(|| (id.as_u128() >> 80) as u64)
}

/// Whether dedupe must keep `event_id`, accepted at hub time `hub_time_ms`, after its
/// event leaves the history: the retention refusal covers only UUIDv7s made at most
/// `ID_CLOCK_AHEAD_MS` ahead of the hub, so ids of other versions (no time) and ids made
/// further ahead are kept (in the live state, 16 bytes and a seq each).
pub fn outlives_its_history(event_id: &Uuid, hub_time_ms: u64) -> bool {
    id_time_ms(event_id).is_none_or(|made| made > hub_time_ms.saturating_add(ID_CLOCK_AHEAD_MS))
}

/// The mark `store.archived` writes over `existing`, or why it is refused.
pub(crate) fn decide(
    mark: Mark,
    existing: Option<Archive>,
    store_id: &str,
    ctx: &Ctx,
) -> Result<Archive, Rejection> {
    let event = ctx.event;
    if event.aggregate_id != store_id {
        return Err(Rejection::new(
            RejectCode::MalformedEvent,
            format!(
                "store.archived marks this store: its aggregateId must be {store_id:?}, the \
                 store's id"
            ),
        ));
    }
    let last = ctx.seq - 1;
    if mark.through_seq > last {
        return Err(Rejection::new(
            RejectCode::MalformedPayload,
            format!(
                "payload.throughSeq {} is past the end of the log (seq {last}): only \
                 committed events can be archived",
                mark.through_seq
            ),
        ));
    }
    if let Some(existing) = existing
        && mark.through_seq < existing.through_seq
    {
        return Err(Rejection::new(
            RejectCode::MalformedPayload,
            format!(
                "payload.throughSeq {} is behind the store's mark (archived through seq {}, \
                 set at seq {}): the mark never moves back",
                mark.through_seq, existing.through_seq, existing.seq
            ),
        ));
    }
    Ok(Archive {
        through_seq: mark.through_seq,
        retain_days: mark.retain_days,
        marked_at_ms: ctx.hub_time_ms,
        seq: ctx.seq,
        by: event.actor.device_id.clone(),
    })
}

/// `EVENT_BEYOND_RETENTION` for an event whose UUIDv7 was made at or before the
/// retention horizon of `archive` at hub time `hub_time_ms`.
pub(crate) fn check_age(
    archive: &Archive,
    event_id: &Uuid,
    hub_time_ms: u64,
) -> Result<(), Rejection> {
    let Some(made_ms) = id_time_ms(event_id) else {
        return Ok(());
    };
    let horizon = archive.horizon_ms(hub_time_ms);
    if made_ms > horizon {
        return Ok(());
    }
    let made = chrono::DateTime::from_timestamp_millis(made_ms as i64)
        .map_or_else(|| format!("{made_ms} ms"), |t| t.to_rfc3339());
    Err(Rejection::new(
        RejectCode::EventBeyondRetention,
        format!(
            "eventId {event_id} was made at {made} (its UUIDv7 time), more than {} days \
             before the hub's time: the store deduplicates eventIds for {} days (archive \
             mark at seq {}), so this event could be one already archived, and it is \
             refused. If it is still wanted, send it again with a new eventId.",
            archive.retain_days, archive.retain_days, archive.seq
        ),
    ))
}
