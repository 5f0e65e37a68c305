//! A reader of the data directory beside the writer ([`Broker::open_read_only`]): how far
//! behind the writer a follower is, and what following costs the writer.
//!
//! The follower runs on a thread of this process (its clock is the sender's), through the
//! same files, locks and inotify as one in another process.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rivulet::{Broker, Fsync, LogConfig, Producer, ProducerRecord, StartAt, TopicConfig};

use crate::measure::{histogram, wait_until};

/// Latencies of records sent one at a time at `rate` per second for `for_how_long`, from when
/// each was due to be sent until a follower in a read-only open of the directory holds it.
pub fn open_loop(broker: &Broker, rate: f64, for_how_long: Duration) -> Histogram<u64> {
    let reader = Broker::open_read_only(broker.dir()).expect("open read-only");
    let mut follower = reader.follower().expect("a follower");
    follower.assign("t", 0, StartAt::Latest).expect("assign");
    let producer = Producer::new(broker);
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = (for_how_long.as_secs_f64() * rate) as u64;
    let origin = Instant::now() + Duration::from_millis(20);
    let due = |i: u64| origin + period.mul_f64(i as f64);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut value = [0u8; 100];
            for i in 0..total {
                wait_until(due(i));
                value[..8].copy_from_slice(&i.to_be_bytes());
                producer.send(ProducerRecord::new("t", &value)).expect("send");
            }
        });
        let mut h = histogram();
        let mut got = 0;
        while got < total {
            let records = follower.poll(Duration::from_secs(10)).expect("poll");
            let now = Instant::now();
            for r in &records {
                let i = u64::from_be_bytes(
                    r.value.as_ref().expect("a value")[..8]
                        .try_into()
                        .expect("8 bytes"),
                );
                h.saturating_record(now.saturating_duration_since(due(i)).as_nanos() as u64);
                got += 1;
            }
        }
        h
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
