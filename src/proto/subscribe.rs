//! `pos.v1.SubscribeResponse`, written by hand instead of generated (`build.rs` maps the
//! message here), so that a hub can send events as its history stores them: already
//! encoded, never decoded and encoded again. Catching a device up is then a copy of bytes,
//! where decoding and re-encoding each event's `Struct` payload cost most of the CPU.
//!
//! On the wire it is exactly the message `hub.proto` declares (`repeated Event events =
//! 1`): a receiver decodes it into `events`, whatever built it.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint};

use prost::Message as _;

use super::pb;

/// The field number of `events` in `SubscribeResponse`.
const EVENTS_FIELD: u32 = 1;

/// Events, some decoded (`events`) and some already encoded (`encoded`, which goes on the
/// wire after them). A decoded message has them all in `events`.
#[derive(Clone, Default, PartialEq)]
pub struct SubscribeResponse {
    /// Empty (and `encoded` too): a heartbeat. It moves no cursor.
    pub events: Vec<pb::Event>,
    encoded: Bytes,
}

impl std::fmt::Debug for SubscribeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeResponse")
            .field("events", &self.events)
            .field("encoded_bytes", &self.encoded.len())
            .finish()
    }
}

impl SubscribeResponse {
    /// A message carrying decoded events (none: a heartbeat).
    pub fn of(events: Vec<pb::Event>) -> Self {
        Self {
            events,
            encoded: Bytes::new(),
        }
    }

    /// A message carrying `frames`' events as they were encoded.
    pub fn encoded(frames: EventFrames) -> Self {
        Self {
            events: Vec::new(),
            encoded: Bytes::from(frames.bytes),
        }
    }

    /// A message carrying the events of `frames` from the `from`th on (counting from 0),
    /// sharing their bytes (nothing is copied).
    pub fn shared(frames: &SharedFrames, from: usize) -> Self {
        let start = match from.checked_sub(1) {
            None => 0,
            Some(before) => frames
                .ends
                .get(before)
                .copied()
                .unwrap_or(frames.bytes.len()),
        };
        Self {
            events: Vec::new(),
            encoded: frames.bytes.slice(start..),
        }
    }
}

/// Encoded events laid out as `SubscribeResponse.events` entries, ready to go on the wire.
#[derive(Debug, Default)]
pub struct EventFrames {
    bytes: Vec<u8>,
    /// Where each event's frame ends in `bytes`.
    ends: Vec<usize>,
    /// Where each event's own encoding starts in `bytes` (after its field key and length).
    starts: Vec<usize>,
}

impl EventFrames {
    /// Adds one event, given as its protobuf encoding (a `pos.v1.Event`).
    pub fn push_encoded(&mut self, event: &[u8]) {
        encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(event.len() as u64, &mut self.bytes);
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(event);
        self.ends.push(self.bytes.len());
    }

    /// Adds one decoded event, encoding it.
    pub fn push(&mut self, event: &pb::Event) {
        encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(event.encoded_len() as u64, &mut self.bytes);
        self.starts.push(self.bytes.len());
        event.encode_raw(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    /// The events added so far.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `index`th event's protobuf encoding (a `pos.v1.Event`), if there is one.
    pub fn event(&self, index: usize) -> Option<&[u8]> {
        let start = *self.starts.get(index)?;
        let end = *self.ends.get(index)?;
        self.bytes.get(start..end)
    }

    /// The frames, to be sent to any number of subscribers (`SubscribeResponse::shared`).
    pub fn share(self) -> SharedFrames {
        SharedFrames {
            bytes: Bytes::from(self.bytes),
            ends: self.ends,
        }
    }
}

/// Encoded events that many messages send without copying (`EventFrames::share`).
#[derive(Debug, Default, Clone)]
pub struct SharedFrames {
    bytes: Bytes,
    ends: Vec<usize>,
}

impl SharedFrames {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl prost::Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for event in &self.events {
            prost::encoding::message::encode(EVENTS_FIELD, event, buf);
        }
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == EVENTS_FIELD {
            prost::encoding::message::merge_repeated(wire_type, &mut self.events, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len_repeated(EVENTS_FIELD, &self.events)
            + self.encoded.len()
    }

    fn clear(&mut self) {
        self.events.clear();
        self.encoded = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn event(seq: u64, note: &str) -> pb::Event {
        let mut payload = prost_types::Struct::default();
        payload.fields.insert(
            "note".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(note.into())),
            },
        );
        pb::Event {
            event_id: format!("0190f3c2-0000-7000-8000-{seq:012}"),
            aggregate_type: "order".into(),
            aggregate_id: "o-1".into(),
            version: seq,
            r#type: "order.updated".into(),
            payload: Some(payload),
            seq,
            hub_time: 1_000 + seq,
            ..Default::default()
        }
    }

    #[test]
    fn encoded_events_arrive_as_the_same_events_in_the_same_order() {
        let events: Vec<pb::Event> = (1..=3)
            .map(|s| event(s, &"x".repeat(s as usize * 90)))
            .collect();
        let mut frames = EventFrames::default();
        frames.push_encoded(&events[0].encode_to_vec());
        frames.push(&events[1]);
        frames.push_encoded(&events[2].encode_to_vec());
        assert_eq!(frames.len(), 3);
        let sent = SubscribeResponse::encoded(frames);
        let wire = sent.encode_to_vec();
        assert_eq!(wire.len(), sent.encoded_len());
        let received = SubscribeResponse::decode(wire.as_slice()).expect("decodes");
        assert_eq!(received.events, events);
    }

    #[test]
    fn decoded_and_encoded_events_make_the_message_hub_proto_declares() {
        // The generated form of the same message, from the descriptor's field: a
        // `repeated Event events = 1`, which is what stock clients decode.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Declared {
            #[prost(message, repeated, tag = "1")]
            events: Vec<pb::Event>,
        }
        let events = vec![event(7, "a"), event(8, "b")];
        let mut frames = EventFrames::default();
        frames.push_encoded(&events[1].encode_to_vec());
        let mut mixed = SubscribeResponse::encoded(frames);
        mixed.events.push(events[0].clone());
        let declared = Declared::decode(mixed.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            declared.events, events,
            "decoded ones first, then the encoded"
        );
        let back = SubscribeResponse::decode(declared.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back.events, events);
    }

    #[test]
    fn shared_frames_send_the_events_from_any_point_on() {
        let events: Vec<pb::Event> = (1..=4)
            .map(|s| event(s, &"y".repeat(s as usize * 40)))
            .collect();
        let mut frames = EventFrames::default();
        for (i, e) in events.iter().enumerate() {
            if i % 2 == 0 {
                frames.push(e);
            } else {
                frames.push_encoded(&e.encode_to_vec());
            }
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                frames.event(i),
                Some(e.encode_to_vec().as_slice()),
                "event {i}"
            );
        }
        assert_eq!(frames.event(4), None);
        let shared = frames.share();
        assert_eq!(shared.len(), 4);
        for from in 0..=4 {
            let wire = SubscribeResponse::shared(&shared, from).encode_to_vec();
            let received = SubscribeResponse::decode(wire.as_slice()).expect("decodes");
            assert_eq!(received.events, events[from..], "from {from}");
        }
    }

    #[test]
    fn an_empty_message_is_a_heartbeat_of_no_bytes() {
        let heartbeat = SubscribeResponse::default();
        assert!(heartbeat.encode_to_vec().is_empty());
        let frames = SubscribeResponse::encoded(EventFrames::default());
        assert!(frames.encode_to_vec().is_empty());
    }

    #[test]
    fn a_damaged_message_is_refused() {
        let mut frames = EventFrames::default();
        frames.push(&event(1, "a"));
        let wire = SubscribeResponse::encoded(frames).encode_to_vec();
        assert!(
            SubscribeResponse::decode(&wire[..wire.len() - 3]).is_err(),
            "cut short"
        );
        // Field 1 with a varint wire type is not an event.
        assert!(SubscribeResponse::decode([0x08u8, 0x01].as_slice()).is_err());
    }
}
