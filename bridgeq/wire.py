"""Names that bridgeq puts on the wire; other clients read them, so they are fixed.

The message id travels as CloudEvents' binary-mode ``ce_id`` (a Kafka header,
a Redis stream field, AMQP ``message_id`` plus a ``cloudEvents_id`` header).
bridgeq's own extras carry the ``bridgeq-`` prefix.
"""

from __future__ import annotations

import hashlib

ID_HEADER = "ce_id"
AMQP_ID_HEADER = "cloudEvents_id"
CONTENT_TYPE_HEADER = "content-type"

DEAD_LETTER_REASON = "bridgeq-dead-letter-reason"
DEAD_LETTER_ATTEMPTS = "bridgeq-attempts"
DEAD_LETTER_TOPIC = "bridgeq-source-topic"
DEAD_LETTER_GROUP = "bridgeq-source-group"
DEAD_LETTER_ERROR = "bridgeq-error"
MIGRATED_FROM = "bridgeq-migrated-from"

RESERVED_HEADERS = frozenset({ID_HEADER})
"""Headers an application may not set itself (use ``Message(id=...)``)."""


def dead_letter_topic(topic: str, group: str) -> str:
    """The default dead-letter topic of ``group`` on ``topic``: ``<topic>.<group>.dlq``.

    Names that would pass 120 characters (the portable limit) are cut and made
    unique again with a digest: ``<first 105 characters>-<10 hex digits>.dlq``.
    """
    name = f"{topic}.{group}.dlq"
    if len(name) <= 120:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{name[:105]}-{digest}.dlq"
