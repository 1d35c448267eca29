"""Fixtures of the fault tests (helpers in fault_support.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.faults.fault_support import BACKENDS, REAL, Captured, url_of


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    return url_of(request.param)


@pytest.fixture(params=REAL)
def real_url(request: pytest.FixtureRequest) -> str:
    return url_of(request.param)


@pytest.fixture
def all_logs() -> Iterator[Captured]:
    """Every logger at DEBUG (client libraries' included) into one handler, for the test's duration."""
    handler = Captured()
    root = logging.getLogger()
    saved = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    saved_root = root.level
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
