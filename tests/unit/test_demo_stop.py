"""The demo's stop path does not depend on its output: a failing write neither ends the demo nor leaves a
part running, and what a part left in its process group goes with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devstack.demo import Demo, Part, never_failing
from streamkpi.settings import Settings


def closed_pipe(_line: str) -> None:
    raise BrokenPipeError(32, "Broken pipe")


def alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except OSError:
        return False


def part(name: str, command: list[str], tmp_path: Path) -> Part:
    # As the demo starts its parts: a session (and process group) of its own.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    return Part(name, process, tmp_path / f"{name}.log")


def test_a_failing_say_is_dropped_from_then_on() -> None:
    said: list[str] = []

    def say(line: str) -> None:
        if said:
            raise BrokenPipeError(32, "Broken pipe")
        said.append(line)

    guarded = never_failing(say)
    for line in ("first", "second", "third"):
        guarded(line)
    assert said == ["first"]


def test_every_part_is_stopped_before_the_report_fails(tmp_path: Path) -> None:
    demo = Demo(Settings.load({"STREAMKPI_STATE_DIR": str(tmp_path)}), 1.0, 0.0, closed_pipe)
    demo.parts = [part(name, ["sleep", "600"], tmp_path) for name in ("worker", "traffic", "dashboard")]
    try:
        with pytest.raises(BrokenPipeError):
            demo.stop()
        assert [p.process.returncode for p in demo.parts] == [-signal.SIGTERM] * 3
    finally:
        for p in demo.parts:
            p.process.kill()
            p.process.wait()


def test_what_a_part_left_in_its_process_group_is_stopped_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan.pid"
    # A part that died on its own and left a child behind (as a crashed worker leaves its KCL daemon).
    leaver = part("worker", ["sh", "-c", f"sleep 600 & echo $! > {pid_file}"], tmp_path)
    leaver.process.wait(10)
    orphan = int(pid_file.read_text())
    assert alive(orphan)
    demo = Demo(Settings.load({"STREAMKPI_STATE_DIR": str(tmp_path)}), 1.0, 0.0, never_failing(closed_pipe))
    demo.parts = [leaver]
    demo.stop()
    try:
        deadline = time.monotonic() + 10  # SIGKILL is sent; the orphan's reaper may take a moment
        while alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(orphan)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)
