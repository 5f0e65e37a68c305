//! The group APIs, each a call on the broker's one group coordinator (shared with in-process
//! consumers), and committed offsets in its one offset store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::acls::{Client, op, resource};
use super::conn::off_workers;
use super::{Server, codes};
use crate::consumer::TopicPartition;
use crate::group::offsets::{validate_group_id, validate_metadata};
use crate::group::{JoinGroup, MemberRef, OffsetAndMetadata};

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from(s.into())
}

/// Whether `client` may do `operation` on `group`.
fn may(server: &Server, client: &Client, operation: i8, group: &str) -> bool {
    client.may(server, operation, resource::GROUP, group)
}

/// Why a request for `group` is refused, if it is: the client may not do `operation` on it
/// (GROUP_AUTHORIZATION_FAILED), or this broker does not coordinate groups (NOT_COORDINATOR:
/// the client looks for its coordinator again).
fn refused(server: &Server, client: &Client, operation: i8, group: &str) -> Option<i16> {
    if !may(server, client, operation, group) {
        return Some(GROUP_DENIED);
    }
    if server.coordinates_groups() {
        return None;
    }
    // Named by FindCoordinator but still reading what was committed before it led:
    // the client waits and asks again.
    let loading = server
        .group_coordinator()
        .is_some_and(|(id, _, _)| id == server.node_id());
    Some(if loading {
        ResponseError::CoordinatorLoadInProgress.code()
    } else {
        ResponseError::NotCoordinator.code()
    })
}

const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();

/// This broker coordinates every group (key type 0; DESCRIBE on the group needed) and, on a
/// broker alone, every transactional id (1; DESCRIBE on it needed).
pub(super) fn find_coordinator(
    server: &Server,
    client: &Client,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let reply = FindCoordinatorResponse::default();
    // A group's coordinator leads the offsets topic's partition, a transactional id's the
    // transaction state topic's; an unknown key type is a bad request, as in Kafka.
    let refused = match request.key_type {
        0 if !may(server, client, op::DESCRIBE, &request.key) => Some((
            ResponseError::GroupAuthorizationFailed,
            "the client may not describe the group",
        )),
        0 => None,
        1 if !client.may(server, op::DESCRIBE, resource::TRANSACTIONAL_ID, &request.key) => Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "the client may not describe the transactional id",
        )),
        1 => None,
        _ => Some((ResponseError::InvalidRequest, "an unknown coordinator key type")),
    };
    if let Some((error, message)) = refused {
        return reply
            .with_error_code(error.code())
            .with_error_message(Some(text(message)))
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1);
    }
    let coordinator = match request.key_type {
        0 => server.group_coordinator(),
        _ => server.transaction_coordinator(),
    };
    let Some((id, host, port)) = coordinator else {
        return reply
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_error_message(Some(text("no broker coordinates them yet")))
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1);
    };
    reply
        .with_node_id(BrokerId(id))
        .with_host(text(host))
        .with_port(i32::from(port))
}

/// Joins through the coordinator; a new member's id starts with its client id. From v4 a new
/// dynamic member is first answered MEMBER_ID_REQUIRED with its id, as Kafka does, and joins
/// with it: a join the client gave up on leaves no member behind. Needs READ on the group, as
/// the other membership requests do.
pub(super) async fn join_group(
    server: &Arc<Server>,
    client: &Client,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
) -> JoinGroupResponse {
    if let Some(code) = refused(server, client, op::READ, &request.group_id) {
        return JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let session = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout stands in, as in Kafka.
    let rebalance = if version == 0 {
        session
    } else {
        Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
    };
    let join = JoinGroup {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id,
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        notify: None,
    };
    let group = request.group_id.0.to_string();
    if version >= 4 && join.member_id.is_empty() && join.group_instance_id.is_none() {
        let reply = JoinGroupResponse::default().with_generation_id(-1);
        let reserved = off_workers(server, move |s| {
            s.broker.coordinator().reserve_member_id(&group, &join)
        });
        return match reserved.await {
            Ok(id) => reply
                .with_error_code(ResponseError::MemberIdRequired.code())
                .with_member_id(text(id)),
            Err(e) => reply
                .with_error_code(codes::code(&e))
                .with_member_id(request.member_id),
        };
    }
    // Taking the group's lock may wait for a commit's replication: off the workers.
    let pending = off_workers(server, move |s| s.broker.coordinator().join_group(&group, join));
    match pending.await.await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(Some(text(request.protocol_type.to_string())))
            .with_protocol_name(Some(text(joined.protocol)))
            .with_leader(text(joined.leader))
            .with_member_id(text(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(text(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(text))
                            .with_metadata(Bytes::from(m.metadata))
                    })
                    .collect(),
            ),
        Err(e) => JoinGroupResponse::default()
            .with_error_code(codes::code(&e))
            .with_generation_id(-1)
            .with_member_id(request.member_id),
    }
}

fn member(member_id: &StrBytes, instance: &Option<StrBytes>, generation: i32) -> MemberRef {
    MemberRef {
        member_id: member_id.to_string(),
        group_instance_id: instance.as_ref().map(|s| s.to_string()),
        generation,
    }
}

pub(super) async fn sync_group(
    server: &Arc<Server>,
    client: &Client,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    if let Some(code) = refused(server, client, op::READ, &request.group_id) {
        return SyncGroupResponse::default().with_error_code(code);
    }
    let me = member(
        &request.member_id,
        &request.group_instance_id,
        request.generation_id,
    );
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let group = request.group_id.0.to_string();
    // Taking the group's lock may wait for a commit's replication: off the workers.
    let pending = off_workers(server, move |s| {
        s.broker.coordinator().sync_group(&group, &me, assignments)
    });
    match pending.await.await {
        Ok(assignment) => SyncGroupResponse::default()
            .with_protocol_type(request.protocol_type)
            .with_protocol_name(request.protocol_name)
            .with_assignment(Bytes::from(assignment)),
        Err(e) => SyncGroupResponse::default().with_error_code(codes::code(&e)),
    }
}

pub(super) fn heartbeat(server: &Server, client: &Client, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(code) = refused(server, client, op::READ, &request.group_id) {
        return HeartbeatResponse::default().with_error_code(code);
    }
    let me = member(
        &request.member_id,
        &request.group_instance_id,
        request.generation_id,
    );
    match server.broker.coordinator().heartbeat(&request.group_id.0, &me) {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(codes::code(&e)),
    }
}

/// Before v3 one member leaves; from v3 a list of members, each answered.
pub(super) fn leave_group(
    server: &Server,
    client: &Client,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if let Some(code) = refused(server, client, op::READ, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let coordinator = server.broker.coordinator();
    let group = &request.group_id.0;
    if version < 3 {
        return match coordinator.leave_group(group, &request.member_id, None) {
            Ok(()) => LeaveGroupResponse::default(),
            Err(e) => LeaveGroupResponse::default().with_error_code(codes::code(&e)),
        };
    }
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let left = coordinator.leave_group(group, &m.member_id, m.group_instance_id.as_deref());
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(left.err().map_or(0, |e| codes::code(&e)))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// Commits as the coordinator allows (Kafka's generation rules), each partition answered. As
/// in Kafka, a partition that does not exist (UNKNOWN_TOPIC_OR_PARTITION) or whose metadata is
/// over `offset.metadata.max.bytes` (OFFSET_METADATA_TOO_LARGE) is left out and the others
/// are committed together; a refusal by the group, or a failed write, answers all of those.
/// Needs READ on the group and on each topic (TOPIC_AUTHORIZATION_FAILED for a topic, and it
/// is left out).
///
/// Runs on the blocking pool: a commit waits for `fdatasync`.
pub(super) async fn offset_commit(
    server: &Arc<Server>,
    client: &Client,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let (server, client) = (server.clone(), client.clone());
    tokio::task::spawn_blocking(move || commit_offsets(&server, &client, request))
        .await
        .expect("commits do not panic")
}

fn commit_offsets(server: &Server, client: &Client, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let group_refused = refused(server, client, op::READ, &group);
    let group_allowed = group_refused.is_none();
    let me = member(
        &request.member_id,
        &request.group_instance_id,
        request.generation_id_or_member_epoch,
    );
    let now = crate::storage::now_ms();
    // Each partition's entry, or the error code it is answered with.
    let checked: Vec<Vec<Result<(TopicPartition, OffsetAndMetadata), i16>>> = request
        .topics
        .iter()
        .map(|t| {
            let topic_allowed = client.may(server, op::READ, resource::TOPIC, &t.name);
            t.partitions
                .iter()
                .map(|p| {
                    if !topic_allowed {
                        return Err(TOPIC_DENIED);
                    }
                    let entry = || {
                        server.log(&t.name.0, p.partition_index)?;
                        let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index as u32);
                        let metadata = p.committed_metadata.as_deref().unwrap_or("").to_string();
                        validate_metadata(&tp, &metadata)?;
                        let meta = OffsetAndMetadata {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp: now,
                        };
                        Ok((tp, meta))
                    };
                    entry().map_err(|e: crate::Error| codes::code(&e))
                })
                .collect()
        })
        .collect();
    let entries: Vec<(TopicPartition, OffsetAndMetadata)> = checked
        .iter()
        .flatten()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let committed_code = if group_allowed {
        let outcome = validate_group_id(&group).and_then(|()| {
            let store = server.broker.inner.offsets()?;
            server
                .broker
                .coordinator()
                .check_commit(&group, &me, || store.append(&group, &entries))?
                .durable()
        });
        outcome.err().map_or(0, |e| codes::code(&e))
    } else {
        group_refused.unwrap_or(GROUP_DENIED)
    };
    let topics = request
        .topics
        .into_iter()
        .zip(checked)
        .map(|(t, checked)| {
            let partitions = t
                .partitions
                .iter()
                .zip(checked)
                .map(|(p, c)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(match c {
                            // Refused by the group, every partition says so, whatever else.
                            _ if !group_allowed => group_refused.unwrap_or(GROUP_DENIED),
                            Err(code) => code,
                            Ok(_) => committed_code,
                        })
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of the partitions asked for (null: all the group has), -1 where
/// there is none. Needs DESCRIBE on the group and on each topic: a topic the client may not
/// describe is answered TOPIC_AUTHORIZATION_FAILED when named, and left out of "all".
///
/// Runs on the blocking pool: the first use of the offset store creates and reads its topic.
pub(super) async fn offset_fetch(
    server: &Arc<Server>,
    client: &Client,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let (server, client) = (server.clone(), client.clone());
    tokio::task::spawn_blocking(move || fetch_offsets(&server, &client, request, version))
        .await
        .expect("offset fetches do not panic")
}

fn fetch_offsets(
    server: &Server,
    client: &Client,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if let Some(code) = refused(server, client, op::DESCRIBE, &request.group_id) {
        // v1 has no error field of its own: each partition named says so.
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code);
        }
        let topics = request.topics.unwrap_or_default().into_iter().map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        });
        return OffsetFetchResponse::default().with_topics(topics.collect());
    }
    let store = match server.broker.inner.offsets() {
        Ok(store) => store,
        Err(e) => return OffsetFetchResponse::default().with_error_code(codes::code(&e)),
    };
    let group = &request.group_id.0;
    let asked: Vec<(String, Vec<i32>)> = match request.topics {
        // A partition asked for more than once is answered once, as Kafka does: each answer
        // carries up to 4 KiB of metadata.
        Some(topics) => {
            let mut seen = HashSet::new();
            topics
                .into_iter()
                .map(|t| {
                    let topic = t.name.0.to_string();
                    let mut partitions = t.partition_indexes;
                    partitions.retain(|&p| seen.insert((topic.clone(), p)));
                    (topic, partitions)
                })
                .filter(|(_, partitions)| !partitions.is_empty())
                .collect()
        }
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for (tp, _) in store.group_offsets(group) {
                if !client.may(server, op::DESCRIBE, resource::TOPIC, &tp.topic) {
                    continue;
                }
                match all.iter_mut().find(|(t, _)| *t == tp.topic) {
                    Some((_, ps)) => ps.push(tp.partition as i32),
                    None => all.push((tp.topic.clone(), vec![tp.partition as i32])),
                }
            }
            all
        }
    };
    let topics = asked
        .into_iter()
        .map(|(topic, partitions)| {
            let allowed = client.may(server, op::DESCRIBE, resource::TOPIC, &topic);
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    if !allowed {
                        return OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_error_code(TOPIC_DENIED);
                    }
                    let tp = TopicPartition::new(topic.clone(), u32::try_from(p).unwrap_or(u32::MAX));
                    // v7: a transaction's commit for it is pending; the client asks again.
                    if request.require_stable && store.has_pending(group, std::slice::from_ref(&tp)) {
                        return OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_error_code(ResponseError::UnstableOffsetCommit.code());
                    }
                    let committed = store.committed(group, &tp);
                    let reply = OffsetFetchResponsePartition::default().with_partition_index(p);
                    match committed {
                        Some(c) => reply
                            .with_committed_offset(c.offset)
                            .with_committed_leader_epoch(c.leader_epoch)
                            .with_metadata(Some(text(c.metadata))),
                        None => reply
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(text(""))),
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// Deletes groups and their committed offsets, as Kafka does: a group with members is
/// NON_EMPTY_GROUP, one the broker does not know GROUP_ID_NOT_FOUND, and a group named twice
/// is answered once. Needs DELETE on each group.
///
/// Runs on the blocking pool: a deletion waits for the offsets' tombstones to be synced.
pub(super) async fn delete_groups(
    server: &Arc<Server>,
    client: &Client,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let (server, client) = (server.clone(), client.clone());
    tokio::task::spawn_blocking(move || {
        // The groups with offsets, read once for the whole request: a request of many names
        // must not read the store once a name.
        let with_offsets: HashSet<String> = match server.broker.inner.offsets() {
            Ok(store) => store.groups().into_iter().collect(),
            Err(e) => {
                let code = codes::code(&e);
                let results = request
                    .groups_names
                    .into_iter()
                    .map(|g| {
                        DeletableGroupResult::default()
                            .with_group_id(g)
                            .with_error_code(code)
                    })
                    .collect();
                return DeleteGroupsResponse::default().with_results(results);
            }
        };
        let known = |group: &str| {
            if with_offsets.contains(group) || server.broker.coordinator().describe(group).is_some() {
                Ok(())
            } else {
                Err(crate::Error::NoSuchGroup {
                    group: group.to_string(),
                })
            }
        };
        let mut seen = HashSet::new();
        let results = request
            .groups_names
            .into_iter()
            .filter(|g| seen.insert(g.clone()))
            .map(|group| {
                if let Some(code) = refused(&server, &client, op::DELETE, &group) {
                    return DeletableGroupResult::default()
                        .with_group_id(group)
                        .with_error_code(code);
                }
                let deleted = validate_group_id(&group.0)
                    .and_then(|()| known(&group.0))
                    .and_then(|()| server.broker.delete_group(&group.0));
                let reply = DeletableGroupResult::default().with_group_id(group);
                match deleted {
                    Ok(()) => reply,
                    Err(e) => reply.with_error_code(codes::code(&e)),
                }
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    })
    .await
    .expect("group deletions do not panic")
}

/// Deletes a group's committed offsets of the partitions named (Kafka's OffsetDelete): a
/// partition whose topic a member is subscribed to is GROUP_SUBSCRIBED_TO_TOPIC, the others
/// are deleted; an unknown group is GROUP_ID_NOT_FOUND. A partition named twice is answered
/// once. Needs DELETE on the group and READ on each topic (TOPIC_AUTHORIZATION_FAILED for
/// a topic, its offsets kept).
///
/// Runs on the blocking pool: the deletion waits for its tombstones to be synced.
pub(super) async fn offset_delete(
    server: &Arc<Server>,
    client: &Client,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let (server, client) = (server.clone(), client.clone());
    tokio::task::spawn_blocking(move || {
        let group = request.group_id.0.to_string();
        if let Some(code) = refused(&server, &client, op::DELETE, &group) {
            return OffsetDeleteResponse::default().with_error_code(code);
        }
        // Each partition asked for is answered once; a negative index names none.
        let mut seen = HashSet::new();
        let mut partitions = Vec::new();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        // Partitions answered without being looked at, with their error codes.
        let mut impossible = Vec::new();
        for t in &request.topics {
            let allowed = client.may(&server, op::READ, resource::TOPIC, &t.name);
            for p in &t.partitions {
                if !seen.insert((t.name.clone(), p.partition_index)) {
                    continue;
                }
                match u32::try_from(p.partition_index) {
                    _ if !allowed => impossible.push((t.name.0.to_string(), p.partition_index, TOPIC_DENIED)),
                    Ok(index) => partitions.push(TopicPartition::new(t.name.0.to_string(), index)),
                    Err(_) => impossible.push((t.name.0.to_string(), p.partition_index, unknown)),
                }
            }
        }
        let answers = match validate_group_id(&group)
            .and_then(|()| server.broker.delete_committed_offsets(&group, &partitions))
        {
            Ok(answers) => answers,
            Err(e) => return OffsetDeleteResponse::default().with_error_code(codes::code(&e)),
        };
        let answered = answers
            .into_iter()
            .map(|(tp, answer)| {
                (
                    tp.topic,
                    tp.partition as i32,
                    answer.err().map_or(0, |e| codes::code(&e)),
                )
            })
            .chain(impossible);
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for (topic, index, code) in answered {
            let partition = OffsetDeleteResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code);
            let i = *at.entry(topic.clone()).or_insert_with(|| {
                topics.push(OffsetDeleteResponseTopic::default().with_name(TopicName(text(topic))));
                topics.len() - 1
            });
            topics[i].partitions.push(partition);
        }
        OffsetDeleteResponse::default().with_topics(topics)
    })
    .await
    .expect("offset deletions do not panic")
}

/// The type of every group served, as ListGroups v5 names it.
const CLASSIC: &str = "classic";

/// Groups with members or committed offsets, with their states (v4 can filter by state, v5 by
/// type): all of them for a client that may DESCRIBE the cluster, else those it may describe.
///
/// Runs on the blocking pool: the first use of the offset store creates and reads its topic.
pub(super) async fn list_groups(
    server: &Arc<Server>,
    client: &Client,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let (server, client) = (server.clone(), client.clone());
    tokio::task::spawn_blocking(move || listed_groups(&server, &client, request))
        .await
        .expect("listing groups does not panic")
}

fn listed_groups(server: &Server, client: &Client, request: ListGroupsRequest) -> ListGroupsResponse {
    // A broker lists the groups it coordinates, as Kafka's do.
    if !server.coordinates_groups() {
        return ListGroupsResponse::default();
    }
    let every = client.may_on_cluster(server, op::DESCRIBE);
    let groups = match server.broker.list_groups() {
        Ok(groups) => groups,
        Err(e) => return ListGroupsResponse::default().with_error_code(codes::code(&e)),
    };
    let coordinator = server.broker.coordinator();
    // Every group here is a classic one (KIP-848's consumer groups are not served).
    let classic = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(CLASSIC));
    let groups = groups
        .into_iter()
        .filter(|_| classic)
        .filter(|(id, _)| every || may(server, client, op::DESCRIBE, id))
        .filter(|(_, state)| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(state.name()))
        })
        .map(|(id, state)| {
            let protocol_type = coordinator
                .describe(&id)
                .map(|d| d.protocol_type)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "consumer".to_string());
            ListedGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_protocol_type(text(protocol_type))
                .with_group_state(text(state.name()))
                .with_group_type(StrBytes::from_static_str(CLASSIC))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// Each group's state, protocol and members with their metadata and assignments; a group the
/// coordinator has never seen is Dead with no members, as in Kafka. Needs DESCRIBE on each
/// group.
pub(super) fn describe_groups(
    server: &Server,
    client: &Client,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let coordinator = server.broker.coordinator();
    let operations = |group: &str| {
        if request.include_authorized_operations {
            server.operations(
                client,
                resource::GROUP,
                group,
                super::single_node::GROUP_OPERATIONS,
            )
        } else {
            super::single_node::NOT_ASKED
        }
    };
    // Each group is described once however often it is named, as Kafka does.
    let mut seen = std::collections::HashSet::new();
    let groups = request
        .groups
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .map(|id| {
            let reply = DescribedGroup::default().with_group_id(id.clone());
            if let Some(code) = refused(server, client, op::DESCRIBE, &id) {
                return reply.with_error_code(code);
            }
            let reply = reply.with_authorized_operations(operations(&id));
            let Some(d) = coordinator.describe(&id.0) else {
                return reply.with_group_state(text("Dead"));
            };
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(text))
                        .with_client_id(text(m.client_id))
                        .with_client_host(text(""))
                        .with_member_metadata(Bytes::from(m.metadata))
                        .with_member_assignment(Bytes::from(m.assignment))
                })
                .collect();
            reply
                .with_group_state(text(d.state.name()))
                .with_protocol_type(text(d.protocol_type))
                .with_protocol_data(text(d.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
