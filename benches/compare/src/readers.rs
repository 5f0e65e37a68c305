//! A reader of the data directory beside the writer ([`Broker::open_read_only`]): how far
//! behind the writer a follower is, and what following costs the writer.
//!
//! The follower runs on a thread of this process (its clock is the sender's), through the
//! same files, locks and inotify as one in another process.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rivulet::{Broker, Fsync, LogConfig, Producer, ProducerRecord, StartAt, TopicConfig};

/// Latencies of records sent one at a time at `rate` per second for `for_how_long`, from when
/// each was due to be sent until a follower in a read-only open of the directory holds it.
pub fn open_loop(broker: &Broker, rate: f64, for_how_long: Duration) -> Histogram<u64> {
    let reader = Broker::open_read_only(broker.dir()).expect("open read-only");
    let mut follower = reader.follower().expect("a follower");
    follower.assign("t", 0, StartAt::Latest).expect("assign");
    crate::inprocess::scheduled(broker, rate, for_how_long, || {
        let records = follower.poll(Duration::from_secs(10)).expect("poll");
        records
            .iter()
            .map(|r| crate::inprocess::sequence(r.value.as_deref().expect("a value")))
            .collect()
    })
}

/// Records a second from `senders` threads each sending `per_sender` 100 B records one at a
/// time (no fsync), with `followers` read-only followers reading along, or (`registered`)
/// a read-only open that reads nothing (the writer publishes for it all the same).
pub fn writer_rate(
    root: &Path,
    senders: usize,
    per_sender: usize,
    followers: usize,
    registered: bool,
) -> f64 {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let broker = Broker::open(dir.path()).unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never));
    broker.create_topic("t", 1, config).unwrap();
    let reader = (followers > 0 || registered).then(|| Broker::open_read_only(dir.path()).unwrap());
    let producer = Producer::new(&broker);
    let value = [0x5a_u8; 100];
    let total = (senders * per_sender) as i64;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..followers {
            let reader = reader.as_ref().expect("a reader");
            s.spawn(move || {
                let mut follower = reader.follower().unwrap();
                follower.assign("t", 0, StartAt::Earliest).unwrap();
                let mut seen = 0;
                while seen < total {
                    seen += follower.poll(Duration::from_secs(10)).unwrap().len() as i64;
                }
            });
        }
        for _ in 0..senders {
            let producer = producer.clone();
            s.spawn(move || {
                for _ in 0..per_sender {
                    producer.send(ProducerRecord::new("t", &value)).unwrap();
                }
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}
