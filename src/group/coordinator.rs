//! The group coordinator: Kafka's classic group membership protocol as one state machine,
//! driven by in-process consumers and, later, by Kafka clients' JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup requests, so both can share a group.
//!
//! ```text
//!            join                         all members joined,            leader's sync
//!   Empty ──────────▶ PreparingRebalance ─────────────────────▶ CompletingRebalance ─────▶ Stable
//!     ▲                  ▲  │ (or rebalance timeout)                  │                      │
//!     │   last member    │  │                                         │ join, leave, expiry  │
//!     └──────────────────┼──┘                                         ▼                      │
//!                        └───────────────── join, leave, expiry ◀─────┴──────────────────────┘
//! ```
//!
//! - The first rebalance of an empty group waits `group.initial.rebalance.delay.ms` for more
//!   members (zero by default; see [`GroupCoordinator::with_initial_rebalance_delay`]).
//! - A rebalance waits for every known member to join again, up to the largest rebalance
//!   timeout among them; members that do not are removed. Completing it bumps the generation,
//!   picks the protocol (assignor) all members support by vote, picks a leader (the previous
//!   one if it is still there) and answers every join; only the leader gets the members'
//!   subscriptions.
//! - The leader computes the assignment and sends it with its SyncGroup; every member's
//!   SyncGroup is answered with its share and the group is Stable.
//! - A member is alive while it sends requests within its session timeout, or while it waits
//!   for a join or sync reply. One that falls silent is removed, which starts a rebalance.
//! - Static members (`group.instance.id`) keep their identity across restarts: joining again
//!   with a known instance id replaces the old member id, fencing it, and does not rebalance
//!   a stable group unless the protocol it would choose changes (leader or not).
//! - Offsets are appended under the group's lock, after checking the committer belongs to
//!   the current generation (Kafka's rules: see [`GroupCoordinator::check_commit`]); the wait
//!   for the disk comes after the lock is released, so a slow disk never holds up
//!   heartbeats and joins.
//!
//! Time only moves forward through requests and [`GroupCoordinator::tick`]: each request first
//! expires what is due in its group; waiters and network front ends tick periodically.
//! Membership is held in memory: after a restart members join again, and committed offsets
//! (which are durable) are where they resume.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::protocol::{CONSUMER_PROTOCOL_TYPE, MemberAssignment, Subscription};
use super::reply::{Pending, Replier, reply};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::storage::Signal;

/// The longest session or rebalance timeout accepted (Kafka's `group.max.session.timeout.ms`
/// default).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (committed offsets may exist).
    Empty,
    /// Waiting for members to join the next generation.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka uses (in DescribeGroups and ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinGroup {
    /// The member's id; empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
    /// Prefix of a new member's id (Kafka uses the client id).
    pub client_id: String,
    /// The member is removed if the coordinator hears nothing from it for this long.
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to join again (`max.poll.interval.ms`).
    pub rebalance_timeout: Duration,
    /// The protocol type, "consumer" for consumers.
    pub protocol_type: String,
    /// The protocols (assignors) the member supports, most preferred first, each with its
    /// metadata (for consumers, an encoded [`Subscription`](super::Subscription)).
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Raised when a rebalance starts, so an in-process member waiting for records learns of
    /// it at once instead of at its next heartbeat.
    pub notify: Option<Arc<Signal>>,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The generation the member has joined.
    pub generation: i32,
    /// The protocol (assignor) chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

impl Joined {
    /// True if this member leads the generation (and must send the assignment).
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// A member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Its id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// Who is asking: the member's id, static instance id and generation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberRef {
    /// The member id.
    pub member_id: String,
    /// The static instance id.
    pub group_instance_id: Option<String>,
    /// The generation the member believes current.
    pub generation: i32,
}

/// A group as [`GroupCoordinator::describe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// The current generation.
    pub generation: i32,
    /// The members' protocol type (empty when there are no members).
    pub protocol_type: String,
    /// The chosen protocol (empty until a generation completes).
    pub protocol: String,
    /// The leader's member id (empty without members).
    pub leader: String,
    /// The members, by id.
    pub members: Vec<MemberDescription>,
}

/// A member as [`GroupCoordinator::describe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// The client id it joined with.
    pub client_id: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Its assignment as the leader encoded it.
    pub assignment: Vec<u8>,
}

impl MemberDescription {
    /// The member's partitions, for a consumer group.
    pub fn partitions(&self) -> Result<Vec<TopicPartition>> {
        Ok(MemberAssignment::decode(&self.assignment)?.partitions)
    }
}

/// The coordinator of every group of a broker.
///
/// A Kafka front end drives it request by request; replies to JoinGroup and SyncGroup come
/// as a [`Pending`], waited on with a deadline or awaited:
///
/// ```
/// use std::time::{Duration, Instant};
/// use rivulet::group::{GroupCoordinator, GroupState, JoinGroup, MemberRef};
/// let coordinator = GroupCoordinator::new();
/// let join = JoinGroup {
///     member_id: String::new(),
///     group_instance_id: None,
///     client_id: "app".into(),
///     session_timeout: Duration::from_secs(10),
///     rebalance_timeout: Duration::from_secs(10),
///     protocol_type: "consumer".into(),
///     protocols: vec![("range".into(), Vec::new())],
///     notify: None,
/// };
/// let deadline = Instant::now() + Duration::from_secs(1);
/// let joined = coordinator.join_group("g", join).wait_until(deadline).expect("in time")?;
/// assert!(joined.is_leader(), "the only member leads");
/// assert_eq!((joined.generation, joined.protocol.as_str()), (1, "range"));
///
/// let me = MemberRef { member_id: joined.member_id.clone(), group_instance_id: None, generation: 1 };
/// let mine = coordinator
///     .sync_group("g", &me, vec![(joined.member_id.clone(), b"my share".to_vec())])
///     .wait_until(deadline)
///     .expect("in time")?;
/// assert_eq!(mine, b"my share");
/// assert_eq!(coordinator.describe("g").unwrap().state, GroupState::Stable);
/// coordinator.heartbeat("g", &me)?;
/// # Ok::<(), rivulet::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    next_id: std::sync::atomic::AtomicU64,
    initial_rebalance_delay: Duration,
}

#[derive(Debug)]
pub(crate) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static instance id to member id.
    instances: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    joined_counter: u64,
    /// `group.initial.rebalance.delay.ms`.
    initial_delay: Duration,
    /// While an empty group's first rebalance waits for more members: until when.
    initial_wait: Option<InitialWait>,
    /// Member ids given out by [`GroupCoordinator::reserve_member_id`], not yet joined with,
    /// and until when they are kept.
    pending: HashMap<String, Instant>,
}

/// The first rebalance of an empty group waiting for more members (Kafka's
/// InitialDelayedJoin).
#[derive(Debug)]
struct InitialWait {
    until: Instant,
    /// How much longer the wait may still be extended.
    remaining: Duration,
    /// A member joined during this wait, which extends it.
    new_member: bool,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heard: Instant,
    joined_order: u64,
    awaiting_join: Option<Replier<Result<Joined>>>,
    awaiting_sync: Option<Replier<Result<Vec<u8>>>>,
    notify: Option<Arc<Signal>>,
}

impl GroupCoordinator {
    /// A coordinator with no groups, and no initial rebalance delay.
    pub fn new() -> GroupCoordinator {
        GroupCoordinator::default()
    }

    /// Kafka's `group.initial.rebalance.delay.ms`: the first member to join an empty group
    /// waits this long for others before the group's first generation completes, and each
    /// member that joins meanwhile extends the wait by as much again, up to the rebalance
    /// timeout in all; so members started together share one rebalance instead of one each.
    /// Default zero (the first member is answered at once), which suits embedded groups
    /// whose members start one by one; Kafka's default is 3 s.
    pub fn with_initial_rebalance_delay(mut self, delay: Duration) -> GroupCoordinator {
        self.initial_rebalance_delay = delay;
        self
    }

    fn group(&self, group_id: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups.lock().get(group_id).cloned()
    }

    fn group_or_create(&self, group_id: &str) -> Arc<Mutex<Group>> {
        self.groups
            .lock()
            .entry(group_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group_id, self.initial_rebalance_delay))))
            .clone()
    }

    /// Joins `group_id` (creating it if needed). The reply comes when the rebalance this join
    /// starts or takes part in completes; errors come at once.
    pub fn join_group(&self, group_id: &str, request: JoinGroup) -> Pending<Result<Joined>> {
        if let Err(e) = validate_join(group_id, &request) {
            return Pending::ready(Err(e));
        }
        let now = Instant::now();
        self.with_live_group(group_id, now, |g| g.join(request, now, &self.next_id))
    }

    /// Runs `f` on `group_id` (created if needed) under its lock, once its expired members
    /// are gone.
    fn with_live_group<R>(&self, group_id: &str, now: Instant, f: impl FnOnce(&mut Group) -> R) -> R {
        loop {
            let group = self.group_or_create(group_id);
            let mut g = group.lock();
            if g.state == GroupState::Dead {
                // Deleted between the lookup and the lock: the next lookup creates it anew.
                continue;
            }
            g.expire(now);
            return f(&mut g);
        }
    }

    /// A member id for a new dynamic member, which it must join with (Kafka's
    /// MEMBER_ID_REQUIRED answer to a JoinGroup v4 or later with an empty member id). The
    /// id is reserved for the request's session timeout; nothing else changes, so a client
    /// that gives up on its join leaves no member behind to hold partitions.
    pub fn reserve_member_id(&self, group_id: &str, request: &JoinGroup) -> Result<String> {
        validate_join(group_id, request)?;
        let now = Instant::now();
        Ok(self.with_live_group(group_id, now, |g| {
            let id = new_member_id(&request.client_id, &self.next_id);
            g.pending.insert(id.clone(), now + request.session_timeout);
            id
        }))
    }

    /// SyncGroup: the leader sends every member's assignment; every member gets its own share
    /// once the leader's has arrived.
    pub fn sync_group(
        &self,
        group_id: &str,
        member: &MemberRef,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Pending<Result<Vec<u8>>> {
        let now = Instant::now();
        let Some(group) = self.group(group_id) else {
            return Pending::ready(Err(unknown_member(group_id, &member.member_id)));
        };
        let mut g = group.lock();
        g.expire(now);
        g.sync(member, assignments, now)
    }

    /// Heartbeat: keeps the member alive. `RebalanceInProgress` tells it to join again.
    pub fn heartbeat(&self, group_id: &str, member: &MemberRef) -> Result<()> {
        let now = Instant::now();
        let group = self
            .group(group_id)
            .ok_or_else(|| unknown_member(group_id, &member.member_id))?;
        let mut g = group.lock();
        g.expire(now);
        g.check_generation(member)?;
        g.touch(&member.member_id, now);
        match g.state {
            GroupState::PreparingRebalance => Err(Error::RebalanceInProgress { group: g.id.clone() }),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: removes the member, which starts a rebalance for the others. A static
    /// member may be named by its instance id alone (an empty member id).
    pub fn leave_group(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<()> {
        let now = Instant::now();
        let group = self
            .group(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        let mut g = group.lock();
        g.expire(now);
        let id = match (member_id, group_instance_id) {
            ("", Some(instance)) => g
                .instances
                .get(instance)
                .cloned()
                .ok_or_else(|| unknown_member(group_id, member_id))?,
            _ => {
                g.check_member(member_id, group_instance_id)?;
                member_id.to_string()
            }
        };
        g.remove_member(&id, now);
        Ok(())
    }

    /// Expires, in every group, the members whose session has run out and the rebalances
    /// whose timeout has passed.
    pub fn tick(&self) {
        let now = Instant::now();
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in groups {
            g.lock().expire(now);
        }
    }

    /// Forgets every group (a cluster's node that stops or starts coordinating the groups:
    /// what it knew may be stale). Members waiting for a join or sync are told no node
    /// coordinates now, so they look for the one that does and join again.
    #[cfg(feature = "cluster")]
    pub(crate) fn reset(&self) {
        let groups: Vec<_> = self.groups.lock().drain().map(|(_, g)| g).collect();
        for group in groups {
            let mut g = group.lock();
            g.state = GroupState::Dead;
            let id = g.id.clone();
            let gone = || Error::CoordinatorNotAvailable { group: id.clone() };
            for (_, mut m) in std::mem::take(&mut g.members) {
                // An in-process member learns at once that its membership is gone.
                if let Some(s) = &m.notify {
                    s.raise();
                }
                if let Some(t) = m.awaiting_join.take() {
                    t.send(Err(gone()));
                }
                if let Some(t) = m.awaiting_sync.take() {
                    t.send(Err(gone()));
                }
            }
            g.instances.clear();
            g.leader = None;
        }
    }

    /// Expires what is due in one group.
    pub(crate) fn tick_group(&self, group_id: &str) {
        if let Some(g) = self.group(group_id) {
            g.lock().expire(Instant::now());
        }
    }

    /// A group's state, generation and members; `None` if the coordinator has never seen it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.group(group_id)?;
        let mut g = group.lock();
        g.expire(Instant::now());
        Some(g.describe())
    }

    /// The groups the coordinator holds, with their states.
    pub fn list(&self) -> Vec<(String, GroupState)> {
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        let mut out: Vec<_> = groups
            .iter()
            .map(|g| {
                let g = g.lock();
                (g.id.clone(), g.state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Runs `write` (appending offsets) if `member` may commit for `group_id` now, holding the
    /// group so no rebalance completes in between. `write` must not wait for the disk: every
    /// request to the group waits for it.
    ///
    /// Kafka's rules: a commit that names no member and generation -1 is a standalone
    /// consumer's, accepted only while the group has no members. Otherwise the member must be
    /// known, not fenced, of the current generation, and the group not waiting for its
    /// leader's assignment.
    pub fn check_commit<T>(
        &self,
        group_id: &str,
        member: &MemberRef,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let now = Instant::now();
        let Some(group) = self.group(group_id) else {
            if member.generation < 0 && member.member_id.is_empty() && member.group_instance_id.is_none() {
                return write();
            }
            return Err(unknown_member(group_id, &member.member_id));
        };
        let mut g = group.lock();
        g.expire(now);
        if member.generation >= 0 || !member.member_id.is_empty() || member.group_instance_id.is_some() {
            g.check_generation(member)?;
            if g.state == GroupState::CompletingRebalance {
                return Err(Error::RebalanceInProgress { group: g.id.clone() });
            }
            g.touch(&member.member_id, now);
        } else if !g.members.is_empty() {
            return Err(unknown_member(group_id, ""));
        }
        write()
    }

    /// Removes an empty group; `GroupNotEmpty` if it has members. Runs `cleanup` (writing
    /// its offsets' tombstones, without waiting for the disk) under the group's lock, so no
    /// member can join or commit in between; the global map is not held meanwhile, as a join
    /// that finds the group Dead looks it up again.
    pub(crate) fn delete<T>(&self, group_id: &str, cleanup: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(group) = self.group(group_id) else {
            return cleanup();
        };
        let mut g = group.lock();
        if g.state == GroupState::Dead {
            // Deleted meanwhile: a new group of this id may exist by now.
            drop(g);
            return self.delete(group_id, cleanup);
        }
        g.expire(Instant::now());
        if !g.members.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: group_id.to_string(),
            });
        }
        let done = cleanup()?;
        g.state = GroupState::Dead;
        drop(g);
        let mut groups = self.groups.lock();
        if groups
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, &group))
        {
            groups.remove(group_id);
        }
        Ok(done)
    }

    /// Runs `f` under the group's lock with what its members are subscribed to: `None` if any
    /// member's subscription cannot be read as a consumer's (another protocol type), then
    /// everything counts as in use. A group without members subscribes to nothing.
    pub(crate) fn with_subscriptions<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(Option<&BTreeSet<String>>) -> Result<T>,
    ) -> Result<T> {
        let Some(group) = self.group(group_id) else {
            return f(Some(&BTreeSet::new()));
        };
        let mut g = group.lock();
        g.expire(Instant::now());
        let mut topics = BTreeSet::new();
        for member in g.members.values() {
            let subscription = member
                .protocols
                .first()
                .and_then(|(_, metadata)| Subscription::decode(metadata).ok());
            match subscription {
                Some(s) if g.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => {
                    topics.extend(s.topics)
                }
                _ => return f(None),
            }
        }
        f(Some(&topics))
    }

    /// Fails with `GroupNotEmpty` if the group has members (offsets can only be reset on an
    /// inactive group, as in Kafka), else runs `f` under the group's lock (so `f` must not
    /// wait for the disk).
    pub(crate) fn while_inactive<T>(&self, group_id: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(group) = self.group(group_id) else {
            return f();
        };
        let mut g = group.lock();
        g.expire(Instant::now());
        if !g.members.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: group_id.to_string(),
            });
        }
        f()
    }
}

/// A fresh member id: the client id (or "member"), a counter and the time.
fn new_member_id(client_id: &str, ids: &std::sync::atomic::AtomicU64) -> String {
    format!(
        "{}-{}-{:x}",
        if client_id.is_empty() { "member" } else { client_id },
        ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        crate::storage::now_ms()
    )
}

fn unknown_member(group: &str, member: &str) -> Error {
    Error::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

fn validate_join(group_id: &str, r: &JoinGroup) -> Result<()> {
    let bad = |what: &str| Err(Error::InvalidGroupRequest(what.to_string()));
    super::offsets::validate_group_id(group_id)?;
    if r.session_timeout.is_zero() || r.session_timeout > MAX_TIMEOUT {
        return bad("the session timeout must be between 1 ms and 30 minutes");
    }
    if r.rebalance_timeout.is_zero() || r.rebalance_timeout > MAX_TIMEOUT {
        return bad("the rebalance timeout must be between 1 ms and 30 minutes");
    }
    if r.protocol_type.is_empty() || r.protocols.is_empty() {
        return bad("a member must name its protocol type and at least one protocol");
    }
    if r.group_instance_id.as_deref() == Some("") {
        return bad("the group instance id is empty");
    }
    Ok(())
}

impl Group {
    fn new(id: &str, initial_delay: Duration) -> Group {
        Group {
            initial_delay,
            initial_wait: None,
            pending: HashMap::new(),
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            rebalance_deadline: None,
            joined_counter: 0,
        }
    }

    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<()> {
        if let Some(instance) = instance
            && let Some(owner) = self.instances.get(instance)
            && owner != member_id
        {
            return Err(Error::FencedInstanceId {
                group: self.id.clone(),
                instance: instance.to_string(),
            });
        }
        if self.state == GroupState::Dead || !self.members.contains_key(member_id) {
            return Err(unknown_member(&self.id, member_id));
        }
        Ok(())
    }

    fn check_generation(&self, m: &MemberRef) -> Result<()> {
        self.check_member(&m.member_id, m.group_instance_id.as_deref())?;
        if m.generation != self.generation {
            return Err(Error::IllegalGeneration {
                group: self.id.clone(),
                generation: m.generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heard = now;
        }
    }

    /// The protocols every member supports (in the order of `first`'s preference).
    fn common_protocols<'a>(&'a self, first: &'a [(String, Vec<u8>)], except: Option<&str>) -> Vec<&'a str> {
        first
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .iter()
                    .filter(|(id, _)| Some(id.as_str()) != except)
                    .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    fn join(
        &mut self,
        r: JoinGroup,
        now: Instant,
        ids: &std::sync::atomic::AtomicU64,
    ) -> Pending<Result<Joined>> {
        // The member must be able to agree with the others.
        let others_exist = self.members.keys().any(|id| *id != r.member_id);
        if others_exist {
            if self
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != r.protocol_type)
            {
                return Pending::ready(Err(Error::InconsistentGroupProtocol {
                    group: self.id.clone(),
                    reason: format!("protocol type {:?} is not the group's", r.protocol_type),
                }));
            }
            let except = (!r.member_id.is_empty()).then_some(r.member_id.as_str());
            if self.common_protocols(&r.protocols, except).is_empty() {
                return Pending::ready(Err(Error::InconsistentGroupProtocol {
                    group: self.id.clone(),
                    reason: "no protocol (assignor) in common with the other members".into(),
                }));
            }
        }
        let (tx, rx) = reply();
        let reserved = !r.member_id.is_empty() && self.pending.remove(&r.member_id).is_some();
        if r.member_id.is_empty() || reserved {
            let new_id = if reserved {
                r.member_id.clone()
            } else {
                new_member_id(&r.client_id, ids)
            };
            match r
                .group_instance_id
                .clone()
                .and_then(|i| self.instances.get(&i).cloned())
            {
                Some(old) => self.replace_static(&old, new_id, r, tx, now),
                None => self.add_member(new_id, r, tx, now),
            }
            return rx;
        }
        if let Err(e) = self.check_member(&r.member_id, r.group_instance_id.as_deref()) {
            return Pending::ready(Err(e));
        }
        let id = r.member_id.clone();
        let m = self.members.get_mut(&id).expect("checked above");
        let changed = m.protocols != r.protocols;
        m.update(r, now);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        // A leader joining a stable group asks for a rebalance: its view of topics changed.
        let wants_rebalance = changed || (is_leader && self.state == GroupState::Stable);
        match self.state {
            GroupState::PreparingRebalance => {
                self.await_join(&id, tx);
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance | GroupState::Stable if !wants_rebalance => {
                // Asking again with nothing changed gets the current generation.
                tx.send(Ok(self.joined_reply(&id, is_leader)));
            }
            _ => {
                self.prepare_rebalance(now);
                self.await_join(&id, tx);
                self.try_complete_join(now);
            }
        }
        rx
    }

    fn add_member(&mut self, id: String, r: JoinGroup, tx: Replier<Result<Joined>>, now: Instant) {
        self.joined_counter += 1;
        if let Some(instance) = &r.group_instance_id {
            self.instances.insert(instance.clone(), id.clone());
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(r.protocol_type.clone());
        }
        let mut m = Member {
            instance_id: None,
            client_id: String::new(),
            session_timeout: r.session_timeout,
            rebalance_timeout: r.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Vec::new(),
            last_heard: now,
            joined_order: self.joined_counter,
            awaiting_join: None,
            awaiting_sync: None,
            notify: None,
        };
        m.update(r, now);
        self.members.insert(id.clone(), m);
        if let Some(wait) = &mut self.initial_wait {
            wait.new_member = true;
        }
        if self.state != GroupState::PreparingRebalance {
            let was_empty = self.state == GroupState::Empty;
            self.prepare_rebalance(now);
            if was_empty && !self.initial_delay.is_zero() {
                let timeout = self.rebalance_deadline.map_or(Duration::ZERO, |d| d - now);
                self.initial_wait = Some(InitialWait {
                    until: now + self.initial_delay.min(timeout),
                    remaining: timeout.saturating_sub(self.initial_delay),
                    new_member: false,
                });
            }
        }
        self.await_join(&id, tx);
        self.try_complete_join(now);
    }

    /// A static member came back under a new member id: it takes the old one's place, and the
    /// old id is fenced. As in Kafka, a stable group answers it with the current generation
    /// (the leader with the members, its assignment coming from SyncGroup) unless the protocol
    /// the group would now choose differs; its metadata is not compared whole, since a
    /// restarted member no longer lists the partitions it owned.
    fn replace_static(
        &mut self,
        old: &str,
        new_id: String,
        r: JoinGroup,
        tx: Replier<Result<Joined>>,
        now: Instant,
    ) {
        let mut m = self.members.remove(old).expect("instances point at members");
        let fenced = || Error::FencedInstanceId {
            group: self.id.clone(),
            instance: r.group_instance_id.clone().unwrap_or_default(),
        };
        if let Some(t) = m.awaiting_join.take() {
            t.send(Err(fenced()));
        }
        if let Some(t) = m.awaiting_sync.take() {
            t.send(Err(fenced()));
        }
        m.update(r, now);
        if let Some(instance) = &m.instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), m);
        let same_protocol = self.protocol.as_deref() == Some(self.vote().as_str());
        match self.state {
            GroupState::Stable if same_protocol => {
                tx.send(Ok(self.joined_reply(&new_id, was_leader)));
            }
            GroupState::PreparingRebalance => {
                self.await_join(&new_id, tx);
                self.try_complete_join(now);
            }
            _ => {
                self.prepare_rebalance(now);
                self.await_join(&new_id, tx);
                self.try_complete_join(now);
            }
        }
    }

    fn await_join(&mut self, id: &str, tx: Replier<Result<Joined>>) {
        let m = self
            .members
            .get_mut(id)
            .expect("the member was just added or checked");
        if let Some(old) = m.awaiting_join.replace(tx) {
            // A member that joins twice gets its answer on the newer request.
            old.send(Err(Error::RebalanceInProgress {
                group: self.id.clone(),
            }));
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        let group = self.id.clone();
        for m in self.members.values_mut() {
            if let Some(t) = m.awaiting_sync.take() {
                t.send(Err(Error::RebalanceInProgress { group: group.clone() }));
            }
            if let Some(s) = &m.notify {
                s.raise();
            }
        }
    }

    /// Completes the join phase if every member has joined or the rebalance timed out.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(wait) = &mut self.initial_wait {
            if now < wait.until && !self.members.is_empty() {
                return;
            }
            if wait.new_member && !wait.remaining.is_zero() && !self.members.is_empty() {
                let more = self.initial_delay.min(wait.remaining);
                wait.until = now + more;
                wait.remaining -= more;
                wait.new_member = false;
                return;
            }
            self.initial_wait = None;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return;
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            self.forget(&id);
        }
        self.generation += 1;
        crate::telemetry::rebalanced(&self.id);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol = Some(self.vote());
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.joined_order)
                .map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let reply = self.joined_reply(&id, is_leader);
            let m = self.members.get_mut(&id).expect("listed above");
            m.assignment.clear();
            m.last_heard = now;
            if let Some(t) = m.awaiting_join.take() {
                t.send(Ok(reply));
            }
        }
    }

    /// The protocol most members prefer among those all support; ties go to the preference
    /// of the longest-standing member.
    fn vote(&self) -> String {
        let oldest = self
            .members
            .values()
            .min_by_key(|m| m.joined_order)
            .expect("the group has members");
        let candidates = self.common_protocols(&oldest.protocols, None);
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(n, _)| candidates.iter().position(|c| c == n))
            {
                votes[i] += 1;
            }
        }
        let best = (0..candidates.len())
            .max_by_key(|&i| (votes[i], std::cmp::Reverse(i)))
            .expect("members were admitted only with a protocol in common");
        candidates[best].to_string()
    }

    fn joined_reply(&self, id: &str, with_members: bool) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .iter()
                .map(|(mid, m)| JoinedMember {
                    member_id: mid.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members,
        }
    }

    fn sync(
        &mut self,
        who: &MemberRef,
        assignments: Vec<(String, Vec<u8>)>,
        now: Instant,
    ) -> Pending<Result<Vec<u8>>> {
        if let Err(e) = self.check_generation(who) {
            return Pending::ready(Err(e));
        }
        self.touch(&who.member_id, now);
        match self.state {
            GroupState::PreparingRebalance => Pending::ready(Err(Error::RebalanceInProgress {
                group: self.id.clone(),
            })),
            GroupState::Stable => Pending::ready(Ok(self.members[&who.member_id].assignment.clone())),
            _ => {
                let (tx, rx) = reply();
                let m = self.members.get_mut(&who.member_id).expect("checked");
                if let Some(old) = m.awaiting_sync.replace(tx) {
                    old.send(Err(Error::RebalanceInProgress {
                        group: self.id.clone(),
                    }));
                }
                if self.leader.as_deref() == Some(who.member_id.as_str()) {
                    let mut given: HashMap<String, Vec<u8>> = assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                        if let Some(t) = m.awaiting_sync.take() {
                            t.send(Ok(m.assignment.clone()));
                        }
                    }
                    self.state = GroupState::Stable;
                }
                rx
            }
        }
    }

    /// Removes a member and rebalances the rest.
    fn remove_member(&mut self, id: &str, now: Instant) {
        self.forget(id);
        // A group with a member is never Empty; one already preparing just re-checks.
        if matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
    }

    /// Drops a member's state; anyone waiting on its replies learns it is gone.
    fn forget(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(instance) = &m.instance_id
                && self.instances.get(instance).map(String::as_str) == Some(id)
            {
                self.instances.remove(instance);
            }
            if let Some(t) = m.awaiting_join.take() {
                t.send(Err(unknown_member(&self.id, id)));
            }
            if let Some(t) = m.awaiting_sync.take() {
                t.send(Err(unknown_member(&self.id, id)));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Removes members whose session ran out and completes a rebalance whose time is up.
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, until| now < *until);
        let dead: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && now >= m.last_heard + m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            log::info!("group {}: member {id} timed out; removing it", self.id);
            self.remove_member(&id, now);
        }
        self.try_complete_join(now);
    }

    fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    metadata: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

impl Member {
    /// Its metadata for `protocol` (empty if it does not support it).
    fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, meta)| meta.clone())
            .unwrap_or_default()
    }

    fn update(&mut self, r: JoinGroup, now: Instant) {
        self.instance_id = r.group_instance_id;
        self.client_id = r.client_id;
        self.session_timeout = r.session_timeout;
        self.rebalance_timeout = r.rebalance_timeout;
        self.protocols = r.protocols;
        self.notify = r.notify;
        self.last_heard = now;
    }
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::*;

    fn join(delay: bool) -> JoinGroup {
        JoinGroup {
            member_id: String::new(),
            group_instance_id: if delay { None } else { Some("static".into()) },
            client_id: "c".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Vec::new())],
            notify: None,
        }
    }

    #[test]
    fn a_reset_forgets_the_groups_and_sends_waiting_members_away() {
        // The first member waits for others (the initial delay); the reset answers it.
        let c = GroupCoordinator::new().with_initial_rebalance_delay(Duration::from_secs(60));
        let waiting = c.join_group("g", join(true));
        assert!(waiting.try_take().is_none());
        c.reset();
        let answer = waiting.wait_until(Instant::now() + Duration::from_secs(1));
        assert!(
            matches!(answer, Some(Err(Error::CoordinatorNotAvailable { ref group })) if group == "g"),
            "{answer:?}"
        );
        assert!(c.list().is_empty());
        // The group starts afresh: a static member joins it as new.
        let c = GroupCoordinator::new();
        let first = c
            .join_group("g", join(false))
            .wait_until(Instant::now() + Duration::from_secs(1));
        let first = first.expect("answered").expect("joined");
        c.reset();
        let again = c
            .join_group("g", join(false))
            .wait_until(Instant::now() + Duration::from_secs(1));
        let again = again.expect("answered").expect("joined");
        assert_eq!((first.generation, again.generation), (1, 1));
    }
}
