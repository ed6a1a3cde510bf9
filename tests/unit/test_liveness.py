"""The verdict of `streamkpi health` (consumer/health/liveness.py): pure, from a daemon and shard heartbeats.

Timeline of one worker, limit 30 s:
    t=0   shard A reports           t=10  shard B reports           t=35  `health`: A 35 s quiet -> unhealthy
"""

from __future__ import annotations

from consumer.health.liveness import ShardBeat, judge

LIMIT_MS = 30_000


def test_a_worker_that_holds_no_shard_is_healthy() -> None:
    verdict = judge(42, True, [], now_ms=1_000_000, max_silence_ms=LIMIT_MS)
    assert verdict.healthy and "holds no shard" in verdict.message


def test_every_held_shard_reported_within_the_limit_is_healthy() -> None:
    beats = [ShardBeat("shardId-0", 100_000, True), ShardBeat("shardId-1", 110_000, True)]
    verdict = judge(42, True, beats, now_ms=130_000, max_silence_ms=LIMIT_MS)
    assert verdict.healthy, verdict.message
    assert "2 shard(s)" in verdict.message and "30.0 s ago" in verdict.message


def test_one_quiet_shard_makes_the_worker_unhealthy_and_is_named() -> None:
    beats = [ShardBeat("shardId-0", 100_000, True), ShardBeat("shardId-1", 110_000, True)]
    verdict = judge(42, True, beats, now_ms=135_000, max_silence_ms=LIMIT_MS)
    assert not verdict.healthy
    assert verdict.message == (
        "unhealthy: shard shardId-0 has not reported for 35.0 s (limit 30 s; quiet shards: shardId-0)"
    )


def test_the_limit_itself_is_still_healthy() -> None:
    assert judge(42, True, [ShardBeat("s", 0, True)], now_ms=LIMIT_MS, max_silence_ms=LIMIT_MS).healthy
    assert not judge(42, True, [ShardBeat("s", 0, True)], now_ms=LIMIT_MS + 1, max_silence_ms=LIMIT_MS).healthy


def test_the_heartbeat_of_a_processor_that_is_gone_does_not_count() -> None:
    # Its lease moved or its shard ended: the KCL ended the process; the file it left says nothing.
    beats = [ShardBeat("shardId-0", 0, False), ShardBeat("shardId-1", 990_000, True)]
    assert judge(42, True, beats, now_ms=1_000_000, max_silence_ms=LIMIT_MS).healthy
    only_gone = judge(42, True, [ShardBeat("shardId-0", 0, False)], now_ms=1_000_000, max_silence_ms=LIMIT_MS)
    assert only_gone.healthy and "holds no shard" in only_gone.message


def test_a_daemon_that_is_gone_is_unhealthy_whatever_the_shards_say() -> None:
    verdict = judge(42, False, [ShardBeat("s", 999_999, True)], now_ms=1_000_000, max_silence_ms=LIMIT_MS)
    assert not verdict.healthy and verdict.message == "unhealthy: the KCL daemon (pid 42) is gone"


def test_no_worker_record_is_unhealthy() -> None:
    verdict = judge(None, False, [], now_ms=0, max_silence_ms=LIMIT_MS)
    assert not verdict.healthy and "no worker" in verdict.message
