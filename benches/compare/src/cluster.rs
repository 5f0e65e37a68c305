//! A cluster of three nodes in this process, each serving Kafka on a loopback port, against
//! one broker in the same run: a librdkafka producer's throughput with acks=all (each batch is
//! on a majority's disks before it is acknowledged), and the time a partition is without a
//! leader when its leader stops (the stop to the first write acknowledged again).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rivulet::cluster::{Cluster, ClusterBuilder};
use rivulet::{Producer, ProducerRecord, TopicConfig};

use crate::broker::TOPIC;

const READY: Duration = Duration::from_secs(60);

/// One node and its Kafka server.
struct Node {
    cluster: Cluster,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.cluster.shutdown().expect("the node stops");
    }
}

/// Three nodes on loopback holding topic "t" of one partition.
pub struct Served {
    nodes: Vec<Node>,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if n.thread.is_some() {
                n.stop();
            }
        }
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub fn start(root: &Path) -> Served {
    start_with(root, 1)
}

/// Three nodes holding topic "t" of `partitions` partitions.
pub fn start_with(root: &Path, partitions: u32) -> Served {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    // The Kafka listeners are bound (and held) before the peer ports are picked: a port
    // picked and released could otherwise be handed to a Kafka listener bound after it.
    let mut kafka_listeners: Vec<TcpListener> = (1..=3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a Kafka port"))
        .collect();
    let mut peers: Vec<SocketAddr> = Vec::new();
    while peers.len() < 3 {
        let addr = free_addr();
        if !peers.contains(&addr) {
            peers.push(addr);
        }
    }
    let voters: Vec<(u64, SocketAddr)> = (1..=3).zip(peers).collect();
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for &(id, _) in &voters {
        let kafka = kafka_listeners.remove(0);
        let addr = kafka.local_addr().unwrap();
        let cluster = ClusterBuilder::new(id, dir.path().join(format!("n{id}")))
            .voters(voters.iter().copied())
            .kafka_address(addr.to_string())
            .start()
            .expect("the node starts");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let broker = cluster.broker().clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                kafka.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(kafka).expect("listen");
                rivulet::kafka::serve(listener, broker, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        nodes.push(Node {
            cluster,
            stop: Some(stop),
            thread: Some(thread),
        });
        addrs.push(addr.to_string());
    }
    for n in &nodes {
        n.cluster.wait_ready(READY).expect("the cluster is ready");
    }
    nodes[0]
        .cluster
        .broker()
        .create_topic(TOPIC, partitions, TopicConfig::default())
        .expect("create the topic");
    for n in &nodes {
        for p in 0..partitions {
            let deadline = Instant::now() + READY;
            while n
                .cluster
                .replica_state(TOPIC, p)
                .map_or(true, |s| s.leader.is_none())
            {
                assert!(Instant::now() < deadline, "no leader for partition {p}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Served {
        nodes,
        bootstrap: addrs.join(","),
        _dir: dir,
    }
}

impl Served {
    /// Records/s of producing `n` records of `value` with librdkafka's defaults and acks=all,
    /// every one acknowledged.
    pub fn produce(&self, n: usize, value: &[u8]) -> f64 {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.bootstrap);
        crate::broker::produce_to(client, n, value)
    }

    /// Seconds from the stop of the partition's leader to the first write acknowledged
    /// again, written by an in-process producer at another node.
    pub fn failover(mut self) -> f64 {
        let leader = self.nodes[0]
            .cluster
            .replica_state(TOPIC, 0)
            .unwrap()
            .leader
            .unwrap();
        let at = self
            .nodes
            .iter()
            .position(|n| n.cluster.node_id() == leader)
            .unwrap();
        let other = (at + 1) % self.nodes.len();
        let producer = Producer::new(self.nodes[other].cluster.broker());
        producer
            .send(ProducerRecord::new(TOPIC, b"before"))
            .expect("a write before");
        let stopped = Arc::new(AtomicBool::new(false));
        let writer = {
            let stopped = stopped.clone();
            std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if producer.send(ProducerRecord::new(TOPIC, b"after")).is_ok() {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "no write acknowledged within 60 s");
                }
            })
        };
        let start = Instant::now();
        stopped.store(true, Ordering::SeqCst);
        self.nodes[at].stop();
        let back = writer.join().unwrap();
        back.duration_since(start).as_secs_f64()
    }
}

/// CPU seconds this process has used (user and system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command's closing parenthesis; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The share of a core that idle partitions cost a node: three nodes holding `partitions`
/// partitions each (every node a replica of every one) are left idle for `secs`, and the
/// process's CPU time is divided among the nodes.
pub fn idle_cost(root: &Path, partitions: u32, secs: f64) -> f64 {
    let served = start_with(root, partitions);
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let used = cpu_seconds() - before;
    let elapsed = start.elapsed().as_secs_f64();
    drop(served);
    used / elapsed / 3.0
}
