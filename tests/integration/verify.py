"""What the integration tests that run many events through the real daemon check at the end: every
aggregate in both stores against the independent reference (tests/integration/reference.py), and the
DLQ's distinct identities with their reasons."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson

from aggregations.query import read_metric, shape
from streamkpi.app import Services
from tests.integration.conftest import Stack
from tests.integration.dlq_drain import DlqDrain
from tests.integration.reference import Reference
from tests.integration.test_kcl_end_to_end import cli, iso, stored_counts


class DlqReader(DlqDrain):
    """The DLQ's consumer for the whole test, keeping every identity with its reason."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack, interval=1.0)
        self.letters: dict[str, str] = {}
        self.conflicts: list[dict[str, Any]] = []

    def keep(self, body: dict[str, Any]) -> None:
        if self.letters.setdefault(body["id"], body["reason"]) != body["reason"]:
            self.conflicts.append(body)

    def finish(self) -> dict[str, str]:  # type: ignore[override]
        """Stop the background reader, read what is left, return identity -> reason."""
        super().finish()
        assert not self.conflicts, f"one identity with two reasons: {self.conflicts[:5]}"
        return self.letters


def diff(expected: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
    """Readable differences of two query results: per window and group, expected vs actual."""
    problems = []
    if expected["agg"] != actual["agg"]:
        problems.append(f"{where}: agg expected {expected['agg']!r}, got {actual['agg']!r}")
    got = {w["start_ms"]: w for w in actual["windows"]}
    for window in expected["windows"]:
        start = window["start_ms"]
        mine = got.pop(start, None)
        if mine is None:
            problems.append(f"{where} window {window['start']}: missing from the store's answer")
            continue
        if mine["total"] != window["total"]:
            problems.append(f"{where} window {window['start']} total: expected {window['total']}, got {mine['total']}")
        for group in sorted(set(window["groups"]) | set(mine["groups"])):
            e, a = window["groups"].get(group), mine["groups"].get(group)
            if e != a:
                problems.append(f"{where} window {window['start']} group {group!r}: expected {e}, got {a}")
    problems += [f"{where} window {start}: not expected" for start in got]
    return problems


def store_problems(stack: Stack, reference: Reference, everything: bool = True) -> tuple[list[str], int]:
    """Every metric x resolution x store (one store read per resolution, shaped per metric by the query's
    own code: what read_metric and `streamkpi query` do) against the reference: (the differences, windows
    compared). With `everything` (a run of the default traffic), also read_metric itself and the CLI as a
    user runs it, and every metric must have windows. The AWS credentials of `stack` must be in the
    environment (Services reads it)."""
    services = Services(stack.settings)
    assert [r.name for r in services.config.resolutions] == list(reference.config.resolutions)
    assert set(services.config.metric_set.by_name) == set(reference.config.metrics)
    stores = (("dynamodb", services.dynamodb_store), ("redis", services.redis_store))
    problems: list[str] = []
    compared = 0
    ranges = {}
    for res in reference.config.resolutions:
        resolution = services.config.resolution(res)
        first, end = reference.span(res)
        from_ms, to_ms = first - resolution.size_ms, end + resolution.size_ms  # an empty window each side
        ranges[res] = (from_ms, to_ms)
        starts = list(resolution.starts_between(from_ms, to_ms))
        found = {name: store.read(res, starts) for name, store in stores}
        for metric in reference.config.metrics:
            expected = reference.query(metric, res, from_ms, to_ms)
            held = [w for w in expected["windows"] if w["groups"]]
            assert held or not everything, f"{metric} {res}: the reference has no window at all"
            for name, _store in stores:
                actual = orjson.loads(orjson.dumps(shape(resolution, metric, starts, found[name])))
                problems += diff(expected, actual, f"{name} {metric} {res}")
                compared += len(held)
    if not everything:
        return problems, compared
    from_ms, to_ms = ranges["1h"]
    for name, store in stores:
        result = read_metric(store, services.config.resolution("1h"), "donations", from_ms, to_ms)
        expected = reference.query("donations", "1h", from_ms, to_ms)
        problems += diff(expected, orjson.loads(orjson.dumps(result)), f"read_metric {name} donations 1h")
    for metric, res in (("donation_amount", "1m"), ("distinct_users", "1h")):
        from_ms, to_ms = ranges[res]
        expected = reference.query(metric, res, from_ms, to_ms)
        for name in ("dynamodb", "redis"):
            out = _query_cli(stack, metric, res, from_ms, to_ms, name)
            problems += diff(expected, out, f"cli {name} {metric} {res}")
    return problems, compared


def _query_cli(stack: Stack, metric: str, res: str, from_ms: int, to_ms: int, store: str) -> dict[str, Any]:
    out = cli(stack, "query", "--metric", metric, "--resolution", res, "--from", iso(from_ms), "--to",
              iso(to_ms), "--store", store, "--format", "json")  # fmt: skip
    return dict(json.loads(out.stdout))


def merged_counts(*truths: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The per-type per-minute counts of several `streamkpi generate --truth` files, added up."""
    merged: dict[str, Counter[str]] = {}
    for truth in truths:
        for start, groups in truth["counts"]["events"]["1m"].items():
            merged.setdefault(start, Counter()).update(groups)
    return {start: dict(sorted(groups.items())) for start, groups in sorted(merged.items())}


def assert_counts_in_both_stores(stack: Stack, *truths: dict[str, Any]) -> None:
    """Exact per-type per-minute counts over the truths, in the durable and in the hot store."""
    expected = merged_counts(*truths)
    starts = sorted(int(k) for k in expected)
    from_ms, to_ms = starts[0], starts[-1] + 60_000
    assert sum(sum(groups.values()) for groups in expected.values()) == sum(t["valid"] for t in truths)
    assert stored_counts(stack, "dynamodb", from_ms, to_ms) == expected
    assert stored_counts(stack, "redis", from_ms, to_ms) == expected


def partial_positions(stack: Stack) -> dict[str, str]:
    """Per shard, the highest position (`seq.sub.index`, zero-padded: string order is number order) that any
    of its partials in DynamoDB includes."""
    out: dict[str, str] = {}
    pages = (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=stack.settings.metrics_table,
            ProjectionExpression="#s, #p",
            ExpressionAttributeNames={"#s": "shard", "#p": "position"},
            ConsistentRead=True,
        )
    )
    for page in pages:
        for item in page["Items"]:
            shard, position = item["shard"]["S"], item["position"]["S"]
            out[shard] = max(out.get(shard, ""), position)
    return out
