"""The README is the front door: its settings table must be the one the code documents."""

from __future__ import annotations

import re
from pathlib import Path

from streamkpi.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_equals_the_generated_one() -> None:
    match = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", README.read_text(), re.S)
    assert match, "README.md lost its settings table markers"
    assert match.group(1).strip() == settings_table_markdown().strip()


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (README.parent / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z-]+)", README.read_text()))
    assert named and named <= targets


def test_readme_reason_table_lists_every_reason_code_with_its_meaning() -> None:
    from consumer.reasons import REASON_DOCS, Reason

    match = re.search(r"<!-- reasons-table:start -->\n(.*?)\n<!-- reasons-table:end -->", README.read_text(), re.S)
    assert match, "README.md lost its reason table markers"
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", match.group(1), re.M))
    assert rows == REASON_DOCS
    assert set(rows) == {r.value for r in Reason}
