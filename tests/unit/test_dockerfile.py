"""No Docker engine runs here, so the image must install with the script CI runs, and copy every package
the worker needs; the local stack (package devstack, the `local` extra: moto, hypercorn) stays out."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL_STACK = "devstack"
LOCAL_EXTRA = ("moto", "hypercorn")


def installed_packages() -> set[str]:
    return {p.rstrip("*") for p in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}


def copied() -> set[str]:
    return {p.rstrip("/") for line in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M) for p in line.split()}


def setup_options() -> list[str]:
    run = re.search(r"^RUN scripts/setup\.sh((?: --[a-z-]+)*)", DOCKERFILE, re.M)
    return run.group(1).split() if run else []


def test_the_image_is_python_3_12_slim_non_root_and_runs_consume() -> None:
    assert re.search(r"^FROM python:3\.12-slim\b", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["streamkpi"]' in DOCKERFILE and 'CMD ["consume"]' in DOCKERFILE


def test_the_image_installs_with_the_setup_script_make_setup_runs() -> None:
    assert re.search(r"^RUN scripts/setup\.sh\b", DOCKERFILE, re.M)
    assert "scripts/setup.sh" in (ROOT / "Makefile").read_text()


def test_every_package_in_the_tree_is_installed() -> None:
    on_disk = {d.name for d in ROOT.iterdir() if (d / "__init__.py").exists()} - {"tests"}
    missing = on_disk - installed_packages()
    assert not missing, f"packages pyproject.toml does not install: {missing}"


def test_the_image_copies_every_package_the_worker_needs_and_not_the_local_stack() -> None:
    worker = {p for p in installed_packages() if (ROOT / p / "__init__.py").exists()} - {LOCAL_STACK}
    assert worker <= copied(), f"packages not copied into the image: {worker - copied()}"
    assert LOCAL_STACK not in copied()
    assert {"requirements.txt", "requirements-kcl.txt", "pyproject.toml", "README.md", "scripts"} <= copied()


def test_the_image_does_not_install_the_local_extra() -> None:
    assert "--no-local" in setup_options()
    assert "requirements-local.txt" not in copied()
    worker_requirements = (ROOT / "requirements.txt").read_text().lower()
    dependencies = " ".join(PROJECT["project"]["dependencies"]).lower()
    for name in LOCAL_EXTRA:
        assert name not in worker_requirements and name not in dependencies, f"{name} is a worker dependency"
        assert any(d.lower().startswith(name) for d in PROJECT["project"]["optional-dependencies"]["local"])
        assert name in (ROOT / "requirements-local.txt").read_text().lower()
