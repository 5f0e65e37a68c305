//! Reading a data directory that another process writes: [`ReadOnlyBroker`] and its
//! [`Follower`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::broker::{self, GroupOffset, LOCK_FILE, PartitionDescription, TopicDescription};
use crate::config::TopicConfig;
use crate::consumer::TopicPartition;
use crate::error::{Error, IoContext, Result};
use crate::group::OFFSETS_TOPIC;
use crate::group::offsets::Replay;
use crate::record::OwnedRecord;
use crate::storage::follow::{self, Bound, Cursor, READERS_FILE, Watermark};
use crate::storage::notify::{Watch, Watcher};
use crate::storage::{Batch, Fetch, TimestampOffset, io};

/// How long opening waits for a running writer to start publishing to its new reader.
const PUBLISHING_WAIT: Duration = Duration::from_secs(5);
/// How many bytes of batches a follower reads from one partition per poll, at most (one batch
/// more when a single batch is larger).
const FOLLOW_BYTES: usize = 1 << 20;

/// A data directory opened for reading alongside the process that writes it (several
/// readers, one writer, as SQLite and Chronicle Queue allow): topics, records as they are
/// appended ([`follower`](Self::follower)), committed offsets and lag. Made by
/// [`Broker::open_read_only`](crate::Broker::open_read_only).
///
/// A reader takes no lock and writes nothing: it has no method that could. It announces
/// itself to the writer, which then publishes each partition's high watermark where readers
/// see it (one small write per move of a high watermark while readers exist, nothing
/// otherwise). Readers see only records below the published high watermark (acknowledged,
/// so a crash of the writer cannot take them back), and wait for them without polling the
/// disk (inotify). A reader outlives the writer: after a crash it keeps its place, and
/// follows the restarted writer. With no writer running it reads every whole batch on disk.
///
/// ```
/// use rivulet::{Broker, Producer, ProducerRecord, StartAt, TopicConfig};
/// use std::time::Duration;
/// let dir = tempfile::tempdir()?;
/// let writer = Broker::open(dir.path())?; // in the writing process
/// writer.create_topic("meters", 1, TopicConfig::default())?;
/// Producer::new(&writer).send(ProducerRecord::new("meters", b"2.3 kVA"))?;
///
/// let reader = Broker::open_read_only(dir.path())?; // in any other process
/// assert_eq!(reader.list_topics()?, ["meters"]);
/// let mut follower = reader.follower()?;
/// follower.assign_topic("meters", StartAt::Earliest)?;
/// let records = follower.poll(Duration::from_secs(5))?;
/// assert_eq!(records[0].value.as_deref(), Some(&b"2.3 kVA"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReadOnlyBroker {
    view: Arc<View>,
}

#[derive(Debug)]
struct View {
    dir: PathBuf,
    /// The readers file, locked shared while this reader lives (`None` until a writer of
    /// this version made it).
    registered: Mutex<Option<File>>,
    offsets: Mutex<OffsetsView>,
}

/// The offsets topic as read so far.
#[derive(Debug, Default)]
struct OffsetsView {
    cursor: Option<Cursor>,
    replay: Replay,
}

/// Where a [`Follower`] starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first record still on disk.
    Earliest,
    /// The high watermark: records appended from now on.
    Latest,
    /// This offset (the log start if retention passed it).
    Offset(i64),
    /// The first record whose timestamp is at or after this one (milliseconds since the Unix
    /// epoch); the high watermark if none is.
    Timestamp(i64),
}

impl ReadOnlyBroker {
    pub(crate) fn open(dir: &Path) -> Result<ReadOnlyBroker> {
        // Refuses anything but a data directory, before anything else.
        broker::registered_topics(dir)?;
        let view = View {
            dir: dir.to_path_buf(),
            registered: Mutex::new(None),
            offsets: Mutex::default(),
        };
        view.register()?;
        if view.writer_running()? && !follow::publishing(dir) {
            // The writer looks for readers ten times a second; its logs publish then.
            let mut watcher = Watcher::new().ctx("watch", dir)?;
            let readers = dir.join(READERS_FILE);
            let deadline = Instant::now() + PUBLISHING_WAIT;
            let _ = watcher.watch(&readers, Watch::Writes);
            while !follow::publishing(dir) && view.writer_running()? {
                let now = Instant::now();
                if now >= deadline {
                    log::warn!(
                        "{}: the writer does not publish its high watermarks (an older \
                         version?); reading what it published before",
                        dir.display()
                    );
                    break;
                }
                watcher.wait(deadline - now).ctx("watch", &readers)?;
            }
        }
        Ok(ReadOnlyBroker { view: Arc::new(view) })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.view.dir
    }

    /// Whether a process has the directory open for writing now.
    pub fn writer_running(&self) -> Result<bool> {
        self.view.writer_running()
    }

    /// The names of all topics, sorted.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = broker::registered_topics(&self.view.dir)?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// A topic's configuration and the state of each partition, as far as readers see it
    /// (the log end offset is the high watermark).
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let (partitions, config) = self.view.topic(name)?;
        let live = self.view.writer_running()?;
        let partitions = (0..partitions)
            .map(|p| {
                let dir = broker::partition_dir(&self.view.dir, name, p);
                let hw = high_watermark(&dir, live)?;
                let (size_bytes, segments) = segment_sizes(&dir)?;
                Ok(PartitionDescription {
                    partition: p,
                    log_start_offset: log_start(&dir)?.min(hw),
                    log_end_offset: hw,
                    high_watermark: hw,
                    size_bytes,
                    segments,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TopicDescription {
            name: name.to_string(),
            config,
            partitions,
        })
    }

    /// A topic's partition count.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(self.view.topic(name)?.0)
    }

    /// The first record of a partition whose timestamp is at or after `timestamp` (Kafka's
    /// ListOffsets by time), below the high watermark.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>> {
        let dir = self.view.partition_dir(topic, partition)?;
        let bound = self.view.bound(&dir)?;
        offset_for_timestamp(&dir, bound, timestamp)
    }

    /// Every group with committed offsets, sorted.
    pub fn list_groups(&self) -> Result<Vec<String>> {
        let mut offsets = self.view.offsets.lock();
        self.view.catch_up(&mut offsets)?;
        Ok(offsets.replay.groups())
    }

    /// A group's committed offsets and its lag on each partition (see
    /// [`Broker::group_offsets`](crate::Broker::group_offsets)).
    pub fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        let committed = {
            let mut offsets = self.view.offsets.lock();
            self.view.catch_up(&mut offsets)?;
            offsets.replay.group_offsets(group)
        };
        let live = self.view.writer_running()?;
        committed
            .into_iter()
            .map(|(tp, committed)| {
                let dir = broker::partition_dir(&self.view.dir, &tp.topic, tp.partition);
                Ok(GroupOffset::new(tp, committed, high_watermark(&dir, live)?))
            })
            .collect()
    }

    /// A reader of records as they are appended, with its own positions.
    pub fn follower(&self) -> Result<Follower> {
        Ok(Follower {
            view: self.view.clone(),
            watcher: Watcher::new().ctx("watch", &self.view.dir)?,
            partitions: Vec::new(),
            turn: 0,
            live: None,
        })
    }
}

impl View {
    /// Holds the readers file shared, if the writer made it: the writer publishes while any
    /// reader does.
    fn register(&self) -> Result<()> {
        let mut registered = self.registered.lock();
        if registered.is_some() {
            return Ok(());
        }
        let path = self.dir.join(READERS_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx("open", &path),
        };
        // The writer holds it exclusively only for a moment, while it looks.
        file.lock_shared().ctx("lock", &path)?;
        *registered = Some(file);
        Ok(())
    }

    fn writer_running(&self) -> Result<bool> {
        io::is_locked(&self.dir, LOCK_FILE)
    }

    fn topic(&self, name: &str) -> Result<(u32, TopicConfig)> {
        broker::registered_topics(&self.dir)?
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, partitions, config)| (partitions, config))
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> Result<PathBuf> {
        let (partitions, _) = self.topic(topic)?;
        if partition >= partitions {
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions,
            });
        }
        Ok(broker::partition_dir(&self.dir, topic, partition))
    }

    /// How far the log in `dir` may be read now.
    fn bound(&self, dir: &Path) -> Result<Bound> {
        self.register()?;
        Ok(bound(dir, self.writer_running()?))
    }

    /// Reads the offsets topic's commits appended since the last call.
    fn catch_up(&self, offsets: &mut OffsetsView) -> Result<()> {
        let dir = broker::partition_dir(&self.dir, OFFSETS_TOPIC, 0);
        let bound = self.bound(&dir)?;
        let OffsetsView { cursor, replay } = offsets;
        let cursor = cursor.get_or_insert_with(|| Cursor::new(dir, 0));
        let mut failed = None;
        cursor.walk(bound, |h, bytes| {
            let (batch, _) = Batch::parse(bytes).expect("checked by the cursor");
            match replay.batch(&batch) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some((h.base_offset, e));
                    false
                }
            }
        })?;
        match failed {
            None => Ok(()),
            // Read again next time (taking in its records again changes nothing): the error
            // stands until the batch is gone.
            Some((at, e)) => {
                cursor.seek(at);
                Err(e)
            }
        }
    }
}

fn bound(dir: &Path, live: bool) -> Bound {
    match live {
        // Nothing published yet: nothing to read yet.
        true => Bound::Below(follow::published_watermark(dir).unwrap_or(i64::MIN)),
        false => Bound::Whole,
    }
}

/// The first offset still on disk in the log in `dir`.
fn log_start(dir: &Path) -> Result<i64> {
    let first = follow::segment_bases(dir)?.first().copied().unwrap_or(0);
    Ok(crate::storage::recorded_log_start(dir).map_or(first, |recorded| recorded.max(first)))
}

/// The high watermark of the log in `dir`: the published one while a writer runs; the end of
/// the whole batches on disk otherwise.
fn high_watermark(dir: &Path, live: bool) -> Result<i64> {
    let start = log_start(dir)?;
    match bound(dir, live) {
        Bound::Below(hw) => Ok(hw.max(start)),
        Bound::Whole => {
            let bases = follow::segment_bases(dir)?;
            let from = bases.last().copied().unwrap_or(start);
            let mut cursor = Cursor::new(dir.to_path_buf(), from);
            cursor.walk(Bound::Whole, |_, _| true)?;
            Ok(cursor.next_offset().max(start))
        }
    }
}

/// The bytes and the number of the segment files of the log in `dir`.
fn segment_sizes(dir: &Path) -> Result<(u64, usize)> {
    let bases = follow::segment_bases(dir)?;
    let mut bytes = 0;
    for &base in &bases {
        let path = dir.join(format!("{}.log", crate::storage::segment::file_stem(base)));
        bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
    }
    Ok((bytes, bases.len()))
}

fn offset_for_timestamp(dir: &Path, bound: Bound, timestamp: i64) -> Result<Option<TimestampOffset>> {
    let mut cursor = Cursor::new(dir.to_path_buf(), 0);
    let mut found = None;
    let mut failed = None;
    cursor.walk(bound, |h, bytes| {
        if h.max_timestamp < timestamp {
            return true;
        }
        let (batch, _) = Batch::parse(bytes).expect("checked by the cursor");
        match batch.records() {
            Ok(records) => {
                for r in records.iter() {
                    match r {
                        Ok(r) if r.timestamp >= timestamp => {
                            found = Some(TimestampOffset {
                                offset: r.offset,
                                timestamp: r.timestamp,
                            });
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(Error::InvalidBatch(e));
                            break;
                        }
                    }
                }
            }
            Err(e) => failed = Some(Error::InvalidBatch(e)),
        }
        found.is_none() && failed.is_none()
    })?;
    failed.map_or(Ok(found), Err)
}

/// Reads records from partitions of a [`ReadOnlyBroker`] as the writer appends them. Each
/// follower keeps its own positions (a reader commits nothing: committing is writing).
///
/// [`poll`](Self::poll) returns what is new, or waits for it without a thread spinning: on
/// Linux it sleeps in inotify until the writer publishes a high watermark.
#[derive(Debug)]
pub struct Follower {
    view: Arc<View>,
    watcher: Watcher,
    partitions: Vec<Followed>,
    /// The partition read first by the next poll (each gets its turn to go first).
    turn: usize,
    /// Whether a writer runs, as last seen (`None`: to be looked at). Looked at again when
    /// the directory's entries or its readers file change (a writer starting writes it).
    live: Option<bool>,
}

#[derive(Debug)]
struct Followed {
    tp: TopicPartition,
    dir: PathBuf,
    cursor: Cursor,
    watermark: Watermark,
}

impl Follower {
    /// Follows one partition from `start` (replacing its position if it is followed already).
    pub fn assign(&mut self, topic: &str, partition: u32, start: StartAt) -> Result<()> {
        let dir = self.view.partition_dir(topic, partition)?;
        let bound = self.view.bound(&dir)?;
        let offset = match start {
            StartAt::Earliest => log_start(&dir)?,
            StartAt::Latest => high_watermark(&dir, bound != Bound::Whole)?,
            StartAt::Offset(offset) => offset,
            StartAt::Timestamp(ts) => match offset_for_timestamp(&dir, bound, ts)? {
                Some(found) => found.offset,
                None => high_watermark(&dir, bound != Bound::Whole)?,
            },
        };
        let tp = TopicPartition::new(topic, partition);
        match self.partitions.iter_mut().find(|f| f.tp == tp) {
            Some(f) => f.cursor.seek(offset),
            None => self.partitions.push(Followed {
                tp,
                cursor: Cursor::new(dir.clone(), offset),
                watermark: Watermark::new(&dir),
                dir,
            }),
        }
        Ok(())
    }

    /// Follows every partition the topic has now, from `start`.
    pub fn assign_topic(&mut self, topic: &str, start: StartAt) -> Result<()> {
        for partition in 0..self.view.topic(topic)?.0 {
            self.assign(topic, partition, start)?;
        }
        Ok(())
    }

    /// Moves a followed partition's position to `offset`.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        self.followed(topic, partition)?.cursor.seek(offset);
        Ok(())
    }

    /// The next offset the follower reads from a partition (`None`: not followed).
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.partitions
            .iter()
            .find(|f| f.tp.topic == topic && f.tp.partition == partition)
            .map(|f| f.cursor.next_offset())
    }

    /// The followed partitions, in the order they were assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.iter().map(|f| f.tp.clone()).collect()
    }

    fn followed(&mut self, topic: &str, partition: u32) -> Result<&mut Followed> {
        self.partitions
            .iter_mut()
            .find(|f| f.tp.topic == topic && f.tp.partition == partition)
            .ok_or_else(|| Error::NotAssigned {
                topic: topic.to_string(),
                partition,
            })
    }

    /// The records appended to the followed partitions since the last poll (up to about a
    /// MiB of each), waiting up to `timeout` for some. Control records of transactions are
    /// left out; records of aborted transactions are not (as a `read_uncommitted` consumer).
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<OwnedRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Watched before reading: a change after the read wakes the wait below. What
            // changed since the last look is taken first (a follower that always finds records
            // never waits, and must still notice a writer starting).
            let watched = self.watch();
            self.watcher.wait(Duration::ZERO).ctx("watch", &self.view.dir)?;
            self.take_changes();
            let live = match self.live {
                Some(live) => live,
                None => {
                    self.view.register()?;
                    *self.live.insert(self.view.writer_running()?)
                }
            };
            let mut out = Vec::new();
            let n = self.partitions.len();
            // Where each partition read stood: on an error nothing of this poll is lost, each
            // goes back there.
            let mut read = Vec::with_capacity(n);
            let mut failed = None;
            for i in 0..n {
                let k = (self.turn + i) % n;
                let f = &mut self.partitions[k];
                let from = f.cursor.next_offset();
                read.push((k, from));
                let bound = match live {
                    // Nothing published yet: nothing to read yet.
                    true => Bound::Below(f.watermark.read().unwrap_or(i64::MIN)),
                    false => Bound::Whole,
                };
                let copied = f
                    .cursor
                    .read(bound, FOLLOW_BYTES)
                    .and_then(|bytes| copy_records(&f.tp, Fetch::new(bytes, 0, 0), from, &mut out));
                if let Err(e) = copied {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                for (k, from) in read {
                    self.partitions[k].cursor.seek(from);
                }
                return Err(e);
            }
            self.turn = self.turn.wrapping_add(1);
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            // A path that could not be watched (other than one not there yet) is looked at
            // again soon rather than waited on.
            let wait = match watched {
                true => deadline - now,
                false => (deadline - now).min(Duration::from_millis(100)),
            };
            self.watcher.wait(wait).ctx("watch", &self.view.dir)?;
            self.take_changes();
        }
    }

    /// Acts on what the watcher reported: a writer may have started or stopped; a partition's
    /// directory changed (its watermark file and open segment may be other files now).
    fn take_changes(&mut self) {
        let root = &self.view.dir;
        // Both asked: each call takes its own report.
        let entries = self.watcher.changed(root);
        if self.watcher.changed(&root.join(READERS_FILE)) || entries {
            self.live = None;
        }
        for f in &mut self.partitions {
            if self.watcher.changed(&f.dir) {
                f.watermark.reopen();
                f.cursor.revalidate();
            }
        }
    }

    /// Watches what tells of new records: the writer's start and its readers file, each
    /// followed partition's watermark and segments. Paths missing now are watched once they
    /// exist (their directory's entries are watched). False if some could not be watched for
    /// another reason.
    fn watch(&mut self) -> bool {
        let root = self.view.dir.clone();
        let mut all = true;
        let mut watch = |path: &Path, what: Watch| match self.watcher.watch(path, what) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => all = false,
        };
        watch(&root, Watch::Entries);
        watch(&root.join(READERS_FILE), Watch::Writes);
        for f in &self.partitions {
            watch(&f.dir, Watch::Entries);
            watch(&f.dir.join(follow::WATERMARK_FILE), Watch::Writes);
        }
        all
    }
}

/// Copies the records of `fetch` at or after `from` (a position may fall inside a batch),
/// leaving out control batches.
fn copy_records(tp: &TopicPartition, fetch: Fetch, from: i64, out: &mut Vec<OwnedRecord>) -> Result<()> {
    for batch in fetch.batches() {
        if batch.header().is_control() {
            continue;
        }
        for r in batch.records().map_err(Error::InvalidBatch)?.iter() {
            let r = r.map_err(Error::InvalidBatch)?;
            if r.offset >= from {
                out.push(OwnedRecord::copy(&tp.topic, tp.partition, &r));
            }
        }
    }
    Ok(())
}
