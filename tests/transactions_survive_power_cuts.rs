//! A transaction's commit cut short by a power cut at every step (the fault file system keeps
//! only what was synced) is all or nothing once the broker opens again and a producer of the
//! transactional id starts: a `read_committed` reader sees every record of the transaction
//! or none, and the group's offsets sent with it are committed exactly when its records are.

use std::sync::Arc;
use std::time::Duration;

use rivulet::storage::FaultyFs;
use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, IsolationLevel, OffsetReset, ProducerRecord, TopicConfig,
    TopicPartition, TransactionalProducer,
};

fn committed_values(broker: &Broker) -> Vec<Vec<u8>> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(OffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted);
    let mut consumer = Consumer::new(broker, config);
    consumer
        .assign(&[TopicPartition::new("out", 0), TopicPartition::new("out", 1)])
        .unwrap();
    let mut values = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        if records.is_empty() {
            return values;
        }
        values.extend(records.iter().map(|r| r.value.unwrap().to_vec()));
    }
}

#[test]
fn a_commit_cut_short_by_a_power_cut_is_all_or_nothing() {
    let mut outcomes = [0usize; 2];
    for cut_at in 0..40u64 {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = Broker::builder(dir.path()).fsync(Fsync::Always).open().unwrap();
            broker.create_topic("out", 2, TopicConfig::default()).unwrap();
            broker.create_topic("in", 1, TopicConfig::default()).unwrap();
            broker.transactions().unwrap();
            broker.close().unwrap();
        }
        let fs = Arc::new(FaultyFs::new());
        {
            let broker = Broker::builder(dir.path())
                .fsync(Fsync::Always)
                .fs(fs.clone())
                .open()
                .unwrap();
            let mut producer = TransactionalProducer::new(&broker, "cut").unwrap();
            let mut txn = producer.begin().unwrap();
            for p in 0..2 {
                for i in 0..3 {
                    let value = format!("p{p}-{i}");
                    txn.send(ProducerRecord::new("out", value.as_bytes()).partition(p))
                        .unwrap();
                }
            }
            txn.send_offsets("g", &[(TopicPartition::new("in", 0), 5)])
                .unwrap();
            fs.crash_after_ops(cut_at);
            let _ = txn.commit();
            // The power goes (now, if the countdown did not reach it): every file is cut back
            // to what was synced.
            fs.crash(|_, _, _| 0).unwrap();
            drop(producer);
            // Closed (its files refuse everything now, so it complains) rather than dropped:
            // the directory is let go at once, whatever the coordinator's thread holds.
            let _ = broker.close();
            drop(broker);
        }
        let broker = Broker::builder(dir.path()).fsync(Fsync::Always).open().unwrap();
        // A producer of the id ends what the cut left: aborts it, or finishes its commit.
        drop(TransactionalProducer::new(&broker, "cut").unwrap());
        let values = committed_values(&broker);
        let consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
        let offset = consumer.committed(&[TopicPartition::new("in", 0)]).unwrap()[0]
            .as_ref()
            .map(|o| o.offset);
        match values.len() {
            0 => {
                assert_eq!(
                    offset, None,
                    "cut after {cut_at} operations: offsets without records"
                );
                outcomes[0] += 1;
            }
            6 => {
                assert_eq!(
                    offset,
                    Some(5),
                    "cut after {cut_at} operations: records without offsets"
                );
                outcomes[1] += 1;
            }
            n => panic!("cut after {cut_at} operations: {n} of the transaction's 6 records"),
        }
        broker.close().unwrap();
    }
    // The cuts fell on both sides of the decision.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}
