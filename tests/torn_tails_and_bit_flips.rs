//! Damage at every byte of a small segment: a tail torn off at each position, and one bit
//! flipped at each position. Recovery must never panic and never return a bad record: it keeps
//! exactly the whole batches before the damage. Damage in a sealed segment is reported on read
//! with the segment, position and both CRCs.

mod common;

use std::path::Path;

use common::{Rec, batch, read_all};
use rivulet::storage::{Compression, PartitionLog};
use rivulet::{Error, Fsync, LogConfig};

fn config() -> LogConfig {
    LogConfig::default().fsync(Fsync::Never).index_interval_bytes(64)
}

const ACTIVE: &str = "00000000000000000000.log";

/// Writes six batches into one segment; returns them and their end positions in the file.
fn make_log(dir: &Path) -> (Vec<Vec<Rec>>, Vec<usize>) {
    let log = PartitionLog::open(dir, config()).unwrap();
    let mut batches = Vec::new();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::None,
        Compression::Zstd,
    ];
    for b in 0..6 {
        let mut recs: Vec<Rec> = (0..1 + b % 3)
            .map(|i| {
                Rec::new(
                    100 * b + i,
                    Some(b"k"),
                    Some(format!("batch {b} record {i}").as_bytes()),
                )
            })
            .collect();
        let info = log.append(batch(&recs, codecs[b as usize % 4])).unwrap();
        for (i, r) in recs.iter_mut().enumerate() {
            r.offset = info.base_offset + i as i64;
        }
        batches.push(recs);
    }
    log.close().unwrap();
    let bytes = std::fs::read(dir.join(ACTIVE)).unwrap();
    let mut ends = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        at += rivulet::storage::frame_len(&bytes[at..], usize::MAX).unwrap();
        ends.push(at);
    }
    assert_eq!(ends.len(), 6);
    (batches, ends)
}

/// Copies the log directory, lets `damage` change the active segment's bytes, removes the
/// clean-shutdown marker (so the tail is checked), reopens and returns all records.
fn recover_with(src: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> Vec<Rec> {
    let dst = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let name = entry.unwrap().file_name();
        if name != ".clean_shutdown" && name != ".lock" {
            std::fs::copy(src.join(&name), dst.path().join(&name)).unwrap();
        }
    }
    let path = dst.path().join(ACTIVE);
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let log = PartitionLog::open(dst.path(), config()).unwrap();
    let records = read_all(&log, 0);
    // The recovered log takes appends right where it ends.
    let end = log.log_end_offset();
    assert_eq!(end, records.last().map_or(0, |r| r.offset + 1));
    assert_eq!(
        log.append(batch(&[Rec::new(1, None, Some(b"after"))], Compression::None))
            .unwrap()
            .base_offset,
        end
    );
    records
}

/// The records of the whole batches that end at or before `pos`.
fn prefix(batches: &[Vec<Rec>], ends: &[usize], pos: usize) -> Vec<Rec> {
    let whole = ends.iter().take_while(|&&e| e <= pos).count();
    batches[..whole].concat()
}

#[test]
fn a_torn_tail_at_every_position_keeps_the_whole_batches_before_it() {
    let src = tempfile::tempdir().unwrap();
    let (batches, ends) = make_log(src.path());
    let len = *ends.last().unwrap();
    for cut in 0..=len {
        let got = recover_with(src.path(), |b| b.truncate(cut));
        assert_eq!(got, prefix(&batches, &ends, cut), "torn at byte {cut}");
    }
}

#[test]
fn a_bit_flip_at_every_position_never_yields_a_bad_record() {
    let src = tempfile::tempdir().unwrap();
    let (batches, ends) = make_log(src.path());
    let len = *ends.last().unwrap();
    for pos in 0..len {
        for bit in [0u8, 7] {
            let got = recover_with(src.path(), |b| b[pos] ^= 1 << bit);
            let start = ends.iter().rev().find(|&&e| e <= pos).copied().unwrap_or(0);
            let in_batch = pos - start;
            // The partition leader epoch (bytes 12-15) is outside the CRC and checked by no
            // one: a flip there changes no record.
            if (12..16).contains(&in_batch) {
                assert_eq!(got, batches.concat(), "flip in the leader epoch at {pos}");
            } else {
                assert_eq!(
                    got,
                    prefix(&batches, &ends, start),
                    "bit {bit} flipped at byte {pos}"
                );
            }
        }
    }
}

#[test]
fn damage_in_a_sealed_segment_is_reported_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for i in 0..3 {
        log.append(common::simple_batch(i * 2, 2, 10)).unwrap();
    }
    log.roll().unwrap();
    log.append(common::simple_batch(6, 2, 10)).unwrap();
    log.close().unwrap();
    drop(log);

    // Flip a bit inside the second batch's records (a value byte) of the sealed segment.
    let path = dir.path().join(ACTIVE);
    let mut bytes = std::fs::read(&path).unwrap();
    let second = rivulet::storage::frame_len(&bytes, usize::MAX).unwrap();
    bytes[second + 80] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let log = PartitionLog::open(dir.path(), config()).unwrap();
    // Records before the damage are served; the damaged batch is an error, never data.
    let mut reader = log.reader(0);
    assert_eq!(reader.next().unwrap().unwrap().offset, 0);
    assert_eq!(reader.next().unwrap().unwrap().offset, 1);
    match reader.next() {
        Err(Error::ChecksumMismatch {
            segment,
            position,
            expected,
            actual,
        }) => {
            assert_eq!(segment, path);
            assert_eq!(position, second as u64);
            assert_ne!(expected, actual);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // Reading past the damaged batch works.
    let after: Vec<i64> = read_all(&log, 4).iter().map(|r| r.offset).collect();
    assert_eq!(after, [4, 5, 6, 7]);
}
