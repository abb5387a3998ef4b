//! The layer itself: a power cut drops exactly what was not fsynced, renames are
//! immediate, and a file replaced while open stays readable through its handle.

use std::io::{Read, Write};

use super::*;

fn read(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .expect("reads");
    out
}

/// The layer bites: unsynced writes are gone after a cut, synced ones stay.
/// Needs root, /dev/fuse and fusermount3 (Debian's fuse3), as CI has.
#[test]
fn a_power_cut_drops_exactly_what_was_not_fsynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, session) = PowerFs::mount(dir.path())
        .expect("mounting the FUSE layer (needs root, /dev/fuse and fusermount3 from fuse3)");
    let kept = dir.path().join("kept");
    let lost = dir.path().join("lost");
    let mut file = std::fs::File::create(&kept).expect("creates");
    file.write_all(b"durable").expect("writes");
    file.sync_all().expect("fsyncs");
    file.write_all(b" and then some")
        .expect("writes more, unsynced");
    drop(file);
    let mut file = std::fs::File::create(&lost).expect("creates");
    file.write_all(b"never synced").expect("writes");
    drop(file);
    assert_eq!(read(&kept), b"durable and then some");
    assert_eq!(read(&lost), b"never synced");

    let dropped = fs.cut();
    assert_eq!(
        dropped,
        (" and then some".len() + "never synced".len()) as u64
    );
    assert_eq!(read(&kept), b"durable", "the synced part survives the cut");
    assert_eq!(read(&lost), b"", "nothing unsynced survives");

    // Renames are metadata: immediate, and the data goes with the file.
    std::fs::rename(&kept, dir.path().join("moved")).expect("renames");
    fs.cut();
    assert_eq!(read(&dir.path().join("moved")), b"durable");

    // A file replaced by a rename (a snapshot being read while a newer one takes its
    // name) stays readable through the handle opened before, as POSIX has it.
    let mut open = std::fs::File::open(dir.path().join("moved")).expect("opens");
    std::fs::write(&lost, b"newer").expect("writes the replacement");
    std::fs::rename(&lost, dir.path().join("moved")).expect("renames over it");
    let mut old = Vec::new();
    open.read_to_end(&mut old).expect("reads the replaced file");
    assert_eq!(old, b"durable");
    assert_eq!(read(&dir.path().join("moved")), b"newer");
    drop(open);
    drop(session);
}
