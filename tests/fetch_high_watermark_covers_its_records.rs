//! A Fetch reply's high watermark is taken from the same view as its records: never below the
//! last offset it returns, while a producer appends at full speed. The race this guards
//! against is a window of a few instructions: before the fix about one run in four caught it,
//! so this is a guard rather than a reliable reproduction.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rivulet::storage::{BatchHeader, HEADER_LEN, MAX_BATCH_LEN, frame_len};
use rivulet::{Broker, Fsync, LogConfig, TopicConfig};
use tokio::net::TcpStream;

/// The offset after the last record of `batches`, if there is one.
fn end_of(mut batches: &[u8]) -> Option<i64> {
    let mut end = None;
    while batches.len() >= HEADER_LEN {
        let len = frame_len(batches, MAX_BATCH_LEN).unwrap();
        end = Some(BatchHeader::decode(batches).next_offset());
        batches = &batches[len.min(batches.len())..];
    }
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_high_watermark_is_never_below_the_records_returned() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never));
    broker.create_topic("t", 1, config).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (log, stop) = (broker.partition("t", 0).unwrap(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut b = rivulet::storage::BatchBuilder::new(rivulet::storage::Compression::None);
                b.push(1, Some(b"k"), Some(b"v"), &[]);
                log.append(b.finish().unwrap()).unwrap();
            }
        })
    };

    // Fetchers on connections of their own, to try the race often.
    let fetchers: Vec<_> = (0..FETCHERS)
        .map(|_| tokio::spawn(fetch_at_the_tail(addr)))
        .collect();
    let mut checked = 0;
    for f in fetchers {
        checked += f.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    assert!(checked > 100, "only {checked} fetches returned records");
}

const FETCHERS: usize = 8;

/// Fetches one batch at a time at the tail for a while, checking each reply; how many
/// returned records.
async fn fetch_at_the_tail(addr: std::net::SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut offset, mut checked) = (0i64, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while checked < 5_000 && Instant::now() < deadline {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        // One batch, at the tail: the newest record, appended while the
                        // fetch was answered.
                        FetchPartition::default()
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1),
                    ]),
            ]);
        let frame = wire::exchange(&mut s, &wire::request(ApiKey::Fetch, 11, &request))
            .await
            .unwrap();
        let reply: FetchResponse = wire::response(ApiKey::Fetch, 11, frame);
        let p = &reply.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        if let Some(end) = p.records.as_deref().and_then(end_of) {
            assert!(
                p.high_watermark >= end,
                "high watermark {} below the records' end {end}",
                p.high_watermark
            );
            checked += 1;
        }
        offset = p.high_watermark;
    }
    checked
}
