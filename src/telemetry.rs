//! Metrics through the [`metrics`] facade: counters, gauges and histograms any recorder
//! collects (a Prometheus exporter, StatsD, an application's own). A log's counters are
//! handles registered when it opens, and a consumer's lag gauge when it first reads a
//! partition: install the recorder before opening the broker. Without a recorder those
//! handles do nothing; the other metrics (per fsync, fetch, request, rebalance) look the
//! recorder up at each event and build their labels.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `rivulet_log_appended_batches_total` | counter | `topic`, `partition` | batches appended to a partition's log (a replica's copies included) |
//! | `rivulet_log_appended_records_total` | counter | `topic`, `partition` | records appended |
//! | `rivulet_log_appended_bytes_total` | counter | `topic`, `partition` | bytes appended, as stored |
//! | `rivulet_log_fsync_seconds` | histogram | | how long each `fdatasync` of a log took |
//! | `rivulet_consumer_fetches_total` | counter | | reads of a partition's log by in-process consumers |
//! | `rivulet_consumer_records_total` | counter | | records in-process consumers' polls returned |
//! | `rivulet_consumer_lag` | gauge | `group`, `topic`, `partition` | records between an in-process consumer's position and the partition's end, after each poll |
//! | `rivulet_group_rebalances_total` | counter | `group` | rebalances started by the groups this node coordinates |
//! | `rivulet_kafka_requests_total` | counter | `api` | Kafka requests answered, by API (`Produce`, `Fetch`, ...) |
//! | `rivulet_kafka_partition_errors_total` | counter | `api`, `error` | partitions of Produce and Fetch requests answered with an error, by Kafka's error name |
//! | `rivulet_kafka_connections` | gauge | | Kafka connections open |
//! | `rivulet_kafka_connections_total` | counter | | Kafka connections accepted |
//!
//! The example broker serves them to Prometheus (`--metrics ADDR`), with the committed lag
//! of every group (`rivulet_group_lag`, by `group`, `topic` and `partition`).

use std::path::Path;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Gives each metric its description and unit to the installed recorder (exporters show
/// them as `# HELP` lines). Call it once after installing the recorder.
pub fn describe_metrics() {
    describe_counter!(
        "rivulet_log_appended_batches_total",
        "Batches appended to a partition's log"
    );
    describe_counter!(
        "rivulet_log_appended_records_total",
        "Records appended to a partition's log"
    );
    describe_counter!(
        "rivulet_log_appended_bytes_total",
        Unit::Bytes,
        "Bytes appended to a partition's log, as stored"
    );
    describe_histogram!(
        "rivulet_log_fsync_seconds",
        Unit::Seconds,
        "Duration of each fdatasync of a log"
    );
    describe_counter!(
        "rivulet_consumer_fetches_total",
        "Reads of a partition's log by in-process consumers"
    );
    describe_counter!(
        "rivulet_consumer_records_total",
        "Records returned by in-process consumers' polls"
    );
    describe_gauge!(
        "rivulet_consumer_lag",
        "Records between an in-process consumer's position and its partition's end, after its last poll"
    );
    describe_counter!(
        "rivulet_group_rebalances_total",
        "Rebalances started by the groups this node coordinates"
    );
    describe_counter!("rivulet_kafka_requests_total", "Kafka requests answered, by API");
    describe_counter!(
        "rivulet_kafka_partition_errors_total",
        "Partitions of Produce and Fetch requests answered with an error"
    );
    describe_gauge!("rivulet_kafka_connections", "Kafka connections open");
    describe_counter!("rivulet_kafka_connections_total", "Kafka connections accepted");
}

/// A partition log's topic and partition, from its directory's name (`<topic>-<partition>`);
/// a log outside a broker is named by its directory.
fn labels(dir: &Path) -> (String, String) {
    let name = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    match name.rsplit_once('-') {
        Some((topic, partition)) if !topic.is_empty() && partition.parse::<u32>().is_ok() => {
            (topic.to_string(), partition.to_string())
        }
        _ => (name, String::new()),
    }
}

/// One partition log's counters.
#[derive(Debug, Clone)]
pub(crate) struct LogMeters {
    batches: Counter,
    records: Counter,
    bytes: Counter,
}

impl LogMeters {
    pub(crate) fn new(dir: &Path) -> LogMeters {
        let (topic, partition) = labels(dir);
        let labels = [("topic", topic), ("partition", partition)];
        LogMeters {
            batches: counter!("rivulet_log_appended_batches_total", &labels),
            records: counter!("rivulet_log_appended_records_total", &labels),
            bytes: counter!("rivulet_log_appended_bytes_total", &labels),
        }
    }

    pub(crate) fn appended(&self, records: u32, bytes: usize) {
        self.batches.increment(1);
        self.records.increment(records.into());
        self.bytes.increment(bytes as u64);
    }
}

/// Records one `fdatasync`'s duration.
pub(crate) fn fsynced(took: Duration) {
    histogram!("rivulet_log_fsync_seconds").record(took.as_secs_f64());
}

/// An in-process consumer's gauge of one partition's lag.
pub(crate) fn consumer_lag(group: Option<&str>, topic: &str, partition: u32) -> Gauge {
    gauge!(
        "rivulet_consumer_lag",
        "group" => group.unwrap_or("").to_string(),
        "topic" => topic.to_string(),
        "partition" => partition.to_string()
    )
}

/// An in-process consumer read a partition's log.
pub(crate) fn fetched() {
    counter!("rivulet_consumer_fetches_total").increment(1);
}

/// An in-process consumer's poll returned `n` records.
pub(crate) fn polled(n: usize) {
    counter!("rivulet_consumer_records_total").increment(n as u64);
}

/// A group this node coordinates started a rebalance.
pub(crate) fn rebalanced(group: &str) {
    counter!("rivulet_group_rebalances_total", "group" => group.to_string()).increment(1);
}

/// A Kafka request of `api` was answered.
#[cfg(feature = "kafka")]
pub(crate) fn request(api: kafka_protocol::messages::ApiKey) {
    counter!("rivulet_kafka_requests_total", "api" => format!("{api:?}")).increment(1);
}

/// A partition of a Kafka request of `api` was answered with error `code`.
#[cfg(feature = "kafka")]
pub(crate) fn partition_error(api: &'static str, code: i16) {
    if code != 0 {
        let error = kafka_protocol::ResponseError::try_from_code(code)
            .map_or_else(|| code.to_string(), |e| format!("{e:?}"));
        counter!("rivulet_kafka_partition_errors_total", "api" => api, "error" => error).increment(1);
    }
}

/// A Kafka connection, counted open until dropped (however its task ends).
#[cfg(feature = "kafka")]
pub(crate) struct Connection(Gauge);

#[cfg(feature = "kafka")]
impl Connection {
    pub(crate) fn opened() -> Connection {
        counter!("rivulet_kafka_connections_total").increment(1);
        let open = gauge!("rivulet_kafka_connections");
        open.increment(1.0);
        Connection(open)
    }
}

#[cfg(feature = "kafka")]
impl Drop for Connection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_directory_names_its_topic_and_partition() {
        assert_eq!(
            labels(Path::new("/d/orders-eu-3")),
            ("orders-eu".into(), "3".into())
        );
        assert_eq!(
            labels(Path::new("/d/standalone")),
            ("standalone".into(), String::new())
        );
        assert_eq!(labels(Path::new("/d/x-y")), ("x-y".into(), String::new()));
    }
}
