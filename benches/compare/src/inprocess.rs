//! In-process produce-to-consume latency: a producer thread sends one 100 B record at a time
//! on a constant schedule; a consumer long-polls; each record's latency runs from when it was
//! due to be sent until the consumer holds it.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, LogConfig, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

use crate::measure::{histogram, wait_until};

pub struct Setup {
    pub broker: Broker,
    _dir: tempfile::TempDir,
}

pub fn setup(root: &std::path::Path) -> Setup {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let broker = Broker::open(dir.path()).expect("open the broker");
    let log = LogConfig::default()
        .fsync(Fsync::Never)
        .retention_bytes(Some(256 << 20));
    broker
        .create_topic("t", 1, TopicConfig::default().with_log(log))
        .expect("create the topic");
    Setup { broker, _dir: dir }
}

/// A consumer of the topic from its end; `spin` is its `poll_spin` (zero by default).
fn consumer(broker: &Broker, spin: Duration) -> Consumer {
    let config = ConsumerConfig::default()
        .auto_offset_reset(OffsetReset::Latest)
        .max_poll_records(10_000)
        .poll_spin(spin);
    let mut c = Consumer::new(broker, config);
    let tp = TopicPartition::new("t", 0);
    c.assign(std::slice::from_ref(&tp)).expect("assign");
    // Fix the starting point now ("latest" is judged when first asked), before anything is sent.
    c.position(&tp).expect("a position");
    c
}

/// Records per second, sending and consuming one at a time, for `for_how_long`.
pub fn max_rate(broker: &Broker, for_how_long: Duration) -> f64 {
    let producer = Producer::new(broker);
    let mut c = consumer(broker, Duration::ZERO);
    let value = [0u8; 100];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_how_long {
        producer.send(ProducerRecord::new("t", &value)).expect("send");
        while c.poll(Duration::from_secs(1)).expect("poll").is_empty() {}
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Latencies of records sent at `rate` per second for `for_how_long`, to a consumer that
/// spins for `spin` before sleeping in each poll.
pub fn open_loop(broker: &Broker, rate: f64, for_how_long: Duration, spin: Duration) -> Histogram<u64> {
    let mut c = consumer(broker, spin);
    scheduled(broker, rate, for_how_long, || {
        let records = c.poll(Duration::from_secs(10)).expect("poll");
        records
            .iter()
            .map(|r| sequence(r.value.expect("a value")))
            .collect()
    })
}

/// The sequence number a scheduled record's value starts with.
pub fn sequence(value: &[u8]) -> u64 {
    u64::from_be_bytes(value[..8].try_into().expect("8 bytes"))
}

/// Latencies of records of 100 B sent to topic "t" at `rate` per second for `for_how_long`,
/// from when each was due until `receive` (which waits for the next records and returns their
/// [`sequence`] numbers) returned it.
pub fn scheduled(
    broker: &Broker,
    rate: f64,
    for_how_long: Duration,
    mut receive: impl FnMut() -> Vec<u64>,
) -> Histogram<u64> {
    let producer = Producer::new(broker);
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = (for_how_long.as_secs_f64() * rate) as u64;
    let origin = Instant::now() + Duration::from_millis(20);
    let due = |i: u64| origin + period.mul_f64(i as f64);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut value = [0u8; 100];
            for i in 0..total {
                wait_until(due(i));
                value[..8].copy_from_slice(&i.to_be_bytes());
                producer.send(ProducerRecord::new("t", &value)).expect("send");
            }
        });
        let mut h = histogram();
        let mut got = 0;
        while got < total {
            let received = receive();
            let now = Instant::now();
            for i in received {
                h.saturating_record(now.saturating_duration_since(due(i)).as_nanos() as u64);
                got += 1;
            }
        }
        h
    })
}
