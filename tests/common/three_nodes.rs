//! Cluster nodes in one process on loopback: three started and ready, free peer addresses,
//! bounded waits, and reading a topic at a node. Included with
//! `#[path = "common/three_nodes.rs"] mod three_nodes;` by the cluster tests that need it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use rivulet::cluster::{Cluster, ClusterBuilder};
use rivulet::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};

/// Free loopback addresses for peers (bound and released: a test machine's ports are not
/// contended enough for another process to take one meanwhile).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Starts node `id` in `dir` as one of the founding `voters`.
pub fn found(id: u64, dir: &std::path::Path, voters: &[(u64, SocketAddr)]) -> Cluster {
    ClusterBuilder::new(id, dir)
        .voters(voters.iter().copied())
        .start()
        .expect("the node starts")
}

/// Waits (bounded) for `check` to hold.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for `check` to give a value.
pub fn eventually_some<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every record of `topic` a node's broker gives its consumers, by (partition, offset).
pub fn read_all(node: &Cluster, topic: &str, partitions: u32) -> BTreeMap<(u32, i64), Vec<u8>> {
    let mut consumer = Consumer::new(
        node.broker(),
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    let tps: Vec<TopicPartition> = (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
    consumer.assign(&tps).unwrap();
    let mut out = BTreeMap::new();
    loop {
        let records = consumer.poll(Duration::from_millis(200)).unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records.iter() {
            out.insert((r.partition, r.offset), r.value.unwrap_or_default().to_vec());
        }
    }
}

/// Starts nodes 1, 2 and 3 (founding voters of one cluster, each in a directory of its own)
/// and waits until each is ready; blocks, so call it off the async runtime. The directories
/// go with the returned guards.
pub fn start() -> (Vec<Cluster>, Vec<tempfile::TempDir>) {
    let voters: Vec<(u64, SocketAddr)> = (1..=3).zip(free_addrs(3)).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Cluster> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            ClusterBuilder::new(i as u64 + 1, d.path().join("node"))
                .voters(voters.iter().copied())
                .start()
                .expect("the node starts")
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(30)).unwrap();
    }
    (nodes, dirs)
}
