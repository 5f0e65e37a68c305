//! # rivulet
//!
//! An embeddable event log: what SQLite is to a database server, rivulet is to Kafka. An
//! application links it in and gets Kafka's model over a segmented append-only log on local
//! disk, with no server to run.
//!
//! ## Layers
//!
//! ```text
//!   Producer  Consumer  group  admin      the embedded API (group coordination to come)
//!   Broker                                topics, the data directory
//!   storage                               one partition's log
//! ```
//!
//! A [`Broker`] owns a data directory of topics; a [`Producer`] sends records to them (keyed
//! records partitioned as Kafka's Java client does, records of many threads batched together);
//! a [`Consumer`] reads assigned partitions and commits its group's offsets to
//! `__consumer_offsets`.
//!
//! The [`storage`] layer is one partition's log, knowing nothing of topics, groups or
//! networks:
//!
//! - batches in Kafka's RecordBatch v2 format, on disk and on the wire alike
//!   ([`storage::BatchBuilder`], [`storage::Batch`], [`storage::RecordBatch`]);
//! - segments with Kafka's `.log`, `.index` and `.timeindex` files, rolled on size and age;
//! - durability as a stated policy ([`Fsync`]) with group commit, a high watermark that only
//!   covers durable records, and poisoning after a failed fsync;
//! - crash recovery that truncates a torn tail and never returns a record that failed its CRC;
//! - retention by age and size, truncation, and `delete_records_before`.
//!
//! The on-disk format and the write and recovery paths are specified in `docs/format.md`.
//!
//! ## Quickstart
//!
//! ```
//! use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
//! use rivulet::{Fsync, LogConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let log = PartitionLog::open(dir.path(), LogConfig::default().fsync(Fsync::Always))?;
//!
//! let mut batch = BatchBuilder::new(Compression::None);
//! batch.push(1_700_000_000_000, Some(b"sensor-1"), Some(b"21.5"), &[("unit", Some(b"C"))]);
//! batch.push(1_700_000_001_000, Some(b"sensor-2"), Some(b"19.0"), &[]);
//! let info = log.append(batch.finish()?)?; // returns once fdatasync has
//! assert_eq!((info.base_offset, info.last_offset), (0, 1));
//!
//! let mut reader = log.reader(0);
//! while let Some(record) = reader.next()? {
//!     println!("{} {:?} = {:?}", record.offset, record.key, record.value);
//! }
//! let at = log.offset_for_timestamp(1_700_000_000_500)?.unwrap();
//! assert_eq!(at.offset, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//!
//! | feature  | default | what                                   |
//! |----------|---------|----------------------------------------|
//! | `gzip`   | yes     | gzip batches (`flate2`)                |
//! | `snappy` | yes     | snappy batches (`snap`)                |
//! | `lz4`    | yes     | LZ4 frame batches (`lz4_flex`)         |
//! | `zstd`   | yes     | zstd batches (`zstd`)                  |
//!
//! A batch that uses a codec left out of the build is a clear error
//! ([`BatchError::CodecDisabled`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod broker;
mod config;
mod consumer;
mod error;
pub mod group;
#[cfg(feature = "kafka")]
pub mod kafka;
mod producer;
pub mod storage;

pub use broker::{
    Broker, BrokerBuilder, GroupOffset, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN, PartitionDescription,
    TopicDescription, validate_topic_name,
};
pub use config::{CleanupPolicy, CompressionType, DEFAULT_MAX_MESSAGE_BYTES, Fsync, LogConfig, TopicConfig};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, ConsumerRecords, ConsumerRecordsIter, OffsetReset,
    RebalanceListener, TopicPartition,
};
pub use error::{BatchError, Error, Result};
pub use producer::{DefaultPartitioner, Partitioner, Producer, ProducerRecord, RecordMetadata, murmur2};
