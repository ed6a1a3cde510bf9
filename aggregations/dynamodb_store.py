"""DynamoDB backend (pynamodb): the durable home of every shard partial.

Item layout (one item per resolution, window and shard, so a flush writes one item per dirty window
whatever the number of metrics and groups):
    pk = "<resolution>#<bucket start ms>"   buckets of 1,440 windows (a day of minutes), for range queries
    sk = "<window start ms, 15 digits>#<shard id>"
    position (S)   last event folded in, fixed-width (see partials.encode_position)
    metrics (B)    zlib-compressed JSON of the partial
    expires_at (N) TTL, epoch seconds: window end + the resolution's DynamoDB retention
A write is a PutItem conditioned on the stored position not being newer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, PutError, PynamoDBException
from pynamodb.models import Model

from aggregations.errors import StoreRejectedError, StoreUnavailableError
from aggregations.partials import StoredPartial, WindowKey
from aggregations.store import decode_metrics, encode_metrics
from aggregations.windows import Resolution

WINDOWS_PER_BUCKET = 1440
_INVALID = object()  # a write DynamoDB refused as invalid
WRITE_CONCURRENCY = 16


class MetricItem(Model):
    """Base model; `make_model` binds it to a table, region and endpoint."""

    class Meta:
        abstract = True

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    shard = UnicodeAttribute()
    resolution = UnicodeAttribute()
    window_start = NumberAttribute()
    position = UnicodeAttribute()
    metrics = BinaryAttribute(legacy_encoding=False)
    expires_at = NumberAttribute()


def make_model(table_name: str, region: str, host: str | None) -> type[MetricItem]:
    meta = type(
        "Meta",
        (),
        {
            "table_name": table_name,
            "region": region,
            "host": host,
            "billing_mode": "PAY_PER_REQUEST",
            "max_retry_attempts": 3,
            "connect_timeout_seconds": 5,
            "max_pool_connections": WRITE_CONCURRENCY,
            "read_timeout_seconds": 10,
        },
    )
    return type(f"MetricItem_{table_name}", (MetricItem,), {"Meta": meta})


def bucket_start(resolution: Resolution, start_ms: int) -> int:
    span = resolution.size_ms * WINDOWS_PER_BUCKET
    return start_ms - start_ms % span


def item_keys(resolution: Resolution, start_ms: int, shard_id: str) -> tuple[str, str]:
    return f"{resolution.name}#{bucket_start(resolution, start_ms)}", f"{start_ms:015d}#{shard_id}"


class DynamoDBStore:
    name = "dynamodb"

    def __init__(self, model: type[MetricItem], resolutions: Iterable[Resolution]) -> None:
        self.model = model
        self.resolutions = {r.name: r for r in resolutions}
        self.writes = 0
        self.last_validation_error = ""
        self._lock = threading.Lock()

    def _resolution(self, name: str) -> Resolution:
        try:
            return self.resolutions[name]
        except KeyError:
            raise ValueError(f"unknown resolution {name!r}; configured: {sorted(self.resolutions)}") from None

    def load(self, shard_id: str, keys: Sequence[WindowKey]) -> dict[WindowKey, StoredPartial]:
        wanted = [item_keys(self._resolution(r), start, shard_id) for r, start in keys]
        try:
            items = list(self.model.batch_get(wanted, consistent_read=True))
        except PynamoDBException as exc:
            raise StoreUnavailableError(f"DynamoDB batch_get failed: {exc}") from exc
        return {(i.resolution, int(i.window_start)): _to_partial(i) for i in items}

    def write(self, partials: Sequence[StoredPartial]) -> list[StoredPartial]:
        """Conditional puts cannot be batched, so they go out concurrently (a flush after a restart or a
        burst of late events touches hundreds of windows)."""
        if len(partials) <= 1:
            outcomes = [self._write_one(p) for p in partials]
        else:
            with ThreadPoolExecutor(max_workers=min(WRITE_CONCURRENCY, len(partials))) as pool:
                outcomes = list(pool.map(self._write_one, partials))
        invalid = [p for p, outcome in zip(partials, outcomes, strict=True) if outcome is _INVALID]
        if invalid:
            # Not an outage: the same write would fail forever (see StoreRejectedError).
            raise StoreRejectedError(
                f"DynamoDB refused {len(invalid)} partials as invalid (e.g. {invalid[0].resolution} "
                f"{invalid[0].start_ms}: {self.last_validation_error})",
                [p.key for p in invalid],
            )
        return [p for p, outcome in zip(partials, outcomes, strict=True) if outcome is False]

    def _write_one(self, partial: StoredPartial) -> bool | object:
        """Store one partial unless a newer position is stored; False when refused as stale, _INVALID
        when refused as invalid (an item over DynamoDB's 400 KB)."""
        resolution = self._resolution(partial.resolution)
        pk, sk = item_keys(resolution, partial.start_ms, partial.shard_id)
        item = self.model(
            pk,
            sk,
            shard=partial.shard_id,
            resolution=partial.resolution,
            window_start=partial.start_ms,
            position=partial.position,
            metrics=encode_metrics(partial.metrics),
            expires_at=resolution.dynamodb_expiry_ms(partial.start_ms) // 1000,
        )
        condition = self.model.position.does_not_exist() | (self.model.position <= partial.position)
        try:
            item.save(condition=condition)
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False
            if exc.cause_response_code == "ValidationException":
                self.last_validation_error = str(exc.cause_response_message)[:300]
                return _INVALID
            raise StoreUnavailableError(f"DynamoDB put failed: {exc}") from exc
        except PynamoDBException as exc:
            raise StoreUnavailableError(f"DynamoDB put failed: {exc}") from exc
        with self._lock:
            self.writes += 1
        return True

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        res = self._resolution(resolution)
        by_bucket: dict[int, list[int]] = {}
        for start in starts:
            by_bucket.setdefault(bucket_start(res, start), []).append(start)
        wanted = set(starts)
        out: dict[int, list[StoredPartial]] = {}
        try:
            for bucket, bucket_starts in sorted(by_bucket.items()):
                low, high = min(bucket_starts), max(bucket_starts)
                condition = self.model.sk.between(f"{low:015d}#", f"{high:015d}#\uffff")
                for item in self.model.query(f"{res.name}#{bucket}", range_key_condition=condition):
                    start = int(item.window_start)
                    if start in wanted:
                        out.setdefault(start, []).append(_to_partial(item))
        except PynamoDBException as exc:
            raise StoreUnavailableError(f"DynamoDB query failed: {exc}") from exc
        return out

    def delete(self, resolution: str, starts: Sequence[int]) -> int:
        found = self.read(resolution, starts)
        res = self._resolution(resolution)
        removed = 0
        try:
            with self.model.batch_write() as batch:
                for partials in found.values():
                    for p in partials:
                        batch.delete(self.model(*item_keys(res, p.start_ms, p.shard_id)))
                        removed += 1
        except (DeleteError, PynamoDBException) as exc:
            raise StoreUnavailableError(f"DynamoDB delete failed: {exc}") from exc
        return removed


def _to_partial(item: Any) -> StoredPartial:
    return StoredPartial(
        resolution=item.resolution,
        start_ms=int(item.window_start),
        shard_id=item.shard,
        position=item.position,
        metrics=decode_metrics(item.metrics),
    )
