//! Group consumption against plain replay: 10 million 100 B records in 8 partitions are
//! drained (a) by a group of 4 subscribed consumers, one thread each, joining, rebalancing and
//! committing as they go, and (b) by 4 threads replaying the same partitions with
//! `LogReader`, two partitions each. Both touch every record's key and value. Runs are
//! interleaved; prints each run, the ratio of the medians group/replay (target: at least 0.9)
//! and the median of the runs' own ratios.
//!
//! Run: `cargo bench --bench group` (about a minute and a half). `RIVULET_GROUP_RECORDS` changes the
//! record count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, LogConfig, OffsetReset, TopicConfig};

const PARTITIONS: u32 = 8;
const MEMBERS: u32 = 4;
const VALUE: usize = 100;
const RUNS: usize = 9;

fn records() -> u64 {
    std::env::var("RIVULET_GROUP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn fill(broker: &Broker, total: u64) {
    let log = LogConfig::default()
        .fsync(Fsync::Never)
        .retention_ms(None)
        .segment_bytes(256 << 20);
    broker
        .create_topic("t", PARTITIONS, TopicConfig::default().with_log(log))
        .unwrap();
    let value = vec![0x5a; VALUE];
    let per = total / PARTITIONS as u64;
    for p in 0..PARTITIONS {
        let part = broker.partition("t", p).unwrap();
        let mut left = per;
        while left > 0 {
            let n = left.min(1000);
            let mut b = BatchBuilder::new(Compression::None);
            for i in 0..n {
                b.push(1_700_000_000_000, Some(&i.to_le_bytes()), Some(&value), &[]);
            }
            part.append(b.finish().unwrap()).unwrap();
            left -= n;
        }
    }
}

/// Seconds for a group of `MEMBERS` consumers to read `total` records: from the start of the
/// threads (so joining and the first rebalances count) to the poll that returns the last
/// record. Closing afterwards is not counted: members that finished early sit in `poll` until
/// its timeout, which says nothing about draining.
fn group_run(broker: &Broker, total: u64, run: usize) -> f64 {
    let seen = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let drained = Arc::new(std::sync::OnceLock::new());
    let members: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let (broker, seen, drained) = (broker.clone(), seen.clone(), drained.clone());
            thread::spawn(move || {
                let config = ConsumerConfig::default()
                    .group_id(format!("bench-{run}"))
                    .auto_offset_reset(OffsetReset::Earliest)
                    .max_poll_records(5_000)
                    .auto_commit_interval(Duration::from_millis(100));
                let mut c = Consumer::new(&broker, config);
                c.subscribe(["t"]).unwrap();
                let mut bytes = 0usize;
                while seen.load(Ordering::Relaxed) < total {
                    let records = c.poll(Duration::from_millis(20)).unwrap();
                    for r in records.iter() {
                        bytes += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                    }
                    let n = records.len() as u64;
                    if n > 0 && seen.fetch_add(n, Ordering::Relaxed) + n == total {
                        drained.set(start.elapsed()).unwrap();
                    }
                }
                std::hint::black_box(bytes);
                c.close().unwrap();
            })
        })
        .collect();
    for m in members {
        m.join().unwrap();
    }
    let secs = drained.get().expect("the last record was seen").as_secs_f64();
    let n = seen.load(Ordering::Relaxed);
    assert_eq!(
        n,
        total,
        "each record once (generation {:?})",
        broker
            .describe_group(&format!("bench-{run}"))
            .map(|d| d.generation)
    );
    secs
}

/// Seconds for `MEMBERS` threads to replay the partitions with `LogReader`.
fn replay_run(broker: &Broker, total: u64) -> f64 {
    let start = Instant::now();
    let readers: Vec<_> = (0..MEMBERS)
        .map(|m| {
            let broker = broker.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                let mut bytes = 0usize;
                for p in (m..PARTITIONS).step_by(MEMBERS as usize) {
                    let mut reader = broker.partition("t", p).unwrap().reader(0);
                    while let Some(r) = reader.next().unwrap() {
                        bytes += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                        n += 1;
                    }
                }
                std::hint::black_box(bytes);
                n
            })
        })
        .collect();
    let n: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(n, total);
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of tests; there are none.
    }
    let total = records() / PARTITIONS as u64 * PARTITIONS as u64;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let t = Instant::now();
    fill(&broker, total);
    println!("wrote {total} records in {:.1} s", t.elapsed().as_secs_f64());
    let (mut group, mut replay) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let r = replay_run(&broker, total);
        let g = group_run(&broker, total, run);
        println!(
            "run {run}: replay {:.2} M rec/s, group of {MEMBERS} {:.2} M rec/s",
            total as f64 / r / 1e6,
            total as f64 / g / 1e6
        );
        replay.push(r);
        group.push(g);
    }
    let pairs = median(replay.iter().zip(&group).map(|(r, g)| r / g).collect());
    let (r, g) = (median(replay), median(group));
    println!(
        "median: replay {:.2} M rec/s, group {:.2} M rec/s, ratio of medians {:.2}, \
         median of run ratios {pairs:.2}",
        total as f64 / r / 1e6,
        total as f64 / g / 1e6,
        r / g
    );
}
