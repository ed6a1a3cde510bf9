"""The routing table: which metrics and forward sinks an event type goes to (`[[routes]]` in the config).

A route names event types (exact names or globs such as "donation.*"), metrics and sinks. Metrics take
their routed types once, when the config is read (`with_routed_types`); the forward plan of a type (its
sinks and what they take: consumer/forwarding.py) is looked up per event on the hot path, so the `Router`
remembers each type's plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aggregations.metrics import MetricDef
from consumer.forwarding import ForwardPlan, SinkTerms, forward_plan

_MAX_CACHED_TYPES = 100_000  # event types are bounded in length, not in number: so is the cache


@dataclass(frozen=True)
class Route:
    types: tuple[str, ...]  # exact names or globs such as "donation.*"
    metrics: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()


class Router:
    """Which sinks an event type goes to (`terms`: what each sink takes, by name); cached per type because
    this is the hot path."""

    def __init__(self, routes: tuple[Route, ...] = (), terms: Mapping[str, SinkTerms] | None = None) -> None:
        self.routes = routes
        self.terms = dict(terms or {})
        self.sink_names = frozenset(name for route in routes for name in route.sinks)
        self._cache: dict[str, ForwardPlan] = {}

    def plan_for(self, event_type: str) -> ForwardPlan:
        found = self._cache.get(event_type)
        if found is None:
            names: dict[str, None] = {}  # ordered, unique
            for route in self.routes:
                if any(fnmatchcase(event_type, pattern) for pattern in route.types):
                    names.update(dict.fromkeys(route.sinks))
            found = forward_plan(tuple(names), self.terms)
            if len(self._cache) < _MAX_CACHED_TYPES:
                self._cache[event_type] = found
        return found


def with_routed_types(metrics: list[MetricDef], routes: tuple[Route, ...]) -> list[MetricDef]:
    """A route that names a metric feeds it the route's types, in addition to the metric's own `types`;
    a metric with neither counts every type."""
    out = []
    for metric in metrics:
        routed = [p for r in routes if metric.name in r.metrics for p in r.types]
        types = tuple(dict.fromkeys((*metric.types, *routed))) or ("*",)
        out.append(dataclasses.replace(metric, types=types))
    return out
