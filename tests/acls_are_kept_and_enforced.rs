//! ACLs, as Kafka's authorizer keeps and applies them with `allow.everyone.if.no.acl.found`:
//! created, described and deleted over the wire, kept across restarts, and applied to every
//! request on a resource they name (a DENY wins; once a resource is named, only what is allowed
//! is), while resources no ACL names stay open to every client.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use wire::ask;

use bytes::Bytes;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rivulet::kafka::ServerConfig;
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

// Kafka's codes: resource types, pattern types, operations, permissions, errors.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const READ: i8 = 3;
const WRITE: i8 = 4;
const ALL: i8 = 2;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const INVALID_REQUEST: i16 = 42;

fn with_acls() -> ServerConfig {
    ServerConfig::default().acls(true)
}

fn text(t: &'static str) -> StrBytes {
    StrBytes::from_static_str(t)
}

fn acl(kind: i8, name: &'static str, principal: &'static str, operation: i8, permission: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(kind)
        .with_resource_name(text(name))
        .with_resource_pattern_type(LITERAL)
        .with_principal(text(principal))
        .with_host(text("*"))
        .with_operation(operation)
        .with_permission_type(permission)
}

async fn create(s: &mut TcpStream, acls: Vec<AclCreation>) -> Vec<i16> {
    let reply: CreateAclsResponse = ask(
        s,
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default().with_creations(acls),
    )
    .await;
    reply.results.iter().map(|r| r.error_code).collect()
}

async fn produce(s: &mut TcpStream, topic: &'static str) -> i16 {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1_000, Some(b"k"), Some(b"v"), &[]);
    let records = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    let reply: ProduceResponse = ask(s, ApiKey::Produce, 9, &wire::produce_request(topic, records)).await;
    reply.responses[0].partition_responses[0].error_code
}

async fn fetch(s: &mut TcpStream, topic: &'static str) -> i16 {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1 << 20)]),
        ]);
    let reply: FetchResponse = ask(s, ApiKey::Fetch, 12, &request).await;
    reply.responses[0].partitions[0].error_code
}

async fn metadata(s: &mut TcpStream, topic: &'static str) -> i16 {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(text(topic)))),
        ]))
        .with_allow_auto_topic_creation(false);
    let reply: MetadataResponse = ask(s, ApiKey::Metadata, 9, &request).await;
    reply.topics[0].error_code
}

async fn find_coordinator(s: &mut TcpStream, group: &'static str) -> i16 {
    let request = FindCoordinatorRequest::default().with_key(text(group));
    let reply: FindCoordinatorResponse = ask(s, ApiKey::FindCoordinator, 3, &request).await;
    reply.error_code
}

#[tokio::test]
async fn acls_decide_what_clients_may_do_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    broker.create_topic("u", 1, TopicConfig::default()).unwrap();
    let (addr, stop) = wire::serve(&broker, with_acls()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;

    // No ACLs: everything is open.
    assert_eq!(produce(c, "t").await, 0);
    assert_eq!(find_coordinator(c, "g").await, 0);

    // An invalid ACL (a MATCH pattern) is refused alone; the valid ones are kept.
    let mut bad = acl(TOPIC, "t", "User:*", READ, ALLOW);
    bad.resource_pattern_type = MATCH;
    let created = create(
        c,
        vec![
            acl(TOPIC, "t", "User:*", WRITE, DENY),
            bad,
            acl(TOPIC, "t", "User:ANONYMOUS", READ, ALLOW),
            acl(GROUP, "g", "User:*", ALL, DENY),
        ],
    )
    .await;
    assert_eq!(created, [0, INVALID_REQUEST, 0, 0]);

    // Topic t: WRITE denied, READ allowed (and DESCRIBE with it); topic u, named by no ACL,
    // stays open. Nothing denied is written.
    assert_eq!(produce(c, "t").await, TOPIC_DENIED);
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 1);
    assert_eq!(fetch(c, "t").await, 0);
    assert_eq!(metadata(c, "t").await, 0);
    assert_eq!(produce(c, "u").await, 0);
    // What the client may do on t, when it asks: READ, and DESCRIBE with it.
    let asked = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(text("t")))),
        ]))
        .with_allow_auto_topic_creation(false)
        .with_include_topic_authorized_operations(true);
    let reply: MetadataResponse = ask(c, ApiKey::Metadata, 9, &asked).await;
    assert_eq!(
        reply.topics[0].topic_authorized_operations,
        (1 << READ) | (1 << 8)
    );
    // Group g: everything denied.
    assert_eq!(find_coordinator(c, "g").await, GROUP_DENIED);
    assert_eq!(find_coordinator(c, "h").await, 0);

    // The ACLs on t, found by a MATCH filter.
    let described: DescribeAclsResponse = ask(
        c,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(TOPIC)
            .with_resource_name_filter(Some(text("t")))
            .with_pattern_type_filter(MATCH)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(ANY)
            .with_permission_type(ANY),
    )
    .await;
    assert_eq!(described.error_code, 0);
    let mut found: Vec<(i8, i8)> = described.resources[0]
        .acls
        .iter()
        .map(|a| (a.operation, a.permission_type))
        .collect();
    found.sort_unstable();
    assert_eq!(found, [(READ, ALLOW), (WRITE, DENY)]);

    // Kept across a restart: the broker reopened from its directory.
    drop(stop);
    let broker = wire::reopen(broker, dir.path()).await;
    let (addr, stop) = wire::serve(&broker, with_acls()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    assert_eq!(produce(c, "t").await, TOPIC_DENIED);
    assert_eq!(find_coordinator(c, "g").await, GROUP_DENIED);

    // Deleting the READ ALLOW leaves t named by the DENY alone: now READ is denied too.
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(TOPIC)
        .with_resource_name_filter(Some(text("t")))
        .with_pattern_type_filter(LITERAL)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(READ)
        .with_permission_type(ANY);
    let deleted: DeleteAclsResponse = ask(
        c,
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![filter]),
    )
    .await;
    assert_eq!(deleted.filter_results[0].matching_acls.len(), 1);
    assert_eq!(fetch(c, "t").await, TOPIC_DENIED);
    assert_eq!(metadata(c, "t").await, TOPIC_DENIED);

    // An ACL on the cluster for another principal: this client may no longer alter ACLs or
    // describe the cluster, but may still create a topic no ACL names.
    assert_eq!(
        create(c, vec![acl(CLUSTER, "kafka-cluster", "User:admin", ALL, ALLOW)]).await,
        [0]
    );
    assert_eq!(
        create(c, vec![acl(TOPIC, "x", "User:*", READ, ALLOW)]).await,
        [CLUSTER_DENIED]
    );
    // DescribeCluster is answered, as Kafka answers it, saying the client may do nothing.
    let asked = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let cluster: DescribeClusterResponse = ask(c, ApiKey::DescribeCluster, 1, &asked).await;
    assert_eq!(
        (cluster.error_code, cluster.cluster_authorized_operations),
        (0, 0)
    );
    let described: DescribeAclsResponse =
        ask(c, ApiKey::DescribeAcls, 3, &DescribeAclsRequest::default()).await;
    assert_eq!(described.error_code, CLUSTER_DENIED);
    let topics = vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(text("new")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ];
    let made: CreateTopicsResponse = ask(
        c,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default().with_topics(topics),
    )
    .await;
    assert_eq!(made.topics[0].error_code, 0);
    assert!(broker.partition("new", 0).is_ok());
    drop(stop);
}

/// ACLs name hosts as IP addresses; a DENY for one host wins over an ALLOW for all, PREFIXED
/// patterns cover the names they begin, and every server of a broker applies the same ACLs.
#[tokio::test]
async fn hosts_prefixes_and_servers_sharing_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    for topic in ["logs-a", "metrics-a", "other"] {
        broker.create_topic(topic, 1, TopicConfig::default()).unwrap();
    }
    let (a, _stop_a) = wire::serve(&broker, with_acls()).await;
    let (b, _stop_b) = wire::serve(&broker, with_acls()).await;
    let mut a = TcpStream::connect(a).await.unwrap();
    let mut b = TcpStream::connect(b).await.unwrap();

    let mut prefixed = acl(TOPIC, "logs-", "User:*", ALL, ALLOW);
    prefixed.resource_pattern_type = 4; // PREFIXED
    let mut here = acl(TOPIC, "logs-", "User:ANONYMOUS", WRITE, DENY);
    here.resource_pattern_type = 4;
    here.host = text("127.0.0.1");
    let mut elsewhere = acl(TOPIC, "other", "User:*", WRITE, DENY);
    elsewhere.host = text("10.9.9.9");
    let mut metrics = acl(TOPIC, "metrics-", "User:*", ALL, ALLOW);
    metrics.resource_pattern_type = 4;
    let mut not_here = acl(TOPIC, "metrics-a", "User:*", WRITE, DENY);
    not_here.host = text("10.9.9.9");
    let created = create(&mut a, vec![prefixed, here, elsewhere, metrics, not_here]).await;
    assert_eq!(created, [0; 5]);

    // Through the other server too: WRITE denied from 127.0.0.1 on logs-*, READ allowed.
    for c in [&mut a, &mut b] {
        assert_eq!(produce(c, "logs-a").await, TOPIC_DENIED);
        assert_eq!(fetch(c, "logs-a").await, 0);
        // A DENY for another host does not apply here, but it names "other", which no ALLOW
        // covers: from then on nothing is allowed on it.
        assert_eq!(produce(c, "other").await, TOPIC_DENIED);
        // A DENY for another host beside an ALLOW for all: allowed here.
        assert_eq!(produce(c, "metrics-a").await, 0);
    }
}

/// A server that does not apply ACLs (the default) answers ACL requests SECURITY_DISABLED and
/// lets every client do everything, whatever ACLs the data directory holds.
#[tokio::test]
async fn without_acls_everything_is_allowed_and_acl_requests_are_refused() {
    const SECURITY_DISABLED: i16 = 54;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    {
        let (addr, _stop) = wire::serve(&broker, with_acls()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            create(&mut c, vec![acl(TOPIC, "t", "User:*", ALL, DENY)]).await,
            [0]
        );
        assert_eq!(produce(&mut c, "t").await, TOPIC_DENIED);
    }
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    assert_eq!(produce(c, "t").await, 0);
    assert_eq!(
        create(c, vec![acl(TOPIC, "t", "User:*", READ, ALLOW)]).await,
        [SECURITY_DISABLED]
    );
    let described: DescribeAclsResponse =
        ask(c, ApiKey::DescribeAcls, 3, &DescribeAclsRequest::default()).await;
    assert_eq!(described.error_code, SECURITY_DISABLED);
}

/// Every kind of request on a denied resource is refused with Kafka's error and changes
/// nothing: group membership and offsets, configs, topic administration, auto-creation and
/// idempotent producer ids.
#[tokio::test]
async fn denied_requests_say_so_and_change_nothing() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    const PREFIXED: i8 = 4;
    const CREATE: i8 = 5;
    const ALTER: i8 = 7;
    const DESCRIBE: i8 = 8;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    for topic in ["t", "u"] {
        broker.create_topic(topic, 1, TopicConfig::default()).unwrap();
    }
    let (addr, _stop) = wire::serve(&broker, with_acls()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    let commit = |group: &'static str, topic: &'static str| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(1),
                    ]),
            ])
    };
    // Offsets of groups g and h on t and u, committed while nothing is denied.
    for (group, topic) in [("g", "t"), ("h", "t"), ("h", "u")] {
        let reply: OffsetCommitResponse = ask(c, ApiKey::OffsetCommit, 8, &commit(group, topic)).await;
        assert_eq!(reply.topics[0].partitions[0].error_code, 0);
    }
    let mut auto = acl(TOPIC, "auto-", "User:*", CREATE, DENY);
    auto.resource_pattern_type = PREFIXED;
    let created = create(
        c,
        vec![
            acl(TOPIC, "t", "User:*", ALL, DENY),
            acl(GROUP, "g", "User:*", ALL, DENY),
            // ALTER allowed (to manage ACLs), DESCRIBE (which ALTER implies) denied.
            acl(CLUSTER, "kafka-cluster", "User:*", ALTER, ALLOW),
            acl(CLUSTER, "kafka-cluster", "User:*", DESCRIBE, DENY),
            auto,
        ],
    )
    .await;
    assert_eq!(created, [0; 5]);

    // Group g: membership and offsets.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text("m"))
        .with_protocol_type(text("consumer"));
    let joined: JoinGroupResponse = ask(c, ApiKey::JoinGroup, 5, &join).await;
    assert_eq!(joined.error_code, GROUP_DENIED);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_member_id(text("m"));
    let synced: SyncGroupResponse = ask(c, ApiKey::SyncGroup, 4, &sync).await;
    assert_eq!(synced.error_code, GROUP_DENIED);
    let beat = HeartbeatRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_member_id(text("m"));
    let beaten: HeartbeatResponse = ask(c, ApiKey::Heartbeat, 4, &beat).await;
    assert_eq!(beaten.error_code, GROUP_DENIED);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_member_id(text("m"));
    let left: LeaveGroupResponse = ask(c, ApiKey::LeaveGroup, 2, &leave).await;
    assert_eq!(left.error_code, GROUP_DENIED);
    // OffsetCommit: the group refused (every partition says so), or a topic.
    let reply: OffsetCommitResponse = ask(c, ApiKey::OffsetCommit, 8, &commit("g", "u")).await;
    assert_eq!(reply.topics[0].partitions[0].error_code, GROUP_DENIED);
    let reply: OffsetCommitResponse = ask(c, ApiKey::OffsetCommit, 8, &commit("h", "t")).await;
    assert_eq!(reply.topics[0].partitions[0].error_code, TOPIC_DENIED);
    // OffsetFetch: v1 says so per partition, v7 for the request; h's offsets of t are left out
    // of "all of them".
    let named = |group: &'static str| {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("u")))
                    .with_partition_indexes(vec![0]),
            ]))
    };
    let v1: OffsetFetchResponse = ask(c, ApiKey::OffsetFetch, 1, &named("g")).await;
    assert_eq!(v1.topics[0].partitions[0].error_code, GROUP_DENIED);
    let v7: OffsetFetchResponse = ask(c, ApiKey::OffsetFetch, 7, &named("g")).await;
    assert_eq!(v7.error_code, GROUP_DENIED);
    let all: OffsetFetchResponse = ask(c, ApiKey::OffsetFetch, 7, &named("h").with_topics(None)).await;
    let topics: Vec<&str> = all.topics.iter().map(|t| t.name.0.as_str()).collect();
    assert_eq!(topics, ["u"]);
    // ListGroups without DESCRIBE on the cluster: the groups the client may describe.
    let listed: ListGroupsResponse = ask(c, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    let groups: Vec<&str> = listed.groups.iter().map(|g| g.group_id.0.as_str()).collect();
    assert_eq!(groups, ["h"]);
    let deleted: DeleteGroupsResponse = ask(
        c,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text("g"))]),
    )
    .await;
    assert_eq!(deleted.results[0].error_code, GROUP_DENIED);
    let offsets_deleted: OffsetDeleteResponse = ask(
        c,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default().with_group_id(GroupId(text("g"))),
    )
    .await;
    assert_eq!(offsets_deleted.error_code, GROUP_DENIED);
    assert_eq!(broker.group_offsets("g").unwrap().len(), 1);

    // Configs of topic t and of the broker (the cluster has an ACL, none allowing them).
    let resource = |kind: i8, name: &'static str| {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_configuration_keys(None)
    };
    let described: DescribeConfigsResponse = ask(
        c,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![resource(2, "t"), resource(4, "0")]),
    )
    .await;
    let codes: Vec<i16> = described.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [TOPIC_DENIED, CLUSTER_DENIED]);
    let alter = |kind: i8, name: &'static str, setting: &'static str, value: &'static str| {
        AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(text(setting))
                    .with_value(Some(text(value))),
            ])
    };
    let altered: IncrementalAlterConfigsResponse = ask(
        c,
        ApiKey::IncrementalAlterConfigs,
        1,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            alter(2, "t", "retention.ms", "1000"),
            alter(4, "0", "ssl.protocol", "TLSv1.3"),
        ]),
    )
    .await;
    let codes: Vec<i16> = altered.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [TOPIC_DENIED, CLUSTER_DENIED]);
    assert_eq!(broker.describe_topic("t").unwrap().config, TopicConfig::default());

    // Topic administration on t.
    let deleted: DeleteTopicsResponse = ask(
        c,
        ApiKey::DeleteTopics,
        5,
        &DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("t"))]),
    )
    .await;
    assert_eq!(deleted.responses[0].error_code, TOPIC_DENIED);
    let records = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(text("t")))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_offset(-1),
            ]),
    ]);
    let records: DeleteRecordsResponse = ask(c, ApiKey::DeleteRecords, 2, &records).await;
    assert_eq!(records.topics[0].partitions[0].error_code, TOPIC_DENIED);
    let more = CreatePartitionsRequest::default().with_topics(vec![
        create_partitions_request::CreatePartitionsTopic::default()
            .with_name(TopicName(text("t")))
            .with_count(3)
            .with_assignments(None),
    ]);
    let more: CreatePartitionsResponse = ask(c, ApiKey::CreatePartitions, 3, &more).await;
    assert_eq!(more.results[0].error_code, TOPIC_DENIED);
    assert_eq!(broker.describe_topic("t").unwrap().partitions.len(), 1);

    // Auto-creation refused where CREATE is denied (auto-*), allowed where no ACL says.
    for (topic, code) in [("auto-x", TOPIC_DENIED), ("fresh", 0)] {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(text(topic)))),
            ]))
            .with_allow_auto_topic_creation(true);
        let reply: MetadataResponse = ask(c, ApiKey::Metadata, 9, &request).await;
        assert_eq!(reply.topics[0].error_code, code, "{topic}");
        assert_eq!(broker.partition(topic, 0).is_ok(), code == 0, "{topic}");
    }

    // An idempotent producer id: the cluster's IDEMPOTENT_WRITE is not allowed, but writing
    // to some topic is (Kafka's probe of an unnamed topic); once every topic's WRITE is
    // denied, it is refused.
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let issued: InitProducerIdResponse = ask(c, ApiKey::InitProducerId, 4, &init).await;
    assert_eq!(issued.error_code, 0);
    assert_eq!(create(c, vec![acl(TOPIC, "*", "User:*", WRITE, DENY)]).await, [0]);
    let refused: InitProducerIdResponse = ask(c, ApiKey::InitProducerId, 4, &init).await;
    assert_eq!(refused.error_code, CLUSTER_DENIED);
}
