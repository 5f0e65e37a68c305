//! Idempotent producers (KIP-98): InitProducerId hands out producer ids. What each partition
//! knows of a producer (its epoch, its last five batches) is the log's own (the storage
//! layer's producer state, kept across restarts in snapshot files): there a retried batch is
//! answered with the offset it got the first time and not written again, a gap in the
//! sequence is refused with `OUT_OF_ORDER_SEQUENCE_NUMBER`, an older epoch with
//! `INVALID_PRODUCER_EPOCH`.
//!
//! A single broker accepts ids it issued, and ids a partition's log knows from a batch
//! written within [`producer.id.expiration.ms`](super::ServerConfig::producer_id_expiration)
//! (issued before a restart: a retry that spans the restart is answered as a duplicate);
//! a batch of any other id (never issued, or expired) is refused with
//! `UNKNOWN_PRODUCER_ID`, and the client asks for a new id. At most [`MAX_PRODUCER_IDS`] ids
//! are live; past that, issuing one forgets the least recently used.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use parking_lot::Mutex;

use crate::storage::{BatchHeader, PartitionLog};

/// The most producer ids live at once (100,000). Issuing one more forgets the least recently
/// used (a hundredth of the table at a time, so a flood of InitProducerId costs little each);
/// a forgotten producer's next batch gets `UNKNOWN_PRODUCER_ID` and it asks for a new id.
pub const MAX_PRODUCER_IDS: usize = 100_000;

/// Every issued producer id, and the next one.
#[derive(Debug)]
pub(super) struct Producers {
    /// A cluster node's id: its ids end in it (ids of several nodes never collide), and it
    /// accepts ids other nodes issued.
    node: Option<i32>,
    expiration: Duration,
    issued: Mutex<HashMap<i64, Issued>>,
}

/// A producer id handed out by InitProducerId.
#[derive(Debug, Clone, Copy)]
struct Issued {
    epoch: i16,
    last_used: Instant,
}

impl Producers {
    /// Producers whose ids expire after `expiration` without a batch.
    #[cfg(test)]
    pub(super) fn new(expiration: Duration) -> Producers {
        Self::of_node(expiration, None)
    }

    /// The producers of a broker that is node `node` of a cluster (`None`: alone).
    pub(super) fn of_node(expiration: Duration, node: Option<i32>) -> Producers {
        Producers {
            node,
            expiration,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// A new producer id with epoch 0, or (v3+, for a producer that names an id this broker
    /// issued and its current epoch) the same id with the next epoch. Any other id named gets
    /// a new one, as Kafka answers a producer without a transactional id. Transactions are not
    /// served.
    ///
    /// New ids come from `new_id` (the broker's, which the transaction coordinator's come
    /// from too: the two never issue the same id).
    pub(super) fn init(
        &self,
        request: InitProducerIdRequest,
        new_id: impl FnOnce() -> i64,
    ) -> InitProducerIdResponse {
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
            (new_id(), 0)
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

    /// Checks that every idempotent batch of a record set for `log` is of an id this broker
    /// issued (or that the log knows, from before a restart), in an epoch issued, and notes
    /// the ids as used.
    pub(super) fn admit(
        &self,
        log: &PartitionLog,
        headers: &[BatchHeader],
    ) -> Result<(), (ResponseError, String)> {
        let now = Instant::now();
        // What the log knows of the set's producers, asked before the broker-wide table is
        // locked (the log's state has its own lock).
        let known: Vec<(i64, i16)> = match self.node {
            Some(_) => Vec::new(),
            None => headers
                .iter()
                .filter(|h| h.producer_id >= 0)
                .filter_map(|h| Some((h.producer_id, self.known_to(log, h.producer_id)?)))
                .collect(),
        };
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
            if issued.get(&h.producer_id).is_none_or(|p| self.expired(p, now))
                && let Some(&(_, epoch)) = known.iter().find(|(id, _)| *id == h.producer_id)
            {
                // Issued before a restart: the log still knows it (and the epoch after the
                // one it knows may have been issued since, by a bump).
                let epoch = epoch.saturating_add(1);
                issued.insert(
                    h.producer_id,
                    Issued {
                        epoch,
                        last_used: now,
                    },
                );
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

    /// The epoch `log` knows for `producer_id`, if it wrote within the expiration.
    fn known_to(&self, log: &PartitionLog, producer_id: i64) -> Option<i16> {
        let max_age = self.expiration.as_millis().min(i64::MAX as u128) as i64;
        log.producer_epoch(producer_id, crate::storage::now_ms(), max_age)
    }

    /// Forgets expired ids: run now and then, so idle producers cost nothing.
    pub(super) fn expire(&self) {
        let now = Instant::now();
        self.issued.lock().retain(|_, p| !self.expired(p, now));
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

    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

    fn init(producers: &Producers) -> i64 {
        let request = InitProducerIdRequest::default().with_producer_id(ProducerId(-1));
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        producers.init(request, || next).producer_id.0
    }

    #[test]
    fn the_table_of_ids_is_bounded_and_forgets_the_least_recently_used() {
        let producers = Producers::new(Duration::from_secs(3600));
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), crate::LogConfig::default()).unwrap();
        let first = init(&producers);
        let kept = init(&producers);
        for _ in 2..MAX_PRODUCER_IDS {
            init(&producers);
        }
        // The second id is used: the first is now the least recently used.
        producers.admit(&log, &[header(kept, 0, 0, 1)]).unwrap();
        let last = init(&producers);
        assert!(producers.issued.lock().len() <= MAX_PRODUCER_IDS);
        assert!(matches!(
            producers.admit(&log, &[header(first, 0, 0, 1)]),
            Err((ResponseError::UnknownProducerId, _))
        ));
        producers.admit(&log, &[header(kept, 0, 0, 1)]).unwrap();
        producers.admit(&log, &[header(last, 0, 0, 1)]).unwrap();
        // An epoch never issued is refused.
        assert!(matches!(
            producers.admit(&log, &[header(last, 1, 0, 1)]),
            Err((ResponseError::InvalidProducerEpoch, _))
        ));
    }
}
