"""Redis over TLS with a login, as ElastiCache with in-transit encryption and AUTH/RBAC runs it: a real
redis-server of the test's own (TLS port only, a password for the default user and an ACL user), a throwaway
CA and a certificate for 127.0.0.1. Everything Redis-facing is built by the composition root from the settings
(`REDIS_URL=rediss://user:password@host:port/0`, `STREAMKPI_REDIS_CA_FILE`), as the worker, the publisher and
the commands build it; a wrong password, a missing CA file and a plain `redis://` fail saying where and what to
change, never showing the password.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregations.partials import ShardAggregates, StoredPartial, encode_position
from aggregations.store import StoreAccessError, StoreUnavailableError
from dashboard.publisher import DirTarget
from streamkpi.app import Services, build_publisher
from streamkpi.settings import Settings
from tests.integration.conftest import STREAMKPI, free_port, wait_for

pytestmark = pytest.mark.integration

MINUTE = 60_000
SHARD = "shardId-000000000000"
USER = "streamkpi"
# Random, so "not in the message" means something; `/` and `@` must travel percent-encoded in the URL.
USER_PASSWORD = f"u/{uuid.uuid4().hex}@x"
ADMIN_PASSWORD = f"a-{uuid.uuid4().hex}"
WRONG_PASSWORD = f"wrong-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca_file: Path
    workdir: Path

    def url(self, user: str, password: str, host: str = "127.0.0.1", scheme: str = "rediss") -> str:
        return f"{scheme}://{user}:{quote(password, safe='')}@{host}:{self.port}/0"

    def env(self, user: str = USER, password: str = USER_PASSWORD, ca: bool = True, **url: str) -> dict[str, str]:
        """The settings a deployment sets, each test with its own key prefix (the metrics table names it)."""
        env = {
            "REDIS_URL": self.url(user, password, **url),
            "STREAMKPI_METRICS_TABLE": f"tls-{uuid.uuid4().hex[:8]}",
            "STREAMKPI_STATE_DIR": str(self.workdir / "state"),  # no env file of a local stack
            "AWS_REGION": "us-east-1",
        }
        if ca:
            env["STREAMKPI_REDIS_CA_FILE"] = str(self.ca_file)
        return env

    def services(self, **env: Any) -> Services:
        return Services(Settings.from_mapping(self.env(**env)))


def write_certificates(to: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for IP 127.0.0.1 only: (CA, certificate, key)."""
    now = datetime.datetime.now(datetime.UTC)
    since, until = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamkpi test CA")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(),
                                not_valid_before=since, not_valid_after=until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                                issuer_name=ca_name, public_key=key.public_key(),
                                serial_number=x509.random_serial_number(),
                                not_valid_before=since, not_valid_after=until)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = to / "ca.pem", to / "server.pem", to / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    workdir = tmp_path_factory.mktemp("redis-tls")
    ca, cert, key = write_certificates(workdir)
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", "0",
             "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--requirepass", ADMIN_PASSWORD,
             "--user", USER, "on", f">{USER_PASSWORD}", "~*", "&*", "+@all",
             "--dir", str(workdir), "--save", "", "--appendonly", "no"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    probe = redis.Redis(host="127.0.0.1", port=port, password=ADMIN_PASSWORD, ssl=True, ssl_ca_certs=str(ca))

    def ready() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"redis-server exited ({server.returncode}): {log.read_text()}")
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(ready, 20, "redis-server answers over TLS", interval=0.1)
        yield TlsRedis(port, ca, workdir)
    finally:
        probe.close()
        server.kill()
        server.wait(10)


def recent_minute() -> int:
    """A window start Redis still keeps (its expiry runs from the window's end)."""
    return int(time.time() * 1000) // MINUTE * MINUTE - 2 * MINUTE


def assert_hidden(message: str, password: str) -> None:
    assert password not in message and quote(password, safe="") not in message, message


@pytest.mark.parametrize(("user", "password"), [(USER, USER_PASSWORD), ("", ADMIN_PASSWORD)], ids=["acl-user", "auth"])
def test_the_store_the_composition_root_builds_writes_and_reads_partials_over_tls(
    tls_redis: TlsRedis, user: str, password: str
) -> None:
    services = tls_redis.services(user=user, password=password)
    assert services.redis.connection_pool.connection_class is redis.SSLConnection
    assert services.redis.acl_whoami() == (user or "default")
    store, start = services.redis_store, recent_minute()
    mine = StoredPartial(
        "1m", start, SHARD, encode_position((7, 0, 0)), {"events": {"agg": "count", "groups": {"a": 3}}}
    )
    older = StoredPartial(
        "1m", start, SHARD, encode_position((6, 0, 0)), {"events": {"agg": "count", "groups": {"a": 1}}}
    )

    assert store.write([mine]) == []
    assert store.write([older]) == [older]  # the Lua position guard runs over TLS too
    assert store.load(SHARD, [("1m", start)]) == {("1m", start): mine}
    assert store.read("1m", [start]) == {start: [mine]}
    assert store.delete("1m", [start]) == 1 and store.read("1m", [start]) == {}


def test_the_health_writer_and_the_dashboard_publisher_use_redis_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    services = tls_redis.services()
    now = int(time.time() * 1000)
    aggregates = ShardAggregates(SHARD, services.config.metric_set, services.config.resolutions)
    for seq, kind in enumerate(["click", "click", "page.view"], start=1):
        for key in aggregates.missing(aggregates.keys_for(now - 1_000)):
            aggregates.install(key, None)
        aggregates.add({"eventType": kind, "timestamp": now - 1_000, "path": "/x"}, kind, now - 1_000, (seq, 0, 0))
    assert services.redis_store.write(aggregates.dirty("redis")) == []
    services.health.report(SHARD, {"reportedMs": now, "eventsPerSecond": 2.5, "millisBehindLatest": 0, "records": 3})
    assert services.health.read()[SHARD]["records"] == "3"

    publisher = build_publisher(services.settings, [DirTarget(tmp_path / "site")], store="redis")
    publisher.source.dlq = None  # the DLQ is SQS, not under test here
    snapshot = publisher.publish_once()
    assert snapshot["store"] == "redis" and snapshot["problems"] == []
    assert snapshot["today"]["events"] == 3
    assert [row["shardId"] for row in snapshot["shards"]["rows"]] == [SHARD]
    assert orjson.loads((tmp_path / "site" / "snapshot.json").read_bytes())["today"]["events"] == 3


def test_a_wrong_password_fails_naming_host_port_and_setting_never_the_password(
    tls_redis: TlsRedis, caplog: pytest.LogCaptureFixture
) -> None:
    services = tls_redis.services(password=WRONG_PASSWORD)
    with pytest.raises(StoreAccessError) as refused:
        services.redis_store.read("1m", [recent_minute()])
    message = str(refused.value)
    assert f"127.0.0.1:{tls_redis.port}" in message and "REDIS_URL" in message, message
    assert isinstance(refused.value.__cause__, redis.AuthenticationError)
    assert_hidden(message, WRONG_PASSWORD)

    with pytest.raises(StoreAccessError, match=f"127.0.0.1:{tls_redis.port}"):
        services.health.read()
    with caplog.at_level(logging.WARNING, logger="streamkpi.health"):
        services.health.report(SHARD, {"records": 1})  # best effort: logged, not raised
    [logged] = [getattr(r, "error", "") for r in caplog.records if r.getMessage() == "health report failed"]
    assert f"127.0.0.1:{tls_redis.port}" in logged and "REDIS_URL" in logged, logged
    assert_hidden(logged, WRONG_PASSWORD)


def test_without_the_ca_file_or_with_another_host_name_the_certificate_is_refused(tls_redis: TlsRedis) -> None:
    with pytest.raises(StoreAccessError) as untrusted:
        tls_redis.services(ca=False).redis_store.read("1m", [recent_minute()])
    message = str(untrusted.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message and "STREAMKPI_REDIS_CA_FILE" in message, message
    assert f"127.0.0.1:{tls_redis.port}" in message
    assert_hidden(message, USER_PASSWORD)

    # The CA is trusted, but the certificate names 127.0.0.1, not localhost: the host name is checked too.
    with pytest.raises(StoreAccessError, match="Hostname mismatch"):
        tls_redis.services(host="localhost").redis_store.read("1m", [recent_minute()])


def test_plain_redis_against_the_tls_port_says_to_use_rediss(tls_redis: TlsRedis) -> None:
    with pytest.raises(StoreUnavailableError) as refused:
        tls_redis.services(ca=False, scheme="redis").redis_store.read("1m", [recent_minute()])
    assert not isinstance(refused.value, StoreAccessError)
    assert "use rediss://" in str(refused.value) and f"127.0.0.1:{tls_redis.port}" in str(refused.value)
    assert_hidden(str(refused.value), USER_PASSWORD)


def streamkpi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A streamkpi command with exactly these settings in its environment (nothing inherited but PATH)."""
    state = Path(env["STREAMKPI_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [STREAMKPI, *args], env={"PATH": os.environ["PATH"], "HOME": str(state), **env}, cwd=state,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_streamkpi_query_reads_redis_over_tls_from_the_environment(tls_redis: TlsRedis) -> None:
    env = tls_redis.env()
    settings = Settings.from_mapping(env)
    start = recent_minute()
    partial = StoredPartial(
        "1m", start, SHARD, encode_position((1, 0, 0)), {"events": {"agg": "count", "groups": {"click": 4}}}
    )
    assert Services(settings).redis_store.write([partial]) == []
    window = ["--from", iso(start), "--to", iso(start + MINUTE)]

    done = streamkpi(env, "query", "--metric", "events", *window, "--store", "redis", "--format", "json")
    assert done.returncode == 0, done.stderr
    [only] = orjson.loads(done.stdout)["windows"]
    assert only["total"] == 4 and only["groups"] == {"click": 4}

    refused = streamkpi({**env, "REDIS_URL": tls_redis.url(USER, WRONG_PASSWORD)}, "query", *window, "--store", "redis")
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.startswith(f"error: Redis read failed at 127.0.0.1:{tls_redis.port}: "), refused.stderr
    assert "REDIS_URL" in refused.stderr and "streamkpi local status" not in refused.stderr
    assert_hidden(refused.stderr + refused.stdout, WRONG_PASSWORD)

    shown = streamkpi(env, "settings")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["redis_url"] == f"rediss://{USER}:***@127.0.0.1:{tls_redis.port}/0"
    assert_hidden(shown.stdout + shown.stderr, USER_PASSWORD)


def iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat()
