//! The rivulet broker (the Kafka front end, served from this process on a loopback port, as
//! `examples/broker.rs` serves it) driven by librdkafka (the `rdkafka` crate) for throughput,
//! and by a bare request loop (hand-encoded Produce v7 requests, one at a time, on one
//! connection) for request/response latency, so no client library's queues are measured.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, LogConfig, TopicConfig};

pub const TOPIC: &str = "t";

pub struct Served {
    pub addr: SocketAddr,
    pub broker: Broker,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// A broker on a loopback port, its topic "t" of one partition kept with `fsync`.
pub fn start(root: &Path, fsync: Fsync) -> Served {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let broker = Broker::builder(dir.path())
        .fsync(fsync)
        .open()
        .expect("open the broker");
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(fsync));
    broker.create_topic(TOPIC, 1, config).expect("create the topic");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = broker.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("its address"))
                .expect("send the address");
            rivulet::kafka::serve(listener, served, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
    });
    Served {
        addr: rx.recv().expect("the broker's address"),
        broker,
        stop: Some(stop),
        thread: Some(thread),
        _dir: dir,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Served {
    pub fn end_offset(&self) -> i64 {
        self.broker
            .partition(TOPIC, 0)
            .expect("the partition")
            .log_end_offset()
    }

    /// Waits (up to 10 s) until readers may see every record written so far: under
    /// `Fsync::Interval` records become visible at the next sync, up to an interval after they
    /// were acknowledged, and the fetch rows measure reading, not that wait.
    pub fn wait_visible(&self) {
        let log = self.broker.partition(TOPIC, 0).expect("the partition");
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.high_watermark() < log.log_end_offset() {
            assert!(Instant::now() < deadline, "records stayed invisible for 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr.to_string());
        c
    }

    /// Records/s of producing `n` records of `value` with librdkafka's defaults and acks=all,
    /// every one acknowledged.
    pub fn produce(&self, n: usize, value: &[u8]) -> f64 {
        let before = self.end_offset();
        let rate = produce_to(self.client(), n, value);
        assert_eq!(
            self.end_offset(),
            before + n as i64,
            "every acknowledged record is stored"
        );
        rate
    }

    /// Records/s of fetching the `n` records from `from` with a librdkafka consumer, timed
    /// from its first record (so its connection and metadata round trips are left out).
    pub fn fetch(&self, from: i64, n: usize) -> f64 {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "compare")
            .set("enable.auto.commit", "false")
            // librdkafka stops fetching for `fetch.queue.backoff.ms` (1 s by default) once its
            // local queue holds `queued.min.messages` (100,000): a consumer fed faster than
            // it polls would measure that pause, not the broker.
            .set("fetch.queue.backoff.ms", "1")
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from))
            .expect("a partition");
        consumer.assign(&tpl).expect("assign");
        let mut start = None;
        let mut got = 0;
        let mut bytes = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while got < n {
            assert!(Instant::now() < deadline, "fetched {got} of {n} records in 300 s");
            if let Some(m) = consumer.poll(Duration::from_secs(1)) {
                bytes += m.expect("a record").payload().map_or(0, <[u8]>::len);
                got += 1;
                start.get_or_insert_with(Instant::now);
            }
        }
        std::hint::black_box(bytes);
        (n - 1) as f64 / start.expect("records were fetched").elapsed().as_secs_f64()
    }
}

/// Records/s of producing `n` records of `value` to topic "t" with librdkafka's defaults and
/// acks=all, through a client configured by `client`, every one acknowledged.
pub fn produce_to(mut client: ClientConfig, n: usize, value: &[u8]) -> f64 {
    let producer: BaseProducer = client.set("acks", "all").create().expect("a producer");
    let start = Instant::now();
    for _ in 0..n {
        let mut record = BaseRecord::<(), [u8]>::to(TOPIC).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(1));
                    record = r;
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every record acknowledged");
    n as f64 / start.elapsed().as_secs_f64()
}

/// One connection sending Produce requests (v7, acks=1, one record of `value` bytes) one at a
/// time.
pub struct RequestLoop {
    stream: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    correlation: i32,
}

impl RequestLoop {
    pub fn new(served: &Served, value: &[u8]) -> RequestLoop {
        let stream = TcpStream::connect(served.addr).expect("connect to the broker");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1_700_000_000_000, None, Some(value), &[]);
        let batch = b.finish().expect("a batch");
        let batch = batch.as_bytes();
        let mut body = Vec::new();
        body.extend_from_slice(&0_i16.to_be_bytes()); // API key: Produce
        body.extend_from_slice(&7_i16.to_be_bytes()); // version
        body.extend_from_slice(&0_i32.to_be_bytes()); // correlation id, set per request
        put_str(&mut body, "compare"); // client id
        body.extend_from_slice(&(-1_i16).to_be_bytes()); // transactional id: null
        body.extend_from_slice(&1_i16.to_be_bytes()); // acks
        body.extend_from_slice(&30_000_i32.to_be_bytes()); // timeout ms
        body.extend_from_slice(&1_i32.to_be_bytes()); // one topic
        put_str(&mut body, TOPIC);
        body.extend_from_slice(&1_i32.to_be_bytes()); // one partition
        body.extend_from_slice(&0_i32.to_be_bytes()); // partition 0
        body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        body.extend_from_slice(batch);
        let mut request = (body.len() as i32).to_be_bytes().to_vec();
        request.extend_from_slice(&body);
        RequestLoop {
            stream,
            request,
            reply: Vec::new(),
            correlation: 0,
        }
    }

    /// Sends one request and reads its response; panics unless partition 0 reports no error.
    pub fn produce_one(&mut self) {
        self.correlation += 1;
        self.request[8..12].copy_from_slice(&self.correlation.to_be_bytes());
        self.stream.write_all(&self.request).expect("send a request");
        let mut len = [0_u8; 4];
        self.stream.read_exact(&mut len).expect("read a response length");
        self.reply.resize(i32::from_be_bytes(len) as usize, 0);
        self.stream.read_exact(&mut self.reply).expect("read a response");
        let r = &self.reply;
        assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), self.correlation);
        // correlation, topics count, topic name (i16 length + bytes), partitions count,
        // partition index, error code.
        let at = 4 + 4 + 2 + TOPIC.len() + 4 + 4;
        let code = i16::from_be_bytes(r[at..at + 2].try_into().unwrap());
        assert_eq!(code, 0, "the produce request succeeded");
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}
