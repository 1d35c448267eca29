"""The bridgeq command: round trips on memory://, and one clear line for every error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bridgeq.cli import main


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin)


def test_publish_then_consume_prints_json_lines():
    published = run("publish", "memory://cli", "orders", "--key", "k1", "--header", "type=created", stdin="one\ntwo\n")
    assert published.exit_code == 0, published.output
    run("consume", "memory://cli", "orders", "--group", "g", "--timeout", "0.1")  # joins: later messages reach it
    run("publish", "memory://cli", "orders", "--key", "k1", "--header", "type=created", stdin="one\ntwo\n")
    consumed = run("consume", "memory://cli", "orders", "--group", "g", "--max", "2", "--timeout", "1")
    assert consumed.exit_code == 0, consumed.output
    records = [json.loads(line) for line in consumed.stdout.splitlines() if line.startswith("{")]
    assert [(r["body"], r["key"], r["headers"], r["attempt"]) for r in records] == [
        ("one", "k1", {"type": "created"}, 1),
        ("two", "k1", {"type": "created"}, 1),
    ]


def test_binary_bodies_come_out_as_base64():
    from bridgeq import connect

    with connect("memory://bin") as broker:
        broker.declare("t", "g")
        broker.publish("t", b"\xff\x00")
        result = run("consume", "memory://bin", "t", "--group", "g", "--max", "1", "--timeout", "1")
    record = json.loads(result.stdout.splitlines()[0])
    assert record["body_base64"] == "/wA="


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "nosuch://x", "t"],
        ["publish", "redis://:hunter2@localhost:notaport/0", "t"],
        ["publish", "memory://?bogus=1", "t"],
        ["publish", "memory://", "bad topic"],
        ["publish", "memory://", "t", "--header", "novalue"],
        ["consume", "memory://", "t"],
        ["consume", "memory://", "t", "--group", "g", "--bogus"],
        ["stats", "memory://", "t", "--group", "bad group"],
        ["bench", "kafka://h:1?acks=sometimes"],
        ["migrate", "memory://", "memory://", "--topic", "bad/name", "--dry-run"],
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback_no_password(args):
    result = subprocess.run(
        [sys.executable, "-m", "bridgeq.cli", *args], input="", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bridgeq: error: ")
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout


def test_stats_shows_the_queue_model():
    from bridgeq import connect

    with connect("memory://stats") as broker:
        broker.declare("t", "g")
        broker.publish_batch("t", [b"x"] * 7)
        result = run("stats", "memory://stats", "t", "--group", "g", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "L (waiting)" in result.stdout and " 7 " in result.stdout


def test_check_prints_the_matrix_and_passes_on_memory():
    result = run("check", "memory://", "--json", "-k", "round_trip or empty_body or sigkill")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["failed"] == 0 and report["counts"]["passed"] >= 2
    assert report["counts"]["unsupported"] >= 1
    assert report["capabilities"]["exact_delivery_count"] is True


def test_options_lists_the_declared_options():
    result = run("options", "memory")
    assert result.exit_code == 0
    assert "max_message_size" in result.stdout


def test_demo_runs_and_reports_figures():
    result = run("demo", "--messages", "2000", "--rate", "0", "--consume-rate", "0")
    assert result.exit_code == 0, result.output
    assert "done: 2,000 of 2,000 messages consumed" in result.stdout


@pytest.mark.parametrize(("flags", "expected"), [([], None), (["--in-process"], False)])
def test_migrate_in_process_flag_reaches_migrate(monkeypatch, flags, expected):
    from bridgeq import migration

    seen: dict[str, object] = {}
    real = migration.migrate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(migration, "migrate", spy)
    run("publish", "memory://mig-cli", "orders", stdin="one\ntwo\n")
    result = run(
        "migrate", "memory://mig-cli", "memory://mig-cli-to", "--topic", "orders", "--idle-timeout", "0.2", *flags
    )
    assert result.exit_code == 0, result.output
    assert seen["publisher_process"] is expected and seen["source_process"] is expected


@pytest.mark.parametrize("read_ahead", [False, True])
def test_bench_measures_publish_consume_and_latency(read_ahead: bool) -> None:
    args = ["bench", "memory://", "--messages", "2000", "--batch", "100", "--async", "--json"]
    result = CliRunner().invoke(main, args + (["--read-ahead"] if read_ahead else []))
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)
    assert set(runs) == {"sync", "asyncio"}
    for run in runs.values():
        assert run["messages"] == 2000 and run["read_ahead"] is read_ahead
        assert run["publish_rate"] > 0 and run["consume_rate"] > 0 and run["latency_samples"] == 200
        assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"]
