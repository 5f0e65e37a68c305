"""kafka-python against the example broker: two consumers in one group share a topic's
partitions, and every record a producer sends arrives exactly once.

Usage: python3 python_group.py HOST:PORT
"""
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

SERVER = sys.argv[1]
TOPIC = "py-jobs"
RECORDS = 500
DEADLINE = time.time() + 60


def consumer():
    return KafkaConsumer(
        TOPIC,
        bootstrap_servers=SERVER,
        group_id="py-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=200,
        session_timeout_ms=10000,
        consumer_timeout_ms=200,
    )


KafkaAdminClient(bootstrap_servers=SERVER).create_topics([NewTopic(TOPIC, 4, 1)])
members = [consumer(), consumer()]

# Both members join and settle before anything is produced, so no record is handed over
# mid-flight.
while not all(len(m.assignment()) == 2 for m in members):
    assert time.time() < DEADLINE, [m.assignment() for m in members]
    for m in members:
        m.poll(timeout_ms=100)
owned = [{tp.partition for tp in m.assignment()} for m in members]
assert owned[0].isdisjoint(owned[1]), owned
print("assignments:", owned)

producer = KafkaProducer(bootstrap_servers=SERVER, compression_type="gzip", linger_ms=5)
for i in range(RECORDS):
    producer.send(TOPIC, key=b"k%d" % i, value=b"job-%d" % i)
producer.flush()
producer.close()

got = [[], []]


def drain(i):
    m = members[i]
    while sum(len(g) for g in got) < RECORDS and time.time() < DEADLINE:
        for records in m.poll(timeout_ms=200).values():
            got[i].extend(r.value for r in records)
        m.commit()


threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for m in members:
    m.close()

everything = got[0] + got[1]
assert len(everything) == RECORDS, f"{len(everything)} records, expected {RECORDS}"
assert sorted(everything) == sorted(b"job-%d" % i for i in range(RECORDS)), "a record twice or missing"
assert got[0] and got[1], "both members consumed"
print(f"kafka-python: {RECORDS} records, each once, split {len(got[0])}/{len(got[1])}")
