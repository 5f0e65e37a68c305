//! Readers run beside the writer without blocking it, long-poll for new records, and see them
//! in order with no gaps; concurrent durable appends share fsyncs (group commit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::simple_batch;
use rivulet::storage::{FaultyFs, PartitionLog};
use rivulet::{Fsync, LogConfig};

#[test]
fn long_polling_readers_see_every_record_in_order() {
    for policy in [Fsync::Never, Fsync::Always] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(
            dir.path(),
            LogConfig::default().fsync(policy).segment_bytes(16 << 10),
        )
        .unwrap();
        const BATCHES: usize = 300;
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let log = log.clone();
                    s.spawn(move || {
                        let mut reader = log.reader(0).fetch_bytes(4096);
                        let mut next = 0;
                        while next < (BATCHES * 3) as i64 {
                            match reader.next_timeout(Duration::from_secs(10)).unwrap() {
                                Some(r) => {
                                    assert_eq!(r.offset, next);
                                    assert_eq!(r.value, Some(format!("value-{next}").as_bytes()));
                                    assert!(r.offset < log.high_watermark());
                                    next += 1;
                                }
                                None => panic!("no record within 10 s at offset {next}"),
                            }
                        }
                    })
                })
                .collect();
            for b in 0..BATCHES {
                log.append(simple_batch(b * 3, 3, b as i64)).unwrap();
            }
            for r in readers {
                r.join().unwrap();
            }
        });
        assert!(log.segment_count() > 1);
    }
}

#[test]
fn a_long_poll_times_out_when_nothing_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut reader = log.reader(0);
    assert!(reader.next_timeout(Duration::from_millis(20)).unwrap().is_none());
    assert!(!log.wait_for(0, Duration::from_millis(1)));
}

#[test]
fn concurrent_durable_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = PartitionLog::builder(dir.path())
        .config(LogConfig::default().fsync(Fsync::Always))
        .fs(Arc::new(fs.clone()))
        .open()
        .unwrap();
    let before = fs.syncs();
    const THREADS: usize = 32;
    const EACH: usize = 20;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    log.append(simple_batch(t * 1000 + i, 1, 1)).unwrap();
                }
            });
        }
    });
    let syncs = fs.syncs() - before;
    let appends = (THREADS * EACH) as u64;
    eprintln!("{appends} durable appends took {syncs} fsyncs");
    assert_eq!(log.high_watermark(), appends as i64);
    assert!(
        syncs < appends,
        "no fsync was shared: {syncs} for {appends} appends"
    );
}
