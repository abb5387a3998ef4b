//! `ApiError`: every way the client API refuses a call, and the one place each becomes a
//! gRPC status (code, message, and the metadata a program reads instead of the message).
//! Handlers return `ApiError`s; tonic gets a `Status` through `From<ApiError>`.

use std::time::Duration;

use tonic::Status;

use crate::auth::token::{Role, TokenError};
use crate::proto::convert::{OutcomeCountMismatch, UnknownEnumValue};
use crate::raft::node::WriteError;
use crate::raft_types::NodeId;
use crate::store::StoreError;
use crate::wire::{APPEND_EVENTS_MAX, RETRY_AFTER_METADATA};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that is not valid for this hub.
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("role {} may not administer the group; role admin may", .role.as_str())]
    NotAdmin { role: Role },
    #[error("{which} is for realm {event_realm}; the token is for {token_realm}")]
    ForeignRealm {
        which: String,
        event_realm: String,
        token_realm: String,
    },
    #[error(
        "{which} is written as device {device:?}, but the token is for device {token_device:?}"
    )]
    Impersonation {
        which: String,
        device: String,
        token_device: String,
    },
    #[error(
        "role {role} may only write {role} ticket events; {which} is {event_type}",
        role = .role.as_str()
    )]
    RoleMayNotWrite {
        role: Role,
        which: String,
        event_type: String,
    },
    #[error(
        "role {role} may not write {event_type} ({which}): only an admin {what}",
        role = .role.as_str()
    )]
    AdminOnlyEvent {
        role: Role,
        which: String,
        event_type: String,
        /// What the event does, and the command an admin uses for it.
        what: &'static str,
    },
    #[error(
        "{which} names clock.deviceId {clock_device:?} but the token is for device \
         {token_device:?}; a device stamps only its own clock"
    )]
    ClockImpersonation {
        which: String,
        clock_device: String,
        token_device: String,
    },
    #[error(
        "role {role} may not {what}; {which} needs a manager's token",
        role = .role.as_str()
    )]
    ManagerOnly {
        role: Role,
        which: String,
        what: &'static str,
    },
    #[error(
        "{which} is {bytes} bytes encoded; at most {max} are allowed per event",
        max = crate::domain::rules::EVENT_BYTES_MAX
    )]
    EventTooLarge { which: String, bytes: usize },
    #[error(
        "{which} is marked redacted: only a hub marks events, on what it streams to kitchen \
         and bar screens, and a marked event cannot be appended"
    )]
    RedactedAppend { which: String },
    #[error(
        "limit {limit} is more than a page holds ({})",
        super::paging::PAGE_ITEMS_MAX
    )]
    PageTooLarge { limit: u32 },
    #[error("Append needs at least one event")]
    EmptyAppend,
    #[error("Append carries {count} events; at most {APPEND_EVENTS_MAX} are allowed per call")]
    TooManyEvents { count: usize },
    #[error(transparent)]
    UnknownEnum(#[from] UnknownEnumValue),
    /// A request field out of its range, named in the message.
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(
        "{code}: cursor {cursor} is below this store's retention: the events up to seq \
         {deleted_through} were archived and deleted from the hubs. Read the live state \
         (Bootstrap) and subscribe from the seq it names",
        code = crate::wire::CURSOR_BELOW_RETENTION
    )]
    CursorBelowRetention { cursor: u64, deleted_through: u64 },
    #[error(
        "order {0:?} does not exist (a paid or cancelled order leaves the live state {kept} \
         events after it closed; its events stay in the history: `pos-hub log dump`)",
        kept = crate::domain::rules::CLOSED_KEPT_EVENTS
    )]
    OrderNotFound(String),
    #[error(
        "device {device:?} is over its rate limit ({events_per_s} events/s, bursts of {burst}; \
         an event counts once per started {} bytes); retry after {} ms",
        super::limits::RATE_BYTES_PER_EVENT, retry_after_ms(*.retry_after)
    )]
    RateLimited {
        device: String,
        events_per_s: f64,
        burst: f64,
        retry_after: Duration,
    },
    #[error(
        "device {device:?} is over its read limit ({reads_per_s} reads/s, bursts of {burst}); \
         retry after {} ms",
        retry_after_ms(*.retry_after)
    )]
    ReadRateLimited {
        device: String,
        reads_per_s: f64,
        burst: f64,
        retry_after: Duration,
    },
    #[error(
        "device {device:?} already has {open} open subscriptions (at most {max}); close one first"
    )]
    TooManySubscriptions {
        device: String,
        open: usize,
        max: usize,
    },
    #[error(
        "this node's log ends at seq {last_seq}, before the device's cursor {cursor}, and it \
         cannot tell whether it is only behind ({reason}): ask another node"
    )]
    CannotTellIfBehind {
        last_seq: u64,
        cursor: u64,
        reason: WriteError,
    },
    /// Writes, linearizable reads and leadership: `WriteError`'s own mapping.
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error("cannot remove the last voter")]
    LastVoter,
    /// openraft refused a membership change (leadership moved, a change in progress).
    #[error("{0}")]
    MembershipRefused(String),
    #[error("node {0} did not catch up in time; it stays a learner")]
    CatchUpTimeout(NodeId),
    #[error("node {0} is not caught up; try again later")]
    NotCaughtUp(NodeId),
    #[error("node {winner} won the election instead of node {wanted}; run transfer-leader again")]
    LostElection { winner: NodeId, wanted: NodeId },
    #[error("node {0} did not take over leadership")]
    DidNotTakeOver(NodeId),
    /// Another node of the group could not be reached or refused; its own status.
    #[error("node {node}: {status}")]
    Peer { node: NodeId, status: Status },
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A bug: the call reached its handler without passing the caller check.
    #[error("the caller check did not run for this call; refusing it")]
    Unchecked,
    /// A failure to read this node's storage: not the client's fault.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// A bug: the state machine's answer does not fit the request.
    #[error(transparent)]
    Outcomes(#[from] OutcomeCountMismatch),
}

fn retry_after_ms(delay: Duration) -> u128 {
    delay.as_millis().max(1)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::Token(TokenError::WrongRealm { .. }) => Status::permission_denied(message),
            ApiError::Token(TokenError::DenyListUnreadable(_)) => Status::unavailable(message),
            ApiError::Token(_) => Status::unauthenticated(message),
            ApiError::NotAdmin { .. }
            | ApiError::ForeignRealm { .. }
            | ApiError::Impersonation { .. }
            | ApiError::RoleMayNotWrite { .. }
            | ApiError::AdminOnlyEvent { .. }
            | ApiError::ClockImpersonation { .. }
            | ApiError::ManagerOnly { .. } => Status::permission_denied(message),
            ApiError::EventTooLarge { .. }
            | ApiError::RedactedAppend { .. }
            | ApiError::PageTooLarge { .. } => Status::invalid_argument(message),
            ApiError::EmptyAppend
            | ApiError::TooManyEvents { .. }
            | ApiError::UnknownEnum(_)
            | ApiError::InvalidRequest(_)
            | ApiError::NotAVoter(_) => Status::invalid_argument(message),
            ApiError::OrderNotFound(_) | ApiError::NotAMember(_) => Status::not_found(message),
            ApiError::AlreadyVoter(_) => Status::already_exists(message),
            ApiError::RateLimited { retry_after, .. }
            | ApiError::ReadRateLimited { retry_after, .. } => {
                let mut status = Status::resource_exhausted(message);
                if let Ok(value) = retry_after_ms(retry_after).to_string().parse() {
                    status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
                }
                status
            }
            ApiError::TooManySubscriptions { .. } => Status::resource_exhausted(message),
            ApiError::CannotTellIfBehind { .. }
            | ApiError::NotCaughtUp(_)
            | ApiError::DidNotTakeOver(_)
            | ApiError::ShuttingDown => Status::unavailable(message),
            ApiError::Write(err) => err.into(),
            ApiError::LastVoter | ApiError::MembershipRefused(_) => {
                Status::failed_precondition(message)
            }
            ApiError::CatchUpTimeout(_) => Status::deadline_exceeded(message),
            ApiError::CursorBelowRetention { .. } => Status::out_of_range(message),
            ApiError::LostElection { .. } => Status::aborted(message),
            ApiError::Peer { status, .. } => Status::new(status.code(), message),
            ApiError::Storage(err) => {
                tracing::error!(%err, "storage read failed");
                Status::internal(message)
            }
            ApiError::Outcomes(_) | ApiError::Unchecked => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code_and_a_message_that_names_the_problem() {
        let cases: Vec<(ApiError, tonic::Code, &str)> = vec![
            (
                ApiError::CursorBelowRetention {
                    cursor: 10,
                    deleted_through: 4096,
                },
                tonic::Code::OutOfRange,
                "CURSOR_BELOW_RETENTION: cursor 10 is below this store's retention: the events up to seq 4096 were archived",
            ),
            (
                TokenError::Missing.into(),
                tonic::Code::Unauthenticated,
                "no token",
            ),
            (
                ApiError::NotAdmin { role: Role::Till },
                tonic::Code::PermissionDenied,
                "role till may not administer",
            ),
            (
                ApiError::RoleMayNotWrite {
                    role: Role::Kds,
                    which: "event 0 (e-1)".into(),
                    event_type: "order.created".into(),
                },
                tonic::Code::PermissionDenied,
                "role kds may only write kds ticket events; event 0 (e-1) is order.created",
            ),
            (
                ApiError::AdminOnlyEvent {
                    role: Role::Manager,
                    which: "event 0 (e-1)".into(),
                    event_type: "device.revoked".into(),
                    what: "revokes devices",
                },
                tonic::Code::PermissionDenied,
                "role manager may not write device.revoked (event 0 (e-1)): only an admin revokes devices",
            ),
            (
                TokenError::Revoked {
                    device: "till-1".into(),
                    revoked_at_s: 1_795_788_476,
                    seq: 3,
                }
                .into(),
                tonic::Code::Unauthenticated,
                "device \"till-1\" was revoked at 2026-11-27T14:07:56+00:00 (seq 3)",
            ),
            (
                TokenError::DenyListUnreadable("io error".into()).into(),
                tonic::Code::Unavailable,
                "cannot read the deny-list of revoked devices (io error); refused to be safe",
            ),
            (
                TokenError::ExpiredOnline {
                    exp: 1,
                    now: 2,
                    probe: "cloud:443".into(),
                }
                .into(),
                tonic::Code::Unauthenticated,
                "this hub is online (it reaches cloud:443), so expired tokens get no offline grace",
            ),
            (
                ApiError::EmptyAppend,
                tonic::Code::InvalidArgument,
                "at least one event",
            ),
            (
                ApiError::RedactedAppend {
                    which: "event 0 (e-1)".into(),
                },
                tonic::Code::InvalidArgument,
                "event 0 (e-1) is marked redacted",
            ),
            (
                ApiError::TooManyEvents { count: 2000 },
                tonic::Code::InvalidArgument,
                "2000 events; at most 1024",
            ),
            (
                ApiError::OrderNotFound("o-9".into()),
                tonic::Code::NotFound,
                "order \"o-9\" does not exist",
            ),
            (
                ApiError::AlreadyVoter(2),
                tonic::Code::AlreadyExists,
                "node 2",
            ),
            (
                ApiError::LastVoter,
                tonic::Code::FailedPrecondition,
                "last voter",
            ),
            (
                ApiError::CatchUpTimeout(4),
                tonic::Code::DeadlineExceeded,
                "node 4",
            ),
            (
                ApiError::LostElection {
                    winner: 3,
                    wanted: 2,
                },
                tonic::Code::Aborted,
                "node 3 won the election instead of node 2",
            ),
            (
                ApiError::ShuttingDown,
                tonic::Code::Unavailable,
                "shutting down",
            ),
        ];
        for (err, code, words) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(words),
                "{status:?} lacks {words:?}"
            );
        }
    }

    #[test]
    fn a_rate_limit_carries_its_delay_as_metadata() {
        let status = Status::from(ApiError::RateLimited {
            device: "kds-1".into(),
            events_per_s: 1.0,
            burst: 1.0,
            retry_after: Duration::from_micros(10),
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("\"kds-1\""), "{status:?}");
        let delay = status.metadata().get(RETRY_AFTER_METADATA);
        assert_eq!(
            delay.and_then(|v| v.to_str().ok()),
            Some("1"),
            "at least 1 ms"
        );
    }

    #[test]
    fn a_wrong_realm_token_is_permission_denied_and_other_token_faults_unauthenticated() {
        let realm = |s: &str| crate::domain::Realm::new("t-demo", s);
        let wrong = ApiError::Token(TokenError::WrongRealm {
            token: realm("s-999"),
            hub: realm("s-001"),
        });
        assert_eq!(Status::from(wrong).code(), tonic::Code::PermissionDenied);
        let expired = ApiError::Token(TokenError::Expired { exp: 1, now: 2 });
        assert_eq!(Status::from(expired).code(), tonic::Code::Unauthenticated);
    }
}
