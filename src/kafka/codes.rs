//! Kafka's error code for each of rivulet's errors.

use kafka_protocol::error::ResponseError as E;

use crate::error::{BatchError, Error, ProducerError};

/// The error code a Kafka client expects for `e`.
pub(super) fn code(e: &Error) -> i16 {
    let kind = match e {
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => E::UnknownTopicOrPartition,
        Error::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        Error::BatchTooLarge { .. } => E::MessageTooLarge,
        Error::InvalidBatch(BatchError::CrcMismatch { .. }) => E::CorruptMessage,
        Error::InvalidBatch(_) | Error::KeyRequired { .. } => E::InvalidRecord,
        Error::InvalidTopicName { .. } => E::InvalidTopicException,
        Error::TopicExists { .. } => E::TopicAlreadyExists,
        Error::InvalidPartitions { .. } => E::InvalidPartitions,
        Error::InvalidConfig { .. } => E::InvalidConfig,
        Error::InvalidReplicationFactor { .. } => E::InvalidReplicationFactor,
        Error::InvalidReplicaAssignment { .. } => E::InvalidReplicaAssignment,
        Error::InvalidTimestamp { .. } => E::InvalidTimestamp,
        Error::UnknownMember { .. } => E::UnknownMemberId,
        Error::IllegalGeneration { .. } => E::IllegalGeneration,
        Error::RebalanceInProgress { .. } => E::RebalanceInProgress,
        Error::CoordinatorNotAvailable { .. } => E::CoordinatorNotAvailable,
        Error::NotCoordinator { .. } => E::NotCoordinator,
        Error::FencedInstanceId { .. } => E::FencedInstanceId,
        Error::InconsistentGroupProtocol { .. } => E::InconsistentGroupProtocol,
        Error::NoSuchGroup { .. } => E::GroupIdNotFound,
        Error::GroupNotEmpty { .. } => E::NonEmptyGroup,
        Error::GroupSubscribedToTopic { .. } => E::GroupSubscribedToTopic,
        Error::InvalidGroupRequest(_) => E::InvalidRequest,
        Error::InvalidGroupId { .. } => E::InvalidGroupId,
        Error::OffsetMetadataTooLarge { .. } => E::OffsetMetadataTooLarge,
        Error::ProducerFenced { .. } => E::ProducerFenced,
        Error::InvalidTxnState { .. } => E::InvalidTxnState,
        Error::ConcurrentTransactions { .. } => E::ConcurrentTransactions,
        Error::InvalidProducerIdMapping { .. } => E::InvalidProducerIdMapping,
        Error::InvalidTransactionTimeout { .. } => E::InvalidTransactionTimeout,
        Error::UnstableOffsets { .. } => E::UnstableOffsetCommit,
        Error::Producer { error, .. } => match error {
            ProducerError::OldEpoch { .. } => E::InvalidProducerEpoch,
            ProducerError::OutOfOrder { .. } => E::OutOfOrderSequenceNumber,
            // As Kafka answers a produce whose transaction it could not verify: retriable.
            ProducerError::Unverified(_) => E::NotEnoughReplicas,
            _ => E::InvalidTxnState,
        },
        Error::Io { .. }
        | Error::Poisoned { .. }
        | Error::ChecksumMismatch { .. }
        | Error::CorruptSegment { .. }
        | Error::Truncated { .. }
        | Error::OffsetMismatch { .. } => E::KafkaStorageError,
        // Replication did not answer in time (no leader, a lost quorum): the outcome is
        // unknown, and a client retries (an idempotent one without duplicating).
        Error::Cluster { .. } => E::RequestTimedOut,
        _ => E::UnknownServerError,
    };
    kind.code()
}
