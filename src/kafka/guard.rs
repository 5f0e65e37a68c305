//! A request's array counts, checked before the `kafka-protocol` crate decodes it.
//!
//! The crate's decoders size a vector from an array's count before reading any element, and
//! the count comes from the wire: twenty bytes claiming two billion topics would make the
//! process abort on a failed allocation, whatever the frame size limit. Every element takes at
//! least one byte, so this walk over the request's layout refuses any count larger than the
//! bytes left. It knows the layouts of the requests served, in the versions served (Kafka's
//! message schemas); `layouts_match_the_crates_encoders` checks it against the crate's own
//! encoders for every one of them.

use kafka_protocol::messages::ApiKey;

/// What a field is on the wire.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// So many bytes (integers, booleans, UUIDs).
    Fixed(usize),
    /// A string, nullable or not.
    Str,
    /// Bytes, nullable or not.
    Bytes,
    /// An array of structs.
    Array(&'static [Field]),
    /// An array of fixed-size values.
    FixedArray(usize),
    /// An array of strings.
    StrArray,
}

/// A field present in versions `from..=to`.
#[derive(Debug, Clone, Copy)]
struct Field {
    from: i16,
    to: i16,
    kind: Kind,
}

const fn all(kind: Kind) -> Field {
    Field {
        from: 0,
        to: i16::MAX,
        kind,
    }
}
const fn since(from: i16, kind: Kind) -> Field {
    Field {
        from,
        to: i16::MAX,
        kind,
    }
}
const fn until(to: i16, kind: Kind) -> Field {
    Field { from: 0, to, kind }
}
const fn between(from: i16, to: i16, kind: Kind) -> Field {
    Field { from, to, kind }
}

use Kind::{Array, Bytes, Fixed, FixedArray, Str, StrArray};

const PRODUCE: &[Field] = &[
    all(Str), // transactional id
    all(Fixed(2)),
    all(Fixed(4)),
    all(Array(&[
        until(12, Str),
        since(13, Fixed(16)),
        all(Array(&[all(Fixed(4)), all(Bytes)])),
    ])),
];

const FETCH_PARTITION: &[Field] = &[
    all(Fixed(4)),
    since(9, Fixed(4)),
    all(Fixed(8)),
    since(12, Fixed(4)),
    since(5, Fixed(8)),
    all(Fixed(4)),
];
const FETCH: &[Field] = &[
    until(14, Fixed(4)),
    all(Fixed(4)),
    all(Fixed(4)),
    all(Fixed(4)),
    all(Fixed(1)),
    since(7, Fixed(4)),
    since(7, Fixed(4)),
    all(Array(&[
        until(12, Str),
        since(13, Fixed(16)),
        all(Array(FETCH_PARTITION)),
    ])),
    since(
        7,
        Array(&[between(7, 12, Str), since(13, Fixed(16)), since(7, FixedArray(4))]),
    ),
    since(11, Str),
];

const LIST_OFFSETS: &[Field] = &[
    all(Fixed(4)),
    since(2, Fixed(1)),
    all(Array(&[
        all(Str),
        all(Array(&[all(Fixed(4)), since(4, Fixed(4)), all(Fixed(8))])),
    ])),
    since(10, Fixed(4)),
];

const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    since(3, Fixed(4)),
    all(Array(&[
        all(Str),
        all(Array(&[all(Fixed(4)), since(2, Fixed(4)), all(Fixed(4))])),
    ])),
];

const METADATA: &[Field] = &[
    all(Array(&[since(10, Fixed(16)), all(Str)])),
    since(4, Fixed(1)),
    between(8, 10, Fixed(1)),
    since(8, Fixed(1)),
];

const OFFSET_COMMIT: &[Field] = &[
    all(Str),
    all(Fixed(4)),
    all(Str),
    since(7, Str),
    until(4, Fixed(8)),
    all(Array(&[
        all(Str),
        all(Array(&[
            all(Fixed(4)),
            all(Fixed(8)),
            since(6, Fixed(4)),
            all(Str),
        ])),
    ])),
];

const OFFSET_FETCH: &[Field] = &[
    until(7, Str),
    until(7, Array(&[all(Str), all(FixedArray(4))])),
    since(7, Fixed(1)),
];

const FIND_COORDINATOR: &[Field] = &[until(3, Str), since(1, Fixed(1)), since(4, StrArray)];

const JOIN_GROUP: &[Field] = &[
    all(Str),
    all(Fixed(4)),
    since(1, Fixed(4)),
    all(Str),
    since(5, Str),
    all(Str),
    all(Array(&[all(Str), all(Bytes)])),
    since(8, Str),
];

const HEARTBEAT: &[Field] = &[all(Str), all(Fixed(4)), all(Str), since(3, Str)];

const LEAVE_GROUP: &[Field] = &[
    all(Str),
    until(2, Str),
    since(3, Array(&[all(Str), all(Str), since(5, Str)])),
];

const SYNC_GROUP: &[Field] = &[
    all(Str),
    all(Fixed(4)),
    all(Str),
    since(3, Str),
    since(5, Str),
    since(5, Str),
    all(Array(&[all(Str), all(Bytes)])),
];

const DESCRIBE_GROUPS: &[Field] = &[all(StrArray), since(3, Fixed(1))];

const DELETE_GROUPS: &[Field] = &[all(StrArray)];

const OFFSET_DELETE: &[Field] = &[all(Str), all(Array(&[all(Str), all(Array(&[all(Fixed(4))]))]))];

const LIST_GROUPS: &[Field] = &[since(4, StrArray), since(5, StrArray)];

const API_VERSIONS: &[Field] = &[since(3, Str), since(3, Str)];

const CREATE_TOPICS: &[Field] = &[
    all(Array(&[
        all(Str),
        all(Fixed(4)),
        all(Fixed(2)),
        all(Array(&[all(Fixed(4)), all(FixedArray(4))])),
        all(Array(&[all(Str), all(Str)])),
    ])),
    all(Fixed(4)),
    since(1, Fixed(1)),
];

const CREATE_PARTITIONS: &[Field] = &[
    all(Array(&[
        all(Str),
        all(Fixed(4)),
        all(Array(&[all(FixedArray(4))])),
    ])),
    all(Fixed(4)),
    all(Fixed(1)),
];

const DELETE_TOPICS: &[Field] = &[
    since(6, Array(&[all(Str), all(Fixed(16))])),
    until(5, StrArray),
    all(Fixed(4)),
];

const INIT_PRODUCER_ID: &[Field] = &[all(Str), all(Fixed(4)), since(3, Fixed(8)), since(3, Fixed(2))];

// Versions 0-3 (the transactional id, producer id and epoch, then what each names).
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    all(Str),
    all(Fixed(8)),
    all(Fixed(2)),
    all(Array(&[all(Str), all(FixedArray(4))])),
];
const ADD_OFFSETS_TO_TXN: &[Field] = &[all(Str), all(Fixed(8)), all(Fixed(2)), all(Str)];
const END_TXN: &[Field] = &[all(Str), all(Fixed(8)), all(Fixed(2)), all(Fixed(1))];
const TXN_OFFSET_COMMIT: &[Field] = &[
    all(Str),
    all(Str),
    all(Fixed(8)),
    all(Fixed(2)),
    since(3, Fixed(4)),
    since(3, Str),
    since(3, Str),
    all(Array(&[
        all(Str),
        all(Array(&[
            all(Fixed(4)),
            all(Fixed(8)),
            since(2, Fixed(4)),
            all(Str),
        ])),
    ])),
];
const DESCRIBE_TRANSACTIONS: &[Field] = &[all(StrArray)];
const LIST_TRANSACTIONS: &[Field] = &[all(StrArray), all(FixedArray(8)), since(1, Fixed(8))];

const DESCRIBE_CONFIGS: &[Field] = &[
    all(Array(&[all(Fixed(1)), all(Str), all(StrArray)])),
    all(Fixed(1)),
    since(3, Fixed(1)),
];

const ALTER_CONFIGS: &[Field] = &[
    all(Array(&[
        all(Fixed(1)),
        all(Str),
        all(Array(&[all(Str), all(Str)])),
    ])),
    all(Fixed(1)),
];

const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    all(Array(&[
        all(Fixed(1)),
        all(Str),
        all(Array(&[all(Str), all(Fixed(1)), all(Str)])),
    ])),
    all(Fixed(1)),
];

const DELETE_RECORDS: &[Field] = &[
    all(Array(&[all(Str), all(Array(&[all(Fixed(4)), all(Fixed(8))]))])),
    all(Fixed(4)),
];

const DESCRIBE_CLUSTER: &[Field] = &[all(Fixed(1)), since(1, Fixed(1)), since(2, Fixed(1))];

/// A topic's name and partitions (DescribeLogDirs, ListPartitionReassignments, ElectLeaders).
const TOPIC_PARTITIONS: &[Field] = &[all(Str), all(FixedArray(4))];

const DESCRIBE_LOG_DIRS: &[Field] = &[all(Array(TOPIC_PARTITIONS))];

const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[all(Fixed(4)), all(Array(TOPIC_PARTITIONS))];

const ELECT_LEADERS: &[Field] = &[since(1, Fixed(1)), all(Array(TOPIC_PARTITIONS)), all(Fixed(4))];

const ALTER_REPLICA_LOG_DIRS: &[Field] = &[all(Array(&[all(Str), all(Array(TOPIC_PARTITIONS))]))];

const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    all(Fixed(4)),
    all(Array(&[
        all(Str),
        all(Array(&[all(Fixed(4)), all(FixedArray(4))])),
    ])),
];

/// An ACL or an ACL filter: resource type, name, pattern type, principal, host, operation,
/// permission type.
const ACL: &[Field] = &[
    all(Fixed(1)),
    all(Str),
    all(Fixed(1)),
    all(Str),
    all(Str),
    all(Fixed(1)),
    all(Fixed(1)),
];

const DESCRIBE_ACLS: &[Field] = ACL;

const DESCRIBE_USER_SCRAM_CREDENTIALS: &[Field] = &[all(Array(&[all(Str)]))];

const ALTER_USER_SCRAM_CREDENTIALS: &[Field] = &[
    all(Array(&[all(Str), all(Fixed(1))])),
    all(Array(&[
        all(Str),
        all(Fixed(1)),
        all(Fixed(4)),
        all(Bytes),
        all(Bytes),
    ])),
];

const CREATE_ACLS: &[Field] = &[all(Array(ACL))];

const DELETE_ACLS: &[Field] = &[all(Array(ACL))];

fn layout(api: ApiKey) -> Option<&'static [Field]> {
    Some(match api {
        ApiKey::Produce => PRODUCE,
        ApiKey::Fetch => FETCH,
        ApiKey::ListOffsets => LIST_OFFSETS,
        ApiKey::OffsetForLeaderEpoch => OFFSET_FOR_LEADER_EPOCH,
        ApiKey::Metadata => METADATA,
        ApiKey::OffsetCommit => OFFSET_COMMIT,
        ApiKey::OffsetFetch => OFFSET_FETCH,
        ApiKey::FindCoordinator => FIND_COORDINATOR,
        ApiKey::JoinGroup => JOIN_GROUP,
        ApiKey::Heartbeat => HEARTBEAT,
        ApiKey::LeaveGroup => LEAVE_GROUP,
        ApiKey::SyncGroup => SYNC_GROUP,
        ApiKey::DescribeGroups => DESCRIBE_GROUPS,
        ApiKey::ListGroups => LIST_GROUPS,
        ApiKey::DeleteGroups => DELETE_GROUPS,
        ApiKey::OffsetDelete => OFFSET_DELETE,
        ApiKey::ApiVersions => API_VERSIONS,
        ApiKey::CreateTopics => CREATE_TOPICS,
        ApiKey::CreatePartitions => CREATE_PARTITIONS,
        ApiKey::DeleteTopics => DELETE_TOPICS,
        ApiKey::InitProducerId => INIT_PRODUCER_ID,
        ApiKey::AddPartitionsToTxn => ADD_PARTITIONS_TO_TXN,
        ApiKey::AddOffsetsToTxn => ADD_OFFSETS_TO_TXN,
        ApiKey::EndTxn => END_TXN,
        ApiKey::TxnOffsetCommit => TXN_OFFSET_COMMIT,
        ApiKey::DescribeTransactions => DESCRIBE_TRANSACTIONS,
        ApiKey::ListTransactions => LIST_TRANSACTIONS,
        ApiKey::DescribeConfigs => DESCRIBE_CONFIGS,
        ApiKey::AlterConfigs => ALTER_CONFIGS,
        ApiKey::IncrementalAlterConfigs => INCREMENTAL_ALTER_CONFIGS,
        ApiKey::DeleteRecords => DELETE_RECORDS,
        ApiKey::DescribeCluster => DESCRIBE_CLUSTER,
        ApiKey::DescribeLogDirs => DESCRIBE_LOG_DIRS,
        ApiKey::ListPartitionReassignments => LIST_PARTITION_REASSIGNMENTS,
        ApiKey::ElectLeaders => ELECT_LEADERS,
        ApiKey::AlterReplicaLogDirs => ALTER_REPLICA_LOG_DIRS,
        ApiKey::AlterPartitionReassignments => ALTER_PARTITION_REASSIGNMENTS,
        ApiKey::DescribeAcls => DESCRIBE_ACLS,
        ApiKey::CreateAcls => CREATE_ACLS,
        ApiKey::DeleteAcls => DELETE_ACLS,
        ApiKey::DescribeUserScramCredentials => DESCRIBE_USER_SCRAM_CREDENTIALS,
        ApiKey::AlterUserScramCredentials => ALTER_USER_SCRAM_CREDENTIALS,
        _ => return None,
    })
}

/// Refuses a request body (after its header) with an array count larger than the bytes that
/// follow it. An API without a known layout is refused: nothing unchecked reaches a decoder.
pub(super) fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    walk(api, version, body).map(drop)
}

/// The walk of [`check`]: how many bytes the request's fields take.
fn walk(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let layout = layout(api).ok_or_else(|| format!("no layout for {api:?}"))?;
    let mut walk = Walk {
        buf: body,
        at: 0,
        version,
        // Flexible versions have the second request header (KIP-482).
        flexible: api.request_header_version(version) >= 2,
    };
    walk.fields(layout)
        .map_err(|why| format!("{api:?} v{version}: {why}"))?;
    Ok(walk.at)
}

struct Walk<'a> {
    buf: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
}

type Step = Result<(), String>;

impl Walk<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.left() {
            return Err(format!("{n} bytes needed, {} left", self.left()));
        }
        self.at += n;
        Ok(&self.buf[self.at - n..self.at])
    }

    fn uvarint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..5 {
            let b = self.take(1)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".to_string())
    }

    /// A length or count: compact (varint, plus one; 0 is null) or fixed-width (-1 is null).
    /// `None` for null.
    fn length(&mut self, width: usize) -> Result<Option<usize>, String> {
        if self.flexible {
            return Ok(self.uvarint()?.checked_sub(1).map(|n| n as usize));
        }
        let b = self.take(width)?;
        let n = if width == 2 {
            i64::from(i16::from_be_bytes([b[0], b[1]]))
        } else {
            i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(format!("a negative length {n}")),
            n => Ok(Some(n as usize)),
        }
    }

    /// An array's count, refused if the bytes left cannot hold that many elements.
    fn count(&mut self, element_bytes: usize) -> Result<usize, String> {
        let n = self.length(4)?.unwrap_or(0);
        if n.saturating_mul(element_bytes) > self.left() {
            return Err(format!("an array of {n} elements in {} bytes", self.left()));
        }
        Ok(n)
    }

    fn fields(&mut self, fields: &[Field]) -> Step {
        for f in fields {
            if (f.from..=f.to).contains(&self.version) {
                self.field(f.kind)?;
            }
        }
        if self.flexible {
            // Tagged fields: a plain count (not plus one), then each a tag, a size and that
            // many bytes (two bytes at least).
            let n = self.uvarint()? as usize;
            if n.saturating_mul(2) > self.left() {
                return Err(format!("{n} tagged fields in {} bytes", self.left()));
            }
            for _ in 0..n {
                self.uvarint()?;
                let size = self.uvarint()? as usize;
                self.take(size)?;
            }
        }
        Ok(())
    }

    fn field(&mut self, kind: Kind) -> Step {
        match kind {
            Fixed(n) => self.take(n).map(drop),
            Str => {
                let n = self.length(2)?.unwrap_or(0);
                self.take(n).map(drop)
            }
            Bytes => {
                let n = self.length(4)?.unwrap_or(0);
                self.take(n).map(drop)
            }
            Array(fields) => {
                for _ in 0..self.count(1)? {
                    self.fields(fields)?;
                }
                Ok(())
            }
            FixedArray(size) => {
                let n = self.count(size)?;
                self.take(n * size).map(drop)
            }
            StrArray => {
                for _ in 0..self.count(1)? {
                    self.field(Str)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes as Buf, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;
    use crate::kafka::API_VERSIONS as SERVED;

    fn s(text: &'static str) -> StrBytes {
        StrBytes::from_static_str(text)
    }

    /// A request of `api` at `version` with every array holding an element (or two), using
    /// the fields that version has.
    fn sample(api: ApiKey, v: i16) -> BytesMut {
        let mut out = BytesMut::new();
        let topic = || TopicName(s("topic"));
        let result = match api {
            ApiKey::Produce => ProduceRequest::default()
                .with_transactional_id(None)
                .with_topic_data(vec![
                    produce_request::TopicProduceData::default()
                        .with_name(topic())
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_records(Some(Buf::from_static(b"abc"))),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::Fetch => {
                let mut r = FetchRequest::default().with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![fetch_request::FetchPartition::default(); 2]),
                ]);
                if v >= 7 {
                    r = r.with_forgotten_topics_data(vec![
                        fetch_request::ForgottenTopic::default()
                            .with_topic(topic())
                            .with_partitions(vec![1, 2]),
                    ]);
                }
                if v >= 12 {
                    r = r.with_cluster_id(Some(s("c")));
                }
                r.encode(&mut out, v)
            }
            ApiKey::ListOffsets => ListOffsetsRequest::default()
                .with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
                ])
                .encode(&mut out, v),
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default()
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                            2
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::Metadata => MetadataRequest::default()
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                ]))
                .encode(&mut out, v),
            ApiKey::OffsetCommit => OffsetCommitRequest::default()
                .with_group_instance_id(None)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_metadata(Some(s("m"))),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::OffsetFetch => OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0, 1]),
                ]))
                .encode(&mut out, v),
            ApiKey::FindCoordinator => FindCoordinatorRequest::default()
                .with_key(s("g"))
                .encode(&mut out, v),
            ApiKey::JoinGroup => JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_group_instance_id(None)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Buf::from_static(b"meta")),
                ])
                .encode(&mut out, v),
            ApiKey::Heartbeat => HeartbeatRequest::default()
                .with_group_instance_id(None)
                .encode(&mut out, v),
            ApiKey::LeaveGroup => {
                let mut r = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
                if v >= 3 {
                    r = r.with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(s("m"))
                            .with_group_instance_id(None)
                            .with_reason(None),
                    ]);
                } else {
                    r = r.with_member_id(s("m"));
                }
                r.encode(&mut out, v)
            }
            ApiKey::SyncGroup => SyncGroupRequest::default()
                .with_group_instance_id(None)
                .with_protocol_type(None)
                .with_protocol_name(None)
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m"))
                        .with_assignment(Buf::from_static(b"a")),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeGroups => DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(s("a")), GroupId(s("b"))])
                .encode(&mut out, v),
            ApiKey::ListGroups => {
                let mut r = ListGroupsRequest::default();
                if v >= 4 {
                    r = r.with_states_filter(vec![s("Stable")]);
                }
                if v >= 5 {
                    r = r.with_types_filter(vec![s("classic"), s("consumer")]);
                }
                r.encode(&mut out, v)
            }
            ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut out, v),
            ApiKey::CreateTopics => CreateTopicsRequest::default()
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic())
                        .with_assignments(vec![
                            create_topics_request::CreatableReplicaAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])
                        .with_configs(vec![
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("1000"))),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::CreatePartitions => CreatePartitionsRequest::default()
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic())
                        .with_count(3)
                        .with_assignments(Some(vec![
                            create_partitions_request::CreatePartitionsAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])),
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic())
                        .with_assignments(None),
                ])
                .encode(&mut out, v),
            ApiKey::OffsetDelete => OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::DeleteGroups => DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("g")), GroupId(s("h"))])
                .encode(&mut out, v),
            ApiKey::DeleteTopics => {
                let mut r = DeleteTopicsRequest::default();
                if v >= 6 {
                    r = r.with_topics(vec![
                        delete_topics_request::DeleteTopicState::default().with_name(Some(topic())),
                    ]);
                } else {
                    r = r.with_topic_names(vec![topic(), topic()]);
                }
                r.encode(&mut out, v)
            }
            ApiKey::InitProducerId => InitProducerIdRequest::default()
                .with_transactional_id(None)
                .encode(&mut out, v),
            ApiKey::AddPartitionsToTxn => AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("t")))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![0, 1]),
                ])
                .encode(&mut out, v),
            ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("t")))
                .with_group_id(GroupId(s("g")))
                .encode(&mut out, v),
            ApiKey::EndTxn => EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("t")))
                .encode(&mut out, v),
            ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("t")))
                .with_group_id(GroupId(s("g")))
                .with_member_id(if v >= 3 { s("m") } else { s("") })
                .with_group_instance_id(if v >= 3 { Some(s("i")) } else { None })
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_committed_metadata(Some(s("meta"))),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeTransactions => DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("t")), TransactionalId(s("u"))])
                .encode(&mut out, v),
            ApiKey::ListTransactions => ListTransactionsRequest::default()
                .with_state_filters(vec![s("Ongoing")])
                .with_producer_id_filters(vec![ProducerId(7)])
                .encode(&mut out, v),
            ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("topic"))
                        .with_configuration_keys(Some(vec![s("retention.ms")])),
                ])
                .encode(&mut out, v),
            ApiKey::DeleteRecords => DeleteRecordsRequest::default()
                .with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()]),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut out, v),
            ApiKey::AlterConfigs => AlterConfigsRequest::default()
                .with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("topic"))
                        .with_configs(vec![
                            alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("1000"))),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("topic"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_config_operation(1)
                                .with_value(None),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::default()
                .with_topics(Some(vec![
                    describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![0, 1]),
                ]))
                .encode(&mut out, v),
            ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::default()
                .with_topics(Some(vec![
                    list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ]))
                .encode(&mut out, v),
            ApiKey::ElectLeaders => ElectLeadersRequest::default()
                .with_topic_partitions(Some(vec![
                    elect_leaders_request::TopicPartitions::default()
                        .with_topic(topic())
                        .with_partitions(vec![0, 1]),
                ]))
                .encode(&mut out, v),
            ApiKey::AlterReplicaLogDirs => AlterReplicaLogDirsRequest::default()
                .with_dirs(vec![
                    alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                        .with_path(s("/data"))
                        .with_topics(vec![
                            alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                                .with_name(topic())
                                .with_partitions(vec![0, 1]),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_replicas(Some(vec![BrokerId(0), BrokerId(1)])),
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(1)
                                .with_replicas(None),
                        ]),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeAcls => DescribeAclsRequest::default()
                .with_resource_name_filter(Some(s("topic")))
                .with_principal_filter(Some(s("User:me")))
                .with_host_filter(None)
                .encode(&mut out, v),
            ApiKey::CreateAcls => CreateAclsRequest::default()
                .with_creations(vec![
                    create_acls_request::AclCreation::default()
                        .with_resource_name(s("topic"))
                        .with_principal(s("User:me"))
                        .with_host(s("*")),
                ])
                .encode(&mut out, v),
            ApiKey::DeleteAcls => DeleteAclsRequest::default()
                .with_filters(vec![
                    delete_acls_request::DeleteAclsFilter::default().with_resource_name_filter(Some(s("t"))),
                ])
                .encode(&mut out, v),
            ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::default()
                .with_users(Some(vec![
                    describe_user_scram_credentials_request::UserName::default().with_name(s("alice")),
                ]))
                .encode(&mut out, v),
            ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::default()
                .with_deletions(vec![
                    alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                        .with_name(s("bob"))
                        .with_mechanism(1),
                ])
                .with_upsertions(vec![
                    alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                        .with_name(s("alice"))
                        .with_mechanism(2)
                        .with_iterations(8192)
                        .with_salt(bytes::Bytes::from_static(b"salt"))
                        .with_salted_password(bytes::Bytes::from_static(b"salted")),
                ])
                .encode(&mut out, v),
            other => panic!("no sample for {other:?}"),
        };
        result.unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        out
    }

    #[test]
    fn layouts_match_the_crates_encoders() {
        for &(api, min, max) in SERVED {
            for v in min..=max {
                if api == ApiKey::Produce && v < crate::kafka::produce::FIRST_DECODED_VERSION {
                    continue; // answered by hand, never decoded
                }
                let body = sample(api, v);
                let used = walk(api, v, &body).unwrap_or_else(|e| panic!("a good request refused: {e}"));
                assert_eq!(
                    used,
                    body.len(),
                    "{api:?} v{v}: the walk ends where the request does"
                );
                if !body.is_empty() {
                    check(api, v, &body[..body.len() - 1]).expect_err("a truncated request");
                }
            }
        }
    }

    #[test]
    fn impossible_counts_are_refused_before_any_decoding() {
        // Metadata v0: a topic array claiming 2^31 - 1 topics in a 4-byte body.
        assert!(check(ApiKey::Metadata, 0, &[0x7f, 0xff, 0xff, 0xff]).is_err());
        // Flexible Metadata v9: a compact count of 2^28 with nothing after it.
        assert!(check(ApiKey::Metadata, 9, &[0x81, 0x80, 0x80, 0x80, 0x01]).is_err());
        // Fetch v7: forgotten-topic partitions, four bytes each, more than the bytes left.
        let mut fetch = vec![0u8; 4 + 4 + 4 + 4 + 1 + 4 + 4];
        fetch.extend_from_slice(&0i32.to_be_bytes()); // no topics
        fetch.extend_from_slice(&1i32.to_be_bytes()); // one forgotten topic
        fetch.extend_from_slice(&1i16.to_be_bytes());
        fetch.push(b't');
        fetch.extend_from_slice(&3i32.to_be_bytes()); // three partitions...
        fetch.extend_from_slice(&[0; 8]); // ...in eight bytes
        assert!(check(ApiKey::Fetch, 7, &fetch).is_err());
        fetch.extend_from_slice(&[0; 4]);
        assert!(check(ApiKey::Fetch, 7, &fetch).is_ok());
    }
}
