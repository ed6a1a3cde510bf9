"""docs/alerts.yml: Prometheus accepts the rules, each alert fires and stays quiet when it should (promtool's
own unit tests, docs/alerts.test.yml), every alert is complete and points at a runbook section, and every
metric an expression reads is one that /metrics serves, rendered from a snapshot the publisher built.

promtool comes from Debian's `prometheus` package: when it is not on PATH the test downloads that package
with apt and unpacks promtool alone (no service is installed or started) into ~/.cache/streamkpi.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aggregations.memory_store import MemoryStore
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.health.memory import MemoryHealth
from consumer.worker import Outputs, ShardWorker, Stores
from dashboard.publisher import Publisher, Source
from dashboard.server import SnapshotCollector, SnapshotHolder
from dashboard.snapshot import DlqReading
from streamkpi.config import load_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamkpi" / "promtool"
SEVERITIES = {"warning", "critical"}


# -- promtool -------------------------------------------------------------------------------------


def promtool() -> str:
    """promtool on PATH, or the one unpacked from Debian's `prometheus` package (fetched with apt once)."""
    found = shutil.which("promtool")
    if found:
        return found
    cached = CACHE / "promtool"
    if cached.exists():
        return str(cached)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.fail("promtool is missing and there is no apt-get/dpkg-deb to fetch it: install Prometheus' promtool")
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", "prometheus"]
        done = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and os.geteuid() == 0:  # no package lists yet: what scripts/setup.sh does
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
            done = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"`apt-get download prometheus` failed (for promtool): {done.stderr.strip()[-500:]}")
        [deb] = Path(tmp).glob("prometheus_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True, timeout=300)
        CACHE.mkdir(parents=True, exist_ok=True)
        staged = CACHE / f"promtool.{os.getpid()}"
        shutil.copy2(f"{tmp}/x/usr/bin/promtool", staged)
        os.replace(staged, cached)  # atomic: a parallel test run sees the whole file or none
    return str(cached)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    done = run_promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_would_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one firing case turned quiet is refused."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    doc["rule_files"] = [str(RULES)]
    case = next(c for t in doc["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"] = []
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(doc))
    done = run_promtool("test", "rules", str(broken))
    assert done.returncode != 0 and case["alertname"] in done.stdout + done.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired, quiet = set(), set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (fired | quiet) - names == set(), "tests of alerts that do not exist"


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_waits_has_a_severity_and_says_what_to_do() -> None:
    anchors = runbook_anchors()
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"Streamkpi[A-Z][A-Za-z]+", name), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: `for:` missing"
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in anchors, f"{name}: {notes['runbook_url']} is not a section"


# -- the metrics the expressions read -------------------------------------------------------------

_FUNCTIONS_AND_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_OPERATORS = {"and", "or", "unless"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions (followed by `(`),
    keywords, label names (inside `{}` and the lists of by/on/...), durations (inside `[]`) or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or word in _FUNCTIONS_AND_WORDS | _OPERATORS:
            continue
        if re.search(r"[\d.]$", text[: match.start()]):  # the unit of a number, e.g. 1e3 (none here)
            continue
        names.add(word)
    return names


def test_metric_names_are_read_from_expressions_as_promql_means_them() -> None:
    expr = (
        'max by (shard) (rate(a_total{state="x",shard=~"s.*"}[5m])) > 1 and on (shard) b_seconds '
        'unless on () absent(c) or vector(0) / sum without (le) (d:rate5m{job="max(e)"})'
    )
    assert metric_names(expr) == {"a_total", "b_seconds", "c", "d:rate5m"}


def served_metric_names() -> set[str]:
    """What /metrics serves, rendered by the server's collector from a snapshot the publisher built: a worker
    processed events and dead letters, reported its health and checkpointed; Redis is down, so the
    publisher reads DynamoDB and names the problem; the DLQ holds letters."""
    config = load_config(None)
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    health, letters = MemoryHealth(), MemoryDeadLetterQueue()
    worker = ShardWorker(
        "shardId-000000000000", "events", config.pipeline, Stores(durable, hot), Outputs(letters, health=health)
    )
    now_ms = int(time.time() * 1000)
    event = b'{"eventType": "page.view", "timestamp": %d, "path": "/"}' % (now_ms - 1000)
    worker.process([(event, "1", 0, "pk", now_ms), (b"junk", "2", 0, "pk", now_ms)])
    worker.flush_durable()
    worker.mark_checkpointed()
    worker.stats.last = {"millis_behind_latest": 1200}
    worker.report_health()
    hot.available = False

    class Dlq:
        def read(self, now: int) -> DlqReading:
            return DlqReading(approximate={"visible": 1, "inFlight": 0, "delayed": 0})

    def health_hashes() -> dict[str, dict[str, str]]:  # as Redis holds them: strings, "" for None
        return {s: {k: "" if v is None else str(v) for k, v in f.items()} for s, f in health.shards.items()}

    source = Source(
        stream="events",
        stores=[hot, durable],
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=health_hashes,
        dlq=cast(Any, Dlq()),
    )
    holder = SnapshotHolder()
    publisher = Publisher(source, [holder])
    snapshot = publisher.publish_once()
    assert snapshot["shards"]["rows"][0]["deadLetters"] == 1 and snapshot["problems"], "a snapshot with data"
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(holder, publisher))
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_metric_an_alert_reads_is_served_by_metrics() -> None:
    served = served_metric_names()
    assert "streamkpi_shard_behind_latest_seconds" in served and "streamkpi_dlq_messages" in served
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= served, f"{rule['alert']} reads {sorted(names - served)}, which /metrics does not serve"
