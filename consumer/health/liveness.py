"""Is this worker alive? The verdict of `streamkpi health` from what the worker left on local disk (pure).

Healthy: the KCL daemon runs and every shard this worker holds reported within the allowed silence, or it
holds none (a worker waiting for a lease, or one whose leases all went to others, is fine). Unhealthy: the
daemon is gone, or a shard went quiet for longer, which is what a stuck processor looks like (a child that
hangs stalls its shard while the daemon lives on). Idle shards still report: the KCL hands the processor
empty batches too, and each one may flush and report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardBeat:
    """A shard's last heartbeat: when it reported (wall-clock ms) and whether its processor still runs."""

    shard: str
    reported_ms: int
    process_alive: bool


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    message: str  # one line, for a person or a container runtime's health log


def judge(
    daemon_pid: int | None, daemon_alive: bool, beats: Sequence[ShardBeat], now_ms: int, max_silence_ms: int
) -> Verdict:
    """`daemon_pid` None: no worker wrote its liveness record here (never started, or stopped cleanly).
    Beats of processors that are gone do not count: the KCL ended them (lease lost, shard ended) or they
    crashed, which takes the daemon down too."""
    if daemon_pid is None:
        return Verdict(False, "unhealthy: no worker is running here (no liveness record of `streamkpi consume`)")
    if not daemon_alive:
        return Verdict(False, f"unhealthy: the KCL daemon (pid {daemon_pid}) is gone")
    held = sorted((b for b in beats if b.process_alive), key=lambda b: (b.reported_ms, b.shard))
    if not held:
        return Verdict(True, f"healthy: KCL daemon pid {daemon_pid} runs and holds no shard")
    oldest = held[0]
    silence_ms = now_ms - oldest.reported_ms
    if silence_ms > max_silence_ms:
        quiet = [b.shard for b in held if now_ms - b.reported_ms > max_silence_ms]
        return Verdict(
            False,
            f"unhealthy: shard {oldest.shard} has not reported for {silence_ms / 1000:.1f} s (limit "
            f"{max_silence_ms / 1000:g} s; quiet shards: {', '.join(quiet)})",
        )
    return Verdict(
        True,
        f"healthy: KCL daemon pid {daemon_pid} runs; {len(held)} shard(s) reported, the oldest "
        f"{max(silence_ms, 0) / 1000:.1f} s ago (limit {max_silence_ms / 1000:g} s)",
    )
