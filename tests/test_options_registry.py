"""URL options are declared once and checked; schemes resolve through entry points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

import bridgeq
from bridgeq import registry
from bridgeq.options import describe, option, parse_options
from bridgeq_memory import MemoryBackend


@dataclass(frozen=True)
class Sample:
    count: int = option(5, "how many")
    ratio: float = option(0.5, "how much")
    enabled: bool = option(True, "on or off")
    mode: Literal["fast", "safe"] = option("safe", "which way")
    name: str | None = option(None, "optional name")


def test_values_are_converted_by_declared_type():
    parsed = parse_options(Sample, {"count": "7", "ratio": "0.25", "enabled": "no", "mode": "fast", "name": "x"}, "s")
    assert parsed == Sample(7, 0.25, False, "fast", "x")
    assert parse_options(Sample, {}, "s") == Sample()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"cuont": "1"}, "did you mean 'count'"),
        ({"bogus": "1"}, "valid options: count, enabled, mode, name, ratio"),
        ({"count": "many"}, "must be a int"),
        ({"count": "-1"}, "not negative"),
        ({"ratio": "inf"}, "must be a finite number"),
        ({"ratio": "nan"}, "must be a finite number"),
        ({"enabled": "maybe"}, "true or false"),
        ({"mode": "turbo"}, "one of fast, safe"),
    ],
)
def test_bad_options_name_what_was_wrong(query, expected):
    with pytest.raises(bridgeq.ConfigError, match=expected):
        parse_options(Sample, query, "s")


def test_describe_lists_every_option_with_its_doc():
    rows = describe(Sample)
    assert [r[0] for r in rows] == ["count", "ratio", "enabled", "mode", "name"]
    assert rows[3] == ("mode", "fast|safe", "'safe'", "which way")


def test_unknown_option_on_a_real_url():
    with pytest.raises(bridgeq.ConfigError, match=r"unknown option 'max_mesage_size'.*did you mean"):
        bridgeq.connect("memory://?max_mesage_size=5")


def test_unknown_scheme_lists_known_ones_and_suggests():
    with pytest.raises(bridgeq.ConfigError, match=r"no backend for reddis://.*did you mean redis://") as raised:
        bridgeq.connect("reddis://localhost")
    assert "memory" in str(raised.value)


def test_every_builtin_scheme_is_an_entry_point():
    assert {"memory", "redis", "rediss", "amqp", "amqps", "kafka"} <= set(registry.schemes())


def test_register_adds_a_backend_in_process():
    class Custom(MemoryBackend):
        pass

    registry.register("custom", Custom)
    try:
        with bridgeq.connect("custom://x") as broker:
            assert isinstance(broker.backend, Custom)
    finally:
        registry.unregister("custom")
    with pytest.raises(bridgeq.ConfigError):
        bridgeq.connect("custom://x")


def test_missing_client_library_names_the_extra(monkeypatch):
    class Missing:
        name = "redis"
        value = "bridgeq_redis:RedisBackend"

        def load(self):
            raise ModuleNotFoundError("No module named 'redis'", name="redis")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Missing()])
    with pytest.raises(bridgeq.ConfigError, match=r"pip install 'bridgeq\[redis\]'"):
        registry.load("redis")
