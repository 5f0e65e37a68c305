//! Kafka's consumer protocol: how a consumer describes its subscription when it joins a group,
//! and how the leader hands each member its assignment. The coordinator treats both as opaque
//! bytes; using Kafka's layouts means in-process consumers and Kafka clients can share a group,
//! either of them leading.
//!
//! ```text
//! Subscription (version 1 written; 0 to 3 read, later fields ignored):
//!   version i16 | topics [string] | user_data bytes (nullable)
//!   | owned_partitions [topic string, partitions [i32]]       (version 1 and later)
//!
//! Assignment (version 1 written; 0 to 3 read):
//!   version i16 | assigned_partitions [topic string, partitions [i32]] | user_data bytes (nullable)
//! ```
//!
//! The eager `sticky` assignor's members put their previous assignment in the subscription's
//! user data, since they revoke everything before joining and so own nothing when they join
//! (Kafka's `StickyAssignor` user data, version 1; version 0 lacks the generation):
//!
//! ```text
//! StickyUserData:
//!   previous_assignment [topic string, partitions [i32]] | generation i32
//! ```
//!
//! Arrays carry an i32 count, strings an i16 length, bytes an i32 length (-1 for null), all
//! big-endian: the classic (non-flexible) encoding.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{Reader, put_bytes, put_string};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// The protocol type consumers join groups with.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// What a consumer member tells the group when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The topics it subscribes to.
    pub topics: BTreeSet<String>,
    /// The partitions it owns now (cooperative rebalancing needs them).
    pub owned: Vec<TopicPartition>,
    /// Opaque data for the assignor.
    pub user_data: Option<Vec<u8>>,
}

/// What the leader hands a member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberAssignment {
    /// The member's partitions.
    pub partitions: Vec<TopicPartition>,
    /// Opaque data from the assignor.
    pub user_data: Option<Vec<u8>>,
}

impl Subscription {
    /// The encoding (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1i16.to_be_bytes());
        out.extend_from_slice(&(self.topics.len() as i32).to_be_bytes());
        for t in &self.topics {
            put_string(&mut out, t);
        }
        put_bytes(&mut out, self.user_data.as_deref());
        put_partitions(&mut out, &self.owned);
        out
    }

    /// Decodes any version from 0 to 3.
    pub fn decode(bytes: &[u8]) -> Result<Subscription> {
        let mut r = Reader(bytes);
        let bad = || Error::InvalidGroupRequest("malformed consumer subscription".into());
        let version = r.i16().ok_or_else(bad)?;
        if version < 0 {
            return Err(bad());
        }
        let n = r.count().ok_or_else(bad)?;
        let mut topics = BTreeSet::new();
        for _ in 0..n {
            topics.insert(r.string().ok_or_else(bad)?);
        }
        let user_data = r.bytes().ok_or_else(bad)?;
        let owned = if version >= 1 {
            r.partitions().ok_or_else(bad)?
        } else {
            Vec::new()
        };
        Ok(Subscription {
            topics,
            owned,
            user_data,
        })
    }
}

impl MemberAssignment {
    /// The encoding (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1i16.to_be_bytes());
        put_partitions(&mut out, &self.partitions);
        put_bytes(&mut out, self.user_data.as_deref());
        out
    }

    /// Decodes any version from 0 to 3. Empty bytes are an empty assignment (what a
    /// coordinator returns to a member the leader gave nothing).
    pub fn decode(bytes: &[u8]) -> Result<MemberAssignment> {
        if bytes.is_empty() {
            return Ok(MemberAssignment::default());
        }
        let mut r = Reader(bytes);
        let bad = || Error::InvalidGroupRequest("malformed consumer assignment".into());
        let version = r.i16().ok_or_else(bad)?;
        if version < 0 {
            return Err(bad());
        }
        let partitions = r.partitions().ok_or_else(bad)?;
        let user_data = r.bytes().ok_or_else(bad)?;
        Ok(MemberAssignment {
            partitions,
            user_data,
        })
    }
}

/// Partitions grouped by topic, topics in order.
fn put_partitions(out: &mut Vec<u8>, tps: &[TopicPartition]) {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, parts) in by_topic {
        put_string(out, topic);
        out.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            out.extend_from_slice(&(p as i32).to_be_bytes());
        }
    }
}

/// The eager `sticky` assignor's user data: a member's previous assignment and the generation
/// it was given in (`None`: version 0, which has none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StickyUserData {
    /// The partitions the member owned before it revoked them to join.
    pub previous: Vec<TopicPartition>,
    /// The generation of that assignment.
    pub generation: Option<i32>,
}

impl StickyUserData {
    /// The encoding (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_partitions(&mut out, &self.previous);
        out.extend_from_slice(&self.generation.unwrap_or(-1).to_be_bytes());
        out
    }

    /// Decodes version 0 or 1; `None` if the bytes are neither.
    pub fn decode(bytes: &[u8]) -> Option<StickyUserData> {
        let mut r = Reader(bytes);
        let previous = r.partitions()?;
        let generation = if r.is_done() { None } else { Some(r.i32()?) };
        r.is_done().then_some(StickyUserData { previous, generation })
    }
}

impl Reader<'_> {
    /// Partitions grouped by topic, as `put_partitions` writes them.
    fn partitions(&mut self) -> Option<Vec<TopicPartition>> {
        let topics = self.count()?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let topic = self.string()?;
            let n = self.count()?;
            for _ in 0..n {
                let p = u32::try_from(self.i32()?).ok()?;
                out.push(TopicPartition::new(topic.clone(), p));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_and_assignment_round_trip() {
        let s = Subscription {
            topics: ["a".to_string(), "b".to_string()].into(),
            owned: vec![TopicPartition::new("a", 0), TopicPartition::new("b", 3)],
            user_data: Some(vec![1, 2]),
        };
        assert_eq!(Subscription::decode(&s.encode()).unwrap(), s);
        let a = MemberAssignment {
            partitions: vec![TopicPartition::new("a", 1), TopicPartition::new("a", 2)],
            user_data: None,
        };
        assert_eq!(MemberAssignment::decode(&a.encode()).unwrap(), a);
        assert_eq!(
            MemberAssignment::decode(&[]).unwrap(),
            MemberAssignment::default()
        );
    }

    #[test]
    fn sticky_user_data_round_trips_in_kafkas_layout() {
        let d = StickyUserData {
            previous: vec![TopicPartition::new("t", 2), TopicPartition::new("t", 5)],
            generation: Some(7),
        };
        let bytes = d.encode();
        // One topic "t" with partitions 2 and 5, then generation 7.
        assert_eq!(
            bytes,
            [
                0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 7
            ]
        );
        assert_eq!(StickyUserData::decode(&bytes), Some(d.clone()));
        let v0 = StickyUserData::decode(&bytes[..bytes.len() - 4]).unwrap();
        assert_eq!((v0.previous, v0.generation), (d.previous, None));
        assert_eq!(StickyUserData::decode(&bytes[..5]), None);
    }

    #[test]
    fn truncated_or_hostile_bytes_are_errors() {
        let s = Subscription {
            topics: ["topic".to_string()].into(),
            ..Default::default()
        }
        .encode();
        for n in 1..s.len() {
            assert!(Subscription::decode(&s[..n]).is_err(), "prefix of {n} bytes");
        }
        // A huge count is refused without allocating for it.
        let hostile = [0, 1, 0x7f, 0xff, 0xff, 0xff];
        assert!(Subscription::decode(&hostile).is_err());
    }
}
