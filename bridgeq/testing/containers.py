"""Brokers in containers, through testcontainers, when a Docker-compatible engine answers.

:func:`start` runs one backend's broker and returns its bridgeq URL once the broker
answers its protocol (not after a sleep); the container is removed when the
process exits. The image is a setting, ``BRIDGEQ_TEST_<BACKEND>_IMAGE``, defaulting
to the official one (:data:`IMAGES`); the stand-ins that ``compose/images/build.sh``
makes from Debian packages take the same settings, so one recipe serves both:

- Redis: ``redis-server --appendonly yes``; ready when redis-py's PING answers
  (testcontainers' ``RedisContainer``).
- RabbitMQ: guest/guest from outside the container; ready when pika opens a
  connection (testcontainers' ``RabbitMqContainer``).
- Kafka: one KRaft node configured by ``KAFKA_*`` variables as ``apache/kafka``
  reads them. Clients must be told the host's port, so the port is chosen
  before the start (a free one) and advertised in ``KAFKA_ADVERTISED_LISTENERS``;
  ready when a Metadata request lists the broker at that address.

While a container serves the suite, ``BRIDGEQ_TEST_RESTART_<BACKEND>`` holds a
command that restarts it and returns once it answers again (data kept), like
the restart commands of the no-Docker path. No broker client is imported here
(the core never imports one): the probes speak the protocols over a socket.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shlex
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridgeq.testing.targets import Target, url_env

IMAGES = {"redis": "redis:7", "rabbitmq": "rabbitmq:3-management", "kafka": "apache/kafka:4.4.0"}
"""The image for each backend unless ``BRIDGEQ_TEST_<BACKEND>_IMAGE`` names another."""

PORTS = {"redis": 6379, "rabbitmq": 5672, "kafka": 9092}
START_TIMEOUT = 120.0
LABEL = "org.bridgeq.testing.owner"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """A broker container serving the suite."""

    backend: str
    image: str
    container_id: str
    url: str
    seconds: float

    def __str__(self) -> str:
        took = f"{self.seconds:.1f} s"
        return f"{self.backend}: {self.image} container {self.container_id[:12]} started by testcontainers in {took}"


started: list[Started] = []
"""The containers this process started, for reports."""


def image(backend: str) -> str:
    return os.environ.get(f"BRIDGEQ_TEST_{backend.upper()}_IMAGE") or IMAGES[backend]


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
    _remove_orphans(client)
    return True, ""


def start(backend: str) -> Target:
    """Start ``backend``'s broker in a container, or say in one line why not."""
    ok, why = engine_answers()
    if not ok:
        return Target(backend, None, f"{url_env(backend)} is not set and {why}")
    recipe = _RECIPES.get(backend)
    if recipe is None:
        return Target(backend, None, f"{url_env(backend)} is not set and there is no container recipe for {backend}")
    name, began = image(backend), time.monotonic()
    try:
        container, url = recipe(name)
    except Exception as exc:  # the engine answered but this broker did not come up: say so in one line
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return Target(
            backend, None, f"{url_env(backend)} is not set and {name} did not start: {type(exc).__name__}: {detail}"
        )
    done = Started(backend, name, container.get_wrapped_container().id, url, time.monotonic() - began)
    started.append(done)
    log.info("%s at %s", done, url)
    os.environ[f"BRIDGEQ_TEST_RESTART_{backend.upper()}"] = shlex.join(
        [sys.executable, "-m", __name__, "restart", backend, done.container_id, url]
    )
    return Target(backend, url)


def _prepare(container: Any) -> Any:
    """Label the container with its owner (host and pid), so a later run can remove it if orphaned."""
    container.with_kwargs(labels={LABEL: f"{socket.gethostname()}:{os.getpid()}"})
    return container


def _running(container: Any) -> None:
    """Remove the container when this process exits (no Ryuk here: its image may not be pullable)."""

    def remove() -> None:
        with contextlib.suppress(Exception):
            container.stop()

    atexit.register(remove)


def _redis(name: str) -> tuple[Any, str]:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # older testcontainers
        from testcontainers.redis import RedisContainer

    container = _prepare(RedisContainer(name).with_command("redis-server --appendonly yes"))
    try:
        container.start()  # waits for PING
    finally:
        _running(container)
    host, port = container.get_container_host_ip(), container.get_exposed_port(PORTS["redis"])
    return container, f"redis://{host}:{port}/0?claim_idle_ms=2000"


def _rabbitmq(name: str) -> tuple[Any, str]:
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # older testcontainers
        from testcontainers.rabbitmq import RabbitMqContainer

    container = _prepare(RabbitMqContainer(name, username="guest", password="guest"))
    try:
        container.start()  # waits for an AMQP connection
    finally:
        _running(container)
    host, port = container.get_container_host_ip(), container.get_exposed_port(PORTS["rabbitmq"])
    return container, f"amqp://guest:guest@{host}:{port}/%2F"


def kafka_settings(host: str, port: int) -> dict[str, str]:
    """One combined broker+controller, advertised to clients as ``host:port``.

    Same broker settings as compose/native/kafka.sh; a second listener (BROKER,
    inside the container) serves the broker's own connections.
    """
    return {
        "CLUSTER_ID": "4A0MTcGfQCq3InAGZB2MfA",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,BROKER://:9094",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port},BROKER://localhost:9094",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_LOG_DIRS": "/tmp/kraft-combined-logs",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
    }


def _kafka(name: str) -> tuple[Any, str]:
    from docker.errors import APIError

    for attempt in range(3):
        try:
            return _kafka_on_a_free_port(name)
        except APIError as exc:  # the free port was taken meanwhile: pick another
            if attempt == 2 or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


def _kafka_on_a_free_port(name: str) -> tuple[Any, str]:
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(name)
    host, port = container.get_docker_client().host(), _free_port()
    container.with_bind_ports(PORTS["kafka"], port).with_envs(**kafka_settings(host, port))
    try:
        _prepare(container).start()
    finally:
        _running(container)
    _wait(lambda: _kafka_lists_itself(host, port), container, f"a Kafka Metadata answer on {host}:{port}")
    return container, f"kafka://{host}:{port}"


_RECIPES: dict[str, Callable[[str], tuple[Any, str]]] = {"redis": _redis, "rabbitmq": _rabbitmq, "kafka": _kafka}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _wait(ready: Callable[[], bool], container: Any, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if ready():
                return
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status not in ("created", "running"):
            raise RuntimeError(f"the container exited ({wrapped.status}) before {what}: {_tail(container)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s: {_tail(container)}")
        time.sleep(0.25)


def _tail(container: Any) -> str:
    out, err = container.get_logs()
    lines = (out + err).decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-5:])


# --- protocol probes (no broker client: the core never imports one) -----------------------------


def _exchange(host: str, port: int, request: bytes, want: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(request)
        reply = b""
        while len(reply) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _redis_answers(host: str, port: int) -> bool:
    return _exchange(host, port, b"PING\r\n", 7).startswith(b"+PONG")


def _amqp_answers(host: str, port: int) -> bool:
    # The protocol header; a ready node answers with a Connection.Start method frame (class 10, method 10).
    reply = _exchange(host, port, b"AMQP\x00\x00\x09\x01", 11)
    return len(reply) >= 11 and reply[0] == 1 and reply[7:11] == b"\x00\x0a\x00\x0a"


def _kafka_lists_itself(host: str, port: int) -> bool:
    """A Metadata v4 request for no topic; True when the answer lists a broker at ``host:port``."""
    header = struct.pack(">hhih", 3, 4, 7, 7) + b"bridgeq"
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exactly(s, 4))[0]
        reply = _recv_exactly(s, size)
    correlation, _throttle, count = struct.unpack_from(">iii", reply, 0)
    offset, brokers = 12, set()
    for _ in range(count if correlation == 7 else 0):
        _node, length = struct.unpack_from(">ih", reply, offset)
        name = reply[offset + 6 : offset + 6 + length].decode()
        offset += 6 + length
        (broker_port, rack) = struct.unpack_from(">ih", reply, offset)
        offset += 6 + max(rack, 0)
        brokers.add((name, broker_port))
    return (host, port) in brokers


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


# --- restart and orphans ----------------------------------------------------------------------------

_PROBES: dict[str, Callable[[str, int], bool]] = {
    "redis": _redis_answers,
    "rabbitmq": _amqp_answers,
    "kafka": _kafka_lists_itself,
}


def restart(backend: str, container_id: str, url: str, timeout: float = START_TIMEOUT) -> float:
    """Restart the container (its data kept) and return once the broker answers at ``url`` again."""
    from urllib.parse import urlsplit

    import docker

    began, address = time.monotonic(), urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or PORTS[backend]
    container = docker.from_env().containers.get(container_id)
    container.restart(timeout=30)
    container.reload()
    mapped = container.ports.get(f"{PORTS[backend]}/tcp") or []
    if mapped and int(mapped[0]["HostPort"]) != port:
        raise RuntimeError(
            f"{backend}: after the restart the engine published port {mapped[0]['HostPort']}, not {port}"
        )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if _PROBES[backend](host, port):
                return time.monotonic() - began
        if time.monotonic() > deadline:
            raise TimeoutError(f"{backend} did not answer on {host}:{port} within {timeout:.0f} s of the restart")
        time.sleep(0.25)


def _remove_orphans(client: Any) -> None:
    """Remove containers that an earlier test process on this host started and left (killed before atexit)."""
    host = socket.gethostname()
    with contextlib.suppress(Exception):
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            owner_host, _, pid = str(container.labels.get(LABEL, "")).rpartition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                log.info("removing container %s left by process %s", container.short_id, pid)
                container.remove(force=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    """``python -m bridgeq.testing.containers restart BACKEND CONTAINER_ID URL``."""
    if len(argv) != 4 or argv[0] != "restart" or argv[1] not in _PROBES:
        print(main.__doc__, file=sys.stderr)
        return 2
    seconds = restart(argv[1], argv[2], argv[3])
    print(f"{argv[1]}: container {argv[2][:12]} restarted and answering in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
