"""The conformance suite judges backends: a broken one fails, a missing one skips or fails."""

from __future__ import annotations

BROKEN_CONFTEST = '''
from bridgeq import registry
from bridgeq_memory import MemoryBackend, MemoryConsumer


class ForgetfulConsumer(MemoryConsumer):
    def requeue(self, deliveries):
        """Broken on purpose: a nacked message is never made deliverable again."""


class BrokenBackend(MemoryBackend):
    def consumer(self, topic, group, prefetch):
        self.declare(topic, group)
        return ForgetfulConsumer(self._store.topic(topic), topic, group)


registry.register("brokenmem", BrokenBackend)
'''


def _outcomes(result):
    return {
        report.head_line.split("[")[0]: report.outcome
        for report in result.reprec.getreports("pytest_runtest_logreport")
        if report.when == "call"
    }


def test_a_backend_that_drops_nacked_messages_fails_the_suite(pytester, monkeypatch):
    monkeypatch.setenv("BRIDGEQ_TEST_PATIENCE", "2")  # the broken cases wait this long, then fail
    pytester.makeconftest(BROKEN_CONFTEST)
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "bridgeq.testing.cases",
        "--bridgeq-url",
        "brokenmem://broken",
        "-p",
        "no:cacheprovider",
        "-k",
        "nack or poison or callback or max_deliveries or per_key",
    )
    outcomes = _outcomes(result)
    caught = {name for name, outcome in outcomes.items() if outcome == "failed"}
    assert {
        "test_nack_requeue_redelivers_with_attempt_plus_one",
        "test_max_deliveries_dead_letters_after_the_last_attempt",
        "test_callback_style_acks_on_return_and_nacks_on_raise",
    } <= caught
    assert result.ret != 0


def test_the_same_cases_pass_on_the_reference_backend(pytester):
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "bridgeq.testing.cases",
        "--bridgeq-url",
        "memory://ok",
        "-p",
        "no:cacheprovider",
        "-k",
        "nack or poison or callback or max_deliveries or per_key",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["passed"] >= 6


def test_a_missing_broker_is_skipped_with_its_reason(pytester, monkeypatch):
    monkeypatch.delenv("BRIDGEQ_TEST_REDIS_URL", raising=False)
    monkeypatch.delenv("BRIDGEQ_TEST_REQUIRE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "bridgeq.testing.cases",
        "--bridgeq-backends",
        "redis",
        "--bridgeq-styles=sync",
        "-p",
        "no:cacheprovider",
        "-k",
        "empty_body",
        "-rs",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*redis: BRIDGEQ_TEST_REDIS_URL is not set and no Docker engine answers*"])


def test_a_missing_broker_fails_when_required(pytester, monkeypatch):
    monkeypatch.delenv("BRIDGEQ_TEST_REDIS_URL", raising=False)
    monkeypatch.setenv("BRIDGEQ_TEST_REQUIRE", "redis")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "bridgeq.testing.cases",
        "--bridgeq-backends",
        "redis",
        "--bridgeq-styles=sync",
        "-p",
        "no:cacheprovider",
        "-k",
        "empty_body",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*required by BRIDGEQ_TEST_REQUIRE but unavailable*"])


def test_unsupported_cases_are_reported_as_such(pytester):
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "bridgeq.testing.cases",
        "--bridgeq-url",
        "memory://",
        "-p",
        "no:cacheprovider",
        "-k",
        "sigkill",
        "--bridgeq-styles=sync",
    )
    result.stdout.fnmatch_lines(["*1 unsupported*"])
    assert result.ret == 0
