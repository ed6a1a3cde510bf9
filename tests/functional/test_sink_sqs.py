"""The SQS forward sink (consumer/sinks/sqs.py) against moto's SQS: routed events arrive in a standard and
a FIFO queue, FIFO order per group is the input order, partial failures are sent again without loss, a
resent batch is not stored twice in a FIFO queue, and the config and the composition root build it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from aggregations.memory_store import MemoryStore
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.sinks import Forward
from consumer.sinks.memory import MemorySink
from consumer.sinks.sqs import SqsQueueSink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from delivery.errors import DeliveryUnavailableError
from delivery.limits import SQS_MAX_MESSAGE_BYTES
from streamkpi.app import Services
from streamkpi.config import default_config_text, parse_config
from streamkpi.errors import ConfigError
from streamkpi.settings import Settings

REGION = "us-east-1"
SHARD = "shardId-000000000000"
ARRIVAL_MS = 1_764_000_000_000
KEYS = ["user-1", "user-2", "user-3", "user-4"]
ROUTED = """
[sinks.queue]
type = "sqs"
queue = "donations"

[[routes]]
types = ["donation.*"]
sinks = ["queue"]
"""


@pytest.fixture
def sqs(moto: None) -> Any:
    return boto3.client("sqs", region_name=REGION)


def make_queue(sqs: Any, name: str) -> str:
    attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue, in the order SQS hands them out (received and deleted)."""
    out: list[dict[str, Any]] = []
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageSystemAttributeNames=["MessageGroupId"]
    ).get("Messages", []):
        out += messages
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return out


def forwards(count: int, pad: int = 0) -> list[Forward]:
    """Events over KEYS, each with its identity (as the worker forwards them)."""
    return [
        Forward(
            partition_key=KEYS[n % len(KEYS)],
            data=orjson.dumps({"eventType": "donation.made", "key": KEYS[n % len(KEYS)], "n": n, "pad": "x" * pad}),
            identity=f"{SHARD}/{1000 + n}/0/0",
        )
        for n in range(count)
    ]


def numbers(messages: list[dict[str, Any]]) -> list[int]:
    return [orjson.loads(m["Body"])["n"] for m in messages]


class RefusingSqs:
    """Passes calls to moto; the first `refusing_calls` calls report every third entry as Failed (the
    service's fault, so worth sending again) without storing it."""

    def __init__(self, sqs: Any, refusing_calls: int) -> None:
        self.sqs, self.refusing_calls = sqs, refusing_calls
        self.calls: list[list[int]] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([orjson.loads(e["MessageBody"])["n"] for e in Entries])
        if not self.refusing_calls:
            return self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        self.refusing_calls -= 1
        refused = [e for n, e in enumerate(Entries) if n % 3 == 1]
        accepted = [e for e in Entries if e not in refused]
        reply = self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=accepted) if accepted else {}
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in refused]
        return {"Successful": reply.get("Successful", []), "Failed": failed}


def test_events_of_a_routed_type_arrive_in_a_standard_queue(sqs: Any) -> None:
    url = make_queue(sqs, "donations")
    config = parse_config(default_config_text() + ROUTED, "sqs-sink")
    sink = SqsQueueSink("queue", sqs, url, sleep=lambda s: None)
    dlq = MemoryDeadLetterQueue()
    outputs = Outputs(dlq, sinks={"archive": MemorySink("archive"), "queue": sink})
    worker = ShardWorker(
        SHARD, "events", config.pipeline, Stores(MemoryStore("d"), MemoryStore("r")), outputs, Cadence()
    )
    donation = {"amount": 5, "currency": "GBP", "charityId": "c-1"}  # what the default schema asks for
    events = [
        {"eventType": event_type, "timestamp": ARRIVAL_MS - 1000, "userId": f"u{n}", "n": n, "data": donation}
        for n, event_type in enumerate(["donation.made", "click", "donation.refunded", "page.view", "donation.made"])
    ]
    worker.process([(orjson.dumps(e), str(100 + n), 0, f"u{n}", ARRIVAL_MS) for n, e in enumerate(events)])
    worker.flush_durable()
    bodies = [orjson.loads(m["Body"]) for m in drain(sqs, url)]
    assert sorted(bodies, key=lambda b: b["n"]) == [e for e in events if e["eventType"].startswith("donation.")]
    assert dlq.letters == []


def test_a_fifo_queue_keeps_the_input_order_per_group_and_a_resent_batch_is_stored_once(sqs: Any) -> None:
    url = make_queue(sqs, "donations.fifo")
    sent = forwards(57)
    sink = SqsQueueSink("queue", sqs, url, sleep=lambda s: None)
    sink.send(sent)
    sink.send(sent)  # the worker's retry, or KCL redelivery after a crash: within the deduplication window
    messages = drain(sqs, url)
    assert sorted(numbers(messages)) == list(range(57))  # each once
    for key in KEYS:
        group = [m for m in messages if m["Attributes"]["MessageGroupId"] == key]
        assert numbers(group) == [n for n, f in enumerate(sent) if f.partition_key == key]


def test_a_partial_batch_failure_is_sent_again_without_loss(sqs: Any) -> None:
    for name in ("plain", "ordered.fifo"):
        url = make_queue(sqs, name)
        refusing = RefusingSqs(sqs, refusing_calls=3)
        sent = forwards(40)
        SqsQueueSink("queue", refusing, url, sleep=lambda s: None).send(sent)
        messages = drain(sqs, url)
        assert sorted(numbers(messages)) == list(range(40)), name  # none lost, none twice
        assert len(refusing.calls) > 4
        assert all(len(call) <= 10 for call in refusing.calls)
        if name.endswith(".fifo"):
            assert all(len({n % len(KEYS) for n in call}) == len(call) for call in refusing.calls)  # one per group
            for key in KEYS:
                group = [m for m in messages if m["Attributes"]["MessageGroupId"] == key]
                assert numbers(group) == sorted(numbers(group))


def test_an_outage_raises_delivery_unavailable_with_what_is_pending(sqs: Any) -> None:
    class Down:
        def send_message_batch(self, **kwargs: Any) -> Any:
            raise ConnectionError("sqs is down (test)")

    sleeps: list[float] = []
    with pytest.raises(DeliveryUnavailableError, match="did not acknowledge 12 of 12 events after 3 attempts"):
        SqsQueueSink("queue", Down(), "https://sqs/q", sleep=sleeps.append, attempts=3).send(forwards(12))
    assert len(sleeps) == 2


def test_bodies_sqs_cannot_take_are_refused_before_anything_is_sent(sqs: Any) -> None:
    url = make_queue(sqs, "limits")
    sink = SqsQueueSink("queue", sqs, url)
    at_limit = Forward("k", b'"' + b"a" * (SQS_MAX_MESSAGE_BYTES - 2) + b'"', "s/1/0/0")
    sink.send([at_limit])
    assert len(drain(sqs, url)) == 1
    over = Forward("k", at_limit.data + b" ", "s/2/0/0")
    with pytest.raises(ValueError, match="over the SQS message limit"):
        sink.send([*forwards(5), over])
    with pytest.raises(ValueError, match="not UTF-8"):
        sink.send([Forward("k", b"\xff", "s/3/0/0")])
    fifo = SqsQueueSink("queue", sqs, make_queue(sqs, "limits.fifo"))
    with pytest.raises(ValueError, match="identity"):
        fifo.send([("k", b"{}")])
    assert drain(sqs, url) == []


def test_characters_sqs_refuses_are_sent_escaped_as_the_same_json(sqs: Any) -> None:
    url = make_queue(sqs, "odd")
    event = {"eventType": "x", "note": "\ufffe and \uffff"}
    SqsQueueSink("queue", sqs, url).send([("k", orjson.dumps(event))])
    [message] = drain(sqs, url)
    assert "\uffff" not in message["Body"] and orjson.loads(message["Body"]) == event


def test_partition_keys_sqs_would_refuse_as_group_ids_still_keep_their_order(sqs: Any) -> None:
    url = make_queue(sqs, "keys.fifo")
    long_key = "k" * 256  # Kinesis takes 256 characters, SQS group ids 128
    sent = [Forward(long_key if n % 2 else "clé", orjson.dumps({"n": n}), f"s/{n}/0/0") for n in range(10)]
    SqsQueueSink("queue", sqs, url).send(sent)
    messages = drain(sqs, url)
    groups = Counter(m["Attributes"]["MessageGroupId"] for m in messages)
    assert sorted(groups.values()) == [5, 5] and all(g.startswith("sha256:") for g in groups)
    for group in groups:
        assert numbers([m for m in messages if m["Attributes"]["MessageGroupId"] == group]) in (
            [0, 2, 4, 6, 8],
            [1, 3, 5, 7, 9],
        )


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('type = "sqs"', 'an sqs sink needs queue = "<queue name or URL>"'),
        ('type = "sqs"\nqueue = ""', "sinks.queue.queue: must be a non-empty name"),
        ('type = "sqs"\nstream = "s"', "unknown key(s) ['stream']; allowed for sqs: type, queue"),
        ('type = "sqs"\nqueue = "q"\npack = false', "unknown key(s) ['pack']; allowed for sqs: type, queue"),
        ('type = "sns"', "'sns' is not one of firehose, kinesis, sqs"),
    ],
)
def test_sqs_sink_config_errors_say_what_to_write(table: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(f"{default_config_text()}\n[sinks.queue]\n{table}\n", "cfg.toml")
    assert error in str(raised.value)


def test_the_composition_root_builds_sqs_sinks_by_queue_name_or_url(sqs: Any, tmp_path: Path) -> None:
    by_name, by_url = make_queue(sqs, "donations"), make_queue(sqs, "donations.fifo")
    config = tmp_path / "config.toml"
    extra = f'\n[sinks.named]\ntype = "sqs"\nqueue = "donations"\n[sinks.fifo]\ntype = "sqs"\nqueue = "{by_url}"\n'
    config.write_text(default_config_text() + extra)
    sinks = Services(Settings(config_path=str(config), region=REGION)).sinks
    named, fifo = sinks["named"], sinks["fifo"]
    assert isinstance(named, SqsQueueSink) and named.queue_url == by_name and not named.fifo
    assert isinstance(fifo, SqsQueueSink) and fifo.queue_url == by_url and fifo.fifo
