//! The group coordinator driven directly, as the Kafka front end will drive it: generations,
//! leaders, protocol choice, heartbeats, session expiry, static membership and the commit
//! rules.

use std::time::{Duration, Instant};

use rivulet::group::{GroupCoordinator, GroupState, JoinGroup, Joined, MemberRef, Pending};
use rivulet::{Broker, Error};

fn join_request(member_id: &str, protocols: &[&str], session: Duration) -> JoinGroup {
    JoinGroup {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "test".into(),
        session_timeout: session,
        rebalance_timeout: session,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), p.as_bytes().to_vec()))
            .collect(),
        notify: None,
    }
}

/// Waits for a reply, ticking the coordinator as a front end does (timeouts only fire on
/// requests and ticks).
fn wait_ticking<T>(c: &GroupCoordinator, p: Pending<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = p.wait_until(Instant::now() + Duration::from_millis(10)) {
            return v;
        }
        c.tick();
    }
    panic!("no answer in 10 s");
}

fn wait<T>(p: Pending<T>) -> T {
    p.wait_until(Instant::now() + Duration::from_secs(10))
        .expect("the coordinator answered")
}

fn me(j: &Joined) -> MemberRef {
    MemberRef {
        member_id: j.member_id.clone(),
        group_instance_id: None,
        generation: j.generation,
    }
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn a_rebalance_waits_for_every_member_and_bumps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let c = broker.coordinator();

    // One member: generation 1 at once, and it leads.
    let a = wait(c.join_group("g", join_request("", &["range", "roundrobin"], LONG))).unwrap();
    assert_eq!(a.generation, 1);
    assert!(a.is_leader());
    assert_eq!(a.members.len(), 1);
    assert_eq!(c.describe("g").unwrap().state, GroupState::CompletingRebalance);
    let got = wait(c.sync_group("g", &me(&a), vec![(a.member_id.clone(), b"A".to_vec())])).unwrap();
    assert_eq!(got, b"A");
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    c.heartbeat("g", &me(&a)).unwrap();

    // A second member starts a rebalance that waits for the first to join again.
    let pending_b = c.join_group("g", join_request("", &["roundrobin", "range"], LONG));
    assert!(pending_b.try_take().is_none(), "b must wait for a");
    assert!(matches!(
        c.heartbeat("g", &me(&a)),
        Err(Error::RebalanceInProgress { .. })
    ));
    // The old generation may still commit while the group prepares (Kafka's rule) ...
    c.check_commit("g", &me(&a), || Ok(())).unwrap();
    let a2 = wait(c.join_group("g", join_request(&a.member_id, &["range", "roundrobin"], LONG))).unwrap();
    let b = wait(pending_b).unwrap();
    assert_eq!(a2.generation, 2);
    assert_eq!(b.generation, 2);
    assert_eq!(a2.leader, a.member_id, "the leader stays");
    assert!(b.members.is_empty(), "only the leader sees the members");
    // Votes: a prefers range, b roundrobin; the tie goes to a, the longest-standing member.
    assert_eq!((a2.protocol.as_str(), b.protocol.as_str()), ("range", "range"));
    // ... but not once the generation has moved on.
    assert!(matches!(
        c.check_commit("g", &me(&a), || Ok(())),
        Err(Error::IllegalGeneration {
            generation: 1,
            current: 2,
            ..
        })
    ));
    // While the leader has not sent the assignment, commits wait.
    assert!(matches!(
        c.check_commit("g", &me(&b), || Ok(())),
        Err(Error::RebalanceInProgress { .. })
    ));

    // The follower's sync is answered when the leader's arrives.
    let pending_sync_b = c.sync_group("g", &me(&b), Vec::new());
    assert!(pending_sync_b.try_take().is_none());
    let assignments = vec![
        (a2.member_id.clone(), b"for a".to_vec()),
        (b.member_id.clone(), b"for b".to_vec()),
    ];
    assert_eq!(wait(c.sync_group("g", &me(&a2), assignments)).unwrap(), b"for a");
    assert_eq!(wait(pending_sync_b).unwrap(), b"for b");
    c.check_commit("g", &me(&b), || Ok(())).unwrap();

    let d = c.describe("g").unwrap();
    assert_eq!(
        (d.state, d.generation, d.members.len()),
        (GroupState::Stable, 2, 2)
    );

    // A leave rebalances; the one left becomes leader of generation 3.
    c.leave_group("g", &a2.member_id, None).unwrap();
    let b3 = wait(c.join_group("g", join_request(&b.member_id, &["roundrobin"], LONG))).unwrap();
    assert_eq!((b3.generation, b3.is_leader()), (3, true));
    // The member that left is unknown now.
    assert!(matches!(
        c.heartbeat("g", &me(&a2)),
        Err(Error::UnknownMember { .. })
    ));
}

#[test]
fn a_silent_member_is_removed_and_a_late_one_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let c = broker.coordinator();
    let short = Duration::from_millis(200);
    let a = wait(c.join_group("g", join_request("", &["range"], short))).unwrap();
    wait(c.sync_group("g", &me(&a), Vec::new())).unwrap();
    // b joins; a never comes back: after a's rebalance timeout b gets a generation alone.
    let b = wait_ticking(c, c.join_group("g", join_request("", &["range"], LONG))).unwrap();
    assert_eq!(b.generation, 2);
    assert!(b.is_leader());
    assert_eq!(b.members.len(), 1);
    assert!(matches!(
        c.heartbeat("g", &me(&a)),
        Err(Error::UnknownMember { .. })
    ));
    assert!(matches!(
        c.check_commit("g", &me(&a), || Ok(())),
        Err(Error::UnknownMember { .. })
    ));
    // A standalone commit (no member, generation -1) is refused while the group has members.
    let standalone = MemberRef {
        generation: -1,
        ..MemberRef::default()
    };
    assert!(matches!(
        c.check_commit("g", &standalone, || Ok(())),
        Err(Error::UnknownMember { .. })
    ));
    c.leave_group("g", &b.member_id, None).unwrap();
    assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    c.check_commit("g", &standalone, || Ok(())).unwrap();
}

#[test]
fn members_without_a_common_protocol_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let c = broker.coordinator();
    wait(c.join_group("g", join_request("", &["range"], LONG))).unwrap();
    let refused = wait(c.join_group("g", join_request("", &["sticky"], LONG)));
    assert!(matches!(refused, Err(Error::InconsistentGroupProtocol { .. })));
    let mut other_type = join_request("", &["range"], LONG);
    other_type.protocol_type = "connect".into();
    assert!(matches!(
        wait(c.join_group("g", other_type)),
        Err(Error::InconsistentGroupProtocol { .. })
    ));
    // Malformed requests.
    assert!(matches!(
        wait(c.join_group("", join_request("", &["range"], LONG))),
        Err(Error::InvalidGroupId { .. })
    ));
    assert!(matches!(
        wait(c.join_group("g", join_request("", &[], LONG))),
        Err(Error::InvalidGroupRequest(_))
    ));
    assert!(matches!(
        wait(c.join_group("g", join_request("", &["range"], Duration::ZERO))),
        Err(Error::InvalidGroupRequest(_))
    ));
    assert!(matches!(
        wait(c.join_group("g", join_request("nobody", &["range"], LONG))),
        Err(Error::UnknownMember { .. })
    ));
    // Only the first member is in the group.
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
}

#[test]
fn a_static_member_comes_back_without_a_rebalance_and_fences_its_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let c = broker.coordinator();
    let static_join = |member: &str| {
        let mut r = join_request(member, &["range"], LONG);
        r.group_instance_id = Some("worker-1".into());
        r
    };
    let leader = wait(c.join_group("g", join_request("", &["range"], LONG))).unwrap();
    let pending = c.join_group("g", static_join(""));
    let leader = wait(c.join_group("g", join_request(&leader.member_id, &["range"], LONG))).unwrap();
    let s = wait(pending).unwrap();
    let s_ref = MemberRef {
        member_id: s.member_id.clone(),
        group_instance_id: Some("worker-1".into()),
        generation: s.generation,
    };
    let pending_sync = c.sync_group("g", &s_ref, Vec::new());
    wait(c.sync_group("g", &me(&leader), vec![(s.member_id.clone(), b"S".to_vec())])).unwrap();
    assert_eq!(wait(pending_sync).unwrap(), b"S");
    let generation = c.describe("g").unwrap().generation;

    // The instance restarts: a new member id, same generation, same assignment, no rebalance.
    let back = wait(c.join_group("g", static_join(""))).unwrap();
    assert_ne!(back.member_id, s.member_id);
    assert_eq!(back.generation, generation);
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    let back_ref = MemberRef {
        member_id: back.member_id.clone(),
        group_instance_id: Some("worker-1".into()),
        generation,
    };
    assert_eq!(wait(c.sync_group("g", &back_ref, Vec::new())).unwrap(), b"S");
    // The old incarnation is fenced.
    assert!(matches!(
        c.heartbeat("g", &s_ref),
        Err(Error::FencedInstanceId { .. })
    ));
    assert!(matches!(
        c.check_commit("g", &s_ref, || Ok(())),
        Err(Error::FencedInstanceId { .. })
    ));
    c.heartbeat("g", &back_ref).unwrap();
    // Leaving by instance id.
    c.leave_group("g", "", Some("worker-1")).unwrap();
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
}

#[test]
fn deleting_or_resetting_an_active_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, Default::default()).unwrap();
    let c = broker.coordinator();
    let a = wait(c.join_group("g", join_request("", &["range"], LONG))).unwrap();
    let tp = rivulet::TopicPartition::new("t", 0);
    assert!(matches!(
        broker.delete_group("g"),
        Err(Error::GroupNotEmpty { .. })
    ));
    assert!(matches!(
        broker.reset_group_offsets("g", &[(tp.clone(), 0)]),
        Err(Error::GroupNotEmpty { .. })
    ));
    assert!(
        broker.group_offsets("g").unwrap().is_empty(),
        "nothing was written"
    );
    c.leave_group("g", &a.member_id, None).unwrap();
    broker.reset_group_offsets("g", &[(tp, 0)]).unwrap();
    assert_eq!(broker.group_offsets("g").unwrap().len(), 1);
    broker.delete_group("g").unwrap();
    assert!(c.describe("g").is_none());
    assert!(matches!(
        broker.describe_group("g"),
        Err(Error::NoSuchGroup { .. })
    ));
}
