//! Append throughput: batches of 1,000 records (100 B and 1 KB values) and one record per
//! call with `Fsync::Never`, and single-record appends with `Fsync::Always` from 1 and 32
//! threads (group commit). Each prints records/s and bytes/s.
//!
//! Run: `cargo bench --bench append`. Every figure is labelled with its durability.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

fn config(fsync: Fsync) -> LogConfig {
    // Retention keeps the benchmark from filling the disk: old segments are deleted in the
    // background while it runs.
    LogConfig::default()
        .fsync(fsync)
        .segment_bytes(64 << 20)
        .retention_bytes(Some(256 << 20))
        .retention_check_interval(Duration::from_millis(200))
        .max_message_bytes(8 << 20)
}

fn batch(records: usize, value: &[u8]) -> rivulet::storage::RecordBatch {
    let mut b = BatchBuilder::with_capacity(Compression::None, records * (value.len() + 8));
    for _ in 0..records {
        b.push(1_700_000_000_000, None, Some(value), &[]);
    }
    b.finish().unwrap()
}

fn append_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("append batch of 1000, no fsync");
    for size in [100usize, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(Fsync::Never)).unwrap();
        let value = vec![0x5a; size];
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1000,
            bytes: 1000 * size as u64,
        });
        group.bench_function(BenchmarkId::from_parameter(format!("{size} B")), |b| {
            b.iter(|| log.append(batch(1000, &value)).unwrap())
        });
    }
    group.finish();
}

fn append_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("append one record per call, no fsync");
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(Fsync::Never)).unwrap();
    let value = vec![0x5a; 100];
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: 100,
    });
    group.bench_function("100 B", |b| b.iter(|| log.append(batch(1, &value)).unwrap()));
    group.finish();
}

fn append_durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("append one record per call, fsync always");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for threads in [1usize, 32] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(Fsync::Always)).unwrap();
        let value = vec![0x5a; 100];
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: 100,
        });
        group.bench_function(BenchmarkId::new("100 B", format!("{threads} appenders")), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads as u64 {
                        let log = &log;
                        let value = &value;
                        let mine = iters / threads as u64 + u64::from(t < iters % threads as u64);
                        s.spawn(move || {
                            for _ in 0..mine {
                                log.append(batch(1, value)).unwrap();
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = append_batches, append_single, append_durable
}
criterion_main!(benches);
