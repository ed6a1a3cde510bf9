"""Enhanced fan-out (STREAMKPI_KCL_RETRIEVAL_MODE=FANOUT) with the real KCL daemon: the daemon registers a
stream consumer under STREAMKPI_KCL_CONSUMER_NAME, reads every shard through SubscribeToShard (an HTTP/2
event stream), and the counts are exact.

moto cannot serve this: it registers the consumer, but answers every SubscribeToShard with HTTP 500, so the
KCL resubscribes once a second and never reads a record. kinesis-local (kinesis-mock, see kinesis_local.py)
serves RegisterStreamConsumer, DescribeStreamConsumer and SubscribeToShard on its cleartext HTTP/2 port, so
Kinesis here is kinesis-local; the leases, the metrics table, the DLQ and the archive stay on the session's
moto, Redis is the session's redis-server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamkpi.kcl_daemon import render_properties
from streamkpi.settings import Settings
from tests.integration.conftest import Stack, Worker, wait_for
from tests.integration.kinesis_local import KinesisLocal, kinesis_local  # noqa: F401  (fixture)
from tests.integration.test_kcl_end_to_end import dlq_ids
from tests.integration.test_resharding import (
    SHUTDOWN_GRACE_MILLIS,
    checkpoints,
    generate,
    shard_records,
)
from tests.integration.verify import assert_counts_in_both_stores

# A Redis database of this test's own: kinesis-local's shard ids repeat other tests' (see test_resharding).
REDIS_DB = 8
CONSUMER = "kpi-fanout-reader"  # deliberately not the application name, which is the KCL's default
FANOUT = "software.amazon.kinesis.retrieval.fanout."
POLLING = "software.amazon.kinesis.retrieval.polling."


def last_sequences(kinesis: Any, stream: str) -> dict[str, str]:
    shards = [shard["ShardId"] for shard in kinesis.list_shards(StreamName=stream)["Shards"]]
    return {shard: shard_records(kinesis, stream, shard)[-1]["SequenceNumber"] for shard in shards}


def kcl_log(worker: Worker) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]


def test_polling_is_the_default_and_fanout_names_its_consumer_only_when_asked() -> None:
    def rendered(env: dict[str, str]) -> list[str]:
        return render_properties(Settings.from_mapping(env), "streamkpi-processor", "w").splitlines()

    assert "retrievalMode = POLLING" in rendered({})
    assert not [line for line in rendered({"STREAMKPI_KCL_CONSUMER_NAME": CONSUMER}) if "fanoutConfig" in line]
    default_name = rendered({"STREAMKPI_KCL_RETRIEVAL_MODE": "FANOUT"})  # the KCL names it after the application
    assert "retrievalMode = FANOUT" in default_name and not [line for line in default_name if "fanoutConfig" in line]


@pytest.mark.integration
def test_fanout_registers_the_named_consumer_subscribes_every_shard_and_counts_exactly(
    stack: Stack,
    kinesis_local: KinesisLocal,  # noqa: F811
    start_worker: Any,
    tmp_path: Path,
) -> None:
    def client(service: str) -> Any:
        return kinesis_local.client(stack.settings.region) if service == "kinesis" else stack.client(service)

    java_options = stack.env.get("JAVA_TOOL_OPTIONS", "")
    s = stack.fresh(
        shards=2,
        client=client,
        STREAMKPI_KINESIS_ENDPOINT_URL=kinesis_local.endpoint_url,
        REDIS_URL=f"redis://127.0.0.1:{stack.settings.redis_port}/{REDIS_DB}",
        STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS=str(SHUTDOWN_GRACE_MILLIS),
        STREAMKPI_KCL_RETRIEVAL_MODE="FANOUT",
        STREAMKPI_KCL_CONSUMER_NAME=CONSUMER,
        # The KCL's retrieval classes log each subscription at DEBUG (logback.xml reads this property).
        JAVA_TOOL_OPTIONS=f"{java_options} -Dstreamkpi.kcl.level=DEBUG".strip(),
    )
    kinesis = kinesis_local.client(s.settings.region)
    stream = s.settings.stream
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]

    # The settings become these daemon properties (`streamkpi consume --print-properties` prints the same),
    # the keys the KCL 3.1.3 multilang configurator binds to FanoutConfigBean.
    properties = render_properties(s.settings, "streamkpi-processor", "w").splitlines()
    assert "retrievalMode = FANOUT" in properties
    assert f"fanoutConfig.consumerName = {CONSUMER}" in properties
    assert kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"] == []

    # 1,000 events put while the daemon starts (it registers the consumer first, then subscribes from
    # TRIM_HORIZON): each shard checkpoints at its last record.
    worker = start_worker(s)
    truth1 = generate(s, tmp_path / "truth-1.json", seed=301)
    assert truth1["events_sent"] == 1000
    last1 = last_sequences(kinesis, stream)
    assert len(last1) == 2, "the generator's partition keys spread records over both shards"
    wait_for(lambda: checkpoints(s) == last1, 120, "every shard checkpointed at its last record")

    # The daemon registered one consumer, under the configured name, not the application name.
    consumers = kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]
    assert [(c["ConsumerName"], c["ConsumerStatus"]) for c in consumers] == [(CONSUMER, "ACTIVE")]

    # 1,000 more while the subscriptions are open: pushed to the worker as they arrive.
    truth2 = generate(s, tmp_path / "truth-2.json", seed=302)
    assert truth2["events_sent"] == 1000
    last2 = last_sequences(kinesis, stream)
    assert all(last2[shard] != last1[shard] for shard in last1)
    wait_for(lambda: checkpoints(s) == last2, 60, "every shard checkpointed at its new last record")
    assert worker.process.poll() is None, worker.logs()[-3000:]

    assert_counts_in_both_stores(s, truth1, truth2)
    assert dlq_ids(s) == {entry["id"]: entry["reason"] for entry in truth1["invalid"] + truth2["invalid"]}

    # The daemon's own account: it registered the named consumer and read each shard through an event
    # stream of SubscribeToShard; the polling retriever (GetRecords) never ran.
    lines = kcl_log(worker)
    fanout = [(line["logger"], line["msg"]) for line in lines if line.get("logger", "").startswith(FANOUT)]
    assert any(f"StreamConsumer {CONSUMER} to have ACTIVE status" in msg for _, msg in fanout), fanout[:20]
    for shard in last1:
        subscribed = [msg for logger, msg in fanout if msg.startswith(f"{shard}:")]
        assert any("Starting subscribe to shard" in msg for msg in subscribed), (shard, subscribed[:20])
        assert any("creating record subscription" in msg for msg in subscribed), (shard, subscribed[:20])
    assert not [line for line in lines if line.get("logger", "").startswith(POLLING)]

    # SIGTERM: both shards checkpoint on the shutdown request, and the worker exits 0.
    assert worker.stop() == 0
    shut_down = {line.get("shard") for line in kcl_log(worker) if line.get("msg") == "shutdown requested; checkpointed"}
    assert shut_down == set(last1), worker.logs()[-3000:]
