"""`streamkpi rebuild`: destroy the aggregates of a closed range and replay the archive so that the
workers compute them again (derived values can always be rebuilt from the archive).

Stop the world: a running worker keeps the windows it touched in memory and would add the replayed
events to the old counts, so the workers of the stream must be stopped while the aggregates are reset.
The rebuild checks the KCL lease table for leases that are still being renewed and refuses if any
are. The replayed records wait in the stream until the workers are started again.

A reset empties whole windows of every resolution, including the coarsest (a 1-day window for a
10-minute range), and those windows hold events from outside the range too. So the reset and the
replay both cover the same span: the whole windows (`aggregations.repair.replay_span`), widened until
every resolution's windows fit it. The rebuild's own resume file records that the reset is done, so an
interrupted rebuild continues with the replay and never resets the half-replayed span again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from aggregations.repair import replay_span, reset_range
from aggregations.store import AggregateStore
from aggregations.windows import Resolution
from replay import progress
from replay.progress import Progress
from replay.runner import Replayer, ReplayError, ReplayOptions, Summary

log = logging.getLogger("streamkpi.rebuild")


def rebuild_span(resolutions: Sequence[Resolution], from_ms: int, to_ms: int) -> tuple[int, int]:
    """The span whose windows a rebuild empties and refills: a fixed point of `replay_span` (whole windows
    of every resolution, so resetting it touches nothing outside it)."""
    span = (from_ms, to_ms)
    for _ in range(100):
        wider = replay_span(resolutions, *span)
        wider = (min(wider[0], span[0]), max(wider[1], span[1]))
        if wider == span:
            return span
        span = wider
    raise ValueError("the resolutions' windows do not nest into a common span")


def running_leases(dynamodb: Any, lease_table: str, wait_s: float, sleep: Callable[[float], None]) -> list[str] | None:
    """Shards whose KCL lease is renewed during `wait_s` (a worker holds them), or None without a lease table.

    KCL renews every lease it holds every failover time / 3, incrementing `leaseCounter`."""
    first = _lease_counters(dynamodb, lease_table)
    if first is None:
        return None
    sleep(wait_s)
    second = _lease_counters(dynamodb, lease_table) or {}
    return sorted(k for k, (owner, counter) in second.items() if owner and k in first and first[k][1] != counter)


def _lease_counters(dynamodb: Any, table: str) -> dict[str, tuple[str, str]] | None:
    leases: dict[str, tuple[str, str]] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        try:
            page = dynamodb.scan(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        for item in page.get("Items", []):
            owner = item.get("leaseOwner", {}).get("S", "")
            leases[item["leaseKey"]["S"]] = (owner, item.get("leaseCounter", {}).get("N", ""))
        if "LastEvaluatedKey" not in page:
            return leases
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def run_rebuild(
    *,
    stores: Iterable[tuple[str, AggregateStore]],
    resolutions: Sequence[Resolution],
    s3: Any,
    kinesis: Any,
    options: ReplayOptions,
    echo: Callable[[str], None],
    **replayer_kwargs: Any,
) -> Summary:
    """Reset the span's aggregates in every store (once), then replay the span from the archive.

    `options` covers the span (from_ms, to_ms) and names the rebuild's resume file."""
    path = options.resume
    if path is None:
        raise ValueError("a rebuild needs a resume file")
    try:
        state = progress.load(path)
        if state is not None:
            state.check_params(options.params(), path)
    except progress.ProgressError as exc:
        raise ReplayError(str(exc)) from None
    if state is not None and state.extra.get("rebuild", {}).get("reset_done"):
        echo(f"continuing the interrupted rebuild recorded in {path}: the aggregates were reset already")
    else:
        state = state or Progress(options.params())
        state.extra["rebuild"] = {"reset_done": False, "span": [options.from_ms, options.to_ms]}
        progress.save(path, state)
        counts = []
        for name, store in stores:
            counts.append(f"{reset_range(store, resolutions, options.from_ms, options.to_ms)} {name}")
        state.extra["rebuild"]["reset_done"] = True
        progress.save(path, state)
        echo(f"reset {' and '.join(counts)} window entries")
        log.info("rebuild: aggregates reset", extra={"span": [options.from_ms, options.to_ms], "entries": counts})
    summary = Replayer(s3, kinesis, replace(options, dry_run=False), **replayer_kwargs).run()
    if summary.ok:
        progress.remove(path)
    return summary
