"""Synthetic traffic for `streamkpi generate`: browser and business events, and what the consumer must make of them.

Pure: no I/O and no wall clock. Event number i is sent at `start_ms + floor(i * 1000 / rate)`, which is
also its event time unless it is late, so a seed and a start time fix every byte. Each record comes with its
plan (index in the record, event type and time, or the reason the consumer will reject it) and `Truth`
folds the plans of the records that were actually put into the counts the consumer must end up with.

Time-based kinds (late events, `in_future`, `too_old`) are planned against the send time, which the
consumer sees as the record's arrival time: they assume the events are sent when their send time comes
(the producer's pacing with the default start, "now"). Their margins are hours (`in_future`: 1-3 h ahead
with a 5 min skew) and a year (`too_old`: about 4 years back where the longest retention is 3 years and a
day), so a slow put, a retry or the seconds a record waits for its batch cannot change a verdict.

The valid events themselves, with their identities, can be written next to the truth (`Truth.events_out`,
`streamkpi generate --events-out FILE`): one NDJSON line per valid event,
`{"id": "<shard>/<seq>/0/<index>", "event_ms": <planned event time>, "event": <the object as sent>}`,
where `event` is the event's exact JSON text (amounts keep their spelling, e.g. 25.00), so an
independent checker can recompute every metric.
"""

from __future__ import annotations

import gzip
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, BinaryIO

import orjson

from aggregations.windows import window_start
from consumer.reasons import Reason

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
DEFAULT_USERS = 500
# A late event's time is this far before its send time: older windows, but well inside every retention
# (the 1m resolution keeps 48 h in DynamoDB and 6 h in Redis).
LATE_MS = (MINUTE_MS, 120 * MINUTE_MS)
# `in_future`: this far after the record's send time (the consumer allows 5 min of skew).
IN_FUTURE_MS = (HOUR_MS, 3 * HOUR_MS)
# `too_old`: about 4 years before the send time (the longest retention, 1d, keeps 3 years and a day).
TOO_OLD_MS = (4 * 365 * DAY_MS, 4 * 365 * DAY_MS + 30 * DAY_MS)

# (eventType, weight): low-level interaction events dominate, business events are rare.
EVENT_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("mouse.move", 30),
    ("scroll", 20),
    ("click", 18),
    ("page.view", 14),
    ("search", 6),
    ("form.submit", 4),
    ("donation.made", 2.5),
    ("user.created", 0.9),
    ("user.verified", 0.6),
)
EVENT_TYPES = tuple(name for name, _ in EVENT_WEIGHTS)

# How a record carries its events; the multi-event forms hold 2-20 events.
RECORD_FORMS: tuple[tuple[str, float], ...] = (("single", 50), ("array", 30), ("ndjson", 15), ("gzip", 5))
MAX_BATCH = 20

TIMESTAMP_STYLES: tuple[tuple[str, float], ...] = (
    ("iso_t_z", 35),  # 2019-11-15T18:05:00.123Z
    ("iso_space_z", 20),  # 2019-11-15 18:05:00.123Z (the shape in the seed talk)
    ("iso_offset", 10),  # 2019-11-15T19:05:00.123+01:00, the same instant
    ("epoch_ms", 20),  # 1573841100123
    ("epoch_s", 15),  # 1573841100 or 1573841100.123
)

# Record-level reasons make the whole record unreadable, so they always travel alone.
RECORD_LEVEL = frozenset({Reason.NOT_JSON.value, Reason.NOT_UTF8.value})
INVALID_WEIGHTS: tuple[tuple[str, float], ...] = (
    (Reason.NOT_JSON.value, 15),
    (Reason.NOT_UTF8.value, 10),
    (Reason.MISSING_FIELD.value, 25),
    (Reason.BAD_TIMESTAMP.value, 25),
    (Reason.WRONG_TYPE.value, 25),
    (Reason.IN_FUTURE.value, 15),
    (Reason.TOO_OLD.value, 10),
)
INVALID_REASONS = tuple(reason for reason, _ in INVALID_WEIGHTS)

BROWSERS = ("Chrome 131.0", "Chrome 130.0", "Safari 18.1", "Firefox 133.0", "Edge 131.0", "Samsung Internet 26.0")
BROWSER_WEIGHTS = (40, 15, 20, 10, 10, 5)
CHARITY_IDS = ("2357", "11854", "183092", "50", "13441", "1011", "2116", "194")
FUNDRAISERS = (
    "ice-bucket-challenge-2014",
    "london-marathon-sarah",
    "nepal-earthquake-appeal",
    "movember-team-bristol",
    "great-north-run-dave",
    "bake-sale-for-oxfam",
)
QUERIES = (
    "ice bucket challenge",
    "cancer research",
    "london marathon",
    "red nose day",
    "flood appeal",
    "dog rescue",
    "macmillan coffee morning",
    "movember",
)
REFERRERS = ("", "https://www.google.com/", "https://www.facebook.com/", "https://t.co/", "https://mail.google.com/")
CLICK_TARGETS = ("button#donate", "a.nav-link", "a.fundraiser-card", "button.share", "input#search", "a#login")
FORMS = ("signup", "donate", "contact", "newsletter")
CURRENCIES = ("GBP", "USD", "EUR")
CURRENCY_WEIGHTS = (70, 15, 15)
# Donors pick round amounts far more often than odd ones (in minor units).
ROUND_AMOUNTS = (500, 1000, 1000, 2000, 2000, 2500, 5000, 10000)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_LIMIT = 100_000_000_000  # as in consumer.validate: numbers below it are epoch seconds
_PLUS_ONE = timezone(timedelta(hours=1))


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """What the consumer must derive from one event: (type, time) when valid, else the reason code."""

    index: int  # position in the record: array index or non-blank NDJSON line; 0 for a single object
    event_type: str | None  # None when invalid: nothing gets counted
    event_ms: int | None
    reason: str | None = None  # None = valid
    late: bool = False  # valid, with an event time 1-120 min before its send time
    body: bytes = field(default=b"", compare=False, repr=False)  # a valid event's JSON exactly as sent


@dataclass(frozen=True, slots=True)
class PlannedRecord:
    partition_key: str
    data: bytes
    events: list[PlannedEvent]
    # Event time of the record's last event: the producer sends the record then (a browser flushes its
    # batch after the last event), so it is also the arrival time the verdicts assume.
    send_ms: int


def event_count(rate: float, duration_s: float) -> int:
    """How many events have an event time within `duration_s` seconds of the start."""
    # Rounding first keeps e.g. 0.1 s * 30/s from becoming 3.0000000000000004 -> 4 events.
    return math.ceil(round(rate * duration_s, 9))


def format_timestamp(event_ms: int, style: str) -> str | int | float:
    """`event_ms` in one of TIMESTAMP_STYLES; every style parses back to exactly `event_ms`."""
    if style == "epoch_ms":
        if abs(event_ms) >= _SECONDS_LIMIT:
            return event_ms
        style = "iso_t_z"  # the consumer reads smaller numbers (before 1973) as epoch seconds
    if style == "epoch_s":
        # event_ms / 1000 is the double nearest the exact 3-decimal value, so its repr is that value
        # (or a shorter spelling of it) and the consumer's Decimal(repr(x)) * 1000 gives event_ms back.
        return event_ms // 1000 if event_ms % 1000 == 0 else event_ms / 1000
    moment = _EPOCH + timedelta(milliseconds=event_ms)
    timespec = "seconds" if event_ms % 1000 == 0 else "milliseconds"
    if style == "iso_t_z":
        return moment.replace(tzinfo=None).isoformat("T", timespec) + "Z"
    if style == "iso_space_z":
        return moment.replace(tzinfo=None).isoformat(" ", timespec) + "Z"
    if style == "iso_offset":
        return moment.astimezone(_PLUS_ONE).isoformat("T", timespec)
    raise ValueError(f"unknown timestamp style {style!r}")


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in weighted], [weight for _, weight in weighted])[0]


@dataclass(slots=True)
class _User:
    user_id: str
    browser: str
    session_id: str
    path: str = "/"


class EventGenerator:
    """A reproducible stream of Kinesis records with their plans.

    `records(count)` starts from event 0 on every call, so the same generator (same seed, start and
    rate) always yields the same bytes. With `seed=None` a seed is drawn once and kept in `self.seed`,
    so even an unseeded run can be reproduced from its truth file.
    """

    def __init__(
        self,
        seed: int | None,
        start_ms: int,
        rate: float,
        invalid_fraction: float = 0.0,
        users: int = DEFAULT_USERS,
        late_fraction: float = 0.0,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be above zero events per second, not {rate}")
        if not 0 <= invalid_fraction <= 1:
            raise ValueError(f"invalid_fraction must be between 0 and 1, not {invalid_fraction}")
        if not 0 <= late_fraction <= 1:
            raise ValueError(f"late_fraction must be between 0 and 1, not {late_fraction}")
        if users < 1:
            raise ValueError("users must be at least 1")
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(63)
        self.start_ms = start_ms
        self.rate = rate
        self.invalid_fraction = invalid_fraction
        self.late_fraction = late_fraction
        self.users = users

    def event_ms(self, number: int) -> int:
        """Send time of event `number`; also its event time unless it is late or invalid on purpose."""
        return self.start_ms + math.floor(number * 1000 / self.rate)

    def __iter__(self) -> Iterator[PlannedRecord]:
        return self.records()

    def records(self, count: int | None = None) -> Iterator[PlannedRecord]:
        """Records holding events 0 .. count-1 (endless without a count), in send order."""
        rng = random.Random(self.seed)
        users = [self._new_user(rng) for _ in range(self.users)]
        number = 0
        reason = self._draw_reason(rng)  # decided one event ahead: a record-level one ends the batch
        while count is None or number < count:
            user = rng.choice(users)
            if rng.random() < 0.03:
                user.session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if reason in RECORD_LEVEL:
                yield self._broken_record(rng, user, number, reason)
                number += 1
                reason = self._draw_reason(rng)
                continue
            form = _pick(rng, RECORD_FORMS)
            size = 1 if form == "single" else rng.randint(2, MAX_BATCH)
            if count is not None:
                size = min(size, count - number)
            objects: list[dict[str, Any]] = []
            plans: list[PlannedEvent] = []
            ahead: list[tuple[dict[str, Any], int, str]] = []  # in_future events: (event, ms after send, style)
            while len(objects) < size and reason not in RECORD_LEVEL:
                event_ms = self.event_ms(number)
                late = reason is None and bool(self.late_fraction) and rng.random() < self.late_fraction
                if late:
                    event_ms -= rng.randint(*LATE_MS)
                event_type = self._next_type(rng, user)
                event = self._event(rng, user, event_type, event_ms)
                if reason is None:
                    body = orjson.dumps(event)
                    plans.append(PlannedEvent(len(objects), event_type, event_ms, late=late, body=body))
                elif reason == Reason.IN_FUTURE.value:
                    # Judged against the record's send time, known once the record is complete.
                    ahead.append((event, rng.randint(*IN_FUTURE_MS), _pick(rng, TIMESTAMP_STYLES)))
                    plans.append(PlannedEvent(len(objects), None, None, reason))
                else:
                    _corrupt(rng, event, reason, event_ms)
                    plans.append(PlannedEvent(len(objects), None, None, reason))
                objects.append(event)
                number += 1
                reason = self._draw_reason(rng)
            send_ms = self.event_ms(number - 1)
            for event, after_ms, style in ahead:
                event["timestamp"] = format_timestamp(send_ms + after_ms, style)
            yield PlannedRecord(user.user_id, _encode(rng, form, objects), plans, send_ms)

    # -- drawing ----------------------------------------------------------------------------------

    def _draw_reason(self, rng: random.Random) -> str | None:
        if self.invalid_fraction and rng.random() < self.invalid_fraction:
            return _pick(rng, INVALID_WEIGHTS)
        return None

    @staticmethod
    def _new_user(rng: random.Random) -> _User:
        return _User(
            user_id=f"user-{rng.getrandbits(32):08x}",
            browser=rng.choices(BROWSERS, BROWSER_WEIGHTS)[0],
            session_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )

    @staticmethod
    def _next_type(rng: random.Random, user: _User) -> str:
        event_type = _pick(rng, EVENT_WEIGHTS)
        if event_type == "page.view":
            user.path = _random_path(rng)
        return event_type

    @staticmethod
    def _event(rng: random.Random, user: _User, event_type: str, event_ms: int) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventType": event_type,
            "eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "userId": user.user_id,
            "sessionId": user.session_id,
            "browser": user.browser,
            "timestamp": format_timestamp(event_ms, _pick(rng, TIMESTAMP_STYLES)),
            "path": user.path,
        }
        target, data = _payload(rng, event_type)
        if target is not None:
            event["target"] = target
        event["data"] = data
        return event

    def _broken_record(self, rng: random.Random, user: _User, number: int, reason: str) -> PlannedRecord:
        event_ms = self.event_ms(number)
        event = self._event(rng, user, self._next_type(rng, user), event_ms)
        data = _not_utf8(rng, event) if reason == Reason.NOT_UTF8.value else _not_json(rng, event)
        return PlannedRecord(user.user_id, data, [PlannedEvent(0, None, None, reason)], event_ms)


def _random_path(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        return "/"
    if kind < 0.55:
        return f"/fundraising/{rng.choice(FUNDRAISERS)}"
    if kind < 0.75:
        return f"/charity/{rng.choice(CHARITY_IDS)}"
    if kind < 0.9:
        return f"/donate/{rng.choice(CHARITY_IDS)}"
    return rng.choice(("/search", "/signup", "/account"))


def _amount(rng: random.Random) -> orjson.Fragment:
    minor = rng.choice(ROUND_AMOUNTS) if rng.random() < 0.7 else rng.randint(100, 25_000)
    # A Fragment keeps the money spelling with two decimals ("25.00"); a float would print "25.0".
    return orjson.Fragment(f"{minor // 100}.{minor % 100:02d}".encode())


def _payload(rng: random.Random, event_type: str) -> tuple[str | None, dict[str, Any]]:
    """(target, data) for an event of this type."""
    x, y = rng.randint(0, 1919), rng.randint(0, 1079)
    if event_type == "mouse.move":
        return rng.choice(CLICK_TARGETS), {"x": x, "y": y}
    if event_type == "click":
        button = "left" if rng.random() < 0.95 else rng.choice(("right", "middle"))
        return rng.choice(CLICK_TARGETS), {"x": x, "y": y, "button": button}
    if event_type == "scroll":
        return None, {"scrollY": rng.randint(0, 6000), "depthPercent": rng.randint(0, 100)}
    if event_type == "page.view":
        return None, {"referrer": rng.choice(REFERRERS), "loadMs": rng.randint(80, 4000)}
    if event_type == "search":
        return "input#search", {"query": rng.choice(QUERIES), "results": rng.randint(0, 250)}
    if event_type == "form.submit":
        form = rng.choice(FORMS)
        return f"form#{form}", {"form": form, "fields": rng.randint(1, 9)}
    if event_type == "donation.made":
        return "button#donate", {
            "amount": _amount(rng),
            "currency": rng.choices(CURRENCIES, CURRENCY_WEIGHTS)[0],
            "giftAid": rng.random() < 0.4,
            "charityId": rng.choice(CHARITY_IDS),
            "anonymous": rng.random() < 0.1,
        }
    if event_type == "user.created":
        return "form#signup", {"method": rng.choice(("email", "google", "facebook", "apple"))}
    if event_type == "user.verified":
        return None, {"method": rng.choice(("email", "sms"))}
    raise ValueError(f"unknown event type {event_type!r}")


def _corrupt(rng: random.Random, event: dict[str, Any], reason: str, event_ms: int) -> None:
    """Break one field so the consumer's validate_event rejects the event with exactly `reason`."""
    if reason == Reason.MISSING_FIELD.value:
        del event[rng.choice(("eventType", "timestamp"))]
    elif reason == Reason.BAD_TIMESTAMP.value:
        no_offset = format_timestamp(event_ms, rng.choice(("iso_t_z", "iso_space_z")))
        event["timestamp"] = rng.choice(
            ("yesterday", "2026-13-45T00:00:00Z", "15/11/2019 18:05:00", None, "", str(no_offset).removesuffix("Z"))
        )
    elif reason == Reason.WRONG_TYPE.value:
        field_name = rng.choice(("userId", "data", "eventType", "sessionId"))
        if field_name == "userId":
            event["userId"] = rng.randint(1, 99_999)
        elif field_name == "data":
            event["data"] = [event["data"]]
        elif field_name == "eventType":
            event["eventType"] = rng.choice((42, "page view", ["click"]))
        else:
            event["sessionId"] = {"id": event["sessionId"]}
    elif reason == Reason.TOO_OLD.value:
        # The record is sent at or after event_ms, so the event is at least this old on arrival.
        event["timestamp"] = format_timestamp(event_ms - rng.randint(*TOO_OLD_MS), _pick(rng, TIMESTAMP_STYLES))
    else:
        raise ValueError(f"{reason!r} is not a field-level reason")


def _not_json(rng: random.Random, event: dict[str, Any]) -> bytes:
    """Text a buggy client could send that is no JSON document (and no NDJSON either: one line)."""
    kind = rng.random()
    if kind < 0.6:
        text = orjson.dumps(event).decode()
        return text[: rng.randint(1, len(text) - 1)].encode()  # cut off mid-flight
    if kind < 0.8:
        return b"[object Object]"
    # A JavaScript object literal, not JSON: bare keys, single quotes.
    return f"{{eventType: '{event['eventType']}', timestamp: {event['timestamp']!r}}}".encode()


def _not_utf8(rng: random.Random, event: dict[str, Any]) -> bytes:
    """Bytes from a client with the wrong text encoding."""
    kind = rng.random()
    if kind < 0.5:
        event["data"] = {"query": "café crème", "results": 3}
        return orjson.dumps(event).decode().encode("latin-1")  # é becomes the lone byte 0xe9
    if kind < 0.75:
        return b"\xff\xfe" + orjson.dumps(event).decode().encode("utf-16-le")  # UTF-16 with its byte order mark
    text = orjson.dumps(event)
    cut = text.index(b'"eventId"')
    return text[:cut] + b'"note":"\xff\xfe",' + text[cut:]


def _encode(rng: random.Random, form: str, objects: list[dict[str, Any]]) -> bytes:
    if form == "single":
        return orjson.dumps(objects[0])
    if form == "array":
        return orjson.dumps(objects)
    if form == "ndjson":
        text = b"\n".join(orjson.dumps(obj) for obj in objects)
        return text + b"\n" if rng.random() < 0.5 else text
    if form == "gzip":
        return gzip.compress(orjson.dumps(objects), mtime=0)  # mtime=0: the same bytes on every run
    raise ValueError(f"unknown record form {form!r}")


@dataclass
class Truth:
    """The counts and rejections the consumer must produce for the records that were put.

    With `events_out` set, every valid event is also written there as one NDJSON line (see the module
    docstring), in the order Kinesis acknowledged the records.
    """

    seed: int | None
    start_ms: int
    events_sent: int = 0
    valid: int = 0
    late: int = 0
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    invalid: list[dict[str, str]] = field(default_factory=list)
    per_minute: dict[int, Counter[str]] = field(default_factory=dict)
    events_out: BinaryIO | None = None

    def add(self, record: PlannedRecord, shard_id: str, sequence_number: str) -> None:
        """Fold in one record Kinesis acknowledged. PutRecords records have sub-sequence number 0."""
        for planned in record.events:
            self.events_sent += 1
            if planned.reason is not None:
                self.invalid_by_reason[planned.reason] += 1
                self.invalid.append({"id": f"{shard_id}/{sequence_number}/0/{planned.index}", "reason": planned.reason})
                continue
            assert planned.event_type is not None and planned.event_ms is not None
            self.valid += 1
            self.late += planned.late
            if self.events_out is not None:
                identity = f"{shard_id}/{sequence_number}/0/{planned.index}"
                line = {"id": identity, "event_ms": planned.event_ms, "event": orjson.Fragment(planned.body)}
                self.events_out.write(orjson.dumps(line) + b"\n")
            window = window_start(planned.event_ms, MINUTE_MS)
            self.per_minute.setdefault(window, Counter())[planned.event_type] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start_ms": self.start_ms,
            "events_sent": self.events_sent,
            "valid": self.valid,
            "late": self.late,
            "invalid_by_reason": dict(sorted(self.invalid_by_reason.items())),
            "invalid": list(self.invalid),
            "counts": {
                "events": {
                    "1m": {
                        str(start): dict(sorted(self.per_minute[start].items())) for start in sorted(self.per_minute)
                    }
                }
            },
        }
