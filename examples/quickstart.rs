//! Creates a topic, produces keyed records, consumes them as a group and commits, then shows
//! that a restarted consumer of the same group resumes after what was committed.
//!
//! `cargo run --release --example quickstart [DIR]` (DIR defaults to a temporary directory).

use std::time::Duration;

use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let broker = Broker::open(&dir)?;
    if !broker.list_topics().contains(&"meters".to_string()) {
        broker.create_topic("meters", 3, TopicConfig::default())?;
    }

    let producer = Producer::new(&broker);
    for i in 0..9 {
        let house = format!("house-{}", i % 3);
        let load = format!("{:.2} kVA", 0.5 + i as f64 * 0.3);
        let meta = producer.send(ProducerRecord::new("meters", load.as_bytes()).key(house.as_bytes()))?;
        println!(
            "sent {house} {load} -> partition {} offset {}",
            meta.partition, meta.offset
        );
    }

    let config = ConsumerConfig::default()
        .group_id("alerts")
        .auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = Consumer::new(&broker, config.clone().max_poll_records(5));
    consumer.subscribe(["meters"])?; // joins group "alerts", which assigns it all 3 partitions
    for r in consumer.poll(Duration::from_secs(1))?.iter() {
        let (key, value) = (
            String::from_utf8_lossy(r.key.unwrap_or_default()),
            String::from_utf8_lossy(r.value.unwrap_or_default()),
        );
        println!(
            "consumed {}-{}@{}: {key} = {value}",
            r.topic, r.partition, r.offset
        );
    }
    consumer.commit()?; // the group resumes after these
    consumer.close()?; // leaves the group

    let mut restarted = Consumer::new(&broker, config);
    restarted.subscribe(["meters"])?;
    let rest = restarted.poll(Duration::from_secs(1))?;
    println!(
        "a restarted consumer of group 'alerts' gets the {} records not yet committed",
        rest.len()
    );
    Ok(())
}
