"""No Docker engine runs here, so the image must install with the script CI runs, and copy every package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_image_is_python_3_12_slim_non_root_and_runs_consume() -> None:
    assert re.search(r"^FROM python:3\.12-slim\b", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["streamkpi"]' in DOCKERFILE and 'CMD ["consume"]' in DOCKERFILE


def test_the_image_installs_with_the_setup_script_make_setup_runs() -> None:
    assert re.search(r"^RUN scripts/setup\.sh\b", DOCKERFILE, re.M)
    assert "scripts/setup.sh" in (ROOT / "Makefile").read_text()


def test_the_image_copies_every_package_and_file_the_install_needs() -> None:
    copied = {p.rstrip("/") for line in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M) for p in line.split()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    present = {p for p in packages if (ROOT / p / "__init__.py").exists()}
    assert present <= copied, f"packages not copied into the image: {present - copied}"
    assert {"requirements.txt", "requirements-kcl.txt", "pyproject.toml", "README.md", "scripts"} <= copied
