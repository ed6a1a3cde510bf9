"""What the Dockerfile promises, read from it: two stages on a digest-pinned Python 3.11 base, the worker's
packages in the build context and not the local stack (package devstack, the `local` extra: moto, hypercorn),
non-root, SIGTERM, a HEALTHCHECK. tests/integration/test_image.py builds and runs it."""

from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL_STACK = "devstack"
LOCAL_EXTRA = ("moto", "hypercorn")


def installed_packages() -> set[str]:
    return {p.rstrip("*") for p in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}


def in_context(path: str) -> bool:
    """Whether the build context holds `path` under .dockerignore (the last matching rule wins)."""
    included = True
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or fnmatch.fnmatchcase(path, pattern):
            included = negated
    return included


def test_the_base_is_python_of_the_tests_pinned_by_digest_and_both_stages_use_it() -> None:
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert default, "the base is an ARG (the image test passes a base built from Debian packages)"
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.fullmatch(rf"python:{re.escape(minor)}-slim-bookworm@sha256:[0-9a-f]{{64}}", default.group(1))
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.M)
    assert stages == [("${BASE_IMAGE}", "build"), ("${BASE_IMAGE}", "runtime")]


def test_the_runtime_gets_the_jre_and_the_venv_and_runs_consume_as_non_root() -> None:
    runtime = DOCKERFILE.split(" AS runtime", 1)[1]
    assert "openjdk-17-jre-headless" in runtime and "--no-install-recommends" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    assert re.search(r"^COPY --from=build ", runtime, re.M)
    assert not re.search(r"^COPY (?!--from=build)", runtime, re.M), "the runtime copies only the built venv"
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["streamkpi"]' in DOCKERFILE and 'CMD ["consume"]' in DOCKERFILE
    assert re.search(r"^STOPSIGNAL SIGTERM$", DOCKERFILE, re.M)
    assert re.search(r'^HEALTHCHECK .*CMD \["streamkpi", "health"\]$', DOCKERFILE, re.M)


def test_every_package_in_the_tree_is_installed() -> None:
    on_disk = {d.name for d in ROOT.iterdir() if (d / "__init__.py").exists()} - {"tests"}
    missing = on_disk - installed_packages()
    assert not missing, f"packages pyproject.toml does not install: {missing}"


def test_the_context_holds_every_package_the_worker_needs_and_not_the_local_stack() -> None:
    worker = {p for p in installed_packages() if (ROOT / p / "__init__.py").exists()} - {LOCAL_STACK}
    assert all(in_context(f"{p}/__init__.py") for p in worker), [p for p in worker if not in_context(f"{p}/x.py")]
    for needed in ("requirements.txt", "requirements-kcl.txt", "pyproject.toml", "README.md"):
        assert in_context(needed), needed
    for kept_out in (f"{LOCAL_STACK}/__init__.py", "tests/conftest.py", ".venv/bin/python", ".streamkpi/local.env",
                     ".git/config", "requirements-local.txt", "streamkpi/__pycache__/app.cpython-311.pyc"):  # fmt: skip
        assert not in_context(kept_out), kept_out


def test_the_image_does_not_install_the_local_extra() -> None:
    assert "requirements-local.txt" not in DOCKERFILE and "setup.sh" not in DOCKERFILE
    worker_requirements = (ROOT / "requirements.txt").read_text().lower()
    dependencies = " ".join(PROJECT["project"]["dependencies"]).lower()
    for name in LOCAL_EXTRA:
        assert name not in worker_requirements and name not in dependencies, f"{name} is a worker dependency"
        assert any(d.lower().startswith(name) for d in PROJECT["project"]["optional-dependencies"]["local"])
        assert name in (ROOT / "requirements-local.txt").read_text().lower()
