//! Rules `V4`: the archive mark (`store.archived`) and the retention refusal.

use serde_json::json;
use uuid::Uuid;

use super::super::archive::{DAY_MS, id_time_ms};
use super::super::event::Event;
use super::super::outcome::{Outcome, RejectCode};
use super::super::rules::Rules;
use super::super::state::MemState;
use super::{T0, create_o1, ev, realm, state_with};

/// A `store.archived` event numbered `n`, from admin-1.
pub(super) fn mark(n: u128, through_seq: u64, retain_days: u64) -> Event {
    ev(
        n,
        "store",
        "s-001",
        1,
        "store.archived",
        "admin-1",
        json!({ "throughSeq": through_seq, "retainDays": retain_days }),
    )
}

/// A UUIDv7 made at `made_ms`, told apart by `n`.
pub(super) fn v7(made_ms: u64, n: u64) -> String {
    let bits = (u128::from(made_ms) << 80) | (0x7u128 << 76) | (0b10u128 << 62) | u128::from(n);
    Uuid::from_u128(bits).to_string()
}

/// An `inventory.adjusted` whose eventId is a UUIDv7 made at `made_ms`.
pub(super) fn made_at(n: u128, made_ms: u64) -> Event {
    let mut event = ev(
        n,
        "inventory",
        "FRIES",
        1,
        "inventory.adjusted",
        "till-1",
        json!({ "sku": "FRIES", "delta": 1 }),
    );
    event.event_id = v7(made_ms, n as u64);
    event
}

/// Orders o-1 (seq 1) and the mark through seq 1 for 7 days (seq 2), at T0.
fn marked() -> MemState {
    let mut state = state_with(&[create_o1(1)]);
    assert_eq!(
        state.apply(&mark(2, 1, 7), T0),
        Outcome::Accepted { seq: 2 }
    );
    state
}

fn code(outcome: &Outcome) -> Option<RejectCode> {
    match outcome {
        Outcome::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_uuid_v7_carries_its_time_and_other_versions_none() {
    let id = Uuid::parse_str(&v7(T0, 5)).expect("a uuid");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(id_time_ms(&id), Some(T0));
    assert_eq!(id_time_ms(&Uuid::now_v7()).map(|t| t > T0), Some(true));
    assert_eq!(id_time_ms(&Uuid::from_u128(5)), None);
    // A v4 (random) id: version bits 0100.
    assert_eq!(id_time_ms(&Uuid::from_u128((0x4u128 << 76) | 99)), None);
}

#[test]
fn the_mark_is_recorded_and_moves_only_forward() {
    let mut state = marked();
    let archive = state.archive.clone().expect("a mark");
    assert_eq!(
        (
            archive.through_seq,
            archive.retain_days,
            archive.seq,
            archive.marked_at_ms
        ),
        (1, 7, 2, T0)
    );
    assert_eq!(archive.by, "admin-1");

    // Forward (and to the same seq with another retention) is fine.
    assert_eq!(
        state.apply(&mark(3, 2, 30), T0 + 1),
        Outcome::Accepted { seq: 3 }
    );
    assert_eq!(
        state.apply(&mark(4, 2, 14), T0 + 2),
        Outcome::Accepted { seq: 4 }
    );
    assert_eq!(state.archive.as_ref().map(|a| a.retain_days), Some(14));

    let before = state.clone();
    let back = state.apply(&mark(5, 1, 14), T0 + 3);
    assert_eq!(code(&back), Some(RejectCode::MalformedPayload), "{back:?}");
    let Outcome::Rejected { message, .. } = back else {
        unreachable!()
    };
    assert!(message.contains("archived through seq 2") && message.contains("never moves back"));
    assert_eq!(state, before, "a refused mark changes nothing");
}

#[test]
fn a_mark_names_committed_seqs_of_this_store_and_a_retention_in_range() {
    let state = state_with(&[create_o1(1)]);
    let cases = [
        (
            mark(2, 2, 7),
            RejectCode::MalformedPayload,
            "past the end of the log (seq 1)",
        ),
        (
            mark(2, 1, 6),
            RejectCode::MalformedPayload,
            "between 7 and 3650",
        ),
        (
            mark(2, 1, 3651),
            RejectCode::MalformedPayload,
            "between 7 and 3650",
        ),
        (mark(2, 0, 7), RejectCode::MalformedPayload, "throughSeq"),
        (
            {
                let mut e = mark(2, 1, 7);
                e.aggregate_id = "s-002".into();
                e
            },
            RejectCode::MalformedEvent,
            "must be \"s-001\"",
        ),
        (
            {
                let mut e = mark(2, 1, 7);
                e.payload.insert("keep".into(), json!(true));
                e
            },
            RejectCode::MalformedPayload,
            "keep",
        ),
    ];
    for (event, want, words) in cases {
        let mut state = state.clone();
        let outcome = state.apply(&event, T0);
        let Outcome::Rejected { code, message, .. } = &outcome else {
            panic!("{:?}: accepted: {outcome:?}", event.payload);
        };
        assert_eq!(*code, want, "{message}");
        assert!(message.contains(words), "{message:?} should say {words:?}");
        assert!(state.archive.is_none());
    }
}

#[test]
fn before_rules_v4_the_store_aggregate_is_unknown() {
    let mut state = state_with(&[create_o1(1)]);
    let outcome = state.apply_under(&mark(2, 1, 7), T0, Rules::V3);
    assert_eq!(code(&outcome), Some(RejectCode::UnknownAggregateType));
}

#[test]
fn without_a_mark_an_event_of_any_age_is_accepted() {
    let mut state = MemState::new(realm());
    let ancient = made_at(1, T0 - 400 * DAY_MS);
    assert_eq!(state.apply(&ancient, T0), Outcome::Accepted { seq: 1 });
}

#[test]
fn with_a_mark_events_made_before_the_horizon_are_refused_and_others_accepted() {
    let now = T0 + 10 * DAY_MS;
    let mut state = marked();

    let before = state.clone();
    let old = state.apply(&made_at(10, now - 7 * DAY_MS), now);
    assert_eq!(
        code(&old),
        Some(RejectCode::EventBeyondRetention),
        "{old:?}"
    );
    let Outcome::Rejected { message, .. } = old else {
        unreachable!()
    };
    assert!(
        message.contains("more than 7 days") && message.contains("archive mark at seq 2"),
        "{message}"
    );
    assert_eq!(state, before, "a refused event changes nothing");

    // One millisecond inside the horizon is inside retention.
    let recent = state.apply(&made_at(11, now - 7 * DAY_MS + 1), now);
    assert_eq!(recent, Outcome::Accepted { seq: 3 });
    // An id that carries no time is left to dedupe.
    let timeless = ev(
        12,
        "inventory",
        "FRIES",
        2,
        "inventory.adjusted",
        "till-1",
        json!({ "sku": "FRIES", "delta": 1 }),
    );
    assert_eq!(state.apply(&timeless, now), Outcome::Accepted { seq: 4 });
}

#[test]
fn a_resend_the_history_still_holds_is_a_duplicate_even_past_the_horizon() {
    let mut state = MemState::new(realm());
    let made = T0 - DAY_MS;
    assert_eq!(
        state.apply(&made_at(1, made), T0),
        Outcome::Accepted { seq: 1 }
    );
    assert_eq!(
        state.apply(&mark(2, 1, 7), T0),
        Outcome::Accepted { seq: 2 }
    );
    let later = T0 + 30 * DAY_MS;
    assert_eq!(
        state.apply(&made_at(1, made), later),
        Outcome::Duplicate { seq: 1 },
        "dedupe answers first"
    );
    assert_eq!(
        code(&state.apply(&made_at(3, made), later)),
        Some(RejectCode::EventBeyondRetention),
        "an id it never saw, as old, is refused"
    );
}

#[test]
fn replaying_the_accepted_events_reaches_the_same_mark_and_verdicts() {
    let now = T0 + 10 * DAY_MS;
    let mut live = marked();
    live.apply(&mark(3, 2, 30), now);
    let refused = made_at(4, now - 31 * DAY_MS);
    assert_eq!(
        code(&live.apply(&refused, now)),
        Some(RejectCode::EventBeyondRetention)
    );

    let mut replayed = MemState::new(realm());
    for event in live.events.clone() {
        let rules = event.rules.unwrap_or(Rules::V1);
        let at = event.hub_time.unwrap_or_default();
        let mut fresh = event.clone();
        fresh.seq = None;
        fresh.hub_time = None;
        fresh.rules = None;
        assert!(matches!(
            replayed.apply_under(&fresh, at, rules),
            Outcome::Accepted { .. }
        ));
    }
    assert_eq!(replayed, live);
}
