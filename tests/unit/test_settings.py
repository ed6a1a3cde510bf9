"""streamkpi/settings.py: environment > env file > default; errors name the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.bounds import Limits
from streamkpi.errors import SettingsError
from streamkpi.settings import Settings, read_env_file, settings_table_markdown, write_env_file


def env_names() -> list[str]:
    return [f.metadata["env"] for f in dataclasses.fields(Settings)]


def test_defaults() -> None:
    s = Settings.from_mapping({})
    assert s == Settings()
    assert (s.region, s.stream, s.shards, s.endpoint_url, s.config_path) == (
        "us-east-1",
        "streamkpi-events",
        2,
        None,
        None,
    )
    assert s.env_file == Path(".streamkpi") / "local.env"


def test_env_overrides_with_types() -> None:
    s = Settings.from_mapping(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "STREAMKPI_STREAM": "clicks",
            "STREAMKPI_SHARDS": "4",
            "STREAMKPI_REDIS_FLUSH_SECONDS": "0.25",
            "STREAMKPI_CHECKPOINT_RECORDS": "100",
            "STREAMKPI_INITIAL_POSITION": "LATEST",
            "STREAMKPI_CONFIG": "/etc/streamkpi.toml",
            "UNRELATED": "ignored",
        }
    )
    assert s.endpoint_url == "http://127.0.0.1:4566"
    assert s.stream == "clicks"
    assert s.shards == 4
    assert s.redis_flush_seconds == 0.25
    assert s.checkpoint_records == 100
    assert s.initial_position == "LATEST"
    assert s.config_path == "/etc/streamkpi.toml"


def test_empty_values_mean_unset() -> None:
    assert Settings.from_mapping({"STREAMKPI_SHARDS": "", "AWS_REGION": ""}) == Settings()


def test_every_field_is_read_from_its_env_name() -> None:
    for f in dataclasses.fields(Settings):
        kind = type(f.default) if f.default is not None else str
        raw = {str: "custom-value", int: "7", float: "7.5"}[kind]
        raw = {
            "initial_position": "LATEST",
            "kcl_graceful_handoff": "false",
            "kcl_client_version": "COMPATIBLE_WITH_2X",
            "kcl_metrics_level": "SUMMARY",
            "kcl_retrieval_mode": "FANOUT",
            "redis_url": "rediss://custom-value:6380/0",
            "redis_ca_file": __file__,  # a file that is there
        }.get(f.name, raw)
        if f.name.startswith("max_"):  # the bounds have ranges of their own (test below)
            raw = str(f.default + 1)
        tls = {"REDIS_URL": "rediss://cache.example:6380/0"} if f.name == "redis_ca_file" else {}  # TLS only
        assert getattr(Settings.from_mapping({**tls, f.metadata["env"]: raw}), f.name) == kind(raw), f.name


def test_the_bounds_refuse_values_outside_their_range_and_build_the_limits() -> None:
    with pytest.raises(SettingsError, match="STREAMKPI_MAX_DEPTH=300: use a whole number from 2 to 254"):
        Settings.from_mapping({"STREAMKPI_MAX_DEPTH": "300"})
    with pytest.raises(SettingsError, match="STREAMKPI_MAX_ITEM_BYTES"):
        Settings.from_mapping({"STREAMKPI_MAX_ITEM_BYTES": "400000"})  # over DynamoDB's item limit
    limits = Settings.from_mapping({"STREAMKPI_MAX_DEPTH": "10", "STREAMKPI_MAX_LETTERS_PER_RECORD": "5"}).limits()
    assert (limits.max_depth, limits.max_letters_per_record) == (10, 5)
    assert Settings().limits() == Limits()  # the settings' defaults are the limits' defaults


def test_kcl_choices_are_checked_and_rendered_as_kcl_properties() -> None:
    from streamkpi.kcl_daemon import render_properties

    for env, bad in (
        ("STREAMKPI_KCL_CLIENT_VERSION", "2X"),
        ("STREAMKPI_KCL_METRICS_LEVEL", "ALL"),
        ("STREAMKPI_KCL_RETRIEVAL_MODE", "PUSH"),
        ("STREAMKPI_KCL_GRACEFUL_HANDOFF", "yes"),
        ("STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS", "-1"),
    ):
        with pytest.raises(SettingsError, match=env):
            Settings.from_mapping({env: bad})
    default = render_properties(Settings(), "/bin/processor", "w1")
    assert "AwsCredentialsProvider = DefaultCredentialsProvider\n" in default  # the SDK v2 name (KCL 3)
    assert "clientVersionConfig = CLIENT_VERSION_CONFIG_3X\n" in default
    assert "leaseAssignmentIntervalMillis" not in default and "fanoutConfig" not in default
    tuned = Settings.from_mapping(
        {
            "STREAMKPI_KCL_CLIENT_VERSION": "COMPATIBLE_WITH_2X",
            "STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS": "4000",
            "STREAMKPI_KCL_MAX_LEASES_FOR_WORKER": "8",
            "STREAMKPI_KCL_GRACEFUL_HANDOFF": "false",
            "STREAMKPI_KCL_METRICS_LEVEL": "SUMMARY",
        }
    )
    props = render_properties(tuned, "/bin/processor", "w1")
    assert "leaseAssignmentIntervalMillis = 4000\n" in props
    for line in (
        "clientVersionConfig = CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
        "maxLeasesForWorker = 8",
        "isGracefulLeaseHandoffEnabled = false",
        "metricsLevel = SUMMARY",
    ):
        assert line + "\n" in props


def test_aws_client_kwargs() -> None:
    assert Settings().aws_client_kwargs() == {"region_name": "us-east-1"}
    local = Settings.from_mapping({"AWS_ENDPOINT_URL": "http://localhost:4566", "AWS_REGION": "eu-west-1"})
    assert local.aws_client_kwargs() == {"region_name": "eu-west-1", "endpoint_url": "http://localhost:4566"}


def test_redis_client_kwargs_verify_tls_always_against_the_ca_file_or_the_system_store(tmp_path: Path) -> None:
    timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5}
    assert Settings().redis_client_kwargs() == timeouts
    verified = {**timeouts, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    tls = Settings.from_mapping({"REDIS_URL": "rediss://app:pw@cache.example:6380/0"})
    assert tls.redis_client_kwargs() == {**verified, "ssl_ca_certs": None}  # None: the system store
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    private = Settings.from_mapping({"REDIS_URL": "rediss://cache.example:6380/0", "STREAMKPI_REDIS_CA_FILE": str(ca)})
    assert private.redis_client_kwargs() == {**verified, "ssl_ca_certs": str(ca)}


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({"REDIS_URL": "http://cache.example:6379"}, "use redis://, rediss:// (TLS) or unix://"),
        ({"REDIS_URL": "cache.example:6379"}, "use redis://, rediss:// (TLS) or unix://"),
        ({"REDIS_URL": "rediss://:hunter2/x@cache.example:6380/0"}, "percent-encode"),  # host cut off at the /
        ({"REDIS_URL": "rediss://:hun#ter2@cache.example:6380/0"}, "percent-encode"),
        ({"REDIS_URL": "redis://:hunter2@cache.example:port/0"}, "percent-encode"),
        ({"REDIS_URL": "rediss://:hunter2@cache.example/0?ssl_cert_reqs=none"}, "TLS is always verified"),
        ({"REDIS_URL": "rediss://cache.example/0?ssl_check_hostname=false"}, "remove ssl_check_hostname"),
        ({"STREAMKPI_REDIS_CA_FILE": "/etc/hostname"}, "does not use TLS: use rediss://"),
        ({"REDIS_URL": "rediss://cache.example/0", "STREAMKPI_REDIS_CA_FILE": "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_a_redis_url_or_ca_file_that_cannot_work_is_refused_without_showing_the_password(
    env: dict[str, str], hint: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping(env)
    assert hint in str(info.value)
    assert "hunter2" not in str(info.value) and "ter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://default:p%40ss%2Fword@master.cache.amazonaws.com:6379/0",  # percent-encoded @ and /
        "rediss://:hun@ter2@cache.example:6380/0",  # the last @ ends the password, as redis-py reads it
        "rediss://[::1]:6380/0?socket_timeout=2",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_redis_urls_redis_py_reads_as_meant_are_accepted(url: str) -> None:
    assert Settings.from_mapping({"REDIS_URL": url}).redis_url == url


# -- load: environment over env file over default ----------------------------------------------------


def test_load_precedence(tmp_path: Path) -> None:
    env_file = tmp_path / "local.env"
    write_env_file(env_file, {"STREAMKPI_STREAM": "from-file", "STREAMKPI_SHARDS": "3", "REDIS_URL": "redis://file"})
    s = Settings.load({"STREAMKPI_STREAM": "from-env"}, env_file)
    assert s.stream == "from-env"  # environment wins
    assert s.shards == 3  # env file next
    assert s.redis_url == "redis://file"
    assert s.app_name == "streamkpi"  # default last


def test_load_finds_the_env_file_in_the_state_dir(tmp_path: Path) -> None:
    write_env_file(tmp_path / "local.env", {"STREAMKPI_DLQ_QUEUE": "dlq-from-file"})
    s = Settings.load({"STREAMKPI_STATE_DIR": str(tmp_path)})
    assert s.dlq_queue == "dlq-from-file"
    assert s.env_file == tmp_path / "local.env"


def test_load_without_an_env_file(tmp_path: Path) -> None:
    assert Settings.load({}, tmp_path / "missing.env") == Settings()


def test_aws_default_region_is_a_fallback(tmp_path: Path) -> None:
    missing = tmp_path / "none.env"
    assert Settings.load({"AWS_DEFAULT_REGION": "ap-south-1"}, missing).region == "ap-south-1"
    both = {"AWS_DEFAULT_REGION": "ap-south-1", "AWS_REGION": "eu-central-1"}
    assert Settings.load(both, missing).region == "eu-central-1"


# -- env file format ---------------------------------------------------------------------------------


def test_read_env_file_format(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text(
        "# a comment\n\n  STREAMKPI_STREAM = spaced  \nREDIS_URL=redis://h:1/0?a=b\nno equals sign here\n"
        "  # indented comment\nEMPTY=\n"
    )
    assert read_env_file(path) == {"STREAMKPI_STREAM": "spaced", "REDIS_URL": "redis://h:1/0?a=b", "EMPTY": ""}


def test_read_env_file_missing_is_empty(tmp_path: Path) -> None:
    assert read_env_file(tmp_path / "nope.env") == {}


def test_write_env_file_creates_directories_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "local.env"
    write_env_file(path, {"A": "1"})
    write_env_file(path, {"B": "2"})  # replaces, does not append
    assert read_env_file(path) == {"B": "2"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["local.env"]
    assert path.read_text().startswith("#")


env_keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
env_values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x1c\x1d\x1e\x85"),
    max_size=30,
).map(str.strip)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(env_keys, env_values, max_size=8))
def test_env_file_round_trip(tmp_path: Path, values: dict[str, str]) -> None:
    path = tmp_path / "rt" / "local.env"
    write_env_file(path, values)
    assert read_env_file(path) == values


# -- validation names the variable --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value", "hint"),
    [
        ("STREAMKPI_SHARDS", "two", "int"),
        ("STREAMKPI_SHARDS", "0", "at least 1 shard"),
        ("STREAMKPI_SHARDS", "-3", "at least 1 shard"),
        ("STREAMKPI_LOCAL_PORT", "4566.5", "int"),
        ("STREAMKPI_REDIS_FLUSH_SECONDS", "soon", "float"),
        ("STREAMKPI_REDIS_FLUSH_SECONDS", "0", "positive"),
        ("STREAMKPI_DYNAMODB_FLUSH_SECONDS", "-1", "positive"),
        ("STREAMKPI_CHECKPOINT_SECONDS", "0", "positive"),
        ("STREAMKPI_CHECKPOINT_SECONDS", "nan", "positive"),
        ("STREAMKPI_INITIAL_POSITION", "EARLIEST", "TRIM_HORIZON or LATEST"),
    ],
)
def test_bad_values_name_the_variable(env: str, value: str, hint: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({env: value})
    message = str(info.value)
    assert message.startswith(env), message
    assert hint in message


def test_bad_value_in_the_env_file_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    write_env_file(path, {"STREAMKPI_KCL_MAX_RECORDS": "lots"})
    with pytest.raises(SettingsError, match="STREAMKPI_KCL_MAX_RECORDS='lots'"):
        Settings.load({}, path)


# -- the documentation table --------------------------------------------------------------------------


def test_settings_table_lists_every_env_name() -> None:
    table = settings_table_markdown()
    lines = table.splitlines()
    assert lines[:2] == ["| variable | default | what it does |", "| --- | --- | --- |"]
    rows = lines[2:]
    assert len(rows) == len(dataclasses.fields(Settings))
    assert [row.split("|")[1].strip() for row in rows] == [f"`{name}`" for name in env_names()]
    assert len(set(env_names())) == len(env_names())
    by_name = {row.split("|")[1].strip().strip("`"): row for row in rows}
    assert "`4566`" in by_name["STREAMKPI_LOCAL_PORT"]
    assert "(unset)" in by_name["AWS_ENDPOINT_URL"]
    assert "(unset)" in by_name["STREAMKPI_WORKER_ID"]
    assert all(row.count("|") == 4 and row.split("|")[3].strip() for row in rows)


def test_each_worker_renders_its_own_properties_file(tmp_path: Path) -> None:
    # Two workers sharing one state folder once shared one file: both daemons could start as the last
    # writer's worker id and fight over the same leases (seen in the fleet test).
    from streamkpi.kcl_daemon import properties_path

    first, second = properties_path(tmp_path, "app", "host-1"), properties_path(tmp_path, "app", "host-2")
    assert first != second and first.parent == second.parent == tmp_path
    assert properties_path(tmp_path, "app", "a/../b c").name == "kcl-app-a_.._b_c.properties"
