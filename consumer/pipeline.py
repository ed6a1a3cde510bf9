"""What the pipeline of every shard is made of: the record it takes and the settings it runs by.

A `Pipeline` is built once, when the config file is read (streamkpi/config.py, with the settings' limits),
and shared by the shards' workers; the caches inside it (per event type: its forward plan, its metrics, its
rules) fill as types are met.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aggregations.metrics import MetricSet
from aggregations.windows import Resolution
from consumer.bounds import Limits
from consumer.redaction import Redactor
from consumer.routing import Router
from consumer.validate import Rules

# A Kinesis record as the pipeline takes it: (data, sequenceNumber, subSequenceNumber, partitionKey,
# approximateArrivalTimestamp in ms), its data already base64-decoded. A plain tuple, built by the
# protocol reader (consumer/protocol.py) straight from the daemon's JSON: a NamedTuple would add about a
# third to the cost of reading a record (~360 ns on ~950 ns here).
Record = tuple[bytes, str, int, str, int]


@dataclass(frozen=True)
class Pipeline:
    """How records become events, dead letters and forwards, and which windows and metrics they feed."""

    rules: Rules
    limits: Limits
    metrics: MetricSet
    resolutions: tuple[Resolution, ...]
    router: Router = field(default_factory=Router)
    # The config's [redaction] with its key (added by the composition root, which reads the key); None: none.
    redactor: Redactor | None = None
