"""A failed Redis call says where (host and port), what happened and what to change, never the password; a
refused login or certificate is a StoreAccessError (a setting is wrong), the rest plain unavailability.
The same failures against a real TLS redis-server: tests/integration/test_redis_tls.py."""

from __future__ import annotations

import ssl

import pytest
import redis

from aggregations.redis_store import redis_failure
from aggregations.store import StoreAccessError, StoreUnavailableError

CLIENT = redis.Redis.from_url("rediss://app:hunter2@cache.example:6380/0")  # connects on first use only


def failure(exc: redis.RedisError, underlying: BaseException | None = None) -> StoreUnavailableError:
    exc.__context__ = underlying  # redis-py raises its errors inside the handler of the socket's or TLS's
    return redis_failure("read", exc, CLIENT)


@pytest.mark.parametrize(
    ("exc", "underlying", "access", "advice"),
    [
        (redis.AuthenticationError("invalid username-password pair"), None, True, "password (AUTH token"),
        (redis.exceptions.NoPermissionError("NOPERM no permissions"), None, True, "`on ~* +@all`"),
        (
            redis.ConnectionError("Error 1 connecting to cache.example:6380. [SSL: CERTIFICATE_VERIFY_FAILED]"),
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
            True,
            "set STREAMKPI_REDIS_CA_FILE",
        ),
        (redis.ConnectionError("Error 1 connecting"), ssl.SSLError(1, "wrong version number"), False, "redis://"),
        (redis.ConnectionError("Error while reading"), ConnectionResetError(104, "reset"), False, "use rediss://"),
        (redis.ConnectionError("Connection closed by server."), None, False, "use rediss://"),
        (redis.TimeoutError("Timeout connecting to server"), None, False, "security group"),
        (redis.ConnectionError("Error 111 connecting"), ConnectionRefusedError(111, "refused"), False, "running"),
    ],
    ids=["auth", "acl", "untrusted", "not-tls", "reset", "closed", "timeout", "refused"],
)
def test_each_failure_names_host_port_and_what_to_do(
    exc: redis.RedisError, underlying: BaseException | None, access: bool, advice: str
) -> None:
    error = failure(exc, underlying)
    assert isinstance(error, StoreAccessError) is access
    assert str(error).startswith(f"Redis read failed at cache.example:6380: {str(exc).rstrip('.')}."), error
    assert advice in str(error)


def test_a_password_that_appears_in_a_message_is_masked() -> None:
    error = failure(redis.ResponseError("ERR something about hunter2"))
    assert "hunter2" not in str(error) and "***" in str(error)
    assert type(error) is StoreUnavailableError


def test_a_unix_socket_is_named_by_its_path() -> None:
    client = redis.Redis.from_url("unix:///run/redis.sock")
    assert "at /run/redis.sock:" in str(redis_failure("write", redis.ConnectionError("Error 2"), client))
