//! The Kafka front end on loopback, driven by librdkafka (the `rdkafka` crate): a producer
//! sending 100 B records with librdkafka's default batching, with acks=1 and acks=-1, on a
//! broker without and with fsync; a consumer fetching them back; and the latency of one
//! produce request (linger 0, one record at a time: send, wait for the acknowledgement).
//! Prints records/s, MB/s (value bytes) and latency percentiles.
//!
//! Run: `cargo bench --features kafka --bench kafka` (about a minute). `RIVULET_KAFKA_RECORDS`
//! changes the record count (default 1,000,000).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use rivulet::{Broker, Fsync, LogConfig, TopicConfig};

const VALUE: usize = 100;

fn records() -> usize {
    std::env::var("RIVULET_KAFKA_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A broker served on a loopback port from a thread of its own; the topic "t" has one
/// partition.
fn serve(dir: &std::path::Path, fsync: Fsync) -> (SocketAddr, Broker) {
    let broker = Broker::builder(dir).fsync(fsync).open().unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(fsync));
    broker.create_topic("t", 1, config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let served = broker.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            rivulet::kafka::serve(listener, served, std::future::pending())
                .await
                .unwrap();
        });
    });
    (rx.recv().unwrap(), broker)
}

fn client(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string());
    c
}

/// Seconds to produce `n` records with `acks`, all acknowledged.
fn produce(addr: SocketAddr, n: usize, acks: &str) -> f64 {
    let producer: BaseProducer = client(addr).set("acks", acks).create().unwrap();
    let value = [0x5au8; VALUE];
    let start = Instant::now();
    for i in 0..n {
        let key = (i as u64).to_be_bytes();
        let mut record = BaseRecord::to("t").key(&key[..]).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(1));
                    record = r;
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    start.elapsed().as_secs_f64()
}

/// Seconds to fetch `n` records from offset `from`.
fn fetch(addr: SocketAddr, from: i64, n: usize) -> f64 {
    let consumer: BaseConsumer = client(addr).set("group.id", "bench").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(from)).unwrap();
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut got = 0;
    let mut bytes = 0;
    while got < n {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            bytes += m.unwrap().payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    std::hint::black_box(bytes);
    start.elapsed().as_secs_f64()
}

/// Microseconds for each of `n` single-record produce requests, one after another: each sent
/// with no linger and awaited until acknowledged.
fn latencies(addr: SocketAddr, n: usize) -> Vec<f64> {
    let producer: FutureProducer = client(addr)
        .set("linger.ms", "0")
        .set("acks", "1")
        .create()
        .unwrap();
    let value = [0x5au8; VALUE];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let record = FutureRecord::<(), _>::to("t").payload(&value[..]);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
        out
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { records() } else { 10_000 };
    println!(
        "{:<26} {:>12} {:>10}",
        "loopback, librdkafka", "records/s", "MB/s"
    );
    let line = |what: &str, secs: f64| {
        println!(
            "{what:<26} {:>12.0} {:>10.1}",
            n as f64 / secs,
            (n * VALUE) as f64 / secs / 1e6
        );
    };
    for (name, fsync) in [("no fsync", Fsync::Never), ("fsync", Fsync::Always)] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, broker) = serve(dir.path(), fsync);
        produce(addr, n / 10, "1"); // warm-up
        let before = broker.partition("t", 0).unwrap().log_end_offset();
        line(&format!("produce acks=1, {name}"), produce(addr, n, "1"));
        line(&format!("produce acks=-1, {name}"), produce(addr, n, "-1"));
        assert_eq!(
            broker.partition("t", 0).unwrap().log_end_offset(),
            before + 2 * n as i64,
            "every record acknowledged is stored"
        );
        line(&format!("fetch, {name}"), fetch(addr, before, n));
        let mut lat = latencies(addr, if full { 5_000 } else { 200 });
        lat.sort_by(f64::total_cmp);
        println!(
            "{:<26} p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
            format!("produce latency, {name}"),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
            lat[lat.len() - 1]
        );
    }
}
