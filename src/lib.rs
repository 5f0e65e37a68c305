//! # rivulet
//!
//! An embeddable event log: what SQLite is to a database server, rivulet is to Kafka. An
//! application links it in and gets Kafka's model (topics, partitions, offsets, consumer
//! groups, retention, compaction) over a segmented append-only log on local disk, with no
//! server to run.
//!
//! ## Layers
//!
//! ```text
//!   kafka (feature)              the Kafka wire protocol, served from the layers below
//!   cluster (feature)            partitions replicated between instances (Raft)
//!   Producer  Consumer  group    the embedded API: a batching producer; consumers that are
//!                                assigned partitions or join groups (Kafka's group protocol,
//!                                shared with Kafka clients); committed offsets
//!   Broker                       topics, the data directory, background work
//!   storage                      one partition's log
//! ```
//!
//! A [`Broker`] owns a data directory of topics; a [`Producer`] sends records to them (keyed
//! records partitioned as Kafka's Java client does, records of many threads batched together);
//! a [`Consumer`] reads assigned partitions, or subscribes as a member of a group whose
//! partitions the members share ([`Assignor`]), and commits the group's offsets to
//! `__consumer_offsets`.
//!
//! The [`storage`] layer is one partition's log, knowing nothing of topics, groups or
//! networks, and usable on its own ([`storage::PartitionLog`]):
//!
//! - batches in Kafka's RecordBatch v2 format, on disk and on the wire alike
//!   ([`storage::BatchBuilder`], [`storage::Batch`], [`storage::RecordBatch`]);
//! - segments with Kafka's `.log`, `.index` and `.timeindex` files, rolled on size and age;
//! - durability as a stated policy ([`Fsync`]) with group commit, a high watermark that only
//!   covers durable records, and poisoning after a failed fsync;
//! - crash recovery that truncates a torn tail and never returns a record that failed its CRC;
//! - retention by age and size, compaction, truncation, and `delete_records_before`.
//!
//! The on-disk format and the write, truncation and recovery paths are specified in
//! `docs/format.md`.
//!
//! ## Quickstart
//!
//! ```
//! use std::time::Duration;
//! use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::open(dir.path())?;
//! broker.create_topic("meters", 3, TopicConfig::default())?; // fsync per append by default
//!
//! let producer = Producer::new(&broker); // share it: records from many threads share batches
//! let sent = producer.send(ProducerRecord::new("meters", b"2.3 kVA").key(b"house-7"))?;
//!
//! let config = ConsumerConfig::default().group_id("alerts").auto_offset_reset(OffsetReset::Earliest);
//! let mut consumer = Consumer::new(&broker, config);
//! consumer.subscribe(["meters"])?; // joins group "alerts"; members share the partitions
//! let mut received = Vec::new();
//! while received.is_empty() {
//!     for record in consumer.poll(Duration::from_secs(1))?.iter() {
//!         received.push((record.partition, record.offset, record.value.map(<[u8]>::to_vec)));
//!     }
//! }
//! assert_eq!(received, [(sent.partition, sent.offset, Some(b"2.3 kVA".to_vec()))]);
//! consumer.commit()?; // a restarted consumer of the group resumes after these
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
//! | `kafka`  | no      | the Kafka wire protocol ([`kafka::serve`], `tokio`, `kafka-protocol`) and `examples/broker.rs` |
//! | `cluster`| no      | replication of partitions between instances ([`cluster`], `openraft`) |
//!
//! A batch that uses a codec left out of the build is a clear error
//! ([`BatchError::CodecDisabled`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod asynchronous;
mod broker;
#[cfg(feature = "cluster")]
pub mod cluster;
mod config;
mod consumer;
mod error;
pub mod group;
#[cfg(feature = "kafka")]
pub mod kafka;
mod producer;
mod read_only;
mod record;
pub mod retry;
pub mod storage;
pub mod telemetry;
mod transactional;
pub mod txn;
mod typed;

#[cfg(feature = "tokio")]
pub use asynchronous::AsyncConsumer;
pub use broker::{
    Broker, BrokerBuilder, GroupOffset, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN, PartitionDescription,
    TopicDescription, validate_topic_name,
};
pub use config::{CleanupPolicy, CompressionType, DEFAULT_MAX_MESSAGE_BYTES, Fsync, LogConfig, TopicConfig};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, ConsumerRecords, ConsumerRecordsIter, IsolationLevel,
    OffsetReset, RebalanceListener, TopicPartition, Wakeup,
};
pub use error::{BatchError, Error, ProducerError, Result};
// Types the consumer's and the broker's methods take and return, also at the root.
pub use group::{Assignor, GroupDescription, GroupState, OffsetAndMetadata};
pub use producer::{
    DefaultPartitioner, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata, SendFuture,
    murmur2,
};
pub use read_only::{Follower, ReadOnlyBroker, StartAt};
pub use record::{Consumed, OwnedRecord};
pub use storage::TimestampOffset;
pub use storage::{Header, Headers, OwnedHeader};
pub use transactional::{DEFAULT_TRANSACTION_TIMEOUT, Transaction, TransactionalProducer};
#[cfg(feature = "json")]
pub use typed::Json;
pub use typed::{
    BigEndian, Deserializer, OnDecodeError, Raw, Serializer, TypedConsumer, TypedProducer, TypedRecord, Utf8,
};
