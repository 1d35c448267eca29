"""Brokers in containers, through testcontainers, when a Docker-compatible engine answers."""

from __future__ import annotations

import atexit
import importlib.util
from typing import Any

from bridgeq.testing.targets import Target, url_env


def engine_answers() -> tuple[bool, str]:
    """Whether a Docker API answers (DOCKER_HOST or the default socket), and if not why."""
    if importlib.util.find_spec("testcontainers") is None or importlib.util.find_spec("docker") is None:
        return False, "testcontainers is not installed (pip install 'bridgeq[testing]')"
    import docker

    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no engine here"
        return False, f"no Docker engine answers ({type(exc).__name__})"
    return True, ""


def start(backend: str) -> Target:
    """Start ``backend``'s broker in a container, or say why not."""
    ok, why = engine_answers()
    if not ok:
        return Target(backend, None, f"{url_env(backend)} is not set and {why}")
    starter = _STARTERS.get(backend)
    if starter is None:
        return Target(backend, None, f"no container recipe for {backend}")
    return Target(backend, starter())


def _keep(container: Any) -> None:
    atexit.register(container.stop)


def _redis() -> str:
    import os

    from testcontainers.redis import RedisContainer

    container = RedisContainer(os.environ.get("BRIDGEQ_TEST_REDIS_IMAGE", "redis:7")).start()
    _keep(container)
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0?claim_idle_ms=2000"


_STARTERS = {"redis": _redis}
