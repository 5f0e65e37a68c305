//! A group of consumer threads with randomised timing (seeded, so a failure can be replayed
//! with `RIVULET_GROUP_SEED=<seed>`): members poll at random paces, some leave cleanly, some
//! are dropped mid-stream, one stops polling long enough to be removed, and new members join,
//! while a producer keeps writing. Every delivery and every listener call is recorded, and the
//! invariants are checked on the history:
//!
//! 1. in each generation, each partition's records go to one member only;
//! 2. every record produced is delivered (at least once across the whole run);
//! 3. within one member's run of a generation, a partition's offsets increase by one;
//! 4. under cooperative-sticky, a member is only told to revoke partitions its next assignment
//!    does not hold (partitions that stay are never revoked).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rivulet::group::Assignor;
use rivulet::{
    Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, RebalanceListener, TopicConfig,
    TopicPartition,
};

const PARTITIONS: u32 = 6;
const RECORDS: u32 = 6_000;

#[derive(Debug, Clone)]
enum Event {
    Delivered {
        member: String,
        generation: i32,
        tp: TopicPartition,
        offset: i64,
    },
    /// The assignment a member holds after a rebalance completed for it.
    Holds {
        member: String,
        tps: Vec<TopicPartition>,
    },
    Revoked {
        member: String,
        tps: Vec<TopicPartition>,
    },
}

type History = Arc<Mutex<Vec<Event>>>;

struct Listener(History);

impl RebalanceListener for Listener {
    fn on_partitions_revoked(&mut self, c: &mut Consumer, tps: &[TopicPartition]) {
        if let Some((member, _)) = c.group_metadata() {
            self.0.lock().unwrap().push(Event::Revoked {
                member,
                tps: tps.to_vec(),
            });
        }
    }
    fn on_partitions_assigned(&mut self, c: &mut Consumer, _: &[TopicPartition]) {
        if let Some((member, _)) = c.group_metadata() {
            self.0.lock().unwrap().push(Event::Holds {
                member,
                tps: c.assignment(),
            });
        }
    }
    fn on_partitions_lost(&mut self, _: &mut Consumer, _: &[TopicPartition]) {}
}

/// xorshift64*: small, seeded, good enough for timing choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a member ends.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Polls until told to stop, then closes.
    Stays,
    /// Closes cleanly after a while.
    Leaves,
    /// Is dropped mid-stream without `close` (a crash of the thread's work).
    Dropped,
    /// Stops polling for longer than `max.poll.interval.ms`, then carries on.
    Stalls,
}

fn run_member(
    broker: Broker,
    history: History,
    seed: u64,
    fate: Fate,
    stop: Arc<AtomicBool>,
    assignor: Assignor,
) {
    let mut rng = Rng(seed | 1);
    let config = ConsumerConfig::default()
        .group_id("workers")
        .auto_offset_reset(OffsetReset::Earliest)
        .partition_assignment_strategy(&[assignor])
        .max_poll_interval(Duration::from_millis(400))
        .max_poll_records(1 + rng.below(50) as usize)
        .auto_commit_interval(Duration::from_millis(rng.below(30)));
    let mut c = Consumer::new(&broker, config);
    c.set_rebalance_listener(Listener(history.clone()));
    c.subscribe(["jobs"]).unwrap();
    let polls = 20 + rng.below(200);
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match fate {
            Fate::Leaves | Fate::Dropped if i == polls => break,
            Fate::Stalls if i == polls => thread::sleep(Duration::from_millis(700)),
            _ => {}
        }
        let records = c.poll(Duration::from_millis(rng.below(20))).unwrap();
        if let Some((member, generation)) = c.group_metadata() {
            let mut h = history.lock().unwrap();
            for r in records.iter() {
                h.push(Event::Delivered {
                    member: member.clone(),
                    generation,
                    tp: TopicPartition::new(r.topic, r.partition),
                    offset: r.offset,
                });
            }
        } else {
            assert!(records.is_empty(), "records only come with a generation");
        }
        // "Processing": a random pause, sometimes none.
        if rng.below(3) == 0 {
            thread::sleep(Duration::from_micros(rng.below(3_000)));
        }
    }
    match fate {
        Fate::Dropped => drop(c),
        _ => c.close().unwrap(),
    }
}

fn run(seed: u64, assignor: Assignor) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic("jobs", PARTITIONS, TopicConfig::default())
        .unwrap();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = Rng(seed);

    let producer = {
        let broker = broker.clone();
        let pace = rng.below(200);
        thread::spawn(move || {
            let p = Producer::new(&broker);
            for i in 0..RECORDS {
                p.send(ProducerRecord::new("jobs", &i.to_be_bytes()).partition(i % PARTITIONS))
                    .unwrap();
                if i % 100 == 0 {
                    thread::sleep(Duration::from_micros(pace * 10));
                }
            }
        })
    };
    let fates = [
        Fate::Stays,
        Fate::Stays,
        Fate::Leaves,
        Fate::Dropped,
        Fate::Stalls,
        Fate::Leaves,
    ];
    let mut members = Vec::new();
    for (i, fate) in fates.into_iter().enumerate() {
        // Members arrive at random times.
        thread::sleep(Duration::from_millis(rng.below(60)));
        let (b, h, s) = (broker.clone(), history.clone(), stop.clone());
        let member_seed = rng.next() ^ i as u64;
        members.push(thread::spawn(move || {
            run_member(b, h, member_seed, fate, s, assignor)
        }));
    }
    producer.join().unwrap();

    // Wait (bounded) until everything produced has been delivered, then stop the stayers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: BTreeSet<(u32, i64)> = history
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Delivered { tp, offset, .. } => Some((tp.partition, *offset)),
                _ => None,
            })
            .collect();
        if delivered.len() == RECORDS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: only {} of {RECORDS} delivered",
            delivered.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    for m in members {
        m.join().unwrap();
    }
    check(seed, assignor, &history.lock().unwrap());
}

fn check(seed: u64, assignor: Assignor, history: &[Event]) {
    // 1. One member per (generation, partition).
    let mut owner: BTreeMap<(i32, TopicPartition), &str> = BTreeMap::new();
    // 3. Offsets advance by one within a member's generation.
    let mut last: BTreeMap<(&str, i32, TopicPartition), i64> = BTreeMap::new();
    let mut delivered: BTreeSet<(u32, i64)> = BTreeSet::new();
    let mut generations = BTreeSet::new();
    for e in history {
        if let Event::Delivered {
            member,
            generation,
            tp,
            offset,
        } = e
        {
            let o = owner.entry((*generation, tp.clone())).or_insert(member);
            assert_eq!(
                *o, member,
                "seed {seed}: {tp} went to two members in generation {generation}"
            );
            if let Some(prev) = last.insert((member, *generation, tp.clone()), *offset) {
                assert_eq!(
                    *offset,
                    prev + 1,
                    "seed {seed}: {member} skipped or repeated in {tp}"
                );
            }
            delivered.insert((tp.partition, *offset));
            generations.insert(*generation);
        }
    }
    // 2. Everything delivered.
    for p in 0..PARTITIONS {
        let n = (RECORDS / PARTITIONS) as i64;
        for o in 0..n {
            assert!(
                delivered.contains(&(p, o)),
                "seed {seed}: jobs-{p} offset {o} never delivered"
            );
        }
    }
    assert!(
        generations.len() >= 3,
        "seed {seed}: the run should have rebalanced: {generations:?}"
    );
    // 4. Cooperative: a revoked partition is not in the member's next assignment.
    if assignor.is_cooperative() {
        for (i, e) in history.iter().enumerate() {
            if let Event::Revoked { member, tps } = e {
                let next = history[i + 1..].iter().find_map(|e| match e {
                    Event::Holds { member: m, tps, .. } if m == member => Some(tps),
                    _ => None,
                });
                if let Some(next) = next {
                    for tp in tps {
                        assert!(
                            !next.contains(tp),
                            "seed {seed}: {member} revoked {tp}, which it keeps"
                        );
                    }
                }
            }
        }
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("RIVULET_GROUP_SEED") {
        Ok(s) => vec![s.parse().expect("a u64 seed")],
        Err(_) => vec![0x5eed_0001, 0x5eed_0002],
    }
}

#[test]
fn cooperative_sticky_group_keeps_its_invariants() {
    for seed in seeds() {
        run(seed, Assignor::CooperativeSticky);
    }
}

#[test]
fn eager_range_group_keeps_its_invariants() {
    for seed in seeds() {
        run(seed ^ 0xea6e, Assignor::Range);
    }
}
