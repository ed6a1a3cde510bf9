"""The operations docs (docs/deploy-ecs.md, docs/deploy-kubernetes.md, docs/runbook.md, README's Operations)
say only what is true of this code: the task definition and the manifests parse, stop the worker later than
the KCL's graceful shutdown can take, run `streamkpi health` as their health check and set only real
settings; every `streamkpi ...` command written in them exists with the options written; every setting they
name exists; every link resolves, to a heading when it names one."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
import yaml

from streamkpi.cli import app
from streamkpi.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ECS, KUBERNETES, RUNBOOK = DOCS / "deploy-ecs.md", DOCS / "deploy-kubernetes.md", DOCS / "runbook.md"
README = ROOT / "README.md"
OPS_DOCS = (ECS, KUBERNETES, RUNBOOK)
SETTING_NAMES = {f.metadata["env"] for f in fields(Settings)}
MARGIN_SECONDS = 10  # after the KCL's grace: the shutdown hook starting, the JVM and the processors exiting
SECRET_SETTINGS = {"REDIS_URL", "STREAMKPI_REDACTION_KEY"}
RUNBOOK_SECTIONS = (
    "DLQ redrive",
    "Rebuild from archive",
    "Redis loss",
    "A stuck or lagging shard",
    "Resharding",
    "Rotating the redaction key",
)


# -- helpers --------------------------------------------------------------------------------------


def fenced(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def ops_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Operations\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, "README has no `## Operations` section"
    return match.group(1)


def kcl_grace_seconds(env: dict[str, str]) -> float:
    """The longest the KCL daemon's shutdown hook waits for the shards to checkpoint (it waits at most
    shutdownGraceMillis, read in KCL 3.1.3's MultiLangDaemon.setupShutdownHook), with these settings."""
    return Settings.from_mapping(env).kcl_shutdown_grace_millis / 1000


def checked_settings(env: dict[str, str]) -> Settings:
    """The doc's settings are names and values Settings accepts (secrets given stand-in values)."""
    unknown = set(env) - SETTING_NAMES
    assert unknown == set(), f"not settings: {sorted(unknown)}"
    values = {**env, "REDIS_URL": "rediss://:password@redis.example.com:6379/0", "STREAMKPI_REDACTION_KEY": "k" * 64}
    return Settings.from_mapping(values)


def task_definition() -> dict[str, Any]:
    blocks = [orjson.loads(block) for block in fenced(ECS, "json")]
    [task] = [block for block in blocks if "containerDefinitions" in block]
    return task


def manifests() -> list[dict[str, Any]]:
    return [doc for block in fenced(KUBERNETES, "yaml") for doc in yaml.safe_load_all(block) if doc]


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")  # a click group (typer brings its own copy of click)


def the_cli() -> Any:
    """The click command tree the `streamkpi` executable runs."""
    command = typer.main.get_command(app)
    assert is_group(command)
    return command


def resolve(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The command `streamkpi <words>` runs, the subcommand path and the words after it."""
    command = the_cli()
    path: list[str] = []
    rest = list(words)
    while is_group(command) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`streamkpi {' '.join(path + rest[:1])}`: no such command"
        command, path = sub, [*path, rest.pop(0)]
    return command, path, rest


def option_names(command: Any) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)} | {"--help"}


def written_commands(text: str) -> list[list[str]]:
    """Every `streamkpi ...` invocation in the code of a Markdown text (inline and fenced), as words, up to
    the end of the command (a pipe, `;`, `&&`, a comment, the end of the code)."""
    code = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.S | re.M)
    code += re.findall(r"`([^`\n]+)`", prose)
    commands = []
    for snippet in code:
        snippet = snippet.replace("\\\n", " ")
        # `streamkpi` where a command starts (not `kubectl -n streamkpi ...`), optionally with its path
        for match in re.finditer(r"(?:^|[;&|(]|\$ )[ \t]*(?:\S*/)?streamkpi[ \t]+([^\n|;&#)]*)", snippet, re.M):
            try:
                words = shlex.split(match.group(1))
            except ValueError:
                words = match.group(1).split()
            commands.append(words)
    return commands


# -- the task definition and the manifests --------------------------------------------------------


def test_the_ecs_task_definition_stops_after_the_kcl_grace_and_checks_health() -> None:
    task = task_definition()
    [container] = task["containerDefinitions"]
    env = {item["name"]: item["value"] for item in container["environment"]}
    secrets = {item["name"]: item["valueFrom"] for item in container["secrets"]}
    checked_settings(env)
    assert set(secrets) == SECRET_SETTINGS
    assert all(arn.startswith("arn:aws:secretsmanager:") for arn in secrets.values())
    assert set(env) & set(secrets) == set(), "a secret must not also be a plain variable"
    grace = kcl_grace_seconds(env)
    assert container["stopTimeout"] >= grace + MARGIN_SECONDS, "SIGKILL before the KCL's graceful shutdown ends"
    assert container["stopTimeout"] <= 120, "Fargate allows up to 120 s"
    assert container["healthCheck"]["command"] == ["CMD", "streamkpi", "health"]
    assert container["healthCheck"]["timeout"] < container["healthCheck"]["interval"]
    resolve(container["command"])  # the image's entrypoint is `streamkpi`
    assert container["command"] == ["consume"]
    assert task["taskRoleArn"].endswith(":role/streamkpi-worker")
    assert "](iam/worker.json)" in ECS.read_text(), "the task role's policy is linked"
    memory_mb, leases = int(task["memory"]), int(env["STREAMKPI_KCL_MAX_LEASES_FOR_WORKER"])
    assert memory_mb >= 1024 + 250 * leases * 0.9, "README, Sizing: the JVM plus about 250 MB per shard"


def test_the_kubernetes_deployment_stops_after_the_kcl_grace_and_probes_health() -> None:
    docs = manifests()
    kinds = {doc["kind"]: doc for doc in docs}
    assert {"ServiceAccount", "Deployment"} <= set(kinds)
    deployment, account = kinds["Deployment"], kinds["ServiceAccount"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    from_secret = {item["name"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})}
    checked_settings(env)
    assert from_secret == SECRET_SETTINGS
    assert pod["terminationGracePeriodSeconds"] >= kcl_grace_seconds(env) + MARGIN_SECONDS
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["streamkpi", "health"], probe
        assert container[probe]["timeoutSeconds"] <= container[probe]["periodSeconds"], probe
    resolve(container["args"])
    assert container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/streamkpi-worker")
    assert pod["securityContext"]["runAsUser"] == 10001, "the image's user"


def test_the_computed_grace_follows_the_setting() -> None:
    """A task that raises the KCL grace needs a longer stop timeout: the check reads the value given."""
    assert kcl_grace_seconds({"STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS": "45000"}) == 45
    assert kcl_grace_seconds({}) == Settings().kcl_shutdown_grace_millis / 1000


# -- what the docs name ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*OPS_DOCS, DOCS / "alerts.yml"], ids=lambda p: p.name)
def test_every_setting_named_is_a_setting(path: Path) -> None:
    named = set(re.findall(r"\b(?:STREAMKPI_[A-Z0-9_]+|AWS_ENDPOINT_URL|REDIS_URL)\b", path.read_text()))
    assert named, "names settings"
    assert named - SETTING_NAMES == set()


@pytest.mark.parametrize("path", [*OPS_DOCS, README], ids=lambda p: p.name)
def test_every_streamkpi_command_written_exists_with_its_options(path: Path) -> None:
    text = ops_section() if path == README else path.read_text()
    commands = written_commands(text)
    if path != README:
        assert len(commands) >= 3
    for words in commands:
        command, _, rest = resolve(words)
        assert not is_group(command), f"`streamkpi {' '.join(words)}` names no command"
        options = option_names(command)
        for word in rest:
            if word.startswith("-") and word != "-":
                name = word.split("=", 1)[0]
                assert name in options, f"`streamkpi {' '.join(words)}`: {name} is not an option"


def test_the_command_check_finds_commands_and_refuses_unknown_ones() -> None:
    text = (
        "Run `streamkpi dlq peek -n 5 | jq .` then\n```sh\n.venv/bin/streamkpi rebuild --from a \\\n  --to b --yes\n"
        "kubectl -n streamkpi rollout restart deployment/x\n```\n"
    )
    assert sorted(written_commands(text)) == [
        ["dlq", "peek", "-n", "5"],
        ["rebuild", "--from", "a", "--to", "b", "--yes"],
    ]
    with pytest.raises(AssertionError, match="no such command"):
        resolve(["dlq", "purge"])
    command, _, _ = resolve(["dlq", "redrive"])
    assert "--dry-run" in option_names(command) and "--purge" not in option_names(command)


def test_the_runbook_has_every_section_and_each_says_symptoms_and_fix() -> None:
    text = RUNBOOK.read_text()
    anchors = heading_anchors(RUNBOOK)
    for title in RUNBOOK_SECTIONS:
        assert re.search(rf"^## {re.escape(title)}$", text, flags=re.M), title
        body = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert "**Fix.**" in body or "**Do it.**" in body, title
        assert re.search(r"`streamkpi |Streamkpi[A-Z]", body), f"{title}: no command or alert named"
    assert {"dlq-redrive", "redis-loss", "a-stuck-or-lagging-shard"} <= anchors


def links(path: Path, text: str) -> list[str]:
    """Markdown link targets that are not web addresses, and `docs/...` paths written in the text."""
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    return targets + [f"/{p}" for p in re.findall(r"(?<![\w/.])(docs/[\w./-]*\w)", text)]


@pytest.mark.parametrize("path", [*OPS_DOCS, README], ids=lambda p: p.name)
def test_every_link_resolves(path: Path) -> None:
    text = ops_section() if path == README else path.read_text()
    found = links(path, text)
    assert found
    for target in found:
        file, _, anchor = target.partition("#")
        resolved = ROOT / file[1:] if file.startswith("/") else (path.parent / file if file else path)
        assert resolved.exists(), f"{path.name}: {target} does not exist"
        if anchor:
            assert anchor in heading_anchors(resolved), f"{path.name}: {target}: no such heading"


def test_the_readme_links_the_operations_docs() -> None:
    section = ops_section()
    for doc in ("docs/deploy-ecs.md", "docs/deploy-kubernetes.md", "docs/runbook.md", "docs/alerts.yml"):
        assert f"]({doc})" in section, doc
    text = README.read_text()
    assert text.index("## Container") < text.index("## Operations"), "Operations comes after Container"


def test_kcl_metrics_go_to_cloudwatch_only_when_asked() -> None:
    """STREAMKPI_KCL_METRICS_LEVEL is the CloudWatch switch the deploy docs set: NONE unless set."""
    from streamkpi.kcl_daemon import render_properties

    def level(env: dict[str, str]) -> list[str]:
        text = render_properties(Settings.from_mapping(env), "/opt/streamkpi-processor", "worker-1")
        return [line for line in text.splitlines() if line.startswith("metricsLevel")]

    assert level({}) == ["metricsLevel = NONE"]
    assert level({"STREAMKPI_KCL_METRICS_LEVEL": "SUMMARY"}) == ["metricsLevel = SUMMARY"]
    doc = next(f.metadata["doc"] for f in fields(Settings) if f.metadata["env"] == "STREAMKPI_KCL_METRICS_LEVEL")
    assert "CloudWatch" in doc and "NONE (nothing" in doc
    assert "STREAMKPI_KCL_METRICS_LEVEL" in ops_section()
