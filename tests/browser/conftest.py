"""The browser tier: the real dashboard server (in this process, fed fixture snapshots) and Debian's
chromium in headless mode driven by selenium. A missing browser fails the tests, it never skips them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from dashboard.server import DashboardServer, SnapshotHolder, make_server
from tests.browser.chromium import BrowserMissingError, start_driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        driver = start_driver()
    except BrowserMissingError as exc:
        pytest.fail(f"cannot run the browser tests: {exc}", pytrace=False)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Site:
    server: DashboardServer
    holder: SnapshotHolder
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.server.url

    def publish(self, snapshot: dict[str, Any]) -> None:
        self.holder.write(orjson.dumps(snapshot))

    def stop(self) -> None:
        """The server goes away: every fetch fails from now on."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def site() -> Iterator[Site]:
    holder = SnapshotHolder()
    server = make_server(0, holder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    running = Site(server, holder, thread)
    try:
        yield running
    finally:
        if thread.is_alive():
            running.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the DOM may be mid-redraw
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
