"""`make bench` (issue 11): what the bounds on hostile input cost on the normal path, and a bomb's cost.

1. Before and after, in the same run: `scripts/bench.py` of this tree and of a reference commit (default:
   the last commit before the bounds, 5f97649), each in its own checkout (a git worktree) and process,
   pinned to the same core, alternated ROUNDS times; the best processor events/s of each tree counts
   (CPU time, the same generated traffic: the generator is unchanged between the two). The cost is
   1 - after / before; the issue's bound is 5 %.
2. The 1 KB gzip bomb (1 MiB of b"1\\n", 524,288 lines that are no objects) through one ShardWorker
   with in-memory stores: CPU time, letters and peak memory (the issue's bound: under 1 s).

The figures go to stdout and into docs/benchmarks.md between the bounds markers.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aggregations.memory_store import MemoryStore  # noqa: E402
from consumer.dlq.memory import MemoryDeadLetterQueue  # noqa: E402
from consumer.worker import Outputs, ShardWorker, Stores  # noqa: E402
from streamkpi.config import load_config  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from benchdoc import cpu_model, write_block  # noqa: E402

REFERENCE = "5f97649"  # main before issue 11
MARK_START, MARK_END = "<!-- bench-bounds:start -->", "<!-- bench-bounds:end -->"
TARGET_COST = 0.05
_PROCESSOR_ROW = re.compile(r"\| processor: parse, decode, validate, route, aggregate \| ([\d,]+) events/s")


def processor_rate(tree: Path, events: int, repeat: int) -> float:
    """One run of that tree's scripts/bench.py (its own code): the processor's best events/s."""
    command = [sys.executable, "scripts/bench.py", "--no-docs", "--events", str(events), "--repeat", str(repeat)]
    command += ["--write-seconds", "20"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True).stdout
    match = _PROCESSOR_ROW.search(out)
    if match is None:
        raise SystemExit(f"no processor row in the output of {tree}/scripts/bench.py:\n{out}")
    return float(match.group(1).replace(",", ""))


def bomb_cost() -> tuple[float, int, float]:
    """(CPU seconds, letters, peak MiB allocated) of the 1 KB gzip bomb through one worker."""
    bomb = gzip.compress(b"1\n" * 524_288, 9)
    config = load_config(None)
    dlq = MemoryDeadLetterQueue()
    stores = Stores(MemoryStore("dynamodb"), MemoryStore("redis"))
    worker = ShardWorker("shard-0", "bench", config.pipeline, stores, Outputs(dlq))
    record = (bomb, "1", 0, "pk", 1_764_000_000_000)
    tracemalloc.start()
    started = time.process_time()
    worker.process([record])
    worker.flush_durable()
    cpu = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return cpu, len(dlq.letters), peak / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reference", default=REFERENCE, help=f"the commit to compare with ({REFERENCE})")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two trees (3)")
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput run (200000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions inside each run (3)")
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    args = parser.parse_args(argv)

    cpu, letters, peak = bomb_cost()
    print(f"bomb: {cpu:.3f} s CPU, {letters} letter(s), {peak:.1f} MiB peak", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="streamkpi-reference-") as tmp:
        before_tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.reference], cwd=ROOT, check=True)
        try:
            before: list[float] = []
            after: list[float] = []
            for round_ in range(args.rounds):
                before.append(processor_rate(before_tree, args.events, args.repeat))
                after.append(processor_rate(ROOT, args.events, args.repeat))
                print(f"round {round_ + 1}: before {before[-1]:,.0f}, after {after[-1]:,.0f} events/s", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT, check=False)
    best_before, best_after = max(before), max(after)
    cost = 1 - best_after / best_before
    rows = [
        "| measure | value | target |",
        "| --- | ---: | --- |",
        f"| processor before the bounds ({args.reference}), best of {args.rounds} runs "
        f"| {best_before:,.0f} events/s | |",
        f"| processor with the bounds (this tree), best of {args.rounds} runs | {best_after:,.0f} events/s | |",
        f"| cost of the bounds on the normal path | {cost:.1%} | ≤ {TARGET_COST:.0%}: "
        f"{'met' if cost <= TARGET_COST else 'NOT MET'} |",
        f"| 1 KB gzip bomb (1 MiB of `1\\n` lines): CPU time | {cpu * 1000:,.0f} ms | < 1 s: "
        f"{'met' if cpu < 1 else 'NOT MET'} |",
        f"| the bomb's dead letters / peak allocated | {letters} / {peak:,.1f} MiB | (was 524,288 letters, 147 MB) |",
        "",
        f"- command: `make bench` (`.venv/bin/python scripts/bench_bounds.py`), {time.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}; each tree's `scripts/bench.py --events {args.events} --repeat {args.repeat}` "
        f"pinned to core 0, the trees alternated; runs: before {', '.join(f'{r:,.0f}' for r in before)}; "
        f"after {', '.join(f'{r:,.0f}' for r in after)}",
    ]
    print("\n".join(rows))
    if not args.no_docs:
        write_block(["", *rows, ""], MARK_START, MARK_END, "## The bounds on hostile input (issue 11)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
