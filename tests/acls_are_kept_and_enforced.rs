//! ACLs, as Kafka's authorizer keeps and applies them with `allow.everyone.if.no.acl.found`:
//! created, described and deleted over the wire, kept across restarts, and applied to every
//! request on a resource they name (a DENY wins; once a resource is named, only what is allowed
//! is), while resources no ACL names stay open to every client.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
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

async fn ask<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let frame = wire::exchange(s, &wire::request(api, version, request))
        .await
        .expect("an answer");
    wire::response(api, version, frame)
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

    // Kept across a restart of the server.
    drop(stop);
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
