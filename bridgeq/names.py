"""One portable rule for topic and group names, checked once, in the core.

Letters, digits, ``.``, ``_`` and ``-``, at most 120 characters, so that
``<topic>.<group>.dlq`` still fits Kafka's 249 and a name that works on one
broker works on all of them.
"""

from __future__ import annotations

import re

from bridgeq.errors import ConfigError

MAX_NAME_LENGTH = 120
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_name(kind: str, name: object) -> str:
    """``name`` if it is a valid topic or group name (``kind`` says which), else ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(f"{kind} name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{kind} name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    if not _NAME.fullmatch(name):
        bad = sorted({ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch in "._-"))})
        raise ConfigError(
            f"{kind} name {name[:60]!r} has invalid characters {''.join(bad)!r}; use letters, digits, '.', '_' and '-'"
        )
    if name.strip(".") == "":
        raise ConfigError(f"{kind} name must not be only dots")
    return name
