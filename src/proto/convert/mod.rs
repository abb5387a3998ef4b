//! Every conversion between the `pos.v1` protobuf messages and the crate's own types, one
//! module per kind of message:
//! - `event`: `pb::Event` ⇄ `domain::Event` (payload `Struct` ⇄ JSON, checked both ways);
//! - `outcome`: `domain::Outcome` → `pb::AppendResult`, and a result back to what a device
//!   makes of it (`Answer`);
//! - `read_model`: orders, tickets, stock and the menu to their wire form, and the read
//!   filters (ticket kind, status) back to the domain's enums.

mod event;
mod outcome;
mod read_model;

pub use event::{
    ConvertError, PAYLOAD_DEPTH_MAX, PAYLOAD_INTEGER_ABS_MAX, event_from_pb, event_to_pb,
};
pub use outcome::{
    Answer, OutcomeCountMismatch, Refusal, RefusalCode, UNKNOWN_STATUS, append_results,
    outcome_to_result, read_result,
};
pub use read_model::{
    UnknownEnumValue, WireModelError, get_order_request, is_linearizable, menu, order,
    order_from_pb, order_status, order_status_filter, stock, stock_from_pb, ticket, ticket_from_pb,
    ticket_kind, ticket_kind_filter, ticket_status, ticket_status_filter,
};
