//! [`TransactionalProducer`]: records written in transactions, all or none of them visible
//! to `read_committed` readers, with consumed offsets committed in the same transaction
//! (exactly-once processing in a read-process-write loop). The same coordinator as Kafka
//! clients' transactions (see the `txn` module): an in-process producer and a Kafka client
//! with the same transactional id fence each other.
//!
//! What a commit costs: a transaction's records are written without waiting for the disk
//! (`read_committed` readers do not see them before the commit); the commit syncs them (one
//! fsync a partition kept with `Fsync::Always`, all at once), makes its decision durable (one
//! fsync of the transaction log), then writes and syncs each partition's marker (one fsync a
//! partition, all at once).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, refuse_internal};
use crate::config::CompressionType;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::producer::{DefaultPartitioner, Partitioner, ProducerRecord, RecordMetadata};
use crate::storage::producers::Verdict;
use crate::storage::{BatchBuilder, Compression, TimestampType, now_ms};
use crate::txn::TxnCalls;

/// The default `transaction.timeout.ms`: a transaction open longer is aborted by the
/// coordinator, and its producer fenced.
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A producer that writes in transactions. Creating one with a transactional id fences every
/// older producer of that id (in this process or a Kafka client's) and aborts what it left
/// open.
///
/// ```
/// use rivulet::{Broker, ConsumerConfig, IsolationLevel, Consumer, OffsetReset, ProducerRecord, TopicConfig, TopicPartition, TransactionalProducer};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("alerts", 1, TopicConfig::default())?;
/// let mut producer = TransactionalProducer::new(&broker, "alerter")?;
///
/// let mut txn = producer.begin()?;
/// txn.send(ProducerRecord::new("alerts", b"meter 7 over limit"))?;
/// txn.commit()?;
///
/// let mut txn = producer.begin()?;
/// txn.send(ProducerRecord::new("alerts", b"never seen"))?;
/// drop(txn); // aborted
///
/// let config = ConsumerConfig::default()
///     .auto_offset_reset(OffsetReset::Earliest)
///     .isolation_level(IsolationLevel::ReadCommitted);
/// let mut consumer = Consumer::new(&broker, config);
/// consumer.assign(&[TopicPartition::new("alerts", 0)])?;
/// let records = consumer.poll(std::time::Duration::from_secs(1))?;
/// let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value).collect();
/// assert_eq!(values, [&b"meter 7 over limit"[..]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TransactionalProducer {
    broker: Broker,
    id: String,
    producer_id: i64,
    epoch: i16,
    partitioner: Arc<dyn Partitioner>,
    compression: Compression,
    /// Each partition's next sequence number in this epoch.
    sequences: HashMap<TopicPartition, i32>,
    /// The partitions the open transaction added.
    added: BTreeSet<TopicPartition>,
    /// Where unkeyed records go, per topic (moved on at each transaction).
    sticky: HashMap<String, u32>,
    turn: u32,
    /// A transaction ended badly (its end failed, or it was dropped and its abort failed):
    /// the coordinator may still have it open, and the next `begin` aborts it first, so that
    /// nothing of it is committed with the next one.
    unsettled: bool,
}

impl TransactionalProducer {
    /// A producer with the transactional id `id` and the default timeout
    /// ([`DEFAULT_TRANSACTION_TIMEOUT`]). On a cluster, at any node: its calls go to the node
    /// that coordinates transactions (its offsets to the one that coordinates groups).
    pub fn new(broker: &Broker, id: &str) -> Result<TransactionalProducer> {
        Self::with_timeout(broker, id, DEFAULT_TRANSACTION_TIMEOUT)
    }

    /// A producer whose transactions are aborted (and it fenced) when open longer than
    /// `timeout` (at most [`MAX_TRANSACTION_TIMEOUT_MS`](crate::txn::MAX_TRANSACTION_TIMEOUT_MS)).
    pub fn with_timeout(broker: &Broker, id: &str, timeout: Duration) -> Result<TransactionalProducer> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let (producer_id, epoch) = broker.inner.txn_calls()?.init_producer_id(id, ms, None)?;
        Ok(TransactionalProducer {
            broker: broker.clone(),
            id: id.to_string(),
            producer_id,
            epoch,
            partitioner: Arc::new(DefaultPartitioner),
            compression: Compression::None,
            sequences: HashMap::new(),
            added: BTreeSet::new(),
            sticky: HashMap::new(),
            // Producers of one application spread their unkeyed records differently.
            turn: producer_id as u32,
            unsettled: false,
        })
    }

    /// Uses `partitioner` for records without an explicit partition.
    pub fn partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// Compresses batches with `compression` (a topic's own `compression.type` wins).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The producer id and epoch the coordinator gave it.
    pub fn producer_id_and_epoch(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    /// Begins a transaction. It ends with [`Transaction::commit`] or
    /// [`Transaction::abort`]; dropped without either, it is aborted.
    pub fn begin(&mut self) -> Result<Transaction<'_>> {
        if self.unsettled {
            match self
                .coordinator()?
                .end(&self.id, self.producer_id, self.epoch, false)
            {
                // Aborted now, or it had ended after all.
                Ok(()) | Err(Error::InvalidTxnState { .. }) => self.unsettled = false,
                Err(e) => return Err(e),
            }
        }
        self.added.clear();
        self.turn = self.turn.wrapping_add(1);
        self.sticky.clear();
        Ok(Transaction {
            producer: self,
            ended: false,
        })
    }

    /// Adds the offsets topic to the open transaction (once), for `group`'s commits.
    fn add_offsets(&mut self, group: &str) -> Result<()> {
        let offsets_tp = TopicPartition::new(crate::group::OFFSETS_TOPIC, 0);
        if !self.added.contains(&offsets_tp) {
            self.coordinator()?
                .add_offsets(&self.id, self.producer_id, self.epoch, group)?;
            self.added.insert(offsets_tp);
        }
        Ok(())
    }

    /// The transaction coordinator, wherever it runs now.
    fn coordinator(&self) -> Result<Arc<dyn TxnCalls>> {
        self.broker.inner.txn_calls()
    }

    /// The partition for a record: explicit, by the partitioner, or one per topic for the
    /// transaction's unkeyed records.
    fn choose(&mut self, topic: &str, partitions: u32, record: &ProducerRecord<'_>) -> Result<u32> {
        if let Some(p) = record.partition {
            if p >= partitions {
                return Err(Error::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                    partitions,
                });
            }
            return Ok(p);
        }
        if let Some(p) = self.partitioner.partition(topic, record.key, partitions) {
            return Ok(p % partitions);
        }
        let turn = self.turn;
        let p = *self
            .sticky
            .entry(topic.to_string())
            .or_insert_with(|| turn.wrapping_mul(0x9e37_79b9) % partitions);
        Ok(p % partitions)
    }
}

/// An open transaction of a [`TransactionalProducer`].
#[derive(Debug)]
pub struct Transaction<'p> {
    producer: &'p mut TransactionalProducer,
    ended: bool,
}

impl Transaction<'_> {
    /// Writes `record` as part of the transaction: `read_committed` readers see it once the
    /// transaction commits, never if it aborts. Returns where it was written (without waiting
    /// for the disk: the commit makes it durable). A send that fails leaves the transaction
    /// to be aborted (or committed without that record).
    pub fn send(&mut self, record: ProducerRecord<'_>) -> Result<RecordMetadata> {
        let topic = record.topic;
        let partition = record.partition;
        let mut sent = self.send_batch(topic, partition, std::slice::from_ref(&record))?;
        Ok(sent.remove(0))
    }

    /// Writes `records` to one partition as one batch, as part of the transaction: the
    /// partition is `partition`, or the partitioner's choice for the first record's key. The
    /// records' own topic and partition fields are ignored.
    pub fn send_batch(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        records: &[ProducerRecord<'_>],
    ) -> Result<Vec<RecordMetadata>> {
        refuse_internal(topic)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(t) = records.iter().find_map(|r| r.timestamp.filter(|&t| t < 0)) {
            return Err(Error::InvalidTimestamp { timestamp: t });
        }
        let p = &mut *self.producer;
        let t = p.broker.inner.topic_or_create(topic)?;
        let count = t.partitions.read().len() as u32;
        let first = ProducerRecord {
            partition,
            ..records[0].clone()
        };
        let index = p.choose(&t.name, count, &first)?;
        let log = t.partition(index)?;
        let tp = TopicPartition::new(t.name.clone(), index);
        let config = log.config();
        if let Some(index) = records.iter().position(|r| r.key.is_none())
            && config.get_cleanup_policy().compacts()
        {
            return Err(Error::KeyRequired { index });
        }
        let codec = match t.config.read().get_compression() {
            CompressionType::Codec(c) => c,
            CompressionType::Producer => p.compression,
        };
        let sequence = *p.sequences.get(&tp).unwrap_or(&0);
        let mut b = BatchBuilder::new(codec)
            .producer(p.producer_id, p.epoch, sequence)
            .transactional(true);
        let now = now_ms();
        let mut timestamps = Vec::with_capacity(records.len());
        for r in records {
            let timestamp = r.timestamp.unwrap_or(now);
            timestamps.push(timestamp);
            b.push(timestamp, r.key, r.value, &r.headers);
        }
        let batch = b.finish()?;
        // What the log would refuse is refused before the partition joins the transaction.
        crate::storage::check_batch(&batch, &config, log.is_replicated())?;
        let coordinator = p.coordinator()?;
        if !p.added.contains(&tp) {
            coordinator.add_partitions(&p.id, p.producer_id, p.epoch, std::slice::from_ref(&tp))?;
            p.added.insert(tp.clone());
        }
        let header = batch.header();
        let mut batch = Some(batch);
        let info = coordinator.write_in(p.producer_id, p.epoch, &tp, &mut || {
            let batch = batch
                .take()
                .ok_or(Error::IllegalState("a transactional batch written twice"))?;
            if log.is_replicated() {
                // Judged by the partition's leader.
                return log.append(batch);
            }
            let _producing = log.producing();
            match log.plan_producers(std::slice::from_ref(&header))?.remove(0) {
                Verdict::Append => log.append_unsynced(batch),
                _ => Err(Error::IllegalState("a transactional batch judged other than new")),
            }
        })?;
        let next = (i64::from(sequence) + records.len() as i64) % (i64::from(i32::MAX) + 1);
        p.sequences.insert(tp, next as i32);
        let log_time = config.get_timestamp_type() == TimestampType::LogAppendTime;
        Ok(timestamps
            .into_iter()
            .enumerate()
            .map(|(i, timestamp)| RecordMetadata {
                topic: t.name.clone(),
                partition: index,
                offset: info.base_offset + i as i64,
                timestamp: if log_time { info.log_append_time } else { timestamp },
            })
            .collect())
    }

    /// Commits `group`'s consumed positions (the offset of the next record to read, for each
    /// partition) as part of the transaction: the group resumes from them if it commits,
    /// from its earlier commits if it aborts.
    pub fn send_offsets(&mut self, group: &str, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let p = &mut *self.producer;
        p.add_offsets(group)?;
        let producer = (p.producer_id, p.epoch);
        p.broker
            .inner
            .commit_in_transaction(&p.id, producer, group, None, &committed(offsets))
    }

    /// As [`send_offsets`](Self::send_offsets) for `consumer`'s group, checked against the
    /// consumer's membership as Kafka checks `sendOffsetsToTransaction` with a consumer's
    /// group metadata (KIP-447): a member the group no longer counts (an older generation,
    /// after a rebalance gave its partitions to another member) is refused
    /// ([`Error::IllegalGeneration`], [`Error::UnknownMember`]) and nothing is committed, so
    /// a stalled instance cannot commit over the one that took its partitions.
    pub fn send_offsets_for(
        &mut self,
        consumer: &crate::Consumer,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let (group, member) = consumer.group_member()?;
        let p = &mut *self.producer;
        let named = member.generation >= 0 || !member.member_id.is_empty();
        if !named {
            return self.send_offsets(&group, offsets);
        }
        p.add_offsets(&group)?;
        let producer = (p.producer_id, p.epoch);
        p.broker
            .inner
            .commit_in_transaction(&p.id, producer, &group, Some(&member), &committed(offsets))
    }

    /// Commits: every record sent and every offset committed in the transaction becomes
    /// visible at once, durably, before this returns.
    pub fn commit(mut self) -> Result<()> {
        self.end(true)
    }

    /// Aborts: nothing sent in the transaction is ever seen by `read_committed` readers.
    pub fn abort(mut self) -> Result<()> {
        self.end(false)
    }

    fn end(&mut self, commit: bool) -> Result<()> {
        self.ended = true;
        let p = &mut *self.producer;
        if p.added.is_empty() {
            return Ok(()); // nothing was written
        }
        let ended = p
            .coordinator()
            .and_then(|c| c.end(&p.id, p.producer_id, p.epoch, commit));
        p.added.clear();
        p.unsettled = ended.is_err();
        ended
    }
}

/// Positions as commits (no metadata, no leader epoch, stamped now).
fn committed(offsets: &[(TopicPartition, i64)]) -> Vec<(TopicPartition, OffsetAndMetadata)> {
    let now = now_ms();
    offsets
        .iter()
        .map(|(tp, offset)| {
            (
                tp.clone(),
                OffsetAndMetadata {
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp: now,
                },
            )
        })
        .collect()
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.ended
            && let Err(e) = self.end(false)
        {
            log::warn!("aborting the transaction of {:?} on drop: {e}", self.producer.id);
        }
    }
}
