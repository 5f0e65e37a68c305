//! An embedding application's metrics: with a recorder installed (here Prometheus' exporter,
//! rendered to text) before the broker opens, a producer's appends and an in-process
//! consumer's fetches, records and lag are recorded under the names `rivulet::telemetry`
//! lists. One test alone in its binary: the recorder is the process's.

use std::time::Duration;

use rivulet::{
    Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition,
};

fn sample(body: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn appends_fetches_and_lag_reach_the_installed_recorder() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    rivulet::telemetry::describe_metrics();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("jobs", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..20u8 {
        producer.send(ProducerRecord::new("jobs", &[i])).unwrap();
    }
    let config = ConsumerConfig::default()
        .group_id("workers")
        .auto_offset_reset(OffsetReset::Earliest)
        .max_poll_records(5);
    let mut consumer = Consumer::new(&broker, config);
    consumer.assign(&[TopicPartition::new("jobs", 0)]).unwrap();
    assert_eq!(consumer.poll(Duration::from_secs(30)).unwrap().len(), 5);

    let body = handle.render();
    let labels = ["topic=\"jobs\"", "partition=\"0\""];
    assert_eq!(
        sample(&body, "rivulet_log_appended_records_total", &labels),
        Some(20.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "rivulet_log_appended_batches_total", &labels),
        Some(20.0)
    );
    assert!(
        sample(&body, "rivulet_log_fsync_seconds_count", &[]).is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(sample(&body, "rivulet_consumer_fetches_total", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(sample(&body, "rivulet_consumer_records_total", &[]), Some(5.0));
    let lag = sample(
        &body,
        "rivulet_consumer_lag",
        &["group=\"workers\"", "topic=\"jobs\""],
    );
    assert_eq!(lag, Some(15.0), "{body}");
}
