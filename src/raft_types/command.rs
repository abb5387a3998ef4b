//! What a Raft log entry carries, and what applying it answers.

use prost::Message;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::Outcome;
use crate::proto::pb;

/// A batch of events as committed to the log. `hub_time_ms` is stamped once by the leader
/// when it proposes the entry; `apply` uses it for lock expiry and never reads a clock, so
/// every node that applies this entry reaches the same state.
///
/// Events are kept as the protobuf messages the devices sent: the log stores exactly the
/// bytes that came in, and decoding them is part of the deterministic `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub hub_time_ms: u64,
    #[serde(with = "protobuf_list")]
    pub events: Vec<pb::Event>,
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
            .map(|OwnedBytes(bytes)| pb::Event::decode(bytes.as_slice()).map_err(de::Error::custom))
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
            events: vec![event.clone(), event],
        }
    }

    #[test]
    fn command_round_trips_through_bincode_and_json() {
        let command = sample();
        let bin = bincode::serialize(&command).expect("bincode encodes");
        assert_eq!(
            bincode::deserialize::<Command>(&bin).expect("bincode decodes"),
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
        let mut bin = bincode::serialize(&sample()).expect("encodes");
        let last = bin.len() - 1;
        bin[last] = 0xff; // a field tag with an invalid wire type
        assert!(bincode::deserialize::<Command>(&bin).is_err());
    }
}
