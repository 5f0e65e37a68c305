//! Transactions on a cluster: three example brokers as one cluster's nodes (processes on
//! loopback), a consume-transform-produce loop through librdkafka (the `rdkafka` crate) with
//! some transactions aborted on purpose. With a transaction open, the node that coordinates
//! transactions (the leader of `__transaction_state`) is SIGKILLed, and later, with another
//! open, the node that coordinates the group (the leader of `__consumer_offsets`); each
//! comes back once another node has taken over. The loop carries on through both: the output
//! holds every input record exactly once for `read_committed` readers (so the offsets each
//! committed transaction wrote survive both take-overs); a `read_uncommitted` reader sees the
//! aborted copies too.
//!
//! Needs the example broker built (`cargo build --features kafka,cluster --example broker`),
//! as `.ci/run` does.
#![cfg(all(feature = "kafka", feature = "cluster"))]

#[path = "common/copy_loop.rs"]
mod copy_loop;

use copy_loop::{TIMEOUT, broker_binary, copier, one_transaction, output};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const RECORDS: usize = 300;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three example brokers, nodes 1 to 3 of one cluster.
struct Nodes {
    dirs: Vec<tempfile::TempDir>,
    kafka: Vec<u16>,
    voters: String,
    peers: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Nodes {
    fn start() -> Nodes {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters = (0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Nodes {
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            kafka: (0..3).map(|_| free_port()).collect(),
            voters,
            peers,
            children: vec![None, None, None],
        };
        for i in 0..3 {
            nodes.run(i);
        }
        nodes
    }

    fn run(&mut self, i: usize) {
        let child = Command::new(broker_binary())
            .args(["--data", self.dirs[i].path().to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", self.kafka[i])])
            .args(["--node-id", &(i + 1).to_string()])
            .args(["--peer-listen", &format!("127.0.0.1:{}", self.peers[i])])
            .args(["--voters", &self.voters])
            .args([
                "--num-partitions",
                "1",
                "--group-initial-rebalance-delay-ms",
                "500",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the broker starts");
        self.children[i] = Some(child);
    }

    /// SIGKILLs the node that leads `topic` (an internal topic's one partition), waits for
    /// another to lead it, and starts the killed one again.
    fn fail_over(&mut self, topic: &str) {
        let leader = self.leader_of(topic).expect("a leader");
        let mut child = self.children[leader].take().expect("a running node");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eventually("another leader", || {
            self.leader_of(topic).filter(|&l| l != leader)
        });
        self.run(leader);
    }

    /// Clients bootstrap at every node, so that any one may be down.
    fn client(&self) -> ClientConfig {
        let bootstrap = self
            .kafka
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "200");
        c
    }

    /// The node (0-based) that leads partition 0 of `topic`, as the cluster's metadata says.
    fn leader_of(&self, topic: &str) -> Option<usize> {
        let client: BaseConsumer = self.client().create().ok()?;
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let leader = metadata.topics().first()?.partitions().first()?.leader();
        usize::try_from(leader).ok()?.checked_sub(1)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (bounded) for `check` to give a value.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_copy_loop_survives_the_transaction_coordinators_sigkill() {
    let mut nodes = Nodes::start();
    eventually("a transaction coordinator", || {
        nodes.leader_of("__transaction_state")
    });
    let plain: BaseProducer = nodes.client().set("acks", "all").create().unwrap();
    for i in 0..RECORDS {
        let value = format!("record-{i:03}");
        plain
            .send(BaseRecord::<(), str>::to("in").payload(&value).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    plain.flush(TIMEOUT).unwrap();
    drop(plain);
    eventually("the output topic", || {
        let p: BaseProducer = nodes.client().create().ok()?;
        p.send(BaseRecord::<(), str>::to("out").payload("made").partition(0))
            .ok()?;
        p.flush(TIMEOUT).ok()
    });

    let (mut consumer, mut producer) = copier(&|| nodes.client());
    let mut copied = 0;
    let mut round = 0;
    let mut failovers = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while copied < RECORDS {
        assert!(Instant::now() < deadline, "copied {copied} of {RECORDS}");
        round += 1;
        if round == 6 || round == 11 {
            // A transaction open, its records written: the node that coordinates it dies, then
            // the one that coordinates the group.
            producer.begin_transaction().unwrap();
            if let Some(Ok(m)) = consumer.poll(Duration::from_secs(2)) {
                let value = [b"copied ".as_slice(), m.payload().unwrap()].concat();
                producer
                    .send(BaseRecord::<(), [u8]>::to("out").payload(&value).partition(0))
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            producer.flush(TIMEOUT).unwrap();
            nodes.fail_over(match round {
                6 => "__transaction_state",
                _ => "__consumer_offsets",
            });
            failovers += 1;
            // The old clients go; new ones (at the new coordinators) fence the open
            // transaction and resume from the committed offsets.
            drop(consumer);
            drop(producer);
            (consumer, producer) = copier(&|| nodes.client());
            continue;
        }
        match one_transaction(&consumer, &producer, 20, round % 4 == 0) {
            Some(n) => copied += n,
            None => {
                drop(consumer);
                drop(producer);
                (consumer, producer) = copier(&|| nodes.client());
                copied = match consumer
                    .committed(TIMEOUT)
                    .unwrap()
                    .find_partition("in", 0)
                    .unwrap()
                    .offset()
                {
                    Offset::Offset(at) => at as usize,
                    _ => 0,
                };
            }
        }
    }
    assert_eq!(failovers, 2, "both coordinators failed over");

    let committed = output(&|| nodes.client(), "read_committed");
    let copies = |seen: &std::collections::BTreeMap<Vec<u8>, usize>| {
        seen.iter()
            .filter(|(v, _)| v.starts_with(b"copied "))
            .map(|(v, n)| (v.clone(), *n))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let committed = copies(&committed);
    let twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "copied more than once: {twice:?}");
    assert_eq!(committed.len(), RECORDS, "every input record copied once");
    let everything = copies(&output(&|| nodes.client(), "read_uncommitted"));
    assert!(
        everything.values().sum::<usize>() > RECORDS,
        "the aborted copies are in the log for read_uncommitted readers"
    );
}
