//! The key-value file: round trips, reopening, a torn tail cut, damage before it refused,
//! compaction, the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn log(dir: &Path) -> PathBuf {
    dir.join("kv")
}

fn open(dir: &Path) -> Result<Kv, KvError> {
    let lock = Lock::acquire(&dir.join("kv.lock"), Duration::ZERO)?;
    Kv::open(&log(dir), Some(lock))
}

fn put(kv: &mut Kv, key: &str, value: &str, sync: bool) {
    let mut batch = Batch::default();
    batch.insert(key.as_bytes(), value.as_bytes());
    kv.apply(batch, sync).expect("applies");
}

fn contents(kv: &Kv) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn batches_round_trip_and_come_back_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    assert!(contents(&kv).is_empty());
    put(&mut kv, "a", "1", true);
    let mut batch = Batch::default();
    batch.insert(*b"b", *b"2");
    batch.insert(*b"c", *b"3");
    batch.remove(*b"a");
    batch.insert(*b"b", *b"22");
    kv.apply(batch, false).expect("applies");
    // Binary keys and an empty value.
    let mut batch = Batch::default();
    batch.insert(vec![0, 255, 7], Vec::new());
    kv.apply(batch, true).expect("applies");
    let expected = vec![
        ("\0\u{fffd}\u{7}".to_owned(), String::new()),
        ("b".to_owned(), "22".to_owned()),
        ("c".to_owned(), "3".to_owned()),
    ];
    assert_eq!(contents(&kv), expected);
    assert_eq!(kv.get(b"b"), Some(&b"22"[..]));
    assert_eq!(kv.get(b"a"), None);
    let sizes = kv.sizes();
    drop(kv);

    let kv = open(dir.path()).expect("reopens");
    assert_eq!(contents(&kv), expected, "the same after reopening");
    assert_eq!(kv.sizes(), sizes, "the same file and live sizes");
}

#[test]
fn a_torn_tail_is_cut_off_and_what_came_before_it_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    put(&mut kv, "a", "1", true);
    put(&mut kv, "b", "2", false);
    let (whole, _) = kv.sizes();
    put(&mut kv, "c", "3", false);
    let (with_c, _) = kv.sizes();
    drop(kv);
    // The last record reached the disk only in part.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(log(dir.path()))
        .expect("opens the file");
    file.set_len(with_c - 3).expect("cuts");
    drop(file);

    let mut kv = open(dir.path()).expect("opens despite the torn tail");
    assert_eq!(contents(&kv), pairs(&[("a", "1"), ("b", "2")]));
    assert_eq!(
        kv.sizes().0,
        whole,
        "the file is cut back to the last whole record"
    );
    // Writes after the cut are kept.
    put(&mut kv, "d", "4", true);
    drop(kv);
    let kv = open(dir.path()).expect("reopens");
    assert_eq!(contents(&kv), pairs(&[("a", "1"), ("b", "2"), ("d", "4")]));
}

#[test]
fn unsynced_records_torn_out_of_order_are_cut_as_a_tail() {
    // Pages of unsynced writes may reach the disk out of order: a bad record followed by
    // good ones, none of which had been synced past it, is still a torn tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    put(&mut kv, "a", "1", true);
    let (synced, _) = kv.sizes();
    put(&mut kv, "b", "2", false);
    put(&mut kv, "c", "3", false);
    drop(kv);
    let mut bytes = std::fs::read(log(dir.path())).expect("reads");
    // Zero the unsynced "b" record's payload (a page never written back).
    let at = synced as usize + HEADER;
    bytes[at..at + 4].fill(0);
    std::fs::write(log(dir.path()), &bytes).expect("writes");

    let kv = open(dir.path()).expect("opens");
    assert_eq!(contents(&kv), pairs(&[("a", "1")]));
    assert_eq!(kv.sizes().0, synced);
}

#[test]
fn damage_before_the_tail_is_refused_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    put(&mut kv, "a", "1", true);
    let (second, _) = kv.sizes();
    put(&mut kv, "b", "2", true);
    put(&mut kv, "c", "3", false);
    drop(kv);
    let path = log(dir.path());
    let mut bytes = std::fs::read(&path).expect("reads");
    // A flipped bit in the synced "b" record's payload.
    bytes[second as usize + HEADER + 2] ^= 0x10;
    std::fs::write(&path, &bytes).expect("writes");

    let err = open(dir.path()).expect_err("damage after a sync is not a torn tail");
    match &err {
        KvError::Corrupt { offset, .. } => assert_eq!(*offset, second),
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(&format!("byte {second}")), "{text}");
    assert!(text.contains("checksum"), "{text}");
    assert_eq!(
        std::fs::read(&path).expect("reads"),
        bytes,
        "nothing was cut"
    );

    // A damaged record header is refused the same way.
    bytes[second as usize + HEADER + 2] ^= 0x10;
    bytes[second as usize] ^= 0x01;
    std::fs::write(&path, &bytes).expect("writes");
    let err = open(dir.path()).expect_err("a damaged header");
    assert!(
        err.to_string()
            .contains(&format!("byte {second}: the record header's checksum")),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_store_or_of_another_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(log(dir.path()), b"{\"not\": \"a store\"}").expect("writes");
    let err = open(dir.path()).expect_err("not a store");
    assert!(err.to_string().contains("byte 0: not a pos-hub"), "{err}");

    let mut bytes = MAGIC.to_vec();
    bytes[7] = 9;
    std::fs::write(log(dir.path()), &bytes).expect("writes");
    let err = open(dir.path()).expect_err("a newer format");
    assert!(
        err.to_string()
            .contains("format version 9; this build reads version 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(log(dir.path())).expect("reads"),
        bytes,
        "left as it was"
    );
}

#[test]
fn compaction_drops_dead_records_and_keeps_the_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    let value = "v".repeat(1000);
    let mut largest = 0;
    let mut compacted = false;
    // 50 live keys, each overwritten many times: well past 1 MiB of log.
    for round in 0..60 {
        for key in 0..50 {
            put(
                &mut kv,
                &format!("k{key:02}"),
                &format!("{round}{value}"),
                false,
            );
            let (len, _) = kv.sizes();
            compacted |= len < largest;
            largest = largest.max(len);
        }
    }
    put(&mut kv, "gone", "x", false);
    let mut batch = Batch::default();
    batch.remove(*b"gone");
    kv.apply(batch, false).expect("removes");
    assert!(compacted, "the log was compacted");
    let (len, live) = kv.sizes();
    assert!(
        len <= COMPACT_RATIO * live,
        "log {len} bytes, live {live} bytes"
    );
    let before = contents(&kv);
    assert_eq!(before.len(), 50);
    assert!(before.iter().all(|(_, v)| v.starts_with("59")));
    kv.compact().expect("compacts now");
    put(&mut kv, "after", "1", false);
    drop(kv);
    let kv = open(dir.path()).expect("reopens");
    let after = contents(&kv);
    assert_eq!(after.len(), 51);
    assert_eq!(&after[..1], &pairs(&[("after", "1")])[..]);
    assert_eq!(&after[1..], &before[..]);
    assert!(
        !dir.path().join("kv.tmp").exists(),
        "no temporary file is left"
    );
}

#[test]
fn damage_in_a_compacted_file_is_refused_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = open(dir.path()).expect("opens");
    put(&mut kv, "a", "1", false);
    put(&mut kv, "b", "2", false);
    kv.compact().expect("compacts");
    drop(kv);
    let path = log(dir.path());
    let mut bytes = std::fs::read(&path).expect("reads");
    // The one data record of the compacted file; after it only the seal.
    bytes[MAGIC.len() + HEADER + 1] ^= 0x40;
    std::fs::write(&path, &bytes).expect("writes");
    let err = open(dir.path()).expect_err("the seal proves it was synced");
    assert!(
        err.to_string().contains(&format!("byte {}", MAGIC.len())),
        "{err}"
    );
}

#[test]
fn a_held_lock_keeps_a_second_opener_out_until_it_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = open(dir.path()).expect("opens");
    let err = open(dir.path()).expect_err("locked");
    assert!(matches!(err, KvError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    // A waiting opener gets the lock once the holder lets go.
    let path = dir.path().join("kv.lock");
    let waiter = std::thread::spawn(move || Lock::acquire(&path, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    drop(kv);
    waiter
        .join()
        .expect("joins")
        .expect("gets the lock after the holder is dropped");
}
