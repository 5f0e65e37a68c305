//! A work queue: jobs go into a topic, several workers in one group take them, and a worker
//! that crashes mid-batch loses nothing: the jobs it took but did not commit go to the others.
//!
//! Workers commit after finishing each batch (at-least-once: a crash between finishing a job
//! and committing makes it run again, so jobs should be idempotent).
//!
//! `cargo run --release --example durable_queue`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig};

const JOBS: u32 = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::open(dir.path())?;
    broker.create_topic("jobs", 6, TopicConfig::default())?;
    let producer = Producer::new(&broker);
    for id in 0..JOBS {
        producer.send(ProducerRecord::new("jobs", format!("job-{id}").as_bytes()))?;
    }

    // Job id -> how many times it was done.
    let done: Arc<Mutex<BTreeMap<u32, u32>>> = Arc::default();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (broker, done) = (broker.clone(), done.clone());
            thread::spawn(move || worker(w, &broker, &done))
        })
        .collect();
    for w in workers {
        w.join().expect("a worker thread")?;
    }

    let done = done.lock().unwrap();
    let twice = done.values().filter(|&&n| n > 1).count();
    println!(
        "{} of {JOBS} jobs done; {twice} done twice because a worker crashed before committing",
        done.len()
    );
    assert_eq!(done.len() as u32, JOBS, "no job is lost");
    Ok(())
}

fn worker(w: usize, broker: &Broker, done: &Mutex<BTreeMap<u32, u32>>) -> rivulet::Result<()> {
    let config = ConsumerConfig::default()
        .group_id("workers")
        .client_id(format!("worker-{w}"))
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false)
        .max_poll_records(50);
    let mut consumer = Consumer::new(broker, config);
    consumer.subscribe(["jobs"])?;
    let mut batches = 0;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(500) {
        let records = consumer.poll(Duration::from_millis(50))?;
        if records.is_empty() {
            continue;
        }
        idle_since = Instant::now();
        for r in records.iter() {
            let id: u32 = std::str::from_utf8(r.value.unwrap_or_default())
                .ok()
                .and_then(|v| v.strip_prefix("job-")?.parse().ok())
                .expect("job ids are well formed");
            *done.lock().unwrap().entry(id).or_default() += 1;
        }
        batches += 1;
        if w == 0 && batches == 5 {
            // Worker 0 crashes after doing its fifth batch, before committing it. Dropping the
            // consumer leaves the group (auto-commit is off, so nothing is committed), and its
            // partitions go to the others, which start from the last commit.
            println!("worker 0 crashes with a batch done but not committed");
            drop(consumer);
            return Ok(());
        }
        consumer.commit()?;
    }
    println!("worker {w} is done");
    consumer.close()
}
