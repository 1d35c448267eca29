"""Where the conformance suite finds a broker for each backend.

In order: ``BRIDGEQ_TEST_<BACKEND>_URL``; else a testcontainers container when
a Docker-compatible engine answers; else the backend is unavailable, with the
reason. ``BRIDGEQ_TEST_REQUIRE`` (a comma list, or ``all``) turns unavailable
into a failure instead of a skip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BACKENDS = ("memory", "redis", "rabbitmq", "kafka")
REQUIRE_ENV = "BRIDGEQ_TEST_REQUIRE"


@dataclass(frozen=True)
class Target:
    """One backend to run the suite against: a URL, or the reason there is none."""

    name: str
    url: str | None
    reason: str = ""


def url_env(backend: str) -> str:
    return f"BRIDGEQ_TEST_{backend.upper()}_URL"


def required(backend: str) -> bool:
    """True when a missing broker for ``backend`` must fail the run rather than skip."""
    wanted = {part.strip().lower() for part in os.environ.get(REQUIRE_ENV, "").split(",") if part.strip()}
    return "all" in wanted or backend in wanted


def url_or_skip(backend: str) -> str:
    """The test broker for ``backend``: the case is skipped without one, or failed when required."""
    import pytest

    target = resolve_target(backend)
    if target.url is None:
        if required(backend):
            pytest.fail(f"{backend}: required by BRIDGEQ_TEST_REQUIRE but unavailable: {target.reason}")
        pytest.skip(f"{backend}: {target.reason}")
    return target.url


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to (or replacing those in) its query string."""
    from urllib.parse import parse_qsl

    base, _, query = url.partition("?")
    merged = dict(parse_qsl(query, keep_blank_values=True))
    merged.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()})
    return base + "?" + "&".join(f"{k}={v}" for k, v in merged.items())


def resolve_target(backend: str) -> Target:
    """The broker for ``backend``: env URL, then a container, else why neither."""
    if backend == "memory":
        return Target(backend, os.environ.get(url_env(backend)) or "memory://")
    url = os.environ.get(url_env(backend))
    if url:
        return Target(backend, url)
    from bridgeq.testing import containers  # only when needed: imports testcontainers

    return containers.start(backend)
