//! In-process produce-to-consume latency, open loop: a producer sends one 100 B record at a
//! constant rate (half the maximum measured just before, closed loop), a consumer long-polls,
//! and each record's latency is measured from when it was *scheduled* to be sent, so a stall
//! delays every record behind it and is not hidden (no coordinated omission). Prints p50,
//! p99, p99.9 and max for `Fsync::Never` and `Fsync::Always`, and for `Fsync::Never` with a
//! consumer that spins 20 us before sleeping (`ConsumerConfig::poll_spin`).
//!
//! Then the time of each single append of one 100 B record to a log kept with `Fsync::Never`,
//! one after another: the rare slow append (a page fault, a new map of the segment's tail) is
//! what an open loop sees as a stall.
//!
//! Run: `cargo bench --bench latency` (about 25 s).

use std::time::{Duration, Instant};

use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, LogConfig, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

const VALUE: usize = 100;

fn setup(fsync: Fsync) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let log = LogConfig::default().fsync(fsync).retention_bytes(Some(256 << 20));
    broker
        .create_topic("t", 1, TopicConfig::default().with_log(log))
        .unwrap();
    (dir, broker)
}

fn consumer(broker: &Broker, spin: Duration) -> Consumer {
    let config = ConsumerConfig::default()
        .auto_offset_reset(OffsetReset::Latest)
        .max_poll_records(10_000)
        .poll_spin(spin);
    let mut c = Consumer::new(broker, config);
    let tp = TopicPartition::new("t", 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    // Fix the starting point now ("latest" is judged when first asked), before anything is sent.
    c.position(&tp).unwrap();
    c
}

/// Records per second, sending and consuming one at a time, for `for_how_long`.
fn max_rate(broker: &Broker, for_how_long: Duration) -> f64 {
    let producer = Producer::new(broker);
    let mut c = consumer(broker, Duration::ZERO);
    let value = [0u8; VALUE];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_how_long {
        producer.send(ProducerRecord::new("t", &value)).unwrap();
        while c.poll(Duration::from_secs(1)).unwrap().is_empty() {}
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Latencies (ns) of records sent every `period` for `for_how_long`.
fn open_loop(broker: &Broker, period: Duration, for_how_long: Duration, spin: Duration) -> Vec<u64> {
    let producer = Producer::new(broker);
    let mut c = consumer(broker, spin);
    let total = (for_how_long.as_nanos() / period.as_nanos()) as u64;
    let origin = Instant::now() + Duration::from_millis(20);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut value = [0u8; VALUE];
            for i in 0..total {
                let due = origin + period * i as u32;
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                value[..8].copy_from_slice(&i.to_be_bytes());
                producer.send(ProducerRecord::new("t", &value)).unwrap();
            }
        });
        let mut latencies = Vec::with_capacity(total as usize);
        while (latencies.len() as u64) < total {
            let records = c.poll(Duration::from_secs(10)).unwrap();
            let now = Instant::now();
            for r in records.iter() {
                let i = u64::from_be_bytes(r.value.unwrap()[..8].try_into().unwrap());
                let scheduled = origin + period * i as u32;
                latencies.push(now.saturating_duration_since(scheduled).as_nanos() as u64);
            }
        }
        latencies
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// Nanoseconds each of `n` single appends of one `VALUE`-byte record took, one after another.
fn single_appends(n: usize) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default().fsync(Fsync::Never)).unwrap();
    let value = [7u8; VALUE];
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let mut batch = BatchBuilder::with_capacity(Compression::None, 2 * VALUE);
        batch.push(1_700_000_000_000, None, Some(&value), &[]);
        let batch = batch.finish().unwrap();
        let start = Instant::now();
        log.append(batch).unwrap();
        took.push(start.elapsed().as_nanos() as u64);
    }
    log.close().unwrap();
    took
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run briefly then.
    let full = std::env::args().any(|a| a == "--bench");
    let (probe, run) = if full {
        (Duration::from_secs(2), Duration::from_secs(5))
    } else {
        (Duration::from_millis(100), Duration::from_millis(200))
    };
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "durability", "rate (rec/s)", "p50 us", "p99 us", "p99.9 us", "max us", "records"
    );
    let spin = Duration::from_micros(20);
    for (name, fsync, spin) in [
        ("none", Fsync::Never, Duration::ZERO),
        ("none, spin", Fsync::Never, spin),
        ("fsync always", Fsync::Always, Duration::ZERO),
    ] {
        let (_dir, broker) = setup(fsync);
        // Warm-up, then the closed-loop maximum, then the open loop at half of it.
        max_rate(&broker, probe / 2);
        let max = max_rate(&broker, probe);
        let rate = max / 2.0;
        let mut lat = open_loop(&broker, Duration::from_secs_f64(1.0 / rate), run, spin);
        lat.sort_unstable();
        println!(
            "{:<14} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9}",
            name,
            rate,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
            *lat.last().unwrap() as f64 / 1000.0,
            lat.len()
        );
    }

    let n = if full { 500_000 } else { 20_000 };
    single_appends(n / 10); // warm-up
    let mut took = single_appends(n);
    let slow = took.iter().filter(|&&ns| ns > 100_000).count();
    took.sort_unstable();
    println!(
        "\nsingle appends of 100 B, no fsync, one after another ({n}): p50 {:.2} / p99 {:.2} / \
         p99.9 {:.1} / p99.99 {:.1} / max {:.0} us; {slow} took over 100 us",
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        percentile(&took, 0.999),
        percentile(&took, 0.9999),
        *took.last().unwrap() as f64 / 1000.0,
    );
}
