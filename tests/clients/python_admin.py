"""kafka-python's admin client against the example broker at sys.argv[1]: CreatePartitions
raises a topic's partition count, and a client then sees the new partitions; DeleteGroups
deletes a group that committed offsets, and its offsets with it."""

import sys

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
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

GROUP = "python-admin-deleted"


def committed():
    reader = KafkaConsumer(bootstrap_servers=SERVER, group_id=GROUP, enable_auto_commit=False)
    offset = reader.committed(tp)
    reader.close()
    return offset


member = KafkaConsumer(bootstrap_servers=SERVER, group_id=GROUP, enable_auto_commit=False)
tp = TopicPartition(TOPIC, 0)
member.assign([tp])
member.commit({tp: OffsetAndMetadata(0, "", -1)})
member.close()
if committed() != 0:
    sys.exit("python admin check failed: the commit is not there")
results = admin.delete_groups([GROUP])
if results != {GROUP: "OK"}:
    sys.exit(f"python admin check failed: DeleteGroups answered {results}")
if committed() is not None:
    sys.exit("python admin check failed: the deleted group's offsets remain")
admin.close()
print("python admin: CreatePartitions, DeleteGroups: ok")
