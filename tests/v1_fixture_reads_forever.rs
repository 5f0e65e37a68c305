//! The on-disk format is a contract. `tests/fixtures/v1/` holds a log written by the first
//! format version: three segments with every codec, headers, null keys and values, and a log
//! start offset raised by `delete_records_before`. Every later build must read it exactly.
//!
//! To write the fixture again (only ever for a new format version, in a new folder), run this
//! test with `RIVULET_WRITE_FIXTURE=1`.

mod common;

use std::path::{Path, PathBuf};

use common::{Rec, batch, read_all};
use rivulet::storage::{Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn config() -> LogConfig {
    LogConfig::default()
        .fsync(Fsync::Always)
        .index_interval_bytes(200)
        .retention_ms(None)
}

/// The records of the fixture, batch by batch, with their codecs.
fn contents() -> Vec<(Vec<Rec>, Compression)> {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    (0..15)
        .map(|b| {
            let recs = (0..1 + b % 4)
                .map(|i| {
                    let n = b * 10 + i;
                    let mut r = Rec::new(
                        1_700_000_000_000 + n as i64 * 1000,
                        (n % 3 != 0)
                            .then(|| format!("key-{}", n % 5))
                            .as_deref()
                            .map(str::as_bytes),
                        (n % 7 != 6)
                            .then(|| format!("value {n} ").repeat(1 + n % 9))
                            .as_deref()
                            .map(str::as_bytes),
                    );
                    if n % 2 == 0 {
                        r.headers
                            .push((b"trace".to_vec(), Some(n.to_string().into_bytes())));
                        r.headers.push((b"empty".to_vec(), None));
                    }
                    r
                })
                .collect();
            (recs, codecs[b % 5])
        })
        .collect()
}

fn write_fixture(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let log = PartitionLog::open(dir, config()).unwrap();
    for (i, (recs, codec)) in contents().iter().enumerate() {
        log.append(batch(recs, *codec)).unwrap();
        if i == 4 || i == 9 {
            log.roll().unwrap();
        }
    }
    log.delete_records_before(3).unwrap();
    log.close().unwrap();
    drop(log);
    std::fs::remove_file(dir.join(".lock")).unwrap();
}

fn expected() -> Vec<Rec> {
    let mut offset = 0;
    let mut out = Vec::new();
    for (recs, _) in contents() {
        for mut r in recs {
            r.offset = offset;
            offset += 1;
            out.push(r);
        }
    }
    out
}

#[test]
fn v1_fixture_reads_forever() {
    if std::env::var_os("RIVULET_WRITE_FIXTURE").is_some() {
        write_fixture(&fixture());
    }
    let mut names: Vec<String> = std::fs::read_dir(fixture())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.contains(&"log.meta".to_string()) && names.contains(&".clean_shutdown".to_string()));
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".log")).count(),
        3,
        "{names:?}"
    );

    // Open a copy: opening writes (the lock, the marker's removal).
    let copy = tempfile::tempdir().unwrap();
    for name in &names {
        std::fs::copy(fixture().join(name), copy.path().join(name)).unwrap();
    }
    let log = PartitionLog::open(copy.path(), config()).unwrap();
    let all = expected();
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.log_end_offset(), all.len() as i64);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log, 3), all[3..]);
    let t = log.offset_for_timestamp(all[20].timestamp).unwrap().unwrap();
    assert_eq!((t.offset, t.timestamp), (20, all[20].timestamp));
    // The same bytes a v1 writer stored are what a reader gets.
    let first_log = std::fs::read(fixture().join("00000000000000000000.log")).unwrap();
    let fetch = log.read(3, 1).unwrap();
    let stored = fetch.as_bytes();
    assert!(!stored.is_empty() && first_log.windows(stored.len()).any(|w| w == stored));
    // And the log goes on from there.
    let info = log
        .append(batch(&[Rec::new(1, None, Some(b"next"))], Compression::None))
        .unwrap();
    assert_eq!(info.base_offset, all.len() as i64);
}
