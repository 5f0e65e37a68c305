//! The asynchronous face on tokio (feature `tokio`): [`AsyncConsumer`], a consumer whose
//! polls and commits are futures and which is a [`Stream`] of records. The producer's
//! asynchronous send is [`Producer::send_async`](crate::Producer::send_async).
//!
//! One engine under both faces: an `AsyncConsumer` is a [`Consumer`] whose blocking work
//! (fetching from the logs, a group's rebalance, a commit's `fdatasync`) runs on tokio's
//! blocking pool, while waiting for records holds no thread: the task sleeps on the signal the
//! logs raise when they advance.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use parking_lot::Mutex;

use crate::consumer::{Step, refuse_negative};
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::record::{Consumed, OwnedRecord};
use crate::storage::Signal;
use crate::{Consumer, ConsumerRecords, TopicPartition};

/// How long one look of the stream waits before it looks again (it never ends on its own).
const STREAM_WAIT: Duration = Duration::from_secs(1);

/// A [`Consumer`] for async code: `poll` and the commits are futures, and it is a [`Stream`]
/// of [`OwnedRecord`]s. Waiting for records holds no thread; fetching, rebalancing and
/// committing run on tokio's blocking pool, so no runtime worker waits for the disk.
///
/// Dropping a future of it (a `select!` that chose another branch) loses nothing: records
/// its poll fetched meanwhile are returned by the next poll. Records the stream fetched but
/// has not yielded are never committed as consumed, by [`AsyncConsumer::commit`],
/// auto-commit or the close.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use rivulet::{AsyncConsumer, Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig};
///
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("orders", 2, TopicConfig::default())?;
/// let producer = Producer::new(&broker);
/// for id in 0..10u8 {
///     producer.send_async(ProducerRecord::new("orders", &[id]).key(&[id])).await?;
/// }
///
/// let config = ConsumerConfig::default().group_id("billing").auto_offset_reset(OffsetReset::Earliest);
/// let mut consumer = AsyncConsumer::new(Consumer::new(&broker, config));
/// consumer.run(|c| c.subscribe(["orders"])).await?;
/// let mut seen = Vec::new();
/// while seen.len() < 10 {
///     let record = consumer.next().await.expect("a stream of records never ends")?;
///     seen.push(record.value.unwrap()[0]);
/// }
/// seen.sort();
/// assert_eq!(seen, (0..10).collect::<Vec<u8>>());
/// consumer.commit().await?;
/// # Ok(())
/// # }
/// ```
pub struct AsyncConsumer {
    shared: Arc<Shared>,
    signal: Arc<Signal>,
    stored: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
    held: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
    /// Records fetched by the stream and not yielded yet.
    ready: VecDeque<OwnedRecord>,
    /// The assignment's version `ready` was last checked against.
    checked: u64,
    /// The stream's look for records under way.
    next: Option<Pin<Box<dyn Future<Output = Result<ConsumerRecords>> + Send>>>,
    /// Set by `into_inner`, which takes the consumer back: the drop closes nothing.
    detached: bool,
}

impl std::fmt::Debug for AsyncConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConsumer")
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    consumer: Mutex<Consumer>,
    /// What looks found and the application has not taken yet, oldest first: records (held,
    /// so no commit passes them) or an error. Pushed while the consumer is locked, so a look
    /// fetches only when nothing older waits here.
    undelivered: Mutex<VecDeque<Result<ConsumerRecords>>>,
    /// The consumer's assignment after its last look, with a version bumped when it changes.
    assignment: Mutex<(u64, Arc<BTreeSet<TopicPartition>>)>,
    held: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
}

impl Shared {
    /// One look, on a blocking thread: `None` once a result waits in `undelivered`, else
    /// when to wait for the signal until.
    fn step(&self, deadline: Instant) -> Option<(u64, Instant)> {
        let mut consumer = self.consumer.lock();
        if !self.undelivered.lock().is_empty() {
            return None;
        }
        let step = consumer.poll_step(deadline);
        self.note_assignment(&consumer);
        let result = match step {
            Ok(Step::Wait { seen, wake }) => return Some((seen, wake)),
            Ok(Step::Ready(records)) => Ok(records),
            Err(e) => Err(e),
        };
        let mut undelivered = self.undelivered.lock();
        if let Ok(records) = &result {
            let mut held = self.held.lock();
            for (tp, offset) in records.firsts() {
                held.entry(tp).or_insert(offset);
            }
        }
        undelivered.push_back(result);
        None
    }

    /// Records the consumer's assignment; when it moved, results waiting lose the records of
    /// partitions given up (the consumer dropped their holds).
    fn note_assignment(&self, consumer: &Consumer) {
        let assigned: BTreeSet<TopicPartition> = consumer.assignment().into_iter().collect();
        let mut assignment = self.assignment.lock();
        if *assignment.1 == assigned {
            return;
        }
        for records in self.undelivered.lock().iter_mut().flatten() {
            for (tp, _) in records.firsts() {
                if !assigned.contains(&tp) {
                    records.drop_partition(&tp);
                }
            }
        }
        *assignment = (assignment.0 + 1, Arc::new(assigned));
    }

    /// The oldest result waiting, if any (its records stay held until the caller says).
    fn take(&self) -> Option<Result<ConsumerRecords>> {
        self.undelivered.lock().pop_front()
    }
}

impl AsyncConsumer {
    /// Wraps a consumer (configured, assigned or subscribed as it is).
    pub fn new(consumer: Consumer) -> AsyncConsumer {
        let assigned: BTreeSet<TopicPartition> = consumer.assignment().into_iter().collect();
        let held = consumer.held.clone();
        AsyncConsumer {
            signal: consumer.signal(),
            stored: consumer.stored_offsets(),
            held: held.clone(),
            shared: Arc::new(Shared {
                consumer: Mutex::new(consumer),
                undelivered: Mutex::new(VecDeque::new()),
                assignment: Mutex::new((0, Arc::new(assigned))),
                held,
            }),
            ready: VecDeque::new(),
            checked: 0,
            next: None,
            detached: false,
        }
    }

    /// Runs `f` on the consumer on tokio's blocking pool: for the calls without an
    /// asynchronous form (`subscribe`, `assign`, `pause`, `position`, ...). Records the
    /// stream has fetched but not yielded are still yielded after it (those of partitions it
    /// gives up excepted); move a partition with [`AsyncConsumer::seek`], which drops them.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Consumer) -> T + Send + 'static) -> T {
        let shared = self.shared.clone();
        blocking(move || {
            let mut consumer = shared.consumer.lock();
            let value = f(&mut consumer);
            shared.note_assignment(&consumer);
            value
        })
        .await
    }

    /// Returns the records available now, or waits up to `timeout` for some, as
    /// [`Consumer::poll`]. The wait holds no thread. Not to be mixed with the stream while
    /// it holds records it has not yielded ([`Error::IllegalState`]).
    pub async fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        if !self.ready.is_empty() {
            return Err(Error::IllegalState(
                "poll on an AsyncConsumer whose stream holds records not yielded yet",
            ));
        }
        let result = look(self.shared.clone(), self.signal.clone(), Instant::now() + timeout).await;
        // They are the application's now.
        self.rehold();
        result
    }

    /// The next record (the stream's next item, without a `StreamExt` in scope).
    pub async fn recv(&mut self) -> Result<OwnedRecord> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .expect("the stream of records never ends")
    }

    /// Moves `tp` to `offset`, dropping the records of it fetched and not handed out yet.
    pub async fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.next = None;
        self.ready
            .retain(|r| r.partition != tp.partition || r.topic != tp.topic);
        let shared = self.shared.clone();
        let tp = tp.clone();
        let result = blocking(move || {
            let mut consumer = shared.consumer.lock();
            consumer.seek(&tp, offset)?;
            for records in shared.undelivered.lock().iter_mut().flatten() {
                records.drop_partition(&tp);
            }
            Ok(())
        })
        .await;
        self.rehold();
        result
    }

    /// Commits as [`Consumer::commit`]: the positions past the records yielded so far (or
    /// the offsets stored, with `enable.auto.offset.store` off). Resolves once durable.
    pub async fn commit(&self) -> Result<()> {
        self.run(Consumer::commit).await
    }

    /// Commits `record`'s partition past it, as [`Consumer::commit_record`].
    pub async fn commit_record(&self, record: &impl Consumed) -> Result<()> {
        refuse_negative("offset", record.offset())?;
        let tp = TopicPartition::new(record.topic(), record.partition());
        let next = record.offset() + 1;
        self.run(move |c| c.commit_offsets(&[(tp, next, "")])).await
    }

    /// Acknowledges `record` for the next commit, as [`Consumer::store_offset`] (a record
    /// of a partition not assigned is refused); it waits for nothing.
    pub fn store_offset(&self, record: &impl Consumed) -> Result<()> {
        refuse_negative("offset", record.offset())?;
        let tp = TopicPartition::new(record.topic(), record.partition());
        if !self.shared.assignment.lock().1.contains(&tp) {
            return Err(Error::IllegalState(
                "an offset stored for a partition not assigned to this consumer",
            ));
        }
        self.stored.lock().insert(tp, record.offset() + 1);
        Ok(())
    }

    /// The group's committed offsets of `partitions`, as [`Consumer::committed`].
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<OffsetAndMetadata>>> {
        let partitions = partitions.to_vec();
        self.run(move |c| c.committed(&partitions)).await
    }

    /// The consumer back, once no call of it is under way. Records fetched but not handed
    /// out are read again: their partitions are moved back to them.
    pub async fn into_inner(mut self) -> Consumer {
        self.next = None;
        let mut firsts: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in self.ready.drain(..) {
            firsts
                .entry(TopicPartition::new(r.topic, r.partition))
                .or_insert(r.offset);
        }
        let mut shared = self.shared.clone();
        self.detached = true;
        drop(self);
        let consumer = loop {
            match Arc::try_unwrap(shared) {
                Ok(s) => {
                    for records in s.undelivered.into_inner().into_iter().flatten() {
                        for (tp, offset) in records.firsts() {
                            firsts.entry(tp).or_insert(offset);
                        }
                    }
                    break s.consumer.into_inner();
                }
                // A blocking call of a dropped future is still running: it ends soon.
                Err(back) => {
                    shared = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let mut consumer = consumer;
        for (tp, offset) in firsts {
            let _ = consumer.seek(&tp, offset);
        }
        consumer
    }

    /// Closes the consumer (leaving its group; with auto-commit, a last commit past the
    /// records handed out) on the blocking pool, and resolves once it is closed. Dropping an
    /// `AsyncConsumer` closes it too, in the background.
    pub async fn close(self) {
        let consumer = self.into_inner().await;
        blocking(move || drop(consumer)).await;
    }

    /// Sets the hold of each partition to the first record not handed out yet: in `ready`,
    /// else in the results waiting.
    fn rehold(&self) {
        let undelivered = self.shared.undelivered.lock();
        let mut held = self.held.lock();
        held.clear();
        for r in &self.ready {
            held.entry(TopicPartition::new(r.topic.as_str(), r.partition))
                .or_insert(r.offset);
        }
        for records in undelivered.iter().flatten() {
            for (tp, offset) in records.firsts() {
                held.entry(tp).or_insert(offset);
            }
        }
    }

    /// `record` is the application's now: its partition's hold moves to the next record not
    /// handed out, or goes. A hold the consumer dropped (the partition was given up) stays
    /// dropped.
    fn release(&self, record: &OwnedRecord) {
        let tp = TopicPartition::new(record.topic.as_str(), record.partition);
        let next = self
            .ready
            .iter()
            .find(|r| r.partition == record.partition && r.topic == record.topic)
            .map(|r| r.offset);
        match next {
            Some(offset) => {
                if let Some(hold) = self.held.lock().get_mut(&tp) {
                    *hold = offset;
                }
            }
            None => {
                // Under the queue's lock, as a step pushes and holds: a batch it pushes of this
                // partition keeps its hold.
                let undelivered = self.shared.undelivered.lock();
                if undelivered.is_empty() {
                    self.held.lock().remove(&tp);
                } else {
                    drop(undelivered);
                    self.rehold();
                }
            }
        }
    }

    /// Drops the records of partitions the consumer no longer has, if its assignment moved.
    fn check_assignment(&mut self) {
        let (version, assigned) = self.shared.assignment.lock().clone();
        if version != self.checked {
            self.checked = version;
            self.ready
                .retain(|r| assigned.contains(&TopicPartition::new(r.topic.as_str(), r.partition)));
            self.rehold();
        }
    }
}

/// Runs `f` on tokio's blocking pool; its panic is the caller's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Looks for records until some come (or an error) or `deadline`: fetches on the blocking
/// pool, waits on the consumer's signal. A look whose caller has gone leaves what it found
/// for the next one.
async fn look(shared: Arc<Shared>, signal: Arc<Signal>, deadline: Instant) -> Result<ConsumerRecords> {
    loop {
        if let Some(result) = shared.take() {
            return result;
        }
        let task = shared.clone();
        let step = blocking(move || task.step(deadline)).await;
        if let Some((seen, wake)) = step {
            let raised = tokio::time::timeout_at(wake.into(), signal.raised_past(seen)).await;
            if raised.is_err() && wake >= deadline {
                return Ok(ConsumerRecords::default());
            }
        }
    }
}

impl Stream for AsyncConsumer {
    type Item = Result<OwnedRecord>;

    /// The next record; the stream never ends (an error is an item, and the stream goes on
    /// after it).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            this.check_assignment();
            if let Some(record) = this.ready.pop_front() {
                this.release(&record);
                return Poll::Ready(Some(Ok(record)));
            }
            let (shared, signal) = (this.shared.clone(), this.signal.clone());
            let next = this
                .next
                .get_or_insert_with(|| Box::pin(look(shared, signal, Instant::now() + STREAM_WAIT)));
            let result = match next.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            };
            this.next = None;
            match result {
                // Held until yielded: `ready` is part of the hold from here.
                Ok(records) => this.ready.extend(records.iter().map(|r| r.detach())),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl Drop for AsyncConsumer {
    /// The consumer's close (leaving its group, a last commit that syncs) runs on the
    /// blocking pool when dropped within a runtime.
    fn drop(&mut self) {
        self.next = None;
        if self.detached {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            // This handle's reference goes when this returns; the task waits for that (and for
            // a cancelled look's step) so that the last reference, and the close, is its own.
            runtime.spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Arc::strong_count(&shared) > 1 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(shared);
            });
        }
    }
}
