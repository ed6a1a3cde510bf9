"""The README is the front door: its settings table must be the one the code documents."""

from __future__ import annotations

import re
from pathlib import Path

from streamkpi.settings import settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


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


def architecture_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Architecture")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_the_architecture_section_names_exists() -> None:
    modules = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/*.py") if ".venv" not in p.parts]
    named = set(re.findall(r"`([\w/]+\.py)`", architecture_section()))
    assert len(named) > 40
    missing = sorted(name for name in named if not any(m == name or m.endswith("/" + name) for m in modules))
    assert not missing, f"the README names modules that do not exist: {missing}"
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "scripts"}
    unnamed = sorted(p for p in packages if f"`{p}/`" not in architecture_section())
    assert not unnamed, f"packages the README's architecture section does not describe: {unnamed}"


def test_the_walk_of_one_event_names_functions_that_exist() -> None:
    walk = architecture_section().split("One event from stdin to DynamoDB:")[1].split("\n\n")[0]
    steps = re.findall(r"`(\w+)\.(\w+)(?:\.(\w+))?`", walk)
    assert len(steps) >= 8
    for module, name, member in steps:
        # `module.name[.member]`, or `Class.method` of a class named before
        pattern = "*.py" if module[0].isupper() else f"{module}.py"
        files = [p for p in ROOT.glob(f"*/**/{pattern}") if ".venv" not in p.parts and "tests" not in p.parts]
        assert files, f"no module {module}.py"
        source = "\n".join(f.read_text() for f in files)
        for defined in filter(None, (module if module[0].isupper() else None, name, member)):
            assert re.search(rf"^\s*(class|def) {defined}\b", source, re.M), f"{module}.py defines no {defined}"
