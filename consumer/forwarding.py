"""Forwarding: what each sink takes, the bytes a valid event is forwarded as, and the events its sinks
cannot take. Pure.

Every sink an event's type routes to (consumer/routing.py) gets the same bytes: the event's own line as
it came when that is one line (no CR either: the archive is NDJSON) that all of them take, else its
compact JSON (always its JSON under `[redaction]`: the worker passes no line then, since the bytes that came
could hold what redaction took out of the parsed event). An event whose JSON one of its sinks cannot take is
forwarded nowhere and counted for no metric: it is a dead letter (`too_large`). Events bound for a FIFO
queue carry their identity, which the queue deduplicates by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumer.bounds import to_json_bytes
from delivery.limits import FIREHOSE_MAX_RECORD_BYTES, SQS_MAX_MESSAGE_BYTES

# Firehose: a line and its newline in one record. Kinesis takes the same: its 1 MiB record holds the
# partition key too (at most 256 characters, 1 KiB of UTF-8).
LINE_BODY_BYTES = FIREHOSE_MAX_RECORD_BYTES - 1
_CR = ord("\r")  # (an int: `int in bytes` is a plain memchr, `bytes in bytes` is not)
# SQS refuses U+FFFE and U+FFFF: the SQS sink sends them escaped (\ufffe: 6 bytes for 3).
_NONCHARACTERS = ("\ufffe".encode(), "\uffff".encode())


@dataclass(frozen=True, slots=True)
class SinkTerms:
    """What one sink takes: bodies of at most `max_body_bytes` (as the sink counts them: `escaped`, with
    U+FFFE and U+FFFF escaped), and whether each event must carry its identity."""

    max_body_bytes: int = LINE_BODY_BYTES
    escaped: bool = False
    identity: bool = False


def sink_terms(sink_type: str, target: str | None) -> SinkTerms:
    """The terms of a configured sink (`[sinks.<name>]`: its type, and its target's name or URL)."""
    if sink_type == "sqs":  # one message per event; a FIFO queue's name ends in .fifo
        return SinkTerms(SQS_MAX_MESSAGE_BYTES, escaped=True, identity=str(target).endswith(".fifo"))
    return SinkTerms()


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """Where the events of one type go, and what all those sinks take."""

    sinks: tuple[str, ...] = ()
    max_body_bytes: int = LINE_BODY_BYTES
    escaped: bool = False
    identity: bool = False


def forward_plan(sinks: tuple[str, ...], terms: Mapping[str, SinkTerms]) -> ForwardPlan:
    """The plan for events routed to `sinks` (a sink with no terms takes what a Firehose sink takes)."""
    each = [terms.get(name, SinkTerms()) for name in sinks]
    return ForwardPlan(
        sinks,
        min((t.max_body_bytes for t in each), default=LINE_BODY_BYTES),
        any(t.escaped for t in each),
        any(t.identity for t in each),
    )


def forward_body(event: dict[str, Any], line: bytes | None, max_body_bytes: int, escaped: bool) -> bytes | None:
    """The bytes `event` is forwarded as (`line`: its own text, if it came on one line), or None when its sinks
    cannot take them: `refusal` says why. (None, not a tuple with the reason: this runs for every forwarded
    event, and a refusal is rare.)"""
    if line is not None and _CR not in line and (_escaped_size(line) if escaped else len(line)) <= max_body_bytes:
        return line
    body = to_json_bytes(event)
    return body if (_escaped_size(body) if escaped else len(body)) <= max_body_bytes else None


def refusal(event: dict[str, Any], escaped: bool) -> tuple[bytes, str]:
    """The payload and detail of the dead letter (`too_large`) of an event `forward_body` refused."""
    body = to_json_bytes(event)
    size = _escaped_size(body) if escaped else len(body)
    return body, f"event of {size} bytes is larger than a forward sink accepts"


def _escaped_size(body: bytes) -> int:
    return len(body) + 3 * sum(body.count(nonchar) for nonchar in _NONCHARACTERS)
