//! Three example brokers as real processes on loopback, each node's peer link through a
//! fault-injecting proxy, and a librdkafka producer (acks=all, idempotence) writing at a
//! steady rate while the leader of a partition is killed with SIGKILL and started again, its
//! successor is stopped with SIGSTOP for 3 s, and the proxies delay, cut one way and drop
//! the peer links. Afterwards every acknowledged record is read back at the offset it was
//! acknowledged at, no record is there twice, a consumer group reads every record, a fourth
//! broker joins through a seed, and the replicas of every partition hold identical batches.
#![cfg(all(feature = "kafka", feature = "cluster"))]

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rivulet::storage::PartitionLog;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;

/// The example broker, built with the test (`cargo test --all-features` builds examples).
fn broker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("broker");
    assert!(
        path.exists(),
        "{} is missing: build it with --features kafka,cluster",
        path.display()
    );
    path
}

/// Faults a proxy injects into the links through it.
#[derive(Default)]
struct Faults {
    /// Milliseconds each chunk is held before it is passed on.
    delay_ms: AtomicU64,
    /// Bytes back from the node are dropped (one direction cut).
    cut_replies: AtomicBool,
    /// Bumped to close every link open now.
    generation: AtomicU64,
}

/// A TCP proxy in front of one node's peer port.
struct Proxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
}

fn proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let generation = f.generation.load(Ordering::SeqCst);
            for (from, to, replies) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap(), false),
                (server, client, true),
            ] {
                let f = f.clone();
                thread::spawn(move || pump(from, to, replies, generation, &f));
            }
        }
    });
    Proxy { addr, faults }
}

/// Copies one direction of a link, as the faults say, until either end closes or the link
/// is dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, replies: bool, generation: u64, f: &Faults) {
    from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if f.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let delay = f.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        if replies && f.cut_replies.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// One broker process and how to start it again.
struct Node {
    id: u64,
    data: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    kafka: String,
}

impl Node {
    fn start(&mut self) {
        let log = self.data.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(broker_binary())
            .args(&self.args)
            .env("RUST_LOG", "warn,rivulet=info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("the broker starts");
        self.child = Some(child);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn kill(&mut self) {
        self.signal("-KILL");
        self.child.take().unwrap().wait().unwrap();
    }

    fn stop(&mut self) {
        if self.child.is_some() {
            self.signal("-INT");
            self.child.take().unwrap().wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Acknowledged records: partition, offset, value.
type Acked = Arc<Mutex<Vec<(i32, i64, Vec<u8>)>>>;

/// Every record delivery: those acknowledged, and a count of the others.
struct Deliveries(Acked, Arc<AtomicU64>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.0.lock().unwrap().push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Err(_) => {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The id of the node leading `partition`, from the cluster's metadata.
fn leader_of(bootstrap: &str, partition: i32) -> Option<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    let md = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == TOPIC)?;
    let p = t.partitions().iter().find(|p| p.id() == partition)?;
    (p.leader() >= 0).then_some(p.leader() as u64)
}

/// Every record of the topic, read partition by partition up to its high watermark.
fn read_back(bootstrap: &str) -> BTreeMap<(i32, i64), Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("group.id", "read-back")
        .create()
        .unwrap();
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS as i32 {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = 0;
        while next < high {
            assert!(
                Instant::now() < deadline,
                "partition {p} not read to {high} in 60 s"
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
                && m.partition() == p
            {
                out.insert((p, m.offset()), m.payload().unwrap_or_default().to_vec());
                next = m.offset() + 1;
            }
        }
    }
    out
}

/// Each partition's batches on one node, byte for byte, once its broker has stopped.
fn batches_of(data: &Path, partition: u32) -> Vec<u8> {
    let log = PartitionLog::open(data.join(format!("{TOPIC}-{partition}")), Default::default()).unwrap();
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    while from < log.log_end_offset() {
        let fetch = log.read(from, 1 << 20).unwrap();
        if fetch.is_empty() {
            break;
        }
        from = fetch.next_offset().unwrap();
        out.extend_from_slice(fetch.as_bytes());
    }
    out
}

/// Each partition's size in bytes at the node serving Kafka clients at `kafka` (its
/// DescribeLogDirs answer), or `None` if it does not answer.
fn partition_sizes(kafka: &str) -> Option<BTreeMap<i32, i64>> {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{
        ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let version = 1;
    let mut frame = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::DescribeLogDirs as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(
            &mut frame,
            ApiKey::DescribeLogDirs.request_header_version(version),
        )
        .ok()?;
    DescribeLogDirsRequest::default()
        .with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions((0..PARTITIONS as i32).collect()),
        ]))
        .encode(&mut frame, version)
        .ok()?;
    let mut s = TcpStream::connect(kafka).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(&(frame.len() as u32).to_be_bytes()).ok()?;
    s.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    let mut body = bytes::Bytes::from(body);
    ResponseHeader::decode(
        &mut body,
        ApiKey::DescribeLogDirs.response_header_version(version),
    )
    .ok()?;
    let response = DescribeLogDirsResponse::decode(&mut body, version).ok()?;
    let sizes = response
        .results
        .iter()
        .flat_map(|d| &d.topics)
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    Some(sizes)
}

#[test]
fn a_cluster_of_processes_keeps_every_acknowledged_record_through_kills_stops_and_link_faults() {
    let dir = tempfile::tempdir().unwrap();
    let real: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let proxies: Vec<Proxy> = real.iter().map(|&a| proxy(a)).collect();
    let voters = (0..3)
        .map(|i| format!("{}@{}", i + 1, proxies[i].addr))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("n{}", i + 1));
            let kafka = format!("127.0.0.1:{}", free_port());
            let args = [
                "--data",
                data.to_str().unwrap(),
                "--listen",
                &kafka,
                "--node-id",
                &(i + 1).to_string(),
                "--peer-listen",
                &real[i].to_string(),
                "--voters",
                &voters,
                "--num-partitions",
                &PARTITIONS.to_string(),
                "--group-initial-rebalance-delay-ms",
                "0",
            ]
            .map(String::from)
            .to_vec();
            Node {
                id: i as u64 + 1,
                data,
                args,
                child: None,
                kafka,
            }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let bootstrap = nodes
        .iter()
        .map(|n| n.kafka.clone())
        .collect::<Vec<_>>()
        .join(",");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(Deliveries(acked.clone(), failed.clone()))
        .expect("a producer");
    let producing = Arc::new(AtomicBool::new(true));
    let sender = {
        let producing = producing.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while producing.load(Ordering::SeqCst) {
                let value = format!("value-{i}");
                let key = format!("key-{}", i % 97);
                let record = BaseRecord::to(TOPIC).key(&key).payload(&value);
                if producer.send(record).is_ok() {
                    i += 1;
                }
                thread::sleep(Duration::from_millis(4));
            }
            producer
                .flush(Duration::from_secs(90))
                .expect("every record is answered");
            i
        })
    };

    // The leader of partition 0 is killed, then started again.
    thread::sleep(Duration::from_secs(4));
    let leader = leader_of(&bootstrap, 0).expect("partition 0 has a leader");
    let killed = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[killed].kill();
    thread::sleep(Duration::from_secs(3));
    nodes[killed].start();

    // Its successor is stopped for 3 s.
    thread::sleep(Duration::from_secs(3));
    let successor = leader_of(&bootstrap, 0).expect("partition 0 has a leader again");
    let stopped = nodes.iter().position(|n| n.id == successor).unwrap();
    nodes[stopped].signal("-STOP");
    thread::sleep(Duration::from_secs(3));
    nodes[stopped].signal("-CONT");

    // The peer links: delayed, cut one way, dropped.
    thread::sleep(Duration::from_secs(2));
    proxies[0].faults.delay_ms.store(150, Ordering::SeqCst);
    thread::sleep(Duration::from_secs(2));
    proxies[0].faults.delay_ms.store(0, Ordering::SeqCst);
    proxies[1].faults.cut_replies.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_secs(2));
    proxies[1].faults.cut_replies.store(false, Ordering::SeqCst);
    for p in &proxies {
        p.faults.generation.fetch_add(1, Ordering::SeqCst);
    }
    thread::sleep(Duration::from_secs(3));
    producing.store(false, Ordering::SeqCst);
    let sent = sender.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} of {sent} records were acknowledged",
        acked.len()
    );
    let held = read_back(&bootstrap);
    for (p, offset, value) in &acked {
        assert_eq!(
            held.get(&(*p, *offset)),
            Some(value),
            "the record acknowledged at {TOPIC}-{p} offset {offset}"
        );
    }
    let mut seen = HashSet::new();
    for ((p, offset), value) in &held {
        assert!(
            seen.insert(value.clone()),
            "{} is there twice (again at {p}/{offset})",
            String::from_utf8_lossy(value)
        );
    }

    // A consumer group reads every record.
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "checkers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    group.subscribe(&[TOPIC]).unwrap();
    let wanted: HashSet<Vec<u8>> = acked.iter().map(|(_, _, v)| v.clone()).collect();
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !wanted.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "the group read {} of {} records",
            got.len(),
            wanted.len()
        );
        if let Some(Ok(m)) = group.poll(Duration::from_millis(200)) {
            got.insert(m.payload().unwrap_or_default().to_vec());
        }
    }
    drop(group);

    // A fourth broker joins through node 1's peer address (as the README starts one); Kafka
    // clients see four brokers.
    let data = dir.path().join("n4");
    let kafka = format!("127.0.0.1:{}", free_port());
    let peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = [
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &kafka,
        "--node-id",
        "4",
        "--peer-listen",
        &peer.to_string(),
        "--seeds",
        &proxies[0].addr.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut fourth = Node {
        id: 4,
        data,
        args,
        child: None,
        kafka,
    };
    fourth.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &fourth.kafka)
            .create()
            .unwrap();
        let brokers = consumer
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .map_or(0, |md| md.brokers().len());
        if brokers == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth broker lists {brokers} brokers"
        );
        thread::sleep(Duration::from_millis(200));
    }
    fourth.stop();

    // Once every replica is up to date (every node reports the same sizes: a follower that
    // was stopped or cut off may take a few seconds to be sent what it missed), the nodes
    // stop; their replicas of each partition are identical, and hold every acknowledged
    // record.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sizes: Vec<_> = nodes.iter().map(|n| partition_sizes(&n.kafka)).collect();
        let settled = sizes[0].as_ref().is_some_and(|s| s.len() == PARTITIONS as usize)
            && sizes.iter().all(|s| *s == sizes[0]);
        if settled || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    for n in &mut nodes {
        n.stop();
    }
    for p in 0..PARTITIONS {
        let first = batches_of(&nodes[0].data, p);
        for n in &nodes[1..] {
            assert!(
                batches_of(&n.data, p) == first,
                "node {} holds other batches of partition {p}",
                n.id
            );
        }
    }
    println!(
        "{sent} sent, {} acknowledged, {} failed, {} held",
        acked.len(),
        failed.load(Ordering::SeqCst),
        held.len()
    );
}
