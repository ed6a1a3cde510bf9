"""`streamkpi demo`: the local stack, steady traffic, the worker (and the dashboard), until Ctrl-C.

Each part runs as its own process in its own session, so Ctrl-C reaches only the demo, which then
stops the parts in order (traffic, worker gracefully, then the stack if the demo started it). The parts
would outlive the demo, so stopping them never depends on the demo's output: `make demo | tee demo.log`
loses its reader to the same Ctrl-C, and a write to that pipe fails; it is dropped, not fatal.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from devstack import local_stack
from streamkpi.settings import Settings

WORKER_GRACE_SECONDS = 60.0  # the worker checkpoints every shard before it exits
PART_GRACE_SECONDS = 10.0  # traffic and the dashboard have nothing to save
DASHBOARD_PORT = 8080  # when it is free on 127.0.0.1; otherwise any free port
DASHBOARD_START_SECONDS = 20.0


def dashboard_port(preferred: int = DASHBOARD_PORT) -> int:
    """`preferred` if nothing listens on it on 127.0.0.1, else a free port the system picks."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            # As the server binds (SO_REUSEADDR): connections of an earlier run in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def wait_for_dashboard(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once the dashboard on 127.0.0.1:`port` answers /healthz (False if it exits or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    return False


@dataclass
class Part:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Demo:
    settings: Settings
    rate: float
    invalid_fraction: float
    say: Callable[[str], None]
    parts: list[Part] = field(default_factory=list)
    started_stack: bool = False

    def _spawn(self, name: str, args: list[str]) -> Part:
        log = Path(self.settings.state_dir) / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        executable = str(Path(sys.executable).parent / "streamkpi")
        with log.open("ab") as out:
            process = subprocess.Popen(
                [executable, *args], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        part = Part(name, process, log)
        self.parts.append(part)
        return part

    def start(self) -> None:
        self.started_stack = not all(row.alive for row in local_stack.status(self.settings))
        env = local_stack.up(self.settings)
        # Children read the env file; make sure this process's view agrees with it too.
        os.environ.update(env)
        worker = self._spawn("worker", ["consume"])
        traffic = self._spawn(
            "traffic",
            ["generate", "--rate", str(self.rate), "--duration", "31536000",
             "--invalid-fraction", str(self.invalid_fraction)],
        )  # fmt: skip
        port = dashboard_port()
        dashboard = self._spawn("dashboard", ["dashboard", "serve", "--port", str(port)])
        url = f"http://127.0.0.1:{port}/"
        dashboard_ready = wait_for_dashboard(port, dashboard.process, DASHBOARD_START_SECONDS)
        state = Path(self.settings.state_dir)
        self.say("streamkpi demo is running:")
        for row in local_stack.status(self.settings):
            self.say(f"  {row.name:<9} pid={row.pid:<8} {row.address}")
        self.say(f"  worker    pid={worker.process.pid:<8} logs: {worker.log}")
        self.say(f"  traffic   pid={traffic.process.pid:<8} {self.rate:g} events/s, logs: {traffic.log}")
        self.say(f"  dashboard {url} (pid {dashboard.process.pid}, /metrics for Prometheus, logs: {dashboard.log})")
        if not dashboard_ready:
            self.say(
                f"  warning: the dashboard did not answer within {DASHBOARD_START_SECONDS:g} s; see {dashboard.log}"
            )
        self.say("Look at the numbers (counts appear within about 30 seconds):")
        self.say("  .venv/bin/streamkpi query --metric events --from now-5m")
        self.say("  .venv/bin/streamkpi query --metric donation_amount --store redis --from now-5m")
        self.say(f"Open the live dashboard: {url}")
        self.say(f"State, logs and settings are under {state}/. Press Ctrl-C to stop everything.")

    def watch(self, stop_requested: Callable[[], bool]) -> int:
        """Wait for Ctrl-C; a part that dies on its own ends the demo with an error."""
        while not stop_requested():
            for part in self.parts:
                code = part.process.poll()
                if code is not None:
                    self.say(f"{part.name} exited with {code}; see {part.log}")
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        """Stop every part, then the stack; report after, so a failing report cannot leave one running."""
        report: list[str] = []
        try:
            for part in reversed(self.parts):  # the dashboard first, then traffic, then the worker
                try:
                    report.append(f"stopped {part.name} (exit {_stop_part(part)})")
                except Exception as exc:  # one part's trouble must not leave the others running
                    report.append(f"could not stop {part.name} (pid {part.process.pid}): {exc}")
        finally:
            if self.started_stack:
                report += [f"stopped {name}" for name in local_stack.down(self.settings)]
            for line in report:
                self.say(line)


def _stop_part(part: Part) -> int:
    """SIGTERM, the grace, then SIGKILL for the part; then for anything it left in its process group."""
    process = part.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WORKER_GRACE_SECONDS if part.name == "worker" else PART_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Its children share its process group: a worker that died on its own may have left its KCL daemon.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


def never_failing(say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` that cannot end the demo: once a write fails (the pipe's reader is gone: EPIPE; the terminal
    closed: EIO), this and later lines are dropped and the demo goes on (to stop its parts)."""
    lost = False

    def guarded(line: str) -> None:
        nonlocal lost
        if lost:
            return
        try:
            say(line)
        except (OSError, ValueError):  # ValueError: the stream is closed
            lost = True

    return guarded


def run_demo(settings: Settings, rate: float, invalid_fraction: float, say: Callable[[str], None]) -> int:
    stopping = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None] | signal.Handlers] = {
        signal.SIGINT: request_stop,  # Ctrl-C
        signal.SIGTERM: request_stop,
        signal.SIGHUP: request_stop,  # the terminal closed: the parts would outlive the demo
        signal.SIGPIPE: signal.SIG_IGN,  # Python's default, kept: a write to a closed pipe raises, not kills
    }
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        del handlers[signal.SIGHUP]  # run under nohup: the demo is meant to outlive the terminal
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    demo = Demo(settings, rate, invalid_fraction, never_failing(say))
    try:
        demo.start()
        code = demo.watch(lambda: stopping)
        if stopping:
            demo.say("stopping ...")
    finally:
        try:
            demo.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code
