"""Redis Streams backend for ``redis://`` and ``rediss://`` URLs (redis-py; Redis >= 7.0).

Mapping
    topic T -> the stream key ``<prefix>T`` (option ``prefix``, default ``bridgeq:``;
    ``prefix=`` addresses existing streams by their own names). Group G -> the
    consumer group G of that stream, created with MKSTREAM by ``declare``.
    Each subscription is a consumer named ``<host>-<pid>-<random>``.

Wire layout (one stream entry per message; other tools may read and write it)
    ``ce_id``       the message id (CloudEvents binary-mode name)
    ``body``        the body, bytes as they are (option ``body_field``)
    ``key``         the message key, only when it has one (option ``key_field``)
    any other field a header: name -> value, UTF-8
    Entries written by other clients (``XADD s * data hello foo bar``) are read
    the same way: the body field (empty if missing), every other field a header
    (decoded as UTF-8, invalid bytes replaced), and, without ``ce_id``, the id
    ``<stream key>-<entry id>`` (e.g. ``bridgeq:orders-1712345678901-0``), the
    same on every redelivery. Headers named like the body or key field are
    refused on publish (ConfigError), since they could not be told apart.

Where a new group starts (option ``group_start``)
    ``earliest`` (default): at the start of the stream, so a group declared
    late also reads the entries still retained (``capabilities.replay``);
    ``latest``: only entries added after the group was declared.
    Either way every message published after ``declare`` reaches the group.

Publishing
    One write per ``publish`` call, however many messages: the XADDs are
    packed into RESP here (their arguments are already bytes) and sent on a
    pooled redis-py connection, one reply read per entry. These replies and
    XREADGROUP's are read by hiredis into plain lists (``resp.py``), not
    turned into tuples and dicts entry by entry as redis-py does (most of
    the client's time for the hot commands).
    XADD is never retried (see Connections). A refused entry (e.g. the key
    holds another type, or the server is out of memory) raises PublishError
    naming exactly the refused messages; the others were stored.

Delivery, redelivery and delivery counts
    XREADGROUP ``>`` (blocking at most the core's 0.1 s slice, COUNT = what
    the core asks for); XACK in the batches the core hands over. Every fetch
    also sweeps, at most every 0.5 s (claim_idle_ms/4 when shorter), for
    pending entries idle at least ``claim_idle_ms`` (default 30000) and
    claims them, atomically with their times-delivered counter (a Lua
    script: XPENDING IDLE + XCLAIM), so ``attempt`` is Redis's own count and
    exact across consumers and restarts. ``requeue`` (``nack(requeue=True)``)
    and ``close`` hand entries back: XCLAIM ... IDLE 10^10 JUSTID keeps their
    id and count and makes them claimable by the next sweep of any member,
    within a second. A consumer process killed with SIGKILL stops renewing
    its entries; another member claims them after ``claim_idle_ms`` (plus
    one sweep): ``capabilities.crash_redelivery_seconds``. A sweep scans the
    group's pending list on the server (XPENDING IDLE): cheap for the usual
    few thousand entries, a cost to keep in mind for hundreds of thousands.

Long-running handlers (option ``renew``, default true)
    A background thread renews (XCLAIM JUSTID, no count) every claim_idle_ms/3
    the entries each live consumer holds (one XPENDING per entry, in a
    script), so a slow handler keeps its
    message however long it takes; only a dead process, ``close()`` or a
    connection lost for longer than ``claim_idle_ms`` lets others take it.
    With ``renew=false`` an entry held longer than ``claim_idle_ms`` is taken
    over by another member even while its handler still runs (and both ack).

Leaving, and groups deleted under a consumer
    ``close`` removes the consumer (XGROUP DELCONSUMER) when nothing is
    pending for it; a sweep that takes over the last entries of another
    consumer removes that one too. A stream or group deleted under a running
    consumer (NOGROUP) is re-created at ``group_start`` with a warning, once
    per fetch, never in an error loop.

Retention (options ``maxlen`` / ``max_age_ms``)
    Default: no trimming; acked entries stay in the stream (and in the
    server's memory) until trimmed, e.g. by XTRIM. ``maxlen=N`` adds
    ``MAXLEN ~ N`` and ``max_age_ms=M`` ``MINID ~ <now-M>`` to every XADD:
    approximate, cheap trimming that also drops entries no group has read yet
    (they are lost for those groups; trimmed pending entries are dropped from
    the pending lists when claimed).

Depth and totals
    ``depth`` = XINFO GROUPS ``lag`` + ``pending``; None when Redis cannot tell
    the lag (e.g. after XDEL in the unread range). ``totals`` = the stream's
    ``entries-added`` and the group's ``entries-read`` minus ``pending``.

Connections
    Redis >= 7.0 (6.2 works, but ``depth`` and ``totals`` are None there);
    redis-py >= 5, always speaking RESP2 so reply shapes do not depend on
    the redis-py version. One host: no Cluster or Sentinel.
    ``redis://[[user]:password@]host[:port][/db]``; ``rediss://`` for TLS with
    certificate and host-name verification on (options ``tls_ca_file``,
    ``tls_cert_file``, ``tls_key_file``; ``tls_insecure=true`` turns
    verification off). Connection errors are ConnectionLost; idempotent
    commands (reads, acks, claims, XINFO) are retried with backoff
    (option ``retries``), XADD never: a publish that fails with
    ConnectionLost may or may not have been stored; publishing again stores
    it twice under the same id.
"""

from __future__ import annotations

from .backend import RedisBackend
from .options import RedisOptions

__all__ = ["RedisBackend", "RedisOptions"]
