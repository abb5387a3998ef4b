//! Events between their `pos.v1` protobuf form and the domain's `Event`.
//!
//! The payload is a `google.protobuf.Struct` on the wire and a JSON object in the domain.
//! Struct numbers are doubles, so a JSON integer survives the trip only when a double can
//! hold it exactly (|n| ≤ 2^53); larger ones, and NaN or infinity coming from the wire, are
//! refused here with a message naming the field rather than silently changed.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::domain::{Actor, Clock, Event, Rules};
use crate::proto::pb;

/// The largest integer a double represents exactly, and so the largest a payload may carry.
pub const PAYLOAD_INTEGER_ABS_MAX: u64 = 1 << 53;
/// Deepest nesting of objects and lists in a payload (the payload object is level 1). Real
/// payloads use three or four levels; protobuf decoding stops at 100 wire levels, and each
/// payload level costs two, so anything deeper than ~48 could be accepted from JSON yet
/// never decoded again.
pub const PAYLOAD_DEPTH_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "payload field `{path}`: the number {value} cannot be carried exactly (integers must be within ±2^53)"
    )]
    InexactNumber { path: String, value: String },
    #[error("payload field `{path}`: {value} is not a finite number")]
    NonFiniteNumber { path: String, value: f64 },
    #[error("payload field `{path}` is nested deeper than {PAYLOAD_DEPTH_MAX} levels")]
    TooDeep { path: String },
}

fn too_deep(path: &str, depth: usize) -> Result<(), ConvertError> {
    if depth > PAYLOAD_DEPTH_MAX {
        return Err(ConvertError::TooDeep {
            path: if path.is_empty() {
                "payload".into()
            } else {
                path.to_owned()
            },
        });
    }
    Ok(())
}

/// Domain → wire. Fails only on payload numbers a protobuf `Struct` cannot hold exactly.
pub fn event_to_pb(event: &Event) -> Result<pb::Event, ConvertError> {
    Ok(pb::Event {
        event_id: event.event_id.clone(),
        tenant_id: event.tenant_id.clone(),
        store_id: event.store_id.clone(),
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        version: event.version,
        r#type: event.event_type.clone(),
        at: event.at.clone(),
        actor: Some(pb::Actor {
            device_id: event.actor.device_id.clone(),
            user_id: event.actor.user_id.clone().unwrap_or_default(),
        }),
        clock: Some(pb::Clock {
            lamport: event.clock.lamport,
            device_id: event.clock.device_id.clone(),
        }),
        payload: Some(map_to_struct(&event.payload, "", 1)?),
        force: event.force,
        seq: event.seq.unwrap_or(0),
        hub_time: event.hub_time.unwrap_or(0),
        rules: event.rules.map_or(0, Rules::number),
        redacted: event.redacted,
    })
}

/// Wire → domain. Fails only on NaN or infinite payload numbers, which JSON cannot carry.
pub fn event_from_pb(event: &pb::Event) -> Result<Event, ConvertError> {
    let actor = event.actor.clone().unwrap_or_default();
    let clock = event.clock.clone().unwrap_or_default();
    let payload = match &event.payload {
        Some(payload) => struct_to_map(payload, "", 1)?,
        None => Map::new(),
    };
    Ok(Event {
        event_id: event.event_id.clone(),
        tenant_id: event.tenant_id.clone(),
        store_id: event.store_id.clone(),
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        version: event.version,
        event_type: event.r#type.clone(),
        at: event.at.clone(),
        actor: Actor {
            device_id: actor.device_id,
            user_id: (!actor.user_id.is_empty()).then_some(actor.user_id),
        },
        clock: Clock {
            lamport: clock.lamport,
            device_id: clock.device_id,
        },
        payload,
        force: event.force,
        seq: (event.seq != 0).then_some(event.seq),
        hub_time: (event.hub_time != 0).then_some(event.hub_time),
        // A device's own (unaccepted) event may carry anything here; only the hub stamps it.
        rules: Rules::try_from(event.rules).ok(),
        redacted: event.redacted,
    })
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn map_to_struct(
    map: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<prost_types::Struct, ConvertError> {
    too_deep(path, depth)?;
    let mut fields = std::collections::BTreeMap::new();
    for (key, value) in map {
        fields.insert(
            key.clone(),
            json_to_value(value, &child_path(path, key), depth)?,
        );
    }
    Ok(prost_types::Struct { fields })
}

fn json_to_value(
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<prost_types::Value, ConvertError> {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(number_to_f64(n, path)?),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => {
            too_deep(path, depth + 1)?;
            let mut values = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                values.push(json_to_value(item, &format!("{path}[{i}]"), depth + 1)?);
            }
            Kind::ListValue(prost_types::ListValue { values })
        }
        Value::Object(map) => Kind::StructValue(map_to_struct(map, path, depth + 1)?),
    };
    Ok(prost_types::Value { kind: Some(kind) })
}

fn number_to_f64(n: &Number, path: &str) -> Result<f64, ConvertError> {
    let inexact = || ConvertError::InexactNumber {
        path: path.to_owned(),
        value: n.to_string(),
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > PAYLOAD_INTEGER_ABS_MAX {
            return Err(inexact());
        }
        return Ok(i as f64);
    }
    if n.is_u64() {
        // Only reached above i64::MAX, which is far beyond 2^53.
        return Err(inexact());
    }
    n.as_f64().ok_or_else(inexact)
}

fn struct_to_map(
    s: &prost_types::Struct,
    path: &str,
    depth: usize,
) -> Result<Map<String, Value>, ConvertError> {
    too_deep(path, depth)?;
    let mut map = Map::new();
    for (key, value) in &s.fields {
        map.insert(
            key.clone(),
            value_to_json(value, &child_path(path, key), depth)?,
        );
    }
    Ok(map)
}

fn value_to_json(
    value: &prost_types::Value,
    path: &str,
    depth: usize,
) -> Result<Value, ConvertError> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(x)) => f64_to_json(*x, path)?,
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            too_deep(path, depth + 1)?;
            let mut items = Vec::with_capacity(list.values.len());
            for (i, item) in list.values.iter().enumerate() {
                items.push(value_to_json(item, &format!("{path}[{i}]"), depth + 1)?);
            }
            Value::Array(items)
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s, path, depth + 1)?),
    })
}

/// A double that holds an integer becomes a JSON integer again, so `1250` stays `1250`
/// (not `1250.0`) and the domain can insist that money is integral.
fn f64_to_json(x: f64, path: &str) -> Result<Value, ConvertError> {
    if !x.is_finite() {
        return Err(ConvertError::NonFiniteNumber {
            path: path.to_owned(),
            value: x,
        });
    }
    if x.fract() == 0.0 && x.abs() <= PAYLOAD_INTEGER_ABS_MAX as f64 {
        return Ok(Value::Number(Number::from(x as i64)));
    }
    Number::from_f64(x)
        .map(Value::Number)
        .ok_or(ConvertError::NonFiniteNumber {
            path: path.to_owned(),
            value: x,
        })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    const ORDER_FLOW: &str = include_str!("../../../examples/order-flow.jsonl");

    #[test]
    fn every_example_line_round_trips_through_the_protobuf_event() {
        let mut lines = 0;
        for (n, line) in ORDER_FLOW.lines().enumerate() {
            let original: Value = serde_json::from_str(line).expect("example line is JSON");
            let event: Event = serde_json::from_str(line).expect("example line is an Event");
            let bytes = event_to_pb(&event)
                .expect("converts to protobuf")
                .encode_to_vec();
            let decoded = pb::Event::decode(bytes.as_slice()).expect("decodes");
            let back = event_from_pb(&decoded).expect("converts back");
            let json = serde_json::to_value(&back).expect("serializes");
            assert_eq!(
                json,
                original,
                "line {} changed on the way through pos.v1.Event",
                n + 1
            );
            lines += 1;
        }
        assert_eq!(lines, 15, "the example flow has 15 events");
    }

    #[test]
    fn hub_stamps_round_trip_as_camel_case_json() {
        let line = ORDER_FLOW.lines().next().expect("one line");
        let mut event: Event = serde_json::from_str(line).expect("an Event");
        event.seq = Some(7);
        event.hub_time = Some(1_764_000_000_000);
        let back = event_from_pb(&event_to_pb(&event).expect("converts")).expect("converts back");
        let json = serde_json::to_value(&back).expect("serializes");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["hubTime"], 1_764_000_000_000u64);
        assert_eq!(back, event);
    }

    #[test]
    fn integers_beyond_two_to_the_53_are_refused_with_their_path() {
        let mut event = Event::default();
        event.payload.insert(
            "items".into(),
            serde_json::json!([{ "unitPrice": 9_007_199_254_740_993u64 }]),
        );
        let err = event_to_pb(&event).expect_err("not exact as a double");
        assert_eq!(
            err,
            ConvertError::InexactNumber {
                path: "items[0].unitPrice".into(),
                value: "9007199254740993".into()
            }
        );
    }

    #[test]
    fn non_finite_numbers_from_the_wire_are_refused() {
        let mut pb_event = event_to_pb(&Event::default()).expect("converts");
        let payload = pb_event.payload.get_or_insert_with(Default::default);
        payload.fields.insert(
            "delta".into(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        let err = event_from_pb(&pb_event).expect_err("NaN is not JSON");
        assert!(
            matches!(err, ConvertError::NonFiniteNumber { ref path, .. } if path == "delta"),
            "{err}"
        );
    }

    #[test]
    fn fractional_numbers_stay_fractional() {
        let mut event = Event::default();
        event.payload.insert("ratio".into(), serde_json::json!(0.5));
        let back = event_from_pb(&event_to_pb(&event).expect("converts")).expect("converts back");
        assert_eq!(back.payload["ratio"], serde_json::json!(0.5));
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// `{"a": {"a": … {"a": 1}}}` with `levels` objects below the payload.
    fn nested(levels: usize) -> Map<String, Value> {
        let mut value = serde_json::json!(1);
        for _ in 0..levels {
            value = serde_json::json!({ "a": value });
        }
        let mut payload = Map::new();
        payload.insert("a".into(), value);
        payload
    }

    #[test]
    fn payloads_nested_past_the_limit_are_refused_both_ways() {
        let mut event = Event {
            payload: nested(PAYLOAD_DEPTH_MAX - 2),
            ..Event::default()
        };
        let ok = event_to_pb(&event).expect("within the limit");
        assert_eq!(event_from_pb(&ok).expect("back").payload, event.payload);

        event.payload = nested(PAYLOAD_DEPTH_MAX);
        let err = event_to_pb(&event).expect_err("too deep");
        assert!(matches!(err, ConvertError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains("deeper than 32 levels"), "{err}");

        // The same from the wire: a Struct nested too deep.
        let mut deep = prost_types::Value {
            kind: Some(Kind::NumberValue(1.0)),
        };
        for _ in 0..PAYLOAD_DEPTH_MAX {
            deep = prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: vec![deep],
                })),
            };
        }
        let mut wire = ok;
        wire.payload = Some(prost_types::Struct {
            fields: [("a".to_owned(), deep)].into(),
        });
        assert!(matches!(
            event_from_pb(&wire),
            Err(ConvertError::TooDeep { .. })
        ));
    }
}
