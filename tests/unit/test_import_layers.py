"""The import contracts in `.importlinter` (imports run one way, a pure core, no cycles) hold, and the
checker is not vacuous: the same contracts fail on a copy of the code with one import pointing upwards."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def root_packages() -> list[str]:
    config = configparser.ConfigParser()
    config.read(CONTRACTS)
    return config["importlinter"]["root_packages"].split()


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    # cwd and PYTHONPATH first: the packages in `where` are the ones analysed, not the installed ones.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(CONTRACTS)],
        cwd=where,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


def test_every_top_level_package_is_under_contract() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in {"tests", "scripts"}}
    assert packages == set(root_packages()), "add the new package to .importlinter's root_packages and layers"


def copy_code(to: Path) -> None:
    for package in root_packages():
        shutil.copytree(ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__", "static"))


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    copy_code(tmp_path)
    worker = tmp_path / "consumer" / "decode.py"
    worker.write_text(worker.read_text() + "\nfrom streamkpi.cli import main  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "consumer.decode -> streamkpi.cli" in result.stdout


def test_an_io_import_in_the_core_breaks_the_pure_core(tmp_path: Path) -> None:
    copy_code(tmp_path)
    windows = tmp_path / "aggregations" / "windows.py"
    windows.write_text(windows.read_text() + "\nimport redis  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "aggregations.windows -> redis" in result.stdout
