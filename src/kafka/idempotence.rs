//! Idempotent producers (KIP-98): InitProducerId hands out producer ids, and each partition
//! remembers, per producer, its epoch and its last five batches' sequence numbers. A retried
//! batch is answered with the offset it got the first time and not written again; a gap in the
//! sequence is refused with `OUT_OF_ORDER_SEQUENCE_NUMBER`; an older epoch with
//! `INVALID_PRODUCER_EPOCH`.
//!
//! Only ids this broker issued are accepted: a batch of any other id (never issued, expired
//! after [`producer.id.expiration.ms`](super::ServerConfig::producer_id_expiration) without a
//! batch, or issued before a restart) is refused with `UNKNOWN_PRODUCER_ID`, and the client
//! asks for a new id. At most [`MAX_PRODUCER_IDS`] ids are live; past that, issuing one
//! forgets the least recently used. A partition's state belongs to the topic it was made for:
//! a topic deleted and created again starts with none.
//!
//! The state is held in memory: a retry that spans a restart is written under the producer's
//! new id, so it can be written twice. Nothing acknowledged is lost either way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use parking_lot::Mutex;

use crate::broker::Topic;
use crate::storage::{AppendInfo, BatchHeader};

/// How many recent batches per producer and partition are remembered (Kafka's number: a
/// producer has at most five requests in flight).
const REMEMBERED: usize = 5;

/// The most producer ids live at once (100,000). Issuing one more forgets the least recently
/// used (a hundredth of the table at a time, so a flood of InitProducerId costs little each);
/// a forgotten producer's next batch gets `UNKNOWN_PRODUCER_ID` and it asks for a new id.
pub const MAX_PRODUCER_IDS: usize = 100_000;

/// Every issued producer id, every partition's producer state, and the next producer id.
#[derive(Debug)]
pub(super) struct Producers {
    next_id: AtomicI64,
    /// A cluster node's id: its ids end in it (ids of several nodes never collide), and it
    /// accepts ids other nodes issued.
    node: Option<i32>,
    expiration: Duration,
    issued: Mutex<HashMap<i64, Issued>>,
    partitions: Mutex<HashMap<(String, u32), OfTopic>>,
}

/// A partition's producer state, with the topic it was made for (not kept alive by it).
type OfTopic = (Weak<Topic>, SharedProducers);

/// A producer id handed out by InitProducerId.
#[derive(Debug, Clone, Copy)]
struct Issued {
    epoch: i16,
    last_used: Instant,
}

/// One partition's producer state, locked for a produce.
pub(super) type SharedProducers = Arc<Mutex<PartitionProducers>>;

/// The producers seen by one partition.
#[derive(Debug, Default)]
pub(super) struct PartitionProducers {
    by_id: HashMap<i64, Producer>,
    /// On a cluster's node, the leader epoch in which the state was read from the log.
    #[cfg(feature = "cluster")]
    read_in_epoch: Option<i32>,
}

/// How many ids apart a cluster node's ids are: each node's end in its id modulo this.
const NODE_SLOTS: i64 = 1024;

#[derive(Debug, Clone)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Sent>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    first_sequence: i32,
    last_sequence: i32,
    info: AppendInfo,
}

/// Where [`PartitionProducers::plan`] notes a batch it has judged but not yet seen written.
const UNWRITTEN: AppendInfo = AppendInfo {
    base_offset: -1,
    last_offset: -1,
    log_append_time: -1,
};

/// What to do with a batch.
#[derive(Debug, Clone)]
pub(super) enum Verdict {
    /// Not a retry: append it.
    Append,
    /// A retry of a batch already written: answer with its append.
    Duplicate(AppendInfo),
    /// Refused with this error.
    Refuse(ResponseError, String),
}

impl Producers {
    /// Producers whose ids expire after `expiration` without a batch.
    #[cfg(test)]
    pub(super) fn new(expiration: Duration) -> Producers {
        Self::of_node(expiration, None)
    }

    /// The producers of a broker that is node `node` of a cluster (`None`: alone).
    pub(super) fn of_node(expiration: Duration, node: Option<i32>) -> Producers {
        // Ids from the clock, so a restarted broker does not hand out an id again.
        let seed = crate::storage::now_ms().saturating_mul(1000);
        Producers {
            next_id: AtomicI64::new(seed),
            node,
            expiration,
            issued: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// A new producer id with epoch 0, or (v3+, for a producer that names an id this broker
    /// issued and its current epoch) the same id with the next epoch. Any other id named gets
    /// a new one, as Kafka answers a producer without a transactional id. Transactions are not
    /// served.
    pub(super) fn init(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        if request.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
            return InitProducerIdResponse::default()
                .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        let now = Instant::now();
        let mut issued = self.issued.lock();
        let bump = issued
            .get(&request.producer_id.0)
            .filter(|p| !self.expired(p, now))
            .is_some_and(|p| p.epoch == request.producer_epoch && p.epoch < i16::MAX);
        let (id, epoch) = if bump {
            (request.producer_id.0, request.producer_epoch + 1)
        } else {
            if issued.len() >= MAX_PRODUCER_IDS {
                self.make_room(&mut issued, now);
            }
            let next = self.next_id.fetch_add(1, Ordering::Relaxed);
            let id = match self.node {
                Some(node) => next.saturating_mul(NODE_SLOTS) + i64::from(node).rem_euclid(NODE_SLOTS),
                None => next,
            };
            (id, 0)
        };
        issued.insert(
            id,
            Issued {
                epoch,
                last_used: now,
            },
        );
        InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
    }

    fn expired(&self, p: &Issued, now: Instant) -> bool {
        now.saturating_duration_since(p.last_used) >= self.expiration
    }

    /// Forgets expired ids, then, if the table is still full, the least recently used
    /// hundredth of it.
    fn make_room(&self, issued: &mut HashMap<i64, Issued>, now: Instant) {
        issued.retain(|_, p| !self.expired(p, now));
        if issued.len() < MAX_PRODUCER_IDS {
            return;
        }
        let mut ages: Vec<(Instant, i64)> = issued.iter().map(|(&id, p)| (p.last_used, id)).collect();
        let evict = (MAX_PRODUCER_IDS / 100).max(1);
        ages.select_nth_unstable(evict - 1);
        for &(_, id) in &ages[..evict] {
            issued.remove(&id);
        }
        log::warn!("{MAX_PRODUCER_IDS} producer ids are live: forgot the {evict} least recently used");
    }

    /// Checks that every idempotent batch of a record set is of an id this broker issued, in
    /// an epoch it issued, and notes the ids as used.
    pub(super) fn admit(&self, headers: &[BatchHeader]) -> Result<(), (ResponseError, String)> {
        let now = Instant::now();
        let mut issued = self.issued.lock();
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            if self.node.is_some() {
                // Any node of the cluster may have issued it (a producer whose leader failed
                // over comes with the id it had): its epoch is the newest seen.
                let p = issued.entry(h.producer_id).or_insert(Issued {
                    epoch: h.producer_epoch,
                    last_used: now,
                });
                p.epoch = p.epoch.max(h.producer_epoch);
                p.last_used = now;
                continue;
            }
            let Some(p) = issued.get_mut(&h.producer_id).filter(|p| !self.expired(p, now)) else {
                return Err((
                    ResponseError::UnknownProducerId,
                    format!(
                        "producer id {} was not issued by this broker, or has expired",
                        h.producer_id
                    ),
                ));
            };
            if h.producer_epoch > p.epoch {
                return Err((
                    ResponseError::InvalidProducerEpoch,
                    format!(
                        "epoch {} of producer {} was never issued",
                        h.producer_epoch, h.producer_id
                    ),
                ));
            }
            p.last_used = now;
        }
        Ok(())
    }

    /// The producer state of one partition of `topic`; hold its lock across check, append and
    /// record. State made for an earlier topic of the same name is dropped.
    pub(super) fn partition(&self, topic: &Arc<Topic>, partition: u32) -> SharedProducers {
        let mut partitions = self.partitions.lock();
        let entry = partitions
            .entry((topic.name.clone(), partition))
            .or_insert_with(|| (Arc::downgrade(topic), SharedProducers::default()));
        if !Weak::ptr_eq(&entry.0, &Arc::downgrade(topic)) {
            *entry = (Arc::downgrade(topic), SharedProducers::default());
        }
        entry.1.clone()
    }

    /// Forgets expired ids, and every partition's state of ids no longer issued or of topics
    /// deleted: run now and then, so idle producers cost nothing.
    pub(super) fn expire(&self) {
        let now = Instant::now();
        let issued = {
            let mut issued = self.issued.lock();
            issued.retain(|_, p| !self.expired(p, now));
            issued.keys().copied().collect::<std::collections::HashSet<i64>>()
        };
        let states: Vec<SharedProducers> = {
            let mut partitions = self.partitions.lock();
            partitions.retain(|_, (topic, _)| topic.strong_count() > 0);
            partitions.values().map(|(_, state)| state.clone()).collect()
        };
        // A cluster node's partition state holds producers other nodes issued (read from the
        // log in a new leader epoch): it is kept as long as the topic.
        if self.node.is_some() {
            return;
        }
        for state in states {
            state.lock().by_id.retain(|id, _| issued.contains(id));
        }
    }
}

/// The sequence after `s` (sequences wrap from `i32::MAX` to 0).
fn after(s: i32) -> i32 {
    if s == i32::MAX { 0 } else { s + 1 }
}

fn last_sequence(h: &BatchHeader) -> i32 {
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl PartitionProducers {
    /// On a cluster's node, reads the state again from the tail of the partition's log if it
    /// was read in another leader epoch: this node may not have led the partition since, and
    /// the log holds every batch the leaders of the epochs between wrote (its headers name
    /// producer, epoch and sequences), so a retry that reaches a new leader after a failover
    /// is answered as a duplicate, not written again. The tail read is the last two segments.
    #[cfg(feature = "cluster")]
    pub(super) fn read_again_if_stale(
        &mut self,
        log: &crate::storage::PartitionLog,
        epoch: i32,
    ) -> crate::Result<()> {
        if self.read_in_epoch == Some(epoch) {
            return Ok(());
        }
        let mut fresh = PartitionProducers::default();
        log.for_each_header(log.tail_start(2), |h| {
            if h.producer_id >= 0 && !h.is_control() {
                fresh.record(
                    h,
                    AppendInfo {
                        base_offset: h.base_offset,
                        last_offset: h.last_offset(),
                        log_append_time: h.max_timestamp,
                    },
                );
            }
            Ok(())
        })?;
        self.by_id = fresh.by_id;
        self.read_in_epoch = Some(epoch);
        Ok(())
    }

    /// Has the state read again from the log before it is next used: an append whose outcome
    /// is unknown (it may yet commit) leaves it unsure.
    #[cfg(feature = "cluster")]
    pub(super) fn forget_reading(&mut self) {
        self.read_in_epoch = None;
    }

    /// Judges a batch from an idempotent producer (`producer_id >= 0`).
    pub(super) fn check(&self, h: &BatchHeader) -> Verdict {
        let Some(p) = self.by_id.get(&h.producer_id) else {
            return Verdict::Append; // never seen here (or not since a restart)
        };
        if h.producer_epoch < p.epoch {
            return Verdict::Refuse(
                ResponseError::InvalidProducerEpoch,
                format!("epoch {} is older than {}", h.producer_epoch, p.epoch),
            );
        }
        if h.producer_epoch > p.epoch {
            return if h.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!("a new epoch starts at sequence 0, not {}", h.base_sequence),
                )
            };
        }
        let last = last_sequence(h);
        if let Some(sent) = p
            .recent
            .iter()
            .find(|s| s.first_sequence == h.base_sequence && s.last_sequence == last)
        {
            return Verdict::Duplicate(sent.info);
        }
        let expected = p
            .recent
            .back()
            .map_or(h.base_sequence, |s| after(s.last_sequence));
        if h.base_sequence != expected {
            return Verdict::Refuse(
                ResponseError::OutOfOrderSequenceNumber,
                format!("sequence {} where {expected} was expected", h.base_sequence),
            );
        }
        Verdict::Append
    }

    /// Judges a partition's record set in order, each batch as if the ones before it that are
    /// to be appended had been: what to do with each, or the first refusal. Changes nothing.
    /// Batches of no idempotent producer (`producer_id < 0`) are appended.
    pub(super) fn plan(&self, headers: &[BatchHeader]) -> Result<Vec<Verdict>, (ResponseError, String)> {
        // The producers of this set only: a partition may remember many.
        let mut scratch = PartitionProducers::default();
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            if let Some(p) = self.by_id.get(&h.producer_id) {
                scratch.by_id.entry(h.producer_id).or_insert_with(|| p.clone());
            }
        }
        let mut plan = Vec::with_capacity(headers.len());
        for h in headers {
            if h.producer_id < 0 {
                plan.push(Verdict::Append);
                continue;
            }
            let verdict = scratch.check(h);
            match &verdict {
                Verdict::Refuse(code, why) => return Err((*code, why.clone())),
                // Offsets are not known yet: a later batch of the set is judged on sequences,
                // and one repeating this batch answers with the set's first append.
                Verdict::Append => scratch.record(h, UNWRITTEN),
                Verdict::Duplicate(_) => {}
            }
            plan.push(verdict);
        }
        Ok(plan)
    }

    /// Notes a batch that was appended.
    pub(super) fn record(&mut self, h: &BatchHeader, info: AppendInfo) {
        let p = self.by_id.entry(h.producer_id).or_insert(Producer {
            epoch: h.producer_epoch,
            recent: VecDeque::new(),
        });
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        if p.recent.len() == REMEMBERED {
            p.recent.pop_front();
        }
        p.recent.push_back(Sent {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            info,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn info(base: i64) -> AppendInfo {
        AppendInfo {
            base_offset: base,
            last_offset: base,
            log_append_time: 0,
        }
    }

    fn init(producers: &Producers) -> i64 {
        let request = InitProducerIdRequest::default().with_producer_id(ProducerId(-1));
        producers.init(request).producer_id.0
    }

    #[test]
    fn the_table_of_ids_is_bounded_and_forgets_the_least_recently_used() {
        let producers = Producers::new(Duration::from_secs(3600));
        let first = init(&producers);
        let kept = init(&producers);
        for _ in 2..MAX_PRODUCER_IDS {
            init(&producers);
        }
        // The second id is used: the first is now the least recently used.
        producers.admit(&[header(kept, 0, 0, 1)]).unwrap();
        let last = init(&producers);
        assert!(producers.issued.lock().len() <= MAX_PRODUCER_IDS);
        assert!(matches!(
            producers.admit(&[header(first, 0, 0, 1)]),
            Err((ResponseError::UnknownProducerId, _))
        ));
        producers.admit(&[header(kept, 0, 0, 1)]).unwrap();
        producers.admit(&[header(last, 0, 0, 1)]).unwrap();
        // An epoch never issued is refused.
        assert!(matches!(
            producers.admit(&[header(last, 1, 0, 1)]),
            Err((ResponseError::InvalidProducerEpoch, _))
        ));
    }

    #[test]
    fn retries_are_answered_gaps_and_old_epochs_refused() {
        let mut state = PartitionProducers::default();
        let first = header(7, 0, 0, 3);
        assert!(matches!(state.check(&first), Verdict::Append));
        state.record(&first, info(100));
        // The same batch again: the first answer, nothing written.
        assert!(matches!(state.check(&first), Verdict::Duplicate(i) if i.base_offset == 100));
        // The next batch follows on; a gap is refused.
        assert!(matches!(state.check(&header(7, 0, 3, 1)), Verdict::Append));
        assert!(matches!(
            state.check(&header(7, 0, 5, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber, _)
        ));
        // A new epoch starts at 0; then the old epoch is fenced.
        assert!(matches!(
            state.check(&header(7, 1, 3, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber, _)
        ));
        let bumped = header(7, 1, 0, 1);
        assert!(matches!(state.check(&bumped), Verdict::Append));
        state.record(&bumped, info(200));
        assert!(matches!(
            state.check(&header(7, 0, 3, 1)),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch, _)
        ));
        // Only the last five batches are remembered.
        for i in 1..=6 {
            let h = header(7, 1, i, 1);
            assert!(matches!(state.check(&h), Verdict::Append), "batch {i}");
            state.record(&h, info(200 + i as i64));
        }
        assert!(matches!(state.check(&header(7, 1, 6, 1)), Verdict::Duplicate(i) if i.base_offset == 206));
        assert!(!matches!(state.check(&header(7, 1, 1, 1)), Verdict::Duplicate(_)));
        // Sequences wrap.
        assert_eq!(after(i32::MAX), 0);
        assert_eq!(last_sequence(&header(1, 0, i32::MAX, 2)), 0);
    }
}
