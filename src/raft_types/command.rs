//! What a Raft log entry carries, and what applying it answers.

use prost::Message;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::{self, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{Outcome, Rules};
use crate::proto::pb;

/// A batch of events as committed to the log. `hub_time_ms` is stamped once by the leader
/// when it proposes the entry; `apply` uses it for lock expiry and never reads a clock, so
/// every node that applies this entry reaches the same state. `rules` is the rules version
/// the leader decided the entry under: every node, and every later replay, applies the
/// entry under that version (`domain::rules`).
///
/// Events are kept as the protobuf messages the devices sent: the log stores exactly the
/// bytes that came in, and decoding them is part of the deterministic `apply`.
///
/// Encoding: a tuple `(hub_time_ms | VERSIONED, events, rules)`. Entries written before
/// rules versions were recorded are the pair `(hub_time_ms, events)` and decode as rules
/// `V1`; the top bit of the first field tells them apart (hub time in ms stays below 2^63
/// for 292 million years). An entry naming a rules version this build does not know fails
/// to decode, so the node stops instead of deciding it under other rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub hub_time_ms: u64,
    pub rules: Rules,
    pub events: Vec<pb::Event>,
}

/// Set in the first field of an entry that records its rules version.
const VERSIONED: u64 = 1 << 63;

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.hub_time_ms & VERSIONED != 0 {
            return Err(ser::Error::custom(format!(
                "hub time {} ms does not fit below 2^63",
                self.hub_time_ms
            )));
        }
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(&(self.hub_time_ms | VERSIONED))?;
        tuple.serialize_element(&Events(&self.events))?;
        tuple.serialize_element(&self.rules.number())?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a log entry's command: (hub time, events[, rules version])")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let first: u64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let OwnedEvents(events) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if first & VERSIONED == 0 {
                    return Ok(Command {
                        hub_time_ms: first,
                        rules: Rules::V1,
                        events,
                    });
                }
                let number: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let rules = Rules::try_from(number).map_err(crate::codec::custom)?;
                Ok(Command {
                    hub_time_ms: first & !VERSIONED,
                    rules,
                    events,
                })
            }
        }
        deserializer.deserialize_tuple(3, CommandVisitor)
    }
}

/// The events of a command, written as a list of protobuf byte strings.
struct Events<'a>(&'a [pb::Event]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        protobuf_list::serialize(self.0, serializer)
    }
}

struct OwnedEvents(Vec<pb::Event>);

impl<'de> Deserialize<'de> for OwnedEvents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        protobuf_list::deserialize(deserializer).map(OwnedEvents)
    }
}

/// One outcome per event of the command, in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub outcomes: Vec<Outcome>,
}

/// Serializes protobuf messages as a sequence of byte strings, so that the log entry keeps
/// the wire encoding (stable field numbers) whatever serde format frames the entry.
mod protobuf_list {
    use super::*;

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    struct OwnedBytes(Vec<u8>);

    impl<'de> Deserialize<'de> for OwnedBytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BytesVisitor;
            impl<'de> Visitor<'de> for BytesVisitor {
                type Value = OwnedBytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a protobuf-encoded event")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OwnedBytes, E> {
                    Ok(OwnedBytes(v.to_vec()))
                }
                fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<OwnedBytes, E> {
                    Ok(OwnedBytes(v))
                }
                // Human-readable formats (JSON) write bytes as a list of numbers.
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OwnedBytes, A::Error> {
                    let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(b) = seq.next_element::<u8>()? {
                        bytes.push(b);
                    }
                    Ok(OwnedBytes(bytes))
                }
            }
            deserializer.deserialize_byte_buf(BytesVisitor)
        }
    }

    pub fn serialize<S: Serializer>(
        events: &[pb::Event],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(events.len()))?;
        for event in events {
            seq.serialize_element(&Bytes(&event.encode_to_vec()))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<pb::Event>, D::Error> {
        let encoded = Vec::<OwnedBytes>::deserialize(deserializer)?;
        encoded
            .into_iter()
            .map(|OwnedBytes(bytes)| {
                pb::Event::decode(bytes.as_slice()).map_err(crate::codec::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        let event = pb::Event {
            event_id: "0193a1f0-0001-7000-8000-000000000001".into(),
            aggregate_type: "order".into(),
            version: 3,
            ..Default::default()
        };
        Command {
            hub_time_ms: 1_764_000_000_123,
            rules: Rules::CURRENT,
            events: vec![event.clone(), event],
        }
    }

    #[test]
    fn command_round_trips_through_the_codec_and_json() {
        let command = sample();
        let bin = crate::codec::to_vec(&command).expect("encodes");
        assert_eq!(
            crate::codec::from_slice::<Command>(&bin).expect("decodes"),
            command
        );
        let json = serde_json::to_string(&command).expect("json encodes");
        assert_eq!(
            serde_json::from_str::<Command>(&json).expect("json decodes"),
            command
        );
    }

    #[test]
    fn a_corrupt_event_fails_to_decode_instead_of_turning_into_defaults() {
        let command = sample();
        let mut bin = crate::codec::to_vec(&command).expect("encodes");
        let event = command.events[0].encode_to_vec();
        let at = bin
            .windows(event.len())
            .position(|w| w == event.as_slice())
            .expect("the event's bytes are in the entry");
        bin[at] = 0xff; // a field tag with an invalid wire type
        assert!(crate::codec::from_slice::<Command>(&bin).is_err());
    }

    /// The shape entries had before rules versions were recorded.
    #[derive(Serialize)]
    struct Legacy {
        hub_time_ms: u64,
        #[serde(with = "protobuf_list")]
        events: Vec<pb::Event>,
    }

    #[test]
    /// Data format 1 (bincode), read only when a data dir of that format is moved over.
    fn an_entry_written_before_rules_versions_decodes_as_rules_v1() {
        let current = sample();
        let legacy = Legacy {
            hub_time_ms: current.hub_time_ms,
            events: current.events.clone(),
        };
        let bin = bincode::serialize(&legacy).expect("encodes");
        let decoded = bincode::deserialize::<Command>(&bin).expect("decodes");
        assert_eq!(decoded.rules, Rules::V1);
        assert_eq!(decoded.hub_time_ms, current.hub_time_ms);
        assert_eq!(decoded.events, current.events);
        // And the new encoding is not read as the old one.
        let bin = bincode::serialize(&current).expect("encodes");
        assert_eq!(
            bincode::deserialize::<Command>(&bin)
                .expect("decodes")
                .rules,
            Rules::CURRENT
        );
    }

    #[test]
    fn an_entry_under_rules_this_build_does_not_know_fails_to_decode() {
        let mut bin = crate::codec::to_vec(&sample()).expect("encodes");
        // The rules version is the last field: a varint, one byte below 128.
        let last = bin.len() - 1;
        assert_eq!(u32::from(bin[last]), Rules::CURRENT.number());
        bin[last] = 99;
        let err = crate::codec::from_slice::<Command>(&bin).expect_err("unknown rules");
        assert!(err.to_string().contains("rules version 99"), "{err}");
    }
}
