//! Append outcomes on the wire: the hub's `domain::Outcome` → `pb::AppendResult`, and a
//! result read back by a device (`read_result`), with the reject code as the domain's enum
//! wherever this build knows it and as an explicit `Unknown` where it does not.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{Outcome, RejectCode};
use crate::proto::pb;

/// The state machine answered a different number of outcomes than the entry had events:
/// a bug, reported rather than mislabelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{outcomes} outcomes for {events} events")]
pub struct OutcomeCountMismatch {
    pub outcomes: usize,
    pub events: usize,
}

/// One result per event, in request order, each labelled with its event's id (`ids`).
pub fn append_results(
    ids: &[String],
    outcomes: &[Outcome],
) -> Result<Vec<pb::AppendResult>, OutcomeCountMismatch> {
    if outcomes.len() != ids.len() {
        return Err(OutcomeCountMismatch {
            outcomes: outcomes.len(),
            events: ids.len(),
        });
    }
    Ok(ids
        .iter()
        .zip(outcomes)
        .map(|(id, outcome)| outcome_to_result(id, outcome))
        .collect())
}

/// The one conversion of an outcome to its wire form.
pub fn outcome_to_result(event_id: &str, outcome: &Outcome) -> pb::AppendResult {
    let mut result = pb::AppendResult {
        event_id: event_id.to_owned(),
        ..Default::default()
    };
    match outcome {
        Outcome::Accepted { seq } => {
            result.status = pb::AppendStatus::Accepted as i32;
            result.seq = *seq;
        }
        Outcome::Duplicate { seq } => {
            result.status = pb::AppendStatus::Duplicate as i32;
            result.seq = *seq;
        }
        Outcome::Rejected {
            code,
            message,
            lock_holder,
        } => {
            result.status = pb::AppendStatus::Rejected as i32;
            result.code = code.as_str().to_owned();
            result.message = message.clone();
            result.lock_holder = lock_holder.clone().unwrap_or_default();
        }
    }
    result
}

/// Why a device's event was refused, as the device learns it: from one of the hub's rules
/// (decided by the hub, or already by the device's own view), or from the hub refusing the
/// request that carried it. Written as its stable string (`STALE_VERSION`,
/// `InvalidArgument`, …) wherever it is shown or stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// One of the rules of `domain::apply`.
    Rule(RejectCode),
    /// A reject code this build does not know: the hub runs a newer version. Kept as the
    /// hub wrote it, never mistaken for a known code.
    Unknown(String),
    /// The hub refused the request carrying the event for what it carried (it could not be
    /// decoded, or was too large), with this gRPC status code.
    Request(tonic::Code),
}

/// The name of an append status this build does not know, as an `Unknown` code.
pub const UNKNOWN_STATUS: &str = "UNKNOWN_STATUS";

impl RefusalCode {
    /// The code a hub wrote in an `AppendResult`.
    pub fn from_wire(code: &str) -> RefusalCode {
        match RejectCode::parse(code) {
            Some(rule) => RefusalCode::Rule(rule),
            None => RefusalCode::Unknown(code.to_owned()),
        }
    }

    /// The rule, when it is one this build knows.
    pub fn rule(&self) -> Option<RejectCode> {
        match self {
            RefusalCode::Rule(rule) => Some(*rule),
            _ => None,
        }
    }
}

impl From<RejectCode> for RefusalCode {
    fn from(rule: RejectCode) -> Self {
        RefusalCode::Rule(rule)
    }
}

impl PartialEq<RejectCode> for RefusalCode {
    fn eq(&self, other: &RejectCode) -> bool {
        self.rule() == Some(*other)
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalCode::Rule(rule) => f.write_str(rule.as_str()),
            RefusalCode::Unknown(code) => f.write_str(code),
            RefusalCode::Request(code) => write!(f, "{code:?}"),
        }
    }
}

/// gRPC status codes by their names as `Display` writes them (`InvalidArgument`).
fn grpc_code(name: &str) -> Option<tonic::Code> {
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|code| format!("{code:?}") == name)
}

impl FromStr for RefusalCode {
    type Err = std::convert::Infallible;

    /// The inverse of `Display`: a known rule, a gRPC code name, or else an unknown code.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match (RejectCode::parse(s), grpc_code(s)) {
            (Some(rule), _) => RefusalCode::Rule(rule),
            (None, Some(code)) => RefusalCode::Request(code),
            (None, None) => RefusalCode::Unknown(s.to_owned()),
        })
    }
}

/// Stored as its string, so a device's dead letters read the same across versions.
impl Serialize for RefusalCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RefusalCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let Ok(code) = text.parse();
        Ok(code)
    }
}

/// Why one event was refused, as a device keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    /// For a person: names the problem.
    pub message: String,
    /// `LOCKED` only: the device holding the order.
    pub lock_holder: Option<String>,
}

/// What one `AppendResult` tells a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// In the log at `seq` (ACCEPTED, or DUPLICATE of an earlier send).
    Committed {
        seq: u64,
    },
    Refused(Refusal),
}

/// Reads a hub's result. An append status this build does not know is a refusal with the
/// `Unknown` code `UNKNOWN_STATUS`, so the event is shown to a person rather than dropped.
pub fn read_result(result: pb::AppendResult) -> Answer {
    match pb::AppendStatus::try_from(result.status) {
        Ok(pb::AppendStatus::Accepted | pb::AppendStatus::Duplicate) => {
            Answer::Committed { seq: result.seq }
        }
        Ok(pb::AppendStatus::Rejected) => Answer::Refused(Refusal {
            code: RefusalCode::from_wire(&result.code),
            message: result.message,
            lock_holder: (!result.lock_holder.is_empty()).then_some(result.lock_holder),
        }),
        Ok(pb::AppendStatus::Unspecified) | Err(_) => Answer::Refused(Refusal {
            code: RefusalCode::Unknown(UNKNOWN_STATUS.to_owned()),
            message: format!("the hub answered append status {}", result.status),
            lock_holder: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn every_outcome_reads_back_as_the_device_should_see_it() {
        let locked = Outcome::Rejected {
            code: RejectCode::Locked,
            message: "order o-1 is locked by till-2 until hub time 9 ms".into(),
            lock_holder: Some("till-2".into()),
        };
        let outcomes = [
            Outcome::Accepted { seq: 7 },
            Outcome::Duplicate { seq: 3 },
            Outcome::rejected(RejectCode::StaleVersion, "version 2 is stale"),
            locked,
        ];
        let results =
            append_results(&ids(&["a", "b", "c", "d"]), &outcomes).expect("one per event");
        let ids: Vec<&str> = results.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let answers: Vec<Answer> = results.into_iter().map(read_result).collect();
        assert_eq!(answers[0], Answer::Committed { seq: 7 });
        assert_eq!(answers[1], Answer::Committed { seq: 3 });
        assert_eq!(
            answers[2],
            Answer::Refused(Refusal {
                code: RefusalCode::Rule(RejectCode::StaleVersion),
                message: "version 2 is stale".into(),
                lock_holder: None,
            })
        );
        match &answers[3] {
            Answer::Refused(refusal) => {
                assert_eq!(refusal.code, RejectCode::Locked);
                assert_eq!(refusal.lock_holder.as_deref(), Some("till-2"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_count_mismatch_is_an_error_not_a_mislabel() {
        let err = append_results(&ids(&["a"]), &[]).expect_err("mismatch");
        assert_eq!(err.to_string(), "0 outcomes for 1 events");
    }

    #[test]
    fn unknown_codes_and_statuses_are_explicit_not_mistaken_for_known_ones() {
        let newer = pb::AppendResult {
            status: pb::AppendStatus::Rejected as i32,
            code: "TABLE_RESERVED".into(),
            message: "from a newer hub".into(),
            ..Default::default()
        };
        assert!(matches!(
            read_result(newer),
            Answer::Refused(Refusal { code: RefusalCode::Unknown(c), .. }) if c == "TABLE_RESERVED"
        ));
        let odd = pb::AppendResult {
            status: 42,
            ..Default::default()
        };
        match read_result(odd) {
            Answer::Refused(refusal) => {
                assert_eq!(refusal.code, RefusalCode::Unknown(UNKNOWN_STATUS.into()));
                assert!(refusal.message.contains("42"), "{refusal:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_code_round_trips_through_its_string() {
        let codes = [
            RefusalCode::Rule(RejectCode::PaymentMismatch),
            RefusalCode::Request(tonic::Code::InvalidArgument),
            RefusalCode::Request(tonic::Code::OutOfRange),
            RefusalCode::Unknown("TABLE_RESERVED".into()),
        ];
        for code in codes {
            let text = code.to_string();
            assert_eq!(text.parse::<RefusalCode>(), Ok(code.clone()), "{text}");
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<RefusalCode>(&json).expect("deserializes"),
                code
            );
        }
        assert_eq!(
            RefusalCode::Request(tonic::Code::InvalidArgument).to_string(),
            "InvalidArgument"
        );
        for rule in RejectCode::ALL {
            assert_eq!(RejectCode::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(RejectCode::parse("LOCKED "), None);
    }
}
