//! Partition assignors: pure functions from the group's members (with their subscriptions and
//! what they own now) and the topics' partition counts to an assignment. The group coordinator
//! calls the one the members agree on; in Kafka's classic protocol the group leader runs it.
//!
//! - `range`: per topic, contiguous ranges of partitions to the members subscribed to it, in
//!   member-id order (Kafka's `RangeAssignor`).
//! - `roundrobin`: all partitions, in (topic, partition) order, dealt to the members in turn,
//!   skipping members not subscribed to the topic.
//! - `sticky`: balanced (counts differ by at most one when subscriptions are the same), and
//!   every member keeps as much of what it owns as balance allows.
//! - `cooperative-sticky`: the sticky target, reached incrementally: a partition that must move
//!   is only revoked from its owner in this round and assigned in the next, so partitions that
//!   stay never stop being consumed.

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer::TopicPartition;

/// What the assignor knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id in the group.
    pub id: String,
    /// Topics it subscribes to.
    pub topics: BTreeSet<String>,
    /// Partitions it owns now (from its last assignment).
    pub owned: Vec<TopicPartition>,
}

/// An assignment: member id to its partitions, sorted.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// A partition assignment strategy (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignor {
    /// Kafka's `range`.
    Range,
    /// Kafka's `roundrobin`.
    RoundRobin,
    /// Kafka's `sticky`.
    Sticky,
    /// Kafka's `cooperative-sticky`.
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name Kafka clients use for it.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor with Kafka's protocol name `name`.
    pub fn from_name(name: &str) -> Option<Assignor> {
        [
            Self::Range,
            Self::RoundRobin,
            Self::Sticky,
            Self::CooperativeSticky,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// True if a rebalance only revokes partitions that move (incremental rebalancing).
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// Assigns the partitions of the subscribed topics (`partitions` gives each topic's count;
    /// topics missing from it are skipped) to `members`. Every member appears in the result.
    /// Under `cooperative-sticky` a partition that changes owner is left out of this round.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use rivulet::TopicPartition;
    /// use rivulet::group::{Assignor, Member};
    /// let counts = BTreeMap::from([("t".to_string(), 4)]);
    /// let member = |id: &str, owned: &[u32]| Member {
    ///     id: id.to_string(),
    ///     topics: ["t".to_string()].into(),
    ///     owned: owned.iter().map(|&p| TopicPartition::new("t", p)).collect(),
    /// };
    /// // "a" owned everything; "b" just joined.
    /// let members = [member("a", &[0, 1, 2, 3]), member("b", &[])];
    /// let eager = Assignor::Sticky.assign(&counts, &members);
    /// assert_eq!((eager["a"].len(), eager["b"].len()), (2, 2));
    /// // Cooperative: "a" keeps two and gives up two; "b" gets them in the next round.
    /// let first = Assignor::CooperativeSticky.assign(&counts, &members);
    /// assert_eq!((first["a"].len(), first["b"].len()), (2, 0));
    /// ```
    pub fn assign(self, partitions: &BTreeMap<String, u32>, members: &[Member]) -> Assignment {
        let mut out: Assignment = members.iter().map(|m| (m.id.clone(), Vec::new())).collect();
        match self {
            Assignor::Range => range(partitions, members, &mut out),
            Assignor::RoundRobin => round_robin(partitions, members, &mut out),
            Assignor::Sticky => sticky(partitions, members, &mut out),
            Assignor::CooperativeSticky => {
                sticky(partitions, members, &mut out);
                // Hold back every partition another member still owns: it is revoked first.
                let owner: BTreeMap<&TopicPartition, &str> = members
                    .iter()
                    .flat_map(|m| m.owned.iter().map(move |tp| (tp, m.id.as_str())))
                    .collect();
                for (id, tps) in out.iter_mut() {
                    tps.retain(|tp| owner.get(tp).is_none_or(|o| o == id));
                }
            }
        }
        for tps in out.values_mut() {
            tps.sort();
        }
        out
    }
}

/// The members subscribed to `topic`, sorted by id.
fn subscribers<'a>(members: &'a [Member], topic: &str) -> Vec<&'a Member> {
    let mut v: Vec<&Member> = members.iter().filter(|m| m.topics.contains(topic)).collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn range(partitions: &BTreeMap<String, u32>, members: &[Member], out: &mut Assignment) {
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        let (each, extra) = (count as usize / subs.len(), count as usize % subs.len());
        let mut next = 0u32;
        for (i, m) in subs.iter().enumerate() {
            let n = each + usize::from(i < extra);
            let tps = out.get_mut(&m.id).expect("every member has an entry");
            tps.extend((next..next + n as u32).map(|p| TopicPartition::new(topic.clone(), p)));
            next += n as u32;
        }
    }
}

fn round_robin(partitions: &BTreeMap<String, u32>, members: &[Member], out: &mut Assignment) {
    let mut order: Vec<&Member> = members.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    if order.is_empty() {
        return;
    }
    let mut turn = 0usize;
    for (topic, &count) in partitions {
        if !order.iter().any(|m| m.topics.contains(topic)) {
            continue;
        }
        for p in 0..count {
            // The next member in turn that subscribes to the topic.
            while !order[turn % order.len()].topics.contains(topic) {
                turn += 1;
            }
            let id = &order[turn % order.len()].id;
            out.get_mut(id)
                .expect("member")
                .push(TopicPartition::new(topic.clone(), p));
            turn += 1;
        }
    }
}

fn sticky(partitions: &BTreeMap<String, u32>, members: &[Member], out: &mut Assignment) {
    let exists = |tp: &TopicPartition| partitions.get(&tp.topic).is_some_and(|&n| tp.partition < n);
    let eligible = |m: &Member, tp: &TopicPartition| m.topics.contains(&tp.topic);
    let by_id: BTreeMap<&str, &Member> = members.iter().map(|m| (m.id.as_str(), m)).collect();
    let all: Vec<TopicPartition> = partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.topics.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    // Balance is judged against what an even split would give.
    let quota = all.len().div_ceil(members.len().max(1));

    // 1. Members keep what they own, if it still exists, they still subscribe to it, no one
    //    claimed it first, and they do not exceed the quota.
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut order: Vec<&Member> = members.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    for m in &order {
        let mut owned: Vec<&TopicPartition> = m
            .owned
            .iter()
            .filter(|tp| exists(tp) && eligible(m, tp))
            .collect();
        owned.sort();
        for tp in owned {
            let mine = out.get_mut(&m.id).expect("member");
            if mine.len() < quota && taken.insert(tp.clone()) {
                mine.push(tp.clone());
            }
        }
    }
    // 2. Every other partition goes to the eligible member with the fewest.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let target = order
            .iter()
            .filter(|m| eligible(m, tp))
            .min_by_key(|m| (out[&m.id].len(), m.id.clone()));
        if let Some(m) = target {
            out.get_mut(&m.id).expect("member").push(tp.clone());
        }
    }
    // 3. Move partitions from the most to the least loaded eligible member while they differ
    //    by more than one, preferring partitions the giver did not own before: each move brings
    //    the spread down, so this ends.
    for _ in 0..all.len() * members.len().max(1) {
        let mut best: Option<((usize, bool), String, String, TopicPartition)> = None;
        for (from, tps) in out.iter() {
            for tp in tps {
                let fresh = !by_id[from.as_str()].owned.contains(tp);
                for to in by_id.values().filter(|m| m.id != *from && eligible(m, tp)) {
                    let gap = tps.len().saturating_sub(out[&to.id].len());
                    let score = (gap, fresh);
                    if gap > 1 && best.as_ref().is_none_or(|b| score > b.0) {
                        best = Some((score, from.clone(), to.id.clone(), tp.clone()));
                    }
                }
            }
        }
        let Some((_, from, to, tp)) = best else { break };
        out.get_mut(&from).expect("member").retain(|x| *x != tp);
        out.get_mut(&to).expect("member").push(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, u32)]) -> Member {
        Member {
            id: id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
        }
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(Vec::len).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_with_the_extra_to_the_first_members() {
        let parts = BTreeMap::from([("t".to_string(), 7)]);
        let a = Assignor::Range.assign(
            &parts,
            &[
                member("b", &["t"], &[]),
                member("a", &["t"], &[]),
                member("c", &["t"], &[]),
            ],
        );
        let ps = |id: &str| a[id].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(
            (ps("a"), ps("b"), ps("c")),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6])
        );
    }

    #[test]
    fn round_robin_deals_in_turn() {
        let parts = BTreeMap::from([("t".to_string(), 5)]);
        let a = Assignor::RoundRobin.assign(&parts, &[member("a", &["t"], &[]), member("b", &["t"], &[])]);
        let ps = |id: &str| a[id].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!((ps("a"), ps("b")), (vec![0, 2, 4], vec![1, 3]));
    }

    #[test]
    fn cooperative_sticky_revokes_before_it_reassigns() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let owned = [("t", 0), ("t", 1), ("t", 2), ("t", 3)];
        // "a" owned everything; "b" joins. First round: "a" keeps two, two are held back.
        let round1 = Assignor::CooperativeSticky
            .assign(&parts, &[member("a", &["t"], &owned), member("b", &["t"], &[])]);
        assert_eq!(round1["a"].len(), 2);
        assert!(round1["b"].is_empty());
        // Second round, after "a" gave up what it lost: "b" gets it.
        let round2 = Assignor::CooperativeSticky.assign(
            &parts,
            &[
                member("a", &["t"], &[("t", 0), ("t", 1)]),
                member("b", &["t"], &[]),
            ],
        );
        assert_eq!(round2["a"], round1["a"]);
        assert_eq!(round2["b"].len(), 2);
    }

    #[test]
    fn names_match_kafka() {
        for a in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::Sticky,
            Assignor::CooperativeSticky,
        ] {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::from_name("uniform"), None);
    }

    /// A group whose members all subscribe to the same topics, with random previous ownership.
    fn group() -> impl Strategy<Value = (BTreeMap<String, u32>, Vec<Member>)> {
        let topics = proptest::collection::btree_map("[a-c]", 1u32..12, 1..4);
        (topics, 1usize..7)
            .prop_flat_map(|(topics, n)| {
                let names: Vec<String> = topics.keys().cloned().collect();
                let all: Vec<TopicPartition> = topics
                    .iter()
                    .flat_map(|(t, &c)| (0..c).map(move |p| TopicPartition::new(t.clone(), p)))
                    .collect();
                let owners = proptest::collection::vec(proptest::option::of(0..n), all.len());
                (Just(topics), Just(names), Just(all), owners, Just(n))
            })
            .prop_map(|(topics, names, all, owners, n)| {
                let members = (0..n)
                    .map(|i| Member {
                        id: format!("m{i}"),
                        topics: names.iter().cloned().collect(),
                        owned: all
                            .iter()
                            .zip(&owners)
                            .filter(|(_, o)| **o == Some(i))
                            .map(|(tp, _)| tp.clone())
                            .collect(),
                    })
                    .collect();
                (topics, members)
            })
    }

    proptest! {
        #[test]
        fn every_partition_goes_to_exactly_one_member((parts, members) in group()) {
            let total: u32 = parts.values().sum();
            for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky] {
                let a = assignor.assign(&parts, &members);
                prop_assert_eq!(a.len(), members.len());
                let all: Vec<&TopicPartition> = a.values().flatten().collect();
                let unique: BTreeSet<&TopicPartition> = all.iter().copied().collect();
                prop_assert_eq!(all.len(), total as usize, "{}", assignor.name());
                prop_assert_eq!(unique.len(), total as usize, "{}", assignor.name());
            }
        }

        #[test]
        fn round_robin_and_sticky_balance_within_one((parts, members) in group()) {
            for assignor in [Assignor::RoundRobin, Assignor::Sticky] {
                let c = counts(&assignor.assign(&parts, &members));
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{} {:?}", assignor.name(), c);
            }
        }

        #[test]
        fn sticky_keeps_what_balance_allows((parts, members) in group()) {
            let a = Assignor::Sticky.assign(&parts, &members);
            let total: usize = parts.values().sum::<u32>() as usize;
            let floor = total / members.len();
            for m in &members {
                let kept = m.owned.iter().filter(|tp| a[&m.id].contains(tp)).count();
                prop_assert!(kept >= m.owned.len().min(floor), "{} kept {} of {:?}", m.id, kept, m.owned);
            }
        }

        #[test]
        fn cooperative_sticky_never_hands_over_a_partition_still_owned((parts, members) in group()) {
            let a = Assignor::CooperativeSticky.assign(&parts, &members);
            let sticky = Assignor::Sticky.assign(&parts, &members);
            for m in &members {
                for tp in &a[&m.id] {
                    let owner = members.iter().find(|o| o.owned.contains(tp));
                    prop_assert!(owner.is_none_or(|o| o.id == m.id), "{} given {} owned by another", m.id, tp);
                    // And it is a subset of the sticky target.
                    prop_assert!(sticky[&m.id].contains(tp));
                }
            }
        }
    }
}
