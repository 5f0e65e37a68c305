"""kafka-python against the example broker: two consumers in one group, each on its own
thread as applications run them, share a topic's partitions, and every record a producer
sends arrives exactly once.

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
DEADLINE = time.time() + 90

KafkaAdminClient(bootstrap_servers=SERVER).create_topics([NewTopic(TOPIC, 4, 1)])

settled = threading.Event()
done = threading.Event()
owned = [set(), set()]
got = [[], []]


def member(i):
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=SERVER,
        group_id="py-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=200,
        session_timeout_ms=10000,
    )
    while not done.is_set() and time.time() < DEADLINE:
        for records in consumer.poll(timeout_ms=500).values():
            got[i].extend(r.value for r in records)
        owned[i] = {tp.partition for tp in consumer.assignment()}
        if got[i]:
            consumer.commit()
    consumer.close()


threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
for t in threads:
    t.start()

# Both members join and settle before anything is produced, so no record is handed over
# mid-flight.
while not (len(owned[0]) == 2 and len(owned[1]) == 2):
    assert time.time() < DEADLINE, owned
    time.sleep(0.1)
assert owned[0].isdisjoint(owned[1]), owned
print("assignments:", owned)

producer = KafkaProducer(bootstrap_servers=SERVER, compression_type="gzip", linger_ms=5)
for i in range(RECORDS):
    producer.send(TOPIC, key=b"k%d" % i, value=b"job-%d" % i)
producer.flush()
producer.close()

while len(got[0]) + len(got[1]) < RECORDS and time.time() < DEADLINE:
    time.sleep(0.1)
done.set()
for t in threads:
    t.join()

everything = got[0] + got[1]
assert len(everything) == RECORDS, f"{len(everything)} records, expected {RECORDS}"
assert sorted(everything) == sorted(b"job-%d" % i for i in range(RECORDS)), "a record twice or missing"
assert got[0] and got[1], "both members consumed"
print(f"kafka-python: {RECORDS} records, each once, split {len(got[0])}/{len(got[1])}")
