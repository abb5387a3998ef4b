//! The history's eventId index: which seq holds an eventId, for the dedupe rule.
//!
//! A closed segment `<first>.hist` has beside it `<first>.ids`: its (eventId, seq) pairs
//! sorted by eventId, `[16-byte magic][u64 count][count × (16-byte id, u64 seq)][CRC-32]`,
//! written once when the segment closes. In memory each closed segment keeps only a Bloom
//! filter of its ids (10 bits an id, 1% false positives), so a lookup reads the file (a
//! binary search, about 16 reads of 24 bytes) only for an id the filter says may be
//! there: a real duplicate, or one in a hundred new ids per segment. The open segment's
//! ids are in a map. A missing or damaged `.ids` file is rebuilt from its segment at open:
//! it holds nothing the segment does not.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::store::StoreError;
use crate::store::disk::io;

const MAGIC: &[u8; 16] = b"pos-hub ids v1\n\0";
const ENTRY: usize = 24;
const HEADER: usize = 24;
/// Bloom filter bits per id and probes per lookup (about 1% false positives).
const BITS_PER_ID: u64 = 10;
const PROBES: u64 = 7;

/// The index of a closed segment: its Bloom filter, and its sorted file for lookups.
pub(super) struct ClosedIds {
    path: PathBuf,
    file: File,
    count: u64,
    bloom: Bloom,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt("eventId index", format!("{}: {what}", path.display()))
}

impl ClosedIds {
    /// Writes `ids` (any order) as the index file `path`, synced, and opens it.
    pub(super) fn write(path: &Path, ids: &HashMap<u128, u64>) -> Result<ClosedIds, StoreError> {
        let mut sorted: Vec<(u128, u64)> = ids.iter().map(|(id, seq)| (*id, *seq)).collect();
        sorted.sort_unstable();
        let mut bytes = Vec::with_capacity(HEADER + sorted.len() * ENTRY + 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
        for (id, seq) in &sorted {
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let tmp = path.with_extension("ids.tmp");
        let mut out = File::create(&tmp).map_err(io(&tmp))?;
        out.write_all(&bytes).map_err(io(&tmp))?;
        out.sync_data().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        let file = File::open(path).map_err(io(path))?;
        Ok(ClosedIds {
            path: path.to_owned(),
            file,
            count: sorted.len() as u64,
            bloom: Bloom::of(sorted.iter().map(|(id, _)| *id), sorted.len()),
        })
    }

    /// Opens and checks the index file `path` (checksum, order, seqs within
    /// `first..=last`), building its Bloom filter.
    pub(super) fn open(path: &Path, first: u64, last: u64) -> Result<ClosedIds, StoreError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        if bytes.len() < HEADER + 4 || &bytes[..16] != MAGIC {
            return Err(corrupt(path, "not an eventId index"));
        }
        let (body, stored) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != stored {
            return Err(corrupt(path, "checksum mismatch"));
        }
        let count = u64::from_le_bytes(body[16..24].try_into().unwrap_or_default());
        if count != last + 1 - first || body.len() != HEADER + count as usize * ENTRY {
            return Err(corrupt(
                path,
                format!("{count} ids for seqs {first}..={last}"),
            ));
        }
        let mut previous = None;
        let mut ids = Vec::with_capacity(count as usize);
        for entry in body[HEADER..].chunks_exact(ENTRY) {
            let (id, seq) = split_entry(entry);
            if previous.is_some_and(|p| p >= id) || !(first..=last).contains(&seq) {
                return Err(corrupt(path, "entries out of order or out of range"));
            }
            previous = Some(id);
            ids.push(id);
        }
        let file = File::open(path).map_err(io(path))?;
        Ok(ClosedIds {
            path: path.to_owned(),
            file,
            count,
            bloom: Bloom::of(ids.into_iter(), count as usize),
        })
    }

    /// The seq of `id` in this segment, if it is there.
    pub(super) fn get(&self, id: u128) -> Result<Option<u64>, StoreError> {
        if !self.bloom.may_hold(id) {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, self.count);
        let mut entry = [0u8; ENTRY];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.file
                .read_exact_at(&mut entry, HEADER as u64 + mid * ENTRY as u64)
                .map_err(io(&self.path))?;
            let (found, seq) = split_entry(&entry);
            match found.cmp(&id) {
                std::cmp::Ordering::Equal => return Ok(Some(seq)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

fn split_entry(entry: &[u8]) -> (u128, u64) {
    let mut id = [0u8; 16];
    id.copy_from_slice(&entry[..16]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&entry[16..24]);
    (u128::from_be_bytes(id), u64::from_le_bytes(seq))
}

/// The index file beside segment `segment`.
pub(super) fn path_for(segment: &Path) -> PathBuf {
    segment.with_extension("ids")
}

/// A Bloom filter over 128-bit ids, with double hashing.
struct Bloom {
    bits: Vec<u64>,
}

/// splitmix64's finalizer: spreads the id's bits (UUIDv7's first half is a timestamp).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Bloom {
    fn of(ids: impl Iterator<Item = u128>, count: usize) -> Bloom {
        let words = ((count as u64 * BITS_PER_ID).div_ceil(64)).max(1) as usize;
        let mut bloom = Bloom {
            bits: vec![0; words],
        };
        for id in ids {
            for bit in bloom.probes(id) {
                bloom.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    fn probes(&self, id: u128) -> impl Iterator<Item = u64> + use<> {
        let len = self.bits.len() as u64 * 64;
        let h1 = mix(id as u64 ^ mix((id >> 64) as u64));
        let h2 = mix(h1 ^ 0x9e37_79b9_7f4a_7c15) | 1;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % len)
    }

    fn may_hold(&self, id: u128) -> bool {
        self.probes(id)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn ids(count: u64) -> HashMap<u128, u64> {
        (0..count)
            .map(|i| (uuid::Uuid::now_v7().as_u128() ^ u128::from(i), 100 + i))
            .collect()
    }

    #[test]
    fn every_id_is_found_with_its_seq_and_few_others_cost_a_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.ids");
        let held = ids(5000);
        let written = ClosedIds::write(&path, &held).expect("writes");
        let opened = ClosedIds::open(&path, 100, 5099).expect("opens");
        for index in [&written, &opened] {
            for (id, seq) in &held {
                assert_eq!(index.get(*id).expect("reads"), Some(*seq));
            }
        }
        let strangers: Vec<u128> = (0..20_000u128)
            .map(|i| i.wrapping_mul(0x1234_5678_9abc_def1))
            .collect();
        assert!(
            strangers
                .iter()
                .all(|id| opened.get(*id).expect("reads").is_none())
        );
        let maybe = strangers
            .iter()
            .filter(|id| opened.bloom.may_hold(**id))
            .count();
        assert!(
            maybe < 600,
            "{maybe} of 20,000 unknown ids passed the filter"
        );
    }

    #[test]
    fn a_damaged_or_mismatched_index_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.ids");
        ClosedIds::write(&path, &ids(100)).expect("writes");
        let err = ClosedIds::open(&path, 100, 150)
            .err()
            .expect("wrong range")
            .to_string();
        assert!(err.contains("100 ids for seqs 100..=150"), "{err}");
        let file = OpenOptions::new().write(true).open(&path).expect("opens");
        file.write_all_at(b"\xff", 40).expect("damages");
        let err = ClosedIds::open(&path, 100, 199)
            .err()
            .expect("damaged")
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
