"""What the benchmark scripts share: the machine's description and their block in docs/benchmarks.md."""

from __future__ import annotations

import platform
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_block(section: list[str], start: str, end: str, heading: str = "") -> None:
    """Replace the text between the `start` and `end` markers (or append it, under `heading`)."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = "\n".join([start, *section, end])
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    DOCS.write_text(text)
