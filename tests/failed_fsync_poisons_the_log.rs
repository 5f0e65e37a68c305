//! A failed fsync poisons the log: the append that needed it is not acknowledged, later appends
//! are refused with `Poisoned` until the log is reopened, reads keep working, and after reopen
//! everything acknowledged is there and the log takes appends again.

mod common;

use std::sync::Arc;

use common::{read_all, simple_batch};
use rivulet::storage::{FaultyFs, PartitionLog};
use rivulet::{Error, Fsync, LogConfig};

fn open(dir: &std::path::Path, fs: &FaultyFs) -> PartitionLog {
    PartitionLog::builder(dir)
        .config(LogConfig::default().fsync(Fsync::Always))
        .fs(Arc::new(fs.clone()))
        .open()
        .unwrap()
}

#[test]
fn a_failed_fsync_refuses_appends_until_reopen_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = open(dir.path(), &fs);
    log.append(simple_batch(0, 3, 1)).unwrap();

    fs.fail_sync_after(0);
    let err = log.append(simple_batch(3, 2, 2)).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    // The batch was written but never acknowledged, so readers must not see it.
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(read_all(&log, 0).len(), 3);

    // Poisoned for good, even though the next fsync would succeed.
    let err = log.append(simple_batch(5, 1, 3)).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(matches!(log.flush().unwrap_err(), Error::Poisoned { .. }));
    drop(log);

    let log = open(dir.path(), &FaultyFs::new());
    let records = read_all(&log, 0);
    // The acknowledged records are there; the unacknowledged batch may or may not be.
    assert!(records.len() == 3 || records.len() == 5, "{}", records.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
    }
    let info = log.append(simple_batch(9, 1, 4)).unwrap();
    assert_eq!(info.base_offset, records.len() as i64);
}

#[test]
fn every_appender_waiting_on_the_failed_fsync_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = open(dir.path(), &fs);
    log.append(simple_batch(0, 1, 1)).unwrap();
    fs.fail_sync_after(0);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || log.append(simple_batch(t, 1, 1)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Appends acknowledged before the failure are fine; none after it is acknowledged.
    let acked: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let hw = log.high_watermark();
    for info in &acked {
        assert!(
            info.last_offset < hw,
            "acknowledged {info:?} above the high watermark {hw}"
        );
    }
    assert!(results.iter().any(|r| matches!(r, Err(Error::Poisoned { .. }))));
}
