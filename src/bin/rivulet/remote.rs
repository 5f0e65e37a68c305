//! Any Kafka broker, through the Kafka protocol: librdkafka (the `rdkafka` crate), the client
//! kcat is built on.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rivulet::{OwnedHeader, OwnedRecord};

use crate::{Backend, ConsumeSpec, Described, GroupRow, Line, PartitionRow, Result, Start};

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Remote {
    servers: String,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    pub fn new(servers: &str) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Remote {
            servers: servers.to_string(),
            runtime,
        })
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.servers);
        config
    }

    /// A consumer that joins no group: `group` only names whose offsets it reads and commits.
    fn consumer(&self, group: Option<&str>) -> Result<BaseConsumer> {
        Ok(self
            .config()
            .set("group.id", group.unwrap_or("rivulet-cli"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of a partition is said (as kcat -e relies on): the last record before
            // it may lie below the high watermark (transaction markers are never delivered).
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()?)
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        Ok(self.config().create()?)
    }

    fn options() -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(TIMEOUT))
    }

    fn watermarks(&self, consumer: &BaseConsumer, topic: &str, partition: u32) -> Result<(i64, i64)> {
        Ok(consumer.fetch_watermarks(topic, partition as i32, TIMEOUT)?)
    }
}

/// The first error of an admin call's per-item results.
fn check<T>(results: Vec<std::result::Result<T, (String, rdkafka::types::RDKafkaErrorCode)>>) -> Result<()> {
    for r in results {
        if let Err((name, code)) = r {
            return Err(format!("{name}: {code}").into());
        }
    }
    Ok(())
}

impl Backend for Remote {
    fn list_topics(&self) -> Result<Vec<String>> {
        let metadata = self.consumer(None)?.fetch_metadata(None, TIMEOUT)?;
        let mut names: Vec<String> = metadata.topics().iter().map(|t| t.name().to_string()).collect();
        names.sort();
        Ok(names)
    }

    fn describe_topic(&self, topic: &str) -> Result<Described> {
        let consumer = self.consumer(None)?;
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let t = metadata
            .topics()
            .first()
            .ok_or_else(|| format!("no metadata for {topic}"))?;
        if let Some(e) = t.error() {
            return Err(format!("{topic}: {e:?}").into());
        }
        let mut rows = Vec::new();
        for p in t.partitions() {
            let (low, high) = self.watermarks(&consumer, topic, p.id() as u32)?;
            rows.push(PartitionRow {
                partition: p.id() as u32,
                start: low,
                end: high,
                more: format!(
                    "\tLeader: {}\tReplicas: {:?}\tIsr: {:?}",
                    p.leader(),
                    p.replicas(),
                    p.isr()
                ),
            });
        }
        rows.sort_by_key(|r| r.partition);
        let admin = self.admin()?;
        let resources = self
            .runtime
            .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &Self::options()))?;
        let mut configs = Vec::new();
        for resource in resources {
            let resource = resource.map_err(|code| format!("{topic}: {code}"))?;
            for e in resource.entries {
                if let Some(value) = e.value {
                    configs.push((e.name, value));
                }
            }
        }
        Ok((rows, configs))
    }

    fn create_topic(&self, topic: &str, partitions: u32, configs: &[(String, String)]) -> Result<()> {
        let partitions = i32::try_from(partitions).map_err(|_| "too many partitions")?;
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let admin = self.admin()?;
        check(
            self.runtime
                .block_on(admin.create_topics([&new], &Self::options()))?,
        )
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let admin = self.admin()?;
        check(
            self.runtime
                .block_on(admin.delete_topics(&[topic], &Self::options()))?,
        )
    }

    fn alter_topic(&self, topic: &str, configs: &[(String, String)]) -> Result<()> {
        // AlterConfigs sets the whole config: the topic's own settings are sent again with the
        // changes, so that the others keep their values.
        let admin = self.admin()?;
        let resources = self
            .runtime
            .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &Self::options()))?;
        let mut set: Vec<(String, String)> = Vec::new();
        for resource in resources {
            let resource = resource.map_err(|code| format!("{topic}: {code}"))?;
            for e in resource.entries {
                if let (ConfigSource::DynamicTopic, Some(value)) = (e.source, e.value) {
                    set.push((e.name, value));
                }
            }
        }
        for (k, v) in configs {
            set.retain(|(name, _)| name != k);
            set.push((k.clone(), v.clone()));
        }
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in &set {
            alter = alter.set(k, v);
        }
        let results = self
            .runtime
            .block_on(admin.alter_configs([&alter], &Self::options()))?;
        for r in results {
            r.map_err(|(_, code)| format!("{topic}: {code}"))?;
        }
        Ok(())
    }

    fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        headers: &[(String, String)],
        records: &mut dyn Iterator<Item = Result<Line>>,
    ) -> Result<u64> {
        let producer: FutureProducer = self.config().set("enable.idempotence", "true").create()?;
        let mut kafka_headers = OwnedHeaders::new();
        for (k, v) in headers {
            kafka_headers = kafka_headers.insert(KafkaHeader {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        // Deliveries are awaited in a window: the client's queue and this list stay bounded.
        const WINDOW: usize = 10_000;
        let mut pending = std::collections::VecDeque::new();
        let mut n = 0;
        let settle = |sent: rdkafka::producer::DeliveryFuture| async move {
            match sent.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err::<(), Box<dyn std::error::Error>>(format!("{topic}: {e}").into()),
                Err(_) => Err("the producer went away".into()),
            }
        };
        for record in records {
            let (key, value) = record?;
            let mut r: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(topic)
                .payload(&value)
                .headers(kafka_headers.clone());
            if let Some(key) = &key {
                r = r.key(key);
            }
            if let Some(p) = partition {
                r = r.partition(p as i32);
            }
            if pending.len() == WINDOW {
                self.runtime
                    .block_on(settle(pending.pop_front().expect("a full window")))?;
            }
            let sent = producer
                .send_result(r)
                .map_err(|(e, _)| format!("{topic}: {e}"))?;
            pending.push_back(sent);
            n += 1;
        }
        self.runtime.block_on(async {
            for sent in pending {
                settle(sent).await?;
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        })?;
        Ok(n)
    }

    fn consume(
        &self,
        spec: &ConsumeSpec<'_>,
        each: &mut dyn FnMut(&OwnedRecord) -> Result<bool>,
    ) -> Result<()> {
        let consumer = self.consumer(None)?;
        let partitions = self.chosen(spec.topic, spec.partitions)?;
        let starts = self.resolve(spec.topic, &partitions, spec.start)?;
        let mut assignment = TopicPartitionList::new();
        for &(p, offset) in &starts {
            assignment.add_partition_offset(spec.topic, p as i32, Offset::Offset(offset))?;
        }
        consumer.assign(&assignment)?;
        // Not following: the ends as they are now; each partition's next offset as read.
        let mut ends = HashMap::new();
        if !spec.follow {
            for &p in &partitions {
                ends.insert(p, self.watermarks(&consumer, spec.topic, p)?.1);
            }
        }
        let mut next: HashMap<u32, i64> = starts.into_iter().collect();
        let done = |next: &HashMap<u32, i64>| !spec.follow && next.iter().all(|(p, n)| *n >= ends[p]);
        while !done(&next) {
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = match message {
                Ok(m) => m,
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    if !spec.follow {
                        next.insert(p as u32, i64::MAX);
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let partition = m.partition() as u32;
            next.insert(partition, m.offset() + 1);
            if !spec.follow && m.offset() >= ends[&partition] {
                continue;
            }
            let record = OwnedRecord {
                topic: m.topic().to_string(),
                partition,
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().unwrap_or(-1),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| OwnedHeader {
                                key: h.key.to_string(),
                                value: h.value.map(<[u8]>::to_vec),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if !each(&record)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        let metadata = self.consumer(None)?.fetch_metadata(Some(topic), TIMEOUT)?;
        let t = metadata
            .topics()
            .first()
            .ok_or_else(|| format!("no metadata for {topic}"))?;
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(format!("unknown topic {topic:?}").into());
        }
        Ok(t.partitions().len() as u32)
    }

    fn resolve(&self, topic: &str, partitions: &[u32], start: Start) -> Result<Vec<(u32, i64)>> {
        let consumer = self.consumer(None)?;
        let mut by_time = HashMap::new();
        if let Start::Time(ms) = start {
            let mut asked = TopicPartitionList::new();
            for &p in partitions {
                asked.add_partition_offset(topic, p as i32, Offset::Offset(ms))?;
            }
            for e in consumer.offsets_for_times(asked, TIMEOUT)?.elements() {
                if let Offset::Offset(o) = e.offset() {
                    by_time.insert(e.partition() as u32, o);
                }
            }
        }
        let mut out = Vec::new();
        for &p in partitions {
            let (low, high) = self.watermarks(&consumer, topic, p)?;
            let offset = match start {
                Start::Earliest => low,
                Start::Latest => high,
                Start::Offset(o) => o.clamp(low, high),
                Start::Time(_) => by_time.get(&p).copied().unwrap_or(high),
            };
            out.push((p, offset));
        }
        Ok(out)
    }

    fn list_groups(&self) -> Result<Vec<String>> {
        let list = self.consumer(None)?.fetch_group_list(None, TIMEOUT)?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        Ok(names)
    }

    fn describe_group(&self, group: &str) -> Result<Vec<GroupRow>> {
        // The group's committed offsets, asked for every partition of every topic.
        let consumer = self.consumer(Some(group))?;
        let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
        let mut asked = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| !t.name().starts_with("__")) {
            for p in t.partitions() {
                asked.add_partition(t.name(), p.id());
            }
        }
        let committed = consumer.committed_offsets(asked, TIMEOUT)?;
        let mut rows = Vec::new();
        for e in committed.elements() {
            if let Offset::Offset(offset) = e.offset() {
                let (_, end) = self.watermarks(&consumer, e.topic(), e.partition() as u32)?;
                rows.push(GroupRow {
                    topic: e.topic().to_string(),
                    partition: e.partition() as u32,
                    committed: offset,
                    end,
                });
            }
        }
        rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(rows)
    }

    fn reset_group(&self, group: &str, topic: &str, offsets: &[(u32, i64)]) -> Result<()> {
        let consumer = self.consumer(Some(group))?;
        let mut list = TopicPartitionList::new();
        for &(p, offset) in offsets {
            list.add_partition_offset(topic, p as i32, Offset::Offset(offset))?;
        }
        consumer.commit(&list, CommitMode::Sync)?;
        Ok(())
    }

    fn delete_group(&self, group: &str) -> Result<()> {
        let admin = self.admin()?;
        check(
            self.runtime
                .block_on(admin.delete_groups(&[group], &Self::options()))?,
        )
    }
}
