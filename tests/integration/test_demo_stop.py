"""`streamkpi demo | head` (as `make demo 2>&1 | tee demo.log` after Ctrl-C ends tee): the output is gone,
yet Ctrl-C (or the terminal closing) still stops every process the demo started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import STREAMKPI, free_port, wait_for

pytestmark = pytest.mark.integration

# Every part of a running demo, by a word of its command line.
PARTS = {
    "moto": "devstack.moto_server",
    "redis-server": "redis-server",
    "worker": "streamkpi consume",
    "KCL daemon": "MultiLangDaemon",
    "record processor": "streamkpi-processor",
    "traffic": "streamkpi generate",
    "dashboard": "streamkpi dashboard serve",
}


def demo_processes(state: Path) -> dict[int, str]:
    """pid -> command line of each live process of the demo: its environment, command line or working
    dir names the demo's state dir (the demo passes its environment on to every part, and they to theirs;
    redis-server overwrites its environment with its title, but works in the state dir's redis/)."""
    marker = f"STREAMKPI_STATE_DIR={state}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            zombie = (entry / "stat").read_text().split(") ")[-1].startswith("Z")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if not zombie and (marker in environ or str(state) in cmdline or cwd.startswith(f"{state}/")):
            found[int(entry.name)] = cmdline
    return found


def parts_running(state: Path) -> list[str]:
    commands = demo_processes(state).values()
    return [name for name, word in PARTS.items() if any(word in command for command in commands)]


def left_after(state: Path, seconds: float) -> dict[int, str]:
    """The demo's processes still there after up to `seconds` (none: returns at once)."""
    deadline = time.monotonic() + seconds
    while (left := demo_processes(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# Ctrl-C; and the terminal closing, which ends `| tee` as well.
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_the_demo_stops_every_part_even_when_its_output_pipe_is_gone(tmp_path: Path, stop_signal: int) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(state),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL"):
        env.pop(key, None)
    # The reader quits after 200 bytes, as tee does on Ctrl-C: later writes of the demo fail with EPIPE.
    reader = subprocess.Popen(["head", "-c", "200"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    # SIGHUP as a terminal leaves it (default action), even when this test runs under nohup, which the demo
    # would rightly take as "meant to outlive the terminal".
    demo = subprocess.Popen(
        [STREAMKPI, "demo", "--rate", "50"], env=env, stdout=reader.stdin, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )  # fmt: skip
    reader.stdin.close()  # the demo holds the only write end
    code = None
    try:
        wait_for(lambda: reader.poll() is not None, 180, "the reader quit after the demo's first lines")

        deadline = time.monotonic() + 120
        while (seen := parts_running(state)) != list(PARTS) and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if demo.poll() is None:
            demo.send_signal(stop_signal)
        code = demo.wait(240)  # at most the grace of each part (10 + 10 + 60 s) and the stack's stop
        # The demo waited for its parts; what they leave behind (orphans) may take a moment to exit.
        left = left_after(state, 10)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        reader.kill()
        reader.wait(10)
        for pid in demo_processes(state):  # this test's own: they carry its temp state dir
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, left
    assert seen == list(PARTS), f"the demo ended (exit {code}) before all its parts ran: {seen}"
    assert code == 0
