//! A consume-transform-produce loop through librdkafka (the `rdkafka` crate): a
//! `read_committed` consumer and a transactional producer copy a topic against the example
//! broker, some transactions aborted on purpose, and the broker process is SIGKILLed with a
//! transaction open and started again. The output holds every input record exactly once for
//! `read_committed` readers; a `read_uncommitted` reader sees the aborted copies too.
//!
//! Needs the example broker built (`cargo build --features kafka,cluster --example broker`),
//! as `.ci/run` does.
#![cfg(feature = "kafka")]

#[path = "common/copy_loop.rs"]
mod copy_loop;

use copy_loop::{TIMEOUT, broker_binary, copier, one_transaction, output};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const RECORDS: usize = 300;

/// The example broker as a process on a fixed loopback port.
struct Broker {
    data: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn new() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Broker {
            data: tempfile::tempdir().unwrap(),
            port,
            child: None,
        };
        b.start();
        b
    }

    fn start(&mut self) {
        let child = Command::new(broker_binary())
            .args(["--data", self.data.path().to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--fsync", "always", "--num-partitions", "1"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the broker starts");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the broker did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", format!("127.0.0.1:{}", self.port))
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "200");
        c
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_copy_loop_survives_a_broker_sigkill_with_a_transaction_open() {
    let mut broker = Broker::new();
    let plain: BaseProducer = broker.client().create().unwrap();
    for i in 0..RECORDS {
        let value = format!("record-{i:03}");
        plain
            .send(BaseRecord::<(), str>::to("in").payload(&value).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    plain.flush(TIMEOUT).unwrap();
    drop(plain);

    let (mut consumer, mut producer) = copier(&|| broker.client());
    let mut copied = 0;
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while copied < RECORDS {
        assert!(Instant::now() < deadline, "copied {copied} of {RECORDS}");
        round += 1;
        if round == 6 {
            // A transaction open, its records written: the broker is killed and restarted.
            producer.begin_transaction().unwrap();
            if let Some(Ok(m)) = consumer.poll(Duration::from_secs(2)) {
                let value = [b"copied ".as_slice(), m.payload().unwrap()].concat();
                producer
                    .send(BaseRecord::<(), [u8]>::to("out").payload(&value).partition(0))
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            producer.flush(TIMEOUT).unwrap();
            broker.kill();
            broker.start();
            // The old clients go; new ones fence the open transaction and resume from the
            // committed offsets.
            drop(consumer);
            drop(producer);
            (consumer, producer) = copier(&|| broker.client());
            continue;
        }
        match one_transaction(&consumer, &producer, 20, round % 4 == 0) {
            Some(n) => copied += n,
            None => {
                drop(consumer);
                drop(producer);
                (consumer, producer) = copier(&|| broker.client());
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

    let committed = output(&|| broker.client(), "read_committed");
    let twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "copied more than once: {twice:?}");
    assert_eq!(committed.len(), RECORDS, "every input record copied once");
    let everything = output(&|| broker.client(), "read_uncommitted");
    assert!(
        everything.values().sum::<usize>() > RECORDS,
        "the aborted copies are in the log for read_uncommitted readers"
    );
}
