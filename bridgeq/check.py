"""``bridgeq check URL``: the conformance suite against one broker, as a result matrix."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridgeq.testing.plugin import UNSUPPORTED


@dataclass
class CaseResult:
    name: str
    outcome: str  # passed | failed | unsupported | skipped
    detail: str = ""
    seconds: float = 0.0


@dataclass
class CheckReport:
    url: str
    results: dict[str, CaseResult] = field(default_factory=dict)
    exit_code: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results.values() if r.outcome == outcome)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.count("failed") == 0 and self.count("passed") > 0


class _Collector:
    """A pytest plugin object that records each case's outcome and reports progress."""

    def __init__(self, report: CheckReport, progress: Any = None) -> None:
        self.report = report
        self.progress = progress
        self.total = 0
        self.names: dict[str, str] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        for item in session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            shown = [repr(v)[:24] for k, v in params.items() if k != "bridgeq_target"]
            name = getattr(item, "originalname", item.name).removeprefix("test_")
            self.names[item.nodeid] = name + (f"[{', '.join(shown)}]" if shown else "")
        if self.progress:
            self.progress(0, self.total, "")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = self.names.get(report.nodeid, report.nodeid)
        previous = self.report.results.get(name)
        if report.skipped:
            reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
            outcome = "unsupported" if UNSUPPORTED in reason else "skipped"
            self.report.results[name] = CaseResult(name, outcome, reason.replace("Skipped: ", ""))
        elif report.failed:
            message = report.longreprtext.strip().splitlines()[-1] if report.longreprtext else "failed"
            self.report.results[name] = CaseResult(name, "failed", message[:200], report.duration)
        elif report.when == "call" and (previous is None or previous.outcome == "passed"):
            self.report.results[name] = CaseResult(name, "passed", "", report.duration)
        if report.when == "teardown" and self.progress:
            self.progress(len(self.report.results), self.total, name)


def run_check(
    url: str, *, size: str = "short", keyword: str | None = None, progress: Any = None, styles: str = "sync"
) -> CheckReport:
    """Run every conformance case against ``url``; ``progress(done, total, name)`` is told as it goes."""
    report = CheckReport(url)
    with tempfile.TemporaryDirectory() as folder:
        ini = os.path.join(folder, "pytest.ini")
        with open(ini, "w") as handle:
            handle.write("[pytest]\n")
        args = [
            "--pyargs",
            "bridgeq.testing.cases",
            f"--bridgeq-url={url}",
            f"--bridgeq-size={size}",
            f"--bridgeq-styles={styles}",
            "-c",
            ini,
            "--rootdir",
            folder,
            "-p",
            "no:cacheprovider",
            "-p",
            "no:terminal",
        ]
        if keyword:
            args += ["-k", keyword]
        report.exit_code = int(pytest.main(args, plugins=[_Collector(report, progress)]))
    return report
