//! The asynchronous send against the blocking one, in this process: the same number of
//! concurrent senders, each sending 100 B records one at a time and waiting for each
//! acknowledgement, as tokio tasks awaiting `Producer::send_async` on a runtime of two workers
//! and as threads calling `Producer::send`.

use std::path::Path;
use std::time::Instant;

use rivulet::{Broker, Fsync, LogConfig, Producer, ProducerRecord, TopicConfig};

fn broker(root: &Path, fsync: Fsync) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let broker = Broker::open(dir.path()).unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(fsync));
    broker.create_topic("t", 1, config).unwrap();
    (dir, broker)
}

/// Records a second from `senders` tasks each awaiting `per_sender` sends in turn.
pub fn tasks(root: &Path, fsync: Fsync, senders: usize, per_sender: usize) -> f64 {
    let (_dir, broker) = broker(root, fsync);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let producer = Producer::new(&broker);
    let value = [0x5a_u8; 100];
    let start = Instant::now();
    runtime.block_on(async {
        let mut all = Vec::new();
        for _ in 0..senders {
            let producer = producer.clone();
            all.push(tokio::spawn(async move {
                for _ in 0..per_sender {
                    producer
                        .send_async(ProducerRecord::new("t", &value))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in all {
            task.await.unwrap();
        }
    });
    (senders * per_sender) as f64 / start.elapsed().as_secs_f64()
}

/// Records a second from `senders` threads each calling `send` `per_sender` times.
pub fn threads(root: &Path, fsync: Fsync, senders: usize, per_sender: usize) -> f64 {
    let (_dir, broker) = broker(root, fsync);
    let producer = Producer::new(&broker);
    let value = [0x5a_u8; 100];
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..senders {
            let producer = producer.clone();
            s.spawn(move || {
                for _ in 0..per_sender {
                    producer.send(ProducerRecord::new("t", &value)).unwrap();
                }
            });
        }
    });
    (senders * per_sender) as f64 / start.elapsed().as_secs_f64()
}
