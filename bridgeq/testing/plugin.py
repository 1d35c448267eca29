"""The conformance suite as a pytest plugin (entry point ``pytest11: bridgeq``).

Run it against any broker::

    pytest --pyargs bridgeq.testing.cases --bridgeq-url redis://localhost:6379/0

Without ``--bridgeq-url`` it runs every backend named by ``--bridgeq-backends``
(default: all built-in ones), each found as :mod:`bridgeq.testing.targets` says.
A case needing a capability the backend lacks is reported as UNSUPPORTED, never
as passed and never as an ordinary skip.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import bridgeq
from bridgeq.testing import through_asyncio
from bridgeq.testing.targets import BACKENDS, Target, required, resolve_target
from bridgeq.url import parse
from bridgeq.wire import dead_letter_topic

UNSUPPORTED = "unsupported: "


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bridgeq", "bridgeq conformance suite")
    group.addoption("--bridgeq-url", action="append", default=[], help="run the suite against this broker URL")
    group.addoption("--bridgeq-backends", default=None, help="comma list of backends (default: all built-in)")
    group.addoption("--bridgeq-size", choices=("short", "full"), default=None, help="message counts: short or full")
    group.addoption(
        "--bridgeq-styles", default=None, help="comma list of API styles to run each case through: sync,async"
    )
    parser.addini("bridgeq_styles", "comma list of API styles: sync, async", default="sync,async")
    parser.addini("bridgeq_backends", "comma list of backends to run the suite against", default=",".join(BACKENDS))
    parser.addini("bridgeq_size", "short or full", default="short")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(*capabilities): the case needs these capabilities")


def _targets(config: pytest.Config) -> list[Target]:
    cached = getattr(config, "_bridgeq_targets", None)
    if cached is None:
        urls = config.getoption("bridgeq_url")
        if urls:
            schemes = [parse(url).scheme for url in urls]
            cached = [
                Target(s if len(urls) == 1 else f"{s}{i}", url)
                for i, (s, url) in enumerate(zip(schemes, urls, strict=True))
            ]
        else:
            names = config.getoption("bridgeq_backends") or config.getini("bridgeq_backends")
            cached = [Target(name.strip(), None, "pending") for name in str(names).split(",") if name.strip()]
        config._bridgeq_targets = cached  # type: ignore[attr-defined]
    return cached


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bridgeq_target" in metafunc.fixturenames:
        targets = _targets(metafunc.config)
        metafunc.parametrize("bridgeq_target", targets, ids=[t.name for t in targets], scope="session")
    if "bridgeq_style" in metafunc.fixturenames:
        config = metafunc.config
        styles = str(config.getoption("bridgeq_styles") or config.getini("bridgeq_styles")).split(",")
        metafunc.parametrize("bridgeq_style", [s.strip() for s in styles if s.strip()])


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for target in _targets(config):
        lines.append(f"bridgeq: {target.name}: {parse(target.url) if target.url else 'found at run time'}")
    return lines


@pytest.fixture(scope="session")
def broker_url(bridgeq_target: Target, pytestconfig: pytest.Config) -> str:
    """The URL of the broker this case runs against; skips (or fails if required) without one."""
    target = bridgeq_target
    if target.url is None:
        resolved: dict[str, Target] = pytestconfig.__dict__.setdefault("_bridgeq_resolved", {})
        if target.name not in resolved:
            resolved[target.name] = resolve_target(target.name)
        target = resolved[target.name]
    if target.url is None:
        if required(target.name):
            pytest.fail(f"{target.name}: required by BRIDGEQ_TEST_REQUIRE but unavailable: {target.reason}")
        pytest.skip(f"{target.name}: {target.reason}")
    return target.url


@pytest.fixture
def broker(broker_url: str, bridgeq_style: str, request: pytest.FixtureRequest) -> Iterator[bridgeq.Broker]:
    """A connected broker, used through the sync API or through :mod:`bridgeq.aio` (``bridgeq_style``).

    Capability-gated cases stop here as UNSUPPORTED. Through asyncio, a case fails
    if a call into a blocking backend ran on the event loop's thread, or if any
    callback hung the loop (``through_asyncio.HANG``); shorter holds are listed in
    the run's summary.
    """
    if bridgeq_style == "async":
        loop = through_asyncio.LoopThread()
        connected: Any = through_asyncio.Broker(broker_url, loop)
    else:
        loop, connected = None, bridgeq.connect(broker_url)
    try:
        for marker in request.node.iter_markers("requires"):
            for capability in marker.args:
                if not getattr(connected.capabilities, capability):
                    pytest.skip(f"{UNSUPPORTED}{broker_url.split(':')[0]} lacks {capability}")
        yield connected
    finally:
        if not connected.closed:
            connected.close()
        if loop is not None:
            loop.stop()
            _loop_holds.extend((seconds, request.node.nodeid) for seconds, _ in loop.slow.seen)
            assert not loop.guard.violations, f"blocking backend calls on the event loop: {loop.guard.violations[:5]}"
            assert not loop.slow.hangs(), f"the event loop hung: {loop.slow.hangs()[:3]}"


_loop_holds: list[tuple[float, str]] = []


class Names:
    """Unique topic and group names for one test; its topics are deleted afterwards."""

    def __init__(self) -> None:
        self.prefix = f"bq-{uuid.uuid4().hex[:10]}"
        self.topics: list[str] = []
        self.groups: list[str] = []

    def topic(self, label: str = "t") -> str:
        name = f"{self.prefix}-{label}"
        self.topics.append(name)
        return name

    def group(self, label: str = "g") -> str:
        name = f"{self.prefix}-{label}"
        self.groups.append(name)
        return name

    def made(self) -> list[str]:
        """Every topic this test may have created, dead-letter topics included."""
        return self.topics + [dead_letter_topic(t, g) for t in self.topics for g in self.groups]


@pytest.fixture
def names(broker_url: str) -> Iterator[Names]:
    made = Names()
    yield made
    with bridgeq.connect(broker_url) as cleaner:
        for name in made.made():
            with contextlib.suppress(bridgeq.BridgeqError):
                cleaner.delete(name)


class Size:
    """Message counts for the chosen size: short for every commit, full for a release."""

    def __init__(self, full: bool) -> None:
        self.full = full

    def n(self, short: int, full: int) -> int:
        return full if self.full else short


@pytest.fixture(scope="session")
def size(pytestconfig: pytest.Config) -> Size:
    return Size((pytestconfig.getoption("bridgeq_size") or pytestconfig.getini("bridgeq_size")) == "full")


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    if report.skipped and isinstance(report.longrepr, tuple) and UNSUPPORTED in str(report.longrepr[2]):
        return "unsupported", "U", "UNSUPPORTED"
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per broker container the suite started, so a CI log shows where each ran."""
    containers = sys.modules.get("bridgeq.testing.containers")
    for started in getattr(containers, "started", []):
        terminalreporter.write_line(f"bridgeq: {started}")
    if _loop_holds:
        longest = sorted(_loop_holds, reverse=True)
        terminalreporter.write_line(
            f"bridgeq: {len(longest)} asyncio callbacks held the loop over"
            f" {through_asyncio.SLOW_CALLBACK * 1000:.0f} ms; longest:"
        )
        for seconds, case in longest[:3]:
            terminalreporter.write_line(f"bridgeq:   {seconds * 1000:6.0f} ms  {case}")
