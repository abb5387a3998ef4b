//! Tree names and key encodings. Integers are big-endian so that the trees' byte order is
//! numeric order: log entries and events iterate by index and by seq.

/// Raft log entries, keyed by log index.
pub const TREE_LOG: &str = "raft.log";
/// Raft metadata: committed log id, last purged log id (and the vote, in data dirs from
/// before `raft.vote`: moved out at open).
pub const TREE_RAFT_META: &str = "raft.meta";
/// State machine metadata that outlives a generation: the realm and the live generation.
pub const TREE_SM_META: &str = "sm.meta";

pub const KEY_VOTE: &[u8] = b"vote";
pub const KEY_COMMITTED: &[u8] = b"committed";
pub const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub const KEY_REALM: &[u8] = b"realm";
pub const KEY_GENERATION: &[u8] = b"generation";

/// The state machine lives in one tree per generation, `sm.<generation>`. Installing a
/// snapshot fills a fresh generation and then switches to it in one write, so a crash in
/// the middle of an install leaves the old state machine whole.
pub fn state_machine_tree(generation: u64) -> String {
    format!("sm.{generation}")
}

/// Prefixes inside a state machine tree. One tree, so that a whole apply is one atomic
/// `crate::kv::Batch`.
pub const PREFIX_APPLIED: u8 = b'a';
pub const PREFIX_EVENT: u8 = b'e';
pub const PREFIX_EVENT_ID: u8 = b'i';
pub const PREFIX_ORDER: u8 = b'o';
pub const PREFIX_TICKET: u8 = b't';
pub const PREFIX_STOCK: u8 = b's';
/// Devices with an accepted event in the log (for the offline grace of their tokens).
pub const PREFIX_DEVICE: u8 = b'd';
/// The deny-list: revoked devices, by device id (`domain::device`).
pub const PREFIX_REVOKED: u8 = b'r';
/// Closed orders and done tickets by the seq that closed them: `x` + seq + the record's
/// own key, empty value. Rules `V3` remove records through it (`State::expire_closed`).
pub const PREFIX_CLOSED: u8 = b'x';
/// The store's archive mark (`domain::archive`, rules `V4`), if it has one.
pub const KEY_ARCHIVE: &[u8] = b"m";
/// EventIds dedupe must know after their events are deleted (`State::keep_id`): `k` + the
/// id's 16 bytes, the seq as value.
pub const PREFIX_KEPT_ID: u8 = b'k';

pub fn kept_id_key(event_id: &uuid::Uuid) -> Vec<u8> {
    prefixed(PREFIX_KEPT_ID, event_id.as_bytes())
}
/// Present (empty value) once every closed record of the tree is in the `x` index: trees
/// written before the index get it at open (`migrate::index_closed`).
pub const KEY_CLOSED_INDEXED: &[u8] = b"X";

/// The `x` index key of a record closed at `seq`.
pub fn closed_key(seq: u64, record_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + record_key.len());
    key.push(PREFIX_CLOSED);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(record_key);
    key
}

/// The record key inside an `x` index key.
pub fn closed_record(key: &[u8]) -> Option<&[u8]> {
    match key.split_first() {
        Some((&PREFIX_CLOSED, rest)) if rest.len() > 8 => Some(&rest[8..]),
        _ => None,
    }
}

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn applied_key() -> [u8; 1] {
    [PREFIX_APPLIED]
}

pub fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [PREFIX_EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn event_seq(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&PREFIX_EVENT, rest)) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

pub fn prefixed(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(prefix);
    key.extend_from_slice(id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_decode_back() {
        assert!(log_key(255) < log_key(256));
        assert!(event_key(9) < event_key(10));
        assert_eq!(log_index(&log_key(42)), Some(42));
        assert_eq!(event_seq(&event_key(7)), Some(7));
        assert_eq!(event_seq(&prefixed(PREFIX_ORDER, b"o-1")), None);
        assert_eq!(log_index(b"short"), None);
    }

    #[test]
    fn closed_keys_sort_by_seq_and_give_back_the_record_key() {
        let order = prefixed(PREFIX_ORDER, b"o-1");
        assert!(closed_key(9, &order) < closed_key(10, b"a"));
        assert_eq!(
            closed_record(&closed_key(7, &order)),
            Some(order.as_slice())
        );
        assert_eq!(closed_record(&order), None);
        assert_eq!(closed_record(&[PREFIX_CLOSED, 0, 0]), None);
    }
}
