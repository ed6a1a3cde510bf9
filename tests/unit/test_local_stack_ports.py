"""`local up` checks its ports for a listener: connections of a just-stopped stack, closing in TIME_WAIT for
up to a minute, do not make a port busy (hypercorn and redis-server bind with SO_REUSEADDR over them)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from devstack.local_stack import port_free

TCP_TIME_WAIT = "06"  # the state column of /proc/net/tcp


def states_on(port: int) -> list[str]:
    """The TCP states of the IPv4 sockets whose local port is `port`."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [row.split()[3] for row in rows if int(row.split()[1].split(":")[1], 16) == port]


def listener(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn and redis-server bind
    server.bind((host, port))
    server.listen()
    return server


def test_a_listener_makes_the_port_busy() -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        with listener(host) as server:
            assert not port_free(server.getsockname()[1])


def test_connections_in_time_wait_leave_the_port_free() -> None:
    server = listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first, so it is the side left in TIME_WAIT, on `port`
    assert client.recv(1) == b""
    client.close()
    server.close()  # the service is stopped; only its closed connection remains
    deadline = time.monotonic() + 5
    while TCP_TIME_WAIT not in states_on(port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert TCP_TIME_WAIT in states_on(port)
    # The old check, a bind without SO_REUSEADDR, fails here: the TIME_WAIT is in the way.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    assert port_free(port)
    with listener(port=port):  # and the service can bind there now
        assert not port_free(port)
