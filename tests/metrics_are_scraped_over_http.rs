//! The example broker's metrics, scraped over HTTP as Prometheus does (`--metrics ADDR`):
//! after a Kafka client produced and a group consumed and committed, the scrape shows the
//! requests by API, the partition's appended records and bytes, fsync durations, open
//! connections and the group's committed lag, in Prometheus' text format.
//!
//! Needs the example broker built (`cargo test --all-features` builds it).
#![cfg(feature = "kafka")]

#[path = "common/copy_loop.rs"]
mod copy_loop;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
}

/// The value of the first sample of `metric` whose labels include all of `labels`.
fn sample(body: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn a_scrape_shows_requests_appends_fsyncs_connections_and_group_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (kafka, metrics) = (free_port(), free_port());
    let mut child = Command::new(copy_loop::broker_binary())
        .args(["--data", dir.path().to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{kafka}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--group-initial-rebalance-delay-ms", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", kafka)).is_err()
    {
        assert!(Instant::now() < deadline, "the broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", format!("127.0.0.1:{kafka}"));
    let producer: BaseProducer = client.create().unwrap();
    for i in 0..10 {
        let value = format!("reading {i}");
        producer
            .send(BaseRecord::<(), _>::to("meters").payload(&value))
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    // A group that read 4 of the 10 and committed: its lag is 6.
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "alerts")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["meters"]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + TIMEOUT;
    while read < 4 {
        assert!(Instant::now() < deadline, "the consumer read nothing");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
            if read == 4 {
                consumer.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
    }

    let body = scrape(metrics);
    let produce = sample(&body, "rivulet_kafka_requests_total", &["api=\"Produce\""]);
    assert!(produce.is_some_and(|n| n >= 1.0), "{body}");
    assert!(sample(&body, "rivulet_kafka_requests_total", &["api=\"Fetch\""]).is_some_and(|n| n >= 1.0));
    let appended = sample(
        &body,
        "rivulet_log_appended_records_total",
        &["topic=\"meters\"", "partition=\"0\""],
    );
    assert_eq!(appended, Some(10.0), "{body}");
    assert!(
        sample(&body, "rivulet_log_appended_bytes_total", &["topic=\"meters\""]).is_some_and(|n| n > 100.0)
    );
    assert!(
        sample(&body, "rivulet_log_fsync_seconds_count", &[]).is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(
        sample(&body, "rivulet_kafka_connections ", &[]).is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(sample(&body, "rivulet_kafka_connections_total", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&body, "rivulet_group_rebalances_total", &["group=\"alerts\""]).is_some_and(|n| n >= 1.0));
    let lag = sample(
        &body,
        "rivulet_group_lag",
        &["group=\"alerts\"", "topic=\"meters\"", "partition=\"0\""],
    );
    assert_eq!(lag, Some(6.0), "{body}");
    assert!(
        body.contains("# HELP rivulet_log_appended_records_total"),
        "described"
    );

    drop((consumer, producer));
    child.kill().unwrap();
    child.wait().unwrap();
}
