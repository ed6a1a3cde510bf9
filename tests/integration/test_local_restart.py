"""`streamkpi local down` and at once `streamkpi local up`: the stopped stack's connections, closing in
TIME_WAIT on its ports for up to a minute, do not keep it from starting again."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, wait_for
from tests.integration.test_local_stack import run
from tests.unit.test_local_stack_ports import TCP_TIME_WAIT, states_on

pytestmark = pytest.mark.integration


def closed_by_the_server(port: int, request: bytes) -> None:
    """One exchange the server ends (it answers `request` and hangs up first), so the server's side of
    the connection stays in TIME_WAIT on `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        while client.recv(65536):
            pass


def test_local_up_right_after_local_down_starts_on_the_same_ports(tmp_path: Path) -> None:
    moto_port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(tmp_path / "state"),
        "STREAMKPI_LOCAL_PORT": str(moto_port),
        "STREAMKPI_REDIS_PORT": str(redis_port),
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL"):
        env.pop(key, None)
    up = run(["local", "up"], env)
    assert up.returncode == 0, up.stderr
    try:
        closed_by_the_server(moto_port, b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        closed_by_the_server(redis_port, b"QUIT\r\n")
        down = run(["local", "down"], env)
        assert down.returncode == 0, down.stderr
        for port in (moto_port, redis_port):
            wait_for(lambda port=port: TCP_TIME_WAIT in states_on(port), 5, f"TIME_WAIT on {port}", 0.05)

        again = run(["local", "up"], env)
        assert again.returncode == 0, again.stderr
        still_closing = all(TCP_TIME_WAIT in states_on(port) for port in (moto_port, redis_port))
        assert still_closing, "the TIME_WAIT ended before `local up` ran: the test proved nothing"
        status = run(["local", "status"], env)
        assert status.returncode == 0 and status.stdout.count("running") == 2, status.stdout
    finally:
        run(["local", "down"], env)
