"""consumer.forwarding and consumer.routing: which sinks an event type goes to, what they take, and the bytes
an event is forwarded as."""

from __future__ import annotations

import orjson

from consumer.forwarding import (
    LINE_BODY_BYTES,
    ForwardPlan,
    SinkTerms,
    forward_body,
    forward_plan,
    refusal,
    sink_terms,
)
from consumer.routing import Route, Router
from delivery.limits import FIREHOSE_MAX_RECORD_BYTES, SQS_MAX_MESSAGE_BYTES

EVENT = {"eventType": "click", "timestamp": 1, "data": {"x": 1}}
LINE = orjson.dumps(EVENT)
SQS = SinkTerms(SQS_MAX_MESSAGE_BYTES, escaped=True)


def padded(size: int) -> dict[str, str]:
    """An event whose compact JSON is `size` bytes."""
    event = {"eventType": "click", "p": ""}
    event["p"] = "a" * (size - len(orjson.dumps(event)))
    assert len(orjson.dumps(event)) == size
    return event


def test_an_event_goes_as_its_own_line_when_one_line_that_fits_else_as_its_json() -> None:
    spaced = b'{"eventType": "click",  "timestamp": 1, "data": {"x": 1}}'
    assert forward_body(EVENT, spaced, LINE_BODY_BYTES, False) is spaced  # as the producer wrote it
    assert forward_body(EVENT, None, LINE_BODY_BYTES, False) == LINE  # an array element: its JSON
    assert forward_body(EVENT, spaced.replace(b",  ", b",\r"), LINE_BODY_BYTES, False) == LINE  # a CR


def test_a_line_longer_than_its_sinks_take_goes_as_its_shorter_json_or_not_at_all() -> None:
    event = padded(LINE_BODY_BYTES)
    line = orjson.dumps(event)
    assert forward_body(event, line, LINE_BODY_BYTES, False) is line  # with its newline: one Firehose record
    spaced = line.replace(b":", b": ", 1)  # one byte more than a record takes with its newline
    assert forward_body(event, spaced, LINE_BODY_BYTES, False) == line
    bigger = padded(LINE_BODY_BYTES + 1)
    assert forward_body(bigger, orjson.dumps(bigger), LINE_BODY_BYTES, False) is None
    payload, detail = refusal(bigger, False)
    assert payload == orjson.dumps(bigger)
    assert detail == f"event of {FIREHOSE_MAX_RECORD_BYTES} bytes is larger than a forward sink accepts"


def test_an_sqs_sink_counts_the_noncharacters_it_escapes() -> None:
    at_limit = padded(SQS_MAX_MESSAGE_BYTES)
    assert forward_body(at_limit, None, SQS.max_body_bytes, SQS.escaped) == orjson.dumps(at_limit)
    event = padded(SQS_MAX_MESSAGE_BYTES - 6)
    event["p"] = "\ufffe\uffff\ufffe" + event["p"][3:]  # 3 bytes each (6 more in all), and 6 once escaped
    body = orjson.dumps(event)
    assert len(body) == SQS_MAX_MESSAGE_BYTES
    assert forward_body(event, body, SQS.max_body_bytes, escaped=False) is body
    assert forward_body(event, body, SQS.max_body_bytes, SQS.escaped) is None
    assert refusal(event, SQS.escaped)[1].startswith(f"event of {SQS_MAX_MESSAGE_BYTES + 3 * 3} bytes")


def test_sink_terms_follow_the_sink_type_and_a_fifo_queue_wants_identities() -> None:
    assert sink_terms("firehose", None) == sink_terms("kinesis", "forwarded") == SinkTerms(LINE_BODY_BYTES)
    assert sink_terms("sqs", "orders") == SQS
    fifo = SinkTerms(SQS_MAX_MESSAGE_BYTES, escaped=True, identity=True)
    assert sink_terms("sqs", "orders.fifo") == sink_terms("sqs", "https://sqs/1/orders.fifo") == fifo


def test_a_plan_takes_what_every_sink_of_the_type_takes() -> None:
    terms = {"archive": sink_terms("firehose", None), "orders": sink_terms("sqs", "orders.fifo")}
    assert forward_plan(("archive",), terms) == ForwardPlan(("archive",), LINE_BODY_BYTES)
    both = ForwardPlan(("archive", "orders"), SQS_MAX_MESSAGE_BYTES, escaped=True, identity=True)
    assert forward_plan(("archive", "orders"), terms) == both
    assert forward_plan((), terms) == ForwardPlan()


def test_the_router_plans_each_type_once_with_each_sink_once_in_route_order() -> None:
    routes = (
        Route(("donation.*",), sinks=("orders", "archive")),
        Route(("*",), sinks=("archive",)),
        Route(("click",), metrics=("clicks",)),
    )
    router = Router(routes, {"orders": sink_terms("sqs", "orders")})
    plan = router.plan_for("donation.made")
    assert plan == ForwardPlan(("orders", "archive"), SQS_MAX_MESSAGE_BYTES, escaped=True)
    assert router.plan_for("donation.made") is plan
    assert router.plan_for("click").sinks == ("archive",)
    assert router.sink_names == {"orders", "archive"}
    assert Router().plan_for("click") == ForwardPlan()
