"""kafka-python's admin client against the example broker at sys.argv[1]: CreatePartitions
raises a topic's partition count, and a client then sees the new partitions."""

import sys

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic

SERVER = sys.argv[1]
TOPIC = "python-admin-partitions"

admin = KafkaAdminClient(bootstrap_servers=SERVER)
admin.create_topics([NewTopic(TOPIC, 1, 1)])
admin.create_partitions({TOPIC: NewPartitions(3)})
consumer = KafkaConsumer(bootstrap_servers=SERVER)
partitions = consumer.partitions_for_topic(TOPIC)
if partitions != {0, 1, 2}:
    sys.exit(f"python admin check failed: {TOPIC} has partitions {partitions}, not 0-2")
consumer.close()
admin.close()
print("python admin: CreatePartitions: ok")
