"""Screenshots of the dashboard (the default config's panels), one per range, and the publisher's cost per range.

    .venv/bin/python scripts/screenshots.py [--out docs] [--no-shots]

Thirty days of demo-like events (the default config's metrics; a quieter day before, so the comparisons
move) are folded exactly as the worker folds them (ShardAggregates) into an in-memory store; the real
publisher shapes the default config's panels (streamkpi/default_config.toml) into every range's snapshot;
the real server serves them; Debian's chromium (headless) saves docs/dashboard-<range>.png (and the 60-minute
view again as docs/dashboard.png, the README's first picture).
Also prints how long one read + shape of each range takes (the per-tick cost of the publisher).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregations.memory_store import MemoryStore  # noqa: E402
from aggregations.partials import ShardAggregates  # noqa: E402
from dashboard.panels import parse_panels  # noqa: E402
from dashboard.publisher import Publisher, Source  # noqa: E402
from dashboard.ranges import RANGES  # noqa: E402
from dashboard.server import SnapshotHolder, make_server  # noqa: E402
from streamkpi.config import load_config  # noqa: E402

MIN, HOUR = 60_000, 3_600_000
TYPES = (
    ("mouse.move", 30), ("click", 18), ("scroll", 12), ("page.view", 15), ("search", 5), ("form.submit", 3),
    ("donation.made", 4), ("user.created", 2), ("user.verified", 1),
)  # fmt: skip
PAGES = ("/", "/search", "/fundraising/ice-bucket-challenge", "/charity/2357", "/charity/11854", "/about", "/signup")
CHARITIES = ("2357", "11854", "50", "183092", "7")
CURRENCIES = (("GBP", 70), ("USD", 20), ("EUR", 10))


def demo_events(now: int, seed: int = 15) -> list[tuple[dict[str, Any], int]]:
    """About 90 k events over 30 days with a daily rhythm, the last week busier than the weeks before and
    yesterday quieter than today (so the comparisons move)."""
    rng = random.Random(seed)
    names, weights = zip(*TYPES, strict=True)

    def event(ms: int) -> tuple[dict[str, Any], int]:
        kind = rng.choices(names, weights)[0]
        body: dict[str, Any] = {"eventType": kind, "timestamp": ms, "userId": f"u{rng.randint(1, 900)}"}
        if kind == "page.view":
            body["path"] = rng.choices(PAGES, (9, 5, 7, 3, 2, 1, 2))[0]
        if kind == "donation.made":
            currency = rng.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
            amount = rng.choice((5, 10, 20, 25, 50)) if rng.random() < 0.7 else round(rng.uniform(2, 250), 2)
            body["data"] = {"amount": amount, "currency": currency, "charityId": rng.choice(CHARITIES)}
        return body, ms

    events = []
    current = now - now % MIN
    for i in range(60):  # the last hour, minute by minute, rising
        start = current - i * MIN
        for _ in range(int(3 + 1.5 * math.sin(i / 9) + (60 - i) / 30)):
            events.append(event(min(now - 1, start + rng.randrange(MIN))))
    hour = now - now % HOUR
    for h in range(1, 30 * 24):  # the hours before: a daily rhythm, quieter a day ago and the week before
        start = hour - h * HOUR
        local = (start // HOUR) % 24
        daily = 40 + 160 * max(0.0, math.sin((local - 6) / 24 * 2 * math.pi))
        scale = 0.7 if 24 <= h < 48 else (0.8 if h >= 7 * 24 else 1.0)
        for _ in range(int(daily * scale)):
            events.append(event(start + rng.randrange(HOUR)))
    return events


def build(now: int) -> tuple[Publisher, SnapshotHolder, int]:
    config = load_config(None)
    aggregates = ShardAggregates("shardId-000000000000", config.metric_set, config.resolutions)
    events = demo_events(now)
    for seq, (body, ms) in enumerate(events, start=1):
        for key in aggregates.missing(aggregates.keys_for(ms)):
            aggregates.install(key, None)
        aggregates.add(body, body["eventType"], ms, (seq, 0, 0))
    store = MemoryStore("dynamodb")
    store.write(aggregates.dirty("dynamodb"))
    health = {
        "shardId-000000000000": {"eventsPerSecond": "1.6", "millisBehindLatest": "180", "dlqCount": "3"},
        "shardId-000000000001": {"eventsPerSecond": "1.4", "millisBehindLatest": "90", "dlqCount": "1"},
    }

    def read_health() -> dict[str, dict[str, str]]:
        ms = str(int(time.time() * 1000) - 800)
        return {s: {**f, "reportedMs": ms, "lastCheckpointMs": ms, "records": "500"} for s, f in health.items()}

    source = Source(
        stream="streamkpi-events",
        stores=[store],
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=read_health,
        config_source=config.source,
        panels=parse_panels(config.dashboard, {m.name: m.by for m in config.metrics}, config.source),
    )
    holder = SnapshotHolder()
    return Publisher(source, [holder]), holder, len(events)


def shoot(url: str, out: Path, range_id: str) -> None:
    from tests.browser.chromium import start_driver

    browser = start_driver(1280, 900)
    try:
        browser.get(f"{url}#range={range_id}")
        deadline = time.monotonic() + 20
        script = (
            "const b = document.querySelector('#ranges button[aria-pressed=\"true\"]');"
            "return !!(b && b.dataset.range === arguments[0] && document.querySelector('#panels svg'))"
        )
        while not browser.execute_script(script, range_id):
            if time.monotonic() > deadline:
                raise SystemExit(f"the {range_id} page did not draw within 20 s")
            time.sleep(0.2)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, int(height) + 40)
        time.sleep(1.0)  # the charts redraw on resize (150 ms debounce)
        browser.save_screenshot(str(out))
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--no-shots", action="store_true", help="only measure the publisher")
    args = parser.parse_args()
    now = int(time.time() * 1000)
    publisher, holder, count = build(now)
    publisher.publish_once()
    snapshot = publisher.last or {}
    print(f"{count} events folded; per range, one read + shape of the panels (best of 5):")
    for rng in RANGES:
        best = min(_timed(publisher, rng, snapshot) for _ in range(5))
        size = len(holder.file(rng.file) or b"")
        print(f"  {rng.id:>4}: {best * 1000:7.1f} ms, {size / 1024:6.1f} KiB, rewritten every {rng.every_seconds:g} s")
    if args.no_shots:
        return
    server = make_server(0, holder, publisher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        for rng in RANGES:
            publisher.range_written_ms.clear()  # every file fresh for its shot
            publisher.publish_once()
            out = args.out / f"dashboard-{rng.id}.png"
            shoot(server.url, out, rng.id)
            print(out)
            if rng.id == RANGES[0].id:
                (args.out / "dashboard.png").write_bytes(out.read_bytes())
                print(args.out / "dashboard.png")
    finally:
        server.shutdown()
        server.server_close()


def _timed(publisher: Publisher, rng: Any, snapshot: dict[str, Any]) -> float:
    started = time.perf_counter()
    publisher.range_snapshot(rng, int(time.time() * 1000), snapshot)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
