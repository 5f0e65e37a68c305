//! librdkafka (through the `rdkafka` crate, built from source) against the Kafka front end on
//! 127.0.0.1: produce and consume with every codec, a consumer group sharing and handing over
//! partitions, committed offsets across a broker restart, and a group shared by a librdkafka
//! consumer and an in-process one.
#![cfg(feature = "kafka")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, OffsetReset, TopicConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A broker served on a loopback port until dropped or stopped.
struct Served {
    addr: SocketAddr,
    broker: Broker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Served {
    async fn start(dir: &Path) -> Served {
        let broker = Broker::builder(dir).fsync(Fsync::Never).open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rivulet::kafka::serve(listener, broker.clone(), async {
            stopped.await.ok();
        }));
        Served {
            addr,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and closes the broker's logs.
    async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
        self.broker.close().unwrap();
    }

    fn topic(&self, name: &str, partitions: u32) {
        self.broker
            .create_topic(name, partitions, TopicConfig::default())
            .unwrap();
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr.to_string())
            .set("message.timeout.ms", "10000")
            .set("socket.timeout.ms", "10000");
        c
    }

    fn producer(&self, codec: &str) -> FutureProducer {
        self.client()
            .set("compression.codec", codec)
            .set("linger.ms", "5")
            // The Java client's partitioner (librdkafka's default hashes with CRC32).
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap()
    }

    fn consumer(&self, group: &str) -> StreamConsumer {
        self.client()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// Sends `n` keyed records without waiting between them (so they share batches, which
/// librdkafka compresses), then waits for every delivery.
async fn produce(producer: &FutureProducer, topic: &str, n: usize, tag: &str) {
    let mut deliveries = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let value = value(tag, i);
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Record `i`'s value: compressible, and naming its producer.
fn value(tag: &str, i: usize) -> String {
    format!("{tag}-{i}-{}", "compressible ".repeat(8))
}

/// (partition, offset, key, value) of every message `consumer` gets until `want` have arrived
/// or `limit` passes.
async fn consume(consumer: &StreamConsumer, want: usize, limit: Duration) -> Vec<(i32, i64, String, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let m = next.unwrap();
        let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
        got.push((m.partition(), m.offset(), text(m.key()), text(m.payload())));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        served.topic(&topic, 3);
        produce(&served.producer(codec), &topic, 200, codec).await;
        let consumer = served.consumer(&format!("reader-{codec}"));
        consumer.subscribe(&[&topic]).unwrap();
        let got = consume(&consumer, 200, Duration::from_secs(30)).await;
        assert_eq!(got.len(), 200, "{codec}: every record once");
        // Keys decide partitions (murmur2, as the Java client does), and each partition's
        // records arrive in offset order.
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, offset, key, value) in &got {
            let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
            assert_eq!(value, &self::value(codec, i));
            let expected = (rivulet::murmur2(key.as_bytes()) & 0x7fff_ffff) % 3;
            assert_eq!(*p as u32, expected, "{codec}: {key} in partition {p}");
            by_partition.entry(*p).or_default().push(*offset);
        }
        for offsets in by_partition.values() {
            assert!(
                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                "{codec}: {offsets:?}"
            );
        }
        // What librdkafka stored is what an in-process reader sees.
        let log = served.broker.partition(&topic, 0).unwrap();
        let batch = log.read(0, 1 << 20).unwrap();
        let first = batch.batches().next().unwrap();
        let expected = match codec {
            "none" => rivulet::storage::Compression::None,
            "gzip" => rivulet::storage::Compression::Gzip,
            "snappy" => rivulet::storage::Compression::Snappy,
            "lz4" => rivulet::storage::Compression::Lz4,
            _ => rivulet::storage::Compression::Zstd,
        };
        assert_eq!(first.header().compression().unwrap(), expected, "stored as sent");
    }
    served.shut_down().await;
}

/// The partitions each consumer of `consumers` owns, once every one has some and together
/// they own `total`.
async fn settle(consumers: &[&StreamConsumer], total: usize) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Polling keeps the consumers taking part in rebalances.
        for c in consumers {
            let _ = tokio::time::timeout(Duration::from_millis(50), c.recv()).await;
        }
        let owned: Vec<BTreeSet<i32>> = consumers
            .iter()
            .map(|c| {
                c.assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .collect();
        let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
        let sum: usize = owned.iter().map(BTreeSet::len).sum();
        if sum == total && all.len() == total && owned.iter().all(|o| !o.is_empty()) {
            return owned;
        }
        assert!(Instant::now() < deadline, "no settled assignment: {owned:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_two_shares_four_partitions_and_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    served.topic("jobs", 4);
    let (a, b) = (served.consumer("workers"), served.consumer("workers"));
    a.subscribe(&["jobs"]).unwrap();
    b.subscribe(&["jobs"]).unwrap();
    let owned = settle(&[&a, &b], 4).await;
    assert_eq!(owned.iter().map(BTreeSet::len).collect::<Vec<_>>(), [2, 2]);
    let group = served.broker.describe_group("workers").unwrap();
    assert_eq!(group.members.len(), 2);
    assert_eq!(group.state, rivulet::group::GroupState::Stable);
    // librdkafka's default client id, from each request's header.
    assert!(
        group.members.iter().all(|m| m.client_id == "rdkafka"),
        "{group:?}"
    );

    // b leaves; a takes over all four and gets everything produced from then on.
    drop(b);
    let owned = settle(&[&a], 4).await;
    assert_eq!(owned[0].len(), 4);
    produce(&served.producer("none"), "jobs", 100, "after").await;
    let got = consume(&a, 100, Duration::from_secs(30)).await;
    let values: BTreeSet<String> = got.into_iter().map(|m| m.3).collect();
    assert_eq!(values.len(), 100, "every record once, from all four partitions");
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    served.topic("events", 1);
    produce(&served.producer("lz4"), "events", 50, "e").await;
    let consumer = served.consumer("audit");
    consumer.subscribe(&["events"]).unwrap();
    let first = consume(&consumer, 30, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 30);
    // Commit after the 30th record: offset 30.
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset("events", 0, rdkafka::Offset::Offset(30))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
    drop(consumer);
    served.shut_down().await;

    let served = Served::start(dir.path()).await;
    let consumer = served.consumer("audit");
    consumer.subscribe(&["events"]).unwrap();
    let rest = consume(&consumer, 20, Duration::from_secs(30)).await;
    let offsets: Vec<i64> = rest.iter().map(|m| m.1).collect();
    assert_eq!(offsets, (30..50).collect::<Vec<_>>(), "resumed at the commit");
    let committed = served.broker.group_offsets("audit").unwrap();
    assert_eq!(committed[0].committed.offset, 30);
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_librdkafka_consumer_and_an_in_process_consumer_share_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    served.topic("mixed", 4);
    let remote = served.consumer("mixed-group");
    remote.subscribe(&["mixed"]).unwrap();
    settle(&[&remote], 4).await;

    // An in-process member joins on its own thread; the two split the partitions.
    let broker = served.broker.clone();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let local = std::thread::spawn(move || {
        let config = ConsumerConfig::default()
            .group_id("mixed-group")
            .auto_offset_reset(OffsetReset::Earliest)
            .partition_assignment_strategy(&[rivulet::group::Assignor::Range]);
        let mut c = Consumer::new(&broker, config);
        c.subscribe(["mixed"]).unwrap();
        let mut owned = BTreeSet::new();
        while finished.try_recv().is_err() {
            c.poll(Duration::from_millis(50)).unwrap();
            owned = c.assignment().into_iter().map(|tp| tp.partition as i32).collect();
        }
        owned
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let remote_owned = loop {
        let _ = tokio::time::timeout(Duration::from_millis(50), remote.recv()).await;
        let owned: BTreeSet<i32> = remote
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        if owned.len() == 2 {
            break owned;
        }
        assert!(
            Instant::now() < deadline,
            "the librdkafka consumer kept {owned:?}"
        );
    };
    let group = served.broker.describe_group("mixed-group").unwrap();
    assert_eq!(group.members.len(), 2);
    // Let the in-process member see the settled generation, then compare.
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.send(()).unwrap();
    let local_owned = local.join().unwrap();
    assert_eq!(local_owned.len(), 2);
    assert!(
        remote_owned.is_disjoint(&local_owned),
        "{remote_owned:?} vs {local_owned:?}"
    );
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_librdkafka_producer_writes_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    served.topic("ledger", 2);
    let producer: FutureProducer = served
        .client()
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    produce(&producer, "ledger", 300, "entry").await;
    let mut seen = BTreeSet::new();
    let mut producer_ids = BTreeSet::new();
    for p in 0..2 {
        let log = served.broker.partition("ledger", p).unwrap();
        let mut reader = log.reader(0);
        while let Some(r) = reader.next().unwrap() {
            assert!(seen.insert(r.value.unwrap().to_vec()), "a record written twice");
        }
        for batch in log.read(0, usize::MAX).unwrap().batches() {
            producer_ids.insert(batch.header().producer_id);
        }
    }
    assert_eq!(seen.len(), 300);
    assert_eq!(producer_ids.len(), 1, "one producer id, from InitProducerId");
    assert!(producer_ids.iter().all(|&id| id >= 0));
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafkas_admin_client_creates_describes_and_deletes_topics() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path()).await;
    let admin: AdminClient<DefaultClientContext> = served.client().create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));

    let orders = NewTopic::new("orders", 3, TopicReplication::Fixed(1))
        .set("retention.ms", "3600000")
        .set("cleanup.policy", "compact");
    let replicated = NewTopic::new("replicated", 1, TopicReplication::Fixed(3));
    let bad = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    let created = admin
        .create_topics([&orders, &replicated, &bad], &options)
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{:?}", created[0]);
    assert!(created[1].is_err(), "one broker cannot hold three replicas");
    assert!(created[2].is_err(), "an invalid topic name");
    let again = admin.create_topics([&orders], &options).await.unwrap();
    assert!(again[0].is_err(), "a second create of the same topic");
    assert_eq!(served.broker.partition_count("orders").unwrap(), 3);

    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("orders")], &options)
        .await
        .unwrap();
    let config = described[0].as_ref().unwrap();
    let value = |name: &str| config.get(name).and_then(|e| e.value.clone());
    assert_eq!(value("retention.ms").as_deref(), Some("3600000"));
    assert_eq!(value("cleanup.policy").as_deref(), Some("compact"));

    let deleted = admin
        .delete_topics(&["orders", "never-made"], &options)
        .await
        .unwrap();
    assert!(deleted[0].is_ok());
    assert!(deleted[1].is_err());
    assert!(!served.broker.list_topics().contains(&"orders".to_string()));
    served.shut_down().await;
}
