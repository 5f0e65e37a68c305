//! The asynchronous face on tokio (feature `tokio`): [`AsyncConsumer`], a consumer whose
//! polls and commits are futures and which is a [`Stream`] of records. The producer's
//! asynchronous send is [`Producer::send_async`](crate::Producer::send_async).
//!
//! One engine under both faces: an `AsyncConsumer` is a [`Consumer`] whose blocking work
//! (fetching from the logs, a group's rebalance, a commit's `fdatasync`) runs on tokio's
//! blocking pool, while waiting for records holds no thread: the task sleeps on the signal the
//! logs raise when they advance.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use parking_lot::Mutex;

use crate::consumer::Step;
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
    /// The stream's look for records under way.
    next: Option<Pin<Box<dyn Future<Output = Result<ConsumerRecords>> + Send>>>,
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
    /// Records a poll fetched after its caller stopped waiting: the next poll's.
    undelivered: Mutex<VecDeque<ConsumerRecords>>,
}

impl AsyncConsumer {
    /// Wraps a consumer (configured, assigned or subscribed as it is).
    pub fn new(consumer: Consumer) -> AsyncConsumer {
        AsyncConsumer {
            signal: consumer.signal(),
            stored: consumer.stored_offsets(),
            held: consumer.held.clone(),
            shared: Arc::new(Shared {
                consumer: Mutex::new(consumer),
                undelivered: Mutex::new(VecDeque::new()),
            }),
            ready: VecDeque::new(),
            next: None,
        }
    }

    /// Runs `f` on the consumer on tokio's blocking pool: for the calls without an
    /// asynchronous form (`subscribe`, `assign`, `pause`, `position`, ...). Records the
    /// stream has fetched but not yielded are still yielded after it; move a partition with
    /// [`AsyncConsumer::seek`], which drops them.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Consumer) -> T + Send + 'static) -> T {
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || f(&mut shared.consumer.lock())).await {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Returns the records available now, or waits up to `timeout` for some, as
    /// [`Consumer::poll`]. The wait holds no thread.
    pub async fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        if !self.ready.is_empty() {
            return Err(Error::IllegalState(
                "poll on an AsyncConsumer whose stream holds records not yielded yet",
            ));
        }
        look(self.shared.clone(), self.signal.clone(), Instant::now() + timeout).await
    }

    /// The next record (the stream's next item, without a `StreamExt` in scope).
    pub async fn recv(&mut self) -> Result<OwnedRecord> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .expect("the stream of records never ends")
    }

    /// Moves `tp` to `offset`, dropping the records of it the stream holds.
    pub async fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.ready
            .retain(|r| r.partition != tp.partition || r.topic != tp.topic);
        let tp = tp.clone();
        self.run(move |c| c.seek(&tp, offset)).await
    }

    /// Commits as [`Consumer::commit`]: the positions past the records yielded so far (or
    /// the offsets stored, with `enable.auto.offset.store` off). Resolves once durable.
    pub async fn commit(&self) -> Result<()> {
        self.run(Consumer::commit).await
    }

    /// Commits `record`'s partition past it, as [`Consumer::commit_record`].
    pub async fn commit_record(&self, record: &impl Consumed) -> Result<()> {
        let tp = TopicPartition::new(record.topic(), record.partition());
        let next = record.offset() + 1;
        self.run(move |c| c.commit_offsets(&[(tp, next, "")])).await
    }

    /// Acknowledges `record` for the next commit, as [`Consumer::store_offset`]; it waits
    /// for nothing.
    pub fn store_offset(&self, record: &impl Consumed) -> Result<()> {
        if record.offset() < 0 {
            return Err(Error::InvalidArgument {
                name: "offset",
                value: record.offset().to_string(),
                reason: "it must not be negative",
            });
        }
        let tp = TopicPartition::new(record.topic(), record.partition());
        self.stored.lock().insert(tp, record.offset() + 1);
        Ok(())
    }

    /// The group's committed offsets of `partitions`, as [`Consumer::committed`].
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<OffsetAndMetadata>>> {
        let partitions = partitions.to_vec();
        self.run(move |c| c.committed(&partitions)).await
    }

    /// The consumer back, once no call of it is under way. Records the stream fetched but did
    /// not yield are read again: their partitions are moved back to them.
    pub async fn into_inner(mut self) -> Consumer {
        self.next = None;
        let mut firsts: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in self.ready.drain(..) {
            firsts
                .entry(TopicPartition::new(r.topic, r.partition))
                .or_insert(r.offset);
        }
        let mut shared = self.shared.clone();
        drop(self);
        let consumer = loop {
            match Arc::try_unwrap(shared) {
                Ok(s) => break s.consumer.into_inner(),
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
}

/// Looks for records until some come or `deadline`: fetches on the blocking pool, waits on
/// the consumer's signal. A look whose caller has gone leaves its records for the next one.
async fn look(shared: Arc<Shared>, signal: Arc<Signal>, deadline: Instant) -> Result<ConsumerRecords> {
    loop {
        if let Some(records) = shared.undelivered.lock().pop_front() {
            return Ok(records);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = shared.clone();
        tokio::task::spawn_blocking(move || {
            let step = task.consumer.lock().poll_step(deadline);
            if let Err(Ok(Step::Ready(records))) = tx.send(step)
                && !records.is_empty()
            {
                task.undelivered.lock().push_back(records);
            }
        });
        match rx.await {
            Ok(Ok(Step::Ready(records))) => return Ok(records),
            Ok(Ok(Step::Wait { seen, wake })) => {
                let raised = tokio::time::timeout_at(wake.into(), signal.raised_past(seen)).await;
                if raised.is_err() && wake >= deadline {
                    return Ok(ConsumerRecords::default());
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::IllegalState("a consumer's fetch panicked")),
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
                Ok(records) => {
                    let mut held = this.held.lock();
                    for r in &records {
                        held.entry(r.topic_partition()).or_insert(r.offset);
                        this.ready.push_back(r.detach());
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl AsyncConsumer {
    /// `record` is the application's now: its partition's hold moves to the next record the
    /// stream keeps of it, or goes.
    fn release(&self, record: &OwnedRecord) {
        let next = self
            .ready
            .iter()
            .find(|r| r.partition == record.partition && r.topic == record.topic)
            .map(|r| r.offset);
        let tp = TopicPartition::new(record.topic.as_str(), record.partition);
        let mut held = self.held.lock();
        match next {
            Some(offset) => held.insert(tp, offset),
            None => held.remove(&tp),
        };
    }
}
