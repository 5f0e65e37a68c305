//! Sequential read: a log of one million 100 B records is opened anew (cold-opened: no state
//! in memory, recovery and index checks included) and read to its end, each iteration. The
//! file data comes from the page cache. Prints records/s and bytes/s.
//!
//! Run: `cargo bench --bench read`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

const RECORDS: usize = 1_000_000;
const VALUE: usize = 100;

fn config() -> LogConfig {
    LogConfig::default()
        .fsync(Fsync::Never)
        .segment_bytes(64 << 20)
        .retention_ms(None)
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let value = vec![0x5a; VALUE];
        for _ in 0..RECORDS / 1000 {
            let mut b = BatchBuilder::new(Compression::None);
            for _ in 0..1000 {
                b.push(1_700_000_000_000, None, Some(&value), &[]);
            }
            log.append(b.finish().unwrap()).unwrap();
        }
        log.close().unwrap();
    }
    let mut group = c.benchmark_group("replay from a cold-opened log");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes: (RECORDS * VALUE) as u64,
    });
    group.bench_function("100 B", |b| {
        b.iter(|| {
            let log = PartitionLog::open(dir.path(), config()).unwrap();
            let mut reader = log.reader(0);
            let mut n = 0usize;
            let mut bytes = 0usize;
            while let Some(r) = reader.next().unwrap() {
                n += 1;
                bytes += r.value.map_or(0, <[u8]>::len);
            }
            assert_eq!((n, bytes), (RECORDS, RECORDS * VALUE));
        })
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
