//! The APIs served and their versions: what ApiVersions advertises is exactly this table.

use std::ops::RangeInclusive;

use bytes::{BufMut, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

/// Every API served, with the versions served: (key, lowest, highest).
///
/// The lowest versions reach back to what librdkafka 2.0 (Debian's kcat) looks for before it
/// enables consumer groups: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and FindCoordinator
/// from v0. Produce is advertised from v0 for the same reason; versions 0 to 2 (message sets
/// before RecordBatch v2) are answered with `UNSUPPORTED_VERSION` per partition.
pub const API_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The versions of `api` served, if it is served.
pub(super) fn served(api: ApiKey) -> Option<RangeInclusive<i16>> {
    API_VERSIONS
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| min..=max)
}

fn table() -> Vec<ApiVersion> {
    API_VERSIONS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub(super) fn api_versions(_request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(table())
}

/// The reply to an ApiVersions request of a version not served: a v0 response with
/// `UNSUPPORTED_VERSION` and the table, as Kafka sends it, so the client can pick a version.
pub(super) fn unsupported_version(correlation: i32) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(correlation);
    out.put_i16(ResponseError::UnsupportedVersion.code());
    let table = table();
    out.put_i32(table.len() as i32);
    for v in &table {
        out.put_i16(v.api_key);
        out.put_i16(v.min_version);
        out.put_i16(v.max_version);
    }
    out
}
