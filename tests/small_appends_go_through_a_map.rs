//! Small batches appended under a policy that does not sync every append are copied into a
//! shared map of the active segment, ahead of which the log reserves blocks. These tests hold
//! the log to what that must not change, on the real file system:
//!
//! - the reservation shows only while the segment is written: a roll and a clean close give
//!   it back, so files hold exactly the log's bytes;
//! - small and large batches (the large ones go through `pwrite`) interleave in one segment
//!   and read back in order, before and after a reopen;
//! - a process that dies right after its appends returned (with `abort`, no clean shutdown)
//!   leaves every acknowledged record in the page cache, and recovery cuts the zeros past
//!   them so appends go on at the right place.
//!
//! The crashing child is this same test binary, started again with an environment variable.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Rec, batch, read_all};
use rivulet::storage::{Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

const CHILD_DIR: &str = "RIVULET_MAPPED_CHILD_DIR";
const CRASH_TEST: &str = "acknowledged_small_appends_survive_an_abort";

fn config(fsync: Fsync) -> LogConfig {
    LogConfig::default().segment_bytes(1 << 20).fsync(fsync)
}

/// Record `i`: every 40th has a 3,000-byte value (its batch goes through `pwrite`), the rest
/// 20 to 219 bytes.
fn record(i: usize) -> Rec {
    let len = if i % 40 == 39 { 3000 } else { 20 + i * 37 % 200 };
    let value: Vec<u8> = (0..len).map(|k| (i * 31 + k) as u8).collect();
    Rec::new(1_700_000_000_000 + i as i64, Some(&i.to_be_bytes()), Some(&value))
}

fn append(log: &PartitionLog, range: std::ops::Range<usize>) {
    for i in range {
        let info = log.append(batch(&[record(i)], Compression::None)).unwrap();
        assert_eq!(info.base_offset, i as i64);
    }
}

/// Checks that the log holds records `0..n`, naming the first that differs (the records are
/// too long to print whole).
fn assert_holds(log: &PartitionLog, n: usize, context: &str) {
    let got = read_all(log, 0);
    for (i, r) in got.iter().enumerate().take(n) {
        let want = Rec {
            offset: i as i64,
            ..record(i)
        };
        assert!(*r == want, "{context}: record {i} differs: {r:?}");
    }
    assert_eq!(got.len(), n, "{context}: record count");
}

/// The summed length of the `.log` files in `dir`.
fn log_files_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn reserved_blocks_are_given_back_and_mixed_sizes_read_back() {
    for fsync in [
        Fsync::Never,
        Fsync::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(fsync)).unwrap();
        // About 1.6 MB: the first segment rolls on size, past several mapped windows. The check
        // comes after a small record (a large one may have ended past the reservation).
        append(&log, 0..7_990);
        assert!(
            log_files_len(dir.path()) > log.size_bytes(),
            "{fsync:?}: small appends reserve blocks ahead of them"
        );
        append(&log, 7_990..8_000);
        log.roll().unwrap();
        assert_eq!(
            log_files_len(dir.path()),
            log.size_bytes(),
            "{fsync:?}: rolls give the reservation back"
        );
        append(&log, 8_000..9_000);
        log.flush().unwrap(); // under the interval policy, readers see what was synced
        assert_holds(&log, 9_000, &format!("{fsync:?}, open"));
        let size = log.size_bytes();
        log.close().unwrap();
        assert_eq!(
            log_files_len(dir.path()),
            size,
            "{fsync:?}: a clean close gives the reservation back"
        );
        drop(log);

        let log = PartitionLog::open(dir.path(), config(fsync)).unwrap();
        append(&log, 9_000..9_500);
        log.flush().unwrap();
        assert_holds(&log, 9_500, &format!("{fsync:?}, reopened"));
    }
}

#[test]
fn acknowledged_small_appends_survive_an_abort() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let log = PartitionLog::open(&dir, config(Fsync::Never)).unwrap();
        append(&log, 0..3_000);
        // Dies with the map's pages dirty and the reservation in place.
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let segment = dir.path().join("00000000000000000000.log");
    let bytes = std::fs::read(&segment).unwrap();
    assert_eq!(
        bytes.last(),
        Some(&0),
        "the crash left the reserved zeros past the last batch"
    );

    let log = PartitionLog::open(dir.path(), config(Fsync::Never)).unwrap();
    assert_eq!(log.log_end_offset(), 3_000);
    assert_holds(&log, 3_000, "after the abort");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        log.size_bytes(),
        "recovery cut the zeros"
    );
    append(&log, 3_000..3_500);
    assert_holds(&log, 3_500, "appended after the abort");
}
