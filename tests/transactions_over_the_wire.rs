//! Kafka's transactions through librdkafka (the `rdkafka` crate) against the example broker's
//! front end on 127.0.0.1: committed and aborted transactions, markers taking one offset
//! each, `read_committed` consumers seeing only what committed, `read_uncommitted` ones
//! everything, offsets sent with a transaction, and a producer fenced by a newer one with
//! its transactional id.
#![cfg(feature = "kafka")]

use std::time::Duration;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use rivulet::{Broker, Fsync, TopicConfig};

const TIMEOUT: Duration = Duration::from_secs(15);

struct Served {
    addr: std::net::SocketAddr,
    broker: Broker,
    _runtime: tokio::runtime::Runtime,
}

fn serve(dir: &std::path::Path) -> Served {
    let _ = env_logger::builder().is_test(true).try_init();
    let broker = Broker::builder(dir).fsync(Fsync::Always).open().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(rivulet::kafka::serve(
        listener,
        broker.clone(),
        std::future::pending(),
    ));
    Served {
        addr,
        broker,
        _runtime: runtime,
    }
}

impl Served {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr.to_string())
            .set("socket.timeout.ms", "10000");
        if let Ok(debug) = std::env::var("RDKAFKA_DEBUG") {
            c.set("debug", debug);
        }
        c
    }

    fn transactional(&self, id: &str) -> BaseProducer {
        let p: BaseProducer = self
            .client()
            .set("transactional.id", id)
            .set("linger.ms", "1")
            .create()
            .unwrap();
        p.init_transactions(TIMEOUT).unwrap();
        p
    }

    fn consumer(&self, group: &str, isolation: &str) -> BaseConsumer {
        self.client()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .unwrap()
    }
}

fn send(p: &BaseProducer, topic: &str, values: &[&str]) {
    for v in values {
        p.send(BaseRecord::<(), str>::to(topic).payload(*v).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(TIMEOUT).unwrap();
}

/// Everything `consumer` reads from partition 0 of `topic` until it has read up to `end`
/// (its position there) or the deadline.
fn read_all(consumer: &BaseConsumer, topic: &str, end: i64) -> Vec<String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut values = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            values.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
        let position = consumer.position().unwrap();
        let at = position.find_partition(topic, 0).unwrap().offset();
        if at == Offset::Offset(end) {
            break;
        }
    }
    values
}

#[test]
fn committed_and_aborted_transactions_are_read_as_kafka_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    served
        .broker
        .create_topic("out", 1, TopicConfig::default())
        .unwrap();
    let p = served.transactional("copier");

    p.begin_transaction().unwrap();
    send(&p, "out", &["a", "b", "c"]);
    p.commit_transaction(TIMEOUT).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "out", &["x", "y"]);
    p.abort_transaction(TIMEOUT).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "out", &["d"]);
    p.commit_transaction(TIMEOUT).unwrap();

    // Every marker takes one offset: 3 + 1, 2 + 1, 1 + 1.
    let log = served.broker.partition("out", 0).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.last_stable_offset(), 9);
    let committed = read_all(&served.consumer("c", "read_committed"), "out", 9);
    assert_eq!(committed, ["a", "b", "c", "d"]);
    let everything = read_all(&served.consumer("u", "read_uncommitted"), "out", 9);
    assert_eq!(everything, ["a", "b", "c", "x", "y", "d"]);

    // An open transaction holds read_committed readers back at its first offset.
    p.begin_transaction().unwrap();
    send(&p, "out", &["e"]);
    assert_eq!(log.last_stable_offset(), 9);
    assert_eq!(log.high_watermark(), 10);
    let held = read_all(&served.consumer("c2", "read_committed"), "out", 9);
    assert_eq!(held, ["a", "b", "c", "d"]);
    p.commit_transaction(TIMEOUT).unwrap();
    assert_eq!(log.last_stable_offset(), 11);
}

#[test]
fn offsets_sent_with_a_transaction_are_committed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    served
        .broker
        .create_topic("in", 1, TopicConfig::default())
        .unwrap();
    served
        .broker
        .create_topic("out", 1, TopicConfig::default())
        .unwrap();
    let input: BaseProducer = served.client().create().unwrap();
    send(&input, "in", &["1", "2", "3", "4"]);

    let consumer = served.consumer("copy", "read_committed");
    let p = served.transactional("copy-1");
    let offsets = |next: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Offset(next)).unwrap();
        tpl
    };
    consumer.subscribe(&["in"]).unwrap();
    let mut copied = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while copied < 2 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            p.begin_transaction().unwrap();
            send(&p, "out", &[std::str::from_utf8(m.payload().unwrap()).unwrap()]);
            let metadata = consumer.group_metadata().unwrap();
            p.send_offsets_to_transaction(&offsets(m.offset() + 1), &metadata, TIMEOUT)
                .unwrap();
            // The first copy is aborted: its offset must not stick.
            if copied == 0 && m.offset() == 0 {
                p.abort_transaction(TIMEOUT).unwrap();
                let committed = consumer.committed(TIMEOUT).unwrap();
                let at = committed.find_partition("in", 0).unwrap().offset();
                assert_eq!(at, Offset::Invalid, "an aborted transaction's offset");
                consumer.seek("in", 0, Offset::Offset(0), TIMEOUT).unwrap();
                copied = 1;
                continue;
            }
            p.commit_transaction(TIMEOUT).unwrap();
            copied += 1;
        }
    }
    let committed = consumer.committed(TIMEOUT).unwrap();
    assert_eq!(
        committed.find_partition("in", 0).unwrap().offset(),
        Offset::Offset(1)
    );
    let out = read_all(&served.consumer("check", "read_committed"), "out", 4);
    assert_eq!(out, ["1"]);
}

#[test]
fn a_newer_producer_fences_the_older_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    served
        .broker
        .create_topic("out", 1, TopicConfig::default())
        .unwrap();
    let old = served.transactional("shared-id");
    old.begin_transaction().unwrap();
    send(&old, "out", &["from the old one"]);

    // The new producer's init aborts the old one's open transaction.
    let new = served.transactional("shared-id");
    let log = served.broker.partition("out", 0).unwrap();
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    let err = old.commit_transaction(TIMEOUT).unwrap_err();
    assert!(
        err.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fenced)
            || err.to_string().to_lowercase().contains("fenced"),
        "{err}"
    );
    new.begin_transaction().unwrap();
    send(&new, "out", &["from the new one"]);
    new.commit_transaction(TIMEOUT).unwrap();
    let end = log.log_end_offset();
    let values = read_all(&served.consumer("c", "read_committed"), "out", end);
    assert_eq!(values, ["from the new one"]);
}
