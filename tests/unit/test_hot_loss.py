"""Redis loss, repaired per window (issue 11 item 6), with the in-memory stores.

A total loss (restart empty, FLUSHALL) brings back every shard's partials of the hot windows, the ended
parent of a reshard included, copied by one worker; a partial loss (a lagging replica promoted, a lost
fsync: the marker survives) is found window by window, at a write or at the periodic audit.

    minutes   m0   m1   m2   m3
    parent    ██   ██             (ended at the split: no worker writes its partials again)
    child          ██   ██   ██
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson

from aggregations.memory_store import MemoryStore
from aggregations.partials import StoredPartial
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import load_config

CONFIG = load_config(None)
MINUTE = 60_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % 86_400_000 + 12 * 3_600_000  # noon of some day
NOW = T0 + 10 * MINUTE
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """Counts the window reads (what a repair costs the durable store)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0
        self.during_read: Callable[[], None] | None = None

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        self.reads += 1
        if self.during_read is not None:
            during, self.during_read = self.during_read, None
            during()
        return super().read(resolution, starts)


def worker(
    durable: MemoryStore, hot: MemoryStore, shard: str, clock: Clock | None = None, wall: list[int] | None = None
) -> ShardWorker:
    now = wall if wall is not None else [NOW]
    cadence = replace(EAGER, clock=clock or Clock(), wall_ms=lambda: now[0])
    return ShardWorker(shard, "s", CONFIG.pipeline, Stores(durable, hot), Outputs(MemoryDeadLetterQueue()), cadence)


def feed(w: ShardWorker, minutes: Sequence[int], first_seq: int, durable: bool = True) -> None:
    """One event per second for 3 seconds of each minute; all stores flushed (or only Redis)."""
    events = [
        {"eventType": "click", "timestamp": T0 + m * MINUTE + s * 1000, "userId": f"u{s}"}
        for m in minutes
        for s in range(3)
    ]
    records = [(orjson.dumps(e), str(first_seq + i), 0, "pk", NOW) for i, e in enumerate(events)]
    w.process(records)
    if durable:
        w.flush_durable()
    else:
        w.flush_hot()


def resharded(durable: MemoryStore, hot: MemoryStore) -> ShardWorker:
    """The parent processed m0-m1 and ended; the child took m1-m3. Returns the child's worker."""
    feed(worker(durable, hot, "parent"), [0, 1], first_seq=1)
    child = worker(durable, hot, "child")
    feed(child, [1, 2, 3], first_seq=1000)
    assert hot.items == durable.items
    return child


def shards_of(store: MemoryStore, minute: int) -> set[str]:
    return {k[2] for k in store.items if k[:2] == ("1m", T0 + minute * MINUTE)}


def drop_window(store: MemoryStore, minute: int, shard: str | None = None) -> None:
    """What a lagging replica promoted or a lost fsync leaves: a window's newest writes gone."""
    for key in [k for k in store.items if k[:2] == ("1m", T0 + minute * MINUTE) and shard in (None, k[2])]:
        del store.items[key]


def test_a_total_loss_brings_back_every_shards_partials_the_ended_parents_too() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    child = resharded(durable, hot)
    hot.lose_everything()
    child.flush_hot()
    assert hot.items == durable.items
    assert shards_of(hot, 0) == {"parent"} and shards_of(hot, 1) == {"parent", "child"}


def test_after_a_total_loss_each_worker_resends_what_is_newer_than_dynamodb() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    child = resharded(durable, hot)
    feed(child, [3], first_seq=2000, durable=False)  # in Redis, not yet in DynamoDB
    newer = hot.items[("1m", T0 + 3 * MINUTE, "child")]
    assert newer.position > durable.items[("1m", T0 + 3 * MINUTE, "child")].position
    hot.lose_everything()
    child.flush_hot()
    assert hot.items[("1m", T0 + 3 * MINUTE, "child")] == newer
    assert shards_of(hot, 0) == {"parent"}
    assert child.stats.hot_windows_repaired == 0, "the copy covered every window: none is repaired again"


def test_one_worker_copies_after_a_total_loss_and_every_worker_repairs_its_own() -> None:
    durable, hot = CountingStore("dynamodb"), MemoryStore("redis")
    a, b = worker(durable, hot, "a"), worker(durable, hot, "b")
    feed(a, [0, 1], first_seq=1)
    feed(b, [1, 2], first_seq=1)
    hot.lose_everything()
    reads, repairs = durable.reads, (a.stats.hot_repairs, b.stats.hot_repairs)
    a.flush_hot()
    assert durable.reads > reads and hot.items == durable.items
    reads = durable.reads
    b.flush_hot()
    assert durable.reads == reads, "the copy is done: b only re-sends its own partials"
    assert (a.stats.hot_repairs, b.stats.hot_repairs) == (repairs[0] + 1, repairs[1] + 1)
    assert hot.intact("a") and hot.intact("b") and hot.items == durable.items


def test_the_claim_of_a_worker_that_died_copying_expires_and_another_copies() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    child = resharded(durable, hot)
    hot.lose_everything()
    assert hot.begin_repair("dead", 600_000) is not None  # claimed the copy, then was SIGKILLed
    child.flush_hot()
    assert shards_of(hot, 0) == set(), "the copy is someone else's while their claim holds"
    hot.expire_leases()
    assert not hot.intact("dead")
    successor = worker(durable, hot, "dead")  # the dead worker's shard, taken over
    successor.flush_hot()
    assert hot.items == durable.items and hot.intact("dead") and hot.intact("child")


def test_a_loss_during_the_copy_leaves_the_marker_gone_and_the_next_flush_repairs_again() -> None:
    durable, hot = CountingStore("dynamodb"), MemoryStore("redis")
    child = resharded(durable, hot)
    hot.lose_everything()
    durable.during_read = hot.lose_everything  # Redis restarts empty again in the middle of the copy
    child.flush_hot()
    assert not hot.intact("child")
    child.flush_hot()
    assert hot.intact("child") and hot.items == durable.items


def test_a_window_lost_while_the_marker_survives_is_repaired_with_every_shards_partial_at_the_next_write() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    child = resharded(durable, hot)
    drop_window(hot, 1)  # the parent's and the child's partials of m1
    assert hot.intact("child")
    feed(child, [1], first_seq=3000)  # a late event: the child writes m1 again
    assert shards_of(hot, 1) == {"parent", "child"} and hot.items == durable.items
    assert child.stats.hot_windows_repaired == 1


def test_an_older_position_than_the_one_written_is_a_loss_too() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    a, b = worker(durable, hot, "a"), worker(durable, hot, "b")
    feed(a, [0], first_seq=1)
    feed(b, [0], first_seq=1)
    key = ("1m", T0, "a")
    first = hot.items[key]
    feed(a, [0], first_seq=100)
    hot.items[key] = first  # the replica that took over had only a's first write of m0, and not b's
    del hot.items[("1m", T0, "b")]
    feed(a, [0], first_seq=200)
    assert hot.items == durable.items and a.stats.hot_windows_repaired == 1


def test_the_audit_finds_lost_windows_the_worker_no_longer_writes() -> None:
    durable, hot, clock = MemoryStore("dynamodb"), MemoryStore("redis"), Clock()
    parent = worker(durable, hot, "parent")
    feed(parent, [0, 1], first_seq=1)
    child = worker(durable, hot, "child", clock)
    feed(child, [1, 2, 3], first_seq=1000)
    drop_window(hot, 1)
    drop_window(hot, 2, shard="child")
    child.flush_hot()
    assert shards_of(hot, 1) == set(), "no audit before it is due"
    clock.now += child.hot_audit_seconds
    child.flush_hot()
    assert hot.items == durable.items and child.stats.hot_windows_repaired == 2


def test_the_audit_resends_a_lost_partial_newer_than_dynamodb() -> None:
    durable, hot, clock = MemoryStore("dynamodb"), MemoryStore("redis"), Clock()
    w = worker(durable, hot, "a", clock)
    feed(w, [0], first_seq=1)
    feed(w, [0], first_seq=100, durable=False)  # m0 newer in Redis than in DynamoDB
    newer = hot.items[("1m", T0, "a")]
    drop_window(hot, 0)
    clock.now += w.hot_audit_seconds
    w.flush_hot()
    assert hot.items[("1m", T0, "a")] == newer
    clock.now += w.hot_audit_seconds
    repaired = w.stats.hot_windows_repaired
    w.flush_hot()
    assert w.stats.hot_windows_repaired == repaired, "repaired once: the next audit finds nothing"


def test_windows_redis_let_expire_are_not_losses() -> None:
    durable, hot, clock, wall = MemoryStore("dynamodb"), MemoryStore("redis"), Clock(), [NOW]
    w = worker(durable, hot, "a", clock, wall)
    feed(w, [0], first_seq=1)
    minute = CONFIG.resolutions[0]
    wall[0] = minute.redis_expiry_ms(T0)  # m0's key expires in Redis
    drop_window(hot, 0)
    feed(w, [0], first_seq=100, durable=False)  # a late event: m0 written again, past Redis's retention
    assert w.stats.hot_windows_repaired == 0
    drop_window(hot, 0)
    clock.now += w.hot_audit_seconds
    w.flush_hot()
    assert w.stats.hot_windows_repaired == 0 and shards_of(hot, 0) == set()
    assert ("1m", T0) not in w.hot_written
