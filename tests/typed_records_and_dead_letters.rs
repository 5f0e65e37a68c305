//! Typed records and failure handling through the public API: the serializers encode as
//! Kafka's Java serializers do, a typed producer's records come back from a typed consumer,
//! undecodable records go where the policy says (fail and stay, skip, dead-letter with the
//! failure in Connect's and Spring's headers), and a retrying consumer retries a failed
//! record after its delays, never early, and dead-letters it after the last.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rivulet::retry::{RetryPolicy, RetryingConsumer, headers};
use rivulet::{
    BigEndian, Broker, Consumer, ConsumerConfig, Deserializer, Error, OffsetReset, OnDecodeError,
    OwnedRecord, Producer, ProducerRecord, Raw, Serializer, TopicConfig, TopicPartition, TypedConsumer,
    TypedProducer, Utf8,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn encoded<S: Serializer<T>, T: ?Sized>(s: S, value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    s.serialize("t", value, &mut out).unwrap();
    out
}

#[test]
fn serializers_encode_as_kafkas_java_serializers() {
    // IntegerSerializer, LongSerializer, ShortSerializer, DoubleSerializer, FloatSerializer.
    assert_eq!(encoded(BigEndian, &1i32), [0, 0, 0, 1]);
    assert_eq!(encoded(BigEndian, &-2i32), [0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(
        encoded(BigEndian, &0x0102_0304_0506_0708i64),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(encoded(BigEndian, &-1i16), [0xff, 0xff]);
    assert_eq!(
        encoded(BigEndian, &1.5f64),
        0x3ff8_0000_0000_0000u64.to_be_bytes()
    );
    assert_eq!(encoded(BigEndian, &1.5f32), 0x3fc0_0000u32.to_be_bytes());
    // StringSerializer (UTF-8), ByteArraySerializer.
    assert_eq!(encoded(Utf8, "é"), [0xc3, 0xa9]);
    assert_eq!(encoded(Raw, &b"\x00\xff"[..]), [0, 0xff]);
    // Decoding checks lengths and encodings.
    assert_eq!(
        Deserializer::<i64>::deserialize(&BigEndian, "t", &[0, 0, 0, 0, 0, 0, 1, 0]),
        Ok(256)
    );
    assert!(Deserializer::<i32>::deserialize(&BigEndian, "t", &[0, 1]).is_err());
    assert!(Deserializer::<String>::deserialize(&Utf8, "t", &[0xff]).is_err());
}

fn earliest(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
}

#[test]
fn typed_records_round_trip_and_undecodable_ones_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("scores", 1, TopicConfig::default()).unwrap();
    let typed = TypedProducer::new(Producer::new(&broker), Utf8, BigEndian);
    typed.send("scores", Some("ada"), Some(&10i64)).unwrap();
    // An undecodable value (a Kafka client wrote text), then a good one.
    let raw = Producer::new(&broker);
    raw.send(
        ProducerRecord::new("scores", b"ten")
            .key(b"bob")
            .header("trace", b"t-1"),
    )
    .unwrap();
    typed.send::<str, i64>("scores", Some("cy"), None).unwrap();
    let tp = TopicPartition::new("scores", 0);

    // Fail: the records before it come first, then the poll fails at it, and goes on failing
    // until the application seeks past it.
    let mut consumer = Consumer::new(&broker, earliest("fail"));
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let mut scores = TypedConsumer::<String, i64, _, _>::new(consumer, Utf8, BigEndian);
    let first = scores.poll(TIMEOUT).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].key.as_deref(), first[0].value), (Some("ada"), Some(10)));
    for _ in 0..2 {
        match scores.poll(TIMEOUT) {
            Err(Error::Deserialization { offset: 1, .. }) => {}
            other => panic!("expected the bad record's error, got {other:?}"),
        }
    }
    scores.consumer().seek(&tp, 2).unwrap();
    let rest = scores.poll(TIMEOUT).unwrap();
    assert_eq!(
        (rest[0].key.as_deref(), rest[0].value),
        (Some("cy"), None),
        "a tombstone"
    );

    // Skip.
    let mut consumer = Consumer::new(&broker, earliest("skip"));
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let mut scores = TypedConsumer::<String, i64, _, _>::new(consumer, Utf8, BigEndian)
        .on_decode_error(OnDecodeError::Skip);
    let offsets: Vec<i64> = scores.poll(TIMEOUT).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 2]);

    // Dead-letter: the record as it was, with the failure.
    let mut consumer = Consumer::new(&broker, earliest("dlq"));
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let mut scores = TypedConsumer::<String, i64, _, _>::new(consumer, Utf8, BigEndian)
        .on_decode_error(OnDecodeError::DeadLetter("scores-dlt".into()));
    assert_eq!(scores.poll(TIMEOUT).unwrap().len(), 2);
    let dead = read_all(&broker, "scores-dlt");
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        (d.key.as_deref(), d.value.as_deref()),
        (Some(&b"bob"[..]), Some(&b"ten"[..]))
    );
    let text = |k: &str| String::from_utf8(d.header(k).unwrap().value.unwrap().to_vec()).unwrap();
    assert_eq!(text("trace"), "t-1", "its own headers go with it");
    assert_eq!(text(headers::CONNECT_TOPIC), "scores");
    assert_eq!(text(headers::CONNECT_PARTITION), "0");
    assert_eq!(text(headers::CONNECT_OFFSET), "1");
    assert!(
        text(headers::CONNECT_EXCEPTION_MESSAGE).contains("value"),
        "{}",
        text(headers::CONNECT_EXCEPTION_MESSAGE)
    );
    assert_eq!(text(headers::ORIGINAL_TOPIC), "scores");
    assert_eq!(
        d.header(headers::ORIGINAL_OFFSET).unwrap().value.unwrap(),
        1i64.to_be_bytes()
    );
    assert_eq!(
        d.header(headers::ORIGINAL_PARTITION).unwrap().value.unwrap(),
        0i32.to_be_bytes()
    );
    assert_eq!(text(headers::ORIGINAL_CONSUMER_GROUP), "dlq");
}

fn read_all(broker: &Broker, topic: &str) -> Vec<OwnedRecord> {
    let mut consumer = Consumer::new(
        broker,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    let partitions = broker.partition_count(topic).unwrap();
    let tps: Vec<_> = (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
    consumer.assign(&tps).unwrap();
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(records.iter().map(|r| r.detach()));
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn a_failed_record_is_retried_after_its_delays_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic("payments", 2, TopicConfig::default())
        .unwrap();
    let producer = Producer::new(&broker);
    producer
        .send(ProducerRecord::new("payments", b"always fails").key(b"a"))
        .unwrap();
    producer
        .send(ProducerRecord::new("payments", b"fails once").key(b"b"))
        .unwrap();
    let policy = RetryPolicy::new(
        "payments",
        [Duration::from_millis(50), Duration::from_millis(150)],
    );
    let consumer = Consumer::new(&broker, earliest("billing"));
    let mut payments = RetryingConsumer::new(consumer, producer, policy).unwrap();
    // Every call: the record's value, the topic it came from, and whether it was due.
    let mut calls: Vec<(String, String, bool)> = Vec::new();
    let mut fails_once_tried = false;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while read_all(&broker, "payments-dlt").is_empty() || !fails_once_tried {
        assert!(std::time::Instant::now() < deadline, "calls so far: {calls:?}");
        payments
            .poll(Duration::from_millis(20), |r| {
                let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
                let on_time = RetryPolicy::due(r).is_none_or(|due| now_ms() >= due);
                calls.push((value.clone(), r.topic.clone(), on_time));
                match value.as_str() {
                    "fails once" if r.topic == "payments" => Err("try again"),
                    "fails once" => {
                        fails_once_tried = true;
                        Ok(())
                    }
                    _ => Err("declined"),
                }
            })
            .unwrap();
    }
    assert!(
        calls.iter().all(|(_, _, on_time)| *on_time),
        "a retry ran early: {calls:?}"
    );
    let topics_of = |value: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|(v, _, _)| v == value)
            .map(|(_, t, _)| t.clone())
            .collect()
    };
    assert_eq!(
        topics_of("always fails"),
        ["payments", "payments-retry-0", "payments-retry-1"]
    );
    assert_eq!(topics_of("fails once"), ["payments", "payments-retry-0"]);
    let dead = read_all(&broker, "payments-dlt");
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.value.as_deref(), Some(&b"always fails"[..]));
    // Three deliveries: the topic's and two retry topics' (Spring counts the first).
    assert_eq!(RetryPolicy::attempts(d), 3);
    let text = |k: &str| String::from_utf8(d.header(k).unwrap().value.unwrap().to_vec()).unwrap();
    assert_eq!(
        text(headers::ORIGINAL_TOPIC),
        "payments",
        "the first topic, through the retries"
    );
    assert_eq!(text(headers::CONNECT_TOPIC), "payments");
    assert_eq!(text(headers::EXCEPTION_MESSAGE), "declined");
    // Each header is there once.
    let mut counts = BTreeMap::new();
    for h in &d.headers {
        *counts.entry(h.key.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // The group's offsets are past everything handled.
    let committed = payments
        .consumer()
        .committed(&[
            TopicPartition::new("payments", 0),
            TopicPartition::new("payments", 1),
        ])
        .unwrap();
    let total: i64 = committed.iter().map(|c| c.as_ref().map_or(0, |c| c.offset)).sum();
    assert_eq!(total, 2);
}

#[cfg(feature = "json")]
#[test]
fn json_values_round_trip() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Reading {
        meter: String,
        kva: f64,
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("meters", 1, TopicConfig::default()).unwrap();
    let typed = TypedProducer::new(Producer::new(&broker), Utf8, rivulet::Json);
    let reading = Reading {
        meter: "house-7".into(),
        kva: 2.3,
    };
    typed.send("meters", Some("house-7"), Some(&reading)).unwrap();
    let mut consumer = Consumer::new(&broker, earliest("alerts"));
    consumer.assign(&[TopicPartition::new("meters", 0)]).unwrap();
    let mut readings = TypedConsumer::<String, Reading, _, _>::new(consumer, Utf8, rivulet::Json);
    let got = readings.poll(TIMEOUT).unwrap();
    assert_eq!(got[0].value.as_ref(), Some(&reading));
}
