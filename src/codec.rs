//! The binary encoding of our serde types wherever they are stored or sent between nodes:
//! Raft log entries in the WAL, values in the state machine's tree and the snapshot's
//! header, and openraft's peer messages.
//!
//! It is postcard 1 (varint integers, length-prefixed strings and sequences; its wire
//! format is specified and stable across 1.x). The encoding carries no version of its
//! own: the container that holds the bytes names its format, and a reader refuses a format
//! it does not know instead of guessing: the data dir's `FORMAT` file (`store::format`),
//! the magic at the head of each WAL segment and snapshot file, and the `format` field of
//! every `RaftMessage`. Data dirs written before format 2 held bincode 1 (unmaintained);
//! `store::format` moves them over at first open.

/// The format this build writes and reads: the data dir's, the WAL's and the peer
/// messages'. Format 1 was bincode 1, written by every release before this one.
pub const FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

thread_local! {
    /// The message of the last `custom` error raised on this thread: postcard keeps only
    /// that a custom error happened, and "rules version 9 is not known to this build"
    /// must reach the operator whole.
    static CUSTOM: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A decoding error of our own (`Deserialize` impls call this instead of
/// `de::Error::custom`), whose message `from_slice` reports.
pub fn custom<E: serde::de::Error>(message: impl std::fmt::Display) -> E {
    let message = message.to_string();
    CUSTOM.with(|slot| *slot.borrow_mut() = Some(message.clone()));
    E::custom(message)
}

/// Encodes `value`.
pub fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(|e| CodecError(e.to_string()))
}

/// The length of `value`'s encoding, without keeping it.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    postcard::experimental::serialized_size(value).map_err(|e| CodecError(e.to_string()))
}

/// Decodes one whole value: bytes left over after it are an error, not ignored.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    CUSTOM.with(|slot| slot.borrow_mut().take());
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
        let custom = CUSTOM.with(|slot| slot.borrow_mut().take());
        match (e, custom) {
            (postcard::Error::SerdeDeCustom, Some(message)) => CodecError(message),
            (e, _) => CodecError(e.to_string()),
        }
    })?;
    if !rest.is_empty() {
        return Err(CodecError(format!(
            "{} bytes left over after the value",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_trailing_or_missing_bytes_are_refused() {
        let value = (7u64, "seven".to_owned(), vec![Some(1u32), None]);
        let bytes = to_vec(&value).expect("encodes");
        assert_eq!(encoded_len(&value).expect("sizes"), bytes.len());
        assert_eq!(
            from_slice::<(u64, String, Vec<Option<u32>>)>(&bytes).expect("decodes"),
            value
        );
        let mut longer = bytes.clone();
        longer.push(0);
        let err = from_slice::<(u64, String, Vec<Option<u32>>)>(&longer).expect_err("trailing");
        assert!(err.to_string().contains("1 bytes left over"), "{err}");
        let short = &bytes[..bytes.len() - 1];
        assert!(from_slice::<(u64, String, Vec<Option<u32>>)>(short).is_err());
    }
}
