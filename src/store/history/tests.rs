use std::os::unix::fs::FileExt;

use super::*;

fn event(seq: u64, note_bytes: usize) -> pb::Event {
    pb::Event {
        event_id: format!("00000000-0000-7000-8000-{seq:012}"),
        seq,
        hub_time: 1_700_000_000_000 + seq,
        r#type: "order.updated".into(),
        aggregate_id: format!("o-{}", "x".repeat(note_bytes)),
        ..Default::default()
    }
}

fn events(from: u64, to: u64) -> Vec<pb::Event> {
    (from..=to)
        .map(|seq| event(seq, (seq % 7) as usize * 40))
        .collect()
}

fn seqs(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == EXT))
        .collect();
    files.sort();
    files
}

#[test]
fn events_come_back_by_seq_across_segments_and_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 4096).expect("opens");
    assert_eq!(history.last_seq(), 0);
    history.append(&events(1, 150)).expect("appends");
    history.append(&events(151, 300)).expect("appends");
    history.sync().expect("syncs");
    assert!(segment_files(dir.path()).len() > 3, "small segments roll");
    let check = |history: &History| {
        assert_eq!(history.last_seq(), 300);
        assert_eq!(
            seqs(
                &history
                    .read_after(0, usize::MAX, usize::MAX)
                    .expect("reads")
            ),
            (1..=300).collect::<Vec<_>>()
        );
        // From every seq, across every stride and segment boundary.
        for after in 0..300 {
            let page = history.read_after(after, 5, usize::MAX).expect("reads");
            let want: Vec<u64> = (after + 1..=(after + 5).min(300)).collect();
            assert_eq!(seqs(&page), want, "after {after}");
            assert_eq!(page[0], event(after + 1, ((after + 1) % 7) as usize * 40));
        }
        assert!(
            history
                .read_after(300, 10, usize::MAX)
                .expect("reads")
                .is_empty()
        );
    };
    check(&history);
    drop(history);
    check(&History::open_sized(dir.path(), 4096).expect("reopens"));
}

#[test]
fn a_page_stops_at_its_byte_bound_but_never_comes_back_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 1 << 20).expect("opens");
    history.append(&events(1, 10)).expect("appends");
    let one = history.read_after(0, 10, 1).expect("reads");
    assert_eq!(seqs(&one), vec![1]);
    let two_bytes = one[0].encoded_len() + 1;
    assert_eq!(
        seqs(&history.read_after(0, 10, two_bytes).expect("reads")),
        vec![1, 2]
    );
}

#[test]
fn an_append_that_does_not_follow_the_last_seq_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 1 << 20).expect("opens");
    history.append(&events(1, 3)).expect("appends");
    let err = history.append(&events(5, 6)).expect_err("a gap");
    assert!(err.to_string().contains("appending seq 5 after 3"), "{err}");
    let err = history.append(&events(3, 3)).expect_err("a repeat");
    assert!(err.to_string().contains("appending seq 3 after 3"), "{err}");
    assert_eq!(history.last_seq(), 3);
    drop(history);
    let reopened = History::open_sized(dir.path(), 1 << 20).expect("reopens");
    assert_eq!(
        seqs(&reopened.read_after(0, 100, usize::MAX).expect("reads")),
        vec![1, 2, 3]
    );
}

#[test]
fn a_torn_tail_is_cut_at_open_and_appending_goes_on_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 1 << 20).expect("opens");
    history.append(&events(1, 20)).expect("appends");
    drop(history);
    let last = segment_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("stat").len();
    // Half of the last record, then zeros where the file grew (a crash before the sync).
    let file = OpenOptions::new().write(true).open(&last).expect("opens");
    file.set_len(len - 10).expect("cuts");
    file.write_all_at(&[0u8; 64], len - 10)
        .expect("writes zeros");
    drop(file);
    let history = History::open_sized(dir.path(), 1 << 20).expect("reopens");
    assert_eq!(history.last_seq(), 19);
    history.append(&events(20, 25)).expect("appends again");
    drop(history);
    let history = History::open_sized(dir.path(), 1 << 20).expect("reopens");
    assert_eq!(
        seqs(&history.read_after(0, 100, usize::MAX).expect("reads")),
        (1..=25).collect::<Vec<_>>()
    );
}

#[test]
fn damage_in_a_closed_segment_refuses_the_open_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 2048).expect("opens");
    history.append(&events(1, 100)).expect("appends");
    history.sync().expect("syncs");
    drop(history);
    let first = segment_files(dir.path()).remove(0);
    let file = OpenOptions::new().write(true).open(&first).expect("opens");
    // A flipped byte inside the second record's payload.
    file.write_all_at(b"#", 16 + 16 + 200 + 30)
        .expect("damages");
    drop(file);
    let err = match History::open_sized(dir.path(), 2048) {
        Ok(_) => panic!("a damaged closed segment must refuse the open"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains(&first.display().to_string()), "{err}");
    assert!(err.contains("at byte"), "{err}");
}

#[test]
fn a_missing_segment_in_the_middle_refuses_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 2048).expect("opens");
    history.append(&events(1, 100)).expect("appends");
    history.sync().expect("syncs");
    drop(history);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).expect("removes");
    let err = match History::open_sized(dir.path(), 2048) {
        Ok(_) => panic!("a hole in the history must refuse the open"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("but the segment before it ends at"), "{err}");
}

fn id_of(seq: u64) -> uuid::Uuid {
    uuid::Uuid::parse_str(&event(seq, 0).event_id).expect("a uuid")
}

#[test]
fn every_event_id_is_found_across_segments_a_reopen_and_a_lost_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 2048).expect("opens");
    history.append(&events(1, 200)).expect("appends");
    let check = |history: &History| {
        for seq in 1..=200 {
            assert_eq!(history.seq_of(&id_of(seq)).expect("looks up"), Some(seq));
        }
        for stranger in 201..1200 {
            assert_eq!(history.seq_of(&id_of(stranger)).expect("looks up"), None);
        }
    };
    check(&history);
    drop(history);
    check(&History::open_sized(dir.path(), 2048).expect("reopens"));

    // An index lost or damaged is rebuilt from its segment.
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ids"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 3, "closed segments have indexes");
    std::fs::remove_file(&indexes[0]).expect("removes");
    std::fs::write(&indexes[1], b"garbage").expect("damages");
    let history = History::open_sized(dir.path(), 2048).expect("reopens");
    check(&history);
    assert!(indexes[0].exists() && indexes[1].exists(), "rebuilt");
}

#[test]
fn an_event_whose_id_is_not_a_uuid_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 1 << 20).expect("opens");
    let mut bad = events(1, 3);
    bad[2].event_id = "not-a-uuid".into();
    let err = history.append(&bad).expect_err("refused");
    assert!(
        err.to_string().contains("seq 3: eventId \"not-a-uuid\""),
        "{err}"
    );
    assert_eq!(history.last_seq(), 0);
}

#[test]
fn records_copied_to_another_history_arrive_whole_and_indexed() {
    let (from_dir, to_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let from = History::open_sized(from_dir.path(), 4096).expect("opens");
    from.append(&events(1, 300)).expect("appends");
    let to = History::open_sized(to_dir.path(), 4096).expect("opens");
    to.append(&events(1, 40)).expect("appends");
    // Pages of about 1 KiB, each crossing segments, until seq 250.
    let mut after = to.last_seq();
    while after < 250 {
        let page = from.read_records(after, 250, 1024).expect("reads");
        assert!(!page.is_empty());
        after += to.append_records(&page).expect("appends") as u64;
        assert_eq!(to.last_seq(), after);
    }
    assert_eq!(after, 250, "never past upto");
    to.sync().expect("syncs");
    drop(to);
    let to = History::open_sized(to_dir.path(), 4096).expect("reopens");
    assert_eq!(
        to.read_after(0, usize::MAX, usize::MAX).expect("reads"),
        events(1, 250)
    );
    let id = uuid::Uuid::parse_str(&event(200, 0).event_id).expect("a uuid");
    assert_eq!(to.seq_of(&id).expect("looks up"), Some(200));
}

#[test]
fn records_that_are_damaged_or_do_not_follow_are_refused_and_nothing_is_written() {
    let (from_dir, to_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let from = History::open(from_dir.path()).expect("opens");
    from.append(&events(1, 20)).expect("appends");
    let to = History::open(to_dir.path()).expect("opens");
    to.append(&events(1, 5)).expect("appends");
    let refused = |bytes: &[u8], why: &str| {
        let err = to.append_records(bytes).expect_err(why).to_string();
        assert_eq!(to.last_seq(), 5, "{why}: nothing appended");
        err
    };
    let gap = from.read_records(6, 20, usize::MAX).expect("reads");
    assert!(refused(&gap, "a gap").contains("appending seq 7 after 5"));
    let mut flipped = from.read_records(5, 20, usize::MAX).expect("reads");
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    assert!(refused(&flipped, "a flipped bit").contains("checksum mismatch"));
    let whole = from.read_records(5, 20, usize::MAX).expect("reads");
    assert!(refused(&whole[..whole.len() - 3], "cut short").contains("cut short"));
    assert_eq!(to.append_records(&whole).expect("appends"), 15);
    assert_eq!(to.last_seq(), 20);
}

/// The (first, last) seqs of each segment file, from their names and contents.
fn spans(history: &History) -> Vec<(u64, u64)> {
    history
        .read_inner()
        .segments
        .iter()
        .map(|s| (s.first, s.last))
        .collect()
}

#[test]
fn retention_deletes_whole_old_files_behind_the_mark_and_never_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open_sized(dir.path(), 4096).expect("opens");
    history.append(&events(1, 300)).expect("appends");
    history.sync().expect("syncs");
    let before = spans(&history);
    assert!(before.len() > 4, "{before:?}");
    let (second_first, second_last) = before[1];
    let third_last = before[2].1;

    // Nothing behind the mark yet, or nothing old enough: nothing goes.
    assert_eq!(
        history
            .delete_behind(before[0].1 - 1, u64::MAX)
            .expect("runs"),
        vec![]
    );
    let hub_time_of = |seq: u64| event(seq, 0).hub_time;
    assert_eq!(
        history
            .delete_behind(third_last, hub_time_of(before[0].1) - 1)
            .expect("runs"),
        vec![]
    );
    // The mark inside the third file, the second file's last event old enough: two go.
    let deleted = history
        .delete_behind(third_last - 1, hub_time_of(second_last))
        .expect("runs");
    assert_eq!(deleted, before[..2].to_vec());
    assert_eq!(history.first_seq(), second_last + 1);
    assert_eq!(segment_files(dir.path()).len(), before.len() - 2);
    assert!(
        !ids::path_for(&dir.path().join(segment_name(second_first))).exists(),
        "its eventId index goes with it"
    );
    // Reads begin at the first held seq; ids of deleted events are no longer found.
    let page = history.read_after(0, 3, usize::MAX).expect("reads");
    assert_eq!(
        seqs(&page),
        vec![second_last + 1, second_last + 2, second_last + 3]
    );
    let id = |seq: u64| uuid::Uuid::parse_str(&event(seq, 0).event_id).expect("a uuid");
    assert_eq!(history.seq_of(&id(1)).expect("looks up"), None);
    assert_eq!(history.seq_of(&id(300)).expect("looks up"), Some(300));

    // Everything old and archived: all but the last file go.
    let deleted = history.delete_behind(300, u64::MAX).expect("runs");
    assert_eq!(deleted.len(), before.len() - 3);
    assert_eq!(spans(&history), vec![*before.last().expect("a last")]);
    drop(history);

    // A reopen starts where the files do, and appends go on.
    let history = History::open_sized(dir.path(), 4096).expect("reopens");
    assert_eq!(history.first_seq(), before.last().expect("a last").0);
    assert_eq!(history.last_seq(), 300);
    history.append(&events(301, 310)).expect("appends");
    assert_eq!(
        seqs(
            &history
                .read_after(299, usize::MAX, usize::MAX)
                .expect("reads")
        ),
        (300..=310).collect::<Vec<_>>()
    );
}

#[test]
fn a_history_restarted_at_a_peers_first_seq_takes_its_records_from_there() {
    let (from, to) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let peer = History::open_sized(from.path(), 4096).expect("opens");
    peer.append(&events(1, 200)).expect("appends");
    peer.delete_behind(150, u64::MAX).expect("retention");
    let first = peer.first_seq();
    assert!(first > 1);

    let node = History::open_sized(to.path(), 4096).expect("opens");
    node.append(&events(1, 20))
        .expect("appends: an old copy, far behind");
    let records = peer.read_records(20, 200, usize::MAX).expect("reads");
    assert_eq!(super::first_record_seq(&records), Some(first));
    assert!(
        node.append_records(&records).is_err(),
        "not joined across the gap"
    );
    node.restart_at(first).expect("restarts");
    assert_eq!((node.first_seq(), node.last_seq()), (first, first - 1));
    node.append_records(&records)
        .expect("appends from the peer's first");
    drop(node);
    let node = History::open_sized(to.path(), 4096).expect("reopens");
    assert_eq!((node.first_seq(), node.last_seq()), (first, 200));
    assert_eq!(
        node.read_after(0, usize::MAX, usize::MAX).expect("reads"),
        peer.read_after(0, usize::MAX, usize::MAX).expect("reads")
    );
}
