//! A log that was closed cleanly and is then opened only to be read writes nothing and syncs
//! nothing, on open or on close: its clean-shutdown marker stays, because the files are as
//! that close left them. The first change removes the marker, durably, before touching the
//! active segment, so a crash after it is recovered as a crash.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{read_all, simple_batch};
use rivulet::storage::{FaultyFs, PartitionLog};
use rivulet::{Fsync, LogConfig};

const MARKER: &str = ".clean_shutdown";

fn open(dir: &Path, fs: &FaultyFs) -> PartitionLog {
    PartitionLog::builder(dir)
        .config(LogConfig::default().segment_bytes(4096).fsync(Fsync::Never))
        .fs(Arc::new(fs.clone()))
        .open()
        .unwrap()
}

/// Appends `batches` batches of 5 records and closes the log; returns its segment count.
fn write_and_close(dir: &Path, batches: usize) -> usize {
    let log = open(dir, &FaultyFs::new());
    for i in 0..batches {
        log.append(simple_batch(i * 5, 5, i as i64)).unwrap();
    }
    log.close().unwrap();
    log.segment_count()
}

/// Every file of the log but its lock, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".lock"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_read_only_session_leaves_the_files_and_the_marker_alone() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_and_close(dir.path(), 100);
    assert!(segments > 2, "several segments, the last one active");
    let before = files(dir.path());
    assert!(before.iter().any(|(name, _)| name == MARKER));

    let fs = FaultyFs::new();
    let log = open(dir.path(), &fs);
    assert_eq!(read_all(&log, 0).len(), 500);
    assert!(log.offset_for_timestamp(20).unwrap().is_some());
    log.close().unwrap();
    drop(log);
    assert_eq!(
        (fs.writes(), fs.syncs()),
        (0, 0),
        "reading wrote or synced nothing"
    );
    assert!(
        files(dir.path()) == before,
        "the files are as the close left them"
    );
}

#[test]
fn the_first_change_removes_the_marker_and_a_crash_after_it_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), 10);

    let fs = FaultyFs::new();
    let log = open(dir.path(), &fs);
    assert!(dir.path().join(MARKER).exists());
    log.append(simple_batch(50, 5, 10)).unwrap();
    assert!(!dir.path().join(MARKER).exists(), "the append removed the marker");
    // The machine dies with the append unsynced: the next open must check the tail.
    fs.crash(|_, _, _| 7).unwrap();
    drop(log);
    let log = open(dir.path(), &FaultyFs::new());
    assert_eq!(log.log_end_offset(), 50, "the torn append is cut away");
    assert_eq!(read_all(&log, 0).len(), 50);
    assert_eq!(log.append(simple_batch(50, 1, 11)).unwrap().base_offset, 50);
    log.close().unwrap();

    // Rolling and truncating a cleanly reopened log are changes too.
    for change in [
        &(|log: &PartitionLog| log.roll().unwrap()) as &dyn Fn(&PartitionLog),
        &|log: &PartitionLog| {
            log.truncate_to(20).unwrap();
        },
    ] {
        let log = open(dir.path(), &FaultyFs::new());
        assert!(dir.path().join(MARKER).exists());
        change(&log);
        assert!(!dir.path().join(MARKER).exists());
        log.close().unwrap();
        assert!(dir.path().join(MARKER).exists(), "the close puts it back");
    }
    let log = open(dir.path(), &FaultyFs::new());
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(read_all(&log, 0).len(), 20);
}
