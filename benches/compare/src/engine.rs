//! The embedded log against the `commitlog` crate, the same workload loop on each: appends of
//! 100 B and 1 KB records in batches of 1,000 and one per call, appends made durable batch by
//! batch, single durable appends, and replay from the page cache.
//!
//! Each side builds its own batch in every call (rivulet a Kafka RecordBatch, commitlog its
//! `MessageBuf`), as an application would, and each timed run writes into a new directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use hdrhistogram::Histogram;
use rivulet::storage::{BatchBuilder, Compression, PartitionLog, RecordBatch};
use rivulet::{Broker, Fsync, LogConfig, Producer, ProducerRecord, TopicConfig};

use crate::measure::{histogram, open_loop};

const TIMESTAMP: i64 = 1_700_000_000_000;

fn rivulet_config(fsync: Fsync) -> LogConfig {
    LogConfig::default()
        .fsync(fsync)
        .segment_bytes(256 << 20)
        .retention_ms(None)
        .max_message_bytes(8 << 20)
}

fn rivulet_batch(records: usize, value: &[u8]) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(Compression::None, records * (value.len() + 16));
    for _ in 0..records {
        b.push(TIMESTAMP, None, Some(value), &[]);
    }
    b.finish().expect("a batch of small records")
}

fn commitlog_open(dir: &Path) -> CommitLog {
    let mut options = LogOptions::new(dir);
    options.segment_max_bytes(256 << 20).message_max_bytes(8 << 20);
    CommitLog::new(options).expect("open a commitlog")
}

fn commitlog_batch(records: usize, value: &[u8]) -> MessageBuf {
    let mut buf = MessageBuf::default();
    for _ in 0..records {
        buf.push(value).expect("a small message");
    }
    buf
}

/// The one segment file commitlog writes into (it names it by its base offset, `.log`).
fn commitlog_segment(dir: &Path) -> File {
    let path = std::fs::read_dir(dir)
        .expect("read the commitlog directory")
        .map(|e| e.expect("a directory entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("commitlog has a segment file");
    File::open(path).expect("open commitlog's segment")
}

/// A new, empty directory under `root` for one run; removed when dropped.
fn scratch(root: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(root).expect("a scratch directory")
}

/// Which of the two logs a run uses.
#[derive(Clone, Copy, Debug)]
pub enum Log {
    Rivulet,
    Commitlog,
}

/// Records/s of appending `total` records of `value` bytes in batches of `batch`, no fsync
/// (`batch` 1 is one record per call).
pub fn append(log: Log, root: &Path, total: usize, value: usize, batch: usize) -> f64 {
    let dir = scratch(root);
    let value = vec![0x5a_u8; value];
    let calls = total / batch;
    match log {
        Log::Rivulet => {
            let log = PartitionLog::open(dir.path(), rivulet_config(Fsync::Never)).expect("open");
            let start = Instant::now();
            for _ in 0..calls {
                log.append(rivulet_batch(batch, &value)).expect("append");
            }
            rate(calls * batch, start)
        }
        Log::Commitlog => {
            let mut log = commitlog_open(dir.path());
            let start = Instant::now();
            for _ in 0..calls {
                if batch == 1 {
                    log.append_msg(&value).expect("append");
                } else {
                    log.append(&mut commitlog_batch(batch, &value)).expect("append");
                }
            }
            rate(calls * batch, start)
        }
    }
}

/// Records/s of the log's append alone: `batches` batches of `records` records of `value`
/// bytes, built before the clock starts (as the broker is handed batches a client built).
pub fn append_ready(root: &Path, batches: usize, records: usize, value: usize, fsync: Fsync) -> f64 {
    let dir = scratch(root);
    let value = vec![0x5a_u8; value];
    let ready: Vec<RecordBatch> = (0..batches).map(|_| rivulet_batch(records, &value)).collect();
    let log = PartitionLog::open(dir.path(), rivulet_config(fsync)).expect("open");
    let start = Instant::now();
    for batch in ready {
        log.append(batch).expect("append");
    }
    rate(batches * records, start)
}

/// Records/s of `threads` threads each appending `per_thread` 100 B records one per call:
/// through a `Producer` (whose accumulator gathers the records of concurrent callers into
/// one batch) or a `CommitLog` behind a mutex.
pub fn many_senders(log: Log, root: &Path, threads: usize, per_thread: usize) -> f64 {
    let dir = scratch(root);
    let value = [0x5a_u8; 100];
    match log {
        Log::Rivulet => {
            let broker = Broker::open(dir.path()).expect("open the broker");
            let config = TopicConfig::default().with_log(rivulet_config(Fsync::Never));
            broker.create_topic("t", 1, config).expect("create the topic");
            let producer = Producer::new(&broker);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            producer
                                .send(ProducerRecord::new("t", &value).partition(0))
                                .expect("send");
                        }
                    });
                }
            });
            let r = rate(threads * per_thread, start);
            let end = broker.partition("t", 0).expect("the partition").log_end_offset();
            assert_eq!(end, (threads * per_thread) as i64, "every record sent is stored");
            r
        }
        Log::Commitlog => {
            let log = Mutex::new(commitlog_open(dir.path()));
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            log.lock().expect("the lock").append_msg(value).expect("append");
                        }
                    });
                }
            });
            rate(threads * per_thread, start)
        }
    }
}

/// Records/s of appending `batches` batches of 1,000 100 B records, each durable (fdatasync'd)
/// before the next. commitlog has no fsync of its own (its `flush` flushes a `File`, which
/// does nothing), so the harness `fdatasync`s its segment file after each batch, as its users
/// must.
pub fn append_durable(log: Log, root: &Path, batches: usize) -> f64 {
    let dir = scratch(root);
    let value = vec![0x5a_u8; 100];
    match log {
        Log::Rivulet => {
            let log = PartitionLog::open(dir.path(), rivulet_config(Fsync::Always)).expect("open");
            let start = Instant::now();
            for _ in 0..batches {
                log.append(rivulet_batch(1000, &value)).expect("append");
            }
            rate(batches * 1000, start)
        }
        Log::Commitlog => {
            let mut log = commitlog_open(dir.path());
            let segment = commitlog_segment(dir.path());
            let start = Instant::now();
            for _ in 0..batches {
                log.append(&mut commitlog_batch(1000, &value)).expect("append");
                segment.sync_data().expect("fdatasync");
            }
            rate(batches * 1000, start)
        }
    }
}

/// Latencies of single 100 B durable appends (`Fsync::Always`), one after another (`rate`
/// None) or due at `rate` per second.
pub fn durable_single(root: &Path, n: usize, rate: Option<f64>, for_how_long: Duration) -> Histogram<u64> {
    let dir = scratch(root);
    let value = [0x5a_u8; 100];
    let log = PartitionLog::open(dir.path(), rivulet_config(Fsync::Always)).expect("open");
    let op = || {
        log.append(rivulet_batch(1, &value)).expect("append");
    };
    match rate {
        None => {
            let mut h = histogram();
            for _ in 0..n {
                let start = Instant::now();
                op();
                h.saturating_record(start.elapsed().as_nanos() as u64);
            }
            h
        }
        Some(rate) => open_loop(rate, for_how_long, op),
    }
}

/// A log of `total` 100 B records written in batches of 1,000, for replay; stays until the
/// returned directory is dropped.
pub struct Written {
    pub dir: tempfile::TempDir,
    pub records: usize,
}

pub fn write_for_replay(log: Log, root: &Path, total: usize) -> Written {
    let dir = scratch(root);
    let value = vec![0x5a_u8; 100];
    match log {
        Log::Rivulet => {
            let log = PartitionLog::open(dir.path(), rivulet_config(Fsync::Never)).expect("open");
            for _ in 0..total / 1000 {
                log.append(rivulet_batch(1000, &value)).expect("append");
            }
            log.close().expect("close");
        }
        Log::Commitlog => {
            let mut log = commitlog_open(dir.path());
            for _ in 0..total / 1000 {
                log.append(&mut commitlog_batch(1000, &value)).expect("append");
            }
        }
    }
    Written {
        dir,
        records: total / 1000 * 1000,
    }
}

/// Records/s of opening a written log and reading every record (its value bytes summed, so
/// nothing is skipped), from the page cache.
pub fn replay(log: Log, written: &Written) -> f64 {
    let path: PathBuf = written.dir.path().to_owned();
    let start = Instant::now();
    let (n, bytes) = match log {
        Log::Rivulet => {
            let log = PartitionLog::open(&path, rivulet_config(Fsync::Never)).expect("open");
            let mut reader = log.reader(0);
            let (mut n, mut bytes) = (0usize, 0usize);
            while let Some(r) = reader.next().expect("read") {
                n += 1;
                bytes += r.value.map_or(0, <[u8]>::len);
            }
            (n, bytes)
        }
        Log::Commitlog => {
            let log = commitlog_open(&path);
            let (mut n, mut bytes) = (0usize, 0usize);
            let mut next = 0u64;
            loop {
                let set = log.read(next, ReadLimit::max_bytes(1 << 20)).expect("read");
                let mut last = None;
                for m in set.iter() {
                    n += 1;
                    bytes += m.payload().len();
                    last = Some(m.offset());
                }
                match last {
                    Some(o) => next = o + 1,
                    None => break,
                }
            }
            (n, bytes)
        }
    };
    let r = rate(n, start);
    assert_eq!(
        (n, bytes),
        (written.records, written.records * 100),
        "{log:?} replayed every record"
    );
    r
}

fn rate(records: usize, start: Instant) -> f64 {
    records as f64 / start.elapsed().as_secs_f64()
}
