"""Print (or write into README.md) the capability table, read from each backend's declaration.

    python scripts/capability_table.py [--write]

URLs: memory://, and $BRIDGEQ_TEST_{REDIS,RABBITMQ,KAFKA}_URL (defaults: the compose/native ones).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import bridgeq
from bridgeq.capabilities import Capabilities

DEFAULTS = {
    "memory": "memory://",
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "kafka": "kafka://127.0.0.1:9092",
}
START, END = "<!-- capabilities:start -->", "<!-- capabilities:end -->"


def table() -> str:
    found: dict[str, Capabilities] = {}
    for name, default in DEFAULTS.items():
        url = os.environ.get(f"BRIDGEQ_TEST_{name.upper()}_URL", default).split("?")[0]
        with bridgeq.connect(url) as broker:
            found[name] = broker.capabilities
    names = list(found)
    lines = [
        "| capability (default options) | " + " | ".join(names) + " | meaning |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for field, _, doc in Capabilities().describe():
        cells = [_cell(getattr(found[n], field)) for n in names]
        lines.append(f"| `{field}` | " + " | ".join(cells) + f" | {doc} |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    return str(value)


def main() -> None:
    text = table()
    if "--write" not in sys.argv:
        print(text)
        return
    readme = Path(__file__).resolve().parent.parent / "README.md"
    content = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", content), encoding="utf-8")


if __name__ == "__main__":
    main()
