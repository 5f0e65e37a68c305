//! Where partitions are, as the front end tells clients: a broker alone is node 0 and leads
//! every partition; a cluster node answers from its cluster's leaders table, and a request
//! for a partition it does not lead gets NOT_LEADER_OR_FOLLOWER (LEADER_NOT_AVAILABLE while
//! there is no leader), as Kafka answers, so the client asks Metadata again.

use kafka_protocol::error::ResponseError;

use super::Server;

/// The one broker's id, when it is not a cluster's node.
const ALONE: i32 = 0;

/// A partition's replicas, in Kafka's terms.
pub(super) struct View {
    pub(super) leader: Option<i32>,
    pub(super) epoch: i32,
    pub(super) replicas: Vec<i32>,
    pub(super) in_sync: Vec<i32>,
}

/// A cluster node id as a Kafka broker id (the cluster keeps ids within `i32`).
#[cfg(feature = "cluster")]
fn kafka_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

impl Server {
    /// This broker's node id.
    pub(super) fn node_id(&self) -> i32 {
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            return kafka_id(c.node_id());
        }
        ALONE
    }

    /// Whether this broker is a cluster's node.
    #[cfg(feature = "cluster")]
    pub(super) fn in_cluster(&self) -> bool {
        self.broker.inner.cluster.get().is_some()
    }

    /// Every broker clients may connect to: id, host and port.
    pub(super) fn brokers(&self) -> Vec<(i32, String, u16)> {
        let me = self.node_id();
        let (host, port) = self.advertised();
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            let mut brokers: Vec<(i32, String, u16)> = c
                .kafka_nodes()
                .into_iter()
                .filter(|&(id, _)| kafka_id(id) != me)
                .filter_map(|(id, addr)| {
                    let (h, p) = addr?
                        .rsplit_once(':')
                        .map(|(h, p)| (h.to_string(), p.parse().ok()))?;
                    Some((kafka_id(id), h, p?))
                })
                .collect();
            brokers.push((me, host, port));
            brokers.sort();
            return brokers;
        }
        vec![(me, host, port)]
    }

    /// The broker that leads the controller (this one, alone; -1 while none does).
    pub(super) fn controller_id(&self) -> i32 {
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            return c.controller().map_or(-1, kafka_id);
        }
        ALONE
    }

    /// Where a partition's replicas are.
    pub(super) fn placement(&self, topic: &str, partition: i32) -> View {
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            let index = u32::try_from(partition).unwrap_or(u32::MAX);
            let p = c.placement(topic, index).unwrap_or_default();
            return View {
                leader: p.leader.map(kafka_id),
                epoch: i32::try_from(p.epoch).unwrap_or(i32::MAX),
                replicas: p.replicas.into_iter().map(kafka_id).collect(),
                in_sync: p.in_sync.into_iter().map(kafka_id).collect(),
            };
        }
        let _ = (topic, partition);
        View {
            leader: Some(ALONE),
            epoch: 0,
            replicas: vec![ALONE],
            in_sync: vec![ALONE],
        }
    }

    /// Whether this broker coordinates groups (alone, always).
    pub(super) fn coordinates_groups(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            return c.coordinates_groups();
        }
        true
    }

    /// The broker that coordinates groups: id, host and port (`None` while none does).
    pub(super) fn group_coordinator(&self) -> Option<(i32, String, u16)> {
        self.leader_of_state(crate::group::OFFSETS_TOPIC)
    }

    /// The broker that coordinates transactions: id, host and port (`None` while none does).
    pub(super) fn transaction_coordinator(&self) -> Option<(i32, String, u16)> {
        self.leader_of_state(crate::txn::TRANSACTION_STATE_TOPIC)
    }

    /// The broker that leads partition 0 of the internal topic `topic` (this broker alone).
    fn leader_of_state(&self, topic: &str) -> Option<(i32, String, u16)> {
        let id = self.placement(topic, 0).leader;
        #[cfg(feature = "cluster")]
        if self.broker.inner.cluster.get().is_some() {
            return self.brokers().into_iter().find(|b| Some(b.0) == id);
        }
        let _ = id;
        let (host, port) = self.advertised();
        Some((self.node_id(), host, port))
    }

    /// OffsetForLeaderEpoch at this broker, which leads the partition: the largest epoch at
    /// most `epoch` and where the next begins, `None` for an epoch past every one known (or
    /// below 0). A broker alone never truncates its log: whatever epoch its batches carry
    /// (clients write their own), any epoch asked for ends at the log end. A cluster node that
    /// runs no replica of the partition (it is stopping) is not its leader.
    pub(super) fn epoch_end(
        &self,
        topic: &str,
        partition: i32,
        epoch: i32,
        log: &crate::storage::PartitionLog,
    ) -> Result<Option<(i32, i64)>, ResponseError> {
        let Ok(requested) = u64::try_from(epoch) else {
            return Ok(None);
        };
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            let index = u32::try_from(partition).unwrap_or(u32::MAX);
            let found = c
                .epoch_end(topic, index, requested)
                .map_err(|_| ResponseError::NotLeaderOrFollower)?;
            return Ok(found.and_then(|(e, end)| Some((i32::try_from(e).ok()?, end))));
        }
        let _ = (topic, partition, requested);
        Ok(Some((epoch, log.log_end_offset())))
    }

    /// How many brokers hold each partition of `topic`, as CreateTopics reports it: a
    /// cluster's assignment once the topic exists (else the factor `asked`, or the default
    /// for -1, as a validation-only request is answered); a broker alone holds one copy.
    pub(super) fn replication_factor(&self, topic: &str, asked: i16) -> i16 {
        #[cfg(feature = "cluster")]
        if let Some(c) = self.broker.inner.cluster.get() {
            let asked = u16::try_from(asked).ok();
            let n = c
                .replication_of(topic)
                .or_else(|| c.check_replication(asked).ok());
            return n.and_then(|n| i16::try_from(n).ok()).unwrap_or(-1);
        }
        let _ = (topic, asked);
        1
    }

    /// Refuses a request for a partition this broker does not lead.
    pub(super) fn check_leader(&self, topic: &str, partition: i32) -> Result<(), ResponseError> {
        match self.placement(topic, partition).leader {
            Some(l) if l == self.node_id() => Ok(()),
            Some(_) => Err(ResponseError::NotLeaderOrFollower),
            None => Err(ResponseError::LeaderNotAvailable),
        }
    }
}
