//! The node's Raft vote in a file of its own, `raft.vote`, not in sled: sled, finding a
//! damaged page, can hand back an older copy of a value without an error (the five-node
//! chaos run of 2026-11-28 met one), and an older vote could let a node vote twice in a
//! term.
//!
//! Two copies, 4 KiB apart so that no device write can tear both: each slot is
//! `[u64 serial][u64 term][u64 node][u8 committed][3 zero bytes][u32 CRC-32 of the 28
//! bytes before]`, little-endian. A save writes slot 0 and fdatasyncs, then slot 1 and
//! fdatasyncs; the open keeps the valid slot with the higher serial.
//! - A crash during a save tears at most one slot: the other holds the vote before
//!   (never acknowledged as saved) or, if slot 0 was already synced, the new one.
//! - Damage to one slot later leaves the other, which holds the same vote: never an older
//!   vote (a second copy of the last vote, not the one before it, is what a torn write and
//!   bit rot both need).
//! - Both slots bad, in a file that is not empty, is damage: the node refuses to start and
//!   names the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StoreError;
use super::disk::{fsync_path, io, open_state_file};
use crate::raft_types::Vote;

const SLOT_BYTES: usize = 32;
const SLOT_STRIDE: u64 = 4096;
pub(super) const FILE_NAME: &str = "raft.vote";

/// The vote file, with the serial of the slot written last and the vote it holds.
pub(super) struct VoteFile {
    file: File,
    path: PathBuf,
    last: Mutex<(u64, Option<Vote>)>,
}

impl VoteFile {
    /// Opens (or creates) `raft.vote` in `data_dir`.
    pub(super) fn open(data_dir: &Path) -> Result<VoteFile, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let file = open_state_file(&path)?;
        let len = file.metadata().map_err(io(&path))?.len();
        let mut best: Option<(u64, Vote)> = None;
        for slot in 0..2 {
            let mut bytes = [0u8; SLOT_BYTES];
            let offset = slot * SLOT_STRIDE;
            if offset + SLOT_BYTES as u64 > len {
                continue;
            }
            file.read_exact_at(&mut bytes, offset).map_err(io(&path))?;
            if let Some((serial, vote)) = decode(&bytes)
                && best.as_ref().is_none_or(|(s, _)| serial > *s)
            {
                best = Some((serial, vote));
            }
        }
        if best.is_none() && len > 0 {
            return Err(StoreError::corrupt(
                "vote",
                format!(
                    "{} holds no slot that passes its checksum (damage); wipe this data dir \
                     and add the node to its group again to rebuild it from its peers",
                    path.display()
                ),
            ));
        }
        fsync_path(data_dir)?;
        let last = match best {
            Some((serial, vote)) => (serial, Some(vote)),
            None => (0, None),
        };
        Ok(VoteFile {
            file,
            path,
            last: Mutex::new(last),
        })
    }

    /// The vote saved last, if any.
    pub(super) fn get(&self) -> Option<Vote> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Saves `vote` durably, both copies written and fdatasynced, before it returns.
    pub(super) fn save(&self, vote: &Vote) -> Result<(), StoreError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let next = last.0 + 1;
        let bytes = encode(next, vote);
        for slot in 0..2 {
            self.file
                .write_all_at(&bytes, slot * SLOT_STRIDE)
                .and_then(|()| self.file.sync_data())
                .map_err(io(&self.path))?;
        }
        *last = (next, Some(*vote));
        Ok(())
    }
}

fn encode(serial: u64, vote: &Vote) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[..8].copy_from_slice(&serial.to_le_bytes());
    bytes[8..16].copy_from_slice(&vote.leader_id().term.to_le_bytes());
    bytes[16..24].copy_from_slice(&vote.leader_id().node_id.to_le_bytes());
    bytes[24] = u8::from(vote.is_committed());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// A slot's (serial, vote), if it passes its checksum and holds a vote.
fn decode(bytes: &[u8; SLOT_BYTES]) -> Option<(u64, Vote)> {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[28..]);
    let serial = word(0);
    if serial == 0 || crc32fast::hash(&bytes[..28]) != u32::from_le_bytes(crc) {
        return None;
    }
    let (term, node) = (word(8), word(16));
    let vote = match bytes[24] {
        0 => Vote::new(term, node),
        1 => Vote::new_committed(term, node),
        _ => return None,
    };
    Some((serial, vote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_vote_saved_is_the_one_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = VoteFile::open(dir.path()).expect("opens");
        assert_eq!(file.get(), None);
        for (term, node, committed) in [(1, 1, false), (1, 1, true), (2, 3, false), (7, 2, true)] {
            let vote = if committed {
                Vote::new_committed(term, node)
            } else {
                Vote::new(term, node)
            };
            file.save(&vote).expect("saves");
            assert_eq!(file.get(), Some(vote));
            let read = VoteFile::open(dir.path()).expect("reopens").get();
            assert_eq!(read, Some(vote));
        }
    }

    #[test]
    fn one_damaged_copy_leaves_the_same_vote_and_two_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = VoteFile::open(dir.path()).expect("opens");
        file.save(&Vote::new(3, 1)).expect("saves");
        file.save(&Vote::new(4, 2)).expect("saves");
        drop(file);
        let path = dir.path().join(FILE_NAME);
        let raw = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("opens");
        for slot in [0, 1] {
            let before = std::fs::read(&path).expect("reads");
            raw.write_all_at(&[0xff; 7], slot * SLOT_STRIDE + 9)
                .expect("damages");
            let read = VoteFile::open(dir.path()).expect("reopens").get();
            assert_eq!(
                read,
                Some(Vote::new(4, 2)),
                "slot {slot} damaged: the last vote"
            );
            raw.write_all_at(&before, 0).expect("restores");
        }
        raw.write_all_at(&[0xff; 7], 9).expect("damages");
        raw.write_all_at(&[0xff; 7], SLOT_STRIDE + 9)
            .expect("damages");
        let err = VoteFile::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("raft.vote holds no slot"), "{err}");
    }

    #[test]
    fn a_save_a_crash_cut_between_its_copies_reads_as_the_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = VoteFile::open(dir.path()).expect("opens");
        file.save(&Vote::new(3, 1)).expect("saves");
        drop(file);
        // Serial 2 reached slot 0 only.
        let raw = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .expect("opens");
        raw.write_all_at(&encode(2, &Vote::new(5, 3)), 0)
            .expect("writes");
        let file = VoteFile::open(dir.path()).expect("reopens");
        assert_eq!(file.get(), Some(Vote::new(5, 3)));
        // The next save goes on from the higher serial.
        file.save(&Vote::new(6, 1)).expect("saves");
        assert_eq!(
            VoteFile::open(dir.path()).expect("reopens").get(),
            Some(Vote::new(6, 1))
        );
    }
}
