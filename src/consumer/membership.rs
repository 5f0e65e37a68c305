//! A subscribed consumer's part in its group: joining through the broker's
//! [`GroupCoordinator`](crate::group::GroupCoordinator), computing the assignment when it leads,
//! applying its share, and telling the [`RebalanceListener`].
//!
//! Everything happens inside `poll` (and `close`): there is no background thread. The
//! consumer's session timeout is its `max.poll.interval.ms`, renewed when a poll starts and
//! ends and, while a poll waits for records, every third of that interval: the interval is
//! the time between polls, as in Kafka, and a consumer that stops polling is removed when
//! Kafka's would leave. A dropped consumer leaves at once (unless it is a static member).
//!
//! Eager assignors (range, round-robin, sticky) revoke every partition before joining;
//! cooperative-sticky keeps consuming what it owns, revokes only what the new assignment takes
//! away, and then joins once more so the partitions it gave up can be handed on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use super::{Consumer, TopicPartition};
use crate::error::{Error, Result};
use crate::group::{
    Assignor, CONSUMER_PROTOCOL_TYPE, JoinGroup, Joined, Member, MemberAssignment, MemberRef, Pending,
    RemoteCoordinator, StickyUserData, Subscription,
};

/// Told of the partitions a subscribed consumer gains and gives up, from inside `poll`. The
/// consumer is passed in so the listener can commit, seek or look up positions (it must not
/// call `poll`).
///
/// ```
/// use std::time::Duration;
/// use rivulet::{Broker, Consumer, ConsumerConfig, RebalanceListener, TopicConfig, TopicPartition};
///
/// /// Commits what was processed before partitions leave, and notes what arrives.
/// struct CommitOnRevoke {
///     owned: Vec<TopicPartition>,
/// }
///
/// impl RebalanceListener for CommitOnRevoke {
///     fn on_partitions_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
///         consumer.commit().expect("commit before handing over");
///         self.owned.retain(|tp| !partitions.contains(tp));
///     }
///     fn on_partitions_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
///         self.owned.extend_from_slice(partitions);
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("jobs", 2, TopicConfig::default())?;
/// let config = ConsumerConfig::default().group_id("workers").enable_auto_commit(false);
/// let mut consumer = Consumer::new(&broker, config);
/// consumer.set_rebalance_listener(CommitOnRevoke { owned: Vec::new() });
/// consumer.subscribe(["jobs"])?;
/// consumer.poll(Duration::from_secs(1))?; // joins the group; the listener hears of jobs-0, jobs-1
/// assert_eq!(consumer.assignment().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait RebalanceListener: Send {
    /// The consumer is giving these partitions up in a rebalance: the place to commit what
    /// was processed. With auto-commit on, the consumer has already committed them.
    fn on_partitions_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The consumer now owns these partitions (under a cooperative assignor, only the ones
    /// newly added; the list may be empty).
    fn on_partitions_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The consumer lost these partitions without a clean handover (it was removed from the
    /// group, for example after not polling for `max.poll.interval.ms`): other members may
    /// already own them, and committing is no longer possible. By default the same as
    /// `on_partitions_revoked`.
    fn on_partitions_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(consumer, partitions);
    }
}

/// What the consumer subscribes to.
#[derive(Debug, Clone)]
enum Topics {
    List(BTreeSet<String>),
    Pattern(Regex),
}

pub(super) struct Membership {
    group: String,
    topics: Topics,
    /// The topics the subscription names now (a pattern resolved against the broker).
    resolved: BTreeSet<String>,
    /// Member id, instance id and generation, as the coordinator knows them.
    pub(super) member: MemberRef,
    cooperative: bool,
    phase: Phase,
    /// Join again at the next chance (the subscription or the topics changed, or a
    /// cooperative round revoked partitions).
    rejoin: bool,
    next_refresh: Instant,
    /// As leader: the partition counts the assignment was computed from.
    assigned_counts: Option<BTreeMap<String, u32>>,
    /// When the coordinator last heard from this member.
    last_renewed: Instant,
    /// The last assignment and its generation, which the eager sticky assignor's members
    /// send as user data (they own nothing when they join).
    previous: StickyUserData,
}

enum Phase {
    Unjoined,
    /// A join, and the coordinator it was sent to (`None`: this node's).
    Joining(Pending<Result<Joined>>, Option<u64>),
    /// A sync, and the coordinator it was sent to.
    Syncing(Pending<Result<Vec<u8>>>, Option<u64>),
    Stable,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Unjoined => "unjoined",
            Phase::Joining(..) => "joining",
            Phase::Syncing(..) => "syncing",
            Phase::Stable => "stable",
        };
        f.debug_struct("Membership")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("member", &self.member)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

/// How long a wait for the coordinator lasts before expiring what is due in the group (a
/// member that vanished holds a rebalance up only until its timeout).
const TICK: Duration = Duration::from_millis(20);

impl Consumer {
    /// Joins the consumer's group and consumes the partitions of `topics` the group assigns
    /// it, rebalancing as members come and go. Topics that do not exist yet are picked up
    /// when created. Needs a `group.id`; calling it on a consumer with an `assign`ed
    /// assignment is an error, and so is a name no topic can have (empty, say). Subscribing
    /// again replaces the subscription; an error changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("jobs", 4, TopicConfig::default())?;
    /// let config = ConsumerConfig::default().group_id("workers").auto_offset_reset(OffsetReset::Earliest);
    /// let mut a = Consumer::new(&broker, config.clone());
    /// a.subscribe(["jobs"])?;
    /// a.poll(Duration::from_secs(1))?;
    /// assert_eq!(a.assignment().len(), 4, "alone in the group, it has every partition");
    ///
    /// // A second member joins; polls on both finish the rebalance.
    /// let mut b = Consumer::new(&broker, config);
    /// b.subscribe(["jobs"])?;
    /// for _ in 0..50 {
    ///     a.poll(Duration::from_millis(10))?;
    ///     b.poll(Duration::from_millis(10))?;
    ///     if a.assignment().len() == 2 && b.assignment().len() == 2 {
    ///         break;
    ///     }
    /// }
    /// assert_eq!((a.assignment().len(), b.assignment().len()), (2, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe<I, S>(&mut self, topics: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        if topics.is_empty() {
            return self.unsubscribe();
        }
        for t in &topics {
            crate::broker::validate_topic_name(t)?;
        }
        self.start_subscription(Topics::List(topics))
    }

    /// Like [`subscribe`](Self::subscribe), to every topic whose whole name matches the
    /// regular expression `pattern`, including topics created later (internal topics never
    /// match). An invalid pattern is an error and changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::{Broker, Consumer, ConsumerConfig, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("metrics.cpu", 1, TopicConfig::default())?;
    /// broker.create_topic("logs", 1, TopicConfig::default())?;
    /// let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("dash"));
    /// consumer.subscribe_pattern(r"metrics\..*")?;
    /// consumer.poll(Duration::from_secs(1))?;
    /// assert_eq!(consumer.subscription().into_iter().collect::<Vec<_>>(), ["metrics.cpu"]);
    /// assert!(consumer.subscribe_pattern("(unclosed").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|_| Error::InvalidConfig {
            name: "subscription pattern",
            value: pattern.to_string(),
            reason: "not a valid regular expression",
        })?;
        self.start_subscription(Topics::Pattern(re))
    }

    fn start_subscription(&mut self, topics: Topics) -> Result<()> {
        let group = self.config.group_id.clone().ok_or(Error::NoGroup)?;
        crate::group::offsets::validate_group_id(&group)?;
        if self.manual {
            return Err(Error::IllegalState(
                "subscribe on a consumer with assigned partitions (assign an empty list first)",
            ));
        }
        let cooperative = self.config.assignors.iter().all(|a| a.is_cooperative());
        match &mut self.membership {
            Some(m) => {
                m.topics = topics;
                m.rejoin = true;
                m.next_refresh = Instant::now();
            }
            None => {
                self.membership = Some(Membership {
                    group,
                    topics,
                    resolved: BTreeSet::new(),
                    member: MemberRef {
                        member_id: String::new(),
                        group_instance_id: self.config.group_instance_id.clone(),
                        generation: -1,
                    },
                    cooperative,
                    phase: Phase::Unjoined,
                    rejoin: false,
                    next_refresh: Instant::now(),
                    assigned_counts: None,
                    last_renewed: Instant::now(),
                    previous: StickyUserData::default(),
                })
            }
        }
        Ok(())
    }

    /// Sets the listener told of partitions assigned, revoked and lost.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The topics subscribed to (a pattern's current matches), empty if not subscribed.
    pub fn subscription(&self) -> BTreeSet<String> {
        match &self.membership {
            Some(m) => match &m.topics {
                Topics::List(t) => t.clone(),
                Topics::Pattern(_) => m.resolved.clone(),
            },
            None => BTreeSet::new(),
        }
    }

    /// The consumer's member id and generation in its group, once it has joined.
    pub fn group_metadata(&self) -> Option<(String, i32)> {
        let m = self.membership.as_ref()?;
        (m.member.generation >= 0).then(|| (m.member.member_id.clone(), m.member.generation))
    }

    /// Leaves the group (committing first, with auto-commit) and drops the assignment.
    pub fn unsubscribe(&mut self) -> Result<()> {
        let result = self.leave();
        self.membership = None;
        result
    }

    /// Commits (with auto-commit) and leaves the group. Dropping the consumer does the same,
    /// logging failures instead of returning them.
    pub fn close(mut self) -> Result<()> {
        self.unsubscribe()
    }

    /// Dropping: as `close`, except while the thread panics. Then the records returned were
    /// probably not all processed, so positions are not committed and the listener hears
    /// its partitions were lost, not handed over.
    pub(super) fn shut_down(&mut self) {
        let result = if std::thread::panicking() {
            self.leave_uncommitted()
        } else {
            self.unsubscribe()
        };
        if let Err(e) = result {
            log::warn!("closing a consumer of group {:?}: {e}", self.config.group_id);
        }
    }

    /// Leaves the group without committing, telling the listener the partitions are lost.
    fn leave_uncommitted(&mut self) -> Result<()> {
        let owned = self.assignment();
        if self.membership.is_some() && !owned.is_empty() {
            self.tell(|l, c| l.on_partitions_lost(c, &owned));
        }
        let result = self.leave_group(Ok(()));
        self.membership = None;
        result
    }

    /// Gives the partitions up cleanly and leaves the group; a static member stays (it is
    /// expected back).
    fn leave(&mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.group_id.is_some() && self.config.enable_auto_commit && !self.assigned.is_empty() {
            result = self.auto_commit();
        }
        let Some(m) = &self.membership else {
            return result;
        };
        let owned = self.assignment();
        if !owned.is_empty() && matches!(m.phase, Phase::Stable) {
            self.tell(|l, c| l.on_partitions_revoked(c, &owned));
        }
        self.leave_group(result)
    }

    /// Sends LeaveGroup (unless static) and drops the assignment; `result` is what came
    /// before, to which this step's errors are added.
    fn leave_group(&mut self, mut result: Result<()>) -> Result<()> {
        let Some(m) = self.membership.as_mut() else {
            self.set_assignment(&[])?;
            return result;
        };
        m.phase = Phase::Unjoined;
        if !m.member.member_id.is_empty() && m.member.group_instance_id.is_none() {
            let left = coordinator(&self.broker, &m.group)
                .and_then(|c| c.leave_group(&m.group, &m.member.member_id));
            m.member.member_id.clear();
            m.member.generation = -1;
            // A coordinator that cannot be reached expires the member after its session.
            if let Err(e) = left
                && !matches!(
                    e,
                    Error::UnknownMember { .. } | Error::CoordinatorNotAvailable { .. }
                )
            {
                result = result.and(Err(e));
            }
        }
        self.set_assignment(&[])?;
        result
    }

    /// Runs `f` with the listener, if there is one.
    fn tell(&mut self, f: impl FnOnce(&mut dyn RebalanceListener, &mut Consumer)) {
        if let Some(mut l) = self.listener.take() {
            f(l.as_mut(), self);
            if self.listener.is_none() {
                self.listener = Some(l);
            }
        }
    }

    /// Brings the membership to a stable assignment; false if `deadline` passes first.
    pub(super) fn drive_group(&mut self, deadline: Instant) -> Result<bool> {
        self.refresh_topics();
        loop {
            let step = self.group_step(deadline);
            match step {
                Ok(Some(stable)) => return Ok(stable),
                Ok(None) => {}
                // No node of the cluster coordinates groups now: a stable member keeps its
                // partitions meanwhile; any other starts its join again a little later.
                Err(Error::CoordinatorNotAvailable { .. }) => {
                    let m = self.membership.as_mut().expect("subscribed");
                    if matches!(m.phase, Phase::Stable) {
                        // Asked again when its next heartbeat is due.
                        m.last_renewed = Instant::now();
                        return Ok(true);
                    }
                    m.phase = Phase::Unjoined;
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(false);
                    }
                    std::thread::sleep(COORDINATOR_RETRY.min(deadline - now));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One step towards a stable assignment: `Some(stable?)` once the poll should go on (or
    /// give up until the next one), `None` to take another step.
    fn group_step(&mut self, deadline: Instant) -> Result<Option<bool>> {
        let every = self.renewal_every();
        let m = self.membership.as_mut().expect("only called when subscribed");
        match std::mem::replace(&mut m.phase, Phase::Unjoined) {
            Phase::Unjoined => self.start_join()?,
            Phase::Stable => {
                m.phase = Phase::Stable;
                if !m.rejoin {
                    let c = coordinator(&self.broker, &m.group)?;
                    // A coordinator at another node is asked only when a heartbeat is due.
                    if matches!(c, Coordinator::There(_)) && Instant::now() < m.last_renewed + every {
                        return Ok(Some(true));
                    }
                    match c.heartbeat(&m.group, &m.member) {
                        Ok(()) => {
                            m.last_renewed = Instant::now();
                            return Ok(Some(true));
                        }
                        Err(Error::RebalanceInProgress { .. }) => {}
                        Err(e) if is_membership_loss(&e) => self.lose(e)?,
                        Err(e) => return Err(e),
                    }
                }
                self.start_join()?;
            }
            Phase::Joining(pending, at) => match self.wait_for(&pending, at, deadline) {
                None => {
                    self.membership.as_mut().expect("subscribed").phase = Phase::Joining(pending, at);
                    return Ok(Some(false));
                }
                Some(Ok(joined)) => self.joined(joined)?,
                Some(Err(e)) if is_membership_loss(&e) => self.lose(e)?,
                Some(Err(Error::RebalanceInProgress { .. })) => {}
                Some(Err(e)) => return Err(e),
            },
            Phase::Syncing(pending, at) => match self.wait_for(&pending, at, deadline) {
                None => {
                    self.membership.as_mut().expect("subscribed").phase = Phase::Syncing(pending, at);
                    return Ok(Some(false));
                }
                Some(Ok(bytes)) => self.synced(&bytes)?,
                Some(Err(e)) if is_membership_loss(&e) => self.lose(e)?,
                Some(Err(Error::RebalanceInProgress { .. })) => {}
                Some(Err(e)) => return Err(e),
            },
        }
        Ok(None)
    }

    /// When a poll waiting for records must wake to renew the membership (`None` unless the
    /// consumer is a stable member).
    pub(super) fn renewal_due(&self) -> Option<Instant> {
        let m = self.membership.as_ref()?;
        matches!(m.phase, Phase::Stable).then(|| m.last_renewed + self.renewal_every())
    }

    /// How often a stable member renews its membership: every third of
    /// `max.poll.interval.ms`, and in a cluster every 3 s at most (a coordinator at another
    /// node cannot wake the member when a rebalance starts: its heartbeats tell it, as a
    /// Kafka client's do).
    fn renewal_every(&self) -> Duration {
        let every = self.config.max_poll_interval / 3;
        if self.broker.inner.is_clustered() {
            every.min(CLUSTER_HEARTBEAT)
        } else {
            every
        }
    }

    /// Renews a stable membership with a heartbeat if a third of `max.poll.interval.ms` has
    /// passed, as a poll returns. Nothing else: a rebalance the heartbeat reveals is joined by
    /// the next poll, after the records just returned have been processed.
    pub(super) fn renew_if_due(&mut self) {
        if self.renewal_due().is_none_or(|due| Instant::now() < due) {
            return;
        }
        let m = self.membership.as_mut().expect("stable");
        let beat = coordinator(&self.broker, &m.group).and_then(|c| c.heartbeat(&m.group, &m.member));
        if let Err(Error::RebalanceInProgress { .. }) = beat {
            m.rejoin = true;
        }
        if beat.is_ok() {
            m.last_renewed = Instant::now();
        }
    }

    /// Waits for a reply from the coordinator `at` (`None`: this node's), expiring what is due
    /// in the group meanwhile. A reply from a coordinator that is no longer the group's will
    /// not come: that is `CoordinatorNotAvailable` (the member joins again).
    fn wait_for<T>(
        &self,
        pending: &Pending<Result<T>>,
        at: Option<u64>,
        deadline: Instant,
    ) -> Option<Result<T>> {
        let group = &self.membership.as_ref().expect("subscribed").group;
        loop {
            let now = Instant::now();
            if let Some(v) = pending.wait_until(deadline.min(now + TICK)) {
                return Some(v);
            }
            match coordinator(&self.broker, group) {
                Ok(Coordinator::Here(broker)) if at.is_none() => broker.inner.groups.tick_group(group),
                Ok(Coordinator::There(remote)) if at == Some(remote.node()) => {}
                _ => {
                    return Some(Err(Error::CoordinatorNotAvailable { group: group.clone() }));
                }
            }
            // A wakeup ends the wait as the deadline would; the join goes on at the next poll.
            if Instant::now() >= deadline || self.woken() {
                return pending.try_take();
            }
        }
    }

    /// Resolves a pattern against the topics, and as leader watches partition counts; a change
    /// means joining again.
    fn refresh_topics(&mut self) {
        let broker = self.broker.clone();
        let max_age = self.config.metadata_max_age;
        let m = self.membership.as_mut().expect("subscribed");
        let now = Instant::now();
        if now < m.next_refresh {
            return;
        }
        m.next_refresh = now + max_age;
        let resolved: BTreeSet<String> = match &m.topics {
            Topics::List(t) => t.clone(),
            Topics::Pattern(re) => broker
                .list_topics()
                .into_iter()
                .filter(|t| !crate::broker::is_internal(t) && re.is_match(t))
                .collect(),
        };
        if resolved != m.resolved {
            m.resolved = resolved;
            m.rejoin = true;
        }
        if let Some(counts) = &m.assigned_counts
            && *counts != partition_counts(&broker, m.resolved.iter())
        {
            m.rejoin = true;
        }
    }

    /// Sends a JoinGroup. An eager consumer first gives up everything it owns.
    fn start_join(&mut self) -> Result<()> {
        let cooperative = self.membership.as_ref().expect("subscribed").cooperative;
        if !cooperative && !self.assigned.is_empty() {
            if self.config.enable_auto_commit {
                self.auto_commit()?;
            }
            let owned = self.assignment();
            self.tell(|l, c| l.on_partitions_revoked(c, &owned));
            self.set_assignment(&[])?;
        }
        let owned = if cooperative {
            self.assignment()
        } else {
            Vec::new()
        };
        let signal = self.signal.clone();
        let m = self.membership.as_mut().expect("subscribed");
        let metadata = |assignor: &Assignor| {
            let user_data = (*assignor == Assignor::Sticky).then(|| m.previous.encode());
            Subscription {
                topics: m.resolved.clone(),
                owned: owned.clone(),
                user_data,
            }
            .encode()
        };
        let request = JoinGroup {
            member_id: m.member.member_id.clone(),
            group_instance_id: m.member.group_instance_id.clone(),
            client_id: self.config.client_id.clone(),
            session_timeout: self.config.max_poll_interval,
            rebalance_timeout: self.config.max_poll_interval,
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|a| (a.name().to_string(), metadata(a)))
                .collect(),
            notify: Some(signal),
        };
        let c = coordinator(&self.broker, &m.group)?;
        let mut request = request;
        if let Coordinator::There(remote) = &c
            && request.member_id.is_empty()
            && request.group_instance_id.is_none()
        {
            // A new member takes an id before it joins, so that a join whose answer is lost
            // is made again under the same id rather than leave another member behind.
            let id = remote.reserve_member_id(&m.group, &request)?;
            m.member.member_id = id.clone();
            request.member_id = id;
        }
        let joining = c.join_group(&m.group, request);
        m.rejoin = false;
        m.phase = Phase::Joining(joining, c.node());
        Ok(())
    }

    /// The join completed: as leader, compute the assignment; then send SyncGroup.
    fn joined(&mut self, joined: Joined) -> Result<()> {
        let assignments = if joined.is_leader() {
            self.compute_assignment(&joined)?
        } else {
            Vec::new()
        };
        let m = self.membership.as_mut().expect("subscribed");
        if !joined.is_leader() {
            m.assigned_counts = None;
        }
        m.member.member_id = joined.member_id;
        m.member.generation = joined.generation;
        let c = coordinator(&self.broker, &m.group)?;
        m.phase = Phase::Syncing(c.sync_group(&m.group, &m.member, assignments), c.node());
        Ok(())
    }

    fn compute_assignment(&mut self, joined: &Joined) -> Result<Vec<(String, Vec<u8>)>> {
        let assignor =
            Assignor::from_name(&joined.protocol).ok_or_else(|| Error::InconsistentGroupProtocol {
                group: self.membership.as_ref().expect("subscribed").group.clone(),
                reason: format!("assignor {:?} is not one this consumer knows", joined.protocol),
            })?;
        let mut members = Vec::with_capacity(joined.members.len());
        // Under eager sticky, what each member owned comes from its user data, with the
        // generation it was assigned in: of two members claiming a partition, the later
        // generation's claim stands (an older one is a member that lost it meanwhile).
        let mut generations = Vec::with_capacity(joined.members.len());
        for jm in &joined.members {
            let s = Subscription::decode(&jm.metadata)?;
            let previous = (assignor == Assignor::Sticky && s.owned.is_empty())
                .then(|| s.user_data.as_deref().and_then(StickyUserData::decode))
                .flatten();
            let (owned, generation) = match previous {
                Some(p) => (p.previous, p.generation.unwrap_or(-1)),
                None => (s.owned, i32::MAX),
            };
            generations.push(generation);
            members.push(Member {
                id: jm.member_id.clone(),
                topics: s.topics,
                owned,
            });
        }
        let mut latest: BTreeMap<TopicPartition, i32> = BTreeMap::new();
        for (m, &g) in members.iter().zip(&generations) {
            for tp in &m.owned {
                let claim = latest.entry(tp.clone()).or_insert(g);
                *claim = (*claim).max(g);
            }
        }
        for (m, &g) in members.iter_mut().zip(&generations) {
            m.owned.retain(|tp| latest[tp] == g);
        }
        let topics: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
        let counts = partition_counts(&self.broker, topics.into_iter());
        let assignment = assignor.assign(&counts, &members);
        let m = self.membership.as_mut().expect("subscribed");
        m.assigned_counts = Some(partition_counts(&self.broker, m.resolved.iter()));
        Ok(assignment
            .into_iter()
            .map(|(id, partitions)| {
                let bytes = MemberAssignment {
                    partitions,
                    user_data: None,
                }
                .encode();
                (id, bytes)
            })
            .collect())
    }

    /// The sync completed: take up the new assignment.
    fn synced(&mut self, bytes: &[u8]) -> Result<()> {
        let mut new = MemberAssignment::decode(bytes)?.partitions;
        // A partition of a topic deleted since the leader looked cannot be consumed.
        new.retain(|tp| self.broker.partition(&tp.topic, tp.partition).is_ok());
        new.sort();
        // Asked before anything changes (the listener hears of nothing if this fails).
        let resume = self.resume_points(&new)?;
        let cooperative = self.membership.as_ref().expect("subscribed").cooperative;
        let owned = self.assignment();
        let revoked: Vec<TopicPartition> = owned.iter().filter(|tp| !new.contains(tp)).cloned().collect();
        let added: Vec<TopicPartition> = new.iter().filter(|tp| !owned.contains(tp)).cloned().collect();
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                let positions = self.commit_entries(&revoked);
                let committed = self.commit_offsets(&positions);
                self.refusal_logged(committed)?;
            }
            self.tell(|l, c| l.on_partitions_revoked(c, &revoked));
        }
        self.apply_assignment(&new, &resume)?;
        let m = self.membership.as_mut().expect("subscribed");
        m.phase = Phase::Stable;
        m.previous = StickyUserData {
            previous: new.clone(),
            generation: Some(m.member.generation),
        };
        if cooperative && !revoked.is_empty() {
            // The partitions given up go to their new owners in the next round.
            m.rejoin = true;
        }
        let assigned = if cooperative { added } else { new };
        self.tell(|l, c| l.on_partitions_assigned(c, &assigned));
        Ok(())
    }

    /// The group moved on without this member: its partitions are lost. It joins again as a
    /// new member unless another took its static identity.
    fn lose(&mut self, cause: Error) -> Result<()> {
        log::info!("consumer lost its group membership: {cause}");
        let owned = self.assignment();
        if !owned.is_empty() {
            self.tell(|l, c| l.on_partitions_lost(c, &owned));
        }
        self.set_assignment(&[])?;
        let m = self.membership.as_mut().expect("subscribed");
        m.phase = Phase::Unjoined;
        m.member.generation = -1;
        match cause {
            Error::FencedInstanceId { .. } => Err(cause),
            Error::UnknownMember { .. } => {
                m.member.member_id.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Errors by which the group refuses a commit: it is rebalancing, or has moved on without
/// this member (or, in a cluster, no node coordinates groups at the moment).
pub(super) fn is_group_refusal(e: &Error) -> bool {
    is_membership_loss(e)
        || matches!(
            e,
            Error::RebalanceInProgress { .. } | Error::CoordinatorNotAvailable { .. }
        )
}

/// How long a member waits before asking again when no node coordinates groups.
const COORDINATOR_RETRY: Duration = Duration::from_millis(100);

/// How often a stable member of a cluster's group renews its membership (at most).
const CLUSTER_HEARTBEAT: Duration = Duration::from_secs(3);

/// Where a group's requests go: this node's coordinator, or a cluster's at another node.
enum Coordinator {
    Here(crate::Broker),
    There(Arc<dyn RemoteCoordinator>),
}

/// The coordinator of `group` for this node's members.
fn coordinator(broker: &crate::Broker, group: &str) -> Result<Coordinator> {
    Ok(match broker.inner.remote_coordinator(group)? {
        None => Coordinator::Here(broker.clone()),
        Some(remote) => Coordinator::There(remote),
    })
}

impl Coordinator {
    /// The coordinator's node, if it is another.
    fn node(&self) -> Option<u64> {
        match self {
            Coordinator::Here(_) => None,
            Coordinator::There(r) => Some(r.node()),
        }
    }

    fn join_group(&self, group: &str, request: JoinGroup) -> Pending<Result<Joined>> {
        match self {
            Coordinator::Here(b) => b.inner.groups.join_group(group, request),
            Coordinator::There(r) => r.join_group(group, request),
        }
    }

    fn sync_group(
        &self,
        group: &str,
        member: &MemberRef,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Pending<Result<Vec<u8>>> {
        match self {
            Coordinator::Here(b) => b.inner.groups.sync_group(group, member, assignments),
            Coordinator::There(r) => r.sync_group(group, member, assignments),
        }
    }

    fn heartbeat(&self, group: &str, member: &MemberRef) -> Result<()> {
        match self {
            Coordinator::Here(b) => b.inner.groups.heartbeat(group, member),
            Coordinator::There(r) => r.heartbeat(group, member),
        }
    }

    fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        match self {
            Coordinator::Here(b) => b.inner.groups.leave_group(group, member_id, None),
            Coordinator::There(r) => r.leave_group(group, member_id),
        }
    }
}

/// Errors that mean the member is no longer part of the current generation.
fn is_membership_loss(e: &Error) -> bool {
    matches!(
        e,
        Error::UnknownMember { .. } | Error::IllegalGeneration { .. } | Error::FencedInstanceId { .. }
    )
}

/// The partition counts of those of `topics` that exist.
fn partition_counts<'a>(
    broker: &crate::Broker,
    topics: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, u32> {
    topics
        .filter_map(|t| broker.partition_count(t).ok().map(|n| (t.clone(), n)))
        .collect()
}
