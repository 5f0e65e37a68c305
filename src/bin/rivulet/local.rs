//! A data directory: read through a read-only open (never in the writer's way); written
//! through a full open, only when no other process has the directory open.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rivulet::{
    Broker, Header, OwnedRecord, Producer, ProducerRecord, ReadOnlyBroker, StartAt, TopicConfig,
    TopicPartition,
};

use crate::{Backend, ConsumeSpec, Described, GroupRow, Line, PartitionRow, Result, Start};

/// How many records may wait for their acknowledgement.
const WINDOW: usize = 10_000;

pub struct Local {
    dir: PathBuf,
}

impl Local {
    pub fn new(dir: PathBuf) -> Local {
        Local { dir }
    }

    fn reader(&self) -> Result<ReadOnlyBroker> {
        Ok(Broker::open_read_only(&self.dir)?)
    }

    /// The directory opened for writing: refused while another process has it open (a second
    /// writer is never what the user meant), and for a path that holds something other than
    /// a data directory. `create` lets a path that does not exist become a new one.
    fn writer(&self, create: bool) -> Result<Broker> {
        if self.dir.join("cluster").is_dir() {
            return Err(format!(
                "{} is a cluster node's: its logs are replicas, written through the cluster \
                 (reach a node's broker with --bootstrap)",
                self.dir.display()
            )
            .into());
        }
        if (!create || self.dir.exists()) && self.reader()?.writer_running()? {
            return Err(format!(
                "{} is open in another process: stop it, or reach its broker with --bootstrap",
                self.dir.display()
            )
            .into());
        }
        Ok(Broker::open(&self.dir)?)
    }
}

fn start_at(start: Start) -> StartAt {
    match start {
        Start::Earliest => StartAt::Earliest,
        Start::Latest => StartAt::Latest,
        Start::Offset(o) => StartAt::Offset(o),
        Start::Time(ms) => StartAt::Timestamp(ms),
    }
}

impl Backend for Local {
    fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.reader()?.list_topics()?)
    }

    fn describe_topic(&self, topic: &str) -> Result<Described> {
        let d = self.reader()?.describe_topic(topic)?;
        let rows = d
            .partitions
            .iter()
            .map(|p| PartitionRow {
                partition: p.partition,
                start: p.log_start_offset,
                end: p.high_watermark,
                more: format!("\tSegments: {}\tBytes: {}", p.segments, p.size_bytes),
            })
            .collect();
        let configs = d
            .config
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok((rows, configs))
    }

    fn create_topic(&self, topic: &str, partitions: u32, configs: &[(String, String)]) -> Result<()> {
        let mut config = TopicConfig::default();
        for (k, v) in configs {
            config.set(k, v)?;
        }
        let broker = self.writer(true)?;
        broker.create_topic(topic, partitions, config)?;
        Ok(broker.close()?)
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let broker = self.writer(false)?;
        broker.delete_topic(topic)?;
        Ok(broker.close()?)
    }

    fn alter_topic(&self, topic: &str, configs: &[(String, String)]) -> Result<()> {
        let broker = self.writer(false)?;
        let entries: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        broker.alter_topic_config_entries(topic, &entries)?;
        Ok(broker.close()?)
    }

    fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        headers: &[(String, String)],
        records: &mut dyn Iterator<Item = Result<Line>>,
    ) -> Result<u64> {
        let broker = self.writer(false)?;
        broker.partition_count(topic)?;
        let producer = Producer::new(&broker);
        // Each line is sent as it is read (records read while an append is under way share
        // its batch and its sync); acknowledgements are awaited in a window.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut pending = std::collections::VecDeque::new();
        let mut sent = 0;
        for record in records {
            let (key, value) = record?;
            let mut r = ProducerRecord::new(topic, &value)
                .headers(headers.iter().map(|(k, v)| Header::new(k, v.as_bytes())));
            if let Some(key) = &key {
                r = r.key(key);
            }
            if let Some(p) = partition {
                r = r.partition(p);
            }
            if pending.len() == WINDOW {
                runtime.block_on(pending.pop_front().expect("a full window"))?;
                sent += 1;
            }
            pending.push_back(producer.send_async(r));
        }
        for ack in pending {
            runtime.block_on(ack)?;
            sent += 1;
        }
        broker.close()?;
        Ok(sent)
    }

    fn consume(
        &self,
        spec: &ConsumeSpec<'_>,
        each: &mut dyn FnMut(&OwnedRecord) -> Result<bool>,
    ) -> Result<()> {
        let reader = self.reader()?;
        let partitions = self.chosen(spec.topic, spec.partitions)?;
        let mut follower = reader.follower()?;
        for &p in &partitions {
            follower.assign(spec.topic, p, start_at(spec.start))?;
        }
        // Not following: the ends as they are now.
        let ends: HashMap<u32, i64> = match spec.follow {
            true => HashMap::new(),
            false => reader
                .describe_topic(spec.topic)?
                .partitions
                .iter()
                .map(|p| (p.partition, p.high_watermark))
                .collect(),
        };
        let done = |follower: &rivulet::Follower| {
            !spec.follow
                && partitions
                    .iter()
                    .all(|&p| follower.position(spec.topic, p).unwrap_or(i64::MAX) >= ends[&p])
        };
        while !done(&follower) {
            for r in follower.poll(Duration::from_millis(500))? {
                if !spec.follow && r.offset >= ends[&r.partition] {
                    continue;
                }
                if !each(&r)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.reader()?.partition_count(topic)?)
    }

    fn resolve(&self, topic: &str, partitions: &[u32], start: Start) -> Result<Vec<(u32, i64)>> {
        let reader = self.reader()?;
        let described = reader.describe_topic(topic)?;
        let mut out = Vec::new();
        for &p in partitions {
            let d = described
                .partitions
                .get(p as usize)
                .ok_or_else(|| format!("topic {topic:?} has no partition {p}"))?;
            let offset = match start {
                Start::Earliest => d.log_start_offset,
                Start::Latest => d.high_watermark,
                Start::Offset(o) => o.clamp(d.log_start_offset, d.high_watermark),
                Start::Time(ms) => reader
                    .offset_for_timestamp(topic, p, ms)?
                    .map_or(d.high_watermark, |found| found.offset),
            };
            out.push((p, offset));
        }
        Ok(out)
    }

    fn list_groups(&self) -> Result<Vec<String>> {
        Ok(self.reader()?.list_groups()?)
    }

    fn describe_group(&self, group: &str) -> Result<Vec<GroupRow>> {
        Ok(self
            .reader()?
            .group_offsets(group)?
            .into_iter()
            .map(|g| GroupRow {
                topic: g.partition.topic,
                partition: g.partition.partition,
                committed: g.committed.offset,
                end: g.high_watermark,
            })
            .collect())
    }

    fn reset_group(&self, group: &str, topic: &str, offsets: &[(u32, i64)]) -> Result<()> {
        let broker = self.writer(false)?;
        let offsets: Vec<(TopicPartition, i64)> = offsets
            .iter()
            .map(|&(p, o)| (TopicPartition::new(topic, p), o))
            .collect();
        broker.reset_group_offsets(group, &offsets)?;
        Ok(broker.close()?)
    }

    fn delete_group(&self, group: &str) -> Result<()> {
        if !self.reader()?.list_groups()?.iter().any(|g| g == group) {
            return Err(format!("unknown group {group:?}").into());
        }
        let broker = self.writer(false)?;
        broker.delete_group(group)?;
        Ok(broker.close()?)
    }
}
