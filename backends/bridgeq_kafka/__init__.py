"""bridgeq backend for Apache Kafka (``kafka://host:port[,host:port...]``), on kafka-python 3.

Model
    A bridgeq topic is a Kafka topic named ``<prefix><topic>`` (prefix "" by
    default, so existing topics are addressed as they are); a group is the
    consumer group ``<prefix><group>``. ``declare`` creates the topic
    (``partitions``, ``replication_factor``) and, for a group that has no
    commits on it yet, commits the partitions' end offsets (``group_start=latest``,
    the default: no replay) or their beginnings (``earliest``: replay of what
    the topic retains). From then on the group receives everything published.
    A group with live members refuses an outsider's commit: then a member of
    this process commits the start (dead-letter topics are declared so); with
    live members only in other processes the group reads the new topic from
    its beginning (more, never less).

Wire layout (what other Kafka clients see and write)
    * record value: the body (a null value reads as ``b""``);
    * record key: the message key, UTF-8 (none: null key); it picks the partition;
    * record header ``ce_id``: the message id, UTF-8 (CloudEvents binary mode);
    * every other record header: one bridgeq header, value UTF-8.
    Records without ``ce_id`` (foreign producers) get the id
    ``<kafka topic>-<partition>-<offset>``: stable across redeliveries. Header
    values and keys that are not UTF-8 are decoded with replacement characters.
    Commits carry bridgeq's bookkeeping in the offset metadata string (see
    :mod:`bridgeq_kafka.ledger`); other clients ignore it.

Delivery
    The producer is idempotent with ``acks=all``; ``publish`` returns once every
    record is acknowledged. Consumers never auto-commit: an ack commits, per
    partition, the offset below which everything is acked. ``nack(requeue)``
    redelivers from a local queue first, without holding back the others. A
    consumer that dies leaves the group after ``session_timeout_ms`` (10 s by
    default) and its partitions restart, at the committed offsets, on another
    member; ``close`` commits and leaves the group at once. ``attempt`` is
    counted by the member and handed on through the commit metadata on close
    and rebalance; after a crash it may restart lower (``exact_delivery_count``
    is False). Rebalances need every member to poll: an idle member (at its
    prefetch limit, or its application busy) polls from a keeper thread with
    its partitions paused, for up to ``max_poll_interval_ms``.
"""

from __future__ import annotations

from bridgeq_kafka.backend import KafkaBackend
from bridgeq_kafka.options import KafkaOptions

__all__ = ["KafkaBackend", "KafkaOptions"]
