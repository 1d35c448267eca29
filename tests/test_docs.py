"""The README's capability table is generated from the code; it must not drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bridgeq.testing.targets import required, resolve_target

ROOT = Path(__file__).resolve().parent.parent


def test_readme_capability_table_matches_the_backends():
    for backend in ("redis", "rabbitmq", "kafka"):
        if resolve_target(backend).url is None:
            if required(backend):
                pytest.fail(f"{backend} is required but unavailable")
            pytest.skip(f"{backend} unavailable: the table needs every backend")
    spec = importlib.util.spec_from_file_location("capability_table", ROOT / "scripts" / "capability_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.table() in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md's capability table is stale: run python scripts/capability_table.py --write"
    )
