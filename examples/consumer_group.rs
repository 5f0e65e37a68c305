//! Consumers in a group share a topic's partitions and rebalance as members come and go; the
//! rebalance listener shows what each member is given and gives up (cooperative-sticky: only
//! partitions that move are revoked), and the group admin shows state, members and lag.
//!
//! `cargo run --release --example consumer_group`

use std::time::Duration;

use rivulet::group::Assignor;
use rivulet::{
    Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, RebalanceListener, TopicConfig,
    TopicPartition,
};

/// Prints what its consumer is told.
struct Log(&'static str);

impl RebalanceListener for Log {
    fn on_partitions_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            println!("  {} assigned {}", self.0, list(partitions));
        }
    }
    fn on_partitions_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        println!("  {} revoked  {}", self.0, list(partitions));
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(", "))
}

fn member(broker: &Broker, name: &'static str) -> rivulet::Result<Consumer> {
    let config = ConsumerConfig::default()
        .group_id("dashboard")
        .client_id(name)
        .auto_offset_reset(OffsetReset::Earliest)
        .partition_assignment_strategy(&[Assignor::CooperativeSticky]);
    let mut c = Consumer::new(broker, config);
    c.set_rebalance_listener(Log(name));
    c.subscribe(["clicks"])?;
    Ok(c)
}

/// Polls every member a few times: in-process members take part in rebalances from `poll`.
fn poll_all(members: &mut [&mut Consumer]) -> rivulet::Result<usize> {
    let mut n = 0;
    for _ in 0..20 {
        for c in members.iter_mut() {
            n += c.poll(Duration::from_millis(5))?.len();
        }
    }
    Ok(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::open(dir.path())?;
    broker.create_topic("clicks", 6, TopicConfig::default())?;
    let producer = Producer::new(&broker);
    for i in 0..600 {
        producer.send(
            ProducerRecord::new("clicks", format!("click-{i}").as_bytes())
                .key(format!("user-{}", i % 50).as_bytes()),
        )?;
    }

    println!("alice joins:");
    let mut alice = member(&broker, "alice")?;
    let mut read = poll_all(&mut [&mut alice])?;
    println!("bob joins:");
    let mut bob = member(&broker, "bob")?;
    read += poll_all(&mut [&mut alice, &mut bob])?;
    println!("carol joins:");
    let mut carol = member(&broker, "carol")?;
    read += poll_all(&mut [&mut alice, &mut bob, &mut carol])?;

    let group = broker.describe_group("dashboard")?;
    println!(
        "group {:?}: {} at generation {}, assignor {}",
        group.group_id,
        group.state.name(),
        group.generation,
        group.protocol
    );
    for m in &group.members {
        println!("  member {} owns {}", m.member_id, list(&m.partitions()?));
    }

    println!("bob leaves:");
    bob.close()?;
    read += poll_all(&mut [&mut alice, &mut carol])?;
    alice.commit()?;
    carol.commit()?;
    println!("{read} records read; committed offsets and lag:");
    for o in broker.group_offsets("dashboard")? {
        println!(
            "  {}: committed {}, lag {}",
            o.partition, o.committed.offset, o.lag
        );
    }
    Ok(())
}
